//! Reassembles frames from a frame start and its chunks, into recycled buffers, hashing
//! each chunk as it lands (while its bytes are still in cache). Only whole frames whose
//! checksum matches come out: a frame cut short never does.
//!
//! Memory follows what arrived, not what a frame start declared: a buffer's pages are
//! only touched by the bytes written into it, the bytes of partial frames count against
//! a [`FrameBudget`] shared by every connection of a node, and a frame abandoned
//! half-received frees its buffer instead of keeping it in the pool.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::Checksum;

use super::codec::BulkHead;
use super::error::ProtocolError;
use super::message::{CodedFrameStart, FrameStart};
use super::tiles::{self, TileDecoder, TileError, TileGrid};
use crate::frame::{Frame, FrameMeta, FramePool, PooledBuf};

/// What a chunk did to the frame in progress.
#[derive(Debug)]
pub enum Assembled {
    /// More chunks are needed.
    Incomplete,
    /// The last chunk arrived and the checksum matched.
    Complete(Frame),
}

/// How a partial frame's connection is told to end, to make room in the budget.
pub type Evict = Arc<dyn Fn() + Send + Sync>;

/// The bytes of partial frames a node holds across all its connections, against a
/// limit. Clones share the count.
///
/// A chunk that would pass the limit makes room by evicting the largest partial frame
/// of another connection, when that one is larger than this one would be: its `Evict`
/// ends that connection, whose reader then frees the frame. Otherwise the chunk is
/// refused. So a peer that sends a large frame in part and stalls cannot keep the
/// budget from honest peers with smaller frames; what is held goes past the limit only
/// while an evicted frame is being let go (at most twice the limit).
#[derive(Clone)]
pub struct FrameBudget {
    ledger: Arc<std::sync::Mutex<Ledger>>,
    next_id: Arc<AtomicU64>,
    limit: u64,
}

impl std::fmt::Debug for FrameBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBudget")
            .field("held", &self.held())
            .field("limit", &self.limit)
            .finish()
    }
}

#[derive(Default)]
struct Ledger {
    /// Every partial frame that holds bytes: one per assembler at most.
    holders: Vec<Holder>,
}

impl Ledger {
    /// Bytes held by all partial frames, and by those not evicted (an evicted frame's
    /// bytes are on their way out: they do not count against the limit).
    fn held(&self) -> (u64, u64) {
        self.holders.iter().fold((0, 0), |(all, counted), h| {
            (all + h.bytes, counted + if h.evicted { 0 } else { h.bytes })
        })
    }
}

struct Holder {
    assembler: u64,
    bytes: u64,
    evict: Option<Evict>,
    evicted: bool,
}

impl FrameBudget {
    pub fn new(limit: u64) -> FrameBudget {
        FrameBudget {
            ledger: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            limit,
        }
    }

    /// No limit (one connection alone, tests, tools).
    pub fn unlimited() -> FrameBudget {
        FrameBudget::new(u64::MAX)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes of partial frames held now.
    pub fn held(&self) -> u64 {
        self.ledger().held().0
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Counts `bytes` more for `assembler`'s partial frame, making room or refusing
    /// when that passes the limit.
    fn take(&self, assembler: u64, bytes: u64, evict: &Option<Evict>) -> Result<(), ProtocolError> {
        let mut ledger = self.ledger();
        let mine = ledger.holders.iter().position(|h| h.assembler == assembler);
        let would_hold = mine.map_or(0, |i| ledger.holders[i].bytes) + bytes;
        let mut to_evict = None;
        let counted = ledger.held().1;
        if mine.is_some_and(|i| ledger.holders[i].evicted) {
            // Evicted, its connection ending: not a byte more.
            return Err(ProtocolError::FrameMemory {
                held: counted,
                limit: self.limit,
            });
        }
        if counted.saturating_add(bytes) > self.limit {
            let held = counted;
            let victim = ledger
                .holders
                .iter_mut()
                .filter(|h| h.assembler != assembler && !h.evicted && h.evict.is_some())
                .max_by_key(|h| h.bytes)
                .filter(|h| h.bytes > would_hold);
            let Some(victim) = victim else {
                return Err(ProtocolError::FrameMemory {
                    held,
                    limit: self.limit,
                });
            };
            victim.evicted = true;
            to_evict = victim.evict.clone();
        }
        match mine {
            Some(i) => ledger.holders[i].bytes += bytes,
            None => ledger.holders.push(Holder {
                assembler,
                bytes,
                evict: evict.clone(),
                evicted: false,
            }),
        }
        drop(ledger);
        if let Some(evict) = to_evict {
            evict();
        }
        Ok(())
    }

    /// `assembler`'s partial frame ended: its bytes are given back.
    fn give(&self, assembler: u64) {
        let mut ledger = self.ledger();
        if let Some(i) = ledger.holders.iter().position(|h| h.assembler == assembler) {
            ledger.holders.swap_remove(i);
        }
    }
}

struct Partial {
    start: FrameStart,
    dest: Dest,
    received: u64,
    pending_len: usize,
    /// This frame's share of the budget (what arrived), given back when it drops.
    _counted: Counted,
}

/// Where a partial frame's bytes go.
enum Dest {
    /// A raw frame: its pixels, straight into the frame's own buffer.
    Raw(PooledBuf),
    /// A coded frame: its `coded_len` coded bytes into the assembler's coded buffer,
    /// decoded into a frame's buffer once all are in.
    Coded { coded_len: u64, base_seq: u64 },
}

impl Partial {
    /// The bytes this frame's chunks carry in all.
    fn wire_len(&self) -> u64 {
        match self.dest {
            Dest::Raw(_) => self.start.total_len,
            Dest::Coded { coded_len, .. } => coded_len,
        }
    }
}

/// A partial frame's share of the budget, given back when the partial ends (whole,
/// abandoned, or with its connection).
struct Counted {
    budget: FrameBudget,
    assembler: u64,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.budget.give(self.assembler);
    }
}

/// One connection's frame reassembly state.
pub struct FrameAssembler {
    pool: FramePool,
    budget: FrameBudget,
    /// This assembler in the budget's ledger.
    id: u64,
    /// How to end this assembler's connection, should the budget need its room.
    evict: Option<Evict>,
    current: Option<Partial>,
    hasher: Checksum,
    /// Coded frames' bytes as they arrive (grown only by bytes that arrived; kept for
    /// the next coded frame, freed with an abandoned one).
    coded: Vec<u8>,
    decoder: TileDecoder,
    /// The last whole frame of this connection, which a delta refers to: kept only
    /// when the connection takes coded frames.
    base: Option<Frame>,
    keep_base: bool,
}

impl FrameAssembler {
    /// An assembler whose partial frames count against no budget.
    pub fn new(pool: FramePool) -> FrameAssembler {
        FrameAssembler::with_budget(pool, FrameBudget::unlimited(), None)
    }

    /// An assembler whose partial frames count against `budget` (a node's, shared by
    /// its connections). `evict` ends this assembler's connection when another's
    /// smaller frame needs the room (see [`FrameBudget`]); without it, this one's
    /// partial frame is never evicted.
    pub fn with_budget(
        pool: FramePool,
        budget: FrameBudget,
        evict: Option<Evict>,
    ) -> FrameAssembler {
        FrameAssembler {
            id: budget.next_id.fetch_add(1, Relaxed),
            pool,
            budget,
            evict,
            current: None,
            hasher: Checksum::new(),
            coded: Vec::new(),
            decoder: TileDecoder::default(),
            base: None,
            keep_base: false,
        }
    }

    /// Takes coded frames ([`FrameAssembler::start_coded`]): the last whole frame is
    /// kept as the base of the next delta.
    pub fn keep_base(&mut self) {
        self.keep_base = true;
    }

    /// Ends the partial frame, if any, without a frame: its buffer is freed (it may hold
    /// pages the peer wrote, which the pool would keep), its budget given back.
    fn drop_partial(&mut self) -> Option<u64> {
        let p = self.current.take()?;
        match p.dest {
            Dest::Raw(buf) => buf.discard(),
            Dest::Coded { .. } => self.coded = Vec::new(),
        }
        Some(p.start.seq)
    }

    /// Begins a frame whose geometry [`super::decode_body`] has already checked against
    /// the limits. Returns the seq of a frame that was in progress and is now abandoned.
    /// Nothing is counted, and no page touched, until its bytes arrive.
    pub fn start(&mut self, start: FrameStart) -> Option<u64> {
        let abandoned = self.drop_partial();
        let buf = self.pool.take(start.total_len as usize);
        self.hasher.reset();
        self.begin(start, Dest::Raw(buf));
        abandoned
    }

    /// Begins a coded frame whose geometry and coded length [`super::decode_body`] has
    /// checked against the limits (only on a connection that [`keep_base`]s). Its coded
    /// bytes take room as they arrive; the frame's buffer is taken once they are all
    /// in. Returns the seq of a frame that was in progress and is now abandoned.
    ///
    /// [`keep_base`]: FrameAssembler::keep_base
    pub fn start_coded(&mut self, coded: CodedFrameStart) -> Option<u64> {
        let abandoned = self.drop_partial();
        self.coded.clear();
        self.begin(
            coded.start,
            Dest::Coded {
                coded_len: coded.coded_len,
                base_seq: coded.base_seq,
            },
        );
        abandoned
    }

    fn begin(&mut self, start: FrameStart, dest: Dest) {
        self.current = Some(Partial {
            start,
            dest,
            received: 0,
            pending_len: 0,
            _counted: Counted {
                budget: self.budget.clone(),
                assembler: self.id,
            },
        });
    }

    /// Abandons frame `seq` if it is the one in progress; returns whether it was.
    pub fn abort(&mut self, seq: u64) -> bool {
        if self.in_progress() == Some(seq) {
            self.drop_partial();
            true
        } else {
            false
        }
    }

    /// Seq of the frame in progress, if any.
    pub fn in_progress(&self) -> Option<u64> {
        self.current.as_ref().map(|p| p.start.seq)
    }

    /// Checks a chunk's head and length against the frame in progress and returns the
    /// slice its `len` payload bytes must be written to. Chunks must be contiguous and
    /// in order. Call [`FrameAssembler::chunk_filled`] once the slice holds the payload.
    pub fn chunk_dest(&mut self, head: BulkHead, len: usize) -> Result<&mut [u8], ProtocolError> {
        let current = self.in_progress();
        let Some(p) = self.current.as_mut().filter(|p| p.start.seq == head.id) else {
            return Err(ProtocolError::ChunkWithoutFrame {
                seq: head.id,
                current,
            });
        };
        let seq = head.id;
        if len == 0 {
            return Err(ProtocolError::InvalidValue {
                kind: "frame-chunk",
                field: "payload length",
                value: 0,
            });
        }
        if head.offset != p.received {
            return Err(ProtocolError::ChunkOutOfOrder {
                seq,
                offset: head.offset,
                expected: p.received,
            });
        }
        let end = head.offset.saturating_add(len as u64);
        if end > p.wire_len() {
            return Err(ProtocolError::ChunkPastEnd {
                seq,
                offset: head.offset,
                len: len as u64,
                total_len: p.wire_len(),
            });
        }
        // Counted as it arrives, before a byte of it is written.
        self.budget.take(self.id, len as u64, &self.evict)?;
        p.pending_len = len;
        let range = head.offset as usize..end as usize;
        Ok(match &mut p.dest {
            Dest::Raw(buf) => &mut buf[range],
            Dest::Coded { .. } => {
                // Room for the bytes arriving now, and no more.
                self.coded.resize(range.end, 0);
                &mut self.coded[range]
            }
        })
    }

    /// The destination [`FrameAssembler::chunk_dest`] last returned, again (empty when
    /// no chunk is pending): a reader that fills it over several reads asks for it each
    /// time instead of holding the borrow.
    pub fn pending_dest(&mut self) -> &mut [u8] {
        match self.current.as_mut() {
            Some(p) => {
                let range = p.received as usize..p.received as usize + p.pending_len;
                match &mut p.dest {
                    Dest::Raw(buf) => &mut buf[range],
                    Dest::Coded { .. } => &mut self.coded[range],
                }
            }
            None => &mut [],
        }
    }

    /// Accounts for the chunk whose destination [`FrameAssembler::chunk_dest`] returned,
    /// now filled. Completes the frame after its last chunk, verifying the checksum.
    pub fn chunk_filled(&mut self) -> Result<Assembled, ProtocolError> {
        let Some(p) = self.current.as_mut() else {
            return Ok(Assembled::Incomplete);
        };
        let from = p.received as usize;
        let to = from + p.pending_len;
        if let Dest::Raw(buf) = &p.dest {
            self.hasher.update(&buf[from..to]);
        }
        p.received = to as u64;
        p.pending_len = 0;
        if p.received < p.wire_len() {
            return Ok(Assembled::Incomplete);
        }
        let Some(p) = self.current.take() else {
            return Ok(Assembled::Incomplete);
        };
        let s = p.start;
        let meta = FrameMeta {
            seq: s.seq,
            width: s.width,
            height: s.height,
            format: s.format,
            bytes_per_row: s.bytes_per_row,
            capture_us: s.capture_us,
            checksum: s.checksum,
        };
        let buf = match p.dest {
            Dest::Raw(buf) => {
                let actual = self.hasher.digest();
                if actual != s.checksum {
                    buf.discard();
                    return Err(ProtocolError::ChecksumMismatch {
                        seq: s.seq,
                        expected: s.checksum,
                        actual,
                    });
                }
                buf
            }
            Dest::Coded { base_seq, .. } => self.decode(&meta, base_seq)?,
        };
        let frame = Frame::from_verified(meta, buf);
        if self.keep_base {
            self.base = Some(frame.clone());
        }
        Ok(Assembled::Complete(frame))
    }

    /// Rebuilds a coded frame from the coded bytes now all in, into a new buffer
    /// (never the base's), and checks the checksum of what came out.
    fn decode(&mut self, s: &FrameMeta, base_seq: u64) -> Result<PooledBuf, ProtocolError> {
        let seq = s.seq;
        let bad = |reason| ProtocolError::BadCoding { seq, reason };
        let grid = TileGrid::new(s.bytes_per_row, s.height, s.format.bytes_per_pixel())
            .ok_or(bad(TileError::Geometry("no tile grid for the frame")))?;
        let base = if tiles::is_delta(&self.coded) {
            match &self.base {
                Some(b) if b.meta().seq == base_seq && b.meta().geometry() == s.geometry() => {
                    Some(b.pixels())
                }
                held => {
                    return Err(ProtocolError::BaseMismatch {
                        seq,
                        base_seq,
                        held: held.as_ref().map(|b| b.meta().seq),
                    })
                }
            }
        } else {
            None
        };
        let mut out = self.pool.take(s.total_len());
        if let Err(reason) = self.decoder.decode(&grid, &self.coded, base, &mut out) {
            out.discard();
            return Err(bad(reason));
        }
        let actual = super::checksum(&out);
        if actual != s.checksum {
            out.discard();
            return Err(ProtocolError::ChecksumMismatch {
                seq,
                expected: s.checksum,
                actual,
            });
        }
        Ok(out)
    }

    /// The budget this assembler's partial frames count against.
    pub fn budget(&self) -> &FrameBudget {
        &self.budget
    }

    /// A whole chunk from a decoded message: [`FrameAssembler::chunk_dest`], copy,
    /// [`FrameAssembler::chunk_filled`].
    pub fn chunk(&mut self, head: BulkHead, data: &[u8]) -> Result<Assembled, ProtocolError> {
        self.chunk_dest(head, data.len())?.copy_from_slice(data);
        self.chunk_filled()
    }
}

impl Drop for FrameAssembler {
    fn drop(&mut self) {
        // The connection ended inside a frame.
        self.drop_partial();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameGeometry, PixelFormat};

    fn frame(width: u32, height: u32, seq: u64) -> Frame {
        let pool = FramePool::new(1);
        let g = FrameGeometry::rgba8(width, height);
        let mut buf = pool.take(g.total_len());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u64 * 31 + seq) as u8;
        }
        Frame::new(g, seq, 42, buf)
    }

    fn feed(asm: &mut FrameAssembler, f: &Frame, chunk: usize) -> Result<Assembled, ProtocolError> {
        asm.start(f.meta().start_message());
        let mut last = Assembled::Incomplete;
        for (i, part) in f.pixels().chunks(chunk).enumerate() {
            let head = BulkHead {
                id: f.meta().seq,
                offset: (i * chunk) as u64,
            };
            last = asm.chunk(head, part)?;
        }
        Ok(last)
    }

    /// Codes `f` (a delta against `base` if given) and feeds its coded bytes in chunks.
    fn feed_coded(
        asm: &mut FrameAssembler,
        f: &Frame,
        base: Option<&Frame>,
        chunk: usize,
    ) -> Result<Assembled, ProtocolError> {
        let m = f.meta();
        let grid = TileGrid::new(m.bytes_per_row, m.height, 4).expect("a grid");
        let mut coded = Vec::new();
        tiles::TileEncoder::default()
            .encode(
                &grid,
                f.pixels(),
                base.map(|b| b.pixels()),
                tiles::TileCompression::Lz4,
                &mut coded,
            )
            .expect("codes");
        asm.start_coded(CodedFrameStart {
            start: m.start_message(),
            coding: super::super::FrameCoding::Tiles,
            base_seq: base.map_or(0, |b| b.meta().seq),
            coded_len: coded.len() as u64,
        });
        let mut last = Assembled::Incomplete;
        for (i, part) in coded.chunks(chunk).enumerate() {
            let head = BulkHead {
                id: m.seq,
                offset: (i * chunk) as u64,
            };
            last = asm.chunk(head, part)?;
        }
        Ok(last)
    }

    fn complete(a: Result<Assembled, ProtocolError>) -> Frame {
        match a.expect("valid") {
            Assembled::Complete(f) => f,
            Assembled::Incomplete => panic!("frame did not complete"),
        }
    }

    #[test]
    fn coded_frames_come_out_byte_exact_deltas_against_the_last_whole_frame() {
        let mut asm = FrameAssembler::new(FramePool::new(4));
        asm.keep_base();
        // A key frame, then a raw frame, then a delta against the raw one.
        let first = frame(150, 70, 1);
        let out = complete(feed_coded(&mut asm, &first, None, 333));
        assert_eq!((out.pixels(), out.meta()), (first.pixels(), first.meta()));
        let second = frame(150, 70, 2);
        complete(feed(&mut asm, &second, 1000));
        let mut pixels = second.pixels().to_vec();
        pixels[150 * 4 * 65 + 9] ^= 0x5A; // one byte of one tile changes
        let third = Frame::copied(
            FrameGeometry::rgba8(150, 70),
            3,
            7,
            &pixels,
            &FramePool::new(1),
        );
        let out = complete(feed_coded(&mut asm, &third, Some(&second), 50));
        assert_eq!(out.pixels(), &pixels[..]);
        assert_eq!(out.meta(), third.meta());
    }

    #[test]
    fn a_delta_against_another_frame_than_the_last_is_refused() {
        let mut asm = FrameAssembler::new(FramePool::new(4));
        asm.keep_base();
        let (a, b) = (frame(128, 64, 1), frame(128, 64, 2));
        // `a` but for one byte: as a delta against `a`, one tile sent, one the same.
        let mut pixels = a.pixels().to_vec();
        pixels[5] ^= 1;
        let c = Frame::copied(
            FrameGeometry::rgba8(128, 64),
            3,
            0,
            &pixels,
            &FramePool::new(1),
        );
        // No base held yet.
        assert!(matches!(
            feed_coded(&mut asm, &b, Some(&a), 100),
            Err(ProtocolError::BaseMismatch { held: None, .. })
        ));
        complete(feed_coded(&mut asm, &a, None, 100));
        complete(feed(&mut asm, &b, 100));
        // A delta against `a`, but `b` came last.
        assert!(matches!(
            feed_coded(&mut asm, &c, Some(&a), 100),
            Err(ProtocolError::BaseMismatch {
                base_seq: 1,
                held: Some(2),
                ..
            })
        ));
        // A base of another size is no base.
        let mut asm = FrameAssembler::new(FramePool::new(4));
        asm.keep_base();
        complete(feed(&mut asm, &frame(64, 32, 1), 100));
        assert!(matches!(
            feed_coded(&mut asm, &frame(32, 64, 2), Some(&frame(64, 32, 1)), 100),
            Err(ProtocolError::BaseMismatch { .. })
        ));
    }

    #[test]
    fn coded_bytes_that_do_not_decode_or_hash_right_are_refused() {
        let f = frame(64, 64, 1);
        let mut asm = FrameAssembler::new(FramePool::new(4));
        asm.keep_base();
        // Chunks past the coded length.
        asm.start_coded(CodedFrameStart {
            start: f.meta().start_message(),
            coding: super::super::FrameCoding::Tiles,
            base_seq: 0,
            coded_len: 3,
        });
        let head = BulkHead { id: 1, offset: 0 };
        assert!(matches!(
            asm.chunk(head, &[1, 0, 1, 9]),
            Err(ProtocolError::ChunkPastEnd { total_len: 3, .. })
        ));
        // A coding cut short of its last tile.
        asm.start_coded(CodedFrameStart {
            start: f.meta().start_message(),
            coding: super::super::FrameCoding::Tiles,
            base_seq: 0,
            coded_len: 3,
        });
        assert!(matches!(
            asm.chunk(head, &[1, 0, 1]),
            Err(ProtocolError::BadCoding { seq: 1, .. })
        ));
        // Coded bytes of other pixels than the start's checksum says.
        let mut start = f.meta().start_message();
        start.checksum ^= 1;
        let grid = TileGrid::new(64 * 4, 64, 4).expect("a grid");
        let mut coded = Vec::new();
        tiles::TileEncoder::default()
            .encode(
                &grid,
                f.pixels(),
                None,
                tiles::TileCompression::Lz4,
                &mut coded,
            )
            .expect("codes");
        asm.start_coded(CodedFrameStart {
            start,
            coding: super::super::FrameCoding::Tiles,
            base_seq: 0,
            coded_len: coded.len() as u64,
        });
        assert!(matches!(
            asm.chunk(head, &coded),
            Err(ProtocolError::ChecksumMismatch { seq: 1, .. })
        ));
        // None of it became the base: a delta still finds no base.
        assert!(matches!(
            feed_coded(&mut asm, &frame(64, 64, 2), Some(&f), 100),
            Err(ProtocolError::BaseMismatch { held: None, .. })
        ));
    }

    proptest::proptest! {
        /// Coded frames, key or delta, intact or mangled on the way (a byte flipped,
        /// cut short, one byte too many): an intact one comes out byte-exact and
        /// becomes the base; a mangled one never comes out other than as sent, and
        /// leaves the base as it was.
        #[test]
        fn coded_frames_mangled_on_the_way_never_come_out_wrong(
            w in 1u32..150,
            h in 1u32..90,
            steps in proptest::collection::vec(
                (proptest::bool::ANY, 0u8..4, proptest::num::u32::ANY, 1u8.., 1usize..700),
                1..10,
            ),
        ) {
            let g = FrameGeometry::rgba8(w, h);
            let pool = FramePool::new(1);
            let mut asm = FrameAssembler::new(FramePool::new(4));
            asm.keep_base();
            let mut held: Option<Frame> = None;
            for (i, (delta, mangle, at, mask, chunk)) in steps.into_iter().enumerate() {
                let seq = i as u64 + 1;
                // Mostly the same picture: a band of rows changes with each frame.
                let pixels: Vec<u8> = (0..g.total_len())
                    .map(|b| {
                        let row = b / g.bytes_per_row as usize;
                        let changed = row % 40 == (seq as usize * 7) % 40;
                        (b as u64 * 31 + if changed { seq } else { 0 }) as u8
                    })
                    .collect();
                let f = Frame::copied(g, seq, 42, &pixels, &pool);
                let base = if delta { held.clone() } else { None };
                let grid = TileGrid::new(g.bytes_per_row, h, 4).expect("a grid");
                let mut coded = Vec::new();
                tiles::TileEncoder::default()
                    .encode(
                        &grid,
                        f.pixels(),
                        base.as_ref().map(|b| b.pixels()),
                        tiles::TileCompression::Lz4Qoi,
                        &mut coded,
                    )
                    .expect("codes");
                let at = at as usize % coded.len();
                match mangle {
                    1 => coded[at] ^= mask,
                    2 => coded.truncate(at),
                    3 => coded.push(mask),
                    _ => {}
                }
                asm.start_coded(CodedFrameStart {
                    start: f.meta().start_message(),
                    coding: super::super::FrameCoding::Tiles,
                    base_seq: base.as_ref().map_or(0, |b| b.meta().seq),
                    coded_len: coded.len() as u64,
                });
                let mut result = Ok(Assembled::Incomplete);
                for (n, part) in coded.chunks(chunk).enumerate() {
                    let head = BulkHead { id: seq, offset: (n * chunk) as u64 };
                    result = asm.chunk(head, part);
                    if result.is_err() {
                        break;
                    }
                }
                match result {
                    Ok(Assembled::Complete(out)) => {
                        proptest::prop_assert!(out.pixels() == f.pixels(), "frame {} differs", seq);
                        proptest::prop_assert_eq!(out.meta(), f.meta());
                        held = Some(out);
                    }
                    // Cut short (or empty): it waits for the rest.
                    Ok(Assembled::Incomplete) => proptest::prop_assert!(mangle == 2),
                    Err(_) => proptest::prop_assert!(mangle != 0, "an intact coding refused"),
                }
            }
        }
    }

    #[test]
    fn whole_frame_comes_out_byte_exact() {
        let f = frame(33, 7, 5);
        let mut asm = FrameAssembler::new(FramePool::new(2));
        match feed(&mut asm, &f, 100).expect("valid chunks") {
            Assembled::Complete(out) => {
                assert_eq!(out.pixels(), f.pixels());
                assert_eq!(out.meta(), f.meta());
                assert_eq!(out.meta().format, PixelFormat::Rgba8);
            }
            Assembled::Incomplete => panic!("frame did not complete"),
        }
    }

    #[test]
    fn corrupted_payload_fails_the_checksum() {
        let f = frame(16, 16, 1);
        let mut asm = FrameAssembler::new(FramePool::new(2));
        asm.start(f.meta().start_message());
        let mut bad = f.pixels().to_vec();
        bad[500] ^= 1;
        let err = asm
            .chunk(BulkHead { id: 1, offset: 0 }, &bad)
            .expect_err("checksum must fail");
        assert!(
            matches!(err, ProtocolError::ChecksumMismatch { seq: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn out_of_order_overlapping_and_overlong_chunks_are_refused() {
        let f = frame(16, 16, 3);
        let mut asm = FrameAssembler::new(FramePool::new(2));
        asm.start(f.meta().start_message());
        let skip = asm
            .chunk(BulkHead { id: 3, offset: 8 }, &[0; 8])
            .expect_err("skip");
        assert!(matches!(skip, ProtocolError::ChunkOutOfOrder { .. }));
        asm.chunk(BulkHead { id: 3, offset: 0 }, &[0; 8])
            .expect("first chunk");
        let overlap = asm
            .chunk(BulkHead { id: 3, offset: 4 }, &[0; 8])
            .expect_err("overlap");
        assert!(matches!(overlap, ProtocolError::ChunkOutOfOrder { .. }));
        let past = asm
            .chunk(BulkHead { id: 3, offset: 8 }, &[0; 2000])
            .expect_err("past end");
        assert!(matches!(past, ProtocolError::ChunkPastEnd { .. }));
        let stray = asm
            .chunk(BulkHead { id: 9, offset: 0 }, &[0; 8])
            .expect_err("stray");
        assert!(matches!(
            stray,
            ProtocolError::ChunkWithoutFrame {
                seq: 9,
                current: Some(3)
            }
        ));
    }

    #[test]
    fn partial_frames_count_what_arrived_against_one_budget_and_give_it_back() {
        let budget = FrameBudget::new(1000);
        let pool = FramePool::new(2);
        let mut a = FrameAssembler::with_budget(pool.clone(), budget.clone(), None);
        let mut b = FrameAssembler::with_budget(pool, budget.clone(), None);
        // 32x32 RGBA: a 4096-byte frame declared, nothing counted yet.
        let f = frame(32, 32, 1);
        a.start(f.meta().start_message());
        b.start(frame(32, 32, 2).meta().start_message());
        assert_eq!(budget.held(), 0, "a declared frame costs nothing");
        a.chunk(BulkHead { id: 1, offset: 0 }, &f.pixels()[..600])
            .expect("within the budget");
        assert_eq!(budget.held(), 600);
        // The other connection's chunk would pass the node's budget.
        let err = b
            .chunk(BulkHead { id: 2, offset: 0 }, &[0; 500])
            .expect_err("past the budget");
        assert_eq!(
            err,
            ProtocolError::FrameMemory {
                held: 600,
                limit: 1000
            }
        );
        assert!(err.to_string().contains("frame memory budget"), "{err}");
        b.chunk(BulkHead { id: 2, offset: 0 }, &[0; 400])
            .expect("what fits is taken");
        assert_eq!(budget.held(), 1000);
        // Abandoned, aborted, or the connection gone: the bytes are given back.
        a.start(frame(32, 32, 3).meta().start_message());
        assert_eq!(budget.held(), 400);
        assert!(b.abort(2));
        assert_eq!(budget.held(), 0);
        b.start(frame(32, 32, 4).meta().start_message());
        b.chunk(BulkHead { id: 4, offset: 0 }, &[0; 100])
            .expect("room again");
        drop(b);
        assert_eq!(budget.held(), 0);
        // A whole frame gives its bytes back as it comes out.
        let small = frame(8, 8, 5);
        let mut c = FrameAssembler::with_budget(FramePool::new(1), budget.clone(), None);
        assert!(matches!(
            feed(&mut c, &small, 100),
            Ok(Assembled::Complete(_))
        ));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_smaller_frame_evicts_the_largest_partial_one_instead_of_being_refused() {
        use std::sync::atomic::AtomicBool;
        let budget = FrameBudget::new(1000);
        let flag = || Arc::new(AtomicBool::new(false));
        let evictor = |f: &Arc<AtomicBool>| -> Option<Evict> {
            let f = f.clone();
            Some(Arc::new(move || f.store(true, Relaxed)))
        };
        let (big_gone, small_gone) = (flag(), flag());
        let mut big =
            FrameAssembler::with_budget(FramePool::new(1), budget.clone(), evictor(&big_gone));
        let mut small =
            FrameAssembler::with_budget(FramePool::new(1), budget.clone(), evictor(&small_gone));
        // A stalled peer holds 900 of the 1000 bytes in a large frame.
        big.start(frame(32, 32, 1).meta().start_message());
        big.chunk(BulkHead { id: 1, offset: 0 }, &[0; 900])
            .expect("within the budget");
        // An honest 256-byte frame: the large one is evicted, the small one goes on.
        let f = frame(8, 8, 2);
        assert!(matches!(
            feed(&mut small, &f, 100),
            Ok(Assembled::Complete(_))
        ));
        assert!(
            big_gone.load(Relaxed),
            "the largest partial frame's connection is told to end"
        );
        assert!(!small_gone.load(Relaxed));
        // Until its connection ends, the evicted frame's bytes are still counted.
        assert_eq!(budget.held(), 900);
        drop(big);
        assert_eq!(budget.held(), 0);
        // A frame larger than every other one is refused instead: it evicts nobody.
        let mut other =
            FrameAssembler::with_budget(FramePool::new(1), budget.clone(), evictor(&flag()));
        other.start(frame(32, 32, 3).meta().start_message());
        other
            .chunk(BulkHead { id: 3, offset: 0 }, &[0; 300])
            .expect("room");
        small.start(frame(32, 32, 4).meta().start_message());
        small
            .chunk(BulkHead { id: 4, offset: 0 }, &[0; 600])
            .expect("room");
        assert!(small
            .chunk(BulkHead { id: 4, offset: 600 }, &[0; 200])
            .is_err());
        assert!(!small_gone.load(Relaxed));
    }

    #[test]
    fn a_new_start_abandons_the_partial_frame() {
        let a = frame(8, 8, 1);
        let b = frame(8, 8, 2);
        let mut asm = FrameAssembler::new(FramePool::new(2));
        asm.start(a.meta().start_message());
        asm.chunk(BulkHead { id: 1, offset: 0 }, &a.pixels()[..10])
            .expect("chunk");
        match feed(&mut asm, &b, 64).expect("second frame") {
            Assembled::Complete(out) => assert_eq!(out.meta().seq, 2),
            Assembled::Incomplete => panic!("second frame did not complete"),
        }
        assert_eq!(asm.in_progress(), None);
    }
}
