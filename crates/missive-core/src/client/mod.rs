//! The client state machine (sans-IO).
//!
//! A [`Client`] speaks the Missive protocol for one user over one transport
//! connection at a time. It performs no I/O: the driver feeds it transport
//! events and received bytes with [`Client::handle_input`], drains what it
//! must do with [`Client::poll_output`] (bytes to write, a close, a durable
//! state to persist, events for the user) and wakes it at
//! [`Client::poll_timeout`]. The shape follows quinn-proto and str0m.
//!
//! What the client does on its own:
//!
//! * the handshake: `Hello`, then `Login` answered by a signed `Prove`, with
//!   a `Register` first as [`ClientConfig::registration`] says;
//! * keep-alive pings at the interval the server announces;
//! * the durable outbox ([`ClientState`]): messages are sealed once, and
//!   resent with the same id and the same bytes after a reconnect until the
//!   server accepts them; recipients' keys are fetched and pinned on first
//!   use (trust on first use);
//! * receiving: every delivered item is acknowledged first; redeliveries are
//!   dropped; envelopes from senders whose key is not yet known are kept
//!   until it is fetched. Undecryptable messages are reported locally only.
//!
//! What it reports, as [`ClientEvent`]s — typed outcomes, so that no layer
//! above reads a wire [`ErrorCode`](crate::wire::ErrorCode):
//!
//! * the handshake: [`Registered`](ClientEvent::Registered),
//!   [`LoggedIn`](ClientEvent::LoggedIn), or
//!   [`LoginFailed`](ClientEvent::LoginFailed) with a [`LoginError`]
//!   (`NotRegistered`, `NameTaken` — the server's answer to `Register`, see
//!   [`Registration::Always`] —, `SignatureRejected`, `KeyRejected`, or
//!   `Refused` with another code);
//! * the end of a connection: [`ConnectionLost`](ClientEvent::ConnectionLost)
//!   with a [`ConnectionError`] when the server closed it with a fatal code
//!   (turned into a reason: `SessionReplaced`, `TimedOut`, ...) or sent
//!   something unacceptable, then [`Disconnected`](ClientEvent::Disconnected)
//!   once the driver reports the transport gone;
//! * each message of the outbox: [`Accepted`](ClientEvent::Accepted), or
//!   [`SendFailed`](ClientEvent::SendFailed) with a [`SendFailure`]
//!   (`UnknownUser`, `QueueFull`, `TooLarge`, `KeyChanged`, `BadKey`, or
//!   `Rejected` with any other code); `RateLimited`, `Busy`,
//!   `StorageUnavailable` and (cluster) `Unavailable` are retried,
//!   not reported; then [`Delivered`](ClientEvent::Delivered) or
//!   [`Expired`](ClientEvent::Expired);
//! * each presence query: [`PresenceChanged`](ClientEvent::PresenceChanged)
//!   or [`PresenceUnknown`](ClientEvent::PresenceUnknown), paired with the
//!   outstanding query by the client;
//! * receiving: [`MessageReceived`](ClientEvent::MessageReceived),
//!   [`UndecryptableMessage`](ClientEvent::UndecryptableMessage),
//!   [`KeyChanged`](ClientEvent::KeyChanged);
//! * [`RequestRefused`](ClientEvent::RequestRefused): a refusal the client
//!   cannot attribute to anything it asked (diagnostics only).

mod config;
mod events;
mod inbound;
mod keys;
mod outbox;
mod session;
mod state;
#[cfg(test)]
mod tests;

pub use config::{ClientConfig, Registration};
pub use events::{
    ClientEvent, ClientInput, ClientOutput, ConnectionError, LoginError, SendError, SendFailure,
};
pub use state::{ClientState, OutboxEntry, ParkedEnvelope, StateDecodeError, StateEncodeError};

use crate::crypto::Identity;
use crate::rng::{self, CoreRng};
use crate::time::Instant;
use crate::types::{MessageId, PeerKeyHasher, UnixMillis, UserName};
use crate::wire::ClientPacket;
use session::{Outputs, Phase, Request, Session};

/// The client state machine of one user.
///
/// # Driving it
///
/// ```no_run
/// use missive_core::client::{Client, ClientConfig, ClientEvent, ClientInput, ClientOutput, ClientState};
/// use missive_core::crypto::Identity;
/// use missive_core::wire::Link;
/// use missive_core::{rng, UserName};
/// use missive_core::time::Instant;
/// use std::time::Duration;
///
/// # struct Transport;
/// # impl Transport {
/// #     fn read(&mut self, _buf: &mut [u8], _deadline: Option<Instant>) -> Option<usize> { None }
/// #     fn write_all(&mut self, _bytes: &[u8]) {}
/// #     fn close(&mut self) {}
/// # }
/// # fn connect() -> Transport { Transport }
/// # fn save(_state: &ClientState) {}
/// # fn os_seed() -> [u8; 32] { [0; 32] }
/// # fn unix_ms_now() -> u64 { 0 }
/// let identity = Identity::generate(&mut rng::from_seed(os_seed()), 2048).unwrap();
/// let config = ClientConfig::new(UserName::new("alice").unwrap());
/// let state = ClientState::default(); // or the one saved last time
/// let mut client = Client::new(config, identity, state, os_seed(), Instant::now(), unix_ms_now());
///
/// let mut transport = connect();
/// client.handle_input(Instant::now(), ClientInput::Connected(Link::PLAINTEXT));
/// client.send(Instant::now(), UserName::new("bob").unwrap(), b"hi bob".to_vec()).unwrap();
/// let mut buf = vec![0u8; 64 * 1024];
/// 'conn: loop {
///     // 1. Do everything the client asks for.
///     while let Some(output) = client.poll_output() {
///         match output {
///             ClientOutput::Transmit(bytes) => transport.write_all(&bytes),
///             ClientOutput::StateChanged => save(client.state()),
///             ClientOutput::Close => {
///                 transport.close();
///                 client.handle_input(Instant::now(), ClientInput::Disconnected);
///             }
///             ClientOutput::Event(ClientEvent::Disconnected) => break 'conn,
///             ClientOutput::Event(event) => println!("{event:?}"),
///         }
///     }
///     // 2. Wait for bytes or for the next deadline.
///     match transport.read(&mut buf, client.poll_timeout()) {
///         Some(0) => client.handle_input(Instant::now(), ClientInput::Disconnected),
///         Some(n) => client.handle_input(Instant::now(), ClientInput::Bytes(&buf[..n])),
///         None => client.handle_input(Instant::now(), ClientInput::Timeout),
///     }
/// }
/// // Reconnect later: the outbox is resent after the next login.
/// ```
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    identity: Identity,
    state: ClientState,
    rng: CoreRng,
    start: Instant,
    unix_ms_at_start: UnixMillis,
    /// Presence wanted (announced after every login).
    online: bool,
    /// Presence queries made while not logged in.
    queued_queries: Vec<UserName>,
    /// The envelope limit announced by the last Welcome.
    max_envelope: Option<u32>,
    conn: Option<Session>,
    out: Outputs,
    /// Key of the hash tables (from the seed).
    hasher: PeerKeyHasher,
}

impl Client {
    /// A client for `config.user` holding `identity`, resuming from `state`
    /// (use `ClientState::default()` the first time). `seed` seeds all of
    /// its randomness; `now` and `unix_ms` are the same instant on the
    /// monotonic and the wall clock.
    pub fn new(
        config: ClientConfig,
        identity: Identity,
        mut state: ClientState,
        seed: [u8; 32],
        now: Instant,
        unix_ms: UnixMillis,
    ) -> Self {
        let mut out = Outputs::default();
        // Hash tables keyed by ids other users choose: keyed from the seed.
        let hasher = PeerKeyHasher::with_key(rng::hash_key(&seed));
        state.seen.rekey(&hasher);
        state.seen_notices.rekey(&hasher);
        let trimmed_seen = state.seen.trim(config.seen_capacity);
        let trimmed_notices = state.seen_notices.trim(config.seen_capacity);
        if trimmed_seen || trimmed_notices {
            out.changed();
        }
        Self {
            online: config.start_online,
            config,
            identity,
            state,
            rng: rng::from_seed(seed),
            hasher,
            start: now,
            unix_ms_at_start: unix_ms,
            queued_queries: Vec::new(),
            max_envelope: None,
            conn: None,
            out,
        }
    }

    /// Feeds one transport event or received bytes.
    pub fn handle_input(&mut self, now: Instant, input: ClientInput<'_>) {
        match input {
            ClientInput::Connected(link) => self.on_connected(now, link),
            ClientInput::Bytes(bytes) => self.on_bytes(now, bytes),
            ClientInput::Disconnected => self.on_disconnected(),
            ClientInput::Timeout => self.on_timeout(now),
        }
    }

    /// The next thing for the driver to do, if any. Call until `None` after
    /// every call that takes `now`.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop()
    }

    /// When to feed [`ClientInput::Timeout`] next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.as_ref()?.next_deadline()
    }

    /// Queues `body` for `to` in the durable outbox and returns its id. It
    /// goes out when logged in; [`ClientEvent::Accepted`] reports that the
    /// server holds it, and it is resent (same id, same bytes) after
    /// reconnects until then.
    pub fn send(
        &mut self,
        now: Instant,
        to: UserName,
        body: Vec<u8>,
    ) -> Result<MessageId, SendError> {
        self.enqueue(now, to, body)
    }

    /// Says online (`true`: deliveries flow) or offline. Sent now when
    /// logged in, and after every later login.
    pub fn set_presence(&mut self, _now: Instant, online: bool) {
        self.online = online;
        if self.is_logged_in() {
            self.transmit(&ClientPacket::SetPresence { online });
        }
    }

    /// Asks whether `user` is online; answered by
    /// [`ClientEvent::PresenceChanged`], or [`ClientEvent::PresenceUnknown`]
    /// when the server does not know `user`. Sent after login when not
    /// logged in.
    pub fn query_presence(&mut self, _now: Instant, user: UserName) {
        if self.is_logged_in() {
            self.send_presence_query(user);
        } else if !self.queued_queries.contains(&user) {
            self.queued_queries.push(user);
        }
    }

    /// Forgets the pinned key of `user` (after a [`ClientEvent::KeyChanged`]
    /// the user accepted), so that the next fetch pins the key the server
    /// offers then.
    pub fn trust_key(&mut self, user: &UserName) {
        if self.state.pinned.remove(user).is_some() {
            self.out.changed();
            self.pump();
        }
    }

    /// The durable state, to persist on [`ClientOutput::StateChanged`].
    pub fn state(&self) -> &ClientState {
        &self.state
    }

    /// Whether the current connection is logged in.
    pub fn is_logged_in(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.phase == Phase::LoggedIn)
    }

    /// The user this client is for.
    pub fn user(&self) -> &UserName {
        &self.config.user
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Wall-clock time at `now`.
    fn unix_ms(&self, now: Instant) -> UnixMillis {
        crate::types::unix_at(self.unix_ms_at_start, self.start, now)
    }

    /// Queues one packet on the current connection. Returns whether it was.
    /// A packet that cannot be framed (the server announced a frame limit
    /// too small for it) leaves the connection useless: it is closed.
    fn transmit(&mut self, packet: &ClientPacket) -> bool {
        let Some(conn) = self.conn.as_ref() else {
            return false;
        };
        if conn.phase == Phase::Closed {
            return false;
        }
        match self.out.frame(conn.framing, conn.max_frame, packet) {
            Ok(()) => true,
            Err(e) => {
                self.close_on_violation(format!(
                    "the server's frame limit is too small to send a packet: {e}"
                ));
                false
            }
        }
    }

    fn send_presence_query(&mut self, user: UserName) {
        if self.transmit(&ClientPacket::QueryPresence { user: user.clone() })
            && let Some(conn) = self.conn.as_mut()
        {
            conn.requests.push_back(Request::QueryPresence(user));
        }
    }

    /// Reports why the connection ends (`event`) and asks the driver to
    /// close it.
    fn close_with(&mut self, event: ClientEvent) {
        self.out.event(event);
        if let Some(conn) = self.conn.as_mut()
            && conn.phase != Phase::Closed
        {
            conn.phase = Phase::Closed;
            conn.next_ping = None;
            self.out.close();
        }
    }

    /// Closes the connection because of something the server sent.
    fn close_on_violation(&mut self, detail: String) {
        self.close_with(ClientEvent::ConnectionLost {
            reason: ConnectionError::ProtocolViolation { detail },
        });
    }
}
