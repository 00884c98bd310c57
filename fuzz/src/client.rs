//! `client_inputs`: an arbitrary sequence of transport inputs, server bytes
//! and app calls into a [`Client`] (user alice, fixture identity), with
//! invariants checked after every step.
//!
//! # Input format
//!
//! A [`Setup`] (8 bytes: small client limits), then ops until the input
//! ends, each a kind byte (mod 14) and its fields (see [`Op`]). `Packets`
//! builds *valid* frames from structured server packets; `Accept` and
//! `Refuse` answer the n-th outbox entry by its (random) id, which the
//! fuzzer could not guess.
//!
//! # Invariants
//!
//! After every step (one input or app call, then a full drain):
//! * no panic;
//! * `Transmit` only while connected, never after `Close` in the same
//!   drain, non-empty, whole frames that decode as `ClientPacket`s, and
//!   the first packet of every connection is `Hello` listing version 2;
//! * every `Message` / `Notice` the client received is acknowledged in
//!   the same step (or the client closed the connection);
//! * the outbox holds at most `max_outbox` messages, `send` refuses with
//!   `OutboxFull` exactly when it is full, and a message it takes is in the
//!   outbox; parked envelopes and remembered ids stay within their limits;
//! * the durable state never changes without a `StateChanged` after it: at
//!   the end of every drain, `state()` equals the state saved at the last
//!   `StateChanged`, and that state survives `to_cbor` / `from_cbor`;
//! * after `Timeout` at `now`, `poll_timeout()` is later than `now`.
//!
//! `Restart` simulates a crash: a new client from the last saved state.

use crate::codec::{self, Writer, byte, u16be};
use crate::fixtures;
use arbitrary::{Result, Unstructured};
use missive_core::client::{
    Client, ClientConfig, ClientInput, ClientOutput, ClientState, Registration, SendError,
};
use missive_core::wire::{
    ClientPacket, ErrorCode, FrameDecoder, PROTOCOL_VERSION, ServerPacket, encode_frame,
};
use missive_core::{UnixMillis, UserName};
use std::time::{Duration, Instant};

/// The user of the fuzzed client.
pub const USER: &str = "alice";
/// The client's frame limit before a `Welcome`.
pub const MAX_FRAME: u32 = 4096;
/// Seed of the fuzzed client's generator.
pub const SEED: [u8; 32] = [0xc1; 32];
/// Wall clock at the start.
pub const T0_UNIX: UnixMillis = 1_700_000_000_000;

/// The fuzzed client's limits, one byte each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Setup(pub [u8; 8]);

impl Setup {
    /// A typical configuration (used by the corpus generator): register if
    /// needed, start online.
    pub const TYPICAL: Setup = Setup([3, 1, 7, 3, 3, 9, 0, 0]);

    /// The client configuration these bytes select.
    pub fn config(&self) -> ClientConfig {
        let b = self.0;
        let mut c = ClientConfig::new(codec::name(USER));
        c.max_outbox = 1 + usize::from(b[0] % 8);
        c.max_sends_in_flight = 1 + usize::from(b[1] % 4);
        c.seen_capacity = usize::from(b[2] % 8);
        c.max_parked = usize::from(b[3] % 4);
        c.registration = match (b[4] & 1, b[4] & 4) {
            (0, _) => Registration::Never,
            (_, 0) => Registration::IfUnknown,
            _ => Registration::Always,
        };
        c.start_online = b[4] & 2 == 2;
        c.retry_after = Duration::from_millis(100 * (1 + u64::from(b[5] % 20)));
        c.max_frame = MAX_FRAME;
        c
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `ClientInput::Connected(Link::PLAINTEXT)`.
    Connect,
    /// `ClientInput::Disconnected`.
    Disconnect,
    /// Arbitrary bytes from the server.
    Raw(Vec<u8>),
    /// Valid frames of these server packets, concatenated and cut into
    /// chunks of `chunk` bytes (0: one chunk).
    Packets {
        chunk: u16,
        packets: Vec<ServerPacket>,
    },
    /// Time advances by `amount` units (0: ms, 1: s, 2: min, 3: h), then
    /// `ClientInput::Timeout`.
    Timeout { unit: u8, amount: u16 },
    /// Time jumps to `poll_timeout()` (if later), then `Timeout`.
    TimeoutAtDeadline,
    /// Time advances without an input.
    Advance { unit: u8, amount: u16 },
    /// `Client::send`.
    Send { to: UserName, body: Vec<u8> },
    /// `Client::set_presence`.
    SetPresence(bool),
    /// `Client::query_presence`.
    QueryPresence(UserName),
    /// `Client::trust_key`.
    TrustKey(UserName),
    /// Crash: a new client from the last saved state.
    Restart,
    /// The server answers `Accepted` for the n-th outbox entry.
    Accept(u8),
    /// The server answers `Error { code }` for the n-th outbox entry.
    Refuse { nth: u8, code: u16 },
}

impl Op {
    /// Reads one op; `Err` at the end of the input.
    pub fn read(u: &mut Unstructured<'_>) -> Result<Op> {
        Ok(match byte(u)? % 14 {
            0 => Op::Connect,
            1 => Op::Disconnect,
            2 => Op::Raw(codec::blob(u)),
            3 => {
                let chunk = u16be(u);
                let n = byte(u)? % 9;
                let mut packets = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    packets.push(codec::server_packet(u)?);
                }
                Op::Packets { chunk, packets }
            }
            4 => Op::Timeout {
                unit: byte(u)?,
                amount: u16be(u),
            },
            5 => Op::TimeoutAtDeadline,
            6 => Op::Advance {
                unit: byte(u)?,
                amount: u16be(u),
            },
            7 => Op::Send {
                to: codec::user(u)?,
                body: codec::opaque(u)?,
            },
            8 => Op::SetPresence(byte(u)? & 1 == 1),
            9 => Op::QueryPresence(codec::user(u)?),
            10 => Op::TrustKey(codec::user(u)?),
            11 => Op::Restart,
            12 => Op::Accept(byte(u)?),
            _ => Op::Refuse {
                nth: byte(u)?,
                code: u16be(u),
            },
        })
    }

    /// Writes one op (see [`Op::read`]).
    pub fn write(&self, w: &mut Writer) {
        match self {
            Op::Connect => {
                w.byte(0);
            }
            Op::Disconnect => {
                w.byte(1);
            }
            Op::Raw(bytes) => {
                w.byte(2).blob(bytes);
            }
            Op::Packets { chunk, packets } => {
                assert!(packets.len() <= 8);
                w.byte(3).u16be(*chunk).byte(packets.len() as u8);
                for p in packets {
                    codec::write_server_packet(w, p);
                }
            }
            Op::Timeout { unit, amount } => {
                w.byte(4).byte(*unit).u16be(*amount);
            }
            Op::TimeoutAtDeadline => {
                w.byte(5);
            }
            Op::Advance { unit, amount } => {
                w.byte(6).byte(*unit).u16be(*amount);
            }
            Op::Send { to, body } => {
                w.byte(7);
                codec::write_user(w, to);
                codec::write_opaque(w, body);
            }
            Op::SetPresence(online) => {
                w.byte(8).byte(u8::from(*online));
            }
            Op::QueryPresence(user) => {
                w.byte(9);
                codec::write_user(w, user);
            }
            Op::TrustKey(user) => {
                w.byte(10);
                codec::write_user(w, user);
            }
            Op::Restart => {
                w.byte(11);
            }
            Op::Accept(n) => {
                w.byte(12).byte(*n);
            }
            Op::Refuse { nth, code } => {
                w.byte(13).byte(*nth).u16be(*code);
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

/// Runs the `client_inputs` target on one input.
pub fn run(data: &[u8]) {
    let (setup, ops) = parse(data);
    let mut h = Harness::new(setup.config());
    for op in ops {
        h.op(op);
    }
}

/// A client, a model of its connection, its saved state, virtual time.
pub struct Harness {
    config: ClientConfig,
    client: Client,
    t0: Instant,
    now: Instant,
    connected: bool,
    /// Client → server frames of the current connection.
    tx: FrameDecoder,
    sent_hello: bool,
    /// Server → client frames of the current connection, decoded without
    /// a limit, to see what the client was given.
    mirror: FrameDecoder,
    mirror_failed: bool,
    /// The state as of the last `StateChanged`.
    saved: ClientState,
    restarts: u8,
}

impl Harness {
    /// A fresh client with `config`.
    pub fn new(config: ClientConfig) -> Self {
        let t0 = Instant::now();
        let client = Client::new(
            config.clone(),
            fixtures::identities()[0].clone(),
            ClientState::default(),
            SEED,
            t0,
            T0_UNIX,
        );
        let mut h = Self {
            config,
            client,
            t0,
            now: t0,
            connected: false,
            tx: FrameDecoder::new(u32::MAX),
            sent_hello: false,
            mirror: FrameDecoder::new(u32::MAX),
            mirror_failed: false,
            saved: ClientState::default(),
            restarts: 0,
        };
        h.drain(&[]);
        h
    }

    /// The client under test.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Runs one op.
    pub fn op(&mut self, op: Op) {
        match op {
            Op::Connect => {
                if !self.connected {
                    self.connected = true;
                    self.tx = FrameDecoder::new(u32::MAX);
                    self.sent_hello = false;
                    self.mirror = FrameDecoder::new(u32::MAX);
                    self.mirror_failed = false;
                }
                self.input(ClientInput::Connected(
                    missive_core::wire::Link::PLAINTEXT));
            }
            Op::Disconnect => {
                self.connected = false;
                self.input(ClientInput::Disconnected);
            }
            Op::Raw(bytes) => self.bytes(&bytes),
            Op::Packets { chunk, packets } => {
                let mut stream = Vec::new();
                for p in &packets {
                    if let Ok(frame) = encode_frame(p, u32::MAX) {
                        stream.extend_from_slice(&frame);
                    }
                }
                if chunk == 0 {
                    self.bytes(&stream);
                } else {
                    for piece in stream.chunks(usize::from(chunk)) {
                        self.bytes(piece);
                    }
                }
            }
            Op::Timeout { unit, amount } => {
                self.now += codec::duration(unit, amount);
                self.timeout();
            }
            Op::TimeoutAtDeadline => {
                if let Some(at) = self.client.poll_timeout() {
                    self.now = self.now.max(at);
                }
                self.timeout();
            }
            Op::Advance { unit, amount } => self.now += codec::duration(unit, amount),
            Op::Send { to, body } => {
                let before = self.client.state().outbox().len();
                let full = before >= self.config.max_outbox;
                match self.client.send(self.now, to, body) {
                    Ok(id) => {
                        assert!(!full, "send took a message into a full outbox");
                        self.drain(&[]);
                        assert!(
                            self.client.state().outbox().any(|e| e.id == id)
                                || self.client.state().outbox().len() <= before,
                            "a message send took is not in the outbox"
                        );
                    }
                    Err(SendError::OutboxFull { max }) => {
                        assert!(full, "OutboxFull with {before} of {max}");
                        self.drain(&[]);
                    }
                    Err(_) => self.drain(&[]),
                }
            }
            Op::SetPresence(online) => {
                self.client.set_presence(self.now, online);
                self.drain(&[]);
            }
            Op::QueryPresence(user) => {
                self.client.query_presence(self.now, user);
                self.drain(&[]);
            }
            Op::TrustKey(user) => {
                self.client.trust_key(&user);
                self.drain(&[]);
            }
            Op::Restart => {
                let bytes = self.saved.to_cbor().expect("saved state encodes");
                let state = ClientState::from_cbor(&bytes).expect("saved state decodes");
                self.restarts = self.restarts.wrapping_add(1);
                let unix = codec::wall_clock(T0_UNIX, self.t0, self.now);
                self.client = Client::new(
                    self.config.clone(),
                    fixtures::identities()[0].clone(),
                    state,
                    [self.restarts; 32],
                    self.now,
                    unix,
                );
                self.connected = false;
                self.drain(&[]);
            }
            Op::Accept(n) => {
                if let Some(entry) = self.nth_outbox(n) {
                    let frame = encode_frame(&ServerPacket::Accepted { id: entry.0 }, u32::MAX);
                    self.bytes(&frame.expect("small packet"));
                }
            }
            Op::Refuse { nth, code } => {
                if let Some((id, to)) = self.nth_outbox(nth) {
                    let packet = ServerPacket::Error {
                        code: ErrorCode::from(code),
                        id: Some(id),
                        user: Some(to),
                        detail: String::new(),
                    };
                    self.bytes(&encode_frame(&packet, u32::MAX).expect("small packet"));
                }
            }
        }
    }

    fn nth_outbox(&self, n: u8) -> Option<(missive_core::MessageId, UserName)> {
        let outbox: Vec<_> = self.client.state().outbox().collect();
        if outbox.is_empty() {
            return None;
        }
        let e = outbox[usize::from(n) % outbox.len()];
        Some((e.id, e.to.clone()))
    }

    /// Feeds server bytes, noting the deliveries that must be acked.
    pub fn bytes(&mut self, bytes: &[u8]) {
        let mut deliveries = Vec::new();
        if self.connected && !self.mirror_failed {
            self.mirror.push(bytes);
            loop {
                match self.mirror.next_packet::<ServerPacket>() {
                    Ok(Some(
                        ServerPacket::Message { seq, .. } | ServerPacket::Notice { seq, .. },
                    )) => deliveries.push(seq),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        self.mirror_failed = true;
                        break;
                    }
                }
            }
        }
        self.client
            .handle_input(self.now, ClientInput::Bytes(bytes));
        self.drain(&deliveries);
    }

    fn input(&mut self, input: ClientInput<'_>) {
        self.client.handle_input(self.now, input);
        self.drain(&[]);
    }

    fn timeout(&mut self) {
        self.input(ClientInput::Timeout);
        if let Some(at) = self.client.poll_timeout() {
            assert!(
                at > self.now,
                "poll_timeout() {:?} is not after the Timeout just handled",
                at - self.t0
            );
        }
    }

    /// Drains the outputs and checks the invariants. `deliveries`: seqs of
    /// the Message/Notice packets just given to the client.
    fn drain(&mut self, deliveries: &[u64]) {
        let mut acked = Vec::new();
        let mut closed = false;
        while let Some(output) = self.client.poll_output() {
            match output {
                ClientOutput::Transmit(bytes) => {
                    assert!(self.connected, "Transmit while disconnected");
                    assert!(!closed, "Transmit after Close");
                    assert!(!bytes.is_empty(), "empty Transmit");
                    self.tx.push(&bytes);
                    while let Some(p) = self
                        .tx
                        .next_packet::<ClientPacket>()
                        .unwrap_or_else(|e| panic!("client frame does not decode: {e}"))
                    {
                        if !self.sent_hello {
                            assert!(
                                matches!(&p, ClientPacket::Hello { versions } if versions.contains(&PROTOCOL_VERSION)),
                                "first packet {p:?} is not Hello"
                            );
                            self.sent_hello = true;
                        }
                        if let ClientPacket::Ack { seq } = p {
                            acked.push(seq);
                        }
                    }
                    assert_eq!(self.tx.buffered_len(), 0, "Transmit ends inside a frame");
                }
                ClientOutput::Close => {
                    assert!(self.connected, "Close while disconnected");
                    closed = true;
                }
                ClientOutput::StateChanged => {
                    let state = self.client.state().clone();
                    let bytes = state.to_cbor().expect("state encodes");
                    let back = ClientState::from_cbor(&bytes).expect("state decodes");
                    assert!(back == state, "state changes through to_cbor/from_cbor");
                    self.saved = state;
                }
                ClientOutput::Event(_) => {}
            }
        }
        if !closed {
            for seq in deliveries {
                assert!(acked.contains(seq), "delivery {seq} not acknowledged");
            }
        }
        let state = self.client.state();
        assert!(
            *state == self.saved,
            "the durable state changed without StateChanged"
        );
        assert!(
            state.outbox().len() <= self.config.max_outbox,
            "outbox over max_outbox"
        );
        assert!(
            state.parked().len() <= self.config.max_parked.max(1),
            "too many parked"
        );
        assert!(
            state.seen_len() <= self.config.seen_capacity,
            "too many seen ids"
        );
        if closed {
            // The driver closes the transport and says so.
            self.connected = false;
            self.client
                .handle_input(self.now, ClientInput::Disconnected);
            self.drain(&[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_round_trips() {
        let ops = vec![
            Op::Connect,
            Op::Packets {
                chunk: 5,
                packets: vec![ServerPacket::Pong],
            },
            Op::Raw(vec![0, 0, 0, 1]),
            Op::Timeout { unit: 1, amount: 3 },
            Op::TimeoutAtDeadline,
            Op::Advance { unit: 3, amount: 1 },
            Op::Send {
                to: codec::name("bob"),
                body: b"hi".to_vec(),
            },
            Op::SetPresence(false),
            Op::QueryPresence(codec::name("carol")),
            Op::TrustKey(codec::name("bob")),
            Op::Restart,
            Op::Accept(3),
            Op::Refuse { nth: 1, code: 3 },
            Op::Disconnect,
        ];
        let bytes = to_bytes(&Setup::TYPICAL, &ops);
        assert_eq!(parse(&bytes), (Setup::TYPICAL, ops));
        run(&bytes);
    }
}
