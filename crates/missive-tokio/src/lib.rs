//! # missive-tokio: the tokio driver of Missive
//!
//! The protocol core (`missive-core`) decides everything; this crate owns
//! the sockets, the clock, the timers, the OS seed and the store thread, on
//! tokio. It provides:
//!
//! - the TCP server: [`BoundServer`] (bind, then [`serve`](BoundServer::serve)
//!   or [`serve_until`](BoundServer::serve_until)) and its [`ServerHandle`];
//! - the client library: [`ClientHandle`] (connect, register if needed,
//!   send, presence, events, automatic pings and reconnection);
//! - the `missive-server` and `missive` command-line tools (in `src/bin`).
//!
//! The runtime-independent parts (engine bookkeeping, outbound queues, home
//! directory, client engine) are in `missive-runtime`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod server;

pub use client::{ClientHandle, ClientOptions};
pub use server::{BoundServer, ServeReport, ServerHandle, ServerOptions};

pub use missive_runtime::client::{
    ConnectError, Events, LoginInfo, Presence, PresenceError, SendError,
};
pub use missive_runtime::home::{ClientHome, HomeError, UserHome};
pub use missive_runtime::queue::QueueLimits;
