//! Hostile clients against the real tokio server over loopback TCP.
//!
//! A raw-socket client ([`Raw`]) speaks frames by hand so each test can
//! misbehave precisely; every case asserts the typed error (and the close
//! for fatal codes), that nothing was lost, and that the server still
//! serves a well-behaved client afterwards. The server runs in this
//! process, so its memory is this process's RSS: tests that measure it run
//! alone (see [`run`]). Results are tabulated in docs/SECURITY.md,
//! "Hostile-client suite".

mod common;

use common::{TestServer, identities, next_event, options, user};
use missive_core::client::ClientEvent;
use missive_core::crypto::{AuthContext, AuthTranscript, EnvelopeHeader, Identity, OpenError};
use missive_core::server::ServerConfig;
use missive_core::wire::{ClientPacket, ErrorCode, FrameDecoder, ServerPacket, encode_frame};
use missive_core::{MessageId, UserName, rng};
use missive_store::MemoryStore;
use missive_tokio::{ClientHandle, QueueLimits, ServerOptions};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);
/// Our own decoder's limit when reading the server (generous on purpose).
const READ_LIMIT: u32 = 1 << 24;
/// A client never encodes beyond this (the hostile frames are hand-made).
const WRITE_LIMIT: u32 = 1 << 24;

static SERIAL: RwLock<()> = RwLock::new(());

/// Runs a test body on its own two-worker runtime. Tests that measure the
/// process's RSS run `exclusive`ly: no other test of this binary runs at
/// the same time (the others share the lock and run in parallel).
fn run<F: Future<Output = ()>>(exclusive: bool, body: F) {
    let _guards = if exclusive {
        (
            None,
            Some(SERIAL.write().unwrap_or_else(|e| e.into_inner())),
        )
    } else {
        (Some(SERIAL.read().unwrap_or_else(|e| e.into_inner())), None)
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}

fn memory() -> Box<MemoryStore> {
    Box::new(MemoryStore::new())
}

/// This process's resident set size in KiB (the server runs in-process).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn hello() -> ClientPacket {
    ClientPacket::Hello { versions: vec![1] }
}

fn frame(packet: &ClientPacket) -> Vec<u8> {
    encode_frame(packet, WRITE_LIMIT).unwrap()
}

fn mid(n: u32) -> MessageId {
    let mut id = [0x5a; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    MessageId(id)
}

fn send_packet(id: MessageId, to: &str, envelope: Vec<u8>) -> ClientPacket {
    ClientPacket::Send {
        id,
        to: user(to),
        envelope: envelope.into(),
    }
}

/// One answer to a `send`: `Ok(id)` for accepted, `Err((code, id, user))`.
type SendAnswer = Result<MessageId, (ErrorCode, Option<MessageId>, Option<UserName>)>;

/// A client that speaks frames by hand.
struct Raw {
    stream: TcpStream,
    decoder: FrameDecoder,
    server_id: [u8; 16],
    session_id: [u8; 16],
    /// Deliveries seen while waiting for something else.
    messages: Vec<(u64, UserName, MessageId)>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).await.unwrap())
    }

    fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(READ_LIMIT),
            server_id: [0; 16],
            session_id: [0; 16],
            messages: Vec::new(),
        }
    }

    /// Connects, says hello and reads the Welcome.
    async fn hello(addr: SocketAddr) -> Self {
        let mut raw = Self::connect(addr).await;
        raw.send(&hello()).await;
        raw.expect_welcome().await;
        raw
    }

    async fn expect_welcome(&mut self) {
        match self.expect().await {
            ServerPacket::Welcome {
                server_id,
                session_id,
                ..
            } => {
                self.server_id = server_id;
                self.session_id = session_id;
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, packet: &ClientPacket) {
        self.write(&frame(packet)).await;
    }

    /// The next packet, or `None` once the server closed; panics after
    /// `timeout`.
    async fn recv_within(&mut self, timeout: Duration) -> Option<ServerPacket> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(packet) = self.decoder.next_packet::<ServerPacket>().unwrap() {
                return Some(packet);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .expect("timed out waiting for the server")
                .unwrap_or(0); // a reset is a close too
            if n == 0 {
                return None;
            }
            self.decoder.push(&buf[..n]);
        }
    }

    async fn expect(&mut self) -> ServerPacket {
        self.recv_within(T).await.expect("the server closed")
    }

    /// The next packet that is not a delivery (deliveries are recorded).
    async fn expect_answer(&mut self) -> ServerPacket {
        loop {
            match self.expect().await {
                ServerPacket::Message { seq, from, id, .. } => self.messages.push((seq, from, id)),
                ServerPacket::Notice { .. } => {}
                other => return other,
            }
        }
    }

    async fn expect_error(&mut self) -> (ErrorCode, Option<MessageId>, Option<UserName>) {
        match self.expect_answer().await {
            ServerPacket::Error { code, id, user, .. } => (code, id, user),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    async fn expect_send_answer(&mut self) -> SendAnswer {
        match self.expect_answer().await {
            ServerPacket::Accepted { id } => Ok(id),
            ServerPacket::Error { code, id, user, .. } => Err((code, id, user)),
            other => panic!("expected an answer to send, got {other:?}"),
        }
    }

    /// Reads until the server closes (within `timeout`); the error codes it
    /// sent on the way.
    async fn closed_with(&mut self, timeout: Duration) -> Vec<ErrorCode> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut codes = Vec::new();
        while let Some(packet) = self
            .recv_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            if let ServerPacket::Error { code, .. } = packet {
                codes.push(code);
            }
        }
        codes
    }

    /// Ping → Pong; the round trip.
    async fn ping(&mut self) -> Duration {
        let started = Instant::now();
        self.send(&ClientPacket::Ping).await;
        match self.expect_answer().await {
            ServerPacket::Pong => started.elapsed(),
            other => panic!("expected pong, got {other:?}"),
        }
    }

    /// A `prove` over this connection's transcript.
    fn prove(
        &self,
        context: AuthContext,
        name: &UserName,
        key: &Identity,
        server_nonce: [u8; 32],
    ) -> ClientPacket {
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(&self.session_id);
        seed[16..].copy_from_slice(&server_nonce[..16]);
        let mut rng = rng::from_seed(seed);
        let client_nonce = rng::bytes(&mut rng);
        let transcript = AuthTranscript {
            version: missive_core::crypto::TranscriptVersion::V1,
            context,
            server_id: self.server_id,
            session_id: self.session_id,
            user: name,
            server_nonce,
            client_nonce,
        };
        ClientPacket::Prove {
            client_nonce,
            signature: transcript.sign(key, &mut rng),
        }
    }

    /// Asks for a challenge (`login` or `register` as `name`, offering
    /// `key`'s public key for a registration) and returns its nonce.
    async fn challenge(&mut self, context: AuthContext, name: &str, key: &Identity) -> [u8; 32] {
        let request = match context {
            AuthContext::Login => ClientPacket::Login { user: user(name) },
            AuthContext::Register => ClientPacket::Register {
                user: user(name),
                public_key: key.public_key().to_spki_der().to_vec(),
            },
        };
        self.send(&request).await;
        match self.expect_answer().await {
            ServerPacket::Challenge { nonce, .. } => nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// Registers or logs in as `name`, signing with `key`; the answer and
    /// the `prove` that was sent.
    async fn authenticate(
        &mut self,
        context: AuthContext,
        name: &str,
        key: &Identity,
    ) -> (ServerPacket, ClientPacket) {
        let nonce = self.challenge(context, name, key).await;
        let prove = self.prove(context, &user(name), key, nonce);
        self.send(&prove).await;
        (self.expect_answer().await, prove)
    }

    async fn register(&mut self, name: &str, key: &Identity) {
        match self.authenticate(AuthContext::Register, name, key).await.0 {
            ServerPacket::Registered { user } => assert_eq!(user.as_str(), name),
            other => panic!("expected registered, got {other:?}"),
        }
    }

    /// Logs in; the number of items queued at login.
    async fn login(&mut self, name: &str, key: &Identity) -> u64 {
        match self.authenticate(AuthContext::Login, name, key).await.0 {
            ServerPacket::LoggedIn { user, queued } => {
                assert_eq!(user.as_str(), name);
                queued
            }
            other => panic!("expected logged_in, got {other:?}"),
        }
    }

    /// Connects, registers `name` with identity `key` and logs in.
    async fn user(addr: SocketAddr, name: &str, key: usize) -> Self {
        let mut raw = Self::hello(addr).await;
        raw.register(name, &identities()[key]).await;
        raw.login(name, &identities()[key]).await;
        raw
    }
}

/// A fresh, well-behaved connection gets Welcome and Pong promptly.
async fn assert_serving(addr: SocketAddr) {
    let mut raw = Raw::hello(addr).await;
    let rtt = raw.ping().await;
    assert!(rtt < Duration::from_secs(1), "pong took {rtt:?}");
}

/// Registers `name` (identity `key`) and disconnects: the user is offline.
async fn register_offline(addr: SocketAddr, name: &str, key: usize) {
    let mut raw = Raw::hello(addr).await;
    raw.register(name, &identities()[key]).await;
}

// ---------------------------------------------------------------- framing

#[test]
fn oversized_length_prefixes_are_refused_without_allocating() {
    run(true, async {
        let config = ServerConfig::default();
        let max_frame = config.max_frame;
        let server = TestServer::start(config, memory()).await;
        assert_serving(server.addr).await;
        let before = rss_kib();
        for prefix in [u32::MAX, max_frame + 1] {
            let mut raw = Raw::connect(server.addr).await;
            // The length, then a little of a payload that would be huge.
            let mut bytes = prefix.to_be_bytes().to_vec();
            bytes.extend(std::iter::repeat_n(0x41, 64 * 1024));
            raw.write(&bytes).await;
            let codes = raw.closed_with(T).await;
            assert_eq!(codes, vec![ErrorCode::FrameTooLarge], "prefix {prefix:#x}");
        }
        // The same after hello and after login.
        let mut raw = Raw::hello(server.addr).await;
        raw.write(&u32::MAX.to_be_bytes()).await;
        assert_eq!(raw.closed_with(T).await, vec![ErrorCode::FrameTooLarge]);
        let after = rss_kib();
        let delta = after as i64 - before as i64;
        println!("oversized prefixes: RSS {before} KiB -> {after} KiB ({delta:+} KiB)");
        assert!(delta < 8 * 1024, "RSS grew by {delta} KiB");
        server
            .wait_for("connections gone", T, |s| s.connection_count() == 0)
            .await;
        assert_eq!(
            server.handle.inspect(|s| s.buffered_bytes()).await.unwrap(),
            0
        );
        assert_serving(server.addr).await;
        server.stop().await;
    });
}

#[test]
fn slow_drip_hello_still_gets_welcome() {
    run(false, async {
        let server = TestServer::start(ServerConfig::default(), memory()).await;
        let mut raw = Raw::connect(server.addr).await;
        let started = Instant::now();
        for byte in frame(&hello()) {
            raw.write(&[byte]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        raw.expect_welcome().await;
        println!("drip hello: welcome after {:?}", started.elapsed());
        raw.ping().await;
        raw.register("alice", &identities()[0]).await;
        assert_eq!(raw.login("alice", &identities()[0]).await, 0);
        assert_serving(server.addr).await;
        server.stop().await;
    });
}

#[test]
fn unfinished_handshakes_are_closed_at_the_handshake_deadline() {
    run(false, async {
        let mut config = ServerConfig::default();
        config.handshake_timeout = Duration::from_millis(300);
        let server = TestServer::start(config, memory()).await;

        // A hello dripped at one byte per 50 ms needs 1.15 s: too slow.
        let mut dripper = Raw::connect(server.addr).await;
        let started = Instant::now();
        let bytes = frame(&hello());
        let (mut rd, mut wr) = dripper.stream.into_split();
        let drip = tokio::spawn(async move {
            for byte in bytes {
                if wr.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut buf = Vec::new();
        tokio::time::timeout(T, rd.read_to_end(&mut buf))
            .await
            .unwrap()
            .ok();
        let elapsed = started.elapsed();
        dripper.decoder.push(&buf);
        let packet = dripper.decoder.next_packet::<ServerPacket>().unwrap();
        assert!(
            matches!(
                packet,
                Some(ServerPacket::Error {
                    code: ErrorCode::Timeout,
                    ..
                })
            ),
            "{packet:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(280) && elapsed < Duration::from_millis(1100),
            "drip closed after {elapsed:?}"
        );
        println!("drip never completing: Timeout after {elapsed:?}");
        drip.abort();

        // Half a frame that never completes.
        let mut raw = Raw::hello(server.addr).await;
        let started = Instant::now();
        let ping = frame(&ClientPacket::Ping);
        raw.write(&ping[..6]).await;
        assert_eq!(raw.closed_with(T).await, vec![ErrorCode::Timeout]);
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(1100), "{elapsed:?}");
        println!("half frame before login: Timeout after {elapsed:?}");

        // The server still answers a well-behaved client (within 300 ms).
        assert_serving(server.addr).await;
        server
            .wait_for("connections gone", T, |s| s.connection_count() == 0)
            .await;
        server.stop().await;
    });
}

#[test]
fn half_frame_after_login_is_closed_at_the_liveness_deadline() {
    run(false, async {
        let mut config = ServerConfig::default();
        config.ping_interval = Duration::from_millis(100);
        config.missed_pings = 3;
        // Long handshake deadline: the close must come from liveness.
        config.handshake_timeout = Duration::from_secs(10);
        let server = TestServer::start(config, memory()).await;
        let mut raw = Raw::user(server.addr, "alice", 0).await;
        raw.ping().await;
        let started = Instant::now();
        let ping = frame(&ClientPacket::Ping);
        raw.write(&ping[..7]).await;
        assert_eq!(raw.closed_with(T).await, vec![ErrorCode::Timeout]);
        let elapsed = started.elapsed();
        println!("half frame after login: Timeout after {elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
            "{elapsed:?}"
        );
        assert!(
            !server
                .handle
                .inspect(|s| s.is_online(&user("alice")))
                .await
                .unwrap()
        );
        // Alice can come back.
        let mut raw = Raw::hello(server.addr).await;
        raw.login("alice", &identities()[0]).await;
        raw.ping().await;
        server.stop().await;
    });
}

#[test]
fn random_bytes_and_non_packets_are_malformed() {
    run(false, async {
        let config = ServerConfig::default();
        let max_frame = config.max_frame;
        let server = TestServer::start(config, memory()).await;
        let mut seeded = rng::from_seed([7; 32]);

        // Unframed random bytes: the first four are read as a length.
        for _ in 0..4 {
            let junk: [u8; 256] = rng::bytes(&mut seeded);
            let len = u32::from_be_bytes(junk[..4].try_into().unwrap());
            let expected = if len > max_frame {
                ErrorCode::FrameTooLarge
            } else {
                ErrorCode::Malformed
            };
            let mut raw = Raw::connect(server.addr).await;
            raw.write(&junk).await;
            if len <= max_frame && len as usize > junk.len() - 4 {
                // A plausible length: the frame is incomplete, and a
                // silent peer would meet the handshake deadline. Close
                // our side so the server sees the end of the stream.
                raw.stream.shutdown().await.unwrap();
                let codes = raw.closed_with(T).await;
                assert!(codes.is_empty(), "{codes:?}");
            } else {
                assert_eq!(raw.closed_with(T).await, vec![expected]);
            }
        }

        // Random payloads in well-formed frames, before and after hello.
        let mut payloads: Vec<Vec<u8>> = (0..8)
            .map(|_| rng::bytes::<200>(&mut seeded).to_vec())
            .collect();
        // Well-formed CBOR that is no client packet.
        payloads.extend([
            vec![0x01],                                     // 1
            vec![0xa1, 0x63, b'f', b'o', b'o', 0x01],       // {"foo": 1}
            vec![0x64, b'p', b'o', b'n', b'g'],             // "pong" (server's)
            vec![0xa1, 0x64, b'p', b'i', b'n', b'g', 0xf6], // {"ping": null}
            vec![0x80],                                     // []
            frame(&hello())[4..]
                .iter()
                .chain(&[0x00])
                .copied()
                .collect(), // trailing byte
            Vec::new(),                                     // L = 0
        ]);
        for (i, payload) in payloads.iter().enumerate() {
            for after_hello in [false, true] {
                let mut raw = if after_hello {
                    Raw::hello(server.addr).await
                } else {
                    Raw::connect(server.addr).await
                };
                let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
                bytes.extend_from_slice(payload);
                raw.write(&bytes).await;
                assert_eq!(
                    raw.closed_with(T).await,
                    vec![ErrorCode::Malformed],
                    "payload {i} {payload:02x?}, after hello: {after_hello}"
                );
            }
        }
        assert_serving(server.addr).await;
        server.stop().await;
    });
}

// ---------------------------------------------------------- state machine

#[test]
fn packets_out_of_state() {
    run(false, async {
        let server = TestServer::start(ServerConfig::default(), memory()).await;
        register_offline(server.addr, "bob", 1).await;

        // Anything before hello is fatal.
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&ClientPacket::Ping).await;
        assert_eq!(raw.closed_with(T).await, vec![ErrorCode::UnexpectedPacket]);

        // Requests that need a login: answered, the connection stays.
        let mut raw = Raw::hello(server.addr).await;
        raw.send(&send_packet(mid(1), "bob", vec![1, 2, 3])).await;
        let (code, id, _) = raw.expect_error().await;
        assert_eq!((code, id), (ErrorCode::NotLoggedIn, Some(mid(1))));
        raw.send(&ClientPacket::Ack { seq: 1 }).await;
        assert_eq!(raw.expect_error().await.0, ErrorCode::NotLoggedIn);
        raw.send(&ClientPacket::QueryPresence { user: user("bob") })
            .await;
        assert_eq!(raw.expect_error().await.0, ErrorCode::NotLoggedIn);
        // A prove without a challenge.
        let prove = raw.prove(AuthContext::Login, &user("bob"), &identities()[1], [0; 32]);
        raw.send(&prove).await;
        assert_eq!(raw.expect_error().await.0, ErrorCode::NoChallenge);
        raw.ping().await;
        // Hello twice is fatal.
        raw.send(&hello()).await;
        assert_eq!(raw.closed_with(T).await, vec![ErrorCode::UnexpectedPacket]);

        // After login: an ack for a seq never delivered, a second login.
        let mut raw = Raw::user(server.addr, "alice", 0).await;
        raw.send(&ClientPacket::Ack { seq: 424_242 }).await;
        assert_eq!(raw.expect_error().await.0, ErrorCode::UnknownSeq);
        raw.send(&ClientPacket::Login { user: user("bob") }).await;
        assert_eq!(raw.expect_error().await.0, ErrorCode::AlreadyAuthenticated);
        raw.send(&hello()).await;
        assert_eq!(raw.closed_with(T).await, vec![ErrorCode::UnexpectedPacket]);
        assert_eq!(server.queued().await, 0, "nothing was queued");
        assert_serving(server.addr).await;
        server.stop().await;
    });
}

// ------------------------------------------------------- authentication

#[test]
fn impersonation_replay_and_name_theft_are_refused() {
    run(false, async {
        let server = TestServer::start(ServerConfig::default(), memory()).await;
        let alice = &identities()[0];
        let mallory = &identities()[2];
        let mut first = Raw::hello(server.addr).await;
        first.register("alice", alice).await;

        // Mallory logs in as alice, signing with her own key.
        let mut raw = Raw::hello(server.addr).await;
        let (answer, _) = raw.authenticate(AuthContext::Login, "alice", mallory).await;
        assert!(
            matches!(
                answer,
                ServerPacket::Error {
                    code: ErrorCode::AuthFailed,
                    ..
                }
            ),
            "{answer:?}"
        );
        assert!(
            raw.closed_with(T).await.is_empty(),
            "closed after the error"
        );

        // Alice's genuine prove, replayed on a new connection.
        let (answer, recorded) = first.authenticate(AuthContext::Login, "alice", alice).await;
        assert!(
            matches!(answer, ServerPacket::LoggedIn { .. }),
            "{answer:?}"
        );
        let mut replay = Raw::hello(server.addr).await;
        replay.challenge(AuthContext::Login, "alice", alice).await;
        replay.send(&recorded).await;
        assert_eq!(replay.closed_with(T).await, vec![ErrorCode::AuthFailed]);
        // The replay did not replace alice's session.
        first.ping().await;
        assert!(
            server
                .handle
                .inspect(|s| s.is_online(&user("alice")))
                .await
                .unwrap()
        );

        // Registering the taken name with another key: refused, not fatal.
        let mut thief = Raw::hello(server.addr).await;
        thief
            .send(&ClientPacket::Register {
                user: user("alice"),
                public_key: mallory.public_key().to_spki_der().to_vec(),
            })
            .await;
        let (code, _, named) = thief.expect_error().await;
        assert_eq!((code, named), (ErrorCode::NameTaken, Some(user("alice"))));
        thief.ping().await;
        // A registration prove signed for another connection fails too.
        let mut thief2 = Raw::hello(server.addr).await;
        let nonce = thief2
            .challenge(AuthContext::Register, "mallory", mallory)
            .await;
        let forged = thief.prove(AuthContext::Register, &user("mallory"), mallory, nonce);
        thief2.send(&forged).await;
        assert_eq!(thief2.closed_with(T).await, vec![ErrorCode::AuthFailed]);

        let users = server
            .handle
            .inspect(|s| s.state().user_count())
            .await
            .unwrap();
        assert_eq!(users, 1, "only alice is registered");
        assert_serving(server.addr).await;
        server.stop().await;
    });
}

#[test]
fn forged_sender_is_stamped_and_refused_by_the_recipient() {
    run(false, async {
        let server = TestServer::start(ServerConfig::default(), memory()).await;
        let home = tempfile::tempdir().unwrap();
        register_offline(server.addr, "alice", 0).await;
        let (bob, mut bob_events) =
            ClientHandle::connect(options(server.addr, home.path(), "bob", 1))
                .await
                .unwrap();
        let mut mallory = Raw::user(server.addr, "mallory", 2).await;
        mallory
            .send(&ClientPacket::FetchKey { user: user("bob") })
            .await;
        let bob_key = match mallory.expect_answer().await {
            ServerPacket::Key { public_key, .. } => {
                missive_core::crypto::PublicKey::from_spki_der(&public_key).unwrap()
            }
            other => panic!("expected key, got {other:?}"),
        };
        // An envelope whose header claims alice sent it.
        let id = mid(77);
        let header = EnvelopeHeader {
            version: missive_core::crypto::ENVELOPE_VERSION,
            sender: user("alice"),
            recipient: user("bob"),
            id,
            sent_at: 1_700_000_000_000,
        };
        let envelope = missive_core::crypto::seal(
            &mut rng::from_seed([3; 32]),
            &identities()[2],
            &header,
            &bob_key,
            b"this is alice, honest",
            64 * 1024,
        )
        .unwrap();
        mallory.send(&send_packet(id, "bob", envelope)).await;
        assert_eq!(mallory.expect_send_answer().await, Ok(id));

        let (from, got_id, error) = next_event(&mut bob_events, T, |e| match e {
            ClientEvent::UndecryptableMessage { from, id, error } => Some((from, id, error)),
            ClientEvent::MessageReceived { from, .. } => {
                panic!("bob accepted a forged message from {from}")
            }
            _ => None,
        })
        .await;
        println!("forged sender: bob saw from={from}, error={error:?}");
        assert_eq!(from, user("mallory"), "the server stamps the sender");
        assert_eq!(got_id, id);
        assert!(
            matches!(error, OpenError::WrongSender(ref claimed) if claimed == &user("alice")),
            "{error:?}"
        );
        // Bob acknowledged it (without telling anyone it failed to open).
        server
            .wait_for("bob's mailbox empty", T, |s| {
                s.state()
                    .user(&user("bob"))
                    .is_some_and(|u| u.mailbox.items.is_empty())
            })
            .await;
        bob.close().await.unwrap();
        server.stop().await;
    });
}

// ------------------------------------------------------ quotas and rates

#[test]
fn envelope_over_the_limit_is_refused() {
    run(false, async {
        let mut config = ServerConfig::default();
        config.max_envelope = 4096;
        let server = TestServer::start(config, memory()).await;
        register_offline(server.addr, "bob", 1).await;
        let mut mallory = Raw::user(server.addr, "mallory", 2).await;
        mallory
            .send(&send_packet(mid(1), "bob", vec![0xee; 4097]))
            .await;
        let answer = mallory.expect_send_answer().await;
        assert_eq!(
            answer,
            Err((ErrorCode::EnvelopeTooLarge, Some(mid(1)), None))
        );
        // Not fatal; exactly the limit is fine.
        mallory
            .send(&send_packet(mid(2), "bob", vec![0xee; 4096]))
            .await;
        assert_eq!(mallory.expect_send_answer().await, Ok(mid(2)));
        assert_eq!(server.queued().await, 1);
        server.stop().await;
    });
}

#[test]
fn flood_to_an_offline_user_hits_queue_full_and_leaves_a_fair_share() {
    run(false, async {
        let mut config = ServerConfig::default();
        config.queue_max_messages = 20;
        config.sender_share_percent = 50;
        let server = TestServer::start(config, memory()).await;
        register_offline(server.addr, "bob", 1).await;
        let mut mallory = Raw::user(server.addr, "mallory", 2).await;
        // Thirty sends pipelined, then thirty answers.
        let mut flood = Vec::new();
        for n in 0..30 {
            flood.extend(frame(&send_packet(mid(n), "bob", vec![n as u8; 100])));
        }
        mallory.write(&flood).await;
        let mut accepted = Vec::new();
        let mut refused = HashSet::new();
        for _ in 0..30 {
            match mallory.expect_send_answer().await {
                Ok(id) => accepted.push(id),
                Err((code, id, named)) => {
                    assert_eq!(code, ErrorCode::QueueFull);
                    assert_eq!(named, Some(user("bob")));
                    assert!(refused.insert(id.expect("the refusal names the message")));
                }
            }
        }
        assert_eq!(accepted, (0..10).map(mid).collect::<Vec<_>>());
        assert_eq!(refused, (10..30).map(mid).collect::<HashSet<_>>());
        mallory.ping().await;

        // Alice still gets her share in, then the queue is full.
        let mut alice = Raw::user(server.addr, "alice", 0).await;
        for n in 100..110 {
            alice.send(&send_packet(mid(n), "bob", vec![1; 100])).await;
            assert_eq!(alice.expect_send_answer().await, Ok(mid(n)));
            accepted.push(mid(n));
        }
        alice
            .send(&send_packet(mid(110), "bob", vec![1; 100]))
            .await;
        let (code, id, _) = alice.expect_send_answer().await.unwrap_err();
        assert_eq!((code, id), (ErrorCode::QueueFull, Some(mid(110))));
        assert_eq!(server.queued().await, 20);

        // Bob gets exactly the accepted messages, in order per sender.
        let mut bob = Raw::hello(server.addr).await;
        assert_eq!(bob.login("bob", &identities()[1]).await, 20);
        let mut got = Vec::new();
        while got.len() < 20 {
            match bob.expect().await {
                ServerPacket::Message { seq, id, .. } => {
                    bob.send(&ClientPacket::Ack { seq }).await;
                    got.push(id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, accepted);
        server
            .wait_for("bob's mailbox empty", T, |s| {
                s.state()
                    .user(&user("bob"))
                    .is_some_and(|u| u.mailbox.items.is_empty())
            })
            .await;
        server.stop().await;
    });
}

#[test]
fn send_rate_over_the_limit_is_refused_then_accepted() {
    run(false, async {
        let mut config = ServerConfig::default();
        config.send_rate_per_sec = 5;
        config.send_burst = 3;
        let server = TestServer::start(config, memory()).await;
        register_offline(server.addr, "bob", 1).await;
        let mut mallory = Raw::user(server.addr, "mallory", 2).await;
        let mut burst = Vec::new();
        for n in 0..8 {
            burst.extend(frame(&send_packet(mid(n), "bob", vec![n as u8; 10])));
        }
        mallory.write(&burst).await;
        // Refusals are immediate; `accepted` waits for durability, so the
        // answers need not come in the order of the sends.
        let mut accepted = HashSet::new();
        let mut limited = Vec::new();
        for _ in 0..8 {
            match mallory.expect_send_answer().await {
                Ok(id) => assert!(accepted.insert(id)),
                Err((code, id, _)) => {
                    assert_eq!(code, ErrorCode::RateLimited);
                    limited.push(id.expect("the refusal names the message"));
                }
            }
        }
        assert_eq!(
            accepted,
            (0..3).map(mid).collect::<HashSet<_>>(),
            "the burst"
        );
        limited.sort_by_key(|id| id.0);
        assert_eq!(
            limited,
            (3..8).map(mid).collect::<Vec<_>>(),
            "beyond the burst"
        );
        // Retry the same sends later: they get in at the refill rate.
        let started = Instant::now();
        let mut retries = 0;
        for id in limited {
            loop {
                mallory.send(&send_packet(id, "bob", vec![0; 10])).await;
                match mallory.expect_send_answer().await {
                    Ok(got) => {
                        assert_eq!(got, id);
                        break;
                    }
                    Err((ErrorCode::RateLimited, Some(got), _)) if got == id => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                }
                assert!(started.elapsed() < T, "never accepted");
            }
        }
        let elapsed = started.elapsed();
        println!("rate limit: 5 refused sends accepted after {elapsed:?} ({retries} retries)");
        assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
        assert_eq!(server.queued().await, 8, "every message queued once");
        server.stop().await;
    });
}

// ---------------------------------------------------------------- load

#[test]
fn many_idle_connections_do_not_starve_a_good_client() {
    const IDLE: usize = 500;
    run(true, async {
        let server = TestServer::start(ServerConfig::default(), memory()).await;
        register_offline(server.addr, "bob", 1).await;
        let mut alice = Raw::user(server.addr, "alice", 0).await;
        alice.ping().await;
        let before = rss_kib();
        let started = Instant::now();
        let mut idle = Vec::with_capacity(IDLE);
        let hello_frame = frame(&hello());
        for _ in 0..IDLE {
            let mut raw = Raw::connect(server.addr).await;
            raw.write(&hello_frame).await;
            idle.push(raw);
        }
        server
            .wait_for("all connections admitted", T, |s| {
                s.connection_count() == IDLE + 1
            })
            .await;
        let opened = started.elapsed();
        let after = rss_kib();
        let per_conn = (after.saturating_sub(before) * 1024) / IDLE as u64;
        println!(
            "{IDLE} idle connections in {opened:?}: RSS {before} KiB -> {after} KiB, \
             {per_conn} B per connection (server and client side)"
        );
        assert!(per_conn < 64 * 1024, "{per_conn} B per connection");

        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            worst = worst.max(alice.ping().await);
        }
        let sent = Instant::now();
        alice.send(&send_packet(mid(1), "bob", vec![1; 100])).await;
        assert_eq!(alice.expect_send_answer().await, Ok(mid(1)));
        let send_time = sent.elapsed();
        println!(
            "with {IDLE} idle connections: worst ping {worst:?}, send accepted in {send_time:?}"
        );
        assert!(worst < Duration::from_millis(500), "ping took {worst:?}");
        assert!(
            send_time < Duration::from_millis(500),
            "send took {send_time:?}"
        );

        // Every idle connection got its Welcome.
        for raw in idle.iter_mut().take(20) {
            raw.expect_welcome().await;
        }
        drop(idle);
        server
            .wait_for("idle connections gone", T, |s| s.connection_count() == 1)
            .await;
        alice.ping().await;
        server.stop().await;
    });
}

#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    run(false, async {
        let mut server_options = ServerOptions::default();
        server_options.max_connections = 5;
        let server = TestServer::start_with(
            "127.0.0.1:0",
            ServerConfig::default(),
            memory(),
            server_options,
        )
        .await;
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(Raw::hello(server.addr).await);
        }
        let mut extra = Raw::connect(server.addr).await;
        extra.stream.write_all(&frame(&hello())).await.ok();
        assert!(
            extra.recv_within(T).await.is_none(),
            "closed without a welcome"
        );
        held.pop();
        server
            .wait_for("a slot free", T, |s| s.connection_count() == 4)
            .await;
        assert_serving(server.addr).await;
        for raw in &mut held {
            raw.ping().await;
        }
        server.stop().await;
    });
}

#[test]
fn slow_consumer_is_disconnected_and_gets_everything_later() {
    run(false, async {
        const BODY: usize = 32 * 1024;
        const MAX: u32 = 300;
        let mut config = ServerConfig::default();
        config.queue_max_messages = MAX;
        config.queue_max_bytes = 64 * 1024 * 1024;
        config.sender_share_percent = 100;
        let mut server_options = ServerOptions::default();
        server_options.queue = QueueLimits::new(16, 256 * 1024);
        let server = TestServer::start_with("127.0.0.1:0", config, memory(), server_options).await;
        register_offline(server.addr, "bob", 1).await;
        // Bob logs in with a small receive buffer and then stops reading.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8 * 1024).unwrap();
        let mut bob = Raw::from_stream(socket.connect(server.addr).await.unwrap());
        bob.send(&hello()).await;
        bob.expect_welcome().await;
        bob.login("bob", &identities()[1]).await;

        let mut alice = Raw::user(server.addr, "alice", 0).await;
        let mut sent = Vec::new();
        while server.handle.stats().await.unwrap().slow_consumers == 0 {
            assert!(sent.len() < MAX as usize, "bob was never dropped");
            let mut batch = Vec::new();
            for _ in 0..10 {
                let n = sent.len() as u32;
                batch.extend(frame(&send_packet(mid(n), "bob", vec![n as u8; BODY])));
                sent.push(mid(n));
            }
            alice.write(&batch).await;
            for _ in 0..10 {
                assert!(
                    alice.expect_send_answer().await.is_ok(),
                    "every send accepted"
                );
            }
        }
        println!(
            "slow consumer dropped after {} messages of {BODY} B",
            sent.len()
        );
        assert!(
            !server
                .handle
                .inspect(|s| s.is_online(&user("bob")))
                .await
                .unwrap()
        );
        // Bob's socket was closed by the server: what it had written before
        // is still in the socket buffers, then the stream ends.
        let mut early = Vec::new();
        let mut codes = Vec::new();
        while let Some(packet) = bob.recv_within(T).await {
            match packet {
                ServerPacket::Message { id, .. } => early.push(id),
                ServerPacket::Error { code, .. } => codes.push(code),
                other => panic!("unexpected {other:?}"),
            }
        }
        println!(
            "the dropped connection had {} messages in flight, error codes {codes:?}, \
             {} B of a cut frame",
            early.len(),
            bob.decoder.buffered_len()
        );
        assert_eq!(early[..], sent[..early.len()], "in order, no gaps");
        assert!(early.len() < sent.len());
        let queued = server
            .handle
            .inspect(|s| s.state().user(&user("bob")).unwrap().mailbox.items.len())
            .await
            .unwrap();
        assert_eq!(queued, sent.len(), "nothing acknowledged, nothing lost");

        // Bob comes back and reads: everything, in order.
        let mut bob = Raw::hello(server.addr).await;
        assert_eq!(bob.login("bob", &identities()[1]).await, sent.len() as u64);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match bob.expect().await {
                ServerPacket::Message { seq, id, from, .. } => {
                    assert_eq!(from, user("alice"));
                    bob.send(&ClientPacket::Ack { seq }).await;
                    got.push(id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, sent);
        server
            .wait_for("bob's mailbox empty", T, |s| {
                s.state()
                    .user(&user("bob"))
                    .is_some_and(|u| u.mailbox.items.is_empty())
            })
            .await;
        alice.ping().await;
        server.stop().await;
    });
}

#[test]
fn byte_quota_and_outstanding_cap_are_enforced() {
    run(false, async {
        let mut config = ServerConfig::default();
        config.queue_max_bytes = 10_000;
        config.sender_share_percent = 50;
        config.max_outstanding_per_sender = 8;
        let server = TestServer::start(config, memory()).await;
        register_offline(server.addr, "bob", 1).await;
        register_offline(server.addr, "carol", 3).await;
        let mut mallory = Raw::user(server.addr, "mallory", 2).await;
        // Byte share: 5,000 bytes of bob's 10,000 for one sender.
        for n in 0..5 {
            mallory
                .send(&send_packet(mid(n), "bob", vec![0; 1000]))
                .await;
            assert_eq!(mallory.expect_send_answer().await, Ok(mid(n)));
        }
        mallory.send(&send_packet(mid(5), "bob", vec![0; 1])).await;
        assert_eq!(
            mallory.expect_send_answer().await,
            Err((ErrorCode::QueueFull, Some(mid(5)), Some(user("bob"))))
        );
        // Outstanding cap: 8 messages queued anywhere (5 for bob so far).
        for n in 10..13 {
            mallory
                .send(&send_packet(mid(n), "carol", vec![0; 10]))
                .await;
            assert_eq!(mallory.expect_send_answer().await, Ok(mid(n)));
        }
        mallory
            .send(&send_packet(mid(13), "carol", vec![0; 10]))
            .await;
        let (code, id, _) = mallory.expect_send_answer().await.unwrap_err();
        assert_eq!((code, id), (ErrorCode::QueueFull, Some(mid(13))));
        assert_eq!(server.queued().await, 8);
        // A retry of an accepted id is accepted again, not queued twice.
        mallory
            .send(&send_packet(mid(0), "bob", vec![0; 1000]))
            .await;
        assert_eq!(mallory.expect_send_answer().await, Ok(mid(0)));
        assert_eq!(server.queued().await, 8);
        // Another sender still reaches bob.
        let mut alice = Raw::user(server.addr, "alice", 0).await;
        alice
            .send(&send_packet(mid(20), "bob", vec![0; 1000]))
            .await;
        assert_eq!(alice.expect_send_answer().await, Ok(mid(20)));
        server.stop().await;
    });
}

#[test]
fn bad_keys_versions_and_nesting_bombs() {
    run(false, async {
        let server = TestServer::start(ServerConfig::default(), memory()).await;
        // No common version: fatal.
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&ClientPacket::Hello {
            versions: vec![3, 999],
        })
        .await;
        assert_eq!(
            raw.closed_with(T).await,
            vec![ErrorCode::UnsupportedVersion]
        );
        // More than 16 versions, hand-encoded: {"hello": {"versions": [1; 17]}}.
        let mut payload = vec![0xa1, 0x65];
        payload.extend_from_slice(b"hello");
        payload.extend([0xa1, 0x68]);
        payload.extend_from_slice(b"versions");
        payload.push(0x91); // array of 17
        payload.extend([1u8; 17]);
        let mut raw = Raw::connect(server.addr).await;
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend(payload);
        raw.write(&bytes).await;
        assert_eq!(raw.closed_with(T).await, vec![ErrorCode::Malformed]);
        // 10,000 nested arrays inside a frame (within the 16 KiB pre-login
        // limit): refused without recursion.
        let mut raw = Raw::hello(server.addr).await;
        let bomb = vec![0x81u8; 10_000];
        let mut bytes = (bomb.len() as u32).to_be_bytes().to_vec();
        bytes.extend(bomb);
        raw.write(&bytes).await;
        assert_eq!(raw.closed_with(T).await, vec![ErrorCode::Malformed]);
        // Keys that are not 2048–4096-bit RSA SPKI: BadKey, not fatal.
        let mut raw = Raw::hello(server.addr).await;
        for key in [vec![0x30, 0x82, 0x01], Vec::new(), vec![0xff; 600]] {
            raw.send(&ClientPacket::Register {
                user: user("mallory"),
                public_key: key,
            })
            .await;
            let (code, _, named) = raw.expect_error().await;
            assert_eq!((code, named), (ErrorCode::BadKey, Some(user("mallory"))));
        }
        raw.ping().await;
        let users = server
            .handle
            .inspect(|s| s.state().user_count())
            .await
            .unwrap();
        assert_eq!(users, 0);
        assert_serving(server.addr).await;
        server.stop().await;
    });
}

#[test]
fn almost_complete_large_frames_are_bounded_and_released() {
    const CONNS: usize = 100;
    run(true, async {
        let mut config = ServerConfig::default();
        config.handshake_timeout = Duration::from_secs(1);
        // Before login, frames are limited to the handshake limit (16 KiB),
        // so a full-size frame is refused at once, without buffering.
        let max_frame = config.handshake_max_frame;
        let full = config.max_frame;
        let server = TestServer::start(config, memory()).await;
        assert_serving(server.addr).await;
        let mut big = Raw::connect(server.addr).await;
        big.write(&full.to_be_bytes()).await;
        assert_eq!(big.closed_with(T).await, vec![ErrorCode::FrameTooLarge]);
        let before = rss_kib();
        // Each connection sends a full-size frame but its last byte.
        let mut bytes = max_frame.to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0x41, max_frame as usize - 1));
        let started = Instant::now();
        let mut held = Vec::new();
        for _ in 0..CONNS {
            let mut raw = Raw::connect(server.addr).await;
            raw.write(&bytes).await;
            held.push(raw);
        }
        let expected = CONNS * max_frame as usize;
        server
            .wait_for("all partial frames buffered", T, move |s| {
                s.buffered_bytes() >= expected - CONNS
            })
            .await;
        let buffered = server.handle.inspect(|s| s.buffered_bytes()).await.unwrap();
        let peak = rss_kib();
        println!(
            "{CONNS} partial frames of {max_frame} B: server buffers {buffered} B, \
             RSS {before} KiB -> {peak} KiB ({:+} KiB)",
            peak as i64 - before as i64
        );
        assert!(
            buffered <= 2 * expected,
            "buffers {buffered} B for {expected} B of partial frames"
        );
        // At the handshake deadline every one is closed and freed.
        for raw in &mut held {
            assert_eq!(raw.closed_with(T).await, vec![ErrorCode::Timeout]);
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        server
            .wait_for("connections gone", T, |s| s.connection_count() == 0)
            .await;
        assert_eq!(
            server.handle.inspect(|s| s.buffered_bytes()).await.unwrap(),
            0
        );
        println!("after the deadline: RSS {} KiB", rss_kib());
        assert_serving(server.addr).await;
        server.stop().await;
    });
}
