//! Deterministic simulation: one server and several clients, all driven
//! through the core's public API in one thread with virtual time, in the
//! spirit of quinn-proto's `Pair` harness.
//!
//! Faults, all drawn from the seed: random chunking and latency of the byte
//! streams, connection loss (in-flight bytes are lost, as with a reset TCP
//! connection), client restarts from their durable state (some shortly after
//! a `send` went out, from the state saved before its envelope was sealed),
//! forward clock jumps, and server crashes that keep only the commands the
//! store reported durable. After a fault-free settling phase the run checks
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

use missive_core::client::{
    Client, ClientConfig, ClientEvent, ClientInput, ClientOutput, ClientState, SendFailure,
};
use missive_core::crypto::{self, ChannelBinding, Identity};
use missive_core::rng::{self, CoreRng};
use missive_core::server::{
    Input, MailItem, Output, PersistCmd, Server, ServerConfig, ServerState,
};
use missive_core::wire::{
    ClientPacket, DEFAULT_MAX_FRAME, FrameDecoder, Framing, Notice, ServerPacket, decode_packet,
};
use missive_core::{ConnId, Lsn, MessageId, Seq, UserName};
use rand_core::Rng;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const USERS: usize = 4;
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

/// One TCP-like connection between a client and the server.
struct Link {
    conn: ConnId,
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
    /// Messages the server expired (durably).
    expired: usize,
    /// Of those, the ones that never reached the recipient's application.
    expired_unread: usize,
}

struct Sim {
    rng: CoreRng,
    now: Instant,
    /// Virtual time zero: the wall clock reads `T0_UNIX` here.
    origin: Instant,
    server: Server,
    config: ServerConfig,
    /// The wall-clock time each item was enqueued at, by (owner, seq), from
    /// the server's `Enqueue` commands (the latest for a seq a crash lost).
    enqueued_at: HashMap<(UserName, Seq), u64>,
    /// Commands the store reported durable (what survives a crash).
    durable: Vec<PersistCmd>,
    /// Commands emitted but not yet durable.
    pending: Vec<(Lsn, PersistCmd)>,
    commit_at: Option<Instant>,
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
    fn new(seed: u64) -> Self {
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let mut rng = rng::from_seed(seed_bytes);
        let now = Instant::now();
        let config = Self::server_config(seed);
        let server = Server::new(
            config.clone(),
            ServerState::new(),
            rng::bytes(&mut rng),
            now,
            T0_UNIX,
        );
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
                }
            })
            .collect();
        let mut sim = Self {
            rng,
            now,
            origin: now,
            server,
            config,
            enqueued_at: HashMap::new(),
            durable: Vec::new(),
            pending: Vec::new(),
            commit_at: None,
            clients,
            next_conn: 1,
            ledger: Ledger::default(),
            figures: Figures::default(),
            faults: true,
            tls: Self::over_tls(seed),
            framing: Self::framing(seed),
        };
        sim.drain_server();
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

    fn drain_server(&mut self) {
        while let Some(output) = self.server.poll_output() {
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
                    if let PersistCmd::Enqueue { user, seq, item } = &cmd {
                        self.enqueued_at
                            .insert((user.clone(), *seq), item.enqueued_at());
                    }
                    self.pending.push((lsn, cmd));
                    if self.commit_at.is_none() {
                        let delay = self.between(1, 10);
                        self.commit_at = Some(self.now + delay);
                    }
                }
                Output::Event(_) => {}
                // Cluster nodes only: a single server never forwards.
                Output::Forward { .. } | Output::Reply { .. } => {}
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

    /// Group commit: everything pending becomes durable at once.
    fn commit(&mut self) {
        self.commit_at = None;
        let Some((lsn, _)) = self.pending.last() else {
            return;
        };
        let lsn = *lsn;
        self.durable.extend(self.pending.drain(..).map(|(_, c)| c));
        self.server.handle_input(self.now, Input::Durable(lsn));
        self.drain_server();
    }

    /// The server process dies: connections reset, non-durable commands are
    /// lost, a new server starts from the durable commands.
    fn crash_server(&mut self) {
        self.figures.server_crashes += 1;
        self.pending.clear();
        self.commit_at = None;
        for i in 0..self.clients.len() {
            if self.clients[i].link.take().is_some() {
                self.client_input(i, ClientInput::Disconnected);
                self.schedule_reconnect(i);
            }
        }
        let state = ServerState::replay(&self.durable);
        let seed = rng::bytes(&mut self.rng);
        self.server = Server::new(self.config.clone(), state, seed, self.now, self.unix_now());
        self.drain_server();
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
        self.clients[i].link = Some(Link {
            conn,
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
        self.server
            .handle_input(self.now, Input::Connected(conn, transport));
        self.drain_server();
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
            self.server
                .handle_input(self.now, Input::Disconnected(link.conn));
            self.drain_server();
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

    /// The next segment due on client `i`'s link in one direction.
    fn pop_due(&mut self, i: usize, to_server: bool) -> Option<(ConnId, Segment)> {
        let now = self.now;
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
        self.clients[i].link = None;
        self.server
            .handle_input(self.now, Input::Disconnected(conn));
        self.drain_server();
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
                            for chunk in split(&mut self.rng, self.framing, &bytes) {
                                self.server
                                    .handle_input(self.now, Input::Bytes(conn, chunk));
                            }
                            self.drain_server();
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
        consider(self.commit_at);
        consider(self.server.poll_timeout());
        for c in &self.clients {
            consider(c.client.poll_timeout());
            consider(c.reconnect_at);
            consider(c.crash_unsealed_at);
            if let Some(link) = &c.link {
                consider(link.to_server.front().map(|(t, _)| *t));
                consider(link.to_client.front().map(|(t, _)| *t));
            }
        }
        next
    }

    /// Processes everything due at `self.now`.
    fn run_due(&mut self) {
        for _ in 0..1_000 {
            let mut progressed = self.deliver_links();
            if self.commit_at.is_some_and(|t| t <= self.now) {
                self.commit();
                progressed = true;
            }
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_input(self.now, Input::Timeout);
                self.drain_server();
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
            8..=9 => self.crash_server(),
            10..=11 => {
                let i = self.rng.next_u32() as usize % USERS;
                self.restart_client(i, Saved::Everything);
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
        self.clients
            .iter()
            .all(|c| c.client.is_logged_in() && c.client.state().outbox().len() == 0)
            && self.pending.is_empty()
            && self.server.state().queued_items() == 0
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
    fn check_expiry(&self) -> HashSet<MessageId> {
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
                        assert_eq!(expired.get(id), Some(user), "expired notice for {id}");
                        *notices.entry(*id).or_default() += 1;
                    }
                    items.insert((user.clone(), *seq), item.clone());
                }
                PersistCmd::Ack { user, seq } => {
                    items.remove(&(user.clone(), *seq));
                }
                PersistCmd::Expire { user, seq } => match items.remove(&(user.clone(), *seq)) {
                    Some(MailItem::Message { from, id, .. }) => {
                        assert!(expired.insert(id, from).is_none(), "{id} expired twice");
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
        for id in expired.keys() {
            assert_eq!(notices.get(id), Some(&1), "expired notices for {id}");
            let seen = self.ledger.expired_seen.get(id).copied().unwrap_or(0);
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

fn run_seed(seed: u64) -> Figures {
    let mut sim = Sim::new(seed);
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
        let f = run_seed(*seed);
        total.sent += f.sent;
        total.accepted += f.accepted;
        total.delivered += f.delivered;
        total.link_drops += f.link_drops;
        total.server_crashes += f.server_crashes;
        total.client_restarts += f.client_restarts;
        total.unsealed_restarts += f.unsealed_restarts;
        total.clock_jumps += f.clock_jumps;
        total.expired += f.expired;
        total.expired_unread += f.expired_unread;
    }
    println!("simulation: {} seeds, {total:?}", seeds.len());
    assert!(total.accepted > 0 && total.delivered + total.expired_unread >= total.accepted);
    if seeds.iter().filter(|s| *s % 2 == 1).count() >= 4 {
        assert!(total.expired > 0, "short TTLs expired nothing");
    }
}
