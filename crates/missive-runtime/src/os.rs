//! What the drivers take from the operating system: randomness and the wall
//! clock.

use missive_core::UnixMillis;
use rand::TryRng;
use rand::rngs::SysRng;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

/// A 32-byte seed from the operating system's random generator, for
/// `Server::new` and `Client::new`.
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    SysRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| io::Error::other(format!("OS random generator: {e}")))?;
    Ok(seed)
}

/// The wall clock now, in milliseconds since the Unix epoch (0 if the clock
/// is set before 1970).
pub fn unix_ms_now() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_and_clock_is_sane() {
        assert_ne!(os_seed().unwrap(), os_seed().unwrap());
        assert!(unix_ms_now() > 1_600_000_000_000);
    }
}
