//! Encoding examples of docs/PROTOCOL.md (Appendix A), checked both ways:
//! each packet encodes to exactly these bytes, and these bytes decode to it.

use crate::types::{MessageId, UserName};
use crate::wire::codec::{LENGTH_PREFIX_LEN, decode_packet, encode_frame};
use crate::wire::packet::{ClientPacket, ErrorCode, Notice, ServerPacket, WireLimits};
use crate::wire::testutil::{hex, unhex};
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;

fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

fn check<P: Serialize + DeserializeOwned + PartialEq + Debug>(name: &str, p: P, want: &str) {
    let frame = encode_frame(&p, u32::MAX).unwrap();
    let payload = &frame[LENGTH_PREFIX_LEN..];
    let want = unhex(want);
    assert_eq!(hex(payload), hex(&want), "{name}: {p:?}");
    assert_eq!(
        frame[..LENGTH_PREFIX_LEN],
        (want.len() as u32).to_be_bytes()
    );
    assert_eq!(decode_packet::<P>(&want).unwrap(), p, "{name}");
}

const ID: MessageId = MessageId([0x11; 16]);

/// One example per client packet kind: (name, packet, payload hex).
#[test]
fn client_packet_vectors() {
    let vectors: Vec<(&str, ClientPacket, &str)> = vec![
        // {"hello": {"versions": [1]}}
        (
            "hello",
            ClientPacket::Hello { versions: vec![1] },
            "a1 65 68656c6c6f a1 68 76657273696f6e73 81 01",
        ),
        // {"register": {"user": "alice", "public_key": h'3082'}}
        (
            "register",
            ClientPacket::Register {
                user: user("alice"),
                public_key: vec![0x30, 0x82],
            },
            "a1 68 7265676973746572 a2 64 75736572 65 616c696365 6a 7075626c69635f6b6579 42 3082",
        ),
        // {"login": {"user": "alice"}}
        (
            "login",
            ClientPacket::Login {
                user: user("alice"),
            },
            "a1 65 6c6f67696e a1 64 75736572 65 616c696365",
        ),
        // {"prove": {"client_nonce": h'2222222222222222222222222222222222222222222222222222222222222222', "signature": h'abcd'}}
        (
            "prove",
            ClientPacket::Prove {
                client_nonce: [0x22; 32],
                signature: vec![0xab, 0xcd],
            },
            "a1 65 70726f7665 a2 6c 636c69656e745f6e6f6e6365 5820 2222222222222222222222222222222222222222222222222222222222222222 69 7369676e6174757265 42 abcd",
        ),
        // {"fetch_key": {"user": "bob"}}
        (
            "fetch_key",
            ClientPacket::FetchKey { user: user("bob") },
            "a1 69 66657463685f6b6579 a1 64 75736572 63 626f62",
        ),
        // {"send": {"id": h'11111111111111111111111111111111', "to": "bob", "envelope": h'010203'}}
        (
            "send",
            ClientPacket::Send {
                id: ID,
                to: user("bob"),
                envelope: vec![1, 2, 3].into(),
            },
            "a1 64 73656e64 a3 62 6964 50 11111111111111111111111111111111 62 746f 63 626f62 68 656e76656c6f7065 43 010203",
        ),
        // {"ack": {"seq": 500}}
        (
            "ack",
            ClientPacket::Ack { seq: 500 },
            "a1 63 61636b a1 63 736571 1901f4",
        ),
        // "ping"
        ("ping", ClientPacket::Ping, "64 70696e67"),
        // {"set_presence": {"online": true}}
        (
            "set_presence",
            ClientPacket::SetPresence { online: true },
            "a1 6c 7365745f70726573656e6365 a1 66 6f6e6c696e65 f5",
        ),
        // {"query_presence": {"user": "bob"}}
        (
            "query_presence",
            ClientPacket::QueryPresence { user: user("bob") },
            "a1 6e 71756572795f70726573656e6365 a1 64 75736572 63 626f62",
        ),
    ];
    for (name, p, want) in vectors {
        check(name, p, want);
    }
}

/// One example per server packet kind: (name, packet, payload hex).
#[test]
fn server_packet_vectors() {
    let vectors: Vec<(&str, ServerPacket, &str)> = vec![
        // {"welcome": {"version": 1, "server_id": h'33333333333333333333333333333333', "session_id": h'44444444444444444444444444444444', "ping_interval_ms": 30000, "limits": {"max_frame": 262144, "max_envelope": 65536, "window": 32, "handshake_max_frame": 16384}}}
        (
            "welcome",
            welcome_vector(Some(16_384)),
            "a1 67 77656c636f6d65 a5 67 76657273696f6e 01 69 7365727665725f6964 50 33333333333333333333333333333333 6a 73657373696f6e5f6964 50 44444444444444444444444444444444 70 70696e675f696e74657276616c5f6d73 197530 66 6c696d697473 a4 69 6d61785f6672616d65 1a00040000 6c 6d61785f656e76656c6f7065 1a00010000 66 77696e646f77 1820 73 68616e647368616b655f6d61785f6672616d65 194000",
        ),
        // {"challenge": {"nonce": h'5555555555555555555555555555555555555555555555555555555555555555', "expires_in_ms": 10000}}
        (
            "challenge",
            ServerPacket::Challenge {
                nonce: [0x55; 32],
                expires_in_ms: 10_000,
            },
            "a1 69 6368616c6c656e6765 a2 65 6e6f6e6365 5820 5555555555555555555555555555555555555555555555555555555555555555 6d 657870697265735f696e5f6d73 192710",
        ),
        // {"registered": {"user": "alice"}}
        (
            "registered",
            ServerPacket::Registered {
                user: user("alice"),
            },
            "a1 6a 72656769737465726564 a1 64 75736572 65 616c696365",
        ),
        // {"logged_in": {"user": "alice", "queued": 2}}
        (
            "logged_in",
            ServerPacket::LoggedIn {
                user: user("alice"),
                queued: 2,
            },
            "a1 69 6c6f676765645f696e a2 64 75736572 65 616c696365 66 717565756564 02",
        ),
        // {"key": {"user": "bob", "public_key": h'3082'}}
        (
            "key",
            ServerPacket::Key {
                user: user("bob"),
                public_key: vec![0x30, 0x82],
            },
            "a1 63 6b6579 a2 64 75736572 63 626f62 6a 7075626c69635f6b6579 42 3082",
        ),
        // {"accepted": {"id": h'11111111111111111111111111111111'}}
        (
            "accepted",
            ServerPacket::Accepted { id: ID },
            "a1 68 6163636570746564 a1 62 6964 50 11111111111111111111111111111111",
        ),
        // {"message": {"seq": 7, "from": "alice", "id": h'11111111111111111111111111111111', "envelope": h'010203'}}
        (
            "message",
            ServerPacket::Message {
                seq: 7,
                from: user("alice"),
                id: ID,
                envelope: vec![1, 2, 3],
            },
            "a1 67 6d657373616765 a4 63 736571 07 64 66726f6d 65 616c696365 62 6964 50 11111111111111111111111111111111 68 656e76656c6f7065 43 010203",
        ),
        // {"notice": {"seq": 8, "notice": {"delivered": {"to": "bob", "id": h'11111111111111111111111111111111'}}}}
        (
            "notice (delivered)",
            ServerPacket::Notice {
                seq: 8,
                notice: Notice::Delivered {
                    to: user("bob"),
                    id: ID,
                },
            },
            "a1 66 6e6f74696365 a2 63 736571 08 66 6e6f74696365 a1 69 64656c697665726564 a2 62 746f 63 626f62 62 6964 50 11111111111111111111111111111111",
        ),
        // {"notice": {"seq": 9, "notice": {"expired": {"to": "bob", "id": h'11111111111111111111111111111111'}}}}
        (
            "notice (expired)",
            ServerPacket::Notice {
                seq: 9,
                notice: Notice::Expired {
                    to: user("bob"),
                    id: ID,
                },
            },
            "a1 66 6e6f74696365 a2 63 736571 09 66 6e6f74696365 a1 67 65787069726564 a2 62 746f 63 626f62 62 6964 50 11111111111111111111111111111111",
        ),
        // "pong"
        ("pong", ServerPacket::Pong, "64 706f6e67"),
        // {"presence": {"user": "bob", "online": false, "last_seen_ms": 1700000000000}}
        (
            "presence",
            ServerPacket::Presence {
                user: user("bob"),
                online: false,
                last_seen_ms: Some(1_700_000_000_000),
            },
            "a1 68 70726573656e6365 a3 64 75736572 63 626f62 66 6f6e6c696e65 f4 6c 6c6173745f7365656e5f6d73 1b0000018bcfe56800",
        ),
        // {"presence": {"user": "bob", "online": true, "last_seen_ms": null}}
        (
            "presence (never seen)",
            ServerPacket::Presence {
                user: user("bob"),
                online: true,
                last_seen_ms: None,
            },
            "a1 68 70726573656e6365 a3 64 75736572 63 626f62 66 6f6e6c696e65 f5 6c 6c6173745f7365656e5f6d73 f6",
        ),
        // {"redirect": {"address": "node2:7000"}}
        (
            "redirect",
            ServerPacket::Redirect {
                address: "node2:7000".into(),
            },
            "a1 68 7265646972656374 a1 67 61646472657373 6a 6e6f6465323a37303030",
        ),
        // {"error": {"code": 1, "id": null, "user": "carol", "detail": "no such user"}}
        (
            "error",
            ServerPacket::Error {
                code: ErrorCode::UnknownUser,
                id: None,
                user: Some(user("carol")),
                detail: "no such user".into(),
            },
            "a1 65 6572726f72 a4 64 636f6465 01 62 6964 f6 64 75736572 65 6361726f6c 66 64657461696c 6c 6e6f20737563682075736572",
        ),
        // {"error": {"code": 3, "id": h'11111111111111111111111111111111', "user": null, "detail": ""}}
        (
            "error (with id)",
            ServerPacket::Error {
                code: ErrorCode::QueueFull,
                id: Some(ID),
                user: None,
                detail: String::new(),
            },
            "a1 65 6572726f72 a4 64 636f6465 03 62 6964 50 11111111111111111111111111111111 64 75736572 f6 66 64657461696c 60",
        ),
        // {"error": {"code": 106, "id": null, "user": null, "detail": ""}}
        (
            "error (fatal)",
            ServerPacket::Error {
                code: ErrorCode::FrameTooLarge,
                id: None,
                user: None,
                detail: String::new(),
            },
            "a1 65 6572726f72 a4 64 636f6465 186a 62 6964 f6 64 75736572 f6 66 64657461696c 60",
        ),
    ];
    for (name, p, want) in vectors {
        check(name, p, want);
    }
}

/// A Welcome from a server that does not announce `handshake_max_frame`
/// (the field came later) still decodes: the limit reads as not announced.
#[test]
fn welcome_without_handshake_max_frame_decodes() {
    let older = unhex(
        "a1 67 77656c636f6d65 a5 67 76657273696f6e 01 69 7365727665725f6964 50 33333333333333333333333333333333 6a 73657373696f6e5f6964 50 44444444444444444444444444444444 70 70696e675f696e74657276616c5f6d73 197530 66 6c696d697473 a3 69 6d61785f6672616d65 1a00040000 6c 6d61785f656e76656c6f7065 1a00010000 66 77696e646f77 1820",
    );
    assert_eq!(
        decode_packet::<ServerPacket>(&older),
        Ok(welcome_vector(None))
    );
}

/// The Welcome of the Appendix A.3 example, announcing `handshake_max_frame`
/// or not.
fn welcome_vector(handshake_max_frame: Option<u32>) -> ServerPacket {
    ServerPacket::Welcome {
        version: 1,
        server_id: [0x33; 16],
        session_id: [0x44; 16],
        ping_interval_ms: 30_000,
        limits: WireLimits {
            max_frame: 262_144,
            max_envelope: 65_536,
            window: 32,
            handshake_max_frame,
        },
    }
}

/// A whole frame: the length prefix is the payload length, big-endian.
#[test]
fn frame_vector() {
    let frame = encode_frame(&ClientPacket::Ack { seq: 500 }, u32::MAX).unwrap();
    assert_eq!(
        hex(&frame),
        "0000000d".to_owned() + "a16361636ba1637365711901f4"
    );
}

/// What the decoder accepts beyond what the encoder emits (inherited from
/// ciborium and serde), as listed in docs/PROTOCOL.md (Appendix A).
#[test]
fn decoder_leniencies() {
    let ack5 = ClientPacket::Ack { seq: 5 };
    let id16 = format!("90 {}", "01".repeat(16)); // [1, 1, ...] (16 items)
    let send = ClientPacket::Send {
        id: MessageId([1; 16]),
        to: user("bob"),
        envelope: vec![1, 2, 3].into(),
    };
    for (what, hex, want) in [
        (
            "non-shortest integer",
            "a1 63 61636b a1 63 736571 1b0000000000000005",
            ack5.clone(),
        ),
        (
            "non-shortest length",
            "a1 78 03 61636b a1 63 736571 05",
            ack5.clone(),
        ),
        (
            "tag on a field value",
            "a1 63 61636b a1 63 736571 c6 05",
            ack5.clone(),
        ),
        (
            "tag on the packet",
            "c6 a1 63 61636b a1 63 736571 05",
            ack5.clone(),
        ),
        (
            "bignum for an integer",
            "a1 63 61636b a1 63 736571 c2 41 05",
            ack5.clone(),
        ),
        (
            "indefinite inner map",
            "a1 63 61636b bf 63 736571 05 ff",
            ack5.clone(),
        ),
        (
            "byte-string field name",
            "a1 63 61636b a1 43 736571 05",
            ack5.clone(),
        ),
        (
            "byte-string tag",
            "a1 43 61636b a1 63 736571 05",
            ack5.clone(),
        ),
        (
            "unknown field",
            "a1 63 61636b a2 63 736571 05 61 78 f6",
            ack5.clone(),
        ),
        (
            "tag on the ping string",
            "c6 64 70696e67",
            ClientPacket::Ping,
        ),
        (
            "indefinite array",
            "a1 65 68656c6c6f a1 68 76657273696f6e73 9f 01 02 ff",
            ClientPacket::Hello {
                versions: vec![1, 2],
            },
        ),
        (
            "indefinite text",
            "a1 65 6c6f67696e a1 64 75736572 7f 61 62 62 6f62 ff",
            ClientPacket::Login { user: user("bob") },
        ),
        (
            "versions as a byte string",
            "a1 65 68656c6c6f a1 68 76657273696f6e73 42 0102",
            ClientPacket::Hello {
                versions: vec![1, 2],
            },
        ),
        (
            "bytes as an array of integers",
            &format!(
                "a1 64 73656e64 a3 62 6964 {id16} 62 746f 63 626f62 68 656e76656c6f7065 83 010203"
            ),
            send.clone(),
        ),
        (
            "indefinite byte string",
            &format!(
                "a1 64 73656e64 a3 62 6964 50 {} 62 746f 63 626f62 68 656e76656c6f7065 5f 41 01 42 0203 ff",
                "01".repeat(16)
            ),
            send.clone(),
        ),
    ] {
        assert_eq!(
            decode_packet::<ClientPacket>(&unhex(hex)),
            Ok(want),
            "{what}"
        );
    }
    // Optional fields: absent, null or undefined all read as None.
    let none = ServerPacket::Presence {
        user: user("bob"),
        online: true,
        last_seen_ms: None,
    };
    for hex in [
        "a1 68 70726573656e6365 a2 64 75736572 63 626f62 66 6f6e6c696e65 f5",
        "a1 68 70726573656e6365 a3 64 75736572 63 626f62 66 6f6e6c696e65 f5 6c 6c6173745f7365656e5f6d73 f6",
        "a1 68 70726573656e6365 a3 64 75736572 63 626f62 66 6f6e6c696e65 f5 6c 6c6173745f7365656e5f6d73 f7",
    ] {
        assert_eq!(
            decode_packet::<ServerPacket>(&unhex(hex)),
            Ok(none.clone()),
            "{hex}"
        );
    }
}

/// What the decoder rejects although it is close to a packet.
#[test]
fn decoder_strictness() {
    use crate::wire::codec::DecodeError;
    for (what, hex) in [
        ("indefinite outer map", "bf 63 61636b a1 63 736571 05 ff"),
        (
            "indefinite-length field name",
            "a1 63 61636b a1 7f 61 73 62 6571 ff 05",
        ),
        ("unit packet as a map", "a1 64 70696e67 f6"),
        ("packet with fields as a bare tag", "63 61636b"),
        (
            "duplicate field",
            "a1 63 61636b a2 63 736571 05 63 736571 06",
        ),
        ("float for an integer", "a1 63 61636b a1 63 736571 f93c00"),
        ("negative integer", "a1 63 61636b a1 63 736571 20"),
        (
            "integer beyond the field's range",
            "a1 65 68656c6c6f a1 68 76657273696f6e73 81 1a00010000",
        ),
        (
            "15-byte id",
            &format!("a1 68 6163636570746564 a1 62 6964 4f {}", "11".repeat(15)),
        ),
        (
            "17-byte id",
            &format!("a1 68 6163636570746564 a1 62 6964 51 {}", "11".repeat(17)),
        ),
        (
            "text for bytes",
            "a1 63 6b6579 a2 64 75736572 63 626f62 6a 7075626c69635f6b6579 62 3082",
        ),
        (
            "invalid user name",
            "a1 65 6c6f67696e a1 64 75736572 65 416c696365",
        ),
        ("empty user name", "a1 65 6c6f67696e a1 64 75736572 60"),
        ("tag in upper case", "a1 63 41434b a1 63 736571 05"),
        ("null for a required field", "a1 63 61636b a1 63 736571 f6"),
    ] {
        let r = decode_packet::<ClientPacket>(&unhex(hex));
        let r2 = decode_packet::<ServerPacket>(&unhex(hex));
        assert!(
            matches!(r, Err(DecodeError::UnknownPacket(_))),
            "{what}: {r:?}"
        );
        assert!(r2.is_err(), "{what}");
    }
}
