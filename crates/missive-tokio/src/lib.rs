//! # missive-tokio: the tokio driver of Missive
//!
//! The protocol core (`missive-core`) decides everything; this crate owns
//! the sockets, the clock, the timers, the OS seed and the store thread, on
//! tokio. It provides:
//!
//! - the TCP server: [`BoundServer`] (bind, then [`serve`](BoundServer::serve)
//!   or [`serve_until`](BoundServer::serve_until)) and its [`ServerHandle`];
//! - the client library: [`ClientHandle`] (connect, register if needed,
//!   send, presence, events, automatic pings and reconnection).
//!
//! The `missive-server` and `missive` command-line tools are in the
//! `missive-cli` crate, so that a library user does not build their
//! dependencies.
//!
//! The driver itself — serve loop, connection readers and writers, client
//! task — is written once in `missive-runtime` ([`missive_runtime::driver`]),
//! generic over a small runtime trait; this crate is the adapter: [`Tokio`]
//! implements that trait (spawning, blocking jobs, timers, TCP), and
//! [`BoundServer`] and [`ClientHandle`] are the generic types on it, so the
//! API is the async-std driver's by construction.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod runtime;

pub use runtime::{Compat, TcpListener, TcpStream, Tokio};

/// A server bound to its address with its store loaded, not yet serving.
///
/// ```no_run
/// use missive_core::server::ServerConfig;
/// use missive_store::MemoryStore;
/// use missive_tokio::BoundServer;
///
/// # async fn run() -> Result<(), missive_tokio::ServeError> {
/// let server = BoundServer::bind("127.0.0.1:0", ServerConfig::default(), Box::new(MemoryStore::new())).await?;
/// println!("listening on {}", server.local_addr());
/// server.serve_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub type BoundServer = missive_runtime::driver::BoundServer<Tokio>;
/// A server on TLS over TCP ([`BoundServer::bind_tls`](missive_runtime::driver::BoundServer::bind_tls)).
pub type TlsBoundServer = missive_runtime::driver::BoundServer<
    Tokio,
    missive_runtime::driver::TlsListener<Tokio, TcpListener>,
>;

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
pub type ClientHandle = missive_runtime::driver::ClientHandle<Tokio>;
/// A client on TLS over TCP (connected with a
/// [`TlsConnector`](missive_runtime::driver::TlsConnector)).
pub type TlsClientHandle =
    missive_runtime::driver::ClientHandle<Tokio, missive_runtime::driver::TlsConnector<Tokio>>;

pub use missive_runtime::client::{
    ConnectError, Events, LoginInfo, Presence, PresenceError, SendError,
};
pub use missive_runtime::home::{ClientHome, HomeError, UserHome};
pub use missive_runtime::queue::QueueLimits;
pub use missive_runtime::serve::{ServeError, ServeReport, ServerHandle, ServerOptions};
pub use missive_runtime::session::ClientOptions;
