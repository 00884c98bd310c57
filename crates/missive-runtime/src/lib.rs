//! # missive-runtime: what every Missive driver needs, whatever its runtime
//!
//! The protocol lives in `missive-core` (sans-IO); a driver owns sockets, a
//! clock, timers, the OS seed and the store thread. This crate holds the
//! parts of a driver that do not depend on the async runtime, so that the
//! tokio driver (`missive-tokio`) and any other (async-std, a blocking loop)
//! share them:
//!
//! - [`admin`]: the operator's control protocol (`missive-server admin`)
//!   and the server's side of it;
//! - [`driver`]: the connection driver itself — server and client, generic
//!   over a [`Runtime`](driver::Runtime) trait and byte-stream
//!   [`Transport`](driver::Transport)s; the runtime crates are adapters;
//! - [`cluster`]: the channel between the engine and a cluster node's
//!   coordinator (shard leases and calls between nodes);
//! - [`engine`]: the server engine — the core server, the store thread and
//!   one bounded outbound [`queue`] per connection, with the routing of
//!   every output (including dropping slow consumers);
//! - [`client`]: the client engine — the core client, state saving, send
//!   and presence futures, login results, events for the application;
//! - [`home`]: the client's home directory (private key PEM with mode 0600,
//!   state saved atomically) and key generation with progress;
//! - [`metrics`]: the server's Prometheus metrics, counted from the
//!   core's events by the engine, served by the driver's
//!   [`AdminListener`](driver::AdminListener) with `/healthz` and `/readyz`;
//! - [`os`]: the OS seed and the wall clock; [`Backoff`] for reconnecting;
//! - [`serve`]: driver options, the stop report and the control channel of a
//!   server ([`serve::ServerHandle`]);
//! - [`session`]: client options, preparing a client, the command channel of
//!   a client handle, and the connection policy of a client task
//!   ([`session::ClientSupervisor`]: login deadline, reconnection with
//!   backoff keeping the outbox, stopping).
//!
//! No driver here inspects packets: the core makes every protocol decision.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
mod backoff;
pub mod client;
pub mod cluster;
pub mod driver;
pub mod engine;
pub mod home;
pub mod metrics;
pub mod os;
pub mod queue;
mod removals;
pub mod serve;
pub mod session;

pub use backoff::Backoff;
pub use client::{
    ClientEngine, ConnectError, Events, LoginInfo, Presence, PresenceError, SendError, SendTicket,
};
pub use engine::{
    ConnEvent, CoordinatorGone, EngineError, EngineStats, ServerEngine, StoreEvents, UserRemoved,
};
pub use home::{ClientHome, HomeError, UserHome};
pub use metrics::{Metrics, TransportKind};
pub use os::{os_seed, unix_ms_now};
pub use queue::{
    OutboundReceiver, OutboundSender, QueueLimits, StopSignal, TrySendError, WriterStep,
};

pub use missive_core;
pub use missive_store;
