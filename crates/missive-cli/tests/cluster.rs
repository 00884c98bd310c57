//! Two `missive-server --cluster` nodes on 127.0.0.1 and 127.0.0.2 over one
//! real PostgreSQL and one real NATS (the testkit's harnesses): the nodes
//! share the shards out, users on different nodes exchange messages both
//! ways, and a client (the library, and the `missive` CLI) that connects to
//! the node not serving it is redirected to the one that does; after a
//! `kill -9` of a node the other takes its shards over and its clients come
//! back through the configured server.

#[path = "../../missive-tokio/tests/common/mod.rs"]
mod common;

use common::{install_key, next_event, next_message, user};
use missive_core::client::ClientEvent;
use missive_core::cluster::{Shard, shard_of};
use missive_testkit::{ClusterEngines, ClusterNode, NodeArgs, PostgresServer};
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
    start_node_with(id, host, postgres, nats, dir, vec!["--plaintext".into()])
}

fn start_node_with(
    id: &str,
    host: &str,
    postgres: &str,
    nats: &str,
    dir: &Path,
    extra: Vec<String>,
) -> ClusterNode {
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
            extra,
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
    let Some(ClusterEngines {
        pg,
        nats,
        postgres,
        database,
    }) = ClusterEngines::start_or_skip()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = start_node("n1", "127.0.0.1", &postgres, &nats.url(), dir.path());
    let mut second = start_node("n2", "127.0.0.2", &postgres, &nats.url(), dir.path());
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

        // kill -9 of the second node: the first takes its shards over once
        // their leases expire, and bob's client, finding his node gone,
        // goes back to the configured server, which now serves him.
        second.sigkill();
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + WAIT;
            while owners_of(&pg, &database, first.node_id()) < SHARDS as usize {
                assert!(
                    Instant::now() < deadline,
                    "no takeover: {}",
                    first.log_tail()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        alice_client
            .send(user(&bob), "still there, bob?")
            .await
            .unwrap();
        assert_eq!(
            next_message(&mut bob_events, WAIT).await,
            (alice.clone(), "still there, bob?".into())
        );
        alice_client.close().await.unwrap();
        bob_client.close().await.unwrap();
    });
    drop((first, second));
}

/// How many shards `node` holds an unexpired lease on.
fn owners_of(pg: &PostgresServer, database: &str, node: &str) -> usize {
    owners(pg, database).values().filter(|o| *o == node).count()
}

/// Writes a CA to `dir/ca.pem` and, for each host, a certificate it issued
/// (`dir/HOST.pem`, `dir/HOST.key`).
fn cluster_ca(dir: &Path, hosts: &[&str]) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for host in hosts {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![(*host).to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.join(format!("{host}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{host}.key")), key.serialize_pem()).unwrap();
    }
}

/// TLS nodes with certificates from one CA: the CLI given that CA
/// (`--ca`) is redirected from node to node and verifies each. (A redirect
/// away from a certificate pinned on first use is refused: tests/redirect.rs
/// at the workspace root.)
#[test]
fn tls_nodes_of_one_ca_redirect_a_cli_given_the_ca() {
    let Some(ClusterEngines {
        pg,
        nats,
        postgres,
        database,
    }) = ClusterEngines::start_or_skip()
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hosts = ["127.0.0.1", "127.0.0.2"];
    cluster_ca(dir.path(), &hosts);
    let tls = |host: &str| {
        let file = |ext: &str| {
            dir.path()
                .join(format!("{host}.{ext}"))
                .display()
                .to_string()
        };
        vec![
            "--tls-cert".to_owned(),
            file("pem"),
            "--tls-key".to_owned(),
            file("key"),
        ]
    };
    let first = start_node_with(
        "n1",
        hosts[0],
        &postgres,
        &nats.url(),
        dir.path(),
        tls(hosts[0]),
    );
    let second = start_node_with(
        "n2",
        hosts[1],
        &postgres,
        &nats.url(),
        dir.path(),
        tls(hosts[1]),
    );
    wait_for_balance(&pg, &database, &[&first, &second]);
    let owners = owners(&pg, &database);
    let dave = user_on(&owners, first.node_id(), &[]);
    let erin = user_on(&owners, second.node_id(), &[]);
    let ca = dir.path().join("ca.pem");
    let cli = |name: &str, args: &[&str]| {
        std::process::Command::new(CLI)
            .args(["--server", first.addr(), "--user", name])
            .arg("--home")
            .arg(dir.path().join("clients"))
            .arg("--ca")
            .arg(&ca)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    ok(cli(&dave, &["register"]));
    // erin is served by the second node: redirected, verified by the CA.
    ok(cli(&erin, &["register"]));
    ok(cli(&erin, &["send", &dave, "over TLS, across nodes"]));
    let shown = ok(cli(&dave, &["listen", "--count", "1", "--timeout", "30"]));
    assert!(shown.contains("over TLS, across nodes"), "{shown}");
}

/// SIGSTOP of a node past its leases: the other takes its shards over;
/// after SIGCONT the frozen node drops them instead of serving them (its
/// renewals are overdue), and its clients move to the new owner (redirect)
/// and get their messages there.
#[test]
fn a_frozen_node_gives_its_shards_up_and_its_clients_move() {
    let Some(ClusterEngines {
        pg,
        nats,
        postgres,
        database,
    }) = ClusterEngines::start_or_skip()
    else {
        return;
    };
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
        let (alice_client, _alice_events) =
            ClientHandle::connect(client_options(first.addr(), &home, &alice, 0))
                .await
                .unwrap();
        // bob connects to his node directly.
        let (bob_client, mut bob_events) =
            ClientHandle::connect(client_options(second.addr(), &home, &bob, 1))
                .await
                .unwrap();
        second.sigstop();
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + WAIT;
            while owners_of(&pg, &database, first.node_id()) < SHARDS as usize {
                assert!(
                    Instant::now() < deadline,
                    "no takeover: {}",
                    first.log_tail()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        second.sigcont();
        alice_client
            .send(user(&bob), "after the freeze")
            .await
            .unwrap();
        // bob's node closed his session when it gave his shard up; it
        // redirected him to the new owner, where the message waited.
        let mut redirects = Vec::new();
        let received = next_event(&mut bob_events, WAIT, |event| match event {
            ClientEvent::Redirected { address } => {
                redirects.push(address);
                None
            }
            ClientEvent::MessageReceived { from, body, .. } => Some((from, body)),
            _ => None,
        })
        .await;
        assert_eq!(received, (user(&alice), b"after the freeze".to_vec()));
        assert_eq!(redirects, [first.addr()], "bob moved to the new owner");
        alice_client.close().await.unwrap();
        bob_client.close().await.unwrap();
    });
    // (It may have taken shards back since, the cluster rebalancing.)
    let log = std::fs::read_to_string(second.log()).unwrap();
    assert!(log.contains("dropping the shard"), "{}", second.log_tail());
    drop((first, second));
}
