//! The server state machine.
//!
//! # The drive loop
//!
//! A driver owns sockets, a clock, a store and a seed; the [`Server`] owns
//! every protocol decision. The loop, for any runtime:
//!
//! 1. Feed what happened: [`Server::handle_input`] with `now` and one
//!    [`Input`] — a connection accepted, bytes read, a connection lost, a
//!    durability report from the store, or a timer firing. Several inputs
//!    may be fed before draining.
//! 2. Drain [`Server::poll_output`] until `None`: write `Transmit` bytes to
//!    the connection (as one message on a message transport) and, if
//!    convenient, give the buffer back with [`Server::recycle_transmit`];
//!    `Close` it, hand `Persist` commands to the store (which answers later
//!    with `Input::Durable(lsn)`), log `Event`s.
//! 3. Sleep until [`Server::poll_timeout`] or the next I/O, then go to 1.
//!
//! ```
//! use missive_core::server::{Input, Output, Server, ServerConfig, ServerState};
//! use missive_core::wire::Link;
//! use missive_core::ConnId;
//! use missive_core::time::Instant;
//!
//! let now = Instant::now();
//! let mut server = Server::new(ServerConfig::default(), ServerState::new(), [7; 32], now, 1_700_000_000_000);
//! server.handle_input(now, Input::Connected(ConnId(1), Link::PLAINTEXT));
//! // A tiny in-memory "store": everything is durable at once.
//! while let Some(output) = server.poll_output() {
//!     match output {
//!         Output::Persist { lsn, cmd: _ } => server.handle_input(now, Input::Durable(lsn)),
//!         Output::Transmit { conn: _, bytes: _ } => { /* write to the socket */ }
//!         Output::Close { conn: _ } => { /* close the socket */ }
//!         Output::Event(_) => { /* log */ }
//!         _ => {}
//!     }
//! }
//! assert!(server.poll_timeout().is_some()); // the handshake deadline
//! ```
//!
//! Replies that promise durability (`Registered`, `Accepted`) and deliveries
//! of new items are held back until the store has reported the command that
//! backs them durable.

mod admin;
mod cluster;
mod config;
mod conn;
mod delivery;
mod expiry;
mod handshake;
mod io;
mod limits;
mod mail_items;
mod presence;
mod spare_tx;
pub mod state;
mod storage;
#[cfg(test)]
mod tests;

pub use config::{MIN_MAX_FRAME, ServerConfig};
pub use io::{CloseReason, Input, Output, RemoveUserError, ServerEvent};
use state::UserId;
pub use state::{MailItem, MailItems, Mailbox, PersistCmd, ServerState, UserRecord};

use crate::rng::{self, CoreRng};
use crate::time::Instant;
use crate::types::{ConnId, Lsn, MessageId, PeerKeyHasher, Seq, UnixMillis, UserName};
use crate::wire::{
    ClientPacket, DecodeError, ErrorCode, Framing, Link, ServerPacket, encode_frame_into,
    hot_decode, hot_frames,
};
use conn::{Conn, Phase};
use limits::{RecentIds, SendDigest, TokenBucket, UsedId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes driver-chosen connection ids (not chosen by peers, so a keyed
/// hash buys nothing): one multiplication instead of SipHash.
#[derive(Default)]
struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing, folded so that the high bits hashbrown uses as
        // tags depend on every input bit.
        let h = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

/// Connections by id.
type ConnMap = HashMap<ConnId, Conn, BuildHasherDefault<ConnIdHasher>>;

/// Room reserved in a connection's send buffer before encoding a packet:
/// enough for every reply but a key, and for a delivery's fields around its
/// envelope (which is reserved on top).
const TX_MIN: usize = 192;

/// Volatile per-user bookkeeping (rebuilt at start, never persisted),
/// indexed by [`UserId`].
#[derive(Debug)]
struct UserRuntime {
    /// The logged-in connection, if any.
    session: Option<ConnId>,
    /// Mailbox items with `seq` below this are durable and may be delivered.
    deliverable_end: Seq,
    /// When the user was last seen online (since this server started).
    last_seen: Option<UnixMillis>,
    /// Send rate limiter.
    bucket: TokenBucket,
    /// Ids this user sent recently.
    recent: RecentIds,
    /// The first `send` refused with `StorageUnavailable` on the session's
    /// connection and not sent again since: later sends wait for it.
    refused_for_storage: Option<(ConnId, MessageId)>,
}

/// Work waiting for a durability report.
#[derive(Debug)]
enum Held {
    /// A reply promising durability.
    Reply { conn: ConnId, packet: ServerPacket },
    /// Items of `user`'s mailbox below `end` became deliverable.
    Deliverable { user: UserId, end: Seq },
    /// An event about a durable change.
    Event(io::ServerEvent),
    /// Cluster: the answer to another node's call.
    RemoteReply {
        call: crate::cluster::CallId,
        reply: crate::cluster::RemoteReply,
    },
}

/// The sans-IO server. See the [module docs](self) for the drive loop.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    state: ServerState,
    rng: CoreRng,
    /// Hasher of the maps keyed by what peers choose (keyed from the seed).
    hasher: PeerKeyHasher,
    server_id: [u8; 16],
    start: Instant,
    start_unix: UnixMillis,
    conns: ConnMap,
    /// Per registered user, by [`UserId`] (the state's numbering).
    users: Vec<UserRuntime>,
    outputs: VecDeque<Output>,
    /// Connections with frames in `tx`.
    dirty: Vec<ConnId>,
    /// Transmit buffers the driver gave back, for later frames.
    spare_tx: spare_tx::SpareTx,
    next_lsn: u64,
    durable: Lsn,
    held: VecDeque<(Lsn, Held)>,
    /// Connection deadlines (handshake or liveness); stale entries are
    /// re-checked when popped.
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Deadlines of queued items (§4.7).
    expiry: expiry::ExpiryQueue,
    /// Cluster node state (`ServerConfig::cluster`).
    cluster: Option<Box<cluster::Node>>,
    /// Whether the store can make changes durable now
    /// (`Input::StorageAvailable`).
    storage_available: bool,
}

impl Server {
    /// A server over `state` (empty on first start, or rebuilt from a store
    /// with [`ServerState::apply`]). `seed` seeds every random value the
    /// server draws (drivers take it from the OS); `now` and `unix_ms` are the
    /// same moment on the monotonic and the wall clock.
    pub fn new(
        mut config: ServerConfig,
        state: ServerState,
        seed: [u8; 32],
        now: Instant,
        unix_ms: UnixMillis,
    ) -> Self {
        config.max_frame = config.max_frame.max(MIN_MAX_FRAME);
        config.max_envelope = config
            .max_envelope
            .min(config.max_frame.saturating_sub(1024));
        config.window = config.window.max(1);
        config.handshake_max_frame = config.handshake_max_frame.clamp(1024, config.max_frame);
        let mut rng = rng::from_seed(seed);
        let mut server = Self {
            server_id: [0; 16],
            start: now,
            start_unix: unix_ms,
            conns: ConnMap::default(),
            users: Vec::new(),
            outputs: VecDeque::new(),
            dirty: Vec::new(),
            spare_tx: spare_tx::SpareTx::default(),
            next_lsn: 1,
            durable: Lsn(0),
            held: VecDeque::new(),
            timers: BinaryHeap::new(),
            // Every stored item's deadline, once (deadlines that passed
            // while the server was down are due at once).
            expiry: expiry::ExpiryQueue::new(config.message_ttl, now, unix_ms, &state),
            rng: rng::derive(&mut rng),
            hasher: PeerKeyHasher::default(),
            cluster: config.cluster.map(|c| Box::new(cluster::Node::new(c))),
            storage_available: true,
            config,
            state,
        };
        // Maps keyed by what peers choose hash with a key from the seed.
        server.hasher = PeerKeyHasher::with_key(rng::hash_key(&seed));
        server.state.rekey(server.hasher.clone());
        server.server_id = match server.state.server_id() {
            Some(id) => id,
            None => {
                let server_id = rng::bytes(&mut server.rng);
                server.persist(state::PersistCmd::SetServerId { server_id });
                server_id
            }
        };
        server.rebuild_runtime(now);
        server
    }

    /// Volatile per-user state from the durable state: everything queued is
    /// durable, and the ids of queued messages are remembered for
    /// deduplication (per sender the newest `dedupe_per_sender`, by the time
    /// they were queued).
    fn rebuild_runtime(&mut self, now: Instant) {
        for (_, record) in self.state.users() {
            let mut runtime = self.new_runtime(now);
            runtime.deliverable_end = record.mailbox.next_seq;
            self.users.push(runtime);
        }
        let capacity = self.config.dedupe_per_sender;
        for (from, id, used) in queued_ids(&self.hasher, self.state.users()) {
            if let Some(from) = self.state.id_of(from) {
                self.users[from.index()].recent.insert(id, used, capacity);
            }
        }
    }

    /// Feeds one input. See the [module docs](self).
    ///
    /// Whatever the input, items whose deadline has passed at `now` are
    /// expired first (§4.7), so nothing is delivered past its deadline even
    /// if the driver's timer fires late.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.expire_due(now);
        match input {
            Input::Connected(conn, link) => self.on_connected(now, conn, link),
            Input::Bytes(conn, bytes) => self.on_bytes(now, conn, bytes),
            Input::Disconnected(conn) => self.close(now, conn, CloseReason::TransportClosed),
            Input::Durable(lsn) => self.on_durable(now, lsn),
            Input::Timeout => self.on_timeout(now),
            Input::RemoveUser(user) => self.on_remove_user(now, user),
            Input::StorageAvailable(available) => self.on_storage_available(available),
            Input::ShardAcquired { .. }
            | Input::ShardLost(_)
            | Input::OwnerChanged { .. }
            | Input::Forwarded { .. }
            | Input::Remote { .. } => self.on_cluster_input(now, input),
        }
        self.expiry.compact(&self.state);
    }

    /// The next output, if any. Drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        while let Some(conn) = self.dirty.pop() {
            if let Some(c) = self.conns.get_mut(&conn)
                && !c.tx.is_empty()
            {
                queue_transmits(conn, c, &mut self.outputs, &mut self.spare_tx);
                return self.outputs.pop_front();
            }
        }
        None
    }

    /// Gives back the buffer of an `Output::Transmit` once its bytes are
    /// written, for the server to encode later frames into (optional: it
    /// saves an allocation per transmit). A few buffers of moderate size
    /// are kept; any other is freed.
    pub fn recycle_transmit(&mut self, bytes: Vec<u8>) {
        self.spare_tx.give(bytes);
    }

    /// When to feed `Input::Timeout` next, if anything waits on time: the
    /// earliest connection deadline, queued item's expiry deadline (or
    /// the deadline of an item acknowledged since the last timeout: an
    /// early timeout is harmless and corrects it) or, on a cluster node,
    /// forward retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conn_deadline = self.timers.peek().map(|Reverse((at, _))| *at);
        let retry = self.cluster.as_ref().and_then(|node| node.next_retry());
        [conn_deadline, self.expiry.next_deadline(), retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// Tells every client the server is shutting down and closes every
    /// connection. Drain outputs afterwards.
    pub fn shutdown(&mut self, now: Instant) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.fatal(now, conn, ErrorCode::ShuttingDown, "server shutting down");
        }
    }

    /// The durable state (including changes not yet reported durable).
    pub fn state(&self) -> &ServerState {
        &self.state
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// This server's stable id.
    pub fn server_id(&self) -> [u8; 16] {
        self.server_id
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether `user` is logged in and listening.
    pub fn is_online(&self, user: &UserName) -> bool {
        self.state
            .id_of(user)
            .and_then(|id| self.session_of(id))
            .is_some_and(|(_, online)| online)
    }

    /// The highest LSN reported durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// Bytes of read and write buffers held for all connections (and
    /// write buffers given back by [`Self::recycle_transmit`]).
    pub fn buffered_bytes(&self) -> usize {
        let conns: usize = self
            .conns
            .values()
            .map(|c| c.decoder.memory() + c.tx.capacity())
            .sum();
        conns + self.spare_tx.memory()
    }

    // ---- internals shared by the handler files ----

    fn wall(&self, now: Instant) -> UnixMillis {
        crate::types::unix_at(self.start_unix, self.start, now)
    }

    fn session_of(&self, user: UserId) -> Option<(ConnId, bool)> {
        let conn = self.users.get(user.index())?.session?;
        let online = self.conns.get(&conn)?.session()?.online;
        Some((conn, online))
    }

    fn new_runtime(&self, now: Instant) -> UserRuntime {
        UserRuntime {
            session: None,
            deliverable_end: 0,
            last_seen: None,
            bucket: TokenBucket::new(self.config.send_burst, now),
            recent: RecentIds::new(self.hasher.clone()),
            refused_for_storage: None,
        }
    }

    /// The runtime of a registered user (made when first needed: users
    /// registered since start get theirs here).
    fn runtime(&mut self, user: UserId, now: Instant) -> &mut UserRuntime {
        while self.users.len() <= user.index() {
            let fresh = self.new_runtime(now);
            self.users.push(fresh);
        }
        &mut self.users[user.index()]
    }

    fn on_connected(&mut self, now: Instant, conn: ConnId, link: Link) {
        if self.conns.contains_key(&conn) {
            return;
        }
        let session_id = rng::bytes(&mut self.rng);
        self.conns.insert(
            conn,
            Conn::new(self.config.handshake_max_frame, session_id, link, now),
        );
        self.arm_timer(conn, self.config.handshake_deadline(now));
    }

    /// Makes `at` the connection's timer if it is earlier than the one set.
    /// Each connection has one live heap entry; later deadlines (a ping
    /// moving the liveness deadline on) are picked up when it fires.
    fn arm_timer(&mut self, conn: ConnId, at: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.timer_at.is_some_and(|t| t <= at) {
            return;
        }
        c.timer_at = Some(at);
        self.timers.push(Reverse((at, conn)));
    }

    fn on_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.framing == Framing::Messages {
            let decoded = c.decoder.decode_message::<ClientPacket>(bytes);
            return self.on_received(now, conn, decoded);
        }
        // Whole frames are decoded straight from `bytes`; only a partial
        // frame is copied into the connection's buffer.
        let mut input = bytes;
        while let Some(c) = self.conns.get_mut(&conn) {
            match c
                .decoder
                .next_packet_from(&mut input, hot_decode::client_packet)
            {
                Ok(Some(packet)) => self.on_received(now, conn, Ok(packet)),
                Ok(None) => return,
                Err(e) => return self.on_received(now, conn, Err(e)),
            }
        }
    }

    /// A packet arrived, or bytes that are not one (fatal).
    fn on_received(
        &mut self,
        now: Instant,
        conn: ConnId,
        decoded: Result<ClientPacket, DecodeError>,
    ) {
        match decoded {
            Ok(packet) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_heard = now;
                }
                self.on_packet(now, conn, packet);
            }
            Err(DecodeError::TooLarge { len, max }) => {
                let detail = format!("frame of {len} bytes, limit {max}");
                self.fatal(now, conn, ErrorCode::FrameTooLarge, &detail);
            }
            Err(e) => self.fatal(now, conn, ErrorCode::Malformed, &e.to_string()),
        }
    }

    fn on_packet(&mut self, now: Instant, conn: ConnId, packet: ClientPacket) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if let Phase::AwaitHello = c.phase {
            return match packet {
                ClientPacket::Hello { versions } => self.on_hello(now, conn, &versions),
                _ => self.fatal(
                    now,
                    conn,
                    ErrorCode::UnexpectedPacket,
                    "the first packet must be hello",
                ),
            };
        }
        match packet {
            ClientPacket::Hello { .. } => {
                self.fatal(now, conn, ErrorCode::UnexpectedPacket, "hello twice")
            }
            ClientPacket::Register { user, public_key } => {
                self.on_register(now, conn, user, &public_key)
            }
            ClientPacket::Login { user } => self.on_login(now, conn, user),
            ClientPacket::Prove {
                client_nonce,
                signature,
            } => self.on_prove(now, conn, client_nonce, &signature),
            ClientPacket::FetchKey { user } => self.on_fetch_key(now, conn, user),
            ClientPacket::Send { id, to, envelope } => self.on_send(now, conn, id, to, envelope),
            ClientPacket::Ack { seq } => self.on_ack(now, conn, seq),
            ClientPacket::Ping => self.send(conn, &ServerPacket::Pong),
            ClientPacket::SetPresence { online } => self.on_set_presence(now, conn, online),
            ClientPacket::QueryPresence { user } => self.on_query_presence(now, conn, user),
        }
    }

    fn on_durable(&mut self, now: Instant, lsn: Lsn) {
        if lsn <= self.durable {
            return;
        }
        self.durable = lsn;
        self.forget_backing(lsn);
        while self.held.front().is_some_and(|(at, _)| *at <= lsn) {
            if let Some((_, held)) = self.held.pop_front() {
                self.run_held(now, held);
            }
        }
    }

    fn run_held(&mut self, now: Instant, held: Held) {
        match held {
            Held::Reply { conn, packet } => self.send(conn, &packet),
            Held::Deliverable { user, end } => {
                let runtime = self.runtime(user, now);
                runtime.deliverable_end = runtime.deliverable_end.max(end);
                self.pump(now, user);
            }
            Held::Event(event) => self.event(event),
            Held::RemoteReply { call, reply } => self.reply(call, reply),
        }
    }

    /// Applies a command to the state and emits it for the store.
    fn persist(&mut self, cmd: PersistCmd) -> Lsn {
        self.state.apply(&cmd);
        let lsn = Lsn(self.next_lsn);
        self.next_lsn += 1;
        self.note_backing(lsn, &cmd);
        self.outputs.push_back(Output::Persist { lsn, cmd });
        lsn
    }

    /// [`Self::persist`] for a mailbox command of `user` about a message
    /// from `from` (ids the caller already has).
    fn persist_resolved(&mut self, cmd: PersistCmd, user: UserId, from: Option<UserId>) -> Lsn {
        self.state.apply_resolved(&cmd, user, from);
        let lsn = Lsn(self.next_lsn);
        self.next_lsn += 1;
        self.note_backing(lsn, &cmd);
        self.outputs.push_back(Output::Persist { lsn, cmd });
        lsn
    }

    /// Runs `held` once `lsn` is durable (now, if it already is).
    fn after_durable(&mut self, now: Instant, lsn: Lsn, held: Held) {
        if lsn <= self.durable {
            self.run_held(now, held);
        } else {
            self.held.push_back((lsn, held));
        }
    }

    /// Queues one packet on a connection.
    fn send(&mut self, conn: ConnId, packet: &ServerPacket) {
        let max_frame = self.config.max_frame;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let was_empty = c.tx.is_empty();
        self.spare_tx.fill(&mut c.tx);
        // One allocation for the usual reply instead of a doubling series.
        c.tx.reserve(TX_MIN);
        // Replies are small (the largest is a 4096-bit key), so they fit any
        // max_frame the server accepts; should one not, the operator hears
        // of it rather than the server panicking.
        // The one reply every message costs has a hand-written encoder.
        let encoded = match packet {
            ServerPacket::Accepted { id } => hot_frames::accepted(id, max_frame, &mut c.tx),
            _ => encode_frame_into(packet, max_frame, &mut c.tx),
        };
        match encoded {
            Ok(()) if was_empty => self.dirty.push(conn),
            Ok(()) => {}
            Err(error) => self.event(ServerEvent::ReplyNotSent { conn, error }),
        }
    }

    /// A non-fatal error answer. One naming a message id refuses that
    /// send (`ServerEvent::MessageRefused`).
    fn send_error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        id: Option<MessageId>,
        user: Option<UserName>,
        detail: &str,
    ) {
        if id.is_some() {
            self.event(ServerEvent::MessageRefused { conn, code });
        }
        self.send(
            conn,
            &ServerPacket::Error {
                code,
                id,
                user,
                detail: detail.to_owned(),
            },
        );
    }

    /// A fatal error: Error frame, Close, event.
    fn fatal(&mut self, now: Instant, conn: ConnId, code: ErrorCode, detail: &str) {
        self.send_error(conn, code, None, None, detail);
        self.close(now, conn, CloseReason::Error(code));
    }

    /// Forgets a connection. Emits Close unless the transport is already gone.
    fn close(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        // Replies held for durability die with their connection: the driver
        // may reuse the id for a new one.
        self.held
            .retain(|(_, held)| !matches!(held, Held::Reply { conn: c, .. } if *c == conn));
        self.forget_conn_forwards(conn);
        if reason != CloseReason::TransportClosed {
            queue_transmits(conn, &mut c, &mut self.outputs, &mut self.spare_tx);
            self.outputs.push_back(Output::Close { conn });
        }
        let user = c.user().cloned();
        if let Some((user, id)) = user.as_ref().zip(c.user_id()) {
            let was_online = c.session().is_some_and(|s| s.online);
            let wall = self.wall(now);
            let runtime = self.runtime(id, now);
            if runtime.session == Some(conn) {
                runtime.session = None;
                if was_online {
                    runtime.last_seen = Some(wall);
                    self.event(ServerEvent::PresenceChanged {
                        user: user.clone(),
                        online: false,
                    });
                }
            }
        }
        self.event(ServerEvent::ConnectionClosed { conn, user, reason });
    }

    fn event(&mut self, event: ServerEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

/// The ids of the messages queued in `mailboxes` as deduplication memory
/// rebuilt from stored state (at start, or when a cluster node acquires a
/// shard): by sender, all durable, oldest first (stable: items queued in
/// the same millisecond keep mailbox order).
fn queued_ids<'a>(
    hasher: &PeerKeyHasher,
    mailboxes: impl IntoIterator<Item = (&'a UserName, &'a UserRecord)>,
) -> Vec<(&'a UserName, MessageId, UsedId)> {
    let mut queued: Vec<(UnixMillis, &UserName, MessageId, UsedId)> = Vec::new();
    for (to, record) in mailboxes {
        for item in record.mailbox.items.values() {
            if let MailItem::Message {
                from,
                id,
                envelope,
                enqueued_at,
            } = item
            {
                let used = UsedId {
                    lsn: Lsn(0),
                    digest: SendDigest::of(hasher, to, envelope),
                };
                queued.push((*enqueued_at, from, *id, used));
            }
        }
    }
    queued.sort_by_key(|(enqueued_at, ..)| *enqueued_at);
    queued
        .into_iter()
        .map(|(_, from, id, used)| (from, id, used))
        .collect()
}

/// Hands a connection's queued frames out as `Transmit`s: all at once on a
/// byte stream; on a message transport one per packet, without its prefix
/// (the frames' buffer then goes to `spare`).
fn queue_transmits(
    conn: ConnId,
    c: &mut Conn,
    outputs: &mut VecDeque<Output>,
    spare: &mut spare_tx::SpareTx,
) {
    if c.tx.is_empty() {
        return;
    }
    let frames = std::mem::take(&mut c.tx);
    match c.framing {
        Framing::Stream => outputs.push_back(Output::Transmit {
            conn,
            bytes: frames,
        }),
        Framing::Messages => {
            outputs.extend(crate::wire::codec::frame_payloads(&frames).map(|packet| {
                Output::Transmit {
                    conn,
                    bytes: packet.to_vec(),
                }
            }));
            spare.give(frames);
        }
    }
}
