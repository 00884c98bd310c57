//! # missive-async-std: the async-std driver of Missive
//!
//! The protocol core (`missive-core`) decides everything; this crate owns
//! the sockets, the clock, the timers and the tasks, on async-std. Its
//! public API mirrors `missive-tokio`, so switching runtimes is a matter of
//! changing the crate name:
//!
//! - the TCP server: [`BoundServer`] (bind, then [`serve`](BoundServer::serve)
//!   or [`serve_until`](BoundServer::serve_until)) and its [`ServerHandle`],
//!   over the same stores (`missive-store`: redb or in memory);
//! - the client library: [`ClientHandle`] (connect, register if needed,
//!   send, presence, events, automatic pings and reconnection keeping the
//!   outbox).
//!
//! The driver itself — serve loop, connection readers and writers, client
//! task — is written once in `missive-runtime` ([`missive_runtime::driver`]),
//! generic over a small runtime trait; this crate is the adapter: [`AsyncStd`]
//! implements that trait (spawning, blocking jobs, timers, TCP), and
//! [`BoundServer`] and [`ClientHandle`] are the generic types on it, so the
//! API is the tokio driver's by construction.
//!
//! ## Upstream status
//!
//! **async-std is discontinued upstream** (RUSTSEC-2025-0052); its authors
//! recommend [smol](https://docs.rs/smol). This adapter is kept thin on
//! purpose so that moving to smol is mechanical: the I/O goes through the
//! `futures-io` traits (`AsyncRead`/`AsyncWrite`), channels are
//! `futures-channel`, timers are `async-io`'s [`Timer`](async_io::Timer)
//! (the reactor under both async-std and smol); only `async_std::net` and
//! `async_std::task::{spawn, spawn_blocking}` name async-std itself (in
//! `src/runtime.rs`).
//!
//! ```no_run
//! use missive_async_std::{BoundServer, ClientHandle, ClientOptions};
//! use missive_core::UserName;
//! use missive_core::server::ServerConfig;
//! use missive_store::MemoryStore;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async_std::task::block_on(async {
//!     let server = BoundServer::bind("127.0.0.1:0", ServerConfig::default(), Box::new(MemoryStore::new())).await?;
//!     let addr = server.local_addr();
//!     let handle = server.handle();
//!     let serving = async_std::task::spawn(server.serve());
//!
//!     let options = ClientOptions::new(addr.to_string(), "/tmp/missive-home", UserName::new("alice")?);
//!     let (alice, _events) = ClientHandle::connect(options).await?;
//!     alice.send(UserName::new("alice")?, "a note to self").await?;
//!     alice.close().await?;
//!
//!     handle.shutdown();
//!     serving.await?;
//!     Ok(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod runtime;

pub use runtime::{AsyncStd, TcpListener, TcpStream};

/// A server bound to its address with its store loaded, not yet serving.
///
/// ```no_run
/// use missive_async_std::BoundServer;
/// use missive_core::server::ServerConfig;
/// use missive_store::MemoryStore;
///
/// # async fn run() -> Result<(), missive_async_std::ServeError> {
/// let server = BoundServer::bind("127.0.0.1:0", ServerConfig::default(), Box::new(MemoryStore::new())).await?;
/// println!("listening on {}", server.local_addr());
/// let handle = server.handle();
/// // ... later, from anywhere: handle.shutdown();
/// server.serve().await?;
/// # Ok(()) }
/// ```
pub type BoundServer = missive_runtime::driver::BoundServer<AsyncStd>;
/// A server on TLS over TCP ([`BoundServer::bind_tls`](missive_runtime::driver::BoundServer::bind_tls)).
pub type TlsBoundServer = missive_runtime::driver::BoundServer<
    AsyncStd,
    missive_runtime::driver::TlsListener<AsyncStd, TcpListener>,
>;

/// A connected client. Dropping it stops the client (its state is saved).
///
/// ```no_run
/// use missive_async_std::{ClientHandle, ClientOptions};
/// use missive_core::UserName;
/// use missive_core::client::ClientEvent;
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
pub type ClientHandle = missive_runtime::driver::ClientHandle<AsyncStd>;
/// A client on TLS over TCP (connected with a
/// [`TlsConnector`](missive_runtime::driver::TlsConnector)).
pub type TlsClientHandle = missive_runtime::driver::ClientHandle<
    AsyncStd,
    missive_runtime::driver::TlsConnector<AsyncStd>,
>;

pub use missive_runtime::client::{
    ConnectError, Events, LoginInfo, Presence, PresenceError, SendError,
};
pub use missive_runtime::home::{ClientHome, HomeError, UserHome};
pub use missive_runtime::queue::QueueLimits;
pub use missive_runtime::serve::{ServeError, ServeReport, ServerHandle, ServerOptions};
pub use missive_runtime::session::ClientOptions;
