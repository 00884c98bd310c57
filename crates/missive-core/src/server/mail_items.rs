//! [`MailItems`]: one mailbox's items in sequence order.
//!
//! Items arrive with increasing sequence numbers and usually leave from the
//! front (acknowledged or expired in order), so they live in a ring buffer
//! sorted by sequence number instead of a B-tree: appending, finding the
//! front and scanning a range are array operations, and a lookup is a
//! binary search. An item removed from the middle leaves a hole that is
//! skipped, popped once it reaches either end, and compacted away when
//! holes outnumber items, so memory stays proportional to the items held.

use super::state::MailItem;
use crate::types::Seq;
use std::collections::VecDeque;
use std::fmt;

/// Holes tolerated before compaction, beyond one per live item.
const SLACK: usize = 16;

/// A mailbox's items by sequence number (see the module docs).
#[derive(Clone, Default)]
pub struct MailItems {
    /// Sorted by seq; `None` is a removed item's hole.
    slots: VecDeque<(Seq, Option<MailItem>)>,
    /// Items (not holes).
    len: usize,
}

impl MailItems {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at `seq`.
    pub fn get(&self, seq: &Seq) -> Option<&MailItem> {
        let i = self.position(*seq).ok()?;
        self.slots[i].1.as_ref()
    }

    /// Whether there is an item at `seq`.
    pub fn contains_key(&self, seq: &Seq) -> bool {
        self.get(seq).is_some()
    }

    /// The item with the lowest seq.
    pub fn first_key_value(&self) -> Option<(&Seq, &MailItem)> {
        self.iter().next()
    }

    /// The item with the highest seq.
    pub fn last_key_value(&self) -> Option<(&Seq, &MailItem)> {
        self.iter().next_back()
    }

    /// Items in seq order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.slots.iter())
    }

    /// Sequence numbers in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Seq> {
        self.iter().map(|(seq, _)| seq)
    }

    /// Items in seq order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &MailItem> {
        self.iter().map(|(_, item)| item)
    }

    /// Items with `range.start <= seq < range.end`, in order.
    pub fn range(&self, range: std::ops::Range<Seq>) -> impl Iterator<Item = (&Seq, &MailItem)> {
        let start = self.position(range.start).unwrap_or_else(|i| i);
        self.slots
            .range(start..)
            .take_while(move |(seq, _)| *seq < range.end)
            .filter_map(live)
    }

    /// Puts `item` at `seq`, replacing (and returning) any item there.
    pub fn insert(&mut self, seq: Seq, item: MailItem) -> Option<MailItem> {
        if self.slots.back().is_none_or(|(last, _)| *last < seq) {
            self.slots.push_back((seq, Some(item)));
            self.len += 1;
            return None;
        }
        match self.position(seq) {
            Ok(i) => {
                let old = self.slots[i].1.replace(item);
                if old.is_none() {
                    self.len += 1;
                }
                old
            }
            Err(i) => {
                self.slots.insert(i, (seq, Some(item)));
                self.len += 1;
                None
            }
        }
    }

    /// Takes the item at `seq` out.
    pub fn remove(&mut self, seq: &Seq) -> Option<MailItem> {
        let i = self.position(*seq).ok()?;
        let item = self.slots[i].1.take()?;
        self.len -= 1;
        while self.slots.front().is_some_and(|(_, item)| item.is_none()) {
            self.slots.pop_front();
        }
        while self.slots.back().is_some_and(|(_, item)| item.is_none()) {
            self.slots.pop_back();
        }
        if self.slots.len() > 2 * self.len + SLACK {
            self.slots.retain(|(_, item)| item.is_some());
        }
        Some(item)
    }

    /// Index of `seq` in `slots` (`Err`: where it would go).
    fn position(&self, seq: Seq) -> Result<usize, usize> {
        // Fast path: acknowledgements and expiry mostly hit the front.
        match self.slots.front() {
            Some((first, _)) if *first == seq => Ok(0),
            _ => self.slots.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }
}

impl PartialEq for MailItems {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for MailItems {}

impl fmt::Debug for MailItems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A slot's item, unless it is a hole.
fn live((seq, item): &(Seq, Option<MailItem>)) -> Option<(&Seq, &MailItem)> {
    Some((seq, item.as_ref()?))
}

/// Iterator over a mailbox's items in seq order ([`MailItems::iter`]).
#[derive(Debug, Clone)]
pub struct Iter<'a>(std::collections::vec_deque::Iter<'a, (Seq, Option<MailItem>)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Seq, &'a MailItem);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.by_ref().find_map(live)
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.by_ref().rev().find_map(live)
    }
}

impl<'a> IntoIterator for &'a MailItems {
    type Item = (&'a Seq, &'a MailItem);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
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
    use std::collections::BTreeMap;

    fn item(n: u64) -> MailItem {
        MailItem::Message {
            from: UserName::new("alice").unwrap(),
            id: MessageId([n as u8; 16]),
            envelope: vec![n as u8].into(),
            enqueued_at: n,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u8>().prop_map(Op::Insert),
            2 => any::<u8>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Behaves exactly like a `BTreeMap<Seq, MailItem>` under any mix
        /// of inserts (in and out of order) and removals, and its holes stay
        /// bounded by the items it holds.
        #[test]
        fn matches_a_btree_map(ops in proptest::collection::vec(op(), 0..300)) {
            let mut model: BTreeMap<Seq, MailItem> = BTreeMap::new();
            let mut items = MailItems::default();
            for op in ops {
                match op {
                    Op::Insert(s) => {
                        let seq = Seq::from(s);
                        prop_assert_eq!(items.insert(seq, item(seq)), model.insert(seq, item(seq)));
                    }
                    Op::Remove(s) => {
                        let seq = Seq::from(s);
                        prop_assert_eq!(items.remove(&seq), model.remove(&seq));
                    }
                }
                prop_assert_eq!(items.len(), model.len());
                prop_assert_eq!(items.is_empty(), model.is_empty());
                prop_assert!(items.iter().eq(model.iter()));
                prop_assert_eq!(items.first_key_value(), model.first_key_value());
                prop_assert_eq!(items.last_key_value(), model.last_key_value());
                for probe in [0u64, 7, 100, 255] {
                    prop_assert_eq!(items.get(&probe), model.get(&probe));
                    prop_assert!(items.range(probe..probe + 50).eq(model.range(probe..probe + 50)));
                }
                prop_assert!(items.slots.len() <= 2 * items.len() + SLACK + 1);
            }
        }
    }

    /// One item stuck at the front while thousands pass behind it: memory
    /// stays bounded by the items held, not by the traffic.
    #[test]
    fn a_stuck_front_item_does_not_grow_memory() {
        let mut items = MailItems::default();
        items.insert(0, item(0));
        for seq in 1..10_000 {
            items.insert(seq, item(seq));
            assert!(items.remove(&seq).is_some());
        }
        assert_eq!(items.len(), 1);
        assert!(items.slots.len() <= 2 + SLACK);
    }
}
