//! The authentication transcript: what a client signs to prove it holds
//! the private key of a user name, at login and at registration.

use super::keys::{Identity, PublicKey};
use crate::rng::CoreRng;
use crate::types::UserName;

/// Why the transcript is signed: the context label is the first field of
/// the transcript, so a login signature never passes as a registration one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthContext {
    /// Label `missive/v1/login`.
    Login,
    /// Label `missive/v1/register`.
    Register,
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
    /// The exact bytes that are signed (see docs/PROTOCOL.md).
    pub fn to_bytes(&self) -> Vec<u8> {
        todo!()
    }
    /// Signs the transcript with RSA-PSS-SHA256.
    pub fn sign(&self, identity: &Identity, rng: &mut CoreRng) -> Vec<u8> {
        let _ = (identity, rng);
        todo!()
    }
    /// Verifies an RSA-PSS-SHA256 signature over the transcript.
    pub fn verify(&self, key: &PublicKey, signature: &[u8]) -> Result<(), AuthError> {
        let _ = (key, signature);
        todo!()
    }
}
