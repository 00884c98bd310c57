//! The four RSA operations the protocol uses, in one place: RSA-PSS-SHA256
//! sign and verify (32-byte salt) over a SHA-256 digest, and RSA-OAEP-SHA256
//! wrap and unwrap of a 32-byte content key.
//!
//! # Fuzzing builds
//!
//! A private-key operation costs milliseconds, which would hold the
//! state-machine fuzz targets to tens of executions per second. Builds with
//! `--cfg fuzzing` (set by cargo-fuzz, never by cargo build or cargo test)
//! therefore compile [`stand_in`] instead: keyed SHA-256 functions with the
//! same sizes and the same failure modes (an output is exactly the modulus
//! size; a wrong key, digest, length or padding fails). A stand-in signature
//! is still bound to the key and the signed digest, so the fuzz targets'
//! "only genuine envelopes open" invariants keep their meaning. Real RSA is
//! what every normal build runs; the `normal_builds_use_real_rsa` test and
//! the published protocol vectors prove it.

use super::keys::{Identity, PublicKey};
use zeroize::Zeroizing;

/// Length of the content key that OAEP wraps.
pub(super) const KEY_LEN: usize = 32;

/// Why a verification or unwrap failed (deliberately without detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

#[cfg(not(fuzzing))]
pub(super) use real::{oaep_unwrap, oaep_wrap, pss_sign, pss_verify};
#[cfg(fuzzing)]
pub(super) use stand_in::{oaep_unwrap, oaep_wrap, pss_sign, pss_verify};

/// The `rsa` crate's operations (every normal build).
#[cfg_attr(fuzzing, allow(dead_code))]
mod real {
    use super::{Identity, KEY_LEN, PublicKey, Rejected, Zeroizing};
    use crate::crypto::len_prefix;
    use crate::rng::{self, CoreRng};
    use rsa::traits::PrivateKeyParts;
    use sha2::{Digest, Sha256};

    /// Domain separation label for the derived OAEP blinding generator.
    const BLINDING_LABEL: &[u8] = b"missive/v1/oaep-blinding";

    /// RSA-PSS-SHA256 signature (32-byte salt) over a SHA-256 `digest`;
    /// `rng` supplies the salt and the blinding of the private-key operation.
    pub fn pss_sign(identity: &Identity, rng: &mut CoreRng, digest: &[u8; 32]) -> Vec<u8> {
        identity
            .private
            .pss_sign_prehash_with_rng::<Sha256, _>(rng, digest)
            .expect("PSS signing with a validated key of at least 2048 bits cannot fail")
    }

    /// Verifies an RSA-PSS-SHA256 signature (32-byte salt) over `digest`.
    /// The salt must be exactly 32 bytes: `pss_verify_prehash` checks the
    /// digest's output size rather than detecting the length, so a
    /// signature with any other salt is refused.
    pub fn pss_verify(
        key: &PublicKey,
        digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), Rejected> {
        key.key
            .pss_verify_prehash::<Sha256>(digest, signature)
            .map_err(|_| Rejected)
    }

    /// RSA-OAEP-SHA256 encryption of a content key to `key`.
    pub fn oaep_wrap(key: &PublicKey, rng: &mut CoreRng, content_key: &[u8; KEY_LEN]) -> Vec<u8> {
        key.key
            .oaep_encrypt_with_rng::<Sha256, _>(rng, content_key)
            .expect(
                "a 32-byte key fits RSA-OAEP-SHA256 under a validated key of at least 2048 bits",
            )
    }

    /// RSA-OAEP-SHA256 unwrap of a content key; any failure, including a
    /// plaintext that is not exactly `KEY_LEN` bytes, is `Rejected`.
    pub fn oaep_unwrap(
        identity: &Identity,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, Rejected> {
        let mut blinding = blinding_rng(identity, wrapped);
        let key = Zeroizing::new(
            identity
                .private
                .oaep_decrypt_with_rng::<Sha256, _>(&mut blinding, wrapped)
                .map_err(|_| Rejected)?,
        );
        let key: &[u8; KEY_LEN] = key.as_slice().try_into().map_err(|_| Rejected)?;
        Ok(Zeroizing::new(*key))
    }

    /// Generator for the blinding of the private-key operation in
    /// [`oaep_unwrap`]. `open` takes no generator and the core may not use
    /// OS randomness, so the blinding factor is derived, as RFC 6979 derives
    /// nonces, from the secret exponent and the ciphertext: unpredictable to
    /// anyone without the key, and it never changes the result.
    fn blinding_rng(identity: &Identity, wrapped: &[u8]) -> CoreRng {
        let secret = Zeroizing::new(identity.private.d().to_be_bytes());
        let mut hasher = Sha256::new();
        for field in [BLINDING_LABEL, &secret, wrapped] {
            hasher.update(len_prefix(field.len()));
            hasher.update(field);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&hasher.finalize());
        rng::from_seed(*seed)
    }
}

/// Keyed SHA-256 stand-ins for fuzzing builds (see the module docs). Public
/// (as `missive_core::crypto::fuzz_stand_in`) so that fuzz harnesses can
/// re-sign mutated envelopes the way the core signs.
#[cfg(any(fuzzing, test))]
pub mod stand_in {
    use super::{Identity, KEY_LEN, PublicKey, Rejected, Zeroizing};
    use crate::rng::CoreRng;
    use rsa::traits::PublicKeyParts;
    use sha2::{Digest, Sha256};

    /// `len` bytes of SHA-256(label ‖ SPKI of `key` ‖ input), repeated.
    fn keyed(label: &[u8], key: &PublicKey, input: &[u8], len: usize) -> Vec<u8> {
        let block: [u8; 32] = Sha256::new()
            .chain_update(label)
            .chain_update(key.to_spki_der())
            .chain_update(input)
            .finalize()
            .into();
        block.iter().copied().cycle().take(len).collect()
    }

    /// Stand-in signature: modulus-sized, bound to the key and `digest`.
    pub fn pss_sign(identity: &Identity, _rng: &mut CoreRng, digest: &[u8; 32]) -> Vec<u8> {
        let key = identity.public_key();
        keyed(b"fuzz-pss", key, digest, key.key.size())
    }

    /// Accepts exactly the stand-in signature of `digest` under `key`.
    pub fn pss_verify(
        key: &PublicKey,
        digest: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), Rejected> {
        if signature == keyed(b"fuzz-pss", key, digest, key.key.size()) {
            Ok(())
        } else {
            Err(Rejected)
        }
    }

    /// Stand-in wrap: the content key XOR a key-bound mask, zero-padded to
    /// the modulus size.
    pub fn oaep_wrap(key: &PublicKey, _rng: &mut CoreRng, content_key: &[u8; KEY_LEN]) -> Vec<u8> {
        let mut out = keyed(b"fuzz-oaep", key, &[], KEY_LEN);
        for (o, k) in out.iter_mut().zip(content_key) {
            *o ^= k;
        }
        out.resize(key.key.size(), 0);
        out
    }

    /// Inverse of [`oaep_wrap`]; rejects a wrong length or padding.
    pub fn oaep_unwrap(
        identity: &Identity,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, Rejected> {
        let key = identity.public_key();
        if wrapped.len() != key.key.size() || wrapped[KEY_LEN..].iter().any(|&b| b != 0) {
            return Err(Rejected);
        }
        let mask = keyed(b"fuzz-oaep", key, &[], KEY_LEN);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        for ((o, w), m) in out.iter_mut().zip(wrapped).zip(mask) {
            *o = w ^ m;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;
    use crate::test_support::{alice, bob, seeded};
    use rsa::traits::PublicKeyParts;

    /// Normal builds sign and wrap with real RSA: the `rsa` crate's own PSS
    /// verifier accepts the signature, and no stand-in output is accepted.
    #[test]
    fn normal_builds_use_real_rsa() {
        const { assert!(!cfg!(fuzzing), "unit tests must not run with --cfg fuzzing") };
        let digest = [7u8; 32];
        let signature = pss_sign(alice(), &mut seeded(1), &digest);
        alice()
            .public_key()
            .key
            .pss_verify_prehash::<sha2::Sha256>(&digest, &signature)
            .expect("a real PSS signature");
        let fake = stand_in::pss_sign(alice(), &mut seeded(1), &digest);
        assert_eq!(
            pss_verify(alice().public_key(), &digest, &fake),
            Err(Rejected)
        );

        let content_key = [9u8; KEY_LEN];
        let fake = stand_in::oaep_wrap(bob().public_key(), &mut seeded(2), &content_key);
        assert!(oaep_unwrap(bob(), &fake).is_err());
        let wrapped = oaep_wrap(bob().public_key(), &mut seeded(2), &content_key);
        assert_eq!(*oaep_unwrap(bob(), &wrapped).expect("unwraps"), content_key);
    }

    /// The salt is exactly 32 bytes (docs/PROTOCOL.md §3.1): a PSS-SHA256
    /// signature with another salt length is refused, although a verifier
    /// that detects the salt length accepts it as genuine.
    #[test]
    fn only_a_32_byte_salt_verifies() {
        use rsa::pss::Pss;
        use sha2::Sha256;
        let digest = [7u8; 32];
        let key = alice().public_key();
        let sign = |salt_len: usize| {
            alice()
                .private
                .sign_with_rng(
                    &mut seeded(3),
                    Pss::<Sha256>::new_with_salt(salt_len),
                    &digest,
                )
                .expect("signs")
        };
        for salt_len in [0, 20, 31, 33, 64] {
            let signature = sign(salt_len);
            let detect_salt_len = Pss::<Sha256> {
                salt_len: None,
                ..Pss::new()
            };
            key.key
                .verify(detect_salt_len, &digest, &signature)
                .expect("a genuine signature");
            assert_eq!(
                pss_verify(key, &digest, &signature),
                Err(Rejected),
                "salt of {salt_len} bytes"
            );
        }
        assert_eq!(pss_verify(key, &digest, &sign(32)), Ok(()));
    }

    /// The stand-ins keep the real operations' contract: right key and
    /// digest only, exact lengths.
    #[test]
    fn stand_ins_reject_what_rsa_rejects() {
        let digest = [7u8; 32];
        let sig = stand_in::pss_sign(alice(), &mut seeded(1), &digest);
        assert_eq!(sig.len(), alice().public_key().key.size());
        assert!(stand_in::pss_verify(alice().public_key(), &digest, &sig).is_ok());
        assert!(stand_in::pss_verify(bob().public_key(), &digest, &sig).is_err());
        assert!(stand_in::pss_verify(alice().public_key(), &[8; 32], &sig).is_err());
        assert!(stand_in::pss_verify(alice().public_key(), &digest, &sig[1..]).is_err());

        let content_key = [9u8; KEY_LEN];
        let wrapped = stand_in::oaep_wrap(bob().public_key(), &mut seeded(2), &content_key);
        assert_eq!(
            *stand_in::oaep_unwrap(bob(), &wrapped).expect("unwraps"),
            content_key
        );
        assert_ne!(
            stand_in::oaep_unwrap(alice(), &wrapped).map(|k| *k),
            Ok(content_key)
        );
        assert!(stand_in::oaep_unwrap(bob(), &wrapped[1..]).is_err());
        let mut padded = wrapped.clone();
        *padded.last_mut().expect("non-empty") = 1;
        assert!(stand_in::oaep_unwrap(bob(), &padded).is_err());
    }
}
