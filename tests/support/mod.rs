//! The driver harness of the conformance suite: one synchronous interface
//! over every server driver ([`ServerDriver`]) and every client driver
//! ([`ClientDriver`]), so that a test body written once runs against every
//! pairing. Each call runs on its driver's own runtime: a shared tokio
//! runtime driven through `block_on`, or async-std's global executor
//! through `async_std::task::block_on`.
//!
//! Every driver runs in plaintext, over TLS, or over WebSocket (`ws`, or
//! `wss` over TLS) ([`Security`]): TLS servers present one self-signed
//! certificate (made once per test binary) that TLS clients trust.
//!
//! Also: test identities (generated once per test binary), home-directory
//! set-up, and a bare blocking client (the core over `std::net`) for peers
//! that must misbehave — stay silent, send garbage.
#![allow(dead_code)]

use async_tungstenite::tungstenite;
use missive::core::client::{
    Client, ClientConfig, ClientEvent, ClientInput, ClientOutput, ClientState, Registration,
};
use missive::core::crypto::ChannelBinding;
use missive::core::crypto::{Fingerprint, Identity};
use missive::core::server::{Server, ServerConfig};
use missive::core::wire::{ErrorCode, FrameDecoder, Link, ServerPacket, decode_packet};
use missive::core::{MessageId, UserName, rng};
use missive::store::Store;
use missive_runtime::client::{
    ConnectError, Events, LoginInfo, Presence, PresenceError, SendError,
};
use missive_runtime::driver::rustls::pki_types::ServerName;
use missive_runtime::driver::{
    self, BoundServer, ClientHandle, Connector, Listener, Runtime, SUBPROTOCOL, TcpConnector,
    TlsConnector, TlsListener, WsConnector, WsListener, listen_tcp, rustls, self_signed,
    websocket_client_config, websocket_server_config,
};
use missive_runtime::home::ClientHome;
use missive_runtime::serve::{ServeError, ServeReport, ServerHandle, ServerOptions};
use missive_runtime::session::ClientOptions;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The longest any single wait may take.
pub const T: Duration = Duration::from_secs(10);

/// Four 2048-bit identities, generated once per test binary (in parallel).
pub fn identities() -> &'static [Identity; 4] {
    static KEYS: OnceLock<[Identity; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..4u8)
                .map(|i| {
                    s.spawn(move || {
                        Identity::generate(&mut rng::from_seed([i + 90; 32]), 2048).expect("keygen")
                    })
                })
                .collect();
            let keys: Vec<Identity> = workers.into_iter().map(|w| w.join().unwrap()).collect();
            keys.try_into().unwrap_or_else(|_| unreachable!())
        })
    })
}

/// A user name.
pub fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

/// Identity `key`'s fingerprint.
pub fn fingerprint(key: usize) -> Fingerprint {
    identities()[key].public_key().fingerprint()
}

/// What a test asks of a client, whatever its driver.
#[derive(Debug, Clone)]
pub struct Opts {
    /// The server.
    pub server: SocketAddr,
    /// The client home directory.
    pub home: PathBuf,
    /// The user.
    pub user: String,
    /// Whether and when to register the user.
    pub registration: Registration,
    /// Presence after login.
    pub start_online: bool,
}

/// Options for `name` on `server` with identity `key` installed in `home`
/// (no key generation in the tests).
pub fn opts(server: SocketAddr, home: &Path, name: &str, key: usize) -> Opts {
    let user_home = ClientHome::new(home).user(&user(name));
    if !user_home.has_identity() {
        user_home.save_identity(&identities()[key]).unwrap();
    }
    Opts {
        server,
        home: home.to_path_buf(),
        user: name.to_string(),
        registration: Registration::IfUnknown,
        start_online: true,
    }
}

/// Plaintext, TLS, or WebSocket over either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// The protocol right on TCP.
    Plaintext,
    /// TLS 1.3 with the test certificate ([`tls`]).
    Tls,
    /// WebSocket (`ws://`) over TCP.
    Ws,
    /// WebSocket over TLS (`wss://`, ALPN `http/1.1`).
    Wss,
}

impl Security {
    /// Whether the protocol runs as a byte stream (every packet behind its
    /// length prefix) rather than one packet per WebSocket message.
    pub fn is_stream(self) -> bool {
        matches!(self, Security::Plaintext | Security::Tls)
    }
}

/// The TLS configurations of the tests: the server's, with a self-signed
/// certificate for `127.0.0.1` and `localhost`, and the client's, trusting
/// it. Made once per test binary.
pub fn tls() -> &'static (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    static TLS: OnceLock<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> = OnceLock::new();
    TLS.get_or_init(|| {
        let cert = self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.chain[0].clone()).unwrap();
        (
            driver::server_config(cert.chain, cert.key).unwrap(),
            driver::client_config(roots).unwrap(),
        )
    })
}

/// The TLS configuration of the wss servers (ALPN `http/1.1`).
fn wss_config() -> Arc<rustls::ServerConfig> {
    websocket_server_config(&tls().0)
}

/// A running server, whatever its driver.
pub trait RunningServer {
    /// The address it listens on.
    fn addr(&self) -> SocketAddr;
    /// Plaintext or TLS.
    fn security(&self) -> Security;
    /// Runs `f` on the core server inside the server's task.
    fn query(&self, f: Box<dyn FnOnce(&Server) -> u64 + Send>) -> u64;
    /// Stops it gracefully and waits until it has stopped; the store
    /// commands it wrote.
    fn stop(self: Box<Self>) -> u64;
}

impl dyn RunningServer + '_ {
    /// A blocking connection to the server (TLS if it serves TLS, WebSocket
    /// if it serves WebSocket), for bare peers.
    pub fn bare_connect(&self) -> BareStream {
        let tcp = TcpStream::connect(self.addr()).unwrap();
        let over_tls = |config: Arc<rustls::ClientConfig>, tcp: TcpStream| {
            let name = ServerName::from(self.addr().ip());
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            BareStream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
        };
        let (scheme, stream) = match self.security() {
            Security::Plaintext => return BareStream::Plaintext(tcp),
            Security::Tls => return over_tls(Arc::clone(&tls().1), tcp),
            Security::Ws => ("ws", BareStream::Plaintext(tcp)),
            Security::Wss => ("wss", over_tls(websocket_client_config(&tls().1), tcp)),
        };
        use tungstenite::client::IntoClientRequest;
        let mut request = format!("{scheme}://{}/", self.addr())
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
        );
        let (ws, _) = tungstenite::client(request, stream).expect("WebSocket handshake");
        BareStream::Ws(Box::new(ws))
    }

    /// Items queued in every mailbox (messages and notices).
    pub fn queued(&self) -> u64 {
        self.query(Box::new(|s| s.state().queued_items() as u64))
    }

    /// Registered users.
    pub fn users(&self) -> u64 {
        self.query(Box::new(|s| s.state().user_count() as u64))
    }

    /// Whether `name` is online.
    pub fn is_online(&self, name: &str) -> bool {
        let name = user(name);
        self.query(Box::new(move |s| u64::from(s.is_online(&name)))) == 1
    }

    /// Waits until `f` holds, or panics after [`T`].
    pub fn wait_for(&self, what: &str, f: impl Fn(&Server) -> bool + Send + Clone + 'static) {
        let deadline = Instant::now() + T;
        loop {
            let g = f.clone();
            if self.query(Box::new(move |s| u64::from(g(s)))) == 1 {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Starts servers of one driver.
pub trait ServerDriver: Sync {
    /// Binds `addr` and serves `store` with `config`.
    fn try_start(
        &self,
        addr: &str,
        config: ServerConfig,
        store: Box<dyn Store>,
    ) -> Result<Box<dyn RunningServer>, ServeError>;
}

impl dyn ServerDriver + '_ {
    /// A server on a fresh loopback port.
    pub fn start(&self, config: ServerConfig, store: Box<dyn Store>) -> Box<dyn RunningServer> {
        self.try_start("127.0.0.1:0", config, store)
            .expect("start the server")
    }

    /// A server on `addr` (a port used before: retried while it is busy).
    /// `store` is made afresh for each try.
    pub fn start_on(
        &self,
        addr: SocketAddr,
        config: ServerConfig,
        store: impl Fn() -> Box<dyn Store>,
    ) -> Box<dyn RunningServer> {
        let deadline = Instant::now() + T;
        loop {
            match self.try_start(&addr.to_string(), config.clone(), store()) {
                Ok(server) => return server,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        }
    }
}

/// A send still in progress.
pub type PendingSend = Box<dyn FnOnce(Duration) -> Option<Result<MessageId, SendError>>>;

/// A connected client, whatever its driver.
pub trait TestClient {
    /// What the login reported.
    fn login(&self) -> LoginInfo;
    /// The fingerprint of the user's key.
    fn fingerprint(&self) -> Fingerprint;
    /// Sends and waits for the server's acceptance.
    fn send(&self, to: &str, body: &str) -> Result<MessageId, SendError>;
    /// Starts a send; the returned function waits for its outcome (`None`
    /// on timeout).
    fn send_later(&self, to: &str, body: &str) -> PendingSend;
    /// The next event, or `None` after `timeout`.
    fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent>;
    /// Announces presence.
    fn set_presence(&self, online: bool);
    /// Asks for a user's presence.
    fn query_presence(&self, name: &str) -> Result<Presence, PresenceError>;
    /// The fingerprint pinned for `name`.
    fn pinned(&self, name: &str) -> Option<Fingerprint>;
    /// Stops the client (state saved).
    fn close(self: Box<Self>);
}

impl dyn TestClient + '_ {
    /// The next event matching `f`, or a panic after [`T`].
    pub fn expect<R>(&mut self, what: &str, mut f: impl FnMut(ClientEvent) -> Option<R>) -> R {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(event) => {
                    if let Some(r) = f(event) {
                        return r;
                    }
                }
                None => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// The next received message as (sender, id, text).
    pub fn expect_message(&mut self) -> (String, MessageId, String) {
        self.expect("a message", |e| match e {
            ClientEvent::MessageReceived { from, id, body, .. } => {
                Some((from.to_string(), id, String::from_utf8(body).unwrap()))
            }
            _ => None,
        })
    }

    /// Asserts that no message arrives within `wait`.
    pub fn expect_no_message(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(ClientEvent::MessageReceived { from, .. }) = self.next_event(left) {
                panic!("unexpected message from {from}");
            }
        }
    }
}

/// Connects clients of one driver.
pub trait ClientDriver: Sync {
    /// Connects (registering if needed and allowed) and logs in.
    fn connect(&self, opts: &Opts) -> Result<Box<dyn TestClient>, ConnectError>;
}

impl dyn ClientDriver + '_ {
    /// Connects, or panics.
    pub fn client(&self, opts: &Opts) -> Box<dyn TestClient> {
        match self.connect(opts) {
            Ok(client) => client,
            Err(e) => panic!("{} cannot connect: {e}", opts.user),
        }
    }
}

// ---------------------------------------------------------------- tokio

/// The tokio driver.
pub struct Tokio(pub Security);

/// The runtime every tokio server and client of this test binary runs on.
fn tokio_rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

struct TokioServer {
    addr: SocketAddr,
    security: Security,
    handle: missive_tokio::ServerHandle,
    task: tokio::task::JoinHandle<Result<missive_tokio::ServeReport, ServeError>>,
}

impl RunningServer for TokioServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn security(&self) -> Security {
        self.security
    }

    fn query(&self, f: Box<dyn FnOnce(&Server) -> u64 + Send>) -> u64 {
        tokio_rt()
            .block_on(self.handle.inspect(f))
            .expect("server running")
    }

    fn stop(self: Box<Self>) -> u64 {
        self.handle.shutdown();
        let report = tokio_rt().block_on(self.task).unwrap().unwrap();
        report.store.commands
    }
}

/// A server serving.
type Serving = Pin<Box<dyn Future<Output = Result<ServeReport, ServeError>> + Send>>;

/// Binds a server on runtime `R` with `security` at `addr` and hands its
/// serving future to `spawn`: its address, its handle and what `spawn`
/// returned.
async fn bind_and_serve<R: Runtime, T>(
    security: Security,
    addr: &str,
    config: ServerConfig,
    store: Box<dyn Store>,
    spawn: fn(Serving) -> T,
) -> Result<(SocketAddr, ServerHandle, T), ServeError> {
    fn started<R: Runtime, L: Listener, T>(
        server: BoundServer<R, L>,
        spawn: fn(Serving) -> T,
    ) -> (SocketAddr, ServerHandle, T) {
        let (addr, handle) = (server.local_addr(), server.handle());
        (addr, handle, spawn(Box::pin(server.serve())))
    }
    let tcp = listen_tcp::<R>(addr).await?;
    let max_frame = config.max_frame;
    let options = ServerOptions::default();
    Ok(match security {
        Security::Plaintext => started(
            BoundServer::<R, _>::with_listener(tcp, config, store, options).await?,
            spawn,
        ),
        Security::Tls => {
            let tls = TlsListener::<R, _>::new(tcp, Arc::clone(&tls().0));
            started(
                BoundServer::<R, _>::with_listener(tls, config, store, options).await?,
                spawn,
            )
        }
        Security::Ws => {
            let ws = WsListener::<R, _>::new(tcp, max_frame);
            started(
                BoundServer::<R, _>::with_listener(ws, config, store, options).await?,
                spawn,
            )
        }
        Security::Wss => {
            let ws =
                WsListener::<R, _>::new(TlsListener::<R, _>::new(tcp, wss_config()), max_frame);
            started(
                BoundServer::<R, _>::with_listener(ws, config, store, options).await?,
                spawn,
            )
        }
    })
}

impl ServerDriver for Tokio {
    fn try_start(
        &self,
        addr: &str,
        config: ServerConfig,
        store: Box<dyn Store>,
    ) -> Result<Box<dyn RunningServer>, ServeError> {
        let (addr, handle, task) = tokio_rt().block_on(
            bind_and_serve::<missive_tokio::Tokio, _>(self.0, addr, config, store, |serving| {
                tokio_rt().spawn(serving)
            }),
        )?;
        Ok(Box::new(TokioServer {
            addr,
            security: self.0,
            handle,
            task,
        }))
    }
}

struct TokioClient<C: Connector> {
    handle: Arc<ClientHandle<missive_tokio::Tokio, C>>,
    events: Events,
}

impl Opts {
    /// The client options every driver's client is connected with (both
    /// drivers share `missive_runtime::session::ClientOptions`).
    pub fn client_options(&self) -> ClientOptions {
        let mut options = ClientOptions::new(self.server.to_string(), &self.home, user(&self.user));
        options.generate_key = false;
        options.registration = self.registration;
        options.start_online = self.start_online;
        options.backoff_initial = Duration::from_millis(50);
        options.backoff_max = Duration::from_millis(300);
        options
    }
}

impl ClientDriver for Tokio {
    fn connect(&self, o: &Opts) -> Result<Box<dyn TestClient>, ConnectError> {
        let options = o.client_options();
        Ok(match self.0 {
            Security::Plaintext => {
                tokio_client(TcpConnector::<missive_tokio::Tokio>::default(), options)?
            }
            Security::Tls => tokio_client(
                TlsConnector::<missive_tokio::Tokio>::new(Arc::clone(&tls().1)),
                options,
            )?,
            Security::Ws => tokio_client(WsConnector::<missive_tokio::Tokio, _>::plain(), options)?,
            Security::Wss => tokio_client(
                WsConnector::<missive_tokio::Tokio, _>::tls(&tls().1),
                options,
            )?,
        })
    }
}

fn tokio_client<C: Connector>(
    connector: C,
    options: ClientOptions,
) -> Result<Box<dyn TestClient>, ConnectError> {
    let (handle, events) = tokio_rt().block_on(ClientHandle::connect_with(connector, options))?;
    Ok(Box::new(TokioClient {
        handle: Arc::new(handle),
        events,
    }))
}

impl<C: Connector> TestClient for TokioClient<C> {
    fn login(&self) -> LoginInfo {
        self.handle.login()
    }

    fn fingerprint(&self) -> Fingerprint {
        self.handle.fingerprint()
    }

    fn send(&self, to: &str, body: &str) -> Result<MessageId, SendError> {
        self.send_later(to, body)(T).expect("send timed out")
    }

    fn send_later(&self, to: &str, body: &str) -> PendingSend {
        let handle = Arc::clone(&self.handle);
        let (to, body) = (user(to), body.to_string());
        let task = tokio_rt().spawn(async move { handle.send(to, body).await });
        Box::new(move |timeout| {
            tokio_rt()
                .block_on(async { tokio::time::timeout(timeout, task).await })
                .ok()
                .map(|joined| joined.expect("send task"))
        })
    }

    fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent> {
        tokio_rt()
            .block_on(async { tokio::time::timeout(timeout, self.events.recv()).await })
            .ok()
            .flatten()
    }

    fn set_presence(&self, online: bool) {
        self.handle.set_presence(online);
    }

    fn query_presence(&self, name: &str) -> Result<Presence, PresenceError> {
        tokio_rt()
            .block_on(async {
                tokio::time::timeout(T, self.handle.query_presence(user(name))).await
            })
            .expect("presence query timed out")
    }

    fn pinned(&self, name: &str) -> Option<Fingerprint> {
        tokio_rt().block_on(self.handle.pinned_fingerprint(user(name)))
    }

    fn close(self: Box<Self>) {
        if let Ok(handle) = Arc::try_unwrap(self.handle) {
            tokio_rt().block_on(handle.close()).expect("close");
        }
    }
}

// ---------------------------------------------------------------- async-std

/// The async-std driver.
pub struct AsyncStd(pub Security);

struct AsyncStdServer {
    addr: SocketAddr,
    security: Security,
    handle: missive_async_std::ServerHandle,
    task: async_std::task::JoinHandle<Result<missive_async_std::ServeReport, ServeError>>,
}

impl RunningServer for AsyncStdServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn security(&self) -> Security {
        self.security
    }

    fn query(&self, f: Box<dyn FnOnce(&Server) -> u64 + Send>) -> u64 {
        async_std::task::block_on(self.handle.inspect(f)).expect("server running")
    }

    fn stop(self: Box<Self>) -> u64 {
        self.handle.shutdown();
        let report = async_std::task::block_on(self.task).unwrap();
        report.store.commands
    }
}

impl ServerDriver for AsyncStd {
    fn try_start(
        &self,
        addr: &str,
        config: ServerConfig,
        store: Box<dyn Store>,
    ) -> Result<Box<dyn RunningServer>, ServeError> {
        let (addr, handle, task) =
            async_std::task::block_on(bind_and_serve::<missive_async_std::AsyncStd, _>(
                self.0,
                addr,
                config,
                store,
                async_std::task::spawn,
            ))?;
        Ok(Box::new(AsyncStdServer {
            addr,
            security: self.0,
            handle,
            task,
        }))
    }
}

struct AsyncStdClient<C: Connector> {
    handle: Arc<ClientHandle<missive_async_std::AsyncStd, C>>,
    events: Events,
}

impl ClientDriver for AsyncStd {
    fn connect(&self, o: &Opts) -> Result<Box<dyn TestClient>, ConnectError> {
        let options = o.client_options();
        Ok(match self.0 {
            Security::Plaintext => async_std_client(
                TcpConnector::<missive_async_std::AsyncStd>::default(),
                options,
            )?,
            Security::Tls => async_std_client(
                TlsConnector::<missive_async_std::AsyncStd>::new(Arc::clone(&tls().1)),
                options,
            )?,
            Security::Ws => async_std_client(
                WsConnector::<missive_async_std::AsyncStd, _>::plain(),
                options,
            )?,
            Security::Wss => async_std_client(
                WsConnector::<missive_async_std::AsyncStd, _>::tls(&tls().1),
                options,
            )?,
        })
    }
}

fn async_std_client<C: Connector>(
    connector: C,
    options: ClientOptions,
) -> Result<Box<dyn TestClient>, ConnectError> {
    let (handle, events) =
        async_std::task::block_on(ClientHandle::connect_with(connector, options))?;
    Ok(Box::new(AsyncStdClient {
        handle: Arc::new(handle),
        events,
    }))
}

impl<C: Connector> TestClient for AsyncStdClient<C> {
    fn login(&self) -> LoginInfo {
        self.handle.login()
    }

    fn fingerprint(&self) -> Fingerprint {
        self.handle.fingerprint()
    }

    fn send(&self, to: &str, body: &str) -> Result<MessageId, SendError> {
        self.send_later(to, body)(T).expect("send timed out")
    }

    fn send_later(&self, to: &str, body: &str) -> PendingSend {
        let handle = Arc::clone(&self.handle);
        let (to, body) = (user(to), body.to_string());
        let task = async_std::task::spawn(async move { handle.send(to, body).await });
        Box::new(move |timeout| {
            async_std::task::block_on(async_std::future::timeout(timeout, task)).ok()
        })
    }

    fn next_event(&mut self, timeout: Duration) -> Option<ClientEvent> {
        async_std::task::block_on(async_std::future::timeout(timeout, self.events.recv()))
            .ok()
            .flatten()
    }

    fn set_presence(&self, online: bool) {
        self.handle.set_presence(online);
    }

    fn query_presence(&self, name: &str) -> Result<Presence, PresenceError> {
        async_std::task::block_on(async_std::future::timeout(
            T,
            self.handle.query_presence(user(name)),
        ))
        .expect("presence query timed out")
    }

    fn pinned(&self, name: &str) -> Option<Fingerprint> {
        async_std::task::block_on(self.handle.pinned_fingerprint(user(name)))
    }

    fn close(self: Box<Self>) {
        if let Ok(handle) = Arc::try_unwrap(self.handle) {
            async_std::task::block_on(handle.close()).expect("close");
        }
    }
}

// ---------------------------------------------------------------- bare peers

/// A blocking connection of a bare peer: plain TCP, TLS over it, or
/// WebSocket over either. On WebSocket every `write` is one binary message
/// (one packet) and every `read` one whole message.
pub enum BareStream {
    /// Plain TCP.
    Plaintext(TcpStream),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// WebSocket over plain TCP or TLS.
    Ws(Box<tungstenite::WebSocket<BareStream>>),
}

impl BareStream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plaintext(tcp) => tcp,
            Self::Tls(tls) => &tls.sock,
            Self::Ws(ws) => ws.get_ref().tcp(),
        }
    }

    /// What the core needs to know of the connection: the channel binding
    /// (below) and the framing (one packet per message on WebSocket).
    pub fn link(&mut self) -> Link {
        match self {
            Self::Ws(_) => Link::messages(ChannelBinding::None),
            _ => Link::stream(self.channel_binding()),
        }
    }

    /// Writes `packet` (CBOR, no length prefix) as the server reads one:
    /// behind its length prefix on a byte stream, as one message on
    /// WebSocket.
    pub fn send_packet(&mut self, packet: &[u8]) {
        if let Self::Ws(_) = self {
            self.write_all(packet).unwrap();
        } else {
            let len = u32::try_from(packet.len()).unwrap().to_be_bytes();
            self.write_all(&[&len[..], packet].concat()).unwrap();
        }
    }

    /// The channel binding the core puts into the login transcript: the
    /// TLS exporter value (after finishing the handshake), or none (on
    /// WebSocket, even over TLS).
    pub fn channel_binding(&mut self) -> missive_core::crypto::ChannelBinding {
        match self {
            Self::Plaintext(_) | Self::Ws(_) => missive_core::crypto::ChannelBinding::None,
            Self::Tls(tls) => {
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
                }
                let value = tls
                    .conn
                    .export_keying_material(
                        [0; 32],
                        missive_runtime::driver::CHANNEL_BINDING_LABEL,
                        None,
                    )
                    .expect("TLS exporter");
                missive_core::crypto::ChannelBinding::TlsExporter(value)
            }
        }
    }
}

/// A WebSocket failure as an I/O error (the end of the connection as 0
/// bytes read).
fn ws_read(ws: &mut tungstenite::WebSocket<BareStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Binary(packet)) => {
                assert!(
                    packet.len() <= buf.len(),
                    "a message larger than the read buffer"
                );
                buf[..packet.len()].copy_from_slice(&packet);
                return Ok(packet.len());
            }
            Ok(tungstenite::Message::Close(_))
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(0);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) => return Err(e),
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
}

impl Read for BareStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plaintext(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
            Self::Ws(ws) => ws_read(ws, buf),
        }
    }
}

impl Write for BareStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plaintext(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
            Self::Ws(ws) => {
                ws.send(tungstenite::Message::binary(buf.to_vec()))
                    .map_err(std::io::Error::other)?;
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plaintext(tcp) => tcp.flush(),
            Self::Tls(tls) => tls.flush(),
            Self::Ws(ws) => ws.flush().map_err(std::io::Error::other),
        }
    }
}

/// Logs `name` (identity `key`) in with the bare core client over a
/// blocking socket and returns the socket; nothing more is sent on it (no
/// pings). Needs no runtime.
pub fn silent_login(server: &dyn RunningServer, name: &str, key: usize) -> BareStream {
    let mut stream = server.bare_connect();
    stream.tcp().set_read_timeout(Some(T)).unwrap();
    let mut client = Client::new(
        ClientConfig::new(user(name)),
        identities()[key].clone(),
        ClientState::default(),
        [9; 32],
        Instant::now(),
        1_760_000_000_000,
    );
    let link = stream.link();
    client.handle_input(Instant::now(), ClientInput::Connected(link));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(output) = client.poll_output() {
            match output {
                ClientOutput::Transmit(bytes) => stream.write_all(&bytes).unwrap(),
                ClientOutput::Event(ClientEvent::LoggedIn { .. }) => return stream,
                ClientOutput::Close => panic!("closed during login"),
                _ => {}
            }
        }
        let n = stream.read(&mut buf).expect("read during login");
        assert!(n > 0, "server closed during login");
        client.handle_input(Instant::now(), ClientInput::Bytes(&buf[..n]));
    }
}

/// Reads until the server closes the connection (panics if it does not
/// within `timeout`); returns the error codes it sent.
pub fn read_until_closed(stream: &mut BareStream, timeout: Duration) -> Vec<ErrorCode> {
    stream.tcp().set_read_timeout(Some(timeout)).unwrap();
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            // A TLS connection cut without `close_notify` ends the same way.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                0
            }
            Err(e) => panic!("the server did not close the connection: {e}"),
        };
        if n == 0 {
            return codes;
        }
        let mut packets = Vec::new();
        if let BareStream::Ws(_) = stream {
            packets.push(decode_packet::<ServerPacket>(&buf[..n]).unwrap());
        } else {
            decoder.push(&buf[..n]);
            while let Some(packet) = decoder.next_packet::<ServerPacket>().unwrap() {
                packets.push(packet);
            }
        }
        for packet in packets {
            if let ServerPacket::Error { code, .. } = packet {
                codes.push(code);
            }
        }
    }
}
