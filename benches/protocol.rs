//! Criterion benchmarks of the protocol codec and of the copies around it: what the
//! sending and receiving sides do per frame chunk, the owned `encode`/`decode` path next to
//! it, the producer's copy (`Frame::copied`) next to a plain memcpy, and the only row
//! unpadding there is (`Frame::rows` / `Frame::to_image`, for PNG snapshots).
//!
//! Throughput is pixel payload bytes: for the head-only paths it shows that their cost
//! does not grow with the payload. Before anything is timed, the bytes the benchmarks
//! feed are checked against `decode`, so that they measure the real wire format.
//! Results and conclusions: `BENCHMARKS.md`, "Protocol and copy microbenchmarks".

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use texstream::frame::{Frame, FrameGeometry, FramePool, PixelFormat};
use texstream::protocol::{
    decode, decode_body, encode, encode_bulk_head, Assembled, BulkHead, Envelope, FrameAssembler,
    Kind, Limits, Message, BULK_HEAD_LEN, DEFAULT_CHUNK_BYTES, ENVELOPE_LEN,
};

/// Frame sizes measured: name, width, height.
const SIZES: [(&str, u32, u32); 2] = [("1080p", 1920, 1080), ("4k", 3840, 2160)];

/// Envelope and bulk head of one chunk, as the link writer sends them before the payload.
type ChunkHead = [u8; ENVELOPE_LEN + BULK_HEAD_LEN];

/// Bytes that are not all alike (XXH3 and memcpy do not care, but a reader of a profile
/// might wonder).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A frame of `width` x `height` with rows padded as wgpu readback pads them.
fn padded_geometry(width: u32, height: u32) -> FrameGeometry {
    let row = width * 4;
    FrameGeometry {
        width,
        height,
        format: PixelFormat::Rgba8,
        bytes_per_row: row.div_ceil(256) * 256,
    }
}

fn make_frame(width: u32, height: u32, seq: u64) -> Frame {
    let g = padded_geometry(width, height);
    let src = pattern(g.total_len(), seq);
    Frame::copied(g, seq, 1_000_000, &src, &FramePool::new(1))
}

/// What the link writer produces for one frame: the encoded frame start, then one head
/// per chunk of at most `chunk_bytes`; each head's payload is `pixels[offset..offset+len]`.
fn sender_messages(frame: &Frame, chunk_bytes: usize, pending: &mut Vec<u8>) -> Vec<ChunkHead> {
    encode(&Message::FrameStart(frame.meta().start_message()), pending);
    let seq = frame.meta().seq;
    frame
        .pixels()
        .chunks(chunk_bytes)
        .enumerate()
        .map(|(i, payload)| {
            encode_bulk_head(
                Kind::FrameChunk,
                seq,
                (i * chunk_bytes) as u64,
                payload.len(),
            )
        })
        .collect()
}

/// What the link reader does with one frame, given the bytes the sender wrote: decode the
/// frame start, then per chunk parse the envelope and head, ask the assembler where the
/// payload goes, put it there (the socket read; skipped when `copy` is false, the buffer
/// then already holds the frame) and let the assembler hash it.
fn receive_frame(
    asm: &mut FrameAssembler,
    start: &[u8],
    heads: &[ChunkHead],
    pixels: &[u8],
    copy: bool,
    limits: &Limits,
) -> Frame {
    let env = Envelope::parse(start[..ENVELOPE_LEN].try_into().expect("5 bytes"), limits)
        .expect("frame start envelope");
    let Ok(Message::FrameStart(s)) = decode_body(env.kind, &start[ENVELOPE_LEN..], limits) else {
        panic!("not a frame start");
    };
    asm.start(s);
    let mut offset = 0;
    for (i, head) in heads.iter().enumerate() {
        let (env_bytes, head_bytes) = head.split_at(ENVELOPE_LEN);
        let env = Envelope::parse(env_bytes.try_into().expect("5 bytes"), limits)
            .expect("chunk envelope");
        let head = BulkHead::parse(head_bytes.try_into().expect("16 bytes"));
        let len = env.bulk_payload_len();
        let dst = asm.chunk_dest(head, len).expect("chunk in order");
        if copy {
            dst.copy_from_slice(&pixels[offset..offset + len]);
        }
        offset += len;
        match asm.chunk_filled().expect("checksum matches") {
            Assembled::Complete(frame) if i + 1 == heads.len() => return frame,
            Assembled::Incomplete if i + 1 < heads.len() => {}
            _ => panic!("frame completed at chunk {i} of {}", heads.len()),
        }
    }
    panic!("no chunks")
}

/// Checks, outside any timing, that what the benchmarks feed is the real wire format:
/// frame start + chunk heads + payload slices decode, with `decode`, to the frame's
/// messages, byte for byte the same as the owned `encode` writes, and reassemble into the
/// same frame.
fn check_wire_format(frame: &Frame) {
    let limits = Limits::default();
    let mut start = Vec::new();
    let heads = sender_messages(frame, DEFAULT_CHUNK_BYTES, &mut start);
    let mut wire = start.clone();
    for (head, payload) in heads.iter().zip(frame.pixels().chunks(DEFAULT_CHUNK_BYTES)) {
        wire.extend_from_slice(head);
        wire.extend_from_slice(payload);
    }
    let mut owned = Vec::new();
    let mut rest = &wire[..];
    let (msg, used) = decode(rest, &limits).expect("valid").expect("complete");
    assert_eq!(msg, Message::FrameStart(frame.meta().start_message()));
    encode(&msg, &mut owned);
    rest = &rest[used..];
    for (i, payload) in frame.pixels().chunks(DEFAULT_CHUNK_BYTES).enumerate() {
        let (msg, used) = decode(rest, &limits).expect("valid").expect("complete");
        let Message::FrameChunk { seq, offset, data } = &msg else {
            panic!("chunk {i} decodes as {:?}", msg.kind());
        };
        assert_eq!(
            (*seq, *offset, used),
            (
                frame.meta().seq,
                (i * DEFAULT_CHUNK_BYTES) as u64,
                ENVELOPE_LEN + BULK_HEAD_LEN + payload.len()
            )
        );
        assert!(data[..] == payload[..], "chunk {i} payload differs");
        encode(&msg, &mut owned);
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "{} bytes left over", rest.len());
    assert!(
        owned == wire,
        "encode_bulk_head + payload differs from encode"
    );

    let mut asm = FrameAssembler::new(FramePool::new(1));
    let got = receive_frame(&mut asm, &start, &heads, frame.pixels(), true, &limits);
    assert_eq!(got.meta(), frame.meta());
    assert!(got.pixels() == frame.pixels(), "reassembled pixels differ");
}

/// (a) The sending side: the codec writes heads only; the payload goes from the shared
/// frame to `writev` as a slice.
fn send(c: &mut Criterion) {
    let mut g = c.benchmark_group("send");
    g.throughput(Throughput::Bytes(DEFAULT_CHUNK_BYTES as u64));
    g.bench_function("chunk_head/1MiB", |b| {
        let mut offset = 0u64;
        b.iter(|| {
            offset = offset.wrapping_add(DEFAULT_CHUNK_BYTES as u64);
            encode_bulk_head(
                Kind::FrameChunk,
                black_box(7),
                black_box(offset),
                black_box(DEFAULT_CHUNK_BYTES),
            )
        })
    });
    for (name, width, height) in SIZES {
        let frame = make_frame(width, height, 1);
        check_wire_format(&frame);
        g.throughput(Throughput::Bytes(frame.pixels().len() as u64));
        let mut pending = Vec::with_capacity(64 << 10);
        g.bench_with_input(
            BenchmarkId::new("frame_start_and_heads", name),
            &frame,
            |b, frame| {
                b.iter(|| {
                    pending.clear();
                    encode(
                        &Message::FrameStart(frame.meta().start_message()),
                        &mut pending,
                    );
                    let pixels = frame.pixels();
                    let seq = frame.meta().seq;
                    let mut offset = 0;
                    while offset < pixels.len() {
                        let end = (offset + DEFAULT_CHUNK_BYTES).min(pixels.len());
                        let head =
                            encode_bulk_head(Kind::FrameChunk, seq, offset as u64, end - offset);
                        // What the writer hands to writev: head and payload slice.
                        black_box((&head, &pixels[offset..end]));
                        offset = end;
                    }
                    black_box(&pending);
                })
            },
        );
    }
    g.finish();
}

/// (b) The receiving side: envelope and head parsing, the assembler's destination and its
/// XXH3 verify, with and without the payload copy that stands in for the socket read.
fn receive(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("receive");
    g.throughput(Throughput::Bytes(DEFAULT_CHUNK_BYTES as u64));
    let head = encode_bulk_head(Kind::FrameChunk, 7, 3 << 20, DEFAULT_CHUNK_BYTES);
    g.bench_function("chunk_head_parse/1MiB", |b| {
        b.iter(|| {
            let head = black_box(&head);
            let env = Envelope::parse(head[..ENVELOPE_LEN].try_into().expect("5 bytes"), &limits)
                .expect("valid");
            let bulk = BulkHead::parse(head[ENVELOPE_LEN..].try_into().expect("16 bytes"));
            (env.bulk_payload_len(), bulk)
        })
    });
    for (name, width, height) in SIZES {
        let frame = make_frame(width, height, 2);
        let mut start = Vec::new();
        let heads = sender_messages(&frame, DEFAULT_CHUNK_BYTES, &mut start);
        g.throughput(Throughput::Bytes(frame.pixels().len() as u64));
        // One buffer in the pool: every frame is reassembled into the same recycled
        // buffer, which after the first copy already holds the pixels, so the variant
        // without the copy still verifies (a wrong buffer would fail the checksum).
        let mut asm = FrameAssembler::new(FramePool::new(1));
        g.bench_function(BenchmarkId::new("copy_and_verify", name), |b| {
            b.iter(|| {
                receive_frame(&mut asm, &start, &heads, frame.pixels(), true, &limits);
            })
        });
        g.bench_function(BenchmarkId::new("verify_only", name), |b| {
            b.iter(|| {
                receive_frame(&mut asm, &start, &heads, frame.pixels(), false, &limits);
            })
        });
    }
    g.finish();
}

/// (c) The owned path: `encode` copies the payload into the output and `decode` into a
/// new `Vec`, by design. The network path uses neither for frame chunks.
fn owned(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("owned");
    g.throughput(Throughput::Bytes(DEFAULT_CHUNK_BYTES as u64));
    let msg = Message::FrameChunk {
        seq: 7,
        offset: 3 << 20,
        data: pattern(DEFAULT_CHUNK_BYTES, 3),
    };
    let mut out = Vec::with_capacity(DEFAULT_CHUNK_BYTES + 64);
    g.bench_function("encode_frame_chunk/1MiB", |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(&msg), &mut out);
            out.len()
        })
    });
    let mut bytes = Vec::new();
    encode(&msg, &mut bytes);
    g.bench_function("decode_frame_chunk/1MiB", |b| {
        b.iter(|| decode(black_box(&bytes), &limits).expect("valid"))
    });
    g.finish();
}

/// (d) The producer's copy: mapped readback buffer → pooled frame buffer, hashed piece by
/// piece, next to a plain memcpy and a plain XXH3 of the same bytes.
fn produce(c: &mut Criterion) {
    let mut g = c.benchmark_group("produce");
    for (name, width, height) in SIZES {
        let geometry = padded_geometry(width, height);
        let src = pattern(geometry.total_len(), 4);
        g.throughput(Throughput::Bytes(src.len() as u64));
        let pool = FramePool::new(2);
        g.bench_function(BenchmarkId::new("frame_copied", name), |b| {
            b.iter(|| Frame::copied(geometry, 1, 2, black_box(&src), &pool))
        });
        let mut dst = vec![0u8; src.len()];
        g.bench_function(BenchmarkId::new("memcpy", name), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            })
        });
        g.bench_function(BenchmarkId::new("xxh3", name), |b| {
            b.iter(|| texstream::protocol::checksum(black_box(&src)))
        });
        // The same hash as a build for baseline x86-64 gets it from xxhash-rust (SSE2),
        // for comparison with the run-time AVX2 choice above.
        g.bench_function(BenchmarkId::new("xxh3_xxhash_rust", name), |b| {
            b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(&src)))
        });
    }
    g.finish();
}

/// Row unpadding: not on the data path at all (frames travel and are uploaded with their
/// padding); only PNG snapshots and `record` unpad, through `Frame::to_image`.
/// 1023x767 has 4 bytes of padding per row (4092 → 4096), 1080p none.
fn unpad(c: &mut Criterion) {
    let mut g = c.benchmark_group("unpad");
    for (name, width, height) in [("1023x767", 1023, 767), ("1080p", 1920, 1080)] {
        let frame = make_frame(width, height, 5);
        let tight_len = width as usize * 4 * height as usize;
        g.throughput(Throughput::Bytes(tight_len as u64));
        g.bench_function(BenchmarkId::new("to_image", name), |b| {
            b.iter(|| black_box(&frame).to_image())
        });
        let mut tight = vec![0u8; tight_len];
        g.bench_function(BenchmarkId::new("rows_into_reused_buffer", name), |b| {
            b.iter(|| {
                let row_bytes = width as usize * 4;
                for (dst, row) in tight
                    .chunks_exact_mut(row_bytes)
                    .zip(black_box(&frame).rows())
                {
                    dst.copy_from_slice(row);
                }
                black_box(&tight);
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = send, receive, owned, produce, unpad
}
criterion_main!(benches);
