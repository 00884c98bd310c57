//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`.
//!
//! ```sh
//! cd fuzz && cargo run --release --example gen_corpus
//! ```
//!
//! It records real sessions in-process: the core's `Server` (with the same
//! configuration and seed as the `server_inputs` target, so the recorded
//! signatures are even valid there) driven by scripted clients that sign
//! with the fixture identities and seal real envelopes. The recorded
//! client→server bytes become `server_inputs` seeds (as raw bytes and as
//! structured packets), the frames of both directions `packet_decode`,
//! `codec_differential` and `frame_decoder` seeds; genuine envelopes seed `envelope_open`.
//! Deterministic: running it twice writes the same files.

use missive_core::client::{
    Client, ClientConfig, ClientEvent, ClientInput, ClientOutput, ClientState,
};
use missive_core::crypto::{AuthContext, AuthTranscript, ENVELOPE_VERSION, EnvelopeHeader, seal};
use missive_core::rng::{self, CoreRng};
use missive_core::server::{Input, Output, Server, ServerState};
use missive_core::wire::{
    ClientPacket, FrameDecoder, LENGTH_PREFIX_LEN, ServerPacket, encode_frame,
};
use missive_core::{ConnId, MessageId, UserName};
use missive_fuzz::client as fuzz_client;
use missive_fuzz::codec::name;
use missive_fuzz::fixtures::identity_of;
use missive_fuzz::frames::FrameInput;
use missive_fuzz::server::{self as fuzz_server, Op, Setup};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A scripted session against the server, recording what a fuzz input
/// needs to replay it.
struct Recorder {
    server: Server,
    now: Instant,
    /// The session as `server_inputs` ops, with raw frames...
    raw_ops: Vec<Op>,
    /// ...and with structured packets.
    packet_ops: Vec<Op>,
    decoders: HashMap<ConnId, FrameDecoder>,
    inbox: HashMap<ConnId, VecDeque<ServerPacket>>,
    welcome: HashMap<ConnId, ([u8; 16], [u8; 16])>,
    /// Every frame each side sent, in order.
    client_frames: BTreeMap<ConnId, Vec<Vec<u8>>>,
    server_frames: BTreeMap<ConnId, Vec<Vec<u8>>>,
    highest_lsn: u64,
    rng: CoreRng,
}

impl Recorder {
    fn new() -> Self {
        let setup = Setup::TYPICAL;
        let now = Instant::now();
        // The same server as the harness of `server_inputs`.
        let server = Server::new(
            setup.config(),
            ServerState::new(),
            [0x5e; 32],
            now,
            1_700_000_000_000,
        );
        let mut r = Self {
            server,
            now,
            raw_ops: Vec::new(),
            packet_ops: Vec::new(),
            decoders: HashMap::new(),
            inbox: HashMap::new(),
            welcome: HashMap::new(),
            client_frames: BTreeMap::new(),
            server_frames: BTreeMap::new(),
            highest_lsn: 0,
            rng: rng::from_seed([0x6e; 32]),
        };
        r.pump();
        r
    }

    fn op(&mut self, op: Op) {
        self.raw_ops.push(op.clone());
        self.packet_ops.push(op);
    }

    /// Drains outputs; reports everything durable (and records that).
    fn pump(&mut self) {
        loop {
            let mut persisted = false;
            while let Some(out) = self.server.poll_output() {
                match out {
                    Output::Transmit { conn, bytes } => {
                        let dec = self
                            .decoders
                            .entry(conn)
                            .or_insert_with(|| FrameDecoder::new(fuzz_server::MAX_FRAME));
                        dec.push(&bytes);
                        while let Some(frame) = dec.next_frame().unwrap() {
                            let packet = missive_core::wire::decode_packet(&frame).unwrap();
                            let mut full = (frame.len() as u32).to_be_bytes().to_vec();
                            full.extend_from_slice(&frame);
                            self.server_frames.entry(conn).or_default().push(full);
                            self.inbox.entry(conn).or_default().push_back(packet);
                        }
                    }
                    Output::Persist { lsn, .. } => {
                        self.highest_lsn = lsn.0;
                        persisted = true;
                    }
                    _ => {}
                }
            }
            if !persisted {
                return;
            }
            self.op(Op::Durable(0xffff));
            self.server.handle_input(
                self.now,
                Input::Durable(missive_core::Lsn(self.highest_lsn)),
            );
        }
    }

    fn connect(&mut self, conn: u8) -> ConnId {
        self.op(Op::Connect(conn));
        let id = ConnId(u64::from(conn));
        self.server.handle_input(
            self.now,
            Input::Connected(id, missive_core::wire::Link::PLAINTEXT),
        );
        self.pump();
        id
    }

    fn send(&mut self, conn: ConnId, packet: ClientPacket) {
        let frame = encode_frame(&packet, fuzz_server::MAX_FRAME).unwrap();
        self.raw_ops.push(Op::Raw {
            conn: conn.0 as u8,
            bytes: frame.clone(),
        });
        self.packet_ops.push(Op::Packets {
            conn: conn.0 as u8,
            chunk: 0,
            packets: vec![packet],
        });
        self.client_frames
            .entry(conn)
            .or_default()
            .push(frame.clone());
        self.server
            .handle_input(self.now, Input::Bytes(conn, &frame));
        self.pump();
    }

    fn expect(&mut self, conn: ConnId) -> ServerPacket {
        self.inbox
            .get_mut(&conn)
            .and_then(VecDeque::pop_front)
            .expect("a packet from the server")
    }

    fn advance(&mut self, secs: u16) {
        self.op(Op::Timeout {
            unit: 1,
            amount: secs,
        });
        self.now += Duration::from_secs(u64::from(secs));
        self.server.handle_input(self.now, Input::Timeout);
        self.pump();
    }

    fn hello(&mut self, conn: u8) -> ConnId {
        let conn = self.connect(conn);
        self.send(conn, ClientPacket::Hello { versions: vec![1] });
        match self.expect(conn) {
            ServerPacket::Welcome {
                server_id,
                session_id,
                ..
            } => {
                self.welcome.insert(conn, (server_id, session_id));
            }
            other => panic!("expected welcome, got {other:?}"),
        }
        conn
    }

    /// Answers the pending challenge with a real signature.
    fn prove(&mut self, conn: ConnId, context: AuthContext, user: &UserName) {
        let nonce = match self.expect(conn) {
            ServerPacket::Challenge { nonce, .. } => nonce,
            other => panic!("expected challenge, got {other:?}"),
        };
        let (server_id, session_id) = self.welcome[&conn];
        let client_nonce = rng::bytes(&mut self.rng);
        let transcript = AuthTranscript {
            version: missive_core::crypto::TranscriptVersion::V1,
            context,
            server_id,
            session_id,
            user,
            server_nonce: nonce,
            client_nonce,
        };
        let identity = identity_of(user.as_str()).expect("fixture user");
        let signature = transcript.sign(identity, &mut self.rng);
        self.send(
            conn,
            ClientPacket::Prove {
                client_nonce,
                signature,
            },
        );
    }

    /// Hello, Register (if `register`), Login.
    fn log_in(&mut self, conn: u8, user: &str, register: bool) -> ConnId {
        let conn = self.hello(conn);
        let user = name(user);
        if register {
            let public_key = identity_of(user.as_str())
                .unwrap()
                .public_key()
                .to_spki_der()
                .to_vec();
            self.send(
                conn,
                ClientPacket::Register {
                    user: user.clone(),
                    public_key,
                },
            );
            self.prove(conn, AuthContext::Register, &user);
            assert!(matches!(self.expect(conn), ServerPacket::Registered { .. }));
        }
        self.send(conn, ClientPacket::Login { user: user.clone() });
        self.prove(conn, AuthContext::Login, &user);
        assert!(matches!(self.expect(conn), ServerPacket::LoggedIn { .. }));
        conn
    }

    /// A real sealed envelope.
    fn envelope(&mut self, from: &str, to: &str, id: MessageId, body: &[u8]) -> Vec<u8> {
        let header = EnvelopeHeader {
            version: ENVELOPE_VERSION,
            sender: name(from),
            recipient: name(to),
            id,
            sent_at: 1_700_000_000_000,
        };
        seal(
            &mut self.rng,
            identity_of(from).unwrap(),
            &header,
            identity_of(to).unwrap().public_key(),
            body,
            2048,
        )
        .unwrap()
    }

    /// Acks every delivery waiting on `conn`; returns the other packets.
    fn ack_all(&mut self, conn: ConnId) -> Vec<ServerPacket> {
        let mut others = Vec::new();
        while let Some(p) = self.inbox.get_mut(&conn).and_then(VecDeque::pop_front) {
            match p {
                ServerPacket::Message { seq, .. } | ServerPacket::Notice { seq, .. } => {
                    self.send(conn, ClientPacket::Ack { seq });
                }
                other => others.push(other),
            }
        }
        others
    }
}

/// The main recorded session: two users register, log in, exchange
/// messages (online and offline), acknowledge, ping, query presence.
fn record_session() -> Recorder {
    let mut r = Recorder::new();
    let alice = r.log_in(0, "alice", true);
    let bob = r.log_in(1, "bob", true);
    r.send(alice, ClientPacket::FetchKey { user: name("bob") });
    assert!(matches!(r.expect(alice), ServerPacket::Key { .. }));
    let id = MessageId(rng::bytes(&mut r.rng));
    let envelope = r.envelope("alice", "bob", id, b"hi bob");
    r.send(
        alice,
        ClientPacket::Send {
            id,
            to: name("bob"),
            envelope: envelope.into(),
        },
    );
    assert_eq!(r.expect(alice), ServerPacket::Accepted { id });
    r.ack_all(bob);
    r.ack_all(alice); // the Delivered notice
    r.send(alice, ClientPacket::Ping);
    assert_eq!(r.expect(alice), ServerPacket::Pong);
    r.send(alice, ClientPacket::QueryPresence { user: name("bob") });
    r.expect(alice);
    r.send(bob, ClientPacket::SetPresence { online: false });
    let id2 = MessageId(rng::bytes(&mut r.rng));
    let envelope = r.envelope("alice", "bob", id2, b"are you there?");
    r.send(
        alice,
        ClientPacket::Send {
            id: id2,
            to: name("bob"),
            envelope: envelope.clone().into(),
        },
    );
    // A retry of the same message: accepted again, queued once.
    r.send(
        alice,
        ClientPacket::Send {
            id: id2,
            to: name("bob"),
            envelope: envelope.into(),
        },
    );
    r.advance(5);
    r.send(bob, ClientPacket::SetPresence { online: true });
    r.ack_all(bob);
    r.ack_all(alice);
    r.send(bob, ClientPacket::Ping);
    r
}

/// A short session: carol registers and logs in, sends to an unknown user
/// and to alice (not registered here), then bob connects, registers and is
/// timed out by the handshake deadline.
fn record_errors() -> Recorder {
    let mut r = Recorder::new();
    let carol = r.log_in(2, "carol", true);
    r.send(
        carol,
        ClientPacket::Send {
            id: MessageId([9; 16]),
            to: name("dave"),
            envelope: vec![1, 2, 3].into(),
        },
    );
    r.send(
        carol,
        ClientPacket::Login {
            user: name("carol"),
        },
    );
    r.send(carol, ClientPacket::Ack { seq: 42 });
    let bob = r.hello(3);
    r.send(bob, ClientPacket::Login { user: name("bob") });
    r.advance(40);
    r
}

/// An in-process network: the server and two real clients (alice, whose
/// inputs are recorded as a `client_inputs` seed, and bob). Everything the
/// clients send is recorded as a `server_inputs` seed.
struct Net {
    server: Server,
    now: Instant,
    alice: Client,
    bob: Client,
    alice_up: bool,
    bob_up: bool,
    /// Frames waiting to travel: (to the server from conn, bytes) and
    /// (to the client on conn, bytes).
    to_server: VecDeque<(ConnId, Vec<u8>)>,
    to_client: VecDeque<(ConnId, Vec<u8>)>,
    server_raw: Vec<Op>,
    server_packets: Vec<Op>,
    alice_raw: Vec<fuzz_client::Op>,
    alice_packets: Vec<fuzz_client::Op>,
    highest_lsn: u64,
    received: Vec<ClientEvent>,
}

const ALICE: ConnId = ConnId(0);
const BOB: ConnId = ConnId(1);

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        let server = Server::new(
            Setup::TYPICAL.config(),
            ServerState::new(),
            [0x5e; 32],
            now,
            1_700_000_000_000,
        );
        // Exactly the client of the `client_inputs` harness.
        let alice = Client::new(
            fuzz_client::Setup::TYPICAL.config(),
            identity_of("alice").unwrap().clone(),
            ClientState::default(),
            fuzz_client::SEED,
            now,
            fuzz_client::T0_UNIX,
        );
        let bob = Client::new(
            ClientConfig::new(name("bob")),
            identity_of("bob").unwrap().clone(),
            ClientState::default(),
            [0xb0; 32],
            now,
            fuzz_client::T0_UNIX,
        );
        let mut net = Self {
            server,
            now,
            alice,
            bob,
            alice_up: false,
            bob_up: false,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            server_raw: Vec::new(),
            server_packets: Vec::new(),
            alice_raw: Vec::new(),
            alice_packets: Vec::new(),
            highest_lsn: 0,
            received: Vec::new(),
        };
        net.run();
        net
    }

    fn server_op(&mut self, op: Op) {
        self.server_raw.push(op.clone());
        self.server_packets.push(op);
    }

    fn alice_op(&mut self, op: fuzz_client::Op) {
        self.alice_raw.push(op.clone());
        self.alice_packets.push(op);
    }

    fn client(&mut self, conn: ConnId) -> &mut Client {
        if conn == ALICE {
            &mut self.alice
        } else {
            &mut self.bob
        }
    }

    /// Feeds one input to a client and collects its outputs at once (as
    /// the harness does), closing the transport when it asks.
    fn client_input(&mut self, conn: ConnId, input: ClientInput<'_>) {
        let now = self.now;
        self.client(conn).handle_input(now, input);
        self.collect(conn);
    }

    fn collect(&mut self, conn: ConnId) {
        let now = self.now;
        let mut close = false;
        while let Some(out) = self.client(conn).poll_output() {
            match out {
                ClientOutput::Transmit(bytes) => self.to_server.push_back((conn, bytes)),
                ClientOutput::Close => close = true,
                ClientOutput::Event(e) if conn == ALICE => self.received.push(e),
                _ => {}
            }
        }
        if close {
            self.client(conn)
                .handle_input(now, ClientInput::Disconnected);
            self.collect(conn);
            self.set_up(conn, false);
            self.server_op(Op::Disconnect(conn.0 as u8));
            self.server.handle_input(now, Input::Disconnected(conn));
        }
    }

    fn set_up(&mut self, conn: ConnId, up: bool) {
        if conn == ALICE {
            self.alice_up = up;
        } else {
            self.bob_up = up;
        }
    }

    fn connect(&mut self, conn: ConnId) {
        self.server_op(Op::Connect(conn.0 as u8));
        self.server.handle_input(
            self.now,
            Input::Connected(conn, missive_core::wire::Link::PLAINTEXT),
        );
        self.set_up(conn, true);
        if conn == ALICE {
            self.alice_op(fuzz_client::Op::Connect);
        }
        self.client_input(
            conn,
            ClientInput::Connected(missive_core::wire::Link::PLAINTEXT),
        );
        self.run();
    }

    fn disconnect(&mut self, conn: ConnId) {
        self.server_op(Op::Disconnect(conn.0 as u8));
        self.server
            .handle_input(self.now, Input::Disconnected(conn));
        if conn == ALICE {
            self.alice_op(fuzz_client::Op::Disconnect);
        }
        self.client_input(conn, ClientInput::Disconnected);
        self.set_up(conn, false);
        self.run();
    }

    fn advance(&mut self, secs: u16) {
        self.now += Duration::from_secs(u64::from(secs));
        let t = Op::Timeout {
            unit: 1,
            amount: secs,
        };
        self.server_op(t);
        self.server.handle_input(self.now, Input::Timeout);
        self.alice_op(fuzz_client::Op::Timeout {
            unit: 1,
            amount: secs,
        });
        self.client_input(ALICE, ClientInput::Timeout);
        self.client_input(BOB, ClientInput::Timeout);
        self.run();
    }

    /// Moves bytes until nothing moves; everything persisted is durable at
    /// once.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            let mut persisted = false;
            while let Some(out) = self.server.poll_output() {
                match out {
                    Output::Transmit { conn, bytes } => self.to_client.push_back((conn, bytes)),
                    Output::Close { conn } => {
                        self.to_client.push_back((conn, Vec::new()));
                    }
                    Output::Persist { lsn, .. } => {
                        self.highest_lsn = lsn.0;
                        persisted = true;
                    }
                    _ => {}
                }
            }
            if persisted {
                self.server_op(Op::Durable(0xffff));
                self.server.handle_input(
                    self.now,
                    Input::Durable(missive_core::Lsn(self.highest_lsn)),
                );
                moved = true;
            }
            while let Some((conn, bytes)) = self.to_server.pop_front() {
                moved = true;
                self.server_raw.push(Op::Raw {
                    conn: conn.0 as u8,
                    bytes: bytes.clone(),
                });
                for packets in frames::<ClientPacket>(&bytes).chunks(8) {
                    self.server_packets.push(Op::Packets {
                        conn: conn.0 as u8,
                        chunk: 0,
                        packets: packets.to_vec(),
                    });
                }
                self.server
                    .handle_input(self.now, Input::Bytes(conn, &bytes));
            }
            while let Some((conn, bytes)) = self.to_client.pop_front() {
                moved = true;
                let up = if conn == ALICE {
                    self.alice_up
                } else {
                    self.bob_up
                };
                if !up {
                    continue;
                }
                if bytes.is_empty() {
                    // The server closed the connection.
                    if conn == ALICE {
                        self.alice_op(fuzz_client::Op::Disconnect);
                    }
                    self.set_up(conn, false);
                    self.client_input(conn, ClientInput::Disconnected);
                    continue;
                }
                if conn == ALICE {
                    self.alice_raw.push(fuzz_client::Op::Raw(bytes.clone()));
                    for packets in frames::<ServerPacket>(&bytes).chunks(8) {
                        self.alice_packets.push(fuzz_client::Op::Packets {
                            chunk: 0,
                            packets: packets.to_vec(),
                        });
                    }
                }
                self.client_input(conn, ClientInput::Bytes(&bytes));
            }
            if !moved {
                return;
            }
        }
    }

    fn send(&mut self, conn: ConnId, to: &str, body: &[u8]) {
        if conn == ALICE {
            self.alice_op(fuzz_client::Op::Send {
                to: name(to),
                body: body.to_vec(),
            });
        }
        let now = self.now;
        self.client(conn)
            .send(now, name(to), body.to_vec())
            .unwrap();
        self.collect(conn);
        self.run();
    }

    fn alice_presence(&mut self, online: bool) {
        self.alice_op(fuzz_client::Op::SetPresence(online));
        self.alice.set_presence(self.now, online);
        self.collect(ALICE);
        self.run();
    }

    fn alice_query(&mut self, user: &str) {
        self.alice_op(fuzz_client::Op::QueryPresence(name(user)));
        self.alice.query_presence(self.now, name(user));
        self.collect(ALICE);
        self.run();
    }
}

/// The packets in a stream of whole frames.
fn frames<P: serde::de::DeserializeOwned>(bytes: &[u8]) -> Vec<P> {
    let mut dec = FrameDecoder::new(u32::MAX);
    dec.push(bytes);
    let mut out = Vec::new();
    while let Some(p) = dec.next_packet().unwrap() {
        out.push(p);
    }
    out
}

/// Two real clients: both register and log in, exchange messages online
/// and offline (with presence off), query presence, reconnect.
fn record_clients() -> Net {
    let mut net = Net::new();
    net.connect(ALICE);
    net.connect(BOB);
    assert!(net.alice.is_logged_in() && net.bob.is_logged_in());
    net.send(ALICE, "bob", b"hi bob");
    net.send(BOB, "alice", b"hi alice");
    net.alice_query("bob");
    net.alice_presence(false);
    net.send(BOB, "alice", b"while you were away");
    net.advance(5);
    net.alice_presence(true);
    net.disconnect(ALICE);
    net.send(BOB, "alice", b"offline message");
    net.connect(ALICE);
    net.advance(31);
    let got = net
        .received
        .iter()
        .filter(|e| matches!(e, ClientEvent::MessageReceived { .. }))
        .count();
    assert_eq!(got, 3, "alice received {:?}", net.received);
    net
}

/// Writes one seed. A fuzzing build (`RUSTFLAGS="--cfg fuzzing"`) signs and
/// seals with the core's RSA stand-ins, so its seeds get their own
/// `fuzzbuild-` names beside the real-RSA ones.
fn write(dir: &Path, file: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let prefix = if cfg!(fuzzing) { "fuzzbuild-" } else { "" };
    std::fs::write(dir.join(format!("{prefix}{file}")), bytes).unwrap();
}

fn main() {
    let out: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let setup = Setup::TYPICAL;

    let session = record_session();
    let errors = record_errors();

    // server_inputs: the sessions as raw frames and as structured packets,
    // and the main one with its client bytes cut into small chunks.
    let dir = out.join("server_inputs");
    for (name, rec) in [("session", &session), ("errors", &errors)] {
        write(
            &dir,
            &format!("{name}-raw"),
            &fuzz_server::to_bytes(&setup, &rec.raw_ops),
        );
        write(
            &dir,
            &format!("{name}-packets"),
            &fuzz_server::to_bytes(&setup, &rec.packet_ops),
        );
    }
    let chunked: Vec<Op> = session
        .packet_ops
        .iter()
        .map(|op| match op {
            Op::Packets { conn, packets, .. } => Op::Packets {
                conn: *conn,
                chunk: 7,
                packets: packets.clone(),
            },
            other => other.clone(),
        })
        .collect();
    write(
        &dir,
        "session-chunked",
        &fuzz_server::to_bytes(&setup, &chunked),
    );
    // The main session, then a crash, a restart, and time passing.
    let mut crash = session.packet_ops.clone();
    crash.extend([
        Op::Restart,
        Op::Connect(1),
        Op::Timeout {
            unit: 2,
            amount: 10,
        },
    ]);
    write(
        &dir,
        "session-restart",
        &fuzz_server::to_bytes(&setup, &crash),
    );

    // The real clients' session: server_inputs (both clients' bytes) and
    // client_inputs (alice's inputs), raw and structured.
    let net = record_clients();
    write(
        &dir,
        "clients-raw",
        &fuzz_server::to_bytes(&setup, &net.server_raw),
    );
    write(
        &dir,
        "clients-packets",
        &fuzz_server::to_bytes(&setup, &net.server_packets),
    );
    let cdir = out.join("client_inputs");
    let csetup = fuzz_client::Setup::TYPICAL;
    write(
        &cdir,
        "session-raw",
        &fuzz_client::to_bytes(&csetup, &net.alice_raw),
    );
    write(
        &cdir,
        "session-packets",
        &fuzz_client::to_bytes(&csetup, &net.alice_packets),
    );
    let mut crash = net.alice_packets.clone();
    crash.extend([
        fuzz_client::Op::Send {
            to: name("carol"),
            body: b"later".to_vec(),
        },
        fuzz_client::Op::Restart,
        fuzz_client::Op::Connect,
        fuzz_client::Op::TimeoutAtDeadline,
    ]);
    write(
        &cdir,
        "session-restart",
        &fuzz_client::to_bytes(&csetup, &crash),
    );

    // packet_decode: every distinct payload seen, both directions.
    let dir = out.join("packet_decode");
    let mut payloads: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
    for rec in [&session, &errors] {
        for frames in rec.client_frames.values().chain(rec.server_frames.values()) {
            for f in frames {
                payloads.insert(f[LENGTH_PREFIX_LEN..].to_vec(), ());
            }
        }
    }
    for (i, p) in payloads.keys().enumerate() {
        write(&dir, &format!("payload-{i:03}"), p);
    }
    // codec_differential reads its input the same way (a payload, then the
    // same bytes as structured packets): the same seeds.
    let dir = out.join("codec_differential");
    for (i, p) in payloads.keys().enumerate() {
        write(&dir, &format!("payload-{i:03}"), p);
    }

    // frame_decoder: whole streams of each direction, in various chunkings
    // and modes (1: client packets, 2: server packets, 0: raw frames).
    let dir = out.join("frame_decoder");
    let client_stream: Vec<u8> = session.client_frames[&ConnId(0)].concat();
    let server_stream: Vec<u8> = session.server_frames[&ConnId(1)].concat();
    let seeds = [
        ("client-whole", 1, vec![], &client_stream),
        ("client-chunks", 1, vec![7, 1, 300], &client_stream),
        ("server-bytewise", 2, vec![1], &server_stream),
        ("server-chunks", 2, vec![3, 100, 0], &server_stream),
        ("raw-small-limit", 0, vec![64], &server_stream),
    ];
    for (name, mode, chunks, stream) in seeds {
        let input = FrameInput {
            mode,
            max_frame: if name == "raw-small-limit" { 300 } else { 4096 },
            chunks,
            stream: stream.clone(),
        };
        write(&dir, name, &input.to_bytes());
    }

    // envelope_open: genuine envelopes (mode 0), and one seed per
    // structured mode.
    let dir = out.join("envelope_open");
    for (i, s) in missive_fuzz::envelope::sealed().iter().enumerate() {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&s.bytes);
        write(&dir, &format!("genuine-{i}"), &bytes);
    }
    write(&dir, "mutate", &[1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 7, 1]);
    write(&dir, "fields", &[2; 64]);

    println!("corpus written to {}", out.display());
}
