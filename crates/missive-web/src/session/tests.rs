//! Sessions against the core's server, in memory, over a message transport
//! (as a WebSocket carries it): what the page sees.

use super::*;
use crate::test_keys::{ALICE, BOB};
use missive_core::ConnId;
use missive_core::server::{Input, Output, Server, ServerConfig, ServerState};

const T0_UNIX: UnixMillis = 1_750_000_000_000;

/// A server and the sessions connected to it, all in one thread; every
/// persistence command is durable at once.
struct Net {
    now: Instant,
    server: Server,
    /// Connected sessions, by connection.
    sessions: Vec<(ConnId, Session)>,
    next_conn: u64,
    /// What each connection's page saw, in order.
    seen: Vec<(ConnId, WebOutput)>,
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            now,
            server: Server::new(
                ServerConfig::default(),
                ServerState::default(),
                [7; 32],
                now,
                T0_UNIX,
            ),
            sessions: Vec::new(),
            next_conn: 1,
            seen: Vec::new(),
        }
    }

    fn session(user: &str, key: &[u8], state: Option<&[u8]>, register: bool) -> Session {
        Session::new(user, key, state, register, [3; 32], Instant::now(), T0_UNIX).unwrap()
    }

    /// Opens a socket for `session`, runs until quiet; returns the
    /// connection.
    fn connect(&mut self, mut session: Session) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.server.handle_input(
            self.now,
            Input::Connected(conn, Link::messages(ChannelBinding::None)),
        );
        session.connected(self.now);
        self.sessions.push((conn, session));
        self.run();
        conn
    }

    fn get(&mut self, conn: ConnId) -> &mut Session {
        &mut self
            .sessions
            .iter_mut()
            .find(|(c, _)| *c == conn)
            .expect("connected")
            .1
    }

    /// Moves packets both ways until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            for index in 0..self.sessions.len() {
                let conn = self.sessions[index].0;
                while let Some(output) = self.sessions[index].1.poll_output().unwrap() {
                    moved = true;
                    match &output {
                        WebOutput::Transmit { bytes } => {
                            self.server
                                .handle_input(self.now, Input::Bytes(conn, bytes));
                        }
                        WebOutput::Close => {
                            self.server
                                .handle_input(self.now, Input::Disconnected(conn));
                            self.sessions[index].1.disconnected(self.now);
                        }
                        WebOutput::State { .. } | WebOutput::Event { .. } => {}
                    }
                    self.seen.push((conn, output));
                }
            }
            let mut durable = None;
            while let Some(output) = self.server.poll_output() {
                moved = true;
                match output {
                    Output::Transmit { conn, bytes } => {
                        let now = self.now;
                        self.get(conn).receive(now, &bytes);
                    }
                    Output::Close { conn } => {
                        let now = self.now;
                        self.get(conn).disconnected(now);
                    }
                    Output::Persist { lsn, .. } => durable = Some(lsn),
                    _ => {}
                }
            }
            if let Some(lsn) = durable {
                self.server.handle_input(self.now, Input::Durable(lsn));
            }
            if !moved {
                return;
            }
        }
    }

    /// The events `conn`'s page saw, as JSON, forgetting them.
    fn events(&mut self, conn: ConnId) -> Vec<serde_json::Value> {
        let (mine, others) = std::mem::take(&mut self.seen)
            .into_iter()
            .partition::<Vec<_>, _>(|(c, _)| *c == conn);
        self.seen = others;
        mine.into_iter()
            .filter_map(|(_, output)| match output {
                WebOutput::Event { event } => Some(serde_json::to_value(event).unwrap()),
                _ => None,
            })
            .collect()
    }

    /// The last state `conn`'s page was asked to persist.
    fn last_state(&self, conn: ConnId) -> Vec<u8> {
        self.seen
            .iter()
            .rev()
            .find_map(|(c, output)| match output {
                WebOutput::State { state } if *c == conn => Some(state.to_vec()),
                _ => None,
            })
            .expect("a state was persisted")
    }
}

fn types(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect()
}

#[test]
fn two_pages_register_and_chat_both_ways() {
    let mut net = Net::new();
    let now = net.now;
    let alice = net.connect(Net::session("alice", &ALICE.der, None, true));
    let bob = net.connect(Net::session("bob", &BOB.der, None, true));
    assert_eq!(types(&net.events(alice)), ["registered", "logged_in"]);
    assert_eq!(types(&net.events(bob)), ["registered", "logged_in"]);
    assert!(net.get(alice).is_logged_in());
    assert_eq!(net.get(alice).user(), "alice");

    let id = net.get(alice).send(now, "bob", "hi bob ✓").unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(
        net.get(alice).pending(),
        [PendingMessage {
            id: id.clone(),
            to: "bob".into()
        }]
    );
    net.run();
    let received = net.events(bob);
    assert_eq!(types(&received), ["message"]);
    assert_eq!(received[0]["from"], "alice");
    assert_eq!(received[0]["id"], id.as_str());
    assert_eq!(received[0]["text"], "hi bob ✓");
    let marks = net.events(alice);
    assert_eq!(types(&marks), ["accepted", "delivered"]);
    assert!(
        marks
            .iter()
            .all(|m| m["id"] == id.as_str() && m["to"] == "bob")
    );
    assert!(net.get(alice).pending().is_empty());

    net.get(bob).send(now, "alice", "hi alice").unwrap();
    net.run();
    let received = net.events(alice);
    assert_eq!(types(&received), ["message"]);
    assert_eq!(received[0]["text"], "hi alice");

    // Each pinned the other's key on first use.
    let bob_fingerprint = net.get(bob).fingerprint();
    assert!(bob_fingerprint.starts_with("SHA256:"));
    assert_eq!(net.get(alice).pinned_users(), ["bob"]);
    assert_eq!(
        net.get(alice).pinned_fingerprint("bob"),
        Some(bob_fingerprint)
    );
    assert_eq!(net.get(alice).pinned_fingerprint("carol"), None);
    assert_eq!(net.get(alice).pinned_fingerprint("Not A Name"), None);
}

#[test]
fn saved_state_resumes_the_outbox_and_the_pins() {
    let mut net = Net::new();
    let now = net.now;
    let bob = net.connect(Net::session("bob", &BOB.der, None, true));
    let alice = net.connect(Net::session("alice", &ALICE.der, None, true));
    net.get(alice).send(now, "bob", "first").unwrap();
    net.run();
    // Bob goes away; alice queues while disconnected, then "reloads".
    net.server.handle_input(net.now, Input::Disconnected(bob));
    let mut offline = Net::session("alice", &ALICE.der, Some(&net.last_state(alice)), false);
    let queued = offline.send(now, "bob", "while offline").unwrap();
    let mut saved = None;
    while let Some(output) = offline.poll_output().unwrap() {
        if let WebOutput::State { state } = output {
            saved = Some(state.to_vec());
        }
    }
    let reloaded = Net::session("alice", &ALICE.der, saved.as_deref(), false);
    assert_eq!(reloaded.pinned_users(), ["bob"]);
    assert_eq!(reloaded.pending()[0].id, queued);
    net.server.handle_input(net.now, Input::Disconnected(alice));
    net.events(alice);
    let alice = net.connect(reloaded);
    let events = net.events(alice);
    assert_eq!(types(&events), ["logged_in", "accepted"]);
    assert_eq!(events[1]["id"], queued.as_str());
}

#[test]
fn login_without_registration_fails_with_a_sentence() {
    let mut net = Net::new();
    let carol = net.connect(Net::session("carol", &ALICE.der, None, false));
    // The page was told to close the socket.
    assert!(
        net.seen
            .iter()
            .any(|(c, output)| *c == carol && *output == WebOutput::Close)
    );
    let events = net.events(carol);
    assert_eq!(types(&events), ["login_failed", "disconnected"]);
    assert_eq!(events[0]["reason"], "not_registered");
    assert_eq!(
        events[0]["message"],
        "The name carol is not registered on this server: register it first."
    );
}

#[test]
fn registering_a_taken_name_fails() {
    let mut net = Net::new();
    net.connect(Net::session("alice", &ALICE.der, None, true));
    let thief = net.connect(Net::session("alice", &BOB.der, None, true));
    let events = net.events(thief);
    assert_eq!(events[0]["reason"], "name_taken");
    assert_eq!(
        events[0]["message"],
        "The name alice is already registered with another key."
    );
}

#[test]
fn send_refusals_are_readable() {
    let mut session = Net::session("alice", &ALICE.der, None, true);
    let now = Instant::now();
    let invalid = session.send(now, "Bob", "hi").unwrap_err();
    assert!(matches!(invalid, WebSendError::Recipient(_)));
    assert_eq!(
        invalid.to_string(),
        "\"Bob\" is not a valid user name: user name may only contain a-z, 0-9, '.', '_' and '-'"
    );
    let huge = "x".repeat(1 << 20);
    let too_large = session.send(now, "bob", &huge).unwrap_err();
    let WebSendError::TooLarge { len, max } = too_large else {
        panic!("{too_large}");
    };
    assert_eq!(len, 1 << 20);
    assert_eq!(
        too_large.to_string(),
        format!("message too large: {len} bytes, at most {max}")
    );
    assert!(session.pending().is_empty());
    assert!(session.query_presence(now, "").is_err());
    assert!(session.trust_key("a b").is_err());
}

#[test]
fn the_timer_is_armed_while_connected() {
    let mut net = Net::new();
    let now = net.now;
    let alice = net.connect(Net::session("alice", &ALICE.der, None, true));
    let ping = ServerConfig::default().ping_interval;
    let left = net.get(alice).next_timeout(now).expect("a ping is due");
    assert!(left <= ping, "{left:?} > {ping:?}");
    // Past the deadline: due now (never negative).
    let later = net.now + ping * 2;
    assert_eq!(net.get(alice).next_timeout(later), Some(Duration::ZERO));
    let session = Net::session("bob", &BOB.der, None, true);
    assert_eq!(session.next_timeout(now), None);
}

#[test]
fn bad_constructor_arguments_are_refused() {
    let now = Instant::now();
    let new = |user: &str, key: &[u8], state: Option<&[u8]>| {
        Session::new(user, key, state, false, [1; 32], now, T0_UNIX)
    };
    assert!(matches!(
        new("Alice", &ALICE.der, None),
        Err(NewSessionError::Name(_))
    ));
    assert!(matches!(
        new("alice", b"nope", None),
        Err(NewSessionError::Identity(_))
    ));
    assert!(matches!(
        new("alice", &ALICE.der, Some(b"\xff")),
        Err(NewSessionError::State(_))
    ));
}
