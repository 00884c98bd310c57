//! Two `missive-server --cluster` nodes on 127.0.0.1 and 127.0.0.2 over one
//! real PostgreSQL and one real NATS (the testkit's harnesses): the nodes
//! share the shards out, users on different nodes exchange messages both
//! ways, and a client (the library, and the `missive` CLI) that connects to
//! the node not serving it is redirected to the one that does.

#[path = "../../missive-tokio/tests/common/mod.rs"]
mod common;

use common::{install_key, next_event, next_message, user};
use missive_core::client::ClientEvent;
use missive_core::cluster::{Shard, shard_of};
use missive_testkit::{ClusterNode, NatsServer, NodeArgs, PostgresServer};
use missive_tokio::{ClientHandle, ClientOptions};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_missive-server");
const CLI: &str = env!("CARGO_BIN_EXE_missive");
const SHARDS: u32 = 16;
const WAIT: Duration = Duration::from_secs(30);

/// A free port on `host` (a loopback address).
fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_node(id: &str, host: &str, postgres: &str, nats: &str, dir: &Path) -> ClusterNode {
    ClusterNode::start(
        SERVER.as_ref(),
        NodeArgs {
            node_id: id.into(),
            listen: format!("{host}:{}", free_port(host)),
            postgres: postgres.into(),
            nats: nats.into(),
            shards: SHARDS,
            lease_ttl: "2s".into(),
            data: dir.join(id),
            extra: vec!["--plaintext".into()],
        },
    )
    .unwrap_or_else(|e| panic!("node {id}: {e}"))
}

/// The owner (node id) of every shard with an unexpired lease.
fn owners(pg: &PostgresServer, database: &str) -> HashMap<Shard, String> {
    pg.psql(
        database,
        "SELECT shard, owner FROM leases WHERE owner IS NOT NULL AND expires_at > now()",
    )
    .unwrap()
    .lines()
    .filter_map(|line| line.split_once('|'))
    .map(|(shard, owner)| (Shard(shard.parse().unwrap()), owner.to_owned()))
    .collect()
}

/// Waits until every shard is owned and each of `nodes` owns its fair
/// share (the later node got its part from the first).
fn wait_for_balance(pg: &PostgresServer, database: &str, nodes: &[&ClusterNode]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let owners = owners(pg, database);
        let counts: Vec<usize> = nodes
            .iter()
            .map(|n| owners.values().filter(|o| *o == n.node_id()).count())
            .collect();
        if owners.len() == SHARDS as usize && counts.iter().all(|c| *c == SHARDS as usize / 2) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shards not shared out: {counts:?}; logs:\n{}\n{}",
            nodes[0].log_tail(),
            nodes[1].log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A user name whose shard `owner` serves.
fn user_on(owners: &HashMap<Shard, String>, owner: &str, taken: &[String]) -> String {
    (0..1000)
        .map(|i| format!("user{i}"))
        .find(|name| {
            !taken.contains(name)
                && owners
                    .get(&shard_of(&user(name), SHARDS))
                    .map(String::as_str)
                    == Some(owner)
        })
        .expect("some name lands on every node")
}

fn client_options(server: &str, home: &Path, name: &str, key: usize) -> ClientOptions {
    install_key(home, name, key);
    let mut options = ClientOptions::new(server, home, user(name));
    options.generate_key = false;
    options.backoff_initial = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(500);
    options
}

#[test]
fn two_nodes_exchange_messages_both_ways_and_redirect_clients() {
    let Some(pg) = PostgresServer::start_or_skip() else {
        return;
    };
    let Some(nats) = NatsServer::start_or_skip() else {
        return;
    };
    let postgres = pg.create_database();
    let database = postgres.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let first = start_node("n1", "127.0.0.1", &postgres, &nats.url(), dir.path());
    let second = start_node("n2", "127.0.0.2", &postgres, &nats.url(), dir.path());
    wait_for_balance(&pg, &database, &[&first, &second]);
    let owners = owners(&pg, &database);
    let alice = user_on(&owners, first.node_id(), &[]);
    let bob = user_on(&owners, second.node_id(), &[]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let home = dir.path().join("clients");
        // Both connect to the first node: bob is redirected to the second.
        let (alice_client, mut alice_events) =
            ClientHandle::connect(client_options(first.addr(), &home, &alice, 0))
                .await
                .unwrap();
        let (bob_client, mut bob_events) =
            ClientHandle::connect(client_options(first.addr(), &home, &bob, 1))
                .await
                .unwrap_or_else(|e| panic!("bob: {e}; log:\n{}", first.log_tail()));
        let redirected_to = next_event(&mut bob_events, WAIT, |event| match event {
            ClientEvent::Redirected { address } => Some(address),
            _ => None,
        })
        .await;
        assert_eq!(
            redirected_to,
            second.addr(),
            "bob lands on his shard's owner"
        );

        // Across the nodes, both ways.
        alice_client
            .send(user(&bob), "hello bob, from node 1")
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "alice's send: {e}; logs:\n{}\n{}",
                    first.log_tail(),
                    second.log_tail()
                )
            });
        assert_eq!(
            next_message(&mut bob_events, WAIT).await,
            (alice.clone(), "hello bob, from node 1".into())
        );
        bob_client
            .send(user(&alice), "hello alice, from node 2")
            .await
            .unwrap();
        assert_eq!(
            next_message(&mut alice_events, WAIT).await,
            (bob.clone(), "hello alice, from node 2".into())
        );

        // The CLI follows redirects too: carol, served by the second node,
        // registers and sends through the first.
        let carol = user_on(&owners, second.node_id(), std::slice::from_ref(&bob));
        let cli_home = dir.path().join("cli");
        let cli = |args: &[&str]| {
            let output = std::process::Command::new(CLI)
                .args(["--server", first.addr(), "--plaintext", "--user", &carol])
                .arg("--home")
                .arg(&cli_home)
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "missive {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        tokio::task::block_in_place(|| {
            cli(&["register"]);
            cli(&["send", &alice, "hello alice, from the CLI"]);
        });
        assert_eq!(
            next_message(&mut alice_events, WAIT).await,
            (carol.clone(), "hello alice, from the CLI".into())
        );
        alice_client.close().await.unwrap();
        bob_client.close().await.unwrap();
    });
    drop((first, second));
}
