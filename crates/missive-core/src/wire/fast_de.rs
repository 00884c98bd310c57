//! A fast path for decoding packets: a serde deserializer reading straight
//! from the payload slice, for the plain CBOR that encoders produce
//! (definite lengths, no tags, text keys). It also takes what ciborium
//! reads the same way: integer and length arguments in a longer head than
//! needed, and `undefined` for an absent option.
//!
//! It is an optimisation only. Anything outside that subset — indefinite
//! lengths, tags, floats, unknown fields (which would have to be skipped),
//! a unit variant written as a map, byte strings given as arrays, any
//! semantic error — makes it give up, and [`super::decode_packet`] decodes
//! the payload again on the general path (the well-formedness scan, then
//! ciborium), whose answer (packet or error) is authoritative. So this
//! module has to be right only when it succeeds: it then returns exactly
//! what the general path would, having consumed exactly the payload (a
//! payload it accepts whole is necessarily one well-formed data item,
//! nesting no deeper than the packet types, so the scanner would have
//! accepted it too). The fuzz target `codec_differential` checks exactly
//! that, on arbitrary bytes.
//!
//! Compared with ciborium over a `&[u8]` reader, it needs no scratch buffer,
//! copies a byte string once (into its `Vec`), and passes field names and
//! strings as borrowed slices.

use serde::de::value::{BorrowedBytesDeserializer, BorrowedStrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use std::fmt;

/// The fast path does not apply (or the payload is invalid): decode or
/// encode with ciborium instead. Shared by both fast paths (`fast_ser`).
#[derive(Debug)]
pub(crate) struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not on the fast path")
    }
}

impl std::error::Error for GiveUp {}

impl de::Error for GiveUp {
    #[cold]
    fn custom<T: fmt::Display>(_: T) -> Self {
        GiveUp
    }
}

impl serde::ser::Error for GiveUp {
    #[cold]
    fn custom<T: fmt::Display>(_: T) -> Self {
        GiveUp
    }
}

type Result<T> = std::result::Result<T, GiveUp>;

/// Decodes `payload` as one `P` that fills it exactly, or gives up.
#[inline]
pub(crate) fn decode<P: DeserializeOwned>(payload: &[u8]) -> Option<P> {
    let mut de = SliceDe {
        buf: payload,
        pos: 0,
    };
    let value = P::deserialize(&mut de).ok()?;
    (de.pos == payload.len()).then_some(value)
}

const MAJOR_UNSIGNED: u8 = 0;
pub(super) const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;
const NULL: u8 = 0xf6;
const UNDEFINED: u8 = 0xf7;

pub(super) struct SliceDe<'de> {
    buf: &'de [u8],
    pos: usize,
}

impl<'de> SliceDe<'de> {
    /// Reads `buf` from its start.
    pub(super) fn new(buf: &'de [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Reads exactly the bytes `expected` (compared as one array, not
    /// through `memcmp`).
    #[inline]
    pub(super) fn literal<const N: usize>(&mut self, expected: &[u8; N]) -> Result<()> {
        match self.buf.get(self.pos..).and_then(<[u8]>::first_chunk::<N>) {
            Some(bytes) if bytes == expected => {
                self.pos += N;
                Ok(())
            }
            _ => Err(GiveUp),
        }
    }

    /// The next `N` bytes.
    #[inline]
    pub(super) fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = *self
            .buf
            .get(self.pos..)
            .and_then(<[u8]>::first_chunk::<N>)
            .ok_or(GiveUp)?;
        self.pos += N;
        Ok(bytes)
    }

    /// Whether all of `buf` was read.
    pub(super) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    #[inline]
    fn peek(&self) -> Result<u8> {
        self.buf.get(self.pos).copied().ok_or(GiveUp)
    }

    /// Reads a data item head of major type `major` with a definite
    /// argument (any head length), returning the argument.
    #[inline]
    pub(super) fn head(&mut self, major: u8) -> Result<u64> {
        let initial = self.peek()?;
        if initial >> 5 != major {
            return Err(GiveUp);
        }
        let n = match initial & 0x1f {
            info @ 0..=23 => {
                self.pos += 1;
                return Ok(u64::from(info));
            }
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(GiveUp),
        };
        let bytes = self.buf.get(self.pos + 1..self.pos + 1 + n).ok_or(GiveUp)?;
        self.pos += 1 + n;
        Ok(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }

    /// The content of a definite-length byte or text string.
    #[inline]
    pub(super) fn string(&mut self, major: u8) -> Result<&'de [u8]> {
        let len = self.head(major)?;
        let len = usize::try_from(len).map_err(|_| GiveUp)?;
        let end = self.pos.checked_add(len).ok_or(GiveUp)?;
        let bytes = self.buf.get(self.pos..end).ok_or(GiveUp)?;
        self.pos = end;
        Ok(bytes)
    }

    #[inline]
    pub(super) fn text(&mut self) -> Result<&'de str> {
        std::str::from_utf8(self.string(MAJOR_TEXT)?).map_err(|_| GiveUp)
    }

    #[inline]
    pub(super) fn unsigned(&mut self) -> Result<u64> {
        self.head(MAJOR_UNSIGNED)
    }
}

macro_rules! unsigned {
    ($method:ident, $visit:ident, $ty:ty) => {
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            let n = <$ty>::try_from(self.unsigned()?).map_err(|_| GiveUp)?;
            visitor.$visit(n)
        }
    };
}

macro_rules! give_up {
    ($($method:ident)*) => {
        $(
            #[cold]
            fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
                Err(GiveUp)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for &mut SliceDe<'de> {
    type Error = GiveUp;

    give_up! {
        deserialize_any deserialize_ignored_any deserialize_unit
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_f32 deserialize_f64 deserialize_char
    }

    unsigned!(deserialize_u8, visit_u8, u8);
    unsigned!(deserialize_u16, visit_u16, u16);
    unsigned!(deserialize_u32, visit_u32, u32);
    unsigned!(deserialize_u64, visit_u64, u64);

    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let value = match self.peek()? {
            FALSE => false,
            TRUE => true,
            _ => return Err(GiveUp),
        };
        self.pos += 1;
        visitor.visit_bool(value)
    }

    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.text()?)
    }

    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.text()?)
    }

    /// Field names go to the visitor as bytes (derived identifier visitors
    /// match them the same way), which skips a UTF-8 check: a text string
    /// equal to a (ASCII) field name is valid UTF-8, and any other name is
    /// an unknown field, on which this path gives up.
    #[inline]
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_bytes(self.string(MAJOR_TEXT)?)
    }

    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_bytes(self.string(MAJOR_BYTES)?)
    }

    /// Lends the bytes too: a visitor that wants them owned copies them
    /// once (a `Vec` through `visit_bytes`, [`crate::SharedBytes`] into its
    /// shared allocation) instead of once here and again there.
    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_bytes(self.string(MAJOR_BYTES)?)
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            NULL | UNDEFINED => {
                self.pos += 1;
                visitor.visit_none()
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value> {
        Err(GiveUp)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value> {
        Err(GiveUp)
    }

    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.head(MAJOR_ARRAY)?;
        let mut access = Items {
            de: self,
            left: len,
        };
        let value = visitor.visit_seq(&mut access)?;
        if access.left == 0 {
            Ok(value)
        } else {
            Err(GiveUp)
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value> {
        Err(GiveUp)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value> {
        Err(GiveUp)
    }

    #[inline]
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.head(MAJOR_MAP)?;
        let mut access = Items {
            de: self,
            left: len,
        };
        let value = visitor.visit_map(&mut access)?;
        if access.left == 0 {
            Ok(value)
        } else {
            Err(GiveUp)
        }
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.peek()? >> 5 {
            // A variant without fields: the bare tag.
            MAJOR_TEXT => visitor.visit_enum(BorrowedStrDeserializer::new(self.text()?)),
            // {tag: fields}
            MAJOR_MAP => {
                if self.head(MAJOR_MAP)? != 1 {
                    return Err(GiveUp);
                }
                visitor.visit_enum(Variant { de: self })
            }
            _ => Err(GiveUp),
        }
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The entries of a definite-length array or map.
struct Items<'a, 'de> {
    de: &'a mut SliceDe<'de>,
    /// Entries (map: keys and values) still to read.
    left: u64,
}

impl<'de> de::SeqAccess<'de> for &mut Items<'_, 'de> {
    type Error = GiveUp;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for &mut Items<'_, 'de> {
    type Error = GiveUp;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }
}

/// `{tag: fields}`: the tag, then the fields.
struct Variant<'a, 'de> {
    de: &'a mut SliceDe<'de>,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = GiveUp;
    type Variant = Self;

    #[inline]
    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self)> {
        // As for field names: bytes, matched against the (ASCII) tags.
        let tag = self.de.string(MAJOR_TEXT)?;
        let value = seed.deserialize(BorrowedBytesDeserializer::new(tag))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = GiveUp;

    /// `{"ping": …}`: ciborium decides what that is.
    fn unit_variant(self) -> Result<()> {
        Err(GiveUp)
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value> {
        Err(GiveUp)
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_map(&mut *self.de, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::PersistCmd;
    use crate::test_support::test;
    use crate::types::{MessageId, UserName};
    use crate::wire::{ClientPacket, ErrorCode, Notice, ServerPacket, WireLimits};

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    }

    /// Every packet an encoder produces takes the fast path, and decodes to
    /// what ciborium decodes.
    #[test]
    fn encoded_packets_take_the_fast_path() {
        let id = MessageId([7; 16]);
        let clients = [
            ClientPacket::Hello {
                versions: vec![1, 2],
            },
            ClientPacket::Register {
                user: name("alice"),
                public_key: vec![1; 300],
            },
            ClientPacket::Login { user: name("bob") },
            ClientPacket::Prove {
                client_nonce: [3; 32],
                signature: vec![9; 256],
            },
            ClientPacket::FetchKey {
                user: name("carol"),
            },
            ClientPacket::Send {
                id,
                to: name("bob"),
                envelope: vec![5; 70_000].into(),
            },
            ClientPacket::Ack { seq: u64::MAX },
            ClientPacket::Ping,
            ClientPacket::SetPresence { online: false },
            ClientPacket::QueryPresence { user: name("d") },
        ];
        for p in clients {
            let bytes = cbor(&p);
            assert_eq!(decode::<ClientPacket>(&bytes).as_ref(), Some(&p));
        }
        let servers = [
            ServerPacket::Welcome {
                version: 1,
                server_id: [1; 16],
                session_id: [2; 16],
                ping_interval_ms: 30_000,
                limits: WireLimits {
                    max_frame: 1 << 18,
                    max_envelope: 1 << 17,
                    window: 256,
                    handshake_max_frame: Some(1 << 14),
                },
            },
            ServerPacket::Challenge {
                nonce: [4; 32],
                expires_in_ms: 30_000,
            },
            ServerPacket::Registered { user: name("a") },
            ServerPacket::LoggedIn {
                user: name("a"),
                queued: 3,
            },
            ServerPacket::Key {
                user: name("a"),
                public_key: vec![1, 2],
            },
            ServerPacket::Accepted { id },
            ServerPacket::Message {
                seq: 300,
                from: name("x"),
                id,
                envelope: vec![],
            },
            ServerPacket::Notice {
                seq: 1,
                notice: Notice::Delivered { to: name("y"), id },
            },
            ServerPacket::Notice {
                seq: 2,
                notice: Notice::Expired { to: name("y"), id },
            },
            ServerPacket::Pong,
            ServerPacket::Presence {
                user: name("z"),
                online: true,
                last_seen_ms: Some(1_700_000_000_000),
            },
            ServerPacket::Presence {
                user: name("z"),
                online: false,
                last_seen_ms: None,
            },
            ServerPacket::Redirect {
                address: "wss://node-2.example:443/missive".into(),
            },
            ServerPacket::Error {
                code: ErrorCode::Unknown(4000),
                id: Some(id),
                user: None,
                detail: "détail".into(),
            },
        ];
        for p in servers {
            let bytes = cbor(&p);
            assert_eq!(decode::<ServerPacket>(&bytes).as_ref(), Some(&p));
        }
        let cmd = PersistCmd::SetServerId { server_id: [1; 16] };
        assert_eq!(decode::<PersistCmd>(&cbor(&cmd)), Some(cmd));
    }

    #[test]
    fn gives_up_outside_the_subset() {
        use crate::wire::testutil::unhex;
        for hex in [
            "",
            // {"ping": null}: a unit variant as a map.
            "a1 6470696e67 f6",
            // Indefinite-length text.
            "7f 6470696e67 ff",
            // A tag before the packet.
            "d818 6470696e67",
            // {"ack": {"seq": 1, "x": 0}}: an unknown field.
            "a1 6361636b a2 63736571 01 6178 00",
            // {"ack": {"seq": -1}}
            "a1 6361636b a1 63736571 20",
            // {"ack": {"seq": 1}} followed by a byte.
            "a1 6361636b a1 63736571 01 00",
            // Truncated.
            "a1 6361636b a1 63736571",
            // {"login": {"user": "Bob"}}: not a valid name.
            "a1 656c6f67696e a1 6475736572 63426f62",
            // Invalid UTF-8 in the tag.
            "62 ffff",
        ] {
            assert_eq!(decode::<ClientPacket>(&unhex(hex)), None, "{hex}");
        }
    }

    #[cfg(not(target_family = "wasm"))]
    proptest::proptest! {
        /// Whenever the fast path accepts bytes (here: a valid packet with
        /// one byte changed, or cut short), ciborium accepts them too and
        /// decodes the same packet.
        /// A redirect to any address takes the fast path and decodes like
        /// ciborium, whole; cut short, the fast path gives up.
        #[test]
        fn redirects_take_the_fast_path(address in ".{0,80}", at in 0usize..200) {
            let packet = ServerPacket::Redirect { address };
            let bytes = cbor(&packet);
            proptest::prop_assert_eq!(decode::<ServerPacket>(&bytes), Some(packet));
            let cut = &bytes[..at % bytes.len()];
            proptest::prop_assert!(decode::<ServerPacket>(cut).is_none());
        }

        #[test]
        fn fast_path_agrees_with_ciborium(
            envelope in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            seq in proptest::prelude::any::<u64>(),
            at in 0usize..200,
            byte in proptest::prelude::any::<u8>(),
            cut in proptest::prelude::any::<bool>(),
        ) {
            let packets = [
                ClientPacket::Send { id: MessageId([1; 16]), to: name("bob"), envelope: envelope.into() },
                ClientPacket::Ack { seq },
                ClientPacket::Hello { versions: vec![1, 7] },
                ClientPacket::SetPresence { online: true },
            ];
            for p in packets {
                let mut bytes = cbor(&p);
                let i = at % bytes.len();
                if cut {
                    bytes.truncate(i);
                } else {
                    bytes[i] = byte;
                }
                if let Some(fast) = decode::<ClientPacket>(&bytes) {
                    let checked = crate::wire::codec::decode_packet_checked::<ClientPacket>(&bytes);
                    proptest::prop_assert_eq!(checked, Ok(fast));
                }
            }
        }
    }
}
