//! The coordinator's loop: the one owner of what the node holds. It takes
//! turns between the engine's commands, the lease rounds (run beside it),
//! the renewal deadlines and the requests of other nodes.

use crate::CoordinatorOptions;
use crate::leases::{
    Epoch, RoundPlan, RoundReport, connect, extras, fair_share, renewal_margin, round,
};
use crate::nats::{self, Incoming};
use futures_util::StreamExt;
use missive_core::cluster::{CallId, RemoteCall, RemoteReply, Shard};
use missive_runtime::cluster::{ClusterCommand, ClusterEvent, ClusterPort};
use missive_store::postgres::{Fence, Leases};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// First pause after a failed lease round; it doubles with each failure
/// in a row, up to the tick.
const ROUND_RETRY: Duration = Duration::from_millis(200);
/// Time given to handing the leases back at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// A shard this node serves.
struct Held {
    epoch: Epoch,
    /// The send time of the last successful renewal (or the acquisition).
    renewed: Instant,
    /// Its subscription (none while NATS is not set up).
    subscription: Option<JoinHandle<()>>,
}

type RoundFuture = Pin<Box<dyn Future<Output = (Option<Leases>, RoundReport)>>>;

struct Node {
    options: CoordinatorOptions,
    fence: Fence,
    events: futures_channel::mpsc::UnboundedSender<ClusterEvent>,
    held: BTreeMap<Shard, Held>,
    /// The owner told to the core for each shard not held.
    owners: HashMap<Shard, Option<String>>,
    /// Leases to hand back in the next round.
    release: Vec<(Shard, Epoch)>,
    nats: Option<async_nats::Client>,
    incoming: mpsc::UnboundedSender<Incoming>,
    /// Calls of other nodes awaiting the core's reply: their shard and
    /// reply subject.
    calls: HashMap<CallId, (Shard, async_nats::Subject)>,
    next_call: u64,
}

pub(crate) async fn run(options: CoordinatorOptions, fence: Fence, port: ClusterPort) {
    let ClusterPort {
        events,
        mut commands,
    } = port;
    let (incoming_tx, mut incoming) = mpsc::unbounded_channel();
    let nats = match nats::connect(&options).await {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::error!("cannot use NATS at {}: {e}", options.nats);
            None
        }
    };
    let tick = options.lease_ttl / 3;
    let margin = renewal_margin(options.lease_ttl);
    let mut node = Node {
        options,
        fence,
        events,
        held: BTreeMap::new(),
        owners: HashMap::new(),
        release: Vec::new(),
        nats,
        incoming: incoming_tx,
        calls: HashMap::new(),
        next_call: 1,
    };
    let mut leases: Option<Leases> = None;
    let mut running: Option<RoundFuture> = None;
    let mut next_round = tokio::time::Instant::now();
    let mut failures = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        if running.is_none() && started >= next_round {
            next_round = started + tick;
            let plan = node.plan();
            let options = node.options.clone();
            let connection = leases.take();
            running = Some(Box::pin(
                async move { round(connection, &options, plan).await },
            ));
        }
        let deadline = node.earliest_deadline(margin);
        tokio::select! {
            command = commands.next() => match command {
                None | Some(ClusterCommand::Shutdown) => break,
                Some(command) => node.command(command),
            },
            (connection, report) = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
                leases = connection;
                if report.error.is_some() {
                    // Retry sooner than the tick while failing, backing off.
                    let retry = (ROUND_RETRY * 2u32.pow(failures.min(8))).min(tick);
                    failures += 1;
                    next_round = next_round.min(tokio::time::Instant::now() + retry);
                } else {
                    failures = 0;
                }
                node.apply(report);
            },
            () = tokio::time::sleep_until(next_round), if running.is_none() => {},
            () = sleep_until(deadline), if deadline.is_some() => node.expire(Instant::now(), margin),
            Some(request) = incoming.recv() => node.incoming(request),
        }
    }
    drop(running);
    node.stop(leases).await;
}

/// Sleeps until `deadline` (never, if none).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Node {
    fn plan(&mut self) -> RoundPlan {
        RoundPlan {
            release: std::mem::take(&mut self.release),
            renew: self.held.iter().map(|(s, h)| (*s, h.epoch)).collect(),
        }
    }

    fn earliest_deadline(&self, margin: Duration) -> Option<Instant> {
        let ttl = self.options.lease_ttl;
        self.held.values().map(|h| h.renewed + ttl - margin).min()
    }

    fn tell(&self, event: ClusterEvent) {
        // The engine gone: the command stream ends and the loop stops.
        let _ = self.events.unbounded_send(event);
    }

    /// Applies what a round did.
    fn apply(&mut self, report: RoundReport) {
        if let Some(error) = &report.error {
            tracing::warn!("lease round failed, retrying: {error}");
        }
        if let Some((sent, kept)) = report.renewed {
            let kept: std::collections::HashSet<Shard> = kept.into_iter().collect();
            let lost: Vec<Shard> = self
                .held
                .iter_mut()
                .filter_map(|(shard, held)| {
                    if kept.contains(shard) {
                        held.renewed = held.renewed.max(sent);
                        None
                    } else if held.renewed < sent {
                        // Held when the renewal was sent, and not renewed.
                        Some(*shard)
                    } else {
                        None
                    }
                })
                .collect();
            for shard in lost {
                tracing::warn!(%shard, "lease not renewed: dropping the shard");
                self.drop_shard(shard);
            }
        }
        for acquired in report.acquired {
            if self.held.contains_key(&acquired.shard) {
                continue;
            }
            self.fence.hold(acquired.shard, acquired.epoch);
            let subscription = self
                .nats
                .clone()
                .map(|client| nats::subscribe(client, acquired.shard, self.incoming.clone()));
            self.held.insert(
                acquired.shard,
                Held {
                    epoch: acquired.epoch,
                    renewed: acquired.sent,
                    subscription,
                },
            );
            self.owners.remove(&acquired.shard);
            tracing::info!(shard = %acquired.shard, epoch = acquired.epoch, "shard acquired");
            self.tell(ClusterEvent::Acquired {
                shard: acquired.shard,
                epoch: acquired.epoch,
                state: acquired.state,
            });
        }
        if let Some(live) = report.live_nodes {
            let fair = fair_share(self.options.shards, live);
            let held: Vec<Shard> = self.held.keys().copied().collect();
            for shard in extras(&held, fair) {
                tracing::info!(%shard, live, fair, "handing a shard over to balance the cluster");
                self.drop_shard(shard);
            }
        }
        if let Some(owners) = report.owners {
            self.owners_seen(owners);
        }
    }

    /// Tells the core the owners that changed, of the shards not held.
    fn owners_seen(&mut self, owners: Vec<(Shard, Option<String>)>) {
        let mut seen: HashMap<Shard, Option<String>> = owners.into_iter().collect();
        for n in 0..self.options.shards {
            let shard = Shard(n);
            if self.held.contains_key(&shard) {
                continue;
            }
            // A lease of this node's that it no longer serves is as good as
            // none: never redirect clients to this node.
            let address = seen
                .remove(&shard)
                .flatten()
                .filter(|address| *address != self.options.advertise);
            if self.owners.get(&shard) != Some(&address) {
                self.owners.insert(shard, address.clone());
                self.tell(ClusterEvent::Owner { shard, address });
            }
        }
    }

    /// Drops the shards whose renewal is overdue.
    fn expire(&mut self, now: Instant, margin: Duration) {
        let ttl = self.options.lease_ttl;
        let overdue: Vec<Shard> = self
            .held
            .iter()
            .filter(|(_, h)| h.renewed + ttl - margin <= now)
            .map(|(s, _)| *s)
            .collect();
        for shard in overdue {
            tracing::warn!(%shard, "lease renewal overdue: dropping the shard before it expires");
            self.drop_shard(shard);
        }
    }

    /// Stops serving `shard`: out of the fence (the store drops its
    /// commands), unsubscribed, its pending calls answered `NotOwner`, the
    /// core told; its lease is handed back in the next round.
    fn drop_shard(&mut self, shard: Shard) {
        let Some(held) = self.held.remove(&shard) else {
            return;
        };
        self.fence.release_epoch(shard, held.epoch);
        if let Some(subscription) = held.subscription {
            subscription.abort();
        }
        let orphans: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, (s, _))| *s == shard)
            .map(|(call, _)| *call)
            .collect();
        for call in orphans {
            self.answer(call, RemoteReply::NotOwner);
        }
        self.release.push((shard, held.epoch));
        self.tell(ClusterEvent::Lost(shard));
    }

    fn command(&mut self, command: ClusterCommand) {
        match command {
            ClusterCommand::Forward {
                request,
                shard,
                call,
            } => {
                let events = self.events.clone();
                let limit = self.options.forward_timeout;
                match self.nats.clone() {
                    Some(client) => {
                        tokio::spawn(async move {
                            let reply = nats::forward(&client, shard, &call, limit).await;
                            let _ =
                                events.unbounded_send(ClusterEvent::Forwarded { request, reply });
                        });
                    }
                    None => self.tell(ClusterEvent::Forwarded {
                        request,
                        reply: RemoteReply::Unreachable,
                    }),
                }
            }
            ClusterCommand::Reply { call, reply } => self.answer(call, reply),
            ClusterCommand::Fenced(shards) => {
                for shard in shards {
                    tracing::warn!(%shard, "the store fenced the shard: dropping it");
                    self.drop_shard(shard);
                }
            }
            // Handled by the loop.
            ClusterCommand::Shutdown => {}
            other => tracing::error!(?other, "unknown cluster command"),
        }
    }

    /// Sends `reply` to the node that made `call`.
    fn answer(&mut self, call: CallId, reply: RemoteReply) {
        if let Some((_, subject)) = self.calls.remove(&call) {
            self.publish(subject, reply);
        }
    }

    fn publish(&self, subject: async_nats::Subject, reply: RemoteReply) {
        if let Some(client) = self.nats.clone() {
            tokio::spawn(async move {
                if let Err(e) = client.publish(subject, reply.encode().into()).await {
                    tracing::debug!("reply not sent: {e}");
                }
            });
        }
    }

    /// A request of another node on a held shard's subject.
    fn incoming(&mut self, Incoming { shard, message }: Incoming) {
        let Some(reply_to) = message.reply else {
            tracing::debug!(%shard, "a request without a reply subject: ignored");
            return;
        };
        if !self.held.contains_key(&shard) {
            // Arrived just before the shard was dropped.
            self.publish(reply_to, RemoteReply::NotOwner);
            return;
        }
        let request = match RemoteCall::decode(&message.payload) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(%shard, "a call from another node not understood: {e}");
                return;
            }
        };
        let call = CallId(self.next_call);
        self.next_call += 1;
        self.calls.insert(call, (shard, reply_to));
        self.tell(ClusterEvent::Remote { call, request });
    }

    /// Stops: hands back every lease held (everything accepted is durable
    /// by now), unsubscribes, flushes NATS.
    async fn stop(mut self, leases: Option<Leases>) {
        let held: Vec<(Shard, Epoch)> = self.held.iter().map(|(s, h)| (*s, h.epoch)).collect();
        for (shard, _) in &held {
            self.drop_shard(*shard);
        }
        let release = std::mem::take(&mut self.release);
        let options = self.options.clone();
        let handed_back = tokio::time::timeout(RELEASE_TIMEOUT, async move {
            let mut leases = match leases {
                Some(leases) => leases,
                None => connect(&options).await.map_err(|e| e.to_string())?,
            };
            for (shard, epoch) in release {
                leases
                    .release(shard, epoch)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
        .await;
        match handed_back {
            Ok(Ok(())) => tracing::info!(shards = held.len(), "leases handed back"),
            Ok(Err(e)) => tracing::warn!("leases not handed back (they expire): {e}"),
            Err(_) => tracing::warn!("leases not handed back in time (they expire)"),
        }
        if let Some(client) = self.nats.take() {
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, client.flush()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::Acquired;

    /// A node as the loop has it, without NATS, and the engine's end of
    /// its reports.
    fn node() -> (Node, futures_channel::mpsc::UnboundedReceiver<ClusterEvent>) {
        let mut options =
            CoordinatorOptions::new("n1", "me:1", "postgres://unused", "nats://unused");
        options.shards = 4;
        let (events, reports) = futures_channel::mpsc::unbounded();
        let (incoming, _) = mpsc::unbounded_channel();
        let node = Node {
            options,
            fence: Fence::new(),
            events,
            held: BTreeMap::new(),
            owners: HashMap::new(),
            release: Vec::new(),
            nats: None,
            incoming,
            calls: HashMap::new(),
            next_call: 1,
        };
        (node, reports)
    }

    fn reports(
        rx: &mut futures_channel::mpsc::UnboundedReceiver<ClusterEvent>,
    ) -> Vec<ClusterEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn acquired(shard: u32, epoch: Epoch, sent: Instant) -> Acquired {
        Acquired {
            shard: Shard(shard),
            epoch,
            sent,
            state: Vec::new(),
        }
    }

    #[test]
    fn owners_are_told_once_and_this_node_never_as_another_shards_owner() {
        let (mut node, mut rx) = node();
        let owners = vec![
            (Shard(0), Some("other:1".to_owned())),
            // A lease of this node it no longer serves.
            (Shard(1), Some("me:1".to_owned())),
            (Shard(2), None),
        ];
        node.owners_seen(owners.clone());
        assert_eq!(
            reports(&mut rx),
            vec![
                ClusterEvent::Owner {
                    shard: Shard(0),
                    address: Some("other:1".into())
                },
                ClusterEvent::Owner {
                    shard: Shard(1),
                    address: None
                },
                ClusterEvent::Owner {
                    shard: Shard(2),
                    address: None
                },
                ClusterEvent::Owner {
                    shard: Shard(3),
                    address: None
                },
            ]
        );
        node.owners_seen(owners);
        assert!(reports(&mut rx).is_empty(), "nothing changed");
    }

    #[test]
    fn acquired_shards_are_fenced_renewed_and_dropped_when_overdue() {
        let (mut node, mut rx) = node();
        let start = Instant::now();
        node.apply(RoundReport {
            renewed: Some((start, Vec::new())),
            live_nodes: Some(1),
            acquired: vec![acquired(0, 5, start), acquired(1, 6, start)],
            owners: None,
            error: None,
        });
        assert_eq!(
            reports(&mut rx),
            vec![
                ClusterEvent::Acquired {
                    shard: Shard(0),
                    epoch: 5,
                    state: Vec::new()
                },
                ClusterEvent::Acquired {
                    shard: Shard(1),
                    epoch: 6,
                    state: Vec::new()
                },
            ]
        );
        assert_eq!(node.fence.held(), vec![(Shard(0), 5), (Shard(1), 6)]);
        assert_eq!(node.plan().renew, vec![(Shard(0), 5), (Shard(1), 6)]);
        // A later renewal keeps shard 0 only: shard 1 is lost at once.
        let later = start + Duration::from_secs(2);
        node.apply(RoundReport {
            renewed: Some((later, vec![Shard(0)])),
            ..RoundReport::default()
        });
        assert_eq!(reports(&mut rx), vec![ClusterEvent::Lost(Shard(1))]);
        assert_eq!(node.fence.held(), vec![(Shard(0), 5)]);
        // No renewal since: dropped before the lease can expire.
        let margin = renewal_margin(node.options.lease_ttl);
        let deadline = node.earliest_deadline(margin).unwrap();
        assert_eq!(deadline, later + node.options.lease_ttl - margin);
        node.expire(deadline - Duration::from_millis(1), margin);
        assert!(reports(&mut rx).is_empty(), "not yet");
        node.expire(deadline, margin);
        assert_eq!(reports(&mut rx), vec![ClusterEvent::Lost(Shard(0))]);
        assert!(node.fence.held().is_empty());
        // Both leases are handed back in the next round.
        assert_eq!(node.plan().release, vec![(Shard(1), 6), (Shard(0), 5)]);
    }

    #[test]
    fn a_node_above_its_fair_share_hands_shards_over() {
        let (mut node, mut rx) = node();
        let now = Instant::now();
        node.apply(RoundReport {
            live_nodes: Some(1),
            acquired: (0..4).map(|s| acquired(s, 1, now)).collect(),
            ..RoundReport::default()
        });
        let _ = reports(&mut rx);
        // Three nodes now: a fair share of 2, and 4 > 2 + 1.
        node.apply(RoundReport {
            live_nodes: Some(3),
            ..RoundReport::default()
        });
        assert_eq!(
            reports(&mut rx),
            vec![ClusterEvent::Lost(Shard(2)), ClusterEvent::Lost(Shard(3))]
        );
        assert_eq!(node.held.len(), 2);
    }
}
