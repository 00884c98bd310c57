//! Client configuration.

use crate::types::UserName;
use crate::wire::DEFAULT_MAX_FRAME;
use std::time::Duration;

/// Settings of a [`Client`](super::Client). Build with [`ClientConfig::new`]
/// and adjust the public fields.
///
/// ```
/// use missive_core::client::{ClientConfig, Registration};
/// use missive_core::UserName;
///
/// let mut config = ClientConfig::new(UserName::new("alice").unwrap());
/// config.start_online = false;
/// assert_eq!(config.registration, Registration::IfUnknown);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The user this client logs in as.
    pub user: UserName,
    /// Whether and when the client registers the user with its identity.
    /// Default [`Registration::IfUnknown`].
    pub registration: Registration,
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
    /// `RateLimited`, `Busy`, `StorageUnavailable` or (cluster)
    /// `Unavailable`. Default 1 s.
    pub retry_after: Duration,
}

impl ClientConfig {
    /// The default configuration for `user`.
    pub fn new(user: UserName) -> Self {
        Self {
            user,
            registration: Registration::IfUnknown,
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

/// Whether and when a [`Client`](super::Client) registers its user (with its
/// identity's key) before logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Registration {
    /// Only log in: a user the server does not know fails with
    /// [`LoginError::NotRegistered`](super::LoginError::NotRegistered).
    Never,
    /// Log in, and register first when the server does not know the user.
    IfUnknown,
    /// Register on every connection, then log in. Registering again with
    /// the same key succeeds; a name registered with another key fails with
    /// [`LoginError::NameTaken`](super::LoginError::NameTaken). For an
    /// explicit "register" command: `IfUnknown` would only see the login's
    /// signature fail.
    Always,
}
