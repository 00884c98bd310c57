//! Shared test fixtures: RSA keys are slow to generate, so
//! each test binary generates its identities once.

use crate::crypto::Identity;
use crate::rng::{self, CoreRng};
use crate::types::UserName;
use std::sync::OnceLock;

/// Alice, Bob and Carol: 2048-bit identities from a fixed seed.
pub(crate) fn identities() -> &'static [Identity; 3] {
    static IDS: OnceLock<[Identity; 3]> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut rng = rng::from_seed([1; 32]);
        [(); 3].map(|()| Identity::generate(&mut rng, 2048).expect("2048-bit key"))
    })
}

pub(crate) fn alice() -> &'static Identity {
    &identities()[0]
}

pub(crate) fn bob() -> &'static Identity {
    &identities()[1]
}

pub(crate) fn carol() -> &'static Identity {
    &identities()[2]
}

/// A validated user name.
pub(crate) fn name(s: &str) -> UserName {
    UserName::new(s).expect("valid test name")
}

/// A generator seeded with `[n; 32]`.
pub(crate) fn seeded(n: u8) -> CoreRng {
    rng::from_seed([n; 32])
}

/// The unit tests' `#[test]` (each test module imports it): libtest's
/// natively; wasm-bindgen-test's on `wasm32-unknown-unknown`, where
/// wasm-bindgen-test-runner runs only those (scripts/test-wasm.sh runs
/// the unit tests there, under Node).
#[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
pub(crate) use core::prelude::v1::test;
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
pub(crate) use wasm_bindgen_test::wasm_bindgen_test as test;

/// Integers on both sides of every CBOR head-length boundary (1, 2, 3, 5
/// and 9 header bytes), for codec tests.
pub(crate) const CBOR_HEAD_BOUNDARIES: [u64; 10] = [
    0,
    23,
    24,
    255,
    256,
    65_535,
    65_536,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    u64::MAX,
];

/// The boundaries of [`CBOR_HEAD_BOUNDARIES`] that make sensible byte
/// string lengths (up to 64 KiB).
pub(crate) fn cbor_length_boundaries() -> impl Iterator<Item = usize> {
    CBOR_HEAD_BOUNDARIES
        .into_iter()
        .filter(|&n| n <= 65_536)
        .map(|n| n as usize)
}
