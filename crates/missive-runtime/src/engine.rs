//! The server side of a driver, minus sockets and timers: the
//! [`ServerEngine`] owns the core [`Server`], the store (on its own thread,
//! or inline for an in-memory store) and one outbound queue per connection,
//! and routes every output of the core.
//!
//! A driver (one task owning the engine) loops:
//!
//! 1. on a new socket: [`ServerEngine::admit`] (or
//!    [`accept`](ServerEngine::accept), without the connection limit) gives a
//!    connection id, the writer's [`OutboundReceiver`] and the reader's
//!    [`StopSignal`]; the driver starts a reader and a writer for the socket;
//! 2. on [`ConnEvent`]s from readers:
//!    [`conn_events`](ServerEngine::conn_events) (a batch of up to
//!    [`INBOUND_BATCH`]), or [`received`](ServerEngine::received) /
//!    [`disconnected`](ServerEngine::disconnected) one by one;
//! 3. on what the store thread's [`StoreEvents`] stream yields:
//!    [`store_report`](ServerEngine::store_report) (an error stops the
//!    server), or [`store_event`](ServerEngine::store_event); a store that
//!    is only unavailable for now (a full disk) does not stop it: the core
//!    refuses sends and registrations until the store is back
//!    ([`storage_available`](ServerEngine::storage_available));
//! 4. at [`poll_timeout`](ServerEngine::poll_timeout):
//!    [`timeout`](ServerEngine::timeout);
//! 5. on a cluster node, on what the coordinator's [`ClusterEvents`] stream
//!    yields: [`cluster_report`](ServerEngine::cluster_report);
//! 6. to stop: [`shutdown`](ServerEngine::shutdown).
//!
//! Every call feeds the core and routes what comes out: `Transmit` into the
//! connection's bounded queue (a full queue drops the connection as a slow
//! consumer and reports it `Disconnected` to the core, which keeps its
//! undelivered items queued), `Close` to the queue, `Persist` to the store
//! thread, `Event` to `tracing`, `Forward` and `Reply` to the cluster
//! coordinator ([`attach_cluster`](ServerEngine::attach_cluster)). The
//! engine never looks inside a packet.
//!
//! On a cluster node the store may refuse a shard's writes (its lease moved
//! to another node): the engine feeds `ShardLost` to the core for each such
//! shard before the durability report that follows, and tells the
//! coordinator ([`ClusterCommand::Fenced`]).
//!
//! A store whose [`Store::commits_inline`] is true (the in-memory store) gets
//! no thread: the engine commits what an input produced right after it and
//! feeds the durability report back at once, which saves two thread wake-ups
//! per command round trip (latency at low load). Its failures still arrive
//! on [`StoreEvents`].

use crate::cluster::{ClusterCommand, ClusterCommands, ClusterEvent};
use crate::metrics::{Metrics, TransportKind};
use crate::os::{os_seed, unix_ms_now};
use crate::queue::{
    OutboundReceiver, OutboundSender, QueueLimits, StopSignal, TrySendError, outbound,
};
pub use crate::removals::UserRemoved;
use crate::removals::{RemovalReply, Removals};
use futures_channel::mpsc;
use futures_util::Stream;
use missive_core::cluster::{Shard, shard_of};
use missive_core::server::PersistCmd;
use missive_core::server::{CloseReason, Input, Output, Server, ServerConfig, ServerEvent};
use missive_core::wire::Link;
use missive_core::{ConnId, Lsn, UserName};
use missive_store::{CommitReport, Store, StoreError, StoreEvent, StoreStats, StoreThread};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// Reader events a driver feeds at once (see
/// [`conn_events`](ServerEngine::conn_events)) before it looks at its timers
/// and the store again.
pub const INBOUND_BATCH: usize = 64;

/// What a connection's reader reports to the task owning the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// Bytes read from the connection.
    Bytes(ConnId, Vec<u8>),
    /// The connection ended (end of stream, error, or stopped by the
    /// engine). Reported exactly once per connection, as the reader's last
    /// word.
    Closed(ConnId),
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store could not be loaded.
    #[error("cannot load the store: {0}")]
    Store(#[from] StoreError),
    /// The OS random generator failed.
    #[error("cannot seed the server: {0}")]
    Seed(#[source] io::Error),
}

/// The cluster coordinator stopped while the node was serving: the node
/// cannot keep its leases, so it must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cluster coordinator stopped")]
pub struct CoordinatorGone;

/// Durability reports of the store thread, in order. A `Stream`; also
/// [`recv`](StoreEvents::recv).
#[derive(Debug)]
pub struct StoreEvents {
    rx: mpsc::UnboundedReceiver<StoreEvent>,
}

impl StoreEvents {
    /// The next report (`None` once the store thread has stopped).
    pub async fn recv(&mut self) -> Option<StoreEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut self.rx).poll_next(cx)).await
    }
}

impl Stream for StoreEvents {
    type Item = StoreEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StoreEvent>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

/// Counters of an engine, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections dropped because their outbound queue was full.
    pub slow_consumers: u64,
    /// Commands handed to the store.
    pub persisted: u64,
    /// The highest LSN reported durable.
    pub durable: Lsn,
}

/// Where persistence commands go.
enum Persistence {
    /// Group commit on the store's own thread; reports arrive on
    /// [`StoreEvents`].
    Thread(StoreThread),
    /// Committed on the engine's thread after each input.
    Inline(InlineStore),
}

/// A store committed inline (see the [module docs](self)).
struct InlineStore {
    store: Box<dyn Store>,
    /// Commands of the current input, in LSN order, and the last LSN.
    batch: Vec<PersistCmd>,
    last: Option<Lsn>,
    stats: StoreStats,
    /// Where a commit failure is reported (the [`StoreEvents`] stream).
    events: mpsc::UnboundedSender<StoreEvent>,
}

impl InlineStore {
    /// Commits the batch; `Some(lsn)` when it became durable up to `lsn`,
    /// with the commit's report.
    fn commit(&mut self) -> Result<Option<(Lsn, CommitReport)>, StoreError> {
        let Some(lsn) = self.last else {
            return Ok(None);
        };
        let started = Instant::now();
        self.store.commit(&self.batch)?;
        let report = CommitReport::new(self.batch.len(), started.elapsed());
        let n = self.batch.len() as u64;
        self.stats.commits += 1;
        self.stats.commands += n;
        self.stats.largest_batch = self.stats.largest_batch.max(n);
        self.stats.durable_lsn = Some(lsn);
        self.batch.clear();
        self.last = None;
        Ok(Some((lsn, report)))
    }
}

/// The runtime-independent half of a server driver. See the
/// [module docs](self).
pub struct ServerEngine {
    server: Server,
    store: Option<Persistence>,
    conns: HashMap<ConnId, OutboundSender>,
    next_conn: u64,
    limits: QueueLimits,
    stats: EngineStats,
    store_stopped: bool,
    /// Where forwards, replies and fenced shards go on a cluster node.
    cluster: Option<ClusterCommands>,
    /// On a cluster node: the shards the core serves, with the lease epoch
    /// it serves each under. Every command is submitted with its shard's
    /// epoch here, so the store writes it under the ownership that issued
    /// it, never a later one ([`Store::commit_under`]).
    served: HashMap<Shard, u64>,
    /// Operators' removals of users waiting for the core's answer.
    removals: Removals,
    /// Where the engine counts what happens.
    metrics: Metrics,
    /// Every connection the core knows: its transport, and whether it is
    /// logged in (for the connection gauges; dropped when the core reports
    /// it closed).
    transports: HashMap<ConnId, (TransportKind, bool)>,
}

impl fmt::Debug for ServerEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerEngine")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ServerEngine {
    /// Loads `store`, starts its thread (unless it
    /// [commits inline](Store::commits_inline)) and a core server over the
    /// stored state (seeded from the OS, on the current clocks). Durability
    /// reports and store failures arrive on the returned [`StoreEvents`];
    /// feed each to [`store_event`](ServerEngine::store_event).
    pub fn start(
        config: ServerConfig,
        store: Box<dyn Store>,
        limits: QueueLimits,
    ) -> Result<(Self, StoreEvents), EngineError> {
        Self::start_with(config, store, limits, Metrics::new())
    }

    /// [`start`](ServerEngine::start), counting into `metrics` (the store's
    /// commits included, from its thread).
    pub fn start_with(
        config: ServerConfig,
        mut store: Box<dyn Store>,
        limits: QueueLimits,
        metrics: Metrics,
    ) -> Result<(Self, StoreEvents), EngineError> {
        let state = store.load()?;
        let seed = os_seed().map_err(EngineError::Seed)?;
        let users = state.user_count();
        let queued = state.queued_items();
        let (tx, rx) = mpsc::unbounded();
        let persistence = if store.commits_inline() {
            Persistence::Inline(InlineStore {
                store,
                batch: Vec::new(),
                last: None,
                stats: StoreStats::default(),
                events: tx,
            })
        } else {
            let commits = metrics.clone();
            Persistence::Thread(StoreThread::spawn_reporting(
                store,
                move |event| {
                    let _ = tx.unbounded_send(event);
                },
                move |report| commits.commit(report),
            ))
        };
        let now = Instant::now();
        let server = Server::new(config, state, seed, now, unix_ms_now());
        tracing::info!(users, queued, "server state loaded");
        let mut engine = Self {
            server,
            store: Some(persistence),
            conns: HashMap::new(),
            next_conn: 1,
            limits,
            stats: EngineStats::default(),
            store_stopped: false,
            cluster: None,
            served: HashMap::new(),
            removals: Removals::default(),
            metrics,
            transports: HashMap::new(),
        };
        engine.metrics.set_store_available(true);
        engine.drain(now);
        Ok((engine, StoreEvents { rx }))
    }

    /// Makes this engine a cluster node's: the core's forwards and replies,
    /// and the shards the store fences, go to the coordinator through
    /// `commands`; feed the coordinator's reports to
    /// [`cluster_report`](ServerEngine::cluster_report).
    pub fn attach_cluster(&mut self, commands: ClusterCommands) {
        self.cluster = Some(commands);
    }

    /// What the coordinator's [`ClusterEvents`](crate::cluster::ClusterEvents)
    /// stream yielded. `None` (the coordinator is gone) is an error: the
    /// node can no longer hold its shards, the driver must stop serving.
    pub fn cluster_report(
        &mut self,
        now: Instant,
        event: Option<ClusterEvent>,
    ) -> Result<(), CoordinatorGone> {
        match event {
            Some(event) => {
                self.cluster_event(now, event);
                Ok(())
            }
            None => {
                tracing::error!("the cluster coordinator stopped, shutting down");
                Err(CoordinatorGone)
            }
        }
    }

    /// Feeds one report of the coordinator to the core.
    pub fn cluster_event(&mut self, now: Instant, event: ClusterEvent) {
        let input = match &event {
            ClusterEvent::Acquired {
                shard,
                epoch,
                state,
            } => {
                tracing::info!(%shard, epoch, commands = state.len(), "shard acquired");
                self.served.insert(*shard, *epoch);
                Input::ShardAcquired {
                    shard: *shard,
                    state,
                }
            }
            ClusterEvent::Lost(shard) => {
                tracing::info!(%shard, "shard lost");
                self.served.remove(shard);
                Input::ShardLost(*shard)
            }
            ClusterEvent::Owner { shard, address } => Input::OwnerChanged {
                shard: *shard,
                address: address.as_deref(),
            },
            ClusterEvent::Forwarded { request, reply } => Input::Forwarded {
                request: *request,
                reply,
            },
            ClusterEvent::Remote { call, request } => Input::Remote {
                call: *call,
                request,
            },
        };
        self.server.handle_input(now, input);
        self.drain(now);
    }

    /// Registers a new transport connection (framing and channel binding in
    /// `link`): returns its id, the queue its writer drains and the signal
    /// its reader watches.
    pub fn accept(&mut self, now: Instant, link: Link) -> (ConnId, OutboundReceiver, StopSignal) {
        self.accept_over(now, link, TransportKind::of(&link))
    }

    /// [`accept`](ServerEngine::accept), counted as a connection over
    /// `transport`.
    pub fn accept_over(
        &mut self,
        now: Instant,
        link: Link,
        transport: TransportKind,
    ) -> (ConnId, OutboundReceiver, StopSignal) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let (tx, rx, stop) = outbound(self.limits);
        self.conns.insert(conn, tx);
        self.stats.accepted += 1;
        self.transports.insert(conn, (transport, false));
        self.metrics.connection_opened(transport);
        self.server.handle_input(now, Input::Connected(conn, link));
        self.drain(now);
        (conn, rx, stop)
    }

    /// Registers a new socket from `peer` over `transport` like
    /// [`accept_over`](ServerEngine::accept_over), unless `max_connections`
    /// are open: then `None`, and the driver closes the socket at once.
    pub fn admit(
        &mut self,
        now: Instant,
        max_connections: usize,
        peer: Option<SocketAddr>,
        link: Link,
        transport: TransportKind,
    ) -> Option<(ConnId, OutboundReceiver, StopSignal)> {
        if self.conns.len() >= max_connections {
            tracing::warn!(?peer, "connection limit reached, refusing");
            return None;
        }
        let accepted = self.accept_over(now, link, transport);
        tracing::debug!(conn = accepted.0.0, ?peer, "connection accepted");
        Some(accepted)
    }

    /// Handles `first` and then up to [`INBOUND_BATCH`] − 1 more readers'
    /// events that are ready at once (`next_ready` returns them without
    /// waiting), so that a busy inbound channel cannot starve the driver's
    /// other sources.
    pub fn conn_events(
        &mut self,
        now: Instant,
        first: ConnEvent,
        mut next_ready: impl FnMut() -> Option<ConnEvent>,
    ) {
        self.conn_event(now, first);
        for _ in 1..INBOUND_BATCH {
            match next_ready() {
                Some(event) => self.conn_event(now, event),
                None => break,
            }
        }
    }

    /// Handles one event of a connection's reader.
    pub fn conn_event(&mut self, now: Instant, event: ConnEvent) {
        match event {
            ConnEvent::Bytes(conn, bytes) => self.received(now, conn, &bytes),
            ConnEvent::Closed(conn) => self.disconnected(now, conn),
        }
    }

    /// Bytes arrived on `conn`.
    pub fn received(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        if !self.conns.contains_key(&conn) {
            return; // closed by the engine; late bytes
        }
        self.server.handle_input(now, Input::Bytes(conn, bytes));
        self.drain(now);
    }

    /// `conn` is gone.
    pub fn disconnected(&mut self, now: Instant, conn: ConnId) {
        if let Some(tx) = self.conns.remove(&conn) {
            tx.abort();
            self.server.handle_input(now, Input::Disconnected(conn));
            self.drain(now);
        }
    }

    /// The store refused the writes of `shards`: the core loses them (before
    /// the durability report that follows) and the coordinator is told.
    fn fenced(&mut self, now: Instant, shards: Vec<Shard>) {
        tracing::warn!(?shards, "writes refused by the fence: shards lost");
        for shard in &shards {
            self.served.remove(shard);
            self.server.handle_input(now, Input::ShardLost(*shard));
        }
        self.drain(now);
        if let Some(cluster) = &self.cluster {
            cluster.send(ClusterCommand::Fenced(shards));
        }
    }

    /// A report of the store thread. Returns the store's error if a commit
    /// failed for good: the driver should then stop the server (nothing
    /// more will become durable). A store that is unavailable for now
    /// ([`StoreEvent::Unavailable`], retrying) and back
    /// ([`StoreEvent::Available`]) is told to the core, which refuses sends
    /// and registrations meanwhile.
    pub fn store_event(&mut self, now: Instant, event: StoreEvent) -> Result<(), StoreError> {
        match event {
            StoreEvent::Durable(lsn) => {
                self.stats.durable = self.stats.durable.max(lsn);
                self.server.handle_input(now, Input::Durable(lsn));
                self.drain(now);
                Ok(())
            }
            StoreEvent::Failed(e) => {
                self.store_stopped = true;
                self.metrics.set_store_available(false);
                Err(e)
            }
            StoreEvent::Fenced(shards) => {
                self.fenced(now, shards);
                Ok(())
            }
            StoreEvent::Unavailable(e) => {
                tracing::warn!(
                    "store unavailable, refusing sends and registrations until a commit succeeds: {e}"
                );
                self.server
                    .handle_input(now, Input::StorageAvailable(false));
                self.drain(now);
                Ok(())
            }
            StoreEvent::Available => {
                tracing::info!("store available again, accepting sends and registrations");
                self.server.handle_input(now, Input::StorageAvailable(true));
                self.drain(now);
                Ok(())
            }
            other => {
                tracing::debug!(?other, "store event");
                Ok(())
            }
        }
    }

    /// What the [`StoreEvents`] stream yielded (`None`: the store thread is
    /// gone). An error means the driver must stop serving (nothing more will
    /// become durable) and fail with it.
    pub fn store_report(
        &mut self,
        now: Instant,
        event: Option<StoreEvent>,
    ) -> Result<(), StoreError> {
        let result = match event {
            Some(event) => self.store_event(now, event),
            None => Err(StoreError::Stopped),
        };
        result.inspect_err(|e| tracing::error!("store failure, shutting down: {e}"))
    }

    /// The time from [`poll_timeout`](ServerEngine::poll_timeout) has come.
    pub fn timeout(&mut self, now: Instant) {
        self.server.handle_input(now, Input::Timeout);
        self.drain(now);
    }

    /// When to call [`timeout`](ServerEngine::timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    /// An operator removes `user` ([`Input::RemoveUser`]); `reply` gets
    /// the core's answer, once the removal is durable (or at once if it is
    /// refused).
    pub fn remove_user(&mut self, user: UserName, reply: RemovalReply) {
        let now = Instant::now();
        self.removals.wait(user.clone(), reply);
        self.server.handle_input(now, Input::RemoveUser(&user));
        self.drain(now);
    }

    /// Whether the store can make changes durable now: `false` from a
    /// [`StoreEvent::Unavailable`] to the next [`StoreEvent::Available`]
    /// (sends and registrations are refused meanwhile). For `/readyz`.
    pub fn storage_available(&self) -> bool {
        self.server.storage_available()
    }

    /// Where the engine counts (the driver's admin listener reads it).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The core server (read-only: for metrics and tests).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Open connections known to the engine.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Stops: tells every client the server is shutting down, closes every
    /// connection after its queued bytes, makes every submitted command
    /// durable and stops the store thread. Blocks while the store commits.
    pub fn shutdown(mut self, now: Instant) -> Result<StoreStats, StoreError> {
        self.server.shutdown(now);
        self.drain(now);
        for (_, tx) in self.conns.drain() {
            tx.close();
        }
        let stopped = match self.store.take() {
            Some(Persistence::Thread(store)) => store.shutdown(),
            Some(Persistence::Inline(inline)) if !self.store_stopped => Ok(inline.stats),
            _ => Err(StoreError::Stopped),
        };
        // Everything accepted is durable (or the store failed): the leases
        // can go.
        if let Some(cluster) = self.cluster.take() {
            cluster.send(ClusterCommand::Shutdown);
        }
        stopped
    }

    /// Routes every output of the core; with an inline store, commits what
    /// came out, reports it durable and routes what that releases, until
    /// nothing is left.
    fn drain(&mut self, now: Instant) {
        loop {
            self.route_outputs(now);
            match self.commit_inline() {
                Some(lsn) => {
                    self.stats.durable = self.stats.durable.max(lsn);
                    self.server.handle_input(now, Input::Durable(lsn));
                }
                None => break,
            }
        }
        let state = self.server.state();
        self.metrics
            .set_queued(state.queued_items(), state.queued_bytes());
    }

    /// Commits an inline store's batch; the LSN made durable, if any.
    fn commit_inline(&mut self) -> Option<Lsn> {
        let Some(Persistence::Inline(inline)) = &mut self.store else {
            return None;
        };
        match inline.commit() {
            Ok(committed) => committed.map(|(lsn, report)| {
                self.metrics.commit(&report);
                lsn
            }),
            Err(e) => {
                tracing::error!("store commit failed, changes are no longer durable: {e}");
                let _ = inline.events.unbounded_send(StoreEvent::Failed(e));
                self.store = None;
                self.store_stopped = true;
                self.metrics.set_store_available(false);
                None
            }
        }
    }

    fn route_outputs(&mut self, now: Instant) {
        while let Some(output) = self.server.poll_output() {
            match output {
                Output::Transmit { conn, bytes } => self.transmit(now, conn, bytes),
                Output::Close { conn } => {
                    if let Some(tx) = self.conns.remove(&conn) {
                        tx.close();
                    }
                }
                Output::Persist { lsn, cmd } => {
                    self.stats.persisted += 1;
                    let submitted = match &mut self.store {
                        Some(Persistence::Thread(store)) if self.cluster.is_some() => {
                            let epoch = self.server.config().cluster.and_then(|cluster| {
                                let user = cmd.user()?;
                                self.served.get(&shard_of(user, cluster.shards)).copied()
                            });
                            store.submit_under(lsn, cmd, epoch)
                        }
                        Some(Persistence::Thread(store)) => store.submit(lsn, cmd),
                        Some(Persistence::Inline(inline)) => {
                            inline.batch.push(cmd);
                            inline.last = Some(lsn);
                            Ok(())
                        }
                        None => Err(StoreError::Stopped),
                    };
                    if let Err(e) = submitted
                        && !std::mem::replace(&mut self.store_stopped, true)
                    {
                        self.metrics.set_store_available(false);
                        tracing::error!("store stopped, changes are no longer durable: {e}");
                    }
                }
                Output::Event(event) => {
                    self.removals.on_event(&event);
                    self.count(&event);
                    log_event(&event);
                }
                Output::Forward {
                    request,
                    shard,
                    call,
                } => self.send_to_coordinator(ClusterCommand::Forward {
                    request,
                    shard,
                    call,
                }),
                Output::Reply { call, reply } => {
                    self.send_to_coordinator(ClusterCommand::Reply { call, reply })
                }
            }
        }
    }

    /// Counts `event`: by the connection's transport for logins and ends of
    /// connections, in [`Metrics::server_event`] for the rest.
    fn count(&mut self, event: &ServerEvent) {
        match event {
            ServerEvent::LoggedIn { conn, .. } => {
                if let Some((transport, logged_in)) = self.transports.get_mut(conn) {
                    *logged_in = true;
                    self.metrics.connection_logged_in(*transport);
                }
            }
            ServerEvent::ConnectionClosed { conn, .. } => {
                if let Some((transport, logged_in)) = self.transports.remove(conn) {
                    self.metrics.connection_closed(transport, logged_in);
                }
            }
            other => self.metrics.server_event(other),
        }
    }

    /// A forward or a reply of the core (only a cluster node's core emits
    /// them; without a coordinator they have nowhere to go).
    fn send_to_coordinator(&self, command: ClusterCommand) {
        match &self.cluster {
            Some(cluster) => {
                if !cluster.send(command) {
                    tracing::warn!("the cluster coordinator is gone: call dropped");
                }
            }
            None => tracing::error!(?command, "a cluster output without a coordinator"),
        }
    }

    fn transmit(&mut self, now: Instant, conn: ConnId, bytes: Vec<u8>) {
        let Some(tx) = self.conns.get(&conn) else {
            return;
        };
        match tx.try_send(bytes) {
            Ok(()) => {}
            Err(TrySendError::Full) => {
                let (frames, queued) = tx.queued();
                tracing::info!(
                    conn = conn.0,
                    frames,
                    queued,
                    "slow consumer: outbound queue full, dropping the connection"
                );
                self.stats.slow_consumers += 1;
                self.metrics.slow_consumer();
                if let Some(tx) = self.conns.remove(&conn) {
                    tx.abort();
                }
                // The core keeps undelivered items queued for the next session.
                self.server.handle_input(now, Input::Disconnected(conn));
            }
            Err(TrySendError::Closed) => {
                // The writer is gone (write error); its reader reports the
                // end of the connection.
            }
        }
    }
}

fn log_event(event: &ServerEvent) {
    match event {
        ServerEvent::UserRegistered { user } => tracing::info!(%user, "user registered"),
        ServerEvent::LoggedIn { conn, user } => tracing::info!(conn = conn.0, %user, "logged in"),
        ServerEvent::PresenceChanged { user, online } => {
            tracing::debug!(%user, online, "presence changed")
        }
        ServerEvent::ConnectionClosed { conn, user, reason } => match reason {
            CloseReason::TransportClosed => {
                tracing::debug!(conn = conn.0, user = ?user, "connection closed")
            }
            reason => {
                tracing::info!(conn = conn.0, user = ?user, ?reason, "connection closed by the server")
            }
        },
        ServerEvent::Undeliverable { user, seq, error } => {
            tracing::warn!(%user, seq, %error, "stored item exceeds max_frame: expired, sender notified")
        }
        ServerEvent::StorageAvailability { available } => {
            tracing::debug!(available, "storage availability changed")
        }
        ServerEvent::ReplyNotSent { conn, error } => {
            tracing::error!(conn = conn.0, %error, "reply not sent")
        }
        ServerEvent::UserRemoved {
            user,
            items,
            sessions_closed,
        } => tracing::info!(%user, items, sessions_closed, "user removed by the operator"),
        ServerEvent::UserNotRemoved { user, error } => {
            tracing::info!(%user, %error, "user not removed")
        }
        other => tracing::debug!(?other, "server event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::WriterStep;
    use missive_store::MemoryStore;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Waker;

    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        pin!(f).poll(&mut cx)
    }

    /// Feeds durability reports until none is pending.
    fn settle(engine: &mut ServerEngine, events: &mut StoreEvents) {
        if let Some(Persistence::Thread(store)) = &engine.store {
            store.flush().unwrap();
        }
        while let Poll::Ready(Some(event)) = poll_once(events.recv()) {
            engine.store_event(Instant::now(), event).unwrap();
        }
    }

    #[test]
    fn admit_keeps_the_limit_a_batch_takes_ready_events_a_lost_store_stops() {
        let (mut engine, _events) = ServerEngine::start(
            ServerConfig::default(),
            Box::new(MemoryStore::new()),
            QueueLimits::default(),
        )
        .unwrap();
        let now = Instant::now();
        let (first, _rx, _stop) = engine
            .admit(now, 2, None, Link::PLAINTEXT, TransportKind::Tcp)
            .unwrap();
        let (second, _rx2, _stop2) = engine
            .admit(now, 2, None, Link::PLAINTEXT, TransportKind::Tcp)
            .unwrap();
        assert!(
            engine
                .admit(now, 2, None, Link::PLAINTEXT, TransportKind::Tcp)
                .is_none(),
            "limit reached"
        );
        assert_eq!(engine.stats().accepted, 2);
        // A batch takes the first event and what is ready after it.
        let mut ready = vec![ConnEvent::Closed(second)];
        engine.conn_events(now, ConnEvent::Closed(first), || ready.pop());
        assert_eq!(engine.connection_count(), 0);
        assert!(
            engine
                .admit(now, 2, None, Link::PLAINTEXT, TransportKind::Tcp)
                .is_some(),
            "room again"
        );
        // The store thread gone: the driver must stop.
        assert!(engine.store_report(now, None).is_err());
    }

    #[test]
    fn hello_gets_welcome_and_handshake_deadline_closes() {
        let mut config = ServerConfig::default();
        config.handshake_timeout = std::time::Duration::from_millis(1);
        let store = MemoryStore::new();
        let (mut engine, mut events) =
            ServerEngine::start(config, Box::new(store.clone()), QueueLimits::default()).unwrap();
        settle(&mut engine, &mut events);
        assert!(store.state().server_id().is_some(), "server id persisted");
        let now = Instant::now();
        let (conn, mut rx, stop) = engine.accept(now, Link::PLAINTEXT);
        let hello = missive_core::wire::encode_frame(
            &missive_core::wire::ClientPacket::Hello { versions: vec![1] },
            1 << 16,
        )
        .unwrap();
        engine.received(now, conn, &hello);
        let mut batch = Vec::new();
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Write)
        );
        assert!(!batch.is_empty());
        batch.clear();
        let deadline = engine.poll_timeout().unwrap();
        engine.timeout(deadline + std::time::Duration::from_millis(5));
        // The Timeout error frame, then the close.
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Write)
        );
        batch.clear();
        assert_eq!(
            poll_once(rx.next_batch(&mut batch)),
            Poll::Ready(WriterStep::Finish)
        );
        assert!(stop.is_stopped());
        assert_eq!(engine.connection_count(), 0);
        engine.disconnected(now, conn); // the reader's last word: harmless
        let stats = engine.shutdown(Instant::now()).unwrap();
        assert!(stats.commands >= 1);
    }

    #[test]
    fn slow_consumer_is_dropped() {
        let store = MemoryStore::new();
        let (mut engine, _events) = ServerEngine::start(
            ServerConfig::default(),
            Box::new(store),
            QueueLimits::new(1, 1),
        )
        .unwrap();
        let now = Instant::now();
        let (conn, rx, stop) = engine.accept(now, Link::PLAINTEXT);
        let ping = missive_core::wire::encode_frame(
            &missive_core::wire::ClientPacket::Hello { versions: vec![1] },
            1 << 16,
        )
        .unwrap();
        engine.received(now, conn, &ping); // Welcome: queued (empty queue)
        assert_eq!(engine.connection_count(), 1);
        let ping =
            missive_core::wire::encode_frame(&missive_core::wire::ClientPacket::Ping, 1 << 16)
                .unwrap();
        engine.received(now, conn, &ping); // Pong: queue full -> dropped
        assert_eq!(engine.connection_count(), 0);
        assert_eq!(engine.stats().slow_consumers, 1);
        assert_eq!(engine.server().connection_count(), 0);
        let text = engine.metrics().encode();
        assert!(
            text.contains("missive_slow_consumer_drops_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("missive_connections{transport=\"tcp\",state=\"open\"} 0\n"),
            "the dropped connection is no longer open: {text}"
        );
        assert!(stop.is_stopped());
        assert_eq!(poll_once(rx.aborted()), Poll::Ready(()));
    }

    /// An in-memory store is committed on the engine's thread: the state is
    /// stored and reported durable within the call that produced it, with
    /// no store thread and no report to wait for.
    #[test]
    fn inline_store_is_durable_within_the_call() {
        let store = MemoryStore::new();
        let (engine, _events) = ServerEngine::start(
            ServerConfig::default(),
            Box::new(store.clone()),
            QueueLimits::default(),
        )
        .unwrap();
        assert!(matches!(engine.store, Some(Persistence::Inline(_))));
        assert!(store.state().server_id().is_some(), "server id committed");
        assert_eq!(engine.stats().durable, Lsn(1));
        let text = engine.metrics().encode();
        assert!(text.contains("missive_store_commits_total 1\n"), "{text}");
        assert!(text.contains("missive_store_available 1\n"), "{text}");
        assert_eq!(engine.server().durable_lsn(), Lsn(1));
        let stats = engine.shutdown(Instant::now()).unwrap();
        assert_eq!((stats.commits, stats.commands), (1, 1));
    }

    /// On a cluster node, shards the store fenced reach the coordinator
    /// (after the core lost them, before the durability report that
    /// follows); a coordinator that is gone stops the node; the shutdown
    /// tells the coordinator once everything is durable.
    #[test]
    fn fenced_shards_reach_the_coordinator_and_shutdown_releases() {
        use crate::cluster::{ClusterCommand, cluster_link};
        use missive_core::cluster::ClusterConfig;
        use std::sync::{Arc, Mutex};
        /// Records the commits; fences shard 3 on every one.
        struct Fencing(Arc<Mutex<usize>>);
        impl Store for Fencing {
            fn load(&mut self) -> Result<missive_core::server::ServerState, StoreError> {
                Ok(missive_core::server::ServerState::new())
            }
            fn commit(&mut self, _: &[PersistCmd]) -> Result<(), StoreError> {
                *self.0.lock().unwrap() += 1;
                Ok(())
            }
            fn take_fenced(&mut self) -> Vec<Shard> {
                vec![Shard(3)]
            }
        }
        let mut config = ServerConfig::default();
        config.cluster = Some(ClusterConfig::default());
        let commits = Arc::new(Mutex::new(0));
        let (mut engine, mut events) = ServerEngine::start(
            config,
            Box::new(Fencing(commits.clone())),
            QueueLimits::default(),
        )
        .unwrap();
        let (link, mut port) = cluster_link();
        let (_cluster_events, commands) = link.split();
        engine.attach_cluster(commands);
        settle(&mut engine, &mut events);
        assert_eq!(*commits.lock().unwrap(), 1, "the server id");
        assert_eq!(engine.stats().durable, Lsn(1));
        assert_eq!(
            port.commands.try_recv().unwrap(),
            ClusterCommand::Fenced(vec![Shard(3)])
        );
        assert!(port.commands.try_recv().is_err(), "nothing else yet");
        assert_eq!(
            engine.cluster_report(Instant::now(), None),
            Err(CoordinatorGone)
        );
        engine.shutdown(Instant::now()).unwrap();
        assert_eq!(port.commands.try_recv().unwrap(), ClusterCommand::Shutdown);
    }

    /// A store whose commits fail for a while (a full disk) does not stop
    /// the engine: the core hears it is unavailable, then back, and what
    /// was submitted meanwhile becomes durable.
    #[test]
    fn an_unavailable_store_is_told_to_the_core_and_does_not_stop() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        struct FullDisk(Arc<AtomicU32>);
        impl Store for FullDisk {
            fn load(&mut self) -> Result<missive_core::server::ServerState, StoreError> {
                Ok(missive_core::server::ServerState::new())
            }
            fn commit(&mut self, _: &[PersistCmd]) -> Result<(), StoreError> {
                match self.0.load(Ordering::SeqCst) {
                    0 => Ok(()),
                    left => {
                        self.0.store(left - 1, Ordering::SeqCst);
                        Err(StoreError::Io {
                            path: "missive.redb".into(),
                            source: io::ErrorKind::StorageFull.into(),
                        })
                    }
                }
            }
        }
        let (mut engine, mut events) = ServerEngine::start(
            ServerConfig::default(),
            Box::new(FullDisk(Arc::new(AtomicU32::new(2)))),
            QueueLimits::default(),
        )
        .unwrap();
        let mut next = || loop {
            if let Poll::Ready(event) = poll_once(events.recv()) {
                return event;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let unavailable = next();
        assert!(matches!(unavailable, Some(StoreEvent::Unavailable(_))));
        engine.store_report(Instant::now(), unavailable).unwrap();
        assert!(!engine.storage_available());
        assert!(!engine.server().storage_available());
        let available = next();
        assert!(matches!(available, Some(StoreEvent::Available)));
        engine.store_report(Instant::now(), available).unwrap();
        assert!(engine.storage_available());
        engine.store_report(Instant::now(), next()).unwrap();
        assert_eq!(engine.stats().durable, Lsn(1), "the server id");
        let stats = engine.shutdown(Instant::now()).unwrap();
        assert_eq!(stats.commits, 1);
    }

    /// A failing inline commit arrives on the events stream like a store
    /// thread's failure, so the driver stops the same way.
    #[test]
    fn inline_store_failure_is_reported_on_the_events_stream() {
        struct Broken;
        impl Store for Broken {
            fn load(&mut self) -> Result<missive_core::server::ServerState, StoreError> {
                Ok(missive_core::server::ServerState::new())
            }
            fn commit(&mut self, _: &[PersistCmd]) -> Result<(), StoreError> {
                Err(StoreError::Corrupt("broken on purpose".into()))
            }
            fn commits_inline(&self) -> bool {
                true
            }
        }
        let (mut engine, mut events) = ServerEngine::start(
            ServerConfig::default(),
            Box::new(Broken),
            QueueLimits::default(),
        )
        .unwrap();
        let Poll::Ready(event) = poll_once(events.recv()) else {
            panic!("the failure is reported at once");
        };
        assert!(matches!(event, Some(StoreEvent::Failed(_))));
        assert_eq!(
            engine.metrics().readiness(),
            Err("not serving (starting or stopping)")
        );
        engine.metrics().set_serving(true);
        assert_eq!(
            engine.metrics().readiness(),
            Err("the store is not available")
        );
        assert!(engine.store_report(Instant::now(), event).is_err());
        assert!(engine.shutdown(Instant::now()).is_err());
    }
}
