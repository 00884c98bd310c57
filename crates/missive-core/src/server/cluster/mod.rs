//! A server as one node of a cluster (docs/CLUSTER.md, PROTOCOL.md §2.7):
//! shards acquired and lost, redirects, forwards to other shards' owners
//! ([`forward`]) and calls from other nodes ([`remote`]).
//!
//! With `ServerConfig::cluster` unset none of this runs: the server owns
//! every user, as it always did.
//!
//! # Durability across a lost shard
//!
//! Every command the node emits is noted with its shard until it is
//! durable. When a shard is lost (`Input::ShardLost`, fed before any later
//! `Durable`), the store will never make its pending commands durable, so
//! everything held on one of them is dropped: a held `accepted` closes its
//! connection with `moved` (the client resends the same id to the new
//! owner, whose dedupe makes that exactly-once), a held reply to another
//! node is answered `not_owner` at once (the caller retries), deliveries
//! and events of the shard's users are forgotten.
//!
//! # Deduplication
//!
//! A single server remembers ids per sender. A node cannot: a sender's
//! messages land in shards that move independently. So a node remembers
//! the ids of messages queued in each shard it owns per (recipient shard,
//! sender name) — whether the sender is local or not — and rebuilds that
//! memory from the queued items when it acquires the shard; it forgets it
//! with the shard. The sender's own memory (`UserRuntime::recent`) then
//! holds only ids another node accepted (durable there), so a resend to a
//! busy owner is answered without a second forward.

mod forward;
mod remote;
#[cfg(test)]
mod tests;

use super::limits::{RecentIds, UsedId};
use super::state::{PersistCmd, UserId};
use super::{CloseReason, Held, Input, Server, ServerEvent};
use crate::cluster::{ClusterConfig, ForwardId, RemoteReply, Shard, shard_of};
use crate::types::{ConnId, Lsn, MessageId, PeerKeyHasher, PeerKeyMap, UserName};
use crate::wire::{ErrorCode, ServerPacket};

use crate::time::Instant;
use forward::{Forward, OutgoingSend};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

/// What a cluster node knows beyond a single server.
#[derive(Debug)]
pub(super) struct Node {
    config: ClusterConfig,
    /// Shards this node serves.
    owned: HashSet<Shard>,
    /// Advertised address of the owner of other shards, where known.
    owners: HashMap<Shard, String>,
    /// Per owned shard: ids of the messages queued there, per sender name.
    dedupe: HashMap<Shard, PeerKeyMap<UserName, RecentIds>>,
    /// The shard of every command emitted and not yet reported durable,
    /// in LSN order.
    backing: VecDeque<(Lsn, Shard)>,
    /// Forwards by id: in flight, or waiting for their retry time.
    forwards: HashMap<ForwardId, Forward>,
    next_forward: u64,
    /// Sends to other shards per (sender, recipient shard), oldest first:
    /// the front one is forwarded, the others wait (order per pair).
    lanes: HashMap<(UserId, Shard), VecDeque<OutgoingSend>>,
    /// When waiting forwards are tried again.
    retries: BinaryHeap<Reverse<(Instant, ForwardId)>>,
}

impl Node {
    pub(super) fn new(config: ClusterConfig) -> Self {
        Self {
            config,
            owned: HashSet::new(),
            owners: HashMap::new(),
            dedupe: HashMap::new(),
            backing: VecDeque::new(),
            forwards: HashMap::new(),
            next_forward: 0,
            lanes: HashMap::new(),
            retries: BinaryHeap::new(),
        }
    }

    pub(super) fn shard_of(&self, user: &UserName) -> Shard {
        shard_of(user, self.config.shards)
    }

    /// The next forward retry time.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.retries.peek().map(|Reverse((at, _))| *at)
    }

    /// The ids remembered for messages from `from` queued in `shard`.
    fn recent(&self, shard: Shard, from: &UserName) -> Option<&RecentIds> {
        self.dedupe.get(&shard)?.get(from)
    }

    fn remember(
        &mut self,
        hasher: &PeerKeyHasher,
        shard: Shard,
        from: &UserName,
        id: MessageId,
        used: UsedId,
        capacity: usize,
    ) {
        let senders = self
            .dedupe
            .entry(shard)
            .or_insert_with(|| PeerKeyMap::with_hasher(hasher.clone()));
        if !senders.contains_key(from) {
            senders.insert(from.clone(), RecentIds::new(hasher.clone()));
        }
        if let Some(recent) = senders.get_mut(from) {
            recent.insert(id, used, capacity);
        }
    }
}

/// The shard a command changes, if it is a user's.
fn shard_of_cmd(cmd: &PersistCmd, shards: u32) -> Option<Shard> {
    cmd.user().map(|user| shard_of(user, shards))
}

impl Server {
    pub(super) fn on_cluster_input(&mut self, now: Instant, input: Input<'_>) {
        if self.cluster.is_none() {
            return;
        }
        match input {
            Input::ShardAcquired { shard, state } => self.on_shard_acquired(now, shard, state),
            Input::ShardLost(shard) => self.on_shard_lost(now, shard),
            Input::OwnerChanged { shard, address } => {
                if let Some(node) = self.cluster.as_mut() {
                    match address {
                        Some(address) => node.owners.insert(shard, address.to_owned()),
                        None => node.owners.remove(&shard),
                    };
                }
            }
            Input::Forwarded { request, reply } => self.on_forwarded(now, request, reply),
            Input::Remote { call, request } => self.on_remote(now, call, request),
            _ => {}
        }
    }

    /// The shard of `user` if this is a cluster node that does not own it.
    pub(super) fn foreign_shard(&self, user: &UserName) -> Option<Shard> {
        let node = self.cluster.as_ref()?;
        let shard = node.shard_of(user);
        (!node.owned.contains(&shard)).then_some(shard)
    }

    /// Notes the shard of a command just emitted (cluster only).
    pub(super) fn note_backing(&mut self, lsn: Lsn, cmd: &PersistCmd) {
        if let Some(node) = self.cluster.as_mut()
            && let Some(shard) = shard_of_cmd(cmd, node.config.shards)
        {
            node.backing.push_back((lsn, shard));
        }
    }

    /// Forgets the shards of commands now durable.
    pub(super) fn forget_backing(&mut self, durable: Lsn) {
        if let Some(node) = self.cluster.as_mut() {
            while node.backing.front().is_some_and(|(lsn, _)| *lsn <= durable) {
                node.backing.pop_front();
            }
        }
    }

    /// Cluster: `register`/`login`/`prove` naming a user this node does not
    /// serve. The client is redirected to the owner, or told `unavailable`
    /// when no owner is known; either way the connection closes (the
    /// handshake cannot go on here). Whether it was refused.
    pub(super) fn refuse_unowned(&mut self, now: Instant, conn: ConnId, user: &UserName) -> bool {
        let Some(shard) = self.foreign_shard(user) else {
            return false;
        };
        let owner = self
            .cluster
            .as_ref()
            .and_then(|node| node.owners.get(&shard).cloned());
        match owner {
            Some(address) => {
                self.send(conn, &ServerPacket::Redirect { address });
                self.close(now, conn, CloseReason::Redirected);
            }
            None => {
                self.send_error(
                    conn,
                    ErrorCode::Unavailable,
                    None,
                    Some(user.clone()),
                    "no node serves this user right now; retry later",
                );
                self.close(now, conn, CloseReason::Error(ErrorCode::Unavailable));
            }
        }
        true
    }

    /// The id `from` used for a message to `to`, if remembered: for a
    /// single server in the sender's memory; for a cluster node among the
    /// ids another node accepted, then among those queued in `to`'s shard.
    pub(super) fn used_id(
        &mut self,
        now: Instant,
        from: (&UserName, UserId),
        to: &UserName,
        id: &MessageId,
    ) -> Option<UsedId> {
        if let Some(used) = self.runtime(from.1, now).recent.get(id) {
            return Some(used);
        }
        let node = self.cluster.as_ref()?;
        node.recent(node.shard_of(to), from.0)?.get(id)
    }

    /// Where a cluster node remembers the ids of messages from `from` to
    /// `to`: `to`'s shard and the sender's name (`None` on a single
    /// server, which remembers them with the sender).
    pub(super) fn dedupe_key(&self, from: &UserName, to: &UserName) -> Option<(Shard, UserName)> {
        let node = self.cluster.as_ref()?;
        Some((node.shard_of(to), from.clone()))
    }

    /// Remembers that a sender used `id` for a message queued by the
    /// command at `used.lsn`: under `key` on a cluster node
    /// ([`Self::dedupe_key`]), else with the sender `from_id`.
    pub(super) fn remember_id(
        &mut self,
        now: Instant,
        from_id: Option<UserId>,
        key: Option<(Shard, UserName)>,
        id: MessageId,
        used: UsedId,
    ) {
        let capacity = self.config.dedupe_per_sender;
        match (key, self.cluster.as_mut()) {
            (Some((shard, from)), Some(node)) => {
                node.remember(&self.hasher, shard, &from, id, used, capacity);
            }
            _ => {
                if let Some(from_id) = from_id {
                    self.runtime(from_id, now).recent.insert(id, used, capacity);
                }
            }
        }
    }

    fn on_shard_acquired(&mut self, now: Instant, shard: Shard, cmds: &[PersistCmd]) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        if !node.owned.insert(shard) {
            return;
        }
        let shards = node.config.shards;
        let mut names = Vec::new();
        for cmd in cmds {
            if shard_of_cmd(cmd, shards) != Some(shard) {
                continue;
            }
            if let PersistCmd::RegisterUser { user, .. } = cmd {
                names.push(user.clone());
            }
            self.state.apply(cmd);
        }
        // Fresh volatile state for the shard's users, as at start: all that
        // is queued is durable; deadlines and ids are remembered.
        let mut items = 0;
        for user in &names {
            let Some(id) = self.state.id_of(user) else {
                continue;
            };
            let mut runtime = self.new_runtime(now);
            let mailbox = &self.state.record(id).mailbox;
            runtime.deliverable_end = mailbox.next_seq;
            for (seq, item) in mailbox.items.iter() {
                items += 1;
                self.expiry.push(id, *seq, item);
            }
            *self.runtime(id, now) = runtime;
        }
        let records = names
            .iter()
            .filter_map(|user| Some((user, self.state.user(user)?)));
        let capacity = self.config.dedupe_per_sender;
        if let Some(node) = self.cluster.as_mut() {
            for (from, id, used) in super::queued_ids(&self.hasher, records) {
                node.remember(&self.hasher, shard, from, id, used, capacity);
            }
        }
        self.event(ServerEvent::ShardAcquired {
            shard,
            users: names.len(),
            items,
        });
    }

    /// See the [module docs](self): the shard's sessions close with
    /// `moved`, what its pending commands back is dropped, its users leave
    /// the state.
    fn on_shard_lost(&mut self, now: Instant, shard: Shard) {
        let Some(node) = self.cluster.as_mut() else {
            return;
        };
        if !node.owned.remove(&shard) {
            return;
        }
        let lost: HashSet<Lsn> = node
            .backing
            .iter()
            .filter(|(_, s)| *s == shard)
            .map(|(lsn, _)| *lsn)
            .collect();
        node.backing.retain(|(_, s)| *s != shard);
        node.dedupe.remove(&shard);
        let shards = node.config.shards;
        let in_shard = |user: &UserName| shard_of(user, shards) == shard;
        let users: Vec<(UserName, UserId)> = self
            .state
            .users()
            .filter(|(name, _)| in_shard(name))
            .filter_map(|(name, _)| Some((name.clone(), self.state.id_of(name)?)))
            .collect();
        let ids: HashSet<UserId> = users.iter().map(|(_, id)| *id).collect();
        // Connections to close: the shard's sessions, and every one waiting
        // for a reply that a command of the shard backs.
        let mut moved: Vec<ConnId> = ids
            .iter()
            .filter_map(|id| self.users.get(id.index())?.session)
            .collect();
        let mut refused_calls = Vec::new();
        let held = std::mem::take(&mut self.held);
        for (lsn, item) in held {
            let keep = match &item {
                Held::Reply { conn, packet } => {
                    let backed = lost.contains(&lsn)
                        || matches!(packet, ServerPacket::Registered { user } if in_shard(user));
                    if backed {
                        moved.push(*conn);
                    }
                    !backed
                }
                Held::Deliverable { user, .. } => !ids.contains(user),
                Held::Event(ServerEvent::UserRegistered { user }) => !in_shard(user),
                Held::Event(_) => true,
                Held::RemoteReply { call, .. } => {
                    let backed = lost.contains(&lsn);
                    if backed {
                        refused_calls.push(*call);
                    }
                    !backed
                }
            };
            if keep {
                self.held.push_back((lsn, item));
            }
        }
        for call in refused_calls {
            self.reply(call, RemoteReply::NotOwner);
        }
        moved.sort_unstable();
        moved.dedup();
        let sessions_closed = moved.len();
        for conn in moved {
            self.fatal(
                now,
                conn,
                ErrorCode::Moved,
                "this node no longer serves this user; reconnect",
            );
        }
        self.drop_forwards_of(&ids, shard);
        // Their ids may be reused: their volatile state starts afresh.
        for (name, id) in &users {
            self.state.remove_user(name);
            let fresh = self.new_runtime(now);
            if let Some(runtime) = self.users.get_mut(id.index()) {
                *runtime = fresh;
            }
        }
        // Entries of removed users must go before their ids are reused.
        self.expiry.rebuild(&self.state);
        self.event(ServerEvent::ShardLost {
            shard,
            users: users.len(),
            sessions_closed,
        });
    }
}
