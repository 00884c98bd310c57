//! Core + durable store, in one process and without sockets: the server
//! state machine persists through the redb store's group-commit thread, is
//! "killed" (dropped without a shutdown), rebuilt from disk, and the
//! recipient then receives every accepted message exactly once.

use missive::core::client::{
    Client, ClientConfig, ClientEvent, ClientInput, ClientOutput, ClientState,
};
use missive::core::crypto::Identity;
use missive::core::rng;
use missive::core::server::{Input, Output, Server, ServerConfig};
use missive::core::{ConnId, Lsn, MessageId, UserName};
use missive::store::{RedbStore, Store, StoreEvent, StoreThread};
use std::collections::HashSet;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const UNIX0: u64 = 1_760_000_000_000;

fn identities() -> &'static [Identity; 2] {
    static IDS: OnceLock<[Identity; 2]> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut rng = rng::from_seed([42; 32]);
        [(); 2].map(|()| Identity::generate(&mut rng, 2048).expect("keygen"))
    })
}

fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

/// A server whose persistence goes through a real `StoreThread`.
struct Node {
    server: Server,
    store: StoreThread,
    durable: Receiver<StoreEvent>,
    now: Instant,
}

impl Node {
    fn start(dir: &std::path::Path, seed: u8, now: Instant) -> Self {
        let mut store = RedbStore::open(dir).expect("open store");
        let state = store.load().expect("load");
        let (tx, durable) = channel();
        let store = StoreThread::spawn(store, move |e| {
            let _ = tx.send(e);
        });
        let server = Server::new(ServerConfig::default(), state, [seed; 32], now, UNIX0);
        let mut node = Self {
            server,
            store,
            durable,
            now,
        };
        node.pump_store(true);
        node
    }

    /// Hands Persist commands to the store; optionally waits for them.
    fn pump_store(&mut self, wait: bool) -> Vec<Output> {
        let mut others = Vec::new();
        let mut highest = None;
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Persist { lsn, cmd } => {
                    self.store.submit(lsn, cmd).expect("submit");
                    highest = Some(lsn);
                }
                other => others.push(other),
            }
        }
        if wait && highest.is_some() {
            self.store.flush().expect("flush");
        }
        while let Ok(event) = self.durable.try_recv() {
            match event {
                StoreEvent::Durable(lsn) => self.durable_input(lsn),
                StoreEvent::Failed(e) => panic!("store failed: {e}"),
                _ => {}
            }
        }
        others
    }

    fn durable_input(&mut self, lsn: Lsn) {
        self.server.handle_input(self.now, Input::Durable(lsn));
    }
}

/// One client connected to a node, bytes passed by hand.
struct Peer {
    client: Client,
    conn: ConnId,
    events: Vec<ClientEvent>,
}

impl Peer {
    fn new(user: &str, identity: &Identity, conn: u64, now: Instant) -> Self {
        let client = Client::new(
            ClientConfig::new(name(user)),
            identity.clone(),
            ClientState::default(),
            [conn as u8; 32],
            now,
            UNIX0,
        );
        Self {
            client,
            conn: ConnId(conn),
            events: Vec::new(),
        }
    }
}

/// Moves bytes both ways until nothing moves.
fn exchange(node: &mut Node, peers: &mut [&mut Peer]) {
    for _ in 0..10_000 {
        let mut moved = false;
        for peer in peers.iter_mut() {
            while let Some(out) = peer.client.poll_output() {
                match out {
                    ClientOutput::Transmit(bytes) => {
                        node.server
                            .handle_input(node.now, Input::Bytes(peer.conn, &bytes));
                        moved = true;
                    }
                    ClientOutput::Event(e) => peer.events.push(e),
                    _ => {}
                }
            }
        }
        for out in node.pump_store(true) {
            if let Output::Transmit { conn, bytes } = out
                && let Some(peer) = peers.iter_mut().find(|p| p.conn == conn)
            {
                peer.client
                    .handle_input(node.now, ClientInput::Bytes(&bytes));
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
    panic!("exchange did not settle");
}

fn connect(node: &mut Node, peer: &mut Peer) {
    node.server.handle_input(
        node.now,
        Input::Connected(peer.conn, missive_core::wire::Link::PLAINTEXT),
    );
    peer.client.handle_input(
        node.now,
        ClientInput::Connected(missive_core::wire::Link::PLAINTEXT),
    );
}

#[test]
fn accepted_messages_survive_a_server_kill_with_the_redb_store() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let [alice_key, bob_key] = identities();

    // First run: bob registers and leaves; alice sends 20 messages.
    let mut node = Node::start(dir.path(), 1, t0);
    let mut bob = Peer::new("bob", bob_key, 1, t0);
    connect(&mut node, &mut bob);
    exchange(&mut node, &mut [&mut bob]);
    assert!(bob.client.is_logged_in());
    node.server
        .handle_input(node.now, Input::Disconnected(bob.conn));
    bob.client.handle_input(node.now, ClientInput::Disconnected);

    let mut alice = Peer::new("alice", alice_key, 2, t0);
    connect(&mut node, &mut alice);
    exchange(&mut node, &mut [&mut alice]);
    let mut sent: Vec<MessageId> = Vec::new();
    for i in 0..20 {
        let id = alice
            .client
            .send(node.now, name("bob"), format!("message {i}").into_bytes())
            .unwrap();
        sent.push(id);
    }
    exchange(&mut node, &mut [&mut alice]);
    let accepted: HashSet<MessageId> = alice
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Accepted { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(accepted.len(), 20, "all 20 accepted: {:?}", alice.events);

    // Kill: drop the server without shutdown (the store thread has made
    // everything that was acknowledged durable; nothing else is kept).
    drop(node);

    // Second run on the same directory: bob comes back and gets everything.
    let t1 = t0 + Duration::from_secs(5);
    let mut node = Node::start(dir.path(), 2, t1);
    assert_eq!(
        node.server
            .state()
            .user(&name("bob"))
            .unwrap()
            .mailbox
            .message_count,
        20
    );
    let mut bob = Peer {
        client: bob.client,
        conn: ConnId(3),
        events: Vec::new(),
    };
    connect(&mut node, &mut bob);
    exchange(&mut node, &mut [&mut bob]);
    let received: Vec<(MessageId, Vec<u8>)> = bob
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MessageReceived { id, body, .. } => Some((*id, body.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(received.len(), 20);
    for (i, (id, body)) in received.iter().enumerate() {
        assert_eq!(*id, sent[i], "in order");
        assert_eq!(body, format!("message {i}").as_bytes());
    }
    // Every ack is persisted: the queue is empty on disk after a flush.
    node.pump_store(true);
    node.store.flush().unwrap();
    let mut reopened_state = {
        drop(node);
        RedbStore::open(dir.path()).unwrap()
    };
    let state = reopened_state.load().unwrap();
    assert_eq!(state.user(&name("bob")).unwrap().mailbox.message_count, 0);
}
