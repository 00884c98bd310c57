//! The tokio server and client library over real loopback TCP.

mod common;

use common::{TestServer, identities, next_event, next_message, options, user};
use missive_core::client::{
    Client, ClientConfig, ClientEvent, ClientInput, ClientOutput, ClientState, LoginError,
    Registration, SendFailure,
};
use missive_core::server::ServerConfig;
use missive_core::wire::{ErrorCode, FrameDecoder, ServerPacket};
use missive_store::{MemoryStore, RedbStore};
use missive_tokio::{
    ClientHandle, ConnectError, PresenceError, QueueLimits, SendError, ServerOptions,
};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

fn memory() -> Box<MemoryStore> {
    Box::new(MemoryStore::new())
}

#[tokio::test]
async fn register_once_then_login() {
    let server = TestServer::start(ServerConfig::default(), memory()).await;
    let home = tempfile::tempdir().unwrap();

    let (alice, _events) = ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
        .await
        .unwrap();
    assert!(alice.login().registered, "first connection registers");
    assert_eq!(
        alice.fingerprint(),
        identities()[0].public_key().fingerprint()
    );
    alice.close().await.unwrap();

    let mut opts = options(server.addr, home.path(), "alice", 0);
    opts.registration = Registration::Never;
    let (alice, _events) = ClientHandle::connect(opts).await.unwrap();
    assert!(
        !alice.login().registered,
        "registration skipped when already done"
    );
    assert_eq!(alice.login().queued, 0);
    alice.close().await.unwrap();

    let users = server
        .handle
        .inspect(|s| s.state().user_count())
        .await
        .unwrap();
    assert_eq!(users, 1);
    server.stop().await;
}

#[tokio::test]
async fn unknown_user_without_registration_is_refused() {
    let server = TestServer::start(ServerConfig::default(), memory()).await;
    let home = tempfile::tempdir().unwrap();
    let mut opts = options(server.addr, home.path(), "nobody", 1);
    opts.registration = Registration::Never;
    match ClientHandle::connect(opts).await {
        Err(ConnectError::Login(LoginError::NotRegistered { user })) => {
            assert_eq!(user.as_str(), "nobody")
        }
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    // Another key cannot use a registered name: the client logs in first,
    // and the signature does not verify under the registered key.
    let (alice, _e) = ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
        .await
        .unwrap();
    alice.close().await.unwrap();
    let other_home = tempfile::tempdir().unwrap();
    match ClientHandle::connect(options(server.addr, other_home.path(), "alice", 1)).await {
        Err(ConnectError::Login(LoginError::SignatureRejected { user })) => {
            assert_eq!(user.as_str(), "alice")
        }
        other => panic!("expected SignatureRejected, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn unreachable_server() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    match ClientHandle::connect(options(port, home.path(), "alice", 0)).await {
        Err(ConnectError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn online_delivery_and_notice() {
    let server = TestServer::start(ServerConfig::default(), memory()).await;
    let home = tempfile::tempdir().unwrap();
    let (alice, mut alice_events) =
        ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
            .await
            .unwrap();
    let (bob, mut bob_events) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();

    let id = alice.send(user("bob"), "hello bob").await.unwrap();
    let (from, text) = next_message(&mut bob_events, T).await;
    assert_eq!((from.as_str(), text.as_str()), ("alice", "hello bob"));
    let delivered = next_event(&mut alice_events, T, |e| match e {
        ClientEvent::Delivered { to, id } => Some((to, id)),
        _ => None,
    })
    .await;
    assert_eq!(delivered, (user("bob"), id));
    // Keys were pinned on first use.
    assert_eq!(
        alice.pinned_fingerprint(user("bob")).await,
        Some(identities()[1].public_key().fingerprint())
    );
    assert_eq!(
        bob.pinned_fingerprint(user("alice")).await,
        Some(identities()[0].public_key().fingerprint())
    );
    // Replies flow the other way too.
    bob.send(user("alice"), "hi alice").await.unwrap();
    let (from, text) = next_message(&mut alice_events, T).await;
    assert_eq!((from.as_str(), text.as_str()), ("bob", "hi alice"));

    match alice.send(user("carol"), "anyone?").await {
        Err(SendError::Refused {
            to,
            reason: SendFailure::UnknownUser,
        }) => assert_eq!(to, user("carol")),
        other => panic!("expected UnknownUser, got {other:?}"),
    }
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn offline_queue_then_delivery_and_acks_empty_the_server() {
    let server = TestServer::start(ServerConfig::default(), memory()).await;
    let home = tempfile::tempdir().unwrap();
    let (bob, _e) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    bob.close().await.unwrap();

    let (alice, mut alice_events) =
        ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
            .await
            .unwrap();
    for i in 0..3 {
        alice
            .send(user("bob"), format!("message {i}"))
            .await
            .unwrap();
    }
    assert_eq!(server.queued().await, 3, "queued while bob is offline");

    let (bob, mut bob_events) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    assert_eq!(bob.login().queued, 3);
    for i in 0..3 {
        let (from, text) = next_message(&mut bob_events, T).await;
        assert_eq!(from, "alice");
        assert_eq!(text, format!("message {i}"), "in order");
    }
    // Alice gets three delivered notices and acknowledges them too.
    for _ in 0..3 {
        next_event(&mut alice_events, T, |e| {
            matches!(e, ClientEvent::Delivered { .. }).then_some(())
        })
        .await;
    }
    server
        .wait_for("empty mailboxes", T, |s| s.state().queued_items() == 0)
        .await;
    bob.close().await.unwrap();
    alice.close().await.unwrap();
    server.stop().await;
}

/// Issue #10, defect 3, end to end: with a 2 s TTL the sender hears
/// `expired` within 1 s of the deadline (the periodic check took up to a
/// minute), and the recipient logging in afterwards gets nothing.
#[tokio::test]
async fn a_short_ttl_expires_on_time() {
    let ttl = Duration::from_secs(2);
    let mut config = ServerConfig::default();
    config.message_ttl = ttl;
    let server = TestServer::start(config, memory()).await;
    let home = tempfile::tempdir().unwrap();
    let (bob, _e) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    bob.close().await.unwrap();
    let (alice, mut alice_events) =
        ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
            .await
            .unwrap();
    let before_send = Instant::now();
    let id = alice.send(user("bob"), "too late").await.unwrap();
    let accepted = Instant::now();
    let expired = next_event(
        &mut alice_events,
        ttl + Duration::from_secs(1),
        |e| match e {
            ClientEvent::Expired { to, id } => Some((to, id)),
            ClientEvent::Delivered { .. } => panic!("delivered to an offline user"),
            _ => None,
        },
    )
    .await;
    let elapsed = before_send.elapsed();
    assert_eq!(expired, (user("bob"), id));
    // The deadline is counted in whole milliseconds of the server's clock.
    assert!(
        elapsed + Duration::from_millis(1) >= ttl,
        "expired {elapsed:?} after the send, before the {ttl:?} TTL"
    );
    assert!(
        accepted.elapsed() <= ttl + Duration::from_secs(1),
        "expired {:?} after acceptance",
        accepted.elapsed()
    );
    let (bob, _e) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    assert_eq!(bob.login().queued, 0, "nothing left for bob");
    bob.close().await.unwrap();
    alice.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn restart_with_redb_keeps_keys_and_queued_messages() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = TestServer::start_redb(data.path()).await;
    let (bob, _e) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    bob.close().await.unwrap();
    let (alice, _e) = ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
        .await
        .unwrap();
    alice
        .send(user("bob"), "kept across restarts")
        .await
        .unwrap();
    alice.close().await.unwrap();
    let report = server.stop().await;
    assert!(
        report.store.commands >= 4,
        "server id, two users, one message"
    );

    let server = TestServer::start_redb(data.path()).await;
    assert_eq!(server.queued().await, 1);
    let mut opts = options(server.addr, home.path(), "bob", 1);
    opts.registration = Registration::Never; // the key survived
    let (bob, mut bob_events) = ClientHandle::connect(opts).await.unwrap();
    assert_eq!(bob.login().queued, 1);
    let (from, text) = next_message(&mut bob_events, T).await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        ("alice", "kept across restarts")
    );
    bob.close().await.unwrap();
    server
        .wait_for("bob's mailbox empty", T, |s| {
            s.state()
                .user(&user("bob"))
                .unwrap()
                .mailbox
                .items
                .is_empty()
        })
        .await;
    server.stop().await;
}

/// Logs `name` in with the bare core client and returns the open socket;
/// after that nothing is sent on it (no pings).
async fn silent_login(addr: std::net::SocketAddr, name: &str, key: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut client = Client::new(
        ClientConfig::new(user(name)),
        identities()[key].clone(),
        ClientState::default(),
        [9; 32],
        Instant::now(),
        1_700_000_000_000,
    );
    client.handle_input(
        Instant::now(),
        ClientInput::Connected(missive_core::wire::Link::PLAINTEXT),
    );
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(output) = client.poll_output() {
            match output {
                ClientOutput::Transmit(bytes) => stream.write_all(&bytes).await.unwrap(),
                ClientOutput::Event(ClientEvent::LoggedIn { .. }) => return stream,
                ClientOutput::Close => panic!("closed during login"),
                _ => {}
            }
        }
        let n = tokio::time::timeout(T, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "server closed during login");
        client.handle_input(Instant::now(), ClientInput::Bytes(&buf[..n]));
    }
}

/// Reads until the server closes; returns the error codes it sent.
async fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<ErrorCode> {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(timeout, stream.read(&mut buf))
            .await
            .expect("the server did not close the connection")
            .unwrap_or(0);
        if n == 0 {
            return codes;
        }
        decoder.push(&buf[..n]);
        while let Some(packet) = decoder.next_packet::<ServerPacket>().unwrap() {
            if let ServerPacket::Error { code, .. } = packet {
                codes.push(code);
            }
        }
    }
}

#[tokio::test]
async fn presence_goes_offline_after_missed_pings() {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_millis(100);
    config.missed_pings = 3;
    // The core re-arms a connection's timer with the liveness deadline only
    // when the handshake deadline fires, so keep that one short too.
    config.handshake_timeout = Duration::from_millis(500);
    let server = TestServer::start(config, memory()).await;
    let home = tempfile::tempdir().unwrap();
    let (bob, _e) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    bob.close().await.unwrap();
    let (alice, _alice_events) =
        ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
            .await
            .unwrap();

    let mut silent = silent_login(server.addr, "bob", 1).await;
    let presence = alice.query_presence(user("bob")).await.unwrap();
    assert!(presence.online);
    // Alice's client keeps pinging: she stays online meanwhile.
    let started = Instant::now();
    let codes = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(codes.contains(&ErrorCode::Timeout), "got {codes:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let presence = alice.query_presence(user("bob")).await.unwrap();
    assert!(!presence.online);
    assert!(presence.last_seen_ms.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        server
            .handle
            .inspect(|s| s.is_online(&user("alice")))
            .await
            .unwrap(),
        "automatic pings keep alice online"
    );
    match alice.query_presence(user("nobody")).await {
        Err(PresenceError::UnknownUser(u)) => assert_eq!(u, user("nobody")),
        other => panic!("expected UnknownUser, got {other:?}"),
    }
    alice.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn unauthenticated_connection_is_closed_at_the_handshake_deadline() {
    let mut config = ServerConfig::default();
    config.handshake_timeout = Duration::from_millis(200);
    let server = TestServer::start(config, memory()).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let codes = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(codes, vec![ErrorCode::Timeout]);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(180) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    server
        .wait_for("no connection left", T, |s| s.connection_count() == 0)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn reconnects_and_resends_the_outbox() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = TestServer::start_redb(data.path()).await;
    let addr = server.addr;
    let (bob, _e) = ClientHandle::connect(options(addr, home.path(), "bob", 1))
        .await
        .unwrap();
    bob.close().await.unwrap();
    let (alice, mut alice_events) = ClientHandle::connect(options(addr, home.path(), "alice", 0))
        .await
        .unwrap();
    alice.send(user("bob"), "before").await.unwrap();
    server.stop().await;
    next_event(&mut alice_events, T, |e| {
        matches!(e, ClientEvent::Disconnected).then_some(())
    })
    .await;

    // Sent while the server is down: waits in the outbox.
    let pending = alice.send(user("bob"), "during the outage");
    let restart = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        TestServer::start_on(
            &addr.to_string(),
            ServerConfig::default(),
            Box::new(RedbStore::open(data.path()).unwrap()),
        )
        .await
    };
    let (sent, server) = tokio::join!(tokio::time::timeout(T, pending), restart);
    sent.expect("accepted after the reconnection").unwrap();
    assert_eq!(server.queued().await, 2);
    alice.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_dropped_and_keeps_its_messages() {
    const BATCH: usize = 20;
    const MAX_MESSAGES: usize = 600;
    const BODY: usize = 64 * 1024;
    let mut config = ServerConfig::default();
    config.queue_max_bytes = 256 * 1024 * 1024;
    config.queue_max_messages = MAX_MESSAGES as u32;
    config.sender_share_percent = 100;
    let mut server_options = ServerOptions::default();
    server_options.queue = QueueLimits::new(64, 256 * 1024);
    let server = TestServer::start_with("127.0.0.1:0", config, memory(), server_options).await;
    let home = tempfile::tempdir().unwrap();
    let (bob, _e) = ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
        .await
        .unwrap();
    bob.close().await.unwrap();
    // Bob logs in and then never reads.
    let _silent = silent_login(server.addr, "bob", 1).await;
    let (alice, _alice_events) =
        ClientHandle::connect(options(server.addr, home.path(), "alice", 0))
            .await
            .unwrap();
    let alice = std::sync::Arc::new(alice);
    // Send until the kernel's socket buffers and the outbound queue are
    // full and the server drops bob.
    let mut sent = 0;
    while server.handle.stats().await.unwrap().slow_consumers == 0 {
        assert!(sent < MAX_MESSAGES, "bob was never dropped");
        let mut sends = tokio::task::JoinSet::new();
        for i in sent..sent + BATCH {
            let alice = std::sync::Arc::clone(&alice);
            sends.spawn(async move {
                alice
                    .send(user("bob"), vec![b'x'.wrapping_add(i as u8); BODY])
                    .await
            });
        }
        while let Some(result) = sends.join_next().await {
            result.unwrap().unwrap();
        }
        sent += BATCH;
        // Let the writer block and the queue fill.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !server
            .handle
            .inspect(|s| s.is_online(&user("bob")))
            .await
            .unwrap()
    );
    println!("slow consumer dropped after {sent} messages of {BODY} bytes");
    // Nothing was acknowledged: everything is still queued for bob.
    let queued = server
        .handle
        .inspect(|s| s.state().user(&user("bob")).unwrap().mailbox.items.len())
        .await
        .unwrap();
    assert_eq!(queued, sent);
    std::sync::Arc::try_unwrap(alice)
        .unwrap()
        .close()
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn garbage_gets_an_error_frame_before_the_close() {
    let server = TestServer::start(ServerConfig::default(), memory()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // A frame holding something that is not a packet, then more junk the
    // server will never read: the error frame still arrives (no reset).
    let mut junk = vec![0, 0, 0, 3, 0xff, 0xff, 0xff];
    junk.extend(std::iter::repeat_n(0x55, 100_000));
    stream.write_all(&junk).await.unwrap();
    // Read late, after the server has closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let codes = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(codes, vec![ErrorCode::Malformed]);
    server.stop().await;
}
