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
//! Everything that does not depend on the runtime — engine bookkeeping,
//! outbound queues, the control and command channels, the client's
//! connection policy, the home directory — is in `missive-runtime` and
//! shared with the tokio driver. What is left here is sockets, timers and
//! task spawning.
//!
//! ## Upstream status
//!
//! **async-std is discontinued upstream** (RUSTSEC-2025-0052); its authors
//! recommend [smol](https://docs.rs/smol). This driver is kept thin on
//! purpose so that moving to smol is mechanical: the I/O goes through the
//! `futures-io` traits (`AsyncRead`/`AsyncWrite`), channels are
//! `futures-channel`, timers are `async-io`'s [`Timer`](async_io::Timer)
//! (the reactor under both async-std and smol); only `async_std::net` and
//! `async_std::task::{spawn, spawn_blocking}` name async-std itself.
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

mod client;
mod server;

pub use client::ClientHandle;
pub use server::BoundServer;

pub use missive_runtime::client::{
    ConnectError, Events, LoginInfo, Presence, PresenceError, SendError,
};
pub use missive_runtime::home::{ClientHome, HomeError, UserHome};
pub use missive_runtime::queue::QueueLimits;
pub use missive_runtime::serve::{ServeReport, ServerHandle, ServerOptions};
pub use missive_runtime::session::ClientOptions;
