//! Small value types shared by every module: user names, message ids,
//! connection ids and log sequence numbers.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest user name, in bytes (and characters: names are ASCII).
pub const MAX_USER_NAME_LEN: usize = 32;

/// A validated user name: 1–32 characters of `[a-z0-9._-]`.
///
/// ```
/// use missive_core::UserName;
/// assert!(UserName::new("alice").is_ok());
/// assert!(UserName::new("Alice").is_err());
/// assert!(UserName::new("").is_err());
/// ```
///
/// Cloning is cheap (a reference count): the server copies names into
/// commands, mailbox items and notices on every message.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(Arc<str>);

/// Why a string is not a valid [`UserName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserNameError {
    /// The name is empty.
    #[error("user name is empty")]
    Empty,
    /// The name is longer than [`MAX_USER_NAME_LEN`].
    #[error("user name is {len} bytes long, at most {max} allowed", max = MAX_USER_NAME_LEN)]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
    },
    /// The name holds a character outside `[a-z0-9._-]`.
    #[error("user name may only contain a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
}

impl UserName {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, UserNameError> {
        let name = name.into();
        Self::validate(&name)?;
        Ok(Self(name.into()))
    }

    /// Checks a candidate name without allocating.
    pub fn validate(name: &str) -> Result<(), UserNameError> {
        if name.is_empty() {
            return Err(UserNameError::Empty);
        }
        if name.len() > MAX_USER_NAME_LEN {
            return Err(UserNameError::TooLong { len: name.len() });
        }
        if !name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        {
            return Err(UserNameError::BadCharacter);
        }
        Ok(())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(UserNameVisitor)
    }
}

impl Serialize for UserName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Accepts what `String` accepts (any text string, definite or not), then
/// validates.
struct UserNameVisitor;

impl serde::de::Visitor<'_> for UserNameVisitor {
    type Value = UserName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<UserName, E> {
        UserName::validate(s).map_err(E::custom)?;
        Ok(UserName(s.into()))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<UserName, E> {
        UserName::validate(&s).map_err(E::custom)?;
        Ok(UserName(s.into()))
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for UserName {
    type Err = UserNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A message id: 16 random bytes chosen by the sender. The server
/// deduplicates on (sender, id), so a retried send never duplicates.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Identifies one transport connection inside a driver. Chosen by the
/// driver; must not be reused while the server still knows the connection.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u64);

/// Log sequence number of a persistence command. Strictly increasing.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

/// Position of an item in one user's mailbox. Strictly increasing per user.
pub type Seq = u64;

/// Milliseconds since the Unix epoch (wall clock, supplied by the driver).
pub type UnixMillis = u64;

/// The hasher of maps keyed by values a peer chooses (user names, message
/// ids): foldhash keyed with 64 secret bits. About 5x cheaper than SipHash
/// for these short keys; the maps it serves are bounded (names need a
/// registration proof, recent ids are capped per sender), so a collision
/// attack would need the key and could slow only a bounded map.
///
/// The core draws no randomness of its own: [`crate::server::Server::new`]
/// keys every such map from the seed its driver passes in. The default
/// (key 0) serves states that face no peer, such as a store rebuilding
/// [`crate::server::ServerState`] from disk.
///
/// ```
/// use missive_core::{PeerKeyHasher, PeerKeyMap};
/// let mut map: PeerKeyMap<&str, u32> = PeerKeyMap::with_hasher(PeerKeyHasher::with_key(42));
/// map.insert("alice", 1);
/// assert_eq!(map.get("alice"), Some(&1));
/// ```
#[derive(Clone)]
pub struct PeerKeyHasher(foldhash::fast::SeedableRandomState);

impl fmt::Debug for PeerKeyHasher {
    /// Opaque: the key is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerKeyHasher(..)")
    }
}

impl PeerKeyHasher {
    /// A hasher keyed with `key`.
    pub fn with_key(key: u64) -> Self {
        Self(foldhash::fast::SeedableRandomState::with_seed(
            key,
            foldhash::SharedSeed::global_fixed(),
        ))
    }
}

impl Default for PeerKeyHasher {
    /// Key 0: for maps that face no peer (see the type's docs).
    fn default() -> Self {
        Self::with_key(0)
    }
}

impl std::hash::BuildHasher for PeerKeyHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// A map keyed by values a peer chooses (see [`PeerKeyHasher`]).
pub type PeerKeyMap<K, V> = std::collections::HashMap<K, V, PeerKeyHasher>;

/// Wall-clock time at `now`, given the wall-clock time `start_unix` at the
/// monotonic instant `start`; saturates instead of overflowing however far
/// a driver's clock jumps.
pub(crate) fn unix_at(
    start_unix: UnixMillis,
    start: crate::time::Instant,
    now: crate::time::Instant,
) -> UnixMillis {
    let elapsed = now.saturating_duration_since(start).as_millis();
    start_unix.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;

    #[test]
    fn user_names() {
        assert!(UserName::new("a").is_ok());
        assert!(UserName::new("a.b_c-d9").is_ok());
        assert_eq!(UserName::new(""), Err(UserNameError::Empty));
        assert_eq!(
            UserName::new("x".repeat(33)),
            Err(UserNameError::TooLong { len: 33 })
        );
        assert!(UserName::new("x".repeat(32)).is_ok());
        assert_eq!(UserName::new("Bob"), Err(UserNameError::BadCharacter));
        assert_eq!(UserName::new("b b"), Err(UserNameError::BadCharacter));
        assert_eq!(UserName::new("é"), Err(UserNameError::BadCharacter));
    }

    #[test]
    fn message_id_display() {
        let id = MessageId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
    }
}
