//! Reassembles frames from a frame start and its chunks, into recycled buffers, hashing
//! each chunk as it lands (while its bytes are still in cache). Only whole frames whose
//! checksum matches come out: a frame cut short never does.

use super::Checksum;

use super::codec::BulkHead;
use super::error::ProtocolError;
use super::message::FrameStart;
use crate::frame::{Frame, FrameMeta, FramePool, PooledBuf};

/// What a chunk did to the frame in progress.
#[derive(Debug)]
pub enum Assembled {
    /// More chunks are needed.
    Incomplete,
    /// The last chunk arrived and the checksum matched.
    Complete(Frame),
}

struct Partial {
    start: FrameStart,
    buf: PooledBuf,
    received: u64,
    pending_len: usize,
}

/// One connection's frame reassembly state.
pub struct FrameAssembler {
    pool: FramePool,
    current: Option<Partial>,
    hasher: Checksum,
}

impl FrameAssembler {
    pub fn new(pool: FramePool) -> FrameAssembler {
        FrameAssembler {
            pool,
            current: None,
            hasher: Checksum::new(),
        }
    }

    /// Begins a frame whose geometry [`super::decode_body`] has already checked against
    /// the limits. Returns the seq of a frame that was in progress and is now abandoned.
    pub fn start(&mut self, start: FrameStart) -> Option<u64> {
        let abandoned = self.current.take().map(|p| p.start.seq);
        let buf = self.pool.take(start.total_len as usize);
        self.hasher.reset();
        self.current = Some(Partial {
            start,
            buf,
            received: 0,
            pending_len: 0,
        });
        abandoned
    }

    /// Abandons frame `seq` if it is the one in progress; returns whether it was.
    pub fn abort(&mut self, seq: u64) -> bool {
        if self.in_progress() == Some(seq) {
            self.current = None;
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
        if end > p.start.total_len {
            return Err(ProtocolError::ChunkPastEnd {
                seq,
                offset: head.offset,
                len: len as u64,
                total_len: p.start.total_len,
            });
        }
        p.pending_len = len;
        Ok(&mut p.buf[head.offset as usize..end as usize])
    }

    /// Accounts for the chunk whose destination [`FrameAssembler::chunk_dest`] returned,
    /// now filled. Completes the frame after its last chunk, verifying the checksum.
    pub fn chunk_filled(&mut self) -> Result<Assembled, ProtocolError> {
        let Some(p) = self.current.as_mut() else {
            return Ok(Assembled::Incomplete);
        };
        let from = p.received as usize;
        let to = from + p.pending_len;
        self.hasher.update(&p.buf[from..to]);
        p.received = to as u64;
        p.pending_len = 0;
        if p.received < p.start.total_len {
            return Ok(Assembled::Incomplete);
        }
        let Some(p) = self.current.take() else {
            return Ok(Assembled::Incomplete);
        };
        let actual = self.hasher.digest();
        let s = p.start;
        if actual != s.checksum {
            return Err(ProtocolError::ChecksumMismatch {
                seq: s.seq,
                expected: s.checksum,
                actual,
            });
        }
        let meta = FrameMeta {
            seq: s.seq,
            width: s.width,
            height: s.height,
            format: s.format,
            bytes_per_row: s.bytes_per_row,
            capture_us: s.capture_us,
            checksum: s.checksum,
        };
        Ok(Assembled::Complete(Frame::from_verified(meta, p.buf)))
    }

    /// A whole chunk from a decoded message: [`FrameAssembler::chunk_dest`], copy,
    /// [`FrameAssembler::chunk_filled`].
    pub fn chunk(&mut self, head: BulkHead, data: &[u8]) -> Result<Assembled, ProtocolError> {
        self.chunk_dest(head, data.len())?.copy_from_slice(data);
        self.chunk_filled()
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
