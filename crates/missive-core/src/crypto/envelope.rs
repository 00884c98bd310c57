//! End-to-end envelopes: hybrid encryption of one message body for one
//! recipient, signed by the sender.

use super::keys::{Identity, PublicKey};
use crate::rng::CoreRng;
use crate::types::{MessageId, UnixMillis, UserName};

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
pub fn seal(
    rng: &mut CoreRng,
    sender: &Identity,
    header: &EnvelopeHeader,
    recipient_key: &PublicKey,
    body: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, SealError> {
    let _ = (rng, sender, header, recipient_key, body, max_len);
    todo!()
}

/// Reads the header without verifying anything (to learn whose key is
/// needed). Never trust it before `open` succeeds.
pub fn peek_header(envelope: &[u8], max_len: usize) -> Result<EnvelopeHeader, OpenError> {
    let _ = (envelope, max_len);
    todo!()
}

/// Verifies and decrypts an envelope for `recipient` (whose identity is
/// `identity`), expected from `expected_sender` whose public key is
/// `sender_key`.
pub fn open(
    identity: &Identity,
    recipient: &UserName,
    expected_sender: &UserName,
    sender_key: &PublicKey,
    envelope: &[u8],
    max_len: usize,
) -> Result<Opened, OpenError> {
    let _ = (
        identity,
        recipient,
        expected_sender,
        sender_key,
        envelope,
        max_len,
    );
    todo!()
}
