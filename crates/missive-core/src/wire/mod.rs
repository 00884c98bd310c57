//! Wire format: 4-byte big-endian length prefix + one CBOR packet.
//!
//! [`codec`] turns packets into frames and byte streams back into packets;
//! [`packet`] defines the packets of protocol version 1.

mod cbor;
pub mod codec;
pub(crate) mod fast_de;
pub(crate) mod fast_ser;
pub mod packet;
#[cfg(test)]
mod testutil;
#[cfg(test)]
mod vectors;

pub use codec::{
    CBOR_RECURSION_LIMIT, DEFAULT_MAX_FRAME, DecodeError, EncodeError, FrameDecoder,
    LENGTH_PREFIX_LEN, decode_packet, encode_frame, encode_frame_into,
};
pub use packet::{
    ClientPacket, ErrorCode, MAX_VERSIONS, Nonce, Notice, PROTOCOL_VERSION, PROTOCOL_VERSION_V1,
    ServerPacket, WireLimits,
};
