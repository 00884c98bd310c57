//! A fast path for encoding packets: a serde serializer writing CBOR
//! straight into the output buffer, byte for byte what ciborium writes for
//! the shapes packets have (unsigned integers, booleans, text and byte
//! strings, options, structs, unit and struct variants, arrays and maps of
//! known length).
//!
//! Anything else (floats, negative or 128-bit integers, unknown-length
//! sequences, skipped fields, units, newtype forms, tuples, …) makes it give
//! up, and [`super::encode_frame_into`] encodes the packet with ciborium
//! instead. Like the general path it counts what would be written beyond the
//! frame limit without copying it. The fuzz target `codec_differential`
//! checks that it writes ciborium's bytes for arbitrary packets of both
//! directions, and never gives up on one.

use super::fast_de::GiveUp;
use serde::ser::{self, Serialize};

type Result<T = ()> = std::result::Result<T, GiveUp>;

/// Appends the CBOR encoding of `value` to `out`, copying its bytes only
/// while the encoding is at most `limit` bytes long (later ones are only
/// counted); returns the encoded length, which may exceed what was copied.
/// On `Err`, `out` may hold a partial encoding: the caller truncates it.
#[inline]
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize> {
    let mut ser = Ser {
        out,
        limit,
        written: 0,
    };
    value.serialize(&mut ser)?;
    Ok(ser.written)
}

pub(crate) const MAJOR_UNSIGNED: u8 = 0;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;
const NULL: u8 = 0xf6;

/// The CBOR data item head of `major` type with the shortest encoding of
/// `arg` (as ciborium writes it): the bytes, and how many of them count.
#[inline]
pub(crate) fn head(major: u8, arg: u64) -> ([u8; 9], usize) {
    let m = major << 5;
    let mut bytes = [0u8; 9];
    let len = match arg {
        0..=23 => {
            bytes[0] = m | arg as u8;
            1
        }
        24..=0xff => {
            bytes[..2].copy_from_slice(&[m | 24, arg as u8]);
            2
        }
        0x100..=0xffff => {
            bytes[0] = m | 25;
            bytes[1..3].copy_from_slice(&(arg as u16).to_be_bytes());
            3
        }
        0x1_0000..=0xffff_ffff => {
            bytes[0] = m | 26;
            bytes[1..5].copy_from_slice(&(arg as u32).to_be_bytes());
            5
        }
        _ => {
            bytes[0] = m | 27;
            bytes[1..].copy_from_slice(&arg.to_be_bytes());
            9
        }
    };
    (bytes, len)
}

/// How many bytes [`head`] takes for `arg`.
#[inline]
pub(crate) fn head_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

pub(crate) struct Ser<'a> {
    out: &'a mut Vec<u8>,
    /// Bytes of the encoding that may be copied (beyond, only counted).
    limit: usize,
    /// Bytes encoded (copied or only counted).
    written: usize,
}

impl Ser<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.written = self.written.saturating_add(bytes.len());
        if self.written <= self.limit {
            self.out.extend_from_slice(bytes);
        }
    }

    /// A data item head with the shortest encoding of `arg`.
    #[inline]
    fn head(&mut self, major: u8, arg: u64) {
        let (bytes, len) = head(major, arg);
        self.write(&bytes[..len]);
    }

    #[inline]
    fn string(&mut self, major: u8, bytes: &[u8]) {
        self.head(major, bytes.len() as u64);
        self.write(bytes);
    }
}

macro_rules! unsigned {
    ($($method:ident: $ty:ty),*) => {
        $(
            #[inline]
            fn $method(self, v: $ty) -> Result {
                self.head(MAJOR_UNSIGNED, u64::from(v));
                Ok(())
            }
        )*
    };
}

macro_rules! give_up {
    ($($method:ident: $ty:ty),*) => {
        $(
            #[cold]
            fn $method(self, _v: $ty) -> Result {
                Err(GiveUp)
            }
        )*
    };
}

impl<'a, 'b> ser::Serializer for &'a mut Ser<'b> {
    type Ok = ();
    type Error = GiveUp;
    type SerializeSeq = Self;
    type SerializeTuple = ser::Impossible<(), GiveUp>;
    type SerializeTupleStruct = ser::Impossible<(), GiveUp>;
    type SerializeTupleVariant = ser::Impossible<(), GiveUp>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    unsigned!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);
    give_up!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u128: u128,
        serialize_f32: f32, serialize_f64: f64, serialize_char: char
    );

    #[inline]
    fn serialize_bool(self, v: bool) -> Result {
        self.write(&[if v { TRUE } else { FALSE }]);
        Ok(())
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result {
        self.string(MAJOR_TEXT, v.as_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result {
        self.string(MAJOR_BYTES, v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result {
        self.write(&[NULL]);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result {
        Err(GiveUp)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result {
        Err(GiveUp)
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _value: &T,
    ) -> Result {
        Err(GiveUp)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result {
        Err(GiveUp)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        self.head(MAJOR_ARRAY, len.ok_or(GiveUp)? as u64);
        Ok(self)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        Err(GiveUp)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(GiveUp)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(GiveUp)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        self.head(MAJOR_MAP, len.ok_or(GiveUp)? as u64);
        Ok(self)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Self> {
        self.head(MAJOR_MAP, len as u64);
        Ok(self)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self> {
        self.head(MAJOR_MAP, 1);
        self.string(MAJOR_TEXT, variant.as_bytes());
        self.head(MAJOR_MAP, len as u64);
        Ok(self)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

impl ser::SerializeSeq for &mut Ser<'_> {
    type Ok = ();
    type Error = GiveUp;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        value.serialize(&mut **self)
    }

    #[inline]
    fn end(self) -> Result {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Ser<'_> {
    type Ok = ();
    type Error = GiveUp;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        key.serialize(&mut **self)
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        value.serialize(&mut **self)
    }

    #[inline]
    fn end(self) -> Result {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Ser<'_> {
    type Ok = ();
    type Error = GiveUp;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.string(MAJOR_TEXT, key.as_bytes());
        value.serialize(&mut **self)
    }

    /// The map length written counted the field: leave it to ciborium.
    fn skip_field(&mut self, _key: &'static str) -> Result {
        Err(GiveUp)
    }

    #[inline]
    fn end(self) -> Result {
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Ser<'_> {
    type Ok = ();
    type Error = GiveUp;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.string(MAJOR_TEXT, key.as_bytes());
        value.serialize(&mut **self)
    }

    fn skip_field(&mut self, _key: &'static str) -> Result {
        Err(GiveUp)
    }

    #[inline]
    fn end(self) -> Result {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{MailItem, PersistCmd};
    use crate::test_support::{CBOR_HEAD_BOUNDARIES, cbor_length_boundaries, test};
    use crate::types::{MessageId, UserName};
    use crate::wire::{ClientPacket, ErrorCode, Notice, ServerPacket, WireLimits};

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    fn same_as_ciborium<T: Serialize + std::fmt::Debug>(value: &T) {
        let mut want = Vec::new();
        ciborium::ser::into_writer(value, &mut want).unwrap();
        let mut got = vec![0xee];
        let len = encode_into(value, &mut got, usize::MAX).expect("fast path");
        assert_eq!(len, want.len(), "{value:?}");
        assert_eq!(&got[1..], &want[..], "{value:?}");
    }

    #[test]
    fn encodes_packets_exactly_like_ciborium() {
        let id = MessageId([7; 16]);
        for len in cbor_length_boundaries().chain([1, 70_000]) {
            same_as_ciborium(&ClientPacket::Send {
                id,
                to: name("bob"),
                envelope: vec![5; len].into(),
            });
        }
        for seq in CBOR_HEAD_BOUNDARIES {
            same_as_ciborium(&ClientPacket::Ack { seq });
            same_as_ciborium(&ServerPacket::Notice {
                seq,
                notice: Notice::Expired { to: name("y"), id },
            });
        }
        same_as_ciborium(&ClientPacket::Hello {
            versions: vec![1, 300],
        });
        same_as_ciborium(&ClientPacket::Ping);
        same_as_ciborium(&ClientPacket::SetPresence { online: true });
        same_as_ciborium(&ClientPacket::Prove {
            client_nonce: [3; 32],
            signature: vec![1; 256],
        });
        same_as_ciborium(&ServerPacket::Welcome {
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
        });
        same_as_ciborium(&ServerPacket::Accepted { id });
        same_as_ciborium(&ServerPacket::Pong);
        same_as_ciborium(&ServerPacket::Redirect {
            address: "node-2.example:7000".into(),
        });
        same_as_ciborium(&ServerPacket::Presence {
            user: name("z"),
            online: false,
            last_seen_ms: None,
        });
        same_as_ciborium(&ServerPacket::Presence {
            user: name("z"),
            online: true,
            last_seen_ms: Some(1_700_000_000_000),
        });
        same_as_ciborium(&ServerPacket::Error {
            code: ErrorCode::Unknown(4000),
            id: Some(id),
            user: None,
            detail: "détail".into(),
        });
        same_as_ciborium(&PersistCmd::Enqueue {
            user: name("a"),
            seq: 3,
            item: MailItem::Message {
                from: name("b"),
                id,
                envelope: vec![1, 2, 3].into(),
                enqueued_at: 1_700_000_000_000,
            },
        });
    }

    #[test]
    fn counts_without_copying_beyond_the_limit() {
        let p = ClientPacket::Send {
            id: MessageId([7; 16]),
            to: name("bob"),
            envelope: vec![5; 1000].into(),
        };
        let mut out = Vec::new();
        let len = encode_into(&p, &mut out, 100).unwrap();
        assert!(len > 1000);
        assert!(out.len() <= 100);
    }

    #[test]
    fn gives_up_on_other_shapes() {
        let mut out = Vec::new();
        assert!(encode_into(&1.5f64, &mut out, usize::MAX).is_err());
        assert!(encode_into(&-1i32, &mut out, usize::MAX).is_err());
        assert!(encode_into(&(1u8, 2u8), &mut out, usize::MAX).is_err());
        assert!(encode_into(&(), &mut out, usize::MAX).is_err());
    }
}
