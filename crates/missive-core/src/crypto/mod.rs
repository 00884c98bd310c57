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
