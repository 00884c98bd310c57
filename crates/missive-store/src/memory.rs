//! A non-durable store that keeps the state in memory.

use crate::{Store, StoreError};
use missive_core::server::{PersistCmd, ServerState};
use std::sync::{Arc, Mutex, PoisonError};

/// A [`Store`] that keeps a [`ServerState`] in memory: `commit` applies the
/// commands, `load` returns a copy. Nothing survives the process.
///
/// Clones share the same memory, so a test can "restart" a server on what
/// an earlier instance committed: keep a clone, drop the original, and
/// `load` from the clone.
///
/// ```
/// use missive_store::{MemoryStore, PersistCmd, Store};
///
/// let mut store = MemoryStore::new();
/// let mut after_restart = store.clone();
/// store.commit(&[PersistCmd::SetServerId { server_id: [7; 16] }])?;
/// drop(store);
/// assert_eq!(after_restart.load()?.server_id(), Some([7; 16]));
/// # Ok::<(), missive_store::StoreError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<ServerState>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the committed state.
    pub fn state(&self) -> ServerState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<ServerState, StoreError> {
        Ok(self.state())
    }

    fn commit(&mut self, batch: &[PersistCmd]) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for cmd in batch {
            state.apply(cmd);
        }
        Ok(())
    }

    fn commits_inline(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    use crate::Store;

    crate::store_conformance_tests!({
        let memory = MemoryStore::new();
        move || Box::new(memory.clone()) as Box<dyn Store>
    });
}
