//! Lossless coders measured on the content texstream streams, to choose the tile codec
//! by measurement: LZ4 (`lz4_flex`, the one `protocol::tiles` uses), zstd at a negative,
//! a fast and a default level, each with and without a PNG-style "up" row filter, all
//! per 64x64 tile as the tile coding cuts a frame; QOI over the whole frame; and
//! `protocol::tiles` itself, key frames and deltas. One core, 1920x1080 RGBA8.
//!
//! `cargo bench --bench tiles -- [photo=PATH] [screen=PATH]`: a photograph and a
//! screenshot (any format `image` reads; cropped to 1080p, or repeated if smaller); the moving test pattern is
//! always measured, and a "cursor" delta (the screenshot with a 32x32 block moved) when a
//! screenshot is given. Prints a Markdown table; `BENCHMARKS.md` has the results.

use std::time::{Duration, Instant};

use texstream::protocol::tiles::{TileCompression, TileDecoder, TileEncoder, TileGrid, TILE_SIDE};

const W: u32 = 1920;
const H: u32 = 1080;

/// A picture as a 1080p frame: cropped if larger, repeated (at its own scale, so that its
/// detail and noise are a photograph's, not an upscaler's) if smaller.
fn image_1080p(path: &str) -> Vec<u8> {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        .to_rgba8();
    let (iw, ih) = img.dimensions();
    let mut out = Vec::with_capacity((W * H * 4) as usize);
    for y in 0..H {
        for x in 0..W {
            out.extend_from_slice(&img.get_pixel(x % iw, y % ih).0);
        }
    }
    out
}

fn pattern(t: f64) -> Vec<u8> {
    let mut buf = vec![0u8; (W * H * 4) as usize];
    texstream::source::draw_pattern(&mut buf, W, H, Duration::from_secs_f64(t));
    buf
}

/// Tiles of `frame`, each as contiguous bytes, with the bytes of one of its rows.
fn tiles(frame: &[u8]) -> Vec<(Vec<u8>, usize)> {
    let stride = (W * 4) as usize;
    let side = TILE_SIDE as usize;
    let mut out = Vec::new();
    for ty in (0..H as usize).step_by(side) {
        for tx in (0..stride).step_by(side * 4) {
            let w = (side * 4).min(stride - tx);
            let mut t = Vec::with_capacity(w * side);
            for y in ty..(ty + side).min(H as usize) {
                t.extend_from_slice(&frame[y * stride + tx..y * stride + tx + w]);
            }
            out.push((t, w));
        }
    }
    out
}

/// PNG's "up" filter over a tile's rows of `w` bytes, and its inverse.
fn up_filter(tile: &[u8], w: usize) -> Vec<u8> {
    let mut out = tile.to_vec();
    for i in (w..tile.len()).rev() {
        out[i] = tile[i].wrapping_sub(tile[i - w]);
    }
    out
}

fn up_unfilter(tile: &mut [u8], w: usize) {
    for i in w..tile.len() {
        tile[i] = tile[i].wrapping_add(tile[i - w]);
    }
}

/// Runs `f` repeatedly for about 0.4 s; the median time of one run.
fn time(mut f: impl FnMut()) -> Duration {
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 3 || (start.elapsed() < Duration::from_millis(400) && runs.len() < 50) {
        let t = Instant::now();
        f();
        runs.push(t.elapsed());
    }
    runs.sort();
    runs[runs.len() / 2]
}

struct Row {
    content: String,
    coder: String,
    ratio: f64,
    encode: Duration,
    decode: Duration,
}

fn per_tile(
    content: &str,
    coder: &str,
    frame: &[u8],
    filter: bool,
    enc: impl Fn(&[u8]) -> Vec<u8>,
    dec: impl Fn(&[u8], usize) -> Vec<u8>,
) -> Row {
    let tiles = tiles(frame);
    let code = |(t, w): &(Vec<u8>, usize)| {
        if filter {
            enc(&up_filter(t, *w))
        } else {
            enc(t)
        }
    };
    let uncode = |(t, w): &(Vec<u8>, usize), c: &[u8]| {
        let mut back = dec(c, t.len());
        if filter {
            up_unfilter(&mut back, *w);
        }
        back
    };
    let coded: Vec<Vec<u8>> = tiles.iter().map(code).collect();
    // Check the round trip once, outside the timing.
    for (t, c) in tiles.iter().zip(&coded) {
        assert!(uncode(t, c) == t.0, "{coder} round trip");
    }
    let bytes: usize = coded.iter().map(Vec::len).sum();
    let encode = time(|| {
        for t in &tiles {
            std::hint::black_box(code(t));
        }
    });
    let decode = time(|| {
        for (t, c) in tiles.iter().zip(&coded) {
            std::hint::black_box(uncode(t, c));
        }
    });
    Row {
        content: content.to_owned(),
        coder: coder.to_owned(),
        ratio: bytes as f64 / frame.len() as f64,
        encode,
        decode,
    }
}

fn candidates(content: &str, frame: &[u8], rows: &mut Vec<Row>) {
    let lz4 = |t: &[u8]| lz4_flex::block::compress(t);
    let unlz4 = |c: &[u8], n: usize| lz4_flex::block::decompress(c, n).expect("lz4");
    rows.push(per_tile(content, "lz4", frame, false, lz4, unlz4));
    rows.push(per_tile(content, "up + lz4", frame, true, lz4, unlz4));
    for level in [-3, 1, 3] {
        let z = move |t: &[u8]| zstd::bulk::compress(t, level).expect("zstd");
        let unz = |c: &[u8], n: usize| zstd::bulk::decompress(c, n).expect("zstd");
        rows.push(per_tile(
            content,
            &format!("zstd {level}"),
            frame,
            false,
            z,
            unz,
        ));
        rows.push(per_tile(
            content,
            &format!("up + zstd {level}"),
            frame,
            true,
            z,
            unz,
        ));
    }
    // QOI over the whole frame (it has no notion of tiles).
    let qoi = qoi::encode_to_vec(frame, W, H).expect("qoi");
    let (_, back) = qoi::decode_to_vec(&qoi).expect("qoi");
    assert!(back == frame, "qoi round trip");
    rows.push(Row {
        content: content.to_owned(),
        coder: "qoi (whole frame)".to_owned(),
        ratio: qoi.len() as f64 / frame.len() as f64,
        encode: time(|| {
            std::hint::black_box(qoi::encode_to_vec(frame, W, H).expect("qoi"));
        }),
        decode: time(|| {
            std::hint::black_box(qoi::decode_to_vec(&qoi).expect("qoi"));
        }),
    });
}

/// `protocol::tiles` as a link uses it: `frame` coded against `base` (or as a key frame).
fn tiles_row(content: &str, frame: &[u8], base: Option<&[u8]>, c: TileCompression) -> Row {
    let grid = TileGrid::new(W * 4, H, 4).expect("grid");
    let mut enc = TileEncoder::default();
    let mut dec = TileDecoder::default();
    let mut coded = Vec::with_capacity(grid.max_coded_len());
    let mut out = vec![0u8; grid.frame_len()];
    enc.encode(&grid, frame, base, c, &mut coded)
        .expect("encode");
    dec.decode(&grid, &coded, base, &mut out).expect("decode");
    assert!(out == frame, "tiles round trip");
    let bytes = coded.len();
    Row {
        content: content.to_owned(),
        coder: format!(
            "tiles, {} + {}",
            if base.is_some() { "delta" } else { "key" },
            match c {
                TileCompression::None => "raw",
                TileCompression::Lz4 => "lz4",
                TileCompression::Lz4Qoi => "lz4/qoi",
            }
        ),
        ratio: bytes as f64 / frame.len() as f64,
        encode: time(|| {
            coded.clear();
            enc.encode(&grid, frame, base, c, &mut coded)
                .expect("encode");
        }),
        decode: time(|| {
            dec.decode(&grid, &coded, base, &mut out).expect("decode");
        }),
    }
}

fn main() {
    let mut rows = Vec::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |key: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    let p0 = pattern(1.0);
    let p1 = pattern(1.0 + 1.0 / 60.0);
    candidates("pattern", &p1, &mut rows);
    for c in [TileCompression::Lz4, TileCompression::Lz4Qoi] {
        rows.push(tiles_row("pattern", &p1, None, c));
    }
    for c in [TileCompression::Lz4, TileCompression::Lz4Qoi] {
        rows.push(tiles_row("pattern, next frame", &p1, Some(&p0), c));
    }
    if let Some(path) = arg("photo") {
        let photo = image_1080p(&path);
        candidates("photo", &photo, &mut rows);
        for c in [TileCompression::Lz4, TileCompression::Lz4Qoi] {
            rows.push(tiles_row("photo", &photo, None, c));
        }
    }
    if let Some(path) = arg("screen") {
        let screen = image_1080p(&path);
        candidates("screen", &screen, &mut rows);
        for c in [TileCompression::Lz4, TileCompression::Lz4Qoi] {
            rows.push(tiles_row("screen", &screen, None, c));
        }
        // A 32x32 "cursor" moved by 40 px: the frame after, against the one before.
        let mut before = screen.clone();
        let mut after = screen.clone();
        let stride = (W * 4) as usize;
        for y in 500..532 {
            for x in 900..932 {
                before[y * stride + x * 4..][..4].copy_from_slice(&[255, 255, 255, 255]);
                after[y * stride + (x + 40) * 4..][..4].copy_from_slice(&[255, 255, 255, 255]);
            }
        }
        for c in [TileCompression::Lz4, TileCompression::Lz4Qoi] {
            rows.push(tiles_row("screen, cursor moved", &after, Some(&before), c));
        }
    }
    println!("| content | coder | size of raw | encode ms | decode ms | encode GB/s |");
    println!("|---|---|---|---|---|---|");
    let raw = f64::from(W * H * 4);
    for r in rows {
        println!(
            "| {} | {} | {:.1} % | {:.2} | {:.2} | {:.2} |",
            r.content,
            r.coder,
            r.ratio * 100.0,
            r.encode.as_secs_f64() * 1e3,
            r.decode.as_secs_f64() * 1e3,
            raw / r.encode.as_secs_f64() / 1e9
        );
    }
}
