//! Tests of framing and packet decoding.

use super::*;
use crate::test_support::test;
use crate::types::{MessageId, UserName};
use crate::wire::packet::{
    ClientPacket, ErrorCode, MAX_VERSIONS, Notice, ServerPacket, WireLimits,
};
use crate::wire::testutil::unhex;
#[cfg(not(target_family = "wasm"))]
use proptest::prelude::*;

const MAX: u32 = DEFAULT_MAX_FRAME;

fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn send(envelope_len: usize) -> ClientPacket {
    ClientPacket::Send {
        id: MessageId([7; 16]),
        to: user("bob"),
        envelope: vec![0xee; envelope_len].into(),
    }
}

fn decode_client(payload: &[u8]) -> Result<ClientPacket, DecodeError> {
    decode_packet::<ClientPacket>(payload)
}

/// Every packet kind once, with small values.
fn sample_client_packets() -> Vec<ClientPacket> {
    vec![
        ClientPacket::Hello { versions: vec![1] },
        ClientPacket::Register {
            user: user("alice"),
            public_key: vec![1, 2, 3],
        },
        ClientPacket::Login {
            user: user("alice"),
        },
        ClientPacket::Prove {
            client_nonce: [9; 32],
            signature: vec![4; 5],
        },
        ClientPacket::FetchKey { user: user("bob") },
        send(10),
        ClientPacket::Ack { seq: 42 },
        ClientPacket::Ping,
        ClientPacket::SetPresence { online: true },
        ClientPacket::QueryPresence { user: user("bob") },
    ]
}

fn sample_server_packets() -> Vec<ServerPacket> {
    let id = MessageId([1; 16]);
    vec![
        ServerPacket::Welcome {
            version: 1,
            server_id: [2; 16],
            session_id: [3; 16],
            ping_interval_ms: 30_000,
            limits: WireLimits {
                max_frame: MAX,
                max_envelope: 65_536,
                window: 32,
                handshake_max_frame: Some(16_384),
            },
        },
        ServerPacket::Challenge {
            nonce: [4; 32],
            expires_in_ms: 10_000,
        },
        ServerPacket::Registered {
            user: user("alice"),
        },
        ServerPacket::LoggedIn {
            user: user("alice"),
            queued: 3,
        },
        ServerPacket::Key {
            user: user("bob"),
            public_key: vec![5; 7],
        },
        ServerPacket::Accepted { id },
        ServerPacket::Message {
            seq: 1,
            from: user("bob"),
            id,
            envelope: vec![6; 9],
        },
        ServerPacket::Notice {
            seq: 2,
            notice: Notice::Delivered {
                to: user("bob"),
                id,
            },
        },
        ServerPacket::Notice {
            seq: 3,
            notice: Notice::Expired {
                to: user("bob"),
                id,
            },
        },
        ServerPacket::Pong,
        ServerPacket::Presence {
            user: user("bob"),
            online: false,
            last_seen_ms: Some(1_700_000),
        },
        ServerPacket::Presence {
            user: user("bob"),
            online: true,
            last_seen_ms: None,
        },
        ServerPacket::Redirect {
            address: "node2.example:7000".into(),
        },
        ServerPacket::Error {
            code: ErrorCode::UnknownUser,
            id: Some(id),
            user: Some(user("carol")),
            detail: "no such user".into(),
        },
        ServerPacket::Error {
            code: ErrorCode::Unknown(999),
            id: None,
            user: None,
            detail: String::new(),
        },
    ]
}

// ---------------------------------------------------------------- round trips

#[test]
fn sample_packets_round_trip() {
    for p in sample_client_packets() {
        let f = encode_frame(&p, MAX).unwrap();
        assert_eq!(prefix(&f) as usize, f.len() - LENGTH_PREFIX_LEN);
        assert_eq!(decode_client(&f[LENGTH_PREFIX_LEN..]), Ok(p.clone()));
        let mut d = FrameDecoder::new(MAX);
        d.push(&f);
        assert_eq!(d.next_packet::<ClientPacket>(), Ok(Some(p)));
        assert_eq!(d.next_packet::<ClientPacket>(), Ok(None));
        assert_eq!(d.memory(), 0);
    }
    for p in sample_server_packets() {
        let f = encode_frame(&p, MAX).unwrap();
        assert_eq!(
            decode_packet::<ServerPacket>(&f[LENGTH_PREFIX_LEN..]),
            Ok(p)
        );
    }
}

#[test]
fn encode_frame_into_appends() {
    let mut out = b"xy".to_vec();
    encode_frame_into(&ClientPacket::Ping, MAX, &mut out).unwrap();
    encode_frame_into(&ClientPacket::Ack { seq: 1 }, MAX, &mut out).unwrap();
    let mut d = FrameDecoder::new(MAX);
    d.push(&out[2..]);
    assert_eq!(&out[..2], b"xy");
    assert_eq!(d.next_packet(), Ok(Some(ClientPacket::Ping)));
    assert_eq!(d.next_packet(), Ok(Some(ClientPacket::Ack { seq: 1 })));
    assert_eq!(d.next_packet::<ClientPacket>(), Ok(None));
}

// ---------------------------------------------------------------- limits

/// Payload length of `send(n)`, to build frames of an exact size.
fn send_payload_len(n: usize) -> usize {
    encode_frame(&send(n), u32::MAX).unwrap().len() - LENGTH_PREFIX_LEN
}

#[test]
fn frame_exactly_at_max_is_accepted() {
    let p = send(1000);
    let max = send_payload_len(1000) as u32;
    let f = encode_frame(&p, max).unwrap();
    assert_eq!(f.len(), max as usize + LENGTH_PREFIX_LEN);
    let mut d = FrameDecoder::new(max);
    d.push(&f);
    assert_eq!(d.next_packet(), Ok(Some(p)));
    assert_eq!(d.memory(), 0);
}

#[test]
fn encode_too_large_leaves_out_unchanged() {
    let p = send(1000);
    let len = send_payload_len(1000);
    let max = len as u32 - 1;
    let mut out = b"previous frame".to_vec();
    assert_eq!(
        encode_frame_into(&p, max, &mut out),
        Err(EncodeError::TooLarge { len, max })
    );
    assert_eq!(out, b"previous frame");
    assert_eq!(
        encode_frame(&p, max),
        Err(EncodeError::TooLarge { len, max })
    );
    // An oversized packet is counted, not copied: `out` stays near the limit.
    let mut out = Vec::new();
    let huge = send(10 << 20);
    assert!(matches!(
        encode_frame_into(&huge, 1024, &mut out),
        Err(EncodeError::TooLarge { len, max: 1024 }) if len > 10 << 20
    ));
    assert!(
        out.is_empty() && out.capacity() < 4096,
        "capacity {}",
        out.capacity()
    );
}

#[test]
fn too_large_at_max_plus_one() {
    let max = 100;
    let mut d = FrameDecoder::new(max);
    d.push(&101u32.to_be_bytes());
    assert_eq!(d.next_frame(), Err(DecodeError::TooLarge { len: 101, max }));
    assert_eq!(d.memory(), 0);
    // The decoder keeps failing and buffers nothing more.
    d.push(&[0; 50]);
    assert_eq!(d.memory(), 0);
    assert_eq!(d.buffered_len(), 0);
    assert_eq!(d.next_frame(), Err(DecodeError::TooLarge { len: 101, max }));
    assert_eq!(
        d.next_packet::<ClientPacket>(),
        Err(DecodeError::TooLarge { len: 101, max })
    );
}

#[test]
fn too_large_u32_max_without_allocating() {
    let mut d = FrameDecoder::new(MAX);
    for b in [0xff; 3] {
        d.push(&[b]);
        assert!(d.memory() <= 3);
        assert_eq!(d.next_frame(), Ok(None));
    }
    d.push(&[0xff]);
    assert_eq!(
        d.memory(),
        0,
        "nothing is reserved for the announced payload"
    );
    let err = DecodeError::TooLarge {
        len: u32::MAX,
        max: MAX,
    };
    assert_eq!(d.next_frame(), Err(err.clone()));
    // Also when the prefix and a lot of payload come in one chunk.
    let mut d = FrameDecoder::new(MAX);
    let mut chunk = vec![0xff; 4];
    chunk.extend(vec![0; 1 << 20]);
    d.push(&chunk);
    assert_eq!(d.memory(), 0);
    assert_eq!(d.next_packet::<ClientPacket>(), Err(err));
}

#[test]
fn frames_before_a_bad_prefix_are_delivered() {
    let mut stream = encode_frame(&ClientPacket::Ping, MAX).unwrap();
    stream.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut d = FrameDecoder::new(MAX);
    d.push(&stream);
    assert_eq!(d.next_packet(), Ok(Some(ClientPacket::Ping)));
    assert_eq!(
        d.next_packet::<ClientPacket>(),
        Err(DecodeError::TooLarge {
            len: u32::MAX,
            max: MAX
        })
    );
    assert_eq!(d.memory(), 0);
}

#[test]
fn memory_is_released_when_everything_is_consumed() {
    let mut stream = Vec::new();
    for p in sample_client_packets() {
        encode_frame_into(&p, MAX, &mut stream).unwrap();
    }
    let mut d = FrameDecoder::new(MAX);
    assert_eq!(d.memory(), 0);
    let mut got = Vec::new();
    for chunk in stream.chunks(7) {
        d.push(chunk);
        assert!(d.memory() > 0);
        while let Some(p) = d.next_packet::<ClientPacket>().unwrap() {
            got.push(p);
        }
    }
    assert_eq!(got, sample_client_packets());
    assert_eq!(d.buffered_len(), 0);
    assert_eq!(d.memory(), 0);
    // next_frame releases too.
    d.push(&frame(&[0x00]));
    assert_eq!(d.next_frame(), Ok(Some(vec![0x00])));
    assert_eq!(d.memory(), 0);
}

#[test]
fn trickled_frame_grows_geometrically_up_to_its_end() {
    let f = encode_frame(&send(100_000), MAX).unwrap();
    let mut d = FrameDecoder::new(MAX);
    let mut reallocations = 0;
    let mut cap = 0;
    for b in &f[..f.len() - 1] {
        d.push(std::slice::from_ref(b));
        if d.memory() != cap {
            reallocations += 1;
            cap = d.memory();
        }
        assert!(
            cap <= f.len(),
            "capacity {cap} beyond the frame's {}",
            f.len()
        );
    }
    assert!(reallocations < 40, "{reallocations} reallocations");
    d.push(&f[f.len() - 1..]);
    assert_eq!(d.memory(), f.len());
    assert_eq!(d.next_packet(), Ok(Some(send(100_000))));
    assert_eq!(d.memory(), 0);
}

#[test]
fn consumed_bytes_are_compacted_instead_of_growing() {
    let one = encode_frame(&send(100), MAX).unwrap();
    let mut d = FrameDecoder::new(MAX);
    // Two and a half frames, then drain the two.
    let mut chunk = one.repeat(2);
    chunk.extend_from_slice(&one[..one.len() / 2]);
    d.push(&chunk);
    let cap = d.memory();
    assert_eq!(cap, chunk.len());
    assert!(d.next_packet::<ClientPacket>().unwrap().is_some());
    assert!(d.next_packet::<ClientPacket>().unwrap().is_some());
    assert_eq!(d.next_packet::<ClientPacket>(), Ok(None));
    // The rest of the third frame and a fourth fit after compaction.
    let mut rest = one[one.len() / 2..].to_vec();
    rest.extend_from_slice(&one);
    d.push(&rest);
    assert_eq!(d.memory(), cap);
    assert_eq!(d.next_packet(), Ok(Some(send(100))));
    assert_eq!(d.next_packet(), Ok(Some(send(100))));
    assert_eq!(d.memory(), 0);
}

// ---------------------------------------------------------------- payload errors

#[test]
fn empty_payload_is_malformed() {
    assert!(matches!(decode_client(&[]), Err(DecodeError::Malformed(_))));
    let mut d = FrameDecoder::new(MAX);
    d.push(&frame(&[]));
    assert!(matches!(
        d.next_packet::<ClientPacket>(),
        Err(DecodeError::Malformed(_))
    ));
    // Errors are final.
    d.push(&encode_frame(&ClientPacket::Ping, MAX).unwrap());
    assert_eq!(d.memory(), 0);
    assert!(matches!(
        d.next_packet::<ClientPacket>(),
        Err(DecodeError::Malformed(_))
    ));
    // next_frame does not interpret the payload.
    let mut d = FrameDecoder::new(MAX);
    d.push(&frame(&[]));
    assert_eq!(d.next_frame(), Ok(Some(vec![])));
}

#[test]
fn malformed_cbor() {
    for hex in [
        "ff",                                      // break outside an indefinite-length item
        "1c",                                      // reserved additional information
        "a1 6473656e64",                           // map without its value
        "a1 6473656e64 a3 626964",                 // truncated in the middle
        "6470696e",                                // text shorter than announced
        "62 c328",                                 // text that is not UTF-8
        "a1 6568656c6c6f a1 6176 7f 61c3 61a9 ff", // split UTF-8 sequence in a chunk
        "a1 6e71756572795f70726573656e6365 a1 6475736572 63 ff6f62", // invalid UTF-8 in a field
    ] {
        let r = decode_client(&unhex(hex));
        assert!(matches!(r, Err(DecodeError::Malformed(_))), "{hex}: {r:?}");
    }
}

#[test]
fn trailing_bytes() {
    let ping = unhex("6470696e67");
    assert_eq!(decode_client(&ping), Ok(ClientPacket::Ping));
    let mut p = ping.clone();
    p.push(0x00);
    assert_eq!(
        decode_client(&p),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
    let mut p = encode_frame(&send(10), MAX)
        .unwrap()
        .split_off(LENGTH_PREFIX_LEN);
    p.extend_from_slice(&[1, 2, 3]);
    assert_eq!(
        decode_client(&p),
        Err(DecodeError::TrailingBytes { extra: 3 })
    );
    // A second packet in the same frame is trailing too.
    let mut two = ping.clone();
    two.extend_from_slice(&ping);
    assert_eq!(
        decode_client(&two),
        Err(DecodeError::TrailingBytes { extra: 5 })
    );
    // So is the body after a bare tag: `"hello" {"versions": [1]}`.
    let bare = unhex("6568656c6c6f a1 6876657273696f6e73 81 01");
    assert_eq!(
        decode_client(&bare),
        Err(DecodeError::TrailingBytes { extra: 12 })
    );
    let mut d = FrameDecoder::new(MAX);
    d.push(&frame(&p));
    assert_eq!(
        d.next_packet::<ClientPacket>(),
        Err(DecodeError::TrailingBytes { extra: 3 })
    );
    assert_eq!(d.memory(), 0);
}

#[test]
fn unknown_packets() {
    for hex in [
        "a1 646e6f7065 a0",                       // {"nope": {}}: unknown tag
        "646e6f7065",                             // "nope"
        "a1 656c6f67696e a0",                     // {"login": {}}: missing field
        "a1 6361636b a1 63736571 6178",           // {"ack": {"seq": "x"}}: wrong type
        "a1 6361636b a1 63736571 20",             // {"ack": {"seq": -1}}
        "a1 656c6f67696e a1 6475736572 63426f62", // {"login": {"user": "Bob"}}: invalid name
        "6568656c6c6f",                           // "hello": a packet with fields needs a map
        "a1 6470696e67 f6",                       // {"ping": null}: unit packets are bare strings
        "a1 6470696e67 a0",                       // {"ping": {}}
        "a2 6470696e67 f6 6470696e67 f6",         // a map of two entries
        "01",                                     // an integer
        "80",                                     // an empty array
        "a1 6268 69 a0",                          // {"hi": {}}
        "a1 6568656c6c6f a1 6876657273696f6e73 82 01 1a00010000", // version > u16::MAX
    ] {
        let r = decode_client(&unhex(hex));
        assert!(
            matches!(r, Err(DecodeError::UnknownPacket(_))),
            "{hex}: {r:?}"
        );
    }
    // A client packet is not a server packet.
    let ping = unhex("6470696e67");
    assert!(matches!(
        decode_packet::<ServerPacket>(&ping),
        Err(DecodeError::UnknownPacket(_))
    ));
}

/// An invalid user name makes any packet that carries one undecodable
/// (`UnknownPacket`, on the wire `Malformed`), in both directions.
#[test]
fn invalid_user_names_are_unknown_packets_in_every_packet() {
    let bob = user("bob");
    let id = MessageId([1; 16]);
    let to_bob = |notice: fn(UserName, MessageId) -> Notice| ServerPacket::Notice {
        seq: 1,
        notice: notice(bob.clone(), id),
    };
    let client = [
        ClientPacket::Register {
            user: bob.clone(),
            public_key: vec![1],
        },
        ClientPacket::Login { user: bob.clone() },
        ClientPacket::FetchKey { user: bob.clone() },
        ClientPacket::Send {
            id,
            to: bob.clone(),
            envelope: vec![1].into(),
        },
        ClientPacket::QueryPresence { user: bob.clone() },
    ];
    let server = [
        ServerPacket::Registered { user: bob.clone() },
        ServerPacket::LoggedIn {
            user: bob.clone(),
            queued: 0,
        },
        ServerPacket::Key {
            user: bob.clone(),
            public_key: vec![1],
        },
        ServerPacket::Message {
            seq: 1,
            from: bob.clone(),
            id,
            envelope: vec![1],
        },
        to_bob(|to, id| Notice::Delivered { to, id }),
        to_bob(|to, id| Notice::Expired { to, id }),
        ServerPacket::Presence {
            user: bob.clone(),
            online: true,
            last_seen_ms: None,
        },
        ServerPacket::Error {
            code: ErrorCode::UnknownUser,
            id: None,
            user: Some(bob.clone()),
            detail: String::new(),
        },
    ];
    // "bob" (a 3-byte text string) swapped for invalid names of the same
    // length, so that only the name changes.
    let with_name = |payload: Vec<u8>, name: &[u8; 3]| {
        let text = [0x63, b'b', b'o', b'b'];
        let at: Vec<usize> = (0..payload.len())
            .filter(|&i| payload[i..].starts_with(&text))
            .collect();
        assert_eq!(at.len(), 1, "one name in {payload:02x?}");
        let mut out = payload;
        out[at[0] + 1..at[0] + 4].copy_from_slice(name);
        out
    };
    for name in [b"Bob", b"b b", b"b/b", b"b\0b"] {
        for p in &client {
            let payload = with_name(
                encode_frame(p, MAX).unwrap()[LENGTH_PREFIX_LEN..].to_vec(),
                name,
            );
            let r = decode_client(&payload);
            assert!(
                matches!(r, Err(DecodeError::UnknownPacket(_))),
                "{p:?}: {r:?}"
            );
        }
        for p in &server {
            let payload = with_name(
                encode_frame(p, MAX).unwrap()[LENGTH_PREFIX_LEN..].to_vec(),
                name,
            );
            let r = decode_packet::<ServerPacket>(&payload);
            assert!(
                matches!(r, Err(DecodeError::UnknownPacket(_))),
                "{p:?}: {r:?}"
            );
        }
    }
}

// Runs on a thread with a small stack: native only.
#[cfg(not(target_family = "wasm"))]
#[test]
fn recursion_bomb_is_malformed_without_stack_overflow() {
    // Run on a small stack: rejection must not depend on recursion.
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(|| {
            let mut bomb = vec![0x81u8; 10_000];
            bomb.push(0x00);
            assert!(matches!(
                decode_client(&bomb),
                Err(DecodeError::Malformed(_))
            ));
            // Nested inside an ignored field of a real packet.
            let mut p = unhex("a1 6568656c6c6f a2 6876657273696f6e73 81 01 6178");
            p.extend(vec![0x81u8; 10_000]);
            p.push(0x00);
            assert!(matches!(decode_client(&p), Err(DecodeError::Malformed(_))));
            // Indefinite-length arrays, and tags.
            let mut p = vec![0x9fu8; 10_000];
            p.extend(vec![0xffu8; 10_000]);
            assert!(matches!(decode_client(&p), Err(DecodeError::Malformed(_))));
            let mut p = vec![0xc6u8; 10_000];
            p.push(0x00);
            assert!(matches!(decode_client(&p), Err(DecodeError::Malformed(_))));
            // Truncated bomb (the frame holds only the headers).
            let mut d = FrameDecoder::new(MAX);
            d.push(&frame(&[0x81; 10_000]));
            assert!(matches!(
                d.next_packet::<ClientPacket>(),
                Err(DecodeError::Malformed(_))
            ));
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn nesting_within_the_limit_is_not_malformed() {
    // {"hello": {"versions": [1], "x": [[...[0]...]]}}: 2 + depth levels,
    // counted the same way by the scanner and by ciborium.
    let nested = |depth: usize| {
        let mut p = unhex("a1 6568656c6c6f a2 6876657273696f6e73 81 01 6178");
        p.extend(vec![0x81u8; depth]);
        p.push(0x00);
        p
    };
    for depth in 1..=CBOR_RECURSION_LIMIT - 2 {
        assert_eq!(
            decode_client(&nested(depth)),
            Ok(ClientPacket::Hello { versions: vec![1] }),
            "depth {depth}"
        );
    }
    let r = decode_client(&nested(CBOR_RECURSION_LIMIT - 1));
    assert!(matches!(r, Err(DecodeError::Malformed(_))), "{r:?}");
}

#[test]
fn huge_length_headers_in_small_frames() {
    // Byte string / text / array / map headers claiming 2^62 entries.
    let huge = "1b4000000000000000";
    for major in ["5b", "7b", "9b", "bb"] {
        let claim = format!("{major}{}", &huge[2..]);
        // {"send": {"id": h'00'*16, "to": "bob", "envelope": <claim> 00 00}}
        let p = unhex(&format!(
            "a1 6473656e64 a3 626964 50 {} 62746f 63626f62 68656e76656c6f7065 {claim} 0000",
            "00".repeat(16)
        ));
        let r = decode_client(&p);
        assert!(
            matches!(r, Err(DecodeError::Malformed(_))),
            "{major}: {r:?}"
        );
        // ciborium itself never reserves from these headers: handed the
        // same bytes directly, it fails instead of allocating 2^62 bytes.
        let r = ciborium::de::from_reader::<ClientPacket, _>(&p[..]);
        assert!(r.is_err(), "{major}");
    }
    // Hello versions: an array header claiming 2^32 entries.
    let p = unhex("a1 6568656c6c6f a1 6876657273696f6e73 9a ffffffff 01 01");
    assert!(matches!(decode_client(&p), Err(DecodeError::Malformed(_))));
    assert!(ciborium::de::from_reader::<ClientPacket, _>(&p[..]).is_err());
}

#[test]
fn hello_versions_are_capped() {
    let ok = ClientPacket::Hello {
        versions: (1..=MAX_VERSIONS as u16).collect(),
    };
    let f = encode_frame(&ok, MAX).unwrap();
    assert_eq!(decode_client(&f[LENGTH_PREFIX_LEN..]), Ok(ok));
    // 17 versions neither encode nor decode.
    let versions: Vec<u16> = (1..=MAX_VERSIONS as u16 + 1).collect();
    let too_many = ClientPacket::Hello {
        versions: versions.clone(),
    };
    assert!(matches!(
        encode_frame(&too_many, MAX),
        Err(EncodeError::Serialize(_))
    ));
    let mut out = b"x".to_vec();
    assert!(encode_frame_into(&too_many, MAX, &mut out).is_err());
    assert_eq!(out, b"x");
    let mut p = unhex("a1 6568656c6c6f a1 6876657273696f6e73");
    p.push(0x80 | versions.len() as u8);
    p.extend(versions.iter().map(|&v| v as u8));
    assert!(matches!(
        decode_client(&p),
        Err(DecodeError::UnknownPacket(_))
    ));
    // Indefinite-length array of 17.
    let mut p = unhex("a1 6568656c6c6f a1 6876657273696f6e73 9f");
    p.extend(versions.iter().map(|&v| v as u8));
    p.push(0xff);
    assert!(matches!(
        decode_client(&p),
        Err(DecodeError::UnknownPacket(_))
    ));
    // Empty list decodes (the server answers UnsupportedVersion).
    let p = unhex("a1 6568656c6c6f a1 6876657273696f6e73 80");
    assert_eq!(
        decode_client(&p),
        Ok(ClientPacket::Hello { versions: vec![] })
    );
}

#[test]
fn ciborium_reads_exactly_one_item_from_a_slice() {
    // The decoder relies on this: after decoding from `&mut &[u8]`, the
    // slice holds exactly the bytes after the item.
    let mut stream = unhex("a1 6361636b a1 63736571 182a"); // {"ack": {"seq": 42}}
    stream.extend_from_slice(&unhex("6470696e67 00"));
    let mut rest = &stream[..];
    let p: ClientPacket = ciborium::de::from_reader(&mut rest).unwrap();
    assert_eq!(p, ClientPacket::Ack { seq: 42 });
    assert_eq!(rest, unhex("6470696e67 00"));
    let p: ClientPacket = ciborium::de::from_reader(&mut rest).unwrap();
    assert_eq!(p, ClientPacket::Ping);
    assert_eq!(rest, [0x00]);
    // A unit variant written as a map leaves its value unread.
    let mut rest = &unhex("a1 6470696e67 f6")[..];
    let p: ClientPacket = ciborium::de::from_reader(&mut rest).unwrap();
    assert_eq!(p, ClientPacket::Ping);
    assert_eq!(rest, [0xf6]);
}

#[test]
fn optional_fields_may_be_null_or_absent() {
    // {"error": {"code": 1, "detail": ""}}
    let absent = unhex("a1 656572726f72 a2 64636f6465 01 6664657461696c 60");
    // {"error": {"code": 1, "id": null, "user": null, "detail": ""}}
    let null = unhex("a1 656572726f72 a4 64636f6465 01 626964 f6 6475736572 f6 6664657461696c 60");
    let want = ServerPacket::Error {
        code: ErrorCode::UnknownUser,
        id: None,
        user: None,
        detail: String::new(),
    };
    assert_eq!(decode_packet::<ServerPacket>(&absent), Ok(want.clone()));
    assert_eq!(decode_packet::<ServerPacket>(&null), Ok(want.clone()));
    // The encoder writes null.
    assert_eq!(
        encode_frame(&want, MAX).unwrap()[LENGTH_PREFIX_LEN..],
        null[..]
    );
}

#[test]
fn unknown_fields_are_ignored_and_field_order_is_free() {
    // {"ack": {"zz": [1, {"a": h'00'}], "seq": 5}}
    let p = unhex("a1 6361636b a2 627a7a 82 01 a1 6161 4100 63736571 05");
    assert_eq!(decode_client(&p), Ok(ClientPacket::Ack { seq: 5 }));
    // Fields in another order: {"send": {"envelope": h'', "to": "bob", "id": h'07'*16}}
    let p = unhex(&format!(
        "a1 6473656e64 a3 68656e76656c6f7065 40 62746f 63626f62 626964 50 {}",
        "07".repeat(16)
    ));
    assert_eq!(decode_client(&p), Ok(send(0)));
}

// ---------------------------------------------------------------- proptest strategies

#[cfg(not(target_family = "wasm"))]
fn user_name() -> impl Strategy<Value = UserName> {
    "[a-z0-9._-]{1,32}".prop_map(|s| UserName::new(s).unwrap())
}

#[cfg(not(target_family = "wasm"))]
fn message_id() -> impl Strategy<Value = MessageId> {
    any::<[u8; 16]>().prop_map(MessageId)
}

#[cfg(not(target_family = "wasm"))]
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

#[cfg(not(target_family = "wasm"))]
prop_compose! {
    fn wire_limits()(
        max_frame in any::<u32>(),
        max_envelope in any::<u32>(),
        window in any::<u32>(),
        handshake_max_frame in any::<Option<u32>>(),
    ) -> WireLimits {
        WireLimits { max_frame, max_envelope, window, handshake_max_frame }
    }
}

#[cfg(not(target_family = "wasm"))]
fn notice() -> impl Strategy<Value = Notice> {
    prop_oneof![
        (user_name(), message_id()).prop_map(|(to, id)| Notice::Delivered { to, id }),
        (user_name(), message_id()).prop_map(|(to, id)| Notice::Expired { to, id }),
    ]
}

#[cfg(not(target_family = "wasm"))]
fn client_packet() -> impl Strategy<Value = ClientPacket> {
    prop_oneof![
        prop::collection::vec(any::<u16>(), 0..=MAX_VERSIONS)
            .prop_map(|versions| ClientPacket::Hello { versions }),
        (user_name(), bytes())
            .prop_map(|(user, public_key)| ClientPacket::Register { user, public_key }),
        user_name().prop_map(|user| ClientPacket::Login { user }),
        (any::<[u8; 32]>(), bytes()).prop_map(|(client_nonce, signature)| ClientPacket::Prove {
            client_nonce,
            signature
        }),
        user_name().prop_map(|user| ClientPacket::FetchKey { user }),
        (message_id(), user_name(), bytes()).prop_map(|(id, to, envelope)| ClientPacket::Send {
            id,
            to,
            envelope: envelope.into()
        }),
        any::<u64>().prop_map(|seq| ClientPacket::Ack { seq }),
        Just(ClientPacket::Ping),
        any::<bool>().prop_map(|online| ClientPacket::SetPresence { online }),
        user_name().prop_map(|user| ClientPacket::QueryPresence { user }),
    ]
}

#[cfg(not(target_family = "wasm"))]
prop_compose! {
    fn welcome()(
        version in any::<u16>(),
        server_id in any::<[u8; 16]>(),
        session_id in any::<[u8; 16]>(),
        ping_interval_ms in any::<u64>(),
        limits in wire_limits(),
    ) -> ServerPacket {
        ServerPacket::Welcome { version, server_id, session_id, ping_interval_ms, limits }
    }
}

#[cfg(not(target_family = "wasm"))]
prop_compose! {
    fn error_packet()(
        code in any::<u16>().prop_map(ErrorCode::from),
        id in prop::option::of(message_id()),
        user in prop::option::of(user_name()),
        detail in "\\PC{0,40}",
    ) -> ServerPacket {
        ServerPacket::Error { code, id, user, detail }
    }
}

#[cfg(not(target_family = "wasm"))]
fn server_packet() -> impl Strategy<Value = ServerPacket> {
    prop_oneof![
        welcome(),
        (any::<[u8; 32]>(), any::<u64>()).prop_map(|(nonce, expires_in_ms)| {
            ServerPacket::Challenge {
                nonce,
                expires_in_ms,
            }
        }),
        user_name().prop_map(|user| ServerPacket::Registered { user }),
        (user_name(), any::<u64>())
            .prop_map(|(user, queued)| ServerPacket::LoggedIn { user, queued }),
        (user_name(), bytes())
            .prop_map(|(user, public_key)| ServerPacket::Key { user, public_key }),
        message_id().prop_map(|id| ServerPacket::Accepted { id }),
        (any::<u64>(), user_name(), message_id(), bytes()).prop_map(|(seq, from, id, envelope)| {
            ServerPacket::Message {
                seq,
                from,
                id,
                envelope,
            }
        }),
        (any::<u64>(), notice()).prop_map(|(seq, notice)| ServerPacket::Notice { seq, notice }),
        Just(ServerPacket::Pong),
        (user_name(), any::<bool>(), prop::option::of(any::<u64>())).prop_map(
            |(user, online, last_seen_ms)| ServerPacket::Presence {
                user,
                online,
                last_seen_ms
            }
        ),
        ".{0,64}".prop_map(|address| ServerPacket::Redirect { address }),
        error_packet(),
    ]
}

#[cfg(not(target_family = "wasm"))]
/// Cut points splitting `len` bytes into chunks (sorted, deduplicated).
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = raw.iter().map(|&x| x % (len + 1)).collect();
    c.push(0);
    c.push(len);
    c.sort_unstable();
    c.dedup();
    c
}

#[cfg(not(target_family = "wasm"))]
/// Pushes `stream` cut at `cuts`, draining packets after each chunk.
fn feed<P: DeserializeOwned>(
    d: &mut FrameDecoder,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Vec<P>, DecodeError> {
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        d.push(&stream[w[0]..w[1]]);
        while let Some(p) = d.next_packet()? {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(not(target_family = "wasm"))]
proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn prop_client_packets_round_trip(p in client_packet()) {
        let f = encode_frame(&p, MAX).unwrap();
        let mut d = FrameDecoder::new(MAX);
        d.push(&f);
        prop_assert_eq!(d.next_packet::<ClientPacket>(), Ok(Some(p)));
        prop_assert_eq!(d.next_packet::<ClientPacket>(), Ok(None));
        prop_assert_eq!(d.memory(), 0);
    }

    #[test]
    fn prop_server_packets_round_trip(p in server_packet()) {
        let f = encode_frame(&p, MAX).unwrap();
        let mut d = FrameDecoder::new(MAX);
        d.push(&f);
        prop_assert_eq!(d.next_packet::<ServerPacket>(), Ok(Some(p)));
        prop_assert_eq!(d.next_packet::<ServerPacket>(), Ok(None));
        prop_assert_eq!(d.memory(), 0);
    }

    /// The packet codec is the frame codec without the prefix: a bare
    /// packet is the frame's payload, decodes back as a message, and the
    /// payloads of concatenated frames are the packets in order.
    #[test]
    fn prop_bare_packets_are_frame_payloads(packets in prop::collection::vec(server_packet(), 1..6)) {
        let mut frames = Vec::new();
        let mut bare = Vec::new();
        for p in &packets {
            let mut message = Vec::new();
            encode_packet_into(p, MAX, &mut message).unwrap();
            let frame = encode_frame(p, MAX).unwrap();
            prop_assert_eq!(&frame[LENGTH_PREFIX_LEN..], &message[..]);
            let mut d = FrameDecoder::new(MAX);
            prop_assert_eq!(d.decode_message::<ServerPacket>(&message), Ok(p.clone()));
            prop_assert_eq!(d.memory(), 0);
            frames.extend_from_slice(&frame);
            bare.push(message);
        }
        let payloads: Vec<&[u8]> = frame_payloads(&frames).collect();
        prop_assert_eq!(payloads, bare.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn prop_any_split_yields_the_same_packets(
        packets in prop::collection::vec(server_packet(), 1..8),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = Vec::new();
        for p in &packets {
            encode_frame_into(p, MAX, &mut stream).unwrap();
        }
        let cuts = cuts(stream.len(), &raw_cuts);
        let mut d = FrameDecoder::new(MAX);
        let largest = cuts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let got: Vec<ServerPacket> = feed(&mut d, &stream, &cuts).unwrap();
        prop_assert_eq!(&got, &packets);
        prop_assert_eq!(d.memory(), 0);
        prop_assert_eq!(d.buffered_len(), 0);
        // Same through next_frame.
        let mut d = FrameDecoder::new(MAX);
        let mut frames = Vec::new();
        for w in cuts.windows(2) {
            d.push(&stream[w[0]..w[1]]);
            prop_assert!(d.memory() <= stream.len().max(largest));
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        prop_assert_eq!(frames.len(), packets.len());
        prop_assert_eq!(d.memory(), 0);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic_and_stay_bounded(
        max in 0u32..2048,
        data in prop::collection::vec(any::<u8>(), 0..4096),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..32),
        small_prefixes in any::<bool>(),
    ) {
        let mut data = data;
        if small_prefixes {
            // Make some 4-byte groups plausible prefixes so that frames
            // actually complete and payloads get decoded.
            for (i, chunk) in data.chunks_mut(37).enumerate() {
                if chunk.len() >= 4 {
                    chunk[..2].fill(0);
                    chunk[2] = (i % 3) as u8;
                }
            }
        }
        let cuts = cuts(data.len(), &raw_cuts);
        let mut d = FrameDecoder::new(max);
        let mut largest = 0;
        let mut failed = false;
        for w in cuts.windows(2) {
            let chunk = &data[w[0]..w[1]];
            largest = largest.max(chunk.len());
            d.push(chunk);
            prop_assert!(d.memory() <= max as usize + LENGTH_PREFIX_LEN + largest);
            loop {
                match d.next_packet::<ClientPacket>() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        failed = true;
                        prop_assert_eq!(d.memory(), 0);
                        prop_assert_eq!(d.next_packet::<ServerPacket>(), Err(e));
                        break;
                    }
                }
            }
            prop_assert!(d.memory() <= max as usize + LENGTH_PREFIX_LEN + largest);
            if failed {
                prop_assert_eq!(d.memory(), 0);
            }
        }
    }

    #[test]
    fn prop_prefix_above_max_is_rejected_without_reserving(
        max in 0u32..=DEFAULT_MAX_FRAME,
        excess in 1u32..,
        tail in prop::collection::vec(any::<u8>(), 0..64),
        split in 0usize..4,
    ) {
        let len = max.saturating_add(excess).max(max + 1);
        let mut d = FrameDecoder::new(max);
        let prefix = len.to_be_bytes();
        d.push(&prefix[..split]);
        prop_assert!(d.memory() <= split);
        prop_assert_eq!(d.next_frame(), Ok(None));
        let mut rest = prefix[split..].to_vec();
        rest.extend_from_slice(&tail);
        d.push(&rest);
        prop_assert_eq!(d.memory(), 0);
        prop_assert_eq!(d.next_frame(), Err(DecodeError::TooLarge { len, max }));
        d.push(&tail);
        prop_assert_eq!(d.memory(), 0);
        prop_assert_eq!(d.next_packet::<ClientPacket>(), Err(DecodeError::TooLarge { len, max }));
    }

    #[test]
    fn prop_arbitrary_payloads_never_panic(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_packet::<ClientPacket>(&payload);
        let _ = decode_packet::<ServerPacket>(&payload);
    }

    #[test]
    fn prop_mutated_packets_never_panic(
        p in server_packet(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut payload = encode_frame(&p, MAX).unwrap().split_off(LENGTH_PREFIX_LEN);
        for (at, byte) in edits {
            let i = at % payload.len();
            payload[i] = byte;
        }
        let r = decode_packet::<ServerPacket>(&payload);
        // Whatever decodes must re-encode to a valid frame.
        if let Ok(p) = r {
            let f = encode_frame(&p, MAX).unwrap();
            prop_assert_eq!(decode_packet::<ServerPacket>(&f[LENGTH_PREFIX_LEN..]), Ok(p));
        }
    }

    #[test]
    fn prop_arbitrary_cbor_values_never_panic(v in cbor_value()) {
        let mut payload = Vec::new();
        ciborium::ser::into_writer(&v, &mut payload).unwrap();
        let _ = decode_packet::<ClientPacket>(&payload);
        let _ = decode_packet::<ServerPacket>(&payload);
        // Wrapped as the body of every tag.
        for tag in ["hello", "send", "welcome", "error", "notice", "ping"] {
            let wrapped = ciborium::Value::Map(vec![(ciborium::Value::Text(tag.into()), v.clone())]);
            let mut payload = Vec::new();
            ciborium::ser::into_writer(&wrapped, &mut payload).unwrap();
            let _ = decode_packet::<ClientPacket>(&payload);
            let _ = decode_packet::<ServerPacket>(&payload);
        }
    }
}

#[cfg(not(target_family = "wasm"))]
/// Arbitrary CBOR values, biased towards packet field names.
fn cbor_value() -> impl Strategy<Value = ciborium::Value> {
    use ciborium::Value;
    let key = prop_oneof![
        Just("versions"),
        Just("user"),
        Just("id"),
        Just("to"),
        Just("envelope"),
        Just("seq"),
        Just("code"),
        Just("detail"),
        Just("notice"),
        Just("delivered"),
        Just("limits"),
        Just("server_id"),
        Just("last_seen_ms"),
        Just("x"),
    ]
    .prop_map(|k| Value::Text(k.into()));
    let leaf = prop_oneof![
        any::<u64>().prop_map(|n| Value::Integer(n.into())),
        any::<i64>().prop_map(|n| Value::Integer(n.into())),
        bytes().prop_map(Value::Bytes),
        "[a-z]{0,8}".prop_map(Value::Text),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        any::<f64>().prop_map(Value::Float),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner.clone()), 0..6).prop_map(Value::Map),
            (0u64..40, inner).prop_map(|(t, v)| Value::Tag(t, Box::new(v))),
        ]
    })
}

// ---------------------------------------------------------------- throughput

/// Rough throughput; run with
/// `cargo test --release -p missive-core wire::codec::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    use crate::time::Instant;
    let n = 1_000_000;
    let packet = send(100);
    let one = encode_frame(&packet, MAX).unwrap();
    let t = Instant::now();
    let mut stream = Vec::with_capacity(one.len() * n);
    for _ in 0..n {
        encode_frame_into(&packet, MAX, &mut stream).unwrap();
    }
    let enc = t.elapsed();
    let t = Instant::now();
    let mut d = FrameDecoder::new(MAX);
    let mut count = 0usize;
    for chunk in stream.chunks(64 * 1024) {
        d.push(chunk);
        while let Some(p) = d.next_packet::<ClientPacket>().unwrap() {
            count += matches!(p, ClientPacket::Send { .. }) as usize;
        }
    }
    let dec = t.elapsed();
    assert_eq!(count, n);
    let t = Instant::now();
    let mut frames = 0usize;
    for chunk in stream.chunks(64 * 1024) {
        d.push(chunk);
        while let Some(f) = d.next_frame().unwrap() {
            frames += f.len();
        }
    }
    let fr = t.elapsed();
    let t = Instant::now();
    let mut copy = Vec::new();
    for chunk in stream.chunks(64 * 1024) {
        copy.clear();
        copy.extend_from_slice(chunk);
        std::hint::black_box(&copy);
    }
    let mc = t.elapsed();
    let mb = stream.len() as f64 / 1e6;
    println!("{n} Send packets of {} bytes ({mb:.0} MB)", one.len());
    println!(
        "encode_frame_into: {:.2} M packets/s",
        n as f64 / enc.as_secs_f64() / 1e6
    );
    println!(
        "next_packet:       {:.2} M packets/s, {:.0} MB/s",
        n as f64 / dec.as_secs_f64() / 1e6,
        mb / dec.as_secs_f64()
    );
    println!(
        "next_frame:        {:.0} MB/s ({frames} payload bytes)",
        mb / fr.as_secs_f64()
    );
    println!("memcpy (64 KiB):   {:.0} MB/s", mb / mc.as_secs_f64());

    // Where next_packet's time goes, on one payload.
    let payload = &one[LENGTH_PREFIX_LEN..];
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(crate::wire::cbor::item_len(std::hint::black_box(payload)).unwrap());
    }
    let scan = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(decode_client(std::hint::black_box(payload)).unwrap());
    }
    let decode = t.elapsed();
    println!(
        "per packet: scan {:.0} ns, decode_packet {:.0} ns",
        scan.as_nanos() as f64 / n as f64,
        decode.as_nanos() as f64 / n as f64
    );

    // Large frames: 16 KiB envelopes.
    let big = send(16 * 1024);
    let mut stream = Vec::new();
    for _ in 0..4096 {
        encode_frame_into(&big, MAX, &mut stream).unwrap();
    }
    let mb = stream.len() as f64 / 1e6;
    let t = Instant::now();
    for chunk in stream.chunks(64 * 1024) {
        d.push(chunk);
        while let Some(f) = d.next_frame().unwrap() {
            std::hint::black_box(&f);
        }
    }
    let fr = t.elapsed();
    let t = Instant::now();
    for chunk in stream.chunks(64 * 1024) {
        d.push(chunk);
        while let Some(p) = d.next_packet::<ClientPacket>().unwrap() {
            std::hint::black_box(&p);
        }
    }
    let pk = t.elapsed();
    println!(
        "16 KiB envelopes: next_frame {:.0} MB/s, next_packet {:.0} MB/s",
        mb / fr.as_secs_f64(),
        mb / pk.as_secs_f64()
    );
}

#[cfg(not(target_family = "wasm"))]
/// Everything `next_packet` returns for `stream` fed in `cuts`, then the
/// first error (if any).
fn drain_pushing(stream: &[u8], cuts: &[usize]) -> (Vec<ClientPacket>, Option<DecodeError>) {
    let mut d = FrameDecoder::new(MAX);
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        d.push(&stream[w[0]..w[1]]);
        loop {
            match d.next_packet::<ClientPacket>() {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

#[cfg(not(target_family = "wasm"))]
/// The same through `next_packet_from`.
fn drain_in_place(stream: &[u8], cuts: &[usize]) -> (Vec<ClientPacket>, Option<DecodeError>) {
    let mut d = FrameDecoder::new(MAX);
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        let mut input = &stream[w[0]..w[1]];
        loop {
            match d.next_packet_from(&mut input, crate::wire::hot_decode::client_packet) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        assert!(input.is_empty());
    }
    assert_eq!(d.buffered_len(), 0, "whole frames leave nothing behind");
    (out, None)
}

#[cfg(not(target_family = "wasm"))]
proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Decoding in place gives what pushing gives, for any split, including
    /// a bad frame (garbage or an oversized prefix) somewhere in the stream.
    #[test]
    fn prop_in_place_decoding_matches_pushing(
        packets in prop::collection::vec(client_packet(), 1..6),
        bad in prop::option::of((0usize..6, any::<bool>())),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if let Some((at, oversized)) = bad && at == i {
                if oversized {
                    stream.extend_from_slice(&(MAX + 1).to_be_bytes());
                } else {
                    stream.extend_from_slice(&frame(&[0xff, 0x00]));
                }
            }
            encode_frame_into(p, MAX, &mut stream).unwrap();
        }
        let cuts = cuts(stream.len(), &raw_cuts);
        prop_assert_eq!(drain_in_place(&stream, &cuts), drain_pushing(&stream, &cuts));
    }
}

/// A message is limited like a frame (checked before decoding), a bare
/// packet too large to encode leaves the buffer as it was, and decoding
/// errors are final.
#[test]
fn messages_are_limited_and_errors_are_final() {
    let mut d = FrameDecoder::new(8);
    assert_eq!(
        d.decode_message::<ClientPacket>(&[0x40; 9]),
        Err(DecodeError::TooLarge { len: 9, max: 8 })
    );
    assert_eq!(
        d.decode_message::<ClientPacket>(b"\x64ping"),
        Err(DecodeError::TooLarge { len: 9, max: 8 })
    );
    let mut fresh = FrameDecoder::new(8);
    assert_eq!(
        fresh.decode_message::<ClientPacket>(b"\x64ping"),
        Ok(ClientPacket::Ping)
    );
    let mut out = b"kept".to_vec();
    let big = ClientPacket::FetchKey {
        user: UserName::new("abcdefgh").unwrap(),
    };
    assert!(matches!(
        encode_packet_into(&big, 8, &mut out),
        Err(EncodeError::TooLarge { .. })
    ));
    assert_eq!(out, b"kept");
}
