//! Expiry (PROTOCOL.md §4.7): an item leaves its mailbox at its deadline,
//! `enqueued_at + message_ttl` on the server's wall clock, and is never
//! delivered from then on.
//!
//! [`ExpiryQueue`] holds every queued item's deadline, earliest first, so
//! that the server neither scans mailboxes on a tick nor sleeps longer than
//! the next deadline: [`Server::poll_timeout`] includes it, and every input
//! first expires what is due (so a delivery never races its timer).

use super::state::{MailItem, ServerState, UserId};
use super::{PersistCmd, Server};
use crate::types::{Seq, UnixMillis};
use crate::wire::Notice;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Stale entries tolerated before a rebuild, beyond one per queued item
/// and one per user.
const SLACK: usize = 64;

/// Deadlines of queued items: a min-heap of `(deadline, owner, seq)`, one
/// entry pushed per enqueued item (O(log n)), whatever order items arrive
/// in (a wall clock that went back before a restart included).
///
/// Acknowledging an item leaves its entry behind (lazy deletion): an entry
/// whose item is gone is stale. Stale entries are dropped when they come
/// due, or when they reach the top in an expiry pass
/// ([`Self::drop_stale_top`]); [`Self::compact`] rebuilds the heap once
/// stale entries outnumber queued items and users, so memory stays
/// proportional to what is held (amortized O(1) per removal). The message
/// path pays one push per item and nothing per acknowledgement.
#[derive(Debug, Default)]
pub(super) struct ExpiryQueue {
    heap: BinaryHeap<Reverse<(UnixMillis, UserId, Seq)>>,
    ttl_ms: UnixMillis,
}

impl ExpiryQueue {
    /// The deadlines of everything queued in `state` (O(n log n) once, at
    /// start).
    pub fn new(message_ttl: Duration, state: &ServerState) -> Self {
        let mut queue = Self {
            heap: BinaryHeap::new(),
            // Saturates: a TTL beyond 2^64 ms never runs out.
            ttl_ms: UnixMillis::try_from(message_ttl.as_millis()).unwrap_or(UnixMillis::MAX),
        };
        queue.rebuild(state);
        queue
    }

    /// When `item` expires: the wall-clock millisecond from which it is no
    /// longer delivered.
    pub fn deadline(&self, item: &MailItem) -> UnixMillis {
        item.enqueued_at().saturating_add(self.ttl_ms)
    }

    /// Schedules the expiry of `item`, just queued at `owner`'s `seq`.
    pub fn push(&mut self, owner: UserId, seq: Seq, item: &MailItem) {
        self.heap.push(Reverse((self.deadline(item), owner, seq)));
    }

    /// The earliest deadline: a queued item's, or earlier if the top entry
    /// went stale since the last expiry pass.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.heap.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// The next queued item whose deadline is at or before `wall`, taken
    /// off the queue (stale entries on the way are dropped).
    pub fn pop_due(&mut self, wall: UnixMillis, state: &ServerState) -> Option<(UserId, Seq)> {
        while let Some(Reverse((deadline, owner, seq))) = self.heap.peek().copied() {
            if deadline > wall {
                return None;
            }
            self.heap.pop();
            if is_queued(state, owner, seq) {
                return Some((owner, seq));
            }
        }
        None
    }

    /// Drops stale entries from the top, so that [`Self::next_deadline`]
    /// is a queued item's.
    pub fn drop_stale_top(&mut self, state: &ServerState) {
        while let Some(Reverse((_, owner, seq))) = self.heap.peek().copied() {
            if is_queued(state, owner, seq) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap if stale entries outnumber queued items and users.
    pub fn compact(&mut self, state: &ServerState) {
        if self.heap.len() > 2 * state.queued_items() + state.user_count() + SLACK {
            self.rebuild(state);
        }
    }

    /// One entry per item queued in `state` (O(users + n): a heapify).
    fn rebuild(&mut self, state: &ServerState) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(
            state
                .items_by_owner()
                .map(|(owner, seq, item)| Reverse((self.deadline(item), owner, seq))),
        );
        self.heap = BinaryHeap::from(entries);
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

/// Whether the item an entry was pushed for is still queued (sequence
/// numbers are never reused within a mailbox).
fn is_queued(state: &ServerState, owner: UserId, seq: Seq) -> bool {
    state.record(owner).mailbox.items.contains_key(&seq)
}

impl Server {
    /// The monotonic instant at which the earliest deadline falls, if any
    /// (none if it lies beyond what `Instant` represents).
    pub(super) fn next_expiry_at(&self) -> Option<Instant> {
        let deadline = self.expiry.next_deadline()?;
        // At `start + (deadline - start_unix) ms`, `wall()` reads `deadline`:
        // the item is due then, not a millisecond later.
        let after_start = deadline.saturating_sub(self.start_unix);
        self.start.checked_add(Duration::from_millis(after_start))
    }

    /// Expires every item whose deadline has passed at `now`, then resumes
    /// deliveries: every due item is gone before any delivery, so an
    /// expiry that frees a window slot never sends an item due in the same
    /// step. Afterwards the earliest deadline is a queued item's, later
    /// than `now`.
    pub(super) fn expire_due(&mut self, now: Instant) {
        // An `Instant` comparison, cheaper than reading the wall clock:
        // the earliest deadline is due exactly when `next_expiry_at() <= now`.
        if self.next_expiry_at().is_none_or(|at| at > now) {
            return;
        }
        let wall = self.wall(now);
        let mut owners: Vec<UserId> = Vec::new();
        while let Some((owner, seq)) = self.expiry.pop_due(wall, &self.state) {
            self.expire_item(now, owner, seq);
            owners.push(owner);
        }
        self.expiry.drop_stale_top(&self.state);
        owners.sort_unstable();
        owners.dedup();
        for owner in owners {
            self.pump(now, owner);
        }
    }

    /// Removes `owner`'s item at `seq` as expired: the sender of a message
    /// gets an `expired` notice, and a delivery of it in flight stops
    /// holding a window slot.
    pub(super) fn expire_item(&mut self, now: Instant, owner: UserId, seq: Seq) {
        let message = match self.state.record(owner).mailbox.items.get(&seq) {
            Some(MailItem::Message { from, id, .. }) => Some((self.state.id_of(from), *id)),
            Some(MailItem::Notice { .. }) => None,
            None => return,
        };
        let name = self.state.name(owner).clone();
        let from = message.and_then(|(from, _)| from);
        self.persist_resolved(
            PersistCmd::Expire {
                user: name.clone(),
                seq,
            },
            owner,
            from,
        );
        if let Some((Some(from), id)) = message {
            self.enqueue_notice(now, from, Notice::Expired { to: name, id });
        }
        if let Some((conn, _)) = self.session_of(owner)
            && let Some(session) = self.conns.get_mut(&conn).and_then(|c| c.session_mut())
        {
            session.in_flight.remove(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{MessageId, UserName};
    use proptest::prelude::*;

    const TTL_MS: u64 = 1_000;

    fn name(i: u8) -> UserName {
        UserName::new(format!("user{i}")).unwrap()
    }

    fn message(enqueued_at: UnixMillis) -> MailItem {
        MailItem::Message {
            from: name(0),
            id: MessageId([1; 16]),
            envelope: vec![7],
            enqueued_at,
        }
    }

    fn state_with_users(users: u8) -> ServerState {
        let mut state = ServerState::new();
        for i in 0..users {
            state.apply(&PersistCmd::RegisterUser {
                user: name(i),
                public_key: vec![i],
            });
        }
        state
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Enqueue to user (n % 3) an item enqueued at `at` ms.
        Enqueue(u8, u16),
        /// Remove (ack) the k-th queued item (modulo the count).
        Remove(u16),
        /// Expire everything due at `at` ms.
        Expire(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u16>()).prop_map(|(u, at)| Op::Enqueue(u, at)),
            3 => any::<u16>().prop_map(Op::Remove),
            1 => any::<u16>().prop_map(Op::Expire),
        ]
    }

    proptest! {
        /// Under any mix of enqueues (in any time order), removals and
        /// expiry passes, the queue expires exactly the items due, the
        /// earliest deadline is the earliest queued item's, and entries
        /// stay bounded by the items queued.
        #[test]
        fn expires_exactly_what_is_due(ops in proptest::collection::vec(op(), 0..300)) {
            let mut state = state_with_users(3);
            let mut queue = ExpiryQueue::new(Duration::from_millis(TTL_MS), &state);
            let mut next_seq = [0u64; 3];
            for op in ops {
                match op {
                    Op::Enqueue(u, at) => {
                        let owner = usize::from(u % 3);
                        let item = message(u64::from(at));
                        let seq = next_seq[owner];
                        next_seq[owner] += 1;
                        state.apply(&PersistCmd::Enqueue { user: name(owner as u8), seq, item: item.clone() });
                        let id = state.id_of(&name(owner as u8)).unwrap();
                        queue.push(id, seq, &item);
                    }
                    Op::Remove(k) => {
                        let queued: Vec<(UserId, Seq)> =
                            state.items_by_owner().map(|(o, s, _)| (o, s)).collect();
                        if !queued.is_empty() {
                            let (owner, seq) = queued[usize::from(k) % queued.len()];
                            let user = state.name(owner).clone();
                            state.apply(&PersistCmd::Ack { user, seq });
                        }
                    }
                    Op::Expire(at) => {
                        let wall = u64::from(at);
                        let mut expected: Vec<(UserId, Seq)> = state
                            .items_by_owner()
                            .filter(|(_, _, item)| item.enqueued_at() + TTL_MS <= wall)
                            .map(|(o, s, _)| (o, s))
                            .collect();
                        let mut got = Vec::new();
                        while let Some((owner, seq)) = queue.pop_due(wall, &state) {
                            let user = state.name(owner).clone();
                            state.apply(&PersistCmd::Expire { user, seq });
                            got.push((owner, seq));
                        }
                        expected.sort_unstable();
                        got.sort_unstable();
                        prop_assert_eq!(got, expected);
                    }
                }
                let earliest = state.items_by_owner().map(|(_, _, item)| item.enqueued_at() + TTL_MS).min();
                // Never later than the earliest queued item's deadline; equal
                // once stale entries are off the top.
                prop_assert!(earliest.is_none_or(|e| queue.next_deadline().is_some_and(|n| n <= e)));
                queue.drop_stale_top(&state);
                prop_assert_eq!(queue.next_deadline(), earliest);
                queue.compact(&state);
                prop_assert!(queue.len() <= 2 * state.queued_items() + state.user_count() + SLACK);
            }
        }
    }

    #[test]
    fn a_huge_ttl_saturates_instead_of_overflowing() {
        let state = state_with_users(1);
        let queue = ExpiryQueue::new(Duration::MAX, &state);
        assert_eq!(queue.deadline(&message(5)), UnixMillis::MAX);
    }
}
