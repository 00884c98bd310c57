//! Test identities: RSA keys are slow to generate, so each test binary
//! generates them once.

use crate::keys::generate_identity;
use std::sync::LazyLock;

/// An identity as the page holds it.
pub(crate) struct TestKey {
    /// PKCS#8 DER.
    pub(crate) der: Vec<u8>,
}

fn generated(seed: u8) -> TestKey {
    TestKey {
        der: generate_identity([seed; 32], 2048).expect("2048-bit key"),
    }
}

pub(crate) static ALICE: LazyLock<TestKey> = LazyLock::new(|| generated(1));
pub(crate) static BOB: LazyLock<TestKey> = LazyLock::new(|| generated(2));
