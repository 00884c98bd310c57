//! `frame_decoder`: a byte stream split into arbitrary chunks, pushed into a
//! [`FrameDecoder`] with a small limit.
//!
//! Input: `mode` byte (low two bits: 1 decodes `ClientPacket`s, 2
//! `ServerPacket`s, otherwise raw frames), `max_frame` (u16, mod 4,097),
//! `n` (byte), `n` chunk sizes (u16 each, used cyclically; none: one
//! chunk), then the stream.
//!
//! Invariants, after every push and every drain:
//! * no panic; `memory() <= max_frame + 4 + largest chunk pushed so far`;
//! * every frame returned is at most `max_frame` bytes;
//! * an empty decoder holds no memory; after an error it holds none and
//!   returns the same error forever;
//! * what comes out (frames or packets, then at most one error) equals a
//!   simple reference model of the framing, and is the same whether the
//!   stream was pushed in chunks or all at once;
//! * without an error, exactly the bytes after the last whole frame stay
//!   buffered.

use crate::codec::{Writer, byte, u16be};
use arbitrary::Unstructured;
use missive_core::wire::{
    ClientPacket, DecodeError, FrameDecoder, LENGTH_PREFIX_LEN, ServerPacket, decode_packet,
};
use std::fmt::Debug;

/// Largest `max_frame` the target uses.
pub const MAX_FRAME: u32 = 4096;

/// A parsed `frame_decoder` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInput {
    /// 0/3: frames, 1: client packets, 2: server packets.
    pub mode: u8,
    /// Payload limit.
    pub max_frame: u32,
    /// Chunk sizes, used cyclically (empty: one chunk).
    pub chunks: Vec<u16>,
    /// The stream.
    pub stream: Vec<u8>,
}

impl FrameInput {
    /// Reads the format described in the module docs.
    pub fn parse(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let mode = byte(&mut u).unwrap_or(0) & 3;
        let max_frame = u32::from(u16be(&mut u)) % (MAX_FRAME + 1);
        let n = byte(&mut u).unwrap_or(0);
        let chunks = (0..n).map(|_| u16be(&mut u)).collect();
        let stream = u.take_rest().to_vec();
        Self {
            mode,
            max_frame,
            chunks,
            stream,
        }
    }

    /// Writes the format described in the module docs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.byte(self.mode)
            .u16be(self.max_frame as u16)
            .byte(self.chunks.len() as u8);
        for c in &self.chunks {
            w.u16be(*c);
        }
        w.bytes(&self.stream);
        w.0
    }

    /// The stream cut into chunks.
    fn split(&self) -> Vec<&[u8]> {
        if self.chunks.is_empty() {
            return vec![&self.stream];
        }
        let mut out = Vec::new();
        let mut rest = &self.stream[..];
        for &size in self.chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            // A zero size pushes an empty chunk (allowed), then moves on.
            let (chunk, tail) = rest.split_at(usize::from(size).min(rest.len()));
            out.push(chunk);
            rest = tail;
            if out.len() > 4 * self.stream.len() + 8 {
                // Only zero sizes: push the rest at once.
                out.push(rest);
                break;
            }
        }
        out
    }
}

/// Runs the `frame_decoder` target on one input.
pub fn run(data: &[u8]) {
    let input = FrameInput::parse(data);
    match input.mode {
        1 => check::<ClientPacket>(&input, |d| d.next_packet(), decode_packet),
        2 => check::<ServerPacket>(&input, |d| d.next_packet(), decode_packet),
        _ => check::<Vec<u8>>(&input, |d| d.next_frame(), |p| Ok(p.to_vec())),
    }
}

type Next<T> = fn(&mut FrameDecoder) -> Result<Option<T>, DecodeError>;

/// What a decoder produced: the items, then the error (if any).
type Outcome<T> = (Vec<T>, Option<DecodeError>);

fn check<T: PartialEq + Debug + ItemLen>(
    input: &FrameInput,
    next: Next<T>,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
) {
    let (expected, consumed) = model(&input.stream, input.max_frame, decode);
    let chunked = feed(input, &input.split(), next, &expected, consumed);
    let whole = feed(input, &[&input.stream], next, &expected, consumed);
    assert_eq!(chunked, whole, "chunking changed the result");
}

/// Pushes `chunks`, draining after each, checking the invariants; returns
/// what came out.
fn feed<T: PartialEq + Debug + ItemLen>(
    input: &FrameInput,
    chunks: &[&[u8]],
    next: Next<T>,
    expected: &Outcome<T>,
    consumed: usize,
) -> Outcome<T> {
    let max = input.max_frame;
    let mut dec = FrameDecoder::new(max);
    assert_eq!(dec.memory(), 0);
    let mut items = Vec::new();
    let mut error: Option<DecodeError> = None;
    let mut largest = 0usize;
    let bound = |largest: usize| max as usize + LENGTH_PREFIX_LEN + largest;
    for chunk in chunks {
        largest = largest.max(chunk.len());
        dec.push(chunk);
        assert!(
            dec.memory() <= bound(largest),
            "after push: memory {} > {}",
            dec.memory(),
            bound(largest)
        );
        if let Some(e) = &error {
            // Errors are final: input is ignored, the buffer is gone.
            assert_eq!(next(&mut dec).as_ref(), Err(e));
            assert_eq!(dec.memory(), 0);
            assert_eq!(dec.buffered_len(), 0);
            continue;
        }
        loop {
            match next(&mut dec) {
                Ok(Some(item)) => {
                    assert!(item.len() <= max as usize, "frame over the limit");
                    items.push(item);
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(dec.memory(), 0, "an error drops the buffer");
                    assert_eq!(next(&mut dec).as_ref(), Err(&e), "errors are final");
                    error = Some(e);
                    break;
                }
            }
        }
        assert!(dec.memory() <= bound(largest), "after drain");
        if dec.buffered_len() == 0 {
            assert_eq!(dec.memory(), 0, "an empty decoder holds no buffer");
        }
    }
    assert_eq!(items, expected.0, "items differ from the model");
    assert_eq!(error, expected.1, "error differs from the model");
    if error.is_none() {
        assert_eq!(dec.buffered_len(), input.stream.len() - consumed);
    }
    (items, error)
}

/// The reference framing: whole frames in order; a prefix over the limit
/// is an error as soon as it is complete; a payload that does not decode is
/// an error. Returns the outcome and the bytes of whole frames.
fn model<T>(
    stream: &[u8],
    max: u32,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
) -> (Outcome<T>, usize) {
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        if rest.len() < LENGTH_PREFIX_LEN {
            return ((items, None), pos);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len > max {
            return ((items, Some(DecodeError::TooLarge { len, max })), pos);
        }
        let end = LENGTH_PREFIX_LEN + len as usize;
        if rest.len() < end {
            return ((items, None), pos);
        }
        match decode(&rest[LENGTH_PREFIX_LEN..end]) {
            Ok(item) => items.push(item),
            Err(e) => return ((items, Some(e)), pos),
        }
        pos += end;
    }
}

/// Size of an item as a frame payload (raw frames only; packets are
/// decoded from frames already checked by the model).
trait ItemLen {
    fn len(&self) -> usize;
}

impl ItemLen for Vec<u8> {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

impl ItemLen for ClientPacket {
    fn len(&self) -> usize {
        0
    }
}

impl ItemLen for ServerPacket {
    fn len(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_round_trips() {
        let input = FrameInput {
            mode: 1,
            max_frame: 4096,
            chunks: vec![1, 0, 7],
            stream: vec![0, 0, 0, 5, 0x64, b'p', b'i', b'n', b'g'],
        };
        assert_eq!(FrameInput::parse(&input.to_bytes()), input);
        run(&input.to_bytes());
    }
}
