//! The server's durable state and the persistence commands that change it.
//!
//! [`ServerState::apply`] is the single place durable state changes: the
//! server applies every command it emits, and a driver rebuilds the state at
//! start-up by applying what its store holds. Replaying the emitted commands
//! in order rebuilds an equal state (a test checks it).

pub use super::mail_items::{Iter as MailItemsIter, MailItems};
use crate::SharedBytes;
use crate::types::{MessageId, PeerKeyHasher, PeerKeyMap, Seq, UnixMillis, UserName};
use crate::wire::Notice;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One durable change. Stores persist these (or their effect) and report the
/// highest durable [`crate::Lsn`] back with `Input::Durable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PersistCmd {
    /// The server's stable id, chosen on first start.
    SetServerId {
        /// The id announced in Welcome and signed in every transcript.
        #[serde(with = "serde_bytes")]
        server_id: [u8; 16],
    },
    /// A user name was registered with a key (permanent).
    RegisterUser {
        /// The name.
        user: UserName,
        /// SPKI DER of the user's RSA key.
        #[serde(with = "serde_bytes")]
        public_key: Vec<u8>,
    },
    /// An item was appended to `user`'s mailbox at `seq`.
    Enqueue {
        /// Mailbox owner.
        user: UserName,
        /// Position in the mailbox.
        seq: Seq,
        /// The message or notice.
        item: MailItem,
    },
    /// `user` acknowledged the item at `seq`; it is removed.
    Ack {
        /// Mailbox owner.
        user: UserName,
        /// Position in the mailbox.
        seq: Seq,
    },
    /// The item at `seq` outlived the TTL and is removed.
    Expire {
        /// Mailbox owner.
        user: UserName,
        /// Position in the mailbox.
        seq: Seq,
    },
    /// `user`'s next mailbox sequence number is at least `next_seq`. The
    /// server never emits it; [`ServerState::snapshot`] does, and stores use
    /// it when rebuilding a mailbox whose last items were removed, so that
    /// sequence numbers never go back.
    SetNextSeq {
        /// Mailbox owner.
        user: UserName,
        /// Lower bound of the next sequence number.
        next_seq: Seq,
    },
    /// An operator removed `user` (`missive-server admin remove-user`):
    /// the name, its key and its mailbox are gone, and the name may be
    /// registered again. Messages the user sent that sit in other
    /// mailboxes stay queued there.
    RemoveUser {
        /// The removed user.
        user: UserName,
    },
}

/// An item in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailItem {
    /// A sealed message.
    Message {
        /// Authenticated sender.
        from: UserName,
        /// Sender-chosen id.
        id: MessageId,
        /// The sealed envelope (opaque), shared with the `Send` it came in
        /// and the `PersistCmd::Enqueue` that stores it.
        envelope: SharedBytes,
        /// Server wall clock when accepted.
        enqueued_at: UnixMillis,
    },
    /// A notice about a message the mailbox owner sent.
    Notice {
        /// What happened.
        notice: Notice,
        /// Server wall clock when queued.
        enqueued_at: UnixMillis,
    },
}

impl PersistCmd {
    /// The user whose record the command changes (`None` for the server's
    /// own id). On a cluster node it decides the command's shard.
    pub fn user(&self) -> Option<&UserName> {
        match self {
            PersistCmd::RegisterUser { user, .. }
            | PersistCmd::Enqueue { user, .. }
            | PersistCmd::Ack { user, .. }
            | PersistCmd::Expire { user, .. }
            | PersistCmd::SetNextSeq { user, .. }
            | PersistCmd::RemoveUser { user } => Some(user),
            PersistCmd::SetServerId { .. } => None,
        }
    }
}

impl MailItem {
    /// When the item was queued.
    pub fn enqueued_at(&self) -> UnixMillis {
        match self {
            MailItem::Message { enqueued_at, .. } | MailItem::Notice { enqueued_at, .. } => {
                *enqueued_at
            }
        }
    }
}

/// A registered user: key and mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserRecord {
    /// SPKI DER of the user's key.
    pub public_key: Vec<u8>,
    /// Waiting items, by sequence number.
    pub mailbox: Mailbox,
    /// Messages this user sent that are still queued anywhere, plus notices
    /// queued for this user (bounded by `max_outstanding_per_sender`).
    pub outstanding: u32,
}

/// One user's queue of messages and notices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mailbox {
    /// Items by sequence number (delivery order).
    pub items: MailItems,
    /// Next sequence number to assign.
    pub next_seq: Seq,
    /// Messages (not notices) queued.
    pub message_count: u32,
    /// Envelope bytes queued.
    pub message_bytes: u64,
    /// Per sender: messages and bytes queued here.
    pub per_sender: PeerKeyMap<UserName, SenderUsage>,
}

/// What one sender holds of one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderUsage {
    /// Messages.
    pub messages: u32,
    /// Envelope bytes.
    pub bytes: u64,
}

/// The server's durable state: server id, users with keys, mailboxes.
///
/// Equality means "same durable content": the same server id and the same
/// users with equal records, whatever order they were registered or
/// rebuilt in.
#[derive(Debug, Clone, Default)]
pub struct ServerState {
    server_id: Option<[u8; 16]>,
    /// Name → position in `users`.
    index: PeerKeyMap<UserName, UserId>,
    /// Registered users in registration order. Users are removed by an
    /// operator ([`PersistCmd::RemoveUser`]) and, on a cluster node, with
    /// a shard it loses ([`Self::remove_user`]): their slots fall vacant (`None`) and are
    /// reused by later registrations (`vacant`), so ids stay dense and
    /// every lookup stays one index; the server forgets every reference to
    /// a removed id before it can be reused.
    users: Vec<Option<Slot>>,
    /// Vacant slots, reused first.
    vacant: Vec<UserId>,
    /// Items queued in all mailboxes.
    queued: usize,
    /// Names removed by [`PersistCmd::RemoveUser`] since this state was
    /// built: messages they sent may still be queued elsewhere, and count
    /// as the outstanding messages of whoever registers the name again
    /// (as they do in a state rebuilt from a store).
    removed: BTreeSet<UserName>,
    /// Envelope bytes of the messages queued in all mailboxes.
    queued_bytes: u64,
    /// The hasher of `index` and of every mailbox's `per_sender` map.
    hasher: PeerKeyHasher,
}

/// Dense number of a registered user inside one [`ServerState`] (its
/// registration order). Internal: never persisted or shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct UserId(u32);

impl UserId {
    #[inline]
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// The slot of a registered user (a borrow of the slots only, so the
/// state's other fields stay usable).
#[inline]
fn occupied(users: &mut [Option<Slot>], id: UserId) -> &mut Slot {
    users[id.index()]
        .as_mut()
        .expect("a user id names a registered user")
}

/// One registered user.
#[derive(Debug, Clone)]
struct Slot {
    name: UserName,
    record: UserRecord,
}

impl PartialEq for ServerState {
    fn eq(&self, other: &Self) -> bool {
        self.server_id == other.server_id
            && self.user_count() == other.user_count()
            && self
                .users
                .iter()
                .flatten()
                .all(|slot| other.user(&slot.name) == Some(&slot.record))
    }
}

impl Eq for ServerState {}

impl ServerState {
    /// An empty state (first start).
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a state from commands, in order.
    ///
    /// ```
    /// use missive_core::server::{PersistCmd, ServerState};
    /// let state = ServerState::replay(&[PersistCmd::SetServerId { server_id: [1; 16] }]);
    /// assert_eq!(state.server_id(), Some([1; 16]));
    /// ```
    pub fn replay<'a>(cmds: impl IntoIterator<Item = &'a PersistCmd>) -> Self {
        let mut state = Self::new();
        for cmd in cmds {
            state.apply(cmd);
        }
        state
    }

    /// Applies one command. Commands are idempotent where that is natural
    /// (registering the same user twice, removing an absent item), so a store
    /// may replay a command it is unsure it applied.
    pub fn apply(&mut self, cmd: &PersistCmd) {
        match cmd {
            PersistCmd::SetServerId { server_id } => self.server_id = Some(*server_id),
            PersistCmd::RegisterUser { user, public_key } => {
                self.register(user, public_key);
            }
            PersistCmd::Enqueue { user, seq, item } => {
                if let Some(id) = self.id_of(user) {
                    self.enqueue(id, *seq, item, None);
                }
            }
            PersistCmd::Ack { user, seq } | PersistCmd::Expire { user, seq } => {
                if let Some(id) = self.id_of(user) {
                    self.remove(id, *seq, None);
                }
            }
            PersistCmd::SetNextSeq { user, next_seq } => {
                if let Some(id) = self.id_of(user) {
                    let mailbox = &mut self.slot_mut(id).record.mailbox;
                    mailbox.next_seq = mailbox.next_seq.max(*next_seq);
                }
            }
            PersistCmd::RemoveUser { user } => {
                if self.remove_user(user).is_some() {
                    self.removed.insert(user.clone());
                }
            }
        }
    }

    /// Registers `user` unless the name is taken; returns its id either way.
    fn register(&mut self, user: &UserName, public_key: &[u8]) -> UserId {
        if let Some(id) = self.id_of(user) {
            return id;
        }
        let slot = Slot {
            name: user.clone(),
            record: UserRecord {
                public_key: public_key.to_vec(),
                mailbox: Mailbox {
                    per_sender: PeerKeyMap::with_hasher(self.hasher.clone()),
                    ..Mailbox::default()
                },
                ..UserRecord::default()
            },
        };
        let id = match self.vacant.pop() {
            Some(id) => {
                self.users[id.index()] = Some(slot);
                id
            }
            None => {
                let id = UserId(u32::try_from(self.users.len()).expect("fewer than 2^32 users"));
                self.users.push(Some(slot));
                id
            }
        };
        self.index.insert(user.clone(), id);
        if self.removed.remove(user) {
            let sent: u32 = self
                .users
                .iter()
                .flatten()
                .filter_map(|slot| slot.record.mailbox.per_sender.get(user))
                .map(|usage| usage.messages)
                .sum();
            self.slot_mut(id).record.outstanding = sent;
        }
        id
    }

    /// Removes `user` with its mailbox: an operator removed it
    /// ([`PersistCmd::RemoveUser`]) or, on a cluster node, its shard moved
    /// to another node. Its id falls vacant and may be reused by a later
    /// registration. Senders still registered here stop counting the
    /// removed mailbox's messages as outstanding; messages the removed user
    /// sent stay queued in the other mailboxes. Returns the id it had.
    pub(crate) fn remove_user(&mut self, user: &UserName) -> Option<UserId> {
        let id = self.index.remove(user)?;
        let slot = self.users[id.index()].take()?;
        self.vacant.push(id);
        self.queued -= slot.record.mailbox.items.len();
        self.queued_bytes -= slot.record.mailbox.message_bytes;
        for item in slot.record.mailbox.items.values() {
            if let MailItem::Message { from, .. } = item
                && let Some(sender) = self.id_of(from)
            {
                let sender = &mut self.slot_mut(sender).record;
                sender.outstanding = sender.outstanding.saturating_sub(1);
            }
        }
        Some(id)
    }

    #[inline]
    fn slot(&self, id: UserId) -> &Slot {
        self.users[id.index()]
            .as_ref()
            .expect("a user id names a registered user")
    }

    #[inline]
    fn slot_mut(&mut self, id: UserId) -> &mut Slot {
        occupied(&mut self.users, id)
    }

    /// [`Self::apply`] for a mailbox command whose owner is `user` and whose
    /// message (if any) is from `from`: the server knows both, and this
    /// saves looking them up by name.
    pub(crate) fn apply_resolved(&mut self, cmd: &PersistCmd, user: UserId, from: Option<UserId>) {
        match cmd {
            PersistCmd::Enqueue {
                user: name,
                seq,
                item,
            } => {
                debug_assert_eq!(self.id_of(name), Some(user));
                self.enqueue(user, *seq, item, from);
            }
            PersistCmd::Ack { user: name, seq } | PersistCmd::Expire { user: name, seq } => {
                debug_assert_eq!(self.id_of(name), Some(user));
                self.remove(user, *seq, from);
            }
            _ => self.apply(cmd),
        }
    }

    /// The id of a message's sender: `hint` if given (checked in debug
    /// builds), else looked up.
    #[inline]
    fn sender_id(&self, from: &UserName, hint: Option<UserId>) -> Option<UserId> {
        match hint {
            Some(id) => {
                debug_assert_eq!(self.id_of(from), Some(id));
                Some(id)
            }
            None => self.id_of(from),
        }
    }

    fn enqueue(&mut self, id: UserId, seq: Seq, item: &MailItem, from_hint: Option<UserId>) {
        let slot = occupied(&mut self.users, id);
        let mailbox = &mut slot.record.mailbox;
        if mailbox.items.contains_key(&seq) {
            return;
        }
        mailbox.next_seq = mailbox.next_seq.max(seq + 1);
        mailbox.items.insert(seq, item.clone());
        self.queued += 1;
        match item {
            MailItem::Message { from, envelope, .. } => {
                mailbox.message_count += 1;
                mailbox.message_bytes += envelope.len() as u64;
                self.queued_bytes += envelope.len() as u64;
                let len = envelope.len() as u64;
                match mailbox.per_sender.get_mut(from) {
                    Some(usage) => {
                        usage.messages += 1;
                        usage.bytes += len;
                    }
                    None => {
                        mailbox.per_sender.insert(
                            from.clone(),
                            SenderUsage {
                                messages: 1,
                                bytes: len,
                            },
                        );
                    }
                }
                if let Some(sender) = self.sender_id(from, from_hint) {
                    self.slot_mut(sender).record.outstanding += 1;
                }
            }
            MailItem::Notice { .. } => slot.record.outstanding += 1,
        }
    }

    fn remove(&mut self, id: UserId, seq: Seq, from_hint: Option<UserId>) -> Option<MailItem> {
        let record = &mut occupied(&mut self.users, id).record;
        let mailbox = &mut record.mailbox;
        let item = mailbox.items.remove(&seq)?;
        self.queued -= 1;
        match &item {
            MailItem::Message { from, envelope, .. } => {
                mailbox.message_count -= 1;
                mailbox.message_bytes -= envelope.len() as u64;
                self.queued_bytes -= envelope.len() as u64;
                if let Some(usage) = mailbox.per_sender.get_mut(from) {
                    usage.messages -= 1;
                    usage.bytes -= envelope.len() as u64;
                    if usage.messages == 0 {
                        mailbox.per_sender.remove(from);
                    }
                }
                if let Some(sender) = self.sender_id(from, from_hint) {
                    let sender = &mut self.slot_mut(sender).record;
                    sender.outstanding = sender.outstanding.saturating_sub(1);
                }
            }
            MailItem::Notice { .. } => record.outstanding = record.outstanding.saturating_sub(1),
        }
        Some(item)
    }

    /// The stable server id, once chosen.
    pub fn server_id(&self) -> Option<[u8; 16]> {
        self.server_id
    }

    /// A registered user.
    pub fn user(&self, name: &UserName) -> Option<&UserRecord> {
        self.id_of(name).map(|id| self.record(id))
    }

    /// All registered users (in registration order).
    pub fn users(&self) -> impl Iterator<Item = (&UserName, &UserRecord)> {
        self.users
            .iter()
            .flatten()
            .map(|slot| (&slot.name, &slot.record))
    }

    /// Number of registered users.
    pub fn user_count(&self) -> usize {
        self.users.len() - self.vacant.len()
    }

    /// Items queued in all mailboxes.
    pub fn queued_items(&self) -> usize {
        self.queued
    }

    /// Envelope bytes of the messages queued in all mailboxes.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// The commands that rebuild this state from nothing (a snapshot): server
    /// id, users, every queued item, then each mailbox's next sequence
    /// number. Stores use it to compact their log.
    pub fn snapshot(&self) -> Vec<PersistCmd> {
        let mut out = Vec::new();
        if let Some(server_id) = self.server_id {
            out.push(PersistCmd::SetServerId { server_id });
        }
        let mut slots: Vec<&Slot> = self.users.iter().flatten().collect();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        for slot in &slots {
            out.push(PersistCmd::RegisterUser {
                user: slot.name.clone(),
                public_key: slot.record.public_key.clone(),
            });
        }
        for slot in &slots {
            for (seq, item) in &slot.record.mailbox.items {
                out.push(PersistCmd::Enqueue {
                    user: slot.name.clone(),
                    seq: *seq,
                    item: item.clone(),
                });
            }
        }
        for slot in slots {
            let next_seq = slot.record.mailbox.next_seq;
            if next_seq > 0 {
                out.push(PersistCmd::SetNextSeq {
                    user: slot.name.clone(),
                    next_seq,
                });
            }
        }
        out
    }

    // ---- by id, for the server ----

    /// Keys the maps whose keys peers choose (the name index and every
    /// mailbox's per-sender usage) with `hasher`, now and for users
    /// registered later. The server calls it once, with a key drawn from
    /// its driver's seed.
    pub(crate) fn rekey(&mut self, hasher: PeerKeyHasher) {
        let mut index = PeerKeyMap::with_capacity_and_hasher(self.index.len(), hasher.clone());
        index.extend(self.index.drain());
        self.index = index;
        for slot in self.users.iter_mut().flatten() {
            let usage = &mut slot.record.mailbox.per_sender;
            let mut rekeyed = PeerKeyMap::with_capacity_and_hasher(usage.len(), hasher.clone());
            rekeyed.extend(usage.drain());
            *usage = rekeyed;
        }
        self.hasher = hasher;
    }

    /// The id of a registered user.
    #[inline]
    pub(crate) fn id_of(&self, name: &UserName) -> Option<UserId> {
        self.index.get(name).copied()
    }

    /// The record of a registered user.
    #[inline]
    pub(crate) fn record(&self, id: UserId) -> &UserRecord {
        &self.slot(id).record
    }

    /// The name of a registered user.
    #[inline]
    pub(crate) fn name(&self, id: UserId) -> &UserName {
        &self.slot(id).name
    }

    /// Every queued item with its owner, mailbox by mailbox.
    pub(crate) fn items_by_owner(&self) -> impl Iterator<Item = (UserId, Seq, &MailItem)> {
        self.users.iter().enumerate().flat_map(|(i, slot)| {
            let owner = UserId(i as u32);
            slot.iter().flat_map(move |slot| {
                slot.record
                    .mailbox
                    .items
                    .iter()
                    .map(move |(seq, item)| (owner, *seq, item))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;
    use crate::types::MessageId;

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    fn message(from: &str, to: &str, seq: Seq) -> PersistCmd {
        PersistCmd::Enqueue {
            user: name(to),
            seq,
            item: MailItem::Message {
                from: name(from),
                id: MessageId([seq as u8; 16]),
                envelope: vec![1, 2].into(),
                enqueued_at: 0,
            },
        }
    }

    /// A removed user's slot falls vacant and is reused; lookups, counts,
    /// equality and snapshots see only registered users, and senders stop
    /// counting the removed mailbox's messages as outstanding.
    #[test]
    fn removed_users_leave_a_vacant_slot_that_is_reused() {
        let mut state = ServerState::new();
        for user in ["a", "b", "c"] {
            state.apply(&PersistCmd::RegisterUser {
                user: name(user),
                public_key: vec![1],
            });
        }
        state.apply(&message("a", "b", 0));
        state.apply(&message("a", "c", 0));
        assert_eq!(state.user(&name("a")).unwrap().outstanding, 2);
        assert_eq!(state.queued_bytes(), 4);
        let b = state.remove_user(&name("b")).unwrap();
        assert_eq!(state.remove_user(&name("b")), None);
        assert_eq!(state.user(&name("b")), None);
        assert_eq!((state.user_count(), state.queued_items()), (2, 1));
        assert_eq!(state.queued_bytes(), 2);
        assert_eq!(state.user(&name("a")).unwrap().outstanding, 1);
        assert_eq!(state.users().count(), 2);
        assert_eq!(ServerState::replay(&state.snapshot()), state);
        // A new user takes the vacant id.
        state.apply(&PersistCmd::RegisterUser {
            user: name("d"),
            public_key: vec![2],
        });
        assert_eq!(state.id_of(&name("d")), Some(b));
        assert_eq!(state.user(&name("d")).unwrap().mailbox.items.len(), 0);
        assert_eq!(state.user_count(), 3);
        assert_eq!(state.items_by_owner().count(), 1);
    }
}
