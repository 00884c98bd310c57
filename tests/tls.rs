//! TLS refusals and failures, on real loopback sockets (tokio driver): a
//! certificate with the wrong name or expired is refused by default, a
//! changed pinned certificate is refused (typed), a plaintext client on the
//! TLS port and a TLS client on a plaintext port fail cleanly and in bounded
//! time, a handshake that dribbles is cut at the handshake deadline, and
//! both ends see the same channel binding.

mod support;

use missive::core::server::ServerConfig;
use missive::store::MemoryStore;
use missive_runtime::client::ConnectError;
use missive_runtime::driver::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use missive_runtime::driver::{
    self, BoundServer, ByteStream, ClientHandle, Connector, KnownServers, Listener, Runtime,
    TcpConnector, TlsConnector, TlsListener, certificate_fingerprint, pinning_client_config,
    rustls,
};
use missive_tokio::Tokio;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{opts, tls};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A self-signed certificate for `names`, valid from `not_before` to
/// `not_after` (years).
fn certificate(
    names: &[&str],
    years: Option<(i32, i32)>,
) -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    if let Some((from, to)) = years {
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().clone();
    let config = driver::server_config(
        vec![der.clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (der, config)
}

/// A TLS server with `config` on a fresh loopback port; its handle stops it
/// when dropped with the runtime.
fn tls_server(rt: &tokio::runtime::Runtime, config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let server = bind_tls_server(rt, config, "127.0.0.1:0".parse().unwrap());
    let addr = server.local_addr();
    rt.spawn(server.serve());
    addr
}

/// A TLS server with `config` and a memory store, bound to `addr`.
fn bind_tls_server(
    rt: &tokio::runtime::Runtime,
    config: Arc<rustls::ServerConfig>,
    addr: SocketAddr,
) -> BoundServer<Tokio, TlsListener<Tokio, <Tokio as Runtime>::TcpListener>> {
    rt.block_on(BoundServer::<Tokio, _>::bind_tls(
        addr,
        config,
        ServerConfig::default(),
        Box::new(MemoryStore::new()),
        Default::default(),
    ))
    .unwrap()
}

fn connect_with<C: Connector>(
    rt: &tokio::runtime::Runtime,
    connector: C,
    addr: SocketAddr,
    home: &std::path::Path,
) -> Result<(), ConnectError> {
    let options = opts(addr, home, "alice", 0).client_options();
    let started = Instant::now();
    let result = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(15),
            ClientHandle::<Tokio, C>::connect_with(connector, options),
        )
        .await
        .expect("the connect must end in bounded time")
    });
    assert!(started.elapsed() < Duration::from_secs(12));
    match result {
        Ok((client, _events)) => {
            rt.block_on(client.close()).unwrap();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn pinning(addr: SocketAddr, known: &KnownServers) -> TlsConnector<Tokio> {
    let config = pinning_client_config(
        &addr.to_string(),
        rustls::RootCertStore::empty(),
        known.clone(),
    )
    .unwrap();
    TlsConnector::new(config)
}

fn assert_bad_certificate(result: Result<(), ConnectError>, what: &str) {
    match result {
        Err(ConnectError::Unreachable { source, .. }) => {
            let tls = source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>());
            assert!(
                matches!(tls, Some(rustls::Error::InvalidCertificate(_))),
                "{what}: {source}"
            );
        }
        other => panic!("{what}: expected a refused certificate, got {other:?}"),
    }
}

#[test]
fn wrong_name_and_expired_certificates_are_refused_even_on_first_use() {
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    for (what, names, years) in [
        ("wrong name", &["example.invalid"][..], None),
        ("expired", &["127.0.0.1"][..], Some((2000, 2001))),
    ] {
        let (der, config) = certificate(names, years);
        let addr = tls_server(&rt, config);
        let known = KnownServers::new(home.path().join("known_servers"));
        assert_bad_certificate(
            connect_with(&rt, pinning(addr, &known), addr, home.path()),
            what,
        );
        assert_eq!(known.pinned(&addr.to_string()).unwrap(), None, "{what}");
        // Trusting it as a certificate authority does not help either.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let connector = TlsConnector::<Tokio>::new(driver::client_config(roots).unwrap());
        assert_bad_certificate(connect_with(&rt, connector, addr, home.path()), what);
    }
}

#[test]
fn a_changed_pinned_certificate_is_refused_typed() {
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    let known = KnownServers::new(home.path().join("known_servers"));
    let (first, config) = certificate(&["127.0.0.1"], None);
    let addr = tls_server(&rt, config);
    connect_with(&rt, pinning(addr, &known), addr, home.path()).unwrap();
    let pinned = certificate_fingerprint(&first);
    assert_eq!(
        known.pinned(&addr.to_string()).unwrap().as_deref(),
        Some(pinned.as_str())
    );

    // Another certificate behind the same address.
    let (second, config) = certificate(&["127.0.0.1"], None);
    let other = tls_server(&rt, config);
    known.pin(&other.to_string(), &pinned).unwrap();
    match connect_with(&rt, pinning(other, &known), other, home.path()) {
        Err(ConnectError::ServerCertificateChanged(changed)) => {
            assert_eq!(changed.pinned, pinned);
            assert_eq!(changed.presented, certificate_fingerprint(&second));
            assert!(
                !ConnectError::ServerCertificateChanged(changed)
                    .to_string()
                    .is_empty()
            );
        }
        other => panic!("expected ServerCertificateChanged, got {other:?}"),
    }
    // The pin is kept.
    assert_eq!(
        known.pinned(&other.to_string()).unwrap().as_deref(),
        Some(pinned.as_str())
    );
}

/// A client that is running when the server comes back with another
/// certificate does not retry forever in silence: it stops, and
/// `Events::gave_up` says why, typed.
#[test]
fn a_certificate_changed_while_reconnecting_stops_the_client_typed() {
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    let known = KnownServers::new(home.path().join("known_servers"));
    let (first, config) = certificate(&["127.0.0.1"], None);
    let server = bind_tls_server(&rt, config, "127.0.0.1:0".parse().unwrap());
    let addr = server.local_addr();
    let control = server.handle();
    let serving = rt.spawn(server.serve());
    let options = opts(addr, home.path(), "alice", 0).client_options();
    let (client, mut events) = rt
        .block_on(ClientHandle::<Tokio, _>::connect_with(
            pinning(addr, &known),
            options,
        ))
        .unwrap();

    // The server stops; another one, with another certificate, takes its
    // address.
    control.shutdown();
    rt.block_on(serving).unwrap().unwrap();
    let (second, config) = certificate(&["127.0.0.1"], None);
    rt.spawn(bind_tls_server(&rt, config, addr).serve());

    let ended = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            while events.recv().await.is_some() {}
        })
        .await
    });
    assert!(ended.is_ok(), "the client must stop, not retry forever");
    match events.gave_up() {
        Some(ConnectError::ServerCertificateChanged(changed)) => {
            assert_eq!(changed.pinned, certificate_fingerprint(&first));
            assert_eq!(changed.presented, certificate_fingerprint(&second));
        }
        other => panic!("expected ServerCertificateChanged, got {other:?}"),
    }
    rt.block_on(client.close()).unwrap();
}

#[test]
fn plaintext_client_on_tls_port_and_tls_client_on_plaintext_port_fail_cleanly() {
    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    let addr = tls_server(&rt, Arc::clone(&tls().0));
    assert!(connect_with(&rt, TcpConnector::<Tokio>::default(), addr, home.path()).is_err());
    // The server still serves TLS clients.
    let connector = TlsConnector::<Tokio>::new(Arc::clone(&tls().1));
    connect_with(&rt, connector, addr, home.path()).unwrap();

    let plain = rt
        .block_on(missive_tokio::BoundServer::bind(
            "127.0.0.1:0",
            ServerConfig::default(),
            Box::new(MemoryStore::new()),
        ))
        .unwrap();
    let plain_addr = plain.local_addr();
    rt.spawn(plain.serve());
    let connector = TlsConnector::<Tokio>::new(Arc::clone(&tls().1));
    assert!(connect_with(&rt, connector, plain_addr, home.path()).is_err());
}

#[test]
fn a_dribbling_handshake_is_cut_at_the_deadline() {
    let rt = rt();
    let deadline = Duration::from_millis(500);
    let server = rt
        .block_on(async {
            let tcp = Tokio::listen_tcp("127.0.0.1:0".parse().unwrap()).await?;
            let listener = TlsListener::<Tokio, _>::new(tcp, Arc::clone(&tls().0))
                .with_handshake_timeout(deadline);
            BoundServer::<Tokio, _>::with_listener(
                listener,
                ServerConfig::default(),
                Box::new(MemoryStore::new()),
                Default::default(),
            )
            .await
            .map_err(std::io::Error::other)
        })
        .unwrap();
    let addr = server.local_addr();
    rt.spawn(server.serve());

    // A ClientHello record header, then one byte every 100 ms.
    let mut dribbler = TcpStream::connect(addr).unwrap();
    dribbler
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    dribbler.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let started = Instant::now();
    let closed = loop {
        assert!(
            started.elapsed() < deadline * 6,
            "the dribbling handshake was not cut"
        );
        // A write may fail once the server is gone; the read tells.
        let _ = dribbler.write_all(&[0x01]);
        let mut buf = [0u8; 64];
        match dribbler.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break started.elapsed(),
            // Still open (the read timed out), or an alert before the close.
            Ok(_) | Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        closed >= deadline - Duration::from_millis(100),
        "{closed:?}"
    );
}

#[test]
fn both_ends_see_the_same_channel_binding() {
    let rt = rt();
    let (server_binding, client_binding) = rt.block_on(async {
        let tcp = Tokio::listen_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut listener = TlsListener::<Tokio, _>::new(tcp, Arc::clone(&tls().0));
        let addr = listener.local_addr().unwrap();
        let connector = TlsConnector::<Tokio>::new(Arc::clone(&tls().1));
        let client = tokio::spawn(connector.connect(&addr.to_string()));
        let (accepted, _) = std::future::poll_fn(|cx| listener.poll_accept(cx))
            .await
            .unwrap();
        let connected = client.await.unwrap().unwrap();
        assert!(connected.peer_certificate().is_some());
        assert!(accepted.peer_certificate().is_none());
        (accepted.exporter_value(), connected.exporter_value())
    });
    assert_eq!(server_binding, client_binding);
    assert_ne!(server_binding, [0; 32]);
}

#[test]
fn a_flood_of_handshakes_does_not_starve_established_sessions() {
    use support::{Security, ServerDriver};
    let driver = support::Tokio(Security::Tls);
    let sd: &dyn ServerDriver = &driver;
    let cd: &dyn support::ClientDriver = &driver;
    let server = sd.start(ServerConfig::default(), Box::new(MemoryStore::new()));
    let home = tempfile::tempdir().unwrap();
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    let mut bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));

    // 1,000 connections that start a handshake and never finish it.
    let flood: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr()).unwrap();
            stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    let id = alice.send("bob", "through the flood").unwrap();
    let (_, got, text) = bob.expect_message();
    assert_eq!((got, text.as_str()), (id, "through the flood"));
    assert!(alice.query_presence("bob").unwrap().online);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    // And a new client still gets in.
    let carol_home = tempfile::tempdir().unwrap();
    let carol = cd.client(&opts(server.addr(), carol_home.path(), "carol", 2));
    drop(flood);
    carol.close();
    alice.close();
    bob.close();
    server.stop();
}

/// The attack channel binding exists for (issue 11): a man in the middle
/// terminates TLS with a certificate the victim was made to trust (the
/// test's own CA here) and relays every byte to the real server over its
/// own TLS session. The victim's login signature covers the victim-to-relay
/// exporter value, the server checks it against the relay-to-server value
/// it computed itself: the relayed login fails with `AuthFailed`, and the
/// server closes the relay's connection.
#[test]
fn a_login_relayed_through_a_tls_man_in_the_middle_fails() {
    use futures_util::io::{AsyncReadExt, AsyncWriteExt};
    use missive::core::client::LoginError;

    let rt = rt();
    let home = tempfile::tempdir().unwrap();
    // The real server, with its own certificate; alice registers directly.
    let (server_cert, server_config) = certificate(&["127.0.0.1"], None);
    let server = tls_server(&rt, server_config);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert).unwrap();
    let to_server = driver::client_config(roots).unwrap();
    connect_with(
        &rt,
        TlsConnector::<Tokio>::new(Arc::clone(&to_server)),
        server,
        home.path(),
    )
    .expect("a direct login works");

    // The relay presents the certificate the victim trusts (tls()).
    let (relay_addr, server_closed) = rt.block_on(async {
        let tcp = Tokio::listen_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut listener = TlsListener::<Tokio, _>::new(tcp, Arc::clone(&tls().0));
        let addr = listener.local_addr().unwrap();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            let (victim, _) = std::future::poll_fn(|cx| listener.poll_accept(cx))
                .await
                .unwrap();
            let upstream = TlsConnector::<Tokio>::new(to_server)
                .connect(&server.to_string())
                .await
                .unwrap();
            let (mut victim_in, mut victim_out) = ByteStream::split(victim);
            let (mut server_in, mut server_out) = ByteStream::split(upstream);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = victim_in.read(&mut buf).await {
                    if server_out.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = server_in.read(&mut buf).await {
                if victim_out.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            // The server ended the relayed session.
            let _ = closed_tx.send(());
            let _ = victim_out.close().await;
        });
        (addr, closed_rx)
    });

    let relayed = connect_with(
        &rt,
        TlsConnector::<Tokio>::new(Arc::clone(&tls().1)),
        relay_addr,
        home.path(),
    );
    assert!(
        matches!(
            relayed,
            Err(ConnectError::Login(LoginError::SignatureRejected { .. }))
        ),
        "the relayed login must fail: {relayed:?}"
    );
    server_closed
        .recv_timeout(Duration::from_secs(10))
        .expect("the server closes the relayed connection");
}

/// A handshake that fails (not TLS) is counted in the server's metrics, and
/// a TLS client's connection is counted as `tls`.
#[test]
fn failed_handshakes_and_tls_connections_are_counted() {
    let rt = rt();
    let metrics = missive_runtime::Metrics::new();
    let mut options = missive_runtime::serve::ServerOptions::default();
    options.metrics = metrics.clone();
    let server = rt
        .block_on(BoundServer::<Tokio, _>::bind_tls(
            "127.0.0.1:0",
            Arc::clone(&tls().0),
            ServerConfig::default(),
            Box::new(MemoryStore::new()),
            options,
        ))
        .unwrap();
    let addr = server.local_addr();
    rt.spawn(server.serve());
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = plain.read_to_end(&mut Vec::new()); // the server closes it
    let counted = |line: &str| metrics.encode().lines().any(|l| l == line);
    let started = Instant::now();
    while !counted("missive_tls_handshake_failures_total 1") {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{}",
            metrics.encode()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let home = tempfile::tempdir().unwrap();
    let connector = TlsConnector::<Tokio>::new(Arc::clone(&tls().1));
    connect_with(&rt, connector, addr, home.path()).unwrap();
    assert!(
        counted("missive_connections_accepted_total{transport=\"tls\"} 1"),
        "{}",
        metrics.encode()
    );
    assert!(counted("missive_logins_total 1"), "{}", metrics.encode());
    assert!(counted("missive_tls_handshake_failures_total 1"));
}
