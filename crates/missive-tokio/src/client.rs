//! The client library on tokio.
//!
//! [`ClientHandle::connect`] loads (or makes) the user's key from the home
//! directory, connects, and returns once logged in — registering first when
//! the server does not know the user and [`ClientOptions::register_if_needed`]
//! is set. A background task owns the socket and the core client: it answers
//! pings, saves the state, and reconnects with backoff when the connection
//! drops, keeping the outbox (unsent messages go out again, with the same
//! ids, after the next login).

use crate::server::connect_tcp;
use futures_channel::oneshot;
use missive_core::client::{Client, ClientConfig};
use missive_core::crypto::{DEFAULT_KEY_BITS, Fingerprint};
use missive_core::{MessageId, UserName};
use missive_runtime::client::{
    ClientEngine, ConnectError, Events, LoginInfo, Presence, PresenceError, SendError, SendTicket,
};
use missive_runtime::home::{ClientHome, HomeError};
use missive_runtime::{Backoff, os_seed, unix_ms_now};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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
    /// Register the user when the server does not know it (default `true`).
    /// When `false`, connecting as an unknown user fails with
    /// [`ConnectError::NotRegistered`].
    pub register_if_needed: bool,
    /// Generate and store a key when the home has none (default `true`).
    /// When `false`, a missing key fails with [`ConnectError::NotRegistered`].
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
            register_if_needed: true,
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

enum Command {
    Send {
        to: UserName,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<MessageId, SendError>>,
    },
    SetPresence(bool),
    QueryPresence {
        user: UserName,
        reply: Option<oneshot::Sender<Result<Presence, PresenceError>>>,
    },
    TrustKey(UserName),
    Pinned {
        user: UserName,
        reply: oneshot::Sender<Option<Fingerprint>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), HomeError>>,
    },
}

/// A connected client. Dropping it stops the client (its state is saved).
///
/// ```no_run
/// use missive_core::UserName;
/// use missive_core::client::ClientEvent;
/// use missive_tokio::{ClientHandle, ClientOptions};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let alice = UserName::new("alice")?;
/// let options = ClientOptions::new("127.0.0.1:7878", "/tmp/missive-home", alice);
/// let (client, mut events) = ClientHandle::connect(options).await?;
/// let id = client.send(UserName::new("bob")?, "hello bob").await?;
/// println!("accepted {id}");
/// while let Some(event) = events.recv().await {
///     if let ClientEvent::MessageReceived { from, body, .. } = event {
///         println!("{from}: {}", String::from_utf8_lossy(&body));
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ClientHandle {
    tx: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
    user: UserName,
    fingerprint: Fingerprint,
    login: LoginInfo,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

impl ClientHandle {
    /// Loads or makes the key, connects, registers if needed and allowed,
    /// logs in. Returns the handle and the stream of events.
    pub async fn connect(options: ClientOptions) -> Result<(ClientHandle, Events), ConnectError> {
        let home = ClientHome::new(&options.home).user(&options.user);
        let (identity, home) = {
            let generate = options.generate_key;
            let bits = options.key_bits;
            tokio::task::spawn_blocking(move || {
                let identity = if generate {
                    Some(home.load_or_generate_identity(bits, |_| {})?.0)
                } else {
                    home.load_identity()?
                };
                Ok::<_, HomeError>((identity, home))
            })
            .await
            .map_err(io::Error::other)??
        };
        let Some(identity) = identity else {
            return Err(ConnectError::NotRegistered {
                user: options.user.clone(),
            });
        };
        let fingerprint = identity.public_key().fingerprint();
        let state = home.load_state()?;
        let mut config = ClientConfig::new(options.user.clone());
        config.register_if_needed = options.register_if_needed;
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
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let user = options.user.clone();
        let task = tokio::spawn(ClientTask::new(engine, rx, options, ready_tx).run());
        match ready_rx.await {
            Ok(Ok(login)) => Ok((
                ClientHandle {
                    tx,
                    task: Some(task),
                    user,
                    fingerprint,
                    login,
                },
                events,
            )),
            Ok(Err(e)) => {
                let _ = task.await;
                Err(e)
            }
            Err(_) => {
                let _ = task.await;
                Err(ConnectError::Disconnected)
            }
        }
    }

    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The fingerprint of this user's own key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// What the first login reported (whether it registered the user, how
    /// many items were waiting).
    pub fn login(&self) -> LoginInfo {
        self.login
    }

    /// Sends `body` to `to`, end-to-end encrypted. Resolves with the message
    /// id once the server has durably accepted it, or with the reason it
    /// never will be. The message survives reconnections meanwhile (and a
    /// restart of the client: it stays in the saved outbox).
    pub async fn send(
        &self,
        to: UserName,
        body: impl Into<Vec<u8>>,
    ) -> Result<MessageId, SendError> {
        let (reply, ticket) = SendTicket::new();
        self.command(Command::Send {
            to,
            body: body.into(),
            reply,
        });
        ticket.await
    }

    /// Announces presence: `true` online (deliveries flow), `false` offline
    /// while staying connected.
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

    /// Trusts the key the server offers now for `user` (after a
    /// `KeyChanged` event): the pinned key is forgotten and the next fetch
    /// pins the new one.
    pub fn trust_key(&self, user: UserName) {
        self.command(Command::TrustKey(user));
    }

    /// The fingerprint of the key pinned for `user`, if any.
    pub async fn pinned_fingerprint(&self, user: UserName) -> Option<Fingerprint> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Pinned { user, reply });
        rx.await.ok().flatten()
    }

    /// Stops the client: writes what is queued (acknowledgements included),
    /// saves the state, closes the connection. Messages not yet accepted stay
    /// in the saved outbox.
    pub async fn close(mut self) -> Result<(), HomeError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Close { reply });
        let result = rx.await.unwrap_or(Ok(()));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result
    }

    fn command(&self, command: Command) {
        // If the task has stopped, the command's reply channel is dropped
        // and the caller sees "closed".
        let _ = self.tx.send(command);
    }
}

/// One TCP connection of the client task.
struct Link {
    rd: OwnedReadHalf,
    out: mpsc::UnboundedSender<Vec<u8>>,
    writer: JoinHandle<()>,
    buf: Box<[u8]>,
}

impl Link {
    fn new(stream: TcpStream) -> Self {
        let (rd, wr) = stream.into_split();
        let (out, rx) = mpsc::unbounded_channel();
        Self {
            rd,
            out,
            writer: tokio::spawn(client_writer(wr, rx)),
            buf: vec![0u8; 16 * 1024].into_boxed_slice(),
        }
    }

    /// Reads some bytes; an error when the writer failed.
    async fn read(&mut self) -> io::Result<usize> {
        tokio::select! {
            read = self.rd.read(&mut self.buf) => read,
            () = self.out.closed() => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Closes after writing what is queued; returns the writer to await.
    fn close(self) -> JoinHandle<()> {
        drop(self.out);
        self.writer
    }
}

async fn client_writer(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

struct ClientTask {
    engine: ClientEngine,
    commands: mpsc::UnboundedReceiver<Command>,
    options: ClientOptions,
    ready: Option<oneshot::Sender<Result<LoginInfo, ConnectError>>>,
    link: Option<Link>,
    connecting: Option<Connecting>,
    reconnect_at: Option<Instant>,
    login_deadline: Option<Instant>,
    backoff: Backoff,
    stop: bool,
}

impl ClientTask {
    fn new(
        engine: ClientEngine,
        commands: mpsc::UnboundedReceiver<Command>,
        options: ClientOptions,
        ready: oneshot::Sender<Result<LoginInfo, ConnectError>>,
    ) -> Self {
        let seed = os_seed().map_or(0, |s| {
            u64::from_le_bytes(s[..8].try_into().unwrap_or_default())
        });
        let backoff = Backoff::new(options.backoff_initial, options.backoff_max, seed);
        Self {
            engine,
            commands,
            options,
            ready: Some(ready),
            link: None,
            connecting: None,
            reconnect_at: None,
            login_deadline: None,
            backoff,
            stop: false,
        }
    }

    fn start_connecting(&mut self, now: Instant) {
        let addr = self.options.server.clone();
        self.reconnect_at = None;
        self.login_deadline = Some(now + self.options.connect_timeout);
        self.connecting = Some(Box::pin(async move { connect_tcp(&addr).await }));
    }

    async fn run(mut self) {
        self.start_connecting(Instant::now());
        let mut close_reply = None;
        while !self.stop {
            let deadline = [
                self.engine.poll_timeout(),
                self.reconnect_at,
                self.login_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => break,
                    Some(Command::Close { reply }) => {
                        close_reply = Some(reply);
                        break;
                    }
                    Some(command) => self.on_command(Instant::now(), command),
                },
                connected = async { self.connecting.as_mut().expect("guarded").await }, if self.connecting.is_some() => {
                    self.connecting = None;
                    self.on_connect_result(connected);
                },
                read = async { self.link.as_mut().expect("guarded").read().await }, if self.link.is_some() => {
                    let now = Instant::now();
                    match read {
                        Ok(n) if n > 0 => {
                            if let Some(link) = self.link.as_ref() {
                                self.engine.received(now, &link.buf[..n]);
                            }
                        }
                        Ok(_) => self.lost(now, "the server closed the connection"),
                        Err(e) => self.lost(now, &e.to_string()),
                    }
                },
                () = sleep_until(deadline), if deadline.is_some() => self.on_timer(Instant::now()),
            }
            self.after_input(Instant::now());
        }
        self.finish(close_reply).await;
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Send { to, body, reply } => self.engine.send(now, to, body, reply),
            Command::SetPresence(online) => self.engine.set_presence(now, online),
            Command::QueryPresence { user, reply } => self.engine.query_presence(now, user, reply),
            Command::TrustKey(user) => self.engine.trust_key(now, &user),
            Command::Pinned { user, reply } => {
                let _ = reply.send(self.engine.pinned_fingerprint(&user));
            }
            Command::Close { .. } => {}
        }
    }

    fn on_connect_result(&mut self, connected: io::Result<TcpStream>) {
        let now = Instant::now();
        match connected {
            Ok(stream) => {
                tracing::debug!(server = %self.options.server, "connected");
                self.link = Some(Link::new(stream));
                self.engine.connected(now);
            }
            Err(source) => {
                tracing::debug!(server = %self.options.server, "connect failed: {source}");
                self.login_deadline = None;
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(ConnectError::Unreachable {
                        addr: self.options.server.clone(),
                        source,
                    }));
                    self.stop = true;
                } else {
                    self.schedule_reconnect(now);
                }
            }
        }
    }

    fn on_timer(&mut self, now: Instant) {
        if self.login_deadline.is_some_and(|t| t <= now) {
            self.login_deadline = None;
            self.connecting = None;
            if let Some(link) = self.link.take() {
                link.close();
                self.engine.disconnected(now);
            }
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Err(ConnectError::Unreachable {
                    addr: self.options.server.clone(),
                    source: io::Error::new(io::ErrorKind::TimedOut, "no login in time"),
                }));
                self.stop = true;
                return;
            }
            self.schedule_reconnect(now);
        }
        if self.reconnect_at.is_some_and(|t| t <= now)
            && self.link.is_none()
            && self.connecting.is_none()
        {
            self.start_connecting(now);
        }
        self.engine.timeout(now);
    }

    /// The connection is gone (read error, end of stream, writer failure).
    fn lost(&mut self, now: Instant, why: &str) {
        if let Some(link) = self.link.take() {
            tracing::debug!("connection lost: {why}");
            link.close();
            self.engine.disconnected(now);
            self.after_disconnect(now);
        }
    }

    fn after_disconnect(&mut self, now: Instant) {
        self.login_deadline = None;
        if let Some(refusal) = self.engine.take_refusal() {
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Err(refusal));
                self.stop = true;
                return;
            }
            if refusal.is_permanent() {
                tracing::error!("not reconnecting: {refusal}");
                self.stop = true;
                return;
            }
            tracing::info!("disconnected: {refusal}");
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(ConnectError::Disconnected));
            self.stop = true;
            return;
        }
        if self.options.reconnect {
            self.schedule_reconnect(now);
        } else {
            self.stop = true;
        }
    }

    fn schedule_reconnect(&mut self, now: Instant) {
        if !self.options.reconnect {
            self.stop = true;
            return;
        }
        let delay = self.backoff.next_delay();
        tracing::debug!(?delay, "reconnecting later");
        self.reconnect_at = Some(now + delay);
    }

    /// Writes what the core produced, closes when it asks, reports the login.
    fn after_input(&mut self, now: Instant) {
        if let Some(bytes) = self.engine.take_transmit()
            && let Some(link) = self.link.as_ref()
        {
            let _ = link.out.send(bytes);
        }
        if let Some(login) = self.engine.take_login() {
            self.login_deadline = None;
            self.backoff.reset();
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Ok(login));
            }
        }
        if self.engine.take_close() {
            if let Some(link) = self.link.take() {
                link.close();
            }
            self.engine.disconnected(now);
            self.after_disconnect(now);
            // Whatever the core said on the way out.
            if let Some(bytes) = self.engine.take_transmit() {
                drop(bytes);
            }
        }
    }

    async fn finish(mut self, close_reply: Option<oneshot::Sender<Result<(), HomeError>>>) {
        let now = Instant::now();
        if let Some(bytes) = self.engine.take_transmit()
            && let Some(link) = self.link.as_ref()
        {
            let _ = link.out.send(bytes);
        }
        let writer = self.link.take().map(Link::close);
        let saved = self.engine.shutdown();
        if let Err(e) = &saved {
            tracing::error!("cannot save the client state: {e}");
        }
        if let Some(writer) = writer {
            // Let acknowledgements reach the server.
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
        self.engine.disconnected(now);
        if let Some(reply) = close_reply {
            let _ = reply.send(saved);
        }
    }
}

/// Sleeps until `deadline` (forever if `None`).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
