//! The checks behind texstream's fuzz targets: each target in `fuzz_targets/` is one call
//! into this library, so the targets stay one line and the checks can be read in one place.
//!
//! Every check panics (which libFuzzer reports as a crash) when a property of
//! `docs/PROTOCOL.md` breaks: decoding must never panic, must never allocate more than
//! the bytes actually present, must re-encode to the same bytes; frame reassembly must
//! only ever hand out whole frames whose checksum matches; the handshake must let a peer
//! in only on a valid hello (never without the token's proof) and allocate no more than
//! the peer sent. `docs/FUZZING.md` says how to run them and what they found.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arbitrary::Arbitrary;
use texstream::frame::{Frame, FramePool, PixelFormat};
use texstream::net::{fuzz_handshake, Token};
use texstream::protocol::{
    decode, decode_body, encode, max_body_len, BulkHead, Envelope, FrameAssembler, FrameStart,
    Kind, Limits, Message, ProtocolError, ENVELOPE_LEN, PREAMBLE_LEN,
};

/// Default limits, and small ones under which every limit is easy to reach.
pub fn limit_sets() -> [Limits; 2] {
    [Limits::default(), small_limits()]
}

/// Limits small enough that a fuzzer reaches each of them with short inputs.
pub fn small_limits() -> Limits {
    Limits {
        max_chunk_bytes: 64,
        max_frame_bytes: 4096,
        max_dimension: 64,
        max_text_bytes: 16,
    }
}

// ---------------------------------------------------------------------------------------
// Allocation accounting: while armed, every byte the program asks the allocator for is
// counted, so a check can prove that decoding allocated no more than the input held.

struct CountingAlloc;

static ARMED: AtomicBool = AtomicBool::new(false);
static REQUESTED_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

impl CountingAlloc {
    fn record(size: usize) {
        if ARMED.load(Ordering::Relaxed) {
            REQUESTED_BYTES.fetch_add(size, Ordering::Relaxed);
            PEAK_BYTES.fetch_max(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; only a counter is updated.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::record(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::record(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::record(new_size);
        // SAFETY: as for `alloc`; `ptr` came from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the bytes it asked the allocator for, in all.
fn counting_allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (out, total, _) = measuring_allocations(f);
    (out, total)
}

/// Runs `f` and returns its result, the bytes it asked the allocator for in all, and the
/// largest single allocation among them.
fn measuring_allocations<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    REQUESTED_BYTES.store(0, Ordering::Relaxed);
    PEAK_BYTES.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let out = f();
    ARMED.store(false, Ordering::Relaxed);
    (
        out,
        REQUESTED_BYTES.load(Ordering::Relaxed),
        PEAK_BYTES.load(Ordering::Relaxed),
    )
}

// ---------------------------------------------------------------------------------------
// decode: a byte stream, consumed message by message.

/// Decodes `data` as a stream of messages until it runs out or is refused, under the
/// default and the small limits, checking every decoded message (see [`check_message`]).
pub fn decode_stream(data: &[u8]) {
    for limits in limit_sets() {
        let mut rest = data;
        loop {
            let (result, allocated) = counting_allocations(|| decode(rest, &limits));
            assert!(
                allocated <= rest.len(),
                "decode allocated {allocated} bytes from {} bytes of input",
                rest.len()
            );
            match result {
                Ok(Some((msg, used))) => {
                    assert!(
                        (ENVELOPE_LEN..=rest.len()).contains(&used),
                        "decode used {used} of {} bytes",
                        rest.len()
                    );
                    check_message(&msg, &rest[..used], &limits);
                    rest = &rest[used..];
                }
                Ok(None) => {
                    assert_incomplete(rest, &limits);
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// `Ok(None)` is only allowed while the envelope or the body it announces is missing.
fn assert_incomplete(rest: &[u8], limits: &Limits) {
    let Some(env) = rest.first_chunk::<ENVELOPE_LEN>() else {
        return;
    };
    let env = Envelope::parse(env, limits).expect("decode said incomplete on a bad envelope");
    assert!(
        rest.len() < ENVELOPE_LEN + env.body_len as usize,
        "decode said incomplete with the whole {}-byte body present",
        env.body_len
    );
}

/// A decoded message re-encodes to the bytes it came from (up to the one normalisation
/// the protocol allows: unknown goodbye codes read as `Other`), those bytes decode back to
/// the same message, and every strict prefix of them is merely incomplete.
fn check_message(msg: &Message, wire: &[u8], limits: &Limits) {
    let body_len = wire.len() - ENVELOPE_LEN;
    assert!(
        body_len as u64 <= max_body_len(msg.kind(), limits),
        "a {:?} of {body_len} bytes was accepted past its limit",
        msg.kind()
    );
    if let Message::FrameChunk { data, .. } | Message::FileChunk { data, .. } = msg {
        assert!(data.len() <= limits.max_chunk_bytes as usize);
    }
    if let Message::Text(t) = msg {
        assert!(t.body.len() <= limits.max_text_bytes as usize);
    }

    let mut canonical = wire.to_vec();
    if let Message::Goodbye { code, .. } = msg {
        canonical[ENVELOPE_LEN] = *code as u8;
    }
    let mut again = Vec::new();
    encode(msg, &mut again);
    assert_eq!(again, canonical, "{msg:?} does not re-encode to its bytes");

    let back = decode(&again, limits).expect("re-encoded message must decode");
    assert_eq!(
        back,
        Some((msg.clone(), again.len())),
        "round trip changed it"
    );

    for cut in [0, 1, ENVELOPE_LEN - 1, ENVELOPE_LEN, again.len() - 1] {
        if cut < again.len() {
            let prefix = decode(&again[..cut], limits);
            assert!(
                matches!(prefix, Ok(None)),
                "a {cut}-byte prefix of {msg:?} gave {prefix:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// decode_body: one body of a chosen kind, as the network reader decodes it.

/// The first byte picks a kind (its code; any other byte picks one by its value), the
/// rest is its body.
pub fn decode_one_body(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let kind = Kind::from_u8(pick).unwrap_or(Kind::ALL[usize::from(pick) % Kind::ALL.len()]);
    for limits in limit_sets() {
        let (result, allocated) = counting_allocations(|| decode_body(kind, body, &limits));
        assert!(
            allocated <= body.len(),
            "decode_body allocated {allocated} bytes from a {}-byte body",
            body.len()
        );
        // The reader only calls `decode_body` on a body whose envelope passed
        // `Envelope::parse`; beyond that, a result only needs to be an error, not a panic.
        let Ok(msg) = result else { continue };
        assert_eq!(msg.kind(), kind);
        if (body.len() as u64) > max_body_len(kind, &limits) {
            assert!(kind.is_bulk(), "{kind:?} accepted a body past its limit");
            continue;
        }
        let mut wire = Envelope {
            kind,
            body_len: body.len() as u32,
        }
        .encode()
        .to_vec();
        wire.extend_from_slice(body);
        check_message(&msg, &wire, &limits);
    }
}

// ---------------------------------------------------------------------------------------
// assemble: frame starts, chunks and aborts against `FrameAssembler`, next to a model.

/// One step of a sender as the reassembler sees it.
#[derive(Arbitrary, Debug)]
pub enum AsmOp {
    /// A frame start, sent through the decoder first (as the reader does), so that only
    /// geometry the limits allow reaches the assembler.
    Start {
        seq: u8,
        width: u8,
        height: u8,
        row_padding: u8,
        /// Picks one of `PixelFormat::ALL`.
        format: u8,
        /// The payload's bytes are derived from this seed.
        seed: u8,
        /// `None`: the payload's real checksum; otherwise this one.
        checksum: Option<u64>,
        /// `None`: the right `total_len`; otherwise this one.
        total_len: Option<u16>,
    },
    /// A chunk; `None` picks what a well-behaved sender would send.
    Chunk {
        seq: Option<u8>,
        offset: Option<u16>,
        len: ChunkLen,
        /// Flip bits of one payload byte: (position, mask).
        flip: Option<(u16, u8)>,
        /// Go through `chunk_dest` + `chunk_filled` (the reader's path) instead of `chunk`.
        in_place: bool,
    },
    /// Abandon a frame; `None` names the frame in progress.
    Abort { seq: Option<u8> },
    /// Drop the oldest completed frame held, returning its buffer to the pool.
    Release,
}

#[derive(Arbitrary, Debug)]
pub enum ChunkLen {
    /// Everything the frame still lacks.
    Rest,
    /// A short chunk.
    Small(u8),
    /// Any length.
    Exact(u16),
}

/// What the assembler should be holding: the frame in progress and the bytes it was fed.
struct ModelFrame {
    start: FrameStart,
    payload: Vec<u8>,
    received: Vec<u8>,
}

/// Drives a [`FrameAssembler`] through `ops` and checks each step against a model of the
/// rules in `docs/PROTOCOL.md` §5: the same errors, the same frame in progress, and a
/// frame out only when all of it arrived and hashes to its announced checksum.
pub fn assemble(ops: Vec<AsmOp>) {
    let limits = Limits {
        max_frame_bytes: 1 << 16,
        ..small_limits()
    };
    let pool = FramePool::new(2);
    let mut asm = FrameAssembler::new(pool);
    let mut model: Option<ModelFrame> = None;
    let mut held: Vec<Frame> = Vec::new();

    for op in ops {
        match op {
            AsmOp::Start {
                seq,
                width,
                height,
                row_padding,
                format,
                seed,
                checksum,
                total_len,
            } => {
                let format = PixelFormat::ALL[usize::from(format) % PixelFormat::ALL.len()];
                let bytes_per_row =
                    u32::from(width) * format.bytes_per_pixel() + u32::from(row_padding);
                let real_len = u64::from(bytes_per_row) * u64::from(height);
                // Geometry the limits refuse never gets a payload (nor needs one).
                let payload: Vec<u8> = (0..real_len.min(limits.max_frame_bytes))
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                    .collect();
                let start = FrameStart {
                    seq: seq.into(),
                    width: width.into(),
                    height: height.into(),
                    format,
                    bytes_per_row,
                    capture_us: 42,
                    total_len: total_len.map_or(real_len, u64::from),
                    checksum: checksum.unwrap_or_else(|| xxhash_rust::xxh3::xxh3_64(&payload)),
                };
                let mut wire = Vec::new();
                encode(&Message::FrameStart(start), &mut wire);
                let Ok(Message::FrameStart(checked)) =
                    decode_body(Kind::FrameStart, &wire[ENVELOPE_LEN..], &limits)
                else {
                    continue;
                };
                assert_eq!(checked, start);
                let abandoned = asm.start(checked);
                assert_eq!(abandoned, model.as_ref().map(|m| m.start.seq));
                model = Some(ModelFrame {
                    start,
                    payload,
                    received: Vec::new(),
                });
            }
            AsmOp::Chunk {
                seq,
                offset,
                len,
                flip,
                in_place,
            } => {
                let current = model.as_ref().map(|m| m.start.seq);
                let received = model.as_ref().map_or(0, |m| m.received.len());
                let total = model.as_ref().map_or(0, |m| m.start.total_len as usize);
                let seq = seq.map_or(current.unwrap_or(0), u64::from);
                let offset = offset.map_or(received, usize::from);
                let len = match len {
                    ChunkLen::Rest => total.saturating_sub(offset),
                    ChunkLen::Small(n) => n.into(),
                    ChunkLen::Exact(n) => n.into(),
                };
                let mut data: Vec<u8> = (offset..offset + len)
                    .map(|i| {
                        model
                            .as_ref()
                            .and_then(|m| m.payload.get(i).copied())
                            .unwrap_or(0)
                    })
                    .collect();
                if let (Some((pos, mask)), false) = (flip, data.is_empty()) {
                    let pos = usize::from(pos) % data.len();
                    data[pos] ^= mask;
                }
                let head = BulkHead {
                    id: seq,
                    offset: offset as u64,
                };
                let result = if in_place {
                    match asm.chunk_dest(head, data.len()) {
                        Ok(dest) => {
                            dest.copy_from_slice(&data);
                            asm.chunk_filled()
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    asm.chunk(head, &data)
                };
                model_chunk(&mut model, head, &data, result, &mut held);
            }
            AsmOp::Abort { seq } => {
                let current = model.as_ref().map(|m| m.start.seq);
                let seq = seq.map_or(current.unwrap_or(0), u64::from);
                let aborted = asm.abort(seq);
                assert_eq!(aborted, current == Some(seq));
                if aborted {
                    model = None;
                }
            }
            AsmOp::Release => {
                if !held.is_empty() {
                    held.remove(0);
                }
            }
        }
        assert_eq!(asm.in_progress(), model.as_ref().map(|m| m.start.seq));
    }
}

/// Checks one chunk's outcome against the model and advances the model.
fn model_chunk(
    model: &mut Option<ModelFrame>,
    head: BulkHead,
    data: &[u8],
    result: Result<texstream::protocol::Assembled, ProtocolError>,
    held: &mut Vec<Frame>,
) {
    use texstream::protocol::Assembled;

    let current = model.as_ref().map(|m| m.start.seq);
    let Some(m) = model.as_mut().filter(|m| m.start.seq == head.id) else {
        assert_eq!(
            result.err(),
            Some(ProtocolError::ChunkWithoutFrame {
                seq: head.id,
                current
            })
        );
        return;
    };
    let received = m.received.len() as u64;
    let total_len = m.start.total_len;
    if data.is_empty() {
        assert!(
            matches!(result, Err(ProtocolError::InvalidValue { value: 0, .. })),
            "{result:?}"
        );
        return;
    }
    if head.offset != received {
        assert_eq!(
            result.err(),
            Some(ProtocolError::ChunkOutOfOrder {
                seq: head.id,
                offset: head.offset,
                expected: received,
            })
        );
        return;
    }
    if head.offset + data.len() as u64 > total_len {
        assert_eq!(
            result.err(),
            Some(ProtocolError::ChunkPastEnd {
                seq: head.id,
                offset: head.offset,
                len: data.len() as u64,
                total_len,
            })
        );
        return;
    }
    m.received.extend_from_slice(data);
    if (m.received.len() as u64) < total_len {
        assert!(matches!(result, Ok(Assembled::Incomplete)), "{result:?}");
        return;
    }
    let Some(m) = model.take() else { return };
    let actual = xxhash_rust::xxh3::xxh3_64(&m.received);
    if actual != m.start.checksum {
        assert_eq!(
            result.err(),
            Some(ProtocolError::ChecksumMismatch {
                seq: head.id,
                expected: m.start.checksum,
                actual,
            })
        );
        return;
    }
    let Ok(Assembled::Complete(frame)) = result else {
        panic!("a whole frame with a matching checksum did not come out: {result:?}");
    };
    assert_eq!(
        frame.pixels(),
        &m.received[..],
        "frame bytes differ from those sent"
    );
    assert_eq!(
        xxhash_rust::xxh3::xxh3_64(frame.pixels()),
        frame.meta().checksum
    );
    let s = m.start;
    let meta = frame.meta();
    assert_eq!(
        (
            meta.seq,
            meta.width,
            meta.height,
            meta.format,
            meta.bytes_per_row
        ),
        (s.seq, s.width, s.height, s.format, s.bytes_per_row)
    );
    assert_eq!((meta.capture_us, meta.checksum), (s.capture_us, s.checksum));
    held.push(frame);
    if held.len() > 3 {
        held.remove(0);
    }
}

// ---------------------------------------------------------------------------------------
// handshake: the accepting side's handshake against bytes from a peer.

/// The token the `handshake` target's acceptor holds in its second run.
const FUZZ_TOKEN: &str = "fuzz-token";

/// Bytes a handshake may allocate beyond what the peer sent: our own preamble, hello,
/// proof and goodbye, the HMAC state, error texts.
const HANDSHAKE_SLACK_BYTES: usize = 4096;

/// Runs the acceptor's handshake (`texstream::net::fuzz_handshake`) on `data` as all the
/// peer sends, without and then with a token. It must never panic, never allocate more
/// than the peer sent (plus a small constant), succeed without a token only on a valid
/// preamble and hello, and never succeed with a token: the peer cannot know the fresh
/// nonce its proof must cover.
pub fn handshake(data: &[u8]) {
    let token = Token::new(FUZZ_TOKEN).expect("a valid token");
    for token in [None, Some(&token)] {
        let (result, _, peak) = measuring_allocations(|| fuzz_handshake(data, token));
        // Before c85a999 this failed: the handshake made room for whatever body an
        // envelope announced, up to 16 MiB + 21 bytes (finding F1 in docs/FUZZING.md).
        assert!(
            peak <= data.len() + HANDSHAKE_SLACK_BYTES,
            "the handshake allocated {peak} bytes at once on {} bytes from the peer",
            data.len()
        );
        let Ok(done) = result else { continue };
        assert!(
            token.is_none(),
            "authenticated without knowing the nonce: {done:?}"
        );
        assert!(!done.authenticated);
        let hello = decode(&data[PREAMBLE_LEN..], &Limits::default());
        assert!(
            matches!(&hello, Ok(Some((Message::Hello(h), _))) if *h == done.hello),
            "handshake took {:?} from {hello:?}",
            done.hello
        );
    }
}

// ---------------------------------------------------------------------------------------
// tiles: a coded frame (tiles, deltas, LZ4) against a base, on a small grid.

/// A coded frame as a hostile sender would make it, and the grid it is decoded on.
#[derive(Arbitrary, Debug)]
pub struct TilesInput {
    pub width: u8,
    pub height: u8,
    pub pad: u8,
    pub base_fill: u8,
    pub coded: Vec<u8>,
}

/// Decodes `input.coded` on its grid, with and without a base: never a panic; no
/// allocation beyond one scratch tile; a coding that decodes re-codes to a frame that
/// decodes to the same bytes.
pub fn tiles(input: TilesInput) {
    use texstream::protocol::tiles::{TileCompression, TileDecoder, TileEncoder, TileGrid};
    let width = u32::from(input.width).max(1);
    let height = u32::from(input.height).max(1);
    let Some(grid) = TileGrid::new(width * 4 + u32::from(input.pad % 64), height, 4) else {
        return;
    };
    let base = vec![input.base_fill; grid.frame_len()];
    let mut out = vec![0u8; grid.frame_len()];
    for base in [Some(base.as_slice()), None] {
        let mut decoder = TileDecoder::default();
        let (result, _, peak) =
            measuring_allocations(|| decoder.decode(&grid, &input.coded, base, &mut out));
        assert!(
            peak <= grid.max_tile_len(),
            "decoding allocated {peak} bytes at once, more than a tile"
        );
        if result.is_ok() {
            let mut coded = Vec::new();
            TileEncoder::default()
                .encode(&grid, &out, base, TileCompression::Lz4, &mut coded)
                .expect("a decoded frame codes");
            let mut again = vec![0u8; grid.frame_len()];
            decoder
                .decode(&grid, &coded, base, &mut again)
                .expect("its coding decodes");
            assert!(again == out, "a re-coded frame decodes to the same bytes");
        }
    }
}
