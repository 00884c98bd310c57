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
    /// Label `missive/v2/login` (`missive/v1/login` in a v1 transcript).
    Login,
    /// Label `missive/v2/register` (`missive/v1/register` in a v1 transcript).
    Register,
}

/// Length of a `tls-exporter` channel binding (RFC 9266): 32 bytes of
/// `export_keying_material` with label `EXPORTER-Channel-Binding` and no
/// context.
pub const TLS_EXPORTER_LEN: usize = 32;

/// What ties a login or registration to the transport connection it is made
/// on (docs/PROTOCOL.md §3.2). The driver computes it after the transport's
/// handshake and hands it to the core when the connection starts; each side
/// uses its OWN value, never one the peer claims, so a signature made on one
/// TLS connection does not verify on another (a relayed login fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelBinding {
    /// Binding type `none`, empty value: a plaintext transport.
    None,
    /// Binding type `tls-exporter` (RFC 9266): the connection's exporter
    /// value.
    TlsExporter([u8; TLS_EXPORTER_LEN]),
}

impl ChannelBinding {
    /// The ASCII binding type written in the transcript.
    pub fn binding_type(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::TlsExporter(_) => "tls-exporter",
        }
    }

    /// The binding value written in the transcript (empty for `none`).
    pub fn value(&self) -> &[u8] {
        match self {
            Self::None => &[],
            Self::TlsExporter(value) => value,
        }
    }
}

/// Which transcript a connection signs: the protocol version Welcome chose
/// and, from version 2, the connection's channel binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptVersion {
    /// Protocol version 1: labels `missive/v1/…`, no binding fields. Only
    /// on a connection whose binding is `none`.
    V1,
    /// Protocol version 2: labels `missive/v2/…`, followed by the binding
    /// type and value.
    V2(ChannelBinding),
}

impl TranscriptVersion {
    /// The ASCII label that opens the transcript.
    fn label(self, context: AuthContext) -> &'static str {
        match (self, context) {
            (Self::V1, AuthContext::Login) => "missive/v1/login",
            (Self::V1, AuthContext::Register) => "missive/v1/register",
            (Self::V2(_), AuthContext::Login) => "missive/v2/login",
            (Self::V2(_), AuthContext::Register) => "missive/v2/register",
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
/// use missive_core::crypto::{
///     AuthContext, AuthError, AuthTranscript, ChannelBinding, Identity, TranscriptVersion,
/// };
/// use missive_core::{rng, UserName};
///
/// let mut rng = rng::from_seed([7; 32]);
/// let alice = Identity::generate(&mut rng, 2048)?;
/// let user = UserName::new("alice")?;
/// let transcript = AuthTranscript {
///     version: TranscriptVersion::V2(ChannelBinding::TlsExporter([0x66; 32])),
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
///
/// // Nor does it verify on a connection with another channel binding.
/// let relayed = AuthTranscript {
///     version: TranscriptVersion::V2(ChannelBinding::TlsExporter([0x77; 32])),
///     ..transcript
/// };
/// assert_eq!(relayed.verify(alice.public_key(), &signature), Err(AuthError::BadSignature));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTranscript<'a> {
    /// The transcript's version and, from v2, the channel binding.
    pub version: TranscriptVersion,
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
    /// The exact bytes that are signed (see docs/PROTOCOL.md §3.2): the
    /// context label, server id, session id, user name, server nonce and
    /// client nonce, then in v2 the binding type and value, each preceded
    /// by its length as a big-endian `u32`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let common: [&[u8]; 6] = [
            self.version.label(self.context).as_bytes(),
            &self.server_id,
            &self.session_id,
            self.user.as_str().as_bytes(),
            &self.server_nonce,
            &self.client_nonce,
        ];
        let binding: &[&[u8]] = match &self.version {
            TranscriptVersion::V1 => &[],
            TranscriptVersion::V2(binding) => &[binding.binding_type().as_bytes(), binding.value()],
        };
        let fields = common.iter().chain(binding);
        let len = fields.clone().map(|f| LEN_PREFIX + f.len()).sum();
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
    use crate::test_support::test;
    use crate::test_support::{alice, bob, name, seeded};

    const EXPORTER: ChannelBinding = ChannelBinding::TlsExporter([0x66; 32]);

    fn transcript(user: &UserName) -> AuthTranscript<'_> {
        AuthTranscript {
            version: TranscriptVersion::V1,
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
    fn v2_transcript_is_v1_fields_under_the_v2_label_then_the_binding() {
        let user = name("bob");
        let v1 = transcript(&user).to_bytes();
        for (binding, binding_type, value) in [
            (EXPORTER, &b"tls-exporter"[..], &[0x66; 32][..]),
            (ChannelBinding::None, &b"none"[..], &[][..]),
        ] {
            let v2 = AuthTranscript {
                version: TranscriptVersion::V2(binding),
                ..transcript(&user)
            };
            let mut expected = field(b"missive/v2/login");
            expected.extend_from_slice(&v1[20..]);
            expected.extend_from_slice(&field(binding_type));
            expected.extend_from_slice(&field(value));
            assert_eq!(v2.to_bytes(), expected, "{binding:?}");
        }
        let register = AuthTranscript {
            version: TranscriptVersion::V2(EXPORTER),
            context: AuthContext::Register,
            ..transcript(&user)
        };
        assert_eq!(register.to_bytes()[..23], field(b"missive/v2/register")[..]);
    }

    /// The man-in-the-middle case: a signature made over one connection's
    /// binding does not verify over another's, nor unbound (v1).
    #[test]
    fn signature_is_bound_to_the_channel() {
        let user = name("bob");
        let signed = AuthTranscript {
            version: TranscriptVersion::V2(EXPORTER),
            ..transcript(&user)
        };
        let sig = signed.sign(alice(), &mut seeded(5));
        assert_eq!(signed.verify(alice().public_key(), &sig), Ok(()));
        for version in [
            TranscriptVersion::V2(ChannelBinding::TlsExporter([0x67; 32])),
            TranscriptVersion::V2(ChannelBinding::None),
            TranscriptVersion::V1,
        ] {
            let other = AuthTranscript {
                version,
                ..signed.clone()
            };
            let err = other.verify(alice().public_key(), &sig);
            assert_eq!(err, Err(AuthError::BadSignature), "{version:?}");
        }
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
