//! Tests: the client against a scripted fake server, in virtual time.

use super::*;
use crate::crypto::{
    self, AuthContext, AuthTranscript, ChannelBinding, ENVELOPE_VERSION, EnvelopeHeader,
    TranscriptVersion,
};
use crate::test_support::test;
use crate::wire::{
    self, DEFAULT_MAX_FRAME, ErrorCode, FrameDecoder, Framing, Link, Notice, ServerPacket,
    WireLimits,
};
#[cfg(not(target_family = "wasm"))]
use proptest::prelude::*;
use serde_bytes::ByteBuf;
use std::sync::OnceLock;
use std::time::Duration;

struct Keys {
    alice: Identity,
    bob: Identity,
    bob2: Identity,
}

/// RSA keys are slow to generate: once per test binary.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rng::from_seed([42; 32]);
        Keys {
            alice: Identity::generate(&mut rng, 2048).unwrap(),
            bob: Identity::generate(&mut rng, 2048).unwrap(),
            bob2: Identity::generate(&mut rng, 2048).unwrap(),
        }
    })
}

fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

fn der(identity: &Identity) -> Vec<u8> {
    identity.public_key().to_spki_der().to_vec()
}

const SERVER_ID: [u8; 16] = [1; 16];
const SESSION_ID: [u8; 16] = [2; 16];
const PING_MS: u64 = 5_000;
const LIMITS: WireLimits = WireLimits {
    max_frame: DEFAULT_MAX_FRAME,
    max_envelope: 64 * 1024,
    window: 32,
    handshake_max_frame: Some(16 * 1024),
};
const START_UNIX_MS: u64 = 1_700_000_000_000;

fn welcome() -> ServerPacket {
    welcome_version(2)
}

fn welcome_version(version: u16) -> ServerPacket {
    ServerPacket::Welcome {
        version,
        server_id: SERVER_ID,
        session_id: SESSION_ID,
        ping_interval_ms: PING_MS,
        limits: LIMITS,
    }
}

fn error(code: ErrorCode, id: Option<MessageId>, user: Option<&str>) -> ServerPacket {
    ServerPacket::Error {
        code,
        id,
        user: user.map(name),
        detail: format!("{code:?}"),
    }
}

/// Bob seals `body` for alice, as his client would.
fn sealed_by(
    identity: &Identity,
    sender: &str,
    id: MessageId,
    sent_at: u64,
    body: &[u8],
) -> Vec<u8> {
    let header = EnvelopeHeader {
        version: ENVELOPE_VERSION,
        sender: name(sender),
        recipient: name("alice"),
        id,
        sent_at,
    };
    let mut rng = rng::from_seed([9; 32]);
    crypto::seal(
        &mut rng,
        identity,
        &header,
        keys().alice.public_key(),
        body,
        LIMITS.max_envelope as usize,
    )
    .unwrap()
}

fn state_with_bob_pinned() -> ClientState {
    let mut state = ClientState::default();
    state
        .pinned
        .insert(name("bob"), ByteBuf::from(der(&keys().bob)));
    state
}

/// The client plus a fake server's view of it.
struct Harness {
    client: Client,
    start: Instant,
    now: Instant,
    decoder: FrameDecoder,
    events: Vec<ClientEvent>,
    closes: usize,
    state_changes: usize,
    nonce: u8,
    /// The channel binding the transport hands the client at Connected.
    binding: ChannelBinding,
    /// How the transport frames packets.
    framing: Framing,
    /// Transmits polled (each one message on a message transport).
    transmits: usize,
    /// The transcript the fake server verifies Prove against.
    transcript: TranscriptVersion,
}

impl Harness {
    fn new() -> Self {
        Self::with(ClientConfig::new(name("alice")), ClientState::default())
    }

    fn with(config: ClientConfig, state: ClientState) -> Self {
        Self::with_seed(config, state, [7; 32])
    }

    /// A client started with the driver seed `seed`.
    fn with_seed(config: ClientConfig, state: ClientState, seed: [u8; 32]) -> Self {
        let start = Instant::now();
        let client = Client::new(
            config,
            keys().alice.clone(),
            state,
            seed,
            start,
            START_UNIX_MS,
        );
        Self {
            client,
            start,
            now: start,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            events: Vec::new(),
            closes: 0,
            state_changes: 0,
            nonce: 0,
            binding: ChannelBinding::None,
            framing: Framing::Stream,
            transmits: 0,
            transcript: TranscriptVersion::V2(ChannelBinding::None),
        }
    }

    /// Polls every output; returns the packets the client transmitted.
    fn drain(&mut self) -> Vec<ClientPacket> {
        let mut packets = Vec::new();
        while let Some(output) = self.client.poll_output() {
            match output {
                ClientOutput::Transmit(bytes) if self.framing == Framing::Messages => {
                    self.transmits += 1;
                    packets.push(wire::decode_packet(&bytes).expect("one bare packet"));
                }
                ClientOutput::Transmit(bytes) => {
                    self.transmits += 1;
                    self.decoder.push(&bytes);
                    while let Some(p) = self.decoder.next_packet::<ClientPacket>().unwrap() {
                        packets.push(p);
                    }
                    assert_eq!(
                        self.decoder.buffered_len(),
                        0,
                        "Transmit holds whole frames"
                    );
                }
                ClientOutput::Close => self.closes += 1,
                ClientOutput::StateChanged => self.state_changes += 1,
                ClientOutput::Event(e) => self.events.push(e),
            }
        }
        packets
    }

    fn input(&mut self, input: ClientInput<'_>) -> Vec<ClientPacket> {
        self.client.handle_input(self.now, input);
        self.drain()
    }

    fn recv(&mut self, packet: ServerPacket) -> Vec<ClientPacket> {
        let mut bytes = Vec::new();
        match self.framing {
            Framing::Messages => wire::encode_packet_into(&packet, DEFAULT_MAX_FRAME, &mut bytes),
            _ => wire::encode_frame_into(&packet, DEFAULT_MAX_FRAME, &mut bytes),
        }
        .unwrap();
        self.input(ClientInput::Bytes(&bytes))
    }

    fn advance(&mut self, by: Duration) -> Vec<ClientPacket> {
        self.now += by;
        self.input(ClientInput::Timeout)
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events)
    }

    fn connect(&mut self) {
        self.decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let versions = match self.binding {
            ChannelBinding::None => vec![2, 1],
            ChannelBinding::TlsExporter(_) => vec![2],
        };
        assert_eq!(
            self.input(ClientInput::Connected(Link {
                binding: self.binding,
                framing: self.framing,
            })),
            vec![ClientPacket::Hello { versions }]
        );
    }

    fn disconnect(&mut self) {
        assert!(self.input(ClientInput::Disconnected).is_empty());
        assert_eq!(self.events(), vec![ClientEvent::Disconnected]);
    }

    /// Sends a challenge and checks the Prove that answers it.
    fn challenge(&mut self, context: AuthContext) -> Vec<ClientPacket> {
        self.nonce += 1;
        let nonce = [self.nonce; 32];
        let mut out = self.recv(ServerPacket::Challenge {
            nonce,
            expires_in_ms: 30_000,
        });
        assert!(!out.is_empty(), "no answer to the challenge");
        let ClientPacket::Prove {
            client_nonce,
            signature,
        } = out.remove(0)
        else {
            panic!("expected Prove")
        };
        let user = name("alice");
        let transcript = AuthTranscript {
            version: self.transcript,
            context,
            server_id: SERVER_ID,
            session_id: SESSION_ID,
            user: &user,
            server_nonce: nonce,
            client_nonce,
        };
        transcript
            .verify(keys().alice.public_key(), &signature)
            .expect("valid proof");
        out
    }

    /// Connect, Welcome, Login, Challenge, Prove, LoggedIn. Returns the
    /// packets sent right after login.
    fn login(&mut self) -> Vec<ClientPacket> {
        self.connect();
        let mut expected = Vec::new();
        if !self.client.online {
            expected.push(ClientPacket::SetPresence { online: false });
        }
        expected.push(ClientPacket::Login {
            user: name("alice"),
        });
        assert_eq!(self.recv(welcome()), expected);
        assert!(self.challenge(AuthContext::Login).is_empty());
        let out = self.recv(ServerPacket::LoggedIn {
            user: name("alice"),
            queued: 0,
        });
        assert!(self.client.is_logged_in());
        assert!(self.events().contains(&ClientEvent::LoggedIn { queued: 0 }));
        out
    }
}

impl Harness {
    /// Logs in, then the server confirms bob's pinned key (the answer to
    /// the fetch the client sends before sealing to bob on a connection, or
    /// unsolicited when nothing waits yet). Returns the packets sent after
    /// the confirmation: the sends that waited for it.
    fn login_confirming_bob(&mut self) -> Vec<ClientPacket> {
        let out = self.login();
        let fetches_bob = out.contains(&ClientPacket::FetchKey { user: name("bob") });
        let waiting = self
            .client
            .state()
            .outbox()
            .any(|e| e.to == name("bob") && e.sealed.is_none());
        assert_eq!(
            fetches_bob, waiting,
            "a fetch of bob's key iff a message waits for it"
        );
        self.recv(ServerPacket::Key {
            user: name("bob"),
            public_key: der(&keys().bob),
        })
    }
}

fn sends(packets: &[ClientPacket]) -> Vec<(MessageId, UserName, Vec<u8>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            ClientPacket::Send { id, to, envelope } => Some((*id, to.clone(), envelope.to_vec())),
            _ => None,
        })
        .collect()
}

#[test]
fn full_login() {
    let mut h = Harness::new();
    assert!(!h.client.is_logged_in());
    assert_eq!(h.client.poll_timeout(), None);
    h.connect();
    assert_eq!(
        h.recv(welcome()),
        vec![ClientPacket::Login {
            user: name("alice")
        }]
    );
    assert!(h.challenge(AuthContext::Login).is_empty());
    assert!(!h.client.is_logged_in());
    assert!(
        h.recv(ServerPacket::LoggedIn {
            user: name("alice"),
            queued: 3
        })
        .is_empty()
    );
    assert!(h.client.is_logged_in());
    // Registration was not needed, so not attempted.
    assert_eq!(h.events(), vec![ClientEvent::LoggedIn { queued: 3 }]);
    assert_eq!(h.closes, 0);
    assert_eq!(h.client.user(), &name("alice"));
}

#[test]
fn register_then_login() {
    let mut h = Harness::new();
    h.connect();
    h.recv(welcome());
    let out = h.recv(error(ErrorCode::UnknownUser, None, Some("alice")));
    assert_eq!(
        out,
        vec![ClientPacket::Register {
            user: name("alice"),
            public_key: der(&keys().alice)
        }]
    );
    assert!(
        h.events().is_empty(),
        "the unknown user is handled, not reported"
    );
    assert!(h.challenge(AuthContext::Register).is_empty());
    let out = h.recv(ServerPacket::Registered {
        user: name("alice"),
    });
    assert_eq!(
        out,
        vec![ClientPacket::Login {
            user: name("alice")
        }]
    );
    assert_eq!(h.events(), vec![ClientEvent::Registered]);
    assert!(h.challenge(AuthContext::Login).is_empty());
    h.recv(ServerPacket::LoggedIn {
        user: name("alice"),
        queued: 0,
    });
    assert!(h.client.is_logged_in());
    assert_eq!(h.events(), vec![ClientEvent::LoggedIn { queued: 0 }]);
    assert_eq!(h.closes, 0);
}

#[test]
fn unknown_user_without_registration_closes() {
    let mut config = ClientConfig::new(name("alice"));
    config.registration = Registration::Never;
    let mut h = Harness::with(config, ClientState::default());
    h.connect();
    h.recv(welcome());
    assert!(
        h.recv(error(ErrorCode::UnknownUser, None, Some("alice")))
            .is_empty()
    );
    assert_eq!(
        h.events(),
        vec![ClientEvent::LoginFailed(LoginError::NotRegistered {
            user: name("alice")
        })]
    );
    assert_eq!(h.closes, 1);
    assert_eq!(h.client.poll_timeout(), None, "timers stop once closed");
}

/// Two registrations of one name race: this one proved its key, but the
/// other became durable first, so the server answers the proof with
/// `name_taken` (§4.2). Fails on the old code: it reported
/// `Refused { code: NameTaken }`.
#[test]
fn name_taken_after_the_proof_is_name_taken() {
    let mut h = Harness::new();
    h.connect();
    h.recv(welcome());
    h.recv(error(ErrorCode::UnknownUser, None, Some("alice")));
    h.challenge(AuthContext::Register);
    assert!(
        h.recv(error(ErrorCode::NameTaken, None, Some("alice")))
            .is_empty()
    );
    assert_eq!(
        h.events(),
        vec![ClientEvent::LoginFailed(LoginError::NameTaken {
            user: name("alice")
        })]
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn name_taken_reports_and_closes() {
    let mut h = Harness::new();
    h.connect();
    h.recv(welcome());
    h.recv(error(ErrorCode::UnknownUser, None, Some("alice")));
    assert!(
        h.recv(error(ErrorCode::NameTaken, None, Some("alice")))
            .is_empty()
    );
    assert_eq!(
        h.events(),
        vec![ClientEvent::LoginFailed(LoginError::NameTaken {
            user: name("alice")
        })]
    );
    assert_eq!(h.closes, 1);
    // Whatever follows on this connection is ignored.
    assert!(
        h.recv(ServerPacket::Registered {
            user: name("alice")
        })
        .is_empty()
    );
    assert!(h.events().is_empty());
    h.disconnect();
}

#[test]
fn rejected_signature_reports_and_closes() {
    let mut h = Harness::new();
    h.connect();
    h.recv(welcome());
    h.challenge(AuthContext::Login);
    assert!(h.recv(error(ErrorCode::AuthFailed, None, None)).is_empty());
    assert_eq!(
        h.events(),
        vec![ClientEvent::LoginFailed(LoginError::SignatureRejected {
            user: name("alice")
        })]
    );
    assert_eq!(h.closes, 1);
    assert!(!h.client.is_logged_in());
}

#[test]
fn registration_always_registers_first_and_reports_a_taken_name() {
    let mut config = ClientConfig::new(name("alice"));
    config.registration = Registration::Always;
    let mut h = Harness::with(config.clone(), ClientState::default());
    h.connect();
    let register = ClientPacket::Register {
        user: name("alice"),
        public_key: der(&keys().alice),
    };
    assert_eq!(h.recv(welcome()), vec![register.clone()]);
    assert!(h.challenge(AuthContext::Register).is_empty());
    assert_eq!(
        h.recv(ServerPacket::Registered {
            user: name("alice")
        }),
        vec![ClientPacket::Login {
            user: name("alice")
        }]
    );
    assert!(h.challenge(AuthContext::Login).is_empty());
    h.recv(ServerPacket::LoggedIn {
        user: name("alice"),
        queued: 0,
    });
    assert_eq!(
        h.events(),
        vec![ClientEvent::Registered, ClientEvent::LoggedIn { queued: 0 }]
    );

    // The name belongs to another key: the server's NameTaken, not a failed
    // login signature, is what the client reports.
    let mut h = Harness::with(config, ClientState::default());
    h.connect();
    assert_eq!(h.recv(welcome()), vec![register]);
    assert!(
        h.recv(error(ErrorCode::NameTaken, None, Some("alice")))
            .is_empty()
    );
    assert_eq!(
        h.events(),
        vec![ClientEvent::LoginFailed(LoginError::NameTaken {
            user: name("alice")
        })]
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn handshake_refusals_are_typed() {
    for (code, expected) in [
        (
            ErrorCode::BadKey,
            LoginError::KeyRejected {
                detail: "BadKey".into(),
            },
        ),
        (
            ErrorCode::Busy,
            LoginError::Refused {
                code: ErrorCode::Busy,
                detail: "Busy".into(),
            },
        ),
    ] {
        let mut h = Harness::new();
        h.connect();
        h.recv(welcome());
        h.recv(error(ErrorCode::UnknownUser, None, Some("alice")));
        assert!(h.recv(error(code, None, Some("alice"))).is_empty());
        assert_eq!(h.events(), vec![ClientEvent::LoginFailed(expected)]);
        assert_eq!(h.closes, 1);
    }
}

#[test]
fn fatal_server_errors_are_typed_reasons() {
    for (code, expected) in [
        (ErrorCode::SessionReplaced, ConnectionError::SessionReplaced),
        (ErrorCode::ShuttingDown, ConnectionError::ShuttingDown),
        (ErrorCode::Timeout, ConnectionError::TimedOut),
        (ErrorCode::SlowConsumer, ConnectionError::SlowConsumer),
        (
            ErrorCode::Malformed,
            ConnectionError::Closed {
                code: ErrorCode::Malformed,
                detail: "Malformed".into(),
            },
        ),
        (
            ErrorCode::Unknown(150),
            ConnectionError::Closed {
                code: ErrorCode::Unknown(150),
                detail: "Unknown(150)".into(),
            },
        ),
    ] {
        let mut h = Harness::new();
        h.login();
        assert!(h.recv(error(code, None, None)).is_empty());
        assert_eq!(
            h.events(),
            vec![ClientEvent::ConnectionLost { reason: expected }]
        );
        assert_eq!(h.closes, 1);
    }
}

#[test]
fn wrong_version_closes() {
    let mut h = Harness::new();
    h.connect();
    let ServerPacket::Welcome {
        server_id,
        session_id,
        ping_interval_ms,
        limits,
        ..
    } = welcome()
    else {
        unreachable!()
    };
    let out = h.recv(ServerPacket::Welcome {
        version: 3,
        server_id,
        session_id,
        ping_interval_ms,
        limits,
    });
    assert!(out.is_empty());
    assert_eq!(
        h.events(),
        vec![ClientEvent::ConnectionLost {
            reason: ConnectionError::UnsupportedVersion
        }]
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn frame_limit_too_small_for_login_closes() {
    let mut h = Harness::new();
    h.connect();
    let limits = WireLimits {
        max_frame: 4,
        ..LIMITS
    };
    let out = h.recv(ServerPacket::Welcome {
        version: 2,
        server_id: SERVER_ID,
        session_id: SESSION_ID,
        ping_interval_ms: PING_MS,
        limits,
    });
    assert!(out.is_empty());
    assert!(matches!(
        h.events()[..],
        [ClientEvent::ConnectionLost {
            reason: ConnectionError::ProtocolViolation { .. }
        }]
    ));
    assert_eq!(h.closes, 1);
}

#[test]
fn ping_schedule_follows_interval() {
    let mut h = Harness::new();
    h.connect();
    assert_eq!(h.client.poll_timeout(), None, "no ping before Welcome");
    h.recv(welcome());
    let interval = Duration::from_millis(PING_MS);
    assert_eq!(h.client.poll_timeout(), Some(h.start + interval));
    // An early Timeout is harmless.
    assert!(h.advance(interval - Duration::from_millis(1)).is_empty());
    assert_eq!(h.client.poll_timeout(), Some(h.start + interval));
    assert_eq!(
        h.advance(Duration::from_millis(1)),
        vec![ClientPacket::Ping]
    );
    assert_eq!(h.client.poll_timeout(), Some(h.start + 2 * interval));
    assert!(h.recv(ServerPacket::Pong).is_empty());
    // Pings continue while logged in.
    h.challenge(AuthContext::Login);
    h.recv(ServerPacket::LoggedIn {
        user: name("alice"),
        queued: 0,
    });
    assert_eq!(h.advance(interval), vec![ClientPacket::Ping]);
    assert_eq!(h.client.poll_timeout(), Some(h.start + 3 * interval));
    assert!(
        h.events()
            .iter()
            .all(|e| !matches!(e, ClientEvent::ConnectionLost { .. }))
    );
    h.disconnect();
    assert_eq!(
        h.client.poll_timeout(),
        None,
        "timers stop until the next Connected"
    );
    assert!(h.advance(interval).is_empty());
}

#[test]
fn send_fetches_key_pins_it_and_resends_identically_after_reconnect() {
    let mut h = Harness::new();
    // Queued before login: nothing goes out yet.
    let id1 = h
        .client
        .send(h.now, name("bob"), b"hello bob".to_vec())
        .unwrap();
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.client.state().outbox().len(), 1);
    let out = h.login();
    assert_eq!(out, vec![ClientPacket::FetchKey { user: name("bob") }]);
    // A second message to bob does not fetch again.
    h.now += Duration::from_millis(1500);
    let id2 = h
        .client
        .send(h.now, name("bob"), b"second".to_vec())
        .unwrap();
    assert!(h.drain().is_empty());
    assert_ne!(id1, id2);

    let changes = h.state_changes;
    let out = h.recv(ServerPacket::Key {
        user: name("bob"),
        public_key: der(&keys().bob),
    });
    assert!(h.state_changes > changes);
    assert_eq!(
        h.client.state().pinned_key(&name("bob")),
        Some(&der(&keys().bob)[..])
    );
    let first = sends(&out);
    assert_eq!(
        first.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![id1, id2]
    );
    // The envelope opens for its recipient, bob.
    let opened = crypto::open(
        &keys().bob,
        &name("bob"),
        &name("alice"),
        keys().alice.public_key(),
        &first[1].2,
        LIMITS.max_envelope as usize,
    )
    .unwrap();
    assert_eq!(opened.body, b"second");
    assert_eq!(opened.header.id, id2);
    assert_eq!(opened.header.sent_at, START_UNIX_MS + 1500);

    h.disconnect();
    assert_eq!(h.client.state().outbox().len(), 2);
    let out = h.login();
    assert_eq!(sends(&out), first, "same ids, same bytes, no key fetch");
    assert_eq!(out.len(), 2);

    h.recv(ServerPacket::Accepted { id: id1 });
    assert_eq!(
        h.events(),
        vec![ClientEvent::Accepted {
            id: id1,
            to: name("bob")
        }]
    );
    assert_eq!(
        h.client.state().outbox().map(|e| e.id).collect::<Vec<_>>(),
        vec![id2]
    );
    h.recv(ServerPacket::Accepted { id: id2 });
    assert_eq!(h.client.state().outbox().len(), 0);
    // A late duplicate Accepted is ignored.
    h.recv(ServerPacket::Accepted { id: id2 });
    assert_eq!(
        h.events(),
        vec![ClientEvent::Accepted {
            id: id2,
            to: name("bob")
        }]
    );
}

/// A crash after the `Send` went out but before the state holding its sealed
/// bytes was saved: the client restarted (another driver seed) from the state
/// saved at `send` seals the message again into the same bytes, so the
/// server sees a true retry (§4.4) and not a reused id.
#[test]
fn resealing_after_a_crash_reproduces_the_envelope() {
    let mut h = Harness::with_seed(
        ClientConfig::new(name("alice")),
        state_with_bob_pinned(),
        [7; 32],
    );
    let id = h
        .client
        .send(h.now, name("bob"), b"sent before the crash".to_vec())
        .unwrap();
    assert!(h.drain().is_empty(), "not logged in: nothing sealed yet");
    let saved = h.client.state().clone();
    assert!(saved.outbox().all(|e| e.sealed.is_none()));
    let first = sends(&h.login_confirming_bob());
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].0, &first[0].1), (id, &name("bob")));

    let mut restarted = Harness::with_seed(ClientConfig::new(name("alice")), saved, [8; 32]);
    let again = sends(&restarted.login_confirming_bob());
    assert_eq!(again, first, "same id, recipient and envelope bytes");
    let opened = crypto::open(
        &keys().bob,
        &name("bob"),
        &name("alice"),
        keys().alice.public_key(),
        &again[0].2,
        LIMITS.max_envelope as usize,
    )
    .unwrap();
    assert_eq!(opened.body, b"sent before the crash");
}

/// An entry from a state file written before `seal_seed` existed still
/// loads, is sealed with a seed drawn then, and keeps that seed.
#[test]
fn outbox_entry_without_a_seal_seed_loads_and_gets_one() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.client.send(h.now, name("bob"), b"old".to_vec()).unwrap();
    let mut value = ciborium::Value::serialized(h.client.state()).unwrap();
    let mut removed = 0;
    for (key, field) in value.as_map_mut().unwrap() {
        if key.as_text() == Some("outbox") {
            for entry in field.as_array_mut().unwrap() {
                let fields = entry.as_map_mut().unwrap();
                let before = fields.len();
                fields.retain(|(k, _)| k.as_text() != Some("seal_seed"));
                removed += before - fields.len();
            }
        }
    }
    assert_eq!(removed, 1);
    let loaded: ClientState = value.deserialized().unwrap();
    let mut expected = h.client.state().clone();
    expected.outbox[0].seal_seed = None;
    assert_eq!(loaded, expected);

    let mut restarted = Harness::with(ClientConfig::new(name("alice")), loaded);
    assert_eq!(sends(&restarted.login_confirming_bob()).len(), 1);
    let entry = restarted.client.state().outbox().next().unwrap();
    assert!(entry.sealed.is_some() && entry.seal_seed.is_some());
}

#[test]
fn sends_in_flight_are_bounded() {
    let mut config = ClientConfig::new(name("alice"));
    config.max_sends_in_flight = 2;
    let mut h = Harness::with(config, state_with_bob_pinned());
    let ids: Vec<_> = (0..3)
        .map(|i| h.client.send(h.now, name("bob"), vec![i]).unwrap())
        .collect();
    let out = h.login_confirming_bob();
    assert_eq!(
        sends(&out).iter().map(|s| s.0).collect::<Vec<_>>(),
        ids[..2]
    );
    let out = h.recv(ServerPacket::Accepted { id: ids[0] });
    assert_eq!(
        sends(&out).iter().map(|s| s.0).collect::<Vec<_>>(),
        ids[2..]
    );
}

#[test]
fn send_refusals() {
    let mut config = ClientConfig::new(name("alice"));
    config.max_outbox = 1;
    let mut h = Harness::with(config, state_with_bob_pinned());
    h.login_confirming_bob();
    let err = h
        .client
        .send(h.now, name("bob"), vec![0; LIMITS.max_envelope as usize])
        .unwrap_err();
    assert!(matches!(err, SendError::TooLarge { .. }));
    h.client.send(h.now, name("bob"), b"one".to_vec()).unwrap();
    assert_eq!(
        h.client.send(h.now, name("bob"), b"two".to_vec()),
        Err(SendError::OutboxFull { max: 1 })
    );
}

#[test]
fn queue_full_removes_the_message() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login_confirming_bob();
    let id = h.client.send(h.now, name("bob"), b"x".to_vec()).unwrap();
    assert_eq!(sends(&h.drain()).len(), 1);
    assert!(
        h.recv(error(ErrorCode::QueueFull, Some(id), Some("bob")))
            .is_empty()
    );
    assert_eq!(
        h.events(),
        vec![ClientEvent::SendFailed {
            to: name("bob"),
            id,
            reason: SendFailure::QueueFull
        }]
    );
    assert_eq!(h.client.state().outbox().len(), 0);
}

#[test]
fn envelope_too_large_fails_the_send() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login_confirming_bob();
    let id = h.client.send(h.now, name("bob"), b"x".to_vec()).unwrap();
    h.drain();
    h.recv(error(ErrorCode::EnvelopeTooLarge, Some(id), None));
    assert_eq!(
        h.events(),
        vec![ClientEvent::SendFailed {
            to: name("bob"),
            id,
            reason: SendFailure::TooLarge
        }]
    );
    assert_eq!(h.client.state().outbox().len(), 0);
}

/// `IdReused` ends that one send for good (no retry), and only that one.
#[test]
fn id_reused_fails_only_that_send() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login_confirming_bob();
    let reused = h.client.send(h.now, name("bob"), b"x".to_vec()).unwrap();
    let other = h.client.send(h.now, name("bob"), b"y".to_vec()).unwrap();
    assert_eq!(sends(&h.drain()).len(), 2);
    assert!(
        h.recv(error(ErrorCode::IdReused, Some(reused), None))
            .is_empty()
    );
    assert_eq!(
        h.events(),
        vec![ClientEvent::SendFailed {
            to: name("bob"),
            id: reused,
            reason: SendFailure::IdReused
        }]
    );
    let outbox: Vec<MessageId> = h.client.state().outbox().map(|e| e.id).collect();
    assert_eq!(outbox, vec![other]);
    assert!(sends(&h.advance(Duration::from_secs(60))).is_empty());
}

#[test]
fn rate_limited_send_is_retried_after_retry_after() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login_confirming_bob();
    let id = h.client.send(h.now, name("bob"), b"x".to_vec()).unwrap();
    let first = sends(&h.drain());
    assert!(
        h.recv(error(ErrorCode::RateLimited, Some(id), None))
            .is_empty()
    );
    assert!(h.events().is_empty());
    let retry = h.now + Duration::from_secs(1);
    assert_eq!(h.client.poll_timeout(), Some(retry));
    assert!(h.advance(Duration::from_millis(999)).is_empty());
    let out = h.advance(Duration::from_millis(1));
    assert_eq!(sends(&out), first, "same id, same bytes");
    // Busy is handled the same way.
    h.recv(error(ErrorCode::Busy, Some(id), None));
    assert_eq!(
        h.client.poll_timeout(),
        Some(h.now + Duration::from_secs(1))
    );
    assert_eq!(sends(&h.advance(Duration::from_secs(1))), first);
    h.recv(ServerPacket::Accepted { id });
    assert_eq!(
        h.events(),
        vec![ClientEvent::Accepted {
            id,
            to: name("bob")
        }]
    );
}

#[test]
fn cluster_redirect_during_the_handshake_ends_the_connection_with_the_address() {
    for after_prove in [false, true] {
        let mut h = Harness::new();
        h.connect();
        h.recv(welcome());
        if after_prove {
            h.challenge(AuthContext::Login);
        }
        let address = "10.0.0.3:7000".to_string();
        assert!(
            h.recv(ServerPacket::Redirect {
                address: address.clone()
            })
            .is_empty()
        );
        assert_eq!(h.events(), vec![ClientEvent::Redirected { address }]);
        assert_eq!(h.closes, 1);
    }
}

#[test]
fn cluster_redirect_after_login_is_a_protocol_violation() {
    let mut h = Harness::new();
    h.login();
    h.recv(ServerPacket::Redirect {
        address: "10.0.0.3:7000".into(),
    });
    assert!(matches!(
        h.events()[..],
        [ClientEvent::ConnectionLost {
            reason: ConnectionError::ProtocolViolation { .. }
        }]
    ));
    assert_eq!(h.closes, 1);
}

#[test]
fn cluster_moved_and_unavailable_at_login_end_the_connection_typed() {
    let mut h = Harness::new();
    h.login();
    h.recv(error(ErrorCode::Moved, None, None));
    assert_eq!(
        h.events(),
        vec![ClientEvent::ConnectionLost {
            reason: ConnectionError::Moved
        }]
    );
    assert_eq!(h.closes, 1);
    // `unavailable` is not fatal, but during the handshake the server
    // closes after it: reconnect later.
    let mut h = Harness::new();
    h.connect();
    h.recv(welcome());
    h.recv(error(ErrorCode::Unavailable, None, Some("alice")));
    assert_eq!(
        h.events(),
        vec![ClientEvent::ConnectionLost {
            reason: ConnectionError::Unavailable
        }]
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn cluster_unavailable_send_stays_in_the_outbox_and_is_retried() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login_confirming_bob();
    let id = h.client.send(h.now, name("bob"), b"x".to_vec()).unwrap();
    let first = sends(&h.drain());
    assert!(
        h.recv(error(ErrorCode::Unavailable, Some(id), None))
            .is_empty()
    );
    assert!(h.events().is_empty());
    assert_eq!(h.client.state().outbox().count(), 1);
    assert_eq!(sends(&h.advance(Duration::from_secs(1))), first);
}

/// A server whose disk is full: a `send` stays in the outbox and is
/// retried; a registration refused ends the connection, typed, and the
/// client reconnects later.
#[test]
fn storage_unavailable_is_retried_at_send_and_ends_a_registration() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login_confirming_bob();
    let id = h.client.send(h.now, name("bob"), b"x".to_vec()).unwrap();
    let first = sends(&h.drain());
    assert!(
        h.recv(error(ErrorCode::StorageUnavailable, Some(id), None))
            .is_empty()
    );
    assert!(h.events().is_empty());
    assert_eq!(h.client.state().outbox().count(), 1);
    assert_eq!(sends(&h.advance(Duration::from_secs(1))), first);

    let mut h = Harness::new();
    h.connect();
    h.recv(welcome());
    h.recv(error(ErrorCode::StorageUnavailable, None, Some("alice")));
    assert_eq!(
        h.events(),
        vec![ClientEvent::ConnectionLost {
            reason: ConnectionError::StorageUnavailable
        }]
    );
    assert_eq!(h.closes, 1);
}

#[test]
fn unknown_recipient_fails_its_messages() {
    let mut h = Harness::new();
    h.login();
    let a = h.client.send(h.now, name("carol"), b"a".to_vec()).unwrap();
    let b = h.client.send(h.now, name("carol"), b"b".to_vec()).unwrap();
    assert_eq!(
        h.drain(),
        vec![ClientPacket::FetchKey {
            user: name("carol")
        }]
    );
    assert!(
        h.recv(error(ErrorCode::UnknownUser, None, Some("carol")))
            .is_empty()
    );
    assert_eq!(
        h.events(),
        vec![
            ClientEvent::SendFailed {
                to: name("carol"),
                id: a,
                reason: SendFailure::UnknownUser
            },
            ClientEvent::SendFailed {
                to: name("carol"),
                id: b,
                reason: SendFailure::UnknownUser
            },
        ]
    );
    assert_eq!(h.client.state().outbox().len(), 0);
}

#[test]
fn key_fetch_busy_is_retried() {
    let mut h = Harness::new();
    h.login();
    h.client.send(h.now, name("bob"), b"a".to_vec()).unwrap();
    assert_eq!(
        h.drain(),
        vec![ClientPacket::FetchKey { user: name("bob") }]
    );
    assert!(h.recv(error(ErrorCode::Busy, None, Some("bob"))).is_empty());
    assert!(h.events().is_empty());
    assert_eq!(
        h.advance(Duration::from_secs(1)),
        vec![ClientPacket::FetchKey { user: name("bob") }]
    );
}

#[test]
fn key_change_refuses_the_send() {
    let mut h = Harness::new();
    h.login();
    let id1 = h.client.send(h.now, name("bob"), b"1".to_vec()).unwrap();
    h.drain();
    h.recv(ServerPacket::Key {
        user: name("bob"),
        public_key: der(&keys().bob),
    });
    let id2 = h.client.send(h.now, name("bob"), b"2".to_vec()).unwrap();
    h.drain();
    h.events();
    // The server now offers another key for bob.
    let out = h.recv(ServerPacket::Key {
        user: name("bob"),
        public_key: der(&keys().bob2),
    });
    assert!(sends(&out).is_empty());
    assert_eq!(
        h.events(),
        vec![
            ClientEvent::KeyChanged {
                user: name("bob"),
                pinned: keys().bob.public_key().fingerprint(),
                offered: keys().bob2.public_key().fingerprint(),
            },
            ClientEvent::SendFailed {
                to: name("bob"),
                id: id1,
                reason: SendFailure::KeyChanged
            },
            ClientEvent::SendFailed {
                to: name("bob"),
                id: id2,
                reason: SendFailure::KeyChanged
            },
        ]
    );
    assert_eq!(h.client.state().outbox().len(), 0);
    assert_eq!(
        h.client.state().pinned_key(&name("bob")),
        Some(&der(&keys().bob)[..]),
        "pin kept"
    );

    // The user accepts the new key: the next fetch pins it.
    h.client.trust_key(&name("bob"));
    assert_eq!(h.client.state().pinned_key(&name("bob")), None);
    let id3 = h.client.send(h.now, name("bob"), b"3".to_vec()).unwrap();
    assert_eq!(
        h.drain(),
        vec![ClientPacket::FetchKey { user: name("bob") }]
    );
    let out = h.recv(ServerPacket::Key {
        user: name("bob"),
        public_key: der(&keys().bob2),
    });
    assert_eq!(sends(&out)[0].0, id3);
    assert_eq!(
        h.client.state().pinned_key(&name("bob")),
        Some(&der(&keys().bob2)[..])
    );
}

/// A key pinned earlier is fetched again on each connection before a new
/// message to that user is sealed: a key that changed meanwhile (the server
/// lost its data and the name was registered again) is a key change, and
/// the message is not sent — until the user trusts the new key.
#[test]
fn pinned_key_is_confirmed_on_each_connection_before_sealing() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login();
    let bob = name("bob");
    let changed = || ClientEvent::KeyChanged {
        user: name("bob"),
        pinned: keys().bob.public_key().fingerprint(),
        offered: keys().bob2.public_key().fingerprint(),
    };
    let offer_bob2 = |h: &mut Harness| {
        h.recv(ServerPacket::Key {
            user: name("bob"),
            public_key: der(&keys().bob2),
        })
    };
    let fetch_bob = vec![ClientPacket::FetchKey { user: bob.clone() }];

    // Blocked, every time the user tries.
    for body in [&b"still you?"[..], b"hello?"] {
        let id = h.client.send(h.now, bob.clone(), body.to_vec()).unwrap();
        assert_eq!(h.drain(), fetch_bob);
        assert!(sends(&offer_bob2(&mut h)).is_empty());
        assert_eq!(
            h.events(),
            vec![
                changed(),
                ClientEvent::SendFailed {
                    to: bob.clone(),
                    id,
                    reason: SendFailure::KeyChanged
                }
            ]
        );
        assert_eq!(
            h.client.state().pinned_key(&bob),
            Some(&der(&keys().bob)[..])
        );
    }

    // Trusted: the next fetch pins the new key; the message is sealed for it.
    h.client.trust_key(&bob);
    let id = h
        .client
        .send(h.now, bob.clone(), b"trusted".to_vec())
        .unwrap();
    assert_eq!(h.drain(), fetch_bob);
    let sent = sends(&offer_bob2(&mut h));
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, &sent[0].1), (id, &bob));
    let opened = crypto::open(
        &keys().bob2,
        &bob,
        &name("alice"),
        keys().alice.public_key(),
        &sent[0].2,
        LIMITS.max_envelope as usize,
    )
    .unwrap();
    assert_eq!(opened.body, b"trusted");
    h.recv(ServerPacket::Accepted { id });

    // Confirmed for the rest of this connection: no more fetches.
    let id = h
        .client
        .send(h.now, bob.clone(), b"again".to_vec())
        .unwrap();
    assert_eq!(sends(&h.drain()).len(), 1);
    h.recv(ServerPacket::Accepted { id });

    assert_eq!(h.events().len(), 2, "two accepted");

    // A new connection confirms again before sealing.
    h.disconnect();
    h.login();
    h.client
        .send(h.now, bob.clone(), b"later".to_vec())
        .unwrap();
    assert_eq!(h.drain(), fetch_bob);
}

#[test]
fn unsolicited_key_is_not_pinned() {
    let mut h = Harness::new();
    h.login();
    assert!(
        h.recv(ServerPacket::Key {
            user: name("bob"),
            public_key: der(&keys().bob)
        })
        .is_empty()
    );
    assert_eq!(h.client.state().pinned_key(&name("bob")), None);
    assert!(h.events().is_empty());
}

#[test]
fn unusable_key_fails_the_send() {
    let mut h = Harness::new();
    h.login();
    let id = h.client.send(h.now, name("bob"), b"1".to_vec()).unwrap();
    h.drain();
    h.recv(ServerPacket::Key {
        user: name("bob"),
        public_key: vec![1, 2, 3],
    });
    assert_eq!(
        h.events(),
        vec![ClientEvent::SendFailed {
            to: name("bob"),
            id,
            reason: SendFailure::BadKey
        }]
    );
    assert_eq!(h.client.state().pinned_key(&name("bob")), None);
}

#[test]
fn received_message_is_acked_first_and_shown_once() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login();
    let id = MessageId([5; 16]);
    let envelope = sealed_by(&keys().bob, "bob", id, 1234, b"hi alice");
    let message = |seq| ServerPacket::Message {
        seq,
        from: name("bob"),
        id,
        envelope: envelope.clone(),
    };
    assert_eq!(h.recv(message(7)), vec![ClientPacket::Ack { seq: 7 }]);
    assert_eq!(
        h.events(),
        vec![ClientEvent::MessageReceived {
            from: name("bob"),
            id,
            sent_at: 1234,
            body: b"hi alice".to_vec()
        }]
    );
    assert!(h.client.state().is_seen(&name("bob"), &id));
    // Redelivered (e.g. after a reconnect): acked again, shown once.
    h.disconnect();
    h.login();
    assert_eq!(h.recv(message(8)), vec![ClientPacket::Ack { seq: 8 }]);
    assert!(h.events().is_empty());
}

#[test]
fn ack_precedes_everything_in_the_same_transmit() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), ClientState::default());
    h.login();
    let id = MessageId([6; 16]);
    let envelope = sealed_by(&keys().bob, "bob", id, 1, b"x");
    let bytes = wire::encode_frame(
        &ServerPacket::Message {
            seq: 1,
            from: name("bob"),
            id,
            envelope,
        },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    h.client.handle_input(h.now, ClientInput::Bytes(&bytes));
    let first = h.client.poll_output();
    let Some(ClientOutput::Transmit(frames)) = first else {
        panic!("first output: {first:?}")
    };
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(&frames);
    assert_eq!(
        decoder.next_packet::<ClientPacket>().unwrap(),
        Some(ClientPacket::Ack { seq: 1 })
    );
}

#[test]
fn undecryptable_message_is_reported_locally_only() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login();
    // Garbage, then an envelope signed with a key that is not bob's pinned one.
    let garbage = ServerPacket::Message {
        seq: 1,
        from: name("bob"),
        id: MessageId([1; 16]),
        envelope: vec![0xa0, 1, 2],
    };
    assert_eq!(h.recv(garbage), vec![ClientPacket::Ack { seq: 1 }]);
    let forged = sealed_by(&keys().bob2, "bob", MessageId([2; 16]), 1, b"trust me");
    let forged = ServerPacket::Message {
        seq: 2,
        from: name("bob"),
        id: MessageId([2; 16]),
        envelope: forged,
    };
    assert_eq!(h.recv(forged), vec![ClientPacket::Ack { seq: 2 }]);
    let events = h.events();
    assert_eq!(events.len(), 2);
    for (event, id) in events.iter().zip([[1; 16], [2; 16]]) {
        assert!(
            matches!(event, ClientEvent::UndecryptableMessage { from, id: got, .. } if *from == name("bob") && got.0 == id),
            "{event:?}"
        );
    }
    // Nothing else goes to the server afterwards either.
    assert!(h.advance(Duration::from_millis(10)).is_empty());
    assert_eq!(h.closes, 0);
}

#[test]
fn envelope_from_unknown_sender_is_parked_until_the_key_arrives() {
    let mut h = Harness::new();
    h.login();
    let id = MessageId([3; 16]);
    let envelope = sealed_by(&keys().bob, "bob", id, 99, b"parked");
    let out = h.recv(ServerPacket::Message {
        seq: 4,
        from: name("bob"),
        id,
        envelope,
    });
    assert_eq!(
        out,
        vec![
            ClientPacket::Ack { seq: 4 },
            ClientPacket::FetchKey { user: name("bob") }
        ]
    );
    assert!(h.events().is_empty());
    assert_eq!(h.client.state().parked().len(), 1);
    // Another one from bob while the fetch is pending: no second fetch.
    let id2 = MessageId([4; 16]);
    let envelope2 = sealed_by(&keys().bob, "bob", id2, 100, b"parked too");
    let out = h.recv(ServerPacket::Message {
        seq: 5,
        from: name("bob"),
        id: id2,
        envelope: envelope2,
    });
    assert_eq!(out, vec![ClientPacket::Ack { seq: 5 }]);

    // Survives a restart (durable state), then opens when the key arrives.
    let state = h.client.state().clone();
    let mut h = Harness::with(ClientConfig::new(name("alice")), state);
    let out = h.login();
    assert_eq!(out, vec![ClientPacket::FetchKey { user: name("bob") }]);
    h.recv(ServerPacket::Key {
        user: name("bob"),
        public_key: der(&keys().bob),
    });
    assert_eq!(
        h.events(),
        vec![
            ClientEvent::MessageReceived {
                from: name("bob"),
                id,
                sent_at: 99,
                body: b"parked".to_vec()
            },
            ClientEvent::MessageReceived {
                from: name("bob"),
                id: id2,
                sent_at: 100,
                body: b"parked too".to_vec()
            },
        ]
    );
    assert_eq!(h.client.state().parked().len(), 0);
}

#[test]
fn notices_are_acked_and_deduplicated() {
    let mut h = Harness::new();
    h.login();
    let id = MessageId([8; 16]);
    let delivered = |seq| ServerPacket::Notice {
        seq,
        notice: Notice::Delivered {
            to: name("bob"),
            id,
        },
    };
    assert_eq!(h.recv(delivered(10)), vec![ClientPacket::Ack { seq: 10 }]);
    assert_eq!(
        h.events(),
        vec![ClientEvent::Delivered {
            to: name("bob"),
            id
        }]
    );
    h.disconnect();
    h.login();
    assert_eq!(h.recv(delivered(11)), vec![ClientPacket::Ack { seq: 11 }]);
    assert!(h.events().is_empty());
    let expired = ServerPacket::Notice {
        seq: 12,
        notice: Notice::Expired {
            to: name("bob"),
            id,
        },
    };
    assert_eq!(h.recv(expired), vec![ClientPacket::Ack { seq: 12 }]);
    assert_eq!(
        h.events(),
        vec![ClientEvent::Expired {
            to: name("bob"),
            id
        }]
    );
}

#[test]
fn seen_set_is_bounded() {
    let mut config = ClientConfig::new(name("alice"));
    config.seen_capacity = 2;
    let mut h = Harness::with(config, ClientState::default());
    h.login();
    for (seq, n) in [(1, 1u8), (2, 2), (3, 3)] {
        let id = MessageId([n; 16]);
        h.recv(ServerPacket::Notice {
            seq,
            notice: Notice::Delivered {
                to: name("bob"),
                id,
            },
        });
        h.recv(ServerPacket::Message {
            seq: seq + 100,
            from: name("carol"),
            id,
            envelope: vec![],
        });
    }
    assert_eq!(h.client.state().seen_len(), 2);
    assert!(
        !h.client
            .state()
            .is_seen(&name("carol"), &MessageId([1; 16]))
    );
    assert!(
        h.client
            .state()
            .is_seen(&name("carol"), &MessageId([3; 16]))
    );
}

#[test]
fn presence() {
    let mut h = Harness::new();
    h.client.set_presence(h.now, false);
    h.client.query_presence(h.now, name("bob"));
    assert!(h.drain().is_empty(), "nothing before login");
    // The offline presence went out before Login (see `Harness::login`).
    let out = h.login();
    assert_eq!(out, vec![ClientPacket::QueryPresence { user: name("bob") }]);
    h.recv(ServerPacket::Presence {
        user: name("bob"),
        online: false,
        last_seen_ms: Some(42),
    });
    assert_eq!(
        h.events(),
        vec![ClientEvent::PresenceChanged {
            user: name("bob"),
            online: false,
            last_seen_ms: Some(42)
        }]
    );
    h.client.set_presence(h.now, true);
    assert_eq!(h.drain(), vec![ClientPacket::SetPresence { online: true }]);
    h.client.query_presence(h.now, name("nobody"));
    assert_eq!(
        h.drain(),
        vec![ClientPacket::QueryPresence {
            user: name("nobody")
        }]
    );
    h.recv(error(ErrorCode::UnknownUser, None, Some("nobody")));
    assert_eq!(
        h.events(),
        vec![ClientEvent::PresenceUnknown {
            user: name("nobody")
        }]
    );
    // An UnknownUser naming a user no query is outstanding for is no
    // presence answer.
    h.recv(error(ErrorCode::UnknownUser, None, Some("nobody")));
    assert!(matches!(
        h.events()[..],
        [ClientEvent::RequestRefused {
            code: ErrorCode::UnknownUser,
            ..
        }]
    ));
    // Online is the default after a login: nothing to announce.
    h.disconnect();
    assert!(h.login().is_empty());
}

#[test]
fn garbage_from_the_server_reports_and_closes() {
    for garbage in [
        vec![0, 0, 0, 3, 0xff, 0xff, 0xff], // not CBOR
        vec![0xff, 0xff, 0xff, 0xff],       // frame too large
        vec![0, 0, 0, 2, 0x61, 0x78],       // CBOR, not a packet
    ] {
        let mut h = Harness::new();
        h.login();
        assert!(h.input(ClientInput::Bytes(&garbage)).is_empty());
        let events = h.events();
        assert!(
            matches!(
                events[..],
                [ClientEvent::ConnectionLost {
                    reason: ConnectionError::ProtocolViolation { .. }
                }]
            ),
            "{events:?}"
        );
        assert_eq!(h.closes, 1);
        assert_eq!(h.client.poll_timeout(), None);
        // Anything after is ignored until the driver reconnects.
        assert!(h.recv(ServerPacket::Pong).is_empty());
        h.disconnect();
        h.login();
    }
}

#[test]
fn unexpected_packet_closes() {
    let mut h = Harness::new();
    h.connect();
    h.recv(ServerPacket::Message {
        seq: 1,
        from: name("bob"),
        id: MessageId([0; 16]),
        envelope: vec![],
    });
    assert!(matches!(
        h.events()[..],
        [ClientEvent::ConnectionLost {
            reason: ConnectionError::ProtocolViolation { .. }
        }]
    ));
    assert_eq!(h.closes, 1);
}

/// On a message transport every packet is a Transmit of its own, a bare
/// packet; received messages are one packet each. A whole session (login,
/// send, receive) works so.
#[test]
fn a_message_transport_carries_one_bare_packet_per_transmit() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.framing = Framing::Messages;
    h.login_confirming_bob();
    let logged_in = h.transmits;
    // Two packets queued before polling: two Transmits, not one.
    let id = h
        .client
        .send(h.now, name("bob"), b"hi bob".to_vec())
        .unwrap();
    h.client.query_presence(h.now, name("bob"));
    let out = h.drain();
    assert!(
        matches!(&out[..], [ClientPacket::Send { id: sent, .. }, ClientPacket::QueryPresence { .. }] if *sent == id)
    );
    assert_eq!(h.transmits - logged_in, 2);
    // A received message is acknowledged in a message of its own.
    let received = MessageId([5; 16]);
    let message = ServerPacket::Message {
        seq: 7,
        from: name("bob"),
        id: received,
        envelope: sealed_by(&keys().bob, "bob", received, 1234, b"hi alice"),
    };
    assert_eq!(h.recv(message), vec![ClientPacket::Ack { seq: 7 }]);
    assert!(
        matches!(&h.events()[..], [ClientEvent::MessageReceived { body, .. }] if body == b"hi alice")
    );
}

/// A length-prefixed frame is not a packet on a message transport.
#[test]
fn a_frame_on_a_message_transport_is_a_protocol_violation() {
    let mut h = Harness::new();
    h.framing = Framing::Messages;
    h.connect();
    let frame = wire::encode_frame(&welcome(), DEFAULT_MAX_FRAME).unwrap();
    assert!(h.input(ClientInput::Bytes(&frame)).is_empty());
    assert!(matches!(
        &h.events()[..],
        [ClientEvent::ConnectionLost {
            reason: ConnectionError::ProtocolViolation { .. }
        }]
    ));
    assert_eq!(h.closes, 1);
}

#[test]
fn disconnect_drops_unsent_frames() {
    let mut h = Harness::new();
    h.client
        .handle_input(h.now, ClientInput::Connected(Link::PLAINTEXT)); // Hello not polled
    h.client.handle_input(h.now, ClientInput::Disconnected);
    assert_eq!(
        h.client.poll_output(),
        Some(ClientOutput::Event(ClientEvent::Disconnected))
    );
    assert_eq!(h.client.poll_output(), None);
}

#[test]
fn state_round_trips_through_cbor() {
    let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
    h.login_confirming_bob();
    h.client
        .send(h.now, name("bob"), b"sealed".to_vec())
        .unwrap();
    h.client
        .send(h.now, name("carol"), b"waiting".to_vec())
        .unwrap();
    h.recv(ServerPacket::Notice {
        seq: 1,
        notice: Notice::Expired {
            to: name("bob"),
            id: MessageId([1; 16]),
        },
    });
    h.recv(ServerPacket::Message {
        seq: 2,
        from: name("dave"),
        id: MessageId([2; 16]),
        envelope: vec![1, 2],
    });
    let state = h.client.state();
    assert!(state.outbox().any(|e| e.sealed.is_some()));
    assert!(state.outbox().any(|e| e.sealed.is_none()));
    assert_eq!(state.parked().len(), 1);

    let mut bytes = Vec::new();
    ciborium::into_writer(state, &mut bytes).unwrap();
    let back: ClientState = ciborium::from_reader(&bytes[..]).unwrap();
    assert_eq!(&back, state);
    assert_eq!(
        ClientState::from_cbor(&state.to_cbor().unwrap()).unwrap(),
        *state
    );
    assert!(back.is_seen(&name("dave"), &MessageId([2; 16])));
    assert!(ClientState::from_cbor(b"\xff").is_err());
    let empty = ClientState::default();
    assert_eq!(
        ClientState::from_cbor(&empty.to_cbor().unwrap()).unwrap(),
        empty
    );
}

#[cfg(not(target_family = "wasm"))]
/// What the fuzzing "server" does next.
#[derive(Debug, Clone)]
enum Step {
    Raw(Vec<u8>),
    Packet(ServerPacket),
    Send,
    Timeout(u16),
    Reconnect,
}

#[cfg(not(target_family = "wasm"))]
fn any_name() -> impl Strategy<Value = UserName> {
    prop_oneof![Just(name("alice")), Just(name("bob")), Just(name("carol"))]
}

#[cfg(not(target_family = "wasm"))]
fn any_packet() -> impl Strategy<Value = ServerPacket> {
    let id = any::<[u8; 16]>().prop_map(MessageId);
    prop_oneof![
        (
            any::<u64>(),
            any_name(),
            id.clone(),
            proptest::collection::vec(any::<u8>(), 0..600)
        )
            .prop_map(|(seq, from, id, envelope)| ServerPacket::Message {
                seq,
                from,
                id,
                envelope
            }),
        (any::<u64>(), any_name(), id.clone(), any::<bool>()).prop_map(|(seq, to, id, d)| {
            let notice = if d {
                Notice::Delivered { to, id }
            } else {
                Notice::Expired { to, id }
            };
            ServerPacket::Notice { seq, notice }
        }),
        (
            any::<u16>(),
            proptest::option::of(id.clone()),
            proptest::option::of(any_name())
        )
            .prop_map(|(code, id, user)| ServerPacket::Error {
                code: ErrorCode::from(code % 120),
                id,
                user,
                detail: String::new()
            }),
        (any_name(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(user, public_key)| ServerPacket::Key { user, public_key }),
        any_name().prop_map(|user| ServerPacket::Key {
            user,
            public_key: der(&keys().bob2)
        }),
        id.prop_map(|id| ServerPacket::Accepted { id }),
        Just(ServerPacket::Pong),
        Just(welcome()),
        any::<[u8; 32]>().prop_map(|nonce| ServerPacket::Challenge {
            nonce,
            expires_in_ms: 1
        }),
        (any_name(), any::<u64>())
            .prop_map(|(user, queued)| ServerPacket::LoggedIn { user, queued }),
        (
            any_name(),
            any::<bool>(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(user, online, last_seen_ms)| ServerPacket::Presence {
                user,
                online,
                last_seen_ms
            }),
    ]
}

#[cfg(not(target_family = "wasm"))]
fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Step::Raw),
        6 => any_packet().prop_map(Step::Packet),
        1 => Just(Step::Send),
        1 => any::<u16>().prop_map(Step::Timeout),
        1 => Just(Step::Reconnect),
    ]
}

#[cfg(not(target_family = "wasm"))]
/// Feeds everything to the client, never asserting anything but "no panic".
fn fuzz_drain(client: &mut Client) {
    while client.poll_output().is_some() {}
}

#[cfg(not(target_family = "wasm"))]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_server_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
        h.client.send(h.now, name("bob"), b"pending".to_vec()).unwrap();
        h.login();
        for chunk in &chunks {
            h.client.handle_input(h.now, ClientInput::Bytes(chunk));
            fuzz_drain(&mut h.client);
        }
        // Also before login.
        let mut h = Harness::new();
        h.connect();
        for chunk in &chunks {
            h.client.handle_input(h.now, ClientInput::Bytes(chunk));
            fuzz_drain(&mut h.client);
        }
    }

    #[test]
    fn arbitrary_server_packets_never_panic(steps in proptest::collection::vec(any_step(), 0..30)) {
        let mut h = Harness::with(ClientConfig::new(name("alice")), state_with_bob_pinned());
        h.login();
        let mut now = h.now;
        for step in steps {
            match step {
                Step::Raw(bytes) => h.client.handle_input(now, ClientInput::Bytes(&bytes)),
                Step::Packet(packet) => {
                    let bytes = wire::encode_frame(&packet, DEFAULT_MAX_FRAME).unwrap();
                    // Split each frame to exercise reassembly.
                    let (a, b) = bytes.split_at(bytes.len() / 2);
                    h.client.handle_input(now, ClientInput::Bytes(a));
                    h.client.handle_input(now, ClientInput::Bytes(b));
                }
                Step::Send => {
                    let _ = h.client.send(now, name("carol"), b"x".to_vec());
                }
                Step::Timeout(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    h.client.handle_input(now, ClientInput::Timeout);
                }
                Step::Reconnect => {
                    h.client.handle_input(now, ClientInput::Disconnected);
                    h.client
                        .handle_input(now, ClientInput::Connected(Link::PLAINTEXT));
                }
            }
            fuzz_drain(&mut h.client);
        }
    }

    /// Whatever the code, an error from the server comes out typed: a fatal
    /// one as exactly one `ConnectionLost` (the server's reason, never a
    /// violation of ours) and a close; an unattributed non-fatal one as a
    /// `RequestRefused`, the connection staying open.
    #[test]
    fn every_server_error_code_comes_out_typed(code in any::<u16>()) {
        let code = ErrorCode::from(code);
        let mut h = Harness::new();
        h.login();
        h.recv(error(code, None, None));
        let events = h.events();
        if code.is_fatal() {
            prop_assert_eq!(h.closes, 1);
            prop_assert!(
                matches!(
                    &events[..],
                    [ClientEvent::ConnectionLost { reason }]
                        if !matches!(reason, ConnectionError::ProtocolViolation { .. })
                ),
                "{:?}",
                events
            );
        } else {
            prop_assert_eq!(h.closes, 0);
            prop_assert_eq!(
                events,
                vec![ClientEvent::RequestRefused {
                    code,
                    user: None,
                    detail: format!("{code:?}"),
                }]
            );
        }
    }
}

/// On TLS the client offers version 2 only and signs its own exporter
/// value; a server that answers version 1 there is refused.
#[test]
fn tls_connection_signs_its_exporter_value_and_refuses_version_1() {
    let exporter = ChannelBinding::TlsExporter([0x66; 32]);
    let mut h = Harness::new();
    h.binding = exporter;
    h.transcript = TranscriptVersion::V2(exporter);
    h.login();

    let mut h = Harness::new();
    h.binding = exporter;
    h.connect();
    assert!(h.recv(welcome_version(1)).is_empty());
    assert_eq!(
        h.events(),
        vec![ClientEvent::ConnectionLost {
            reason: ConnectionError::UnsupportedVersion
        }]
    );
    assert_eq!(h.closes, 1);
}

/// On plaintext a server that predates channel binding may answer version
/// 1: the client then signs the v1 transcript.
#[test]
fn plaintext_connection_speaks_version_1_to_an_older_server() {
    let mut h = Harness::new();
    h.connect();
    assert_eq!(
        h.recv(welcome_version(1)),
        vec![ClientPacket::Login {
            user: name("alice")
        }]
    );
    h.transcript = TranscriptVersion::V1;
    assert!(h.challenge(AuthContext::Login).is_empty());
}
