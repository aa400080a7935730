//! Frames: a per-frame header (`FrameMeta`) by value and the pixels behind an `Arc` of
//! their own, shared between consumers and re-published under a new header without
//! copying; the pixel buffers, `Arc` and all, recycled through a [`FramePool`] so that
//! nothing is allocated per frame once the pool is warm.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::protocol::FrameStart;

/// Layout of one pixel. Channels are packed in the order named, with no padding
/// between pixels; float channels are IEEE 754, little-endian. RGBA8 and BGRA8 are what
/// every peer takes; the others go only to peers whose hello has
/// [`Capabilities::FORMATS`](crate::protocol::Capabilities::FORMATS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum PixelFormat {
    Rgba8 = 1,
    Bgra8 = 2,
    /// One 8-bit channel (gray, a mask).
    R8 = 3,
    /// Three 8-bit channels.
    Rgb8 = 4,
    /// One 32-bit float channel (a depth map).
    R32F = 5,
    /// Three 32-bit float channels.
    Rgb32F = 6,
    /// Four 32-bit float channels.
    Rgba32F = 7,
    /// Four 16-bit float channels (HDR).
    Rgba16F = 8,
}

/// The type of one channel of a [`PixelFormat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelType {
    U8,
    F16,
    F32,
}

impl PixelFormat {
    /// Every format, in code order.
    pub const ALL: [PixelFormat; 8] = [
        PixelFormat::Rgba8,
        PixelFormat::Bgra8,
        PixelFormat::R8,
        PixelFormat::Rgb8,
        PixelFormat::R32F,
        PixelFormat::Rgb32F,
        PixelFormat::Rgba32F,
        PixelFormat::Rgba16F,
    ];

    pub fn from_u8(code: u8) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| *f as u8 == code)
    }

    /// Channels per pixel.
    pub fn channels(self) -> u32 {
        match self {
            PixelFormat::R8 | PixelFormat::R32F => 1,
            PixelFormat::Rgb8 | PixelFormat::Rgb32F => 3,
            PixelFormat::Rgba8
            | PixelFormat::Bgra8
            | PixelFormat::Rgba32F
            | PixelFormat::Rgba16F => 4,
        }
    }

    pub fn channel_type(self) -> ChannelType {
        match self {
            PixelFormat::Rgba8 | PixelFormat::Bgra8 | PixelFormat::R8 | PixelFormat::Rgb8 => {
                ChannelType::U8
            }
            PixelFormat::Rgba16F => ChannelType::F16,
            PixelFormat::R32F | PixelFormat::Rgb32F | PixelFormat::Rgba32F => ChannelType::F32,
        }
    }

    /// Bytes of one pixel: 1 to 16.
    pub fn bytes_per_pixel(self) -> u32 {
        let channel_bytes = match self.channel_type() {
            ChannelType::U8 => 1,
            ChannelType::F16 => 2,
            ChannelType::F32 => 4,
        };
        self.channels() * channel_bytes
    }

    /// Whether its channels are floats.
    pub fn is_float(self) -> bool {
        self.channel_type() != ChannelType::U8
    }

    /// Whether only a peer with
    /// [`Capabilities::FORMATS`](crate::protocol::Capabilities::FORMATS) takes it: every
    /// format but the first two, which an older peer refuses (as `InvalidValue`).
    pub fn needs_formats_capability(self) -> bool {
        !matches!(self, PixelFormat::Rgba8 | PixelFormat::Bgra8)
    }

    /// Its name as written in docs, logs and the Python package: `rgba8`, `r32f`…
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgba8 => "rgba8",
            PixelFormat::Bgra8 => "bgra8",
            PixelFormat::R8 => "r8",
            PixelFormat::Rgb8 => "rgb8",
            PixelFormat::R32F => "r32f",
            PixelFormat::Rgb32F => "rgb32f",
            PixelFormat::Rgba32F => "rgba32f",
            PixelFormat::Rgba16F => "rgba16f",
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything about a frame but its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// The producer's sequence number; relays keep it.
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Bytes from one row to the next, at least `width * format.bytes_per_pixel()` (wgpu
    /// readback pads to 256).
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

    /// The frame's size, pixel format and row pitch.
    pub fn geometry(&self) -> FrameGeometry {
        FrameGeometry {
            width: self.width,
            height: self.height,
            format: self.format,
            bytes_per_row: self.bytes_per_row,
        }
    }

    /// Bytes of pixels in one row, without padding.
    pub fn row_bytes(&self) -> usize {
        self.width as usize * self.format.bytes_per_pixel() as usize
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

/// A complete, immutable frame: its per-frame header by value and its pixels behind an
/// `Arc` of their own. Cloning shares the pixels; [`Frame::with_seq`] re-publishes them
/// under a new header with no copy, no hash and no allocation.
#[derive(Clone)]
pub struct Frame {
    meta: FrameMeta,
    pixels: Pixels,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame").field("meta", &self.meta).finish()
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
        Frame {
            meta,
            pixels: pixels.into_shared(),
        }
    }

    /// The same pixels under a new sequence number and capture time: geometry and
    /// checksum are kept, nothing is copied, hashed or allocated. For a producer whose
    /// picture has not changed (a still image, an animation's same frame).
    pub fn with_seq(&self, seq: u64, capture_us: u64) -> Frame {
        Frame {
            meta: FrameMeta {
                seq,
                capture_us,
                ..self.meta
            },
            pixels: self.pixels.clone(),
        }
    }

    /// Whether both frames show the very same pixel buffer (not merely equal bytes).
    pub fn shares_pixels(&self, other: &Frame) -> bool {
        self.pixels.ptr_eq(&other.pixels)
    }

    pub fn meta(&self) -> &FrameMeta {
        &self.meta
    }

    /// All pixel bytes, row padding included.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The rows without their padding, `width * bytes_per_pixel` bytes each.
    pub fn rows(&self) -> impl Iterator<Item = &[u8]> {
        let m = self.meta();
        let row_bytes = m.row_bytes();
        self.pixels()
            .chunks_exact(m.bytes_per_row as usize)
            .map(move |row| &row[..row_bytes])
    }

    /// The pixels without row padding, in a new buffer.
    pub fn tight_pixels(&self) -> Vec<u8> {
        let m = self.meta();
        if m.bytes_per_row as usize == m.row_bytes() {
            return self.pixels().to_vec();
        }
        let mut out = Vec::with_capacity(m.row_bytes() * m.height as usize);
        for row in self.rows() {
            out.extend_from_slice(row);
        }
        out
    }

    /// The frame as an 8-bit image, byte for byte (BGRA swizzled to RGBA), for saving
    /// as PNG: gray for R8, RGB for RGB8, RGBA for RGBA8 and BGRA8. `None` for float
    /// formats, which PNG cannot hold losslessly (see [`crate::export`]).
    pub fn to_image(&self) -> Option<image::DynamicImage> {
        let m = self.meta();
        let mut out = self.tight_pixels();
        let (w, h) = (m.width, m.height);
        match m.format {
            PixelFormat::Rgba8 => image::RgbaImage::from_raw(w, h, out).map(Into::into),
            PixelFormat::Bgra8 => {
                for px in out.chunks_exact_mut(4) {
                    px.swap(0, 2);
                }
                image::RgbaImage::from_raw(w, h, out).map(Into::into)
            }
            PixelFormat::R8 => image::GrayImage::from_raw(w, h, out).map(Into::into),
            PixelFormat::Rgb8 => image::RgbImage::from_raw(w, h, out).map(Into::into),
            PixelFormat::R32F
            | PixelFormat::Rgb32F
            | PixelFormat::Rgba32F
            | PixelFormat::Rgba16F => None,
        }
    }
}

/// The bytes of one buffer and the pool it goes back to. Always behind an `Arc`; the
/// pool keeps the `Arc` itself, so a recycled buffer costs no allocation at all.
struct PixelData {
    bytes: Vec<u8>,
    /// Weak, so that idle buffers queued in the pool's channel do not keep that channel
    /// (and so themselves) alive once every handle to the pool is gone.
    home: Option<flume::WeakSender<Arc<PixelData>>>,
}

/// Hands `arc` back to its pool if this is the last handle to it; otherwise (or with
/// no pool, or a full or dropped one) just lets go of this handle.
fn release(mut arc: Arc<PixelData>) {
    // `get_mut` succeeds only for the last handle (no weak references are ever made),
    // and from then on nobody else can reach the buffer. Two last handles dropped at
    // the same instant on two threads may both see the other and neither recycle: the
    // buffer is then freed, and the pool allocates once more later. Never unsound,
    // only a missed reuse.
    let Some(data) = Arc::get_mut(&mut arc) else {
        return;
    };
    let Some(home) = data.home.as_ref().and_then(flume::WeakSender::upgrade) else {
        return;
    };
    // A full or closed pool just lets the buffer go.
    let _ = home.try_send(arc);
}

/// A frame's shared, read-only pixels. The last clone dropped returns the buffer
/// (`Arc` and all) to its pool.
#[derive(Clone)]
struct Pixels(Option<Arc<PixelData>>);

impl Pixels {
    fn ptr_eq(&self, other: &Pixels) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Deref for Pixels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // Always `Some` but while being dropped.
        self.0.as_deref().map_or(&[], |data| &data.bytes)
    }
}

impl Drop for Pixels {
    fn drop(&mut self) {
        if let Some(arc) = self.0.take() {
            release(arc);
        }
    }
}

/// Recycles pixel buffers: a buffer taken from the pool goes back to it — the `Arc`
/// that frames share, not only its bytes — when its last user drops it. Cloning the
/// pool shares it.
#[derive(Clone)]
pub struct FramePool {
    tx: flume::Sender<Arc<PixelData>>,
    rx: flume::Receiver<Arc<PixelData>>,
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
        let recycled = self.rx.try_recv().ok().and_then(|mut arc| {
            // Only the last handle is ever queued, so the pool holds it alone.
            let bytes = &mut Arc::get_mut(&mut arc)?.bytes;
            if bytes.len() == len {
                // The usual case, frames of one size: reused as it is, nothing written.
            } else if bytes.len() > len && bytes.len() / 2 <= len {
                // A little smaller: cut, nothing written.
                bytes.truncate(len);
            } else {
                // Larger (growing would write zeroes into every new byte: memory a
                // frame merely declared would cost), or much smaller (a large buffer
                // is let go, not kept for small frames): a fresh allocation below.
                return None;
            }
            Some(arc)
        });
        let arc = recycled.unwrap_or_else(|| {
            // A fresh zeroed allocation, whose pages the system provides only as they
            // are written: a frame declared large but never sent costs no memory.
            Arc::new(PixelData {
                bytes: vec![0u8; len],
                home: Some(self.tx.downgrade()),
            })
        });
        PooledBuf(Some(arc))
    }

    /// Idle buffers in the pool now.
    pub fn idle(&self) -> usize {
        self.rx.len()
    }
}

/// A writable byte buffer, held alone until it becomes a [`Frame`]'s pixels; it returns
/// to its pool when dropped.
pub struct PooledBuf(Option<Arc<PixelData>>);

impl PooledBuf {
    /// A buffer that belongs to no pool.
    pub fn detached(data: Vec<u8>) -> PooledBuf {
        PooledBuf(Some(Arc::new(PixelData {
            bytes: data,
            home: None,
        })))
    }

    /// Frees the buffer instead of returning it to its pool: for a frame abandoned
    /// half-received, whose written pages a pooled buffer would keep.
    pub fn discard(mut self) {
        drop(self.0.take());
    }

    fn into_shared(mut self) -> Pixels {
        Pixels(self.0.take())
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // Always `Some` but while being dropped or shared.
        self.0.as_deref().map_or(&[], |data| &data.bytes)
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // A `PooledBuf` is the one handle to its buffer (made fresh, or queued in the
        // pool only once unique, and never cloned), so `get_mut` always succeeds.
        match self.0.as_mut().and_then(Arc::get_mut) {
            Some(data) => &mut data.bytes,
            None => &mut [],
        }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(arc) = self.0.take() {
            release(arc);
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
    fn a_republished_frame_shares_its_pixels_under_a_new_header() {
        let pool = FramePool::new(2);
        let g = FrameGeometry::rgba8(64, 32);
        let src: Vec<u8> = (0..g.total_len()).map(|i| (i % 253) as u8).collect();
        let first = Frame::copied(g, 1, 100, &src, &pool);
        let again = first.with_seq(2, 200);
        assert_eq!(again.pixels().as_ptr(), first.pixels().as_ptr());
        assert!(again.shares_pixels(&first));
        assert_eq!((again.meta().seq, again.meta().capture_us), (2, 200));
        assert_eq!(
            FrameMeta {
                seq: 1,
                capture_us: 100,
                ..*again.meta()
            },
            *first.meta(),
            "geometry and checksum are kept"
        );
        let other = Frame::copied(g, 3, 300, &src, &pool);
        assert!(!other.shares_pixels(&first), "equal bytes, another buffer");
    }

    #[test]
    fn pixels_go_back_to_the_pool_only_with_their_last_frame() {
        let pool = FramePool::new(2);
        let g = FrameGeometry::rgba8(16, 16);
        let frame = Frame::new(g, 1, 0, pool.take(g.total_len()));
        let ptr = frame.pixels().as_ptr();
        let republished = frame.with_seq(2, 0);
        let peer_copy = republished.clone();
        drop(frame);
        drop(republished);
        assert_eq!(pool.idle(), 0, "a frame still holds the pixels");
        drop(peer_copy);
        assert_eq!(pool.idle(), 1);
        let next = Frame::new(g, 3, 0, pool.take(g.total_len()));
        assert_eq!(next.pixels().as_ptr(), ptr, "the same buffer, reused");
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn an_unused_buffer_goes_back_to_the_pool() {
        let pool = FramePool::new(1);
        drop(pool.take(100));
        drop(pool.take(100));
        assert_eq!(pool.idle(), 1, "at most `capacity` idle buffers are kept");
        let detached = PooledBuf::detached(vec![1, 2, 3]);
        drop(detached);
        assert_eq!(pool.idle(), 1, "a detached buffer belongs to no pool");
    }

    #[test]
    fn a_buffer_outliving_its_pool_is_simply_freed() {
        let pool = FramePool::new(1);
        let buf = pool.take(10);
        drop(pool);
        drop(buf);
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
        let img = frame.to_image().expect("an 8-bit image").to_rgba8();
        assert_eq!(img.get_pixel(0, 0).0, [3, 2, 1, 4]);
        assert_eq!(img.get_pixel(1, 1).0, [15, 14, 13, 16]);
    }
}
