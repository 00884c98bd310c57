//! Missive: end-to-end encrypted, asynchronous 1:1 chat.
//!
//! This facade re-exports the sans-IO protocol core as [`core`] and the
//! durable store as [`store`], and — behind the features of the same names —
//! the drivers: `missive::tokio` (feature `tokio`) and `missive::async_std`
//! (feature `async-std`; async-std is discontinued upstream, see that
//! crate's docs). Both drivers have the same API. See the README for the
//! command-line tools.
#![forbid(unsafe_code)]

pub use missive_core as core;
pub use missive_store as store;

/// The tokio driver (`missive-tokio`): TCP server and client library.
#[cfg(feature = "tokio")]
pub use missive_tokio as tokio;

/// The async-std driver (`missive-async-std`): TCP server and client library.
#[cfg(feature = "async-std")]
pub use missive_async_std as async_std;
