//! Frame encode and decode throughput, against a memcpy of the same bytes.
//!
//! For each envelope size a stream of whole `Send` frames of about 256 KiB
//! (at least one frame) is built. Every benchmark in a group handles exactly
//! that stream, so their MB/s compare directly:
//!
//! * `memcpy`: copies the stream into a preallocated buffer (the baseline);
//! * `encode`: encodes the frames of the stream into a reused buffer with
//!   `encode_frame_into`;
//! * `decode`: feeds the stream to a `FrameDecoder` in 64 KiB chunks, as a
//!   socket read would, and pulls every packet with
//!   `next_packet::<ClientPacket>()`.
//!
//! Run: `cargo bench -p missive-core --bench codec`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use missive_core::wire::{
    ClientPacket, DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, encode_frame_into,
};
use missive_core::{MessageId, UserName};
use std::hint::black_box;
use std::time::Duration;

/// Bytes per socket read handed to the decoder.
const READ_CHUNK: usize = 64 * 1024;
/// Approximate size of the stream each benchmark handles.
const STREAM_TARGET: usize = 256 * 1024;

/// A `Send` packet with an envelope of `len` bytes.
fn send_packet(len: usize) -> ClientPacket {
    ClientPacket::Send {
        id: MessageId([0x5a; 16]),
        to: UserName::new("user0001").expect("valid name"),
        envelope: (0..len).map(|i| (i * 31 + 7) as u8).collect(),
    }
}

fn bench_codec(c: &mut Criterion) {
    // Envelope lengths: ≈150-byte frame (a short chat line), 4 KiB, 64 KiB.
    for (label, envelope_len) in [("small", 105), ("4KiB", 4096), ("64KiB", 65536)] {
        let packet = send_packet(envelope_len);
        let frame = encode_frame(&packet, DEFAULT_MAX_FRAME).expect("encodes");
        let frames = (STREAM_TARGET / frame.len()).max(1);
        let stream: Vec<u8> = frame.repeat(frames);

        let mut group = c.benchmark_group(format!("codec/{label}_{}B_frames", frame.len()));
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.measurement_time(Duration::from_secs(3));

        let mut copy = vec![0u8; stream.len()];
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                copy.copy_from_slice(black_box(&stream));
                black_box(&mut copy);
            })
        });

        let mut out = Vec::with_capacity(stream.len());
        group.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..frames {
                    encode_frame_into(black_box(&packet), DEFAULT_MAX_FRAME, &mut out)
                        .expect("encodes");
                }
                black_box(&mut out);
            })
        });
        assert_eq!(out, stream, "encode reproduces the stream");

        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        group.bench_function("decode", |b| {
            b.iter(|| {
                let mut n = 0;
                for chunk in black_box(&stream).chunks(READ_CHUNK) {
                    decoder.push(chunk);
                    while let Some(p) = decoder.next_packet::<ClientPacket>().expect("decodes") {
                        black_box(p);
                        n += 1;
                    }
                }
                assert_eq!(n, frames);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
