//! What goes into the client and what comes out of it.

use crate::crypto::{Fingerprint, OpenError};
use crate::types::{MessageId, UnixMillis, UserName};
use crate::wire::{ErrorCode, Link};

/// Something that happened to the client's transport, fed to
/// [`Client::handle_input`](super::Client::handle_input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInput<'a> {
    /// A transport connection to the server is open. Its [`Link`] says how
    /// it frames packets and its channel binding as this client computed
    /// it (`TlsExporter` after a TLS handshake, `None` in plaintext or on a
    /// WebSocket); the client starts the handshake (Hello, then login or
    /// registration signed over that binding).
    Connected(Link),
    /// Bytes received from the server: any chunking of the stream on a
    /// [`Framing::Stream`](crate::wire::Framing::Stream) connection, exactly
    /// one message (one packet) on a
    /// [`Framing::Messages`](crate::wire::Framing::Messages) one.
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
    /// Write these bytes to the connection: one or more whole frames on a
    /// byte stream, exactly one packet (one message) on a message transport.
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
    /// The user was registered on the server with the client's key (see
    /// [`Registration`](super::Registration)).
    Registered,
    /// Login succeeded.
    LoggedIn {
        /// Items waiting in the mailbox at login.
        queued: u64,
    },
    /// The server refused the registration or the login; the client asks
    /// the driver to close the connection ([`ClientEvent::Disconnected`]
    /// follows).
    LoginFailed(LoginError),
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
    /// A message left the outbox without being accepted: the server refused
    /// it for good, or it could not be sealed or sent.
    SendFailed {
        /// The recipient.
        to: UserName,
        /// The message id.
        id: MessageId,
        /// Why.
        reason: SendFailure,
    },
    /// Answer to [`Client::query_presence`](super::Client::query_presence):
    /// the user's presence.
    PresenceChanged {
        /// Whose presence.
        user: UserName,
        /// Whether the user is online now.
        online: bool,
        /// When the user was last online, if known.
        last_seen_ms: Option<UnixMillis>,
    },
    /// Answer to [`Client::query_presence`](super::Client::query_presence):
    /// the server does not know `user`.
    PresenceUnknown {
        /// The user asked about.
        user: UserName,
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
    /// The connection failed: the server closed it with a fatal error, or
    /// sent something the client cannot accept. The client asks the driver
    /// to close it ([`ClientEvent::Disconnected`] follows).
    ConnectionLost {
        /// Why.
        reason: ConnectionError,
    },
    /// The connection is gone; the driver may reconnect.
    Disconnected,
    /// Cluster (§2.7): the user is served by the node at `address`. The
    /// client asks the driver to close this connection
    /// ([`ClientEvent::Disconnected`] follows); the driver connects to
    /// `address` and the client starts again there (outbox and state are
    /// kept).
    Redirected {
        /// `host:port`, or a `ws://` / `wss://` URL.
        address: String,
    },
    /// The server refused a request with a code the client has no use for
    /// (for example an `ack` the server does not know). The connection
    /// stays open; reported for diagnostics only.
    RequestRefused {
        /// The server's code.
        code: ErrorCode,
        /// The user the server named, if any.
        user: Option<UserName>,
        /// Human-readable detail; never parse it.
        detail: String,
    },
}

/// Why the server refused the registration or the login (see
/// [`ClientEvent::LoginFailed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The server does not know the user, and the client was not allowed to
    /// register it ([`Registration::Never`](super::Registration::Never)).
    #[error("{user} is not registered on this server")]
    NotRegistered {
        /// The user.
        user: UserName,
    },
    /// Registering failed: the name is registered with another key.
    #[error("the name {user} is taken (registered with another key)")]
    NameTaken {
        /// The user.
        user: UserName,
    },
    /// The server did not accept the client's signature: the client's key
    /// is not the one registered for the user.
    #[error(
        "the server did not accept the signature: the key is not the one registered for {user}"
    )]
    SignatureRejected {
        /// The user.
        user: UserName,
    },
    /// Registering failed: the server does not accept the client's key.
    #[error("the server does not accept the key: {detail}")]
    KeyRejected {
        /// The server's explanation.
        detail: String,
    },
    /// The server refused the handshake with another code (for example
    /// `Busy`: retrying later may help).
    #[error("the server refused the login: {code:?}: {detail}")]
    Refused {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        detail: String,
    },
}

/// Why a connection failed (see [`ClientEvent::ConnectionLost`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// A newer login of the same user replaced this session.
    #[error("a newer login of the same user replaced this session")]
    SessionReplaced,
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The server closed the connection because a deadline passed (the
    /// handshake's or the pings').
    #[error("the server timed the connection out")]
    TimedOut,
    /// The client and the server have no protocol version in common.
    #[error("no common protocol version with the server")]
    UnsupportedVersion,
    /// The server closed the connection because the client does not read
    /// fast enough.
    #[error("the server closed the connection: the client reads too slowly")]
    SlowConsumer,
    /// The server closed the connection with another fatal code (it found
    /// the client's data malformed or out of place, or a code this client
    /// does not know).
    #[error("the server closed the connection: {code:?}: {detail}")]
    Closed {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        detail: String,
    },
    /// Cluster (§2.7): the node no longer serves this user (its shard
    /// moved). Reconnect at once to the configured server, which
    /// redirects; unacknowledged sends are resent there.
    #[error("the server no longer serves this user; reconnect")]
    Moved,
    /// Cluster (§2.7): no node serves this user right now (failover in
    /// progress). Reconnect after a pause.
    #[error("no server serves this user right now; reconnect later")]
    Unavailable,
    /// The server cannot store anything now (its disk may be full), so it
    /// refused the registration. Reconnect after a pause.
    #[error("the server cannot store anything right now; reconnect later")]
    StorageUnavailable,
    /// The server sent something the client cannot accept (undecodable
    /// data, a packet out of place, a limit too small to send a packet).
    #[error("the server violated the protocol: {detail}")]
    ProtocolViolation {
        /// What the client saw.
        detail: String,
    },
}

impl ConnectionError {
    /// The reason for a fatal `code` sent by the server.
    pub(super) fn from_server(code: ErrorCode, detail: String) -> Self {
        match code {
            ErrorCode::SessionReplaced => ConnectionError::SessionReplaced,
            ErrorCode::ShuttingDown => ConnectionError::ShuttingDown,
            ErrorCode::Timeout => ConnectionError::TimedOut,
            ErrorCode::UnsupportedVersion => ConnectionError::UnsupportedVersion,
            ErrorCode::SlowConsumer => ConnectionError::SlowConsumer,
            ErrorCode::Moved => ConnectionError::Moved,
            ErrorCode::Unavailable => ConnectionError::Unavailable,
            ErrorCode::StorageUnavailable => ConnectionError::StorageUnavailable,
            code => ConnectionError::Closed { code, detail },
        }
    }
}

/// Why a message left the outbox without being accepted (see
/// [`ClientEvent::SendFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The recipient does not exist.
    #[error("unknown recipient")]
    UnknownUser,
    /// The recipient's queue on the server is full (or the sender used up
    /// its share of it).
    #[error("the recipient's queue is full")]
    QueueFull,
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
    /// The server refused the message with another code (any code the
    /// client does not act on, including ones newer than this client).
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
