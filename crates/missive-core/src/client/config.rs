//! Client configuration.

use crate::types::UserName;
use crate::wire::DEFAULT_MAX_FRAME;
use std::time::Duration;

/// Settings of a [`Client`](super::Client). Build with [`ClientConfig::new`]
/// and adjust the public fields.
///
/// ```
/// use missive_core::client::ClientConfig;
/// use missive_core::UserName;
///
/// let mut config = ClientConfig::new(UserName::new("alice").unwrap());
/// config.start_online = false;
/// assert!(config.register_if_needed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The user this client logs in as.
    pub user: UserName,
    /// Register the user (with the client's identity) when the server does
    /// not know it. Default `true`.
    pub register_if_needed: bool,
    /// Presence announced after login: `true` (online, deliveries flow) or
    /// `false` (connected but offline). Changed later by
    /// [`Client::set_presence`](super::Client::set_presence). Default `true`.
    pub start_online: bool,
    /// Largest frame accepted and sent before the server's `Welcome`
    /// announces its own limit. Default [`DEFAULT_MAX_FRAME`].
    pub max_frame: u32,
    /// Most messages waiting in the outbox; [`Client::send`](super::Client::send)
    /// refuses more. Default 1000.
    pub max_outbox: usize,
    /// Most sends on the wire not yet accepted by the server. Default 64.
    pub max_sends_in_flight: usize,
    /// How many received message ids (and, separately, notices) are
    /// remembered to drop redeliveries. Default 10 000.
    pub seen_capacity: usize,
    /// Most received envelopes kept while their sender's key is fetched;
    /// beyond this the oldest is dropped as undecryptable. Default 1000.
    pub max_parked: usize,
    /// Delay before retrying a request the server refused with
    /// `RateLimited` or `Busy`. Default 1 s.
    pub retry_after: Duration,
}

impl ClientConfig {
    /// The default configuration for `user`.
    pub fn new(user: UserName) -> Self {
        Self {
            user,
            register_if_needed: true,
            start_online: true,
            max_frame: DEFAULT_MAX_FRAME,
            max_outbox: 1000,
            max_sends_in_flight: 64,
            seen_capacity: 10_000,
            max_parked: 1000,
            retry_after: Duration::from_secs(1),
        }
    }
}
