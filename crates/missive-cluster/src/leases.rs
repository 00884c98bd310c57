//! One round of lease work against PostgreSQL, and the arithmetic of fair
//! shares and renewal deadlines.
//!
//! A round runs while the coordinator goes on serving NATS and the engine:
//! it owns the [`Leases`] connection for its duration and hands it back
//! with a [`RoundReport`] of what it did, however far it got.

use crate::CoordinatorOptions;
use missive_core::cluster::Shard;
use missive_core::server::PersistCmd;
use missive_store::postgres::{LeaseError, LeaseOptions, Leases};
use std::future::Future;
use std::time::{Duration, Instant};

/// Most shards acquired in one round: every acquired shard is loaded
/// before the next renewal is sent, so a round must stay well within a
/// lease's lifetime (a node starting alone takes 256 shards in 4 rounds).
const MAX_ACQUIRED_PER_ROUND: usize = 64;

/// A lease epoch, as the store counts them.
pub(crate) type Epoch = u64;

/// How many shards a node aims to hold: ⌈`shards` / `live_nodes`⌉ (all of
/// them when it counts no live node, itself not yet included).
///
/// ```
/// assert_eq!(missive_cluster::fair_share(256, 3), 86);
/// assert_eq!(missive_cluster::fair_share(64, 0), 64);
/// ```
pub fn fair_share(shards: u32, live_nodes: usize) -> usize {
    let live = live_nodes.max(1);
    (shards as usize).div_ceil(live)
}

/// How long before its lease would expire a node drops a shard whose
/// renewal has not come through: a fifth of the TTL, at least 100 ms, so
/// that the store's fence and the other nodes' clocks never see this node
/// serve a shard past its lease.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(missive_cluster::renewal_margin(Duration::from_secs(6)), Duration::from_millis(1200));
/// ```
pub fn renewal_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(100))
}

/// The shards to give up when holding `held` shards with a fair share of
/// `fair`: none while at most one above it, else down to the fair share
/// (the highest-numbered first).
pub(crate) fn extras(held: &[Shard], fair: usize) -> Vec<Shard> {
    if held.len() <= fair + 1 {
        return Vec::new();
    }
    let mut sorted = held.to_vec();
    sorted.sort_unstable();
    sorted.split_off(fair)
}

/// What a round is asked to do.
#[derive(Debug, Default)]
pub(crate) struct RoundPlan {
    /// Leases to hand back first (shards the node stopped serving).
    pub release: Vec<(Shard, Epoch)>,
    /// Leases to renew.
    pub renew: Vec<(Shard, Epoch)>,
}

/// What a round did, as far as it got (`error` says where it stopped).
#[derive(Debug, Default)]
pub(crate) struct RoundReport {
    /// When the renewal was sent, and which of the plan's leases it kept.
    pub renewed: Option<(Instant, Vec<Shard>)>,
    /// The live nodes counted by the heartbeat.
    pub live_nodes: Option<usize>,
    /// Shards acquired: the epoch, when the acquisition was sent, the
    /// stored content.
    pub acquired: Vec<Acquired>,
    /// The owner of every shard with an unexpired lease.
    pub owners: Option<Vec<(Shard, Option<String>)>>,
    /// Why the round stopped early.
    pub error: Option<String>,
}

/// A shard a round acquired.
#[derive(Debug)]
pub(crate) struct Acquired {
    pub shard: Shard,
    pub epoch: Epoch,
    /// When the acquiring statement was sent (its lease counts from then).
    pub sent: Instant,
    pub state: Vec<PersistCmd>,
}

/// Connects to the lease tables of the cluster in `options.postgres` as
/// this node, creating the cluster (its id, shard count and lease rows) on
/// first use; fails if the cluster was created with another shard count.
/// Needs a tokio runtime. A node's store
/// ([`PostgresStore::connect_node`](missive_store::PostgresStore::connect_node))
/// opens only once the cluster exists.
pub async fn connect(options: &CoordinatorOptions) -> Result<Leases, LeaseError> {
    let lease_options = LeaseOptions {
        node_id: options.node_id.clone(),
        address: options.advertise.clone(),
        shards: options.shards,
        ttl: options.lease_ttl,
    };
    Leases::connect_with(&options.postgres, &options.postgres_tls, lease_options).await
}

/// A lease round: connects if needed, releases, heartbeats, renews,
/// acquires up to the fair share (loading each acquired shard), reads the
/// owners. Every statement is bounded by `step_timeout`; a failure ends the
/// round (the connection is dropped then, to be made again next round).
pub(crate) async fn round(
    leases: Option<Leases>,
    options: &CoordinatorOptions,
    plan: RoundPlan,
) -> (Option<Leases>, RoundReport) {
    let mut report = RoundReport::default();
    let step_timeout = options.lease_ttl / 2;
    let mut leases = match leases {
        Some(leases) => leases,
        None => match bounded(step_timeout, connect(options)).await {
            Ok(leases) => leases,
            Err(e) => {
                report.error = Some(format!("connecting: {e}"));
                return (None, report);
            }
        },
    };
    match steps(&mut leases, step_timeout, options.shards, plan, &mut report).await {
        Ok(()) => (Some(leases), report),
        Err(e) => {
            report.error = Some(e);
            (None, report)
        }
    }
}

async fn steps(
    leases: &mut Leases,
    step_timeout: Duration,
    shards: u32,
    plan: RoundPlan,
    report: &mut RoundReport,
) -> Result<(), String> {
    for (shard, epoch) in plan.release {
        bounded(step_timeout, leases.release(shard, epoch))
            .await
            .map_err(|e| format!("releasing shard {shard}: {e}"))?;
    }
    let live = bounded(step_timeout, leases.heartbeat())
        .await
        .map_err(|e| format!("heartbeat: {e}"))?;
    report.live_nodes = Some(live);
    let sent = Instant::now();
    let kept = bounded(step_timeout, leases.renew(&plan.renew))
        .await
        .map_err(|e| format!("renewing: {e}"))?;
    let held = kept.len();
    report.renewed = Some((sent, kept));
    let room = fair_share(shards, live)
        .saturating_sub(held)
        .min(MAX_ACQUIRED_PER_ROUND);
    if room > 0 {
        let sent = Instant::now();
        let taken = bounded(step_timeout, leases.acquire(room))
            .await
            .map_err(|e| format!("acquiring: {e}"))?;
        for (shard, epoch) in taken {
            let state = bounded(step_timeout, leases.load_shard(shard))
                .await
                .map_err(|e| format!("loading shard {shard}: {e}"))?;
            report.acquired.push(Acquired {
                shard,
                epoch,
                sent,
                state,
            });
        }
    }
    let owners = bounded(step_timeout, leases.owners())
        .await
        .map_err(|e| format!("reading the owners: {e}"))?;
    report.owners = Some(owners);
    Ok(())
}

/// `work` within `limit`, its error or the timeout as text.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_shares_cover_every_shard() {
        for shards in [1u32, 16, 64, 256, 65536] {
            for live in 1..=7 {
                let fair = fair_share(shards, live);
                assert!(fair * live >= shards as usize, "{shards} over {live}");
                assert!((fair - 1) * live < shards as usize, "{shards} over {live}");
            }
        }
    }

    #[test]
    fn extras_only_above_the_fair_share_plus_one() {
        let held: Vec<Shard> = [9, 1, 5, 3].into_iter().map(Shard).collect();
        assert!(extras(&held, 3).is_empty());
        assert!(extras(&held, 4).is_empty());
        assert_eq!(extras(&held, 2), vec![Shard(5), Shard(9)]);
        assert_eq!(extras(&held, 0).len(), 4);
    }

    #[test]
    fn the_margin_leaves_time_before_expiry() {
        assert_eq!(
            renewal_margin(Duration::from_millis(300)),
            Duration::from_millis(100)
        );
        let ttl = Duration::from_secs(6);
        assert!(
            renewal_margin(ttl) < ttl / 3,
            "a tick fits before the margin"
        );
    }
}
