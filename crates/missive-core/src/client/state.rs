//! The client's durable state: everything that must survive a restart.

use crate::types::{MessageId, PeerKeyHasher, UnixMillis, UserName};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;

/// The durable state of a [`Client`](super::Client): pinned keys, the
/// outbox, the ids of messages and notices already received, and envelopes
/// waiting for their sender's key.
///
/// A driver persists it (for example as CBOR with [`ClientState::to_cbor`])
/// whenever [`ClientOutput::StateChanged`](super::ClientOutput::StateChanged)
/// is polled, and passes it back to [`Client::new`](super::Client::new) on
/// the next start. A new user starts from `ClientState::default()`.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
pub struct ClientState {
    /// Trusted public keys (SPKI DER), pinned on first use.
    #[serde(default)]
    pub(super) pinned: BTreeMap<UserName, ByteBuf>,
    /// Messages not yet accepted by the server, oldest first.
    #[serde(default)]
    pub(super) outbox: VecDeque<OutboxEntry>,
    /// (sender, id) of received messages, oldest first.
    #[serde(default)]
    pub(super) seen: SeenSet<(UserName, MessageId)>,
    /// Notices already reported, oldest first.
    #[serde(default)]
    pub(super) seen_notices: SeenSet<(NoticeKind, UserName, MessageId)>,
    /// Received envelopes waiting for their sender's key, oldest first.
    #[serde(default)]
    pub(super) parked: VecDeque<ParkedEnvelope>,
}

/// A message in the outbox: queued by [`Client::send`](super::Client::send),
/// removed when the server accepts it or refuses it for good.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxEntry {
    /// The message id (also inside the sealed envelope).
    pub id: MessageId,
    /// The recipient.
    pub to: UserName,
    /// The plaintext body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The sealed envelope, once sealed. Retries resend exactly these bytes.
    #[serde(with = "serde_bytes", default)]
    pub sealed: Option<Vec<u8>>,
    /// The seed the envelope is sealed from (content key, OAEP and PSS
    /// randomness), drawn when the message is queued: a client that lost
    /// `sealed` (a crash before the state was saved) seals the same bytes
    /// again, so the server sees a true retry and not a reused id. As secret
    /// as `body`: whoever has it and the envelope learns the content key.
    /// Entries saved without one (older state files) get one drawn when
    /// they are sealed, so they keep the old behaviour: sealing them again
    /// after such a crash gives other bytes (`IdReused`).
    #[serde(with = "serde_bytes", default)]
    pub seal_seed: Option<[u8; 32]>,
    /// Wall-clock time of the send (Unix milliseconds), sealed in the header.
    pub sent_at: UnixMillis,
}

/// A received envelope kept until its sender's key is known.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEnvelope {
    /// The sender as authenticated by the server.
    pub from: UserName,
    /// The message id.
    pub id: MessageId,
    /// The sealed envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

/// Which notice was seen (part of the notice deduplication key).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub(super) enum NoticeKind {
    Delivered,
    Expired,
}

/// Why stored bytes are not a [`ClientState`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDecodeError {
    /// Not CBOR, or not the expected structure.
    #[error("invalid client state: {0}")]
    Invalid(String),
}

/// Why a [`ClientState`] could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateEncodeError {
    /// Serialization failed.
    #[error("cannot encode client state: {0}")]
    Serialize(String),
}

impl ClientState {
    /// Encodes the state as CBOR.
    pub fn to_cbor(&self) -> Result<Vec<u8>, StateEncodeError> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out)
            .map_err(|e| StateEncodeError::Serialize(e.to_string()))?;
        Ok(out)
    }

    /// Decodes a state written by [`ClientState::to_cbor`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        ciborium::from_reader(bytes).map_err(|e| StateDecodeError::Invalid(e.to_string()))
    }

    /// The pinned key (SPKI DER) of `user`, if any.
    pub fn pinned_key(&self, user: &UserName) -> Option<&[u8]> {
        self.pinned.get(user).map(|k| k.as_slice())
    }

    /// All pinned keys (SPKI DER), by user.
    pub fn pinned_keys(&self) -> impl Iterator<Item = (&UserName, &[u8])> {
        self.pinned.iter().map(|(u, k)| (u, k.as_slice()))
    }

    /// The outbox, oldest first.
    pub fn outbox(&self) -> impl ExactSizeIterator<Item = &OutboxEntry> {
        self.outbox.iter()
    }

    /// Envelopes waiting for their sender's key, oldest first.
    pub fn parked(&self) -> impl ExactSizeIterator<Item = &ParkedEnvelope> {
        self.parked.iter()
    }

    /// Whether the message `id` from `from` was already received.
    pub fn is_seen(&self, from: &UserName, id: &MessageId) -> bool {
        self.seen.contains(&(from.clone(), *id))
    }

    /// How many received message ids are remembered.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Index of the outbox entry `id`.
    pub(super) fn outbox_position(&self, id: &MessageId) -> Option<usize> {
        self.outbox.iter().position(|e| e.id == *id)
    }
}

/// A FIFO set bounded by a capacity: inserting beyond it forgets the oldest
/// item. Serialized as the list of items, oldest first.
#[derive(Clone)]
pub(super) struct SeenSet<T: Eq + Hash + Clone> {
    order: VecDeque<T>,
    index: HashSet<T, PeerKeyHasher>,
}

impl<T: Eq + Hash + Clone> Default for SeenSet<T> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            index: HashSet::default(),
        }
    }
}

impl<T: Eq + Hash + Clone> SeenSet<T> {
    /// Re-keys the index (ids in it come from other users).
    pub(super) fn rekey(&mut self, hasher: &PeerKeyHasher) {
        let mut index = HashSet::with_capacity_and_hasher(self.order.len(), hasher.clone());
        index.extend(self.index.drain());
        self.index = index;
    }

    pub(super) fn contains(&self, item: &T) -> bool {
        self.index.contains(item)
    }

    /// Inserts `item`, then forgets the oldest items beyond `capacity`.
    /// Returns `false` if it was already present.
    pub(super) fn insert(&mut self, item: T, capacity: usize) -> bool {
        if self.index.contains(&item) {
            return false;
        }
        self.index.insert(item.clone());
        self.order.push_back(item);
        self.trim(capacity);
        true
    }

    /// Forgets the oldest items beyond `capacity`. Returns whether any was.
    pub(super) fn trim(&mut self, capacity: usize) -> bool {
        let mut trimmed = false;
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.index.remove(&old);
                trimmed = true;
            }
        }
        trimmed
    }

    pub(super) fn len(&self) -> usize {
        self.order.len()
    }
}

impl<T: Eq + Hash + Clone> PartialEq for SeenSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl<T: Eq + Hash + Clone + fmt::Debug> fmt::Debug for SeenSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.order).finish()
    }
}

impl<T: Eq + Hash + Clone + Serialize> Serialize for SeenSet<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.order)
    }
}

impl<'de, T: Eq + Hash + Clone + Deserialize<'de>> Deserialize<'de> for SeenSet<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(d)?;
        let mut set = SeenSet::default();
        for item in items {
            set.insert(item, usize::MAX);
        }
        Ok(set)
    }
}
