//! The store conformance suite, written once and run against every [`Store`].
//!
//! Each case takes a [`Backing`]: something that opens a store on the same
//! underlying storage each time it is called (a directory, a shared memory
//! handle). A case drops a store before opening the next one, so opening
//! again is a restart. Every case checks that what a store loads equals the
//! state built by applying the same commands in memory with
//! [`ServerState::apply`] (including each mailbox's `next_seq`).
//!
//! Instantiate the whole suite with [`crate::store_conformance_tests!`];
//! other crates enable the `conformance` feature.

use crate::Store;
use missive_core::server::{MailItem, PersistCmd, ServerState};
use missive_core::wire::Notice;
use missive_core::{MessageId, Seq, UserName};

/// Opens stores on one piece of storage; every call after the first is a
/// restart on what earlier stores committed.
pub trait Backing {
    /// Opens a store. The store from the previous call has been dropped.
    fn open(&mut self) -> Box<dyn Store>;
}

impl<F: FnMut() -> Box<dyn Store>> Backing for F {
    fn open(&mut self) -> Box<dyn Store> {
        self()
    }
}

/// Defines one `#[test]` per conformance case in the current module.
///
/// The argument is an expression evaluated afresh for each test that yields
/// a [`Backing`] (for instance a closure that opens a store in a temporary
/// directory it owns):
///
/// ```ignore
/// mod redb_conformance {
///     use missive_store::{RedbStore, Store};
///     missive_store::store_conformance_tests!({
///         let dir = tempfile::tempdir().unwrap();
///         move || Box::new(RedbStore::open(dir.path()).unwrap()) as Box<dyn Store>
///     });
/// }
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($backing:expr) => {
        $crate::store_conformance_tests!(@cases $backing;
            empty_load,
            round_trip,
            load_is_repeatable,
            commits_accumulate_across_restarts,
            idempotent_reapplication,
            large_envelope,
            many_users_and_items,
            mixed_batch,
            next_seq_survives_emptied_mailbox,
            empty_batch,
            removed_user,
        );
    };
    (@cases $backing:expr; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                let mut backing = $backing;
                $crate::conformance::$case(&mut backing);
            }
        )*
    };
}

/// A user name for tests.
pub fn user(name: &str) -> UserName {
    UserName::new(name).expect("valid test user name")
}

/// `RegisterUser` with a key derived from the name.
pub fn register(name: &str) -> PersistCmd {
    PersistCmd::RegisterUser {
        user: user(name),
        public_key: format!("spki-der-of-{name}").into_bytes(),
    }
}

/// `Enqueue` of a message from `from` to `to` at `seq`, with an envelope of
/// `len` bytes.
pub fn message(to: &str, seq: Seq, from: &str, len: usize) -> PersistCmd {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_le_bytes());
    id[8] = from.len() as u8;
    PersistCmd::Enqueue {
        user: user(to),
        seq,
        item: MailItem::Message {
            from: user(from),
            id: MessageId(id),
            envelope: (0..len).map(|i| (i * 31 + seq as usize) as u8).collect(),
            enqueued_at: 1_700_000_000_000 + seq,
        },
    }
}

/// `Enqueue` of a "delivered" notice for `to` at `seq`.
pub fn notice(to: &str, seq: Seq, about: &str) -> PersistCmd {
    PersistCmd::Enqueue {
        user: user(to),
        seq,
        item: MailItem::Notice {
            notice: Notice::Delivered {
                to: user(about),
                id: MessageId([seq as u8; 16]),
            },
            enqueued_at: 1_700_000_000_000 + seq,
        },
    }
}

/// `Ack` of `user`'s item at `seq`.
pub fn ack(name: &str, seq: Seq) -> PersistCmd {
    PersistCmd::Ack {
        user: user(name),
        seq,
    }
}

/// `Expire` of `user`'s item at `seq`.
pub fn expire(name: &str, seq: Seq) -> PersistCmd {
    PersistCmd::Expire {
        user: user(name),
        seq,
    }
}

/// Removes `name` (and its mailbox).
pub fn remove(name: &str) -> PersistCmd {
    PersistCmd::RemoveUser { user: user(name) }
}

/// Commits `batches` to one store each (restarting in between when
/// `restart_between` is set), then restarts and checks the loaded state
/// equals the in-memory replay of all commands.
fn commit_and_check(backing: &mut dyn Backing, batches: &[Vec<PersistCmd>], restart_between: bool) {
    let mut expected = ServerState::new();
    let mut store = backing.open();
    store.load().expect("load");
    for batch in batches {
        if restart_between {
            drop(store);
            store = backing.open();
            assert_eq!(store.load().expect("load"), expected);
        }
        store.commit(batch).expect("commit");
        for cmd in batch {
            expected.apply(cmd);
        }
    }
    drop(store);
    let loaded = backing.open().load().expect("load after restart");
    assert_states_eq(&loaded, &expected);
}

/// Asserts equality, checking the parts first for a readable failure.
fn assert_states_eq(loaded: &ServerState, expected: &ServerState) {
    assert_eq!(loaded.server_id(), expected.server_id(), "server id");
    assert_eq!(loaded.user_count(), expected.user_count(), "user count");
    for (name, want) in expected.users() {
        let got = loaded
            .user(name)
            .unwrap_or_else(|| panic!("user {name} missing"));
        assert_eq!(got.public_key, want.public_key, "key of {name}");
        assert_eq!(
            got.mailbox.items.keys().collect::<Vec<_>>(),
            want.mailbox.items.keys().collect::<Vec<_>>(),
            "queued seqs of {name}"
        );
        assert_eq!(
            got.mailbox.next_seq, want.mailbox.next_seq,
            "next_seq of {name}"
        );
        assert_eq!(got, want, "record of {name}");
    }
    assert_eq!(loaded.snapshot(), expected.snapshot(), "snapshot");
    assert!(
        loaded == expected,
        "states differ outside users and snapshot"
    );
}

/// A fresh store loads an empty state, also after a restart.
pub fn empty_load(backing: &mut dyn Backing) {
    assert_eq!(backing.open().load().expect("load"), ServerState::new());
    assert_eq!(backing.open().load().expect("load"), ServerState::new());
}

/// A conversation (register, messages both ways, notices, acks, expiries)
/// committed in several batches survives a restart.
pub fn round_trip(backing: &mut dyn Backing) {
    let batches = vec![
        vec![PersistCmd::SetServerId { server_id: [9; 16] }],
        vec![register("alice"), register("bob")],
        vec![message("bob", 0, "alice", 100)],
        vec![
            message("bob", 1, "alice", 200),
            message("alice", 0, "bob", 50),
        ],
        vec![ack("bob", 0), notice("alice", 1, "bob")],
        vec![message("bob", 2, "alice", 10), expire("bob", 1)],
        vec![notice("alice", 2, "bob"), ack("alice", 0)],
    ];
    commit_and_check(backing, &batches, false);
}

/// `load` can be called repeatedly on a live store, between commits.
pub fn load_is_repeatable(backing: &mut dyn Backing) {
    let mut store = backing.open();
    let mut expected = ServerState::new();
    for batch in [
        vec![register("alice"), register("bob")],
        vec![
            message("alice", 0, "bob", 30),
            message("alice", 1, "bob", 30),
        ],
        vec![ack("alice", 0)],
    ] {
        store.commit(&batch).expect("commit");
        for cmd in &batch {
            expected.apply(cmd);
        }
        assert_states_eq(&store.load().expect("load"), &expected);
        assert_states_eq(&store.load().expect("load again"), &expected);
    }
}

/// Restarting between every batch (load, then commit more) loses nothing.
pub fn commits_accumulate_across_restarts(backing: &mut dyn Backing) {
    let batches = vec![
        vec![PersistCmd::SetServerId { server_id: [1; 16] }],
        vec![register("carol")],
        vec![register("dave"), message("carol", 0, "dave", 64)],
        vec![message("carol", 1, "dave", 64), notice("dave", 0, "carol")],
        vec![ack("carol", 0)],
        vec![PersistCmd::SetServerId { server_id: [2; 16] }],
    ];
    commit_and_check(backing, &batches, true);
}

/// Commands applied twice, or with nothing to act on, change what
/// `ServerState::apply` changes (nothing): a second registration keeps the
/// first key, removing an absent item or an unknown user's item is a no-op,
/// an item for an unknown user is dropped, a second item at a used seq is
/// ignored.
pub fn idempotent_reapplication(backing: &mut dyn Backing) {
    let second_key = PersistCmd::RegisterUser {
        user: user("alice"),
        public_key: b"a different key".to_vec(),
    };
    let batches = vec![
        vec![register("alice"), register("alice"), second_key.clone()],
        vec![second_key, register("bob")],
        vec![ack("alice", 0), expire("alice", 7), ack("nobody", 3)],
        vec![message("nobody", 0, "alice", 10)],
        vec![
            message("alice", 0, "bob", 10),
            message("alice", 0, "bob", 99),
        ],
        vec![notice("alice", 0, "bob")],
        vec![ack("alice", 0), ack("alice", 0), expire("alice", 0)],
        vec![message("alice", 0, "bob", 10), ack("alice", 0)],
    ];
    commit_and_check(backing, &batches, false);
}

/// A 250 KiB envelope survives byte for byte.
pub fn large_envelope(backing: &mut dyn Backing) {
    let batches = vec![
        vec![register("alice"), register("bob")],
        vec![message("bob", 0, "alice", 250 * 1024)],
        vec![message("bob", 1, "alice", 250 * 1024 + 1)],
        vec![ack("bob", 0)],
    ];
    commit_and_check(backing, &batches, false);
}

/// 40 users, 2,000 items in batches of 250, a quarter of them removed.
pub fn many_users_and_items(backing: &mut dyn Backing) {
    let names: Vec<String> = (0..40).map(|i| format!("user-{i:02}")).collect();
    let mut cmds: Vec<PersistCmd> = names.iter().map(|n| register(n)).collect();
    let mut next_seq = vec![0u64; names.len()];
    for i in 0..2_000usize {
        let to = i % names.len();
        let from = (i * 7 + 3) % names.len();
        let seq = next_seq[to];
        next_seq[to] += 1;
        cmds.push(if i % 5 == 4 {
            notice(&names[to], seq, &names[from])
        } else {
            message(&names[to], seq, &names[from], 16 + i % 300)
        });
        if i % 4 == 3 {
            let (user, seq) = (&names[(i * 13) % names.len()], (i / 80) as u64);
            cmds.push(if i % 8 == 3 {
                ack(user, seq)
            } else {
                expire(user, seq)
            });
        }
    }
    let batches: Vec<Vec<PersistCmd>> = cmds.chunks(250).map(<[_]>::to_vec).collect();
    commit_and_check(backing, &batches, false);
}

/// One batch holding every kind of command, including an item enqueued and
/// removed within the batch and a user registered and written to in it.
pub fn mixed_batch(backing: &mut dyn Backing) {
    let batch = vec![
        PersistCmd::SetServerId { server_id: [3; 16] },
        register("alice"),
        register("bob"),
        message("bob", 0, "alice", 20),
        message("bob", 1, "alice", 21),
        ack("bob", 0),
        notice("alice", 0, "bob"),
        message("alice", 1, "bob", 22),
        expire("alice", 1),
        register("alice"),
        PersistCmd::SetServerId { server_id: [4; 16] },
    ];
    commit_and_check(backing, &[batch], false);
}

/// After every item of a mailbox is removed, a restart keeps its `next_seq`:
/// sequence numbers never go back.
pub fn next_seq_survives_emptied_mailbox(backing: &mut dyn Backing) {
    let batches = vec![
        vec![register("alice"), register("bob")],
        (0..5).map(|s| message("alice", s, "bob", 8)).collect(),
        vec![notice("bob", 0, "alice")],
        (0..5).map(|s| ack("alice", s)).collect(),
        vec![expire("bob", 0)],
    ];
    commit_and_check(backing, &batches, false);
    let state = backing.open().load().expect("load");
    assert_eq!(
        state.user(&user("alice")).expect("alice").mailbox.next_seq,
        5
    );
    assert_eq!(state.user(&user("bob")).expect("bob").mailbox.next_seq, 1);
    assert_eq!(state.queued_items(), 0);

    // Continuing after the restart: the next item goes at 5, and a
    // mailbox with a gap below its highest item keeps it.
    let mut store = backing.open();
    let mut expected = store.load().expect("load");
    let more = vec![
        message("alice", 5, "bob", 8),
        message("alice", 6, "bob", 8),
        ack("alice", 6),
    ];
    store.commit(&more).expect("commit");
    for cmd in &more {
        expected.apply(cmd);
    }
    drop(store);
    let loaded = backing.open().load().expect("load");
    assert_states_eq(&loaded, &expected);
    assert_eq!(
        loaded.user(&user("alice")).expect("alice").mailbox.next_seq,
        7
    );
}

/// An empty batch commits nothing and is not an error.
pub fn empty_batch(backing: &mut dyn Backing) {
    let mut store = backing.open();
    store.commit(&[]).expect("empty commit");
    store.commit(&[register("alice")]).expect("commit");
    store.commit(&[]).expect("empty commit");
    drop(store);
    let loaded = backing.open().load().expect("load");
    assert_states_eq(&loaded, &ServerState::replay(&[register("alice")]));
}

/// A removed user's key and mailbox go (its messages queued elsewhere
/// stay); removing twice or removing an unknown name does nothing; the
/// name can be registered again, with a fresh mailbox, in the same batch
/// or later.
pub fn removed_user(backing: &mut dyn Backing) {
    let new_key = PersistCmd::RegisterUser {
        user: user("bob"),
        public_key: b"bob's new key".to_vec(),
    };
    let batches = vec![
        vec![register("alice"), register("bob"), register("carol")],
        vec![
            message("bob", 0, "alice", 10),
            message("bob", 1, "carol", 20),
            message("alice", 0, "bob", 30),
            notice("bob", 2, "alice"),
        ],
        vec![remove("bob"), remove("bob"), remove("nobody")],
        vec![message("bob", 3, "alice", 10), ack("bob", 0)],
        vec![new_key, message("bob", 0, "carol", 5)],
        vec![remove("carol"), register("carol")],
    ];
    commit_and_check(backing, &batches, true);
    let state = backing.open().load().expect("load");
    let bob = state.user(&user("bob")).expect("bob registered again");
    assert_eq!(bob.public_key, b"bob's new key");
    assert_eq!(bob.mailbox.items.keys().collect::<Vec<_>>(), vec![&0]);
    assert_eq!(
        state
            .user(&user("alice"))
            .expect("alice")
            .mailbox
            .items
            .len(),
        1,
        "the removed user's message to alice stays"
    );
}
