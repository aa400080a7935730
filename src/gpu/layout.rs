//! Row padding: texture-to-buffer copies need rows aligned to 256 bytes. The padded
//! rows travel as they are (the protocol carries bytes per row), which saves a copy.

/// wgpu's required alignment of `bytes_per_row` in buffer copies.
pub const COPY_ALIGN: u32 = wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;

/// The buffer layout of a `width` x `height` image copied out of a texture: RGBA8/BGRA8
/// ([`RowLayout::new`]) or any other pixel size ([`RowLayout::with_bytes_per_pixel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    pub width: u32,
    pub height: u32,
    /// `width * bytes per pixel`: the bytes of pixels in one row.
    pub unpadded_bytes_per_row: u32,
    /// Rounded up to [`COPY_ALIGN`]: the distance between rows in the buffer.
    pub padded_bytes_per_row: u32,
}

impl RowLayout {
    /// 4 bytes a pixel: RGBA8 or BGRA8.
    pub fn new(width: u32, height: u32) -> RowLayout {
        RowLayout::with_bytes_per_pixel(width, height, 4)
    }

    /// `bytes_per_pixel` bytes a pixel: 8 for RGBA16F, 16 for RGBA32F.
    pub fn with_bytes_per_pixel(width: u32, height: u32, bytes_per_pixel: u32) -> RowLayout {
        let unpadded = width * bytes_per_pixel;
        RowLayout {
            width,
            height,
            unpadded_bytes_per_row: unpadded,
            padded_bytes_per_row: unpadded.div_ceil(COPY_ALIGN) * COPY_ALIGN,
        }
    }

    /// Bytes of the whole buffer: padded rows times height.
    pub fn buffer_size(&self) -> u64 {
        u64::from(self.padded_bytes_per_row) * u64::from(self.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_padded_to_256_bytes() {
        let odd = RowLayout::new(1023, 767);
        assert_eq!(
            (odd.unpadded_bytes_per_row, odd.padded_bytes_per_row),
            (4092, 4096)
        );
        assert_eq!(odd.buffer_size(), 4096 * 767);
        assert_eq!(RowLayout::new(1920, 1080).padded_bytes_per_row, 7680);
        assert_eq!(RowLayout::new(1, 1).padded_bytes_per_row, 256);
        assert_eq!(RowLayout::new(64, 2).padded_bytes_per_row, 256);
        assert_eq!(RowLayout::new(65, 2).padded_bytes_per_row, 512);
        // Float pixels: 8 bytes (RGBA16F) and 16 (RGBA32F).
        let half = RowLayout::with_bytes_per_pixel(37, 3, 8);
        assert_eq!(
            (half.unpadded_bytes_per_row, half.padded_bytes_per_row),
            (296, 512)
        );
        let float = RowLayout::with_bytes_per_pixel(37, 3, 16);
        assert_eq!(
            (float.unpadded_bytes_per_row, float.padded_bytes_per_row),
            (592, 768)
        );
        assert_eq!(float.buffer_size(), 768 * 3);
        assert_eq!(
            RowLayout::with_bytes_per_pixel(16, 1, 16).padded_bytes_per_row,
            256
        );
    }
}
