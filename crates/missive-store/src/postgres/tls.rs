//! TLS to PostgreSQL: how a URL's `sslmode` is read and the one connector
//! every connection (the store's, the leases') is opened with; the rules
//! are on [`PostgresTls`].

use crate::StoreError;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS stream of a connection (plaintext ones use the raw socket).
pub(super) type TlsStream =
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<Socket>>::Stream;

/// The ALPN protocol PostgreSQL 17 expects (and libpq 17 sends).
const POSTGRESQL_ALPN: &[u8] = b"postgresql";

/// How connections to PostgreSQL use TLS, and what they trust besides
/// the web PKI roots.
///
/// - No `sslmode` in the URL, or `sslmode=disable`: plaintext (libpq's
///   default would be `prefer`; why not here: below).
/// - `sslmode=prefer`: TLS if the server offers it, plaintext if it does
///   not; `sslmode=require`: TLS or no connection.
/// - With TLS the server's certificate is **always verified** (rustls has
///   no unverified mode): its chain must lead to one of the web PKI roots
///   ([`webpki_roots`]) or to a certificate of [`PostgresTls::ca_file`],
///   and it must name the URL's host. So `require` here means what libpq
///   calls `verify-full`, and `prefer` fails on a server whose certificate
///   does not verify instead of falling back to plaintext. That is also
///   why a URL without `sslmode` stays plaintext: a server with a
///   self-signed certificate (Debian's default `ssl = on` with its
///   "snakeoil" certificate) would otherwise refuse a setup that works.
/// - tokio-postgres refuses libpq's `sslrootcert` in a URL; a private CA
///   is given as [`PostgresTls::ca_file`] (`missive-server --postgres-ca
///   FILE`, `MISSIVE_POSTGRES_CA`).
/// - TLS 1.3 only (the workspace's rustls is built without TLS 1.2):
///   PostgreSQL built with OpenSSL 1.1.1 or later offers it.
///
/// SCRAM logins over TLS are channel-bound (`tls-server-end-point`, for
/// certificates signed with RSA or ECDSA) by [`tokio_postgres_rustls`].
///
/// ```
/// use missive_store::postgres::PostgresTls;
/// let web_pki_only = PostgresTls::default();
/// let private_ca = PostgresTls::with_ca_file("/etc/missive/postgres-ca.pem");
/// assert_ne!(web_pki_only, private_ca);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresTls {
    /// A PEM file of CA certificates trusted besides the web PKI roots
    /// (a private CA that signed the database server's certificate).
    pub ca_file: Option<PathBuf>,
}

impl PostgresTls {
    /// Trusts the CA certificates in the PEM file at `path` besides the
    /// web PKI roots.
    pub fn with_ca_file(path: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: Some(path.into()),
        }
    }

    /// The connector every connection is opened with: rustls (ring) over
    /// the web PKI roots plus [`ca_file`](Self::ca_file). Reads the file
    /// now, once.
    ///
    /// Fails with [`StoreError::CaFile`] if the file cannot be read, is not
    /// PEM, or holds no usable certificate.
    pub(super) fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &self.ca_file {
            add_ca_file(&mut roots, path)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Database(Box::new(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![POSTGRESQL_ALPN.to_vec()];
        Ok(MakeRustlsConnect::new(config))
    }
}

/// Adds every certificate of the PEM file at `path` to `roots`.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), StoreError> {
    let ca_file = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::CaFile {
        path: path.to_path_buf(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::Io(io) => ca_file(Box::new(io)),
            other => ca_file(Box::new(other)),
        })?;
    if certificates.is_empty() {
        return Err(ca_file("no PEM certificate in the file".into()));
    }
    for certificate in certificates {
        roots.add(certificate).map_err(|e| ca_file(Box::new(e)))?;
    }
    Ok(())
}

/// Parses a `postgres://` URL or `key=value` string; without an `sslmode`
/// in it the connection is plaintext (`disable`), not tokio-postgres's
/// default `prefer` (see the [`PostgresTls`]).
pub(super) fn parse_url(url: &str) -> Result<Config, tokio_postgres::Error> {
    let mut config: Config = url.parse()?;
    if !names_ssl_mode(url) {
        config.ssl_mode(SslMode::Disable);
    }
    Ok(config)
}

/// Whether `url` sets `sslmode`, split as tokio-postgres splits it: a URL's
/// parameters follow the first `?` after its credentials (up to the first
/// `@`); a `key=value` string is checked by letting a leading
/// `sslmode=disable` be overridden (later keys win).
fn names_ssl_mode(url: &str) -> bool {
    match url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    {
        Some(rest) => {
            let after_credentials = rest.split_once('@').map_or(rest, |(_, tail)| tail);
            after_credentials.split_once('?').is_some_and(|(_, query)| {
                query
                    .split('&')
                    .any(|param| param.split('=').next() == Some("sslmode"))
            })
        }
        None => format!("sslmode=disable {url}")
            .parse::<Config>()
            .is_ok_and(|config| config.get_ssl_mode() != SslMode::Disable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> SslMode {
        parse_url(url).expect("parses").get_ssl_mode()
    }

    #[test]
    fn without_sslmode_a_url_is_plaintext() {
        assert_eq!(mode("postgres://u:p@db.example/missive"), SslMode::Disable);
        assert_eq!(mode("postgresql://db.example"), SslMode::Disable);
        assert_eq!(mode("host=db.example user=u"), SslMode::Disable);
        // A password that looks like a parameter is not one.
        assert_eq!(
            mode("postgres://u:a?sslmode=require@db/m"),
            SslMode::Disable
        );
        assert_eq!(
            mode("host=db password='x sslmode=require'"),
            SslMode::Disable
        );
    }

    #[test]
    fn sslmode_in_the_url_is_kept() {
        for (text, expected) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
        ] {
            assert_eq!(
                mode(&format!(
                    "postgres://u:p@db/m?application_name=x&sslmode={text}"
                )),
                expected
            );
            assert_eq!(mode(&format!("postgres://db?sslmode={text}")), expected);
            assert_eq!(mode(&format!("host=db sslmode = {text}")), expected);
        }
        // libpq's verify modes and sslrootcert are refused by the parser.
        assert!(parse_url("postgres://db/m?sslmode=verify-full").is_err());
        assert!(parse_url("postgres://db/m?sslrootcert=ca.pem").is_err());
    }

    #[test]
    fn a_bad_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for path in [&missing, &empty, &garbage] {
            match PostgresTls::with_ca_file(path).connector() {
                Err(err @ StoreError::CaFile { .. }) => {
                    assert!(
                        err.to_string().contains(&path.display().to_string()),
                        "{err}"
                    );
                }
                Err(other) => panic!("{}: expected CaFile, got {other:?}", path.display()),
                Ok(_) => panic!("{}: accepted", path.display()),
            }
        }
        assert!(PostgresTls::default().connector().is_ok());
    }
}
