//! Coordinators against a real PostgreSQL and a real NATS (the testkit's
//! harnesses), each with a test playing its engine: they share the shards
//! out, carry a forward to the owner and its reply back, drop a fenced
//! shard, report NATS being unreachable as `Unreachable`, and hand their
//! leases back when they stop.

use futures_util::StreamExt;
use missive_cluster::{Coordinator, CoordinatorOptions};
use missive_core::UserName;
use missive_core::cluster::{ForwardId, RemoteCall, RemoteReply, Shard};
use missive_runtime::cluster::{
    ClusterCommand, ClusterCommands, ClusterEvent, ClusterEvents, cluster_link,
};
use missive_store::postgres::Fence;
use missive_testkit::{ClusterEngines, NatsServer, PostgresServer};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const SHARDS: u32 = 8;
const WAIT: Duration = Duration::from_secs(20);

/// A coordinator and the test's end of its channel, as an engine has it.
struct Node {
    coordinator: Coordinator,
    fence: Fence,
    events: ClusterEvents,
    commands: ClusterCommands,
    /// The shards it reported acquired and not lost since.
    held: BTreeSet<Shard>,
}

impl Node {
    fn start(id: &str, postgres: &str, nats: &str) -> Self {
        Self::start_with(id, postgres, nats, None)
    }

    fn start_with(id: &str, postgres: &str, nats: &str, nats_ca: Option<&Path>) -> Self {
        let mut options = CoordinatorOptions::new(id, format!("{id}.test:7878"), postgres, nats);
        options.nats_ca = nats_ca.map(Path::to_path_buf);
        options.shards = SHARDS;
        options.lease_ttl = Duration::from_millis(1500);
        options.forward_timeout = Duration::from_millis(500);
        let fence = Fence::new();
        let (link, port) = cluster_link();
        let coordinator = Coordinator::spawn(options, fence.clone(), port).unwrap();
        let (events, commands) = link.split();
        Self {
            coordinator,
            fence,
            events,
            commands,
            held: BTreeSet::new(),
        }
    }

    /// The next event, keeping `held` up to date.
    async fn next(&mut self) -> ClusterEvent {
        let event = tokio::time::timeout(WAIT, self.events.next())
            .await
            .expect("an event in time")
            .expect("the coordinator runs");
        match &event {
            ClusterEvent::Acquired { shard, .. } => {
                self.held.insert(*shard);
            }
            ClusterEvent::Lost(shard) => {
                self.held.remove(shard);
            }
            _ => {}
        }
        event
    }

    /// Reads events until `f` says done.
    async fn until(&mut self, what: &str, mut f: impl FnMut(&Self, &ClusterEvent) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
            let event = self.next().await;
            if f(self, &event) {
                return;
            }
        }
    }

    fn stop(self) {
        assert!(self.commands.send(ClusterCommand::Shutdown));
        self.coordinator.join();
    }
}

fn fetch_key() -> RemoteCall {
    RemoteCall::FetchKey {
        user: UserName::new("carol").unwrap(),
    }
}

#[test]
fn coordinators_share_shards_carry_calls_and_hand_leases_back() {
    let Some(ClusterEngines {
        pg,
        nats,
        postgres,
        database,
    }) = ClusterEngines::start_or_skip()
    else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Alone, the first node takes every shard, each into the fence.
        let mut first = Node::start("n1", &postgres, &nats.url());
        first
            .until("every shard", |n, _| n.held.len() == SHARDS as usize)
            .await;
        assert_eq!(first.fence.held().len(), SHARDS as usize);

        // A second node joins: the first hands half over, and each learns
        // where the other's shards are.
        let mut second = Node::start("n2", &postgres, &nats.url());
        first
            .until("handing half over", |n, _| n.held.len() == 4)
            .await;
        second.until("its half", |n, _| n.held.len() == 4).await;
        assert!(first.held.is_disjoint(&second.held));
        assert_eq!(first.fence.held().len(), 4, "lost shards leave the fence");
        let theirs = *second.held.first().unwrap();
        first
            .until("the owner of a shard of the second node", |_, e| {
                matches!(e, ClusterEvent::Owner { shard, address: Some(a) }
                    if *shard == theirs && a == "n2.test:7878")
            })
            .await;

        // A forward reaches the owner, and its reply comes back.
        assert!(first.commands.send(ClusterCommand::Forward {
            request: ForwardId(7),
            shard: theirs,
            call: fetch_key(),
        }));
        let mut call = None;
        second
            .until("the call", |_, e| match e {
                ClusterEvent::Remote { call: id, request } => {
                    assert_eq!(*request, fetch_key());
                    call = Some(*id);
                    true
                }
                _ => false,
            })
            .await;
        let key = RemoteReply::Key {
            public_key: vec![1, 2, 3],
        };
        assert!(second.commands.send(ClusterCommand::Reply {
            call: call.unwrap(),
            reply: key.clone(),
        }));
        first
            .until("the reply", |_, e| {
                matches!(e, ClusterEvent::Forwarded { request, reply }
                    if *request == ForwardId(7) && *reply == key)
            })
            .await;

        // The store fenced a shard: the node drops it.
        assert!(second.commands.send(ClusterCommand::Fenced(vec![theirs])));
        second
            .until("the fenced shard lost", |_, e| {
                *e == ClusterEvent::Lost(theirs)
            })
            .await;
        assert_eq!(second.fence.epoch(theirs), None);

        // Stopping hands the leases back at once (not after the TTL).
        second.stop();
        let left = pg
            .psql(
                &database,
                "SELECT count(*) FROM leases WHERE owner = 'n2' AND expires_at > now()",
            )
            .unwrap();
        assert_eq!(left, "0", "n2's leases released");
        first
            .until("every shard again", |n, _| n.held.len() == SHARDS as usize)
            .await;
        first.stop();
    });
}

#[test]
fn without_nats_leases_are_held_and_forwards_are_unreachable() {
    let Some(pg) = PostgresServer::start_or_skip() else {
        return;
    };
    let postgres = pg.create_database();
    // Nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut node = Node::start("lonely", &postgres, &format!("nats://127.0.0.1:{port}"));
        node.until("every shard", |n, _| n.held.len() == SHARDS as usize)
            .await;
        assert!(node.commands.send(ClusterCommand::Forward {
            request: ForwardId(1),
            shard: Shard(3),
            call: fetch_key(),
        }));
        node.until("the forward's answer", |_, e| {
            matches!(e, ClusterEvent::Forwarded { request, reply }
                if *request == ForwardId(1) && *reply == RemoteReply::Unreachable)
        })
        .await;
        node.stop();
    });
}

/// NATS over TLS: a coordinator given the CA of the NATS server's
/// certificate (`--nats-ca`) carries a call (here to its own shard) and its
/// reply; one verifying against the system's roots cannot reach NATS, so
/// its forwards are `Unreachable`.
#[test]
fn nats_over_tls_is_verified_against_the_given_ca() {
    let Some(pg) = PostgresServer::start_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let file = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca_file = file("ca.pem", ca.pem());
    let (cert_file, key_file) = (
        file("nats.pem", cert.pem()),
        file("nats.key", key.serialize_pem()),
    );
    let nats = match NatsServer::start_tls(&cert_file, &key_file) {
        Ok(nats) => nats,
        Err(e) if std::env::var("MISSIVE_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("NATS with TLS: {e}")
        }
        Err(e) => return eprintln!("skipping: {e}"),
    };
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let postgres = pg.create_database();
        let mut node = Node::start_with("tls", &postgres, &url, Some(&ca_file));
        node.until("every shard", |n, _| n.held.len() == SHARDS as usize)
            .await;
        let forward = |request| ClusterCommand::Forward {
            request: ForwardId(request),
            shard: Shard(2),
            call: fetch_key(),
        };
        // The subscription may still be on its way to the server: ask
        // until the call comes round.
        let mut received = None;
        for request in 1.. {
            assert!(node.commands.send(forward(request)));
            node.until("the call or its failure", |_, e| match e {
                ClusterEvent::Remote { call, .. } => {
                    received = Some(*call);
                    true
                }
                ClusterEvent::Forwarded { .. } => true,
                _ => false,
            })
            .await;
            if received.is_some() || request == 20 {
                break;
            }
        }
        let call = received.expect("the call came over TLS");
        assert!(node.commands.send(ClusterCommand::Reply {
            call,
            reply: RemoteReply::NotOwner,
        }));
        node.until("the reply over TLS", |_, e| {
            matches!(
                e,
                ClusterEvent::Forwarded {
                    reply: RemoteReply::NotOwner,
                    ..
                }
            )
        })
        .await;
        node.stop();

        // Without the CA the server's certificate is not trusted.
        let postgres = pg.create_database();
        let mut node = Node::start_with("no-ca", &postgres, &url, None);
        node.until("every shard", |n, _| n.held.len() == SHARDS as usize)
            .await;
        assert!(node.commands.send(forward(100)));
        node.until("the forward's answer", |_, e| {
            matches!(e, ClusterEvent::Forwarded { request, reply }
                if *request == ForwardId(100) && *reply == RemoteReply::Unreachable)
        })
        .await;
        node.stop();
    });
}
