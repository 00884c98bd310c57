//! The client driver's connection policy, minus sockets and timers: what a
//! client task does between "the application asked" and "the socket said",
//! identical for every runtime.
//!
//! - [`ClientOptions`] and [`prepare_client`]: load (or make) the key and the
//!   saved state, and build the [`ClientEngine`] (blocking: run it on a
//!   blocking thread);
//! - [`ClientCommands`] / [`CommandReceiver`]: the channel from the
//!   application's handle to the client task (`futures-channel`, any
//!   executor);
//! - [`ClientSupervisor`]: connecting, the login deadline, reporting the
//!   first login (or why it failed) to [`LoginWaiter`], following a cluster
//!   node's redirect, reconnecting with [`Backoff`] while keeping the
//!   outbox, and stopping.
//!
//! A redirect (docs/PROTOCOL.md, cluster redirects) is followed at once:
//! the same identity and outbox on a connection to the address given. If
//! that node cannot be reached, the client goes back to the configured
//! server after the usual backoff; at most [`MAX_REDIRECTS`] redirects are
//! followed in a row without a login, then the client goes back to the
//! configured server after the usual backoff (shards may be moving between
//! nodes) — and a first connect still without a login at its deadline
//! fails with [`ConnectError::RedirectLoop`]. The address is verified like the
//! configured one by the connector (a CA-issued certificate must name it);
//! a certificate refused there is [`ConnectError::UntrustedRedirect`],
//! never a pin of a new certificate.
//!
//! A driver's client task owns the supervisor, a socket and a timer, and
//! loops:
//!
//! 1. perform every [`LinkAction`] from
//!    [`poll_action`](ClientSupervisor::poll_action) (start connecting,
//!    write bytes, close the link);
//! 2. stop if [`is_stopped`](ClientSupervisor::is_stopped);
//! 3. wait for a command, the connection attempt, bytes, or the deadline of
//!    [`poll_timeout`](ClientSupervisor::poll_timeout), and feed it:
//!    [`command`](ClientSupervisor::command),
//!    [`connected`](ClientSupervisor::connected) /
//!    [`connect_failed`](ClientSupervisor::connect_failed),
//!    [`received`](ClientSupervisor::received) /
//!    [`lost`](ClientSupervisor::lost),
//!    [`timeout`](ClientSupervisor::timeout);
//!
//! then [`finish`](ClientSupervisor::finish) (perform its actions, let the
//! writer flush briefly) and [`finished`](ClientSupervisor::finished).

use crate::backoff::Backoff;
use crate::client::{
    ClientEngine, ConnectError, Events, LoginInfo, Presence, PresenceError, SendError, SendTicket,
};
use crate::driver::{CertificateChanged, WebSocketError, certificate_refused};
use crate::home::{ClientHome, HomeError};
use crate::os::{os_seed, unix_ms_now};
use futures_channel::{mpsc, oneshot};
use futures_util::Stream;
use missive_core::client::{Client, ClientConfig, ConnectionError, Registration};
use missive_core::crypto::{DEFAULT_KEY_BITS, Fingerprint};
use missive_core::wire::Link;
use missive_core::{MessageId, UserName};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Redirects followed in a row without a login before the client gives up
/// on them ([`ConnectError::RedirectLoop`]).
pub const MAX_REDIRECTS: u32 = 3;

/// Settings of a client connection. Build with [`ClientOptions::new`] and
/// adjust the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// `host:port` of the server.
    pub server: String,
    /// The client home directory (keys and states of users).
    pub home: PathBuf,
    /// The user to log in as.
    pub user: UserName,
    /// Whether and when to register the user (default
    /// [`Registration::IfUnknown`]). With [`Registration::Never`],
    /// connecting as an unknown user fails with
    /// [`LoginError::NotRegistered`](missive_core::client::LoginError::NotRegistered).
    pub registration: Registration,
    /// Generate and store a key when the home has none (default `true`).
    /// When `false`, a missing key fails with [`ConnectError::NoKey`].
    pub generate_key: bool,
    /// Size of generated keys (default 2048 bits).
    pub key_bits: usize,
    /// Presence after login (default online: messages are delivered).
    pub start_online: bool,
    /// Reconnect after the connection drops (default `true`). When `false`
    /// the client stops at the first disconnection.
    pub reconnect: bool,
    /// First reconnection delay (default 200 ms); doubles up to
    /// [`backoff_max`](ClientOptions::backoff_max).
    pub backoff_initial: Duration,
    /// Longest reconnection delay (default 10 s).
    pub backoff_max: Duration,
    /// Time allowed to connect and log in (default 10 s).
    pub connect_timeout: Duration,
    /// Delay for grouping state saves (default 100 ms; zero saves after
    /// every change). The state is always saved when the client stops.
    pub state_save_delay: Duration,
    /// Most messages in the outbox (default 1000).
    pub max_outbox: usize,
    /// Most sends on the wire not yet accepted (default 64).
    pub max_sends_in_flight: usize,
}

impl ClientOptions {
    /// Defaults for `user` on `server`, with keys and state in `home`.
    pub fn new(server: impl Into<String>, home: impl Into<PathBuf>, user: UserName) -> Self {
        let defaults = ClientConfig::new(user.clone());
        Self {
            server: server.into(),
            home: home.into(),
            user,
            registration: defaults.registration,
            generate_key: true,
            key_bits: DEFAULT_KEY_BITS,
            start_online: true,
            reconnect: true,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            state_save_delay: Duration::from_millis(100),
            max_outbox: defaults.max_outbox,
            max_sends_in_flight: defaults.max_sends_in_flight,
        }
    }
}

/// A client ready to connect: the engine, the application's event stream,
/// and the fingerprint of the user's key.
#[derive(Debug)]
pub struct PreparedClient {
    /// The client engine (core client, home directory for state saves).
    pub engine: ClientEngine,
    /// The events for the application.
    pub events: Events,
    /// The fingerprint of the user's own key.
    pub fingerprint: Fingerprint,
}

/// Loads (or, if allowed, generates and stores) the user's key and the saved
/// client state, and builds the client engine. **Blocking** (file I/O, and
/// key generation can take seconds): run it on a blocking thread.
pub fn prepare_client(options: &ClientOptions) -> Result<PreparedClient, ConnectError> {
    let home = ClientHome::new(&options.home).user(&options.user);
    let identity = if options.generate_key {
        Some(home.load_or_generate_identity(options.key_bits, |_| {})?.0)
    } else {
        home.load_identity()?
    };
    let Some(identity) = identity else {
        return Err(ConnectError::NoKey {
            user: options.user.clone(),
        });
    };
    let fingerprint = identity.public_key().fingerprint();
    let state = home.load_state()?;
    let mut config = ClientConfig::new(options.user.clone());
    config.registration = options.registration;
    config.start_online = options.start_online;
    config.max_outbox = options.max_outbox;
    config.max_sends_in_flight = options.max_sends_in_flight;
    let client = Client::new(
        config,
        identity,
        state,
        os_seed()?,
        Instant::now(),
        unix_ms_now(),
    );
    let (engine, events) = ClientEngine::new(client, Some(home), options.state_save_delay);
    Ok(PreparedClient {
        engine,
        events,
        fingerprint,
    })
}

/// A request from the application's handle to the client task.
pub enum Command {
    /// Send a message; `reply` resolves when the server accepted it.
    Send {
        /// The recipient.
        to: UserName,
        /// The plaintext.
        body: Vec<u8>,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<MessageId, SendError>>,
    },
    /// Announce presence.
    SetPresence(bool),
    /// Ask for a user's presence.
    QueryPresence {
        /// Whose presence.
        user: UserName,
        /// Where the answer goes (it also comes as an event).
        reply: Option<oneshot::Sender<Result<Presence, PresenceError>>>,
    },
    /// Trust the key the server now offers for a user.
    TrustKey(UserName),
    /// The fingerprint of the key pinned for a user.
    Pinned {
        /// Whose key.
        user: UserName,
        /// Where the answer goes.
        reply: oneshot::Sender<Option<Fingerprint>>,
    },
    /// Stop the client (state saved, connection closed after what is queued).
    Close {
        /// Told once the state is saved.
        reply: oneshot::Sender<Result<(), HomeError>>,
    },
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Send { .. } => "Send",
            Command::SetPresence(_) => "SetPresence",
            Command::QueryPresence { .. } => "QueryPresence",
            Command::TrustKey(_) => "TrustKey",
            Command::Pinned { .. } => "Pinned",
            Command::Close { .. } => "Close",
        })
    }
}

/// The application's end of the command channel: the calls of a driver's
/// client handle, runtime-independent.
#[derive(Debug, Clone)]
pub struct ClientCommands {
    tx: mpsc::UnboundedSender<Command>,
}

/// The client task's end of the command channel. A `Stream` that ends when
/// every [`ClientCommands`] is gone.
#[derive(Debug)]
pub struct CommandReceiver {
    rx: mpsc::UnboundedReceiver<Command>,
}

/// A command channel.
pub fn commands() -> (ClientCommands, CommandReceiver) {
    let (tx, rx) = mpsc::unbounded();
    (ClientCommands { tx }, CommandReceiver { rx })
}

impl Stream for CommandReceiver {
    type Item = Command;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl ClientCommands {
    /// Queues `body` for `to`; the ticket resolves with the message id once
    /// the server durably accepted it, or with the reason it never will.
    pub fn send(&self, to: UserName, body: Vec<u8>) -> SendTicket {
        let (reply, ticket) = SendTicket::new();
        self.command(Command::Send { to, body, reply });
        ticket
    }

    /// Announces presence.
    pub fn set_presence(&self, online: bool) {
        self.command(Command::SetPresence(online));
    }

    /// Asks for `user`'s presence and waits for the answer.
    pub async fn query_presence(&self, user: UserName) -> Result<Presence, PresenceError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::QueryPresence {
            user,
            reply: Some(reply),
        });
        rx.await.unwrap_or(Err(PresenceError::Closed))
    }

    /// Trusts the key the server offers now for `user`.
    pub fn trust_key(&self, user: UserName) {
        self.command(Command::TrustKey(user));
    }

    /// The fingerprint of the key pinned for `user`, if any.
    pub async fn pinned_fingerprint(&self, user: UserName) -> Option<Fingerprint> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Pinned { user, reply });
        rx.await.ok().flatten()
    }

    /// Asks the task to stop and waits until the state is saved.
    pub async fn close(&self) -> Result<(), HomeError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Close { reply });
        rx.await.unwrap_or(Ok(()))
    }

    fn command(&self, command: Command) {
        // If the task has stopped, the command's reply channel is dropped
        // and the caller sees "closed".
        let _ = self.tx.unbounded_send(command);
    }
}

/// Resolves with the first login of a client task, or why it failed.
#[derive(Debug)]
pub struct LoginWaiter {
    rx: oneshot::Receiver<Result<LoginInfo, ConnectError>>,
}

impl Future for LoginWaiter {
    type Output = Result<LoginInfo, ConnectError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ConnectError::Disconnected)))
    }
}

/// What the client task must do with its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAction {
    /// Start connecting to [`ClientSupervisor::server`]; report the outcome
    /// with [`connected`](ClientSupervisor::connected) or
    /// [`connect_failed`](ClientSupervisor::connect_failed).
    Connect,
    /// Write these bytes to the current link.
    Write(Vec<u8>),
    /// Drop any connection attempt in progress, and close the current link
    /// after writing what is queued on it. Nothing more is to be read from
    /// it.
    Close,
}

/// Where the client task's link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// No link and none coming: before the start, or after a failure that
    /// stops the client.
    Down,
    /// Connecting; the login must complete by `login_deadline`.
    Connecting {
        /// When the attempt is given up.
        login_deadline: Instant,
    },
    /// Connected, logging in.
    LoggingIn {
        /// When the attempt is given up.
        login_deadline: Instant,
    },
    /// Logged in.
    LoggedIn,
    /// Disconnected; the next attempt starts at `reconnect_at`.
    Waiting {
        /// When to connect again.
        reconnect_at: Instant,
    },
}

impl LinkState {
    /// Whether a transport is up (bytes can be written and read).
    fn is_up(self) -> bool {
        matches!(self, LinkState::LoggingIn { .. } | LinkState::LoggedIn)
    }

    /// When the current attempt is given up, if one is under way.
    fn login_deadline(self) -> Option<Instant> {
        match self {
            LinkState::Connecting { login_deadline } | LinkState::LoggingIn { login_deadline } => {
                Some(login_deadline)
            }
            _ => None,
        }
    }

    /// When to connect again, if waiting to.
    fn reconnect_at(self) -> Option<Instant> {
        match self {
            LinkState::Waiting { reconnect_at } => Some(reconnect_at),
            _ => None,
        }
    }
}

/// The connection policy of a client task. See the [module docs](self).
pub struct ClientSupervisor {
    engine: ClientEngine,
    /// Where the next connection goes: the configured server, or the node
    /// it redirected to.
    server: String,
    /// The configured server.
    home_server: String,
    /// Redirects followed since the last login.
    redirects: u32,
    /// Until when the first login may be retried after a cluster's
    /// transient refusal (no node serves the user right now, or its shard
    /// just moved).
    first_login_by: Option<Instant>,
    reconnect: bool,
    connect_timeout: Duration,
    backoff: Backoff,
    ready: Option<oneshot::Sender<Result<LoginInfo, ConnectError>>>,
    close_reply: Option<oneshot::Sender<Result<(), HomeError>>>,
    saved: Option<Result<(), HomeError>>,
    actions: VecDeque<LinkAction>,
    link: LinkState,
    stop: bool,
}

impl fmt::Debug for ClientSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSupervisor")
            .field("server", &self.server)
            .field("link", &self.link)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl ClientSupervisor {
    /// A supervisor of `engine` with `options`' server, timeouts and
    /// backoff; the waiter resolves with the first login. Call
    /// [`start`](ClientSupervisor::start) to connect.
    pub fn new(engine: ClientEngine, options: &ClientOptions) -> (Self, LoginWaiter) {
        let seed = os_seed().map_or(0, |s| {
            u64::from_le_bytes(s[..8].try_into().unwrap_or_default())
        });
        let (tx, rx) = oneshot::channel();
        let supervisor = Self {
            engine,
            server: options.server.clone(),
            home_server: options.server.clone(),
            redirects: 0,
            first_login_by: None,
            reconnect: options.reconnect,
            connect_timeout: options.connect_timeout,
            backoff: Backoff::new(options.backoff_initial, options.backoff_max, seed),
            ready: Some(tx),
            close_reply: None,
            saved: None,
            actions: VecDeque::new(),
            link: LinkState::Down,
            stop: false,
        };
        (supervisor, LoginWaiter { rx })
    }

    /// Where to connect: the configured server's `host:port`, or the
    /// address a cluster node redirected to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The client engine.
    pub fn engine(&self) -> &ClientEngine {
        &self.engine
    }

    /// Starts the first connection attempt.
    pub fn start(&mut self, now: Instant) {
        self.first_login_by = Some(now + self.connect_timeout);
        self.start_connecting(now);
    }

    /// The next thing to do with the transport.
    pub fn poll_action(&mut self) -> Option<LinkAction> {
        self.actions.pop_front()
    }

    /// When to call [`timeout`](ClientSupervisor::timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.engine.poll_timeout(),
            self.link.reconnect_at(),
            self.link.login_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the task should stop (then call
    /// [`finish`](ClientSupervisor::finish)).
    pub fn is_stopped(&self) -> bool {
        self.stop
    }

    /// A command of the application.
    pub fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Send { to, body, reply } => self.engine.send(now, to, body, reply),
            Command::SetPresence(online) => self.engine.set_presence(now, online),
            Command::QueryPresence { user, reply } => self.engine.query_presence(now, user, reply),
            Command::TrustKey(user) => self.engine.trust_key(now, &user),
            Command::Pinned { user, reply } => {
                let _ = reply.send(self.engine.pinned_fingerprint(&user));
            }
            Command::Close { reply } => {
                self.close_reply = Some(reply);
                self.stop = true;
            }
        }
        self.after_input(now);
    }

    /// Every handle is gone: stop.
    pub fn handles_gone(&mut self) {
        self.stop = true;
    }

    /// The connection attempt succeeded: the transport is the current link,
    /// with this framing and channel binding (§1, §3.2 of docs/PROTOCOL.md).
    pub fn connected(&mut self, now: Instant, link: Link) {
        tracing::debug!(server = %self.server, "connected");
        let login_deadline = self
            .link
            .login_deadline()
            .unwrap_or(now + self.connect_timeout);
        self.link = LinkState::LoggingIn { login_deadline };
        self.engine.connected(now, link);
        self.after_input(now);
    }

    /// The connection attempt failed.
    pub fn connect_failed(&mut self, now: Instant, source: io::Error) {
        tracing::debug!(server = %self.server, "connect failed: {source}");
        self.link = LinkState::Down;
        if self.server != self.home_server {
            let to = std::mem::replace(&mut self.server, self.home_server.clone());
            if certificate_refused(&source) {
                self.stop_with(ConnectError::UntrustedRedirect { to, source });
            } else {
                tracing::info!(node = %to, "the node redirected to is unreachable ({source}): back to the configured server");
                self.schedule_reconnect(now);
            }
            return;
        }
        if let Some(ready) = self.ready.take() {
            let certificate = CertificateChanged::find(&source);
            let websocket = WebSocketError::find(&source);
            let error = match (certificate, websocket) {
                (Some(changed), _) => ConnectError::ServerCertificateChanged(changed.clone()),
                (None, Some(websocket)) => ConnectError::WebSocket(websocket.clone()),
                (None, None) => ConnectError::Unreachable {
                    addr: self.server.clone(),
                    source,
                },
            };
            let _ = ready.send(Err(error));
            self.stop = true;
        } else if let Some(changed) = CertificateChanged::find(&source) {
            // Every retry would be refused the same way, until the user
            // decides to trust the new certificate.
            self.engine
                .give_up(ConnectError::ServerCertificateChanged(changed.clone()));
            self.stop = true;
        } else {
            self.schedule_reconnect(now);
        }
    }

    /// Bytes read from the current link.
    pub fn received(&mut self, now: Instant, bytes: &[u8]) {
        if self.link.is_up() {
            self.engine.received(now, bytes);
            self.after_input(now);
        }
    }

    /// The current link is gone (end of stream, read or write error).
    pub fn lost(&mut self, now: Instant, why: io::Error) {
        if self.link.is_up() {
            self.link = LinkState::Down;
            tracing::debug!("connection lost: {why}");
            self.actions.push_back(LinkAction::Close);
            self.engine.disconnected(now);
            if let Some(websocket) = WebSocketError::find(&why)
                && let Some(ready) = self.ready.take()
            {
                // The WebSocket layer said why, before the login.
                let _ = ready.send(Err(ConnectError::WebSocket(websocket.clone())));
                self.stop = true;
            } else {
                self.after_disconnect(now);
            }
            self.after_input(now);
        }
    }

    /// The time from [`poll_timeout`](ClientSupervisor::poll_timeout) has come.
    pub fn timeout(&mut self, now: Instant) {
        if self.link.login_deadline().is_some_and(|t| t <= now) {
            let was_up = self.link.is_up();
            self.link = LinkState::Down;
            self.actions.push_back(LinkAction::Close);
            if was_up {
                self.engine.disconnected(now);
            }
            if self.server != self.home_server {
                tracing::info!(node = %self.server, "no login in time on the node redirected to: back to the configured server");
                self.server = self.home_server.clone();
            } else if let Some(ready) = self.ready.take() {
                let _ = ready.send(Err(ConnectError::Unreachable {
                    addr: self.server.clone(),
                    source: io::Error::new(io::ErrorKind::TimedOut, "no login in time"),
                }));
                self.stop = true;
                return;
            }
            self.schedule_reconnect(now);
        }
        if self.link.reconnect_at().is_some_and(|t| t <= now) {
            self.start_connecting(now);
        }
        self.engine.timeout(now);
        self.after_input(now);
    }

    /// Stops: the final bytes (acknowledgements) and a close of the link
    /// come out of [`poll_action`](ClientSupervisor::poll_action); the state
    /// is saved and every waiting request fails with "closed". Perform the
    /// actions, give the link's writer a moment to flush, then call
    /// [`finished`](ClientSupervisor::finished).
    pub fn finish(&mut self) {
        self.stop = true;
        let packets = self.engine.take_transmit();
        if self.link.is_up() {
            self.actions
                .extend(packets.into_iter().map(LinkAction::Write));
        }
        self.actions.push_back(LinkAction::Close);
        let saved = self.engine.shutdown();
        if let Err(e) = &saved {
            tracing::error!("cannot save the client state: {e}");
        }
        self.saved = Some(saved);
    }

    /// The link is closed: tells the core and whoever asked to close.
    pub fn finished(mut self, now: Instant) {
        self.link = LinkState::Down;
        self.engine.disconnected(now);
        let saved = self.saved.take().unwrap_or(Ok(()));
        if let Some(reply) = self.close_reply.take() {
            let _ = reply.send(saved);
        }
    }

    fn start_connecting(&mut self, now: Instant) {
        self.link = LinkState::Connecting {
            login_deadline: now + self.connect_timeout,
        };
        self.actions.push_back(LinkAction::Connect);
    }

    /// After the link went down (the state is [`LinkState::Down`]).
    fn after_disconnect(&mut self, now: Instant) {
        if let Some(address) = self.engine.take_redirect() {
            // The connection ended because of the redirect: not a failure.
            let _ = self.engine.take_refusal();
            self.follow_redirect(now, address);
            return;
        }
        if let Some(refusal) = self.engine.take_refusal() {
            if self.ready.is_some()
                && self.reconnect
                && is_cluster_transient(&refusal)
                && self.first_login_by.is_some_and(|by| now < by)
            {
                tracing::info!("{refusal}: trying again");
                self.schedule_reconnect(now);
                return;
            }
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Err(refusal));
                self.stop = true;
                return;
            }
            if refusal.is_permanent() {
                self.engine.give_up(refusal);
                self.stop = true;
                return;
            }
            tracing::info!("disconnected: {refusal}");
        }
        if self.ready.is_some() && self.server != self.home_server {
            tracing::info!(node = %self.server, "the node redirected to dropped the connection before the login: back to the configured server");
            self.server = self.home_server.clone();
        } else if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(ConnectError::Disconnected));
            self.stop = true;
            return;
        }
        self.schedule_reconnect(now);
    }

    /// Connects to `address` at once, unless that makes too many redirects
    /// in a row without a login.
    fn follow_redirect(&mut self, now: Instant, address: String) {
        if self.redirects >= MAX_REDIRECTS {
            let error = ConnectError::RedirectLoop {
                last: address,
                redirects: self.redirects,
            };
            self.redirects = 0;
            self.server = self.home_server.clone();
            // Shards may be moving between nodes (a node joined or left):
            // the first login tries again until its deadline.
            let first_login_over = self.first_login_by.is_none_or(|by| now >= by);
            if self.ready.is_some() && (first_login_over || !self.reconnect) {
                self.stop_with(error);
                return;
            }
            tracing::warn!("{error}: back to the configured server after a pause");
            self.schedule_reconnect(now);
            return;
        }
        if self.ready.is_none() && !self.reconnect {
            self.stop = true;
            return;
        }
        self.redirects += 1;
        tracing::info!(from = %self.server, to = %address, "redirected");
        self.server = address;
        self.start_connecting(now);
    }

    /// Stops the client for `error`: the first login fails with it, or the
    /// running client gives up with it.
    fn stop_with(&mut self, error: ConnectError) {
        match self.ready.take() {
            Some(ready) => {
                let _ = ready.send(Err(error));
            }
            None => self.engine.give_up(error),
        }
        self.stop = true;
    }

    fn schedule_reconnect(&mut self, now: Instant) {
        if !self.reconnect {
            self.stop = true;
            return;
        }
        let delay = self.backoff.next_delay();
        tracing::debug!(?delay, "reconnecting later");
        self.link = LinkState::Waiting {
            reconnect_at: now + delay,
        };
    }

    /// Writes what the core produced, closes when it asks, reports the login.
    fn after_input(&mut self, now: Instant) {
        let packets = self.engine.take_transmit();
        if self.link.is_up() {
            self.actions
                .extend(packets.into_iter().map(LinkAction::Write));
        }
        if let Some(login) = self.engine.take_login() {
            if let LinkState::LoggingIn { .. } = self.link {
                self.link = LinkState::LoggedIn;
            }
            self.backoff.reset();
            self.redirects = 0;
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Ok(login));
            }
        }
        if self.engine.take_close() {
            self.link = LinkState::Down;
            self.actions.push_back(LinkAction::Close);
            self.engine.disconnected(now);
            self.after_disconnect(now);
            // Whatever the core said on the way out is not sent.
            let _ = self.engine.take_transmit();
        }
    }
}

/// Whether the server refused the login only for now: no cluster node
/// serves the user at the moment (`unavailable`), its shard just moved
/// (`moved`), or the server cannot store the registration now
/// (`storage_unavailable`, a full disk).
fn is_cluster_transient(refusal: &ConnectError) -> bool {
    matches!(
        refusal,
        ConnectError::ConnectionLost(
            ConnectionError::Unavailable
                | ConnectionError::Moved
                | ConnectionError::StorageUnavailable
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::ClientHome;
    use missive_core::client::LoginError;
    use missive_core::crypto::Identity;
    use missive_core::rng;
    use missive_core::wire::{
        ClientPacket, DEFAULT_MAX_FRAME, ErrorCode, LENGTH_PREFIX_LEN, PROTOCOL_VERSION,
        ServerPacket, WireLimits, decode_packet, encode_frame,
    };

    /// A supervisor of a prepared client, started and connected (plaintext):
    /// its actions (Connect, then the core's Hello) not yet polled.
    fn connected(
        home: &std::path::Path,
        registration: Registration,
    ) -> (ClientOptions, ClientSupervisor, LoginWaiter, Instant) {
        let (options, prepared) = prepared(home, registration);
        let (mut sup, login) = ClientSupervisor::new(prepared.engine, &options);
        let now = Instant::now();
        sup.start(now);
        sup.connected(now, Link::PLAINTEXT);
        (options, sup, login, now)
    }

    fn prepared(
        home: &std::path::Path,
        registration: Registration,
    ) -> (ClientOptions, PreparedClient) {
        let user = UserName::new("alice").unwrap();
        let identity = Identity::generate(&mut rng::from_seed([7; 32]), 2048).unwrap();
        ClientHome::new(home)
            .user(&user)
            .save_identity(&identity)
            .unwrap();
        let mut options = ClientOptions::new("127.0.0.1:1", home, user);
        options.generate_key = false;
        options.registration = registration;
        options.backoff_initial = Duration::from_millis(100);
        options.backoff_max = Duration::from_millis(100);
        let prepared = prepare_client(&options).unwrap();
        assert_eq!(prepared.fingerprint, identity.public_key().fingerprint());
        (options, prepared)
    }

    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        std::pin::pin!(f).poll(&mut cx)
    }

    #[test]
    fn missing_key_without_generation_fails() {
        let home = tempfile::tempdir().unwrap();
        let mut options =
            ClientOptions::new("127.0.0.1:1", home.path(), UserName::new("bob").unwrap());
        options.generate_key = false;
        assert!(matches!(
            prepare_client(&options),
            Err(ConnectError::NoKey { .. })
        ));
    }

    #[test]
    fn first_connect_failure_is_reported_then_later_ones_back_off() {
        let home = tempfile::tempdir().unwrap();
        let (options, prepared) = prepared(home.path(), Registration::IfUnknown);
        let (mut sup, mut login) = ClientSupervisor::new(prepared.engine, &options);
        let now = Instant::now();
        sup.start(now);
        assert_eq!(sup.poll_action(), Some(LinkAction::Connect));
        assert_eq!(sup.poll_timeout(), Some(now + options.connect_timeout));
        assert!(poll_once(&mut login).is_pending());
        sup.connect_failed(now, io::ErrorKind::ConnectionRefused.into());
        assert!(sup.is_stopped());
        assert!(matches!(
            poll_once(&mut login),
            Poll::Ready(Err(ConnectError::Unreachable { .. }))
        ));
    }

    #[test]
    fn connection_lost_before_login_fails_the_connect_and_close_replies() {
        let home = tempfile::tempdir().unwrap();
        let (_, mut sup, mut login, now) = connected(home.path(), Registration::IfUnknown);
        assert_eq!(sup.poll_action(), Some(LinkAction::Connect));
        // The core says Hello.
        assert!(matches!(sup.poll_action(), Some(LinkAction::Write(_))));
        sup.lost(now, io::ErrorKind::UnexpectedEof.into());
        assert_eq!(sup.poll_action(), Some(LinkAction::Close));
        assert!(sup.is_stopped());
        assert!(matches!(
            poll_once(&mut login),
            Poll::Ready(Err(ConnectError::Disconnected))
        ));
        let (commands, _rx) = commands();
        let (reply, mut rx) = oneshot::channel();
        sup.command(now, Command::Close { reply });
        sup.finish();
        assert_eq!(sup.poll_action(), Some(LinkAction::Close));
        sup.finished(now);
        assert!(matches!(poll_once(&mut rx), Poll::Ready(Ok(Ok(())))));
        drop(commands);
    }

    #[test]
    fn login_deadline_closes_the_link_and_fails_the_connect() {
        let home = tempfile::tempdir().unwrap();
        let (options, mut sup, mut login, now) = connected(home.path(), Registration::IfUnknown);
        assert_eq!(sup.poll_action(), Some(LinkAction::Connect));
        assert!(matches!(sup.poll_action(), Some(LinkAction::Write(_))));
        let deadline = now + options.connect_timeout;
        assert_eq!(
            sup.link,
            LinkState::LoggingIn {
                login_deadline: deadline
            }
        );
        // Not yet: nothing happens.
        sup.timeout(deadline - Duration::from_millis(1));
        assert_eq!(sup.poll_action(), None);
        assert!(!sup.is_stopped());
        sup.timeout(deadline);
        assert_eq!(sup.poll_action(), Some(LinkAction::Close));
        assert_eq!(sup.link, LinkState::Down);
        assert!(sup.is_stopped());
        match poll_once(&mut login) {
            Poll::Ready(Err(ConnectError::Unreachable { source, .. })) => {
                assert_eq!(source.kind(), io::ErrorKind::TimedOut)
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        // Bytes of the closed link are not the core's business any more.
        server_says(&mut sup, deadline, welcome());
        assert_eq!(sup.poll_action(), None);
    }

    /// On a message transport every write is one packet: the two transmits
    /// of an offline client's answer to Welcome (its presence, then Login)
    /// are never merged into one buffer (one WebSocket message).
    #[test]
    fn every_write_on_a_message_link_is_one_packet() {
        let home = tempfile::tempdir().unwrap();
        let (mut options, _) = prepared(home.path(), Registration::Never);
        options.start_online = false;
        let prepared = prepare_client(&options).unwrap();
        let (mut sup, _login) = ClientSupervisor::new(prepared.engine, &options);
        let now = Instant::now();
        sup.start(now);
        assert_eq!(sup.poll_action(), Some(LinkAction::Connect));
        sup.connected(
            now,
            Link::messages(missive_core::crypto::ChannelBinding::None),
        );
        let frame = encode_frame(&welcome(), DEFAULT_MAX_FRAME).unwrap();
        sup.received(now, &frame[LENGTH_PREFIX_LEN..]);
        let mut packets = Vec::new();
        while let Some(LinkAction::Write(bytes)) = sup.poll_action() {
            packets.push(decode_packet::<ClientPacket>(&bytes).expect("one whole packet"));
        }
        assert!(
            matches!(
                packets.as_slice(),
                [
                    ClientPacket::Hello { .. },
                    ClientPacket::SetPresence { online: false },
                    ClientPacket::Login { .. }
                ]
            ),
            "{packets:?}"
        );
    }

    /// Plays the server: feeds `packet` to the supervisor.
    fn server_says(sup: &mut ClientSupervisor, now: Instant, packet: ServerPacket) {
        sup.received(now, &encode_frame(&packet, DEFAULT_MAX_FRAME).unwrap());
    }

    fn welcome() -> ServerPacket {
        ServerPacket::Welcome {
            version: PROTOCOL_VERSION,
            server_id: [1; 16],
            session_id: [2; 16],
            ping_interval_ms: 5_000,
            limits: WireLimits {
                max_frame: DEFAULT_MAX_FRAME,
                max_envelope: 64 * 1024,
                window: 32,
                handshake_max_frame: Some(16 * 1024),
            },
        }
    }

    fn unknown_user(name: &str) -> ServerPacket {
        ServerPacket::Error {
            code: ErrorCode::UnknownUser,
            id: None,
            user: Some(UserName::new(name).unwrap()),
            detail: "no such user".into(),
        }
    }

    #[test]
    fn login_refusal_reaches_the_login_waiter_typed() {
        let home = tempfile::tempdir().unwrap();
        let (_, mut sup, mut login, now) = connected(home.path(), Registration::Never);
        server_says(&mut sup, now, welcome());
        server_says(&mut sup, now, unknown_user("alice"));
        assert!(sup.is_stopped(), "a refused first login stops the client");
        match poll_once(&mut login) {
            Poll::Ready(Err(ConnectError::Login(LoginError::NotRegistered { user }))) => {
                assert_eq!(user.as_str(), "alice")
            }
            other => panic!("expected NotRegistered, got {other:?}"),
        }
    }

    /// The node answers the login with a redirect to `address` and the
    /// connection ends (the core closes it, or the server does).
    fn redirected(sup: &mut ClientSupervisor, now: Instant, address: &str) {
        server_says(sup, now, welcome());
        server_says(
            sup,
            now,
            ServerPacket::Redirect {
                address: address.into(),
            },
        );
        sup.lost(now, io::ErrorKind::UnexpectedEof.into());
    }

    /// The actions pending, in order.
    fn actions(sup: &mut ClientSupervisor) -> Vec<LinkAction> {
        std::iter::from_fn(|| sup.poll_action()).collect()
    }

    #[test]
    fn a_redirect_is_followed_at_once_and_an_unreachable_node_falls_back() {
        let home = tempfile::tempdir().unwrap();
        let (options, mut sup, mut login, now) = connected(home.path(), Registration::IfUnknown);
        let _ = actions(&mut sup);
        redirected(&mut sup, now, "127.0.0.2:7000");
        let after = actions(&mut sup);
        assert!(after.contains(&LinkAction::Close), "{after:?}");
        assert_eq!(
            after.last(),
            Some(&LinkAction::Connect),
            "at once: {after:?}"
        );
        assert_eq!(sup.server(), "127.0.0.2:7000");
        assert!(poll_once(&mut login).is_pending(), "not a failure");
        // The node redirected to is unreachable: the configured server
        // again, after the usual backoff.
        sup.connect_failed(now, io::ErrorKind::ConnectionRefused.into());
        assert_eq!(sup.server(), options.server);
        let retry = sup
            .link
            .reconnect_at()
            .expect("a reconnection is scheduled");
        assert!(retry > now && retry <= now + options.backoff_max);
        assert!(!sup.is_stopped());
        assert!(poll_once(&mut login).is_pending());
        sup.timeout(retry);
        assert_eq!(sup.poll_action(), Some(LinkAction::Connect));
        // Same identity and outbox: the core says Hello again.
        sup.connected(retry, Link::PLAINTEXT);
        assert!(matches!(sup.poll_action(), Some(LinkAction::Write(_))));
    }

    /// A cluster that serves nobody for the user right now (its shard is
    /// between owners) is tried again until the connect deadline, then
    /// the refusal is the connect's error.
    #[test]
    fn an_unavailable_cluster_is_retried_until_the_connect_deadline() {
        let home = tempfile::tempdir().unwrap();
        let (options, mut sup, mut login, now) = connected(home.path(), Registration::IfUnknown);
        let unavailable = |sup: &mut ClientSupervisor, at: Instant| {
            server_says(sup, at, welcome());
            server_says(
                sup,
                at,
                ServerPacket::Error {
                    code: ErrorCode::Unavailable,
                    id: None,
                    user: None,
                    detail: "no node serves alice right now".into(),
                },
            );
            sup.lost(at, io::ErrorKind::UnexpectedEof.into());
        };
        unavailable(&mut sup, now);
        assert!(!sup.is_stopped());
        assert!(poll_once(&mut login).is_pending(), "tried again");
        let retry = sup
            .link
            .reconnect_at()
            .expect("a reconnection is scheduled");
        sup.timeout(retry);
        let _ = actions(&mut sup);
        // Past the connect deadline: the refusal is reported.
        let late = now + options.connect_timeout;
        sup.connected(late, Link::PLAINTEXT);
        unavailable(&mut sup, late);
        assert!(sup.is_stopped());
        assert!(matches!(
            poll_once(&mut login),
            Poll::Ready(Err(ConnectError::ConnectionLost(
                ConnectionError::Unavailable
            )))
        ));
    }

    #[test]
    fn redirects_in_a_loop_pause_then_fail_the_connect_typed_at_its_deadline() {
        let home = tempfile::tempdir().unwrap();
        let (options, mut sup, mut login, now) = connected(home.path(), Registration::IfUnknown);
        let _ = actions(&mut sup);
        let hops = |sup: &mut ClientSupervisor, at: Instant| {
            for hop in 0..MAX_REDIRECTS {
                redirected(sup, at, &format!("127.0.0.{}:7000", hop + 2));
                assert_eq!(actions(sup).last(), Some(&LinkAction::Connect), "at once");
                sup.connected(at, Link::PLAINTEXT);
                let _ = actions(sup);
            }
            redirected(sup, at, "127.0.0.9:7000");
        };
        hops(&mut sup, now);
        // One redirect too many: a pause, then the configured server again.
        assert!(!actions(&mut sup).contains(&LinkAction::Connect), "a pause");
        assert!(!sup.is_stopped());
        assert!(poll_once(&mut login).is_pending());
        assert_eq!(sup.server(), options.server);
        let retry = sup
            .link
            .reconnect_at()
            .expect("a pause before trying again");
        sup.timeout(retry);
        assert_eq!(sup.poll_action(), Some(LinkAction::Connect));
        // Still looping at the connect deadline: the loop is the error.
        let late = now + options.connect_timeout;
        sup.connected(late, Link::PLAINTEXT);
        let _ = actions(&mut sup);
        hops(&mut sup, late);
        assert!(sup.is_stopped());
        match poll_once(&mut login) {
            Poll::Ready(Err(ConnectError::RedirectLoop { last, redirects })) => {
                assert_eq!(last, "127.0.0.9:7000");
                assert_eq!(redirects, MAX_REDIRECTS);
            }
            other => panic!("expected a redirect loop, got {other:?}"),
        }
    }

    #[test]
    fn a_redirect_to_an_untrusted_certificate_fails_typed() {
        let home = tempfile::tempdir().unwrap();
        let (_, mut sup, mut login, now) = connected(home.path(), Registration::IfUnknown);
        let _ = actions(&mut sup);
        redirected(&mut sup, now, "127.0.0.2:7000");
        let _ = actions(&mut sup);
        let refused = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        sup.connect_failed(now, refused);
        assert!(sup.is_stopped(), "no retry, no prompt");
        match poll_once(&mut login) {
            Poll::Ready(Err(error @ ConnectError::UntrustedRedirect { .. })) => {
                assert!(error.is_permanent());
                assert!(error.to_string().contains("127.0.0.2:7000"), "{error}");
            }
            other => panic!("expected an untrusted redirect, got {other:?}"),
        }
    }

    #[test]
    fn presence_of_an_unknown_user_resolves_the_query() {
        let home = tempfile::tempdir().unwrap();
        let (_, mut sup, mut login, now) = connected(home.path(), Registration::Never);
        server_says(&mut sup, now, welcome());
        server_says(
            &mut sup,
            now,
            ServerPacket::Challenge {
                nonce: [3; 32],
                expires_in_ms: 30_000,
            },
        );
        let alice = UserName::new("alice").unwrap();
        server_says(
            &mut sup,
            now,
            ServerPacket::LoggedIn {
                user: alice,
                queued: 0,
            },
        );
        assert!(matches!(poll_once(&mut login), Poll::Ready(Ok(_))));
        let (reply, mut answer) = oneshot::channel();
        let nobody = UserName::new("nobody").unwrap();
        sup.command(
            now,
            Command::QueryPresence {
                user: nobody.clone(),
                reply: Some(reply),
            },
        );
        assert!(poll_once(&mut answer).is_pending());
        server_says(&mut sup, now, unknown_user("nobody"));
        assert!(matches!(
            poll_once(&mut answer),
            Poll::Ready(Ok(Err(PresenceError::UnknownUser(user)))) if user == nobody
        ));
    }
}
