//! What goes into the client and what comes out of it.

use crate::crypto::{Fingerprint, OpenError};
use crate::types::{MessageId, UnixMillis, UserName};
use crate::wire::ErrorCode;

/// Something that happened to the client's transport, fed to
/// [`Client::handle_input`](super::Client::handle_input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInput<'a> {
    /// A transport connection to the server is open; the client starts the
    /// handshake (Hello, then login or registration).
    Connected,
    /// Bytes received from the server, any chunking.
    Bytes(&'a [u8]),
    /// The transport connection is gone (closed by either side or broken).
    Disconnected,
    /// The deadline returned by [`Client::poll_timeout`](super::Client::poll_timeout)
    /// has passed. Harmless when none has.
    Timeout,
}

/// Something the driver must do, returned by
/// [`Client::poll_output`](super::Client::poll_output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Write these bytes (one or more whole frames) to the connection.
    Transmit(Vec<u8>),
    /// Close the connection, then feed [`ClientInput::Disconnected`].
    Close,
    /// The durable [`ClientState`](super::ClientState) changed: persist
    /// [`Client::state`](super::Client::state).
    StateChanged,
    /// Something to show to the user.
    Event(ClientEvent),
}

/// Something to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The user was registered on the server with the client's key.
    Registered,
    /// Login succeeded.
    LoggedIn {
        /// Items waiting in the mailbox at login.
        queued: u64,
    },
    /// A message was received and verified.
    MessageReceived {
        /// The sender (authenticated by the server and by the envelope's
        /// signature).
        from: UserName,
        /// The message id.
        id: MessageId,
        /// The sender's wall clock when sealing (Unix milliseconds).
        sent_at: UnixMillis,
        /// The plaintext.
        body: Vec<u8>,
    },
    /// The server durably queued a message from the outbox.
    Accepted {
        /// The message id.
        id: MessageId,
        /// The recipient.
        to: UserName,
    },
    /// The recipient acknowledged a message.
    Delivered {
        /// The recipient.
        to: UserName,
        /// The message id.
        id: MessageId,
    },
    /// A message expired unread on the server.
    Expired {
        /// The recipient.
        to: UserName,
        /// The message id.
        id: MessageId,
    },
    /// The recipient's queue is full; the message was dropped from the outbox.
    QueueFull {
        /// The recipient.
        to: UserName,
        /// The message id.
        id: MessageId,
    },
    /// A message left the outbox without being sent.
    SendFailed {
        /// The recipient.
        to: UserName,
        /// The message id.
        id: MessageId,
        /// Why.
        reason: SendFailure,
    },
    /// Answer to [`Client::query_presence`](super::Client::query_presence).
    PresenceChanged {
        /// Whose presence.
        user: UserName,
        /// Whether the user is online now.
        online: bool,
        /// When the user was last online, if known.
        last_seen_ms: Option<UnixMillis>,
    },
    /// The server offered a key for `user` that differs from the pinned one.
    /// The pinned key stays in use until
    /// [`Client::trust_key`](super::Client::trust_key) forgets it.
    KeyChanged {
        /// Whose key.
        user: UserName,
        /// Fingerprint of the pinned key.
        pinned: Fingerprint,
        /// Fingerprint of the offered key.
        offered: Fingerprint,
    },
    /// A received message could not be opened. Reported locally only: the
    /// sender learns nothing.
    UndecryptableMessage {
        /// The sender as named by the server.
        from: UserName,
        /// The message id.
        id: MessageId,
        /// Why it could not be opened.
        error: OpenError,
    },
    /// The connection is gone; the driver may reconnect.
    Disconnected,
    /// The server reported an error, or sent something the client cannot
    /// accept (then the client also asks to close the connection).
    Error {
        /// The code (from the server, or chosen locally for bad server data).
        code: ErrorCode,
        /// The user the error is about (e.g. the unknown user of a presence
        /// query), when the server named one.
        user: Option<UserName>,
        /// Human-readable detail; never parse it.
        detail: String,
    },
}

/// Why a message left the outbox unsent (see [`ClientEvent::SendFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The recipient does not exist.
    #[error("unknown recipient")]
    UnknownUser,
    /// The recipient's key changed; see [`ClientEvent::KeyChanged`].
    #[error("the recipient's key changed")]
    KeyChanged,
    /// The sealed envelope exceeds the server's limit.
    #[error("message too large")]
    TooLarge,
    /// The server's key for the recipient is not a usable RSA key.
    #[error("the recipient's key is unusable")]
    BadKey,
    /// The server remembers this message id from another message of this
    /// user (to another recipient or with another envelope) and queued
    /// nothing.
    #[error("the message id was already used for another message")]
    IdReused,
    /// The server refused the message with another code.
    #[error("refused by the server: {0:?}")]
    Rejected(ErrorCode),
}

/// Why [`Client::send`](super::Client::send) refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The outbox already holds `max` messages.
    #[error("outbox full ({max} messages)")]
    OutboxFull {
        /// The configured limit.
        max: usize,
    },
    /// The body can never fit in an envelope the server accepts.
    #[error("body of {len} bytes can never fit the server's limit of {max} bytes per envelope")]
    TooLarge {
        /// Body length.
        len: usize,
        /// Envelope size limit (announced by the server, or the frame limit
        /// before the first `Welcome`).
        max: usize,
    },
}
