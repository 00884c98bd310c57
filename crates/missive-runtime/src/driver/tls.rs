//! TLS 1.3 over any [`ByteStream`]: a [`TlsListener`] wrapping any
//! [`Listener`] and a [`TlsConnector`] on any [`Runtime`]. One
//! implementation (rustls with the ring provider, through `futures-rustls`)
//! serves every runtime, since the driver speaks `futures-io`.
//!
//! Only TLS 1.3 is offered, with ALPN [`ALPN`]. Every connection carries its
//! channel binding ([`TlsTransport::channel_binding`], RFC 9266
//! `tls-exporter`), the same value at both ends of one TLS session.

use super::handshake::{HANDSHAKE_TIMEOUT, Handshakes};
use super::runtime::{Runtime, timeout};
use super::transport::{ByteStream, Connecting, Connector, Listener};
use crate::metrics::Metrics;
use futures_rustls::TlsStream;
use futures_util::io::{ReadHalf, WriteHalf};
use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The application protocol both ends name in the handshake.
pub const ALPN: &[u8] = b"missive/1";
/// The RFC 9266 exporter label of the channel binding.
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// The application protocol of a WebSocket over TLS (wss): HTTP/1.1, the
/// only one browsers offer for it.
pub const HTTP_1_1_ALPN: &[u8] = b"http/1.1";

/// The RFC 9266 `tls-exporter` value of a TLS session (32 bytes).
pub type ExporterValue = [u8; 32];

/// The crypto provider: ring, nothing else.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration offering TLS 1.3 only and ALPN [`ALPN`], with the
/// certificate `chain` (end-entity first) and its `key`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration offering TLS 1.3 only and ALPN [`ALPN`], trusting
/// the certificate authorities in `roots`.
pub fn client_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration offering TLS 1.3 only and ALPN [`ALPN`], judging
/// the server's certificate with `verifier`.
pub(crate) fn client_config_with_verifier(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// `config` offering ALPN [`HTTP_1_1_ALPN`] instead, for a wss listener (the
/// same certificate).
pub fn websocket_server_config(config: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![HTTP_1_1_ALPN.to_vec()];
    Arc::new(config)
}

/// `config` offering ALPN [`HTTP_1_1_ALPN`] instead, for a wss client (the
/// same trust: roots or pinning).
pub fn websocket_client_config(config: &rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![HTTP_1_1_ALPN.to_vec()];
    Arc::new(config)
}

/// The web PKI's root certificate authorities (Mozilla's list).
pub fn web_pki_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A certificate and its private key.
#[derive(Debug)]
pub struct CertifiedKey {
    /// The certificate chain, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the end-entity certificate.
    pub key: PrivateKeyDer<'static>,
}

/// Creates a self-signed certificate (ECDSA P-256) valid for `names` (DNS
/// names or IP addresses).
pub fn self_signed(names: Vec<String>) -> Result<CertifiedKey, rcgen::Error> {
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(names)?;
    Ok(CertifiedKey {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(key_pair.serialize_der().into()),
    })
}

/// A certificate's SHA-256 fingerprint, as shown to people:
/// `SHA256:ab:cd:…` (lower-case hex pairs).
pub fn certificate_fingerprint(certificate: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(certificate.as_ref());
    let pairs: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{}", pairs.join(":"))
}

/// The two halves of a split [`ByteStream`] joined back into one stream, for
/// TLS or WebSocket to run over.
#[derive(Debug)]
pub struct Joined<T: ByteStream> {
    reader: T::Reader,
    writer: T::Writer,
}

impl<T: ByteStream> Joined<T> {
    /// Joins the two halves of `stream` into one stream.
    pub fn new(stream: T) -> Self {
        let (reader, writer) = stream.split();
        Self { reader, writer }
    }
}

impl<T: ByteStream> AsyncRead for Joined<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl<T: ByteStream> AsyncWrite for Joined<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_close(cx)
    }
}

/// A connection after its TLS handshake, over byte stream `T`.
pub struct TlsTransport<T: ByteStream> {
    stream: TlsStream<Joined<T>>,
    channel_binding: ExporterValue,
    peer_certificate: Option<CertificateDer<'static>>,
}

impl<T: ByteStream> std::fmt::Debug for TlsTransport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl<T: ByteStream> TlsTransport<T> {
    fn established(stream: TlsStream<Joined<T>>) -> io::Result<Self> {
        let (_, state) = stream.get_ref();
        let peer_certificate = state
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.clone().into_owned());
        let channel_binding = match &stream {
            TlsStream::Client(s) => {
                s.get_ref()
                    .1
                    .export_keying_material([0; 32], CHANNEL_BINDING_LABEL, None)
            }
            TlsStream::Server(s) => {
                s.get_ref()
                    .1
                    .export_keying_material([0; 32], CHANNEL_BINDING_LABEL, None)
            }
        }
        .map_err(io::Error::other)?;
        Ok(Self {
            stream,
            channel_binding,
            peer_certificate,
        })
    }

    /// The RFC 9266 `tls-exporter` channel binding of this session: 32 bytes
    /// of `export_keying_material` with label [`CHANNEL_BINDING_LABEL`] and
    /// no context, equal at both ends of the same TLS session.
    pub fn exporter_value(&self) -> ExporterValue {
        self.channel_binding
    }

    /// The peer's end-entity certificate (the server's, on a client).
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certificate.as_ref()
    }
}

impl<T: ByteStream> ByteStream for TlsTransport<T> {
    type Reader = ReadHalf<TlsStream<Joined<T>>>;
    type Writer = WriteHalf<TlsStream<Joined<T>>>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        AsyncReadExt::split(self.stream)
    }

    fn channel_binding(&self) -> missive_core::crypto::ChannelBinding {
        missive_core::crypto::ChannelBinding::TlsExporter(self.channel_binding)
    }
}

/// Accepts TLS connections over the connections of listener `L` (a byte
/// stream): each handshake runs in its own task (others are accepted
/// meanwhile) and is cut at the handshake deadline; a failed handshake only
/// closes its connection.
pub struct TlsListener<R: Runtime, L: Listener>
where
    L::Transport: ByteStream,
{
    inner: L,
    acceptor: futures_rustls::TlsAcceptor,
    handshakes: Handshakes<R, TlsTransport<L::Transport>>,
}

impl<R: Runtime, L: Listener> std::fmt::Debug for TlsListener<R, L>
where
    L::Transport: ByteStream,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime, L: Listener> TlsListener<R, L>
where
    L::Transport: ByteStream,
{
    /// Serves TLS with `config` over `inner`, with the default
    /// [`HANDSHAKE_TIMEOUT`] and [`MAX_HANDSHAKES`](super::MAX_HANDSHAKES).
    pub fn new(inner: L, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            inner,
            acceptor: config.into(),
            handshakes: Handshakes::new("TLS"),
        }
    }

    /// Sets the time a peer gets to finish its handshake.
    pub fn with_handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshakes.limit = limit;
        self
    }

    /// Sets the most handshakes run at once.
    pub fn with_max_handshakes(mut self, max: usize) -> Self {
        self.handshakes.max = max.max(1);
        self
    }

    /// Counts its failed handshakes (and those cut at their deadline) in
    /// `metrics` (`missive_tls_handshake_failures_total`).
    pub fn counting_failures(mut self, metrics: &Metrics) -> Self {
        self.handshakes.failures = Some(metrics.tls_handshake_failures());
        self
    }

    /// The listener underneath.
    pub fn inner(&self) -> &L {
        &self.inner
    }
}

impl<R: Runtime, L: Listener> Listener for TlsListener<R, L>
where
    L::Transport: ByteStream,
{
    type Transport = TlsTransport<L::Transport>;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Self::Transport, Option<SocketAddr>)>> {
        let acceptor = &self.acceptor;
        self.handshakes
            .poll_accept(&mut self.inner, cx, |transport| {
                let accept = acceptor.accept(Joined::new(transport));
                async move { TlsTransport::established(accept.await?.into()).map(Some) }
            })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Opens TLS connections over TCP on runtime `R`, verifying the server with
/// its client configuration; the handshake is cut at its deadline.
pub struct TlsConnector<R: Runtime> {
    connector: futures_rustls::TlsConnector,
    handshake_timeout: Duration,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> std::fmt::Debug for TlsConnector<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> TlsConnector<R> {
    /// Connects with `config` and the default [`HANDSHAKE_TIMEOUT`].
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            connector: config.into(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            runtime: PhantomData,
        }
    }

    /// Sets the time the server gets to finish the handshake.
    pub fn with_handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshake_timeout = limit;
        self
    }
}

/// The host part of `host:port` (`[v6]:port` included), as a TLS server name.
pub(crate) fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

impl<R: Runtime> Connector for TlsConnector<R> {
    type Transport = TlsTransport<R::TcpStream>;

    fn connect(&self, addr: &str) -> Connecting<Self::Transport> {
        let connector = self.connector.clone();
        let limit = self.handshake_timeout;
        let addr = addr.to_owned();
        Box::pin(async move {
            let name = server_name(&addr)?;
            let tcp = R::connect_tcp(addr).await?;
            let stream = timeout::<R, _>(limit, connector.connect(name, Joined::new(tcp)))
                .await
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            TlsTransport::established(stream.into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_takes_the_host_of_any_address_form() {
        assert_eq!(
            server_name("example.org:7878").unwrap(),
            ServerName::try_from("example.org").unwrap()
        );
        assert_eq!(
            server_name("127.0.0.1:7878").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:7878").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
    }

    #[test]
    fn fingerprint_is_sha256_in_colon_separated_hex() {
        let fp = certificate_fingerprint(&CertificateDer::from(b"abc".to_vec()));
        assert_eq!(
            fp,
            "SHA256:ba:78:16:bf:8f:01:cf:ea:41:41:40:de:5d:ae:22:23:b0:03:61:a3:96:17:7a:9c:b4:10:ff:61:f2:00:15:ad"
        );
    }

    #[test]
    fn configurations_offer_tls13_and_alpn_only() {
        let cert = self_signed(vec!["localhost".into()]).unwrap();
        let server = server_config(cert.chain, cert.key).unwrap();
        assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);
        let client = client_config(web_pki_roots()).unwrap();
        assert_eq!(client.alpn_protocols, vec![ALPN.to_vec()]);
    }
}
