//! The authentication transcript: what a client signs to prove it holds
//! the private key of a user name, at login and at registration.

use super::keys::{Identity, PublicKey};
use super::rsa_ops::{pss_sign, pss_verify};
use super::{LEN_PREFIX, put_field};
use crate::rng::CoreRng;
use crate::types::UserName;
use sha2::{Digest, Sha256};

/// Why the transcript is signed: the context label is the first field of
/// the transcript, so a login signature never passes as a registration one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthContext {
    /// Label `missive/v1/login`.
    Login,
    /// Label `missive/v1/register`.
    Register,
}

impl AuthContext {
    /// The ASCII label that opens the transcript.
    fn label(self) -> &'static str {
        match self {
            Self::Login => "missive/v1/login",
            Self::Register => "missive/v1/register",
        }
    }
}

/// Why a transcript signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The signature does not verify against the key.
    #[error("signature does not verify")]
    BadSignature,
}

/// Everything a login or registration signature covers.
///
/// # Example
///
/// ```
/// use missive_core::crypto::{AuthContext, AuthError, AuthTranscript, Identity};
/// use missive_core::{rng, UserName};
///
/// let mut rng = rng::from_seed([7; 32]);
/// let alice = Identity::generate(&mut rng, 2048)?;
/// let user = UserName::new("alice")?;
/// let transcript = AuthTranscript {
///     context: AuthContext::Login,
///     server_id: [1; 16],
///     session_id: [2; 16],
///     user: &user,
///     server_nonce: [3; 32],
///     client_nonce: rng::bytes(&mut rng),
/// };
///
/// let signature = transcript.sign(&alice, &mut rng);
/// assert_eq!(transcript.verify(alice.public_key(), &signature), Ok(()));
///
/// // A login signature is no registration signature.
/// let register = AuthTranscript { context: AuthContext::Register, ..transcript };
/// assert_eq!(register.verify(alice.public_key(), &signature), Err(AuthError::BadSignature));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTranscript<'a> {
    /// Login or registration.
    pub context: AuthContext,
    /// The server's stable id (from Welcome).
    pub server_id: [u8; 16],
    /// The connection's session id (from Welcome).
    pub session_id: [u8; 16],
    /// The user name being logged in or registered.
    pub user: &'a UserName,
    /// The server's single-use nonce (from Challenge).
    pub server_nonce: [u8; 32],
    /// The client's fresh nonce (sent in Prove).
    pub client_nonce: [u8; 32],
}

impl AuthTranscript<'_> {
    /// The exact bytes that are signed (see docs/PROTOCOL.md): the context
    /// label, server id, session id, user name, server nonce and client
    /// nonce, each preceded by its length as a big-endian `u32`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let fields: [&[u8]; 6] = [
            self.context.label().as_bytes(),
            &self.server_id,
            &self.session_id,
            self.user.as_str().as_bytes(),
            &self.server_nonce,
            &self.client_nonce,
        ];
        let len = fields.iter().map(|f| LEN_PREFIX + f.len()).sum();
        let mut out = Vec::with_capacity(len);
        for field in fields {
            put_field(&mut out, field);
        }
        out
    }

    /// Signs the transcript with RSA-PSS-SHA256 (32-byte salt drawn from
    /// `rng`, which also blinds the private-key operation).
    pub fn sign(&self, identity: &Identity, rng: &mut CoreRng) -> Vec<u8> {
        pss_sign(identity, rng, &Sha256::digest(self.to_bytes()).into())
    }

    /// Verifies an RSA-PSS-SHA256 signature over the transcript. Any failure
    /// (wrong length, bad padding, other message or key) is
    /// [`AuthError::BadSignature`].
    ///
    /// Fuzzing builds only (`--cfg fuzzing`, set by cargo-fuzz) accept any
    /// signature, so that fuzzers can reach the logged-in states; a normal
    /// build never compiles that shortcut in (see the
    /// `normal_builds_verify_signatures` test).
    pub fn verify(&self, key: &PublicKey, signature: &[u8]) -> Result<(), AuthError> {
        if cfg!(fuzzing) {
            return Ok(());
        }
        let digest = Sha256::digest(self.to_bytes()).into();
        pss_verify(key, &digest, signature).map_err(|_| AuthError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{alice, bob, name, seeded};

    fn transcript(user: &UserName) -> AuthTranscript<'_> {
        AuthTranscript {
            context: AuthContext::Login,
            server_id: [0x11; 16],
            session_id: [0x22; 16],
            user,
            server_nonce: [0x33; 32],
            client_nonce: [0x44; 32],
        }
    }

    /// `len` as a u32 big-endian prefix followed by `bytes`.
    fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn transcript_bytes_layout() {
        let user = name("bob");
        let t = transcript(&user);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"\x00\x00\x00\x10missive/v1/login");
        expected.extend_from_slice(b"\x00\x00\x00\x10");
        expected.extend_from_slice(&[0x11; 16]);
        expected.extend_from_slice(b"\x00\x00\x00\x10");
        expected.extend_from_slice(&[0x22; 16]);
        expected.extend_from_slice(b"\x00\x00\x00\x03bob");
        expected.extend_from_slice(b"\x00\x00\x00\x20");
        expected.extend_from_slice(&[0x33; 32]);
        expected.extend_from_slice(b"\x00\x00\x00\x20");
        expected.extend_from_slice(&[0x44; 32]);
        assert_eq!(t.to_bytes(), expected);
        assert_eq!(expected.len(), 6 * 4 + 16 + 16 + 16 + 3 + 32 + 32);
    }

    #[test]
    fn register_label() {
        let user = name("bob");
        let t = AuthTranscript {
            context: AuthContext::Register,
            ..transcript(&user)
        };
        let bytes = t.to_bytes();
        assert_eq!(bytes[..23], field(b"missive/v1/register")[..]);
        assert_eq!(bytes[23..], transcript(&user).to_bytes()[20..]);
    }

    #[test]
    fn sign_then_verify() {
        let user = name("bob");
        let t = transcript(&user);
        let sig = t.sign(alice(), &mut seeded(5));
        assert_eq!(sig.len(), 256);
        assert_eq!(t.verify(alice().public_key(), &sig), Ok(()));
    }

    #[test]
    fn signature_is_plain_pss_over_the_transcript_bytes() {
        let user = name("bob");
        let t = transcript(&user);
        let sig = t.sign(alice(), &mut seeded(5));
        let key = &alice().public_key().key;
        assert!(key.pss_verify::<Sha256>(&t.to_bytes(), &sig).is_ok());
        let explicit_salt = rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(key.clone(), 32);
        let sig = rsa::pss::Signature::try_from(sig.as_slice()).unwrap();
        use rsa::signature::Verifier;
        assert!(explicit_salt.verify(&t.to_bytes(), &sig).is_ok());
    }

    #[test]
    fn signing_is_deterministic_per_seed_and_randomized_across_seeds() {
        let user = name("bob");
        let t = transcript(&user);
        let a = t.sign(alice(), &mut seeded(5));
        assert_eq!(a, t.sign(alice(), &mut seeded(5)));
        let b = t.sign(alice(), &mut seeded(6));
        assert_ne!(a, b);
        assert_eq!(t.verify(alice().public_key(), &b), Ok(()));
    }

    #[test]
    fn verify_fails_for_any_other_transcript_or_key() {
        let (user, eve) = (name("bob"), name("eve"));
        let t = transcript(&user);
        let sig = t.sign(alice(), &mut seeded(5));
        let others = [
            AuthTranscript {
                context: AuthContext::Register,
                ..t.clone()
            },
            AuthTranscript {
                user: &eve,
                ..t.clone()
            },
            AuthTranscript {
                server_id: [0; 16],
                ..t.clone()
            },
            AuthTranscript {
                session_id: [0; 16],
                ..t.clone()
            },
            AuthTranscript {
                server_nonce: [0; 32],
                ..t.clone()
            },
            AuthTranscript {
                client_nonce: [0; 32],
                ..t.clone()
            },
        ];
        for other in &others {
            let err = other.verify(alice().public_key(), &sig);
            assert_eq!(err, Err(AuthError::BadSignature), "{other:?}");
        }
        assert_eq!(
            t.verify(bob().public_key(), &sig),
            Err(AuthError::BadSignature)
        );
    }

    /// The accept-all shortcut exists only under `--cfg fuzzing`: a normal
    /// build (this test's) must reject a bad login signature.
    #[test]
    fn normal_builds_verify_signatures() {
        const { assert!(!cfg!(fuzzing), "unit tests must not run with --cfg fuzzing") };
        let user = name("bob");
        let t = transcript(&user);
        let mut sig = t.sign(alice(), &mut seeded(5));
        sig[0] ^= 0x80;
        assert_eq!(
            t.verify(alice().public_key(), &sig),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            t.verify(alice().public_key(), &[0; 256]),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn verify_rejects_garbage_signatures() {
        let user = name("bob");
        let t = transcript(&user);
        let good = t.sign(alice(), &mut seeded(5));
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        let mut longer = good.clone();
        longer.push(0);
        let garbage: [&[u8]; 7] = [
            &[],
            &[0],
            &good[..255],
            &longer,
            &[0; 256],
            &[0xff; 256],
            &flipped,
        ];
        for sig in garbage {
            let err = t.verify(alice().public_key(), sig);
            assert_eq!(err, Err(AuthError::BadSignature), "{} bytes", sig.len());
        }
    }
}
