//! # missive-core: the sans-IO protocol core of Missive
//!
//! Bytes and time go in; frames to send, timers, persistence commands and
//! events come out. No sockets, files, threads, async runtime, clock or OS
//! randomness live here: a *driver* (see `missive-tokio`, `missive-async-std`,
//! or the blocking example in `examples/`) owns those and feeds the core.
//!
//! Modules mirror docs/PROTOCOL.md: [`wire`] (framing and packets),
//! [`crypto`] (identities, login transcript, envelopes), [`server`] and
//! [`client`] (the two state machines).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod cluster;
pub mod crypto;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod rng;
pub mod server;
mod shared_bytes;
pub mod time;
pub mod types;
pub mod wire;

#[cfg(test)]
mod test_support;

pub use shared_bytes::SharedBytes;
pub use types::{
    ConnId, Lsn, MessageId, PeerKeyHasher, PeerKeyMap, Seq, UnixMillis, UserName, UserNameError,
};
