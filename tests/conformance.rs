//! The driver conformance suite: every case is written once, as plain
//! synchronous Rust against the harness in `support/`, and runs for every
//! pairing of a server driver and a client driver:
//!
//! | module                  | server    | client    |
//! |-------------------------|-----------|-----------|
//! | `tokio_server_tokio_client`         | tokio     | tokio     |
//! | `tokio_server_async_std_client`     | tokio     | async-std |
//! | `async_std_server_tokio_client`     | async-std | tokio     |
//! | `async_std_server_async_std_client` | async-std | async-std |
//!
//! and each again over TLS 1.3 (the same modules prefixed `tls_`), over
//! WebSocket (`ws_`) and over WebSocket on TLS (`wss_`); bare peers then
//! speak TLS or WebSocket too.
//!
//! Real loopback TCP only (127.0.0.1, port 0).

mod support;

use missive::core::client::{ClientEvent, LoginError, Registration, SendFailure};
use missive::core::server::ServerConfig;
use missive::core::wire::ErrorCode;
use missive::store::{MemoryStore, RedbStore, Store};
use missive_runtime::client::{ConnectError, PresenceError, SendError};
use missive_runtime::serve::ServeError;
use std::io::Write;
use std::time::{Duration, Instant};
use support::{
    ClientDriver, ServerDriver, fingerprint, opts, read_until_closed, silent_login, user,
};

fn memory() -> Box<dyn Store> {
    Box::new(MemoryStore::new())
}

fn redb(dir: &std::path::Path) -> Box<dyn Store> {
    Box::new(RedbStore::open(dir).expect("open the redb store"))
}

/// The first connection registers the user with the client's key.
fn registration(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    let home = tempfile::tempdir().unwrap();
    assert_eq!(server.users(), 0);
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    assert!(alice.login().registered, "the first connection registers");
    assert_eq!(alice.login().queued, 0);
    assert_eq!(alice.fingerprint(), fingerprint(0));
    assert_eq!(server.users(), 1);
    alice.close();
    server.stop();
}

/// A registered user is not registered again; an unknown user without
/// registration is refused.
fn registration_skipped_when_registered(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    let home = tempfile::tempdir().unwrap();
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    assert!(alice.login().registered);
    alice.close();

    // Allowed to register, but it is not needed: the client logs in.
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    assert!(!alice.login().registered, "registration skipped");
    alice.close();
    // Not allowed to register: logs in all the same.
    let mut o = opts(server.addr(), home.path(), "alice", 0);
    o.registration = Registration::Never;
    let alice = cd.client(&o);
    assert!(!alice.login().registered);
    alice.close();
    assert_eq!(server.users(), 1);

    let mut o = opts(server.addr(), home.path(), "nobody", 1);
    o.registration = Registration::Never;
    match cd.connect(&o) {
        Err(ConnectError::Login(LoginError::NotRegistered { user: u })) => {
            assert_eq!(u, user("nobody"))
        }
        Err(e) => panic!("expected NotRegistered, got {e}"),
        Ok(_) => panic!("expected NotRegistered, got a login"),
    }
    assert_eq!(server.users(), 1);
    server.stop();
}

/// Login proves the key: the registered key logs in (from another home
/// too) and learns what is waiting; another key under the same name fails,
/// and registering it reports the name as taken.
fn login(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    let home = tempfile::tempdir().unwrap();
    let bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    bob.close();
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    alice.send("bob", "waiting for you").unwrap();
    alice.close();

    // Bob's key, copied to a new home: logs in, one item waiting.
    let other = tempfile::tempdir().unwrap();
    let mut o = opts(server.addr(), other.path(), "bob", 1);
    o.registration = Registration::Never;
    let bob = cd.client(&o);
    assert!(!bob.login().registered);
    assert_eq!(bob.login().queued, 1);
    assert!(server.is_online("bob"));
    bob.close();

    // Mallory's key under Alice's name: the signature does not verify.
    let mallory = tempfile::tempdir().unwrap();
    match cd.connect(&opts(server.addr(), mallory.path(), "alice", 3)) {
        Err(ConnectError::Login(LoginError::SignatureRejected { user: u })) => {
            assert_eq!(u, user("alice"))
        }
        Err(e) => panic!("expected SignatureRejected, got {e}"),
        Ok(_) => panic!("a foreign key logged in"),
    }
    let mut o = opts(server.addr(), mallory.path(), "alice", 3);
    o.registration = Registration::Always;
    match cd.connect(&o) {
        Err(ConnectError::Login(LoginError::NameTaken { user: u })) => {
            assert_eq!(u, user("alice"))
        }
        Err(e) => panic!("expected NameTaken, got {e}"),
        Ok(_) => panic!("a foreign key registered a taken name"),
    }
    // Registering again with the registered key succeeds.
    let mut o = opts(server.addr(), other.path(), "bob", 1);
    o.registration = Registration::Always;
    let bob = cd.client(&o);
    assert!(bob.login().registered);
    bob.close();
    assert_eq!(server.users(), 2);
    server.stop();
}

/// Both online: the message arrives at once, `send` resolves on Accepted
/// with the id the recipient sees, keys are pinned on first use.
fn online_delivery(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    let home = tempfile::tempdir().unwrap();
    let mut alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    let mut bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));

    let id = alice.send("bob", "hello bob").unwrap();
    let (from, got, text) = bob.expect_message();
    assert_eq!(
        (from.as_str(), got, text.as_str()),
        ("alice", id, "hello bob")
    );
    assert_eq!(alice.pinned("bob"), Some(fingerprint(1)));
    assert_eq!(bob.pinned("alice"), Some(fingerprint(0)));

    let reply = bob.send("alice", "hi alice").unwrap();
    let (from, got, text) = alice.expect_message();
    assert_eq!(
        (from.as_str(), got, text.as_str()),
        ("bob", reply, "hi alice")
    );

    match alice.send("carol", "anyone?") {
        Err(SendError::Refused {
            to,
            reason: SendFailure::UnknownUser,
        }) => assert_eq!(to, user("carol")),
        other => panic!("expected UnknownUser, got {other:?}"),
    }
    alice.close();
    bob.close();
    server.stop();
}

/// The recipient is away: messages are queued, then delivered in order
/// when it comes back. A connected recipient that announced itself offline
/// gets nothing until it listens again.
fn offline_delivery(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    let home = tempfile::tempdir().unwrap();
    let bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    bob.close();
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    let ids: Vec<_> = (0..3)
        .map(|i| alice.send("bob", &format!("message {i}")).unwrap())
        .collect();
    assert_eq!(server.queued(), 3, "queued while bob is away");

    let mut bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    assert_eq!(bob.login().queued, 3);
    for (i, id) in ids.iter().enumerate() {
        let (from, got, text) = bob.expect_message();
        assert_eq!(from, "alice");
        assert_eq!(got, *id);
        assert_eq!(text, format!("message {i}"), "in order");
    }

    // Connected but offline: queued, not delivered.
    bob.set_presence(false);
    server.wait_for("bob offline", |s| !s.is_online(&user("bob")));
    let id = alice.send("bob", "while you were out").unwrap();
    bob.expect_no_message(Duration::from_millis(200));
    server.wait_for("one message queued", |s| s.state().queued_items() >= 1);
    bob.set_presence(true);
    let (_, got, text) = bob.expect_message();
    assert_eq!((got, text.as_str()), (id, "while you were out"));
    alice.close();
    bob.close();
    server.stop();
}

/// Acknowledgements empty the mailboxes: the message, then the notice.
fn acks_remove(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    let home = tempfile::tempdir().unwrap();
    let mut alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    let mut bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    for i in 0..5 {
        alice.send("bob", &format!("m{i}")).unwrap();
    }
    for _ in 0..5 {
        bob.expect_message();
    }
    for _ in 0..5 {
        alice.expect("a delivered notice", |e| {
            matches!(e, ClientEvent::Delivered { .. }).then_some(())
        });
    }
    server.wait_for("every mailbox empty", |s| s.state().queued_items() == 0);
    alice.close();
    bob.close();
    assert_eq!(server.queued(), 0);
    server.stop();
}

/// The sender learns of the delivery: at once when online, at its next
/// login when it was away.
fn notices(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    let home = tempfile::tempdir().unwrap();
    let bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    bob.close();

    // Online sender.
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    let first = alice.send("bob", "first").unwrap();
    alice.close();

    // Bob reads it while Alice is away: the notice waits for her.
    let mut bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    let (_, got, _) = bob.expect_message();
    assert_eq!(got, first);
    server.wait_for("the message acknowledged, the notice queued", move |s| {
        s.state().queued_items() == 1
    });
    let mut alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    assert_eq!(alice.login().queued, 1, "the notice");
    let (to, id) = alice.expect("the delivered notice", |e| match e {
        ClientEvent::Delivered { to, id } => Some((to, id)),
        _ => None,
    });
    assert_eq!((to, id), (user("bob"), first));

    // Both online: the notice comes at once.
    let second = alice.send("bob", "second").unwrap();
    bob.expect_message();
    let (to, id) = alice.expect("the delivered notice", |e| match e {
        ClientEvent::Delivered { to, id } => Some((to, id)),
        _ => None,
    });
    assert_eq!((to, id), (user("bob"), second));
    server.wait_for("every mailbox empty", |s| s.state().queued_items() == 0);
    alice.close();
    bob.close();
    server.stop();
}

/// With a tiny ping interval: a silent peer goes offline (and is closed
/// with a Timeout error) after the missed pings; a driver's client keeps
/// pinging and stays online.
fn presence_timeout(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let mut config = ServerConfig::default();
    config.ping_interval = Duration::from_millis(100);
    config.missed_pings = 3;
    let server = sd.start(config, memory());
    let home = tempfile::tempdir().unwrap();
    let bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    bob.close();
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));

    let mut silent = silent_login(&*server, "bob", 1);
    assert!(alice.query_presence("bob").unwrap().online);
    let started = Instant::now();
    let codes = read_until_closed(&mut silent, Duration::from_secs(5));
    assert!(codes.contains(&ErrorCode::Timeout), "got {codes:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let presence = alice.query_presence("bob").unwrap();
    assert!(!presence.online);
    assert!(presence.last_seen_ms.is_some());

    // Several liveness periods later, Alice is still there.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        server.is_online("alice"),
        "automatic pings keep alice online"
    );
    assert!(alice.query_presence("alice").unwrap().online);
    // Announcing offline is seen at once.
    alice.set_presence(false);
    server.wait_for("alice offline", |s| !s.is_online(&user("alice")));
    match alice.query_presence("nobody") {
        Err(PresenceError::UnknownUser(u)) => assert_eq!(u, user("nobody")),
        other => panic!("expected UnknownUser, got {other:?}"),
    }
    alice.close();
    server.stop();
}

/// The redb store keeps registrations and queued messages across a server
/// restart.
fn restart_durability(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = sd.start(ServerConfig::default(), redb(data.path()));
    let bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    bob.close();
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    let ids = [
        alice.send("bob", "kept across restarts").unwrap(),
        alice.send("bob", "and this one").unwrap(),
    ];
    alice.close();
    let commands = server.stop();
    assert!(
        commands >= 5,
        "server id, two users, two messages: {commands}"
    );

    let server = sd.start(ServerConfig::default(), redb(data.path()));
    assert_eq!(server.users(), 2);
    assert_eq!(server.queued(), 2);
    let mut o = opts(server.addr(), home.path(), "bob", 1);
    o.registration = Registration::Never; // the key survived
    let mut bob = cd.client(&o);
    assert!(!bob.login().registered);
    assert_eq!(bob.login().queued, 2);
    for (id, text) in ids.iter().zip(["kept across restarts", "and this one"]) {
        let (from, got, body) = bob.expect_message();
        assert_eq!((from.as_str(), got, body.as_str()), ("alice", *id, text));
    }
    bob.close();
    server.wait_for("bob's mailbox empty", |s| {
        s.state()
            .user(&user("bob"))
            .unwrap()
            .mailbox
            .items
            .is_empty()
    });
    server.stop();
}

/// The client reconnects on its own after the server went away, and the
/// message sent during the outage waits in the outbox, then goes out.
fn reconnect_keeps_outbox(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = sd.start(ServerConfig::default(), redb(data.path()));
    let addr = server.addr();
    let bob = cd.client(&opts(addr, home.path(), "bob", 1));
    bob.close();
    let mut alice = cd.client(&opts(addr, home.path(), "alice", 0));
    alice.send("bob", "before").unwrap();
    server.stop();
    alice.expect("the disconnection", |e| {
        matches!(e, ClientEvent::Disconnected).then_some(())
    });

    let pending = alice.send_later("bob", "during the outage");
    std::thread::sleep(Duration::from_millis(200));
    let server = sd.start_on(addr, ServerConfig::default(), || redb(data.path()));
    let id = pending(support::T)
        .expect("accepted after the reconnection")
        .unwrap();
    assert_eq!(server.queued(), 2);
    let mut o = opts(addr, home.path(), "bob", 1);
    o.registration = Registration::Never;
    let mut bob = cd.client(&o);
    bob.expect_message();
    let (_, got, text) = bob.expect_message();
    assert_eq!((got, text.as_str()), (id, "during the outage"));
    alice.close();
    bob.close();
    server.stop();
}

/// Garbage and an oversized length prefix each get an error frame and a
/// close; the server goes on serving good clients. (On WebSocket, text and
/// oversize messages are closed by the WebSocket layer: tests/ws.rs.)
fn bad_input(sd: &dyn ServerDriver, cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    // Four bytes that are no packet.
    let mut garbage = server.bare_connect();
    garbage.send_packet(&[0xff, 0xfe, 0xfd, 0xfc]);
    let codes = read_until_closed(&mut garbage, Duration::from_secs(5));
    assert_eq!(codes, vec![ErrorCode::Malformed]);
    if server.security().is_stream() {
        bad_stream_input(&*server);
    }

    let home = tempfile::tempdir().unwrap();
    let alice = cd.client(&opts(server.addr(), home.path(), "alice", 0));
    let mut bob = cd.client(&opts(server.addr(), home.path(), "bob", 1));
    let id = alice.send("bob", "still serving").unwrap();
    let (_, got, text) = bob.expect_message();
    assert_eq!((got, text.as_str()), (id, "still serving"));
    alice.close();
    bob.close();
    server.wait_for("no connection left", |s| s.connection_count() == 0);
    server.stop();
}

/// What only a byte stream can carry: a length prefix beyond the frame
/// limit, and text.
fn bad_stream_input(server: &dyn support::RunningServer) {
    // A length prefix far beyond the frame limit.
    let mut oversized = server.bare_connect();
    oversized
        .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    let codes = read_until_closed(&mut oversized, Duration::from_secs(5));
    assert_eq!(codes, vec![ErrorCode::FrameTooLarge]);
    // Text (an HTTP request: "GET " is a huge length).
    let mut http = server.bare_connect();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let codes = read_until_closed(&mut http, Duration::from_secs(5));
    assert_eq!(codes, vec![ErrorCode::FrameTooLarge]);
}

/// Binding an address another server listens on fails, typed.
fn address_in_use(sd: &dyn ServerDriver, _cd: &dyn ClientDriver) {
    let server = sd.start(ServerConfig::default(), memory());
    let busy = server.addr();
    match sd.try_start(&busy.to_string(), ServerConfig::default(), memory()) {
        Err(ServeError::AddressInUse { addr, .. }) => assert_eq!(addr, busy),
        Err(e) => panic!("expected AddressInUse, got {e}"),
        Ok(_) => panic!("bound {busy} twice"),
    }
    server.stop();
}

/// One `#[test]` per case and pairing.
macro_rules! pairing {
    ($module:ident, $server:ident, $client:ident, $security:ident, [$($case:ident),* $(,)?]) => {
        mod $module {
            use crate::support::Security;
            $(
                #[test]
                fn $case() {
                    super::$case(
                        &crate::support::$server(Security::$security),
                        &crate::support::$client(Security::$security),
                    );
                }
            )*
        }
    };
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        pairing!(tokio_server_tokio_client, Tokio, Tokio, Plaintext, [$($case),*]);
        pairing!(tokio_server_async_std_client, Tokio, AsyncStd, Plaintext, [$($case),*]);
        pairing!(async_std_server_tokio_client, AsyncStd, Tokio, Plaintext, [$($case),*]);
        pairing!(async_std_server_async_std_client, AsyncStd, AsyncStd, Plaintext, [$($case),*]);
        pairing!(tls_tokio_server_tokio_client, Tokio, Tokio, Tls, [$($case),*]);
        pairing!(tls_tokio_server_async_std_client, Tokio, AsyncStd, Tls, [$($case),*]);
        pairing!(tls_async_std_server_tokio_client, AsyncStd, Tokio, Tls, [$($case),*]);
        pairing!(tls_async_std_server_async_std_client, AsyncStd, AsyncStd, Tls, [$($case),*]);
        pairing!(ws_tokio_server_tokio_client, Tokio, Tokio, Ws, [$($case),*]);
        pairing!(ws_tokio_server_async_std_client, Tokio, AsyncStd, Ws, [$($case),*]);
        pairing!(ws_async_std_server_tokio_client, AsyncStd, Tokio, Ws, [$($case),*]);
        pairing!(ws_async_std_server_async_std_client, AsyncStd, AsyncStd, Ws, [$($case),*]);
        pairing!(wss_tokio_server_tokio_client, Tokio, Tokio, Wss, [$($case),*]);
        pairing!(wss_tokio_server_async_std_client, Tokio, AsyncStd, Wss, [$($case),*]);
        pairing!(wss_async_std_server_tokio_client, AsyncStd, Tokio, Wss, [$($case),*]);
        pairing!(wss_async_std_server_async_std_client, AsyncStd, AsyncStd, Wss, [$($case),*]);
    };
}

conformance!(
    registration,
    registration_skipped_when_registered,
    login,
    online_delivery,
    offline_delivery,
    acks_remove,
    notices,
    presence_timeout,
    restart_durability,
    reconnect_keeps_outbox,
    bad_input,
    address_in_use,
);
