//! The async-std server and client over loopback TCP, for what the
//! cross-driver conformance suite (root `tests/conformance.rs`) does not
//! cover: the driver's own API (serve_until, options, stats) and its
//! failure paths.

use async_std::future::timeout;
use async_std::io::{ReadExt, WriteExt};
use async_std::net::TcpStream;
use async_std::task;
use missive_async_std::{
    BoundServer, ClientHandle, ClientHome, ClientOptions, ConnectError, ServerOptions,
};
use missive_core::client::ClientEvent;
use missive_core::crypto::Identity;
use missive_core::server::ServerConfig;
use missive_core::{UserName, rng};
use missive_store::MemoryStore;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn identities() -> &'static [Identity; 2] {
    static KEYS: OnceLock<[Identity; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        std::array::from_fn(|i| {
            Identity::generate(&mut rng::from_seed([i as u8 + 60; 32]), 2048).expect("keygen")
        })
    })
}

fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

fn options(addr: SocketAddr, home: &Path, name: &str, key: usize) -> ClientOptions {
    let user_home = ClientHome::new(home).user(&user(name));
    if !user_home.has_identity() {
        user_home.save_identity(&identities()[key]).unwrap();
    }
    let mut options = ClientOptions::new(addr.to_string(), home, user(name));
    options.generate_key = false;
    options.backoff_initial = Duration::from_millis(50);
    options
}

/// `serve_until` stops when its future resolves, and reports what it did.
#[test]
fn serve_until_a_signal_and_report() {
    task::block_on(async {
        let server = BoundServer::bind(
            "127.0.0.1:0",
            ServerConfig::default(),
            Box::new(MemoryStore::new()),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let (stop_tx, stop_rx) = futures_channel::oneshot::channel::<()>();
        let serving = task::spawn(server.serve_until(async {
            let _ = stop_rx.await;
        }));

        let home = tempfile::tempdir().unwrap();
        let (alice, mut events) = ClientHandle::connect(options(addr, home.path(), "alice", 0))
            .await
            .unwrap();
        assert!(alice.login().registered);
        assert_eq!(alice.user(), &user("alice"));
        let id = alice.send(user("alice"), "note to self").await.unwrap();
        let got = timeout(T, async {
            loop {
                match events.recv().await {
                    Some(ClientEvent::MessageReceived { id, body, .. }) => return (id, body),
                    Some(_) => {}
                    None => panic!("client stopped"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, (id, b"note to self".to_vec()));
        let stats = handle.stats().await.unwrap();
        assert_eq!(stats.accepted, 1);
        assert_eq!(handle.inspect(|s| s.state().user_count()).await, Some(1));

        // The server stops while the client is connected: it is told, and
        // reconnects in vain until closed.
        stop_tx.send(()).unwrap();
        let report = timeout(T, serving).await.unwrap().unwrap();
        assert!(report.store.commands >= 2, "server id, alice, the message");
        assert!(report.engine.accepted >= 1);
        assert_eq!(handle.stats().await, None, "stopped");
        alice.close().await.unwrap();
    });
}

/// A server that is not there: the connect fails at once.
#[test]
fn unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let result = task::block_on(ClientHandle::connect(options(
        port,
        home.path(),
        "alice",
        0,
    )));
    match result {
        Err(ConnectError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

/// A connection that never logs in is closed at the handshake deadline;
/// connections beyond the limit are closed at once.
#[test]
fn handshake_deadline_and_connection_limit() {
    task::block_on(async {
        let mut config = ServerConfig::default();
        config.handshake_timeout = Duration::from_millis(200);
        let mut opts = ServerOptions::default();
        opts.max_connections = 1;
        let server =
            BoundServer::bind_with("127.0.0.1:0", config, Box::new(MemoryStore::new()), opts)
                .await
                .unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let serving = task::spawn(server.serve());

        let started = Instant::now();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        // Let the server register the first connection before the second.
        while handle.stats().await.unwrap().accepted == 0 {
            task::sleep(Duration::from_millis(5)).await;
        }
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let n = timeout(T, refused.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "over the limit: closed without a word");

        let mut received = Vec::new();
        timeout(T, idle.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        assert!(!received.is_empty(), "the Timeout error frame");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(180), "{elapsed:?}");
        let _ = idle.write_all(b"late").await;

        handle.shutdown();
        timeout(T, serving).await.unwrap().unwrap();
    });
}

/// `GET path` on `addr` over async-std: the status code and the body
/// (read up to its `Content-Length`: async-io's close does not end the
/// output at once, see `driver::http`).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = timeout(T, stream.read(&mut buf)).await.unwrap().unwrap();
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            if body.len() >= length {
                return (head[9..12].parse().unwrap(), body.to_owned());
            }
        }
        assert!(n > 0, "the answer ended early: {text}");
    }
}

/// The admin listener on async-std: health, readiness while the server
/// serves, and the metrics of a logged-in connection.
#[test]
fn admin_listener_serves_metrics_and_readiness() {
    use missive_runtime::Metrics;
    use missive_runtime::driver::AdminListener;
    task::block_on(async {
        let metrics = Metrics::new();
        let admin =
            AdminListener::<missive_async_std::AsyncStd>::bind("127.0.0.1:0", metrics.clone())
                .await
                .unwrap();
        let admin_addr = admin.local_addr();
        let admin_task = task::spawn(admin.serve());
        assert_eq!(http_get(admin_addr, "/healthz").await.0, 200);
        assert_eq!(http_get(admin_addr, "/readyz").await.0, 503);

        let mut server_options = ServerOptions::default();
        server_options.metrics = metrics.clone();
        let server = BoundServer::bind_with(
            "127.0.0.1:0",
            ServerConfig::default(),
            Box::new(MemoryStore::new()),
            server_options,
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let serving = task::spawn(server.serve());
        let home = tempfile::tempdir().unwrap();
        let (alice, _events) = ClientHandle::connect(options(addr, home.path(), "alice", 0))
            .await
            .unwrap();
        assert_eq!(
            http_get(admin_addr, "/readyz").await,
            (200, "ready\n".into())
        );
        let (status, text) = http_get(admin_addr, "/metrics").await;
        assert_eq!(status, 200);
        for line in [
            "missive_connections{transport=\"tcp\",state=\"logged_in\"} 1",
            "missive_registrations_total 1",
            "missive_store_available 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        alice.close().await.unwrap();
        handle.shutdown();
        serving.await.unwrap();
        let (status, body) = http_get(admin_addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        admin_task.cancel().await;
    });
}
