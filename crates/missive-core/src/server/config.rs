//! Server configuration: limits, timers and quotas, with documented defaults.

use crate::time::Instant;
use crate::wire::{DEFAULT_MAX_FRAME, WireLimits};
use std::time::Duration;

/// The smallest frame limit a server runs with (4 KiB): every handshake
/// packet fits, a Register with a 4096-bit key included.
pub const MIN_MAX_FRAME: u32 = 4 * 1024;

/// Everything a server operator can tune. `ServerConfig::default()` gives the
/// defaults documented in docs/PROTOCOL.md ("Limits and defaults").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest frame payload accepted and sent (default 256 KiB; at least
    /// [`MIN_MAX_FRAME`]: a smaller value is raised to it).
    pub max_frame: u32,
    /// Largest frame payload accepted before login (default 16 KiB: every
    /// handshake packet is far smaller), so that unauthenticated
    /// connections cannot make the server buffer `max_frame` bytes each.
    pub handshake_max_frame: u32,
    /// Largest sealed envelope accepted in Send (default `max_frame` − 1 KiB,
    /// leaving room for the Message packet around it).
    pub max_envelope: u32,
    /// Unacknowledged deliveries in flight per connection (default 256).
    pub window: u32,
    /// Ping interval announced in Welcome (default 30 s).
    pub ping_interval: Duration,
    /// Intervals without any packet after which a client is offline and its
    /// connection closed (default 3).
    pub missed_pings: u32,
    /// Time a new connection has to log in (default 10 s).
    pub handshake_timeout: Duration,
    /// Lifetime of a login/registration challenge (default 10 s). A
    /// challenge never outlives the handshake deadline: it expires at the
    /// earlier of the two, and Challenge's `expires_in_ms` says when.
    pub challenge_ttl: Duration,
    /// Messages queued per recipient (default 1,000).
    pub queue_max_messages: u32,
    /// Envelope bytes queued per recipient (default 16 MiB).
    pub queue_max_bytes: u64,
    /// Share of a recipient's count and byte quotas one sender may hold, in
    /// percent (default 50).
    pub sender_share_percent: u8,
    /// Messages a user may have queued anywhere plus notices queued for them
    /// (default 10,000). Bounds notices, which are never dropped.
    pub max_outstanding_per_sender: u32,
    /// Time a queued message or notice lives before it expires (default 30
    /// days). The server wakes at each item's deadline (no periodic check).
    pub message_ttl: Duration,
    /// Sustained sends per second per user (token bucket refill, default 100).
    pub send_rate_per_sec: u32,
    /// Burst of sends per user (token bucket size, default 1,000).
    pub send_burst: u32,
    /// Recent message ids remembered per sender to answer retried sends
    /// without duplicating (default 1,024: sixteen times the reference
    /// client's 64 sends in flight, which are the only ones a client can
    /// retry without knowing their fate; ~34 KiB per active sender).
    pub dedupe_per_sender: usize,
    /// Refuse connections whose channel binding is `none` (plaintext) with
    /// `UnsupportedVersion` at Hello (default false: a plaintext listener
    /// accepts v2 with binding `none`, and v1). Connections with a
    /// `tls-exporter` binding always require v2.
    pub require_channel_binding: bool,
    /// Run as one node of a cluster (docs/CLUSTER.md): serve only the
    /// users of the shards the driver says this node owns (default `None`:
    /// a single server owning every user).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            handshake_max_frame: 16 * 1024,
            max_envelope: DEFAULT_MAX_FRAME - 1024,
            window: 256,
            ping_interval: Duration::from_secs(30),
            missed_pings: 3,
            handshake_timeout: Duration::from_secs(10),
            challenge_ttl: Duration::from_secs(10),
            queue_max_messages: 1_000,
            queue_max_bytes: 16 * 1024 * 1024,
            sender_share_percent: 50,
            max_outstanding_per_sender: 10_000,
            message_ttl: Duration::from_secs(30 * 24 * 3600),
            send_rate_per_sec: 100,
            send_burst: 1_000,
            dedupe_per_sender: 1_024,
            require_channel_binding: false,
            cluster: None,
        }
    }
}

impl ServerConfig {
    /// The limits announced to clients in Welcome.
    pub fn wire_limits(&self) -> WireLimits {
        WireLimits {
            max_frame: self.max_frame,
            max_envelope: self.max_envelope,
            window: self.window,
            handshake_max_frame: Some(self.handshake_max_frame),
        }
    }

    /// Most messages one sender may have queued for one recipient.
    pub fn sender_max_messages(&self) -> u32 {
        ((u64::from(self.queue_max_messages) * u64::from(self.sender_share_percent)) / 100).max(1)
            as u32
    }

    /// Most envelope bytes one sender may have queued for one recipient.
    pub fn sender_max_bytes(&self) -> u64 {
        (self.queue_max_bytes / 100)
            .saturating_mul(u64::from(self.sender_share_percent))
            .max(1)
    }

    /// When a connection accepted at `connected_at` must be logged in.
    pub(super) fn handshake_deadline(&self, connected_at: Instant) -> Instant {
        connected_at + self.handshake_timeout
    }

    /// How long a logged-in connection may stay silent.
    pub fn liveness_timeout(&self) -> Duration {
        self.ping_interval.saturating_mul(self.missed_pings.max(1))
    }
}
