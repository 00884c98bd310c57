//! RSA identities and public keys.

use crate::rng::CoreRng;
use std::fmt;

/// Key size used when none is given.
pub const DEFAULT_KEY_BITS: usize = 2048;
/// Smallest accepted RSA modulus.
pub const MIN_KEY_BITS: usize = 2048;
/// Largest accepted RSA modulus.
pub const MAX_KEY_BITS: usize = 4096;

/// Why a key could not be made, imported or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The modulus size is outside `MIN_KEY_BITS..=MAX_KEY_BITS`.
    #[error("RSA key of {bits} bits: only {MIN_KEY_BITS}..={MAX_KEY_BITS} bits are accepted")]
    UnsupportedSize {
        /// Modulus size of the rejected key.
        bits: usize,
    },
    /// The bytes or text are not a valid key in the expected encoding.
    #[error("invalid key encoding: {0}")]
    Encoding(String),
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Generation(String),
}

/// A user's private key (RSA). Signs login transcripts and envelopes, and
/// unwraps envelope keys.
#[derive(Clone)]
pub struct Identity {
    pub(crate) private: rsa::PrivateKey,
    pub(crate) public: PublicKey,
}

impl Identity {
    /// Generates a new key pair of `bits` bits (see `MIN_KEY_BITS`/`MAX_KEY_BITS`).
    pub fn generate(rng: &mut CoreRng, bits: usize) -> Result<Self, KeyError> {
        let _ = (rng, bits);
        todo!()
    }
    /// Imports a PKCS#8 private key in PEM.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let _ = pem;
        todo!()
    }
    /// Imports a PKCS#8 private key in DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let _ = der;
        todo!()
    }
    /// Exports the private key as PKCS#8 PEM.
    pub fn to_pkcs8_pem(&self) -> zeroize::Zeroizing<String> {
        todo!()
    }
    /// Exports the private key as PKCS#8 DER.
    pub fn to_pkcs8_der(&self) -> zeroize::Zeroizing<Vec<u8>> {
        todo!()
    }
    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An RSA public key with its SubjectPublicKeyInfo DER encoding.
/// Equality compares the DER encoding.
#[derive(Clone)]
pub struct PublicKey {
    pub(crate) key: rsa::PublicKey,
    pub(crate) der: Vec<u8>,
}

impl PublicKey {
    /// Parses an SPKI DER key and checks its size.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let _ = der;
        todo!()
    }
    /// The SPKI DER encoding.
    pub fn to_spki_der(&self) -> &[u8] {
        &self.der
    }
    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        todo!()
    }
    /// SHA-256 of the SPKI DER.
    pub fn fingerprint(&self) -> Fingerprint {
        todo!()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// SHA-256 of a public key's SPKI DER. Displays as `SHA256:` followed by
/// lower-case hex in groups of four, separated by `:`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
