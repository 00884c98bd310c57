//! The shards a node holds, and under which lease epoch: what its store may
//! write (see [`PostgresStore::connect_node`](super::PostgresStore::connect_node)).

use missive_core::cluster::Shard;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The (shard → lease epoch) pairs a node holds, shared between the node's
/// coordinator (which [`hold`](Fence::hold)s a shard once its lease is
/// acquired and [`release`](Fence::release)s it when the lease is lost) and
/// its store, which writes only the commands of held shards, each stamped
/// with its epoch, and only after PostgreSQL confirmed the epochs are still
/// current (the fence function). Cloning shares the same set.
///
/// ```
/// use missive_core::cluster::Shard;
/// use missive_store::postgres::Fence;
/// let fence = Fence::new();
/// let store_side = fence.clone();
/// fence.hold(Shard(3), 7);
/// assert_eq!(store_side.epoch(Shard(3)), Some(7));
/// assert!(store_side.release(Shard(3)));
/// assert!(!fence.release(Shard(3)));
/// assert_eq!(fence.epoch(Shard(3)), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Fence {
    held: Arc<Mutex<HashMap<Shard, u64>>>,
}

impl Fence {
    /// An empty fence: no shard held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the node holds `shard` under lease `epoch` (replacing
    /// an earlier epoch of the same shard).
    pub fn hold(&self, shard: Shard, epoch: u64) {
        self.lock().insert(shard, epoch);
    }

    /// Forgets `shard`; returns whether it was held. Its commands are
    /// dropped (and reported fenced) from the next commit on.
    pub fn release(&self, shard: Shard) -> bool {
        self.lock().remove(&shard).is_some()
    }

    /// The epoch `shard` is held under, if it is held.
    pub fn epoch(&self, shard: Shard) -> Option<u64> {
        self.lock().get(&shard).copied()
    }

    /// Every held shard with its epoch, in shard order.
    pub fn held(&self) -> Vec<(Shard, u64)> {
        let mut held: Vec<(Shard, u64)> = self.lock().iter().map(|(s, e)| (*s, *e)).collect();
        held.sort_unstable();
        held
    }

    /// Releases `shard` only if it is still held under `epoch` (a newer
    /// acquisition of the same shard is kept); returns whether it was.
    pub fn release_epoch(&self, shard: Shard, epoch: u64) -> bool {
        let mut held = self.lock();
        if held.get(&shard) == Some(&epoch) {
            held.remove(&shard);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Shard, u64>> {
        // The map stays consistent even if a holder panicked mid-call (every
        // operation is a single map call).
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_epoch_survives_releasing_the_older_one() {
        let fence = Fence::new();
        fence.hold(Shard(1), 4);
        fence.hold(Shard(2), 9);
        fence.hold(Shard(1), 5);
        assert!(!fence.release_epoch(Shard(1), 4));
        assert_eq!(fence.held(), vec![(Shard(1), 5), (Shard(2), 9)]);
        assert!(fence.release_epoch(Shard(1), 5));
        assert_eq!(fence.held(), vec![(Shard(2), 9)]);
    }
}
