//! What the benchmark's frames show (`--content`), so that a codec is measured on the
//! kind of picture it will carry: the synthetic pixels of old (the same every frame),
//! the moving test pattern, a desktop with a moving cursor, a photo-like picture panned
//! a pixel a frame (every tile changes), or a picture or animation from a file, tiled
//! to the frame's size (and panned with `--pan`).
//!
//! Each frame's picture is made in a buffer of the content's own, outside the timed
//! copy: the benchmark times what a producer does with a picture it has (copy and hash
//! it into a frame), not how the picture was made.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::source::{animation_index, draw_pattern, Source};

/// `--content`: what the frames show.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum ContentKind {
    /// The same synthetic pixels every frame (a cheap pattern, not all one value).
    Synthetic,
    /// The moving test pattern of `serve pattern`, as at 60 fps.
    Pattern,
    /// A desktop: windows, lines of text, a 16x16 cursor moving 8 px a frame.
    Screen,
    /// A photo-like picture (smooth shading under sensor-like noise) panned 1 px a frame.
    Photo,
    /// A picture or an animation (played as at 60 fps) from a file, repeated to fill
    /// the frame.
    File(PathBuf),
}

impl ContentKind {
    pub(super) fn parse(s: &str) -> Result<ContentKind, String> {
        Ok(match s {
            "synthetic" => ContentKind::Synthetic,
            "pattern" => ContentKind::Pattern,
            "screen" => ContentKind::Screen,
            "photo" => ContentKind::Photo,
            path if std::path::Path::new(path).exists() => ContentKind::File(path.into()),
            other => {
                return Err(format!(
                    "expected synthetic, pattern, screen, photo or an image file; \
                     {other:?} is none of them"
                ))
            }
        })
    }

    pub(super) fn to_arg(&self) -> String {
        match self {
            ContentKind::Synthetic => "synthetic".into(),
            ContentKind::Pattern => "pattern".into(),
            ContentKind::Screen => "screen".into(),
            ContentKind::Photo => "photo".into(),
            ContentKind::File(p) => p.display().to_string(),
        }
    }
}

/// Frame `seq`'s time on a 60 fps timeline, whatever the benchmark's pace: the same
/// frames come out at every pace and with every codec.
fn timeline(seq: u64) -> Duration {
    Duration::from_micros(seq * 1_000_000 / 60)
}

/// Makes each frame's picture (tightly packed RGBA8 rows).
pub(super) struct Content {
    kind: Kind,
    width: usize,
    height: usize,
    picture: Vec<u8>,
}

enum Kind {
    Still,
    Pattern,
    Screen {
        /// The desktop without the cursor, to put back where the cursor was.
        clean: Vec<u8>,
        cursor: Option<(usize, usize)>,
    },
    Panned {
        /// Rows `pan_range` pixels wider than the frame, panned across.
        wide: Vec<u8>,
        pan_range: usize,
    },
    Animation {
        /// Each picture of the animation, tiled to the frame.
        pictures: Vec<(Vec<u8>, Duration)>,
        total: Duration,
        shown: usize,
    },
}

const CURSOR: usize = 16;
/// How far a panned picture moves, back and forth, in pixels.
const PAN_RANGE: usize = 256;

impl Content {
    pub(super) fn new(
        kind: &ContentKind,
        width: u32,
        height: u32,
        pan: bool,
    ) -> anyhow::Result<Content> {
        let (w, h) = (width as usize, height as usize);
        let mut content = Content {
            kind: Kind::Still,
            width: w,
            height: h,
            picture: vec![0; w * h * 4],
        };
        content.kind = match kind {
            ContentKind::Synthetic => {
                content.picture = super::sender::synthetic_pixels(w * h * 4);
                Kind::Still
            }
            ContentKind::Pattern => Kind::Pattern,
            ContentKind::Screen => {
                let clean = desktop(w, h);
                content.picture.copy_from_slice(&clean);
                Kind::Screen {
                    clean,
                    cursor: None,
                }
            }
            ContentKind::Photo => Kind::Panned {
                wide: photo_like(w + PAN_RANGE, h),
                pan_range: PAN_RANGE,
            },
            ContentKind::File(path) => {
                let spec = path.to_str().context("the content's path is not UTF-8")?;
                let source = Source::open(spec, (width, height), Duration::from_secs(1))
                    .with_context(|| format!("cannot open {}", path.display()))?;
                match source {
                    Source::Still(img) if pan => Kind::Panned {
                        wide: tiled(&img, w + PAN_RANGE, h),
                        pan_range: PAN_RANGE,
                    },
                    Source::Still(img) => {
                        content.picture = tiled(&img, w, h);
                        Kind::Still
                    }
                    Source::Animation { frames, total } => Kind::Animation {
                        pictures: frames
                            .iter()
                            .map(|(img, d)| (tiled(img, w, h), *d))
                            .collect(),
                        total,
                        shown: usize::MAX,
                    },
                    _ => anyhow::bail!("--content takes a picture or an animation file"),
                }
            }
        };
        Ok(content)
    }

    /// Frame `seq`'s picture.
    pub(super) fn picture(&mut self, seq: u64) -> &[u8] {
        let (w, h) = (self.width, self.height);
        match &mut self.kind {
            Kind::Still => {}
            Kind::Pattern => draw_pattern(&mut self.picture, w as u32, h as u32, timeline(seq)),
            Kind::Screen { clean, cursor } => {
                let stride = w * 4;
                if let Some((x, y)) = cursor.take() {
                    for row in y..(y + CURSOR).min(h) {
                        let at = row * stride + x * 4;
                        let end = at + CURSOR.min(w - x) * 4;
                        self.picture[at..end].copy_from_slice(&clean[at..end]);
                    }
                }
                let span_x = w.saturating_sub(CURSOR).max(1);
                let span_y = h.saturating_sub(CURSOR).max(1);
                let (x, y) = ((seq as usize * 8) % span_x, (seq as usize * 3) % span_y);
                for row in y..(y + CURSOR).min(h) {
                    for col in x..(x + CURSOR).min(w) {
                        let at = row * stride + col * 4;
                        self.picture[at..at + 4].copy_from_slice(&[255, 255, 255, 255]);
                    }
                }
                *cursor = Some((x, y));
            }
            Kind::Panned { wide, pan_range } => {
                // Back and forth, a pixel a frame.
                let period = 2 * *pan_range;
                let step = seq as usize % period;
                let x = if step < *pan_range {
                    step
                } else {
                    period - step
                };
                let wide_stride = (w + *pan_range) * 4;
                for (row, out) in self.picture.chunks_exact_mut(w * 4).enumerate() {
                    let at = row * wide_stride + x * 4;
                    out.copy_from_slice(&wide[at..at + w * 4]);
                }
            }
            Kind::Animation {
                pictures,
                total,
                shown,
            } => {
                let index = animation_index(pictures, *total, timeline(seq));
                if index != *shown {
                    self.picture.copy_from_slice(&pictures[index].0);
                    *shown = index;
                }
            }
        }
        &self.picture
    }
}

/// `img` repeated to fill `w` x `h`.
fn tiled(img: &image::RgbaImage, w: usize, h: usize) -> Vec<u8> {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = vec![0u8; w * h * 4];
    for (y, row) in out.chunks_exact_mut(w * 4).enumerate() {
        let src_row = &src[(y % ih) * iw * 4..(y % ih + 1) * iw * 4];
        for piece in row.chunks_mut(iw * 4) {
            piece.copy_from_slice(&src_row[..piece.len()]);
        }
    }
    out
}

/// A desktop: a dark background, three light windows with a title bar and lines of
/// "text" (short dark runs), as screen content is: flat areas and sharp, repeated
/// detail.
fn desktop(w: usize, h: usize) -> Vec<u8> {
    let mut px = vec![0u8; w * h * 4];
    for p in px.chunks_exact_mut(4) {
        p.copy_from_slice(&[32, 36, 44, 255]);
    }
    let windows = [
        (0.05, 0.08, 0.45, 0.6),
        (0.55, 0.1, 0.4, 0.8),
        (0.1, 0.7, 0.4, 0.25),
    ];
    for (wi, (fx, fy, fw, fh)) in windows.into_iter().enumerate() {
        let (x0, y0) = ((fx * w as f64) as usize, (fy * h as f64) as usize);
        let (x1, y1) = (
            ((fx + fw) * w as f64).min(w as f64) as usize,
            ((fy + fh) * h as f64).min(h as f64) as usize,
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let title = y < y0 + 24;
                let text_line = (y - y0) % 18;
                let glyph = (x - x0 + wi * 5) % 9;
                let word = ((x - x0) / 54 + (y - y0) / 18 + wi) % 5 != 0;
                let colour: [u8; 4] = if title {
                    [70, 90, 140, 255]
                } else if (30..39).contains(&text_line) || (3..11).contains(&text_line) {
                    if glyph < 5 && word && (x * 7 + y * 13) % 11 > 2 {
                        [30, 30, 36, 255]
                    } else {
                        [240, 240, 242, 255]
                    }
                } else {
                    [240, 240, 242, 255]
                };
                px[(y * w + x) * 4..(y * w + x) * 4 + 4].copy_from_slice(&colour);
            }
        }
    }
    px
}

/// Photo-like pixels: smooth shading in each channel under luminance noise, as a camera
/// gives (it compresses losslessly about as a photograph does, to roughly 60 % with QOI).
fn photo_like(w: usize, h: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut px = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state % 13) as i32 - 6;
            let fx = x as f64 / w as f64;
            let fy = y as f64 / h as f64;
            let base = [
                120.0 + 90.0 * (fx * 6.0 + fy * 2.0).sin(),
                110.0 + 80.0 * (fy * 5.0 - fx * 3.0).cos(),
                100.0 + 70.0 * (fx * 4.0 * fy + 1.0).sin(),
            ];
            let at = (y * w + x) * 4;
            for (c, b) in base.into_iter().enumerate() {
                px[at + c] = (b as i32 + noise).clamp(0, 255) as u8;
            }
            px[at + 3] = 255;
        }
    }
    px
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_content_changes_as_it_should_from_frame_to_frame() {
        let (w, h) = (300u32, 200u32);
        let changed = |kind: ContentKind| {
            let mut c = Content::new(&kind, w, h, false).expect("content");
            let a = c.picture(1).to_vec();
            let b = c.picture(2).to_vec();
            assert_eq!(a.len(), (w * h * 4) as usize);
            a.iter().zip(&b).filter(|(x, y)| x != y).count()
        };
        assert_eq!(changed(ContentKind::Synthetic), 0);
        // The cursor: its old place and its new one, at most two 16x16 squares.
        let screen = changed(ContentKind::Screen);
        assert!(screen > 0 && screen <= 2 * 16 * 16 * 4, "{screen}");
        // Panned: nearly every byte.
        let photo = changed(ContentKind::Photo);
        assert!(photo > (w * h * 2) as usize, "{photo}");
        assert!(changed(ContentKind::Pattern) > 0);
    }

    #[test]
    fn a_picture_is_repeated_to_fill_the_frame() {
        let img = image::RgbaImage::from_fn(3, 2, |x, y| image::Rgba([x as u8, y as u8, 7, 255]));
        let out = tiled(&img, 7, 5);
        let at = |x: usize, y: usize| &out[(y * 7 + x) * 4..(y * 7 + x) * 4 + 4];
        assert_eq!(at(0, 0), &[0, 0, 7, 255]);
        assert_eq!(at(4, 3), &[1, 1, 7, 255]);
        assert_eq!(at(6, 4), &[0, 0, 7, 255]);
    }
}
