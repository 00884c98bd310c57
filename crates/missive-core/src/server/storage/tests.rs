//! The server while its store is unavailable (a full disk).

use super::super::tests::{Harness, ids, name};
use super::super::{Input, PersistCmd, ServerConfig, ServerEvent};
use crate::types::MessageId;
use crate::wire::{ClientPacket, ErrorCode, ServerPacket};

fn storage(h: &mut Harness, available: bool) {
    h.server
        .handle_input(h.now, Input::StorageAvailable(available));
    h.drain();
}

fn availability_events(h: &Harness) -> Vec<bool> {
    h.events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::StorageAvailability { available } => Some(*available),
            _ => None,
        })
        .collect()
}

/// Sends are refused (typed, with their id, nothing queued or persisted);
/// logins, deliveries of durable items, acks, key fetches and presence go
/// on; once the store is back the same send is accepted.
#[test]
fn sends_are_refused_while_the_store_is_unavailable_the_rest_goes_on() {
    let mut h = Harness::new(ServerConfig::default());
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 1, "bob", b"before");
    assert!(matches!(h.expect(a), ServerPacket::Accepted { .. }));

    storage(&mut h, false);
    storage(&mut h, false); // told twice: one event
    assert!(!h.server.storage_available());
    assert_eq!(availability_events(&h), vec![false]);
    h.auto_durable = false; // nothing becomes durable meanwhile
    let persisted = h.log.len();
    h.send_msg(a, 2, "bob", b"during");
    match h.expect_error(a, ErrorCode::StorageUnavailable) {
        ServerPacket::Error { id, .. } => assert_eq!(id, Some(MessageId([2; 16]))),
        _ => unreachable!(),
    }
    assert_eq!(h.log.len(), persisted, "nothing persisted");
    assert_eq!(h.queued("bob"), 1);

    // Bob logs in and gets what was durable before; his ack is emitted.
    let b = h.user(3, "bob", &ids()[1]);
    let seq = match h.expect(b) {
        ServerPacket::Message { seq, envelope, .. } => {
            assert_eq!(envelope, b"before");
            seq
        }
        other => panic!("{other:?}"),
    };
    h.send(b, &ClientPacket::Ack { seq });
    assert!(matches!(
        h.log.last(),
        Some((_, PersistCmd::Enqueue { .. }))
    ));
    assert!(
        h.log[persisted..]
            .iter()
            .any(|(_, cmd)| matches!(cmd, PersistCmd::Ack { .. }))
    );
    h.send(
        b,
        &ClientPacket::FetchKey {
            user: name("alice"),
        },
    );
    assert!(matches!(h.expect(b), ServerPacket::Key { .. }));
    h.send(
        b,
        &ClientPacket::QueryPresence {
            user: name("alice"),
        },
    );
    assert!(matches!(h.expect(b), ServerPacket::Presence { .. }));

    // The store is back: what was emitted becomes durable, sends go in.
    storage(&mut h, true);
    h.make_durable();
    h.auto_durable = true;
    assert!(h.server.storage_available());
    assert_eq!(availability_events(&h), vec![false, true]);
    assert!(
        matches!(h.expect(a), ServerPacket::Notice { .. }),
        "delivered"
    );
    h.send_msg(a, 2, "bob", b"during");
    assert!(matches!(h.expect(a), ServerPacket::Accepted { .. }));
}

/// A registration is refused with `StorageUnavailable` and the connection
/// closed, whether the store went away before the `register` or between
/// it and the `prove`; nothing is persisted.
#[test]
fn registrations_are_refused_and_closed_while_the_store_is_unavailable() {
    let mut h = Harness::new(ServerConfig::default());
    storage(&mut h, false);
    let persisted = h.log.len();
    let c = h.hello(1);
    h.send(
        c,
        &ClientPacket::Register {
            user: name("alice"),
            public_key: ids()[0].public_key().to_spki_der().to_vec(),
        },
    );
    match h.expect_error(c, ErrorCode::StorageUnavailable) {
        ServerPacket::Error { user, .. } => assert_eq!(user, Some(name("alice"))),
        _ => unreachable!(),
    }
    assert!(h.closed.contains(&c));

    storage(&mut h, true);
    let c = h.hello(2);
    h.send(
        c,
        &ClientPacket::Register {
            user: name("alice"),
            public_key: ids()[0].public_key().to_spki_der().to_vec(),
        },
    );
    storage(&mut h, false); // between the register and its prove
    h.prove(
        c,
        crate::crypto::AuthContext::Register,
        &name("alice"),
        &ids()[0],
    );
    h.expect_error(c, ErrorCode::StorageUnavailable);
    assert!(h.closed.contains(&c));
    assert_eq!(h.log.len(), persisted, "nothing persisted");
    assert!(h.server.state().user(&name("alice")).is_none());

    storage(&mut h, true);
    h.user(3, "alice", &ids()[0]);
    assert!(h.server.state().user(&name("alice")).is_some());
}

/// A send pipelined behind one refused for storage is refused as well,
/// even once the store is back, until the refused one comes again: order
/// per (sender, recipient) holds across the outage.
#[test]
fn sends_behind_a_refused_one_wait_for_its_retry() {
    let mut h = Harness::new(ServerConfig::default());
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    storage(&mut h, false);
    h.send_msg(a, 1, "bob", b"first");
    h.expect_error(a, ErrorCode::StorageUnavailable);
    storage(&mut h, true);
    h.send_msg(a, 2, "bob", b"second"); // was in flight behind the first
    match h.expect_error(a, ErrorCode::StorageUnavailable) {
        ServerPacket::Error { id, .. } => assert_eq!(id, Some(MessageId([2; 16]))),
        _ => unreachable!(),
    }
    assert_eq!(h.queued("bob"), 0);
    h.send_msg(a, 1, "bob", b"first");
    h.send_msg(a, 2, "bob", b"second");
    assert_eq!(
        h.recv_all(a),
        vec![
            ServerPacket::Accepted {
                id: MessageId([1; 16])
            },
            ServerPacket::Accepted {
                id: MessageId([2; 16])
            },
        ]
    );
    let b = h.user(3, "bob", &ids()[1]);
    let got: Vec<Vec<u8>> = h
        .recv_all(b)
        .into_iter()
        .map(|p| match p {
            ServerPacket::Message { envelope, .. } => envelope,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, vec![b"first".to_vec(), b"second".to_vec()]);
}
