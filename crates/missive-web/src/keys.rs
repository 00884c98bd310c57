//! Identities (generate, PEM import and export in the CLI's form,
//! fingerprints) and the core's envelope sealing and opening, for the page
//! and for the measurements. Plain Rust: the exports in `lib.rs` add the
//! OS seed and the clock.

use crate::session::{InvalidName, user_name};
use missive_core::crypto::{
    self, ENVELOPE_VERSION, EnvelopeHeader, Identity, KeyError, MAX_KEY_BITS, MIN_KEY_BITS,
    OpenError, PublicKey, SealError,
};
use missive_core::wire::DEFAULT_MAX_FRAME;
use missive_core::{MessageId, UnixMillis, rng};

/// Largest envelope [`seal_text`] writes and [`open_text`] reads: one that
/// fits a frame of the default size.
const MAX_ENVELOPE: usize = DEFAULT_MAX_FRAME as usize;

/// Why [`generate_identity`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The size is not accepted, or generation failed.
    #[error("cannot generate the key: {0}")]
    Key(#[from] KeyError),
}

/// A new identity of `bits` bits from `seed`, as PKCS#8 DER.
pub fn generate_identity(seed: [u8; 32], bits: usize) -> Result<Vec<u8>, GenerateError> {
    let identity = Identity::generate(&mut rng::from_seed(seed), bits)?;
    Ok(identity.to_pkcs8_der().to_vec())
}

/// Why a PEM private key cannot be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Not PEM, not PKCS#8, or not an RSA key.
    #[error(
        "this is not an RSA private key in PKCS#8 PEM form (-----BEGIN PRIVATE KEY-----): {detail}"
    )]
    NotRsaPkcs8 {
        /// What the decoder saw.
        detail: String,
    },
    /// An RSA key of a size Missive does not accept.
    #[error(
        "this RSA key has {bits} bits: Missive accepts keys of {MIN_KEY_BITS} to {MAX_KEY_BITS} bits"
    )]
    UnsupportedSize {
        /// The key's size.
        bits: usize,
    },
    /// Another refusal of the core.
    #[error("this private key cannot be used: {0}")]
    Other(KeyError),
}

impl From<KeyError> for ImportError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Encoding(detail) => ImportError::NotRsaPkcs8 { detail },
            KeyError::UnsupportedSize { bits } => ImportError::UnsupportedSize { bits },
            other => ImportError::Other(other),
        }
    }
}

/// Imports a private key in the CLI's PKCS#8 PEM form; returns its DER.
/// Whitespace around it (as pasted from a terminal) is ignored.
pub fn identity_from_pem(pem: &str) -> Result<Vec<u8>, ImportError> {
    let identity = Identity::from_pkcs8_pem(pem.trim())?;
    Ok(identity.to_pkcs8_der().to_vec())
}

/// Why a stored identity (PKCS#8 DER) cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not a usable key.
    #[error("the stored identity is not a usable private key: {0}")]
    Key(#[from] KeyError),
}

/// Exports an identity (PKCS#8 DER) in the CLI's PKCS#8 PEM form.
pub fn identity_to_pem(der: &[u8]) -> Result<String, IdentityError> {
    Ok(Identity::from_pkcs8_der(der)?.to_pkcs8_pem().to_string())
}

/// The fingerprint of an identity's public key (`SHA256:…`).
pub fn identity_fingerprint(der: &[u8]) -> Result<String, IdentityError> {
    Ok(Identity::from_pkcs8_der(der)?
        .public_key()
        .fingerprint()
        .to_string())
}

/// The public key (SPKI DER) of an identity (PKCS#8 DER).
pub fn public_key(der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    Ok(Identity::from_pkcs8_der(der)?
        .public_key()
        .to_spki_der()
        .to_vec())
}

/// Why [`seal_text`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealTextError {
    /// A name is not valid.
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// The sender's identity is not usable.
    #[error("the sender's identity is not usable: {0}")]
    Sender(KeyError),
    /// The recipient's public key is not usable.
    #[error("the recipient's public key is not usable: {0}")]
    Recipient(KeyError),
    /// The envelope would be too large.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// What [`seal_text`] seals: who, for whom, when, what.
#[derive(Debug, Clone, Copy)]
pub struct SealRequest<'a> {
    /// The sender's identity (PKCS#8 DER).
    pub sender: &'a [u8],
    /// The sender's name.
    pub sender_name: &'a str,
    /// The recipient's name.
    pub recipient_name: &'a str,
    /// The recipient's public key (SPKI DER).
    pub recipient_key: &'a [u8],
    /// The text.
    pub text: &'a str,
    /// Sealing time (Unix milliseconds), written in the header.
    pub sent_at: UnixMillis,
}

/// Seals `request.text` with the core's [`crypto::seal`]: the message id and
/// all randomness come from `seed`.
pub fn seal_text(request: &SealRequest<'_>, seed: [u8; 32]) -> Result<Vec<u8>, SealTextError> {
    let sender = Identity::from_pkcs8_der(request.sender).map_err(SealTextError::Sender)?;
    let recipient_key =
        PublicKey::from_spki_der(request.recipient_key).map_err(SealTextError::Recipient)?;
    let mut rng = rng::from_seed(seed);
    let header = EnvelopeHeader {
        version: ENVELOPE_VERSION,
        sender: user_name(request.sender_name)?,
        recipient: user_name(request.recipient_name)?,
        id: MessageId(rng::bytes(&mut rng)),
        sent_at: request.sent_at,
    };
    Ok(crypto::seal(
        &mut rng,
        &sender,
        &header,
        &recipient_key,
        request.text.as_bytes(),
        MAX_ENVELOPE,
    )?)
}

/// Why [`open_text`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenTextError {
    /// A name is not valid.
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// The recipient's identity is not usable.
    #[error("the recipient's identity is not usable: {0}")]
    Recipient(KeyError),
    /// The sender's public key is not usable.
    #[error("the sender's public key is not usable: {0}")]
    Sender(KeyError),
    /// The envelope does not open.
    #[error("the envelope cannot be opened: {0}")]
    Open(#[from] OpenError),
    /// The body is not UTF-8 text.
    #[error("the message is not UTF-8 text")]
    NotText,
}

/// What [`open_text`] opens: for whom, from whom, what.
#[derive(Debug, Clone, Copy)]
pub struct OpenRequest<'a> {
    /// The recipient's identity (PKCS#8 DER).
    pub recipient: &'a [u8],
    /// The recipient's name.
    pub recipient_name: &'a str,
    /// The expected sender's name.
    pub sender_name: &'a str,
    /// The sender's public key (SPKI DER).
    pub sender_key: &'a [u8],
    /// The envelope.
    pub envelope: &'a [u8],
}

/// Verifies and decrypts an envelope with the core's [`crypto::open`];
/// returns the text.
pub fn open_text(request: &OpenRequest<'_>) -> Result<String, OpenTextError> {
    let recipient =
        Identity::from_pkcs8_der(request.recipient).map_err(OpenTextError::Recipient)?;
    let sender_key = PublicKey::from_spki_der(request.sender_key).map_err(OpenTextError::Sender)?;
    let opened = crypto::open(
        &recipient,
        &user_name(request.recipient_name)?,
        &user_name(request.sender_name)?,
        &sender_key,
        request.envelope,
        MAX_ENVELOPE,
    )?;
    String::from_utf8(opened.body).map_err(|_| OpenTextError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_keys::{ALICE, BOB};

    #[test]
    fn generated_identity_is_a_pkcs8_rsa_key_of_that_size() {
        // The size is checked before any work, so a refusal costs nothing.
        assert!(matches!(
            generate_identity([3; 32], 1024),
            Err(GenerateError::Key(KeyError::UnsupportedSize { bits: 1024 }))
        ));
        let der = &ALICE.der;
        let identity = Identity::from_pkcs8_der(der).unwrap();
        assert_eq!(identity.public_key().bits(), 2048);
    }

    #[test]
    fn pem_from_the_cli_imports_and_exports_the_same() {
        let cli_pem = Identity::from_pkcs8_der(&ALICE.der)
            .unwrap()
            .to_pkcs8_pem()
            .to_string();
        assert_eq!(identity_from_pem(&cli_pem).unwrap(), ALICE.der);
        assert_eq!(identity_to_pem(&ALICE.der).unwrap(), cli_pem);
        // Surrounding whitespace as pasted from a terminal is fine.
        assert_eq!(
            identity_from_pem(&format!("\n  {cli_pem}\n")).unwrap(),
            ALICE.der,
        );
    }

    #[test]
    fn pem_that_is_not_a_missive_key_is_refused_clearly() {
        let garbage = identity_from_pem("hello").unwrap_err();
        assert!(
            matches!(garbage, ImportError::NotRsaPkcs8 { .. }),
            "{garbage}"
        );
        assert!(
            garbage
                .to_string()
                .starts_with("this is not an RSA private key in PKCS#8 PEM form")
        );

        // RFC 8410's Ed25519 example key.
        let ed25519 = "-----BEGIN PRIVATE KEY-----\n\
            MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
            -----END PRIVATE KEY-----\n";
        let not_rsa = identity_from_pem(ed25519).unwrap_err();
        assert!(
            matches!(not_rsa, ImportError::NotRsaPkcs8 { .. }),
            "{not_rsa}"
        );

        let small = {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            let key = rsa::PrivateKey::new(&mut rng::from_seed([5; 32]), 1024).unwrap();
            key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
        };
        let too_small = identity_from_pem(&small).unwrap_err();
        assert!(
            matches!(too_small, ImportError::UnsupportedSize { bits: 1024 }),
            "{too_small}"
        );
        assert_eq!(
            too_small.to_string(),
            "this RSA key has 1024 bits: Missive accepts keys of 2048 to 4096 bits"
        );
    }

    #[test]
    fn fingerprint_and_public_key_match_the_core() {
        let identity = Identity::from_pkcs8_der(&ALICE.der).unwrap();
        assert_eq!(
            identity_fingerprint(&ALICE.der).unwrap(),
            identity.public_key().fingerprint().to_string()
        );
        assert_eq!(
            public_key(&ALICE.der).unwrap(),
            identity.public_key().to_spki_der()
        );
        assert!(matches!(
            identity_fingerprint(b"not a key"),
            Err(IdentityError::Key(KeyError::Encoding(_)))
        ));
    }

    #[test]
    fn seal_then_open_round_trip() {
        let alice_key = public_key(&ALICE.der).unwrap();
        let bob_key = public_key(&BOB.der).unwrap();
        let request = SealRequest {
            sender: &ALICE.der,
            sender_name: "alice",
            recipient_name: "bob",
            recipient_key: &bob_key,
            text: "hi bob ✓",
            sent_at: 1_700_000_000_000,
        };
        let envelope = seal_text(&request, [9; 32]).unwrap();
        let opened = OpenRequest {
            recipient: &BOB.der,
            recipient_name: "bob",
            sender_name: "alice",
            sender_key: &alice_key,
            envelope: &envelope,
        };
        assert_eq!(open_text(&opened).unwrap(), "hi bob ✓");
        let header = crypto::peek_header(&envelope, MAX_ENVELOPE).unwrap();
        assert_eq!(header.sent_at, 1_700_000_000_000);
        assert_eq!(header.sender.as_str(), "alice");

        // Only bob opens it, and only as coming from alice.
        assert!(matches!(
            open_text(&OpenRequest {
                sender_name: "carol",
                ..opened
            }),
            Err(OpenTextError::Open(OpenError::WrongSender(_)))
        ));
        assert!(matches!(
            open_text(&OpenRequest {
                recipient: &ALICE.der,
                ..opened
            }),
            Err(OpenTextError::Open(OpenError::CannotDecrypt))
        ));
        assert!(matches!(
            seal_text(
                &SealRequest {
                    recipient_name: "Bob",
                    ..request
                },
                [9; 32]
            ),
            Err(SealTextError::Name(_))
        ));
        let too_large = "x".repeat(MAX_ENVELOPE);
        assert!(matches!(
            seal_text(
                &SealRequest {
                    text: &too_large,
                    ..request
                },
                [9; 32]
            ),
            Err(SealTextError::Seal(SealError::TooLarge { .. }))
        ));
    }
}
