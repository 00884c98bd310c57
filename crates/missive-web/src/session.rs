//! [`Session`]: the core's [`Client`] behind the calls the page makes, in
//! plain Rust (clock and seed passed in), so that it runs and is tested
//! natively. [`WebClient`](crate::WebClient) adds the browser's clocks and
//! randomness and the JavaScript values.

use crate::events::WebEvent;
use missive_core::client::{
    Client, ClientConfig, ClientInput, ClientOutput, ClientState, Registration, SendError,
    StateDecodeError, StateEncodeError,
};
use missive_core::crypto::{ChannelBinding, Fingerprint, Identity, KeyError};
use missive_core::time::Instant;
use missive_core::wire::Link;
use missive_core::{UnixMillis, UserName, UserNameError};
use serde::Serialize;
use serde_bytes::ByteBuf;
use std::time::Duration;

/// One thing for the page to do, as `poll_output` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebOutput {
    /// Send `bytes` as one binary WebSocket message.
    Transmit {
        /// One packet.
        bytes: ByteBuf,
    },
    /// Close the socket, then call `disconnected()`.
    Close,
    /// Persist `state` (the client's durable state, CBOR) and pass it to the
    /// constructor next time.
    State {
        /// [`ClientState::to_cbor`].
        state: ByteBuf,
    },
    /// Show this to the user.
    Event {
        /// The event.
        event: WebEvent,
    },
}

/// A message still in the outbox, as `pending()` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingMessage {
    /// The message id (32 hex digits).
    pub id: String,
    /// The recipient.
    pub to: String,
}

/// A string that is not a valid user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a valid user name: {source}")]
pub struct InvalidName {
    /// The string.
    pub name: String,
    /// Why.
    pub source: UserNameError,
}

/// Parses a user name given by the page.
pub(crate) fn user_name(name: &str) -> Result<UserName, InvalidName> {
    UserName::new(name).map_err(|source| InvalidName {
        name: name.to_owned(),
        source,
    })
}

/// Why [`Session::new`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewSessionError {
    /// The user name is not valid.
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// The identity is not a usable PKCS#8 RSA key.
    #[error("the identity is not a usable private key: {0}")]
    Identity(#[from] KeyError),
    /// The saved state cannot be read.
    #[error("the saved client state cannot be read: {0}")]
    State(#[from] StateDecodeError),
}

/// Why [`Session::send`] refused a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebSendError {
    /// The recipient's name is not valid.
    #[error(transparent)]
    Recipient(#[from] InvalidName),
    /// The text can never fit in an envelope the server accepts.
    #[error("message too large: {len} bytes, at most {max}")]
    TooLarge {
        /// Length of the text in bytes (UTF-8).
        len: usize,
        /// The envelope limit.
        max: usize,
    },
    /// The outbox is full.
    #[error("{max} messages are already waiting to be sent: wait until the server accepts some")]
    OutboxFull {
        /// The limit.
        max: usize,
    },
    /// Another refusal of the core.
    #[error("the message cannot be sent: {0}")]
    Other(SendError),
}

impl From<SendError> for WebSendError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::TooLarge { len, max } => WebSendError::TooLarge { len, max },
            SendError::OutboxFull { max } => WebSendError::OutboxFull { max },
            other => WebSendError::Other(other),
        }
    }
}

/// The client of one user, driven by the page's calls.
#[derive(Debug)]
pub struct Session {
    client: Client,
    fingerprint: Fingerprint,
}

impl Session {
    /// A client for `user` holding `identity` (PKCS#8 DER), resuming from
    /// `state` (CBOR from an earlier [`WebOutput::State`]) or starting
    /// fresh. `register`: register the name on every connection
    /// ([`Registration::Always`]) or only log in ([`Registration::Never`]).
    pub fn new(
        user: &str,
        identity: &[u8],
        state: Option<&[u8]>,
        register: bool,
        seed: [u8; 32],
        now: Instant,
        unix_ms: UnixMillis,
    ) -> Result<Self, NewSessionError> {
        let mut config = ClientConfig::new(user_name(user)?);
        config.registration = if register {
            Registration::Always
        } else {
            Registration::Never
        };
        let identity = Identity::from_pkcs8_der(identity)?;
        let state = state
            .map(ClientState::from_cbor)
            .transpose()?
            .unwrap_or_default();
        let fingerprint = identity.public_key().fingerprint();
        Ok(Self {
            client: Client::new(config, identity, state, seed, now, unix_ms),
            fingerprint,
        })
    }

    /// The WebSocket opened.
    pub fn connected(&mut self, now: Instant) {
        self.client.handle_input(
            now,
            ClientInput::Connected(Link::messages(ChannelBinding::None)),
        );
    }

    /// One binary WebSocket message arrived.
    pub fn receive(&mut self, now: Instant, packet: &[u8]) {
        self.client.handle_input(now, ClientInput::Bytes(packet));
    }

    /// The WebSocket closed (either side) or failed.
    pub fn disconnected(&mut self, now: Instant) {
        self.client.handle_input(now, ClientInput::Disconnected);
    }

    /// The timer for [`Session::next_timeout`] fired.
    pub fn timeout(&mut self, now: Instant) {
        self.client.handle_input(now, ClientInput::Timeout);
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Result<Option<WebOutput>, StateEncodeError> {
        let Some(output) = self.client.poll_output() else {
            return Ok(None);
        };
        Ok(Some(match output {
            ClientOutput::Transmit(bytes) => WebOutput::Transmit {
                bytes: ByteBuf::from(bytes),
            },
            ClientOutput::Close => WebOutput::Close,
            ClientOutput::StateChanged => WebOutput::State {
                state: ByteBuf::from(self.client.state().to_cbor()?),
            },
            ClientOutput::Event(event) => WebOutput::Event {
                event: event.into(),
            },
        }))
    }

    /// How long from `now` until [`Session::timeout`] is due, if ever:
    /// rounded up to whole milliseconds, so that a timer set for it fires
    /// at or after the deadline.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        let left = self.client.poll_timeout()?.saturating_duration_since(now);
        let millis = left.as_micros().div_ceil(1000);
        Some(Duration::from_millis(
            u64::try_from(millis).unwrap_or(u64::MAX),
        ))
    }

    /// Queues `text` for `to`; returns the message id (32 hex digits).
    pub fn send(&mut self, now: Instant, to: &str, text: &str) -> Result<String, WebSendError> {
        let to = user_name(to)?;
        let id = self.client.send(now, to, text.as_bytes().to_vec())?;
        Ok(id.to_string())
    }

    /// Announces presence (`true`: online).
    pub fn set_presence(&mut self, now: Instant, online: bool) {
        self.client.set_presence(now, online);
    }

    /// Asks for `user`'s presence.
    pub fn query_presence(&mut self, now: Instant, user: &str) -> Result<(), InvalidName> {
        self.client.query_presence(now, user_name(user)?);
        Ok(())
    }

    /// Forgets `user`'s pinned key, so that the next fetch pins the key
    /// the server offers then.
    pub fn trust_key(&mut self, user: &str) -> Result<(), InvalidName> {
        self.client.trust_key(&user_name(user)?);
        Ok(())
    }

    /// This user's key fingerprint (`SHA256:…`, as the CLI prints it).
    pub fn fingerprint(&self) -> String {
        self.fingerprint.to_string()
    }

    /// The fingerprint of the key pinned for `user`, if any (none for a
    /// string that is not a user name).
    pub fn pinned_fingerprint(&self, user: &str) -> Option<String> {
        let user = UserName::new(user).ok()?;
        let key = self.client.state().pinned_key(&user)?;
        Some(Fingerprint::of_spki_der(key).to_string())
    }

    /// The users whose key is pinned.
    pub fn pinned_users(&self) -> Vec<String> {
        self.client
            .state()
            .pinned_keys()
            .map(|(user, _)| user.to_string())
            .collect()
    }

    /// The messages not yet accepted by the server, oldest first.
    pub fn pending(&self) -> Vec<PendingMessage> {
        self.client
            .state()
            .outbox()
            .map(|entry| PendingMessage {
                id: entry.id.to_string(),
                to: entry.to.to_string(),
            })
            .collect()
    }

    /// The user this client is for.
    pub fn user(&self) -> String {
        self.client.user().to_string()
    }

    /// Whether the current connection is logged in.
    pub fn is_logged_in(&self) -> bool {
        self.client.is_logged_in()
    }
}

#[cfg(test)]
mod tests;
