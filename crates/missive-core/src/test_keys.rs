//! RSA keys for unit tests, generated once per test binary (RSA key
//! generation is slow).

use crate::crypto::Identity;
use crate::rng;
use std::sync::OnceLock;

/// Three 2048-bit identities, the same for every test in the binary.
pub(crate) fn identities() -> &'static [Identity; 3] {
    static KEYS: OnceLock<[Identity; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        std::array::from_fn(|i| {
            let mut rng = rng::from_seed([i as u8 + 1; 32]);
            Identity::generate(&mut rng, 2048).expect("key generation")
        })
    })
}
