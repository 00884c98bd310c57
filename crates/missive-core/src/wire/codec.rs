//! Framing: `u32` big-endian payload length, then the CBOR payload.

use serde::{Serialize, de::DeserializeOwned};

/// Size of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Default largest payload (without the prefix): 256 KiB.
pub const DEFAULT_MAX_FRAME: u32 = 256 * 1024;
/// Deepest CBOR nesting accepted when decoding.
pub const CBOR_RECURSION_LIMIT: usize = 16;

/// Why bytes from the wire are not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The payload is not well-formed CBOR (or nests too deep).
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// Bytes follow the packet inside the frame.
    #[error("{extra} trailing bytes after the packet")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// Well-formed CBOR that is not a known packet.
    #[error("not a known packet: {0}")]
    UnknownPacket(String),
}

/// Why a packet could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded payload exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// Serialization failed.
    #[error("cannot encode packet: {0}")]
    Serialize(String),
}

/// Encodes `packet` as one frame.
pub fn encode_frame<P: Serialize>(packet: &P, max_frame: u32) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_frame_into(packet, max_frame, &mut out)?;
    Ok(out)
}

/// Appends one frame holding `packet` to `out`. On error `out` is unchanged.
pub fn encode_frame_into<P: Serialize>(
    packet: &P,
    max_frame: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let _ = (packet, max_frame, out);
    todo!()
}

/// Decodes one payload (without the prefix) as a packet.
pub fn decode_packet<P: DeserializeOwned>(payload: &[u8]) -> Result<P, DecodeError> {
    let _ = payload;
    todo!()
}

/// Incremental frame decoder: push byte chunks of any size, pull packets.
/// The length prefix is checked against the limit before any memory is
/// reserved for the payload. An empty decoder holds no buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: u32,
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        Self {
            max_frame,
            buf: Vec::new(),
            pos: 0,
        }
    }
    /// The payload limit.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }
    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        let _ = chunk;
        todo!()
    }
    /// The next complete frame's payload, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        todo!()
    }
    /// The next complete frame decoded as a packet, if one is buffered.
    pub fn next_packet<P: DeserializeOwned>(&mut self) -> Result<Option<P>, DecodeError> {
        todo!()
    }
    /// Bytes received but not yet returned as frames.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Bytes of memory the decoder holds (its buffer's capacity).
    pub fn memory(&self) -> usize {
        self.buf.capacity()
    }
}
