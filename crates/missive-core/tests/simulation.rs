//! Deterministic simulation: one server and several clients, all driven
//! through the core's public API in one thread with virtual time, in the
//! spirit of quinn-proto's `Pair` harness.
//!
//! Faults, all drawn from the seed: random chunking and latency of the byte
//! streams, connection loss (in-flight bytes are lost, as with a reset TCP
//! connection), client restarts from their durable state (some shortly after
//! a `send` went out, from the state saved before its envelope was sealed),
//! forward clock jumps, and server crashes that keep only the commands the
//! store reported durable, and (single server) store outages: for a while
//! nothing becomes durable, the server is told `StorageAvailable(false)`
//! and refuses sends and registrations, then the store is back and commits
//! what queued up meanwhile. After a fault-free settling phase the run checks
//! that
//!
//! - every message the server accepted reached its recipient's application
//!   exactly once, with the body that was sent, in order per (sender,
//!   recipient), or expired;
//! - no application saw a message that was not sent;
//! - every outbox drained (each message accepted or refused with a reason),
//!   and never refused as `IdReused` (retries resend the same bytes, also
//!   when sealed again after a crash);
//! - nothing the server holds decrypts without the recipient's key;
//! - the server never sent an item at or after its deadline
//!   (`enqueued_at + message_ttl`); every message it expired got exactly
//!   one durable `expired` notice for its sender, and the sender's
//!   application saw it exactly once unless that notice expired in turn.
//!
//! Odd seeds run with a TTL of 300 ms, so that messages and notices
//! expire (offline recipients, forward clock jumps); even seeds with the
//! default 30 days. Seeds divisible by 3 run "over TLS": each connection
//! gets a fresh `tls-exporter` channel binding, the same on both sides, and
//! the server requires channel binding; other seeds are plaintext (`none`).
//! Seeds that leave 1 divided by 3 run over a message transport (as a
//! WebSocket does): one packet per message, never split, no length prefix.
//!
//! `MISSIVE_SIM_SEEDS=N` runs N seeds (default 12); `MISSIVE_SIM_SEED=S`
//! runs only seed S (to replay a failure).
//!
//! The cluster mode (`cluster_simulation_…`) runs the same clients, faults
//! and checks against three nodes sharing one store model: users spread
//! over 8 shards, each owned by the node holding its lease (epoch, expiry
//! on the store's clock). Nodes acquire free or expired shards (loaded
//! from the store), renew theirs, and drop a shard whose renewal fails;
//! the store refuses a write whose shard epoch is not the writer's (the
//! node gets `ShardLost` before the `Durable` that follows). Clients
//! connect to any node and follow redirects. Forwards travel between
//! nodes with latency, are lost at random (`Unreachable`), time out when
//! the owner is paused, and fail when it crashes. Extra faults: node
//! crashes (new process, empty memory) and pauses past the lease (a
//! stale node that wakes up is fenced). `MISSIVE_SIM_CLUSTER_SEEDS=N`
//! runs N cluster seeds (default 12).

use missive_core::client::{
    Client, ClientConfig, ClientEvent, ClientInput, ClientOutput, ClientState, LoginError,
    SendFailure,
};
use missive_core::cluster::{CallId, ClusterConfig, ForwardId, RemoteReply, Shard, shard_of};
use missive_core::crypto::{self, ChannelBinding, Identity};
use missive_core::rng::{self, CoreRng};
use missive_core::server::{
    Input, MailItem, Output, PersistCmd, Server, ServerConfig, ServerState,
};
use missive_core::wire::{
    ClientPacket, DEFAULT_MAX_FRAME, ErrorCode, FrameDecoder, Framing, Notice, ServerPacket,
    decode_packet,
};
use missive_core::{ConnId, Lsn, MessageId, Seq, UserName};
use rand_core::Rng;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const USERS: usize = 4;
/// Cluster mode: nodes, shards, lease time-to-live.
const NODES: usize = 3;
const SHARDS: u32 = 8;
const LEASE_TTL: Duration = Duration::from_millis(1_500);
/// How often a node's coordinator renews and acquires leases.
const LEASE_TICK: Duration = Duration::from_millis(300);
/// How long a forward waits for an answer before `Unreachable`.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
const T0_UNIX: u64 = 1_750_000_000_000;

fn identities() -> &'static Vec<Identity> {
    static KEYS: OnceLock<Vec<Identity>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..USERS)
            .map(|i| {
                Identity::generate(&mut rng::from_seed([100 + i as u8; 32]), 2048).expect("keygen")
            })
            .collect()
    })
}

fn user_name(i: usize) -> UserName {
    UserName::new(format!("user{i}")).unwrap()
}

/// Something travelling on a link.
enum Segment {
    Bytes(Vec<u8>),
    /// The sender closed the connection after the bytes before it.
    Fin,
}

/// One TCP-like connection between a client and a server (node).
struct Link {
    conn: ConnId,
    node: usize,
    to_server: VecDeque<(Instant, Segment)>,
    to_client: VecDeque<(Instant, Segment)>,
}

struct SimClient {
    name: UserName,
    client: Client,
    link: Option<Link>,
    reconnect_at: Option<Instant>,
    /// When the process dies having lost the sealed bytes of its outbox.
    crash_unsealed_at: Option<Instant>,
    next_counter: HashMap<UserName, u64>,
    /// The node a redirect named, for the next connection.
    redirected_to: Option<usize>,
}

/// One server process (the only one, or a cluster node).
struct Node {
    server: Server,
    /// Commands emitted but not yet durable.
    pending: Vec<(Lsn, PersistCmd)>,
    commit_at: Option<Instant>,
    /// Cluster: the shards this process holds, with the lease epoch.
    owned: HashMap<Shard, u64>,
    /// Bumped at each crash: calls and answers for an earlier process are
    /// dropped.
    incarnation: u64,
    /// SIGSTOPped until then: processes nothing.
    paused_until: Option<Instant>,
    next_lease_tick: Instant,
    /// The store cannot commit until then (a full disk).
    store_down_until: Option<Instant>,
}

/// A shard's lease in the store.
#[derive(Clone, Copy)]
struct Lease {
    owner: usize,
    epoch: u64,
    expires: Instant,
}

/// A call between nodes, in flight.
struct Call {
    origin: usize,
    origin_incarnation: u64,
    request: ForwardId,
    call: missive_core::cluster::RemoteCall,
    target: usize,
    target_incarnation: u64,
    /// After this the origin is told `Unreachable` (the driver's timeout).
    deadline: Instant,
}

/// What travels between nodes.
enum NetMsg {
    /// A call reaches its target.
    Deliver(u64),
    /// An answer reaches the origin.
    Answer {
        origin: usize,
        incarnation: u64,
        request: ForwardId,
        reply: RemoteReply,
    },
}

/// The cluster around the nodes: leases, calls.
#[derive(Default)]
struct ClusterModel {
    leases: HashMap<Shard, Lease>,
    calls: HashMap<u64, Call>,
    next_call: u64,
    net: Vec<(Instant, NetMsg)>,
    /// The store's content, as nodes load a shard from it.
    store: ServerState,
}

/// What the applications saw, checked at the end.
#[derive(Default)]
struct Ledger {
    /// id → (from, to, body) for every message the app handed to `send`.
    sent: HashMap<MessageId, (UserName, UserName, Vec<u8>)>,
    accepted: HashSet<MessageId>,
    refused: HashSet<MessageId>,
    /// Per recipient, in arrival order.
    received: HashMap<UserName, Vec<(UserName, MessageId, Vec<u8>)>>,
    /// `expired` events per message id, as the sender's application saw them.
    expired_seen: HashMap<MessageId, usize>,
}

/// Figures of one run.
#[derive(Default, Debug, Clone, Copy)]
struct Figures {
    sent: usize,
    accepted: usize,
    delivered: usize,
    link_drops: usize,
    server_crashes: usize,
    client_restarts: usize,
    /// Of those, restarts that lost the sealed bytes of the outbox.
    unsealed_restarts: usize,
    clock_jumps: usize,
    /// Store outages (single server).
    storage_outages: usize,
    /// Time steps of the chaos and settling phases.
    steps: usize,
    /// Cluster: writes refused by a shard's epoch, shards taken over,
    /// forwards lost, node pauses past the lease.
    fenced: usize,
    takeovers: usize,
    lost_forwards: usize,
    pauses: usize,
    /// Cluster: expired messages whose notice a crash or a lost shard lost.
    expired_notices_lost: usize,
    /// Cluster: messages queued a second time (and expired again): a
    /// forward retried after its first answer was lost reached a new owner
    /// of the shard after the first copy had left the mailbox, and the new
    /// owner's dedupe memory, rebuilt from the queued items, no longer
    /// knew the id. Clients deduplicate, so no application sees it twice.
    requeued: usize,
    /// Messages the server expired (durably).
    expired: usize,
    /// Of those, the ones that never reached the recipient's application.
    expired_unread: usize,
}

impl std::ops::AddAssign for Figures {
    fn add_assign(&mut self, f: Figures) {
        self.sent += f.sent;
        self.accepted += f.accepted;
        self.delivered += f.delivered;
        self.link_drops += f.link_drops;
        self.server_crashes += f.server_crashes;
        self.client_restarts += f.client_restarts;
        self.unsealed_restarts += f.unsealed_restarts;
        self.clock_jumps += f.clock_jumps;
        self.storage_outages += f.storage_outages;
        self.steps += f.steps;
        self.fenced += f.fenced;
        self.takeovers += f.takeovers;
        self.lost_forwards += f.lost_forwards;
        self.pauses += f.pauses;
        self.expired_notices_lost += f.expired_notices_lost;
        self.requeued += f.requeued;
        self.expired += f.expired;
        self.expired_unread += f.expired_unread;
    }
}

struct Sim {
    rng: CoreRng,
    now: Instant,
    /// Virtual time zero: the wall clock reads `T0_UNIX` here.
    origin: Instant,
    nodes: Vec<Node>,
    config: ServerConfig,
    /// Cluster mode (else one server owning everyone).
    cluster: Option<ClusterModel>,
    /// The wall-clock time each item was enqueued at, by (owner, seq), from
    /// the server's `Enqueue` commands (the latest for a seq a crash lost).
    enqueued_at: HashMap<(UserName, Seq), u64>,
    /// Commands the store reported durable (what survives a crash).
    durable: Vec<PersistCmd>,
    clients: Vec<SimClient>,
    next_conn: u64,
    ledger: Ledger,
    figures: Figures,
    faults: bool,
    /// Connections carry a `tls-exporter` binding (else `none`).
    tls: bool,
    /// How connections frame packets.
    framing: Framing,
}

impl Sim {
    fn new(seed: u64, cluster: bool) -> Self {
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        seed_bytes[8] = u8::from(cluster);
        let mut rng = rng::from_seed(seed_bytes);
        let now = Instant::now();
        let mut config = Self::server_config(seed);
        if cluster {
            config.cluster = Some(ClusterConfig {
                shards: SHARDS,
                forward_retry: Duration::from_millis(100),
                query_deadline: Duration::from_secs(2),
            });
        }
        let nodes = (0..if cluster { NODES } else { 1 })
            .map(|_| Node {
                server: Server::new(
                    config.clone(),
                    ServerState::new(),
                    rng::bytes(&mut rng),
                    now,
                    T0_UNIX,
                ),
                pending: Vec::new(),
                commit_at: None,
                owned: HashMap::new(),
                incarnation: 0,
                paused_until: None,
                next_lease_tick: now,
                store_down_until: None,
            })
            .collect();
        let clients = (0..USERS)
            .map(|i| {
                let name = user_name(i);
                let client = Client::new(
                    ClientConfig::new(name.clone()),
                    identities()[i].clone(),
                    ClientState::default(),
                    rng::bytes(&mut rng),
                    now,
                    T0_UNIX,
                );
                SimClient {
                    name,
                    client,
                    link: None,
                    reconnect_at: Some(now),
                    crash_unsealed_at: None,
                    next_counter: HashMap::new(),
                    redirected_to: None,
                }
            })
            .collect();
        let mut sim = Self {
            rng,
            now,
            origin: now,
            nodes,
            config,
            cluster: cluster.then(ClusterModel::default),
            enqueued_at: HashMap::new(),
            durable: Vec::new(),
            clients,
            next_conn: 1,
            ledger: Ledger::default(),
            figures: Figures::default(),
            faults: true,
            tls: Self::over_tls(seed),
            framing: Self::framing(seed),
        };
        for node in 0..sim.nodes.len() {
            sim.drain_server(node);
        }
        sim
    }

    fn over_tls(seed: u64) -> bool {
        seed.is_multiple_of(3)
    }

    fn framing(seed: u64) -> Framing {
        if seed % 3 == 1 {
            Framing::Messages
        } else {
            Framing::Stream
        }
    }

    fn server_config(seed: u64) -> ServerConfig {
        // Small quotas so QueueFull happens too; a generous rate limit.
        let mut config = ServerConfig::default();
        config.require_channel_binding = Self::over_tls(seed);
        config.queue_max_messages = 40;
        config.window = 8;
        if seed % 2 == 1 {
            config.message_ttl = Duration::from_millis(300);
        }
        config
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.next_u32() % 100 < percent
    }

    fn between(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.rng.next_u64() % (hi_ms - lo_ms + 1))
    }

    // ---- server side ----

    fn drain_server(&mut self, node: usize) {
        while let Some(output) = self.nodes[node].server.poll_output() {
            match output {
                Output::Transmit { conn, bytes } => {
                    self.check_deliveries_in_time(conn, &bytes);
                    let delay = self.between(1, 20);
                    let at = self.now + delay;
                    if let Some(link) = self.link_mut(conn) {
                        link.to_client.push_back((at, Segment::Bytes(bytes)));
                    }
                }
                Output::Close { conn } => {
                    let at = self.now + Duration::from_millis(1);
                    if let Some(link) = self.link_mut(conn) {
                        link.to_client.push_back((at, Segment::Fin));
                    }
                }
                Output::Persist { lsn, cmd } => {
                    let n = &mut self.nodes[node];
                    n.pending.push((lsn, cmd));
                    if n.commit_at.is_none() {
                        let delay = self.between(1, 10);
                        self.nodes[node].commit_at = Some(self.now + delay);
                    }
                }
                Output::Event(_) => {}
                Output::Forward {
                    request,
                    shard,
                    call,
                } => self.route_forward(node, request, shard, call),
                Output::Reply { call, reply } => self.route_reply(call, reply),
            }
        }
    }

    /// No item goes out at or after its deadline.
    fn check_deliveries_in_time(&self, conn: ConnId, bytes: &[u8]) {
        let Some(client) = self
            .clients
            .iter()
            .find(|c| c.link.as_ref().is_some_and(|l| l.conn == conn))
        else {
            return;
        };
        let ttl_ms = self.config.message_ttl.as_millis() as u64;
        for packet in packets::<ServerPacket>(self.framing, bytes) {
            let (ServerPacket::Message { seq, .. } | ServerPacket::Notice { seq, .. }) = packet
            else {
                continue;
            };
            let enqueued_at = self.enqueued_at[&(client.name.clone(), seq)];
            assert!(
                self.unix_now() < enqueued_at + ttl_ms,
                "{}'s item {seq} sent at {} ms, deadline {} ms",
                client.name,
                self.unix_now() - T0_UNIX,
                enqueued_at + ttl_ms - T0_UNIX
            );
        }
    }

    fn link_mut(&mut self, conn: ConnId) -> Option<&mut Link> {
        self.clients
            .iter_mut()
            .filter_map(|c| c.link.as_mut())
            .find(|l| l.conn == conn)
    }

    /// Group commit: everything pending becomes durable at once. In a
    /// cluster, the store first refuses the commands of shards whose lease
    /// epoch is not the node's: the node loses those shards, then hears
    /// the rest durable.
    fn commit(&mut self, node: usize) {
        self.nodes[node].commit_at = None;
        if self.nodes[node].store_down_until.is_some() {
            return; // fails; everything stays pending, in order
        }
        let Some((lsn, _)) = self.nodes[node].pending.last() else {
            return;
        };
        let lsn = *lsn;
        let pending = std::mem::take(&mut self.nodes[node].pending);
        let mut refused: Vec<Shard> = Vec::new();
        for (_, cmd) in pending {
            if let (Some(cluster), Some(shard)) = (&self.cluster, shard_of_cmd(&cmd)) {
                let held = self.nodes[node].owned.get(&shard).copied();
                let lease = cluster.leases.get(&shard);
                let current = lease.is_some_and(|l| Some(l.epoch) == held && l.owner == node);
                if !current {
                    if held.is_some() && !refused.contains(&shard) {
                        refused.push(shard);
                    }
                    continue;
                }
            }
            if let PersistCmd::Enqueue { user, seq, item } = &cmd {
                self.enqueued_at
                    .insert((user.clone(), *seq), item.enqueued_at());
            }
            if let Some(cluster) = &mut self.cluster {
                cluster.store.apply(&cmd);
            }
            self.durable.push(cmd);
        }
        for shard in refused {
            self.figures.fenced += 1;
            self.nodes[node].owned.remove(&shard);
            self.nodes[node]
                .server
                .handle_input(self.now, Input::ShardLost(shard));
        }
        self.nodes[node]
            .server
            .handle_input(self.now, Input::Durable(lsn));
        self.drain_server(node);
    }

    /// Space is back: the server hears it, then what queued up commits.
    fn store_back(&mut self, node: usize) {
        self.nodes[node].store_down_until = None;
        self.nodes[node]
            .server
            .handle_input(self.now, Input::StorageAvailable(true));
        self.drain_server(node);
        self.commit(node);
    }

    /// The server process dies: connections reset, non-durable commands are
    /// lost, a new server starts from the durable commands (a cluster node:
    /// with nothing; its leases run out and are taken over).
    fn crash_server(&mut self, node: usize) {
        self.figures.server_crashes += 1;
        self.nodes[node].pending.clear();
        self.nodes[node].commit_at = None;
        self.nodes[node].owned.clear();
        self.nodes[node].paused_until = None;
        self.nodes[node].store_down_until = None;
        self.nodes[node].incarnation += 1;
        for i in 0..self.clients.len() {
            if self.clients[i]
                .link
                .as_ref()
                .is_some_and(|l| l.node == node)
            {
                self.clients[i].link = None;
                self.client_input(i, ClientInput::Disconnected);
                self.schedule_reconnect(i);
            }
        }
        let state = match self.cluster {
            Some(_) => ServerState::new(),
            None => ServerState::replay(&self.durable),
        };
        let seed = rng::bytes(&mut self.rng);
        self.nodes[node].server =
            Server::new(self.config.clone(), state, seed, self.now, self.unix_now());
        self.drain_server(node);
    }

    fn paused(&self, node: usize) -> bool {
        self.nodes[node].paused_until.is_some_and(|t| t > self.now)
    }

    // ---- cluster: leases and calls between nodes ----

    /// The node's coordinator: renews its leases (a shard whose lease is
    /// gone or another's is lost), then takes free or expired shards up to
    /// its fair share, loading each from the store.
    fn lease_tick(&mut self, node: usize) {
        self.nodes[node].next_lease_tick = self.now + LEASE_TICK;
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let now = self.now;
        let mut lost = Vec::new();
        for (shard, epoch) in &self.nodes[node].owned {
            match cluster.leases.get_mut(shard) {
                Some(l) if l.owner == node && l.epoch == *epoch && l.expires > now => {
                    l.expires = now + LEASE_TTL;
                }
                _ => lost.push(*shard),
            }
        }
        lost.sort_unstable(); // deterministic order, whatever the map's
        let mut acquired = Vec::new();
        let share = (SHARDS as usize).div_ceil(NODES);
        for shard in (0..SHARDS).map(Shard) {
            // A node takes its share of the shards nobody ever held, and
            // every shard whose lease expired (its owner failed).
            let lease = cluster.leases.get(&shard);
            let expired = lease.is_some_and(|l| l.expires <= now);
            let fair = self.nodes[node].owned.len() - lost.len() + acquired.len() < share;
            let free = expired || (lease.is_none() && fair);
            if free && !self.nodes[node].owned.contains_key(&shard) {
                let epoch = cluster.leases.get(&shard).map_or(1, |l| l.epoch + 1);
                cluster.leases.insert(
                    shard,
                    Lease {
                        owner: node,
                        epoch,
                        expires: now + LEASE_TTL,
                    },
                );
                acquired.push((shard, epoch));
            }
        }
        for shard in lost {
            self.nodes[node].owned.remove(&shard);
            self.nodes[node]
                .server
                .handle_input(now, Input::ShardLost(shard));
            self.drain_server(node);
        }
        for (shard, epoch) in acquired {
            if epoch > 1 {
                self.figures.takeovers += 1;
            }
            self.nodes[node].owned.insert(shard, epoch);
            let state: Vec<PersistCmd> = self
                .cluster
                .as_ref()
                .map(|c| c.store.snapshot())
                .unwrap_or_default()
                .into_iter()
                .filter(|cmd| shard_of_cmd(cmd) == Some(shard))
                .collect();
            self.nodes[node].server.handle_input(
                now,
                Input::ShardAcquired {
                    shard,
                    state: &state,
                },
            );
            self.drain_server(node);
            let address = address_of(node);
            for other in 0..self.nodes.len() {
                self.nodes[other].server.handle_input(
                    now,
                    Input::OwnerChanged {
                        shard,
                        address: Some(&address),
                    },
                );
                self.drain_server(other);
            }
        }
    }

    /// A node's forward: to the shard's lease holder over the network,
    /// unless it is lost on the way or nobody holds the shard.
    fn route_forward(
        &mut self,
        origin: usize,
        request: ForwardId,
        shard: Shard,
        call: missive_core::cluster::RemoteCall,
    ) {
        let lost = self.faults && self.chance(5);
        let delay = self.between(1, 15);
        let now = self.now;
        let origin_incarnation = self.nodes[origin].incarnation;
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let target = cluster
            .leases
            .get(&shard)
            .filter(|l| l.expires > now)
            .map(|l| l.owner);
        let Some(target) = target.filter(|_| !lost) else {
            self.figures.lost_forwards += usize::from(lost);
            cluster.net.push((
                now + CALL_TIMEOUT,
                NetMsg::Answer {
                    origin,
                    incarnation: origin_incarnation,
                    request,
                    reply: RemoteReply::Unreachable,
                },
            ));
            return;
        };
        let id = cluster.next_call;
        cluster.next_call += 1;
        cluster.calls.insert(
            id,
            Call {
                origin,
                origin_incarnation,
                request,
                call,
                target,
                target_incarnation: self.nodes[target].incarnation,
                deadline: now + CALL_TIMEOUT,
            },
        );
        cluster.net.push((now + delay, NetMsg::Deliver(id)));
    }

    /// A node answered a call: the answer travels back, unless the origin
    /// gave up waiting.
    fn route_reply(&mut self, call: CallId, reply: RemoteReply) {
        let delay = self.between(1, 15);
        let now = self.now;
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let Some(c) = cluster.calls.remove(&call.0) else {
            return;
        };
        cluster.net.push((
            now + delay,
            NetMsg::Answer {
                origin: c.origin,
                incarnation: c.origin_incarnation,
                request: c.request,
                reply,
            },
        ));
    }

    /// Runs what the network has due: calls reach their targets (a paused
    /// target later), answers reach their origins, and calls past their
    /// deadline are answered `Unreachable`.
    fn run_net(&mut self) -> bool {
        let now = self.now;
        let Some(cluster) = self.cluster.as_mut() else {
            return false;
        };
        let mut expired: Vec<u64> = cluster
            .calls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            if let Some(c) = cluster.calls.remove(&id) {
                cluster.net.push((
                    now,
                    NetMsg::Answer {
                        origin: c.origin,
                        incarnation: c.origin_incarnation,
                        request: c.request,
                        reply: RemoteReply::Unreachable,
                    },
                ));
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut cluster.net)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        cluster.net = later;
        let progressed = !due.is_empty();
        for (at, msg) in due {
            match msg {
                NetMsg::Deliver(id) => {
                    let Some(c) = self.cluster.as_ref().and_then(|cl| cl.calls.get(&id)) else {
                        continue;
                    };
                    let (target, incarnation) = (c.target, c.target_incarnation);
                    if self.nodes[target].incarnation != incarnation {
                        continue; // the deadline answers it
                    }
                    if self.paused(target) {
                        if let Some(cl) = self.cluster.as_mut() {
                            cl.net.push((at.max(now) + LEASE_TICK, NetMsg::Deliver(id)));
                        }
                        continue;
                    }
                    let request = c.call.clone();
                    self.nodes[target].server.handle_input(
                        now,
                        Input::Remote {
                            call: CallId(id),
                            request: &request,
                        },
                    );
                    self.drain_server(target);
                }
                NetMsg::Answer {
                    origin,
                    incarnation,
                    request,
                    reply,
                } => {
                    if self.nodes[origin].incarnation != incarnation {
                        continue;
                    }
                    if self.paused(origin) {
                        if let Some(cl) = self.cluster.as_mut() {
                            cl.net.push((
                                now + LEASE_TICK,
                                NetMsg::Answer {
                                    origin,
                                    incarnation,
                                    request,
                                    reply,
                                },
                            ));
                        }
                        continue;
                    }
                    self.nodes[origin].server.handle_input(
                        now,
                        Input::Forwarded {
                            request,
                            reply: &reply,
                        },
                    );
                    self.drain_server(origin);
                }
            }
        }
        progressed
    }

    /// The wall clock of every process: a fixed origin plus virtual time.
    fn unix_now(&self) -> u64 {
        T0_UNIX + self.now.duration_since(self.origin).as_millis() as u64
    }

    // ---- client side ----

    fn client_input(&mut self, i: usize, input: ClientInput<'_>) {
        self.clients[i].client.handle_input(self.now, input);
        self.drain_client(i);
    }

    fn drain_client(&mut self, i: usize) {
        while let Some(output) = self.clients[i].client.poll_output() {
            match output {
                ClientOutput::Transmit(bytes) => {
                    let delay = self.between(1, 20);
                    let at = self.now + delay;
                    if self.faults && carries_a_send(self.framing, &bytes) && self.chance(5) {
                        // Dies around the time the server gets the send,
                        // before the sealed envelope was saved.
                        let after = self.between(0, 40);
                        self.clients[i].crash_unsealed_at = Some(at + after);
                    }
                    if let Some(link) = self.clients[i].link.as_mut() {
                        link.to_server.push_back((at, Segment::Bytes(bytes)));
                    }
                }
                ClientOutput::Close => {
                    let at = self.now + Duration::from_millis(1);
                    if let Some(link) = self.clients[i].link.as_mut() {
                        link.to_server.push_back((at, Segment::Fin));
                    }
                }
                ClientOutput::StateChanged => {}
                ClientOutput::Event(event) => self.on_client_event(i, event),
            }
        }
    }

    fn on_client_event(&mut self, i: usize, event: ClientEvent) {
        let me = self.clients[i].name.clone();
        match event {
            ClientEvent::Accepted { id, .. } => {
                assert!(
                    self.ledger.sent.contains_key(&id),
                    "accepted an id never sent"
                );
                self.ledger.accepted.insert(id);
            }
            ClientEvent::SendFailed {
                id,
                reason: SendFailure::IdReused,
                ..
            } => panic!(
                "{me} got IdReused for {id}: one id for two messages, or a retry sealed differently"
            ),
            ClientEvent::SendFailed { id, .. } => {
                assert!(
                    !self.ledger.accepted.contains(&id),
                    "refused after accepted"
                );
                self.ledger.refused.insert(id);
            }
            ClientEvent::MessageReceived { from, id, body, .. } => {
                self.ledger
                    .received
                    .entry(me)
                    .or_default()
                    .push((from, id, body));
            }
            ClientEvent::UndecryptableMessage { from, id, error } => {
                panic!("{me} could not open {id} from {from}: {error}");
            }
            ClientEvent::Expired { id, .. } => {
                *self.ledger.expired_seen.entry(id).or_default() += 1;
            }
            ClientEvent::KeyChanged { user, .. } => panic!("{me} saw a key change for {user}"),
            ClientEvent::Redirected { address } => {
                assert!(self.cluster.is_some(), "a single server redirects nobody");
                self.clients[i].redirected_to = Some(node_at(&address));
            }
            // A login whose challenge outlived its time (a clock jump, a
            // paused node) is refused; the client connects again.
            ClientEvent::LoginFailed(LoginError::Refused {
                code: ErrorCode::NoChallenge,
                ..
            }) => {}
            // Every client registers its own name with its own key, even
            // after a crash lost the registration.
            ClientEvent::LoginFailed(error) => panic!("{me} could not log in: {error}"),
            _ => {}
        }
    }

    fn schedule_reconnect(&mut self, i: usize) {
        let delay = self.between(50, 2_000);
        self.clients[i].reconnect_at = Some(self.now + delay);
    }

    fn connect(&mut self, i: usize) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.clients[i].reconnect_at = None;
        let node = match self.clients[i].redirected_to.take() {
            Some(node) => node,
            None => self.rng.next_u32() as usize % self.nodes.len(),
        };
        self.clients[i].link = Some(Link {
            conn,
            node,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
        });
        // Both ends of one TLS connection export the same value.
        let binding = if self.tls {
            ChannelBinding::TlsExporter(rng::bytes(&mut self.rng))
        } else {
            ChannelBinding::None
        };
        let transport = missive_core::wire::Link {
            binding,
            framing: self.framing,
        };
        self.nodes[node]
            .server
            .handle_input(self.now, Input::Connected(conn, transport));
        self.drain_server(node);
        self.client_input(i, ClientInput::Connected(transport));
    }

    /// The connection breaks: in-flight bytes are lost on both sides.
    fn drop_link(&mut self, i: usize) {
        let Some(conn) = self.clients[i].link.as_ref().map(|l| l.conn) else {
            return;
        };
        self.figures.link_drops += 1;
        self.close_link(i, conn);
    }

    /// The client process restarts from its durable state, saved as `saved`
    /// says.
    fn restart_client(&mut self, i: usize, saved: Saved) {
        self.figures.client_restarts += 1;
        if let Some(link) = self.clients[i].link.take() {
            self.nodes[link.node]
                .server
                .handle_input(self.now, Input::Disconnected(link.conn));
            self.drain_server(link.node);
        }
        self.clients[i].crash_unsealed_at = None;
        let state = match saved {
            Saved::Everything => self.clients[i].client.state().clone(),
            Saved::BeforeSealing => {
                self.figures.unsealed_restarts += 1;
                without_sealed_envelopes(self.clients[i].client.state())
            }
        };
        let name = self.clients[i].name.clone();
        let seed = rng::bytes(&mut self.rng);
        let unix = self.unix_now();
        self.clients[i].client = Client::new(
            ClientConfig::new(name),
            identities()[i].clone(),
            state,
            seed,
            self.now,
            unix,
        );
        self.drain_client(i);
        self.schedule_reconnect(i);
    }

    fn app_send(&mut self, i: usize) {
        let to_index = (i + 1 + (self.rng.next_u32() as usize % (USERS - 1))) % USERS;
        let to = user_name(to_index);
        let from = self.clients[i].name.clone();
        let counter = self.clients[i].next_counter.entry(to.clone()).or_insert(0);
        *counter += 1;
        let body = format!("{from}->{to}#{counter:06} secret-payload").into_bytes();
        match self.clients[i]
            .client
            .send(self.now, to.clone(), body.clone())
        {
            Ok(id) => {
                self.ledger.sent.insert(id, (from, to, body));
                self.figures.sent += 1;
            }
            Err(e) => panic!("send refused locally: {e}"),
        }
        self.drain_client(i);
    }

    // ---- the event loop ----

    /// The next segment due on client `i`'s link in one direction (a
    /// paused node reads nothing).
    fn pop_due(&mut self, i: usize, to_server: bool) -> Option<(ConnId, Segment)> {
        let now = self.now;
        let node = self.clients[i].link.as_ref()?.node;
        if to_server && self.paused(node) {
            return None;
        }
        let link = self.clients[i].link.as_mut()?;
        let queue = if to_server {
            &mut link.to_server
        } else {
            &mut link.to_client
        };
        if queue.front().is_some_and(|(at, _)| *at <= now) {
            queue.pop_front().map(|(_, segment)| (link.conn, segment))
        } else {
            None
        }
    }

    /// Both ends see the connection close.
    fn close_link(&mut self, i: usize, conn: ConnId) {
        let Some(link) = self.clients[i].link.take() else {
            return;
        };
        self.nodes[link.node]
            .server
            .handle_input(self.now, Input::Disconnected(conn));
        self.drain_server(link.node);
        self.client_input(i, ClientInput::Disconnected);
        self.schedule_reconnect(i);
    }

    /// Delivers every segment due on every link.
    fn deliver_links(&mut self) -> bool {
        let mut progressed = false;
        for i in 0..self.clients.len() {
            for to_server in [true, false] {
                while let Some((conn, segment)) = self.pop_due(i, to_server) {
                    progressed = true;
                    match segment {
                        Segment::Bytes(bytes) if to_server => {
                            let Some(node) = self.clients[i].link.as_ref().map(|l| l.node) else {
                                continue;
                            };
                            for chunk in split(&mut self.rng, self.framing, &bytes) {
                                self.nodes[node]
                                    .server
                                    .handle_input(self.now, Input::Bytes(conn, chunk));
                            }
                            self.drain_server(node);
                        }
                        Segment::Bytes(bytes) => {
                            let chunks: Vec<Vec<u8>> = split(&mut self.rng, self.framing, &bytes)
                                .map(<[u8]>::to_vec)
                                .collect();
                            for chunk in chunks {
                                self.client_input(i, ClientInput::Bytes(&chunk));
                            }
                        }
                        Segment::Fin => self.close_link(i, conn),
                    }
                }
            }
        }
        progressed
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        for (n, node) in self.nodes.iter().enumerate() {
            if self.paused(n) {
                consider(node.paused_until);
                continue;
            }
            consider(node.commit_at);
            consider(node.store_down_until);
            consider(node.server.poll_timeout());
            if self.cluster.is_some() {
                consider(Some(node.next_lease_tick));
            }
        }
        if let Some(cluster) = &self.cluster {
            for (at, _) in &cluster.net {
                consider(Some(*at));
            }
            for call in cluster.calls.values() {
                consider(Some(call.deadline));
            }
        }
        for c in &self.clients {
            consider(c.client.poll_timeout());
            consider(c.reconnect_at);
            consider(c.crash_unsealed_at);
            if let Some(link) = &c.link {
                // A paused node reads when it wakes (considered above).
                if !self.paused(link.node) {
                    consider(link.to_server.front().map(|(t, _)| *t));
                }
                consider(link.to_client.front().map(|(t, _)| *t));
            }
        }
        next
    }

    /// Processes everything due at `self.now`.
    fn run_due(&mut self) {
        for _ in 0..1_000 {
            let mut progressed = self.deliver_links();
            progressed |= self.run_net();
            for node in 0..self.nodes.len() {
                if self.paused(node) {
                    continue;
                }
                if self.nodes[node]
                    .store_down_until
                    .is_some_and(|t| t <= self.now)
                {
                    self.store_back(node);
                    progressed = true;
                }
                if self.nodes[node].commit_at.is_some_and(|t| t <= self.now) {
                    self.commit(node);
                    progressed = true;
                }
                if self.nodes[node]
                    .server
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    self.nodes[node]
                        .server
                        .handle_input(self.now, Input::Timeout);
                    self.drain_server(node);
                }
                if self.cluster.is_some() && self.nodes[node].next_lease_tick <= self.now {
                    self.lease_tick(node);
                    progressed = true;
                }
            }
            for i in 0..self.clients.len() {
                if self.clients[i]
                    .client
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    self.client_input(i, ClientInput::Timeout);
                }
                if self.clients[i]
                    .crash_unsealed_at
                    .is_some_and(|t| t <= self.now)
                {
                    self.restart_client(i, Saved::BeforeSealing);
                    progressed = true;
                }
                if self.clients[i].reconnect_at.is_some_and(|t| t <= self.now) {
                    self.connect(i);
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Advances virtual time by `span`, processing events and, while faults
    /// are on, injecting them and sending messages.
    fn run_for(&mut self, span: Duration, sends: &mut usize) {
        let end = self.now + span;
        while self.now < end {
            let step = self.between(1, 40);
            let target = (self.now + step).min(end);
            // Process every event up to `target` in time order.
            while let Some(t) = self.next_deadline().filter(|t| *t <= target) {
                self.now = self.now.max(t);
                self.run_due();
            }
            self.now = target;
            self.run_due();
            self.figures.steps += 1;
            if *sends > 0 && self.chance(4) {
                let i = self.rng.next_u32() as usize % USERS;
                self.app_send(i);
                *sends -= 1;
            }
            if self.faults {
                self.inject_fault();
            }
        }
    }

    fn inject_fault(&mut self) {
        let roll = self.rng.next_u32() % 1000;
        match roll {
            0..=7 => {
                let i = self.rng.next_u32() as usize % USERS;
                self.drop_link(i);
            }
            8..=9 => {
                let node = self.rng.next_u32() as usize % self.nodes.len();
                self.crash_server(node);
            }
            13..=15 if self.cluster.is_some() => {
                // SIGSTOP past the lease: another node takes over; the
                // stale one is fenced when it wakes.
                self.figures.pauses += 1;
                let node = self.rng.next_u32() as usize % self.nodes.len();
                let pause = LEASE_TTL + self.between(100, 2_000);
                let wakes = self.now + pause;
                self.nodes[node].paused_until = Some(wakes);
                // It serves what queued up before its coordinator notices
                // (its writes are then fenced by the store).
                self.nodes[node].next_lease_tick = wakes + self.between(0, 300);
            }
            10..=11 => {
                let i = self.rng.next_u32() as usize % USERS;
                self.restart_client(i, Saved::Everything);
            }

            16..=19 if self.cluster.is_none() && self.nodes[0].store_down_until.is_none() => {
                // The disk fills: nothing becomes durable for a while.
                self.figures.storage_outages += 1;
                let until = self.now + self.between(100, 3_000);
                self.nodes[0].store_down_until = Some(until);
                self.nodes[0]
                    .server
                    .handle_input(self.now, Input::StorageAvailable(false));
                self.drain_server(0);
            }
            12 => {
                // A forward clock jump, long enough to miss pings sometimes.
                self.figures.clock_jumps += 1;
                let jump = self.between(1_000, 120_000);
                self.now += jump;
                self.run_due();
            }
            _ => {}
        }
    }

    fn settled(&self) -> bool {
        self.clients.iter().all(|c| {
            // Nothing waits to be sent, nor for its sender's key.
            c.client.is_logged_in()
                && c.client.state().outbox().len() == 0
                && c.client.state().parked().len() == 0
        }) && self
            .nodes
            .iter()
            .all(|n| n.pending.is_empty() && n.server.state().queued_items() == 0)
            && self.cluster.as_ref().is_none_or(|c| {
                c.calls.is_empty() && c.net.is_empty() && c.store.queued_items() == 0
            })
    }

    fn check(&mut self) {
        let ledger = &self.ledger;
        // Every outbox drained: each message accepted or refused.
        for id in ledger.sent.keys() {
            assert!(
                ledger.accepted.contains(id) || ledger.refused.contains(id),
                "message {id} neither accepted nor refused"
            );
        }
        let mut delivered = 0;
        for (to, list) in &ledger.received {
            let mut seen = HashSet::new();
            let mut last: BTreeMap<UserName, Vec<u8>> = BTreeMap::new();
            for (from, id, body) in list {
                assert!(seen.insert(*id), "{to} saw {id} twice");
                let (s_from, s_to, s_body) = ledger
                    .sent
                    .get(id)
                    .unwrap_or_else(|| panic!("{to} got {id} that was never sent"));
                assert_eq!(
                    (s_from, s_to, s_body),
                    (from, to, body),
                    "message {id} altered"
                );
                if let Some(prev) = last.get(from) {
                    assert!(prev < body, "out of order from {from} to {to}");
                }
                last.insert(from.clone(), body.clone());
                delivered += 1;
            }
        }
        let expired = self.check_expiry();
        let ledger = &self.ledger;
        for id in &ledger.accepted {
            let (_, to, _) = &ledger.sent[id];
            let got = ledger
                .received
                .get(to)
                .is_some_and(|l| l.iter().any(|(_, i, _)| i == id));
            assert!(
                got || expired.contains(id),
                "accepted message {id} to {to} neither reached the application nor expired"
            );
            if !got {
                self.figures.expired_unread += 1;
            }
        }
        self.figures.accepted = ledger.accepted.len();
        self.figures.delivered = delivered;
        self.figures.expired = expired.len();
    }

    /// Checks expiry against the durable log: each message expires at most
    /// once, its sender gets exactly one `expired` notice for it, and the
    /// sender's application sees it once unless that notice expired too.
    /// Returns the ids of the expired messages.
    ///
    /// In a cluster the notice is queued by the sender's node, maybe before
    /// the recipient's node logged the expiry, and crosses nodes at least
    /// once at most: a retried call may queue it twice (the client shows it
    /// once), a node that crashes or loses the recipient's shard before the
    /// sender's node took it loses it (counted, not asserted).
    fn check_expiry(&mut self) -> HashSet<MessageId> {
        let cluster = self.cluster.is_some();
        let mut items: HashMap<(UserName, Seq), MailItem> = HashMap::new();
        let mut expired: HashMap<MessageId, UserName> = HashMap::new();
        let mut notices: HashMap<MessageId, usize> = HashMap::new();
        let mut notices_expired: HashSet<MessageId> = HashSet::new();
        for cmd in &self.durable {
            match cmd {
                PersistCmd::Enqueue { user, seq, item } => {
                    if let MailItem::Notice {
                        notice: Notice::Expired { id, .. },
                        ..
                    } = item
                    {
                        if !cluster {
                            assert_eq!(expired.get(id), Some(user), "expired notice for {id}");
                        }
                        *notices.entry(*id).or_default() += 1;
                    }
                    items.insert((user.clone(), *seq), item.clone());
                }
                PersistCmd::Ack { user, seq } => {
                    items.remove(&(user.clone(), *seq));
                }
                PersistCmd::Expire { user, seq } => match items.remove(&(user.clone(), *seq)) {
                    Some(MailItem::Message { from, id, .. }) => {
                        let again = expired.insert(id, from).is_some();
                        assert!(!again || cluster, "{id} expired twice");
                        // See `Figures::requeued`.
                        self.figures.requeued += usize::from(again);
                    }
                    Some(MailItem::Notice {
                        notice: Notice::Expired { id, .. },
                        ..
                    }) => {
                        notices_expired.insert(id);
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        for id in notices.keys() {
            assert!(expired.contains_key(id), "expired notice for {id}");
        }
        for id in expired.keys() {
            let seen = self.ledger.expired_seen.get(id).copied().unwrap_or(0);
            if cluster {
                assert!(seen <= 1, "{id}: the sender saw `expired` {seen} times");
                if !notices.contains_key(id) {
                    self.figures.expired_notices_lost += 1;
                }
                continue;
            }
            assert_eq!(notices.get(id), Some(&1), "expired notices for {id}");
            if notices_expired.contains(id) {
                assert!(seen <= 1, "{id}: the sender saw `expired` {seen} times");
            } else {
                assert_eq!(seen, 1, "{id}: the sender saw `expired` {seen} times");
            }
        }
        for id in self.ledger.expired_seen.keys() {
            assert!(
                expired.contains_key(id),
                "`expired` for {id}, never expired"
            );
        }
        expired.into_keys().collect()
    }
}

/// How much of a client's state was saved when its process died.
#[derive(Clone, Copy)]
enum Saved {
    /// Every change.
    Everything,
    /// Every change but the sealing of the outbox: the sends went out, the
    /// state saved after sealing did not.
    BeforeSealing,
}

/// `state` as it was saved before its outbox was sealed: the entries without
/// their `sealed` bytes (each keeps the seed it is sealed from).
fn without_sealed_envelopes(state: &ClientState) -> ClientState {
    let mut value = ciborium::Value::serialized(state).expect("state to CBOR value");
    let fields = value.as_map_mut().expect("state is a map");
    for (key, field) in fields {
        if key.as_text() == Some("outbox") {
            for entry in field.as_array_mut().expect("outbox is an array") {
                let entry = entry.as_map_mut().expect("outbox entry is a map");
                entry.retain(|(k, _)| k.as_text() != Some("sealed"));
            }
        }
    }
    value
        .deserialized()
        .expect("state without sealed envelopes")
}

/// Whether a client's transmission (whole frames) holds a `send`.
fn carries_a_send(framing: Framing, bytes: &[u8]) -> bool {
    packets::<ClientPacket>(framing, bytes)
        .iter()
        .any(|packet| matches!(packet, ClientPacket::Send { .. }))
}

/// The packets of one Transmit: whole frames on a byte stream, exactly one
/// bare packet on a message transport.
fn packets<P: DeserializeOwned>(framing: Framing, bytes: &[u8]) -> Vec<P> {
    match framing {
        Framing::Messages => vec![decode_packet(bytes).expect("a message is one packet")],
        _ => {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            decoder.push(bytes);
            let packets: Vec<P> =
                std::iter::from_fn(|| decoder.next_packet().expect("frames decode")).collect();
            assert_eq!(decoder.buffered_len(), 0, "a Transmit holds whole frames");
            packets
        }
    }
}

/// Splits a byte stream's `bytes` into 1–4 random chunks; a message stays
/// whole.
fn split<'a>(
    rng: &mut CoreRng,
    framing: Framing,
    bytes: &'a [u8],
) -> impl Iterator<Item = &'a [u8]> {
    let cut = framing == Framing::Stream;
    let mut cuts: Vec<usize> = (0..if cut { rng.next_u32() % 4 } else { 0 })
        .map(|_| rng.next_u32() as usize % (bytes.len() + 1))
        .collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    let pairs: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
    pairs.into_iter().map(move |(a, b)| &bytes[a..b])
}

/// The shard a command changes (cluster mode), if it is a user's.
fn shard_of_cmd(cmd: &PersistCmd) -> Option<Shard> {
    match cmd {
        PersistCmd::RegisterUser { user, .. }
        | PersistCmd::Enqueue { user, .. }
        | PersistCmd::Ack { user, .. }
        | PersistCmd::Expire { user, .. }
        | PersistCmd::SetNextSeq { user, .. } => Some(shard_of(user, SHARDS)),
        _ => None,
    }
}

/// The address node `node` advertises, and back.
fn address_of(node: usize) -> String {
    format!("127.0.0.{}:7000", node + 1)
}

fn node_at(address: &str) -> usize {
    (0..NODES)
        .find(|n| address_of(*n) == address)
        .expect("a node's address")
}

fn run_seed(seed: u64, cluster: bool) -> Figures {
    let mut sim = Sim::new(seed, cluster);
    let mut sends = 30;
    // Chaos phase: sends and faults.
    sim.run_for(Duration::from_secs(40), &mut sends);
    // Settling phase: no faults, until every outbox and queue drained.
    sim.faults = false;
    let mut none = 0;
    for _ in 0..600 {
        if sim.settled() {
            break;
        }
        sim.run_for(Duration::from_secs(1), &mut none);
    }
    assert!(sim.settled(), "seed {seed}: did not settle");
    sim.check();
    check_server_cannot_read(&sim);
    sim.figures
}

/// The server's stored envelopes do not contain the bodies and open only
/// with the recipient's key.
fn check_server_cannot_read(sim: &Sim) {
    for cmd in &sim.durable {
        if let PersistCmd::Enqueue {
            user,
            item: MailItem::Message { from, envelope, .. },
            ..
        } = cmd
        {
            assert!(
                !contains(envelope, b"secret-payload"),
                "plaintext visible to the server"
            );
            let wrong = (0..USERS).find(|i| user_name(*i) != *user).unwrap();
            let opened = crypto::open(
                &identities()[wrong],
                user,
                from,
                identities()[index_of(from)].public_key(),
                envelope,
                usize::MAX,
            );
            assert!(opened.is_err(), "opened with someone else's key");
        }
    }
}

fn index_of(user: &UserName) -> usize {
    (0..USERS).find(|i| user_name(*i) == *user).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn simulation_loses_nothing_and_shows_nothing_twice() {
    let seeds: Vec<u64> = match std::env::var("MISSIVE_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("MISSIVE_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("MISSIVE_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(12u64);
            (0..n).collect()
        }
    };
    let mut total = Figures::default();
    for seed in &seeds {
        let f = run_seed(*seed, false);
        total += f;
    }
    println!("simulation: {} seeds, {total:?}", seeds.len());
    assert!(total.accepted > 0 && total.delivered + total.expired_unread >= total.accepted);
    if seeds.iter().filter(|s| *s % 2 == 1).count() >= 4 {
        assert!(total.expired > 0, "short TTLs expired nothing");
    }
    if seeds.len() >= 12 {
        assert!(total.storage_outages > 0, "the store was never unavailable");
    }
}

#[test]
fn cluster_simulation_loses_nothing_and_shows_nothing_twice() {
    let seeds: Vec<u64> = match std::env::var("MISSIVE_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("MISSIVE_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("MISSIVE_SIM_CLUSTER_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(12u64);
            (0..n).collect()
        }
    };
    let mut total = Figures::default();
    for seed in &seeds {
        let f = run_seed(*seed, true);
        total += f;
    }
    println!("cluster simulation: {} seeds, {total:?}", seeds.len());
    assert!(total.delivered + total.expired_unread >= total.accepted);
    if seeds.len() >= 12 {
        assert!(total.accepted > 0, "nothing was accepted");
        assert!(total.takeovers > 0, "no shard was ever taken over");
        assert!(total.lost_forwards > 0, "no forward was ever lost");
        assert!(total.fenced > 0, "no stale write was ever fenced");
    }
}
