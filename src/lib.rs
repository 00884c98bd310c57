//! Missive: end-to-end encrypted, asynchronous 1:1 chat.
//!
//! This facade re-exports the sans-IO protocol core as [`core`]. See the
//! README for the drivers and the command-line tools.
#![forbid(unsafe_code)]

pub use missive_core as core;
