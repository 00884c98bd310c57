//! Deterministic randomness. The core never asks the OS for randomness: the
//! driver passes a 32-byte seed, and every random value (nonces, session ids,
//! message ids, content keys, RSA padding) comes from a ChaCha20 CSPRNG seeded
//! from it. Per-connection generators are derived from the root one, as
//! quinn-proto does, so one connection's traffic never shifts another's.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// The core's random generator: ChaCha20, cryptographically secure when the
/// seed is (drivers seed it from the OS).
pub type CoreRng = ChaCha20Rng;

/// Builds the root generator from the driver's seed.
pub fn from_seed(seed: [u8; 32]) -> CoreRng {
    ChaCha20Rng::from_seed(seed)
}

/// Derives an independent child generator (e.g. for one connection).
pub fn derive(parent: &mut CoreRng) -> CoreRng {
    let mut seed = [0u8; 32];
    parent.fill_bytes(&mut seed);
    ChaCha20Rng::from_seed(seed)
}

/// A 64-bit key for hash tables from the driver's seed: the first word of
/// ChaCha20 stream 1 under the seed (the generators above use stream 0), so
/// taking it shifts no other random value and reveals none.
pub fn hash_key(seed: &[u8; 32]) -> u64 {
    let mut keys = ChaCha20Rng::from_seed(*seed);
    keys.set_stream(1);
    keys.next_u64()
}

/// Draws `N` random bytes.
pub fn bytes<const N: usize>(rng: &mut CoreRng) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;

    #[test]
    fn deterministic() {
        let mut a = from_seed([7; 32]);
        let mut b = from_seed([7; 32]);
        assert_eq!(bytes::<16>(&mut a), bytes::<16>(&mut b));
        let mut ca = derive(&mut a);
        let mut cb = derive(&mut b);
        assert_eq!(bytes::<32>(&mut ca), bytes::<32>(&mut cb));
        assert_ne!(bytes::<32>(&mut ca), bytes::<32>(&mut a));
    }

    /// The hash key is fixed by the seed and is not a value the generators
    /// hand out (another ChaCha20 stream).
    #[test]
    fn hash_key_is_its_own_stream() {
        let seed = [9; 32];
        assert_eq!(hash_key(&seed), hash_key(&seed));
        assert_ne!(hash_key(&seed), hash_key(&[8; 32]));
        let mut generator = from_seed(seed);
        let first: [u8; 64] = bytes(&mut generator);
        assert!(
            first
                .windows(8)
                .all(|w| w != hash_key(&seed).to_le_bytes().as_slice())
        );
    }
}
