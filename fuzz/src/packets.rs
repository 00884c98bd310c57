//! `packet_decode`: one payload into `decode_packet::<ClientPacket>` and
//! `decode_packet::<ServerPacket>`.
//!
//! Invariants:
//! * no panic, for any bytes;
//! * `FrameDecoder::next_packet` on the same payload as one frame gives the
//!   same packet or error as `decode_packet`;
//! * round trip: a payload that decodes re-encodes (`encode_frame`), and the
//!   re-encoding decodes to an equal packet and re-encodes to itself;
//! * the same input read as an arbitrary *structured* packet (derived
//!   `Arbitrary` mirrors of both packet enums) encodes, and decodes back to
//!   an equal packet.

use arbitrary::{Arbitrary, Unstructured};
use missive_core::wire::{
    ClientPacket, ErrorCode, FrameDecoder, LENGTH_PREFIX_LEN, MAX_VERSIONS, Notice, ServerPacket,
    WireLimits, decode_packet, encode_frame,
};
use missive_core::{MessageId, UserName};
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;

/// Runs the `packet_decode` target on one input.
pub fn run(data: &[u8]) {
    raw::<ClientPacket>(data);
    raw::<ServerPacket>(data);
    let mut u = Unstructured::new(data);
    if let Ok(p) = ArbClientPacket::arbitrary(&mut u) {
        round_trip(&ClientPacket::from(p));
    }
    if let Ok(p) = ArbServerPacket::arbitrary(&mut u) {
        round_trip(&ServerPacket::from(p));
    }
}

fn raw<P: Serialize + DeserializeOwned + PartialEq + Debug>(payload: &[u8]) {
    let decoded = decode_packet::<P>(payload);

    // The incremental decoder agrees with decode_packet.
    let mut dec = FrameDecoder::new(u32::MAX);
    dec.push(&(payload.len() as u32).to_be_bytes());
    dec.push(payload);
    match (&decoded, dec.next_packet::<P>()) {
        (Ok(a), Ok(Some(b))) => assert_eq!(*a, b),
        (Err(a), Err(b)) => assert_eq!(*a, b),
        (a, b) => panic!("decode_packet gave {a:?}, FrameDecoder gave {b:?}"),
    }

    if let Ok(packet) = decoded {
        round_trip(&packet);
    }
}

/// Encodes, decodes, re-encodes: equal packets, identical bytes.
fn round_trip<P: Serialize + DeserializeOwned + PartialEq + Debug>(packet: &P) {
    let frame = encode_frame(packet, u32::MAX)
        .unwrap_or_else(|e| panic!("{packet:?} decoded but does not encode: {e}"));
    let len = u32::from_be_bytes(frame[..LENGTH_PREFIX_LEN].try_into().unwrap());
    assert_eq!(len as usize, frame.len() - LENGTH_PREFIX_LEN);
    let again: P = decode_packet(&frame[LENGTH_PREFIX_LEN..])
        .unwrap_or_else(|e| panic!("re-encoded {packet:?} does not decode: {e}"));
    assert_eq!(*packet, again, "round trip changed the packet");
    let frame2 = encode_frame(&again, u32::MAX).unwrap();
    assert_eq!(frame, frame2, "encoding is not a fixed point");
}

// ---- structured packets (derived Arbitrary mirrors) ----

/// A valid user name from arbitrary bytes (1–32 characters of the alphabet).
#[derive(Debug)]
pub(crate) struct ArbName(UserName);

impl<'a> Arbitrary<'a> for ArbName {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-";
        let len = u.int_in_range(1..=32usize)?;
        let mut s = String::with_capacity(len);
        for _ in 0..len {
            s.push(char::from(*u.choose(ALPHABET)?));
        }
        Ok(Self(UserName::new(s).expect("valid by construction")))
    }
}

#[derive(Debug, Arbitrary)]
pub(crate) enum ArbClientPacket {
    Hello {
        versions: Vec<u16>,
    },
    Register {
        user: ArbName,
        public_key: Vec<u8>,
    },
    Login {
        user: ArbName,
    },
    Prove {
        client_nonce: [u8; 32],
        signature: Vec<u8>,
    },
    FetchKey {
        user: ArbName,
    },
    Send {
        id: [u8; 16],
        to: ArbName,
        envelope: Vec<u8>,
    },
    Ack {
        seq: u64,
    },
    Ping,
    SetPresence {
        online: bool,
    },
    QueryPresence {
        user: ArbName,
    },
}

impl From<ArbClientPacket> for ClientPacket {
    fn from(p: ArbClientPacket) -> Self {
        p.into_packet(MAX_VERSIONS)
    }
}

impl ArbClientPacket {
    /// The packet, a Hello keeping at most `max_versions` of its versions
    /// (more than [`MAX_VERSIONS`] makes a Hello that does not encode).
    pub(crate) fn into_packet(self, max_versions: usize) -> ClientPacket {
        use ArbClientPacket as A;
        match self {
            A::Hello { mut versions } => {
                versions.truncate(max_versions);
                ClientPacket::Hello { versions }
            }
            A::Register { user, public_key } => ClientPacket::Register {
                user: user.0,
                public_key,
            },
            A::Login { user } => ClientPacket::Login { user: user.0 },
            A::Prove {
                client_nonce,
                signature,
            } => ClientPacket::Prove {
                client_nonce,
                signature,
            },
            A::FetchKey { user } => ClientPacket::FetchKey { user: user.0 },
            A::Send { id, to, envelope } => ClientPacket::Send {
                id: MessageId(id),
                to: to.0,
                envelope: envelope.into(),
            },
            A::Ack { seq } => ClientPacket::Ack { seq },
            A::Ping => ClientPacket::Ping,
            A::SetPresence { online } => ClientPacket::SetPresence { online },
            A::QueryPresence { user } => ClientPacket::QueryPresence { user: user.0 },
        }
    }
}

#[derive(Debug, Arbitrary)]
pub(crate) enum ArbNotice {
    Delivered { to: ArbName, id: [u8; 16] },
    Expired { to: ArbName, id: [u8; 16] },
}

#[derive(Debug, Arbitrary)]
pub(crate) enum ArbServerPacket {
    Welcome {
        version: u16,
        server_id: [u8; 16],
        session_id: [u8; 16],
        ping_interval_ms: u64,
        max_frame: u32,
        max_envelope: u32,
        window: u32,
        handshake_max_frame: Option<u32>,
    },
    Challenge {
        nonce: [u8; 32],
        expires_in_ms: u64,
    },
    Registered {
        user: ArbName,
    },
    LoggedIn {
        user: ArbName,
        queued: u64,
    },
    Key {
        user: ArbName,
        public_key: Vec<u8>,
    },
    Accepted {
        id: [u8; 16],
    },
    Message {
        seq: u64,
        from: ArbName,
        id: [u8; 16],
        envelope: Vec<u8>,
    },
    Notice {
        seq: u64,
        notice: ArbNotice,
    },
    Pong,
    Presence {
        user: ArbName,
        online: bool,
        last_seen_ms: Option<u64>,
    },
    Error {
        code: u16,
        id: Option<[u8; 16]>,
        user: Option<ArbName>,
        detail: String,
    },
}

impl From<ArbServerPacket> for ServerPacket {
    fn from(p: ArbServerPacket) -> Self {
        use ArbServerPacket as A;
        match p {
            A::Welcome {
                version,
                server_id,
                session_id,
                ping_interval_ms,
                max_frame,
                max_envelope,
                window,
                handshake_max_frame,
            } => ServerPacket::Welcome {
                version,
                server_id,
                session_id,
                ping_interval_ms,
                limits: WireLimits {
                    max_frame,
                    max_envelope,
                    window,
                    handshake_max_frame,
                },
            },
            A::Challenge {
                nonce,
                expires_in_ms,
            } => ServerPacket::Challenge {
                nonce,
                expires_in_ms,
            },
            A::Registered { user } => ServerPacket::Registered { user: user.0 },
            A::LoggedIn { user, queued } => ServerPacket::LoggedIn {
                user: user.0,
                queued,
            },
            A::Key { user, public_key } => ServerPacket::Key {
                user: user.0,
                public_key,
            },
            A::Accepted { id } => ServerPacket::Accepted { id: MessageId(id) },
            A::Message {
                seq,
                from,
                id,
                envelope,
            } => ServerPacket::Message {
                seq,
                from: from.0,
                id: MessageId(id),
                envelope,
            },
            A::Notice { seq, notice } => ServerPacket::Notice {
                seq,
                notice: match notice {
                    ArbNotice::Delivered { to, id } => Notice::Delivered {
                        to: to.0,
                        id: MessageId(id),
                    },
                    ArbNotice::Expired { to, id } => Notice::Expired {
                        to: to.0,
                        id: MessageId(id),
                    },
                },
            },
            A::Pong => ServerPacket::Pong,
            A::Presence {
                user,
                online,
                last_seen_ms,
            } => ServerPacket::Presence {
                user: user.0,
                online,
                last_seen_ms,
            },
            A::Error {
                code,
                id,
                user,
                detail,
            } => ServerPacket::Error {
                // Through u16: `Unknown(3)` is `QueueFull` on the wire.
                code: ErrorCode::from(code),
                id: id.map(MessageId),
                user: user.map(|u| u.0),
                detail,
            },
        }
    }
}
