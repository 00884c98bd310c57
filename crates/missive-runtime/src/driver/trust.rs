//! Which TLS certificates count: the server's own certificate files
//! ([`load_certificate`], [`load_or_create_self_signed`]) and the client's
//! trust in servers ([`pinning_client_config`]): a certificate that chains
//! to the trusted roots (the web PKI, or a CA of the user's) is accepted; a
//! self-signed one is trusted on first use and its fingerprint pinned in
//! [`KnownServers`], like SSH's `known_hosts`; a changed certificate is
//! refused with [`CertificateChanged`] until the pin is forgotten.

use super::tls::{
    CertifiedKey, certificate_fingerprint, client_config_with_verifier, provider, server_name,
};
use super::ws::WsAddress;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The server's certificate files could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateFileError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file holds no valid PEM of the expected kind.
    #[error("{}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot create a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Names the file of a PEM failure.
fn pem(path: &Path) -> impl FnOnce(rustls_pki_types::pem::Error) -> CertificateFileError + '_ {
    move |source| match source {
        rustls_pki_types::pem::Error::Io(source) => CertificateFileError::Io {
            path: path.to_path_buf(),
            source,
        },
        source => CertificateFileError::Pem {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Reads a PEM certificate chain (end-entity first) and its PEM private key.
pub fn load_certificate(cert: &Path, key: &Path) -> Result<CertifiedKey, CertificateFileError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(CertificateFileError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    Ok(CertifiedKey { chain, key })
}

/// The certificate authorities in a PEM file, as trust roots.
pub fn load_certificate_authorities(path: &Path) -> Result<RootCertStore, CertificateFileError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(pem(path))? {
        roots
            .add(cert.map_err(pem(path))?)
            .map_err(|e| CertificateFileError::Pem {
                path: path.to_path_buf(),
                source: rustls_pki_types::pem::Error::Io(io::Error::other(e)),
            })?;
    }
    if roots.is_empty() {
        return Err(CertificateFileError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// The server's self-signed certificate in `dir` (`cert.pem`, `key.pem`):
/// made for `names` on the first call (the key file readable by its owner
/// only), read on later ones.
pub fn load_or_create_self_signed(
    dir: &Path,
    names: Vec<String>,
) -> Result<CertifiedKey, CertificateFileError> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert_path.exists() {
        let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(names)?;
        fn io(path: &Path) -> impl FnOnce(io::Error) -> CertificateFileError + '_ {
            move |source| CertificateFileError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_private(&key_path, key_pair.serialize_pem().as_bytes()).map_err(io(&key_path))?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    }
    load_certificate(&cert_path, &key_path)
}

/// Writes `bytes` to a new file at `path` that only its owner may read.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The server presented a certificate other than the one pinned for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the certificate of {server} changed: pinned {pinned}, presented {presented} \
     (if the change is expected, run `missive trust-server`)"
)]
pub struct CertificateChanged {
    /// The server address.
    pub server: String,
    /// The fingerprint pinned for it.
    pub pinned: String,
    /// The fingerprint it presented.
    pub presented: String,
}

impl CertificateChanged {
    /// The refusal inside `error` (a failed TLS handshake), if that is why
    /// it failed.
    pub fn find(error: &io::Error) -> Option<&CertificateChanged> {
        match error.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<CertificateChanged>()
            }
            _ => None,
        }
    }
}

/// Whether `error` is a TLS handshake that refused the server's
/// certificate (untrusted, wrong name, expired, or changed since pinned).
pub fn certificate_refused(error: &io::Error) -> bool {
    matches!(
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

/// The client's pinned server certificates: one line per server,
/// `ADDRESS SHA256:…`.
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: PathBuf,
}

impl KnownServers {
    /// The pins in the file at `path` (created when a pin is first written).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entries(&self) -> io::Result<Vec<(String, String)>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text
                .lines()
                .filter_map(|line| line.split_once(' '))
                .map(|(server, fp)| (server.to_owned(), fp.trim().to_owned()))
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn write(&self, entries: &[(String, String)]) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text: String = entries
            .iter()
            .map(|(server, fp)| format!("{server} {fp}\n"))
            .collect();
        let temporary = self.path.with_extension("tmp");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, &self.path)
    }

    /// The fingerprint pinned for `server`.
    pub fn pinned(&self, server: &str) -> io::Result<Option<String>> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|(s, _)| s == server)
            .map(|(_, fp)| fp))
    }

    /// Pins `fingerprint` for `server` (replacing its pin).
    pub fn pin(&self, server: &str, fingerprint: &str) -> io::Result<()> {
        let mut entries = self.entries()?;
        entries.retain(|(s, _)| s != server);
        entries.push((server.to_owned(), fingerprint.to_owned()));
        self.write(&entries)
    }

    /// Forgets the pin of `server`; whether there was one.
    pub fn forget(&self, server: &str) -> io::Result<bool> {
        let mut entries = self.entries()?;
        let before = entries.len();
        entries.retain(|(s, _)| s != server);
        if entries.len() == before {
            return Ok(false);
        }
        self.write(&entries).map(|()| true)
    }
}

/// A client configuration for `server` accepting a certificate that chains
/// to `roots`, or a valid self-signed one (its name and validity still
/// checked) trusted on first use and pinned in `known`. Only `server`'s own
/// host is trusted on first use: another host (a cluster node redirected
/// to) must present a certificate that chains to `roots`.
pub fn pinning_client_config(
    server: &str,
    roots: RootCertStore,
    known: KnownServers,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    // No roots: only self-signed certificates, pinned.
    let chained = if roots.is_empty() {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        )
    };
    client_config_with_verifier(Arc::new(PinningVerifier {
        server: server.to_owned(),
        chained,
        known,
        first_use: Mutex::new(None),
        provider,
    }))
}

/// See [`pinning_client_config`].
#[derive(Debug)]
struct PinningVerifier {
    server: String,
    chained: Option<Arc<WebPkiServerVerifier>>,
    known: KnownServers,
    /// A self-signed certificate seen for the first time: pinned once its
    /// handshake signature verified.
    first_use: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

fn other_error(error: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(error),
    )))
}

impl PinningVerifier {
    /// Whether `name` is the host of the configured server (`host:port`
    /// or a `ws://` / `wss://` URL).
    fn is_configured_host(&self, name: &ServerName<'_>) -> bool {
        let addr = WsAddress::parse(&self.server).map_or(self.server.clone(), |ws| ws.addr);
        server_name(&addr).is_ok_and(|configured| configured == *name)
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain_error = match &self.chained {
            Some(chained) => match chained.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(e) => e,
            },
            None => rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        };
        if !self.is_configured_host(server_name) {
            // A redirect to another node: pins are never extended to it.
            return Err(chain_error);
        }
        // Self-signed: valid against itself (signature, name, dates).
        let mut own = RootCertStore::empty();
        own.add(end_entity.clone().into_owned())
            .map_err(|_| chain_error.clone())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(own), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|self_signed| match chain_error {
                // Not self-signed at all: why the chain failed says more.
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    self_signed
                }
                chain_error => chain_error,
            })?;
        let presented = certificate_fingerprint(end_entity);
        match self.known.pinned(&self.server).map_err(other_error)? {
            Some(pinned) if pinned == presented => {}
            Some(pinned) => {
                return Err(other_error(CertificateChanged {
                    server: self.server.clone(),
                    pinned,
                    presented,
                }));
            }
            None => {
                *self.first_use.lock().unwrap_or_else(|e| e.into_inner()) = Some(presented);
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let valid = rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )?;
        let first_use = self
            .first_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(fingerprint) = first_use {
            tracing::warn!(server = %self.server, %fingerprint, "trusting a self-signed server certificate on first use");
            self.known
                .pin(&self.server, &fingerprint)
                .map_err(other_error)?;
        }
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_servers_pin_replace_and_forget() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::new(dir.path().join("known_servers"));
        assert_eq!(known.pinned("a:1").unwrap(), None);
        known.pin("a:1", "SHA256:01").unwrap();
        known.pin("b:2", "SHA256:02").unwrap();
        known.pin("a:1", "SHA256:03").unwrap();
        assert_eq!(known.pinned("a:1").unwrap().as_deref(), Some("SHA256:03"));
        assert_eq!(known.pinned("b:2").unwrap().as_deref(), Some("SHA256:02"));
        assert!(known.forget("a:1").unwrap());
        assert!(!known.forget("a:1").unwrap());
        assert_eq!(known.pinned("a:1").unwrap(), None);
    }

    #[test]
    fn self_signed_files_are_made_once_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_self_signed(dir.path(), vec!["localhost".into()]).unwrap();
        let again = load_or_create_self_signed(dir.path(), vec!["other".into()]).unwrap();
        assert_eq!(first.chain, again.chain);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// A redirect must not turn into a trust-on-first-use of another node:
    /// only the configured host's self-signed certificate may be pinned.
    #[test]
    fn only_the_configured_host_is_trusted_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::new(dir.path().join("known_servers"));
        let node = super::super::tls::self_signed(vec!["127.0.0.2".into()]).unwrap();
        let verifier = |server: &str| PinningVerifier {
            server: server.into(),
            chained: None,
            known: known.clone(),
            first_use: Mutex::new(None),
            provider: provider(),
        };
        let name = ServerName::try_from("127.0.0.2").unwrap();
        let verify = |v: &PinningVerifier| {
            v.verify_server_cert(&node.chain[0], &[], &name, &[], UnixTime::now())
        };
        let redirected = verifier("127.0.0.1:7000");
        let refused = verify(&redirected).unwrap_err();
        assert!(certificate_refused(&io::Error::new(
            io::ErrorKind::InvalidData,
            refused
        )));
        assert!(
            redirected.first_use.lock().unwrap().is_none(),
            "nothing to pin"
        );
        for configured in ["127.0.0.2:7000", "wss://127.0.0.2:7000/"] {
            let own = verifier(configured);
            assert!(verify(&own).is_ok(), "{configured}: trusted on first use");
            assert!(own.first_use.lock().unwrap().is_some());
        }
        assert_eq!(known.pinned("127.0.0.1:7000").unwrap(), None);
    }

    #[test]
    fn a_changed_certificate_is_found_in_the_handshake_error() {
        let changed = CertificateChanged {
            server: "a:1".into(),
            pinned: "SHA256:01".into(),
            presented: "SHA256:02".into(),
        };
        let error = io::Error::new(io::ErrorKind::InvalidData, other_error(changed.clone()));
        assert_eq!(CertificateChanged::find(&error), Some(&changed));
        let unrelated = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        assert_eq!(CertificateChanged::find(&unrelated), None);
    }
}
