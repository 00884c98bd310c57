//! Shard leases in PostgreSQL: which node owns which shard, under which
//! epoch, until when (docs/CLUSTER.md).
//!
//! PostgreSQL is the arbiter: every time is its `now()`, every change a
//! conditional `UPDATE`, so two nodes never both believe they acquired a
//! shard, and the epoch a successful acquisition bumps is what the fence
//! function ([`FENCE_FUNCTION`](super::FENCE_FUNCTION)) checks before any
//! write of the shard.

use super::{Connector, PostgresTls, database, migrate, storage_shards};
use crate::StoreError;
use crate::rows::{decode_item, user_name};
use futures_util::{StreamExt, pin_mut};
use missive_core::cluster::{Shard, shard_of};
use missive_core::server::PersistCmd;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// Most shards a cluster may have.
pub const MAX_SHARDS: u32 = 65_536;

/// Who this node is, for [`Leases::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// The node's id, unique in the cluster (the `owner` of its leases).
    pub node_id: String,
    /// The address clients are redirected to for the node's shards.
    pub address: String,
    /// The cluster's shard count: a power of two from 1 to
    /// [`MAX_SHARDS`]; must equal the count the cluster was created with.
    pub shards: u32,
    /// How long an acquired or renewed lease (and the node's liveness row)
    /// lasts without renewal.
    pub ttl: Duration,
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// PostgreSQL could not be reached, refused, or failed the statement
    /// ([`StoreError::Connect`], [`StoreError::Database`]), or the schema
    /// is newer than this build ([`StoreError::UnsupportedFormat`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster in this database was created with another shard count.
    #[error(
        "the cluster was created with {cluster} shards; this node is configured for {configured}"
    )]
    ShardCountMismatch {
        /// The count stored when the cluster was created.
        cluster: u32,
        /// The count in [`LeaseOptions::shards`].
        configured: u32,
    },
    /// [`LeaseOptions::shards`] is not a power of two from 1 to
    /// [`MAX_SHARDS`].
    #[error("invalid shard count {0}: must be a power of two from 1 to {MAX_SHARDS}")]
    InvalidShardCount(u32),
    /// A shard number outside the cluster's shards.
    #[error("shard {shard} does not exist in a cluster of {shards} shards")]
    NoSuchShard {
        /// The shard asked for.
        shard: Shard,
        /// The cluster's shard count.
        shards: u32,
    },
}

/// Statements of a [`Leases`] connection, prepared once per connection.
struct LeaseStatements {
    heartbeat: Statement,
    live_nodes: Statement,
    acquire: Statement,
    renew: Statement,
    release: Statement,
    owners: Statement,
    shard_users: Statement,
    shard_items: Statement,
}

impl LeaseStatements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            heartbeat: client
                .prepare(
                    "INSERT INTO nodes (node_id, address, expires_at)
                     VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond')
                     ON CONFLICT (node_id) DO UPDATE
                     SET address = EXCLUDED.address, expires_at = EXCLUDED.expires_at",
                )
                .await?,
            live_nodes: client
                .prepare("SELECT count(*) FROM nodes WHERE expires_at > now()")
                .await?,
            // Free or expired leases, up to $4, each taken only if still
            // free or expired when the UPDATE reaches it (rows another
            // node is taking, or a writer is fencing on, are skipped).
            acquire: client
                .prepare(
                    "UPDATE leases l
                     SET owner = $1, address = $2, epoch = l.epoch + 1,
                         expires_at = now() + $3::bigint * interval '1 millisecond'
                     FROM (SELECT shard FROM leases
                           WHERE owner IS NULL OR expires_at IS NULL OR expires_at <= now()
                           ORDER BY shard LIMIT $4
                           FOR UPDATE SKIP LOCKED) free
                     WHERE l.shard = free.shard
                       AND (l.owner IS NULL OR l.expires_at IS NULL OR l.expires_at <= now())
                     RETURNING l.shard, l.epoch",
                )
                .await?,
            // Only unexpired leases still ours under the same epoch. The
            // rows are locked in shard order, the order the fence function
            // locks them in (`FOR SHARE`) in every commit of the node's
            // store: locked in any other order, a renewal and a commit
            // can deadlock.
            renew: client
                .prepare(
                    "UPDATE leases l
                     SET expires_at = now() + $2::bigint * interval '1 millisecond'
                     FROM (SELECT m.shard
                           FROM leases m
                           JOIN unnest($3::integer[], $4::bigint[]) AS h (shard, epoch)
                             ON m.shard = h.shard AND m.epoch = h.epoch
                           WHERE m.owner = $1 AND m.expires_at > now()
                           ORDER BY m.shard
                           FOR UPDATE OF m) mine
                     WHERE l.shard = mine.shard
                     RETURNING l.shard",
                )
                .await?,
            // The epoch stays: the next acquisition bumps it.
            release: client
                .prepare(
                    "UPDATE leases SET owner = NULL, address = NULL, expires_at = NULL
                     WHERE shard = $1 AND epoch = $2 AND owner = $3",
                )
                .await?,
            owners: client
                .prepare(
                    "SELECT shard, CASE WHEN expires_at > now() THEN address END
                     FROM leases ORDER BY shard",
                )
                .await?,
            shard_users: client
                .prepare(
                    "SELECT name, public_key, next_seq FROM users
                     WHERE shard = ANY($1::smallint[]) ORDER BY shard, name",
                )
                .await?,
            shard_items: client
                .prepare(
                    "SELECT name, seq, item FROM items
                     WHERE shard = ANY($1::smallint[]) ORDER BY shard, name, seq",
                )
                .await?,
        })
    }
}

/// A node's handle on the shard leases of a cluster's database.
///
/// Async, on tokio-postgres directly: **must be used inside a tokio
/// runtime** (the connection is driven by a task spawned with
/// `tokio::spawn`), unlike [`PostgresStore`](super::PostgresStore), which
/// brings its own. Every time is PostgreSQL's `now()`. If the connection
/// was lost, the next call connects again first (and fails with
/// [`StoreError::Connect`] if it cannot; the caller tries again later).
pub struct Leases {
    /// How to connect again (the same URL and TLS trust).
    connector: Connector,
    client: Client,
    statements: LeaseStatements,
    options: LeaseOptions,
    cluster_id: [u8; 16],
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("target", &self.connector.target)
            .field("node_id", &self.options.node_id)
            .field("shards", &self.options.shards)
            .finish_non_exhaustive()
    }
}

/// Milliseconds of `ttl` as a statement parameter.
fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// A stored epoch (never negative: it starts at 0 and only goes up).
fn stored_epoch(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative lease epoch {value}")))
}

/// A stored shard number of a lease row.
fn stored_shard(value: i32) -> Result<Shard, StoreError> {
    u32::try_from(value)
        .map(Shard)
        .map_err(|_| StoreError::Corrupt(format!("negative shard {value}")))
}

fn shard_param(shard: Shard) -> i32 {
    // Below MAX_SHARDS (checked by callers), so it fits.
    shard.0 as i32
}

impl Leases {
    /// Connects to the database at `url`, migrates the schema, and creates
    /// the cluster once: its row (a random 16-byte id, the id every node
    /// announces, and the shard count) and one free lease row per shard.
    /// Nodes connecting together agree on the id (insert if absent, then
    /// read back).
    ///
    /// Fails with [`LeaseError::InvalidShardCount`] for a bad
    /// [`LeaseOptions::shards`], with [`LeaseError::ShardCountMismatch`] if
    /// the cluster exists with another count, and as
    /// [`PostgresStore::connect`](super::PostgresStore::connect) otherwise.
    /// TLS as the URL's `sslmode` says, verified against the web PKI roots
    /// ([`connect_with`](Self::connect_with) for a private CA).
    pub async fn connect(url: &str, options: LeaseOptions) -> Result<Self, LeaseError> {
        Self::connect_with(url, &PostgresTls::default(), options).await
    }

    /// [`connect`](Self::connect), trusting `tls` for TLS connections
    /// (`sslmode=prefer` or `require`; see [`PostgresTls`]), now and on
    /// every reconnection. Fails also with [`StoreError::CaFile`] if its
    /// CA file cannot be used.
    pub async fn connect_with(
        url: &str,
        tls: &PostgresTls,
        options: LeaseOptions,
    ) -> Result<Self, LeaseError> {
        if !options.shards.is_power_of_two() || options.shards > MAX_SHARDS {
            return Err(LeaseError::InvalidShardCount(options.shards));
        }
        let connector = Connector::new(url, tls)?;
        let (mut client, connection) = connector.open().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "lease connection to PostgreSQL lost");
            }
        });
        migrate(&mut client).await?;
        let cluster_id = create_cluster(&mut client, options.shards).await?;
        let statements = LeaseStatements::prepare(&client).await.map_err(database)?;
        Ok(Self {
            connector,
            client,
            statements,
            options,
            cluster_id,
        })
    }

    /// The cluster's server id: the id every node announces to clients.
    pub fn cluster_id(&self) -> [u8; 16] {
        self.cluster_id
    }

    /// The options this handle was connected with.
    pub fn options(&self) -> &LeaseOptions {
        &self.options
    }

    /// Marks this node alive for one TTL (its row in `nodes`) and returns
    /// how many nodes are alive, this one included: a coordinator acquires
    /// up to its fair share, shards / live nodes.
    pub async fn heartbeat(&mut self) -> Result<usize, LeaseError> {
        self.reconnect_if_closed().await?;
        let ttl = ttl_millis(self.options.ttl);
        let (client, statements) = (&self.client, &self.statements);
        let (_, live) = futures_util::future::try_join(
            client.execute(
                &statements.heartbeat,
                &[&self.options.node_id, &self.options.address, &ttl],
            ),
            client.query_one(&statements.live_nodes, &[]),
        )
        .await
        .map_err(database)?;
        let live: i64 = live.try_get(0).map_err(database)?;
        Ok(usize::try_from(live).unwrap_or(0))
    }

    /// Takes up to `max` shards whose lease is free or expired, each by a
    /// conditional `UPDATE` that bumps its epoch; returns those taken with
    /// their new epochs, in shard order. Two nodes never both take one
    /// shard.
    pub async fn acquire(&mut self, max: usize) -> Result<Vec<(Shard, u64)>, LeaseError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.reconnect_if_closed().await?;
        let ttl = ttl_millis(self.options.ttl);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                &self.statements.acquire,
                &[&self.options.node_id, &self.options.address, &ttl, &limit],
            )
            .await
            .map_err(database)?;
        let mut taken = rows
            .iter()
            .map(|row| {
                let shard = stored_shard(row.try_get(0).map_err(database)?)?;
                let epoch = stored_epoch(row.try_get(1).map_err(database)?)?;
                Ok((shard, epoch))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        taken.sort_unstable();
        Ok(taken)
    }

    /// Extends the leases of `held` by one TTL where they are still this
    /// node's, under the same epoch and unexpired; returns those shards (in
    /// shard order). A shard missing from the answer is lost: drop it.
    pub async fn renew(&mut self, held: &[(Shard, u64)]) -> Result<Vec<Shard>, LeaseError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        self.reconnect_if_closed().await?;
        let ttl = ttl_millis(self.options.ttl);
        let shards: Vec<i32> = held.iter().map(|(s, _)| shard_param(*s)).collect();
        let epochs: Vec<i64> = held
            .iter()
            .map(|(_, e)| i64::try_from(*e).unwrap_or(i64::MAX))
            .collect();
        let rows = self
            .client
            .query(
                &self.statements.renew,
                &[&self.options.node_id, &ttl, &shards, &epochs],
            )
            .await
            .map_err(database)?;
        let mut renewed = rows
            .iter()
            .map(|row| stored_shard(row.try_get(0).map_err(database)?))
            .collect::<Result<Vec<_>, StoreError>>()?;
        renewed.sort_unstable();
        Ok(renewed)
    }

    /// Gives `shard` up (if still held by this node under `epoch`), so
    /// another node can take it at once instead of after the TTL.
    pub async fn release(&mut self, shard: Shard, epoch: u64) -> Result<(), LeaseError> {
        self.check_shard(shard)?;
        self.reconnect_if_closed().await?;
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        self.client
            .execute(
                &self.statements.release,
                &[&shard_param(shard), &epoch, &self.options.node_id],
            )
            .await
            .map_err(database)?;
        Ok(())
    }

    /// Every shard with the advertised address of its owner, `None` where
    /// the lease is free or expired; in shard order.
    pub async fn owners(&mut self) -> Result<Vec<(Shard, Option<String>)>, LeaseError> {
        self.reconnect_if_closed().await?;
        let rows = self
            .client
            .query(&self.statements.owners, &[])
            .await
            .map_err(database)?;
        Ok(rows
            .iter()
            .map(|row| {
                let shard = stored_shard(row.try_get(0).map_err(database)?)?;
                let address: Option<String> = row.try_get(1).map_err(database)?;
                Ok((shard, address))
            })
            .collect::<Result<Vec<_>, StoreError>>()?)
    }

    /// The stored state of `shard`'s users, as commands that rebuild it:
    /// every `RegisterUser`, then every `Enqueue` (by user, then seq), then
    /// each mailbox's `SetNextSeq`. Read in one repeatable-read snapshot,
    /// streamed from the shard's storage shards (not row by row). Call it
    /// after acquiring the shard: the acquisition waited for every commit
    /// the previous owner had under way.
    pub async fn load_shard(&mut self, shard: Shard) -> Result<Vec<PersistCmd>, LeaseError> {
        self.check_shard(shard)?;
        self.reconnect_if_closed().await?;
        let shards = self.options.shards;
        let storage = storage_shards(shard, shards);
        let txn = self
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(database)?;
        let params: [&(dyn ToSql + Sync); 1] = [&storage];
        let mut registered = Vec::new();
        let mut next_seqs = Vec::new();
        let users = txn
            .query_raw(&self.statements.shard_users, params)
            .await
            .map_err(database)?;
        pin_mut!(users);
        while let Some(row) = users.next().await {
            let row = row.map_err(database)?;
            let user = user_name(row.try_get(0).map_err(database)?)?;
            if shard_of(&user, shards) != shard {
                continue;
            }
            let public_key: &[u8] = row.try_get(1).map_err(database)?;
            let next_seq: i64 = row.try_get(2).map_err(database)?;
            next_seqs.push(PersistCmd::SetNextSeq {
                user: user.clone(),
                next_seq: super::stored_seq(next_seq)?,
            });
            registered.push(PersistCmd::RegisterUser {
                user,
                public_key: public_key.to_vec(),
            });
        }
        let mut cmds = registered;
        let items = txn
            .query_raw(&self.statements.shard_items, params)
            .await
            .map_err(database)?;
        pin_mut!(items);
        while let Some(row) = items.next().await {
            let row = row.map_err(database)?;
            let user = user_name(row.try_get(0).map_err(database)?)?;
            if shard_of(&user, shards) != shard {
                continue;
            }
            let seq = super::stored_seq(row.try_get(1).map_err(database)?)?;
            let item = decode_item(row.try_get(2).map_err(database)?, &user, seq)?;
            cmds.push(PersistCmd::Enqueue { user, seq, item });
        }
        txn.commit().await.map_err(database)?;
        cmds.extend(next_seqs);
        Ok(cmds)
    }

    fn check_shard(&self, shard: Shard) -> Result<(), LeaseError> {
        if shard.0 < self.options.shards {
            Ok(())
        } else {
            Err(LeaseError::NoSuchShard {
                shard,
                shards: self.options.shards,
            })
        }
    }

    /// Connects again if the connection was lost (the server restarted).
    async fn reconnect_if_closed(&mut self) -> Result<(), LeaseError> {
        if !self.client.is_closed() {
            return Ok(());
        }
        let (client, connection) = self.connector.open().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "lease connection to PostgreSQL lost");
            }
        });
        self.statements = LeaseStatements::prepare(&client).await.map_err(database)?;
        self.client = client;
        tracing::info!(target = %self.connector.target, "lease connection to PostgreSQL re-established");
        Ok(())
    }
}

/// Creates the cluster row (if absent) and the lease rows, in one
/// transaction; returns the cluster id.
async fn create_cluster(client: &mut Client, shards: u32) -> Result<[u8; 16], LeaseError> {
    let txn = client.transaction().await.map_err(database)?;
    let count = i32::try_from(shards).map_err(|_| LeaseError::InvalidShardCount(shards))?;
    txn.execute(
        "INSERT INTO cluster (id, shards)
         VALUES (decode(replace(gen_random_uuid()::text, '-', ''), 'hex'), $1)
         ON CONFLICT DO NOTHING",
        &[&count],
    )
    .await
    .map_err(database)?;
    let row = txn
        .query_one("SELECT id, shards FROM cluster", &[])
        .await
        .map_err(database)?;
    let id: &[u8] = row.try_get(0).map_err(database)?;
    let cluster_id: [u8; 16] = id
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("cluster id is {} bytes", id.len())))?;
    let stored: i32 = row.try_get(1).map_err(database)?;
    if stored != count {
        return Err(LeaseError::ShardCountMismatch {
            cluster: u32::try_from(stored).unwrap_or(0),
            configured: shards,
        });
    }
    txn.execute(
        "INSERT INTO leases (shard) SELECT generate_series(0, $1 - 1) ON CONFLICT DO NOTHING",
        &[&count],
    )
    .await
    .map_err(database)?;
    txn.commit().await.map_err(database)?;
    Ok(cluster_id)
}
