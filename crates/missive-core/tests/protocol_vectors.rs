//! Checks the hex test vectors of docs/PROTOCOL.md §6 against the code.
//!
//! Vectors are lines of the form `name: hex` inside the fenced blocks that
//! follow a `<!-- vectors -->` marker. To regenerate the section after a
//! deliberate change, run
//! `MISSIVE_PRINT_VECTORS=1 cargo test -p missive-core --test protocol_vectors -- --nocapture`
//! and paste the output into the spec.

use missive_core::crypto::{self, AuthContext, AuthTranscript, EnvelopeHeader, Identity};
use missive_core::rng;
use missive_core::wire::{
    ClientPacket, DEFAULT_MAX_FRAME, ErrorCode, Notice, ServerPacket, WireLimits, decode_packet,
    encode_frame,
};
use missive_core::{MessageId, UserName};
use std::collections::BTreeMap;

fn user(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

fn client_packets() -> Vec<(&'static str, ClientPacket)> {
    vec![
        ("client.hello", ClientPacket::Hello { versions: vec![1] }),
        (
            "client.register",
            ClientPacket::Register {
                user: user("alice"),
                public_key: vec![0x30, 0x82, 0x01, 0x22],
            },
        ),
        (
            "client.login",
            ClientPacket::Login {
                user: user("alice"),
            },
        ),
        (
            "client.prove",
            ClientPacket::Prove {
                client_nonce: [0x11; 32],
                signature: vec![0xaa, 0xbb, 0xcc],
            },
        ),
        (
            "client.fetch_key",
            ClientPacket::FetchKey { user: user("bob") },
        ),
        (
            "client.send",
            ClientPacket::Send {
                id: MessageId([0x42; 16]),
                to: user("bob"),
                envelope: vec![1, 2, 3, 4],
            },
        ),
        ("client.ack", ClientPacket::Ack { seq: 7 }),
        ("client.ping", ClientPacket::Ping),
        (
            "client.set_presence",
            ClientPacket::SetPresence { online: false },
        ),
        (
            "client.query_presence",
            ClientPacket::QueryPresence { user: user("bob") },
        ),
    ]
}

fn server_packets() -> Vec<(&'static str, ServerPacket)> {
    vec![
        (
            "server.welcome",
            ServerPacket::Welcome {
                version: 1,
                server_id: [0x01; 16],
                session_id: [0x02; 16],
                ping_interval_ms: 30_000,
                limits: WireLimits {
                    max_frame: 262_144,
                    max_envelope: 261_120,
                    window: 256,
                    handshake_max_frame: Some(16_384),
                },
            },
        ),
        (
            "server.challenge",
            ServerPacket::Challenge {
                nonce: [0x33; 32],
                expires_in_ms: 30_000,
            },
        ),
        (
            "server.registered",
            ServerPacket::Registered {
                user: user("alice"),
            },
        ),
        (
            "server.logged_in",
            ServerPacket::LoggedIn {
                user: user("alice"),
                queued: 2,
            },
        ),
        (
            "server.key",
            ServerPacket::Key {
                user: user("bob"),
                public_key: vec![0x30, 0x82],
            },
        ),
        (
            "server.accepted",
            ServerPacket::Accepted {
                id: MessageId([0x42; 16]),
            },
        ),
        (
            "server.message",
            ServerPacket::Message {
                seq: 5,
                from: user("alice"),
                id: MessageId([0x42; 16]),
                envelope: vec![9, 8, 7],
            },
        ),
        (
            "server.notice",
            ServerPacket::Notice {
                seq: 6,
                notice: Notice::Delivered {
                    to: user("bob"),
                    id: MessageId([0x42; 16]),
                },
            },
        ),
        ("server.pong", ServerPacket::Pong),
        (
            "server.presence",
            ServerPacket::Presence {
                user: user("bob"),
                online: false,
                last_seen_ms: Some(1_700_000_000_000),
            },
        ),
        (
            "server.error",
            ServerPacket::Error {
                code: ErrorCode::QueueFull,
                id: Some(MessageId([0x42; 16])),
                user: Some(user("bob")),
                detail: "full".into(),
            },
        ),
    ]
}

fn transcript_vector() -> Vec<u8> {
    let alice = user("alice");
    AuthTranscript {
        context: AuthContext::Login,
        server_id: [0x01; 16],
        session_id: [0x02; 16],
        user: &alice,
        server_nonce: [0x33; 32],
        client_nonce: [0x44; 32],
    }
    .to_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `name: value` lines from the fenced blocks after `<!-- vectors -->`,
/// where a value may continue on following lines indented by spaces.
fn spec_vectors() -> BTreeMap<String, String> {
    let spec = include_str!("../../../docs/PROTOCOL.md");
    let section = spec
        .split("<!-- vectors -->")
        .nth(1)
        .expect("spec has a vectors section");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut in_block = false;
    let mut current: Option<String> = None;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            current = None;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(rest) = line.strip_prefix("    ") {
            let key = current.as_ref().expect("continuation after a name");
            if let Some(v) = out.get_mut(key) {
                v.push_str(rest.trim());
            }
        } else if let Some(name) = line.strip_suffix(':') {
            out.insert(name.trim().to_owned(), String::new());
            current = Some(name.trim().to_owned());
        } else if let Some((name, value)) = line.split_once(": ") {
            out.insert(name.trim().to_owned(), value.trim().to_owned());
            current = Some(name.trim().to_owned());
        }
    }
    out
}

/// Two fixed identities for the envelope vector, from the spec's PEM blocks.
fn spec_identity(vectors: &BTreeMap<String, String>, name: &str) -> Identity {
    let der = unhex(&vectors[name]);
    Identity::from_pkcs8_der(&der).expect("spec key parses")
}

const BODY: &[u8] = b"hello bob";

fn envelope_header() -> EnvelopeHeader {
    EnvelopeHeader {
        version: 1,
        sender: user("alice"),
        recipient: user("bob"),
        id: MessageId([0x42; 16]),
        sent_at: 1_700_000_000_000,
    }
}

#[test]
fn spec_vectors_match_the_code() {
    if std::env::var_os("MISSIVE_PRINT_VECTORS").is_some() {
        return print_vectors();
    }
    let vectors = spec_vectors();
    let mut checked = 0;
    for (name, packet) in client_packets() {
        let frame = encode_frame(&packet, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(vectors.get(name), Some(&hex(&frame)), "vector {name}");
        assert_eq!(
            decode_packet::<ClientPacket>(&frame[4..]).unwrap(),
            packet,
            "decoding {name}"
        );
        checked += 1;
    }
    for (name, packet) in server_packets() {
        let frame = encode_frame(&packet, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(vectors.get(name), Some(&hex(&frame)), "vector {name}");
        assert_eq!(
            decode_packet::<ServerPacket>(&frame[4..]).unwrap(),
            packet,
            "decoding {name}"
        );
        checked += 1;
    }
    assert_eq!(
        vectors.get("transcript.login"),
        Some(&hex(&transcript_vector()))
    );

    // Envelope: the spec's envelope opens with the spec's keys to the
    // spec's body, and sealing with the spec's seed reproduces it.
    let alice = spec_identity(&vectors, "key.alice.pkcs8");
    let bob = spec_identity(&vectors, "key.bob.pkcs8");
    assert_eq!(
        vectors["key.alice.fingerprint"],
        alice.public_key().fingerprint().to_string()
    );
    let envelope = unhex(&vectors["envelope.alice_to_bob"]);
    let opened = crypto::open(
        &bob,
        &user("bob"),
        &user("alice"),
        alice.public_key(),
        &envelope,
        usize::MAX,
    )
    .unwrap();
    assert_eq!(opened.body, BODY);
    assert_eq!(opened.header, envelope_header());
    let resealed = seal_vector(&alice, &bob);
    assert_eq!(
        resealed, envelope,
        "sealing is deterministic for a given seed"
    );
    checked += 2;
    assert!(checked >= 22);
}

/// The spec's envelope: sealed by alice for bob from the seed 32 × 0x55.
fn seal_vector(alice: &Identity, bob: &Identity) -> Vec<u8> {
    let mut rng = rng::from_seed([0x55; 32]);
    crypto::seal(
        &mut rng,
        alice,
        &envelope_header(),
        bob.public_key(),
        BODY,
        usize::MAX,
    )
    .unwrap()
}

fn print_vectors() {
    println!("```");
    for (name, packet) in client_packets() {
        println!(
            "{name}: {}",
            hex(&encode_frame(&packet, DEFAULT_MAX_FRAME).unwrap())
        );
    }
    for (name, packet) in server_packets() {
        println!(
            "{name}: {}",
            hex(&encode_frame(&packet, DEFAULT_MAX_FRAME).unwrap())
        );
    }
    println!("transcript.login: {}", hex(&transcript_vector()));
    println!("```");
    let alice = Identity::generate(&mut rng::from_seed([0xa1; 32]), 2048).unwrap();
    let bob = Identity::generate(&mut rng::from_seed([0xb0; 32]), 2048).unwrap();
    let envelope = seal_vector(&alice, &bob);
    println!("```");
    print_long("key.alice.pkcs8", &alice.to_pkcs8_der());
    println!(
        "key.alice.fingerprint: {}",
        alice.public_key().fingerprint()
    );
    print_long("key.bob.pkcs8", &bob.to_pkcs8_der());
    print_long("envelope.alice_to_bob", &envelope);
    println!("```");
}

fn print_long(name: &str, bytes: &[u8]) {
    let h = hex(bytes);
    println!("{name}:");
    for chunk in h.as_bytes().chunks(64) {
        println!("    {}", std::str::from_utf8(chunk).unwrap());
    }
}
