//! # missive-cluster: a Missive server as one node of a cluster
//!
//! The [`Coordinator`] is the part of a cluster node that talks to the
//! engines the cluster runs on (docs/CLUSTER.md): it holds the node's shard
//! leases in PostgreSQL and carries calls between nodes over NATS (core
//! request/reply, no JetStream). It runs on its own OS thread with a
//! current-thread tokio runtime, and talks to the server's engine through
//! the channel of [`missive_runtime::cluster`]:
//!
//! - **leases**, every tick (a third of the lease TTL): a heartbeat (which
//!   counts the live nodes), renewal of every shard held, acquisition of
//!   free or expired shards up to the fair share ⌈N / live nodes⌉, release
//!   of the shards above the fair share + 1 (so that a node that joins late
//!   gets its share), and the owners of the other shards (reported to the
//!   core for redirects). An acquired shard is added to the store's
//!   [`Fence`] with its epoch, loaded, subscribed to, and reported
//!   `Acquired` with its stored state. A shard whose renewal has not
//!   succeeded by the send time of its last successful renewal + TTL −
//!   margin, on this node's monotonic clock, is dropped before its lease
//!   can expire: out of the fence, unsubscribed, reported `Lost`;
//! - **NATS**: the owner of shard `n` subscribes `missive.shard.<n>` while
//!   it holds the lease. A forward of the core is a request there (no
//!   responders, a timeout or NATS down: [`RemoteReply::Unreachable`], and
//!   the core retries); an incoming request becomes a `Remote` report with
//!   a fresh [`CallId`], answered on its reply subject when the core replies;
//! - PostgreSQL or NATS unreachable: retried with backoff for as long as
//!   the node runs; the coordinator never gives up by itself.
//!
//! The coordinator stops when the engine says
//! [`ClusterCommand::Shutdown`](missive_runtime::cluster::ClusterCommand::Shutdown)
//! (everything accepted is durable: it releases its leases) or is gone.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod leases;
mod nats;
mod node;

use missive_runtime::cluster::ClusterPort;
use missive_store::postgres::{Fence, PostgresTls};
use std::io;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

pub use leases::{connect as connect_leases, fair_share, renewal_margin};

/// The NATS subject of a shard's owner.
///
/// ```
/// use missive_core::cluster::Shard;
/// assert_eq!(missive_cluster::shard_subject(Shard(17)), "missive.shard.17");
/// ```
pub fn shard_subject(shard: missive_core::cluster::Shard) -> String {
    format!("missive.shard.{}", shard.0)
}

/// How a node joins its cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoordinatorOptions {
    /// This node's name, unique in the cluster (its lease rows say it).
    pub node_id: String,
    /// Where clients reach this node (`host:port`, or a `ws://`/`wss://`
    /// URL): what clients of its shards are redirected to.
    pub advertise: String,
    /// The PostgreSQL URL (the cluster's one store and lease arbiter).
    pub postgres: String,
    /// What TLS connections to PostgreSQL trust (`sslmode=prefer` or
    /// `require` in [`postgres`](Self::postgres)); default: the web PKI
    /// roots only.
    pub postgres_tls: PostgresTls,
    /// The NATS URL (`nats://host:port`, `tls://host:port` for TLS).
    pub nats: String,
    /// The certificate authorities (PEM) that NATS's TLS certificate must
    /// chain to; `None`: the system's root certificates.
    pub nats_ca: Option<PathBuf>,
    /// The cluster's shard count, fixed when it was created.
    pub shards: u32,
    /// How long a lease lasts without renewal (default 6 s).
    pub lease_ttl: Duration,
    /// How long a forward waits for the owner's answer (default 2 s).
    pub forward_timeout: Duration,
}

impl CoordinatorOptions {
    /// Options with the default shard count (256), lease TTL (6 s),
    /// forward timeout (2 s) and PostgreSQL TLS trust (the web PKI roots).
    pub fn new(
        node_id: impl Into<String>,
        advertise: impl Into<String>,
        postgres: impl Into<String>,
        nats: impl Into<String>,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            advertise: advertise.into(),
            postgres: postgres.into(),
            postgres_tls: PostgresTls::default(),
            nats: nats.into(),
            nats_ca: None,
            shards: 256,
            lease_ttl: Duration::from_secs(6),
            forward_timeout: Duration::from_secs(2),
        }
    }
}

/// A running coordinator (see the [crate docs](crate)). Dropping it leaves
/// its thread running until the engine's end of the channel is gone.
#[derive(Debug)]
pub struct Coordinator {
    thread: Option<JoinHandle<()>>,
}

impl Coordinator {
    /// Starts the coordinator's thread: it holds shards for the node in
    /// `fence` (the one the node's store checks every write against) and
    /// reports to the engine at the other end of `port`.
    pub fn spawn(options: CoordinatorOptions, fence: Fence, port: ClusterPort) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("missive-cluster".into())
            .spawn(move || runtime.block_on(node::run(options, fence, port)))?;
        Ok(Self {
            thread: Some(thread),
        })
    }

    /// Waits until the coordinator has stopped (after
    /// [`ClusterCommand::Shutdown`](missive_runtime::cluster::ClusterCommand::Shutdown) or once the engine is gone): its leases
    /// are released.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the cluster coordinator panicked");
        }
    }
}
