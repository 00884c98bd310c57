//! Runs `examples/blocking_server.rs` — the core embedded in a blocking
//! `std::net` loop with the in-memory store, no async runtime — and talks
//! to it with both drivers' clients.

#[path = "../examples/blocking_server.rs"]
#[allow(dead_code)]
mod blocking_server;
mod support;

use missive::core::client::ClientEvent;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::{AsyncStd, ClientDriver, Security, Tokio, opts, user};

#[test]
fn blocking_server_exchanges_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || blocking_server::run(listener, stop))
    };

    let home = tempfile::tempdir().unwrap();
    let tokio: &dyn ClientDriver = &Tokio(Security::Plaintext);
    let async_std: &dyn ClientDriver = &AsyncStd(Security::Plaintext);
    let mut alice = tokio.client(&opts(addr, home.path(), "alice", 0));
    assert!(alice.login().registered);
    let mut bob = async_std.client(&opts(addr, home.path(), "bob", 1));

    let id = alice.send("bob", "hello from a blocking server").unwrap();
    let (from, got, text) = bob.expect_message();
    assert_eq!(
        (from.as_str(), got, text.as_str()),
        ("alice", id, "hello from a blocking server")
    );
    let (to, delivered) = alice.expect("the delivered notice", |e| match e {
        ClientEvent::Delivered { to, id } => Some((to, id)),
        _ => None,
    });
    assert_eq!((to, delivered), (user("bob"), id));

    // Offline delivery: Bob leaves, Alice writes, Bob comes back.
    bob.close();
    alice.send("bob", "while you were away").unwrap();
    let mut bob = async_std.client(&opts(addr, home.path(), "bob", 1));
    assert_eq!(bob.login().queued, 1);
    assert_eq!(bob.expect_message().2, "while you were away");
    bob.close();
    alice.close();

    stop.store(true, Ordering::SeqCst);
    server.join().unwrap().unwrap();
}
