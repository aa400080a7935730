//! What a frame's pixels become in the viewer's RGBA8 texture, one row at a time, as
//! the upload copies them into the staging buffer: RGBA8 and BGRA8 as they are, gray
//! and RGB given an opaque alpha (R8 as gray), floats mapped from a display range to
//! 0–255 (colour channels; alpha clamped to 0–1). Pure: no wgpu, no allocation.

use crate::frame::{ChannelType, Frame, PixelFormat};

/// The float values shown as black (`min`) and full (`max`); values outside are
/// clamped, NaN shows black.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum DisplayRange {
    /// The smallest and largest finite colour value of each frame.
    #[default]
    Auto,
    Fixed {
        min: f32,
        max: f32,
    },
}

/// Bytes of one shown (RGBA8) pixel.
pub const SHOWN_BYTES_PER_PIXEL: usize = 4;

/// Whether a frame of `format` is copied into the texture as it is (no conversion).
pub fn shown_as_is(format: PixelFormat) -> bool {
    matches!(format, PixelFormat::Rgba8 | PixelFormat::Bgra8)
}

/// The range a float frame is shown with under `range`: for `Auto`, the smallest and
/// largest finite value of its colour channels (one pass over the frame); `(0, 1)`
/// when it has none.
pub fn resolve(range: DisplayRange, frame: &Frame) -> (f32, f32) {
    if let DisplayRange::Fixed { min, max } = range {
        return (min, max);
    }
    let format = frame.meta().format;
    let channels = format.channels() as usize;
    let colour = channels.min(3);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for row in frame.rows() {
        for_each_value(format, row, |i, v| {
            if i % channels < colour && v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        });
    }
    if lo <= hi {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Calls `f(index, value)` for every channel value of a float row.
fn for_each_value(format: PixelFormat, row: &[u8], mut f: impl FnMut(usize, f32)) {
    match format.channel_type() {
        ChannelType::F32 => {
            for (i, b) in row.chunks_exact(4).enumerate() {
                f(i, f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
        }
        ChannelType::F16 => {
            for (i, b) in row.chunks_exact(2).enumerate() {
                f(i, half::f16::from_le_bytes([b[0], b[1]]).to_f32());
            }
        }
        ChannelType::U8 => {}
    }
}

/// Writes one row of a frame of `format` (`src`: its pixels, without padding) as RGBA8
/// into `dst` (`width * 4` bytes). `range` is [`resolve`]'s, for float formats.
pub fn expand_row(format: PixelFormat, src: &[u8], dst: &mut [u8], range: (f32, f32)) {
    match format {
        PixelFormat::Rgba8 | PixelFormat::Bgra8 => dst.copy_from_slice(src),
        PixelFormat::R8 => {
            for (px, &v) in dst.chunks_exact_mut(4).zip(src) {
                px.copy_from_slice(&[v, v, v, 255]);
            }
        }
        PixelFormat::Rgb8 => {
            for (px, rgb) in dst.chunks_exact_mut(4).zip(src.chunks_exact(3)) {
                px.copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
            }
        }
        PixelFormat::R32F | PixelFormat::Rgb32F | PixelFormat::Rgba32F | PixelFormat::Rgba16F => {
            let (min, max) = range;
            let scale = if max > min { 255.0 / (max - min) } else { 0.0 };
            let channels = format.channels() as usize;
            for_each_value(format, src, |i, v| {
                let (x, c) = (i / channels, i % channels);
                // A NaN stays NaN through `clamp`, and `as u8` makes it 0.
                let shown = |v: f32, lo: f32, scale: f32| {
                    ((v - lo) * scale).clamp(0.0, 255.0).round() as u8
                };
                let px = &mut dst[x * 4..x * 4 + 4];
                match (channels, c) {
                    (1, _) => {
                        let g = shown(v, min, scale);
                        px.copy_from_slice(&[g, g, g, 255]);
                    }
                    (3, _) => {
                        px[c] = shown(v, min, scale);
                        px[3] = 255;
                    }
                    (_, 3) => px[3] = shown(v, 0.0, 255.0),
                    _ => px[c] = shown(v, min, scale),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameGeometry, FramePool};

    fn frame(format: PixelFormat, width: u32, bytes: &[u8]) -> Frame {
        let row = width * format.bytes_per_pixel();
        let geometry = FrameGeometry {
            width,
            height: bytes.len() as u32 / row,
            format,
            bytes_per_row: row,
        };
        Frame::copied(geometry, 1, 0, bytes, &FramePool::new(1))
    }

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn gray_and_rgb_get_an_opaque_alpha() {
        let mut dst = [0u8; 8];
        expand_row(PixelFormat::R8, &[7, 200], &mut dst, (0.0, 1.0));
        assert_eq!(dst, [7, 7, 7, 255, 200, 200, 200, 255]);
        expand_row(PixelFormat::Rgb8, &[1, 2, 3, 4, 5, 6], &mut dst, (0.0, 1.0));
        assert_eq!(dst, [1, 2, 3, 255, 4, 5, 6, 255]);
    }

    #[test]
    fn floats_map_their_range_to_0_255_and_clamp() {
        let mut dst = [0u8; 16];
        let src = f32s(&[0.0, 0.5, 1.0, 2.0]);
        expand_row(PixelFormat::R32F, &src, &mut dst, (0.0, 1.0));
        assert_eq!(
            dst,
            [0, 0, 0, 255, 128, 128, 128, 255, 255, 255, 255, 255, 255, 255, 255, 255]
        );
        let src = f32s(&[-1.0, f32::NAN, 3.0, 0.5, 1.0, 0.25, 0.0, 2.0]);
        let mut dst = [0u8; 8];
        expand_row(PixelFormat::Rgba32F, &src, &mut dst, (-1.0, 3.0));
        assert_eq!(dst, [0, 0, 255, 128, 128, 80, 64, 255]);
        let halves: Vec<u8> = [0.0f32, 0.5, 1.0, 1.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let mut dst = [0u8; 4];
        expand_row(PixelFormat::Rgba16F, &halves, &mut dst, (0.0, 1.0));
        assert_eq!(dst, [0, 128, 255, 255]);
    }

    #[test]
    fn auto_takes_the_finite_colour_values_of_the_frame() {
        let f = frame(
            PixelFormat::Rgb32F,
            2,
            &f32s(&[0.5, -2.0, 1.0, f32::INFINITY, 4.0, f32::NAN]),
        );
        assert_eq!(resolve(DisplayRange::Auto, &f), (-2.0, 4.0));
        // Alpha does not count.
        let f = frame(PixelFormat::Rgba32F, 1, &f32s(&[0.5, 0.25, 1.0, 9.0]));
        assert_eq!(resolve(DisplayRange::Auto, &f), (0.25, 1.0));
        let fixed = DisplayRange::Fixed { min: 1.0, max: 2.0 };
        assert_eq!(resolve(fixed, &f), (1.0, 2.0));
        let f = frame(PixelFormat::R32F, 1, &f32s(&[f32::NAN]));
        assert_eq!(resolve(DisplayRange::Auto, &f), (0.0, 1.0));
    }
}
