//! Unit tests of the cluster node behaviour, through the server's inputs
//! and outputs (the single-server harness, with forwards and replies
//! captured).

use super::super::tests::{Harness, ids, name};
use super::super::{Input, ServerConfig, ServerEvent};
use crate::cluster::{CallId, ClusterConfig, ForwardId, RemoteCall, RemoteReply, Shard, shard_of};
use crate::server::{CloseReason, MailItem, PersistCmd};
use crate::test_support::test;
use crate::types::MessageId;
use crate::wire::{ClientPacket, ErrorCode, Notice, ServerPacket};
use std::time::Duration;

const SHARDS: u32 = 4;
const RETRY: Duration = Duration::from_millis(200);
const QUERY_DEADLINE: Duration = Duration::from_secs(1);

fn config() -> ServerConfig {
    ServerConfig {
        cluster: Some(ClusterConfig {
            shards: SHARDS,
            forward_retry: RETRY,
            query_deadline: QUERY_DEADLINE,
        }),
        ..ServerConfig::default()
    }
}

/// The first name `prefix0`, `prefix1`, … in `shard`.
fn name_in(shard: u32, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| shard_of(&name(n), SHARDS) == Shard(shard))
        .expect("some name lands in every shard")
}

/// Alice in shard 0 and Bob in shard 1 (both served here unless a test
/// says otherwise), Zed in shard 2 and Yan in shard 3 (served elsewhere).
struct Cast {
    alice: String,
    bob: String,
    zed: String,
    yan: String,
}

fn cast() -> Cast {
    Cast {
        alice: name_in(0, "alice"),
        bob: name_in(1, "bob"),
        zed: name_in(2, "zed"),
        yan: name_in(3, "yan"),
    }
}

fn node(owned: &[u32]) -> Harness {
    let mut h = Harness::new(config());
    for &shard in owned {
        acquire(&mut h, shard, &[]);
    }
    h
}

fn acquire(h: &mut Harness, shard: u32, state: &[PersistCmd]) {
    let now = h.now;
    h.server.handle_input(
        now,
        Input::ShardAcquired {
            shard: Shard(shard),
            state,
        },
    );
    h.drain();
}

fn input(h: &mut Harness, input: Input<'_>) {
    let now = h.now;
    h.server.handle_input(now, input);
    h.drain();
}

fn forwarded(h: &mut Harness, request: ForwardId, reply: RemoteReply) {
    input(
        h,
        Input::Forwarded {
            request,
            reply: &reply,
        },
    );
}

fn remote(h: &mut Harness, call: u64, request: RemoteCall) {
    input(
        h,
        Input::Remote {
            call: CallId(call),
            request: &request,
        },
    );
}

fn enqueue_call(from: &str, id: u8, to: &str, envelope: &[u8]) -> RemoteCall {
    RemoteCall::Enqueue {
        from: name(from),
        id: MessageId([id; 16]),
        to: name(to),
        envelope: envelope.to_vec(),
        sent_at: 1_700_000_000_000,
    }
}

fn take_forwards(h: &mut Harness) -> Vec<(ForwardId, Shard, RemoteCall)> {
    std::mem::take(&mut h.forwards)
}

fn take_replies(h: &mut Harness) -> Vec<(CallId, RemoteReply)> {
    std::mem::take(&mut h.replies)
}

fn queued(h: &Harness, user: &str) -> usize {
    h.server
        .state()
        .user(&name(user))
        .map_or(0, |r| r.mailbox.items.len())
}

#[test]
fn logins_of_users_served_elsewhere_are_redirected_or_told_unavailable() {
    let c = cast();
    let mut h = node(&[0]);
    input(
        &mut h,
        Input::OwnerChanged {
            shard: Shard(2),
            address: Some("10.0.0.2:7000"),
        },
    );
    let conn = h.hello(1);
    h.send(conn, &ClientPacket::Login { user: name(&c.zed) });
    assert_eq!(
        h.expect(conn),
        ServerPacket::Redirect {
            address: "10.0.0.2:7000".into()
        }
    );
    assert!(h.closed.contains(&conn));
    assert!(h.events.iter().any(|e| matches!(
        e,
        ServerEvent::ConnectionClosed {
            reason: CloseReason::Redirected,
            ..
        }
    )));
    // No owner known for shard 3: unavailable, then closed.
    let conn = h.hello(2);
    let public_key = ids()[0].public_key().to_spki_der().to_vec();
    h.send(
        conn,
        &ClientPacket::Register {
            user: name(&c.yan),
            public_key,
        },
    );
    h.expect_error(conn, ErrorCode::Unavailable);
    assert!(h.closed.contains(&conn));
    // The owner left: unavailable again.
    input(
        &mut h,
        Input::OwnerChanged {
            shard: Shard(2),
            address: None,
        },
    );
    let conn = h.hello(3);
    h.send(conn, &ClientPacket::Login { user: name(&c.zed) });
    h.expect_error(conn, ErrorCode::Unavailable);
    // A user of an owned shard registers as on a single server.
    let conn = h.user(4, &c.alice, &ids()[0]);
    assert!(!h.closed.contains(&conn));
}

#[test]
fn an_acquired_shard_is_served_with_its_mailboxes_and_dedupe_memory() {
    let c = cast();
    let bob_key = ids()[1].public_key().to_spki_der().to_vec();
    let state = vec![
        PersistCmd::RegisterUser {
            user: name(&c.bob),
            public_key: bob_key,
        },
        PersistCmd::Enqueue {
            user: name(&c.bob),
            seq: 4,
            item: MailItem::Message {
                from: name(&c.zed),
                id: MessageId([7; 16]),
                envelope: b"hi".to_vec().into(),
                enqueued_at: 1_700_000_000_000,
            },
        },
        PersistCmd::SetNextSeq {
            user: name(&c.bob),
            next_seq: 5,
        },
        // Not of this shard: ignored.
        PersistCmd::RegisterUser {
            user: name(&c.alice),
            public_key: vec![1],
        },
    ];
    let mut h = node(&[]);
    acquire(&mut h, 1, &state);
    assert!(h.events.contains(&ServerEvent::ShardAcquired {
        shard: Shard(1),
        users: 1,
        items: 1
    }));
    assert!(h.server.state().user(&name(&c.alice)).is_none());
    // Acquiring it again changes nothing.
    acquire(&mut h, 1, &state);
    assert_eq!(queued(&h, &c.bob), 1);
    let bob = h.user(1, &c.bob, &ids()[1]);
    assert!(matches!(
        h.expect(bob),
        ServerPacket::Message { seq: 4, .. }
    ));
    // A retry of the queued message is accepted without queuing it again;
    // its id with another envelope is refused.
    remote(&mut h, 1, enqueue_call(&c.zed, 7, &c.bob, b"hi"));
    remote(&mut h, 2, enqueue_call(&c.zed, 7, &c.bob, b"other"));
    let replies = take_replies(&mut h);
    assert_eq!(replies[0], (CallId(1), RemoteReply::Accepted));
    assert!(matches!(
        &replies[1],
        (
            CallId(2),
            RemoteReply::Refused {
                code: ErrorCode::IdReused,
                ..
            }
        )
    ));
    assert_eq!(queued(&h, &c.bob), 1);
    // New items continue the sequence.
    remote(&mut h, 3, enqueue_call(&c.zed, 8, &c.bob, b"next"));
    assert!(matches!(
        h.expect(bob),
        ServerPacket::Message { seq: 5, .. }
    ));
}

#[test]
fn a_lost_shard_closes_its_sessions_and_releases_nothing_its_writes_backed() {
    let c = cast();
    let mut h = node(&[0, 1]);
    let alice = h.user(1, &c.alice, &ids()[0]);
    let bob = h.user(2, &c.bob, &ids()[1]);
    h.auto_durable = false;
    // Alice sends into Bob's shard; another node too; neither durable yet.
    h.send_msg(alice, 1, &c.bob, b"m");
    remote(&mut h, 9, enqueue_call(&c.zed, 3, &c.bob, b"r"));
    assert!(take_replies(&mut h).is_empty());
    input(&mut h, Input::ShardLost(Shard(1)));
    // Bob's session and Alice's connection (waiting for an `accepted` the
    // lost write backed) are closed with `moved`; the caller is told.
    h.expect_error(bob, ErrorCode::Moved);
    h.expect_error(alice, ErrorCode::Moved);
    assert!(h.closed.contains(&bob) && h.closed.contains(&alice));
    assert_eq!(
        take_replies(&mut h),
        vec![(CallId(9), RemoteReply::NotOwner)]
    );
    assert!(h.server.state().user(&name(&c.bob)).is_none());
    assert!(h.events.contains(&ServerEvent::ShardLost {
        shard: Shard(1),
        users: 1,
        sessions_closed: 2
    }));
    // Later durability releases nothing.
    h.make_durable();
    assert!(h.recv_all(alice).is_empty());
    assert!(take_replies(&mut h).is_empty());
    // Losing it again is harmless; Bob is now redirected or refused.
    input(&mut h, Input::ShardLost(Shard(1)));
    let conn = h.hello(3);
    h.send(conn, &ClientPacket::Login { user: name(&c.bob) });
    h.expect_error(conn, ErrorCode::Unavailable);
    // Alice, still served, registers again under a reused slot's neighbour
    // and works: a new user takes Bob's vacant id cleanly.
    let alice = h.user(4, &c.alice, &ids()[0]);
    h.auto_durable = true;
    let carol = name_in(0, "carol");
    let carol_conn = h.user(5, &carol, &ids()[2]);
    h.send_msg(alice, 2, &carol, b"x");
    assert_eq!(
        h.expect(alice),
        ServerPacket::Accepted {
            id: MessageId([2; 16])
        }
    );
    assert!(matches!(h.expect(carol_conn), ServerPacket::Message { .. }));
}

#[test]
fn sends_to_other_shards_are_forwarded_one_at_a_time_and_retried() {
    let c = cast();
    let mut h = node(&[0]);
    let alice = h.user(1, &c.alice, &ids()[0]);
    h.send_msg(alice, 1, &c.zed, b"one");
    h.send_msg(alice, 2, &c.zed, b"two");
    // One forward in flight for (alice, shard 2).
    let f = take_forwards(&mut h);
    assert_eq!(f.len(), 1);
    let (first, shard, call) = f[0].clone();
    assert_eq!(shard, Shard(2));
    assert_eq!(
        call,
        enqueue_call(&c.alice, 1, &c.zed, b"one").with_sent_at(&call)
    );
    // No owner: retried after `forward_retry`, with a new id.
    forwarded(&mut h, first, RemoteReply::Unreachable);
    assert!(h.events.contains(&ServerEvent::ForwardRetried { shard }));
    assert!(take_forwards(&mut h).is_empty());
    // The retry time is the next timeout (the liveness deadline is later).
    assert_eq!(h.server.poll_timeout(), Some(h.now + RETRY));
    h.advance(RETRY - Duration::from_millis(1));
    assert!(take_forwards(&mut h).is_empty());
    h.advance(Duration::from_millis(1));
    let f = take_forwards(&mut h);
    assert_eq!(f.len(), 1);
    let (retry, _, again) = f[0].clone();
    assert_ne!(retry, first);
    assert_eq!(again, call);
    // A stale answer to the first attempt is ignored.
    forwarded(&mut h, first, RemoteReply::Accepted);
    assert!(h.recv_all(alice).is_empty());
    // A resend of the pending id makes no second forward.
    h.send_msg(alice, 1, &c.zed, b"one");
    assert!(take_forwards(&mut h).is_empty());
    forwarded(&mut h, retry, RemoteReply::Accepted);
    assert_eq!(
        h.recv_all(alice),
        vec![ServerPacket::Accepted {
            id: MessageId([1; 16])
        }]
    );
    // The next of the lane goes now.
    let f = take_forwards(&mut h);
    assert_eq!(f.len(), 1);
    forwarded(
        &mut h,
        f[0].0,
        RemoteReply::Refused {
            code: ErrorCode::QueueFull,
            detail: "full".into(),
        },
    );
    let err = h.expect_error(alice, ErrorCode::QueueFull);
    assert!(matches!(
        err,
        ServerPacket::Error {
            id: Some(MessageId([2, ..])),
            ..
        }
    ));
    // An accepted id is answered at once; reused for another message, refused.
    h.send_msg(alice, 1, &c.zed, b"one");
    assert_eq!(
        h.expect(alice),
        ServerPacket::Accepted {
            id: MessageId([1; 16])
        }
    );
    h.send_msg(alice, 1, &c.zed, b"changed");
    h.expect_error(alice, ErrorCode::IdReused);
    assert!(take_forwards(&mut h).is_empty());
}

#[test]
fn a_reused_connection_id_is_not_answered_for_an_old_forward() {
    let c = cast();
    let mut h = node(&[0]);
    let alice = h.user(1, &c.alice, &ids()[0]);
    h.send_msg(alice, 1, &c.zed, b"one");
    let (request, ..) = take_forwards(&mut h)[0].clone();
    input(&mut h, Input::Disconnected(alice));
    let reused = h.hello(1);
    assert_eq!(reused, alice);
    forwarded(&mut h, request, RemoteReply::Accepted);
    assert!(h.recv_all(reused).is_empty());
    // The send still completed: a resend after login is answered at once.
    h.login(reused, &c.alice, &ids()[0]);
    assert!(matches!(h.expect(reused), ServerPacket::LoggedIn { .. }));
    h.send_msg(reused, 1, &c.zed, b"one");
    assert_eq!(
        h.expect(reused),
        ServerPacket::Accepted {
            id: MessageId([1; 16])
        }
    );
    assert!(take_forwards(&mut h).is_empty());
}

#[test]
fn forwards_of_a_lost_senders_shard_are_dropped() {
    let c = cast();
    let mut h = node(&[0]);
    let alice = h.user(1, &c.alice, &ids()[0]);
    h.send_msg(alice, 1, &c.zed, b"one");
    let (request, ..) = take_forwards(&mut h)[0].clone();
    forwarded(&mut h, request, RemoteReply::NotOwner);
    input(&mut h, Input::ShardLost(Shard(0)));
    h.expect_error(alice, ErrorCode::Moved);
    h.advance(RETRY * 2);
    assert!(take_forwards(&mut h).is_empty());
}

#[test]
fn calls_from_other_nodes_are_checked_and_answered_after_durability() {
    let c = cast();
    let mut h = node(&[1]);
    let bob = h.user(1, &c.bob, &ids()[1]);
    h.auto_durable = false;
    remote(&mut h, 1, enqueue_call(&c.zed, 1, &c.bob, b"m"));
    assert!(take_replies(&mut h).is_empty(), "not before durable");
    // A retry before durability waits for the same write.
    remote(&mut h, 2, enqueue_call(&c.zed, 1, &c.bob, b"m"));
    assert!(take_replies(&mut h).is_empty());
    h.make_durable();
    assert_eq!(
        take_replies(&mut h),
        vec![
            (CallId(1), RemoteReply::Accepted),
            (CallId(2), RemoteReply::Accepted)
        ]
    );
    assert_eq!(queued(&h, &c.bob), 1);
    assert!(matches!(h.expect(bob), ServerPacket::Message { .. }));
    h.auto_durable = true;
    // Unknown user, oversized envelope, a shard not served.
    let unknown = name_in(1, "nobody");
    remote(&mut h, 3, enqueue_call(&c.zed, 2, &unknown, b"m"));
    let big = vec![0; h.server.config().max_envelope as usize + 1];
    remote(&mut h, 4, enqueue_call(&c.zed, 3, &c.bob, &big));
    remote(&mut h, 5, enqueue_call(&c.bob, 4, &c.zed, b"m"));
    remote(&mut h, 6, RemoteCall::FetchKey { user: name(&c.bob) });
    remote(&mut h, 7, RemoteCall::QueryPresence { user: name(&c.bob) });
    let replies = take_replies(&mut h);
    assert!(matches!(
        &replies[0],
        (
            CallId(3),
            RemoteReply::Refused {
                code: ErrorCode::UnknownUser,
                ..
            }
        )
    ));
    assert!(matches!(
        &replies[1],
        (
            CallId(4),
            RemoteReply::Refused {
                code: ErrorCode::EnvelopeTooLarge,
                ..
            }
        )
    ));
    assert_eq!(replies[2], (CallId(5), RemoteReply::NotOwner));
    let bob_key = ids()[1].public_key().to_spki_der().to_vec();
    assert_eq!(
        replies[3],
        (
            CallId(6),
            RemoteReply::Key {
                public_key: bob_key
            }
        )
    );
    assert!(matches!(
        &replies[4],
        (CallId(7), RemoteReply::Presence { online: true, .. })
    ));
}

#[test]
fn the_senders_share_is_enforced_for_remote_senders() {
    let c = cast();
    let mut h = Harness::new(ServerConfig {
        queue_max_messages: 4,
        sender_share_percent: 50,
        ..config()
    });
    acquire(&mut h, 1, &[]);
    h.user(1, &c.bob, &ids()[1]);
    for id in 0..3 {
        remote(
            &mut h,
            u64::from(id),
            enqueue_call(&c.zed, id, &c.bob, b"m"),
        );
    }
    let replies = take_replies(&mut h);
    assert_eq!(replies[0].1, RemoteReply::Accepted);
    assert_eq!(replies[1].1, RemoteReply::Accepted);
    assert!(matches!(
        &replies[2].1,
        RemoteReply::Refused {
            code: ErrorCode::QueueFull,
            ..
        }
    ));
}

#[test]
fn notices_for_senders_served_elsewhere_are_forwarded() {
    let c = cast();
    let mut h = node(&[1]);
    let bob = h.user(1, &c.bob, &ids()[1]);
    remote(&mut h, 1, enqueue_call(&c.zed, 5, &c.bob, b"m"));
    let ServerPacket::Message { seq, .. } = h.expect(bob) else {
        panic!("a message");
    };
    h.send(bob, &ClientPacket::Ack { seq });
    let f = take_forwards(&mut h);
    assert_eq!(
        f.iter()
            .map(|(_, s, call)| (*s, call.clone()))
            .collect::<Vec<_>>(),
        vec![(
            Shard(2),
            RemoteCall::Notice {
                to: name(&c.zed),
                notice: Notice::Delivered {
                    to: name(&c.bob),
                    id: MessageId([5; 16])
                }
            }
        )]
    );
    // Retried while unanswered.
    forwarded(&mut h, f[0].0, RemoteReply::Unreachable);
    h.advance(RETRY);
    assert_eq!(take_forwards(&mut h).len(), 1);
    // A notice from the other node is queued for its local sender.
    remote(
        &mut h,
        2,
        RemoteCall::Notice {
            to: name(&c.bob),
            notice: Notice::Expired {
                to: name(&c.zed),
                id: MessageId([1; 16]),
            },
        },
    );
    assert_eq!(
        take_replies(&mut h).last(),
        Some(&(CallId(2), RemoteReply::Accepted))
    );
    assert!(matches!(h.expect(bob), ServerPacket::Notice { .. }));
}

#[test]
fn queries_about_users_served_elsewhere_are_forwarded_until_their_deadline() {
    let c = cast();
    let mut h = node(&[0]);
    let alice = h.user(1, &c.alice, &ids()[0]);
    h.send(alice, &ClientPacket::FetchKey { user: name(&c.zed) });
    let (request, shard, call) = take_forwards(&mut h)[0].clone();
    assert_eq!(
        (shard, call),
        (Shard(2), RemoteCall::FetchKey { user: name(&c.zed) })
    );
    forwarded(
        &mut h,
        request,
        RemoteReply::Key {
            public_key: vec![1, 2],
        },
    );
    assert_eq!(
        h.expect(alice),
        ServerPacket::Key {
            user: name(&c.zed),
            public_key: vec![1, 2]
        }
    );
    h.send(alice, &ClientPacket::QueryPresence { user: name(&c.yan) });
    let mut attempts = 0;
    loop {
        let f = take_forwards(&mut h);
        if f.is_empty() {
            break;
        }
        attempts += 1;
        forwarded(&mut h, f[0].0, RemoteReply::Unreachable);
        h.advance(RETRY);
    }
    assert!(
        attempts >= 2 && attempts <= 1 + (QUERY_DEADLINE.as_millis() / RETRY.as_millis()) as usize
    );
    let err = h.expect_error(alice, ErrorCode::Unavailable);
    assert!(matches!(err, ServerPacket::Error { user: Some(u), .. } if u == name(&c.yan)));
}

impl RemoteCall {
    /// This call with `other`'s `sent_at` (set from the node's clock).
    fn with_sent_at(self, other: &RemoteCall) -> RemoteCall {
        match (self, other) {
            (
                RemoteCall::Enqueue {
                    from,
                    id,
                    to,
                    envelope,
                    ..
                },
                RemoteCall::Enqueue { sent_at, .. },
            ) => RemoteCall::Enqueue {
                from,
                id,
                to,
                envelope,
                sent_at: *sent_at,
            },
            (call, _) => call,
        }
    }
}
