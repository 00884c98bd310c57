//! Shared fixtures for the crypto tests: RSA keys are slow to generate, so
//! each test binary generates its identities once.

use super::Identity;
use crate::rng::{self, CoreRng};
use crate::types::UserName;
use std::sync::OnceLock;

/// Alice, Bob and Carol: 2048-bit identities from a fixed seed.
fn identities() -> &'static [Identity; 3] {
    static IDS: OnceLock<[Identity; 3]> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut rng = rng::from_seed([1; 32]);
        [(); 3].map(|()| Identity::generate(&mut rng, 2048).expect("2048-bit key"))
    })
}

pub(super) fn alice() -> &'static Identity {
    &identities()[0]
}

pub(super) fn bob() -> &'static Identity {
    &identities()[1]
}

pub(super) fn carol() -> &'static Identity {
    &identities()[2]
}

/// A validated user name.
pub(super) fn name(s: &str) -> UserName {
    UserName::new(s).expect("valid test name")
}

/// A generator seeded with `[n; 32]`.
pub(super) fn seeded(n: u8) -> CoreRng {
    rng::from_seed([n; 32])
}
