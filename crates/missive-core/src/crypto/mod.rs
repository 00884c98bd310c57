//! Cryptography: identities (RSA key pairs), the login/registration
//! transcript signed with RSA-PSS-SHA256, and end-to-end envelopes
//! (RSA-OAEP-SHA256 key wrap + ChaCha20-Poly1305, signed by the sender).
//!
//! See docs/PROTOCOL.md, sections "Authentication transcript" and "Envelope".

mod auth;
mod envelope;
mod keys;

pub use auth::{AuthContext, AuthError, AuthTranscript};
pub use envelope::{
    ENVELOPE_VERSION, EnvelopeHeader, OpenError, Opened, SealError, open, peek_header, seal,
};
pub use keys::{
    DEFAULT_KEY_BITS, Fingerprint, Identity, KeyError, MAX_KEY_BITS, MIN_KEY_BITS, PublicKey,
};

use crate::rng::CoreRng;
use sha2::Sha256;

/// Size of the big-endian `u32` length prefix before each signed field.
const LEN_PREFIX: usize = 4;

/// The big-endian `u32` length prefix of a signed field.
///
/// Callers bound every field far below 4 GiB (transcript fields are small;
/// envelopes are capped at `u32::MAX` bytes in total), so this cannot fail.
fn len_prefix(len: usize) -> [u8; LEN_PREFIX] {
    u32::try_from(len)
        .expect("signed fields are shorter than 4 GiB")
        .to_be_bytes()
}

/// Appends `field` to `out`, preceded by its length prefix.
fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&len_prefix(field.len()));
    out.extend_from_slice(field);
}

/// RSA-PSS-SHA256 signature (32-byte salt) over a SHA-256 `digest`; `rng`
/// supplies the salt and the blinding of the private-key operation.
fn pss_sign(identity: &Identity, rng: &mut CoreRng, digest: &[u8; 32]) -> Vec<u8> {
    identity
        .private
        .pss_sign_prehash_with_rng::<Sha256, _>(rng, digest)
        .expect("PSS signing with a validated key of at least 2048 bits cannot fail")
}

/// Verifies an RSA-PSS-SHA256 signature (32-byte salt) over a SHA-256 `digest`.
fn pss_verify(key: &PublicKey, digest: &[u8; 32], signature: &[u8]) -> rsa::Result<()> {
    key.key.pss_verify_prehash::<Sha256>(digest, signature)
}

#[cfg(test)]
mod test_support;
