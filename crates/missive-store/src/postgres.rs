//! The PostgreSQL store: the same guarantees on a database operators
//! already run, back up and replicate.
//!
//! # Why tokio-postgres, on a runtime of its own
//!
//! The [`Store`] trait is synchronous and runs on the [`StoreThread`](crate::StoreThread),
//! off the engine thread. [`PostgresStore`] owns a current-thread tokio
//! runtime and one `tokio-postgres` connection, and blocks on it inside
//! [`Store::load`] and [`Store::commit`]: the engine never waits for the
//! database. tokio-postgres rather than sqlx or the `postgres` wrapper,
//! because it pipelines: every statement of a batch is sent before the first
//! answer is read (one write, one round trip for the whole batch instead of
//! one per command), with statements prepared once at connect time. A pool
//! (deadpool) would add nothing: one writer makes the commits, in LSN order.
//!
//! # Bulk statements
//!
//! A batch of thousands of commands is not thousands of statements: its
//! mailbox commands are cut into segments whose order does not matter (no
//! registration inside, no key both enqueued and removed), and each segment
//! is at most three statements over arrays (`unnest`): insert the items,
//! delete the removed keys, raise `next_seq`. Registrations and the server
//! id are single statements between segments. Since an item is delivered
//! (and so acknowledged) only after the batch that stored it was committed,
//! a batch under load is one segment: BEGIN, three statements, COMMIT, sent
//! together (one round trip per commit). A proptest checks the segments
//! against [`ServerState::apply`] in order.
//!
//! # TLS
//!
//! A URL with `sslmode=require` (or `prefer`) connects over TLS (rustls,
//! ring, TLS 1.3), the server's certificate verified against the web PKI
//! roots plus an optional CA file ([`PostgresTls`]); without `sslmode` it
//! stays plaintext. Details, and how this differs from libpq, at
//! [`PostgresTls`]. The store and the [`Leases`] open every connection,
//! reconnections included, through one connector.
//!
//! # Durability
//!
//! A batch is one transaction; the session sets `synchronous_commit = on`
//! explicitly (whatever the server's default), so COMMIT returns only once
//! the commit record is flushed to the write-ahead log, and only then does
//! [`Store::commit`] return `Ok` (and the store thread report the batch
//! durable). A statement that fails rolls the whole transaction back.
//!
//! # Schema and shards
//!
//! Ordered migrations ([`MIGRATIONS`]) are applied at connect time, each
//! recorded in `schema_version`, under an advisory lock so that two servers
//! starting together do not race; a database whose `schema_version` is
//! newer than this build knows is refused with
//! [`StoreError::UnsupportedFormat`]. Tables:
//!
//! - `server (id, server_id)`: one row, the server id.
//! - `users (shard, name, public_key, next_seq)`, key `(shard, name)`.
//! - `items (shard, name, seq, item)`, key `(shard, name, seq)`; `item` is
//!   the CBOR [`MailItem`](missive_core::server::MailItem), as in redb.
//!
//! Every user row and item row carries the shard of its user,
//! [`shard_of`]: FNV-1a (64-bit) of the UTF-8 name, modulo
//! [`SHARD_COUNT`] (64). Both are fixed: a different hash or count would
//! misplace every stored row, so they may only change with a migration that
//! rewrites the column. Keys lead with the shard, so one shard's rows can be
//! read, locked or moved on their own.
//!
//! # Cluster nodes
//!
//! Several nodes share one database ([`PostgresStore::connect_node`],
//! [`Leases`]; docs/CLUSTER.md). Migration 2 adds `cluster (id, shards,
//! created)` (one row: the server id every node announces, and the cluster
//! shard count N), `leases (shard, owner, address, epoch, expires_at)`,
//! `nodes (node_id, address, expires_at)`, an `epoch` column on users and
//! items (the lease epoch the row was written under; 0 for a single
//! server) and the fence function [`FENCE_FUNCTION`]. A cluster shard's
//! rows are found from the storage shard above ([`storage_shards`]): for
//! N ≥ 64 storage shard `s mod 64`, filtered by `name_hash mod N`; for
//! N < 64 storage shards `s, s + N, …`.
//!
//! A node's commit runs the fence function first, in the same pipelined
//! transaction (still one round trip): it locks the lease rows of the
//! shards the batch touches `FOR SHARE` (an acquisition by another node
//! waits for the commit, then loads what it wrote) and raises SQLSTATE
//! `MSV01` with the refused shards if an epoch is no longer the node's.
//! The store then commits the batch without those shards' commands and
//! reports them through [`Store::take_fenced`].
//!
//! # Load
//!
//! [`Store::load`] streams rows in one read-only repeatable-read
//! transaction (one snapshot) through a portal, [`LOAD_CHUNK_ROWS`] at a
//! time, straight into [`ServerState::apply`]: the server id, every user
//! (by shard, then name), every item (by shard, name, seq), then every
//! mailbox's `next_seq` — the same order [`crate::RedbStore`] uses, which
//! rebuilds the state the commands built.

use crate::rows::{encode_item, restore_item, restore_next_seq, user_name};
use crate::{Store, StoreError};
use futures_util::{StreamExt, future::try_join_all, pin_mut};
use missive_core::UserName;
use missive_core::cluster::{self, Shard};
use missive_core::server::{PersistCmd, ServerState};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Connection, Row, Socket, Statement, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

mod fence;
mod leases;
#[cfg(test)]
mod node_tests;
mod tls;
#[cfg(test)]
mod tls_tests;

pub use fence::Fence;
pub use leases::{LeaseError, LeaseOptions, Leases, MAX_SHARDS};
pub use tls::PostgresTls;

/// Number of shards users are spread over (see [`shard_of`]). Fixed.
pub const SHARD_COUNT: u16 = 64;

/// Rows fetched per round trip while loading.
pub const LOAD_CHUNK_ROWS: i32 = 10_000;

/// How long connecting may take before it is an error (unless the URL sets
/// `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Key of the advisory lock held while migrating (any fixed number).
const MIGRATION_LOCK: i64 = 0x006d_6973_7369_7665; // "missive"

/// The schema, one migration per version: version `n` is `MIGRATIONS[n - 1]`.
/// Append only; never edit a released migration.
pub const MIGRATIONS: &[&str] = &[
    // 1: server id, users, queued items; every user row keyed by its shard.
    "CREATE TABLE server (
         id boolean PRIMARY KEY DEFAULT true CHECK (id),
         server_id bytea NOT NULL CHECK (length(server_id) = 16)
     );
     CREATE TABLE users (
         shard smallint NOT NULL,
         name text NOT NULL,
         public_key bytea NOT NULL,
         next_seq bigint NOT NULL DEFAULT 0 CHECK (next_seq >= 0),
         PRIMARY KEY (shard, name)
     );
     CREATE TABLE items (
         shard smallint NOT NULL,
         name text NOT NULL,
         seq bigint NOT NULL CHECK (seq >= 0),
         item bytea NOT NULL,
         PRIMARY KEY (shard, name, seq)
     );",
    // 2: cluster nodes: the cluster, shard leases, live nodes, the epoch a
    // row was written under, and the fence function.
    "CREATE TABLE cluster (
         id bytea PRIMARY KEY CHECK (length(id) = 16),
         shards integer NOT NULL
             CHECK (shards BETWEEN 1 AND 65536 AND (shards & (shards - 1)) = 0),
         created timestamptz NOT NULL DEFAULT now()
     );
     CREATE UNIQUE INDEX cluster_is_one_row ON cluster ((true));
     CREATE TABLE leases (
         shard integer PRIMARY KEY CHECK (shard >= 0),
         owner text,
         address text,
         epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
         expires_at timestamptz
     );
     CREATE TABLE nodes (
         node_id text PRIMARY KEY,
         address text NOT NULL,
         expires_at timestamptz NOT NULL
     );
     ALTER TABLE users ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
     ALTER TABLE items ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
     CREATE FUNCTION missive_fence(held_shards integer[], held_epochs bigint[])
     RETURNS void LANGUAGE plpgsql AS $$
     DECLARE
         refused text;
     BEGIN
         PERFORM 1 FROM leases WHERE shard = ANY(held_shards) ORDER BY shard FOR SHARE;
         SELECT string_agg(h.shard::text, ',' ORDER BY h.shard) INTO refused
         FROM unnest(held_shards, held_epochs) AS h (shard, epoch)
         LEFT JOIN leases l ON l.shard = h.shard
         WHERE l.epoch IS DISTINCT FROM h.epoch;
         IF refused IS NOT NULL THEN
             RAISE EXCEPTION USING ERRCODE = 'MSV01', MESSAGE = refused;
         END IF;
     END $$;",
];

/// The fence function a node's commit calls first (migration 2):
/// `missive_fence(shards integer[], epochs bigint[])` locks the lease rows
/// of `shards` `FOR SHARE` and raises SQLSTATE [`FENCED_SQLSTATE`], the
/// message being the comma-separated shards whose lease epoch differs.
pub const FENCE_FUNCTION: &str = "missive_fence";

/// The SQLSTATE of a write refused by [`FENCE_FUNCTION`].
pub const FENCED_SQLSTATE: &str = "MSV01";

/// First pause before a node's store connects again after losing its
/// connection; it doubles up to [`RECONNECT_MAX_DELAY`].
pub const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(200);

/// Longest pause between a node's store's reconnection attempts.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// A node's session settings, besides `synchronous_commit = on`: a
/// transaction left open (a node stopped between sending BEGIN and COMMIT)
/// is ended by the server, so that the lease rows it locked `FOR SHARE`
/// do not hold back another node's acquisition.
const NODE_SESSION: &str = "SET idle_in_transaction_session_timeout = '2s'";

/// The schema version this build writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The storage shard of `user`: [`name_hash`](missive_core::cluster::name_hash) (FNV-1a 64 of the name), modulo
/// [`SHARD_COUNT`]. Stable across versions and platforms.
///
/// ```
/// use missive_core::UserName;
/// use missive_store::postgres::shard_of;
/// assert_eq!(shard_of(&UserName::new("alice")?), 7); // 0x508b2abb65a03907 % 64
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn shard_of(user: &UserName) -> i16 {
    // Below SHARD_COUNT (64), so it fits.
    (missive_core::cluster::name_hash(user) % u64::from(SHARD_COUNT)) as i16
}

/// The storage shards ([`shard_of`], modulo [`SHARD_COUNT`]) holding the
/// rows of cluster shard `shard` among `shards` (a power of two): for
/// `shards` ≥ 64 the one storage shard `shard mod 64` (shared with other
/// cluster shards: filter by [`cluster::shard_of`]), below 64 every storage
/// shard `shard + k·shards`.
///
/// ```
/// use missive_core::cluster::Shard;
/// use missive_store::postgres::storage_shards;
/// assert_eq!(storage_shards(Shard(300), 1024), vec![300 % 64]);
/// assert_eq!(storage_shards(Shard(5), 16), vec![5, 21, 37, 53]);
/// ```
pub fn storage_shards(shard: Shard, shards: u32) -> Vec<i16> {
    let count = u32::from(SHARD_COUNT);
    if shards >= count {
        vec![(shard.0 % count) as i16]
    } else {
        (shard.0..count)
            .step_by(shards.max(1) as usize)
            .map(|s| s as i16)
            .collect()
    }
}

/// Statements prepared once per connection.
struct Statements {
    set_server_id: Statement,
    register: Statement,
    enqueue: Statement,
    remove: Statement,
    raise_next_seq: Statement,
    remove_user: Statement,
    fence: Statement,
    load_server_id: Statement,
    load_users: Statement,
    load_items: Statement,
    load_next_seqs: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            set_server_id: client
                .prepare(
                    "INSERT INTO server (id, server_id) VALUES (true, $1)
                     ON CONFLICT (id) DO UPDATE SET server_id = EXCLUDED.server_id",
                )
                .await?,
            // Mirrors ServerState::apply: a second registration keeps the
            // first key.
            register: client
                .prepare(
                    "INSERT INTO users (shard, name, public_key, epoch) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                )
                .await?,
            // Items (arrays of shard, name, seq, item, epoch): those of
            // unknown users and those at a used seq are ignored; a stored
            // item raises its mailbox's next_seq past it.
            enqueue: client
                .prepare(
                    "WITH inserted AS (
                         INSERT INTO items (shard, name, seq, item, epoch)
                         SELECT n.shard, n.name, n.seq, n.item, n.epoch
                         FROM unnest($1::smallint[], $2::text[], $3::bigint[], $4::bytea[],
                                     $5::bigint[])
                              AS n (shard, name, seq, item, epoch)
                         WHERE EXISTS (SELECT 1 FROM users u
                                       WHERE u.shard = n.shard AND u.name = n.name)
                         ON CONFLICT DO NOTHING
                         RETURNING shard, name, seq, epoch
                     )
                     UPDATE users u SET next_seq = GREATEST(u.next_seq, m.next_seq),
                                        epoch = m.epoch
                     FROM (SELECT shard, name, max(seq) + 1 AS next_seq, max(epoch) AS epoch
                           FROM inserted GROUP BY shard, name) m
                     WHERE u.shard = m.shard AND u.name = m.name",
                )
                .await?,
            // Keys (arrays of shard, name, seq) to remove.
            remove: client
                .prepare(
                    "DELETE FROM items i
                     USING unnest($1::smallint[], $2::text[], $3::bigint[]) AS r (shard, name, seq)
                     WHERE i.shard = r.shard AND i.name = r.name AND i.seq = r.seq",
                )
                .await?,
            // (shard, name, next_seq, epoch) arrays: next_seq only goes up.
            raise_next_seq: client
                .prepare(
                    "UPDATE users u SET next_seq = GREATEST(u.next_seq, m.next_seq),
                                        epoch = m.epoch
                     FROM (SELECT shard, name, max(next_seq) AS next_seq, max(epoch) AS epoch
                           FROM unnest($1::smallint[], $2::text[], $3::bigint[], $4::bigint[])
                                AS s (shard, name, next_seq, epoch)
                           GROUP BY shard, name) m
                     WHERE u.shard = m.shard AND u.name = m.name",
                )
                .await?,
            // Shard, name: the user and its mailbox.
            remove_user: client
                .prepare(
                    "WITH items_gone AS (DELETE FROM items WHERE shard = $1 AND name = $2)
                     DELETE FROM users WHERE shard = $1 AND name = $2",
                )
                .await?,
            fence: client
                .prepare(&format!(
                    "SELECT {FENCE_FUNCTION}($1::integer[], $2::bigint[])"
                ))
                .await?,
            load_server_id: client.prepare("SELECT server_id FROM server").await?,
            load_users: client
                .prepare("SELECT shard, name, public_key FROM users ORDER BY shard, name")
                .await?,
            load_items: client
                .prepare("SELECT shard, name, seq, item FROM items ORDER BY shard, name, seq")
                .await?,
            load_next_seqs: client
                .prepare("SELECT shard, name, next_seq FROM users ORDER BY shard, name")
                .await?,
        })
    }
}

/// A [`Store`] in a PostgreSQL database; see the [module
/// documentation](self).
///
/// ```no_run
/// use missive_store::{PostgresStore, Store};
/// let mut store = PostgresStore::connect("postgres://missive:secret@127.0.0.1/missive")?;
/// let state = store.load()?;
/// # drop(state);
/// # Ok::<(), missive_store::StoreError>(())
/// ```
pub struct PostgresStore {
    /// Declared before `runtime`: dropped while the runtime still exists.
    client: Client,
    statements: Statements,
    runtime: tokio::runtime::Runtime,
    /// How to connect again (a node's store, after losing the connection).
    connector: Connector,
    mode: Mode,
}

/// Whether the store serves a single server or one node of a cluster.
enum Mode {
    /// Every user, server id in `server`, epoch 0 on every row; a lost
    /// connection fails the commit.
    Single,
    /// The shards of a [`Fence`] only.
    Node(NodeMode),
}

/// The state of a node's store ([`PostgresStore::connect_node`]).
struct NodeMode {
    fence: Fence,
    /// The cluster's shard count.
    shards: u32,
    /// The server id of the cluster (announced by every node).
    cluster_id: [u8; 16],
    /// Shards whose commands were dropped since the last
    /// [`Store::take_fenced`].
    fenced: BTreeSet<Shard>,
}

impl NodeMode {
    /// Writes of `shard` under `epoch` can no longer be made: out of the
    /// fence, and reported fenced — unless the node already serves the
    /// shard under a newer epoch (it lost the old one and took it again:
    /// the loss was reported then, and reporting it now would drop the new
    /// ownership).
    fn lose(&mut self, shard: Shard, epoch: u64) {
        self.fence.release_epoch(shard, epoch);
        if self.fence.epoch(shard).is_none_or(|held| held <= epoch) {
            self.fenced.insert(shard);
        }
    }
}

/// Why one attempt at a node's commit did not commit.
enum Attempt {
    /// PostgreSQL rolled the transaction back to break a deadlock or a
    /// serialization conflict: nothing was written; run it again.
    Retry(tokio_postgres::Error),
    /// The fence function refused these shards; nothing was written.
    Fenced(Vec<Shard>),
    /// The connection was lost (or the server is shutting down): connect
    /// again and retry.
    ConnectionLost(tokio_postgres::Error),
    /// Any other failure: the commit fails.
    Failed(StoreError),
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.connector.target)
            .finish_non_exhaustive()
    }
}

/// A tokio-postgres error whose message includes the server's (its
/// `Display` alone says only "db error").
#[derive(Debug)]
pub struct PostgresError(pub tokio_postgres::Error);

impl std::fmt::Display for PostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(&self.0);
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

impl std::error::Error for PostgresError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A tokio-postgres error as a [`StoreError`].
fn database(err: tokio_postgres::Error) -> StoreError {
    StoreError::Database(Box::new(PostgresError(err)))
}

/// `user@host:port/database` of a connection configuration.
fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config
        .get_ports()
        .first()
        .map_or_else(|| "5432".to_owned(), u16::to_string);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("(default user)"),
        config.get_dbname().unwrap_or("(default database)")
    )
}

/// A connection's two halves.
type Connected = (Client, Connection<Socket, tls::TlsStream>);

/// How to open connections to one database, parsed and built once: the
/// store's and the [`Leases`]' first connection and every reconnection.
#[derive(Clone)]
struct Connector {
    config: Config,
    /// `user@host:port/database`, for messages (never the password).
    target: String,
    /// Used only if the URL's `sslmode` asks for TLS ([`PostgresTls`]).
    tls: MakeRustlsConnect,
}

impl Connector {
    /// Parses `url` (defaults: [`CONNECT_TIMEOUT`], application name
    /// `missive-server`, no TLS without `sslmode`) and builds the TLS
    /// connector trusting `tls`.
    fn new(url: &str, tls: &PostgresTls) -> Result<Self, StoreError> {
        let mut config = tls::parse_url(url).map_err(|source| StoreError::Connect {
            target: "PostgreSQL (the URL does not parse)".to_owned(),
            source: Box::new(PostgresError(source)),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("missive-server");
        let target = describe(&config);
        Ok(Self {
            config,
            target,
            tls: tls.connector()?,
        })
    }

    /// Opens a connection (not yet driven: spawn its second half).
    async fn open(&self) -> Result<Connected, StoreError> {
        self.config
            .connect(self.tls.clone())
            .await
            .map_err(|source| StoreError::Connect {
                target: self.target.clone(),
                source: Box::new(PostgresError(source)),
            })
    }
}

/// Drives `connection` on `runtime` (polled whenever the store blocks on
/// it); it ends, and later requests fail, when the server goes away.
fn drive(runtime: &tokio::runtime::Runtime, connection: Connection<Socket, tls::TlsStream>) {
    runtime.spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "PostgreSQL connection lost");
        }
    });
}

/// Makes a new connection ready for commits: `synchronous_commit = on`,
/// statements prepared.
async fn prepare_session(client: &Client) -> Result<Statements, tokio_postgres::Error> {
    client.batch_execute("SET synchronous_commit = on").await?;
    Statements::prepare(client).await
}

/// Whether `err` means the connection is gone or the server is going
/// down (a restart), rather than a refusal of the statement.
fn connection_lost(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.as_db_error() {
        // Admin shutdown, crash shutdown, cannot connect now, connection
        // exceptions.
        Some(db) => {
            let code = db.code().code();
            code.starts_with("57P") || code.starts_with("08")
        }
        None => std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// Whether PostgreSQL rolled the transaction back for a conflict with
/// another one (deadlock detected, serialization failure): running it
/// again is the documented answer.
fn worth_retrying(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|db| {
        matches!(
            db.code(),
            &tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                | &tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
        )
    })
}

/// The shards refused by the fence function, if `err` is its refusal.
fn refused_shards(err: &tokio_postgres::Error) -> Option<Result<Vec<Shard>, StoreError>> {
    let db = err.as_db_error()?;
    if db.code().code() != FENCED_SQLSTATE {
        return None;
    }
    Some(
        db.message()
            .split(',')
            .map(|s| {
                s.trim().parse().map(Shard).map_err(|_| {
                    StoreError::Corrupt(format!("fence refusal {:?} is not shards", db.message()))
                })
            })
            .collect(),
    )
}

fn epoch_param(epoch: u64) -> Result<i64, StoreError> {
    i64::try_from(epoch).map_err(|_| StoreError::Encode {
        what: "lease epoch",
        detail: format!("{epoch} does not fit a bigint"),
    })
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string), sets `synchronous_commit = on`,
    /// migrates the schema to [`SCHEMA_VERSION`] and prepares the
    /// statements.
    ///
    /// TLS as the URL's `sslmode` says (none without one), verified
    /// against the web PKI roots; see [`connect_with`](Self::connect_with)
    /// for a private CA.
    ///
    /// Fails with [`StoreError::Connect`] if the server cannot be reached or
    /// refuses the connection (wrong password, no such database, a TLS
    /// certificate that does not verify), with
    /// [`StoreError::UnsupportedFormat`] if the schema is newer than this
    /// build.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PostgresTls::default())
    }

    /// [`connect`](Self::connect), trusting `tls` for TLS connections
    /// (`sslmode=prefer` or `require`; see [`PostgresTls`]). Fails also
    /// with [`StoreError::CaFile`] if its CA file cannot be used.
    pub fn connect_with(url: &str, tls: &PostgresTls) -> Result<Self, StoreError> {
        Self::open(url, tls, |_, _| Ok(Mode::Single))
    }

    /// Connects as one node of a cluster whose shard count is `shards`: the
    /// store of the shards `fence` holds.
    ///
    /// - [`Store::load`] returns a state holding only the cluster's server
    ///   id; the users of a shard come with its acquisition
    ///   ([`Leases::load_shard`]).
    /// - [`Store::commit_under`] writes each command under the epoch it
    ///   was issued under (a [`StoreThread::submit_under`](crate::StoreThread::submit_under)
    ///   tag): a shard's commands under an older epoch than its newest one
    ///   in the batch, issued before the node lost the shard and took it
    ///   again, are dropped; [`Store::commit`] takes the epochs `fence`
    ///   holds at commit time instead. Either drops the commands of shards
    ///   not served, runs the fence function first in the same transaction, and
    ///   if it refuses shards (another node acquired them) commits the
    ///   batch without their commands; both kinds are reported by
    ///   [`Store::take_fenced`] (and as [`StoreEvent::Fenced`](crate::StoreEvent::Fenced)
    ///   by a [`StoreThread`](crate::StoreThread)) and released from
    ///   `fence`. Every row written carries its shard's epoch.
    /// - A lost connection is not an error: the commit connects again,
    ///   pausing [`RECONNECT_FIRST_DELAY`] doubling to
    ///   [`RECONNECT_MAX_DELAY`], and retries until it commits (without the
    ///   commands of shards `fence` stopped holding meanwhile). Other
    ///   failures fail the commit, as for a single server.
    /// - The session ends a transaction idle for 2 s, so a node stopped
    ///   mid-commit does not keep its lease rows locked.
    ///
    /// The cluster must exist ([`Leases::connect`] creates it). Fails as
    /// [`connect`](Self::connect), and with
    /// [`StoreError::ClusterMismatch`] if the database holds no cluster or
    /// one with another shard count.
    pub fn connect_node(url: &str, fence: Fence, shards: u32) -> Result<Self, StoreError> {
        Self::connect_node_with(url, &PostgresTls::default(), fence, shards)
    }

    /// [`connect_node`](Self::connect_node), trusting `tls` for TLS
    /// connections (as [`connect_with`](Self::connect_with)); reconnections
    /// use it too.
    pub fn connect_node_with(
        url: &str,
        tls: &PostgresTls,
        fence: Fence,
        shards: u32,
    ) -> Result<Self, StoreError> {
        Self::open(url, tls, move |runtime, client| {
            runtime
                .block_on(client.batch_execute(NODE_SESSION))
                .map_err(database)?;
            let row = runtime
                .block_on(client.query_opt("SELECT id, shards FROM cluster", &[]))
                .map_err(database)?
                .ok_or_else(|| StoreError::ClusterMismatch {
                    detail: "the database holds no cluster (Leases::connect creates it)".into(),
                })?;
            let stored: i32 = row.try_get(1).map_err(database)?;
            if i64::from(stored) != i64::from(shards) {
                return Err(StoreError::ClusterMismatch {
                    detail: format!(
                        "the cluster has {stored} shards; this node is configured for {shards}"
                    ),
                });
            }
            let id: &[u8] = row.try_get(0).map_err(database)?;
            let cluster_id = id
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("cluster id is {} bytes", id.len())))?;
            Ok(Mode::Node(NodeMode {
                fence,
                shards,
                cluster_id,
                fenced: BTreeSet::new(),
            }))
        })
    }

    /// Connects, migrates, prepares, then decides the mode.
    fn open(
        url: &str,
        tls: &PostgresTls,
        mode: impl FnOnce(&tokio::runtime::Runtime, &Client) -> Result<Mode, StoreError>,
    ) -> Result<Self, StoreError> {
        let connector = Connector::new(url, tls)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        let (mut client, connection) = runtime.block_on(connector.open())?;
        drive(&runtime, connection);
        let statements = runtime.block_on(async {
            migrate(&mut client).await?;
            prepare_session(&client).await.map_err(database)
        })?;
        let mode = mode(&runtime, &client)?;
        tracing::debug!(target = %connector.target, "connected to PostgreSQL");
        Ok(Self {
            client,
            statements,
            runtime,
            connector,
            mode,
        })
    }

    /// `user@host:port/database` this store is connected to.
    pub fn target(&self) -> &str {
        &self.connector.target
    }

    /// Connects again, pausing [`RECONNECT_FIRST_DELAY`] doubling to
    /// [`RECONNECT_MAX_DELAY`] before each attempt, until it succeeds.
    fn reconnect(&mut self) {
        let mut delay = RECONNECT_FIRST_DELAY;
        loop {
            std::thread::sleep(delay);
            match self.reconnect_once() {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "reconnecting to PostgreSQL"),
            }
            delay = (delay * 2).min(RECONNECT_MAX_DELAY);
        }
    }

    /// One attempt to connect again (and prepare the session).
    fn reconnect_once(&mut self) -> Result<(), StoreError> {
        let (client, connection) = self.runtime.block_on(self.connector.open())?;
        drive(&self.runtime, connection);
        let statements = self
            .runtime
            .block_on(async {
                if let Mode::Node(_) = self.mode {
                    client.batch_execute(NODE_SESSION).await?;
                }
                prepare_session(&client).await
            })
            .map_err(database)?;
        self.client = client;
        self.statements = statements;
        tracing::info!(target = %self.connector.target, "reconnected to PostgreSQL");
        Ok(())
    }

    /// Sends the batch's steps in one transaction, one round trip: BEGIN,
    /// the fence call (a node's: `held` non-empty), the steps' statements
    /// and COMMIT are all sent before the first answer is awaited. If a
    /// statement fails, PostgreSQL aborts the transaction and answers the
    /// COMMIT with a rollback; the first error is returned.
    fn send_transaction(
        &self,
        steps: &[Step<'_>],
        held: Option<(&[i32], &[i64])>,
    ) -> Result<(), tokio_postgres::Error> {
        let (client, statements) = (&self.client, &self.statements);
        self.runtime.block_on(async {
            let begin = async { client.batch_execute("BEGIN").await };
            let fence = async {
                if let Some((shards, epochs)) = held {
                    client
                        .execute(&statements.fence, &[&shards, &epochs])
                        .await?;
                }
                Ok(())
            };
            let steps = try_join_all(steps.iter().map(|step| step.execute(client, statements)));
            let commit = async { client.batch_execute("COMMIT").await };
            let outcome = futures_util::future::try_join4(begin, fence, steps, commit).await;
            if let Err(e) = outcome {
                // A statement refused before it was sent leaves the others
                // unsent, COMMIT included: end the transaction here (a
                // no-op if it is over), so nothing of this batch is kept.
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
            Ok(())
        })
    }

    /// A node's commit: see [`connect_node`](Self::connect_node). `tags`:
    /// the epoch each command was issued under (`commit_under`), or `None`
    /// for the epochs the fence holds now (`commit`).
    fn commit_node(
        &mut self,
        batch: &[PersistCmd],
        tags: Option<&[Option<u64>]>,
    ) -> Result<(), StoreError> {
        let Mode::Node(node) = &mut self.mode else {
            unreachable!("commit_node is called in node mode only");
        };
        let shards = node.shards;
        let mut issued: Vec<(Option<Shard>, Option<u64>)> = Vec::with_capacity(batch.len());
        for (i, cmd) in batch.iter().enumerate() {
            let shard = cmd.user().map(|user| cluster::shard_of(user, shards));
            let epoch = match (tags, shard) {
                (Some(tags), _) => tags.get(i).copied().flatten(),
                (None, Some(shard)) => node.fence.epoch(shard),
                (None, None) => None,
            };
            issued.push((shard, epoch));
        }
        // Each shard is written under the newest epoch it was issued under
        // in this batch.
        let mut held: HashMap<Shard, u64> = HashMap::new();
        for (shard, epoch) in &issued {
            if let (Some(shard), Some(epoch)) = (shard, epoch) {
                let newest = held.entry(*shard).or_insert(*epoch);
                *newest = (*newest).max(*epoch);
            }
        }
        let mut kept: Vec<(Shard, &PersistCmd)> = Vec::with_capacity(batch.len());
        for (cmd, (shard, epoch)) in batch.iter().zip(&issued) {
            match (shard, epoch) {
                (Some(shard), Some(epoch)) if held[shard] == *epoch => kept.push((*shard, cmd)),
                // Issued before the node lost the shard and took it again:
                // the core dropped what it backed with the shard.
                (Some(_), Some(_)) => {}
                (Some(shard), None) => {
                    node.fenced.insert(*shard);
                }
                (None, _) => match cmd {
                    PersistCmd::SetServerId { server_id } if *server_id == node.cluster_id => {}
                    PersistCmd::SetServerId { .. } => {
                        return Err(StoreError::ClusterMismatch {
                            detail: "a node's server id is the cluster's; it cannot be set".into(),
                        });
                    }
                    other => return Err(StoreError::UnsupportedCommand(format!("{other:?}"))),
                },
            }
        }
        loop {
            if kept.is_empty() {
                return Ok(());
            }
            match self.attempt_node(&kept, &held) {
                Ok(()) => return Ok(()),
                Err(Attempt::Fenced(refused)) => {
                    let Mode::Node(node) = &mut self.mode else {
                        unreachable!("commit_node is called in node mode only");
                    };
                    tracing::warn!(?refused, "writes refused: shards fenced");
                    for shard in &refused {
                        node.lose(*shard, held[shard]);
                    }
                    kept.retain(|(shard, _)| !refused.contains(shard));
                }
                Err(Attempt::ConnectionLost(e)) => {
                    tracing::warn!(error = %PostgresError(e), "PostgreSQL connection lost; reconnecting");
                    self.reconnect();
                    // Leases may have lapsed meanwhile: the coordinator
                    // released those shards; their commands are dropped.
                    let Mode::Node(node) = &mut self.mode else {
                        unreachable!("commit_node is called in node mode only");
                    };
                    kept.retain(|(shard, _)| {
                        let still_held = node.fence.epoch(*shard) == Some(held[shard]);
                        if !still_held {
                            node.lose(*shard, held[shard]);
                        }
                        still_held
                    });
                }
                Err(Attempt::Retry(e)) => {
                    tracing::warn!(error = %PostgresError(e), "commit rolled back; retrying");
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
    }

    /// One try of a node's commit of `kept` under the epochs of `held`.
    fn attempt_node(
        &self,
        kept: &[(Shard, &PersistCmd)],
        held: &HashMap<Shard, u64>,
    ) -> Result<(), Attempt> {
        let touched: BTreeSet<Shard> = kept.iter().map(|(shard, _)| *shard).collect();
        let fence_shards: Vec<i32> = touched.iter().map(|s| s.0 as i32).collect();
        let fence_epochs = touched
            .iter()
            .map(|s| epoch_param(held[s]))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(Attempt::Failed)?;
        let epochs: HashMap<Shard, i64> = touched
            .iter()
            .copied()
            .zip(fence_epochs.iter().copied())
            .collect();
        let steps =
            plan(kept.iter().map(|(shard, cmd)| (*cmd, epochs[shard]))).map_err(Attempt::Failed)?;
        match self.send_transaction(&steps, Some((&fence_shards, &fence_epochs))) {
            Ok(()) => Ok(()),
            Err(e) => match refused_shards(&e) {
                Some(Ok(refused)) if refused.iter().all(|s| touched.contains(s)) => {
                    Err(Attempt::Fenced(refused))
                }
                Some(Ok(refused)) => Err(Attempt::Failed(StoreError::Corrupt(format!(
                    "the fence refused shards {refused:?}, not all of them written ({touched:?})"
                )))),
                Some(Err(corrupt)) => Err(Attempt::Failed(corrupt)),
                None if connection_lost(&e) || self.client.is_closed() => {
                    Err(Attempt::ConnectionLost(e))
                }
                None if worth_retrying(&e) => Err(Attempt::Retry(e)),
                None => Err(Attempt::Failed(database(e))),
            },
        }
    }
}

/// Applies the migrations the database lacks, in one transaction.
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let txn = client.transaction().await.map_err(database)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(database)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(database)?;
    let found: Option<i32> = txn
        .query_one("SELECT max(version) FROM schema_version", &[])
        .await
        .map_err(database)?
        .get(0);
    let found = u32::try_from(found.unwrap_or(0))
        .map_err(|_| StoreError::Corrupt(format!("schema version {found:?}")))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedFormat {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, migration) in (1..).zip(MIGRATIONS).skip(found as usize) {
        txn.batch_execute(migration).await.map_err(database)?;
        txn.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(database)?;
        tracing::info!(version, "applied schema migration");
    }
    txn.commit().await.map_err(database)
}

fn seq_param(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Encode {
        what: "sequence number",
        detail: format!("{seq} does not fit a bigint"),
    })
}

/// Rows for one bulk statement: parallel arrays of shard, name, a number
/// (seq or next_seq), the lease epoch written under and, for items, the
/// CBOR item.
#[derive(Default)]
struct Rows<'a> {
    shards: Vec<i16>,
    names: Vec<&'a str>,
    numbers: Vec<i64>,
    epochs: Vec<i64>,
    items: Vec<Vec<u8>>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, user: &'a UserName, number: i64, epoch: i64) {
        self.shards.push(shard_of(user));
        self.names.push(user.as_str());
        self.numbers.push(number);
        self.epochs.push(epoch);
    }
}

/// What a command did to an item key within the current [`Segment`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Touch {
    Enqueued,
    Removed,
}

/// A run of mailbox commands (`Enqueue`, `Ack`/`Expire`, `SetNextSeq`)
/// whose order does not matter, so that it runs as (at most) three bulk
/// statements: no registration inside it (whether a user exists is fixed),
/// and no key both enqueued and removed in it (raising `next_seq` only goes
/// up, so it commutes with everything). Of several enqueues of one key the
/// first counts, as in [`ServerState::apply`]; later ones are dropped.
#[derive(Default)]
struct Segment<'a> {
    enqueued: Rows<'a>,
    removed: Rows<'a>,
    next_seqs: Rows<'a>,
    touched: std::collections::HashMap<(&'a str, u64), Touch>,
}

impl Segment<'_> {
    fn is_empty(&self) -> bool {
        self.enqueued.shards.is_empty()
            && self.removed.shards.is_empty()
            && self.next_seqs.shards.is_empty()
    }
}

/// One step of a commit: one statement, or a segment's bulk statements.
enum Step<'a> {
    SetServerId(&'a [u8]),
    /// Shard, name, key, epoch.
    Register(i16, &'a str, &'a [u8], i64),
    Mailboxes(Box<Segment<'a>>),
    /// Shard, name: the user row and its items go.
    RemoveUser(i16, &'a str),
}

/// Ends the current segment (if it holds anything) as a step.
fn close_segment<'a>(steps: &mut Vec<Step<'a>>, segment: &mut Segment<'a>) {
    let done = std::mem::take(segment);
    if !done.is_empty() {
        steps.push(Step::Mailboxes(Box::new(done)));
    }
}

/// Splits a batch into steps that, run in order, have the effect of
/// applying its commands in order. In normal operation a batch is one
/// segment: an item is acknowledged only after the batch that stored it
/// was committed (delivery waits for durability). Each command comes with
/// the lease epoch its rows are written under (0 for a single server).
fn plan<'a>(
    batch: impl IntoIterator<Item = (&'a PersistCmd, i64)>,
) -> Result<Vec<Step<'a>>, StoreError> {
    let mut steps = Vec::new();
    let mut segment = Segment::default();
    for (cmd, epoch) in batch {
        match cmd {
            PersistCmd::SetServerId { server_id } => {
                close_segment(&mut steps, &mut segment);
                steps.push(Step::SetServerId(&server_id[..]));
            }
            PersistCmd::RegisterUser { user, public_key } => {
                close_segment(&mut steps, &mut segment);
                steps.push(Step::Register(
                    shard_of(user),
                    user.as_str(),
                    public_key,
                    epoch,
                ));
            }
            PersistCmd::Enqueue { user, seq, item } => {
                let key = (user.as_str(), *seq);
                match segment.touched.get(&key) {
                    Some(Touch::Enqueued) => continue,
                    Some(Touch::Removed) => close_segment(&mut steps, &mut segment),
                    None => {}
                }
                segment.touched.insert(key, Touch::Enqueued);
                let mut buf = Vec::new();
                encode_item(item, &mut buf)?;
                segment.enqueued.push(user, seq_param(*seq)?, epoch);
                segment.enqueued.items.push(buf);
            }
            PersistCmd::Ack { user, seq } | PersistCmd::Expire { user, seq } => {
                let key = (user.as_str(), *seq);
                match segment.touched.get(&key) {
                    Some(Touch::Removed) => continue,
                    Some(Touch::Enqueued) => close_segment(&mut steps, &mut segment),
                    None => {}
                }
                segment.touched.insert(key, Touch::Removed);
                segment.removed.push(user, seq_param(*seq)?, epoch);
            }
            PersistCmd::SetNextSeq { user, next_seq } => {
                segment.next_seqs.push(user, seq_param(*next_seq)?, epoch);
            }
            PersistCmd::RemoveUser { user } => {
                close_segment(&mut steps, &mut segment);
                steps.push(Step::RemoveUser(shard_of(user), user.as_str()));
            }
            other => return Err(StoreError::UnsupportedCommand(format!("{other:?}"))),
        }
    }
    close_segment(&mut steps, &mut segment);
    Ok(steps)
}

/// Runs `statement` with `params` unless `rows` is empty.
async fn execute_rows(
    client: &Client,
    statement: &Statement,
    rows: &Rows<'_>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), tokio_postgres::Error> {
    if !rows.shards.is_empty() {
        client.execute(statement, params).await?;
    }
    Ok(())
}

impl Step<'_> {
    /// Sends the step's statements (on the first poll, so statements go
    /// out in the order their futures are first polled) and waits for the
    /// answers.
    async fn execute(
        &self,
        client: &Client,
        statements: &Statements,
    ) -> Result<(), tokio_postgres::Error> {
        match self {
            Step::SetServerId(id) => {
                client.execute(&statements.set_server_id, &[id]).await?;
            }
            Step::Register(shard, name, key, epoch) => {
                client
                    .execute(&statements.register, &[shard, name, key, epoch])
                    .await?;
            }
            Step::RemoveUser(shard, name) => {
                client
                    .execute(&statements.remove_user, &[shard, name])
                    .await?;
            }
            Step::Mailboxes(segment) => {
                let (e, r, n) = (&segment.enqueued, &segment.removed, &segment.next_seqs);
                futures_util::future::try_join3(
                    execute_rows(
                        client,
                        &statements.enqueue,
                        e,
                        &[&e.shards, &e.names, &e.numbers, &e.items, &e.epochs],
                    ),
                    execute_rows(
                        client,
                        &statements.remove,
                        r,
                        &[&r.shards, &r.names, &r.numbers],
                    ),
                    execute_rows(
                        client,
                        &statements.raise_next_seq,
                        n,
                        &[&n.shards, &n.names, &n.numbers, &n.epochs],
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Streams the rows of `statement` (no parameters) through a portal,
/// [`LOAD_CHUNK_ROWS`] per round trip, into `each`.
async fn stream_rows(
    txn: &Transaction<'_>,
    statement: &Statement,
    mut each: impl FnMut(Row) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let portal = txn.bind(statement, &no_params).await.map_err(database)?;
    loop {
        let rows = txn
            .query_portal_raw(&portal, LOAD_CHUNK_ROWS)
            .await
            .map_err(database)?;
        pin_mut!(rows);
        let mut count = 0;
        while let Some(row) = rows.next().await {
            each(row.map_err(database)?)?;
            count += 1;
        }
        if count < LOAD_CHUNK_ROWS {
            return Ok(());
        }
    }
}

/// A user name read with its shard, checked against [`shard_of`].
fn sharded_user(row: &Row) -> Result<UserName, StoreError> {
    let shard: i16 = row.try_get(0).map_err(database)?;
    let user = user_name(row.try_get(1).map_err(database)?)?;
    if shard != shard_of(&user) {
        return Err(StoreError::Corrupt(format!(
            "{user} stored in shard {shard}, belongs to shard {}",
            shard_of(&user)
        )));
    }
    Ok(user)
}

fn stored_seq(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("negative sequence number {value}")))
}

impl Store for PostgresStore {
    fn load(&mut self) -> Result<ServerState, StoreError> {
        if let Mode::Node(node) = &self.mode {
            let mut state = ServerState::new();
            state.apply(&PersistCmd::SetServerId {
                server_id: node.cluster_id,
            });
            return Ok(state);
        }
        let (client, statements) = (&mut self.client, &self.statements);
        self.runtime.block_on(async {
            let txn = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(database)?;
            let mut state = ServerState::new();
            stream_rows(&txn, &statements.load_server_id, |row| {
                let id: &[u8] = row.try_get(0).map_err(database)?;
                let server_id: [u8; 16] = id
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("server id is {} bytes", id.len())))?;
                state.apply(&PersistCmd::SetServerId { server_id });
                Ok(())
            })
            .await?;
            stream_rows(&txn, &statements.load_users, |row| {
                let user = sharded_user(&row)?;
                let public_key: &[u8] = row.try_get(2).map_err(database)?;
                state.apply(&PersistCmd::RegisterUser {
                    user,
                    public_key: public_key.to_vec(),
                });
                Ok(())
            })
            .await?;
            stream_rows(&txn, &statements.load_items, |row| {
                let user = sharded_user(&row)?;
                let seq = stored_seq(row.try_get(2).map_err(database)?)?;
                restore_item(&mut state, user, seq, row.try_get(3).map_err(database)?)
            })
            .await?;
            stream_rows(&txn, &statements.load_next_seqs, |row| {
                let user = sharded_user(&row)?;
                let next = stored_seq(row.try_get(2).map_err(database)?)?;
                restore_next_seq(&mut state, user, next)
            })
            .await?;
            txn.commit().await.map_err(database)?;
            Ok(state)
        })
    }

    fn commit(&mut self, batch: &[PersistCmd]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Mode::Node(_) = self.mode {
            return self.commit_node(batch, None);
        }
        let steps = plan(batch.iter().map(|cmd| (cmd, 0)))?;
        // A lost connection fails the commit (transient: the store thread
        // retries it); the next try connects again first.
        if self.client.is_closed() {
            self.reconnect_once()?;
        }
        self.send_transaction(&steps, None).map_err(database)
    }

    fn commit_under(
        &mut self,
        batch: &[PersistCmd],
        epochs: &[Option<u64>],
    ) -> Result<(), StoreError> {
        match self.mode {
            Mode::Node(_) if !batch.is_empty() => self.commit_node(batch, Some(epochs)),
            _ => self.commit(batch),
        }
    }

    fn take_fenced(&mut self) -> Vec<Shard> {
        match &mut self.mode {
            Mode::Single => Vec::new(),
            Mode::Node(node) => std::mem::take(&mut node.fenced).into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{ack, expire, message, notice, register, remove, user};
    use missive_testkit::PostgresServer;
    use proptest::prelude::*;

    crate::store_conformance_tests!({
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        let url = server.create_database();
        move || Box::new(PostgresStore::connect(&url).expect("connect")) as Box<dyn Store>
    });

    /// A store on a new database of the shared server, and the database's
    /// name (for `psql`).
    fn fresh() -> Option<(&'static PostgresServer, String, PostgresStore)> {
        let server = PostgresServer::shared()?;
        let url = server.create_database();
        let database = url.rsplit('/').next().expect("database").to_owned();
        let store = PostgresStore::connect(&url).expect("connect");
        Some((server, database, store))
    }

    /// The sender of every message in the proptest, registered first: a
    /// state rebuilt from rows registers every user before any item, so a
    /// message from a user registered only later would count towards that
    /// user's `outstanding` after a load but not in the replay (the same for
    /// every store; the server never emits such a message).
    const SENDER: &str = "zed";

    /// A command over a small alphabet (3 users, 4 seqs), so that batches
    /// often enqueue and remove one key, register late, or repeat.
    fn arb_cmd() -> impl Strategy<Value = PersistCmd> {
        let name = prop::sample::select(vec!["ann", "ben", "cid"]);
        prop_oneof![
            1 => name.clone().prop_map(register),
            4 => (name.clone(), 0u64..4, 1usize..40)
                .prop_map(|(to, seq, len)| message(to, seq, SENDER, len)),
            1 => (name.clone(), 0u64..4).prop_map(|(to, seq)| notice(to, seq, "ann")),
            3 => (name.clone(), 0u64..4).prop_map(|(n, seq)| ack(n, seq)),
            1 => (name.clone(), 0u64..4).prop_map(|(n, seq)| expire(n, seq)),
            1 => name.clone().prop_map(remove),
            1 => (name, 0u64..8).prop_map(|(n, next_seq)| PersistCmd::SetNextSeq {
                user: user(n),
                next_seq
            }),
            1 => any::<u8>().prop_map(|b| PersistCmd::SetServerId { server_id: [b; 16] }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The bulk statements of a commit (segments) have the effect of the
        /// commands applied one by one, whatever their mix and order.
        #[test]
        fn bulk_commits_match_apply_in_order(
            batches in prop::collection::vec(prop::collection::vec(arb_cmd(), 0..14), 1..5)
        ) {
            let Some(server) = PostgresServer::shared() else {
                return Ok(());
            };
            thread_local! {
                static STORE: std::cell::RefCell<Option<PostgresStore>> = const { std::cell::RefCell::new(None) };
            }
            STORE.with_borrow_mut(|store| {
                let store = store.get_or_insert_with(|| {
                    PostgresStore::connect(&server.create_database()).expect("connect")
                });
                store
                    .runtime
                    .block_on(store.client.batch_execute("TRUNCATE server, users, items"))
                    .expect("truncate");
                let mut expected = ServerState::new();
                let sender = vec![register(SENDER)];
                for batch in std::iter::once(&sender).chain(&batches) {
                    store.commit(batch).expect("commit");
                    for cmd in batch {
                        expected.apply(cmd);
                    }
                    prop_assert_eq!(store.load().expect("load"), expected.clone());
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn a_key_enqueued_and_removed_in_one_batch_splits_it() {
        let batch = [
            message("ann", 0, "ben", 5),
            message("ann", 1, "ben", 5),
            ack("ann", 0),
            ack("ann", 0),
            message("ann", 0, "ben", 6),
            PersistCmd::SetNextSeq {
                user: user("ann"),
                next_seq: 9,
            },
        ];
        let steps = plan(batch.iter().map(|cmd| (cmd, 0))).unwrap();
        // [E0 E1], [R0] (the repeated ack dropped), [E0 + next_seq].
        assert_eq!(steps.len(), 3);
        let segments: Vec<&Segment> = steps
            .iter()
            .map(|step| match step {
                Step::Mailboxes(segment) => &**segment,
                _ => panic!("not a segment"),
            })
            .collect();
        assert_eq!(segments[0].enqueued.numbers, vec![0, 1]);
        assert!(segments[0].removed.numbers.is_empty());
        assert_eq!(segments[1].removed.numbers, vec![0]);
        assert_eq!(segments[2].enqueued.numbers, vec![0]);
        assert_eq!(segments[2].next_seqs.numbers, vec![9]);
        // Registrations and server ids are steps of their own.
        assert_eq!(
            plan(
                [register("ann"), ack("ann", 0), register("ben")]
                    .iter()
                    .map(|cmd| (cmd, 0))
            )
            .unwrap()
            .len(),
            3
        );
    }

    #[test]
    fn shards_are_fnv1a_mod_64() {
        // FNV-1a 64 test vectors: "" → cbf29ce484222325, "a" → af63dc4c8601ec8c.
        assert_eq!(0xcbf2_9ce4_8422_2325_u64 % 64, 0x25);
        assert_eq!(
            shard_of(&user("a")),
            (0xaf63_dc4c_8601_ec8c_u64 % 64) as i16
        );
        // Spread: 1000 names fill every shard.
        let mut seen = [false; SHARD_COUNT as usize];
        for i in 0..1000 {
            seen[shard_of(&user(&format!("user-{i}"))) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn every_row_carries_its_shard() {
        let Some((server, database, mut store)) = fresh() else {
            return;
        };
        store
            .commit(&[
                register("alice"),
                register("bob"),
                message("bob", 0, "alice", 10),
            ])
            .unwrap();
        let rows = server
            .psql(
                &database,
                "SELECT 'u', shard, name FROM users UNION ALL SELECT 'i', shard, name FROM items \
                 ORDER BY 1 DESC, 3",
            )
            .unwrap();
        let expected = format!(
            "u|{}|alice\nu|{}|bob\ni|{}|bob",
            shard_of(&user("alice")),
            shard_of(&user("bob")),
            shard_of(&user("bob"))
        );
        assert_eq!(rows, expected);
    }

    #[test]
    fn wrong_shard_is_corrupt() {
        let Some((server, database, mut store)) = fresh() else {
            return;
        };
        store.commit(&[register("alice")]).unwrap();
        server
            .psql(&database, "UPDATE users SET shard = (shard + 1) % 64")
            .unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn schema_is_versioned_and_a_newer_one_is_refused() {
        let Some((server, database, store)) = fresh() else {
            return;
        };
        drop(store);
        assert_eq!(
            server
                .psql(
                    &database,
                    "SELECT string_agg(version::text, ',') FROM schema_version"
                )
                .unwrap(),
            (1..=SCHEMA_VERSION)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        // Connecting again migrates nothing.
        let url = server.url(&database);
        drop(PostgresStore::connect(&url).unwrap());
        server
            .psql(
                &database,
                &format!(
                    "INSERT INTO schema_version (version) VALUES ({})",
                    SCHEMA_VERSION + 1
                ),
            )
            .unwrap();
        match PostgresStore::connect(&url) {
            Err(StoreError::UnsupportedFormat { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
    }

    #[test]
    fn session_commits_synchronously() {
        let Some((server, database, mut store)) = fresh() else {
            return;
        };
        // Even where the database's default is off, the store's session
        // turns it on.
        server
            .psql(
                "postgres",
                &format!("ALTER DATABASE {database} SET synchronous_commit = off"),
            )
            .unwrap();
        drop(store);
        store = PostgresStore::connect(&server.url(&database)).unwrap();
        let setting = store
            .runtime
            .block_on(store.client.query_one("SHOW synchronous_commit", &[]))
            .unwrap();
        assert_eq!(setting.get::<_, &str>(0), "on");
    }

    #[test]
    fn failing_statement_mid_batch_keeps_none_of_the_batch() {
        let Some((server, database, mut store)) = fresh() else {
            return;
        };
        let before = vec![register("alice"), register("bob")];
        store.commit(&before).unwrap();
        // A trigger that fails the 3rd item of bob's mailbox.
        server
            .psql(
                &database,
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'refused on purpose'; END $$; \
                 CREATE TRIGGER refuse_seq_2 BEFORE INSERT ON items FOR EACH ROW \
                 WHEN (NEW.seq = 2) EXECUTE FUNCTION refuse();",
            )
            .unwrap();
        // Registering carol is a statement of its own before the failing
        // one: it must not be kept either.
        let batch: Vec<PersistCmd> = std::iter::once(register("carol"))
            .chain((0..5).map(|seq| message("bob", seq, "alice", 20)))
            .chain([register("dave")])
            .collect();
        let err = store.commit(&batch).unwrap_err();
        assert!(err.to_string().contains("refused on purpose"), "{err}");
        // Nothing of the failed batch is stored, on this connection or a
        // new one.
        let expected = ServerState::replay(&before);
        assert_eq!(store.load().unwrap(), expected);
        let mut other = PostgresStore::connect(&server.url(&database)).unwrap();
        assert_eq!(other.load().unwrap(), expected);
        // The store goes on: a batch that avoids the trigger commits.
        let good = vec![
            message("bob", 0, "alice", 20),
            message("bob", 1, "alice", 20),
        ];
        store.commit(&good).unwrap();
        assert_eq!(
            other.load().unwrap(),
            ServerState::replay(before.iter().chain(&good))
        );
    }

    #[test]
    fn lost_connection_fails_the_commit() {
        let Some((server, database, mut store)) = fresh() else {
            return;
        };
        store.commit(&[register("alice")]).unwrap();
        server
            .psql(
                "postgres",
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{database}' AND application_name = 'missive-server'"
                ),
            )
            .unwrap();
        assert!(matches!(
            store.commit(&[register("bob")]),
            Err(StoreError::Database(_))
        ));
        let mut other = PostgresStore::connect(&server.url(&database)).unwrap();
        assert_eq!(
            other.load().unwrap(),
            ServerState::replay(&[register("alice")])
        );
    }

    #[test]
    fn load_streams_more_rows_than_one_chunk() {
        let Some((_server, _database, mut store)) = fresh() else {
            return;
        };
        let mut cmds = vec![register("alice"), register("bob")];
        let total = LOAD_CHUNK_ROWS as u64 * 2 + 7;
        cmds.extend((0..total).map(|seq| message("bob", seq, "alice", 8)));
        for chunk in cmds.chunks(4096) {
            store.commit(chunk).unwrap();
        }
        let loaded = store.load().unwrap();
        assert_eq!(loaded.queued_items(), total as usize);
        assert_eq!(loaded, ServerState::replay(&cmds));
    }

    #[test]
    fn unreachable_server_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = PostgresStore::connect(&format!("postgres://u:secret@127.0.0.1:{port}/db"))
            .unwrap_err();
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("u@127.0.0.1:{port}/db")), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(matches!(
            PostgresStore::connect("postgres://[not a url"),
            Err(StoreError::Connect { .. })
        ));
    }

    /// A lost connection fails a commit with a transient error (the store
    /// thread retries it) and the next commit connects again: a restart
    /// of PostgreSQL makes the server unavailable for a moment, not stop.
    #[test]
    fn a_lost_connection_is_transient_and_the_next_commit_reconnects() {
        let Some(mut server) = PostgresServer::start_or_skip() else {
            return;
        };
        let url = server.create_database();
        let mut store = PostgresStore::connect(&url).unwrap();
        store.commit(&[register("alice")]).unwrap();
        server.restart();
        if let Err(e) = store.commit(&[register("bob")]) {
            assert!(e.is_transient(), "{e:?}");
            store.commit(&[register("bob")]).unwrap();
        }
        assert_eq!(store.load().unwrap().user_count(), 2);
    }
}
