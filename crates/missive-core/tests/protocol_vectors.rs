//! Checks the hex test vectors of docs/PROTOCOL.md §6 against the code.
//!
//! Vectors are lines of the form `name: hex` inside the fenced blocks that
//! follow a `<!-- vectors -->` marker. To regenerate the section after a
//! deliberate change, run
//! `MISSIVE_PRINT_VECTORS=1 cargo test -p missive-core --test protocol_vectors -- --nocapture`
//! and paste the output into the spec.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ciborium::Value;
use missive_core::crypto::{
    self, AuthContext, AuthTranscript, ChannelBinding, EnvelopeHeader, Identity, TranscriptVersion,
};
use missive_core::rng;
use missive_core::wire::{
    ClientPacket, DEFAULT_MAX_FRAME, ErrorCode, Notice, ServerPacket, WireLimits, decode_packet,
    encode_frame,
};
use missive_core::{MessageId, UserName};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use sha2::{Digest, Sha256};
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
                envelope: vec![1, 2, 3, 4].into(),
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
            "server.redirect",
            ServerPacket::Redirect {
                address: "node2.example:7000".into(),
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

/// The login transcripts of §6.2: v1, and v2 with each binding type.
fn transcript_vectors() -> [(&'static str, Vec<u8>); 3] {
    [
        ("transcript.login", transcript_vector(TranscriptVersion::V1)),
        (
            "transcript.v2.login.tls_exporter",
            transcript_vector(TranscriptVersion::V2(ChannelBinding::TlsExporter(
                [0x66; 32],
            ))),
        ),
        (
            "transcript.v2.login.none",
            transcript_vector(TranscriptVersion::V2(ChannelBinding::None)),
        ),
    ]
}

fn transcript_vector(version: TranscriptVersion) -> Vec<u8> {
    let alice = user("alice");
    AuthTranscript {
        version,
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
    for (name, transcript) in transcript_vectors() {
        assert_eq!(vectors.get(name), Some(&hex(&transcript)), "vector {name}");
    }

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
    assert_eq!(
        seal_by_hand(&alice, &bob, 0x55, &unhex(&header_hex(&EXACT_HEADER))),
        envelope,
        "sealing by hand follows §3.3 as `seal` does"
    );
    checked += 2;

    // Envelopes with headers in other encodings than `seal` writes, each
    // with its verdict (§3.3: any well-formed encoding opens).
    for vector in header_vectors() {
        let envelope = unhex(&vectors[vector.name]);
        assert_eq!(
            seal_by_hand(
                &alice,
                &bob,
                vector.seed,
                &unhex(&header_hex(vector.header))
            ),
            envelope,
            "vector {}",
            vector.name
        );
        let opened = crypto::open(
            &bob,
            &user("bob"),
            &user("alice"),
            alice.public_key(),
            &envelope,
            usize::MAX,
        );
        if let Ok(opened) = &opened {
            assert_eq!(opened.body, BODY, "vector {}", vector.name);
            assert_eq!(
                opened.header,
                EnvelopeHeader {
                    sent_at: vector.sent_at,
                    ..envelope_header()
                },
                "vector {}",
                vector.name
            );
        }
        assert_eq!(verdict(&opened), vector.verdict, "vector {}", vector.name);
        assert_eq!(
            vectors[&format!("{}.verdict", vector.name)],
            vector.verdict,
            "the spec's verdict for {}",
            vector.name
        );
        checked += 1;
    }
    assert!(checked >= 26);
}

/// The verdict of opening an envelope as the spec writes it: `opens`, or
/// the name of the error.
fn verdict(opened: &Result<crypto::Opened, crypto::OpenError>) -> &'static str {
    use crypto::OpenError::*;
    match opened {
        Ok(_) => "opens",
        Err(Malformed(_)) => "Malformed",
        Err(TooLarge { .. }) => "TooLarge",
        Err(UnsupportedVersion(_)) => "UnsupportedVersion",
        Err(WrongRecipient(_)) => "WrongRecipient",
        Err(WrongSender(_)) => "WrongSender",
        Err(BadSignature) => "BadSignature",
        Err(CannotDecrypt) => "CannotDecrypt",
        Err(other) => panic!("no verdict name for {other:?}"),
    }
}

/// The fields of `envelope_header()` as `seal` encodes them (hex).
const V: &str = "6176 01"; // "v": 1
const FROM: &str = "6466726f6d 65616c696365"; // "from": "alice"
const TO: &str = "62746f 63626f62"; // "to": "bob"
const ID: &str = "626964 50 42424242424242424242424242424242"; // "id": h'42…42'
const SENT_AT: &str = "6773656e745f6174 1b 0000018bcfe56800"; // "sent_at": 1700000000000

/// The header `seal` writes for `envelope_header()`: a map of 5 entries.
const EXACT_HEADER: [&str; 6] = ["a5", V, FROM, TO, ID, SENT_AT];

/// A header's hex from its pieces (spaces are for reading).
fn header_hex(pieces: &[&str]) -> String {
    pieces.concat().replace(' ', "")
}

/// An envelope of §6.3 sealed by hand around a header that `seal` never
/// writes, and what opening it gives.
struct HeaderVector {
    name: &'static str,
    /// The seed of the generator (32 × this byte).
    seed: u8,
    /// `H`, in pieces of hex.
    header: &'static [&'static str],
    /// The header's `sent_at`, when it opens.
    sent_at: u64,
    /// `opens`, or the error's name.
    verdict: &'static str,
}

fn header_vectors() -> [HeaderVector; 4] {
    const SENT_AT_LONG_1: &str = "6773656e745f6174 1b 0000000000000001"; // "sent_at": 1, 8-byte argument
    [
        HeaderVector {
            name: "envelope.header_sorted_keys",
            seed: 0x56,
            // Keys in RFC 8949 §4.2.1 order: "v", "id", "to", "from", "sent_at".
            header: &["a5", V, ID, TO, FROM, SENT_AT],
            sent_at: 1_700_000_000_000,
            verdict: "opens",
        },
        HeaderVector {
            name: "envelope.header_extra_field",
            seed: 0x57,
            // One more entry, "x": "y", after the others.
            header: &["a6", V, FROM, TO, ID, SENT_AT, "6178 6179"],
            sent_at: 1_700_000_000_000,
            verdict: "opens",
        },
        HeaderVector {
            name: "envelope.header_long_integer",
            seed: 0x58,
            header: &["a5", V, FROM, TO, ID, SENT_AT_LONG_1],
            sent_at: 1,
            verdict: "opens",
        },
        HeaderVector {
            name: "envelope.header_duplicate_to",
            seed: 0x59,
            // "to": "bob" twice (a map of 6 entries).
            header: &["a6", V, FROM, TO, ID, SENT_AT, TO],
            sent_at: 1_700_000_000_000,
            verdict: "Malformed",
        },
    ]
}

/// Seals `BODY` from alice for bob with the header bytes `h`, following
/// §3.3 step by step with the primitives (`crypto::seal` only writes the
/// exact header form) and drawing randomness in `seal`'s order from the
/// generator seeded with 32 × `seed`.
fn seal_by_hand(alice: &Identity, bob: &Identity, seed: u8, h: &[u8]) -> Vec<u8> {
    let mut rng = rng::from_seed([seed; 32]);
    // 1. A fresh content key K.
    let content_key: [u8; 32] = rng::bytes(&mut rng);
    // 2. C = ChaCha20-Poly1305(K, zero nonce, aad H, body).
    let c = ChaCha20Poly1305::new(&content_key.into())
        .encrypt(&Nonce::default(), Payload { msg: BODY, aad: h })
        .unwrap();
    // 3. W = RSAES-OAEP-SHA256(bob, K).
    let bob_key = rsa::PublicKey::from_public_key_der(bob.public_key().to_spki_der()).unwrap();
    let w = bob_key
        .oaep_encrypt_with_rng::<Sha256, _>(&mut rng, &content_key)
        .unwrap();
    // 4. S = RSA-PSS-SHA256(alice, lp(label) || lp(H) || lp(W) || lp(C)).
    let mut signed = Sha256::new();
    for field in [&b"missive/v1/envelope"[..], h, &w, &c] {
        signed.update((field.len() as u32).to_be_bytes());
        signed.update(field);
    }
    let digest: [u8; 32] = signed.finalize().into();
    let alice_key = rsa::PrivateKey::from_pkcs8_der(&alice.to_pkcs8_der()).unwrap();
    let s = alice_key
        .pss_sign_prehash_with_rng::<Sha256, _>(&mut rng, &digest)
        .unwrap();
    // 5. {"h": H, "k": W, "c": C, "s": S}.
    let envelope = Value::Map(
        [("h", h.to_vec()), ("k", w), ("c", c), ("s", s)]
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), Value::Bytes(v)))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::ser::into_writer(&envelope, &mut out).unwrap();
    out
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
    let [(v1_name, v1), v2 @ ..] = transcript_vectors();
    println!("{v1_name}: {}", hex(&v1));
    println!("```");
    println!("```");
    for (name, transcript) in v2 {
        print_long(name, &transcript);
    }
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
    for vector in header_vectors() {
        let h = unhex(&header_hex(vector.header));
        println!("{}.verdict: {}", vector.name, vector.verdict);
        print_long(vector.name, &seal_by_hand(&alice, &bob, vector.seed, &h));
    }
    println!("```");
}

fn print_long(name: &str, bytes: &[u8]) {
    let h = hex(bytes);
    println!("{name}:");
    for chunk in h.as_bytes().chunks(64) {
        println!("    {}", std::str::from_utf8(chunk).unwrap());
    }
}
