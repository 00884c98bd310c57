//! [`SharedBytes`]: an immutable byte string shared by reference count.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Immutable bytes whose clones share one allocation: a sealed envelope is
/// decoded once from the read buffer, and the command that persists it,
/// the mailbox that keeps it and the frame that delivers it all read that
/// one copy.
///
/// Encoded as a CBOR byte string, exactly as `Vec<u8>` with
/// `#[serde(with = "serde_bytes")]` is, and decoded from whatever that
/// accepts (a byte string, definite or not, an array of bytes or a text
/// string).
///
/// ```
/// use missive_core::SharedBytes;
/// let bytes = SharedBytes::from(vec![1, 2, 3]);
/// let shared = bytes.clone();
/// assert_eq!(&shared[..], [1, 2, 3]);
/// assert_eq!(bytes.len(), 3);
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SharedBytes(Arc<[u8]>);

impl SharedBytes {
    /// A copy of the bytes in an owned `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }
}

impl From<&[u8]> for SharedBytes {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }
}

impl<const N: usize> From<&[u8; N]> for SharedBytes {
    fn from(bytes: &[u8; N]) -> Self {
        Self(bytes.as_slice().into())
    }
}

impl FromIterator<u8> for SharedBytes {
    fn from_iter<I: IntoIterator<Item = u8>>(bytes: I) -> Self {
        Self(bytes.into_iter().collect())
    }
}

impl From<SharedBytes> for Vec<u8> {
    fn from(bytes: SharedBytes) -> Self {
        bytes.0.to_vec()
    }
}

impl PartialEq<[u8]> for SharedBytes {
    fn eq(&self, other: &[u8]) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<Vec<u8>> for SharedBytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        *self.0 == **other
    }
}

impl fmt::Debug for SharedBytes {
    /// As a `Vec<u8>` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for SharedBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    /// Asks for a byte buffer, as `serde_bytes` does for a `Vec<u8>`; bytes
    /// a deserializer lends (the codec's fast path) are copied once, into
    /// the shared allocation.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(SharedBytesVisitor)
    }
}

/// Accepts what `serde_bytes::ByteBuf` accepts, with the same messages.
struct SharedBytesVisitor;

impl<'de> serde::de::Visitor<'de> for SharedBytesVisitor {
    type Value = SharedBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("byte array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<SharedBytes, A::Error> {
        // As serde_bytes: the hint is the peer's, so it is capped.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            bytes.push(b);
        }
        Ok(bytes.into())
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SharedBytes, E> {
        Ok(v.into())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<SharedBytes, E> {
        Ok(v.into())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SharedBytes, E> {
        Ok(v.as_bytes().into())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SharedBytes, E> {
        Ok(v.into_bytes().into())
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `Vec<u8>` as `serde_bytes` encodes it: the reference.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Reference(#[serde(with = "serde_bytes")] Vec<u8>);

    fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).expect("encodes");
        out
    }

    proptest! {
        #[test]
        fn encodes_exactly_as_serde_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(cbor(&SharedBytes::from(bytes.clone())), cbor(&Reference(bytes)));
        }

        #[test]
        fn decodes_whatever_serde_bytes_decodes(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let shared = ciborium::from_reader::<SharedBytes, _>(&input[..]).map_err(|e| e.to_string());
            let reference = ciborium::from_reader::<Reference, _>(&input[..]).map_err(|e| e.to_string());
            prop_assert_eq!(shared.map(|s| s.to_vec()), reference.map(|r| r.0));
        }

        #[test]
        fn decodes_encoded_values_of_every_shape(bytes in proptest::collection::vec(any::<u8>(), 0..300), shape in 0..3u8) {
            // A byte string, an array of small integers, a text string.
            let encoded = match shape {
                0 => cbor(&Reference(bytes.clone())),
                1 => cbor(&bytes),
                _ => cbor(&String::from_utf8_lossy(&bytes)),
            };
            let shared = ciborium::from_reader::<SharedBytes, _>(&encoded[..]).map_err(|e| e.to_string());
            let reference = ciborium::from_reader::<Reference, _>(&encoded[..]).map_err(|e| e.to_string());
            prop_assert_eq!(shared.map(|s| s.to_vec()), reference.map(|r| r.0));
        }
    }

    #[test]
    fn derefs_compares_and_prints_as_bytes() {
        let shared = SharedBytes::from(&[7, 8]);
        assert_eq!(&shared[..], [7, 8]);
        assert_eq!(shared, vec![7, 8]);
        assert_eq!(format!("{shared:?}"), format!("{:?}", vec![7u8, 8]));
        assert_eq!(Vec::from(shared), [7, 8]);
    }
}
