//! Fuzzing builds only (`--cfg fuzzing`, set by cargo-fuzz): the crate's
//! internals that the differential fuzz target (`fuzz/`, target
//! `codec_differential`) compares, in the manner of quinn-proto's
//! `pub mod fuzzing`. Nothing here is part of the normal API.
//!
//! [`crate::wire::decode_packet`] tries [`fast_decode`] and, when it gives
//! up, returns [`checked_decode`]; [`crate::wire::encode_frame_into`] tries
//! [`fast_encode`] and, when it gives up, encodes with ciborium
//! ([`ciborium_encode`]). The fast paths are correct when every answer they
//! give equals the general path's.

use crate::wire::DecodeError;
use serde::{Serialize, de::DeserializeOwned};

/// The fast decoder alone: `None` when it gives up.
pub fn fast_decode<P: DeserializeOwned>(payload: &[u8]) -> Option<P> {
    crate::wire::fast_de::decode(payload)
}

/// The server's hand-written decoder of `send` and `ack` alone
/// (`wire::hot_decode`): `None` when it leaves the payload to
/// [`crate::wire::decode_packet`].
pub fn hot_decode_client(payload: &[u8]) -> Option<crate::wire::ClientPacket> {
    crate::wire::hot_decode::client_packet(payload)
}

/// The general decoder alone (well-formedness scan, then ciborium): what
/// [`crate::wire::decode_packet`] answers when the fast path gives up.
pub fn checked_decode<P: DeserializeOwned>(payload: &[u8]) -> Result<P, DecodeError> {
    crate::wire::codec::decode_packet_checked(payload)
}

/// The fast encoder alone, without a size limit: `None` when it gives up.
pub fn fast_encode<P: Serialize>(packet: &P) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let len = crate::wire::fast_ser::encode_into(packet, &mut out, usize::MAX).ok()?;
    assert_eq!(
        len,
        out.len(),
        "without a limit every counted byte is written"
    );
    Some(out)
}

/// ciborium's encoding, the reference for [`fast_encode`]; `None` when
/// ciborium refuses the value.
pub fn ciborium_encode<P: Serialize>(packet: &P) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(packet, &mut out).ok()?;
    Some(out)
}
