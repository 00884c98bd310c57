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
//! Everything that does not depend on the runtime — engine bookkeeping,
//! outbound queues, the control and command channels, the client's
//! connection policy, the home directory — is in `missive-runtime` and
//! shared with the async-std driver. What is left here is sockets, timers
//! and task spawning.
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
