//! The server's durable state and the persistence commands that change it.
//!
//! [`ServerState::apply`] is the single place durable state changes: the
//! server applies every command it emits, and a driver rebuilds the state at
//! start-up by applying what its store holds. Replaying the emitted commands
//! in order rebuilds an equal state (a test checks it).

use crate::types::{MessageId, Seq, UnixMillis, UserName};
use crate::wire::Notice;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
        /// The sealed envelope (opaque).
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
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
    pub items: BTreeMap<Seq, MailItem>,
    /// Next sequence number to assign.
    pub next_seq: Seq,
    /// Messages (not notices) queued.
    pub message_count: u32,
    /// Envelope bytes queued.
    pub message_bytes: u64,
    /// Per sender: messages and bytes queued here.
    pub per_sender: HashMap<UserName, SenderUsage>,
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerState {
    server_id: Option<[u8; 16]>,
    users: HashMap<UserName, UserRecord>,
    /// Expiry index: (enqueued_at, owner, seq). Derived from the mailboxes.
    expiry: BTreeSet<(UnixMillis, UserName, Seq)>,
}

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
                self.users
                    .entry(user.clone())
                    .or_insert_with(|| UserRecord {
                        public_key: public_key.clone(),
                        ..UserRecord::default()
                    });
            }
            PersistCmd::Enqueue { user, seq, item } => self.enqueue(user, *seq, item),
            PersistCmd::Ack { user, seq } | PersistCmd::Expire { user, seq } => {
                self.remove(user, *seq);
            }
            PersistCmd::SetNextSeq { user, next_seq } => {
                if let Some(record) = self.users.get_mut(user) {
                    record.mailbox.next_seq = record.mailbox.next_seq.max(*next_seq);
                }
            }
        }
    }

    fn enqueue(&mut self, user: &UserName, seq: Seq, item: &MailItem) {
        let Some(record) = self.users.get_mut(user) else {
            return;
        };
        let mailbox = &mut record.mailbox;
        if mailbox.items.contains_key(&seq) {
            return;
        }
        mailbox.next_seq = mailbox.next_seq.max(seq + 1);
        match item {
            MailItem::Message { from, envelope, .. } => {
                mailbox.message_count += 1;
                mailbox.message_bytes += envelope.len() as u64;
                let usage = mailbox.per_sender.entry(from.clone()).or_default();
                usage.messages += 1;
                usage.bytes += envelope.len() as u64;
                let from = from.clone();
                mailbox.items.insert(seq, item.clone());
                if let Some(sender) = self.users.get_mut(&from) {
                    sender.outstanding += 1;
                }
            }
            MailItem::Notice { .. } => {
                mailbox.items.insert(seq, item.clone());
                record.outstanding += 1;
            }
        }
        self.expiry.insert((item.enqueued_at(), user.clone(), seq));
    }

    fn remove(&mut self, user: &UserName, seq: Seq) -> Option<MailItem> {
        let record = self.users.get_mut(user)?;
        let mailbox = &mut record.mailbox;
        let item = mailbox.items.remove(&seq)?;
        self.expiry.remove(&(item.enqueued_at(), user.clone(), seq));
        match &item {
            MailItem::Message { from, envelope, .. } => {
                mailbox.message_count -= 1;
                mailbox.message_bytes -= envelope.len() as u64;
                if let Some(usage) = mailbox.per_sender.get_mut(from) {
                    usage.messages -= 1;
                    usage.bytes -= envelope.len() as u64;
                    if usage.messages == 0 {
                        mailbox.per_sender.remove(from);
                    }
                }
                let from = from.clone();
                if let Some(sender) = self.users.get_mut(&from) {
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
        self.users.get(name)
    }

    /// All registered users.
    pub fn users(&self) -> impl Iterator<Item = (&UserName, &UserRecord)> {
        self.users.iter()
    }

    /// Number of registered users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Items queued in all mailboxes.
    pub fn queued_items(&self) -> usize {
        self.users.values().map(|u| u.mailbox.items.len()).sum()
    }

    /// Items enqueued at or before `cutoff`, oldest first.
    pub fn expired_items(&self, cutoff: UnixMillis) -> impl Iterator<Item = (&UserName, Seq)> {
        self.expiry
            .iter()
            .take_while(move |(at, _, _)| *at <= cutoff)
            .map(|(_, user, seq)| (user, *seq))
    }

    /// The oldest enqueue time of any item.
    pub fn oldest_item(&self) -> Option<UnixMillis> {
        self.expiry.first().map(|(at, _, _)| *at)
    }

    /// The commands that rebuild this state from nothing (a snapshot): server
    /// id, users, every queued item, then each mailbox's next sequence
    /// number. Stores use it to compact their log.
    pub fn snapshot(&self) -> Vec<PersistCmd> {
        let mut out = Vec::new();
        if let Some(server_id) = self.server_id {
            out.push(PersistCmd::SetServerId { server_id });
        }
        let mut names: Vec<&UserName> = self.users.keys().collect();
        names.sort();
        for user in &names {
            let record = &self.users[*user];
            out.push(PersistCmd::RegisterUser {
                user: (*user).clone(),
                public_key: record.public_key.clone(),
            });
        }
        for user in names {
            for (seq, item) in &self.users[user].mailbox.items {
                out.push(PersistCmd::Enqueue {
                    user: user.clone(),
                    seq: *seq,
                    item: item.clone(),
                });
            }
        }
        out
    }
}
