//! Frame producers for the headless sender: a still image, a folder played as a
//! slideshow, an animated GIF/APNG/WebP at its own timing, or a generated moving test
//! pattern. Each gives the picture for a point in time as a pooled [`Frame`].

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::{AnimationDecoder, ImageFormat, RgbaImage};

use crate::frame::{Frame, FrameGeometry, FramePool};

/// Why a source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a readable image ({source}): {}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("no image files in folder {}", .0.display())]
    EmptyFolder(PathBuf),
    #[error("{width}x{height} is too large to stream (at most {max} per side): {}", path.display())]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max: u32,
    },
}

/// Largest width or height a source may have (the protocol's default limit).
const MAX_SIDE: u32 = 16384;

/// Something that produces pictures over time.
pub enum Source {
    Still(RgbaImage),
    Slideshow {
        paths: Vec<PathBuf>,
        slide: Duration,
        shown: Option<(usize, RgbaImage)>,
    },
    Animation {
        frames: Vec<(RgbaImage, Duration)>,
        total: Duration,
    },
    Pattern {
        width: u32,
        height: u32,
    },
}

impl Source {
    /// Opens `spec`: the word `pattern`, a folder of images, or an image file (animated
    /// GIF, APNG and WebP play at their own timing). `pattern_size` sizes the pattern;
    /// `slide` is how long each picture of a folder shows.
    pub fn open(
        spec: &str,
        pattern_size: (u32, u32),
        slide: Duration,
    ) -> Result<Source, SourceError> {
        if spec == "pattern" {
            let (width, height) = pattern_size;
            return Ok(Source::Pattern {
                width: width.clamp(1, MAX_SIDE),
                height: height.clamp(1, MAX_SIDE),
            });
        }
        let path = Path::new(spec);
        let meta = std::fs::metadata(path).map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })?;
        if meta.is_dir() {
            return open_folder(path, slide);
        }
        if let Some(frames) = open_animation(path)? {
            let total = frames.iter().map(|(_, d)| *d).sum();
            return Ok(Source::Animation { frames, total });
        }
        Ok(Source::Still(open_image(path)?))
    }

    /// A still image already in memory.
    pub fn from_image(image: RgbaImage) -> Source {
        Source::Still(image)
    }

    /// The frame size, when every picture has the same one (a folder's may differ).
    pub fn size(&self) -> Option<(u32, u32)> {
        match self {
            Source::Still(img) => Some(img.dimensions()),
            Source::Animation { frames, .. } => frames.first().map(|(f, _)| f.dimensions()),
            Source::Slideshow { .. } => None,
            Source::Pattern { width, height } => Some((*width, *height)),
        }
    }

    /// One line saying what this source is.
    pub fn describe(&self) -> String {
        match self {
            Source::Still(img) => format!("still image {}x{}", img.width(), img.height()),
            Source::Slideshow { paths, slide, .. } => {
                format!(
                    "slideshow of {} images, {:.1} s each",
                    paths.len(),
                    slide.as_secs_f64()
                )
            }
            Source::Animation { frames, total } => format!(
                "animation of {} frames, {:.2} s per loop",
                frames.len(),
                total.as_secs_f64()
            ),
            Source::Pattern { width, height } => format!("test pattern {width}x{height}"),
        }
    }

    /// The picture at time `t` since the start, as a frame in a buffer from `pool`.
    /// A slideshow decodes its next picture here; an unreadable one is skipped.
    pub fn frame_at(&mut self, t: Duration, seq: u64, capture_us: u64, pool: &FramePool) -> Frame {
        match self {
            Source::Still(img) => image_frame(img, seq, capture_us, pool),
            Source::Animation { frames, total } => {
                let index = animation_index(frames, *total, t);
                image_frame(&frames[index].0, seq, capture_us, pool)
            }
            Source::Slideshow {
                paths,
                slide,
                shown,
            } => {
                show_slide(paths, *slide, shown, t);
                match shown.as_ref() {
                    Some((_, img)) => image_frame(img, seq, capture_us, pool),
                    None => image_frame(&RgbaImage::new(1, 1), seq, capture_us, pool),
                }
            }
            Source::Pattern { width, height } => {
                pattern_frame(*width, *height, t, seq, capture_us, pool)
            }
        }
    }
}

/// A source's frames as a producer publishes them, with nothing done twice: a picture
/// that has not changed since the last frame (a still image; an animation's or a
/// slideshow's same picture) goes out as the same pixels under a new sequence number —
/// copied and hashed once, then shared, with no copy, hash or allocation per frame —
/// and the pattern is hashed as it is drawn, in one pass.
pub struct Frames {
    source: Source,
    /// The last picture copied out, and which one it was.
    last: Option<(PictureKey, Frame)>,
    copies: u64,
}

/// Which picture of a source a frame shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PictureKey {
    Still,
    Animation(usize),
    Slide(usize),
}

impl Frames {
    pub fn new(source: Source) -> Frames {
        Frames {
            source,
            last: None,
            copies: 0,
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Pictures copied out of the source (and hashed) so far: 1 for a still image
    /// however many frames it made; for the pattern, one per frame drawn.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// The picture at time `t` since the start, as frame `seq`.
    pub fn frame_at(&mut self, t: Duration, seq: u64, capture_us: u64, pool: &FramePool) -> Frame {
        let key = match &mut self.source {
            Source::Still(_) => PictureKey::Still,
            Source::Animation { frames, total } => {
                PictureKey::Animation(animation_index(frames, *total, t))
            }
            Source::Slideshow {
                paths,
                slide,
                shown,
            } => PictureKey::Slide(show_slide(paths, *slide, shown, t)),
            Source::Pattern { width, height } => {
                self.copies += 1;
                return pattern_frame(*width, *height, t, seq, capture_us, pool);
            }
        };
        if let Some((last_key, frame)) = &self.last {
            if *last_key == key {
                return frame.with_seq(seq, capture_us);
            }
        }
        let frame = self.source.frame_at(t, seq, capture_us, pool);
        self.copies += 1;
        self.last = Some((key, frame.clone()));
        frame
    }
}

/// Which of an animation's frames shows at `t` (looping).
pub fn animation_index<P>(frames: &[(P, Duration)], total: Duration, t: Duration) -> usize {
    let mut at = Duration::from_nanos((t.as_nanos() % total.as_nanos().max(1)) as u64);
    for (i, (_, delay)) in frames.iter().enumerate() {
        if at < *delay {
            return i;
        }
        at -= *delay;
    }
    frames.len() - 1
}

/// Makes the slide due at `t` the one shown (decoding it if it is not); returns its
/// index. An unreadable picture is skipped: the one shown before stays for its turn.
fn show_slide(
    paths: &[PathBuf],
    slide: Duration,
    shown: &mut Option<(usize, RgbaImage)>,
    t: Duration,
) -> usize {
    let want = (t.as_nanos() / slide.as_nanos().max(1)) as usize % paths.len();
    if shown.as_ref().map(|(i, _)| *i) != Some(want) {
        let img = match open_image(&paths[want]) {
            Ok(img) => img,
            Err(e) => {
                // Tried once per turn of the slide, not once per frame: the picture
                // shown before stays up, under this slide's turn.
                tracing::warn!("slideshow: skipping a picture: {e}");
                shown
                    .take()
                    .map_or_else(|| RgbaImage::new(1, 1), |(_, img)| img)
            }
        };
        *shown = Some((want, img));
    }
    shown.as_ref().map_or(0, |(i, _)| *i)
}

/// The pattern at `t`, hashed row by row as it is drawn (each row still in cache).
fn pattern_frame(
    width: u32,
    height: u32,
    t: Duration,
    seq: u64,
    capture_us: u64,
    pool: &FramePool,
) -> Frame {
    let g = FrameGeometry::rgba8(width, height);
    let mut buf = pool.take(g.total_len());
    let mut hasher = crate::protocol::Checksum::new();
    draw_pattern_rows(&mut buf, width, height, t, |row| hasher.update(row));
    Frame::from_verified(g.meta(seq, capture_us, hasher.digest()), buf)
}

fn image_frame(img: &RgbaImage, seq: u64, capture_us: u64, pool: &FramePool) -> Frame {
    let g = FrameGeometry::rgba8(img.width(), img.height());
    Frame::copied(g, seq, capture_us, img.as_raw(), pool)
}

/// Decodes any format the `image` crate reads, converted to RGBA8.
pub fn open_image(path: &Path) -> Result<RgbaImage, SourceError> {
    let decode = |source| SourceError::Decode {
        path: path.to_owned(),
        source,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })?;
    let img = reader.decode().map_err(decode)?.to_rgba8();
    check_size(path, img.width(), img.height())?;
    Ok(img)
}

fn check_size(path: &Path, width: u32, height: u32) -> Result<(), SourceError> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(SourceError::TooLarge {
            path: path.to_owned(),
            width,
            height,
            max: MAX_SIDE,
        });
    }
    Ok(())
}

/// The frames of an animated GIF, APNG or WebP with more than one frame; `None` for
/// anything else (which is then read as a still image).
fn open_animation(path: &Path) -> Result<Option<Vec<(RgbaImage, Duration)>>, SourceError> {
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| SourceError::Open {
                path: path.to_owned(),
                source,
            })
    };
    let format = image::ImageReader::new(open()?)
        .with_guessed_format()
        .ok()
        .and_then(|r| r.format());
    let decode = |source| SourceError::Decode {
        path: path.to_owned(),
        source,
    };
    let frames = match format {
        Some(ImageFormat::Gif) => image::codecs::gif::GifDecoder::new(open()?)
            .and_then(|d| d.into_frames().collect_frames())
            .map_err(decode)?,
        Some(ImageFormat::Png) => {
            let d = image::codecs::png::PngDecoder::new(open()?).map_err(decode)?;
            if !d.is_apng().map_err(decode)? {
                return Ok(None);
            }
            d.apng()
                .and_then(|a| a.into_frames().collect_frames())
                .map_err(decode)?
        }
        Some(ImageFormat::WebP) => {
            let d = image::codecs::webp::WebPDecoder::new(open()?).map_err(decode)?;
            if !d.has_animation() {
                return Ok(None);
            }
            d.into_frames().collect_frames().map_err(decode)?
        }
        _ => return Ok(None),
    };
    if frames.len() < 2 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        let (numer, denom) = f.delay().numer_denom_ms();
        // Browsers show delays under 20 ms as 100 ms; do the same.
        let ms = f64::from(numer) / f64::from(denom.max(1));
        let delay = if ms < 20.0 { 100.0 } else { ms };
        let img = f.into_buffer();
        check_size(path, img.width(), img.height())?;
        out.push((img, Duration::from_secs_f64(delay / 1000.0)));
    }
    Ok(Some(out))
}

/// Whether a path's extension is one of the image formats read here (how the windows
/// tell a dropped image, which they stream, from another file, which they send).
pub fn looks_like_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

const IMAGE_EXTENSIONS: [&str; 14] = [
    "png", "jpg", "jpeg", "gif", "webp", "bmp", "tga", "tif", "tiff", "qoi", "ppm", "pgm", "ico",
    "hdr",
];

fn open_folder(dir: &Path, slide: Duration) -> Result<Source, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::Open {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && looks_like_image(p))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(SourceError::EmptyFolder(dir.to_owned()));
    }
    Ok(Source::Slideshow {
        paths,
        slide: slide.max(Duration::from_millis(10)),
        shown: None,
    })
}

/// A moving test pattern: colour bars, a gradient scrolling with time, and a white box
/// sweeping across, so motion, tearing and colour order are all visible.
pub fn draw_pattern(buf: &mut [u8], width: u32, height: u32, t: Duration) {
    draw_pattern_rows(buf, width, height, t, |_| {});
}

/// [`draw_pattern`], handing each row to `done` as soon as it is drawn.
fn draw_pattern_rows(
    buf: &mut [u8],
    width: u32,
    height: u32,
    t: Duration,
    mut done: impl FnMut(&[u8]),
) {
    const BARS: [[u8; 3]; 8] = [
        [255, 255, 255],
        [255, 255, 0],
        [0, 255, 255],
        [0, 255, 0],
        [255, 0, 255],
        [255, 0, 0],
        [0, 0, 255],
        [0, 0, 0],
    ];
    let (w, h) = (width as usize, height as usize);
    let ms = t.as_millis() as usize;
    let scroll = ms / 8;
    let box_size = (h / 6).max(1);
    let box_x = (ms / 4) % w.max(1);
    let box_y = h / 2 - box_size.min(h / 2) / 2;
    for (y, row) in buf.chunks_exact_mut(w * 4).enumerate().take(h) {
        let top = y < h / 2;
        for (x, px) in row.chunks_exact_mut(4).enumerate() {
            let rgb = if top {
                BARS[x * 8 / w.max(1)]
            } else {
                let v = ((x + y + scroll) & 0xff) as u8;
                [v, (x * 255 / w.max(1)) as u8, 255 - v]
            };
            let in_box = x >= box_x && x < box_x + box_size && y >= box_y && y < box_y + box_size;
            let rgb = if in_box { [255, 255, 255] } else { rgb };
            px.copy_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
        }
        done(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_still_image_is_copied_and_hashed_once_then_shared() {
        let img = RgbaImage::from_fn(97, 61, |x, y| image::Rgba([x as u8, y as u8, 7, 255]));
        let pool = FramePool::new(4);
        let mut frames = Frames::new(Source::from_image(img.clone()));
        let first = frames.frame_at(Duration::ZERO, 0, 10, &pool);
        for seq in 1..100u64 {
            let f = frames.frame_at(Duration::from_millis(seq * 16), seq, 10 + seq, &pool);
            assert_eq!((f.meta().seq, f.meta().capture_us), (seq, 10 + seq));
            assert_eq!(f.meta().checksum, first.meta().checksum);
            assert!(
                f.shares_pixels(&first),
                "frame {seq} shares the first's pixels"
            );
        }
        assert_eq!(frames.copies(), 1, "one copy and hash for 100 frames");
        assert_eq!(first.pixels(), img.as_raw().as_slice());
        assert_eq!(
            first.meta().checksum,
            crate::protocol::checksum(img.as_raw())
        );
    }

    #[test]
    fn an_animation_copies_each_picture_as_it_changes() {
        let pic = |v: u8| {
            (
                RgbaImage::from_pixel(8, 8, image::Rgba([v, v, v, 255])),
                Duration::from_millis(100),
            )
        };
        let source = Source::Animation {
            frames: vec![pic(1), pic(2)],
            total: Duration::from_millis(200),
        };
        let pool = FramePool::new(4);
        let mut frames = Frames::new(source);
        let mut shown = Vec::new();
        // 10 ms steps over two loops: 4 changes of picture.
        for i in 0..40u64 {
            let f = frames.frame_at(Duration::from_millis(i * 10), i, 0, &pool);
            shown.push(f.pixels()[0]);
        }
        assert_eq!(&shown[..10], &[1; 10]);
        assert_eq!(&shown[10..20], &[2; 10]);
        assert_eq!(&shown[20..30], &[1; 10]);
        assert_eq!(frames.copies(), 4);
    }

    #[test]
    fn the_pattern_is_hashed_as_it_is_drawn() {
        let pool = FramePool::new(2);
        let mut frames = Frames::new(Source::Pattern {
            width: 333,
            height: 77,
        });
        let f = frames.frame_at(Duration::from_millis(1234), 5, 0, &pool);
        assert_eq!(f.meta().checksum, crate::protocol::checksum(f.pixels()));
        let mut drawn = vec![0u8; 333 * 77 * 4];
        draw_pattern(&mut drawn, 333, 77, Duration::from_millis(1234));
        assert_eq!(f.pixels(), drawn.as_slice());
    }

    #[test]
    fn pattern_moves_over_time() {
        let pool = FramePool::new(2);
        let mut src = Source::Pattern {
            width: 64,
            height: 32,
        };
        let a = src.frame_at(Duration::ZERO, 0, 0, &pool);
        let b = src.frame_at(Duration::from_millis(500), 1, 0, &pool);
        assert_eq!(a.pixels().len(), 64 * 32 * 4);
        assert_ne!(a.pixels(), b.pixels());
    }

    #[test]
    fn animated_gif_plays_at_its_own_timing() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame as ImgFrame, Rgba};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("anim.gif");
        {
            let mut enc = GifEncoder::new(File::create(&path).expect("create"));
            for colour in [[255, 0, 0, 255], [0, 0, 255, 255]] {
                let img = RgbaImage::from_pixel(4, 4, Rgba(colour));
                enc.encode_frame(ImgFrame::from_parts(
                    img,
                    0,
                    0,
                    Delay::from_numer_denom_ms(200, 1),
                ))
                .expect("encode");
            }
        }
        let mut src = Source::open(path.to_str().expect("utf8"), (1, 1), Duration::from_secs(1))
            .expect("opens");
        assert!(matches!(src, Source::Animation { ref frames, .. } if frames.len() == 2));
        let pool = FramePool::new(2);
        let first = src.frame_at(Duration::from_millis(100), 0, 0, &pool);
        let second = src.frame_at(Duration::from_millis(300), 1, 0, &pool);
        let looped = src.frame_at(Duration::from_millis(500), 2, 0, &pool);
        assert_eq!(&first.pixels()[..4], &[255, 0, 0, 255]);
        assert_eq!(&second.pixels()[..4], &[0, 0, 255, 255]);
        assert_eq!(&looped.pixels()[..4], &[255, 0, 0, 255]);
    }

    #[test]
    fn a_file_that_is_not_an_image_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello").expect("write");
        let err = Source::open(path.to_str().expect("utf8"), (1, 1), Duration::from_secs(1))
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("not a readable image"), "{err}");
        let empty = tempfile::tempdir().expect("tempdir");
        let err = Source::open(
            empty.path().to_str().expect("utf8"),
            (1, 1),
            Duration::from_secs(1),
        )
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("no image files"), "{err}");
    }
}
