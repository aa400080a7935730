//! Frames: pixels plus their geometry, shared between consumers without copying
//! (`Frame` is an `Arc`), in buffers recycled through a [`FramePool`] so that no buffer
//! is allocated per frame once the pool is warm.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::protocol::FrameStart;

/// Layout of one pixel. Both are 4 bytes per pixel, 8 bits per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum PixelFormat {
    Rgba8 = 1,
    Bgra8 = 2,
}

impl PixelFormat {
    pub fn from_u8(code: u8) -> Option<PixelFormat> {
        match code {
            1 => Some(PixelFormat::Rgba8),
            2 => Some(PixelFormat::Bgra8),
            _ => None,
        }
    }

    pub const BYTES_PER_PIXEL: u32 = 4;
}

/// Everything about a frame but its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// The producer's sequence number; relays keep it.
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Bytes from one row to the next, at least `width * 4` (wgpu readback pads to 256).
    pub bytes_per_row: u32,
    /// Wall clock at capture, microseconds since the Unix epoch; relays keep it.
    pub capture_us: u64,
    /// XXH3-64 of the pixel bytes, padding included.
    pub checksum: u64,
}

impl FrameMeta {
    pub fn total_len(&self) -> usize {
        self.bytes_per_row as usize * self.height as usize
    }

    /// The frame-start message announcing a frame with this meta.
    pub fn start_message(&self) -> FrameStart {
        FrameStart {
            seq: self.seq,
            width: self.width,
            height: self.height,
            format: self.format,
            bytes_per_row: self.bytes_per_row,
            capture_us: self.capture_us,
            total_len: self.total_len() as u64,
            checksum: self.checksum,
        }
    }
}

/// A complete, immutable frame. Cloning shares the pixels.
#[derive(Clone)]
pub struct Frame(Arc<FrameInner>);

struct FrameInner {
    meta: FrameMeta,
    pixels: PooledBuf,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame").field("meta", &self.0.meta).finish()
    }
}

/// Geometry of a frame a producer is about to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameGeometry {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub bytes_per_row: u32,
}

impl FrameGeometry {
    /// Tightly packed RGBA8 rows.
    pub fn rgba8(width: u32, height: u32) -> FrameGeometry {
        FrameGeometry {
            width,
            height,
            format: PixelFormat::Rgba8,
            bytes_per_row: width * 4,
        }
    }

    pub fn total_len(&self) -> usize {
        self.bytes_per_row as usize * self.height as usize
    }

    /// The meta of a frame with this geometry.
    pub fn meta(&self, seq: u64, capture_us: u64, checksum: u64) -> FrameMeta {
        FrameMeta {
            seq,
            width: self.width,
            height: self.height,
            format: self.format,
            bytes_per_row: self.bytes_per_row,
            capture_us,
            checksum,
        }
    }
}

impl Frame {
    /// Wraps filled pixels as a frame, computing their checksum.
    ///
    /// Panics if `pixels` is not exactly `geometry.total_len()` bytes: that is a bug in
    /// the producer, not a runtime condition.
    pub fn new(geometry: FrameGeometry, seq: u64, capture_us: u64, pixels: PooledBuf) -> Frame {
        assert_eq!(
            pixels.len(),
            geometry.total_len(),
            "frame buffer length does not match its geometry"
        );
        let checksum = crate::protocol::checksum(&pixels);
        Frame::from_verified(geometry.meta(seq, capture_us, checksum), pixels)
    }

    /// Copies `src` into a buffer from `pool` and wraps it as a frame, hashing each
    /// piece right after copying it, while it is still in cache: one pass over the
    /// pixels. This is the producer's one copy (e.g. mapped GPU buffer → frame).
    ///
    /// Panics if `src` is not exactly `geometry.total_len()` bytes (a producer bug).
    pub fn copied(
        geometry: FrameGeometry,
        seq: u64,
        capture_us: u64,
        src: &[u8],
        pool: &FramePool,
    ) -> Frame {
        assert_eq!(
            src.len(),
            geometry.total_len(),
            "frame source length does not match its geometry"
        );
        const PIECE: usize = 64 << 10;
        let mut buf = pool.take(src.len());
        let mut hasher = crate::protocol::Checksum::new();
        for (dst, piece) in buf.chunks_mut(PIECE).zip(src.chunks(PIECE)) {
            dst.copy_from_slice(piece);
            hasher.update(dst);
        }
        Frame::from_verified(geometry.meta(seq, capture_us, hasher.digest()), buf)
    }

    /// Wraps pixels whose checksum has already been computed or verified.
    pub(crate) fn from_verified(meta: FrameMeta, pixels: PooledBuf) -> Frame {
        debug_assert_eq!(pixels.len(), meta.total_len());
        Frame(Arc::new(FrameInner { meta, pixels }))
    }

    pub fn meta(&self) -> &FrameMeta {
        &self.0.meta
    }

    /// All pixel bytes, row padding included.
    pub fn pixels(&self) -> &[u8] {
        &self.0.pixels
    }

    /// The rows without their padding, `width * 4` bytes each.
    pub fn rows(&self) -> impl Iterator<Item = &[u8]> {
        let m = self.meta();
        let row_bytes = m.width as usize * 4;
        self.pixels()
            .chunks_exact(m.bytes_per_row as usize)
            .map(move |row| &row[..row_bytes])
    }

    /// A tightly packed RGBA8 copy (BGRA is swizzled), for saving as an image file.
    pub fn to_rgba_image(&self) -> image::RgbaImage {
        let m = self.meta();
        let mut out = Vec::with_capacity(m.width as usize * m.height as usize * 4);
        for row in self.rows() {
            out.extend_from_slice(row);
        }
        if m.format == PixelFormat::Bgra8 {
            for px in out.chunks_exact_mut(4) {
                px.swap(0, 2);
            }
        }
        image::RgbaImage::from_raw(m.width, m.height, out)
            .unwrap_or_else(|| image::RgbaImage::new(m.width, m.height))
    }
}

/// Recycles pixel buffers: a buffer taken from the pool goes back to it when its last
/// user drops it. Cloning the pool shares it.
#[derive(Clone)]
pub struct FramePool {
    tx: flume::Sender<Vec<u8>>,
    rx: flume::Receiver<Vec<u8>>,
}

impl FramePool {
    /// A pool that keeps at most `capacity` idle buffers.
    pub fn new(capacity: usize) -> FramePool {
        let (tx, rx) = flume::bounded(capacity.max(1));
        FramePool { tx, rx }
    }

    /// A buffer of exactly `len` bytes. Its contents are unspecified (a recycled buffer
    /// keeps old pixels): the caller overwrites all of it.
    pub fn take(&self, len: usize) -> PooledBuf {
        let data = match self.rx.try_recv() {
            // The usual case, frames of one size: reused as it is, nothing written.
            Ok(data) if data.len() == len => data,
            // A buffer that fits and is not much larger: only growth writes (zeroes).
            Ok(mut data) if data.capacity() >= len && data.capacity() / 2 <= len => {
                data.resize(len, 0);
                data
            }
            // Otherwise a fresh zeroed allocation, whose pages the system provides only
            // as they are written: a frame declared large but never sent costs no
            // memory. (A much larger idle buffer is let go, not kept for small frames.)
            _ => vec![0u8; len],
        };
        PooledBuf {
            data,
            home: Some(self.tx.clone()),
        }
    }

    /// Idle buffers in the pool now.
    pub fn idle(&self) -> usize {
        self.rx.len()
    }
}

/// A byte buffer that returns to its pool when dropped.
pub struct PooledBuf {
    data: Vec<u8>,
    home: Option<flume::Sender<Vec<u8>>>,
}

impl PooledBuf {
    /// A buffer that belongs to no pool.
    pub fn detached(data: Vec<u8>) -> PooledBuf {
        PooledBuf { data, home: None }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            // A full or closed pool just lets the buffer go.
            let _ = home.try_send(std::mem::take(&mut self.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_recycles_buffers_without_reallocating() {
        let pool = FramePool::new(2);
        let buf = pool.take(1000);
        let ptr = buf.as_ptr();
        drop(buf);
        assert_eq!(pool.idle(), 1);
        let again = pool.take(1000);
        assert_eq!(
            again.as_ptr(),
            ptr,
            "the same allocation is handed out again"
        );
    }

    #[test]
    fn copied_frames_hash_like_whole_ones() {
        let pool = FramePool::new(2);
        let g = FrameGeometry::rgba8(300, 200);
        let src: Vec<u8> = (0..g.total_len()).map(|i| (i * 7 % 251) as u8).collect();
        let copied = Frame::copied(g, 1, 2, &src, &pool);
        let mut buf = pool.take(src.len());
        buf.copy_from_slice(&src);
        let whole = Frame::new(g, 1, 2, buf);
        assert_eq!(copied.pixels(), &src[..]);
        assert_eq!(copied.meta(), whole.meta());
    }

    #[test]
    fn rows_strip_padding_and_bgra_is_swizzled() {
        let pool = FramePool::new(1);
        let geometry = FrameGeometry {
            width: 2,
            height: 2,
            format: PixelFormat::Bgra8,
            bytes_per_row: 12,
        };
        let mut buf = pool.take(geometry.total_len());
        buf.copy_from_slice(&[
            1, 2, 3, 4, 5, 6, 7, 8, 0xEE, 0xEE, 0xEE, 0xEE, //
            9, 10, 11, 12, 13, 14, 15, 16, 0xEE, 0xEE, 0xEE, 0xEE,
        ]);
        let frame = Frame::new(geometry, 7, 0, buf);
        let rows: Vec<&[u8]> = frame.rows().collect();
        assert_eq!(
            rows,
            vec![
                &[1, 2, 3, 4, 5, 6, 7, 8][..],
                &[9, 10, 11, 12, 13, 14, 15, 16][..]
            ]
        );
        let img = frame.to_rgba_image();
        assert_eq!(img.get_pixel(0, 0).0, [3, 2, 1, 4]);
        assert_eq!(img.get_pixel(1, 1).0, [15, 14, 13, 16]);
    }
}
