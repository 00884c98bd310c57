//! End-to-end envelopes: hybrid encryption of one message body for one
//! recipient, signed by the sender.

use super::keys::{Identity, PublicKey};
use super::len_prefix;
use super::rsa_ops::{KEY_LEN, oaep_unwrap, oaep_wrap, pss_sign, pss_verify};
use crate::rng::CoreRng;
use crate::types::{MessageId, UnixMillis, UserName};
use crate::wire::{DecodeError, decode_packet};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand_core::Rng as _;
use rsa::traits::PublicKeyParts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Version number inside every envelope header.
pub const ENVELOPE_VERSION: u16 = 1;

/// The authenticated, unencrypted header of an envelope. Its CBOR encoding is
/// the AEAD's associated data and is covered by the sender's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Always `ENVELOPE_VERSION`.
    pub version: u16,
    /// Who sealed it.
    pub sender: UserName,
    /// For whom.
    pub recipient: UserName,
    /// Sender-chosen random id.
    pub id: MessageId,
    /// Sender's wall clock at sealing (Unix milliseconds).
    pub sent_at: UnixMillis,
}

/// An opened envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The verified header.
    pub header: EnvelopeHeader,
    /// The decrypted body.
    pub body: Vec<u8>,
}

/// Why an envelope could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The sealed envelope would exceed `max_len` bytes.
    #[error("sealed envelope of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size the envelope would have.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not a well-formed envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// Larger than allowed.
    #[error("envelope of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the envelope.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Unsupported envelope version.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u16),
    /// The header names another recipient.
    #[error("envelope is for {0}, not for us")]
    WrongRecipient(UserName),
    /// The header names another sender than expected.
    #[error("envelope claims sender {0}, expected another")]
    WrongSender(UserName),
    /// The sender's signature does not verify.
    #[error("sender signature does not verify")]
    BadSignature,
    /// The key cannot be unwrapped or the body fails authentication.
    #[error("cannot decrypt")]
    CannotDecrypt,
}

/// Seals `body` from `sender` (named `header.sender`) for the holder of
/// `recipient_key` (named `header.recipient`). Fails if the result would be
/// longer than `max_len`.
///
/// A fresh 32-byte content key encrypts `body` with ChaCha20-Poly1305 (the
/// header's CBOR encoding is the associated data); the key is wrapped with
/// RSA-OAEP-SHA256 for the recipient, and the sender signs header, wrapped
/// key and ciphertext with RSA-PSS-SHA256. All randomness comes from `rng`,
/// so the same generator state gives the same envelope. `header.version` is
/// written as given: [`open`] only accepts [`ENVELOPE_VERSION`].
///
/// The size is known before any RSA work, so an oversized body fails fast.
/// Envelopes are also capped at `u32::MAX` bytes (their signed fields carry
/// 32-bit lengths).
///
/// # Example
///
/// ```
/// use missive_core::crypto::{open, seal, EnvelopeHeader, Identity, ENVELOPE_VERSION};
/// use missive_core::{rng, MessageId, UserName};
///
/// let mut rng = rng::from_seed([42; 32]);
/// let alice = Identity::generate(&mut rng, 2048)?;
/// let bob = Identity::generate(&mut rng, 2048)?;
/// let header = EnvelopeHeader {
///     version: ENVELOPE_VERSION,
///     sender: UserName::new("alice")?,
///     recipient: UserName::new("bob")?,
///     id: MessageId(rng::bytes(&mut rng)),
///     sent_at: 1_700_000_000_000,
/// };
///
/// let sealed = seal(&mut rng, &alice, &header, bob.public_key(), b"hi bob", 64 * 1024)?;
/// let opened = open(
///     &bob,
///     &header.recipient,
///     &header.sender,
///     alice.public_key(),
///     &sealed,
///     64 * 1024,
/// )?;
/// assert_eq!(opened.header, header);
/// assert_eq!(opened.body, b"hi bob");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn seal(
    rng: &mut CoreRng,
    sender: &Identity,
    header: &EnvelopeHeader,
    recipient_key: &PublicKey,
    body: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, SealError> {
    let header_bytes = encode(&WireHeader::from(header));
    seal_header_bytes(rng, sender, &header_bytes, recipient_key, body, max_len)
}

/// [`seal`] with the header already encoded: `header_bytes` is `H` of
/// docs/PROTOCOL.md §3.3, sealed exactly as given. (The tests seal headers in
/// other well-formed encodings than the one `seal` writes through this.)
fn seal_header_bytes(
    rng: &mut CoreRng,
    sender: &Identity,
    header_bytes: &[u8],
    recipient_key: &PublicKey,
    body: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, SealError> {
    let len = envelope_len(&[
        header_bytes.len(),
        recipient_key.key.size(),
        body.len().saturating_add(TAG_LEN),
        sender.private.size(),
    ]);
    let max = envelope_limit(max_len);
    if len > max {
        return Err(SealError::TooLarge { len, max });
    }

    let mut content_key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill_bytes(content_key.as_mut_slice());
    let ciphertext = ChaCha20Poly1305::new((&*content_key).into())
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: body,
                aad: header_bytes,
            },
        )
        .expect("ChaCha20-Poly1305 accepts any body below 256 GiB");
    let wrapped_key = oaep_wrap(recipient_key, rng, &content_key);
    drop(content_key);

    let digest = signed_digest(header_bytes, &wrapped_key, &ciphertext);
    let signature = pss_sign(sender, rng, &digest);
    let sealed = encode(&WireEnvelope {
        h: header_bytes,
        k: &wrapped_key,
        c: &ciphertext,
        s: &signature,
    });
    debug_assert_eq!(sealed.len(), len, "precomputed envelope size");
    Ok(sealed)
}

/// Reads the header without verifying anything (to learn whose key is
/// needed). Never trust it before `open` succeeds.
///
/// Checks the size, the CBOR structure and the version, nothing else.
pub fn peek_header(envelope: &[u8], max_len: usize) -> Result<EnvelopeHeader, OpenError> {
    parse(envelope, max_len).map(|(_, header)| header)
}

/// Verifies and decrypts an envelope for `recipient` (whose identity is
/// `identity`), expected from `expected_sender` whose public key is
/// `sender_key`.
///
/// Checks, in this order: size, structure, version, recipient, sender, the
/// sender's signature, and only then unwraps the content key and decrypts,
/// so unauthenticated bytes never reach the RSA private-key operation.
/// The envelope and its header may come in any well-formed CBOR encoding,
/// not only the one [`seal`] writes (docs/PROTOCOL.md §3.3): the signature
/// and the AEAD cover the header's bytes as sent.
/// See [`seal`] for an example.
pub fn open(
    identity: &Identity,
    recipient: &UserName,
    expected_sender: &UserName,
    sender_key: &PublicKey,
    envelope: &[u8],
    max_len: usize,
) -> Result<Opened, OpenError> {
    let (wire, header) = parse(envelope, max_len)?;
    if header.recipient != *recipient {
        return Err(OpenError::WrongRecipient(header.recipient));
    }
    if header.sender != *expected_sender {
        return Err(OpenError::WrongSender(header.sender));
    }
    let digest = signed_digest(&wire.h, &wire.k, &wire.c);
    pss_verify(sender_key, &digest, &wire.s).map_err(|_| OpenError::BadSignature)?;

    let content_key = oaep_unwrap(identity, &wire.k).map_err(|_| OpenError::CannotDecrypt)?;
    let body = ChaCha20Poly1305::new((&*content_key).into())
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: &wire.c,
                aad: &wire.h,
            },
        )
        .map_err(|_| OpenError::CannotDecrypt)?;
    Ok(Opened { header, body })
}

/// Length of the Poly1305 tag appended to the ciphertext.
const TAG_LEN: usize = 16;
/// Hard cap on envelope size: every signed field has a `u32` length prefix.
const MAX_ENVELOPE_LEN: usize = u32::MAX as usize;

/// The caller's limit, capped at what the length field can express (on
/// 32-bit targets such as wasm32 the cap is `usize::MAX`: no effect).
#[cfg_attr(target_pointer_width = "32", allow(clippy::unnecessary_min_or_max))]
fn envelope_limit(max_len: usize) -> usize {
    max_len.min(MAX_ENVELOPE_LEN)
}

/// Domain separation label that opens the signed envelope bytes.
const SIGNATURE_LABEL: &[u8] = b"missive/v1/envelope";

/// The header as encoded on the wire: a CBOR map whose keys `seal` writes in
/// declaration order (openers accept any order, see [`decode`]).
#[derive(Serialize, Deserialize)]
struct WireHeader {
    v: u16,
    from: UserName,
    to: UserName,
    id: MessageId,
    sent_at: UnixMillis,
}

impl From<&EnvelopeHeader> for WireHeader {
    fn from(h: &EnvelopeHeader) -> Self {
        Self {
            v: h.version,
            from: h.sender.clone(),
            to: h.recipient.clone(),
            id: h.id,
            sent_at: h.sent_at,
        }
    }
}

impl From<WireHeader> for EnvelopeHeader {
    fn from(h: WireHeader) -> Self {
        Self {
            version: h.v,
            sender: h.from,
            recipient: h.to,
            id: h.id,
            sent_at: h.sent_at,
        }
    }
}

/// The envelope as encoded on the wire: a CBOR map of four byte strings,
/// borrowed (`B = &[u8]`) when sealing and owned (`B = Vec<u8>`) when opening.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "B: serde_bytes::Serialize",
    deserialize = "B: serde_bytes::Deserialize<'de>"
))]
struct WireEnvelope<B> {
    /// Header CBOR, exactly the AEAD's associated data.
    #[serde(with = "serde_bytes")]
    h: B,
    /// Content key wrapped with RSA-OAEP-SHA256.
    #[serde(with = "serde_bytes")]
    k: B,
    /// ChaCha20-Poly1305 ciphertext followed by its tag.
    #[serde(with = "serde_bytes")]
    c: B,
    /// Sender's RSA-PSS-SHA256 signature.
    #[serde(with = "serde_bytes")]
    s: B,
}

/// Encodes `value` as CBOR.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out)
        .expect("CBOR encoding of plain structs into a Vec cannot fail");
    out
}

/// Decodes `bytes`, the envelope or its header `H`, as one `T` that spans
/// all of it.
///
/// This is the packet decoder, so both get exactly the checks and the
/// leniency of packets (docs/PROTOCOL.md §2.2 and Appendix A.4), as §3.3
/// requires: one well-formed CBOR data item nesting at most 16 deep, no
/// trailing bytes, every field present once with its type; fields in any
/// order, unknown fields ignored, integers and lengths in any form. Nothing
/// is compared with a re-encoding: the signature and the AEAD cover `H` as
/// sent.
fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, OpenError> {
    decode_packet(bytes).map_err(|e| {
        let why = match e {
            DecodeError::TrailingBytes { extra } => format!("{extra} trailing bytes"),
            DecodeError::UnknownPacket(why) => why,
            other => other.to_string(),
        };
        OpenError::Malformed(format!("{what}: {why}"))
    })
}

/// Size check, structure and version: everything but the cryptography.
fn parse(
    envelope: &[u8],
    max_len: usize,
) -> Result<(WireEnvelope<Vec<u8>>, EnvelopeHeader), OpenError> {
    let max = envelope_limit(max_len);
    if envelope.len() > max {
        return Err(OpenError::TooLarge {
            len: envelope.len(),
            max,
        });
    }
    let wire: WireEnvelope<Vec<u8>> = decode(envelope, "envelope")?;
    let header: WireHeader = decode(&wire.h, "header")?;
    if header.v != ENVELOPE_VERSION {
        return Err(OpenError::UnsupportedVersion(header.v));
    }
    Ok((wire, header.into()))
}

/// Encoded size of a CBOR byte string of `len` bytes.
fn cbor_bytes_len(len: usize) -> usize {
    let head = match len {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    };
    len.saturating_add(head)
}

/// Encoded size of an envelope whose fields `h`, `k`, `c`, `s` have the
/// given lengths: a one-byte map head, four one-letter text keys of two
/// bytes each, and the four byte strings.
fn envelope_len(fields: &[usize; 4]) -> usize {
    fields.iter().fold(1 + 4 * 2, |sum, &len| {
        sum.saturating_add(cbor_bytes_len(len))
    })
}

/// SHA-256 of the bytes the sender signs: the label, header, wrapped key
/// and ciphertext, each preceded by its `u32` big-endian length.
fn signed_digest(header: &[u8], wrapped_key: &[u8], ciphertext: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for field in [SIGNATURE_LABEL, header, wrapped_key, ciphertext] {
        hasher.update(len_prefix(field.len()));
        hasher.update(field);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests;
