//! The client side of a driver, minus sockets and timers: the
//! [`ClientEngine`] wraps the core's [`Client`], saves its state in the home
//! directory, resolves the futures of `send` and presence queries from the
//! core's typed events, keeps the login's outcome for the supervisor, and
//! forwards every event to the application.
//!
//! A driver owns a socket and a timer and calls, in a loop:
//!
//! 1. [`ClientEngine::connected`] / [`received`](ClientEngine::received) /
//!    [`disconnected`](ClientEngine::disconnected) /
//!    [`timeout`](ClientEngine::timeout) for what happened, and the
//!    application's requests ([`send`](ClientEngine::send), ...);
//! 2. writes [`take_transmit`](ClientEngine::take_transmit), closes the
//!    socket on [`take_close`](ClientEngine::take_close);
//! 3. sleeps until [`poll_timeout`](ClientEngine::poll_timeout) or the next
//!    I/O.

use crate::home::{HomeError, UserHome};
use futures_channel::{mpsc, oneshot};
use futures_util::Stream;
use missive_core::client::{
    Client, ClientEvent, ClientInput, ClientOutput, ConnectionError, LoginError, SendFailure,
};
use missive_core::crypto::Fingerprint;
use missive_core::wire::Link;
use missive_core::{MessageId, UnixMillis, UserName};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Why a message could not be sent (the result of an awaited send).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The client did not queue the message (the outbox is full, or the
    /// body can never fit the server's envelope limit).
    #[error(transparent)]
    NotQueued(#[from] missive_core::client::SendError),
    /// The message to `to` left the outbox unsent: the server refused it,
    /// or the recipient's key did not allow sealing it.
    #[error("the message to {to} was not sent: {reason}")]
    Refused {
        /// The recipient.
        to: UserName,
        /// Why (typed by the core).
        reason: SendFailure,
    },
    /// The client stopped before the server accepted the message (it stays
    /// in the outbox and is sent by the next client of this user).
    #[error("the client stopped before the message was accepted")]
    Closed,
}

/// Presence of a user, answer to a presence query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// Online now.
    pub online: bool,
    /// When last seen online (Unix milliseconds), if known.
    pub last_seen_ms: Option<UnixMillis>,
}

/// Why a presence query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// No such user.
    #[error("unknown user {0}")]
    UnknownUser(UserName),
    /// The connection was lost before the answer came.
    #[error("disconnected before the answer came")]
    Disconnected,
    /// The client stopped.
    #[error("the client stopped")]
    Closed,
}

/// Why connecting (or logging in) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No TCP connection to the server.
    #[error("cannot reach the server at {addr}: {source}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server presented a certificate other than the one pinned for it
    /// (trust it again only if the change is expected).
    #[error(transparent)]
    ServerCertificateChanged(#[from] crate::driver::CertificateChanged),
    /// The home directory holds no key for the user (and generating one was
    /// not asked for).
    #[error("no key for {user} in the home directory")]
    NoKey {
        /// The user.
        user: UserName,
    },
    /// The server refused the registration or the login.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The connection failed before the login completed.
    #[error("the connection failed before the login: {0}")]
    ConnectionLost(ConnectionError),
    /// The connection ended before the login completed.
    #[error("the connection ended before the login completed")]
    Disconnected,
    /// The WebSocket handshake was refused, or the WebSocket closed with an
    /// error before the login completed.
    #[error(transparent)]
    WebSocket(#[from] crate::driver::WebSocketError),
    /// The home directory could not be read or written.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// Cluster nodes redirected the client this many times in a row
    /// without a login (a misconfigured cluster, or its shards moving
    /// faster than the client can follow).
    #[error("redirected {redirects} times in a row without a login (last to {last})")]
    RedirectLoop {
        /// The last address redirected to.
        last: String,
        /// Redirects followed.
        redirects: u32,
    },
    /// A cluster node redirected the client to a node whose certificate is
    /// not trusted: in a cluster, every node's certificate must chain to a
    /// CA the client is given (`missive --ca FILE`); certificates pinned on
    /// first use are never extended to other nodes.
    #[error(
        "redirected to {to}, whose certificate is not trusted (give the client the cluster's CA): {source}"
    )]
    UntrustedRedirect {
        /// The node redirected to.
        to: String,
        /// The refused handshake.
        #[source]
        source: io::Error,
    },
    /// Another I/O failure.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ConnectError {
    /// Whether retrying cannot help (the account, the key or the protocol
    /// version is the problem).
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectError::Login(LoginError::Refused { .. }) => false,
            ConnectError::Login(_)
            | ConnectError::NoKey { .. }
            | ConnectError::Home(_)
            | ConnectError::ServerCertificateChanged(_)
            | ConnectError::UntrustedRedirect { .. } => true,
            ConnectError::ConnectionLost(reason) => {
                matches!(reason, ConnectionError::UnsupportedVersion)
            }
            _ => false,
        }
    }
}

/// What a successful login reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginInfo {
    /// The server answered a registration on this connection (a new one,
    /// or, with [`Registration::Always`](missive_core::client::Registration::Always),
    /// the same name and key again).
    pub registered: bool,
    /// Items waiting in the mailbox at login.
    pub queued: u64,
}

/// The future result of a send: resolves when the server accepted the
/// message (its id) or refused it.
#[derive(Debug)]
pub struct SendTicket {
    rx: oneshot::Receiver<Result<MessageId, SendError>>,
}

impl SendTicket {
    /// A ticket and the sender that resolves it.
    pub fn new() -> (oneshot::Sender<Result<MessageId, SendError>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self { rx })
    }
}

impl Future for SendTicket {
    type Output = Result<MessageId, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(SendError::Closed)))
    }
}

/// Events for the application: every [`ClientEvent`] of the core (messages,
/// notices, acceptances, presence answers, key changes, disconnections),
/// in order. Ends when the client stops; if it stopped by itself because
/// reconnecting cannot help, [`gave_up`](Events::gave_up) then says why.
///
/// The channel is unbounded so that the client never stalls (pings, acks)
/// on a slow application: read it steadily. Received messages are already
/// acknowledged to the server, so dropping this stream loses them.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<ClientEvent>,
    gave_up: oneshot::Receiver<ConnectError>,
}

impl Events {
    /// The next event, or `None` once the client has stopped.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut self.rx).poll_next(cx)).await
    }

    /// The next event if one is waiting (`Ok(None)` if none is; `Err(())`
    /// once the client has stopped and every event was taken).
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<ClientEvent>, ()> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Closed) => Err(()),
        }
    }

    /// Why the client stopped by itself, after it lost a connection and
    /// retrying could not help: the server presented another certificate
    /// than the one pinned for it
    /// ([`ConnectError::ServerCertificateChanged`]), or refused the login
    /// for good (a [`ConnectError::Login`] that
    /// [`is_permanent`](ConnectError::is_permanent)). `None` while the
    /// client runs, and when it stopped because it was closed or dropped.
    /// Taken once.
    pub fn gave_up(&mut self) -> Option<ConnectError> {
        self.gave_up.try_recv().ok().flatten()
    }
}

impl Stream for Events {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

struct PresenceWaiter {
    user: UserName,
    /// The connection epoch in which the query went out (None: queued in
    /// the core until the next login).
    epoch: Option<u64>,
    reply: oneshot::Sender<Result<Presence, PresenceError>>,
}

/// Where the engine's transport connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    /// No transport connection.
    Down,
    /// Connected, the login under way.
    LoggingIn {
        /// Whether the server registered the user on this connection.
        registered: bool,
    },
    /// Logged in.
    LoggedIn,
}

/// The runtime-independent half of a client driver. See the
/// [module docs](self).
pub struct ClientEngine {
    client: Client,
    home: Option<UserHome>,
    events: mpsc::UnboundedSender<ClientEvent>,
    sends: HashMap<MessageId, oneshot::Sender<Result<MessageId, SendError>>>,
    presence: Vec<PresenceWaiter>,
    /// What the core transmitted, one buffer per `Transmit` (one packet on
    /// a message transport, which must not be merged).
    outgoing: Vec<Vec<u8>>,
    close: bool,
    connection: Connection,
    epoch: u64,
    login: Option<LoginInfo>,
    refusal: Option<ConnectError>,
    /// Where a cluster node redirected the current connection.
    redirect: Option<String>,
    /// Where the reason goes if the client gives up (see [`Events::gave_up`]).
    gave_up: Option<oneshot::Sender<ConnectError>>,
    dirty_since: Option<Instant>,
    save_delay: Duration,
}

impl std::fmt::Debug for ClientEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEngine")
            .field("user", self.client.user())
            .field("connection", &self.connection)
            .field("pending_sends", &self.sends.len())
            .finish_non_exhaustive()
    }
}

impl ClientEngine {
    /// Wraps `client`. Its state is saved to `home` (if given) at most
    /// `save_delay` after it changes (zero: at once), and on
    /// [`flush_state`](ClientEngine::flush_state).
    pub fn new(client: Client, home: Option<UserHome>, save_delay: Duration) -> (Self, Events) {
        let (tx, rx) = mpsc::unbounded();
        let (gave_up, gave_up_rx) = oneshot::channel();
        let mut engine = Self {
            client,
            home,
            events: tx,
            sends: HashMap::new(),
            presence: Vec::new(),
            outgoing: Vec::new(),
            close: false,
            connection: Connection::Down,
            epoch: 0,
            login: None,
            refusal: None,
            redirect: None,
            gave_up: Some(gave_up),
            dirty_since: None,
            save_delay,
        };
        engine.drain(Instant::now());
        (
            engine,
            Events {
                rx,
                gave_up: gave_up_rx,
            },
        )
    }

    /// The client stops by itself because of `reason` (reconnecting cannot
    /// help): [`Events::gave_up`] reports it once the events end.
    pub fn give_up(&mut self, reason: ConnectError) {
        tracing::error!("not reconnecting: {reason}");
        if let Some(slot) = self.gave_up.take() {
            let _ = slot.send(reason);
        }
    }

    /// A transport connection is open, with this framing and channel
    /// binding.
    pub fn connected(&mut self, now: Instant, link: Link) {
        self.connection = Connection::LoggingIn { registered: false };
        self.epoch += 1;
        self.close = false;
        self.outgoing.clear();
        self.client.handle_input(now, ClientInput::Connected(link));
        self.drain(now);
    }

    /// Bytes arrived.
    pub fn received(&mut self, now: Instant, bytes: &[u8]) {
        self.client.handle_input(now, ClientInput::Bytes(bytes));
        self.drain(now);
    }

    /// The transport connection is gone.
    pub fn disconnected(&mut self, now: Instant) {
        if self.connection == Connection::Down {
            return;
        }
        self.connection = Connection::Down;
        self.outgoing.clear();
        self.close = false;
        self.client.handle_input(now, ClientInput::Disconnected);
        let epoch = self.epoch;
        for waiter in std::mem::take(&mut self.presence) {
            if waiter.epoch == Some(epoch) {
                let _ = waiter.reply.send(Err(PresenceError::Disconnected));
            } else {
                self.presence.push(waiter);
            }
        }
        self.drain(now);
    }

    /// The time from [`poll_timeout`](ClientEngine::poll_timeout) has come.
    pub fn timeout(&mut self, now: Instant) {
        if self.dirty_since.is_some_and(|t| t + self.save_delay <= now) {
            self.save();
        }
        self.client.handle_input(now, ClientInput::Timeout);
        self.drain(now);
    }

    /// When to call [`timeout`](ClientEngine::timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let save = self.dirty_since.map(|t| t + self.save_delay);
        match (self.client.poll_timeout(), save) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Queues `body` for `to`; `reply` gets the id once the server accepted
    /// it, or the reason it never will.
    pub fn send(
        &mut self,
        now: Instant,
        to: UserName,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<MessageId, SendError>>,
    ) {
        match self.client.send(now, to, body) {
            Ok(id) => {
                self.sends.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
        self.drain(now);
    }

    /// Announces presence (`true`: online, deliveries flow).
    pub fn set_presence(&mut self, now: Instant, online: bool) {
        self.client.set_presence(now, online);
        self.drain(now);
    }

    /// Asks for `user`'s presence; the answer comes as an event and, if
    /// given, through `reply`.
    pub fn query_presence(
        &mut self,
        now: Instant,
        user: UserName,
        reply: Option<oneshot::Sender<Result<Presence, PresenceError>>>,
    ) {
        let epoch = self.client.is_logged_in().then_some(self.epoch);
        self.client.query_presence(now, user.clone());
        if let Some(reply) = reply {
            self.presence.push(PresenceWaiter { user, epoch, reply });
        }
        self.drain(now);
    }

    /// Trusts the key the server now offers for `user` (after a key change).
    pub fn trust_key(&mut self, now: Instant, user: &UserName) {
        self.client.trust_key(user);
        self.drain(now);
    }

    /// The fingerprint of the key pinned for `user`, if any.
    pub fn pinned_fingerprint(&self, user: &UserName) -> Option<Fingerprint> {
        self.client
            .state()
            .pinned_key(user)
            .map(Fingerprint::of_spki_der)
    }

    /// The buffers to write to the connection, in order, each one
    /// `Transmit` of the core: on a message transport (WebSocket) each is
    /// exactly one packet and goes out as one message.
    pub fn take_transmit(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outgoing)
    }

    /// Whether the core asked to close the connection (write what
    /// [`take_transmit`](ClientEngine::take_transmit) returned first, then
    /// close and call [`disconnected`](ClientEngine::disconnected)).
    pub fn take_close(&mut self) -> bool {
        std::mem::take(&mut self.close)
    }

    /// The login that just succeeded, once.
    pub fn take_login(&mut self) -> Option<LoginInfo> {
        self.login.take()
    }

    /// Why the current connection failed before its login, once.
    pub fn take_refusal(&mut self) -> Option<ConnectError> {
        self.refusal.take()
    }

    /// Where a cluster node redirected the connection that just ended,
    /// once.
    pub fn take_redirect(&mut self) -> Option<String> {
        self.redirect.take()
    }

    /// Whether the current connection is logged in.
    pub fn is_logged_in(&self) -> bool {
        self.connection == Connection::LoggedIn
    }

    /// Sends waiting for the server's answer.
    pub fn pending_sends(&self) -> usize {
        self.sends.len()
    }

    /// The core client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Saves the state now if it changed.
    pub fn flush_state(&mut self) -> Result<(), HomeError> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        self.dirty_since = None;
        match &self.home {
            Some(home) => home.save_state(self.client.state()),
            None => Ok(()),
        }
    }

    /// Saves the state and fails every waiting request with "closed".
    pub fn shutdown(&mut self) -> Result<(), HomeError> {
        for (_, reply) in self.sends.drain() {
            let _ = reply.send(Err(SendError::Closed));
        }
        for waiter in self.presence.drain(..) {
            let _ = waiter.reply.send(Err(PresenceError::Closed));
        }
        self.flush_state()
    }

    fn save(&mut self) {
        if let Err(e) = self.flush_state() {
            tracing::error!("cannot save the client state: {e}");
        }
    }

    fn drain(&mut self, now: Instant) {
        while let Some(output) = self.client.poll_output() {
            match output {
                ClientOutput::Transmit(bytes) => self.outgoing.push(bytes),
                ClientOutput::Close => self.close = true,
                ClientOutput::StateChanged => {
                    self.dirty_since.get_or_insert(now);
                }
                ClientOutput::Event(event) => self.on_event(event),
            }
        }
        if self.save_delay.is_zero() && self.dirty_since.is_some() {
            self.save();
        }
    }

    fn on_event(&mut self, event: ClientEvent) {
        match &event {
            ClientEvent::Registered => {
                if let Connection::LoggingIn { registered } = &mut self.connection {
                    *registered = true;
                }
            }
            ClientEvent::LoggedIn { queued } => {
                let registered = self.connection == Connection::LoggingIn { registered: true };
                self.connection = Connection::LoggedIn;
                self.login = Some(LoginInfo {
                    registered,
                    queued: *queued,
                });
                // Queries queued in the core went out with the login.
                for waiter in &mut self.presence {
                    waiter.epoch.get_or_insert(self.epoch);
                }
            }
            ClientEvent::LoginFailed(error) => self.refuse(ConnectError::Login(error.clone())),
            ClientEvent::Redirected { address } => self.redirect = Some(address.clone()),
            ClientEvent::ConnectionLost { reason } if !self.is_logged_in() => {
                self.refuse(ConnectError::ConnectionLost(reason.clone()))
            }
            ClientEvent::Accepted { id, .. } => {
                if let Some(reply) = self.sends.remove(id) {
                    let _ = reply.send(Ok(*id));
                }
            }
            ClientEvent::SendFailed { to, id, reason } => {
                if let Some(reply) = self.sends.remove(id) {
                    let _ = reply.send(Err(SendError::Refused {
                        to: to.clone(),
                        reason: *reason,
                    }));
                }
            }
            ClientEvent::PresenceChanged {
                user,
                online,
                last_seen_ms,
            } => self.answer_presence(
                user,
                Ok(Presence {
                    online: *online,
                    last_seen_ms: *last_seen_ms,
                }),
            ),
            ClientEvent::PresenceUnknown { user } => {
                self.answer_presence(user, Err(PresenceError::UnknownUser(user.clone())))
            }
            _ => {}
        }
        let _ = self.events.unbounded_send(event);
    }

    /// Resolves the oldest waiting query about `user` (the core answers
    /// queries about one user in order).
    fn answer_presence(&mut self, user: &UserName, answer: Result<Presence, PresenceError>) {
        if let Some(pos) = self.presence.iter().position(|w| w.user == *user) {
            let waiter = self.presence.remove(pos);
            let _ = waiter.reply.send(answer);
        }
    }

    /// Keeps why the connection failed before its login, for the supervisor.
    fn refuse(&mut self, error: ConnectError) {
        if self.connection != Connection::Down && self.refusal.is_none() {
            self.refusal = Some(error);
        }
    }
}
