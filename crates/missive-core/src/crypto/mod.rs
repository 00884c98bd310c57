//! Cryptography: identities (RSA key pairs), the login/registration
//! transcript signed with RSA-PSS-SHA256, and end-to-end envelopes
//! (RSA-OAEP-SHA256 key wrap + ChaCha20-Poly1305, signed by the sender).
//!
//! See docs/PROTOCOL.md, sections "Authentication transcript" and "Envelope".

mod auth;
mod envelope;
mod keys;
mod rsa_ops;

pub use auth::{
    AuthContext, AuthError, AuthTranscript, ChannelBinding, TLS_EXPORTER_LEN, TranscriptVersion,
};
pub use envelope::{
    ENVELOPE_VERSION, EnvelopeHeader, OpenError, Opened, SealError, open, peek_header, seal,
};
pub use keys::{
    DEFAULT_KEY_BITS, Fingerprint, Identity, KeyError, MAX_KEY_BITS, MIN_KEY_BITS, PublicKey,
};
/// Fuzzing builds only: the keyed SHA-256 stand-ins that replace the RSA
/// operations under `--cfg fuzzing` (see the crate's SECURITY notes), for
/// harnesses that re-sign mutated envelopes the way the core signs.
#[cfg(fuzzing)]
pub use rsa_ops::stand_in as fuzz_stand_in;

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
