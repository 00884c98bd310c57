//! Running the server as one node of a cluster (docs/CLUSTER.md).
//!
//! Users are spread over a fixed number of shards by [`shard_of`]. A node's
//! [`Server`](crate::server::Server) serves the users of the shards it owns
//! and nobody else: the driver tells it which shards it acquired (with
//! their stored state) and lost, which node owns each other shard (for
//! redirects), and carries [`RemoteCall`]s between nodes. The core decides
//! everything else: whom to redirect, what to forward, what a forwarded
//! send is answered, when a forward is retried.
//!
//! What crosses between nodes is encoded here too ([`RemoteCall::encode`],
//! [`RemoteReply::encode`]): CBOR, like the client protocol, so a driver
//! only moves bytes.

use crate::types::{MessageId, UnixMillis, UserName};
use crate::wire::{ErrorCode, Notice};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A shard number, below the cluster's shard count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard(pub u32);

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// FNV-1a 64 of a user name's UTF-8 bytes: the hash every shard number is
/// taken from (stable across versions and platforms).
///
/// ```
/// use missive_core::UserName;
/// use missive_core::cluster::name_hash;
/// assert_eq!(name_hash(&UserName::new("alice")?), 0x508b_2abb_65a0_3907);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn name_hash(user: &UserName) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    user.as_str().bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The shard of `user` among `shards` shards: [`name_hash`] modulo
/// `shards` (at least 1).
///
/// ```
/// use missive_core::UserName;
/// use missive_core::cluster::{Shard, shard_of};
/// assert_eq!(shard_of(&UserName::new("alice")?, 64), Shard(7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn shard_of(user: &UserName, shards: u32) -> Shard {
    // Below `shards`, so it fits.
    Shard((name_hash(user) % u64::from(shards.max(1))) as u32)
}

/// How a server runs as a cluster node (`ServerConfig::cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Number of shards, fixed when the cluster is created.
    pub shards: u32,
    /// Pause before a forward that found no owner is tried again.
    pub forward_retry: Duration,
    /// How long a fetch-key or presence query is retried before the client
    /// is told the user is unavailable. Sends and notices are retried for
    /// as long as the node owns the sender's shard.
    pub query_deadline: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            shards: 256,
            forward_retry: Duration::from_millis(200),
            query_deadline: Duration::from_secs(10),
        }
    }
}

/// Names an outgoing forward (`Output::Forward`); chosen by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ForwardId(pub u64);

/// Names an incoming call (`Input::Remote`); chosen by the driver, answered
/// by `Output::Reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// A request one node makes of the owner of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemoteCall {
    /// Queue a message for `to` (the owner runs every check of a local
    /// send and answers once the message is durable).
    Enqueue {
        /// The authenticated sender.
        from: UserName,
        /// The sender's message id (retries reuse it: deduplicated).
        id: MessageId,
        /// The recipient, in the called shard.
        to: UserName,
        /// The sealed envelope.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
        /// When the sender's node accepted it for forwarding.
        sent_at: UnixMillis,
    },
    /// Queue a notice for `to` (a sender in the called shard).
    Notice {
        /// The sender the notice is for.
        to: UserName,
        /// What happened to their message.
        notice: Notice,
    },
    /// The public key of `user`.
    FetchKey {
        /// Whose key.
        user: UserName,
    },
    /// The presence of `user`.
    QueryPresence {
        /// Whose presence.
        user: UserName,
    },
}

/// The answer to a [`RemoteCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemoteReply {
    /// The message or notice is durably queued (or was already).
    Accepted,
    /// The key asked for.
    Key {
        /// SubjectPublicKeyInfo DER.
        #[serde(with = "serde_bytes")]
        public_key: Vec<u8>,
    },
    /// The presence asked for.
    Presence {
        /// Online now?
        online: bool,
        /// As in the `presence` packet.
        last_seen_ms: Option<UnixMillis>,
    },
    /// Refused, as a local request would have been (unknown user, queue
    /// full, id reused…): the client is told this code.
    Refused {
        /// The error the client gets.
        code: ErrorCode,
        /// Human-readable detail.
        detail: String,
    },
    /// The called node does not own the shard (any more): look again.
    NotOwner,
    /// Set by the driver, never sent: no node answered for the shard in
    /// time (no owner, owner gone, NATS unreachable). Retried.
    Unreachable,
}

/// Why bytes from another node are not a call or reply.
#[derive(Debug, thiserror::Error)]
#[error("undecodable cluster message: {0}")]
pub struct RemoteDecodeError(String);

impl RemoteCall {
    /// CBOR bytes for the wire between nodes.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes [`RemoteCall::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RemoteDecodeError> {
        decode(bytes)
    }
}

impl RemoteReply {
    /// CBOR bytes for the wire between nodes.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes [`RemoteReply::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RemoteDecodeError> {
        decode(bytes)
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail, and every field serializes.
    ciborium::ser::into_writer(value, &mut out).expect("encoding to a Vec");
    out
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, RemoteDecodeError> {
    ciborium::de::from_reader(bytes).map_err(|e| RemoteDecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;

    #[test]
    fn shards_spread_names_and_match_the_store_hash() {
        let alice = UserName::new("alice").unwrap();
        assert_eq!(shard_of(&alice, 64), Shard(7));
        assert_eq!(shard_of(&alice, 1), Shard(0));
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            seen.insert(shard_of(&UserName::new(format!("u{i}")).unwrap(), 64));
        }
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn calls_and_replies_round_trip() {
        let call = RemoteCall::Enqueue {
            from: UserName::new("a").unwrap(),
            id: MessageId([7; 16]),
            to: UserName::new("b").unwrap(),
            envelope: vec![1, 2, 3],
            sent_at: 42,
        };
        assert_eq!(RemoteCall::decode(&call.encode()).unwrap(), call);
        let reply = RemoteReply::Refused {
            code: ErrorCode::QueueFull,
            detail: "full".into(),
        };
        assert_eq!(RemoteReply::decode(&reply.encode()).unwrap(), reply);
        assert!(RemoteReply::decode(&[0xff]).is_err());
    }
}
