//! Cluster nodes against a real PostgreSQL (the testkit's): leases, the
//! fence, per-shard loads, reconnection.

use super::*;
use crate::conformance::{ack, message, register, user};
use crate::{StoreEvent, StoreThread};
use missive_core::Lsn;
use missive_testkit::PostgresServer;
use std::sync::mpsc;
use std::time::Instant;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn options(node: &str, shards: u32, ttl: Duration) -> LeaseOptions {
    LeaseOptions {
        node_id: node.to_owned(),
        address: format!("{node}.example:4433"),
        shards,
        ttl,
    }
}

const LONG_TTL: Duration = Duration::from_secs(60);

/// The first `count` names `user-0`, `user-1`, … of cluster shard `shard`.
fn names_in(shard: Shard, shards: u32, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|name| cluster::shard_of(&user(name), shards) == shard)
        .take(count)
        .collect()
}

#[test]
fn nodes_agree_on_the_cluster_and_another_shard_count_is_refused() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = server.create_database();
    let rt = runtime();
    let cluster_id = rt.block_on(async {
        let a = Leases::connect(&url, options("a", 16, LONG_TTL))
            .await
            .unwrap();
        let b = Leases::connect(&url, options("b", 16, LONG_TTL))
            .await
            .unwrap();
        assert_eq!(a.cluster_id(), b.cluster_id());
        assert!(matches!(
            Leases::connect(&url, options("c", 32, LONG_TTL)).await,
            Err(LeaseError::ShardCountMismatch {
                cluster: 16,
                configured: 32
            })
        ));
        assert!(matches!(
            Leases::connect(&url, options("c", 12, LONG_TTL)).await,
            Err(LeaseError::InvalidShardCount(12))
        ));
        assert_eq!(
            Leases::connect(&url, options("c", 16, LONG_TTL))
                .await
                .unwrap()
                .owners()
                .await
                .unwrap()
                .len(),
            16
        );
        a.cluster_id()
    });
    // A node's store announces the cluster's id and holds no user.
    let mut store = PostgresStore::connect_node(&url, Fence::new(), 16).unwrap();
    let mut expected = ServerState::new();
    expected.apply(&PersistCmd::SetServerId {
        server_id: cluster_id,
    });
    assert_eq!(store.load().unwrap(), expected);
    assert!(matches!(
        PostgresStore::connect_node(&url, Fence::new(), 64),
        Err(StoreError::ClusterMismatch { .. })
    ));
    // No cluster created in a fresh database.
    assert!(matches!(
        PostgresStore::connect_node(&server.create_database(), Fence::new(), 16),
        Err(StoreError::ClusterMismatch { .. })
    ));
}

#[test]
fn acquire_renew_release_and_expiry() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = server.create_database();
    let short = Duration::from_millis(600);
    runtime().block_on(async {
        let mut a = Leases::connect(&url, options("a", 8, short)).await.unwrap();
        let mut b = Leases::connect(&url, options("b", 8, LONG_TTL))
            .await
            .unwrap();
        assert_eq!(a.heartbeat().await.unwrap(), 1);
        assert_eq!(b.heartbeat().await.unwrap(), 2);

        let first = a.acquire(3).await.unwrap();
        assert_eq!(first, vec![(Shard(0), 1), (Shard(1), 1), (Shard(2), 1)]);
        let rest = a.acquire(100).await.unwrap();
        assert_eq!(rest.len(), 5);
        assert!(b.acquire(100).await.unwrap().is_empty(), "all taken");
        let owners = b.owners().await.unwrap();
        assert!(
            owners
                .iter()
                .all(|(_, address)| address.as_deref() == Some("a.example:4433"))
        );

        // Released: free at once, the next acquisition bumps the epoch.
        a.release(Shard(1), 1).await.unwrap();
        assert_eq!(b.owners().await.unwrap()[1], (Shard(1), None));
        assert_eq!(b.acquire(1).await.unwrap(), vec![(Shard(1), 2)]);
        let held: Vec<(Shard, u64)> = first.iter().chain(&rest).copied().collect();
        let renewed = a.renew(&held).await.unwrap();
        assert_eq!(renewed.len(), 7);
        assert!(!renewed.contains(&Shard(1)), "taken by b");

        // a stops renewing: its leases (and its node row) expire, b takes
        // them under new epochs, and a's renewal finds none still its own.
        tokio::time::sleep(short + Duration::from_millis(300)).await;
        assert_eq!(b.heartbeat().await.unwrap(), 1);
        assert_eq!(b.owners().await.unwrap()[0], (Shard(0), None));
        let taken = b.acquire(100).await.unwrap();
        assert_eq!(taken.len(), 7);
        assert!(taken.iter().all(|(_, epoch)| *epoch == 2));
        assert!(a.renew(&held).await.unwrap().is_empty());
        // Releasing with a stale epoch changes nothing.
        a.release(Shard(0), 1).await.unwrap();
        assert_eq!(
            b.owners().await.unwrap()[0],
            (Shard(0), Some("b.example:4433".to_owned()))
        );
        assert!(matches!(
            a.release(Shard(8), 1).await,
            Err(LeaseError::NoSuchShard { .. })
        ));
    });
}

#[test]
fn two_nodes_racing_for_a_shard_only_one_wins() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = server.create_database();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut a = Leases::connect(&url, options("a", 1, LONG_TTL))
            .await
            .unwrap();
        let mut b = Leases::connect(&url, options("b", 1, LONG_TTL))
            .await
            .unwrap();
        for round in 1..=20u64 {
            let (won_a, won_b) = tokio::join!(a.acquire(1), b.acquire(1));
            let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
            assert_eq!(
                won_a.len() + won_b.len(),
                1,
                "round {round}: {won_a:?} {won_b:?}"
            );
            let (winner, won) = if won_a.is_empty() {
                (&mut b, won_b)
            } else {
                (&mut a, won_a)
            };
            assert_eq!(won, vec![(Shard(0), round)]);
            winner.release(Shard(0), round).await.unwrap();
        }
    });
}

/// Registers `names`, queues three messages for each and acknowledges the
/// first (so `next_seq` matters), through a node store holding every shard
/// (acquired with `leases`).
fn populate(
    rt: &tokio::runtime::Runtime,
    leases: &mut Leases,
    url: &str,
    names: &[String],
) -> Vec<PersistCmd> {
    let shards = leases.options().shards;
    let fence = Fence::new();
    for (shard, epoch) in rt.block_on(leases.acquire(shards as usize)).unwrap() {
        fence.hold(shard, epoch);
    }
    let mut store = PostgresStore::connect_node(url, fence, shards).unwrap();
    let mut cmds: Vec<PersistCmd> = names.iter().map(|n| register(n)).collect();
    for (i, name) in names.iter().enumerate() {
        let from = &names[(i + 1) % names.len()];
        cmds.extend((0..3).map(|seq| message(name, seq, from, 16)));
        cmds.push(ack(name, 0));
    }
    for chunk in cmds.chunks(500) {
        store.commit(chunk).unwrap();
    }
    assert!(store.take_fenced().is_empty());
    cmds
}

fn load_shard_returns_exactly_the_shards_users(shards: u32) {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = server.create_database();
    let rt = runtime();
    let mut leases = rt
        .block_on(Leases::connect(&url, options("a", shards, LONG_TTL)))
        .unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let cmds = populate(&rt, &mut leases, &url, &names);
    let mut users_seen = 0;
    for shard in (0..shards).map(Shard) {
        let loaded = rt.block_on(leases.load_shard(shard)).unwrap();
        let in_shard = |cmd: &&PersistCmd| {
            cmd.user()
                .is_some_and(|u| cluster::shard_of(u, shards) == shard)
        };
        assert!(loaded.iter().all(|cmd| in_shard(&cmd)), "shard {shard}");
        let expected = ServerState::replay(cmds.iter().filter(in_shard));
        assert_eq!(ServerState::replay(&loaded), expected, "shard {shard}");
        users_seen += loaded
            .iter()
            .filter(|cmd| matches!(cmd, PersistCmd::RegisterUser { .. }))
            .count();
    }
    assert_eq!(users_seen, names.len());
}

#[test]
fn load_shard_with_256_shards() {
    load_shard_returns_exactly_the_shards_users(256);
}

#[test]
fn load_shard_with_16_shards() {
    load_shard_returns_exactly_the_shards_users(16);
}

proptest::proptest! {
    /// A user's rows are in one of its cluster shard's storage shards, for
    /// every shard count; below 64 shards no other cluster shard reads it.
    #[test]
    fn storage_shards_hold_their_users_rows(name in "[a-z0-9_]{1,24}", exponent in 0u32..=16) {
        let shards = 1u32 << exponent;
        let name = user(&name);
        let own = cluster::shard_of(&name, shards);
        proptest::prop_assert!(storage_shards(own, shards).contains(&shard_of(&name)));
        if shards < u32::from(SHARD_COUNT) {
            for other in (0..shards).map(Shard).filter(|s| *s != own) {
                proptest::prop_assert!(!storage_shards(other, shards).contains(&shard_of(&name)));
            }
        }
    }
}

#[test]
fn a_stale_epoch_is_fenced_and_the_other_shards_commit() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = server.create_database();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let rt = runtime();
    let (mut a, mut b) = rt.block_on(async {
        let a = Leases::connect(&url, options("a", 4, LONG_TTL))
            .await
            .unwrap();
        let b = Leases::connect(&url, options("b", 4, LONG_TTL))
            .await
            .unwrap();
        (a, b)
    });
    let held = rt.block_on(a.acquire(4)).unwrap();
    let fence = Fence::new();
    for (shard, epoch) in &held {
        fence.hold(*shard, *epoch);
    }
    let (lost, kept) = (Shard(1), Shard(2));
    let lost_name = names_in(lost, 4, 1).remove(0);
    let kept_name = names_in(kept, 4, 1).remove(0);
    let mut store = PostgresStore::connect_node(&url, fence.clone(), 4).unwrap();
    store
        .commit(&[register(&lost_name), register(&kept_name)])
        .unwrap();
    assert!(store.take_fenced().is_empty());

    // b acquires `lost` (a's lease lapsed, simulated by releasing it in the
    // database while a's fence still holds the old epoch: a stale node).
    rt.block_on(a.release(lost, 1)).unwrap();
    assert_eq!(rt.block_on(b.acquire(1)).unwrap(), vec![(lost, 2)]);

    let thread_store = store;
    let (tx, events) = mpsc::channel();
    let thread = StoreThread::spawn(thread_store, move |event| {
        let _ = tx.send(event);
    });
    // Issued while a served both shards under epoch 1.
    thread
        .submit_under(Lsn(1), message(&lost_name, 0, &kept_name, 10), Some(1))
        .unwrap();
    thread
        .submit_under(Lsn(2), message(&kept_name, 0, &lost_name, 10), Some(1))
        .unwrap();
    thread.flush().unwrap();
    let got: Vec<StoreEvent> = events.try_iter().collect();
    assert!(
        matches!(&got[..], [StoreEvent::Fenced(s), StoreEvent::Durable(Lsn(2))] if *s == vec![lost]),
        "{got:?}"
    );
    assert_eq!(fence.epoch(lost), None, "released from the fence");
    assert_eq!(fence.epoch(kept), Some(1));

    // The stale node wrote nothing into `lost`; `kept` got its message,
    // stamped with a's epoch.
    let rows = server
        .psql(&database, "SELECT name, epoch FROM items ORDER BY name")
        .unwrap();
    assert_eq!(rows, format!("{kept_name}|1"));
    let loaded = rt.block_on(b.load_shard(lost)).unwrap();
    assert_eq!(loaded.len(), 2, "{loaded:?}"); // registration + next_seq

    // Later commands of the dropped shard are dropped (and reported) too.
    thread
        .submit_under(Lsn(3), message(&lost_name, 1, &kept_name, 10), Some(1))
        .unwrap();
    thread.flush().unwrap();
    let got: Vec<StoreEvent> = events.try_iter().collect();
    assert!(
        matches!(&got[..], [StoreEvent::Fenced(s), StoreEvent::Durable(Lsn(3))] if *s == vec![lost]),
        "{got:?}"
    );
    thread.shutdown().unwrap();
    assert_eq!(
        server
            .psql(
                &database,
                &format!("SELECT count(*) FROM items WHERE name = '{lost_name}'")
            )
            .unwrap(),
        "0"
    );
}

/// A command issued while the node served a shard under epoch 1 reaches
/// the store only after the node lost the shard and took it again under
/// epoch 3 (PostgreSQL was down meanwhile, the store was reconnecting): it
/// is not written — the core dropped what it backed, and the new owner's
/// state, loaded at epoch 3, does not have it. Written under the fence's
/// epoch at commit time (what `commit` does), it would land beside the new
/// owner's own writes: here at a sequence number the new owner hands out
/// again, so the new owner's message would be dropped by the conflict and
/// lost. Nor is the shard reported fenced: the node serves it.
#[test]
fn a_command_issued_under_an_older_epoch_is_not_written_under_a_newer_one() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = server.create_database();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let rt = runtime();
    let mut a = rt
        .block_on(Leases::connect(&url, options("a", 4, LONG_TTL)))
        .unwrap();
    let shard = Shard(1);
    let name = names_in(shard, 4, 1).remove(0);
    let fence = Fence::new();
    for (shard, epoch) in rt.block_on(a.acquire(4)).unwrap() {
        fence.hold(shard, epoch);
    }
    let mut store = PostgresStore::connect_node(&url, fence.clone(), 4).unwrap();
    store.commit_under(&[register(&name)], &[Some(1)]).unwrap();
    // Lost and taken again: epoch 1 → (released) → 2 → (released) → 3.
    for epoch in [1, 2] {
        rt.block_on(a.release(shard, epoch)).unwrap();
        fence.release_epoch(shard, epoch);
        let taken = rt.block_on(a.acquire(1)).unwrap();
        assert_eq!(taken, vec![(shard, epoch + 1)]);
        fence.hold(shard, epoch + 1);
    }
    let stale = message(&name, 0, &name, 10);
    let fresh = message(&name, 0, &name, 20);
    // In one batch, the stale command first (issued before the loss).
    store
        .commit_under(&[stale.clone(), fresh.clone()], &[Some(1), Some(3)])
        .unwrap();
    assert!(store.take_fenced().is_empty());
    // Alone in a batch of its own, it is refused by the database's fence.
    store.commit_under(&[stale], &[Some(1)]).unwrap();
    assert!(store.take_fenced().is_empty(), "the node serves the shard");
    assert_eq!(fence.epoch(shard), Some(3));
    let rows = server
        .psql(
            &database,
            "SELECT seq, length(item) > 0, epoch FROM items ORDER BY seq",
        )
        .unwrap();
    assert_eq!(rows, "0|t|3", "only the command issued under epoch 3");
    let loaded = rt.block_on(a.load_shard(shard)).unwrap();
    assert!(loaded.contains(&fresh), "{loaded:?}");
}

/// The node's renewals and its store's commits lock the same lease rows
/// (the commit `FOR SHARE`, the renewal to update them): both lock them in
/// shard order, so they never deadlock. Renewing in another order
/// deadlocked within seconds under a load (the store failed with "deadlock
/// detected" and the node stopped); the store also retries a transaction
/// PostgreSQL rolled back for a deadlock.
#[test]
fn renewals_and_commits_of_many_shards_never_deadlock() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = server.create_database();
    const SHARDS: u32 = 16;
    let rt = runtime();
    let mut leases = rt
        .block_on(Leases::connect(&url, options("a", SHARDS, LONG_TTL)))
        .unwrap();
    let held = rt.block_on(leases.acquire(SHARDS as usize)).unwrap();
    let fence = Fence::new();
    for (shard, epoch) in &held {
        fence.hold(*shard, *epoch);
    }
    // Updates move rows: the table's physical order is no longer shard
    // order (even shards after odd ones), as after hours of renewals.
    let database = url.rsplit('/').next().unwrap();
    server
        .psql(
            database,
            "UPDATE leases SET epoch = epoch WHERE shard % 2 = 0",
        )
        .unwrap();
    let names: Vec<String> = (0..SHARDS)
        .map(|s| names_in(Shard(s), SHARDS, 1).remove(0))
        .collect();
    let mut store = PostgresStore::connect_node(&url, fence, SHARDS).unwrap();
    let epoch_of = |name: &String| {
        let shard = cluster::shard_of(&user(name), SHARDS);
        held.iter().find(|(s, _)| *s == shard).map(|(_, e)| *e)
    };
    let registrations: Vec<PersistCmd> = names.iter().map(|n| register(n)).collect();
    let tags: Vec<Option<u64>> = names.iter().map(epoch_of).collect();
    store.commit_under(&registrations, &tags).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (stop, held) = (stop.clone(), held.clone());
        // Renewing in reverse order of the commits' batches.
        let mut held = held;
        held.reverse();
        std::thread::spawn(move || {
            let mut renewals = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let renewed = rt.block_on(leases.renew(&held)).unwrap();
                assert_eq!(renewed.len(), SHARDS as usize);
                renewals += 1;
            }
            renewals
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seq = 0;
    while Instant::now() < deadline {
        let batch: Vec<PersistCmd> = names
            .iter()
            .map(|n| message(n, seq, &names[0], 10))
            .collect();
        store.commit_under(&batch, &tags).unwrap();
        seq += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let renewals = renewer.join().unwrap();
    assert!(
        seq > 10 && renewals > 10,
        "{seq} commits, {renewals} renewals"
    );
}

#[test]
fn a_node_store_waits_out_a_postgres_crash() {
    let Some(mut server) = PostgresServer::start_or_skip() else {
        return;
    };
    let url = server.create_database();
    let rt = runtime();
    let mut leases = rt
        .block_on(Leases::connect(&url, options("a", 2, LONG_TTL)))
        .unwrap();
    let fence = Fence::new();
    for (shard, epoch) in rt.block_on(leases.acquire(2)).unwrap() {
        fence.hold(shard, epoch);
    }
    let kept = names_in(Shard(0), 2, 2);
    let lapsed = names_in(Shard(1), 2, 1).remove(0);
    let mut store = PostgresStore::connect_node(&url, fence.clone(), 2).unwrap();
    store
        .commit(&[register(&kept[0]), register(&lapsed)])
        .unwrap();

    server.kill9();
    let down = Duration::from_millis(1500);
    let restarted = std::thread::spawn(move || {
        std::thread::sleep(down);
        // While the database is down, the coordinator drops a shard whose
        // lease lapsed.
        assert!(fence.release(Shard(1)));
        server.restart();
        server
    });
    let started = Instant::now();
    let batch = [
        register(&kept[1]),
        message(&kept[0], 0, &kept[1], 12),
        message(&lapsed, 0, &kept[1], 12),
    ];
    store.commit(&batch).unwrap();
    assert!(
        started.elapsed() >= down,
        "the commit waited for the server"
    );
    assert_eq!(store.take_fenced(), vec![Shard(1)]);
    let _server = restarted.join().unwrap();
    // The lease connection was lost too: the call that finds out fails,
    // the next connects again.
    assert!(rt.block_on(leases.load_shard(Shard(0))).is_err());
    let loaded = rt.block_on(leases.load_shard(Shard(0))).unwrap();
    assert_eq!(
        ServerState::replay(&loaded),
        ServerState::replay(&[register(&kept[0]), batch[0].clone(), batch[1].clone()])
    );
    let loaded = rt.block_on(leases.load_shard(Shard(1))).unwrap();
    assert_eq!(
        ServerState::replay(&loaded),
        ServerState::replay(&[register(&lapsed)])
    );
}
