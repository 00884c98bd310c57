//! Framing: `u32` big-endian payload length, then the CBOR payload.
//!
//! A frame is [`LENGTH_PREFIX_LEN`] bytes holding the payload length as a
//! big-endian `u32`, followed by the payload: exactly one CBOR data item
//! encoding one packet (see [`super::packet`]).
//!
//! Decoding is defensive, because frames come from untrusted peers:
//!
//! * the length prefix is checked against the limit before any memory is
//!   reserved for the payload;
//! * a payload in the plain CBOR that encoders write (definite lengths, no
//!   tags, known fields) is decoded by a fast path straight from the slice
//!   (`fast_de`), which only ever returns what the general path would; on
//!   anything else, every invalid payload included, it gives up and the
//!   general path decides;
//! * the general path first scans the payload (without allocating or
//!   recursing) to check that it is one well-formed CBOR data item nesting
//!   at most [`CBOR_RECURSION_LIMIT`] deep, then deserializes it with
//!   ciborium (whose own, higher, recursion limit therefore never applies);
//! * nothing decoded allocates much more than the frame itself: byte and
//!   text strings are copied from the payload (ciborium grows them as their
//!   bytes arrive; it never reserves from a length header), and the only
//!   list in a packet ([`ClientPacket::Hello`](super::ClientPacket::Hello)'s
//!   versions) is capped at [`MAX_VERSIONS`](super::packet::MAX_VERSIONS)
//!   entries without trusting the CBOR length.
//!
//! Encoding likewise takes a fast path (`fast_ser`), byte for byte what
//! ciborium writes, and falls back to ciborium where it gives up. The fuzz
//! target `codec_differential` checks both fast paths against ciborium.

use super::cbor;
use serde::{Serialize, de::DeserializeOwned};

/// Size of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Default largest payload (without the prefix): 256 KiB.
pub const DEFAULT_MAX_FRAME: u32 = 256 * 1024;
/// Deepest CBOR nesting accepted when decoding.
pub const CBOR_RECURSION_LIMIT: usize = 16;

/// Why bytes from the wire are not a valid packet.
///
/// A payload is checked in this order: it must start with one well-formed
/// CBOR data item ([`Malformed`](Self::Malformed)), that item must fill the
/// payload ([`TrailingBytes`](Self::TrailingBytes)), and it must be a packet
/// ([`UnknownPacket`](Self::UnknownPacket)).
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

/// Encodes `packet` as one frame (for a byte stream,
/// [`Framing::Stream`](super::Framing::Stream)).
///
/// ```
/// use missive_core::wire::{encode_frame, ClientPacket, DEFAULT_MAX_FRAME};
///
/// let frame = encode_frame(&ClientPacket::Ping, DEFAULT_MAX_FRAME).unwrap();
/// // 4-byte big-endian length, then the CBOR text string "ping".
/// assert_eq!(frame, b"\x00\x00\x00\x05\x64ping");
/// ```
#[inline]
pub fn encode_frame<P: Serialize>(packet: &P, max_frame: u32) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_frame_into(packet, max_frame, &mut out)?;
    Ok(out)
}

/// Appends one frame holding `packet` to `out`. On error `out` is unchanged
/// (its length and contents; its capacity may have grown).
///
/// The packet is serialized straight into `out` behind a reserved prefix,
/// which is patched afterwards.
pub fn encode_frame_into<P: Serialize>(
    packet: &P,
    max_frame: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
    match append_packet(packet, max_frame, out) {
        Ok(len) => {
            out[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Appends `packet` to `out` as a bare packet, without a length prefix: the
/// packet codec alone, for a message transport (one packet per message,
/// [`Framing::Messages`](super::Framing::Messages)). On error `out` is
/// unchanged (its length and contents; its capacity may have grown).
///
/// ```
/// use missive_core::wire::{encode_packet_into, ClientPacket, DEFAULT_MAX_FRAME};
///
/// let mut message = Vec::new();
/// encode_packet_into(&ClientPacket::Ping, DEFAULT_MAX_FRAME, &mut message).unwrap();
/// assert_eq!(message, b"\x64ping"); // the CBOR text string "ping"
/// ```
pub fn encode_packet_into<P: Serialize>(
    packet: &P,
    max_frame: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    append_packet(packet, max_frame, out)
        .map(drop)
        .inspect_err(|_| out.truncate(start))
}

/// Serializes `packet` onto the end of `out` and returns its length: by the
/// fast path (`fast_ser`), or, for a shape it gives up on, by ciborium.
/// Either way a packet larger than `max_frame` is counted but not copied
/// beyond the limit, so an oversized packet costs no more memory than a
/// maximal one. On error `out` may hold a partial packet: the caller
/// truncates it.
#[inline]
fn append_packet<P: Serialize>(
    packet: &P,
    max_frame: u32,
    out: &mut Vec<u8>,
) -> Result<u32, EncodeError> {
    let start = out.len();
    let result = match super::fast_ser::encode_into(packet, out, max_frame as usize) {
        Ok(len) => Ok(len),
        Err(_) => {
            // A shape the fast path leaves to ciborium.
            out.truncate(start);
            let mut writer = LimitedWriter {
                out,
                limit: max_frame as usize,
                written: 0,
            };
            ciborium::ser::into_writer(packet, &mut writer).map(|()| writer.written)
        }
    };
    let len = result.map_err(|e| {
        EncodeError::Serialize(match e {
            ciborium::ser::Error::Value(msg) => msg,
            ciborium::ser::Error::Io(e) => e.to_string(),
        })
    })?;
    match u32::try_from(len) {
        Ok(len32) if len32 <= max_frame => Ok(len32),
        _ => Err(EncodeError::TooLarge {
            len,
            max: max_frame,
        }),
    }
}

/// Appends to a `Vec` up to `limit` bytes, then only counts.
struct LimitedWriter<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
    written: usize,
}

impl std::io::Write for LimitedWriter<'_> {
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.written = self.written.saturating_add(data.len());
        if self.written <= self.limit {
            self.out.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes one payload (without the prefix) as a packet.
///
/// The payload must be exactly one well-formed CBOR data item, nesting at
/// most [`CBOR_RECURSION_LIMIT`] deep, that encodes a whole packet. See
/// [`DecodeError`] for the order of the checks.
pub fn decode_packet<P: DeserializeOwned>(payload: &[u8]) -> Result<P, DecodeError> {
    // Plain, valid packets decode straight from the slice; everything else
    // (including every invalid payload) takes the checked path below.
    match super::fast_de::decode(payload) {
        Some(packet) => Ok(packet),
        None => decode_packet_checked(payload),
    }
}

/// [`decode_packet`] without the fast path: scan, then ciborium. The
/// reference the fast path must agree with (`crate::fuzzing` exposes both
/// to the fuzz target `codec_differential`).
#[cold]
pub(crate) fn decode_packet_checked<P: DeserializeOwned>(payload: &[u8]) -> Result<P, DecodeError> {
    let end = cbor::item_len(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if end < payload.len() {
        return Err(DecodeError::TrailingBytes {
            extra: payload.len() - end,
        });
    }
    // ciborium reads exactly what it decodes from a `&[u8]` (it never reads
    // ahead), so what is left in `rest` is what the packet did not use.
    let mut rest = payload;
    // The scanner has bounded the nesting by CBOR_RECURSION_LIMIT, counted
    // as ciborium counts it, so ciborium's own (higher) limit never applies.
    let decoded = SCRATCH.with_borrow_mut(|scratch| {
        // A scratch as long as the payload holds any string of it whole:
        // ciborium then copies a byte string once into its `Vec`, instead of
        // in 4 KiB pieces into a growing one; and the scratch is not zeroed
        // again for every packet.
        if scratch.len() < payload.len() {
            scratch.resize(payload.len().next_power_of_two(), 0);
        }
        ciborium::de::from_reader_with_buffer::<P, _>(&mut rest, scratch)
    });
    match decoded {
        Ok(packet) if rest.is_empty() => Ok(packet),
        // E.g. `{"ping": null}`: a unit variant written as a map.
        Ok(_) => Err(DecodeError::UnknownPacket(format!(
            "the packet ends {} bytes before its CBOR data item",
            rest.len()
        ))),
        Err(e) => Err(map_de_error(e)),
    }
}

thread_local! {
    /// ciborium's scratch buffer for [`decode_packet`], reused across calls
    /// (it grows to the largest payload decoded on the thread, at most the
    /// frame limit).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Classifies a ciborium error for a payload that the scanner found to be
/// exactly one well-formed data item.
#[cold]
fn map_de_error(e: ciborium::de::Error<std::io::Error>) -> DecodeError {
    use ciborium::de::Error;
    match e {
        Error::Syntax(offset) => DecodeError::Malformed(format!(
            "invalid CBOR (e.g. text that is not UTF-8) near byte {offset}"
        )),
        Error::RecursionLimitExceeded => DecodeError::Malformed(format!(
            "nesting exceeds the recursion limit of {CBOR_RECURSION_LIMIT}"
        )),
        // The data item is complete, so running out of input means the
        // packet needed more than the item holds (e.g. a bare tag string for
        // a packet with fields).
        Error::Io(_) => {
            DecodeError::UnknownPacket("the CBOR data item ends inside the packet".into())
        }
        Error::Semantic(_, msg) => DecodeError::UnknownPacket(msg),
    }
}

/// Incremental frame decoder: push byte chunks of any size, pull packets.
/// The length prefix is checked against the limit before any memory is
/// reserved for the payload. An empty decoder holds no buffer.
///
/// Errors are final: once a frame is too large or a packet does not decode,
/// the decoder drops its buffer, ignores further input and returns the same
/// error from every call (the connection is about to be closed). Frames
/// before the bad one are still returned first.
///
/// ```
/// use missive_core::wire::{encode_frame, FrameDecoder, ServerPacket, DEFAULT_MAX_FRAME};
///
/// let mut stream = encode_frame(&ServerPacket::Pong, DEFAULT_MAX_FRAME).unwrap();
/// stream.extend(encode_frame(&ServerPacket::Pong, DEFAULT_MAX_FRAME).unwrap());
///
/// let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
/// let mut packets = Vec::new();
/// for chunk in stream.chunks(3) {
///     decoder.push(chunk);
///     while let Some(packet) = decoder.next_packet::<ServerPacket>().unwrap() {
///         packets.push(packet);
///     }
/// }
/// assert_eq!(packets, [ServerPacket::Pong, ServerPacket::Pong]);
/// assert_eq!(decoder.memory(), 0); // everything consumed: no buffer held
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: u32,
    /// Received bytes; `buf[..pos]` are consumed.
    buf: Vec<u8>,
    /// Read cursor into `buf`.
    pos: usize,
    /// The first error; returned from then on.
    error: Option<DecodeError>,
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        Self {
            max_frame,
            buf: Vec::new(),
            pos: 0,
            error: None,
        }
    }

    /// The payload limit.
    #[inline]
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Changes the payload limit for every frame not yet returned (a server
    /// raises it once a connection has logged in). Takes effect at the next
    /// frame boundary check; bytes already buffered stay buffered.
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// Appends received bytes.
    ///
    /// The buffer grows only by what `chunk` needs, except while the pending
    /// frame (whose length prefix is known and within the limit) trickles in:
    /// then it grows geometrically, but never past that frame's end, so tiny
    /// chunks do not cause a reallocation each. Consumed bytes are moved out
    /// of the way only when the buffer would otherwise have to grow. If the
    /// pending frame's prefix exceeds the limit, nothing is buffered and the
    /// decoder fails with [`DecodeError::TooLarge`]. After an error, input is
    /// ignored.
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.is_empty() || self.error.is_some() {
            return;
        }
        let live = self.buf.len() - self.pos;
        let pending = self.pending_frame_len(chunk);
        if let Some(len) = pending
            && len > self.max_frame
        {
            self.fail(DecodeError::TooLarge {
                len,
                max: self.max_frame,
            });
            return;
        }
        if self.buf.capacity() - self.buf.len() < chunk.len() {
            let need = live + chunk.len();
            let cap = self.buf.capacity();
            if need <= cap {
                // Compact: move the unconsumed bytes to the front.
                self.buf.copy_within(self.pos.., 0);
                self.buf.truncate(live);
            } else {
                let frame_end = pending.map_or(0, |len| LENGTH_PREFIX_LEN + len as usize);
                let target = need.max(cap.saturating_mul(2).min(frame_end));
                if self.pos == 0 {
                    self.buf.reserve_exact(target - live);
                } else {
                    // Copy only the unconsumed bytes, not the whole buffer
                    // (as a reallocation would).
                    let mut grown = Vec::with_capacity(target);
                    grown.extend_from_slice(&self.buf[self.pos..]);
                    self.buf = grown;
                }
            }
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The payload length announced by the first unconsumed frame, if its
    /// prefix is within the buffered bytes followed by `chunk`.
    #[inline]
    fn pending_frame_len(&self, chunk: &[u8]) -> Option<u32> {
        let live = &self.buf[self.pos..];
        if live.len() >= LENGTH_PREFIX_LEN {
            return Some(prefix(live));
        }
        if live.len() + chunk.len() < LENGTH_PREFIX_LEN {
            return None;
        }
        let mut bytes = [0u8; LENGTH_PREFIX_LEN];
        bytes[..live.len()].copy_from_slice(live);
        bytes[live.len()..].copy_from_slice(&chunk[..LENGTH_PREFIX_LEN - live.len()]);
        Some(u32::from_be_bytes(bytes))
    }

    /// The bounds `(start, end)` of the next complete frame's payload in
    /// `buf`, if one is buffered.
    #[inline]
    fn next_bounds(&mut self) -> Result<Option<(usize, usize)>, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let live = &self.buf[self.pos..];
        if live.len() < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let len = prefix(live);
        if len > self.max_frame {
            return Err(self.fail(DecodeError::TooLarge {
                len,
                max: self.max_frame,
            }));
        }
        let total = LENGTH_PREFIX_LEN + len as usize;
        if live.len() < total {
            return Ok(None);
        }
        Ok(Some((self.pos + LENGTH_PREFIX_LEN, self.pos + total)))
    }

    /// Marks the buffer as consumed up to `end`; releases it when empty.
    #[inline]
    fn consume(&mut self, end: usize) {
        if end == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        } else {
            self.pos = end;
        }
    }

    /// Records a final error and drops the buffer.
    #[cold]
    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.error = Some(e.clone());
        self.buf = Vec::new();
        self.pos = 0;
        e
    }

    /// The next complete frame's payload, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let Some((start, end)) = self.next_bounds()? else {
            return Ok(None);
        };
        let payload = self.buf[start..end].to_vec();
        self.consume(end);
        Ok(Some(payload))
    }

    /// The next complete frame decoded as a packet, if one is buffered.
    /// The payload is decoded in place, without copying it.
    pub fn next_packet<P: DeserializeOwned>(&mut self) -> Result<Option<P>, DecodeError> {
        let Some((start, end)) = self.next_bounds()? else {
            return Ok(None);
        };
        match decode_packet(&self.buf[start..end]) {
            Ok(packet) => {
                self.consume(end);
                Ok(Some(packet))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Like [`push`](Self::push)ing `input` then calling
    /// [`next_packet`](Self::next_packet), except that while nothing is
    /// buffered, a complete frame at the front of `input` is decoded where it
    /// lies, without being copied into (or allocating) the buffer. Advances
    /// `input` past what it consumed; call again until `Ok(None)`, which
    /// means `input` has been taken whole. Such a frame is first offered to
    /// `hot` (a hand-written decoder of the commonest packets, which returns
    /// `None` for anything it leaves to [`decode_packet`]).
    pub(crate) fn next_packet_from<P: DeserializeOwned>(
        &mut self,
        input: &mut &[u8],
        hot: fn(&[u8]) -> Option<P>,
    ) -> Result<Option<P>, DecodeError> {
        if self.error.is_none() && self.buf.len() == self.pos && input.len() >= LENGTH_PREFIX_LEN {
            let len = prefix(input);
            // Saturating: a 32-bit usize (wasm32) would overflow on a
            // huge prefix, which the limit check below refuses anyway.
            let total = LENGTH_PREFIX_LEN.saturating_add(len as usize);
            if len <= self.max_frame && input.len() >= total {
                let payload = &input[LENGTH_PREFIX_LEN..total];
                let decoded = match hot(payload) {
                    Some(packet) => Ok(packet),
                    None => decode_packet(payload),
                };
                return match decoded {
                    Ok(packet) => {
                        *input = &input[total..];
                        Ok(Some(packet))
                    }
                    Err(e) => {
                        *input = &[];
                        Err(self.fail(e))
                    }
                };
            }
        }
        self.push(input);
        *input = &[];
        self.next_packet()
    }

    /// Decodes one message of a message transport
    /// ([`Framing::Messages`](super::Framing::Messages)), which is one bare
    /// packet: its length is checked against the limit first (a message
    /// longer than the limit is [`DecodeError::TooLarge`]), then it is
    /// decoded where it lies. Errors are final, as for frames.
    pub fn decode_message<P: DeserializeOwned>(
        &mut self,
        message: &[u8],
    ) -> Result<P, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        if len > self.max_frame {
            return Err(self.fail(DecodeError::TooLarge {
                len,
                max: self.max_frame,
            }));
        }
        decode_packet(message).map_err(|e| self.fail(e))
    }

    /// Bytes received but not yet returned as frames.
    #[inline]
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes of memory the decoder holds (its buffer's capacity).
    #[inline]
    pub fn memory(&self) -> usize {
        self.buf.capacity()
    }
}

/// The payloads of the whole frames in `frames` (bytes this crate encoded
/// with [`encode_frame_into`]), in order: how a connection's queued frames
/// become one message each on a message transport.
pub(crate) fn frame_payloads(mut frames: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if frames.len() < LENGTH_PREFIX_LEN {
            return None;
        }
        let end = (LENGTH_PREFIX_LEN + prefix(frames) as usize).min(frames.len());
        let payload = &frames[LENGTH_PREFIX_LEN..end];
        frames = &frames[end..];
        Some(payload)
    })
}

/// The big-endian length prefix at the start of `bytes` (at least 4 long).
#[inline]
fn prefix(bytes: &[u8]) -> u32 {
    let mut b = [0u8; LENGTH_PREFIX_LEN];
    b.copy_from_slice(&bytes[..LENGTH_PREFIX_LEN]);
    u32::from_be_bytes(b)
}

#[cfg(test)]
mod tests;
