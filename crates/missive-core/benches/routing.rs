//! The server core routing messages in process: no sockets, no store, one
//! thread.
//!
//! Setup (not measured): 1,000 users are registered by applying
//! `RegisterUser` commands to a `ServerState` directly, all with one RSA key,
//! and each logs in on its own connection through the real handshake
//! (Hello, Login, Challenge, Prove with a real PSS signature, LoggedIn).
//! Users are paired: user `2k` sends to user `2k + 1`.
//!
//! One *message* is the whole life of a message in the server:
//!
//! 1. the sender's `Send` frame (256-byte opaque envelope) arrives;
//! 2. the server persists `Enqueue`; the harness reports it durable at once
//!    (as an in-memory store would); the server answers `Accepted` and
//!    delivers `Message` to the recipient;
//! 3. the recipient's `Ack` arrives: `Ack` is persisted, a `Delivered` notice
//!    is queued for the sender (persisted, reported durable) and delivered;
//! 4. the sender's `Ack` of the notice arrives and is persisted.
//!
//! That is 3 frames decoded, 3 frames encoded and 4 commands persisted per
//! message. The harness drains `poll_output` after every input, as a driver
//! does, reporting `Durable` for the highest LSN it saw before draining on.
//! Client frames are encoded before each measured round; a round sends one
//! message on each of the 500 pairs (step 1 for all, then 3, then 4), so a
//! criterion "element" is one message and the reported rate is messages/s.
//!
//! Two variants:
//! * `send_deliver_ack_256B`: one frame per input (a client that waits for
//!   each answer), so every message pays a whole input and drain;
//! * `pipelined_64x256B`: 64 frames per input (the load generator's window
//!   of 64: a socket read carries many frames), so a round is 64 messages
//!   per pair and the per-input cost is shared.
//!
//! Run: `cargo bench -p missive-core --bench routing`.

use criterion::{Criterion, Throughput, criterion_group};
use missive_core::crypto::{AuthContext, AuthTranscript, Identity, TranscriptVersion};
use missive_core::server::{
    Input, Output, PersistCmd, Server, ServerConfig, ServerEvent, ServerState,
};
use missive_core::wire::{
    ClientPacket, DEFAULT_MAX_FRAME, FrameDecoder, Link, ServerPacket, encode_frame,
    encode_frame_into,
};
use missive_core::{ConnId, MessageId, SharedBytes, UserName, rng};
use std::hint::black_box;
use std::time::{Duration, Instant};

const USERS: usize = 1_000;
const PAIRS: usize = USERS / 2;
const ENVELOPE_LEN: usize = 256;
const T0_UNIX: u64 = 1_700_000_000_000;

/// What the harness saw while draining (checked outside the measurement).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    transmits: u64,
    bytes: u64,
    persists: u64,
    /// What the events a driver counts add up to: messages accepted,
    /// items delivered, items acknowledged.
    counted: u64,
    other: u64,
}

struct Pair {
    sender: ConnId,
    recipient: ConnId,
    to: UserName,
    /// Messages sent so far on this pair: the next message's id, its seq in
    /// the recipient's mailbox and its notice's seq in the sender's.
    sent: u64,
}

struct Routing {
    /// Messages per pair per round (frames per input).
    batch: u64,
    server: Server,
    now: Instant,
    pairs: Vec<Pair>,
    /// (sender, recipient) of each pair.
    conns: Vec<(ConnId, ConnId)>,
    envelope: SharedBytes,
    seen: Seen,
    /// Per-round frames, reused: one buffer per pair and step.
    sends: Vec<Vec<u8>>,
    acks: Vec<Vec<u8>>,
    notice_acks: Vec<Vec<u8>>,
}

impl Routing {
    /// Drains every output; reports the highest persisted LSN durable and
    /// drains again, until nothing is left.
    fn drain(&mut self) {
        loop {
            let mut max_lsn = None;
            while let Some(out) = self.server.poll_output() {
                match out {
                    Output::Transmit { bytes, .. } => {
                        self.seen.transmits += 1;
                        self.seen.bytes += bytes.len() as u64;
                        // Written: the buffer goes back, as a driver's would.
                        self.server.recycle_transmit(black_box(bytes));
                    }
                    Output::Persist { lsn, cmd } => {
                        self.seen.persists += 1;
                        max_lsn = Some(lsn);
                        black_box(cmd);
                    }
                    Output::Event(
                        ServerEvent::MessageAccepted { .. } | ServerEvent::Acknowledged { .. },
                    ) => self.seen.counted += 1,
                    Output::Event(ServerEvent::Delivered {
                        messages, notices, ..
                    }) => self.seen.counted += u64::from(messages + notices),
                    other => {
                        self.seen.other += 1;
                        black_box(other);
                    }
                }
            }
            match max_lsn {
                Some(lsn) => self.server.handle_input(self.now, Input::Durable(lsn)),
                None => return,
            }
        }
    }

    fn input(&mut self, conn: ConnId, bytes: &[u8]) {
        self.server
            .handle_input(self.now, Input::Bytes(conn, bytes));
        self.drain();
    }

    /// Encodes the client frames of the next round (not measured): per
    /// pair, `batch` sends, `batch` acks and `batch` notice acks, each
    /// kind concatenated into one input.
    fn prepare_round(&mut self) {
        for (i, pair) in self.pairs.iter().enumerate() {
            self.sends[i].clear();
            self.acks[i].clear();
            for k in pair.sent..pair.sent + self.batch {
                encode_frame_into(
                    &ClientPacket::Send {
                        id: MessageId((u128::from(k) << 32 | i as u128).to_be_bytes()),
                        to: pair.to.clone(),
                        envelope: self.envelope.clone(),
                    },
                    DEFAULT_MAX_FRAME,
                    &mut self.sends[i],
                )
                .expect("encodes");
                encode_frame_into(
                    &ClientPacket::Ack { seq: k },
                    DEFAULT_MAX_FRAME,
                    &mut self.acks[i],
                )
                .expect("encodes");
            }
            // The sender's mailbox holds only the notices of its messages.
            self.notice_acks[i].clone_from(&self.acks[i]);
        }
    }

    /// Runs `rounds` rounds; the time spent in [`Self::run_round`] only
    /// (frames are encoded outside it).
    fn measure(&mut self, rounds: u64) -> Duration {
        let mut measured = Duration::ZERO;
        for _ in 0..rounds {
            self.prepare_round();
            let t = Instant::now();
            self.run_round();
            measured += t.elapsed();
        }
        measured
    }

    /// One message on every pair (measured).
    #[inline(never)]
    fn run_round(&mut self) {
        let sends = std::mem::take(&mut self.sends);
        let acks = std::mem::take(&mut self.acks);
        let notice_acks = std::mem::take(&mut self.notice_acks);
        let conns = std::mem::take(&mut self.conns);
        for (i, &(sender, _)) in conns.iter().enumerate() {
            self.input(sender, &sends[i]);
        }
        for (i, &(_, recipient)) in conns.iter().enumerate() {
            self.input(recipient, &acks[i]);
        }
        for (i, &(sender, _)) in conns.iter().enumerate() {
            self.input(sender, &notice_acks[i]);
        }
        for pair in &mut self.pairs {
            pair.sent += self.batch;
        }
        self.sends = sends;
        self.acks = acks;
        self.notice_acks = notice_acks;
        self.conns = conns;
    }
}

fn name(i: usize) -> UserName {
    UserName::new(format!("user{i:04}")).expect("valid name")
}

/// Decodes what the server sent to `conn` during setup.
fn expect_packet(server: &mut Server, now: Instant, conn: ConnId) -> ServerPacket {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut packets = Vec::new();
    let mut max_lsn = None;
    while let Some(out) = server.poll_output() {
        match out {
            Output::Transmit { conn: c, bytes } if c == conn => {
                decoder.push(&bytes);
                while let Some(p) = decoder.next_packet::<ServerPacket>().expect("decodes") {
                    packets.push(p);
                }
            }
            Output::Persist { lsn, .. } => max_lsn = Some(lsn),
            _ => {}
        }
    }
    if let Some(lsn) = max_lsn {
        server.handle_input(now, Input::Durable(lsn));
    }
    assert_eq!(packets.len(), 1, "one answer: {packets:?}");
    packets.pop().expect("one packet")
}

fn setup(batch: u64) -> Routing {
    let identity = Identity::generate(&mut rng::from_seed([5; 32]), 2048).expect("key");
    let public_key = identity.public_key().to_spki_der().to_vec();
    let mut state = ServerState::new();
    state.apply(&PersistCmd::SetServerId { server_id: [1; 16] });
    for i in 0..USERS {
        state.apply(&PersistCmd::RegisterUser {
            user: name(i),
            public_key: public_key.clone(),
        });
    }

    let mut config = ServerConfig::default();
    // The benchmark measures routing, not the rate limiter's refusals.
    config.send_rate_per_sec = u32::MAX;
    config.send_burst = u32::MAX;
    let now = Instant::now();
    let mut server = Server::new(config, state, [9; 32], now, T0_UNIX);
    let mut client_rng = rng::from_seed([3; 32]);
    let frame = |p: &ClientPacket| encode_frame(p, DEFAULT_MAX_FRAME).expect("encodes");

    for i in 0..USERS {
        let conn = ConnId(i as u64 + 1);
        let user = name(i);
        server.handle_input(now, Input::Connected(conn, Link::PLAINTEXT));
        server.handle_input(
            now,
            Input::Bytes(conn, &frame(&ClientPacket::Hello { versions: vec![1] })),
        );
        let ServerPacket::Welcome {
            server_id,
            session_id,
            ..
        } = expect_packet(&mut server, now, conn)
        else {
            panic!("expected welcome");
        };
        server.handle_input(
            now,
            Input::Bytes(conn, &frame(&ClientPacket::Login { user: user.clone() })),
        );
        let ServerPacket::Challenge { nonce, .. } = expect_packet(&mut server, now, conn) else {
            panic!("expected challenge");
        };
        let client_nonce = rng::bytes(&mut client_rng);
        let signature = AuthTranscript {
            version: TranscriptVersion::V1,
            context: AuthContext::Login,
            server_id,
            session_id,
            user: &user,
            server_nonce: nonce,
            client_nonce,
        }
        .sign(&identity, &mut client_rng);
        server.handle_input(
            now,
            Input::Bytes(
                conn,
                &frame(&ClientPacket::Prove {
                    client_nonce,
                    signature,
                }),
            ),
        );
        let packet = expect_packet(&mut server, now, conn);
        assert!(
            matches!(packet, ServerPacket::LoggedIn { .. }),
            "{packet:?}"
        );
    }

    let pairs: Vec<Pair> = (0..PAIRS)
        .map(|k| Pair {
            sender: ConnId(2 * k as u64 + 1),
            recipient: ConnId(2 * k as u64 + 2),
            to: name(2 * k + 1),
            sent: 0,
        })
        .collect();
    Routing {
        batch,
        server,
        now,
        conns: pairs.iter().map(|p| (p.sender, p.recipient)).collect(),
        pairs,
        envelope: (0..ENVELOPE_LEN).map(|i| i as u8).collect(),
        seen: Seen::default(),
        sends: vec![Vec::new(); PAIRS],
        acks: vec![Vec::new(); PAIRS],
        notice_acks: vec![Vec::new(); PAIRS],
    }
}

/// One round, checked: every input produced exactly what it should.
fn check_round(r: &mut Routing) {
    r.prepare_round();
    let before = r.seen;
    r.run_round();
    let n = PAIRS as u64 * r.batch;
    let seen = Seen {
        transmits: r.seen.transmits - before.transmits,
        bytes: 0,
        persists: r.seen.persists - before.persists,
        counted: r.seen.counted - before.counted,
        other: r.seen.other - before.other,
    };
    // Per pair, one transmit each of the Accepteds, the Messages and the
    // Notices (a drain coalesces a connection's frames); per message,
    // Enqueue, Ack, Enqueue (notice), Ack; and the events a driver
    // counts: accepted, message and notice delivered, both acknowledged.
    assert_eq!(
        seen,
        Seen {
            transmits: 3 * PAIRS as u64,
            bytes: 0,
            persists: 4 * n,
            counted: 5 * n,
            other: 0
        }
    );
    assert_eq!(
        r.server.state().queued_items(),
        0,
        "everything acknowledged"
    );
}

/// Frames per input of the pipelined variant.
const PIPELINE: u64 = 64;

fn bench_routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    group.measurement_time(Duration::from_secs(10));
    for (name, batch) in [
        ("send_deliver_ack_256B", 1),
        ("pipelined_64x256B", PIPELINE),
    ] {
        let started = Instant::now();
        let mut r = setup(batch);
        eprintln!(
            "routing: {USERS} users logged in (setup {:.1?})",
            started.elapsed()
        );
        check_round(&mut r);
        group.throughput(Throughput::Elements(PAIRS as u64 * batch));
        group.bench_function(name, |b| b.iter_custom(|rounds| r.measure(rounds)));
        check_round(&mut r);
    }
    group.finish();
}

criterion_group!(benches, bench_routing);

/// `ROUTING_ROUNDS=n` runs `n` rounds without criterion and prints the rate:
/// for profilers (`perf record`, `valgrind --tool=callgrind`), where only
/// `run_round` matters. `ROUTING_BATCH=64` selects the pipelined variant
/// (default 1).
fn main() {
    if let Some(rounds) = std::env::var("ROUTING_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        let batch = std::env::var("ROUTING_BATCH")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
            .max(1);
        let mut r = setup(batch);
        check_round(&mut r);
        let measured = r.measure(u64::from(rounds));
        check_round(&mut r);
        let messages = f64::from(rounds) * PAIRS as f64 * batch as f64;
        println!(
            "{messages} messages in {measured:.2?} (batch {batch}): {:.0} messages/s",
            messages / measured.as_secs_f64()
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
