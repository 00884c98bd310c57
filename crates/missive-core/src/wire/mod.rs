//! Wire format: one CBOR packet, behind a 4-byte big-endian length prefix on
//! a byte stream or alone in a message on a message transport ([`Framing`]).
//!
//! [`codec`] turns packets into frames (or bare packets) and byte streams
//! (or messages) back into packets;
//! [`packet`] defines the packets of protocol version 1.

mod cbor;
pub mod codec;
pub(crate) mod fast_de;
pub(crate) mod fast_ser;
mod framing;
pub(crate) mod hot_decode;
pub(crate) mod hot_frames;
pub mod packet;
#[cfg(test)]
mod testutil;
#[cfg(test)]
mod vectors;

pub use codec::{
    CBOR_RECURSION_LIMIT, DEFAULT_MAX_FRAME, DecodeError, EncodeError, FrameDecoder,
    LENGTH_PREFIX_LEN, decode_packet, encode_frame, encode_frame_into, encode_packet_into,
};
pub use framing::{Framing, Link};
pub use packet::{
    ClientPacket, ErrorCode, MAX_VERSIONS, Nonce, Notice, PROTOCOL_VERSION, PROTOCOL_VERSION_V1,
    ServerPacket, WireLimits,
};
