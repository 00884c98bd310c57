//! The durable store: one redb database file whose tables mirror the state.

use crate::rows::{encode_item, restore_item, restore_next_seq, user_name};
use crate::{Store, StoreError};
use missive_core::server::{PersistCmd, ServerState};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Name of the database file inside the store directory.
pub const FILE_NAME: &str = "missive.redb";

/// Version of the table layout below, kept in `meta` under [`FORMAT_KEY`].
const FORMAT_VERSION: u32 = 1;

/// Page cache size: the server keeps its whole state in memory anyway, so
/// the database cache only needs to hold the pages a commit touches.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// `"format"` → version (u32, little endian); `"server_id"` → 16 bytes.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
const SERVER_ID_KEY: &str = "server_id";

/// User name → SPKI DER of the user's key.
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

/// User name → next sequence number of the mailbox. Kept so sequence numbers
/// never go back, even after every item of a mailbox was removed.
pub(crate) const NEXT_SEQ: TableDefinition<&str, u64> = TableDefinition::new("next_seq");

/// (user name, seq) → CBOR-encoded [`MailItem`](missive_core::server::MailItem).
pub(crate) const ITEMS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("items");

/// A [`Store`] in a single redb database file, `missive.redb`, in a
/// directory.
///
/// The tables mirror the durable state and are updated in place (the file
/// does not grow with the number of commands ever committed, only with what
/// is queued): `meta` (format version, server id), `users` (name → key),
/// `next_seq` (name → next mailbox sequence number) and `items`
/// ((name, seq) → CBOR [`MailItem`](missive_core::server::MailItem)).
///
/// Every [`commit`](Store::commit) is one write transaction with immediate
/// durability (redb writes and `fsync`s before it returns); a crash leaves
/// either all of a batch or none of it. [`load`](Store::load) may be called
/// any number of times.
///
/// Only one process may have the directory open; a second
/// [`open`](RedbStore::open) fails with [`StoreError::Database`].
///
/// After a commit fails with an I/O error (a full disk), redb refuses every
/// later operation until the file is closed and opened again; so a commit
/// that failed with a [transient](StoreError::is_transient) error closes
/// the database, and the next call opens it again (redb repairs it on open:
/// the failed transaction is not in it). Should that open fail (no space to
/// repair, the file still held by an online backup), the call fails with
/// another transient error and the next one tries again.
pub struct RedbStore {
    /// `None` between a failed commit and the next call.
    db: Option<Arc<Database>>,
    /// The database open now, for an online backup running beside the
    /// store thread; updated on every (re)open.
    shared: Arc<Mutex<Weak<Database>>>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store in `dir`, creating the directory and an empty
    /// database if needed.
    ///
    /// The checksums of the whole file are verified on open (and the file is
    /// repaired after a crash), so a damaged file is reported as an error
    /// rather than trusted.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Arc::new(open_file(&path)?);
        let shared = Arc::new(Mutex::new(Arc::downgrade(&db)));
        let store = Self {
            db: Some(db),
            shared,
            path,
        };
        store.init()?;
        tracing::debug!(path = %store.path.display(), "opened store");
        Ok(store)
    }

    /// The open database, opened again if a commit failed since.
    fn database(&mut self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = &self.db {
            return Ok(Arc::clone(db));
        }
        let db = Arc::new(open_file(&self.path)?);
        *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&db);
        self.db = Some(Arc::clone(&db));
        tracing::info!(path = %self.path.display(), "store reopened after a failed commit");
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that copies the store while it serves (see
    /// [`RedbBackup`]); it lives as long as the caller keeps it, and
    /// follows the store when it reopens its database.
    pub fn backup_handle(&self) -> RedbBackup {
        RedbBackup::new(Arc::clone(&self.shared))
    }

    /// Creates the tables and records the format version on first open;
    /// checks the version afterwards.
    fn init(&self) -> Result<(), StoreError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let txn = db.begin_write().map_err(StoreError::database)?;
        {
            let mut meta = txn.open_table(META).map_err(StoreError::database)?;
            let found = meta
                .get(FORMAT_KEY)
                .map_err(StoreError::database)?
                .map(|v| decode_format(v.value()));
            match found {
                None => {
                    meta.insert(FORMAT_KEY, FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(StoreError::database)?;
                }
                Some(Ok(FORMAT_VERSION)) => {}
                Some(Ok(found)) => {
                    return Err(StoreError::UnsupportedFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                Some(Err(e)) => return Err(e),
            }
            txn.open_table(USERS).map_err(StoreError::database)?;
            txn.open_table(NEXT_SEQ).map_err(StoreError::database)?;
            txn.open_table(ITEMS).map_err(StoreError::database)?;
        }
        txn.commit().map_err(StoreError::database)
    }
}

/// Opens (or creates) the database file, checking every checksum and
/// repairing it after a crash or a failed commit.
fn open_file(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(StoreError::database)
}

fn decode_format(bytes: &[u8]) -> Result<u32, StoreError> {
    let bytes: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("format version is {} bytes", bytes.len())))?;
    Ok(u32::from_le_bytes(bytes))
}

impl Store for RedbStore {
    fn load(&mut self) -> Result<ServerState, StoreError> {
        load_from(&*self.database()?)
    }

    fn commit(&mut self, batch: &[PersistCmd]) -> Result<(), StoreError> {
        let db = self.database()?;
        let committed = commit_to(&db, batch);
        if committed.as_ref().is_err_and(StoreError::is_transient) {
            // redb refuses everything after an I/O error (`PreviousIo`)
            // until the file is closed: close it, the next call reopens.
            self.db = None;
        }
        committed
    }
}

/// The state a redb store file holds (see [`Store::load`]).
pub(crate) fn load_from(db: &impl ReadableDatabase) -> Result<ServerState, StoreError> {
    let txn = db.begin_read().map_err(StoreError::database)?;
    let mut state = ServerState::new();

    let meta = txn.open_table(META).map_err(StoreError::database)?;
    if let Some(id) = meta.get(SERVER_ID_KEY).map_err(StoreError::database)? {
        let server_id: [u8; 16] = id
            .value()
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("server id is {} bytes", id.value().len())))?;
        state.apply(&PersistCmd::SetServerId { server_id });
    }

    let users = txn.open_table(USERS).map_err(StoreError::database)?;
    for row in users.iter().map_err(StoreError::database)? {
        let (name, key) = row.map_err(StoreError::database)?;
        state.apply(&PersistCmd::RegisterUser {
            user: user_name(name.value())?,
            public_key: key.value().to_vec(),
        });
    }

    let items = txn.open_table(ITEMS).map_err(StoreError::database)?;
    for row in items.iter().map_err(StoreError::database)? {
        let (key, value) = row.map_err(StoreError::database)?;
        let (name, seq) = key.value();
        restore_item(&mut state, user_name(name)?, seq, value.value())?;
    }

    let next_seqs = txn.open_table(NEXT_SEQ).map_err(StoreError::database)?;
    for row in next_seqs.iter().map_err(StoreError::database)? {
        let (name, next) = row.map_err(StoreError::database)?;
        restore_next_seq(&mut state, user_name(name.value())?, next.value())?;
    }
    Ok(state)
}

/// Commits `batch` to a redb store file in one durable write transaction
/// (see [`Store::commit`]).
fn commit_to(db: &Database, batch: &[PersistCmd]) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(StoreError::database)?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::database)?;
    {
        let mut meta = txn.open_table(META).map_err(StoreError::database)?;
        let mut users = txn.open_table(USERS).map_err(StoreError::database)?;
        let mut next_seqs = txn.open_table(NEXT_SEQ).map_err(StoreError::database)?;
        let mut items = txn.open_table(ITEMS).map_err(StoreError::database)?;
        let mut buf = Vec::new();
        for cmd in batch {
            match cmd {
                PersistCmd::SetServerId { server_id } => {
                    meta.insert(SERVER_ID_KEY, server_id.as_slice())
                        .map_err(StoreError::database)?;
                }
                PersistCmd::RegisterUser { user, public_key } => {
                    let name = user.as_str();
                    if users.get(name).map_err(StoreError::database)?.is_none() {
                        users
                            .insert(name, public_key.as_slice())
                            .map_err(StoreError::database)?;
                    }
                }
                PersistCmd::Enqueue { user, seq, item } => {
                    // Mirror ServerState::apply: items for unknown users
                    // and items already at `seq` are ignored.
                    let name = user.as_str();
                    if users.get(name).map_err(StoreError::database)?.is_none()
                        || items
                            .get((name, *seq))
                            .map_err(StoreError::database)?
                            .is_some()
                    {
                        continue;
                    }
                    buf.clear();
                    encode_item(item, &mut buf)?;
                    items
                        .insert((name, *seq), buf.as_slice())
                        .map_err(StoreError::database)?;
                    let next = next_seqs
                        .get(name)
                        .map_err(StoreError::database)?
                        .map_or(0, |v| v.value());
                    if seq + 1 > next {
                        next_seqs
                            .insert(name, seq + 1)
                            .map_err(StoreError::database)?;
                    }
                }
                PersistCmd::Ack { user, seq } | PersistCmd::Expire { user, seq } => {
                    items
                        .remove((user.as_str(), *seq))
                        .map_err(StoreError::database)?;
                }
                PersistCmd::SetNextSeq { user, next_seq } => {
                    let name = user.as_str();
                    if users.get(name).map_err(StoreError::database)?.is_none() {
                        continue;
                    }
                    let next = next_seqs
                        .get(name)
                        .map_err(StoreError::database)?
                        .map_or(0, |v| v.value());
                    if *next_seq > next {
                        next_seqs
                            .insert(name, *next_seq)
                            .map_err(StoreError::database)?;
                    }
                }
                PersistCmd::RemoveUser { user } => {
                    let name = user.as_str();
                    users.remove(name).map_err(StoreError::database)?;
                    next_seqs.remove(name).map_err(StoreError::database)?;
                    let seqs: Vec<u64> = items
                        .range((name, 0)..=(name, u64::MAX))
                        .map_err(StoreError::database)?
                        .map(|row| row.map(|(key, _)| key.value().1))
                        .collect::<Result<_, _>>()
                        .map_err(StoreError::database)?;
                    for seq in seqs {
                        items.remove((name, seq)).map_err(StoreError::database)?;
                    }
                }
                other => return Err(StoreError::UnsupportedCommand(format!("{other:?}"))),
            }
        }
    }
    txn.commit().map_err(StoreError::database)
}

use crate::redb_backup::RedbBackup;

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::server::MailItem;
    use missive_core::wire::Notice;
    use missive_core::{MessageId, UserName};

    crate::store_conformance_tests!({
        let dir = tempfile::tempdir().expect("tempdir");
        move || Box::new(RedbStore::open(dir.path()).expect("open store")) as Box<dyn Store>
    });

    fn alice() -> UserName {
        UserName::new("alice").unwrap()
    }

    fn write_raw(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
        let db = Database::create(dir.join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
    }

    fn open_with_alice(dir: &Path) {
        let mut store = RedbStore::open(dir).unwrap();
        store
            .commit(&[PersistCmd::RegisterUser {
                user: alice(),
                public_key: vec![1, 2, 3],
            }])
            .unwrap();
    }

    fn load_err(dir: &Path) -> StoreError {
        match RedbStore::open(dir).and_then(|mut s| s.load()) {
            Ok(state) => panic!("expected an error, loaded {state:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn undecodable_item_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        open_with_alice(dir.path());
        write_raw(dir.path(), |txn| {
            let mut items = txn.open_table(ITEMS).unwrap();
            items.insert(("alice", 0), [0xff, 0x00].as_slice()).unwrap();
        });
        assert!(matches!(load_err(dir.path()), StoreError::Corrupt(_)));
    }

    #[test]
    fn bad_user_name_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        open_with_alice(dir.path());
        write_raw(dir.path(), |txn| {
            let mut users = txn.open_table(USERS).unwrap();
            users.insert("Not Valid", [1u8].as_slice()).unwrap();
        });
        assert!(matches!(load_err(dir.path()), StoreError::Corrupt(_)));
    }

    #[test]
    fn orphan_rows_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        open_with_alice(dir.path());
        write_raw(dir.path(), |txn| {
            let mut next = txn.open_table(NEXT_SEQ).unwrap();
            next.insert("bob", 3).unwrap();
        });
        assert!(matches!(load_err(dir.path()), StoreError::Corrupt(_)));

        let dir = tempfile::tempdir().unwrap();
        open_with_alice(dir.path());
        write_raw(dir.path(), |txn| {
            let mut buf = Vec::new();
            let item = MailItem::Notice {
                notice: Notice::Expired {
                    to: alice(),
                    id: MessageId([1; 16]),
                },
                enqueued_at: 5,
            };
            ciborium::into_writer(&item, &mut buf).unwrap();
            let mut items = txn.open_table(ITEMS).unwrap();
            items.insert(("bob", 0), buf.as_slice()).unwrap();
        });
        assert!(matches!(load_err(dir.path()), StoreError::Corrupt(_)));
    }

    #[test]
    fn bad_server_id_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        open_with_alice(dir.path());
        write_raw(dir.path(), |txn| {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(SERVER_ID_KEY, [1u8; 3].as_slice()).unwrap();
        });
        assert!(matches!(load_err(dir.path()), StoreError::Corrupt(_)));
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open_with_alice(dir.path());
        write_raw(dir.path(), |txn| {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(FORMAT_KEY, 2u32.to_le_bytes().as_slice())
                .unwrap();
        });
        assert!(matches!(
            load_err(dir.path()),
            StoreError::UnsupportedFormat {
                found: 2,
                supported: 1
            }
        ));
    }

    #[test]
    fn garbage_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![0x5a; 64 * 1024]).unwrap();
        assert!(matches!(
            RedbStore::open(dir.path()),
            Err(StoreError::Database(_))
        ));
    }

    #[test]
    fn second_open_of_same_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).unwrap();
        assert!(matches!(
            RedbStore::open(dir.path()),
            Err(StoreError::Database(_))
        ));
    }

    /// After a failed commit the database is closed (redb refuses every
    /// operation after an I/O error); the next commit opens it again and
    /// publishes it to the shared slot. While someone else (an online
    /// backup) still holds the old one, the reopen fails transiently.
    #[test]
    fn a_closed_database_is_reopened_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RedbStore::open(dir.path()).unwrap();
        let slot = Arc::clone(&store.shared);
        let first = slot.lock().unwrap().upgrade().expect("published at open");
        store.db = None; // as after a commit that failed with an I/O error
        let err = store
            .commit(&[PersistCmd::SetServerId { server_id: [1; 16] }])
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        drop(first); // the backup is done with it
        assert!(slot.lock().unwrap().upgrade().is_none());
        store
            .commit(&[PersistCmd::SetServerId { server_id: [2; 16] }])
            .unwrap();
        assert!(slot.lock().unwrap().upgrade().is_some(), "the reopened one");
        drop(store);
        let mut reopened = RedbStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load().unwrap().server_id(), Some([2; 16]));
    }

    #[test]
    fn directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let mut store = RedbStore::open(&nested).unwrap();
        assert_eq!(store.path(), nested.join(FILE_NAME));
        assert_eq!(store.load().unwrap(), ServerState::new());
    }
}
