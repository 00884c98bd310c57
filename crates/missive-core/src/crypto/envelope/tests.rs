//! Tests of sealing and opening envelopes.

use super::*;
use crate::test_support::test;
use crate::test_support::{alice, bob, carol, name, seeded};
use ciborium::Value;
#[cfg(not(target_family = "wasm"))]
use proptest::prelude::*;
use std::sync::OnceLock;

/// A generous limit for the tests that are not about limits.
const MAX: usize = 1 << 20;

fn header() -> EnvelopeHeader {
    EnvelopeHeader {
        version: ENVELOPE_VERSION,
        sender: name("alice"),
        recipient: name("bob"),
        id: MessageId([7; 16]),
        sent_at: 1_700_000_000_000,
    }
}

/// Alice seals `body` for Bob.
fn seal_for_bob(body: &[u8]) -> Vec<u8> {
    seal(
        &mut seeded(2),
        alice(),
        &header(),
        bob().public_key(),
        body,
        MAX,
    )
    .unwrap()
}

/// Bob opens an envelope he expects from Alice.
fn open_as_bob(envelope: &[u8]) -> Result<Opened, OpenError> {
    open(
        bob(),
        &name("bob"),
        &name("alice"),
        alice().public_key(),
        envelope,
        MAX,
    )
}

/// One sealed envelope with a short body, shared by the tests that tamper
/// with it.
fn sample() -> &'static [u8] {
    static SAMPLE: OnceLock<Vec<u8>> = OnceLock::new();
    SAMPLE.get_or_init(|| seal_for_bob(b"hello, bob"))
}

fn decode_wire(envelope: &[u8]) -> WireEnvelope<Vec<u8>> {
    decode(envelope, "test").unwrap()
}

/// Alice signs `wire` again after it was modified, so that only the
/// decryption can notice.
fn resign(mut wire: WireEnvelope<Vec<u8>>) -> Vec<u8> {
    let digest = signed_digest(&wire.h, &wire.k, &wire.c);
    wire.s = pss_sign(alice(), &mut seeded(3), &digest);
    encode(&wire)
}

fn encode_value(value: &Value) -> Vec<u8> {
    encode(value)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// A CBOR map with the given text keys and values, in order.
fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

/// An outer envelope map around `h`, with the sample's other fields.
fn with_header_bytes(h: Vec<u8>) -> Vec<u8> {
    let mut wire = decode_wire(sample());
    wire.h = h;
    encode(&wire)
}

fn assert_malformed(envelope: &[u8]) {
    let peeked = peek_header(envelope, MAX);
    assert!(
        matches!(peeked, Err(OpenError::Malformed(_))),
        "peek: {peeked:?}"
    );
    let opened = open_as_bob(envelope);
    assert!(
        matches!(opened, Err(OpenError::Malformed(_))),
        "open: {opened:?}"
    );
}

/// Alice seals `body` for Bob under the header bytes `h`, written as given.
fn seal_header_for_bob(h: &[u8], body: &[u8]) -> Vec<u8> {
    seal_header_bytes(&mut seeded(2), alice(), h, bob().public_key(), body, MAX).unwrap()
}

/// Asserts that Bob opens `envelope` to [`header`] with `sent_at` and
/// `body`, and that `peek_header` reads the same header.
fn assert_opens(envelope: &[u8], sent_at: UnixMillis, body: &[u8]) {
    let expected = EnvelopeHeader {
        sent_at,
        ..header()
    };
    assert_eq!(peek_header(envelope, MAX), Ok(expected.clone()));
    let opened = open_as_bob(envelope).unwrap();
    assert_eq!(opened.header, expected);
    assert_eq!(opened.body, body);
}

/// CBOR written by hand, for the well-formed encodings that `seal` never
/// writes: any head width, indefinite lengths.
mod cbor {
    /// The head of major type `major` with argument `arg`, in the shortest
    /// form that has at least `width` argument bytes (0, 1, 2, 4 or 8; 0 is
    /// the shortest form).
    pub fn head(major: u8, arg: u64, width: u8) -> Vec<u8> {
        let (info, len) = match arg {
            0..=23 if width == 0 => (arg as u8, 0),
            _ if arg <= 0xff && width <= 1 => (24, 1),
            _ if arg <= 0xffff && width <= 2 => (25, 2),
            _ if arg <= 0xffff_ffff && width <= 4 => (26, 4),
            _ => (27, 8),
        };
        let mut out = vec![major << 5 | info];
        out.extend_from_slice(&arg.to_be_bytes()[8 - len..]);
        out
    }

    pub fn uint(n: u64, width: u8) -> Vec<u8> {
        head(0, n, width)
    }

    pub fn bytes(b: &[u8], width: u8) -> Vec<u8> {
        [head(2, b.len() as u64, width), b.to_vec()].concat()
    }

    pub fn text(s: &str, width: u8) -> Vec<u8> {
        [head(3, s.len() as u64, width), s.as_bytes().to_vec()].concat()
    }

    /// A definite-length map of already encoded keys and values.
    pub fn map(entries: &[(Vec<u8>, Vec<u8>)], width: u8) -> Vec<u8> {
        let mut out = head(5, entries.len() as u64, width);
        for (k, v) in entries {
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
        out
    }
}

/// The fields of [`header`] with `sent_at`, encoded as `seal` encodes them,
/// in `seal`'s order.
fn header_fields(sent_at: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (cbor::text("v", 0), cbor::uint(1, 0)),
        (cbor::text("from", 0), cbor::text("alice", 0)),
        (cbor::text("to", 0), cbor::text("bob", 0)),
        (cbor::text("id", 0), cbor::bytes(&[7; 16], 0)),
        (cbor::text("sent_at", 0), cbor::uint(sent_at, 0)),
    ]
}

#[test]
fn round_trip_for_many_body_sizes() {
    for len in [0, 1, 190, 191, 64 * 1024, 250 * 1024] {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let sealed = seal_for_bob(&body);
        let opened = open_as_bob(&sealed).unwrap();
        assert_eq!(opened.header, header(), "{len} bytes");
        assert_eq!(opened.body, body, "{len} bytes");
    }
}

#[test]
fn peek_header_reads_the_header() {
    assert_eq!(peek_header(sample(), MAX), Ok(header()));
}

#[test]
fn wire_layout() {
    let wire = decode_wire(sample());
    let expected_header = map(vec![
        ("v", Value::Integer(1.into())),
        ("from", text("alice")),
        ("to", text("bob")),
        ("id", Value::Bytes(vec![7; 16])),
        ("sent_at", Value::Integer(1_700_000_000_000u64.into())),
    ]);
    assert_eq!(wire.h, encode_value(&expected_header));
    assert_eq!(wire.k.len(), 256);
    assert_eq!(wire.c.len(), b"hello, bob".len() + TAG_LEN);
    assert_eq!(wire.s.len(), 256);
    let expected = map(vec![
        ("h", Value::Bytes(wire.h.clone())),
        ("k", Value::Bytes(wire.k.clone())),
        ("c", Value::Bytes(wire.c.clone())),
        ("s", Value::Bytes(wire.s.clone())),
    ]);
    assert_eq!(sample(), encode_value(&expected));
}

/// Opens the sample with the raw primitives, following the specification
/// step by step rather than the code under test.
#[test]
fn sample_follows_the_specified_construction() {
    let wire = decode_wire(sample());
    let mut signed = Vec::new();
    for field in [&b"missive/v1/envelope"[..], &wire.h, &wire.k, &wire.c] {
        signed.extend_from_slice(&(field.len() as u32).to_be_bytes());
        signed.extend_from_slice(field);
    }
    let sender = &alice().public_key().key;
    let verifier = rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(sender.clone(), 32);
    let signature = rsa::pss::Signature::try_from(wire.s.as_slice()).unwrap();
    rsa::signature::Verifier::verify(&verifier, &signed, &signature).unwrap();

    let oaep = rsa::Oaep::<Sha256>::new();
    let key =
        rsa::traits::PaddingScheme::decrypt(oaep, Some(&mut seeded(0)), &bob().private, &wire.k);
    let key = key.unwrap();
    assert_eq!(key.len(), 32);
    let body = ChaCha20Poly1305::new_from_slice(&key)
        .unwrap()
        .decrypt(
            &Nonce::from([0; 12]),
            Payload {
                msg: &wire.c,
                aad: &wire.h,
            },
        )
        .unwrap();
    assert_eq!(body, b"hello, bob");
}

#[test]
fn envelope_sizes() {
    // Header: 59 bytes; wrapped key and signature: 256 bytes each.
    assert_eq!(seal_for_bob(b"").len(), 605);
    assert_eq!(seal_for_bob(&[0; 1000]).len(), 1607);
}

#[test]
fn mixed_key_sizes() {
    let dave = Identity::generate(&mut seeded(4), 3072).unwrap();
    let to_dave = seal(
        &mut seeded(2),
        alice(),
        &header(),
        dave.public_key(),
        b"x",
        MAX,
    )
    .unwrap();
    let opened = open(
        &dave,
        &name("bob"),
        &name("alice"),
        alice().public_key(),
        &to_dave,
        MAX,
    );
    assert_eq!(opened.unwrap().body, b"x");
    let from_dave = seal(
        &mut seeded(2),
        &dave,
        &header(),
        bob().public_key(),
        b"y",
        MAX,
    )
    .unwrap();
    let opened = open(
        bob(),
        &name("bob"),
        &name("alice"),
        dave.public_key(),
        &from_dave,
        MAX,
    );
    assert_eq!(opened.unwrap().body, b"y");
}

#[test]
fn sealing_is_deterministic_per_seed() {
    let a = seal_for_bob(b"same");
    assert_eq!(a, seal_for_bob(b"same"));
    let b = seal(
        &mut seeded(9),
        alice(),
        &header(),
        bob().public_key(),
        b"same",
        MAX,
    )
    .unwrap();
    assert_ne!(a, b);
    assert_eq!(open_as_bob(&b).unwrap().body, b"same");
}

#[test]
fn wrong_recipient() {
    let opened = open(
        carol(),
        &name("carol"),
        &name("alice"),
        alice().public_key(),
        sample(),
        MAX,
    );
    assert_eq!(opened, Err(OpenError::WrongRecipient(name("bob"))));
}

#[test]
fn wrong_sender() {
    let opened = open(
        bob(),
        &name("bob"),
        &name("carol"),
        carol().public_key(),
        sample(),
        MAX,
    );
    assert_eq!(opened, Err(OpenError::WrongSender(name("alice"))));
}

#[test]
fn signature_by_another_key() {
    let opened = open(
        bob(),
        &name("bob"),
        &name("alice"),
        carol().public_key(),
        sample(),
        MAX,
    );
    assert_eq!(opened, Err(OpenError::BadSignature));
}

#[test]
fn tampering_with_any_field_breaks_the_signature() {
    let tampered_header = {
        let h = EnvelopeHeader {
            sent_at: 1,
            ..header()
        };
        encode(&WireHeader::from(&h))
    };
    type Tamper = fn(&mut WireEnvelope<Vec<u8>>, Vec<u8>);
    let cases: [(&str, Tamper); 5] = [
        ("header", |w, h| w.h = h),
        ("wrapped key", |w, _| w.k[10] ^= 1),
        ("ciphertext", |w, _| w.c[0] ^= 1),
        ("tag", |w, _| *w.c.last_mut().unwrap() ^= 0x80),
        ("signature", |w, _| w.s[200] ^= 1),
    ];
    for (what, tamper) in cases {
        let mut wire = decode_wire(sample());
        tamper(&mut wire, tampered_header.clone());
        let opened = open_as_bob(&encode(&wire));
        assert_eq!(opened, Err(OpenError::BadSignature), "{what}");
    }
}

#[test]
fn swapped_fields_break_the_signature() {
    // Another seed, so that the content key and its wrapping differ.
    let other = seal(
        &mut seeded(9),
        alice(),
        &header(),
        bob().public_key(),
        b"another",
        MAX,
    )
    .unwrap();
    assert_ne!(decode_wire(&other).k, decode_wire(sample()).k);
    let mut wire = decode_wire(sample());
    wire.c = decode_wire(&other).c;
    assert_eq!(open_as_bob(&encode(&wire)), Err(OpenError::BadSignature));
    let mut wire = decode_wire(sample());
    wire.k = decode_wire(&other).k;
    assert_eq!(open_as_bob(&encode(&wire)), Err(OpenError::BadSignature));
}

#[test]
fn key_wrapped_for_someone_else_cannot_be_decrypted() {
    let sealed = seal(
        &mut seeded(2),
        alice(),
        &header(),
        carol().public_key(),
        b"x",
        MAX,
    )
    .unwrap();
    assert_eq!(open_as_bob(&sealed), Err(OpenError::CannotDecrypt));
}

#[test]
fn signed_but_undecryptable_envelopes() {
    let wrap = |key: &[u8]| {
        bob()
            .public_key()
            .key
            .oaep_encrypt_with_rng::<Sha256, _>(&mut seeded(8), key)
            .unwrap()
    };
    let aad_changed = {
        let h = EnvelopeHeader {
            sent_at: 1,
            ..header()
        };
        encode(&WireHeader::from(&h))
    };
    type Change = Box<dyn Fn(&mut WireEnvelope<Vec<u8>>)>;
    let cases: Vec<(&str, Change)> = vec![
        ("short key", Box::new(move |w| w.k = wrap(&[1; 31]))),
        ("long key", Box::new(move |w| w.k = wrap(&[1; 33]))),
        ("other key", Box::new(move |w| w.k = wrap(&[1; 32]))),
        ("garbage key", Box::new(|w| w.k = vec![0x42; 256])),
        ("short wrapped key", Box::new(|w| w.k.truncate(255))),
        ("empty wrapped key", Box::new(|w| w.k.clear())),
        ("ciphertext", Box::new(|w| w.c[3] ^= 4)),
        ("tag", Box::new(|w| *w.c.last_mut().unwrap() ^= 1)),
        ("short ciphertext", Box::new(|w| w.c.truncate(15))),
        ("header", Box::new(move |w| w.h = aad_changed.clone())),
    ];
    for (what, change) in cases {
        let mut wire = decode_wire(sample());
        change(&mut wire);
        assert_eq!(
            open_as_bob(&resign(wire)),
            Err(OpenError::CannotDecrypt),
            "{what}"
        );
    }
}

#[test]
fn unsupported_versions() {
    for version in [0, 2, u16::MAX] {
        let h = EnvelopeHeader {
            version,
            ..header()
        };
        let sealed = seal(&mut seeded(2), alice(), &h, bob().public_key(), b"x", MAX).unwrap();
        assert_eq!(
            peek_header(&sealed, MAX),
            Err(OpenError::UnsupportedVersion(version))
        );
        assert_eq!(
            open_as_bob(&sealed),
            Err(OpenError::UnsupportedVersion(version))
        );
    }
}

#[test]
fn truncated_envelopes_are_malformed() {
    let sealed = sample();
    for len in 0..sealed.len() {
        assert_malformed(&sealed[..len]);
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut sealed = sample().to_vec();
    sealed.push(0);
    assert_malformed(&sealed);
    let mut h = decode_wire(sample()).h;
    h.push(0);
    assert_malformed(&with_header_bytes(h));
}

#[test]
fn garbage_is_malformed() {
    let nested = [[0x81u8; 10_000].as_slice(), &[0x00]].concat();
    let huge_length = [
        0xa1, 0x61, b'h', 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    let cases: [&[u8]; 9] = [
        b"",
        b"\x00",
        b"\xff",
        b"\xa0",
        b"garbage that is not CBOR at all",
        &[0x5f; 64],
        &nested,
        &huge_length,
        &[0xbf, 0x61, b'h', 0x40], // unterminated indefinite-length map
    ];
    for envelope in cases {
        assert_malformed(envelope);
    }
}

#[test]
fn malformed_outer_maps() {
    let wire = decode_wire(sample());
    let field = |k: &str, v: &Vec<u8>| (k.to_owned(), Value::Bytes(v.clone()));
    let good: Vec<(String, Value)> = vec![
        field("h", &wire.h),
        field("k", &wire.k),
        field("c", &wire.c),
        field("s", &wire.s),
    ];
    let build = |entries: Vec<(String, Value)>| {
        encode_value(&Value::Map(
            entries.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        ))
    };
    assert_eq!(build(good.clone()), sample(), "baseline");

    let mut missing = good.clone();
    missing.pop();
    let mut duplicate = good.clone();
    duplicate.push(good[0].clone());
    let mut duplicate_extra = good.clone();
    duplicate_extra.push(("h".into(), Value::Bytes(vec![])));
    let mut short_h = good.clone();
    short_h[0].1 = Value::Bytes(vec![]);
    let mut text_field = good.clone();
    text_field[2].1 = text("not bytes");
    let array = encode_value(&Value::Array(good.iter().map(|(_, v)| v.clone()).collect()));
    let tagged = encode_value(&Value::Tag(24, Box::new(Value::Bytes(sample().to_vec()))));
    for envelope in [
        build(missing),
        build(duplicate),
        build(duplicate_extra),
        build(short_h),
        build(text_field),
        array,
        tagged,
    ] {
        assert_malformed(&envelope);
    }
}

/// docs/PROTOCOL.md §3.3: any well-formed encoding of the envelope map
/// opens, not only the one `seal` writes.
#[test]
fn outer_maps_in_other_well_formed_encodings_open() {
    let wire = decode_wire(sample());
    let field = |k: &str, v: &[u8], width: u8| (cbor::text(k, width), cbor::bytes(v, width));
    let fields = |width: u8| {
        vec![
            field("h", &wire.h, width),
            field("k", &wire.k, width),
            field("c", &wire.c, width),
            field("s", &wire.s, width),
        ]
    };
    assert_eq!(cbor::map(&fields(0), 0), sample(), "baseline");

    // Keys in RFC 8949 §4.2.1 order (bytewise on their encodings): "c",
    // "h", "k", "s".
    let mut sorted = fields(0);
    sorted.sort();
    assert_eq!(sorted[0].0, cbor::text("c", 0));
    // Unknown fields, before, between and after the known ones.
    let mut unknown = fields(0);
    unknown.insert(0, (cbor::text("x", 0), cbor::text("y", 0)));
    unknown.insert(
        3,
        (
            cbor::text("note", 0),
            encode_value(&Value::Array(vec![
                Value::Null,
                map(vec![("a", Value::Bytes(vec![1; 300]))]),
            ])),
        ),
    );
    unknown.push((cbor::text("hh", 0), cbor::bytes(&wire.h, 0)));
    let mut indefinite_map = vec![0xbf];
    for (k, v) in fields(0) {
        indefinite_map.extend(k);
        indefinite_map.extend(v);
    }
    indefinite_map.push(0xff);
    // "c" as an indefinite-length byte string of two chunks.
    let (first, second) = wire.c.split_at(4);
    let mut chunked = fields(0);
    chunked[2].1 = [
        &[0x5f][..],
        &cbor::bytes(first, 0),
        &cbor::bytes(second, 0),
        &[0xff],
    ]
    .concat();

    for (what, envelope) in [
        ("sorted keys", cbor::map(&sorted, 0)),
        ("unknown fields", cbor::map(&unknown, 0)),
        ("one-byte map head", cbor::map(&fields(0), 1)),
        ("8-byte heads everywhere", cbor::map(&fields(8), 8)),
        ("indefinite-length map", indefinite_map),
        ("indefinite-length byte string", cbor::map(&chunked, 0)),
    ] {
        assert_ne!(envelope, sample(), "{what}");
        assert_eq!(peek_header(&envelope, MAX), Ok(header()), "{what}");
        let opened = open_as_bob(&envelope);
        assert_eq!(opened.map(|o| o.body), Ok(b"hello, bob".to_vec()), "{what}");
    }
}

#[test]
fn malformed_headers() {
    let h = |entries: Vec<(&str, Value)>| with_header_bytes(encode_value(&map(entries)));
    let v = || ("v", Value::Integer(1.into()));
    let from = || ("from", text("alice"));
    let to = || ("to", text("bob"));
    let id = || ("id", Value::Bytes(vec![7; 16]));
    let sent_at = || ("sent_at", Value::Integer(5.into()));
    let fields = header_fields(5);
    let with_unknown = |value: &[u8]| {
        let mut entries = fields.clone();
        entries.push((cbor::text("x", 0), value.to_vec()));
        with_header_bytes(cbor::map(&entries, 0))
    };
    let too_deep = [[0x81u8; 16].as_slice(), &[0x00]].concat();
    let cases = [
        h(vec![v(), from(), to(), id()]),
        h(vec![v(), from(), to(), id(), sent_at(), to()]),
        h(vec![v(), v(), from(), to(), id(), sent_at()]),
        h(vec![
            v(),
            from(),
            to(),
            id(),
            sent_at(),
            ("to", text("carol")),
        ]),
        with_unknown(&[0xf8, 0x00]), // two-byte simple value below 32
        with_unknown(&[0x1c]),       // reserved additional information
        with_unknown(&too_deep),     // nesting 17 deep
        h(vec![v(), ("from", text("Alice")), to(), id(), sent_at()]),
        h(vec![v(), from(), ("to", text("")), id(), sent_at()]),
        h(vec![
            v(),
            from(),
            to(),
            ("id", Value::Bytes(vec![7; 15])),
            sent_at(),
        ]),
        h(vec![
            v(),
            from(),
            to(),
            ("id", Value::Bytes(vec![7; 17])),
            sent_at(),
        ]),
        h(vec![
            v(),
            from(),
            to(),
            id(),
            ("sent_at", Value::Integer((-1).into())),
        ]),
        h(vec![
            ("v", Value::Integer(70_000.into())),
            from(),
            to(),
            id(),
            sent_at(),
        ]),
        h(vec![("v", text("1")), from(), to(), id(), sent_at()]),
        with_header_bytes(encode_value(&Value::Array(vec![]))),
        with_header_bytes(vec![]),
        with_header_bytes(vec![0xa5]),
    ];
    for envelope in cases {
        assert_malformed(&envelope);
    }
}

#[test]
fn hand_written_header_is_what_seal_writes() {
    let h = decode_wire(sample()).h;
    assert_eq!(cbor::map(&header_fields(1_700_000_000_000), 0), h);
}

/// docs/PROTOCOL.md §3.3: any well-formed encoding of `H` opens, because
/// the signature and the AEAD cover `H` exactly as sent.
#[test]
fn headers_in_other_well_formed_encodings_open() {
    let fields = header_fields(1_700_000_000_000);
    // Keys in RFC 8949 §4.2.1 order (bytewise on their encodings, so
    // shorter first): "v", "id", "to", "from", "sent_at".
    let mut sorted = fields.clone();
    sorted.sort();
    assert_eq!(sorted[1].0, cbor::text("id", 0));
    let mut unknown = fields.clone();
    unknown.push((cbor::text("x", 0), cbor::text("y", 0)));
    unknown.insert(
        1,
        (
            cbor::text("reply_to", 0),
            encode_value(&map(vec![("id", Value::Bytes(vec![9; 16]))])),
        ),
    );
    let mut long_v = fields.clone();
    long_v[0].1 = cbor::uint(1, 1); // 18 01
    let mut indefinite_from = fields.clone();
    indefinite_from[1].1 = [
        &[0x7f][..],
        &cbor::text("ali", 0),
        &cbor::text("ce", 0),
        &[0xff],
    ]
    .concat();
    let wide = |width: u8| {
        vec![
            (cbor::text("v", width), cbor::uint(1, width)),
            (cbor::text("from", width), cbor::text("alice", width)),
            (cbor::text("to", width), cbor::text("bob", width)),
            (cbor::text("id", width), cbor::bytes(&[7; 16], width)),
            (
                cbor::text("sent_at", width),
                cbor::uint(1_700_000_000_000, 8),
            ),
        ]
    };
    for (what, h) in [
        ("sorted keys", cbor::map(&sorted, 0)),
        ("unknown fields", cbor::map(&unknown, 0)),
        ("v as 18 01", cbor::map(&long_v, 0)),
        ("1-byte heads", cbor::map(&wide(1), 1)),
        ("8-byte heads", cbor::map(&wide(8), 8)),
        ("indefinite-length from", cbor::map(&indefinite_from, 0)),
    ] {
        assert_ne!(h, decode_wire(sample()).h, "{what}");
        assert_opens(&seal_header_for_bob(&h, b"hi"), 1_700_000_000_000, b"hi");
    }
    // A small `sent_at` with a full 8-byte argument: 1b 00..01.
    let mut long_sent_at = header_fields(1);
    long_sent_at[4].1 = cbor::uint(1, 8);
    assert_eq!(long_sent_at[4].1, [0x1b, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_opens(
        &seal_header_for_bob(&cbor::map(&long_sent_at, 0), b"hi"),
        1,
        b"hi",
    );
}

/// The opener verifies `H` as sent and never re-encodes it: the sample's
/// header with its fields reordered by someone else no longer matches
/// Alice's signature.
#[test]
fn reencoding_the_header_breaks_the_signature() {
    let mut reordered = header_fields(1_700_000_000_000);
    reordered.swap(1, 2);
    let envelope = with_header_bytes(cbor::map(&reordered, 0));
    assert_eq!(peek_header(&envelope, MAX), Ok(header()));
    assert_eq!(open_as_bob(&envelope), Err(OpenError::BadSignature));
}

#[test]
fn seal_too_large() {
    let body = [0u8; 1000];
    let len = seal_for_bob(&body).len();
    let at_limit = seal(
        &mut seeded(2),
        alice(),
        &header(),
        bob().public_key(),
        &body,
        len,
    );
    assert_eq!(at_limit.unwrap().len(), len);
    let over = seal(
        &mut seeded(2),
        alice(),
        &header(),
        bob().public_key(),
        &body,
        len - 1,
    );
    assert_eq!(over, Err(SealError::TooLarge { len, max: len - 1 }));
}

#[test]
fn open_too_large() {
    let len = sample().len();
    let err = OpenError::TooLarge { len, max: len - 1 };
    assert_eq!(peek_header(sample(), len - 1), Err(err.clone()));
    let opened = open(
        bob(),
        &name("bob"),
        &name("alice"),
        alice().public_key(),
        sample(),
        len - 1,
    );
    assert_eq!(opened, Err(err));
    assert!(peek_header(sample(), len).is_ok());
}

#[test]
fn size_formula_matches_cbor() {
    for len in [0, 23, 24, 255, 256, 65_535, 65_536] {
        let encoded = encode_value(&Value::Bytes(vec![0; len]));
        assert_eq!(cbor_bytes_len(len), encoded.len(), "{len} bytes");
    }
}

#[cfg(not(target_family = "wasm"))]
/// Widths for hand-written heads: the shortest form, or 1, 2, 4 or 8
/// argument bytes.
fn head_widths(n: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop::sample::select(vec![0u8, 1, 2, 4, 8]), n)
}

#[cfg(not(target_family = "wasm"))]
/// Unknown fields (names that no known field has) with where to insert them.
fn unknown_fields() -> impl Strategy<Value = Vec<(String, u64, prop::sample::Index)>> {
    proptest::collection::vec(
        ("x[a-z_]{0,11}", any::<u64>(), any::<prop::sample::Index>()),
        0..3,
    )
}

#[cfg(not(target_family = "wasm"))]
/// `entries` with the unknown fields inserted.
fn with_unknown_fields(
    mut entries: Vec<(Vec<u8>, Vec<u8>)>,
    unknown: Vec<(String, u64, prop::sample::Index)>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    for (name, value, at) in unknown {
        let at = at.index(entries.len() + 1);
        entries.insert(at, (cbor::text(&name, 0), cbor::uint(value, 0)));
    }
    entries
}

#[cfg(not(target_family = "wasm"))]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any well-formed encoding of the header opens (docs/PROTOCOL.md
    /// §3.3): fields in any order, every head in any width, unknown fields
    /// anywhere.
    #[test]
    fn any_header_encoding_opens(
        order in Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
        widths in head_widths(11),
        unknown in unknown_fields(),
        sent_at in any::<u64>(),
    ) {
        let names = ["v", "from", "to", "id", "sent_at"];
        let values = [
            cbor::uint(1, widths[0]),
            cbor::text("alice", widths[1]),
            cbor::text("bob", widths[2]),
            cbor::bytes(&[7; 16], widths[3]),
            cbor::uint(sent_at, widths[4]),
        ];
        let entries = order
            .iter()
            .map(|&i| (cbor::text(names[i], widths[5 + i]), values[i].clone()))
            .collect();
        let h = cbor::map(&with_unknown_fields(entries, unknown), widths[10]);
        assert_opens(&seal_header_for_bob(&h, b"p"), sent_at, b"p");
    }

    /// Any well-formed encoding of the envelope map around a sealed
    /// envelope's fields opens to it.
    #[test]
    fn any_envelope_map_encoding_opens(
        order in Just((0..4).collect::<Vec<usize>>()).prop_shuffle(),
        widths in head_widths(9),
        unknown in unknown_fields(),
    ) {
        let wire = decode_wire(sample());
        let fields = [("h", &wire.h), ("k", &wire.k), ("c", &wire.c), ("s", &wire.s)];
        let entries = order
            .iter()
            .map(|&i| {
                let (name, value) = fields[i];
                (cbor::text(name, widths[i]), cbor::bytes(value, widths[4 + i]))
            })
            .collect();
        let envelope = cbor::map(&with_unknown_fields(entries, unknown), widths[8]);
        assert_opens(&envelope, header().sent_at, b"hello, bob");
    }

    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = peek_header(&bytes, MAX);
        prop_assert!(open_as_bob(&bytes).is_err());
    }

    /// A flipped byte never opens as anything but the original: the signed
    /// fields (h, k, c) are covered by the signature, so the only flips that
    /// may still open are those that re-encode the unsigned outer map with
    /// the same four byte strings (a field name written as a byte string,
    /// say), which the lenient decoding of §3.3 accepts.
    #[test]
    fn mutated_envelopes_never_open(
        index in any::<prop::sample::Index>(),
        xor in 1..=u8::MAX,
    ) {
        let mut envelope = sample().to_vec();
        let i = index.index(envelope.len());
        envelope[i] ^= xor;
        let _ = peek_header(&envelope, MAX);
        if let Ok(opened) = open_as_bob(&envelope) {
            let (original, mutated) = (decode_wire(sample()), decode_wire(&envelope));
            prop_assert_eq!(
                (&mutated.h, &mutated.k, &mutated.c, &mutated.s),
                (&original.h, &original.k, &original.c, &original.s)
            );
            prop_assert_eq!(opened.body, b"hello, bob".to_vec());
        }
    }

    #[test]
    fn arbitrary_fields_never_open(
        h in proptest::collection::vec(any::<u8>(), 0..128),
        k in proptest::collection::vec(any::<u8>(), 0..300),
        c in proptest::collection::vec(any::<u8>(), 0..64),
        s in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let envelope = encode(&WireEnvelope { h, k, c, s });
        let _ = peek_header(&envelope, MAX);
        prop_assert!(open_as_bob(&envelope).is_err());
    }

    #[test]
    fn arbitrary_payloads_under_a_valid_header_fail_the_signature(
        k in proptest::collection::vec(any::<u8>(), 0..300),
        c in proptest::collection::vec(any::<u8>(), 0..64),
        s in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let h = decode_wire(sample()).h;
        let envelope = encode(&WireEnvelope { h, k, c, s });
        prop_assert_eq!(peek_header(&envelope, MAX), Ok(header()));
        prop_assert_eq!(open_as_bob(&envelope), Err(OpenError::BadSignature));
    }
}
