//! `server_inputs`: an arbitrary sequence of driver inputs into a
//! [`Server`] with small limits, with invariants checked after every step.
//!
//! # Input format
//!
//! A [`Setup`] (14 bytes: the small limits), then ops until the input ends,
//! each a kind byte (mod 11) and its fields (see [`Op`] and [`crate::codec`]).
//! `Packets` builds *valid* frames from structured client packets so the
//! fuzzer gets past the framing; `Raw` sends arbitrary bytes.
//!
//! # Invariants
//!
//! After every step (one input and a full drain of the outputs):
//! * every `Transmit` is non-empty, for a connection that is open, and holds
//!   whole frames that decode as `ServerPacket`s (one decoder per
//!   connection);
//! * `Close` only for an open connection, only after the server closed it
//!   itself, and exactly for the connections that got a fatal `Error` in
//!   the same step; nothing is sent on a closed connection;
//! * `Persist` LSNs strictly increase; `durable_lsn()` is what was reported;
//! * durability: `Registered`, `Accepted` and every delivered `Message` /
//!   `Notice` go out only once the command backing them is durable;
//! * nothing dropped silently: every `Accepted {id}` answers a `Send` of
//!   that id on its connection (read with the mirror decoder, each `Send`
//!   answered at most once) whose recipient and envelope the server queued
//!   under that sender and id (in this run, or still queued at its start);
//! * deliveries only on logged-in connections, in increasing `seq` order,
//!   never of an item expired in the same step,
//!   and at most `window` delivered-but-unacknowledged per connection (acks
//!   are read from the client's own bytes with a mirror decoder; a delivery
//!   in the step whose acks or expiries made room for it is counted without
//!   them, and every connection is checked again once they are applied);
//! * no mailbox exceeds `queue_max_messages` / `queue_max_bytes`, its
//!   counters match its items, no user's `outstanding` exceeds
//!   `max_outstanding_per_sender`;
//! * `buffered_bytes() <= connections * (max_frame + 4 + largest chunk)`;
//! * after `Timeout` at `now`, `poll_timeout()` is later than `now`.
//!
//! At the end (and at every simulated crash): replaying every persisted
//! command rebuilds exactly `server.state()`, and so does its snapshot.

use crate::codec::{self, Writer, byte, u16be};
use arbitrary::{Result, Unstructured};
use missive_core::server::{
    Input, MailItem, Output, PersistCmd, Server, ServerConfig, ServerState,
};
use missive_core::wire::{
    ClientPacket, FrameDecoder, LENGTH_PREFIX_LEN, ServerPacket, encode_frame,
};
use missive_core::{ConnId, Lsn, MessageId, UnixMillis, UserName};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// The frame limit of the fuzzed server.
pub const MAX_FRAME: u32 = 4096;
/// Connection ids are `0..CONNS`.
pub const CONNS: u8 = 8;
const T0_UNIX: UnixMillis = 1_700_000_000_000;

/// The fuzzed server's limits, one byte each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Setup(pub [u8; 14]);

impl Setup {
    /// A typical small configuration (used by the corpus generator).
    pub const TYPICAL: Setup = Setup([2, 5, 31, 50, 9, 4, 4, 2, 119, 4, 19, 9, 29, 2]);

    /// The server configuration these bytes select.
    pub fn config(&self) -> ServerConfig {
        let b = self.0;
        let mut c = ServerConfig::default();
        c.max_frame = MAX_FRAME;
        c.max_envelope = MAX_FRAME; // the server clamps it to max_frame - 1 KiB
        c.window = 1 + u32::from(b[0] % 4);
        c.queue_max_messages = 1 + u32::from(b[1] % 8);
        c.queue_max_bytes = 64 * (1 + u64::from(b[2] % 64));
        c.sender_share_percent = 1 + b[3] % 100;
        c.max_outstanding_per_sender = 1 + u32::from(b[4] % 16);
        c.dedupe_per_sender = usize::from(b[5] % 8);
        c.send_burst = 1 + u32::from(b[6] % 8);
        c.send_rate_per_sec = u32::from(b[7] % 4);
        c.message_ttl = Duration::from_secs(1 + u64::from(b[8]));
        // b[9] chose the expiry check interval, gone since the server wakes
        // at each item's deadline; it stays in the layout so that the corpus
        // keeps its meaning.
        c.challenge_ttl = Duration::from_secs(1 + u64::from(b[10] % 30));
        c.handshake_timeout = Duration::from_secs(1 + u64::from(b[11] % 30));
        c.ping_interval = Duration::from_secs(1 + u64::from(b[12] % 30));
        c.missed_pings = 1 + u32::from(b[13] % 3);
        // Frames before login: 1, 2, 3 or 4 KiB (the server clamps to
        // 1 KiB..=max_frame).
        c.handshake_max_frame = 1024 * (1 + u32::from(b[13] >> 2) % 4);
        c
    }
}

/// One step of the driver.
/// A send the server queued: recipient and envelope.
type QueuedSend = (UserName, Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `Input::Connected(conn, Link::PLAINTEXT)`.
    Connect(u8),
    /// `Input::Disconnected(conn)`.
    Disconnect(u8),
    /// `Input::Bytes` with arbitrary bytes.
    Raw { conn: u8, bytes: Vec<u8> },
    /// Valid frames of these packets, concatenated and cut into chunks of
    /// `chunk` bytes (0: one chunk), one `Input::Bytes` each.
    Packets {
        conn: u8,
        chunk: u16,
        packets: Vec<ClientPacket>,
    },
    /// `Input::Durable`: 0xffff is the highest LSN emitted, otherwise
    /// this value modulo (highest + 1).
    Durable(u16),
    /// Time advances by `amount` units (0: ms, 1: s, 2: min, 3: h), then
    /// `Input::Timeout`.
    Timeout { unit: u8, amount: u16 },
    /// Time jumps to `poll_timeout()` (if later), then `Input::Timeout`.
    TimeoutAtDeadline,
    /// Time advances without a timeout input.
    Advance { unit: u8, amount: u16 },
    /// Crash and restart: a new server over the durable prefix of the log.
    Restart,
    /// `Server::shutdown`.
    Shutdown,
}

impl Op {
    /// Reads one op; `Err` at the end of the input.
    pub fn read(u: &mut Unstructured<'_>) -> Result<Op> {
        Ok(match byte(u)? % 10 {
            0 => Op::Connect(byte(u)?),
            1 => Op::Disconnect(byte(u)?),
            2 => Op::Raw {
                conn: byte(u)?,
                bytes: codec::blob(u),
            },
            3 => {
                let conn = byte(u)?;
                let chunk = u16be(u);
                let n = byte(u)? % 9;
                let mut packets = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    packets.push(codec::client_packet(u)?);
                }
                Op::Packets {
                    conn,
                    chunk,
                    packets,
                }
            }
            4 => Op::Durable(u16be(u)),
            5 => Op::Timeout {
                unit: byte(u)?,
                amount: u16be(u),
            },
            6 => Op::TimeoutAtDeadline,
            7 => Op::Advance {
                unit: byte(u)?,
                amount: u16be(u),
            },
            8 => Op::Restart,
            _ => Op::Shutdown,
        })
    }

    /// Writes one op (see [`Op::read`]).
    pub fn write(&self, w: &mut Writer) {
        match self {
            Op::Connect(c) => {
                w.byte(0).byte(*c);
            }
            Op::Disconnect(c) => {
                w.byte(1).byte(*c);
            }
            Op::Raw { conn, bytes } => {
                w.byte(2).byte(*conn).blob(bytes);
            }
            Op::Packets {
                conn,
                chunk,
                packets,
            } => {
                assert!(packets.len() <= 8);
                w.byte(3)
                    .byte(*conn)
                    .u16be(*chunk)
                    .byte(packets.len() as u8);
                for p in packets {
                    codec::write_client_packet(w, p);
                }
            }
            Op::Durable(v) => {
                w.byte(4).u16be(*v);
            }
            Op::Timeout { unit, amount } => {
                w.byte(5).byte(*unit).u16be(*amount);
            }
            Op::TimeoutAtDeadline => {
                w.byte(6);
            }
            Op::Advance { unit, amount } => {
                w.byte(7).byte(*unit).u16be(*amount);
            }
            Op::Restart => {
                w.byte(8);
            }
            Op::Shutdown => {
                w.byte(9);
            }
        }
    }
}

impl codec::InputOp for Op {
    fn read_op(u: &mut Unstructured<'_>) -> Result<Self> {
        Op::read(u)
    }
    fn write_op(&self, w: &mut Writer) {
        self.write(w);
    }
}

/// Parses a whole input: setup and ops.
pub fn parse(data: &[u8]) -> (Setup, Vec<Op>) {
    let (setup, ops) = codec::parse_ops(data);
    (Setup(setup), ops)
}

/// Writes a whole input (see [`parse`]).
pub fn to_bytes(setup: &Setup, ops: &[Op]) -> Vec<u8> {
    codec::ops_to_bytes(&setup.0, ops)
}

/// Runs the `server_inputs` target on one input.
pub fn run(data: &[u8]) {
    let (setup, ops) = parse(data);
    let mut h = Harness::new(setup.config());
    for op in ops {
        h.op(op);
    }
    h.finish();
}

/// What the harness knows about one open connection.
struct ConnModel {
    /// Server → client frames.
    rx: FrameDecoder,
    /// Client → server frames, decoded like the server does, to see acks.
    mirror: FrameDecoder,
    mirror_failed: bool,
    /// Logged in as.
    user: Option<UserName>,
    /// Delivered and not (yet seen) acknowledged or expired.
    in_flight: BTreeSet<u64>,
    /// Highest seq delivered on this connection.
    last_delivered: Option<u64>,
    /// `Send`s on this connection not (yet) answered `Accepted`: by id,
    /// each recipient and envelope.
    sends: HashMap<MessageId, Vec<(UserName, Vec<u8>)>>,
}

impl ConnModel {
    fn new(max_frame: u32) -> Self {
        Self {
            // The client side accepts whatever the server may send.
            rx: FrameDecoder::new(max_frame),
            // No limit: where the server's decoder refuses a frame (its
            // limit is lower before login), it closes the connection, and
            // the model forgets it; the mirror never misses an ack.
            mirror: FrameDecoder::new(u32::MAX),
            mirror_failed: false,
            user: None,
            in_flight: BTreeSet::new(),
            last_delivered: None,
            sends: HashMap::new(),
        }
    }
}

/// A server, a model of its connections, a log standing in for the store,
/// virtual time.
pub struct Harness {
    config: ServerConfig,
    server: Server,
    t0: Instant,
    now: Instant,
    /// Durable commands of earlier (crashed) server instances.
    base_log: Vec<PersistCmd>,
    /// Commands of the current instance.
    log: Vec<(Lsn, PersistCmd)>,
    durable: Lsn,
    conns: HashMap<ConnId, ConnModel>,
    largest_chunk: usize,
    restarts: u8,
    /// LSN of the command that queued each mailbox item / message / user.
    item_lsn: HashMap<(UserName, u64), Lsn>,
    message_lsn: HashMap<(UserName, MessageId), Lsn>,
    /// Every (recipient, envelope) queued under each (sender, id).
    queued_sends: HashMap<(UserName, MessageId), Vec<QueuedSend>>,
    user_lsn: HashMap<UserName, Lsn>,
}

impl Harness {
    /// A fresh server with `config`.
    pub fn new(config: ServerConfig) -> Self {
        let t0 = Instant::now();
        let server = Server::new(config.clone(), ServerState::new(), [0x5e; 32], t0, T0_UNIX);
        let mut h = Self {
            config: server.config().clone(),
            server,
            t0,
            now: t0,
            base_log: Vec::new(),
            log: Vec::new(),
            durable: Lsn(0),
            conns: HashMap::new(),
            largest_chunk: 0,
            restarts: 0,
            item_lsn: HashMap::new(),
            message_lsn: HashMap::new(),
            queued_sends: HashMap::new(),
            user_lsn: HashMap::new(),
        };
        h.step(None, &[]);
        h
    }

    /// The server under test.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// How many `Ack` commands were persisted (by the current instance).
    pub fn acks_persisted(&self) -> usize {
        self.log
            .iter()
            .filter(|(_, c)| matches!(c, PersistCmd::Ack { .. }))
            .count()
    }

    /// Runs one op.
    pub fn op(&mut self, op: Op) {
        match op {
            Op::Connect(c) => {
                let conn = ConnId(u64::from(c % CONNS));
                if !self.conns.contains_key(&conn) {
                    self.conns
                        .insert(conn, ConnModel::new(self.config.max_frame));
                }
                self.step(
                    Some(Input::Connected(
                        conn,
                        missive_core::wire::Link::PLAINTEXT)),
                    &[],
                );
            }
            Op::Disconnect(c) => {
                let conn = ConnId(u64::from(c % CONNS));
                self.conns.remove(&conn);
                self.step(Some(Input::Disconnected(conn)), &[]);
            }
            Op::Raw { conn, bytes } => self.bytes(ConnId(u64::from(conn % CONNS)), &bytes),
            Op::Packets {
                conn,
                chunk,
                packets,
            } => {
                let conn = ConnId(u64::from(conn % CONNS));
                let mut stream = Vec::new();
                for p in &packets {
                    // Valid framing even above the limit (the server must
                    // refuse those frames itself).
                    if let Ok(frame) = encode_frame(p, u32::MAX) {
                        stream.extend_from_slice(&frame);
                    }
                }
                if chunk == 0 {
                    self.bytes(conn, &stream);
                } else {
                    for piece in stream.chunks(usize::from(chunk)) {
                        self.bytes(conn, piece);
                    }
                }
            }
            Op::Durable(v) => {
                let highest = self.log.last().map_or(0, |(lsn, _)| lsn.0);
                let lsn = if v == 0xffff {
                    highest
                } else {
                    u64::from(v) % (highest + 1)
                };
                self.durable = self.durable.max(Lsn(lsn));
                self.step(Some(Input::Durable(Lsn(lsn))), &[]);
            }
            Op::Timeout { unit, amount } => {
                self.now += codec::duration(unit, amount);
                self.timeout();
            }
            Op::TimeoutAtDeadline => {
                if let Some(at) = self.server.poll_timeout() {
                    self.now = self.now.max(at);
                }
                self.timeout();
            }
            Op::Advance { unit, amount } => self.now += codec::duration(unit, amount),
            Op::Restart => self.restart(),
            Op::Shutdown => {
                self.server.shutdown(self.now);
                self.step(None, &[]);
                assert!(self.conns.is_empty(), "shutdown left connections open");
            }
        }
    }

    fn bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        self.largest_chunk = self.largest_chunk.max(bytes.len());
        // What the server will decode from these bytes, to learn the acks.
        let mut acks = Vec::new();
        if let Some(m) = self.conns.get_mut(&conn)
            && !m.mirror_failed
        {
            m.mirror.push(bytes);
            loop {
                match m.mirror.next_packet::<ClientPacket>() {
                    Ok(Some(ClientPacket::Ack { seq })) => acks.push(seq),
                    Ok(Some(ClientPacket::Send { id, to, envelope })) => {
                        m.sends.entry(id).or_default().push((to, envelope.to_vec()));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        m.mirror_failed = true;
                        break;
                    }
                }
            }
        }
        self.step(Some(Input::Bytes(conn, bytes)), &[(conn, acks)]);
    }

    fn timeout(&mut self) {
        self.step(Some(Input::Timeout), &[]);
        if let Some(at) = self.server.poll_timeout() {
            assert!(
                at > self.now,
                "poll_timeout() {:?} is not after the Timeout just handled",
                at - self.t0
            );
        }
    }

    /// Feeds `input` (if any), drains the outputs, checks the invariants.
    fn step(&mut self, input: Option<Input<'_>>, acks: &[(ConnId, Vec<u64>)]) {
        if let Some(input) = input {
            self.server.handle_input(self.now, input);
        }
        let mut fatal: HashSet<ConnId> = HashSet::new();
        let mut closed: HashSet<ConnId> = HashSet::new();
        let mut expired: Vec<(UserName, u64)> = Vec::new();
        while let Some(output) = self.server.poll_output() {
            match output {
                Output::Transmit { conn, bytes } => {
                    assert!(!bytes.is_empty(), "empty Transmit");
                    assert!(!closed.contains(&conn), "Transmit after Close on {conn:?}");
                    let Some(m) = self.conns.get_mut(&conn) else {
                        panic!("Transmit on {conn:?}, which is not open");
                    };
                    m.rx.push(&bytes);
                    let mut packets = Vec::new();
                    while let Some(p) =
                        m.rx.next_packet::<ServerPacket>()
                            .unwrap_or_else(|e| panic!("server frame does not decode: {e}"))
                    {
                        packets.push(p);
                    }
                    assert_eq!(m.rx.buffered_len(), 0, "Transmit ends inside a frame");
                    let acked = acks
                        .iter()
                        .find(|(c, _)| *c == conn)
                        .map_or(&[][..], |(_, seqs)| seqs.as_slice());
                    for p in packets {
                        self.observe(conn, p, acked, &expired, &mut fatal);
                    }
                }
                Output::Close { conn } => {
                    assert!(
                        self.conns.remove(&conn).is_some(),
                        "Close of {conn:?}, which is not open"
                    );
                    closed.insert(conn);
                }
                Output::Persist { lsn, cmd } => {
                    if let Some((last, _)) = self.log.last() {
                        assert!(lsn > *last, "LSN {lsn:?} after {last:?}");
                    }
                    self.note_persist(lsn, &cmd, &mut expired);
                    self.log.push((lsn, cmd));
                }
                Output::Event(_) => {}
                Output::Forward { .. } | Output::Reply { .. } => {
                    panic!("a single server forwards nothing and answers no node")
                }
            }
        }

        // Fatal errors and closes go together.
        for conn in &fatal {
            assert!(
                closed.contains(conn),
                "fatal Error on {conn:?} without Close"
            );
        }
        for conn in &closed {
            assert!(
                fatal.contains(conn),
                "Close of {conn:?} without a fatal Error"
            );
        }

        // Acks (the client's) and expiries (the server's) end deliveries.
        for (conn, seqs) in acks {
            if let Some(m) = self.conns.get_mut(conn) {
                for seq in seqs {
                    m.in_flight.remove(seq);
                }
            }
        }
        for (user, seq) in &expired {
            for m in self.conns.values_mut() {
                if m.user.as_ref() == Some(user) {
                    m.in_flight.remove(seq);
                }
            }
        }
        let window = self.config.window as usize;
        for (conn, m) in &self.conns {
            assert!(
                m.in_flight.len() <= window,
                "{} deliveries in flight on {conn:?} after the step, window {window}",
                m.in_flight.len()
            );
        }
        self.check();
    }

    /// Checks one packet the server sent on `conn`.
    ///
    /// `acked`: the seqs the client acknowledged in this step's input;
    /// `expired`: the items the server expired in this step (their `Expire`
    /// commands come out before any transmit). Both make room in the window
    /// before the deliveries that use it, but the harness sees only the
    /// outputs of the whole step, so a delivery is checked against the
    /// window without them (and every connection again once they are
    /// applied).
    fn observe(
        &mut self,
        conn: ConnId,
        packet: ServerPacket,
        acked: &[u64],
        expired: &[(UserName, u64)],
        fatal: &mut HashSet<ConnId>,
    ) {
        let durable = self.durable;
        let window = self.config.window as usize;
        let m = self.conns.get_mut(&conn).expect("open connection");
        match packet {
            ServerPacket::Error { code, .. } if code.is_fatal() => {
                fatal.insert(conn);
            }
            ServerPacket::LoggedIn { user, .. } => {
                assert!(m.user.is_none(), "second LoggedIn on {conn:?}");
                m.user = Some(user);
            }
            ServerPacket::Registered { user } => {
                let lsn = self.user_lsn.get(&user).copied();
                assert!(
                    lsn.is_some_and(|l| l <= durable),
                    "Registered {user} before its registration ({lsn:?}) is durable ({durable:?})"
                );
            }
            ServerPacket::Accepted { id } => {
                let user = m
                    .user
                    .clone()
                    .expect("Accepted on a connection not logged in");
                let lsn = self.message_lsn.get(&(user.clone(), id)).copied();
                assert!(
                    lsn.is_some_and(|l| l <= durable),
                    "Accepted {id} from {user} before it is durable ({lsn:?} > {durable:?})"
                );
                let queued = self
                    .queued_sends
                    .get(&(user.clone(), id))
                    .map_or(&[][..], Vec::as_slice);
                let pending = m.sends.entry(id).or_default();
                let answered = pending.iter().position(|send| queued.contains(send));
                let Some(answered) = answered else {
                    panic!(
                        "Accepted {id} from {user}: no unanswered Send of it on {conn:?} \
                         carries a recipient and envelope queued under that id"
                    );
                };
                pending.swap_remove(answered);
            }
            ServerPacket::Message { seq, .. } | ServerPacket::Notice { seq, .. } => {
                let user = m
                    .user
                    .clone()
                    .expect("delivery on a connection not logged in");
                let lsn = self.item_lsn.get(&(user.clone(), seq)).copied();
                assert!(
                    lsn.is_some_and(|l| l <= durable),
                    "delivery of {user}'s item {seq} before it is durable ({lsn:?} > {durable:?})"
                );
                assert!(
                    m.last_delivered.is_none_or(|last| seq > last),
                    "delivery of {seq} after {:?} on {conn:?}",
                    m.last_delivered
                );
                assert!(
                    !expired.contains(&(user.clone(), seq)),
                    "delivery of {user}'s item {seq}, expired in the same step"
                );
                m.last_delivered = Some(seq);
                m.in_flight.insert(seq);
                let unacked = m
                    .in_flight
                    .iter()
                    .filter(|s| !acked.contains(s) && !expired.contains(&(user.clone(), **s)))
                    .count();
                assert!(
                    unacked <= window,
                    "{unacked} deliveries in flight on {conn:?}, window {window}"
                );
            }
            _ => {}
        }
    }

    fn note_persist(&mut self, lsn: Lsn, cmd: &PersistCmd, expired: &mut Vec<(UserName, u64)>) {
        match cmd {
            PersistCmd::RegisterUser { user, .. } => {
                self.user_lsn.entry(user.clone()).or_insert(lsn);
            }
            PersistCmd::Enqueue { user, seq, item } => {
                self.item_lsn.insert((user.clone(), *seq), lsn);
                if let MailItem::Message {
                    from, id, envelope, ..
                } = item
                {
                    self.message_lsn.insert((from.clone(), *id), lsn);
                    self.queued_sends
                        .entry((from.clone(), *id))
                        .or_default()
                        .push((user.clone(), envelope.to_vec()));
                }
            }
            PersistCmd::Expire { user, seq } => expired.push((user.clone(), *seq)),
            _ => {}
        }
    }

    /// The invariants that hold between steps.
    fn check(&self) {
        let cfg = &self.config;
        assert_eq!(self.server.durable_lsn(), self.durable);
        assert_eq!(self.server.connection_count(), self.conns.len());
        let bound =
            self.conns.len() * (cfg.max_frame as usize + LENGTH_PREFIX_LEN + self.largest_chunk);
        assert!(
            self.server.buffered_bytes() <= bound,
            "buffered_bytes {} > {bound}",
            self.server.buffered_bytes()
        );
        for (name, record) in self.server.state().users() {
            let mb = &record.mailbox;
            assert!(
                mb.message_count <= cfg.queue_max_messages,
                "{name}: too many messages"
            );
            assert!(
                mb.message_bytes <= cfg.queue_max_bytes,
                "{name}: too many bytes"
            );
            let (mut count, mut bytes) = (0u32, 0u64);
            for (seq, item) in &mb.items {
                assert!(*seq < mb.next_seq, "{name}: seq {seq} >= next_seq");
                if let MailItem::Message { envelope, .. } = item {
                    count += 1;
                    bytes += envelope.len() as u64;
                }
            }
            assert_eq!(
                (count, bytes),
                (mb.message_count, mb.message_bytes),
                "{name}"
            );
            let per_sender: u32 = mb.per_sender.values().map(|u| u.messages).sum();
            assert_eq!(per_sender, count, "{name}: per-sender counts");
            assert!(
                record.outstanding <= cfg.max_outstanding_per_sender,
                "{name}: {} outstanding",
                record.outstanding
            );
        }
    }

    /// Crash: everything not durable is lost; a new server starts over the
    /// durable prefix.
    fn restart(&mut self) {
        self.check_replay();
        let durable = self.durable;
        self.base_log.extend(
            self.log
                .drain(..)
                .filter(|(lsn, _)| *lsn <= durable)
                .map(|(_, cmd)| cmd),
        );
        let state = ServerState::replay(&self.base_log);
        self.restarts = self.restarts.wrapping_add(1);
        let unix = codec::wall_clock(T0_UNIX, self.t0, self.now);
        self.server = Server::new(
            self.config.clone(),
            state,
            [self.restarts; 32],
            self.now,
            unix,
        );
        self.durable = Lsn(0);
        self.conns.clear();
        // Everything the new server holds is durable.
        self.item_lsn.clear();
        self.message_lsn.clear();
        self.queued_sends.clear();
        self.user_lsn.clear();
        for (name, record) in self.server.state().users() {
            self.user_lsn.insert(name.clone(), Lsn(0));
            for (seq, item) in &record.mailbox.items {
                self.item_lsn.insert((name.clone(), *seq), Lsn(0));
                if let MailItem::Message {
                    from, id, envelope, ..
                } = item
                {
                    self.message_lsn.insert((from.clone(), *id), Lsn(0));
                    self.queued_sends
                        .entry((from.clone(), *id))
                        .or_default()
                        .push((name.clone(), envelope.to_vec()));
                }
            }
        }
        self.step(None, &[]);
    }

    fn check_replay(&self) {
        let cmds = self.base_log.iter().chain(self.log.iter().map(|(_, c)| c));
        let replayed = ServerState::replay(cmds);
        assert!(
            replayed == *self.server.state(),
            "replaying the log does not rebuild the state"
        );
        // A snapshot rebuilds everything, the mailboxes' `next_seq`
        // included (a seq is never reused, docs/PROTOCOL.md §2.4).
        let state = self.server.state();
        let rebuilt = ServerState::replay(&state.snapshot());
        assert_eq!(rebuilt.server_id(), state.server_id());
        assert_eq!(rebuilt.user_count(), state.user_count());
        for (name, record) in state.users() {
            let other = rebuilt.user(name).expect("snapshot keeps every user");
            let (a, b) = (&record.mailbox, &other.mailbox);
            assert_eq!(other.public_key, record.public_key, "{name}");
            assert_eq!(other.outstanding, record.outstanding, "{name}");
            assert_eq!(b.items, a.items, "{name}");
            assert_eq!(
                (b.message_count, b.message_bytes),
                (a.message_count, a.message_bytes),
                "{name}"
            );
            assert_eq!(b.per_sender, a.per_sender, "{name}");
            assert_eq!(b.next_seq, a.next_seq, "{name}");
        }
    }

    /// The end-of-input checks.
    pub fn finish(self) {
        self.check_replay();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_round_trips() {
        let ops = vec![
            Op::Connect(1),
            Op::Packets {
                conn: 1,
                chunk: 3,
                packets: vec![
                    ClientPacket::Hello { versions: vec![1] },
                    ClientPacket::Login {
                        user: codec::name("alice"),
                    },
                ],
            },
            Op::Raw {
                conn: 1,
                bytes: vec![0, 0, 0, 5, 0x64, b'p', b'i', b'n', b'g'],
            },
            Op::Durable(0xffff),
            Op::Timeout {
                unit: 1,
                amount: 30,
            },
            Op::TimeoutAtDeadline,
            Op::Advance { unit: 0, amount: 1 },
            Op::Restart,
            Op::Disconnect(1),
            Op::Shutdown,
        ];
        let bytes = to_bytes(&Setup::TYPICAL, &ops);
        assert_eq!(parse(&bytes), (Setup::TYPICAL, ops));
        run(&bytes);
    }
}
