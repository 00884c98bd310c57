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
use crate::time::Instant;
use crate::types::{Seq, UnixMillis};
use crate::wire::Notice;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Stale entries tolerated before a rebuild, beyond one per queued item
/// and one per user.
const SLACK: usize = 64;

/// Deadlines of queued items: a min-heap of `(deadline, owner, seq)`, one
/// entry pushed per enqueued item (O(log n)), whatever order items arrive
/// in (a wall clock that went back before a restart included). Deadlines
/// are held as monotonic instants, so that checking for due items and
/// answering `poll_timeout` cost a comparison, not a clock conversion.
///
/// Acknowledging an item leaves its entry behind (lazy deletion): an entry
/// whose item is gone is stale. Stale entries are dropped when they come
/// due, or when they reach the top in an expiry pass
/// ([`Self::drop_stale_top`]); [`Self::compact`] rebuilds the heap once
/// stale entries outnumber queued items and users, so memory stays
/// proportional to what is held (amortized O(1) per removal). The message
/// path pays one push per item and nothing per acknowledgement.
#[derive(Debug)]
pub(super) struct ExpiryQueue {
    heap: BinaryHeap<Reverse<(Instant, UserId, Seq)>>,
    ttl_ms: UnixMillis,
    /// The server's start on the monotonic clock and on the wall clock.
    start: Instant,
    start_unix: UnixMillis,
}

impl ExpiryQueue {
    /// The deadlines of everything queued in `state` (O(n) once, at start),
    /// for a server whose wall clock read `start_unix` at `start`.
    pub fn new(
        message_ttl: Duration,
        start: Instant,
        start_unix: UnixMillis,
        state: &ServerState,
    ) -> Self {
        let mut queue = Self {
            heap: BinaryHeap::new(),
            // Saturates: a TTL beyond 2^64 ms never runs out.
            ttl_ms: UnixMillis::try_from(message_ttl.as_millis()).unwrap_or(UnixMillis::MAX),
            start,
            start_unix,
        };
        queue.rebuild(state);
        queue
    }

    /// When `item` expires: the wall-clock millisecond from which it is no
    /// longer delivered.
    pub fn deadline(&self, item: &MailItem) -> UnixMillis {
        item.enqueued_at().saturating_add(self.ttl_ms)
    }

    /// The monotonic instant of `item`'s deadline: the first at which the
    /// server's wall clock reads it (`start` for a deadline before the
    /// start), or none if `Instant` cannot represent it (it never comes).
    fn deadline_at(&self, item: &MailItem) -> Option<Instant> {
        let after_start = self.deadline(item).saturating_sub(self.start_unix);
        self.start.checked_add(Duration::from_millis(after_start))
    }

    /// Schedules the expiry of `item`, just queued at `owner`'s `seq`.
    pub fn push(&mut self, owner: UserId, seq: Seq, item: &MailItem) {
        if let Some(at) = self.deadline_at(item) {
            self.heap.push(Reverse((at, owner, seq)));
        }
    }

    /// The earliest deadline: a queued item's, or earlier if the top entry
    /// went stale since the last expiry pass.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// The next queued item whose deadline is at or before `now`, taken
    /// off the queue (stale entries on the way are dropped).
    pub fn pop_due(&mut self, now: Instant, state: &ServerState) -> Option<(UserId, Seq)> {
        while let Some(Reverse((deadline, owner, seq))) = self.heap.peek().copied() {
            if deadline > now {
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
    /// A cluster node calls it when users were removed, before their ids
    /// can be reused.
    pub fn rebuild(&mut self, state: &ServerState) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(
            state.items_by_owner().filter_map(|(owner, seq, item)| {
                Some(Reverse((self.deadline_at(item)?, owner, seq)))
            }),
        );
        self.heap = BinaryHeap::from(entries);
    }

    /// Entries held, stale ones included.
    #[cfg(all(test, not(target_family = "wasm")))]
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
    /// Expires every item whose deadline has passed at `now`, then resumes
    /// deliveries: every due item is gone before any delivery, so an
    /// expiry that frees a window slot never sends an item due in the same
    /// step. Afterwards the earliest deadline is a queued item's, later
    /// than `now`.
    pub(super) fn expire_due(&mut self, now: Instant) {
        if self.expiry.next_deadline().is_none_or(|at| at > now) {
            return;
        }
        let mut owners: Vec<UserId> = Vec::new();
        while let Some((owner, seq)) = self.expiry.pop_due(now, &self.state) {
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
            Some(MailItem::Message { from, id, .. }) => Some((self.notice_to(from), *id)),
            Some(MailItem::Notice { .. }) => None,
            None => return,
        };
        self.event(super::ServerEvent::Expired {
            message: message.is_some(),
        });
        let name = self.state.name(owner).clone();
        let from = message.as_ref().and_then(|(from, _)| from.local());
        self.persist_resolved(
            PersistCmd::Expire {
                user: name.clone(),
                seq,
            },
            owner,
            from,
        );
        if let Some((from, id)) = message {
            self.notify_sender(now, from, Notice::Expired { to: name, id });
        }
        if let Some((conn, _)) = self.session_of(owner)
            && let Some(session) = self.conns.get_mut(&conn).and_then(|c| c.session_mut())
        {
            session.in_flight.remove(seq);
        }
    }
}

// Model-based (proptest): native only, not in the wasm run
// (scripts/test-wasm.sh).
#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;
    use crate::test_support::test;
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
            envelope: vec![7].into(),
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
            // The wall clock reads 0 at `start`: `start + n ms` is wall time n.
            let start = Instant::now();
            let at_wall = |ms: u64| start + Duration::from_millis(ms);
            let mut queue = ExpiryQueue::new(Duration::from_millis(TTL_MS), start, 0, &state);
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
                        while let Some((owner, seq)) = queue.pop_due(at_wall(wall), &state) {
                            let user = state.name(owner).clone();
                            state.apply(&PersistCmd::Expire { user, seq });
                            got.push((owner, seq));
                        }
                        expected.sort_unstable();
                        got.sort_unstable();
                        prop_assert_eq!(got, expected);
                    }
                }
                let earliest = state
                    .items_by_owner()
                    .map(|(_, _, item)| at_wall(item.enqueued_at() + TTL_MS))
                    .min();
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
        let start = Instant::now();
        let mut queue = ExpiryQueue::new(Duration::MAX, start, 5, &state);
        let item = message(5);
        assert_eq!(queue.deadline(&item), UnixMillis::MAX);
        queue.push(state.id_of(&name(0)).unwrap(), 0, &item);
        assert!(queue.next_deadline().is_some_and(|at| at > start));
    }

    /// A deadline falls on the first instant at which the server's wall
    /// clock (whole milliseconds since its start) reads it; one that passed
    /// before the start is due at the start.
    #[test]
    fn deadlines_map_to_the_first_instant_the_wall_clock_reads_them() {
        let mut state = state_with_users(1);
        let start = Instant::now();
        let start_unix = 1_000_000;
        let mut queue = ExpiryQueue::new(Duration::from_millis(TTL_MS), start, start_unix, &state);
        let owner = state.id_of(&name(0)).unwrap();
        for (seq, enqueued_at) in [(0, start_unix + 250), (1, start_unix - 5 * TTL_MS)] {
            let item = message(enqueued_at);
            state.apply(&PersistCmd::Enqueue {
                user: name(0),
                seq,
                item: item.clone(),
            });
            queue.push(owner, seq, &item);
        }
        assert_eq!(queue.next_deadline(), Some(start));
        assert_eq!(queue.pop_due(start, &state), Some((owner, 1)));
        let due = start + Duration::from_millis(250 + TTL_MS);
        assert_eq!(queue.next_deadline(), Some(due));
        let just_before = due - Duration::from_nanos(1);
        assert_eq!(
            crate::types::unix_at(start_unix, start, just_before),
            start_unix + 250 + TTL_MS - 1
        );
        assert_eq!(queue.pop_due(just_before, &state), None);
        assert_eq!(queue.pop_due(due, &state), Some((owner, 0)));
    }
}
