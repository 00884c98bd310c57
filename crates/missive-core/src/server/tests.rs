//! Unit tests of the server state machine, driven through its public API
//! with a scripted client and virtual time.

use super::*;
use crate::crypto::{AuthContext, AuthTranscript, ChannelBinding, Identity, TranscriptVersion};
use crate::test_support::identities;
use crate::test_support::test;
use crate::wire::{
    DEFAULT_MAX_FRAME, FrameDecoder, Framing, Link, Notice, decode_packet, encode_frame,
    encode_frame_into, encode_packet_into,
};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const T0_UNIX: UnixMillis = 1_700_000_000_000;

pub(super) fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

/// A server plus everything around it: an in-memory log standing in for
/// the store, per-connection decoders, virtual time.
pub(super) struct Harness {
    pub(super) server: Server,
    pub(super) now: Instant,
    pub(super) log: Vec<(Lsn, PersistCmd)>,
    pub(super) auto_durable: bool,
    decoders: HashMap<ConnId, FrameDecoder>,
    inbox: HashMap<ConnId, VecDeque<ServerPacket>>,
    pub(super) closed: HashSet<ConnId>,
    pub(super) events: Vec<ServerEvent>,
    rng: CoreRng,
    /// Per connection: server id, session id, and the transcript the
    /// version chosen in Welcome signs over the connection's binding.
    welcome: HashMap<ConnId, ([u8; 16], [u8; 16], TranscriptVersion)>,
    bindings: HashMap<ConnId, ChannelBinding>,
    /// Connections on a message transport (the others are byte streams).
    messages: HashSet<ConnId>,
    /// Cluster: forwards asked for, and replies given to other nodes.
    pub(super) forwards: Vec<(
        crate::cluster::ForwardId,
        crate::cluster::Shard,
        crate::cluster::RemoteCall,
    )>,
    pub(super) replies: Vec<(crate::cluster::CallId, crate::cluster::RemoteReply)>,
}

impl Harness {
    pub(super) fn new(config: ServerConfig) -> Self {
        let now = Instant::now();
        Self::with_state(config, ServerState::new(), now)
    }

    pub(super) fn with_state(config: ServerConfig, state: ServerState, now: Instant) -> Self {
        let mut h = Self {
            server: Server::new(config, state, [9; 32], now, T0_UNIX),
            now,
            log: Vec::new(),
            auto_durable: true,
            decoders: HashMap::new(),
            inbox: HashMap::new(),
            closed: HashSet::new(),
            events: Vec::new(),
            rng: rng::from_seed([3; 32]),
            welcome: HashMap::new(),
            bindings: HashMap::new(),
            messages: HashSet::new(),
            forwards: Vec::new(),
            replies: Vec::new(),
        };
        h.drain();
        h
    }

    pub(super) fn drain(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Transmit { conn, bytes } if self.messages.contains(&conn) => {
                    let packet = decode_packet(&bytes).expect("one bare packet per message");
                    self.inbox.entry(conn).or_default().push_back(packet);
                    // As a driver may: later frames reuse the buffer.
                    self.server.recycle_transmit(bytes);
                }
                Output::Transmit { conn, bytes } => {
                    let dec = self
                        .decoders
                        .entry(conn)
                        .or_insert_with(|| FrameDecoder::new(DEFAULT_MAX_FRAME));
                    dec.push(&bytes);
                    while let Some(p) = dec
                        .next_packet::<ServerPacket>()
                        .expect("server frames decode")
                    {
                        self.inbox.entry(conn).or_default().push_back(p);
                    }
                    self.server.recycle_transmit(bytes);
                }
                Output::Close { conn } => {
                    self.closed.insert(conn);
                }
                Output::Persist { lsn, cmd } => {
                    self.log.push((lsn, cmd));
                    if self.auto_durable {
                        self.server.handle_input(self.now, Input::Durable(lsn));
                    }
                }
                Output::Event(e) => self.events.push(e),
                Output::Forward {
                    request,
                    shard,
                    call,
                } => {
                    assert!(
                        self.server.config().cluster.is_some(),
                        "a single server forwards nothing"
                    );
                    self.forwards.push((request, shard, call));
                }
                Output::Reply { call, reply } => {
                    assert!(
                        self.server.config().cluster.is_some(),
                        "a single server replies to no node"
                    );
                    self.replies.push((call, reply));
                }
            }
        }
    }

    pub(super) fn make_durable(&mut self) {
        if let Some((lsn, _)) = self.log.last() {
            let lsn = *lsn;
            self.server.handle_input(self.now, Input::Durable(lsn));
            self.drain();
        }
    }

    pub(super) fn connect(&mut self, conn: u64) -> ConnId {
        self.connect_with(conn, ChannelBinding::None)
    }

    pub(super) fn connect_with(&mut self, conn: u64, binding: ChannelBinding) -> ConnId {
        self.connect_over(conn, Link::stream(binding))
    }

    pub(super) fn connect_over(&mut self, conn: u64, link: Link) -> ConnId {
        let conn = ConnId(conn);
        self.bindings.insert(conn, link.binding);
        if link.framing == Framing::Messages {
            self.messages.insert(conn);
        }
        self.server
            .handle_input(self.now, Input::Connected(conn, link));
        self.drain();
        conn
    }

    pub(super) fn bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        self.server
            .handle_input(self.now, Input::Bytes(conn, bytes));
        self.drain();
    }

    pub(super) fn send(&mut self, conn: ConnId, packet: &ClientPacket) {
        let mut bytes = Vec::new();
        if self.messages.contains(&conn) {
            encode_packet_into(packet, DEFAULT_MAX_FRAME, &mut bytes).unwrap();
        } else {
            encode_frame_into(packet, DEFAULT_MAX_FRAME, &mut bytes).unwrap();
        }
        self.bytes(conn, &bytes);
    }

    pub(super) fn recv(&mut self, conn: ConnId) -> Option<ServerPacket> {
        self.inbox.get_mut(&conn).and_then(|q| q.pop_front())
    }

    pub(super) fn recv_all(&mut self, conn: ConnId) -> Vec<ServerPacket> {
        self.inbox
            .get_mut(&conn)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    pub(super) fn expect(&mut self, conn: ConnId) -> ServerPacket {
        self.recv(conn).expect("a packet from the server")
    }

    pub(super) fn expect_error(&mut self, conn: ConnId, code: ErrorCode) -> ServerPacket {
        let p = self.expect(conn);
        match &p {
            ServerPacket::Error { code: c, .. } if *c == code => p,
            other => panic!("expected error {code:?}, got {other:?}"),
        }
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_input(self.now, Input::Timeout);
        self.drain();
    }

    /// A plaintext connection past Hello, speaking version 2.
    pub(super) fn hello(&mut self, conn: u64) -> ConnId {
        self.hello_with(conn, ChannelBinding::None, &[2, 1])
    }

    /// A connection with `binding` past a Hello offering `versions`.
    pub(super) fn hello_with(
        &mut self,
        conn: u64,
        binding: ChannelBinding,
        versions: &[u16],
    ) -> ConnId {
        self.hello_over(conn, Link::stream(binding), versions)
    }

    /// A connection over `link` past a Hello offering `versions`.
    pub(super) fn hello_over(&mut self, conn: u64, link: Link, versions: &[u16]) -> ConnId {
        let binding = link.binding;
        let conn = self.connect_over(conn, link);
        let versions = versions.to_vec();
        self.send(conn, &ClientPacket::Hello { versions });
        match self.expect(conn) {
            ServerPacket::Welcome {
                version,
                server_id,
                session_id,
                ..
            } => {
                let transcript = match version {
                    2 => TranscriptVersion::V2(binding),
                    1 => TranscriptVersion::V1,
                    other => panic!("unknown version {other}"),
                };
                self.welcome
                    .insert(conn, (server_id, session_id, transcript));
            }
            other => panic!("expected welcome, got {other:?}"),
        }
        conn
    }

    pub(super) fn prove(
        &mut self,
        conn: ConnId,
        context: AuthContext,
        user: &UserName,
        identity: &Identity,
    ) {
        let transcript = self.welcome[&conn].2;
        self.prove_over(conn, context, user, identity, transcript);
    }

    /// Answers the challenge with a signature over `transcript`, which may
    /// differ from the connection's (a relayed login).
    pub(super) fn prove_over(
        &mut self,
        conn: ConnId,
        context: AuthContext,
        user: &UserName,
        identity: &Identity,
        transcript: TranscriptVersion,
    ) {
        let nonce = match self.expect(conn) {
            ServerPacket::Challenge { nonce, .. } => nonce,
            other => panic!("expected challenge, got {other:?}"),
        };
        let (server_id, session_id, _) = self.welcome[&conn];
        let client_nonce = rng::bytes(&mut self.rng);
        let t = AuthTranscript {
            version: transcript,
            context,
            server_id,
            session_id,
            user,
            server_nonce: nonce,
            client_nonce,
        };
        let signature = t.sign(identity, &mut self.rng);
        self.send(
            conn,
            &ClientPacket::Prove {
                client_nonce,
                signature,
            },
        );
    }

    pub(super) fn register(&mut self, conn: ConnId, user: &str, identity: &Identity) {
        let user = name(user);
        let public_key = identity.public_key().to_spki_der().to_vec();
        self.send(
            conn,
            &ClientPacket::Register {
                user: user.clone(),
                public_key,
            },
        );
        self.prove(conn, AuthContext::Register, &user, identity);
    }

    pub(super) fn login(&mut self, conn: ConnId, user: &str, identity: &Identity) {
        let user = name(user);
        self.send(conn, &ClientPacket::Login { user: user.clone() });
        self.prove(conn, AuthContext::Login, &user, identity);
    }

    /// A connection logged in as `user` (registered first if needed).
    pub(super) fn user(&mut self, conn: u64, user: &str, identity: &Identity) -> ConnId {
        let conn = self.hello(conn);
        if self.server.state().user(&name(user)).is_none() {
            self.register(conn, user, identity);
            assert!(matches!(self.expect(conn), ServerPacket::Registered { .. }));
        }
        self.login(conn, user, identity);
        assert!(
            matches!(self.expect(conn), ServerPacket::LoggedIn { .. }),
            "login"
        );
        conn
    }

    pub(super) fn send_msg(&mut self, conn: ConnId, id: u8, to: &str, body: &[u8]) {
        self.send(
            conn,
            &ClientPacket::Send {
                id: MessageId([id; 16]),
                to: name(to),
                envelope: body.to_vec().into(),
            },
        );
    }
}

pub(super) fn ids() -> &'static [Identity; 3] {
    identities()
}

#[test]
fn welcome_announces_version_ids_and_limits() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.connect(1);
    h.send(
        conn,
        &ClientPacket::Hello {
            versions: vec![7, 1],
        },
    );
    match h.expect(conn) {
        ServerPacket::Welcome {
            version,
            server_id,
            ping_interval_ms,
            limits,
            ..
        } => {
            assert_eq!(version, 1);
            assert_eq!(server_id, h.server.server_id());
            assert_eq!(ping_interval_ms, 30_000);
            assert_eq!(limits, ServerConfig::default().wire_limits());
            assert_eq!(limits.handshake_max_frame, Some(16 * 1024));
        }
        other => panic!("{other:?}"),
    }
    // The server id was persisted on first start.
    assert!(matches!(h.log[0].1, PersistCmd::SetServerId { .. }));
}

/// A frame limit below the minimum is raised to it (it used to panic in
/// `Server::new`: the handshake limit was clamped to `[1024, max_frame]`).
#[test]
fn a_tiny_frame_limit_is_raised_to_the_minimum() {
    let mut h = Harness::new(ServerConfig {
        max_frame: 500,
        ..ServerConfig::default()
    });
    let conn = h.connect(1);
    h.send(conn, &ClientPacket::Hello { versions: vec![1] });
    match h.expect(conn) {
        ServerPacket::Welcome { limits, .. } => {
            assert_eq!(limits.max_frame, MIN_MAX_FRAME);
            assert_eq!(limits.handshake_max_frame, Some(MIN_MAX_FRAME));
            assert!(limits.max_envelope < MIN_MAX_FRAME);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsupported_version_is_fatal() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.connect(1);
    h.send(
        conn,
        &ClientPacket::Hello {
            versions: vec![3, 4],
        },
    );
    h.expect_error(conn, ErrorCode::UnsupportedVersion);
    assert!(h.closed.contains(&conn));
    assert!(h.events.iter().any(|e| matches!(
        e,
        ServerEvent::ConnectionClosed {
            reason: CloseReason::Error(ErrorCode::UnsupportedVersion),
            ..
        }
    )));
}

#[test]
fn packet_before_hello_and_hello_twice_are_fatal() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.connect(1);
    h.send(a, &ClientPacket::Ping);
    h.expect_error(a, ErrorCode::UnexpectedPacket);
    assert!(h.closed.contains(&a));
    let b = h.hello(2);
    h.send(b, &ClientPacket::Hello { versions: vec![1] });
    h.expect_error(b, ErrorCode::UnexpectedPacket);
    assert!(h.closed.contains(&b));
}

#[test]
fn garbage_and_oversized_frames_are_fatal_and_others_keep_working() {
    let mut h = Harness::new(ServerConfig::default());
    let good = h.hello(1);
    let a = h.connect(2);
    h.bytes(a, &[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    h.expect_error(a, ErrorCode::Malformed);
    assert!(h.closed.contains(&a));
    let b = h.connect(3);
    h.bytes(b, &[0xff, 0xff, 0xff, 0xff]);
    h.expect_error(b, ErrorCode::FrameTooLarge);
    assert!(h.closed.contains(&b));
    // Bytes for a closed connection are ignored.
    h.bytes(b, &[1, 2, 3]);
    h.send(good, &ClientPacket::Ping);
    assert_eq!(h.expect(good), ServerPacket::Pong);
}

#[test]
fn frames_before_login_are_limited_to_the_handshake_limit() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.hello(1);
    // A 20 KiB frame before login: refused without buffering it.
    h.bytes(a, &(20 * 1024u32).to_be_bytes());
    h.expect_error(a, ErrorCode::FrameTooLarge);
    assert!(h.closed.contains(&a));
    // After login the full limit applies.
    h.user(2, "bob", &ids()[1]);
    let c = h.user(3, "alice", &ids()[0]);
    h.send_msg(c, 1, "bob", &[7; 100 * 1024]);
    assert!(matches!(h.expect(c), ServerPacket::Accepted { .. }));
}

/// Welcome announces the pre-login limit in force (the configured one,
/// clamped to at least 1 KiB), and that is the limit enforced.
#[test]
fn announced_handshake_limit_is_the_one_enforced() {
    let config = ServerConfig {
        handshake_max_frame: 100,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    let conn = h.connect(1);
    h.send(conn, &ClientPacket::Hello { versions: vec![1] });
    let limit = match h.expect(conn) {
        ServerPacket::Welcome { limits, .. } => limits.handshake_max_frame,
        other => panic!("expected welcome, got {other:?}"),
    };
    assert_eq!(limit, Some(1024));
    h.bytes(conn, &1025u32.to_be_bytes());
    h.expect_error(conn, ErrorCode::FrameTooLarge);
    assert!(h.closed.contains(&conn));
}

#[test]
fn registration_is_held_until_durable_and_idempotent() {
    let mut h = Harness::new(ServerConfig::default());
    h.auto_durable = false;
    h.make_durable();
    let conn = h.hello(1);
    h.register(conn, "alice", &ids()[0]);
    assert_eq!(h.recv(conn), None, "Registered must wait for durability");
    assert!(matches!(
        h.log.last().unwrap().1,
        PersistCmd::RegisterUser { .. }
    ));
    h.make_durable();
    assert_eq!(
        h.expect(conn),
        ServerPacket::Registered {
            user: name("alice")
        }
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, ServerEvent::UserRegistered { .. }))
    );
    // Same name, same key: succeeds again without a new command.
    let commands = h.log.len();
    h.register(conn, "alice", &ids()[0]);
    assert_eq!(
        h.expect(conn),
        ServerPacket::Registered {
            user: name("alice")
        }
    );
    assert_eq!(h.log.len(), commands);
}

/// Found by the `server_inputs` fuzz target: registering a name again with
/// the same key, before the first registration is durable, must not answer
/// `Registered` until it is (docs/PROTOCOL.md §4.2, §4.8).
#[test]
fn repeated_registration_waits_for_the_first_to_be_durable() {
    let mut h = Harness::new(ServerConfig::default());
    h.auto_durable = false;
    h.make_durable();
    let first = h.hello(1);
    let second = h.hello(2);
    h.register(first, "alice", &ids()[0]);
    assert_eq!(h.recv(first), None);
    h.register(second, "alice", &ids()[0]);
    assert_eq!(
        h.recv(second),
        None,
        "Registered before the name is durable"
    );
    h.make_durable();
    for conn in [first, second] {
        assert_eq!(
            h.expect(conn),
            ServerPacket::Registered {
                user: name("alice")
            }
        );
    }
    let registrations = h
        .log
        .iter()
        .filter(|(_, c)| matches!(c, PersistCmd::RegisterUser { .. }))
        .count();
    assert_eq!(registrations, 1);
}

/// Found by the `server_inputs` fuzz target: a reply held for durability
/// belongs to its connection; when that connection is gone and the driver
/// reuses its id for a new one, the new connection must not get it.
#[test]
fn held_replies_die_with_their_connection() {
    let mut h = Harness::new(ServerConfig::default());
    let alice = h.user(1, "alice", &ids()[0]);
    h.user(2, "bob", &ids()[1]);
    h.recv_all(alice);
    h.auto_durable = false;
    h.send_msg(alice, 1, "bob", b"held");
    assert_eq!(h.recv(alice), None, "Accepted waits for durability");
    h.input_disconnect(alice);
    let reused = h.connect(1);
    assert_eq!(reused, alice);
    h.make_durable();
    assert_eq!(h.recv(reused), None, "a new connection got an old reply");
    // The same after a server-side close (handshake timeout of a second
    // connection that registers).
    let conn = h.hello(3);
    h.register(conn, "carol", &ids()[2]);
    h.advance(Duration::from_secs(11));
    assert!(h.closed.contains(&conn));
    h.recv_all(conn);
    let reused = h.connect(3);
    h.make_durable();
    assert_eq!(h.recv(reused), None, "a new connection got an old reply");
}

#[test]
fn registration_of_a_taken_name_with_another_key_fails() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(1, "alice", &ids()[0]);
    let conn = h.hello(2);
    let public_key = ids()[1].public_key().to_spki_der().to_vec();
    h.send(
        conn,
        &ClientPacket::Register {
            user: name("alice"),
            public_key,
        },
    );
    match h.expect_error(conn, ErrorCode::NameTaken) {
        ServerPacket::Error { user, .. } => assert_eq!(user, Some(name("alice"))),
        _ => unreachable!(),
    }
    assert!(!h.closed.contains(&conn), "NameTaken is not fatal");
    assert_eq!(
        h.server.state().user(&name("alice")).unwrap().public_key,
        ids()[0].public_key().to_spki_der()
    );
}

#[test]
fn registration_with_a_bad_key_fails() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.hello(1);
    h.send(
        conn,
        &ClientPacket::Register {
            user: name("alice"),
            public_key: vec![1, 2, 3],
        },
    );
    h.expect_error(conn, ErrorCode::BadKey);
}

#[test]
fn registration_proof_must_use_the_offered_key() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.hello(1);
    let public_key = ids()[0].public_key().to_spki_der().to_vec();
    h.send(
        conn,
        &ClientPacket::Register {
            user: name("alice"),
            public_key,
        },
    );
    h.prove(conn, AuthContext::Register, &name("alice"), &ids()[1]);
    h.expect_error(conn, ErrorCode::AuthFailed);
    assert!(h.closed.contains(&conn));
    assert!(h.server.state().user(&name("alice")).is_none());
}

#[test]
fn login_as_another_user_without_their_key_fails() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(1, "alice", &ids()[0]);
    let conn = h.hello(2);
    h.login(conn, "alice", &ids()[1]);
    h.expect_error(conn, ErrorCode::AuthFailed);
    assert!(h.closed.contains(&conn));
}

/// The login path checks the signature in normal builds (only fuzzing
/// builds, `--cfg fuzzing`, accept any): a Prove with a bad signature after
/// a real challenge is fatal and logs nobody in.
#[test]
fn login_with_a_bad_signature_fails_in_normal_builds() {
    const { assert!(!cfg!(fuzzing), "unit tests must not run with --cfg fuzzing") };
    let mut h = Harness::new(ServerConfig::default());
    let alice_conn = h.user(1, "alice", &ids()[0]);
    let conn = h.hello(2);
    h.send(
        conn,
        &ClientPacket::Login {
            user: name("alice"),
        },
    );
    assert!(matches!(h.expect(conn), ServerPacket::Challenge { .. }));
    h.send(
        conn,
        &ClientPacket::Prove {
            client_nonce: [7; 32],
            signature: vec![0x5a; 256],
        },
    );
    h.expect_error(conn, ErrorCode::AuthFailed);
    assert!(h.closed.contains(&conn));
    assert!(h.recv(conn).is_none());
    // Alice's real session is untouched.
    assert!(!h.closed.contains(&alice_conn));
    let logins = h
        .events
        .iter()
        .filter(|e| matches!(e, ServerEvent::LoggedIn { .. }))
        .count();
    assert_eq!(logins, 1);
}

#[test]
fn login_of_unknown_user_and_prove_without_challenge() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.hello(1);
    h.send(
        conn,
        &ClientPacket::Login {
            user: name("nobody"),
        },
    );
    h.expect_error(conn, ErrorCode::UnknownUser);
    h.send(
        conn,
        &ClientPacket::Prove {
            client_nonce: [0; 32],
            signature: vec![0; 256],
        },
    );
    h.expect_error(conn, ErrorCode::NoChallenge);
    assert!(!h.closed.contains(&conn));
    // Each is a login failure for the drivers' counters.
    let failures: Vec<ErrorCode> = h
        .events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::LoginFailed { conn: c, code } if *c == conn => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(failures, [ErrorCode::UnknownUser, ErrorCode::NoChallenge]);
}

#[test]
fn a_login_signature_is_not_a_registration_signature() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(1, "alice", &ids()[0]);
    let conn = h.hello(2);
    h.send(
        conn,
        &ClientPacket::Login {
            user: name("alice"),
        },
    );
    h.prove(conn, AuthContext::Register, &name("alice"), &ids()[0]);
    h.expect_error(conn, ErrorCode::AuthFailed);
}

#[test]
fn replayed_challenge_response_fails_on_a_new_connection() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(1, "alice", &ids()[0]);
    // Record alice's Prove on connection 2, replay it on connection 3.
    let c2 = h.hello(2);
    h.send(
        c2,
        &ClientPacket::Login {
            user: name("alice"),
        },
    );
    let nonce = match h.expect(c2) {
        ServerPacket::Challenge { nonce, .. } => nonce,
        other => panic!("{other:?}"),
    };
    let (server_id, session_id, transcript) = h.welcome[&c2];
    let user = name("alice");
    let t = AuthTranscript {
        version: transcript,
        context: AuthContext::Login,
        server_id,
        session_id,
        user: &user,
        server_nonce: nonce,
        client_nonce: [5; 32],
    };
    let signature = t.sign(&ids()[0], &mut h.rng);
    let c3 = h.hello(3);
    h.send(
        c3,
        &ClientPacket::Login {
            user: name("alice"),
        },
    );
    h.expect(c3);
    h.send(
        c3,
        &ClientPacket::Prove {
            client_nonce: [5; 32],
            signature: signature.clone(),
        },
    );
    h.expect_error(c3, ErrorCode::AuthFailed);
    // The genuine one still works once; a second use finds no challenge.
    h.send(
        c2,
        &ClientPacket::Prove {
            client_nonce: [5; 32],
            signature: signature.clone(),
        },
    );
    assert!(matches!(h.expect(c2), ServerPacket::LoggedIn { .. }));
}

/// A challenge shorter than the handshake deadline expires on its own: the
/// late `prove` gets `NoChallenge`, and the connection may ask again.
#[test]
fn challenge_expires() {
    let config = ServerConfig {
        challenge_ttl: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    h.user(1, "alice", &ids()[0]);
    let conn = h.hello(2);
    let login = ClientPacket::Login {
        user: name("alice"),
    };
    h.send(conn, &login);
    assert!(matches!(
        h.expect(conn),
        ServerPacket::Challenge {
            expires_in_ms: 2_000,
            ..
        }
    ));
    h.advance(Duration::from_secs(2));
    h.send(
        conn,
        &ClientPacket::Prove {
            client_nonce: [0; 32],
            signature: vec![0; 256],
        },
    );
    h.expect_error(conn, ErrorCode::NoChallenge);
    assert!(!h.closed.contains(&conn));
    h.login(conn, "alice", &ids()[0]);
    assert!(matches!(h.expect(conn), ServerPacket::LoggedIn { .. }));
}

/// No challenge outlives the handshake deadline (the connection closes
/// then): it expires at the earlier of `challenge_ttl` and that deadline,
/// and `expires_in_ms` says so.
#[test]
fn challenge_expires_at_the_handshake_deadline_at_the_latest() {
    let config = ServerConfig {
        challenge_ttl: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    h.user(1, "alice", &ids()[0]);
    let conn = h.connect(2);
    h.advance(Duration::from_secs(4));
    h.send(conn, &ClientPacket::Hello { versions: vec![1] });
    assert!(matches!(h.expect(conn), ServerPacket::Welcome { .. }));
    h.send(
        conn,
        &ClientPacket::Login {
            user: name("alice"),
        },
    );
    assert!(matches!(
        h.expect(conn),
        ServerPacket::Challenge {
            expires_in_ms: 6_000,
            ..
        }
    ));
}

#[test]
fn handshake_deadline_closes_idle_unauthenticated_connections() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.hello(1);
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now + Duration::from_secs(10))
    );
    h.advance(Duration::from_secs(9));
    assert!(!h.closed.contains(&conn));
    h.advance(Duration::from_secs(1));
    h.expect_error(conn, ErrorCode::Timeout);
    assert!(h.closed.contains(&conn));
}

#[test]
fn new_login_replaces_the_old_session() {
    let mut h = Harness::new(ServerConfig::default());
    let old = h.user(1, "alice", &ids()[0]);
    let new = h.user(2, "alice", &ids()[0]);
    h.expect_error(old, ErrorCode::SessionReplaced);
    assert!(h.closed.contains(&old));
    assert!(!h.closed.contains(&new));
    assert!(h.server.is_online(&name("alice")));
}

#[test]
fn send_requires_login_and_a_known_recipient() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.hello(1);
    h.send_msg(conn, 1, "bob", b"x");
    match h.expect_error(conn, ErrorCode::NotLoggedIn) {
        ServerPacket::Error { id, .. } => assert_eq!(id, Some(MessageId([1; 16]))),
        _ => unreachable!(),
    }
    let a = h.user(2, "alice", &ids()[0]);
    h.send_msg(a, 2, "bob", b"x");
    h.expect_error(a, ErrorCode::UnknownUser);
    h.send(a, &ClientPacket::Ack { seq: 99 });
    h.expect_error(a, ErrorCode::UnknownSeq);
}

#[test]
fn online_delivery_waits_for_durability_then_ack_sends_delivered_notice() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    let b = h.user(2, "bob", &ids()[1]);
    h.auto_durable = false;
    h.send_msg(a, 7, "bob", b"sealed");
    assert_eq!(h.recv(a), None);
    assert_eq!(h.recv(b), None, "no delivery before durability");
    h.make_durable();
    assert_eq!(
        h.expect(a),
        ServerPacket::Accepted {
            id: MessageId([7; 16])
        }
    );
    let seq = match h.expect(b) {
        ServerPacket::Message {
            seq,
            from,
            id,
            envelope,
        } => {
            assert_eq!(
                (from, id, envelope),
                (name("alice"), MessageId([7; 16]), b"sealed".to_vec())
            );
            seq
        }
        other => panic!("{other:?}"),
    };
    h.send(b, &ClientPacket::Ack { seq });
    assert!(matches!(
        h.log.iter().rev().nth(1).unwrap().1,
        PersistCmd::Ack { .. }
    ));
    h.make_durable();
    match h.expect(a) {
        ServerPacket::Notice { seq, notice } => {
            assert_eq!(
                notice,
                Notice::Delivered {
                    to: name("bob"),
                    id: MessageId([7; 16])
                }
            );
            h.send(a, &ClientPacket::Ack { seq });
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.server.state().queued_items(), 0);
}

#[test]
fn offline_recipient_gets_queued_messages_at_login_in_order() {
    let mut h = Harness::new(ServerConfig::default());
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    for i in 0..5 {
        h.send_msg(a, i, "bob", &[i]);
        assert_eq!(
            h.expect(a),
            ServerPacket::Accepted {
                id: MessageId([i; 16])
            }
        );
    }
    let b = h.user(3, "bob", &ids()[1]);
    let got: Vec<u8> = h
        .recv_all(b)
        .into_iter()
        .map(|p| match p {
            ServerPacket::Message { envelope, .. } => envelope[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[test]
fn unacknowledged_messages_are_redelivered_in_the_next_session() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    let b = h.user(2, "bob", &ids()[1]);
    h.send_msg(a, 1, "bob", b"m");
    assert!(matches!(h.expect(b), ServerPacket::Message { .. }));
    h.input_disconnect(b);
    let b = h.user(3, "bob", &ids()[1]);
    assert!(matches!(h.expect(b), ServerPacket::Message { .. }));
}

#[test]
fn retried_send_is_accepted_again_but_queued_once() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    h.auto_durable = false;
    h.send_msg(a, 1, "bob2", b"m");
    h.expect_error(a, ErrorCode::UnknownUser);
    h.auto_durable = true;
    h.user(2, "bob", &ids()[1]);
    h.auto_durable = false;
    h.send_msg(a, 9, "bob", b"m");
    h.send_msg(a, 9, "bob", b"m");
    assert_eq!(h.recv(a), None);
    h.make_durable();
    assert_eq!(
        h.recv_all(a),
        vec![
            ServerPacket::Accepted {
                id: MessageId([9; 16])
            };
            2
        ]
    );
    h.send_msg(a, 9, "bob", b"m");
    assert_eq!(
        h.expect(a),
        ServerPacket::Accepted {
            id: MessageId([9; 16])
        }
    );
    assert_eq!(h.queued("bob"), 1);
}

/// The ids and envelopes queued for `user`, in order.
fn queued_messages(server: &Server, user: &str) -> Vec<(MessageId, Vec<u8>)> {
    server
        .state()
        .user(&name(user))
        .unwrap()
        .mailbox
        .items
        .values()
        .filter_map(|item| match item {
            MailItem::Message { id, envelope, .. } => Some((*id, envelope.to_vec())),
            MailItem::Notice { .. } => None,
        })
        .collect()
}

/// Asserts `IdReused` naming message `id` on `conn`.
fn expect_id_reused(h: &mut Harness, conn: ConnId, id: u8) {
    match h.expect_error(conn, ErrorCode::IdReused) {
        ServerPacket::Error { id: got, .. } => assert_eq!(got, Some(MessageId([id; 16]))),
        _ => unreachable!(),
    }
}

#[test]
fn an_id_reused_for_another_recipient_is_refused_and_nothing_queued() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(2, "bob", &ids()[1]);
    h.user(3, "carol", &ids()[2]);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 9, "bob", b"m");
    assert_eq!(
        h.expect(a),
        ServerPacket::Accepted {
            id: MessageId([9; 16])
        }
    );
    h.send_msg(a, 9, "carol", b"m");
    expect_id_reused(&mut h, a, 9);
    assert_eq!(h.recv(a), None);
    assert_eq!(h.queued("carol"), 0);
    assert_eq!(
        queued_messages(&h.server, "bob"),
        vec![(MessageId([9; 16]), b"m".to_vec())]
    );
}

#[test]
fn an_id_reused_with_another_envelope_is_refused_even_before_the_first_is_durable() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(2, "bob", &ids()[1]);
    let a = h.user(1, "alice", &ids()[0]);
    h.auto_durable = false;
    h.send_msg(a, 9, "bob", b"first");
    h.send_msg(a, 9, "bob", b"second");
    expect_id_reused(&mut h, a, 9);
    assert_eq!(h.recv(a), None, "the first is not durable yet");
    h.make_durable();
    assert_eq!(
        h.recv_all(a),
        vec![ServerPacket::Accepted {
            id: MessageId([9; 16])
        }]
    );
    assert_eq!(
        queued_messages(&h.server, "bob"),
        vec![(MessageId([9; 16]), b"first".to_vec())]
    );
}

/// After a restart the memory is rebuilt from the queued messages, with
/// their recipients and envelopes: a retry is still accepted without a
/// second copy, any other reuse still refused.
#[test]
fn after_a_restart_retries_and_reuses_are_still_told_apart() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(2, "bob", &ids()[1]);
    h.user(3, "carol", &ids()[2]);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 9, "bob", b"queued");
    h.expect(a);
    let state = ServerState::replay(h.log.iter().map(|(_, c)| c));
    let mut h = Harness::with_state(ServerConfig::default(), state, h.now);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 9, "bob", b"other");
    expect_id_reused(&mut h, a, 9);
    h.send_msg(a, 9, "carol", b"queued");
    expect_id_reused(&mut h, a, 9);
    h.send_msg(a, 9, "bob", b"queued");
    assert_eq!(
        h.expect(a),
        ServerPacket::Accepted {
            id: MessageId([9; 16])
        }
    );
    assert_eq!(h.queued("carol"), 0);
    assert_eq!(
        queued_messages(&h.server, "bob"),
        vec![(MessageId([9; 16]), b"queued".to_vec())]
    );
}

/// With more queued than it remembers, a restarted server remembers each
/// sender's newest messages (those a client may still be retrying), not
/// whichever mailboxes come last.
#[test]
fn after_a_restart_the_newest_queued_ids_are_remembered() {
    let config = ServerConfig {
        dedupe_per_sender: 2,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config.clone());
    h.user(2, "bob", &ids()[1]);
    h.user(3, "carol", &ids()[2]);
    let a = h.user(1, "alice", &ids()[0]);
    for (id, to) in [(1, "carol"), (2, "carol"), (3, "bob")] {
        h.send_msg(a, id, to, b"m");
        h.expect(a);
        h.advance(Duration::from_millis(10));
    }
    let state = ServerState::replay(h.log.iter().map(|(_, c)| c));
    let mut h = Harness::with_state(config, state, h.now);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 3, "bob", b"m");
    assert_eq!(
        h.expect(a),
        ServerPacket::Accepted {
            id: MessageId([3; 16])
        }
    );
    assert_eq!(h.queued("bob"), 1);
}

/// Five messages from alice queued while bob was offline, then bob online
/// with a delivery window of `window`: the harness and bob's connection.
fn backlog_for_bob(window: u32) -> (Harness, ConnId) {
    let config = ServerConfig {
        window,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    let b = h.user(2, "bob", &ids()[1]);
    h.send(b, &ClientPacket::SetPresence { online: false });
    let a = h.user(1, "alice", &ids()[0]);
    for i in 0..5 {
        h.send_msg(a, i, "bob", &[i]);
    }
    h.recv_all(a);
    h.send(b, &ClientPacket::SetPresence { online: true });
    (h, b)
}

#[test]
fn window_limits_deliveries_in_flight() {
    let (mut h, b) = backlog_for_bob(2);
    let first = h.recv_all(b);
    assert_eq!(first.len(), 2);
    let ServerPacket::Message { seq, .. } = first[0] else {
        panic!()
    };
    h.send(b, &ClientPacket::Ack { seq });
    assert_eq!(h.recv_all(b).len(), 1);
}

/// An ack out of order (the middle one of three in flight) frees exactly
/// one slot of the window, and the next item goes out at once (the
/// `server_inputs` fuzz target's harness once counted this as window + 1:
/// fuzz/regressions/server_inputs/ack-frees-window-slot).
#[test]
fn out_of_order_ack_frees_one_window_slot() {
    let (mut h, b) = backlog_for_bob(3);
    let seqs = |packets: Vec<ServerPacket>| -> Vec<u64> {
        packets
            .into_iter()
            .map(|p| match p {
                ServerPacket::Message { seq, .. } => seq,
                other => panic!("expected a message, got {other:?}"),
            })
            .collect()
    };
    let first = seqs(h.recv_all(b));
    assert_eq!(first.len(), 3);
    h.send(b, &ClientPacket::Ack { seq: first[1] });
    let next = seqs(h.recv_all(b));
    assert_eq!(next.len(), 1, "one slot freed");
    assert!(next[0] > first[2], "the next item in order");
    h.send(b, &ClientPacket::Ack { seq: first[0] });
    assert_eq!(seqs(h.recv_all(b)).len(), 1, "and one more");
    assert!(h.recv_all(b).is_empty(), "window full again");
}

#[test]
fn sender_share_and_queue_quota_give_queue_full() {
    let config = ServerConfig {
        queue_max_messages: 4,
        sender_share_percent: 50,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    let b = h.user(3, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    let c = h.user(2, "carol", &ids()[2]);
    for i in 0..3 {
        h.send_msg(a, i, "bob", b"x");
    }
    let replies = h.recv_all(a);
    assert_eq!(replies.len(), 3);
    assert!(matches!(
        replies[2],
        ServerPacket::Error {
            code: ErrorCode::QueueFull,
            id: Some(_),
            ..
        }
    ));
    for i in 10..13 {
        h.send_msg(c, i, "bob", b"x");
    }
    let replies = h.recv_all(c);
    assert!(matches!(
        replies[2],
        ServerPacket::Error {
            code: ErrorCode::QueueFull,
            ..
        }
    ));
    assert_eq!(h.queued("bob"), 4);
}

#[test]
fn byte_quota_and_envelope_limit() {
    let config = ServerConfig {
        queue_max_bytes: 100,
        sender_share_percent: 100,
        max_envelope: 60,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    h.user(2, "bob", &ids()[1]);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 1, "bob", &[0; 61]);
    h.expect_error(a, ErrorCode::EnvelopeTooLarge);
    h.send_msg(a, 2, "bob", &[0; 60]);
    assert!(matches!(h.expect(a), ServerPacket::Accepted { .. }));
    h.send_msg(a, 3, "bob", &[0; 41]);
    h.expect_error(a, ErrorCode::QueueFull);
}

#[test]
fn rate_limit_refuses_then_recovers() {
    let config = ServerConfig {
        send_rate_per_sec: 10,
        send_burst: 3,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    h.user(2, "bob", &ids()[1]);
    let a = h.user(1, "alice", &ids()[0]);
    for i in 0..4 {
        h.send_msg(a, i, "bob", b"x");
    }
    let replies = h.recv_all(a);
    assert!(matches!(
        replies[3],
        ServerPacket::Error {
            code: ErrorCode::RateLimited,
            id: Some(_),
            ..
        }
    ));
    h.now += Duration::from_millis(100);
    h.send_msg(a, 3, "bob", b"x");
    assert!(matches!(h.expect(a), ServerPacket::Accepted { .. }));
}

#[test]
fn a_recycled_transmit_buffer_carries_the_next_frames() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    let held = h.server.buffered_bytes();
    let mut given = Vec::with_capacity(4096);
    given.extend_from_slice(b"stale bytes the server must not send");
    let pointer = given.as_ptr();
    h.server.recycle_transmit(given);
    assert!(h.server.buffered_bytes() >= held + 4096);
    let ping = encode_frame(&ClientPacket::Ping, DEFAULT_MAX_FRAME).unwrap();
    h.server.handle_input(h.now, Input::Bytes(a, &ping));
    let Some(Output::Transmit { conn, bytes }) = h.server.poll_output() else {
        panic!("expected the pong");
    };
    assert_eq!(
        (conn, bytes.as_ptr()),
        (a, pointer),
        "the buffer given back"
    );
    assert_eq!(decode_frames(&bytes), [ServerPacket::Pong]);
}

/// The packets of whole frames.
fn decode_frames(bytes: &[u8]) -> Vec<ServerPacket> {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(bytes);
    std::iter::from_fn(|| decoder.next_packet::<ServerPacket>().unwrap()).collect()
}

#[test]
fn ping_pong_and_missed_pings_go_offline() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    for _ in 0..5 {
        h.advance(Duration::from_secs(30));
        h.send(a, &ClientPacket::Ping);
        assert_eq!(h.expect(a), ServerPacket::Pong);
    }
    assert!(h.server.is_online(&name("alice")));
    h.advance(Duration::from_secs(89));
    assert!(!h.closed.contains(&a));
    h.advance(Duration::from_secs(2));
    h.expect_error(a, ErrorCode::Timeout);
    assert!(h.closed.contains(&a));
    assert!(!h.server.is_online(&name("alice")));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, ServerEvent::PresenceChanged { online: false, .. }))
    );
}

#[test]
fn liveness_shorter_than_the_handshake_deadline_is_enforced() {
    let config = ServerConfig {
        ping_interval: Duration::from_millis(100),
        missed_pings: 2,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    let a = h.user(1, "alice", &ids()[0]);
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now + Duration::from_millis(200))
    );
    h.advance(Duration::from_millis(150));
    h.send(a, &ClientPacket::Ping);
    assert_eq!(h.expect(a), ServerPacket::Pong);
    h.advance(Duration::from_millis(100));
    assert!(!h.closed.contains(&a), "the ping moved the deadline on");
    h.advance(Duration::from_millis(110));
    h.expect_error(a, ErrorCode::Timeout);
    assert!(h.closed.contains(&a));
}

#[test]
fn presence_set_before_login_starts_the_session_offline() {
    let mut h = Harness::new(ServerConfig::default());
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 1, "bob", b"m");
    h.expect(a);
    let b = h.hello(3);
    h.send(b, &ClientPacket::SetPresence { online: false });
    h.login(b, "bob", &ids()[1]);
    assert!(matches!(
        h.expect(b),
        ServerPacket::LoggedIn { queued: 1, .. }
    ));
    assert_eq!(h.recv(b), None, "nothing delivered while offline");
    assert!(!h.server.is_online(&name("bob")));
    h.send(b, &ClientPacket::SetPresence { online: true });
    assert!(matches!(h.expect(b), ServerPacket::Message { .. }));
}

#[test]
fn presence_query_and_explicit_offline() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    let b = h.user(2, "bob", &ids()[1]);
    h.send(a, &ClientPacket::QueryPresence { user: name("bob") });
    assert!(matches!(
        h.expect(a),
        ServerPacket::Presence { online: true, .. }
    ));
    h.send(b, &ClientPacket::SetPresence { online: false });
    h.now += Duration::from_secs(5);
    h.send(a, &ClientPacket::QueryPresence { user: name("bob") });
    assert_eq!(
        h.expect(a),
        ServerPacket::Presence {
            user: name("bob"),
            online: false,
            last_seen_ms: Some(T0_UNIX)
        }
    );
    // Offline: nothing is delivered, but it is queued.
    h.send_msg(a, 1, "bob", b"m");
    assert!(matches!(h.expect(a), ServerPacket::Accepted { .. }));
    assert_eq!(h.recv(b), None);
    h.send(b, &ClientPacket::SetPresence { online: true });
    assert!(matches!(h.expect(b), ServerPacket::Message { .. }));
    h.send(a, &ClientPacket::QueryPresence { user: name("zed") });
    h.expect_error(a, ErrorCode::UnknownUser);
}

#[test]
fn expired_messages_are_removed_and_the_sender_told() {
    let config = ServerConfig {
        message_ttl: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    h.input_disconnect(a);
    let a = h.hello(3);
    h.login(a, "alice", &ids()[0]);
    h.expect(a);
    h.send_msg(a, 1, "bob", b"m");
    h.expect(a);
    h.input_disconnect(a);
    h.advance(Duration::from_secs(3601));
    for _ in 0..2 {
        h.advance(Duration::from_secs(60));
    }
    assert!(
        h.log
            .iter()
            .any(|(_, c)| matches!(c, PersistCmd::Expire { .. }))
    );
    let a = h.user(4, "alice", &ids()[0]);
    match h.expect(a) {
        ServerPacket::Notice { notice, .. } => assert_eq!(
            notice,
            Notice::Expired {
                to: name("bob"),
                id: MessageId([1; 16])
            }
        ),
        other => panic!("{other:?}"),
    }
}

/// Items that expire in the same check are all removed before deliveries
/// resume: an expiry that frees a window slot never sends an item that the
/// same pass is about to expire (found by the `server_inputs` fuzz target:
/// fuzz/regressions/server_inputs/expiry-frees-window-slot).
#[test]
fn expiry_never_delivers_an_item_it_is_about_to_expire() {
    let config = ServerConfig {
        window: 1,
        message_ttl: Duration::from_secs(3600),
        // Bob stays connected across the TTL without pinging.
        ping_interval: Duration::from_secs(7200),
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    let b = h.user(2, "bob", &ids()[1]);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 1, "bob", b"first");
    h.send_msg(a, 2, "bob", b"second");
    h.recv_all(a);
    // Window 1: the first is in flight (never acked), the second waits.
    let first = h.recv_all(b);
    assert_eq!(first.len(), 1);
    assert!(matches!(first[0], ServerPacket::Message { seq: 0, .. }));
    // Both outlive the TTL and expire in one check.
    h.advance(Duration::from_secs(3601));
    h.advance(Duration::from_secs(60));
    let expired = h
        .log
        .iter()
        .filter(|(_, c)| matches!(c, PersistCmd::Expire { .. }))
        .count();
    assert_eq!(expired, 2);
    let after = h.recv_all(b);
    assert!(
        after
            .iter()
            .all(|p| !matches!(p, ServerPacket::Message { .. })),
        "an expired item was delivered: {after:?}"
    );
    assert_eq!(h.queued("bob"), 0);
}

/// A configuration whose only timer within a minute is expiry: a `ttl`
/// TTL, pings and the handshake deadline far away.
fn short_ttl(ttl: Duration) -> ServerConfig {
    ServerConfig {
        message_ttl: ttl,
        ping_interval: Duration::from_secs(3600),
        handshake_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    }
}

impl Harness {
    /// Runs like a driver with no traffic: sleeps until `poll_timeout` and
    /// feeds `Timeout`, until `until` or until `conn` got a packet; returns
    /// that packet with the time it was sent.
    fn run_timers(&mut self, conn: ConnId, until: Instant) -> Option<(Instant, ServerPacket)> {
        loop {
            if let Some(packet) = self.recv(conn) {
                return Some((self.now, packet));
            }
            let at = self.server.poll_timeout().filter(|at| *at <= until)?;
            self.now = self.now.max(at);
            self.server.handle_input(self.now, Input::Timeout);
            self.drain();
        }
    }

    fn expect_notice(&mut self, conn: ConnId) -> Notice {
        match self.expect(conn) {
            ServerPacket::Notice { notice, .. } => notice,
            other => panic!("expected a notice, got {other:?}"),
        }
    }
}

/// Issue #10, defect 3: with a 2 s TTL, a recipient who logs in at 5 s gets
/// nothing and the sender gets `expired`, not `delivered` — even though no
/// timer input came between the deadline and the login.
#[test]
fn nothing_is_delivered_after_its_deadline_even_before_the_timer_fires() {
    let mut h = Harness::new(short_ttl(Duration::from_secs(2)));
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 1, "bob", b"too late");
    assert!(matches!(h.expect(a), ServerPacket::Accepted { .. }));
    h.now += Duration::from_secs(5);
    let b = h.user(3, "bob", &ids()[1]);
    let got = h.recv_all(b);
    assert!(
        got.iter()
            .all(|p| !matches!(p, ServerPacket::Message { .. })),
        "delivered after the deadline: {got:?}"
    );
    assert_eq!(
        h.expect_notice(a),
        Notice::Expired {
            to: name("bob"),
            id: MessageId([1; 16])
        }
    );
    assert_eq!(h.recv(a), None, "no delivered notice");
}

/// Issue #10, defect 3: `poll_timeout` is the deadline itself, and a server
/// driven by nothing but its timer sends `expired` at the deadline (the
/// periodic check sent it up to a minute late).
#[test]
fn the_timer_expires_an_item_at_its_deadline() {
    let ttl = Duration::from_secs(3);
    let mut h = Harness::new(short_ttl(ttl));
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    h.now += Duration::from_millis(1_234);
    let sent_at = h.now;
    h.send_msg(a, 1, "bob", b"m");
    h.expect(a);
    assert_eq!(h.server.poll_timeout(), Some(sent_at + ttl));
    // A timer that fires early changes nothing.
    h.advance(ttl - Duration::from_millis(1));
    assert_eq!(h.queued("bob"), 1);
    assert_eq!(h.recv(a), None);
    let (at, packet) = h
        .run_timers(a, sent_at + ttl + Duration::from_secs(1))
        .expect("expired within 1 s of the deadline");
    assert_eq!(at, sent_at + ttl);
    assert!(matches!(
        packet,
        ServerPacket::Notice {
            notice: Notice::Expired { .. },
            ..
        }
    ));
    assert_eq!(h.queued("bob"), 0);
}

/// Deadlines come from each item's own enqueue time, not from its place in
/// the mailbox: after a restart whose wall clock had gone back, a later
/// item can expire first, and items due during the downtime expire at once.
#[test]
fn restart_schedules_every_stored_deadline_whatever_the_order() {
    let ttl = Duration::from_secs(60);
    let key = |i: usize| ids()[i].public_key().to_spki_der().to_vec();
    let enqueue = |seq, id: u8, enqueued_at| PersistCmd::Enqueue {
        user: name("bob"),
        seq,
        item: MailItem::Message {
            from: name("alice"),
            id: MessageId([id; 16]),
            envelope: vec![id].into(),
            enqueued_at,
        },
    };
    let state = ServerState::replay(&[
        PersistCmd::SetServerId { server_id: [1; 16] },
        PersistCmd::RegisterUser {
            user: name("alice"),
            public_key: key(0),
        },
        PersistCmd::RegisterUser {
            user: name("bob"),
            public_key: key(1),
        },
        enqueue(0, 1, T0_UNIX + 30_000),
        enqueue(1, 2, T0_UNIX - 120_000),
        enqueue(2, 3, T0_UNIX + 10_000),
    ]);
    let mut h = Harness::with_state(short_ttl(ttl), state, Instant::now());
    let start = h.now;
    // Seq 1 was due during the downtime.
    assert_eq!(h.server.poll_timeout(), Some(start));
    let expired_for_bob = |h: &Harness| -> Vec<Seq> {
        h.log
            .iter()
            .filter_map(|(_, c)| match c {
                PersistCmd::Expire { user, seq } if *user == name("bob") => Some(*seq),
                _ => None,
            })
            .collect()
    };
    h.advance(Duration::ZERO);
    assert_eq!(expired_for_bob(&h), vec![1]);
    let ms = Duration::from_millis(1);
    h.advance(Duration::from_secs(70) - ms);
    assert_eq!(expired_for_bob(&h), vec![1]);
    h.advance(ms);
    assert_eq!(expired_for_bob(&h), vec![1, 2]);
    h.advance(Duration::from_secs(20) - ms);
    assert_eq!(expired_for_bob(&h), vec![1, 2]);
    h.advance(ms);
    assert_eq!(expired_for_bob(&h), vec![1, 2, 0]);
    assert_eq!(h.queued("bob"), 0);
}

/// Issue #10, defect 4: an item stored under a larger `max_frame` than the
/// one in force after a restart does not fit in a frame. It is expired
/// (its sender gets `expired`, the operator an event) instead of holding a
/// window slot until its TTL, and the items behind it flow.
#[test]
fn an_item_too_large_for_the_current_frame_limit_is_expired_not_stuck() {
    let mut h = Harness::new(ServerConfig::default());
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(b);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 1, "bob", &[7; 100 * 1024]);
    h.send_msg(a, 2, "bob", b"small");
    h.send_msg(a, 3, "bob", b"small too");
    assert_eq!(h.recv_all(a).len(), 3);
    let state = ServerState::replay(h.log.iter().map(|(_, c)| c));
    let smaller = ServerConfig {
        max_frame: 64 * 1024,
        max_envelope: 63 * 1024,
        window: 1,
        ..ServerConfig::default()
    };
    let mut h = Harness::with_state(smaller, state, h.now);
    let b = h.user(2, "bob", &ids()[1]);
    match h.recv_all(b).as_slice() {
        [ServerPacket::Message { seq: 1, .. }] => {}
        other => panic!("expected the second message, got {other:?}"),
    }
    assert!(h.events.iter().any(|e| matches!(
        e,
        ServerEvent::Undeliverable { user, seq: 0, error: crate::wire::EncodeError::TooLarge { .. } }
            if *user == name("bob")
    )));
    h.send(b, &ClientPacket::Ack { seq: 1 });
    match h.recv_all(b).as_slice() {
        [ServerPacket::Message { seq: 2, .. }] => {}
        other => panic!("expected the third message, got {other:?}"),
    }
    let a = h.user(1, "alice", &ids()[0]);
    assert_eq!(
        h.expect_notice(a),
        Notice::Expired {
            to: name("bob"),
            id: MessageId([1; 16])
        }
    );
    h.send(a, &ClientPacket::Ack { seq: 0 });
    assert_eq!(
        h.expect_notice(a),
        Notice::Delivered {
            to: name("bob"),
            id: MessageId([2; 16])
        }
    );
}

/// A reply that does not fit in `max_frame` is not sent, and the operator
/// hears of it (replies are far smaller than any accepted `max_frame`, so
/// only a server bug gets here; before, the failure was ignored).
#[test]
fn a_reply_too_large_to_encode_is_reported_not_ignored() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.hello(1);
    let detail = "x".repeat(DEFAULT_MAX_FRAME as usize);
    h.server.send_error(a, ErrorCode::Busy, None, None, &detail);
    h.drain();
    assert_eq!(h.recv(a), None);
    assert!(h.events.iter().any(|e| matches!(
        e,
        ServerEvent::ReplyNotSent { conn, error: crate::wire::EncodeError::TooLarge { .. } }
            if *conn == a
    )));
    // The connection still works.
    h.send(a, &ClientPacket::Ping);
    assert_eq!(h.expect(a), ServerPacket::Pong);
}

#[test]
fn replaying_the_emitted_commands_rebuilds_the_same_state() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    let b = h.user(2, "bob", &ids()[1]);
    for i in 0..10 {
        h.send_msg(a, i, "bob", &[i; 10]);
    }
    for p in h.recv_all(b) {
        if let ServerPacket::Message { seq, .. } = p
            && seq % 2 == 0
        {
            h.send(b, &ClientPacket::Ack { seq });
        }
    }
    let replayed = ServerState::replay(h.log.iter().map(|(_, c)| c));
    assert_eq!(&replayed, h.server.state());
    let from_snapshot = ServerState::replay(&h.server.state().snapshot());
    assert_eq!(&from_snapshot, h.server.state());
    // LSNs are strictly increasing.
    assert!(h.log.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn restart_keeps_keys_and_queued_messages() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(2, "bob", &ids()[1]);
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 1, "bob", b"queued");
    h.expect(a);
    let server_id = h.server.server_id();
    let state = ServerState::replay(h.log.iter().map(|(_, c)| c));
    let mut h2 = Harness::with_state(ServerConfig::default(), state, h.now);
    assert_eq!(h2.server.server_id(), server_id);
    assert!(h2.log.is_empty(), "no new server id on restart");
    let a = h2.user(1, "alice", &ids()[0]);
    // A retry after restart is recognised as the same message.
    h2.send_msg(a, 1, "bob", b"queued");
    assert_eq!(
        h2.expect(a),
        ServerPacket::Accepted {
            id: MessageId([1; 16])
        }
    );
    let b = h2.user(2, "bob", &ids()[1]);
    let msgs = h2.recv_all(b);
    assert_eq!(msgs.len(), 1);
}

#[test]
fn several_inputs_before_a_drain_are_safe() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = ConnId(1);
    h.server
        .handle_input(h.now, Input::Connected(conn, Link::PLAINTEXT));
    let hello = encode_frame(
        &ClientPacket::Hello { versions: vec![1] },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let ping = encode_frame(&ClientPacket::Ping, DEFAULT_MAX_FRAME).unwrap();
    h.server.handle_input(h.now, Input::Bytes(conn, &hello));
    h.server.handle_input(h.now, Input::Bytes(conn, &ping));
    h.server.handle_input(h.now, Input::Bytes(conn, &ping));
    h.drain();
    let got = h.recv_all(conn);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], ServerPacket::Pong);
}

#[test]
fn shutdown_closes_everyone() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.hello(1);
    let b = h.user(2, "bob", &ids()[1]);
    h.server.shutdown(h.now);
    h.drain();
    h.expect_error(a, ErrorCode::ShuttingDown);
    h.expect_error(b, ErrorCode::ShuttingDown);
    assert_eq!(h.server.connection_count(), 0);
}

/// `prove` after login is answered like `register` and `login` after
/// login; the connection stays open.
#[test]
fn prove_after_login_is_already_authenticated() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    h.send(
        a,
        &ClientPacket::Prove {
            client_nonce: [0; 32],
            signature: vec![0; 256],
        },
    );
    h.expect_error(a, ErrorCode::AlreadyAuthenticated);
    h.send(a, &ClientPacket::Ping);
    assert_eq!(h.expect(a), ServerPacket::Pong);
}

/// A `hello` listing no version has no version in common with the server.
#[test]
fn hello_without_versions_is_unsupported() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.connect(1);
    h.send(conn, &ClientPacket::Hello { versions: vec![] });
    h.expect_error(conn, ErrorCode::UnsupportedVersion);
    assert!(h.closed.contains(&conn));
}

/// For a user online now, `last_seen_ms` is the server's current time.
#[test]
fn presence_of_an_online_user_is_seen_now() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    h.user(2, "bob", &ids()[1]);
    h.advance(Duration::from_secs(7));
    h.send(a, &ClientPacket::QueryPresence { user: name("bob") });
    assert_eq!(
        h.expect(a),
        ServerPacket::Presence {
            user: name("bob"),
            online: true,
            last_seen_ms: Some(T0_UNIX + 7_000),
        }
    );
}

/// A well-formed packet naming an invalid user is fatal `Malformed`, in
/// every packet kind with a user field.
#[test]
fn invalid_user_names_are_malformed_in_every_packet() {
    /// The client packets with a user field, with plain text for it.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum AnyName {
        Register {
            user: String,
            #[serde(with = "serde_bytes")]
            public_key: Vec<u8>,
        },
        Login {
            user: String,
        },
        FetchKey {
            user: String,
        },
        Send {
            id: MessageId,
            to: String,
            #[serde(with = "serde_bytes")]
            envelope: Vec<u8>,
        },
        QueryPresence {
            user: String,
        },
    }
    let packets = |bad: &str| {
        let user = bad.to_owned();
        [
            AnyName::Register {
                user: user.clone(),
                public_key: ids()[0].public_key().to_spki_der().to_vec(),
            },
            AnyName::Login { user: user.clone() },
            AnyName::FetchKey { user: user.clone() },
            AnyName::Send {
                id: MessageId([1; 16]),
                to: user.clone(),
                envelope: vec![1],
            },
            AnyName::QueryPresence { user },
        ]
    };
    let mut h = Harness::new(ServerConfig::default());
    let mut conn = 0;
    for bad in ["", "Bob", "a b", "ali\u{e7}e", &"a".repeat(33)] {
        for packet in packets(bad) {
            conn += 1;
            let c = h.user(conn, "alice", &ids()[0]);
            h.bytes(c, &encode_frame(&packet, DEFAULT_MAX_FRAME).unwrap());
            h.expect_error(c, ErrorCode::Malformed);
            assert!(h.closed.contains(&c), "{bad:?}");
        }
    }
}

/// Sending to yourself is allowed: the message lands in your own mailbox,
/// and acknowledging it queues the `delivered` notice there too.
#[test]
fn sending_to_yourself() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    h.send_msg(a, 1, "alice", b"note to self");
    assert_eq!(
        h.expect(a),
        ServerPacket::Accepted {
            id: MessageId([1; 16])
        }
    );
    assert_eq!(
        h.expect(a),
        ServerPacket::Message {
            seq: 0,
            from: name("alice"),
            id: MessageId([1; 16]),
            envelope: b"note to self".to_vec(),
        }
    );
    h.send(a, &ClientPacket::Ack { seq: 0 });
    assert_eq!(
        h.expect(a),
        ServerPacket::Notice {
            seq: 1,
            notice: Notice::Delivered {
                to: name("alice"),
                id: MessageId([1; 16])
            }
        }
    );
    h.send(a, &ClientPacket::Ack { seq: 1 });
    assert_eq!(h.recv(a), None);
    let alice = h.server.state().user(&name("alice")).unwrap();
    assert_eq!((alice.mailbox.items.len(), alice.outstanding), (0, 0));
}

/// A mailbox's first item is `seq` 0, every new item takes the next number,
/// and no number comes back: not after acks, not after a restart from a
/// snapshot of the emptied mailbox.
#[test]
fn mailbox_seq_starts_at_zero_and_is_never_reused() {
    let mut h = Harness::new(ServerConfig::default());
    let b = h.user(2, "bob", &ids()[1]);
    let a = h.user(1, "alice", &ids()[0]);
    for id in 0..2 {
        h.send_msg(a, id, "bob", b"m");
        h.expect(a);
    }
    let seqs: Vec<Seq> = h
        .recv_all(b)
        .into_iter()
        .map(|p| match p {
            ServerPacket::Message { seq, .. } => seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, [0, 1]);
    for seq in seqs {
        h.send(b, &ClientPacket::Ack { seq });
    }
    let state = ServerState::replay(&h.server.state().snapshot());
    let mut h = Harness::with_state(ServerConfig::default(), state, h.now);
    let b = h.user(3, "bob", &ids()[1]);
    let a = h.user(4, "alice", &ids()[0]);
    h.send_msg(a, 2, "bob", b"m");
    h.expect(a);
    assert!(matches!(h.expect(b), ServerPacket::Message { seq: 2, .. }));
}

impl Harness {
    /// Messages queued for `user`.
    pub(super) fn queued(&self, user: &str) -> u32 {
        self.server
            .state()
            .user(&name(user))
            .map_or(0, |r| r.mailbox.message_count)
    }

    pub(super) fn input_disconnect(&mut self, conn: ConnId) {
        self.server
            .handle_input(self.now, Input::Disconnected(conn));
        self.drain();
    }
}

#[cfg(not(target_family = "wasm"))]
mod model {
    //! State-machine invariants against a simple model: random sequences of
    //! sends, acks, presence changes, reconnects, durability reports and
    //! an operator's removals (the name then registered again).

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Send { from: usize, to: usize },
        AckFirst { user: usize },
        Presence { user: usize, online: bool },
        Reconnect { user: usize },
        Durable,
        RemoveAndRegisterAgain { user: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Send { from, to }),
            3 => (0..3usize).prop_map(|user| Op::AckFirst { user }),
            1 => (0..3usize, any::<bool>()).prop_map(|(user, online)| Op::Presence { user, online }),
            1 => (0..3usize).prop_map(|user| Op::Reconnect { user }),
            2 => Just(Op::Durable),
            1 => (0..3usize).prop_map(|user| Op::RemoveAndRegisterAgain { user }),
        ]
    }

    const NAMES: [&str; 3] = ["ann", "ben", "cat"];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn queues_match_a_model_and_limits_hold(ops in proptest::collection::vec(op(), 1..60)) {
            let config = ServerConfig { window: 3, queue_max_messages: 6, sender_share_percent: 50, ..ServerConfig::default() };
            let mut h = Harness::new(config.clone());
            let mut conns: Vec<ConnId> = (0..3).map(|i| h.user(i as u64 + 1, NAMES[i], &ids()[i])).collect();
            h.auto_durable = false;
            let mut next_conn = 10;
            let mut next_id = 0u8;
            // Model: per recipient, the ids queued in order.
            let mut model: Vec<Vec<MessageId>> = vec![Vec::new(); 3];
            // Per user, what arrived on the current connection (seq, id).
            let mut received: Vec<VecDeque<(Seq, Option<MessageId>)>> = vec![VecDeque::new(); 3];
            for op in ops {
                match op {
                    Op::Send { from, to } => {
                        next_id = next_id.wrapping_add(1);
                        let id = MessageId([next_id; 16]);
                        let queued_from_sender = h.server.state().user(&name(NAMES[to])).unwrap()
                            .mailbox.per_sender.get(&name(NAMES[from])).map_or(0, |u| u.messages);
                        let fits = model[to].len() < 6 && queued_from_sender < 3;
                        h.send(conns[from], &ClientPacket::Send { id, to: name(NAMES[to]), envelope: vec![next_id].into() });
                        if fits {
                            model[to].push(id);
                        } else {
                            let reply = h.expect(conns[from]);
                            prop_assert!(matches!(reply, ServerPacket::Error { code: ErrorCode::QueueFull, .. }), "{reply:?}");
                        }
                    }
                    Op::AckFirst { user } => {
                        if let Some((seq, id)) = received[user].pop_front() {
                            h.send(conns[user], &ClientPacket::Ack { seq });
                            if let Some(id) = id {
                                let pos = model[user].iter().position(|m| *m == id).expect("acked message is queued");
                                model[user].remove(pos);
                            }
                        }
                    }
                    Op::Presence { user, online } => h.send(conns[user], &ClientPacket::SetPresence { online }),
                    Op::Reconnect { user } => {
                        h.input_disconnect(conns[user]);
                        h.auto_durable = true;
                        conns[user] = h.user(next_conn, NAMES[user], &ids()[user]);
                        h.auto_durable = false;
                        next_conn += 1;
                        received[user].clear();
                    }
                    Op::Durable => h.make_durable(),
                    Op::RemoveAndRegisterAgain { user } => {
                        h.server.handle_input(h.now, Input::RemoveUser(&name(NAMES[user])));
                        h.drain();
                        prop_assert!(h.closed.contains(&conns[user]));
                        h.auto_durable = true;
                        conns[user] = h.user(next_conn, NAMES[user], &ids()[user]);
                        h.auto_durable = false;
                        next_conn += 1;
                        model[user].clear();
                        received[user].clear();
                    }
                }
                // Collect what each connection got.
                for user in 0..3 {
                    for p in h.recv_all(conns[user]) {
                        match p {
                            ServerPacket::Message { seq, id, from, .. } => {
                                prop_assert!(NAMES.contains(&from.as_str()));
                                received[user].push_back((seq, Some(id)));
                            }
                            ServerPacket::Notice { seq, .. } => received[user].push_back((seq, None)),
                            ServerPacket::Accepted { .. } | ServerPacket::LoggedIn { .. } => {}
                            other => prop_assert!(false, "unexpected {other:?}"),
                        }
                    }
                    // Invariants: window respected, deliveries in mailbox order.
                    prop_assert!(received[user].len() <= 3);
                    let seqs: Vec<Seq> = received[user].iter().map(|(s, _)| *s).collect();
                    prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]));
                }
                // The server's mailboxes hold exactly the model's messages, in order.
                for (i, expected) in model.iter().enumerate() {
                    let mailbox = &h.server.state().user(&name(NAMES[i])).unwrap().mailbox;
                    let queued: Vec<MessageId> = mailbox.items.values().filter_map(|item| match item {
                        MailItem::Message { id, .. } => Some(*id),
                        MailItem::Notice { .. } => None,
                    }).collect();
                    prop_assert_eq!(&queued, expected);
                    prop_assert!(mailbox.message_count <= 6);
                }
            }
            // Replaying the log always rebuilds the state.
            let replayed = ServerState::replay(h.log.iter().map(|(_, c)| c));
            prop_assert_eq!(&replayed, h.server.state());
        }
    }
}

/// The keys of peer-keyed maps come from the driver's seed: the same seed
/// gives the same hashes, another seed other hashes, and the key never
/// shows in debug output.
#[test]
fn peer_key_hashing_is_keyed_from_the_seed() {
    use std::hash::BuildHasher;
    let server = |seed: u8| {
        Server::new(
            ServerConfig::default(),
            ServerState::new(),
            [seed; 32],
            Instant::now(),
            0,
        )
    };
    let (a, b, c) = (server(1), server(1), server(2));
    let name = UserName::new("alice").unwrap();
    assert_eq!(a.hasher.hash_one(&name), b.hasher.hash_one(&name));
    assert_ne!(a.hasher.hash_one(&name), c.hasher.hash_one(&name));
    assert_eq!(format!("{:?}", a.hasher), "PeerKeyHasher(..)");
}

/// The exporter values two different TLS connections would have: the
/// victim's connection to a relay, and the relay's own to the server.
const BINDING_A: ChannelBinding = ChannelBinding::TlsExporter([0x66; 32]);
const BINDING_B: ChannelBinding = ChannelBinding::TlsExporter([0x77; 32]);

/// A login signed over the connection's own binding succeeds.
#[test]
fn login_bound_to_the_connections_exporter_succeeds() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(1, "alice", &ids()[0]);
    let conn = h.hello_with(2, BINDING_A, &[2]);
    assert_eq!(h.welcome[&conn].2, TranscriptVersion::V2(BINDING_A));
    h.login(conn, "alice", &ids()[0]);
    assert!(matches!(h.expect(conn), ServerPacket::LoggedIn { .. }));
}

/// The man-in-the-middle case: the victim signs over its connection's
/// binding A (to the relay), the relay forwards the Prove on its own
/// connection to the server, whose exporter value is B. The server checks
/// its own value, so the signature does not verify.
#[test]
fn login_relayed_onto_a_connection_with_another_binding_fails() {
    let mut h = Harness::new(ServerConfig::default());
    h.user(1, "alice", &ids()[0]);
    let relayed = h.hello_with(2, BINDING_B, &[2]);
    let alice = name("alice");
    h.send(
        relayed,
        &ClientPacket::Login {
            user: alice.clone(),
        },
    );
    let victims = TranscriptVersion::V2(BINDING_A);
    h.prove_over(relayed, AuthContext::Login, &alice, &ids()[0], victims);
    h.expect_error(relayed, ErrorCode::AuthFailed);
    assert!(h.closed.contains(&relayed));
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, ServerEvent::LoggedIn { conn, .. } if *conn == relayed))
    );
    // A registration is bound the same way (here: signed as if plaintext).
    let conn = h.hello_with(3, BINDING_B, &[2]);
    let key = ids()[1].public_key().to_spki_der().to_vec();
    let bob = name("bob");
    h.send(
        conn,
        &ClientPacket::Register {
            user: bob.clone(),
            public_key: key,
        },
    );
    let plaintext = TranscriptVersion::V2(ChannelBinding::None);
    h.prove_over(conn, AuthContext::Register, &bob, &ids()[1], plaintext);
    h.expect_error(conn, ErrorCode::AuthFailed);
    assert!(h.server.state().user(&bob).is_none());
}

/// On a TLS connection a v1 login (which signs no binding) could be
/// relayed: a Hello offering only version 1 is refused there.
#[test]
fn version_1_is_refused_on_a_tls_connection() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.connect_with(1, BINDING_A);
    h.send(conn, &ClientPacket::Hello { versions: vec![1] });
    h.expect_error(conn, ErrorCode::UnsupportedVersion);
    assert!(h.closed.contains(&conn));
    // Offering both, the TLS connection gets version 2.
    let conn = h.hello_with(2, BINDING_A, &[1, 2]);
    assert_eq!(h.welcome[&conn].2, TranscriptVersion::V2(BINDING_A));
}

/// A plaintext v1 client still registers and logs in with the v1
/// transcript; a v2 client on plaintext signs binding `none`.
#[test]
fn version_1_still_works_on_a_plaintext_connection() {
    let mut h = Harness::new(ServerConfig::default());
    let v1 = h.hello_with(1, ChannelBinding::None, &[1]);
    assert_eq!(h.welcome[&v1].2, TranscriptVersion::V1);
    h.register(v1, "alice", &ids()[0]);
    assert!(matches!(h.expect(v1), ServerPacket::Registered { .. }));
    h.login(v1, "alice", &ids()[0]);
    assert!(matches!(h.expect(v1), ServerPacket::LoggedIn { .. }));
    let v2 = h.hello(2);
    assert_eq!(
        h.welcome[&v2].2,
        TranscriptVersion::V2(ChannelBinding::None)
    );
    h.login(v2, "alice", &ids()[0]);
    assert!(matches!(h.expect(v2), ServerPacket::LoggedIn { .. }));
}

/// A server configured to require channel binding refuses `none`
/// connections at Hello, whatever versions they offer, and still serves
/// TLS ones.
#[test]
fn binding_none_is_refused_when_channel_binding_is_required() {
    let mut h = Harness::new(ServerConfig {
        require_channel_binding: true,
        ..ServerConfig::default()
    });
    for (conn, versions) in [(1, vec![2, 1]), (2, vec![2]), (3, vec![1])] {
        let conn = h.connect(conn);
        h.send(conn, &ClientPacket::Hello { versions });
        h.expect_error(conn, ErrorCode::UnsupportedVersion);
        assert!(h.closed.contains(&conn));
    }
    let conn = h.hello_with(4, BINDING_A, &[2]);
    h.register(conn, "alice", &ids()[0]);
    assert!(matches!(h.expect(conn), ServerPacket::Registered { .. }));
}

/// On a message transport every received message is one packet and every
/// packet goes out as a Transmit of its own, without a length prefix; a
/// byte-stream peer and a message peer talk to each other.
#[test]
fn a_message_transport_carries_one_bare_packet_per_message() {
    let mut h = Harness::new(ServerConfig::default());
    let alice = h.hello_over(1, Link::messages(ChannelBinding::None), &[2, 1]);
    h.register(alice, "alice", &ids()[0]);
    assert!(matches!(h.expect(alice), ServerPacket::Registered { .. }));
    h.login(alice, "alice", &ids()[0]);
    assert!(matches!(h.expect(alice), ServerPacket::LoggedIn { .. }));
    let bob = h.user(2, "bob", &ids()[1]);
    // Two answers queued before the outputs are polled: two Transmits,
    // each exactly the bare packet.
    for _ in 0..2 {
        h.server
            .handle_input(h.now, Input::Bytes(alice, b"\x64ping"));
    }
    let transmits: Vec<Vec<u8>> = std::iter::from_fn(|| h.server.poll_output())
        .filter_map(|out| match out {
            Output::Transmit { conn, bytes } if conn == alice => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(transmits, [b"\x64pong".to_vec(), b"\x64pong".to_vec()]);
    // A message from the byte-stream peer arrives as one message.
    h.send_msg(bob, 1, "alice", b"sealed");
    assert!(matches!(h.expect(bob), ServerPacket::Accepted { .. }));
    assert!(
        matches!(h.expect(alice), ServerPacket::Message { envelope, .. } if envelope == b"sealed")
    );
}

/// A message is checked against the frame limit as a whole: one byte over
/// the handshake limit is FrameTooLarge, fatal.
#[test]
fn a_message_over_the_frame_limit_is_fatal() {
    let config = ServerConfig::default();
    let limit = config.handshake_max_frame as usize;
    let mut h = Harness::new(config);
    let conn = h.connect_over(1, Link::messages(ChannelBinding::None));
    h.bytes(conn, &vec![0x40; limit + 1]);
    h.expect_error(conn, ErrorCode::FrameTooLarge);
    assert!(h.closed.contains(&conn));
}

/// A length-prefixed frame sent as a message is not a packet: Malformed.
#[test]
fn a_frame_on_a_message_transport_is_malformed() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.connect_over(1, Link::messages(ChannelBinding::None));
    let frame = encode_frame(
        &ClientPacket::Hello { versions: vec![2] },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    h.bytes(conn, &frame);
    h.expect_error(conn, ErrorCode::Malformed);
    assert!(h.closed.contains(&conn));
}

/// An operator removes a user: its session closes, its mailbox goes, the
/// command is persisted and the answer waits for durability; its message
/// queued elsewhere stays; the name can be registered again (another key,
/// a fresh mailbox) and replaying the log rebuilds the same state.
#[test]
fn an_operator_removes_a_user_and_the_name_is_free_again() {
    let mut h = Harness::new(ServerConfig::default());
    let a = h.user(1, "alice", &ids()[0]);
    let b = h.user(2, "bob", &ids()[1]);
    h.input_disconnect(a);
    h.send_msg(b, 1, "alice", b"to alice");
    h.expect(b);
    let a = h.user(3, "alice", &ids()[0]);
    h.recv_all(a);
    h.send_msg(a, 2, "bob", b"to bob");
    h.expect(a);
    h.recv_all(b);
    h.send_msg(b, 3, "alice", b"again");
    h.expect(b);
    h.recv_all(a);
    assert_eq!(h.server.state().user(&name("bob")).unwrap().outstanding, 2);

    h.auto_durable = false;
    h.events.clear();
    h.server
        .handle_input(h.now, Input::RemoveUser(&name("alice")));
    h.drain();
    match h.expect_error(a, ErrorCode::UnknownUser) {
        ServerPacket::Error { user, .. } => assert_eq!(user, Some(name("alice"))),
        _ => unreachable!(),
    }
    assert!(h.closed.contains(&a));
    assert_eq!(
        h.log.last().unwrap().1,
        PersistCmd::RemoveUser {
            user: name("alice")
        }
    );
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, ServerEvent::UserRemoved { .. })),
        "answered only once durable"
    );
    h.make_durable();
    h.auto_durable = true;
    assert!(h.events.contains(&ServerEvent::UserRemoved {
        user: name("alice"),
        items: 2,
        sessions_closed: 1,
    }));
    let state = h.server.state();
    assert!(state.user(&name("alice")).is_none());
    assert_eq!(state.user(&name("bob")).unwrap().outstanding, 0);
    assert_eq!(state.queued_items(), 1, "alice's message to bob stays");

    // Unknown now; sends to the name are refused.
    h.server
        .handle_input(h.now, Input::RemoveUser(&name("alice")));
    h.drain();
    assert!(h.events.contains(&ServerEvent::UserNotRemoved {
        user: name("alice"),
        error: RemoveUserError::NoSuchUser,
    }));
    h.send_msg(b, 4, "alice", b"nobody");
    h.expect_error(b, ErrorCode::UnknownUser);

    // The name is free: another key registers it, with an empty mailbox,
    // and the old alice's message to bob counts as the name's outstanding
    // message, as it does in a state rebuilt from a store.
    let c = h.user(4, "alice", &ids()[2]);
    assert_eq!(h.recv_all(c), vec![]);
    let record = h.server.state().user(&name("alice")).unwrap();
    assert_eq!(record.mailbox.items.len(), 0);
    assert_eq!(record.outstanding, 1);
    let replayed = ServerState::replay(h.log.iter().map(|(_, c)| c));
    assert_eq!(&replayed, h.server.state());
    let from_snapshot = ServerState::replay(&h.server.state().snapshot());
    assert_eq!(&from_snapshot, h.server.state());
}

/// The events a driver counts for its metrics (login failures: in
/// `login_of_unknown_user_and_prove_without_challenge`): messages accepted,
/// refused by code, delivered, acknowledged and expired, each once.
#[test]
fn counted_events_are_emitted_once_each() {
    let config = ServerConfig {
        message_ttl: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config);
    let a = h.user(2, "alice", &ids()[0]);
    let b = h.user(3, "bob", &ids()[1]);
    h.events.clear();
    h.send_msg(a, 1, "bob", b"sealed");
    h.expect(a);
    h.send_msg(a, 1, "bob", b"sealed"); // a retry: accepted, not counted again
    h.expect(a);
    h.send_msg(a, 2, "nobody", b"x");
    h.expect_error(a, ErrorCode::UnknownUser);
    let seq = match h.expect(b) {
        ServerPacket::Message { seq, .. } => seq,
        other => panic!("{other:?}"),
    };
    h.send(b, &ClientPacket::Ack { seq });
    let count =
        |h: &Harness, f: &dyn Fn(&ServerEvent) -> bool| h.events.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(&h, &|e| matches!(
            e,
            ServerEvent::MessageAccepted { bytes: 6 }
        )),
        1
    );
    assert_eq!(
        count(&h, &|e| matches!(
            e,
            ServerEvent::MessageRefused { conn, code: ErrorCode::UnknownUser } if *conn == a
        )),
        1
    );
    assert_eq!(
        count(&h, &|e| matches!(
            e,
            ServerEvent::Delivered { conn, messages: 1, notices: 0 } if *conn == b
        )),
        1
    );
    assert_eq!(
        count(&h, &|e| matches!(
            e,
            ServerEvent::Acknowledged { conn, message: true } if *conn == b
        )),
        1
    );
    // The sender's `delivered` notice goes out and is acknowledged too.
    match h.expect(a) {
        ServerPacket::Notice { seq, .. } => h.send(a, &ClientPacket::Ack { seq }),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        count(&h, &|e| matches!(
            e,
            ServerEvent::Delivered { conn, messages: 0, notices: 1 } if *conn == a
        )),
        1
    );
    assert_eq!(
        count(&h, &|e| matches!(
            e,
            ServerEvent::Acknowledged { conn, message: false } if *conn == a
        )),
        1
    );

    // A message for bob offline expires: one event for it, then one for
    // the `expired` notice alice never reads.
    h.input_disconnect(b);
    h.input_disconnect(a);
    let a = h.user(4, "alice", &ids()[0]);
    h.send_msg(a, 3, "bob", b"late");
    h.expect(a);
    h.input_disconnect(a);
    h.events.clear();
    h.advance(Duration::from_secs(3601));
    assert_eq!(
        count(&h, &|e| matches!(e, ServerEvent::Expired { message: true })),
        1
    );
    assert_eq!(h.server.state().queued_bytes(), 0);
}
