//! Missive: end-to-end encrypted, asynchronous 1:1 chat.
//!
//! This facade re-exports the sans-IO protocol core as [`core`] and the
//! durable store as [`store`]. See the README for the drivers and the
//! command-line tools.
#![forbid(unsafe_code)]

pub use missive_core as core;
pub use missive_store as store;
