//! `envelope_open`: hostile envelopes into `peek_header` and `open`, with
//! fixed identities (alice, bob, carol; see [`crate::fixtures`]).
//!
//! Input: a mode byte (mod 3), then
//! * 0: the rest is the envelope;
//! * 1: a valid sealed envelope (one of [`sealed`], chosen by a byte) with
//!   one field mutated ([`Mutation`], derived `Arbitrary`), optionally
//!   re-signed by the true sender so the mutation reaches decryption, or
//!   with its map re-encoded in another well-formed form;
//! * 2: an envelope built from arbitrary fields ([`Fields`]): a header
//!   (arbitrary values, fields in an arbitrary order, maybe an unknown
//!   field) and arbitrary `k`, `c`, `s`.
//!
//! Invariants (envelope signatures are *not* bypassed in fuzzing builds:
//! the core replaces RSA by keyed stand-ins that still reject a signature
//! made over other bytes or with another key):
//! * no panic;
//! * `peek_header` failing means `open` fails with the same error, for any
//!   opener; `open` succeeding means `peek_header` gives its header;
//! * `open` succeeds only for an envelope whose signed fields `h`, `k` and
//!   `c` are those of a genuine sealed envelope (the map around them may be
//!   encoded in any well-formed way, docs/PROTOCOL.md §3.3), for its
//!   recipient and sender, and returns the sealed header and body;
//! * a genuine envelope whose map is re-encoded ([`Mutation::Reencode`])
//!   still opens for its recipient;
//! * a limit one byte below the envelope's size gives `TooLarge`.

use crate::fixtures::{identities, identity_of};
use arbitrary::{Arbitrary, Unstructured};
use ciborium::Value;
use missive_core::crypto::{
    ENVELOPE_VERSION, EnvelopeHeader, Identity, OpenError, Opened, open, peek_header, seal,
};
use missive_core::wire::decode_packet;
use missive_core::{MessageId, UserName, rng};
#[cfg(not(fuzzing))]
use rsa::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Envelope size limit used by the target.
pub const MAX_LEN: usize = 64 * 1024;

/// A genuine sealed envelope and what went into it.
pub struct Sealed {
    /// The envelope.
    pub bytes: Vec<u8>,
    /// Its header.
    pub header: EnvelopeHeader,
    /// Its body.
    pub body: Vec<u8>,
}

/// Genuine envelopes between the fixture identities, sealed once.
pub fn sealed() -> &'static [Sealed] {
    static SEALED: OnceLock<Vec<Sealed>> = OnceLock::new();
    SEALED.get_or_init(|| {
        let mut rng = rng::from_seed(*b"missive fuzz: fixture envelopes!");
        let cases: [(usize, usize, &[u8]); 4] = [
            (0, 1, b"hello bob"),
            (1, 0, b""),
            (0, 1, &[0x42; 300]),
            (2, 0, b"carol here"),
        ];
        let ids = identities();
        cases
            .iter()
            .enumerate()
            .map(|(i, &(from, to, body))| {
                let header = EnvelopeHeader {
                    version: ENVELOPE_VERSION,
                    sender: crate::codec::name(crate::codec::NAMES[from]),
                    recipient: crate::codec::name(crate::codec::NAMES[to]),
                    id: MessageId([i as u8 + 1; 16]),
                    sent_at: 1_700_000_000_000 + i as u64,
                };
                let bytes = seal(
                    &mut rng,
                    &ids[from],
                    &header,
                    ids[to].public_key(),
                    body,
                    MAX_LEN,
                )
                .expect("fixture envelope seals");
                Sealed {
                    bytes,
                    header,
                    body: body.to_vec(),
                }
            })
            .collect()
    })
}

/// The envelope's outer map, as the core encodes it (keys in this order).
/// Decoded with the core's decoder, it accepts what the core accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wire {
    #[serde(with = "serde_bytes")]
    h: Vec<u8>,
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    #[serde(with = "serde_bytes")]
    c: Vec<u8>,
    #[serde(with = "serde_bytes")]
    s: Vec<u8>,
}

/// The header map, with wider types than the core's so that out-of-range
/// versions and invalid names can be expressed.
#[derive(Debug, Clone)]
struct WireHeader {
    v: u64,
    from: String,
    to: String,
    id: [u8; 16],
    sent_at: u64,
}

impl WireHeader {
    /// The header's CBOR, with its fields in the order picked by `order`
    /// and `unknown` (a field no header has) inserted; order 0 without an
    /// unknown field is the form the core writes.
    fn encode(&self, order: u8, unknown: Option<Unknown>) -> Vec<u8> {
        let fields = vec![
            ("v", Value::Integer(self.v.into())),
            ("from", Value::Text(self.from.clone())),
            ("to", Value::Text(self.to.clone())),
            ("id", Value::Bytes(self.id.to_vec())),
            ("sent_at", Value::Integer(self.sent_at.into())),
        ];
        cbor(&map(permute(fields, order), unknown))
    }
}

/// A field that no header and no envelope has: its name is `x` followed
/// by `name`.
#[derive(Debug, Arbitrary)]
struct Unknown {
    name: String,
    value: u64,
    /// Where it goes among the other fields.
    at: u8,
}

/// A CBOR map of `fields` in their order, with `unknown` inserted.
fn map(fields: Vec<(&str, Value)>, unknown: Option<Unknown>) -> Value {
    let mut entries: Vec<(Value, Value)> = fields
        .into_iter()
        .map(|(name, value)| (Value::Text(name.into()), value))
        .collect();
    if let Some(u) = unknown {
        let at = usize::from(u.at) % (entries.len() + 1);
        let entry = (
            Value::Text(format!("x{}", u.name)),
            Value::Integer(u.value.into()),
        );
        entries.insert(at, entry);
    }
    Value::Map(entries)
}

/// `items` in the order numbered `order` (every order of up to 5 items has
/// a number below 256).
fn permute<T>(mut items: Vec<T>, order: u8) -> Vec<T> {
    let mut order = usize::from(order);
    let mut out = Vec::with_capacity(items.len());
    while !items.is_empty() {
        let n = items.len();
        out.push(items.remove(order % n));
        order /= n;
    }
    out
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("CBOR into a Vec");
    out
}

impl Wire {
    fn decode(bytes: &[u8]) -> Wire {
        decode_packet(bytes).expect("envelopes that decoded once decode")
    }

    /// The envelope map with its fields in the order picked by `order` and
    /// `unknown` inserted.
    fn reencode(self, order: u8, unknown: Option<Unknown>) -> Vec<u8> {
        let fields = vec![
            ("h", Value::Bytes(self.h)),
            ("k", Value::Bytes(self.k)),
            ("c", Value::Bytes(self.c)),
            ("s", Value::Bytes(self.s)),
        ];
        cbor(&map(permute(fields, order), unknown))
    }

    fn field(&mut self, f: Field) -> &mut Vec<u8> {
        match f {
            Field::H => &mut self.h,
            Field::K => &mut self.k,
            Field::C => &mut self.c,
            Field::S => &mut self.s,
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Field {
    H,
    K,
    C,
    S,
}

/// A user name for a header: a fixture name or any string.
#[derive(Debug, Arbitrary)]
enum NameChoice {
    Fixture(u8),
    Any(String),
}

impl NameChoice {
    fn get(self) -> String {
        match self {
            NameChoice::Fixture(i) => crate::codec::NAMES[usize::from(i) % 4].to_owned(),
            NameChoice::Any(s) => s,
        }
    }
}

/// One change to a genuine envelope.
#[derive(Debug, Arbitrary)]
enum Mutation {
    FlipBit {
        field: Field,
        index: u16,
        bit: u8,
    },
    Truncate {
        field: Field,
        len: u16,
    },
    Extend {
        field: Field,
        extra: Vec<u8>,
    },
    Replace {
        field: Field,
        bytes: Vec<u8>,
    },
    Swap {
        a: Field,
        b: Field,
    },
    /// The same field from another genuine envelope.
    Splice {
        field: Field,
        other: u8,
    },
    /// The header re-encoded with some values changed, its fields in
    /// another order, maybe with an unknown field.
    Header {
        v: Option<u64>,
        from: Option<NameChoice>,
        to: Option<NameChoice>,
        id: Option<[u8; 16]>,
        sent_at: Option<u64>,
        order: u8,
        unknown: Option<Unknown>,
    },
    /// The envelope map re-encoded in another well-formed form: its fields
    /// in another order, maybe with an unknown field. Still opens.
    Reencode {
        order: u8,
        unknown: Option<Unknown>,
    },
    /// The whole envelope's bytes, one flipped.
    OuterFlip {
        index: u16,
        bit: u8,
    },
    /// The whole envelope, truncated.
    OuterTruncate {
        len: u16,
    },
}

/// An envelope from arbitrary fields.
#[derive(Debug, Arbitrary)]
struct Fields {
    v: u64,
    from: NameChoice,
    to: NameChoice,
    id: [u8; 16],
    sent_at: u64,
    order: u8,
    unknown: Option<Unknown>,
    k: Vec<u8>,
    c: Vec<u8>,
    s: Vec<u8>,
}

/// Runs the `envelope_open` target on one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let genuine = sealed();
    match mode % 3 {
        0 => check(rest),
        1 => {
            let mut u = Unstructured::new(rest);
            let Ok(pick) = u8::arbitrary(&mut u) else {
                return;
            };
            let original = &genuine[usize::from(pick) % genuine.len()];
            let Ok(mutation) = Mutation::arbitrary(&mut u) else {
                return;
            };
            let resign = u8::arbitrary(&mut u).unwrap_or(0) & 1 == 1;
            let must_open = matches!(mutation, Mutation::Reencode { .. });
            let bytes = mutate(original, mutation, resign);
            check(&bytes);
            if must_open {
                assert_opens_like(original, &bytes);
            }
        }
        _ => {
            let mut u = Unstructured::new(rest);
            let Ok(f) = Fields::arbitrary(&mut u) else {
                return;
            };
            let header = WireHeader {
                v: f.v,
                from: f.from.get(),
                to: f.to.get(),
                id: f.id,
                sent_at: f.sent_at,
            };
            let wire = Wire {
                h: header.encode(f.order, f.unknown),
                k: f.k,
                c: f.c,
                s: f.s,
            };
            check(&cbor(&wire));
        }
    }
}

fn mutate(original: &Sealed, mutation: Mutation, resign: bool) -> Vec<u8> {
    let mut wire = Wire::decode(&original.bytes);
    match mutation {
        Mutation::FlipBit { field, index, bit } => {
            let f = wire.field(field);
            if !f.is_empty() {
                let i = usize::from(index) % f.len();
                f[i] ^= 1 << (bit % 8);
            }
        }
        Mutation::Truncate { field, len } => {
            let f = wire.field(field);
            let len = usize::from(len) % (f.len() + 1);
            f.truncate(len);
        }
        Mutation::Extend { field, extra } => wire.field(field).extend_from_slice(&extra),
        Mutation::Replace { field, bytes } => *wire.field(field) = bytes,
        Mutation::Swap { a, b } => {
            let x = std::mem::take(wire.field(a));
            let y = std::mem::replace(wire.field(b), x);
            *wire.field(a) = y;
        }
        Mutation::Splice { field, other } => {
            let all = sealed();
            let mut donor = Wire::decode(&all[usize::from(other) % all.len()].bytes);
            *wire.field(field) = std::mem::take(donor.field(field));
        }
        Mutation::Header {
            v,
            from,
            to,
            id,
            sent_at,
            order,
            unknown,
        } => {
            let h = &original.header;
            let header = WireHeader {
                v: v.unwrap_or(u64::from(h.version)),
                from: from.map_or_else(|| h.sender.to_string(), NameChoice::get),
                to: to.map_or_else(|| h.recipient.to_string(), NameChoice::get),
                id: id.unwrap_or(h.id.0),
                sent_at: sent_at.unwrap_or(h.sent_at),
            };
            wire.h = header.encode(order, unknown);
        }
        Mutation::Reencode { order, unknown } => return wire.reencode(order, unknown),
        Mutation::OuterFlip { index, bit } => {
            let mut bytes = original.bytes.clone();
            let i = usize::from(index) % bytes.len();
            bytes[i] ^= 1 << (bit % 8);
            return bytes;
        }
        Mutation::OuterTruncate { len } => {
            let len = usize::from(len) % original.bytes.len();
            return original.bytes[..len].to_vec();
        }
    }
    if resign && let Some(sender) = identity_of(original.header.sender.as_str()) {
        wire.s = sign(sender, &wire);
    }
    cbor(&wire)
}

/// The sender's signature over `h`, `k`, `c` (as in docs/PROTOCOL.md §3.3),
/// made outside the core so mutated envelopes can reach decryption: real
/// RSA-PSS in normal builds, the core's keyed stand-in in fuzzing builds
/// (where the core's RSA operations are stand-ins too).
fn sign(identity: &Identity, wire: &Wire) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for field in [&b"missive/v1/envelope"[..], &wire.h, &wire.k, &wire.c] {
        hasher.update((field.len() as u32).to_be_bytes());
        hasher.update(field);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let mut rng = rng::from_seed([0x51; 32]);
    #[cfg(fuzzing)]
    return missive_core::crypto::fuzz_stand_in::pss_sign(identity, &mut rng, &digest);
    #[cfg(not(fuzzing))]
    private_key(identity)
        .pss_sign_prehash_with_rng::<Sha256, _>(&mut rng, &digest)
        .expect("PSS signing")
}

/// The `rsa` private key of a fixture identity, parsed once.
#[cfg(not(fuzzing))]
fn private_key(identity: &Identity) -> &'static rsa::PrivateKey {
    static KEYS: OnceLock<Vec<rsa::PrivateKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        identities()
            .iter()
            .map(|i| rsa::PrivateKey::from_pkcs8_der(&i.to_pkcs8_der()).expect("fixture key"))
            .collect()
    });
    let i = identities()
        .iter()
        .position(|i| i.public_key() == identity.public_key())
        .expect("a fixture identity");
    &keys[i]
}

/// Every invariant for one candidate envelope.
fn check(bytes: &[u8]) {
    let ids = identities();
    let peeked = peek_header(bytes, MAX_LEN);

    // Openers to try: everyone as everyone (cheap: parsing fails first, and
    // at most one pair passes the recipient and sender checks).
    for (ri, recipient) in ids.iter().enumerate() {
        for (si, sender) in ids.iter().enumerate() {
            let rname = name_of(ri);
            let sname = name_of(si);
            let opened = open(
                recipient,
                &rname,
                &sname,
                sender.public_key(),
                bytes,
                MAX_LEN,
            );
            match (&peeked, &opened) {
                (Err(pe), Err(oe))
                    if matches!(
                        oe,
                        OpenError::Malformed(_)
                            | OpenError::TooLarge { .. }
                            | OpenError::UnsupportedVersion(_)
                    ) =>
                {
                    assert_eq!(pe, oe, "peek_header and open disagree");
                }
                (Err(pe), other) => panic!("peek_header failed ({pe:?}) but open gave {other:?}"),
                (
                    Ok(_),
                    Err(
                        OpenError::Malformed(_)
                        | OpenError::TooLarge { .. }
                        | OpenError::UnsupportedVersion(_),
                    ),
                ) => panic!("peek_header succeeded but open failed to parse: {opened:?}"),
                (Ok(h), Err(OpenError::WrongRecipient(who))) => {
                    assert_ne!(h.recipient, rname);
                    assert_eq!(*who, h.recipient);
                }
                (Ok(h), Err(OpenError::WrongSender(who))) => {
                    assert_eq!(h.recipient, rname);
                    assert_ne!(h.sender, sname);
                    assert_eq!(*who, h.sender);
                }
                (Ok(h), Err(_)) => {
                    assert_eq!((&h.recipient, &h.sender), (&rname, &sname));
                }
                (Ok(h), Ok(o)) => {
                    assert_eq!(*h, o.header);
                    assert_eq!((&h.recipient, &h.sender), (&rname, &sname));
                    genuine(bytes, o);
                }
            }
        }
    }

    if !bytes.is_empty() {
        let max = bytes.len() - 1;
        assert_eq!(
            peek_header(bytes, max),
            Err(OpenError::TooLarge {
                len: bytes.len(),
                max
            })
        );
    }
}

/// `bytes` (a re-encoding of `original`) opens for `original`'s recipient
/// to its body.
fn assert_opens_like(original: &Sealed, bytes: &[u8]) {
    let h = &original.header;
    let opened = open(
        identity_of(h.recipient.as_str()).expect("a fixture recipient"),
        &h.recipient,
        &h.sender,
        identity_of(h.sender.as_str())
            .expect("a fixture sender")
            .public_key(),
        bytes,
        MAX_LEN,
    );
    assert_eq!(
        opened.map(|o| o.body),
        Ok(original.body.clone()),
        "a re-encoded genuine envelope does not open"
    );
}

/// An opened envelope must be a genuine one: its signed fields `h`, `k`
/// and `c` are those of a sealed envelope (whatever the map around them
/// looks like), and it opened to that envelope's header and body.
fn genuine(bytes: &[u8], opened: &Opened) {
    let wire = Wire::decode(bytes);
    let original = sealed()
        .iter()
        .find(|s| {
            let sealed = Wire::decode(&s.bytes);
            (&sealed.h, &sealed.k, &sealed.c) == (&wire.h, &wire.k, &wire.c)
        })
        .unwrap_or_else(|| panic!("opened a forged envelope: {opened:?}"));
    assert_eq!(opened.header, original.header);
    assert_eq!(opened.body, original.body);
}

fn name_of(i: usize) -> UserName {
    crate::codec::name(crate::codec::NAMES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness's own re-encodings of every genuine envelope pass every
    /// check and open (docs/PROTOCOL.md §3.3).
    #[test]
    fn reencoded_envelopes_open() {
        for original in sealed() {
            for order in [0, 1, 5, 23, 255] {
                for unknown in [
                    None,
                    Some(Unknown {
                        name: "tra".into(),
                        value: 7,
                        at: 2,
                    }),
                ] {
                    let bytes = mutate(original, Mutation::Reencode { order, unknown }, false);
                    check(&bytes);
                    assert_opens_like(original, &bytes);
                }
            }
        }
    }

    #[test]
    fn permutations() {
        let all: std::collections::BTreeSet<Vec<u8>> = (0..=255)
            .map(|order| permute(vec![0, 1, 2, 3, 4], order))
            .collect();
        assert_eq!(all.len(), 120, "every order of five fields");
        assert_eq!(permute(vec![0, 1, 2, 3], 0), [0, 1, 2, 3]);
    }
}
