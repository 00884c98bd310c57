//! `codec_differential`: the hand-written CBOR fast paths of the wire codec
//! (`fast_de`, `fast_ser`) against the general path (the well-formedness
//! scan, then ciborium), through `missive_core::fuzzing`. Fuzzing builds
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
//!   any number of versions), then a frame limit. The fast encoder and
//!   ciborium give identical bytes, or both refuse (a Hello listing more than
//!   `MAX_VERSIONS` versions); the fast decoder takes those bytes back to the
//!   same packet (an encoder's output never leaves the fast path);
//!   `encode_frame` under the limit gives exactly that payload behind its
//!   length prefix, or `TooLarge` with ciborium's length.

use crate::packets::{ArbClientPacket, ArbServerPacket};
use arbitrary::{Arbitrary, Unstructured};
use missive_core::fuzzing::{checked_decode, ciborium_encode, fast_decode, fast_encode};
use missive_core::wire::{
    ClientPacket, EncodeError, LENGTH_PREFIX_LEN, ServerPacket, encode_frame,
};
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;

/// Runs the `codec_differential` target on one input.
pub fn run(data: &[u8]) {
    decode_both_ways::<ClientPacket>(data);
    decode_both_ways::<ServerPacket>(data);
    let mut u = Unstructured::new(data);
    if let Ok(p) = ArbClientPacket::arbitrary(&mut u) {
        let limit = u.arbitrary::<u32>().unwrap_or(u32::MAX);
        encode_both_ways(&p.into_packet(usize::MAX), limit);
    }
    if let Ok(p) = ArbServerPacket::arbitrary(&mut u) {
        let limit = u.arbitrary::<u32>().unwrap_or(u32::MAX);
        encode_both_ways(&ServerPacket::from(p), limit);
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
/// decoder takes back to `packet`; `encode_frame` honours `limit`.
fn encode_both_ways<P: Serialize + DeserializeOwned + PartialEq + Debug>(packet: &P, limit: u32) {
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
        return;
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
}
