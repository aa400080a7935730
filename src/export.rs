//! A frame as a lossless file: PNG for the 8-bit formats (gray, RGB or RGBA, as the
//! frame has them), `.npy` (numpy's array file) for the float formats. What `record`
//! writes and the viewer window's snapshots save.

use std::io::Write;

use crate::frame::{ChannelType, Frame, PixelFormat};

/// The file extension frames of `format` are saved under, without the dot.
pub fn extension(format: PixelFormat) -> &'static str {
    if format.is_float() {
        "npy"
    } else {
        "png"
    }
}

/// Writes `frame` to `out` as [`extension`] says, byte for byte: a PNG of the frame's
/// own channels (BGRA8 swizzled to RGBA), or an `.npy` array of shape (height, width)
/// for one channel, (height, width, channels) otherwise, dtype `<f4` or `<f2`. Rows
/// lose their padding. `fast` picks PNG's fastest compression (for `record`, which
/// keeps up with a stream) over its default.
pub fn write(frame: &Frame, mut out: impl Write, fast: bool) -> std::io::Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let Some(image) = frame.to_image() else {
        return write_npy(frame, out);
    };
    let compression = if fast {
        CompressionType::Fast
    } else {
        CompressionType::Default
    };
    let encoder = PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive);
    image
        .write_with_encoder(encoder)
        .map_err(std::io::Error::other)?;
    out.flush()
}

/// The `.npy` format, version 1.0: magic, version, a little-endian u16 header length,
/// a Python dict literal padded with spaces to a 64-byte boundary and ended by a newline,
/// then the data in C order (numpy's `format.py` documents it).
pub fn write_npy(frame: &Frame, mut out: impl Write) -> std::io::Result<()> {
    let m = frame.meta();
    let descr = match m.format.channel_type() {
        ChannelType::U8 => "|u1",
        ChannelType::F16 => "<f2",
        ChannelType::F32 => "<f4",
    };
    let shape = match m.format.channels() {
        1 => format!("({}, {})", m.height, m.width),
        c => format!("({}, {}, {c})", m.height, m.width),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6), version (2) and length (2) come first; the whole head is a multiple
    // of 64 bytes, the newline its last byte.
    let head = 10 + header.len() + 1;
    header.extend(std::iter::repeat_n(' ', head.next_multiple_of(64) - head));
    header.push('\n');
    let len = u16::try_from(header.len()).map_err(std::io::Error::other)?;
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for row in frame.rows() {
        out.write_all(row)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameGeometry, FramePool};

    fn frame(format: PixelFormat, width: u32, height: u32, pad: u32) -> Frame {
        let geometry = FrameGeometry {
            width,
            height,
            format,
            bytes_per_row: width * format.bytes_per_pixel() + pad,
        };
        let src: Vec<u8> = (0..geometry.total_len()).map(|i| i as u8).collect();
        Frame::copied(geometry, 1, 0, &src, &FramePool::new(1))
    }

    #[test]
    fn npy_has_numpys_header_and_the_rows_without_padding() {
        let f = frame(PixelFormat::Rgb32F, 2, 3, 5);
        let mut out = Vec::new();
        write_npy(&f, &mut out).expect("written");
        let header_len = u16::from_le_bytes([out[8], out[9]]) as usize;
        assert_eq!(&out[..8], b"\x93NUMPY\x01\x00");
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&out[10..10 + header_len]).expect("ASCII");
        assert_eq!(
            header.trim_end(),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 3), }"
        );
        assert!(header.ends_with('\n'));
        assert_eq!(out[10 + header_len..], f.tight_pixels()[..]);
        assert_eq!(f.tight_pixels().len(), 3 * 2 * 12);
    }

    #[test]
    fn one_channel_npy_is_two_dimensional_and_halves_are_f2() {
        let mut out = Vec::new();
        write_npy(&frame(PixelFormat::R32F, 4, 1, 0), &mut out).expect("written");
        assert!(String::from_utf8_lossy(&out).contains("'shape': (1, 4), }"));
        out.clear();
        write_npy(&frame(PixelFormat::Rgba16F, 4, 1, 0), &mut out).expect("written");
        assert!(String::from_utf8_lossy(&out).contains("'descr': '<f2'"));
    }

    #[test]
    fn eight_bit_formats_are_png_of_their_own_channels() {
        for (format, color) in [
            (PixelFormat::R8, image::ColorType::L8),
            (PixelFormat::Rgb8, image::ColorType::Rgb8),
            (PixelFormat::Rgba8, image::ColorType::Rgba8),
        ] {
            let f = frame(format, 5, 3, 7);
            let mut out = Vec::new();
            write(&f, &mut out, true).expect("written");
            let back =
                image::load_from_memory_with_format(&out, image::ImageFormat::Png).expect("a PNG");
            assert_eq!(back.color(), color, "{format}");
            assert_eq!(back.as_bytes(), &f.tight_pixels()[..], "{format}");
            assert_eq!(extension(format), "png");
        }
        assert_eq!(extension(PixelFormat::R32F), "npy");
    }
}
