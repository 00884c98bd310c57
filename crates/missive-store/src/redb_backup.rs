//! Copies of a [`RedbStore`](crate::RedbStore) taken while it serves,
//! their checks, and their restore into a data directory.
//!
//! A backup is a directory holding one `missive.redb`, the same format as
//! a data directory's: the server opens it as it is, and
//! [`restore`] copies it into an empty data directory after checking it.
//! It is written by a single redb read transaction: redb's MVCC gives it
//! the store as of one commit while later commits go on, unblocked.

use crate::redb_store::{FILE_NAME, ITEMS, META, NEXT_SEQ, USERS, load_from};
use crate::{RedbStore, StoreError};
use missive_core::crypto::PublicKey;
use missive_core::server::ServerState;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, TableDefinition};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Name of a backup's database while it is written.
const PARTIAL_NAME: &str = "missive.redb.partial";

/// A handle on a serving [`RedbStore`] that copies it: see
/// [`RedbStore::backup_handle`]. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct RedbBackup {
    /// The store's database as it is now (the store replaces it when it
    /// reopens the file).
    shared: Arc<Mutex<Weak<Database>>>,
}

/// What a store file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreCounts {
    /// Registered users.
    pub users: u64,
    /// Queued items (messages and notices).
    pub items: u64,
    /// Envelope bytes of the queued messages (0 when not counted: a
    /// backup counts rows without decoding them).
    pub envelope_bytes: u64,
    /// Size of the database file.
    pub file_bytes: u64,
}

/// Why a backup could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination exists and is not an empty directory.
    #[error("{} exists and is not an empty directory", .0.display())]
    DestinationNotEmpty(PathBuf),
    /// The store is closed (the server stopped, or is reopening it).
    #[error("the store is closed")]
    StoreClosed,
    /// There is no store file to copy.
    #[error("no store in {}", .0.display())]
    NoStore(PathBuf),
    /// Reading the store or writing the copy failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a store file did not pass [`verify`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// There is no store file there.
    #[error("no store at {}", .0.display())]
    NoStore(PathBuf),
    /// The file does not open (checksums, format, locked by a server) or
    /// its rows do not rebuild a state (orphan rows, items that do not
    /// decode, sequence numbers past the mailbox's next one).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A user's key is not an RSA public key this server accepts.
    #[error("the key of {user} does not parse: {detail}")]
    BadKey {
        /// Whose key.
        user: String,
        /// Why.
        detail: String,
    },
}

/// Why a backup could not be restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The data directory exists and is not empty.
    #[error("{} exists and is not an empty directory", .0.display())]
    DestinationNotEmpty(PathBuf),
    /// The backup did not pass [`verify`]; nothing was written.
    #[error("the backup does not verify: {0}")]
    Invalid(#[from] VerifyError),
    /// Copying failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RedbBackup {
    pub(crate) fn new(shared: Arc<Mutex<Weak<Database>>>) -> Self {
        Self { shared }
    }

    /// Writes a consistent copy of the store, as of its last commit, into
    /// `dest` (a directory, absent or empty): `dest/missive.redb`, written
    /// under a temporary name, synced, then renamed. The store keeps
    /// committing meanwhile. Blocks for as long as the copy takes.
    pub fn backup_to(&self, dest: &Path) -> Result<StoreCounts, BackupError> {
        let db = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade()
            .ok_or(BackupError::StoreClosed)?;
        copy_database(&db, dest)
    }
}

/// [`RedbBackup::backup_to`] for a store no server has open: the data
/// directory `data` (which must hold a store) copied to `dest`.
pub fn backup_offline(data: &Path, dest: &Path) -> Result<StoreCounts, BackupError> {
    if !data.join(FILE_NAME).is_file() {
        return Err(BackupError::NoStore(data.to_owned()));
    }
    let store = RedbStore::open(data)?;
    store.backup_handle().backup_to(dest)
}

/// Opens the store file at `path` (a data directory, a backup directory or
/// the file itself), checking every page's checksum, rebuilds its state
/// (which checks every row: owners registered, items decode, sequence
/// numbers below the mailbox's next one) and parses every key. The
/// counts, if it is sound. A server must not have it open.
pub fn verify(path: &Path) -> Result<StoreCounts, VerifyError> {
    let file = store_file(path);
    if !file.is_file() {
        return Err(VerifyError::NoStore(file));
    }
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .open(&file)
        .map_err(StoreError::database)?;
    let state = load_from(&db)?;
    drop(db);
    for (user, record) in state.users() {
        PublicKey::from_spki_der(&record.public_key).map_err(|e| VerifyError::BadKey {
            user: user.to_string(),
            detail: e.to_string(),
        })?;
    }
    let mut counts = counts_of(&state);
    counts.file_bytes = file_size(&file)?;
    Ok(counts)
}

/// Restores the backup at `backup` (a backup directory or its file) into
/// the data directory `data`, which must be absent or empty: verifies the
/// backup, then copies its file in under a temporary name, syncs it and
/// renames it. The caller makes sure no server uses `data`.
pub fn restore(backup: &Path, data: &Path) -> Result<StoreCounts, RestoreError> {
    if !is_absent_or_empty(data)? {
        return Err(RestoreError::DestinationNotEmpty(data.to_owned()));
    }
    let counts = verify(backup)?;
    create_dir(data)?;
    let partial = data.join(PARTIAL_NAME);
    std::fs::copy(store_file(backup), &partial).map_err(io_error(&partial))?;
    publish(&partial, data)?;
    Ok(counts)
}

/// Counts of a loaded state.
pub(crate) fn counts_of(state: &ServerState) -> StoreCounts {
    StoreCounts {
        users: state.user_count() as u64,
        items: state.queued_items() as u64,
        envelope_bytes: state
            .users()
            .map(|(_, record)| record.mailbox.message_bytes)
            .sum(),
        file_bytes: 0,
    }
}

/// The database file of a store directory, or `path` itself.
fn store_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(FILE_NAME)
    } else {
        path.to_owned()
    }
}

fn copy_database(db: &Database, dest: &Path) -> Result<StoreCounts, BackupError> {
    if !is_absent_or_empty(dest)? {
        return Err(BackupError::DestinationNotEmpty(dest.to_owned()));
    }
    create_dir(dest)?;
    let partial = dest.join(PARTIAL_NAME);
    let counts = {
        let copy = Database::builder()
            .create(&partial)
            .map_err(StoreError::database)?;
        let from = db.begin_read().map_err(StoreError::database)?;
        let mut to = copy.begin_write().map_err(StoreError::database)?;
        to.set_durability(Durability::Immediate)
            .map_err(StoreError::database)?;
        copy_table(&from, &to, META)?;
        let users = copy_table(&from, &to, USERS)?;
        copy_table(&from, &to, NEXT_SEQ)?;
        let items = copy_table(&from, &to, ITEMS)?;
        to.commit().map_err(StoreError::database)?;
        StoreCounts {
            users,
            items,
            ..StoreCounts::default()
        }
    };
    publish(&partial, dest)?;
    Ok(StoreCounts {
        file_bytes: file_size(&dest.join(FILE_NAME))?,
        ..counts
    })
}

/// Copies every row of `table`; how many.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = from.open_table(table).map_err(StoreError::database)?;
    let mut target = to.open_table(table).map_err(StoreError::database)?;
    let mut rows = 0;
    for row in redb::ReadableTable::iter(&source).map_err(StoreError::database)? {
        let (key, value) = row.map_err(StoreError::database)?;
        target
            .insert(key.value(), value.value())
            .map_err(StoreError::database)?;
        rows += 1;
    }
    Ok(rows)
}

/// Syncs `partial`, renames it to the store file of `dir`, and syncs
/// `dir` so the rename survives a crash.
fn publish(partial: &Path, dir: &Path) -> Result<(), StoreError> {
    File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(io_error(partial))?;
    let file = dir.join(FILE_NAME);
    std::fs::rename(partial, &file).map_err(io_error(&file))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn is_absent_or_empty(dir: &Path) -> Result<bool, StoreError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_error(dir)(e)),
    }
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))
}

fn file_size(file: &Path) -> Result<u64, StoreError> {
    Ok(std::fs::metadata(file).map_err(io_error(file))?.len())
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::conformance::{message, register};
    use missive_core::crypto::Identity;
    use missive_core::server::PersistCmd;

    /// A store holding two users with real keys and three messages.
    fn serving_store(dir: &Path) -> RedbStore {
        let mut store = RedbStore::open(dir).unwrap();
        let key = Identity::generate(&mut missive_core::rng::from_seed([5; 32]), 2048)
            .unwrap()
            .public_key()
            .to_spki_der()
            .to_vec();
        let mut batch: Vec<PersistCmd> = ["alice", "bob"]
            .into_iter()
            .map(|name| PersistCmd::RegisterUser {
                user: crate::conformance::user(name),
                public_key: key.clone(),
            })
            .collect();
        batch.extend((0..3).map(|seq| message("bob", seq, "alice", 100)));
        store.commit(&batch).unwrap();
        store
    }

    #[test]
    fn a_backup_of_a_serving_store_verifies_restores_and_loads_equal() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = serving_store(&dir.path().join("data"));
        let handle = store.backup_handle();
        let dest = dir.path().join("backup");
        let counts = handle.backup_to(&dest).unwrap();
        assert_eq!((counts.users, counts.items), (2, 3));
        // The store goes on serving; the backup is as of the copy.
        store.commit(&[message("bob", 3, "alice", 100)]).unwrap();
        let verified = verify(&dest).unwrap();
        assert_eq!((verified.users, verified.items), (2, 3));
        assert_eq!(verified.envelope_bytes, 300);

        let restored = dir.path().join("restored");
        restore(&dest, &restored).unwrap();
        let loaded = RedbStore::open(&restored).unwrap().load().unwrap();
        assert_eq!(loaded.queued_items(), 3);
        assert_eq!(
            loaded.user(&crate::conformance::user("alice")),
            verify_state(&dest).user(&crate::conformance::user("alice"))
        );

        // Neither overwrites anything.
        assert!(matches!(
            handle.backup_to(&dest),
            Err(BackupError::DestinationNotEmpty(_))
        ));
        assert!(matches!(
            restore(&dest, &restored),
            Err(RestoreError::DestinationNotEmpty(_))
        ));
        drop(store);
        assert!(matches!(
            handle.backup_to(&dir.path().join("late")),
            Err(BackupError::StoreClosed)
        ));
    }

    fn verify_state(dir: &Path) -> ServerState {
        load_from(&Database::open(store_file(dir)).unwrap()).unwrap()
    }

    #[test]
    fn a_damaged_copy_fails_verification_and_is_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        drop(serving_store(&dir.path().join("data")));
        let dest = dir.path().join("backup");
        backup_offline(&dir.path().join("data"), &dest).unwrap();
        let file = dest.join(FILE_NAME);
        let mut bytes = std::fs::read(&file).unwrap();
        // Flip the bytes of the page holding a user's name.
        let at = bytes
            .windows(5)
            .rposition(|w| w == b"alice")
            .expect("a user name in the file");
        for b in &mut bytes[at..at + 5] {
            *b ^= 0xff;
        }
        std::fs::write(&file, bytes).unwrap();
        assert!(verify(&dest).is_err());
        let restored = dir.path().join("restored");
        assert!(matches!(
            restore(&dest, &restored),
            Err(RestoreError::Invalid(_))
        ));
        assert!(!restored.exists());
        assert!(matches!(
            verify(&dir.path().join("nothing")),
            Err(VerifyError::NoStore(_))
        ));
    }

    #[test]
    fn a_key_that_does_not_parse_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        RedbStore::open(dir.path())
            .unwrap()
            .commit(&[register("alice")])
            .unwrap();
        assert!(matches!(
            verify(dir.path()),
            Err(VerifyError::BadKey { .. })
        ));
    }
}
