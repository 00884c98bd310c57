//! The monotonic instant every `now` and deadline of the core is expressed in.
//!
//! The core never reads a clock: drivers pass `now` in. Elsewhere this is
//! [`std::time::Instant`]; on `wasm32-unknown-unknown` (browsers), where
//! `std::time::Instant::now()` panics, it is `web_time::Instant`, which
//! drivers there read from `performance.now()`. Drivers name it
//! `missive_core::time::Instant` and build on every target.

#[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
pub use std::time::Instant;
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
pub use web_time::Instant;
