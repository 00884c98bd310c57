//! `codec_differential`: the hand-written CBOR fast paths of the wire codec
//! (`fast_de`, `fast_ser`, and the server's `hot_decode` of `send` and
//! `ack`) against the general path (the well-formedness scan, then
//! ciborium), through `missive_core::fuzzing`. Fuzzing builds
//! only (`--cfg fuzzing`): that module does not exist otherwise.
//!
//! The input is read twice.
//!
//! * **Decoding.** The whole input is one payload, decoded as a
//!   `ClientPacket` and as a `ServerPacket`. Whenever the fast decoder
//!   returns a packet, the general decoder returns an equal packet: that is
//!   the contract `decode_packet` relies on, since it returns the fast
//!   decoder's packet as it is. When the fast decoder gives up, nothing is
//!   checked: `decode_packet` then answers with the general decoder itself,
//!   so giving up on bytes ciborium accepts (indefinite lengths, tags,
//!   unknown fields, …) or rejects is by design.
//! * **Encoding.** The same bytes read as a structured packet of each
//!   direction (the derived `Arbitrary` mirrors of `packets`, a Hello with
//!   any number of versions), each followed by a frame limit, a number of
//!   edits (0 to 4) and the edits. The fast encoder and ciborium give identical bytes, or both
//!   refuse (a Hello listing more than `MAX_VERSIONS` versions); the fast
//!   decoder takes those bytes back to the same packet (an encoder's output
//!   never leaves the fast path); `encode_frame` under the limit gives
//!   exactly that payload behind its length prefix, or `TooLarge` with
//!   ciborium's length.
//! * **Decoding near-valid payloads.** That encoding with the edits applied
//!   (a byte set — any byte, or one of the CBOR initial bytes that change
//!   an item's kind or head length —, inserted or removed at a position
//!   taken modulo the length) is decoded both ways as above. Random bytes rarely come close
//!   to a packet; one changed byte of a real one (a `null` where a `bool`
//!   belongs, a longer head, a cut) is where a fast path would go wrong.

use crate::packets::{ArbClientPacket, ArbServerPacket};
use arbitrary::{Arbitrary, Unstructured};
use missive_core::fuzzing::{
    checked_decode, ciborium_encode, fast_decode, fast_encode, hot_decode_client,
};
use missive_core::wire::{
    ClientPacket, EncodeError, LENGTH_PREFIX_LEN, ServerPacket, encode_frame,
};
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;

/// Runs the `codec_differential` target on one input.
pub fn run(data: &[u8]) {
    decode_both_ways::<ClientPacket>(data);
    decode_both_ways::<ServerPacket>(data);
    hot_decode_agrees(data);
    let mut u = Unstructured::new(data);
    if let Ok(p) = ArbClientPacket::arbitrary(&mut u) {
        structured(&p.into_packet(usize::MAX), &mut u);
    }
    if let Ok(p) = ArbServerPacket::arbitrary(&mut u) {
        structured(&ServerPacket::from(p), &mut u);
    }
}

/// Most edits applied to one encoding.
const MAX_EDITS: usize = 4;

/// Initial bytes that change what a CBOR data item is: simple values
/// (`false`, `true`, `null`, `undefined`, a two-byte simple value, floats),
/// longer heads (1, 2, 4, 8-byte arguments of each major type), negative
/// integers, empty and indefinite-length strings, arrays and maps, a break,
/// tags, reserved values.
const CBOR_INITIAL_BYTES: [u8; 32] = [
    0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0x18, 0x19, 0x1a, 0x1b, 0x38, 0x58, 0x78, 0x98,
    0xb8, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xa1, 0x5f, 0x7f, 0x9f, 0xbf, 0xff, 0xc0, 0xd8, 0x1c, 0x17,
];

/// One change to an encoded packet; positions are taken modulo the length.
#[derive(Debug, Arbitrary)]
enum Edit {
    Set {
        at: u16,
        byte: u8,
    },
    /// Sets one of [`CBOR_INITIAL_BYTES`] (index modulo its length).
    SetInitial {
        at: u16,
        which: u8,
    },
    Insert {
        at: u16,
        byte: u8,
    },
    Remove {
        at: u16,
    },
}

/// Encodes `packet` both ways, then decodes an edited copy both ways.
fn structured<P: Serialize + DeserializeOwned + PartialEq + Debug>(
    packet: &P,
    u: &mut Unstructured<'_>,
) {
    let limit = u.arbitrary::<u32>().unwrap_or(u32::MAX);
    let Some(mut payload) = encode_both_ways(packet, limit) else {
        return;
    };
    let edits = u.int_in_range(0..=MAX_EDITS).unwrap_or(0);
    for _ in 0..edits {
        let Ok(edit) = Edit::arbitrary(u) else { break };
        let at = |at: u16, len: usize| usize::from(at) % len.max(1);
        match edit {
            Edit::Set { at: i, byte } if !payload.is_empty() => {
                let i = at(i, payload.len());
                payload[i] = byte;
            }
            Edit::SetInitial { at: i, which } if !payload.is_empty() => {
                let i = at(i, payload.len());
                payload[i] = CBOR_INITIAL_BYTES[usize::from(which) % CBOR_INITIAL_BYTES.len()];
            }
            Edit::Insert { at: i, byte } => payload.insert(at(i, payload.len() + 1), byte),
            Edit::Remove { at: i } if !payload.is_empty() => {
                payload.remove(at(i, payload.len()));
            }
            _ => {}
        }
    }
    decode_both_ways::<ClientPacket>(&payload);
    decode_both_ways::<ServerPacket>(&payload);
    hot_decode_agrees(&payload);
}

/// Whenever the server's hand-written `send`/`ack` decoder returns a
/// packet, the general decoder returns an equal one.
fn hot_decode_agrees(payload: &[u8]) {
    if let Some(hot) = hot_decode_client(payload) {
        match checked_decode::<ClientPacket>(payload) {
            Ok(checked) => assert_eq!(hot, checked, "the hot decoder disagrees"),
            Err(e) => panic!("the hot decoder accepted {hot:?}, the general one says: {e}"),
        }
    }
}

/// Whenever the fast decoder accepts `payload`, the general one decodes the
/// same packet.
fn decode_both_ways<P: DeserializeOwned + PartialEq + Debug>(payload: &[u8]) {
    if let Some(fast) = fast_decode::<P>(payload) {
        match checked_decode::<P>(payload) {
            Ok(checked) => assert_eq!(fast, checked, "the decoders disagree"),
            Err(e) => panic!("the fast decoder accepted {fast:?}, the general one says: {e}"),
        }
    }
}

/// Both encoders give the same bytes (or both refuse), which the fast
/// decoder takes back to `packet`; `encode_frame` honours `limit`. Returns
/// the encoding.
fn encode_both_ways<P: Serialize + DeserializeOwned + PartialEq + Debug>(
    packet: &P,
    limit: u32,
) -> Option<Vec<u8>> {
    let reference = ciborium_encode(packet);
    assert_eq!(
        fast_encode(packet),
        reference,
        "the encoders disagree on {packet:?}"
    );
    let Some(payload) = reference else {
        assert!(
            matches!(
                encode_frame(packet, u32::MAX),
                Err(EncodeError::Serialize(_))
            ),
            "{packet:?} does not encode, but encode_frame framed it"
        );
        return None;
    };
    assert_eq!(
        fast_decode::<P>(&payload).as_ref(),
        Some(packet),
        "an encoding left the fast decoder"
    );
    // A limit around the payload's length, where the cut-off matters.
    let limit = limit % (2 * payload.len() as u32 + 1);
    match encode_frame(packet, limit) {
        Ok(frame) => {
            assert!(payload.len() <= limit as usize, "a frame over the limit");
            assert_eq!(
                &frame[..LENGTH_PREFIX_LEN],
                &(payload.len() as u32).to_be_bytes()
            );
            assert_eq!(&frame[LENGTH_PREFIX_LEN..], &payload[..]);
        }
        Err(e) => assert_eq!(
            e,
            EncodeError::TooLarge {
                len: payload.len(),
                max: limit
            },
            "{packet:?} under a limit of {limit}"
        ),
    }
    Some(payload)
}
