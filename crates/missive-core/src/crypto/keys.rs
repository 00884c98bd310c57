//! RSA identities and public keys.

use crate::rng::CoreRng;
use rsa::pkcs1::der::{Decode, SecretDocument};
use rsa::pkcs8::der::pem::PemLabel;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
    PrivateKeyInfoRef, SubjectPublicKeyInfoRef,
};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

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
    ///
    /// The size is checked before any work is done: a size outside the
    /// accepted range fails at once with [`KeyError::UnsupportedSize`].
    /// The public exponent is 65537. The key is a pure function of the
    /// generator's state.
    pub fn generate(rng: &mut CoreRng, bits: usize) -> Result<Self, KeyError> {
        check_size(bits)?;
        let private =
            rsa::PrivateKey::new(rng, bits).map_err(|e| KeyError::Generation(e.to_string()))?;
        Self::from_private(private)
    }

    /// Imports a PKCS#8 private key in PEM (label `PRIVATE KEY`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = SecretDocument::from_pem(pem).map_err(encoding_error)?;
        PrivateKeyInfoRef::validate_pem_label(label).map_err(encoding_error)?;
        Self::from_pkcs8_der(der.as_bytes())
    }

    /// Imports a PKCS#8 private key in DER.
    ///
    /// The modulus size is checked before the (costly) key validation.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        check_size(pkcs8_modulus_bits(der)?)?;
        let private = rsa::PrivateKey::from_pkcs8_der(der).map_err(encoding_error)?;
        Self::from_private(private)
    }

    /// Exports the private key as PKCS#8 PEM with LF line endings.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        self.private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a validated two-prime RSA key always encodes as PKCS#8")
    }

    /// Exports the private key as PKCS#8 DER.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.private
            .to_pkcs8_der()
            .expect("a validated two-prime RSA key always encodes as PKCS#8")
            .to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Wraps a private key, checking its size and deriving its public half.
    fn from_private(private: rsa::PrivateKey) -> Result<Self, KeyError> {
        let public = PublicKey::from_rsa(private.to_public_key())?;
        Ok(Self { private, public })
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
    ///
    /// Only the canonical encoding (as produced by [`PublicKey::to_spki_der`],
    /// algorithm `rsaEncryption`) is accepted, so that one key has exactly one
    /// encoding and therefore one fingerprint.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        #[cfg(fuzzing)]
        return fuzzing_cache::parse(der, Self::parse_spki_der);
        #[cfg(not(fuzzing))]
        Self::parse_spki_der(der)
    }

    fn parse_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        check_size(spki_modulus_bits(der)?)?;
        let key = rsa::PublicKey::from_public_key_der(der).map_err(encoding_error)?;
        let public = Self::from_rsa(key)?;
        if public.der != der {
            return Err(KeyError::Encoding(
                "non-canonical SubjectPublicKeyInfo".into(),
            ));
        }
        Ok(public)
    }
    /// The SPKI DER encoding.
    pub fn to_spki_der(&self) -> &[u8] {
        &self.der
    }
    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        modulus_bits(&self.key.n_bytes())
    }

    /// SHA-256 of the SPKI DER.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_spki_der(&self.der)
    }

    /// Wraps an RSA public key, checking its size and caching its SPKI DER.
    fn from_rsa(key: rsa::PublicKey) -> Result<Self, KeyError> {
        check_size(modulus_bits(&key.n_bytes()))?;
        let der = key.to_public_key_der().map_err(encoding_error)?.into_vec();
        Ok(Self { key, der })
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

impl Fingerprint {
    /// The fingerprint of an SPKI DER key, computed without parsing it (for
    /// keys stored or received as bytes, such as pinned keys).
    pub fn of_spki_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256")?;
        for group in self.0.chunks(2) {
            write!(f, ":{:02x}{:02x}", group[0], group[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Accepts `bits` if it lies in `MIN_KEY_BITS..=MAX_KEY_BITS`.
/// Fuzzing builds only: the last few parse results, by DER. Fuzz inputs
/// register and log in with a handful of keys over and over, and under
/// coverage instrumentation the big-integer set-up of every parse costs
/// more than the rest of an execution. A DER not seen recently is parsed
/// for real; the result for the same bytes is the same either way.
#[cfg(fuzzing)]
mod fuzzing_cache {
    use super::{KeyError, PublicKey};
    use std::cell::RefCell;

    const ENTRIES: usize = 16;

    type Parsed = Result<PublicKey, KeyError>;

    thread_local! {
        static CACHE: RefCell<Vec<(Vec<u8>, Parsed)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn parse(der: &[u8], parse: fn(&[u8]) -> Parsed) -> Parsed {
        if let Some(hit) =
            CACHE.with_borrow(|c| c.iter().find(|(d, _)| d == der).map(|e| e.1.clone()))
        {
            return hit;
        }
        let parsed = parse(der);
        CACHE.with_borrow_mut(|c| {
            if c.len() == ENTRIES {
                let _evicted = c.remove(0);
            }
            c.push((der.to_vec(), parsed.clone()));
        });
        parsed
    }
}

fn check_size(bits: usize) -> Result<(), KeyError> {
    if (MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::UnsupportedSize { bits })
    }
}

/// Bit length of a big-endian unsigned integer (leading zero bytes allowed).
fn modulus_bits(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        Some(first) => (be.len() - first) * 8 - be[first].leading_zeros() as usize,
        None => 0,
    }
}

/// Modulus size of an SPKI DER RSA key, read without validating the key.
fn spki_modulus_bits(der: &[u8]) -> Result<usize, KeyError> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(encoding_error)?;
    let pkcs1 = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| KeyError::Encoding("public key is not a whole number of bytes".into()))?;
    let key = rsa::pkcs1::RsaPublicKeyRef::from_der(pkcs1).map_err(encoding_error)?;
    Ok(modulus_bits(key.modulus.as_bytes()))
}

/// Modulus size of a PKCS#8 DER RSA key, read without validating the key.
fn pkcs8_modulus_bits(der: &[u8]) -> Result<usize, KeyError> {
    let info = PrivateKeyInfoRef::from_der(der).map_err(encoding_error)?;
    let key = rsa::pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
        .map_err(encoding_error)?;
    Ok(modulus_bits(key.modulus.as_bytes()))
}

/// Maps any decoding error to [`KeyError::Encoding`].
fn encoding_error(e: impl fmt::Display) -> KeyError {
    KeyError::Encoding(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;
    use crate::test_support::{alice, bob, seeded};
    use rsa::BoxedUint;

    /// SPKI DER of an RSA public key with a `bits`-bit modulus, built without
    /// key generation (the modulus is only odd, not a product of primes).
    fn spki_with_modulus_bits(bits: usize) -> Vec<u8> {
        let mut n = vec![0x5a; bits / 8];
        n[0] |= 0x80;
        n[bits / 8 - 1] |= 1;
        let n = BoxedUint::from_be_slice(&n, bits as u32).unwrap();
        let key = rsa::PublicKey::new_unchecked(n, BoxedUint::from(65537u32));
        key.to_public_key_der().unwrap().into_vec()
    }

    #[test]
    fn generate_rejects_unsupported_sizes_up_front() {
        for bits in [0, 1024, 2047, 4097, 8192] {
            let err = Identity::generate(&mut seeded(9), bits).unwrap_err();
            assert_eq!(err, KeyError::UnsupportedSize { bits });
        }
    }

    #[test]
    fn generated_keys_have_the_requested_size() {
        assert_eq!(alice().public_key().bits(), 2048);
        assert_ne!(alice().public_key(), bob().public_key());
    }

    #[test]
    fn generation_is_deterministic() {
        // Same seed as the fixtures: the first identity is Alice again.
        let again = Identity::generate(&mut seeded(1), 2048).unwrap();
        assert_eq!(again.public_key(), alice().public_key());
    }

    #[test]
    fn pkcs8_pem_round_trip() {
        let pem = alice().to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(!pem.contains('\r'));
        let back = Identity::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.public_key(), alice().public_key());
        assert_eq!(back.to_pkcs8_der(), alice().to_pkcs8_der());
    }

    #[test]
    fn pkcs8_der_round_trip() {
        let der = alice().to_pkcs8_der();
        let back = Identity::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.public_key(), alice().public_key());
        assert_eq!(back.to_pkcs8_der(), der);
    }

    #[test]
    fn spki_round_trip() {
        let key = alice().public_key();
        let back = PublicKey::from_spki_der(key.to_spki_der()).unwrap();
        assert_eq!(&back, key);
        assert_eq!(back.bits(), 2048);
        assert_eq!(back.fingerprint(), key.fingerprint());
    }

    #[test]
    fn small_generated_key_is_rejected() {
        let small = rsa::PrivateKey::new(&mut seeded(3), 1024).unwrap();
        let der = small.to_pkcs8_der().unwrap();
        let err = KeyError::UnsupportedSize { bits: 1024 };
        assert_eq!(Identity::from_pkcs8_der(der.as_bytes()).unwrap_err(), err);
        let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(Identity::from_pkcs8_pem(&pem).unwrap_err(), err);
        let spki = small.to_public_key().to_public_key_der().unwrap();
        assert_eq!(PublicKey::from_spki_der(spki.as_bytes()).unwrap_err(), err);
    }

    #[test]
    fn spki_size_bounds() {
        for bits in [512, 1024, 2040, 4104, 8192, 16384] {
            let der = spki_with_modulus_bits(bits);
            let err = PublicKey::from_spki_der(&der).unwrap_err();
            assert_eq!(err, KeyError::UnsupportedSize { bits }, "{bits} bits");
        }
    }

    #[test]
    fn bad_encodings_are_rejected() {
        let spki = alice().public_key().to_spki_der();
        let mut trailing = spki.to_vec();
        trailing.push(0);
        let private = alice().to_pkcs8_der();
        let cases: [&[u8]; 5] = [
            b"",
            b"\x30\x00",
            b"garbage",
            &spki[..spki.len() - 1],
            &trailing,
        ];
        for der in cases {
            assert!(matches!(
                PublicKey::from_spki_der(der),
                Err(KeyError::Encoding(_))
            ));
            assert!(matches!(
                Identity::from_pkcs8_der(der),
                Err(KeyError::Encoding(_))
            ));
        }
        assert!(matches!(
            PublicKey::from_spki_der(&private),
            Err(KeyError::Encoding(_))
        ));
        assert!(matches!(
            Identity::from_pkcs8_der(spki),
            Err(KeyError::Encoding(_))
        ));
        assert!(matches!(
            Identity::from_pkcs8_der(&private[..private.len() - 1]),
            Err(KeyError::Encoding(_))
        ));
    }

    #[test]
    fn bad_pem_is_rejected() {
        let pem = alice().to_pkcs8_pem();
        let relabelled = pem.replace("PRIVATE KEY", "PUBLIC KEY");
        let truncated = &pem[..pem.len() / 2];
        for text in ["", "not a key", truncated, &relabelled] {
            assert!(
                matches!(Identity::from_pkcs8_pem(text), Err(KeyError::Encoding(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn fingerprint_display_format() {
        let fp = Fingerprint(std::array::from_fn(|i| {
            (i as u8).wrapping_mul(7).wrapping_add(0xa0)
        }));
        assert_eq!(
            fp.to_string(),
            "SHA256:a0a7:aeb5:bcc3:cad1:d8df:e6ed:f4fb:0209:\
             1017:1e25:2c33:3a41:484f:565d:646b:7279"
        );
        assert_eq!(format!("{fp:?}"), fp.to_string());
    }

    #[test]
    fn fingerprint_is_sha256_of_spki() {
        let key = alice().public_key();
        let fp = key.fingerprint();
        assert_eq!(fp.0, <[u8; 32]>::from(Sha256::digest(key.to_spki_der())));
        assert_eq!(Fingerprint::of_spki_der(key.to_spki_der()), fp);
        let text = fp.to_string();
        let groups: Vec<&str> = text.strip_prefix("SHA256:").unwrap().split(':').collect();
        assert_eq!(groups.len(), 16);
        assert!(groups.iter().all(|g| {
            g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }));
    }

    #[cfg(not(target_family = "wasm"))]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        #[test]
        fn mutated_encodings_never_panic(
            index in proptest::prelude::any::<proptest::sample::Index>(),
            xor in 1..=u8::MAX,
        ) {
            let mut spki = alice().public_key().to_spki_der().to_vec();
            let i = index.index(spki.len());
            spki[i] ^= xor;
            let _ = PublicKey::from_spki_der(&spki);
            let mut private = alice().to_pkcs8_der();
            let i = index.index(private.len());
            private[i] ^= xor;
            let _ = Identity::from_pkcs8_der(&private);
        }
    }

    #[test]
    fn debug_output_hides_the_private_key() {
        let text = format!("{:?}", alice());
        assert!(
            text.starts_with("Identity { public: PublicKey(SHA256:"),
            "{text}"
        );
        assert!(text.len() < 200, "{text}");
    }
}
