//! The packets of protocol version 1. Every packet is one CBOR value: a map
//! with exactly one entry whose key is the packet's tag (a short lower-case
//! string, listed in docs/PROTOCOL.md) and whose value is a map of the
//! packet's fields (or `null` for packets without fields). Byte fields are CBOR
//! byte strings. Tags and field names are stable: a change is a new version.

use crate::types::{MessageId, Seq, UnixMillis, UserName};
use serde::{Deserialize, Serialize};

/// The only protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// A 32-byte nonce (server challenge or client nonce).
pub type Nonce = [u8; 32];

/// Packets a client sends to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientPacket {
    /// First packet on every connection: the versions the client speaks.
    Hello {
        /// Supported protocol versions, any order.
        versions: Vec<u16>,
    },
    /// Ask to register `user` with `public_key`; the server answers with a
    /// [`ServerPacket::Challenge`] that must be signed with the matching key.
    Register {
        /// Name to register.
        user: UserName,
        /// RSA public key, SubjectPublicKeyInfo DER.
        #[serde(with = "serde_bytes")]
        public_key: Vec<u8>,
    },
    /// Ask to log in as `user`; the server answers with a challenge.
    Login {
        /// Name to log in as.
        user: UserName,
    },
    /// Answer to the last challenge: an RSA-PSS-SHA256 signature over the
    /// authentication transcript (see `crypto::AuthTranscript`).
    Prove {
        /// Fresh random nonce of the client, part of the transcript.
        #[serde(with = "serde_bytes")]
        client_nonce: Nonce,
        /// The signature.
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Look up a user's public key.
    FetchKey {
        /// Whose key.
        user: UserName,
    },
    /// Send a sealed envelope to `to`. Requires login.
    Send {
        /// Sender-chosen id, equal to the envelope header's id.
        id: MessageId,
        /// Recipient.
        to: UserName,
        /// The sealed envelope (opaque to the server).
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// Acknowledge a delivered mailbox item (message or notice).
    Ack {
        /// The item's mailbox sequence number.
        seq: Seq,
    },
    /// Keep-alive; the server answers [`ServerPacket::Pong`].
    Ping,
    /// Say online (listening: deliveries flow) or offline (connected but not
    /// listening: nothing is delivered, the user shows as offline).
    SetPresence {
        /// `true` for online.
        online: bool,
    },
    /// Ask whether a user is online and when they were last seen.
    QueryPresence {
        /// Whose presence.
        user: UserName,
    },
}

/// Packets the server sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerPacket {
    /// Answer to Hello: the chosen version and the rules of this server.
    Welcome {
        /// Chosen protocol version.
        version: u16,
        /// Stable random id of this server, part of every auth transcript.
        #[serde(with = "serde_bytes")]
        server_id: [u8; 16],
        /// Random id of this connection, part of every auth transcript.
        #[serde(with = "serde_bytes")]
        session_id: [u8; 16],
        /// Send a Ping at least this often (milliseconds).
        ping_interval_ms: u64,
        /// Limits the client must respect.
        limits: WireLimits,
    },
    /// Sign this nonce (inside the transcript) to prove key possession.
    Challenge {
        /// Single-use server nonce.
        #[serde(with = "serde_bytes")]
        nonce: Nonce,
        /// The challenge expires this many milliseconds after it was sent.
        expires_in_ms: u64,
    },
    /// Registration is durable.
    Registered {
        /// The registered name.
        user: UserName,
    },
    /// Login succeeded; deliveries start.
    LoggedIn {
        /// The logged-in name.
        user: UserName,
        /// Items waiting in the mailbox at login.
        queued: u64,
    },
    /// Answer to FetchKey.
    Key {
        /// Whose key.
        user: UserName,
        /// SubjectPublicKeyInfo DER.
        #[serde(with = "serde_bytes")]
        public_key: Vec<u8>,
    },
    /// The message `id` is durably queued (or was already: retries are
    /// answered the same way).
    Accepted {
        /// The message id.
        id: MessageId,
    },
    /// A message for the client; acknowledge with `Ack { seq }`.
    Message {
        /// Mailbox sequence number.
        seq: Seq,
        /// Sender as authenticated by the server.
        from: UserName,
        /// Sender-chosen message id.
        id: MessageId,
        /// The sealed envelope.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// A notice about a message the client sent; acknowledge with `Ack { seq }`.
    Notice {
        /// Mailbox sequence number.
        seq: Seq,
        /// What happened.
        notice: Notice,
    },
    /// Answer to Ping.
    Pong,
    /// Answer to QueryPresence.
    Presence {
        /// Whose presence.
        user: UserName,
        /// Whether the user is online now.
        online: bool,
        /// When the user was last online (absent: never seen since start).
        last_seen_ms: Option<UnixMillis>,
    },
    /// Something went wrong. Fatal codes are followed by close.
    Error {
        /// Machine-readable code (see [`ErrorCode`]).
        code: ErrorCode,
        /// The message concerned, where there is one.
        id: Option<MessageId>,
        /// The user concerned (e.g. the unknown one), where there is one.
        user: Option<UserName>,
        /// Human-readable detail; never parse it.
        detail: String,
    },
}

/// A notice in a sender's mailbox about one of their messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Notice {
    /// The recipient acknowledged the message.
    Delivered {
        /// Recipient.
        to: UserName,
        /// Message id.
        id: MessageId,
    },
    /// The message expired unread and was removed.
    Expired {
        /// Recipient.
        to: UserName,
        /// Message id.
        id: MessageId,
    },
}

/// Limits announced in Welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLimits {
    /// Largest frame (CBOR packet, without the 4-byte prefix) accepted.
    pub max_frame: u32,
    /// Largest sealed envelope accepted in Send.
    pub max_envelope: u32,
    /// Unacknowledged deliveries in flight per connection.
    pub window: u32,
}

/// Error codes of the Error packet. The numeric value is on the wire.
///
/// Codes below 100 concern one request and the connection stays open;
/// codes from 100 are fatal: the server closes the connection after sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The named user does not exist.
    UnknownUser,
    /// The name is registered with another key.
    NameTaken,
    /// The recipient's queue is full (count or bytes), or the sender used
    /// up their fair share of it.
    QueueFull,
    /// The envelope is larger than the announced limit.
    EnvelopeTooLarge,
    /// The per-user send rate is exceeded; retry later.
    RateLimited,
    /// Ack for a sequence number not in flight on this connection.
    UnknownSeq,
    /// A request that needs login came before it.
    NotLoggedIn,
    /// A login or registration is already in progress or done.
    AlreadyAuthenticated,
    /// Prove without a challenge, or after it expired.
    NoChallenge,
    /// The public key is not an acceptable RSA key.
    BadKey,
    /// Too many requests are waiting for answers.
    Busy,
    /// A code this implementation does not know (forward compatibility).
    Unknown(u16),
    /// Undecodable frame or packet.
    Malformed,
    /// No common protocol version.
    UnsupportedVersion,
    /// Packet not allowed in the connection's state (e.g. Hello twice).
    UnexpectedPacket,
    /// The signature does not verify.
    AuthFailed,
    /// Handshake deadline or ping deadline missed.
    Timeout,
    /// A newer login of the same user replaced this session.
    SessionReplaced,
    /// The frame is larger than the announced limit.
    FrameTooLarge,
    /// The client does not read fast enough; its deliveries stay queued.
    SlowConsumer,
    /// The server is shutting down.
    ShuttingDown,
}

impl ErrorCode {
    /// Whether the server closes the connection after this error.
    pub fn is_fatal(self) -> bool {
        u16::from(self) >= 100
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> u16 {
        use ErrorCode::*;
        match c {
            UnknownUser => 1,
            NameTaken => 2,
            QueueFull => 3,
            EnvelopeTooLarge => 4,
            RateLimited => 5,
            UnknownSeq => 6,
            NotLoggedIn => 7,
            AlreadyAuthenticated => 8,
            NoChallenge => 9,
            BadKey => 10,
            Busy => 11,
            Malformed => 100,
            UnsupportedVersion => 101,
            UnexpectedPacket => 102,
            AuthFailed => 103,
            Timeout => 104,
            SessionReplaced => 105,
            FrameTooLarge => 106,
            SlowConsumer => 107,
            ShuttingDown => 108,
            Unknown(n) => n,
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(n: u16) -> ErrorCode {
        use ErrorCode::*;
        match n {
            1 => UnknownUser,
            2 => NameTaken,
            3 => QueueFull,
            4 => EnvelopeTooLarge,
            5 => RateLimited,
            6 => UnknownSeq,
            7 => NotLoggedIn,
            8 => AlreadyAuthenticated,
            9 => NoChallenge,
            10 => BadKey,
            11 => Busy,
            100 => Malformed,
            101 => UnsupportedVersion,
            102 => UnexpectedPacket,
            103 => AuthFailed,
            104 => Timeout,
            105 => SessionReplaced,
            106 => FrameTooLarge,
            107 => SlowConsumer,
            108 => ShuttingDown,
            n => Unknown(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for n in 0..300u16 {
            assert_eq!(u16::from(ErrorCode::from(n)), n);
        }
        assert!(ErrorCode::SessionReplaced.is_fatal());
        assert!(!ErrorCode::QueueFull.is_fatal());
    }
}
