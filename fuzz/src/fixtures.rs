//! Fixed test identities, generated once per process from fixed seeds.

use crate::codec::NAMES;
use missive_core::crypto::Identity;
use missive_core::rng;
use std::sync::OnceLock;

/// Seed of the fixture identities (the same in every process, so seeds
/// recorded by the corpus generator name the same keys).
pub const IDENTITY_SEED: [u8; 32] = *b"missive fuzz fixture identities!";

/// Identities of `NAMES[0..3]` (alice, bob, carol): 2048-bit RSA keys,
/// generated once (in a `OnceLock`) from [`IDENTITY_SEED`].
pub fn identities() -> &'static [Identity; 3] {
    static IDS: OnceLock<[Identity; 3]> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut rng = rng::from_seed(IDENTITY_SEED);
        [(); 3].map(|()| Identity::generate(&mut rng, 2048).expect("2048-bit key"))
    })
}

/// The fixture identity of a name in [`NAMES`], if it has one.
pub fn identity_of(user: &str) -> Option<&'static Identity> {
    let i = NAMES.iter().position(|n| *n == user)?;
    identities().get(i)
}
