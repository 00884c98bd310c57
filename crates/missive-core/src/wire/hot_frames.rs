//! Hand-written encoders for the frames every message costs the server:
//! `accepted` to its sender, `message` to its recipient and the `notice`
//! that tells the sender of its fate. They write, byte for byte, the frame
//! [`super::encode_frame_into`] writes for the same [`ServerPacket`]
//! (ciborium's encoding behind the length prefix; the proptests below
//! compare them with ciborium directly), and refuse a frame over the limit
//! with the same error, before writing anything. PROTOCOL.md stays the
//! definition of these packets; this is only a faster way to write them.
//!
//! [`ServerPacket`]: super::ServerPacket

use super::fast_ser::{MAJOR_BYTES, MAJOR_MAP, MAJOR_TEXT, MAJOR_UNSIGNED, head, head_len};
use super::{EncodeError, LENGTH_PREFIX_LEN, Notice};
use crate::types::{MessageId, Seq, UserName};

/// Appends the frame of `ServerPacket::Accepted { id }`.
pub(crate) fn accepted(
    id: &MessageId,
    max_frame: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    // {"accepted": {"id": id}}
    let len = 1 + text_len("accepted") + 1 + text_len("id") + bytes_len(&id.0);
    let mut frame = Frame::start(len, max_frame, out)?;
    frame.map(1);
    frame.text("accepted");
    frame.map(1);
    frame.text("id");
    frame.bytes(&id.0);
    Ok(())
}

/// Appends the frame of `ServerPacket::Message { seq, from, id, envelope }`.
pub(crate) fn message(
    seq: Seq,
    from: &UserName,
    id: &MessageId,
    envelope: &[u8],
    max_frame: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    // {"message": {"seq": seq, "from": from, "id": id, "envelope": envelope}}
    let len = 1
        + text_len("message")
        + 1
        + text_len("seq")
        + head_len(seq)
        + text_len("from")
        + text_len(from.as_str())
        + text_len("id")
        + bytes_len(&id.0)
        + text_len("envelope")
        + bytes_len(envelope);
    let mut frame = Frame::start(len, max_frame, out)?;
    frame.map(1);
    frame.text("message");
    frame.map(4);
    frame.text("seq");
    frame.unsigned(seq);
    frame.text("from");
    frame.text(from.as_str());
    frame.text("id");
    frame.bytes(&id.0);
    frame.text("envelope");
    frame.bytes(envelope);
    Ok(())
}

/// Appends the frame of `ServerPacket::Notice { seq, notice }`.
pub(crate) fn notice(
    seq: Seq,
    notice: &Notice,
    max_frame: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let (variant, to, id) = match notice {
        Notice::Delivered { to, id } => ("delivered", to, id),
        Notice::Expired { to, id } => ("expired", to, id),
    };
    // {"notice": {"seq": seq, "notice": {variant: {"to": to, "id": id}}}}
    let len = 1
        + text_len("notice")
        + 1
        + text_len("seq")
        + head_len(seq)
        + text_len("notice")
        + 1
        + text_len(variant)
        + 1
        + text_len("to")
        + text_len(to.as_str())
        + text_len("id")
        + bytes_len(&id.0);
    let mut frame = Frame::start(len, max_frame, out)?;
    frame.map(1);
    frame.text("notice");
    frame.map(2);
    frame.text("seq");
    frame.unsigned(seq);
    frame.text("notice");
    frame.map(1);
    frame.text(variant);
    frame.map(2);
    frame.text("to");
    frame.text(to.as_str());
    frame.text("id");
    frame.bytes(&id.0);
    Ok(())
}

fn text_len(text: &str) -> usize {
    head_len(text.len() as u64) + text.len()
}

fn bytes_len(bytes: &[u8]) -> usize {
    head_len(bytes.len() as u64) + bytes.len()
}

/// A frame being appended, its length already known and checked.
struct Frame<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Frame<'a> {
    /// Writes the length prefix of a `len`-byte payload, or refuses a
    /// payload over `max_frame` as the general encoder does.
    #[inline]
    fn start(len: usize, max_frame: u32, out: &'a mut Vec<u8>) -> Result<Self, EncodeError> {
        let len32 = u32::try_from(len)
            .ok()
            .filter(|&len32| len32 <= max_frame)
            .ok_or(EncodeError::TooLarge {
                len,
                max: max_frame,
            })?;
        out.reserve(LENGTH_PREFIX_LEN + len);
        out.extend_from_slice(&len32.to_be_bytes());
        Ok(Self { out })
    }

    /// Pushed byte by byte: a head is 1–9 bytes, cheaper to store one by
    /// one (capacity is reserved) than through a call to `memcpy`.
    #[inline]
    fn head(&mut self, major: u8, arg: u64) {
        let (bytes, len) = head(major, arg);
        for &byte in &bytes[..len] {
            self.out.push(byte);
        }
    }

    #[inline]
    fn map(&mut self, entries: u64) {
        self.head(MAJOR_MAP, entries);
    }

    #[inline]
    fn unsigned(&mut self, n: u64) {
        self.head(MAJOR_UNSIGNED, n);
    }

    #[inline]
    fn text(&mut self, text: &str) {
        self.head(MAJOR_TEXT, text.len() as u64);
        self.out.extend_from_slice(text.as_bytes());
    }

    #[inline]
    fn bytes(&mut self, bytes: &[u8]) {
        self.head(MAJOR_BYTES, bytes.len() as u64);
        self.out.extend_from_slice(bytes);
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;
    use crate::test_support::{CBOR_HEAD_BOUNDARIES, cbor_length_boundaries};
    use crate::wire::ServerPacket;
    use proptest::prelude::*;

    /// The frame of `packet` as ciborium writes it: the reference.
    fn ciborium_frame(packet: &ServerPacket) -> Vec<u8> {
        let mut payload = Vec::new();
        ciborium::into_writer(packet, &mut payload).expect("encodes");
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        frame
    }

    /// Appends with `encode` after `prefix` (frames go behind others in a
    /// connection's buffer) and returns what was appended.
    fn appended(
        prefix: &[u8],
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = prefix.to_vec();
        let result = encode(&mut out);
        assert_eq!(&out[..prefix.len()], prefix, "what was there stays");
        result.map(|()| out[prefix.len()..].to_vec())
    }

    fn user_name() -> impl Strategy<Value = UserName> {
        "[a-z0-9._-]{1,32}".prop_map(|s| UserName::new(s).expect("valid"))
    }

    /// Integers on both sides of every head-length boundary, and any.
    fn seq() -> impl Strategy<Value = Seq> {
        prop_oneof![
            prop::sample::select(CBOR_HEAD_BOUNDARIES.to_vec()),
            any::<u64>(),
        ]
    }

    /// Envelope lengths on both sides of the head-length boundaries.
    fn envelope() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            prop::sample::select(cbor_length_boundaries().collect::<Vec<_>>())
                .prop_map(|len| vec![0xa5; len]),
        ]
    }

    fn message_id() -> impl Strategy<Value = MessageId> {
        any::<[u8; 16]>().prop_map(MessageId)
    }

    proptest! {
        #[test]
        fn accepted_is_ciboriums(id in message_id(), prefix in any::<Vec<u8>>()) {
            prop_assert_eq!(
                appended(&prefix, |out| accepted(&id, u32::MAX, out)),
                Ok(ciborium_frame(&ServerPacket::Accepted { id }))
            );
        }

        #[test]
        fn message_is_ciboriums(
            seq in seq(),
            from in user_name(),
            id in message_id(),
            envelope in envelope(),
            prefix in any::<Vec<u8>>(),
        ) {
            let reference = ciborium_frame(&ServerPacket::Message {
                seq,
                from: from.clone(),
                id,
                envelope: envelope.clone(),
            });
            prop_assert_eq!(
                appended(&prefix, |out| message(seq, &from, &id, &envelope, u32::MAX, out)),
                Ok(reference)
            );
        }

        #[test]
        fn notices_are_ciboriums(
            seq in seq(),
            to in user_name(),
            id in message_id(),
            delivered in any::<bool>(),
            prefix in any::<Vec<u8>>(),
        ) {
            let notice_sent = if delivered {
                Notice::Delivered { to, id }
            } else {
                Notice::Expired { to, id }
            };
            let reference = ciborium_frame(&ServerPacket::Notice { seq, notice: notice_sent.clone() });
            prop_assert_eq!(
                appended(&prefix, |out| notice(seq, &notice_sent, u32::MAX, out)),
                Ok(reference)
            );
        }

        /// Over the limit: the general encoder's error, nothing appended;
        /// at the limit exactly: the frame.
        #[test]
        fn the_limit_is_the_general_encoders(
            from in user_name(),
            envelope in envelope(),
            slack in 0u32..3,
        ) {
            let id = MessageId([7; 16]);
            let packet = ServerPacket::Message { seq: 1, from: from.clone(), id, envelope: envelope.clone() };
            let len = ciborium_frame(&packet).len() as u32 - LENGTH_PREFIX_LEN as u32;
            let max_frame = (len + 1).saturating_sub(slack);
            let general = appended(b"x", |out| crate::wire::encode_frame_into(&packet, max_frame, out));
            let hot = appended(b"x", |out| message(1, &from, &id, &envelope, max_frame, out));
            prop_assert_eq!(hot, general);
        }
    }
}
