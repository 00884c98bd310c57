//! Cluster redirects seen by the client library, on real loopback sockets
//! (tokio driver): a node that does not serve the user answers its login
//! with `redirect` (a scripted node here, speaking the protocol just far
//! enough), and the client follows it to a real server on 127.0.0.2 —
//! verified there like the first node, against the CA it was given. A
//! redirect to a node whose certificate does not chain to that CA, or away
//! from a certificate pinned on first use, fails typed; redirects in a loop
//! fail typed once the connect deadline has passed.

mod support;

use missive::core::client::ClientEvent;
use missive::core::server::ServerConfig;
use missive::core::wire::{
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION, ServerPacket, WireLimits, encode_frame,
};
use missive::store::MemoryStore;
use missive_runtime::client::ConnectError;
use missive_runtime::driver::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use missive_runtime::driver::{
    self, BoundServer, ClientHandle, Connector, KnownServers, Listener, ReadHalf, TcpConnector,
    TlsConnector, TlsListener, Transport, WriteHalf, listen_tcp, pinning_client_config, rustls,
};
use missive_runtime::session::MAX_REDIRECTS;
use missive_tokio::Tokio;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::opts;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A certificate authority and the certificates it issues.
struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Authority {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// The roots a client given this CA (`missive --ca`) trusts.
    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }

    /// A server configuration with a certificate for `host` issued by this
    /// CA.
    fn issue(&self, host: &str) -> Arc<rustls::ServerConfig> {
        let params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        server_config(cert.der().clone(), key)
    }
}

fn server_config(cert: CertificateDer<'static>, key: rcgen::KeyPair) -> Arc<rustls::ServerConfig> {
    driver::server_config(vec![cert], PrivateKeyDer::Pkcs8(key.serialize_der().into())).unwrap()
}

/// A self-signed certificate for `host`.
fn self_signed(host: &str) -> Arc<rustls::ServerConfig> {
    let cert = driver::self_signed(vec![host.to_owned()]).unwrap();
    driver::server_config(cert.chain, cert.key).unwrap()
}

/// A node that serves nobody: it answers every client's hello with a
/// welcome and its login (or registration) with a redirect to `to`, then
/// closes. Runs until the runtime stops.
fn redirecting_node<L: Listener>(rt: &tokio::runtime::Runtime, mut listener: L, to: String) {
    rt.spawn(async move {
        loop {
            let Ok((transport, _)) = poll_fn(|cx| listener.poll_accept(cx)).await else {
                continue;
            };
            let (mut reader, mut writer) = transport.split();
            let welcome = ServerPacket::Welcome {
                version: PROTOCOL_VERSION,
                server_id: [1; 16],
                session_id: [2; 16],
                ping_interval_ms: 30_000,
                limits: WireLimits {
                    max_frame: DEFAULT_MAX_FRAME,
                    max_envelope: 64 * 1024,
                    window: 32,
                    handshake_max_frame: Some(16 * 1024),
                },
            };
            let redirect = ServerPacket::Redirect {
                address: to.clone(),
            };
            for answer in [welcome, redirect] {
                // The client's hello, then its login or registration.
                if !matches!(poll_fn(|cx| reader.poll_chunk(cx)).await, Ok(Some(_))) {
                    break;
                }
                let frame = encode_frame(&answer, DEFAULT_MAX_FRAME).unwrap();
                if writer.write_batch(&[frame]).await.is_err() {
                    break;
                }
            }
            let _ = writer.close().await;
        }
    });
}

/// A real server (memory store) on `host`, plaintext or with `tls`.
fn real_server(
    rt: &tokio::runtime::Runtime,
    host: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> SocketAddr {
    let addr = format!("{host}:0");
    match tls {
        Some(tls) => {
            let server = rt
                .block_on(BoundServer::<Tokio, _>::bind_tls(
                    addr,
                    tls,
                    ServerConfig::default(),
                    Box::new(MemoryStore::new()),
                    Default::default(),
                ))
                .unwrap();
            let local = server.local_addr();
            rt.spawn(server.serve());
            local
        }
        None => {
            let server = rt
                .block_on(BoundServer::<Tokio>::bind(
                    addr,
                    ServerConfig::default(),
                    Box::new(MemoryStore::new()),
                ))
                .unwrap();
            let local = server.local_addr();
            rt.spawn(server.serve());
            local
        }
    }
}

/// A plaintext redirecting node on 127.0.0.1 redirecting to `to`.
fn plaintext_node(
    rt: &tokio::runtime::Runtime,
    to: impl FnOnce(SocketAddr) -> String,
) -> SocketAddr {
    let listener = rt.block_on(listen_tcp::<Tokio>("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    redirecting_node(rt, listener, to(addr));
    addr
}

/// A TLS redirecting node on 127.0.0.1 with `tls`, redirecting to `to`.
fn tls_node(
    rt: &tokio::runtime::Runtime,
    tls: Arc<rustls::ServerConfig>,
    to: SocketAddr,
) -> SocketAddr {
    let listener = rt.block_on(listen_tcp::<Tokio>("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    redirecting_node(
        rt,
        TlsListener::<Tokio, _>::new(listener, tls),
        to.to_string(),
    );
    addr
}

/// Connects alice to `first` through `connector`; on success returns the
/// address her client was redirected to (from its events).
fn connect<C: Connector>(
    rt: &tokio::runtime::Runtime,
    connector: C,
    first: SocketAddr,
    home: &std::path::Path,
) -> Result<String, ConnectError> {
    let mut options = opts(first, home, "alice", 0).client_options();
    // A loop of redirects is retried (after a pause) until this deadline.
    options.connect_timeout = Duration::from_secs(2);
    rt.block_on(async {
        let (client, mut events) = tokio::time::timeout(
            Duration::from_secs(20),
            ClientHandle::<Tokio, C>::connect_with(connector, options),
        )
        .await
        .expect("the connect ends in bounded time")?;
        let mut redirected = None;
        while let Ok(Some(event)) = events.try_recv() {
            if let ClientEvent::Redirected { address } = event {
                redirected = Some(address);
            }
        }
        client.close().await.unwrap();
        Ok(redirected.expect("a redirect event"))
    })
}

#[test]
fn a_redirect_is_followed_to_the_node_serving_the_user() {
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    let node = real_server(&rt, "127.0.0.2", None);
    let first = plaintext_node(&rt, |_| node.to_string());
    let landed = connect(&rt, TcpConnector::<Tokio>::default(), first, home.path()).unwrap();
    assert_eq!(
        landed,
        node.to_string(),
        "logged in where the redirect said"
    );
}

#[test]
fn redirects_in_a_loop_fail_typed() {
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    // The node redirects to itself, again and again.
    let first = plaintext_node(&rt, |own| own.to_string());
    match connect(&rt, TcpConnector::<Tokio>::default(), first, home.path()) {
        Err(ConnectError::RedirectLoop { last, redirects }) => {
            assert_eq!(last, first.to_string());
            assert_eq!(redirects, MAX_REDIRECTS);
        }
        other => panic!("expected a redirect loop, got {other:?}"),
    }
}

#[test]
fn with_the_cluster_ca_a_redirected_node_is_verified_like_the_first() {
    let rt = rt();
    let ca = Authority::new();
    let client = |first: SocketAddr, home: &tempfile::TempDir| {
        let known = KnownServers::new(home.path().join("known_servers"));
        let config = pinning_client_config(&first.to_string(), ca.roots(), known).unwrap();
        TlsConnector::<Tokio>::new(config)
    };
    // A node with a certificate of the CA for its address: followed.
    let home = tempfile::tempdir().unwrap();
    let node = real_server(&rt, "127.0.0.2", Some(ca.issue("127.0.0.2")));
    let first = tls_node(&rt, ca.issue("127.0.0.1"), node);
    let landed = connect(&rt, client(first, &home), first, home.path()).unwrap();
    assert_eq!(landed, node.to_string());

    // A node whose certificate the CA did not issue: refused, typed.
    let home = tempfile::tempdir().unwrap();
    let stranger = real_server(&rt, "127.0.0.2", Some(self_signed("127.0.0.2")));
    let first = tls_node(&rt, ca.issue("127.0.0.1"), stranger);
    match connect(&rt, client(first, &home), first, home.path()) {
        Err(error @ ConnectError::UntrustedRedirect { .. }) => {
            assert!(error.to_string().contains(&stranger.to_string()), "{error}");
        }
        other => panic!("expected an untrusted redirect, got {other:?}"),
    }
}

#[test]
fn a_pinned_self_signed_certificate_is_never_extended_to_another_node() {
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    let known = KnownServers::new(home.path().join("known_servers"));
    let node = real_server(&rt, "127.0.0.2", Some(self_signed("127.0.0.2")));
    let first = tls_node(&rt, self_signed("127.0.0.1"), node);
    let config = pinning_client_config(
        &first.to_string(),
        rustls::RootCertStore::empty(),
        known.clone(),
    )
    .unwrap();
    match connect(&rt, TlsConnector::<Tokio>::new(config), first, home.path()) {
        Err(ConnectError::UntrustedRedirect { to, .. }) => assert_eq!(to, node.to_string()),
        other => panic!("expected an untrusted redirect, got {other:?}"),
    }
    assert!(
        known.pinned(&first.to_string()).unwrap().is_some(),
        "the first node's own certificate was pinned on first use"
    );
    assert_eq!(
        known.pinned(&node.to_string()).unwrap(),
        None,
        "no pin for the other node"
    );
}
