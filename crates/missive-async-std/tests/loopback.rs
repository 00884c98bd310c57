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
