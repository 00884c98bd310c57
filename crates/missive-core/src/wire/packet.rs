//! The packets of protocol version 1. Every packet is one CBOR value: a map
//! with exactly one entry whose key is the packet's tag (a short lower-case
//! string, listed in docs/PROTOCOL.md) and whose value is a map of the
//! packet's fields; a packet without fields (`ping`, `pong`) is the bare tag
//! as a text string instead. Byte fields are CBOR byte strings. Tags and field
//! names are stable: a change is a new version. docs/PROTOCOL.md (Appendix A)
//! details the encoding of every field.

use crate::SharedBytes;
use crate::types::{MessageId, Seq, UnixMillis, UserName};
use serde::{Deserialize, Serialize};

/// The protocol version this implementation prefers: version 2, whose
/// login and registration transcripts carry the connection's channel
/// binding (docs/PROTOCOL.md §3.2).
pub const PROTOCOL_VERSION: u16 = 2;

/// Version 1, without channel binding: still spoken on connections whose
/// binding is `none` (plaintext), never on a TLS one, where a v1 login could
/// be relayed.
pub const PROTOCOL_VERSION_V1: u16 = 1;

/// Most versions a [`ClientPacket::Hello`] may list. A Hello listing more
/// does not decode (and does not encode).
pub const MAX_VERSIONS: usize = 16;

/// A 32-byte nonce (server challenge or client nonce).
pub type Nonce = [u8; 32];

/// Packets a client sends to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientPacket {
    /// First packet on every connection: the versions the client speaks.
    Hello {
        /// Supported protocol versions, any order; at most [`MAX_VERSIONS`].
        #[serde(with = "versions")]
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
        /// The sealed envelope (opaque to the server), shared: the server
        /// keeps this one copy in the mailbox.
        envelope: SharedBytes,
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
        /// When the user was last seen online: the server's current time
        /// if online now, else when they went offline (absent: not online
        /// since the server started).
        last_seen_ms: Option<UnixMillis>,
    },
    /// Cluster: the user named in `register` or `login` is served by
    /// another node. The server closes the connection after it; the client
    /// connects to `address` and starts again (§2.7).
    Redirect {
        /// Where to connect: `host:port`, or a `ws://` / `wss://` URL on a
        /// WebSocket listener.
        address: String,
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
    /// Largest frame accepted before login; a larger one is fatal
    /// `FrameTooLarge`. `None`: not announced (a server older than this
    /// field).
    pub handshake_max_frame: Option<u32>,
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
    /// Register, Login or Prove after login.
    AlreadyAuthenticated,
    /// Prove without a challenge, or after it expired.
    NoChallenge,
    /// The public key is not an acceptable RSA key.
    BadKey,
    /// Too many requests are waiting for answers.
    Busy,
    /// The sender used this message id for another message (another
    /// recipient or another envelope): nothing was queued. Ids are unique
    /// per sender; only a retry of the same message reuses one.
    IdReused,
    /// Cluster: the node serving the user concerned cannot be reached now
    /// (failover in progress); nothing was done. Retry later.
    Unavailable,
    /// The server cannot make anything durable now (e.g. its disk is full):
    /// nothing was done. Retry later, like `RateLimited`; at registration
    /// the server closes the connection after it (reconnect after a pause).
    StorageUnavailable,
    /// Cluster: this node no longer serves the logged-in user (its shard
    /// moved). Reconnect: the server named in the configuration redirects.
    Moved,
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
    /// The frame is larger than the announced limit (before login: the
    /// handshake limit).
    FrameTooLarge,
    /// The client does not read fast enough; its deliveries stay queued.
    SlowConsumer,
    /// The server is shutting down.
    ShuttingDown,
}

impl ErrorCode {
    /// The code's name as docs/PROTOCOL.md §2.5 writes it (`QueueFull`),
    /// `Unknown` for a code this implementation does not know: for logs
    /// and metric labels.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            UnknownUser => "UnknownUser",
            NameTaken => "NameTaken",
            QueueFull => "QueueFull",
            EnvelopeTooLarge => "EnvelopeTooLarge",
            RateLimited => "RateLimited",
            UnknownSeq => "UnknownSeq",
            NotLoggedIn => "NotLoggedIn",
            AlreadyAuthenticated => "AlreadyAuthenticated",
            NoChallenge => "NoChallenge",
            BadKey => "BadKey",
            Busy => "Busy",
            IdReused => "IdReused",
            Unavailable => "Unavailable",
            StorageUnavailable => "StorageUnavailable",
            Moved => "Moved",
            Unknown(_) => "Unknown",
            Malformed => "Malformed",
            UnsupportedVersion => "UnsupportedVersion",
            UnexpectedPacket => "UnexpectedPacket",
            AuthFailed => "AuthFailed",
            Timeout => "Timeout",
            SessionReplaced => "SessionReplaced",
            FrameTooLarge => "FrameTooLarge",
            SlowConsumer => "SlowConsumer",
            ShuttingDown => "ShuttingDown",
        }
    }

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
            IdReused => 12,
            Unavailable => 13,
            StorageUnavailable => 14,
            Malformed => 100,
            UnsupportedVersion => 101,
            UnexpectedPacket => 102,
            AuthFailed => 103,
            Timeout => 104,
            SessionReplaced => 105,
            FrameTooLarge => 106,
            SlowConsumer => 107,
            ShuttingDown => 108,
            Moved => 109,
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
            12 => IdReused,
            13 => Unavailable,
            14 => StorageUnavailable,
            100 => Malformed,
            101 => UnsupportedVersion,
            102 => UnexpectedPacket,
            103 => AuthFailed,
            104 => Timeout,
            105 => SessionReplaced,
            106 => FrameTooLarge,
            107 => SlowConsumer,
            108 => ShuttingDown,
            109 => Moved,
            n => Unknown(n),
        }
    }
}

/// (De)serialization of [`ClientPacket::Hello`]'s versions: at most
/// [`MAX_VERSIONS`] entries, and no memory reserved from the untrusted CBOR
/// array length (serde's `Vec` would reserve up to 1 MiB from it).
mod versions {
    use super::MAX_VERSIONS;
    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::ser::Error as _;
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(versions: &[u16], s: S) -> Result<S::Ok, S::Error> {
        if versions.len() > MAX_VERSIONS {
            return Err(S::Error::custom(format_args!(
                "{} versions in Hello, at most {MAX_VERSIONS} allowed",
                versions.len()
            )));
        }
        s.collect_seq(versions)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
        d.deserialize_seq(VersionsVisitor)
    }

    struct VersionsVisitor;

    impl<'de> Visitor<'de> for VersionsVisitor {
        type Value = Vec<u16>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {MAX_VERSIONS} protocol versions")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u16>, A::Error> {
            // Deliberately ignore `seq.size_hint()`: it is the peer's claim.
            let mut versions = Vec::new();
            while let Some(v) = seq.next_element::<u16>()? {
                if versions.len() == MAX_VERSIONS {
                    return Err(A::Error::invalid_length(MAX_VERSIONS + 1, &self));
                }
                versions.push(v);
            }
            Ok(versions)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;

    #[test]
    fn error_codes_round_trip() {
        for n in 0..300u16 {
            assert_eq!(u16::from(ErrorCode::from(n)), n);
        }
        assert!(ErrorCode::SessionReplaced.is_fatal());
        assert!(!ErrorCode::QueueFull.is_fatal());
    }

    const NAMED: [(ErrorCode, u16); 24] = [
        (ErrorCode::UnknownUser, 1),
        (ErrorCode::NameTaken, 2),
        (ErrorCode::QueueFull, 3),
        (ErrorCode::EnvelopeTooLarge, 4),
        (ErrorCode::RateLimited, 5),
        (ErrorCode::UnknownSeq, 6),
        (ErrorCode::NotLoggedIn, 7),
        (ErrorCode::AlreadyAuthenticated, 8),
        (ErrorCode::NoChallenge, 9),
        (ErrorCode::BadKey, 10),
        (ErrorCode::Busy, 11),
        (ErrorCode::IdReused, 12),
        (ErrorCode::Malformed, 100),
        (ErrorCode::UnsupportedVersion, 101),
        (ErrorCode::UnexpectedPacket, 102),
        (ErrorCode::AuthFailed, 103),
        (ErrorCode::Timeout, 104),
        (ErrorCode::SessionReplaced, 105),
        (ErrorCode::FrameTooLarge, 106),
        (ErrorCode::SlowConsumer, 107),
        (ErrorCode::ShuttingDown, 108),
        (ErrorCode::Unavailable, 13),
        (ErrorCode::Moved, 109),
        (ErrorCode::StorageUnavailable, 14),
    ];

    #[test]
    fn named_error_codes_are_stable_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for (code, n) in NAMED {
            assert_eq!(u16::from(code), n, "{code:?}");
            assert_eq!(ErrorCode::from(n), code);
            assert!(seen.insert(n), "{n} used twice");
            assert_eq!(code.is_fatal(), n >= 100, "{code:?}");
        }
        // Every other value is Unknown, and keeps its number and fatality.
        for n in (0..=u16::MAX).filter(|n| !seen.contains(n)) {
            assert_eq!(ErrorCode::from(n), ErrorCode::Unknown(n));
            assert_eq!(ErrorCode::Unknown(n).is_fatal(), n >= 100);
        }
        // `Unknown` holding a named number becomes the named code on the wire.
        assert_eq!(
            ErrorCode::from(u16::from(ErrorCode::Unknown(3))),
            ErrorCode::QueueFull
        );
    }

    #[test]
    fn error_codes_are_cbor_unsigned_integers() {
        use crate::wire::testutil::{hex, unhex};
        for (code, want) in [
            (ErrorCode::UnknownUser, "01"),
            (ErrorCode::Busy, "0b"),
            (ErrorCode::Malformed, "1864"),
            (ErrorCode::ShuttingDown, "186c"),
            (ErrorCode::Unknown(1000), "1903e8"),
            (ErrorCode::Unknown(u16::MAX), "19ffff"),
        ] {
            let mut out = Vec::new();
            ciborium::ser::into_writer(&code, &mut out).unwrap();
            assert_eq!(hex(&out), want);
            let back: ErrorCode = ciborium::de::from_reader(&unhex(want)[..]).unwrap();
            assert_eq!(back, code);
        }
        // Not a u16: out of range, negative, text.
        for bad in ["1a00010000", "20", "6131"] {
            assert!(
                ciborium::de::from_reader::<ErrorCode, _>(&unhex(bad)[..]).is_err(),
                "{bad}"
            );
        }
    }
}
