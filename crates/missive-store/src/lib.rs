//! # missive-store: durable storage for the Missive server
//!
//! The server core ([`missive_core::server`]) emits persistence commands
//! ([`PersistCmd`]) tagged with log sequence numbers and must be told, with
//! `Input::Durable(lsn)`, once everything up to an LSN is durable. This crate
//! provides the pieces a driver needs for that, without any async runtime:
//!
//! - [`Store`]: loads the [`ServerState`] at start-up and commits batches of
//!   commands durably.
//! - [`RedbStore`]: a [`Store`] in one [redb](https://docs.rs/redb) database
//!   file whose tables mirror the durable state (server id, users, next
//!   sequence number per mailbox, queued items), updated in place rather than
//!   appended to a log; [`RedbBackup`] copies it while it serves,
//!   [`verify`] checks a copy and [`restore`] puts one in place.
//! - [`PostgresStore`]: a [`Store`] in a PostgreSQL database (schema,
//!   shards and driver choice in the [`postgres`] module).
//! - [`postgres::Leases`] and [`postgres::Fence`]: a cluster node's shard
//!   leases in PostgreSQL and the fenced writes of its store
//!   ([`PostgresStore::connect_node`]).
//! - [`MemoryStore`]: a non-durable [`Store`] for tests and `--memory` runs.
//! - [`StoreThread`]: runs a store on its own OS thread with group commit:
//!   many commands, one transaction, one `fsync`.
//! - `store_conformance_tests!` and the `conformance` module (feature
//!   `conformance`): one test suite every store passes.
//!
//! A driver's start-up sequence:
//!
//! ```
//! use missive_store::{MemoryStore, Store, StoreEvent, StoreThread};
//!
//! let mut store = MemoryStore::new(); // or RedbStore::open(dir)?
//! let state = store.load()?; // hand this to the server
//! let thread = StoreThread::spawn(store, |event| match event {
//!     StoreEvent::Durable(_lsn) => { /* feed Input::Durable(lsn) to the server */ }
//!     StoreEvent::Fenced(_shards) => { /* a cluster node: drop these shards */ }
//!     StoreEvent::Unavailable(_err) => { /* refuse new work; it is retried */ }
//!     StoreEvent::Available => { /* accept new work again */ }
//!     StoreEvent::Failed(_err) => { /* shut the server down */ }
//!     _ => {}
//! });
//! // For every Output::Persist { lsn, cmd }: thread.submit(lsn, cmd)?;
//! # drop(state);
//! thread.shutdown()?;
//! # Ok::<(), missive_store::StoreError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod memory;
pub mod postgres;
mod redb_backup;
mod redb_store;
mod rows;
mod thread;

pub use memory::MemoryStore;
pub use missive_core::cluster::Shard;
pub use missive_core::server::{PersistCmd, ServerState};
pub use postgres::PostgresStore;
pub use redb_backup::{
    BackupError, RedbBackup, RestoreError, StoreCounts, VerifyError, backup_offline, restore,
    verify,
};
pub use redb_store::RedbStore;

/// The database file's name in a [`RedbStore`]'s directory (and a
/// backup's).
pub fn redb_file_name() -> &'static str {
    redb_store::FILE_NAME
}
pub use thread::{CommitReport, StoreEvent, StoreStats, StoreThread};

use std::path::PathBuf;

/// Durable storage for the server state.
///
/// A store is used from one thread at a time: the driver calls [`load`]
/// once at start-up, then (usually through a [`StoreThread`]) [`commit`]s
/// the commands the server emits, in LSN order.
///
/// [`load`]: Store::load
/// [`commit`]: Store::commit
pub trait Store: Send + 'static {
    /// Reads the stored state. Applying the commands committed so far to an
    /// empty [`ServerState`] (with [`ServerState::apply`]) gives a state equal
    /// to the one returned.
    fn load(&mut self) -> Result<ServerState, StoreError>;

    /// Applies `batch`, in order, atomically: after a crash either all of it
    /// or none of it is visible. The batch is durable when this returns `Ok`.
    ///
    /// Commands are applied with the semantics of [`ServerState::apply`],
    /// including its idempotence (registering a user twice keeps the first
    /// key, removing an absent item does nothing).
    fn commit(&mut self, batch: &[PersistCmd]) -> Result<(), StoreError>;

    /// [`commit`](Store::commit) on a cluster node: `epochs[i]` is the
    /// lease epoch under which the node served the shard of `batch[i]` when
    /// its core issued the command (`None`: not served then, or a command
    /// of no shard). A store that fences writes (the PostgreSQL store in
    /// node mode) writes each command only under its own epoch, never under
    /// the one the node holds when the commit runs: a command issued before
    /// the node lost a shard must not be written after it took the shard
    /// again. Other stores ignore the epochs.
    fn commit_under(
        &mut self,
        batch: &[PersistCmd],
        epochs: &[Option<u64>],
    ) -> Result<(), StoreError> {
        let _ = epochs;
        self.commit(batch)
    }

    /// Whether [`commit`](Store::commit) is cheap enough (no I/O, a few
    /// microseconds) to run on the driver's own thread right after each
    /// input, instead of on a [`StoreThread`]: then a driver reports
    /// durability without two thread hops per command. `false` unless a
    /// store says otherwise; [`MemoryStore`] says `true`.
    fn commits_inline(&self) -> bool {
        false
    }

    /// The cluster shards whose commands the last commits dropped instead
    /// of writing, since the previous call (each once, in shard order):
    /// shards the node no longer holds or whose lease another node
    /// acquired (the database's fence refused them). The rest of those
    /// commits is durable; these shards' commands never will be. Empty for
    /// every store but a cluster node's
    /// ([`PostgresStore::connect_node`]).
    fn take_fenced(&mut self) -> Vec<Shard> {
        Vec::new()
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn load(&mut self) -> Result<ServerState, StoreError> {
        (**self).load()
    }

    fn commit(&mut self, batch: &[PersistCmd]) -> Result<(), StoreError> {
        (**self).commit(batch)
    }

    fn commit_under(
        &mut self,
        batch: &[PersistCmd],
        epochs: &[Option<u64>],
    ) -> Result<(), StoreError> {
        (**self).commit_under(batch, epochs)
    }

    fn commits_inline(&self) -> bool {
        (**self).commits_inline()
    }

    fn take_fenced(&mut self) -> Vec<Shard> {
        (**self).take_fenced()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The database engine reported an error (I/O, locking, corruption it
    /// detected itself).
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The stored data is not what this crate writes.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The database server could not be reached, or refused the connection
    /// (wrong password, no such database).
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// `user@host:port/database` (never the password).
        target: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The CA certificates for TLS to the database server could not be
    /// used: the file is unreadable, not PEM, or holds no valid
    /// certificate.
    #[error("CA file {}: {source}", path.display())]
    CaFile {
        /// The PEM file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The store was written by a newer, incompatible version.
    #[error("unsupported store format version {found} (this build reads version {supported})")]
    UnsupportedFormat {
        /// Version found in the store.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        detail: String,
    },
    /// The command is of a kind this store does not know how to persist
    /// (the core added a [`PersistCmd`] variant this crate predates).
    #[error("unsupported persistence command: {0}")]
    UnsupportedCommand(String),
    /// A cluster node's store and the database disagree about the cluster:
    /// none was created, it has another shard count, or the node was asked
    /// to set a server id other than the cluster's.
    #[error("cluster mismatch: {detail}")]
    ClusterMismatch {
        /// What disagrees.
        detail: String,
    },
    /// The [`StoreThread`] has stopped: an earlier commit failed for good
    /// (reported as [`StoreEvent::Failed`]) or the store panicked.
    #[error("the store thread has stopped after a failure")]
    Stopped,
}

impl StoreError {
    /// Whether retrying the same commit later may succeed: the
    /// [`StoreThread`] keeps the commands and retries them (reporting
    /// [`StoreEvent::Unavailable`]) instead of stopping.
    ///
    /// Transient: [`Io`](StoreError::Io) (a full disk, an I/O error),
    /// [`Database`](StoreError::Database) (the database engine's I/O or
    /// locking errors, a lost PostgreSQL connection or a failed statement;
    /// but not corruption redb detected itself) and
    /// [`Connect`](StoreError::Connect). Everything else is fatal: the same
    /// commit would fail the same way ([`UnsupportedCommand`],
    /// [`Encode`], [`UnsupportedFormat`], [`ClusterMismatch`],
    /// [`Corrupt`], a bad [`CaFile`], [`Stopped`]).
    ///
    /// [`UnsupportedCommand`]: StoreError::UnsupportedCommand
    /// [`Encode`]: StoreError::Encode
    /// [`UnsupportedFormat`]: StoreError::UnsupportedFormat
    /// [`ClusterMismatch`]: StoreError::ClusterMismatch
    /// [`Corrupt`]: StoreError::Corrupt
    /// [`CaFile`]: StoreError::CaFile
    /// [`Stopped`]: StoreError::Stopped
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Io { .. } | StoreError::Connect { .. } => true,
            StoreError::Database(e) => !matches!(
                e.downcast_ref::<redb::Error>(),
                Some(redb::Error::Corrupted(_))
            ),
            _ => false,
        }
    }

    pub(crate) fn database(err: impl Into<redb::Error>) -> Self {
        StoreError::Database(Box::new(err.into()))
    }
}
