//! Tile coding of a frame's pixels, as pure code: the frame is cut into tiles of
//! [`TILE_SIDE`] pixels square (the last column reaching to the end of the row, padding
//! included, so the coding is byte-exact for any row stride); a *delta* frame leaves out
//! each tile unchanged since a base frame both ends hold, and a changed tile goes raw,
//! LZ4-compressed, or (where LZ4 saves little, as on photographs) QOI-coded, whichever
//! is smallest. A *key* frame carries every tile. Why these two: `BENCHMARKS.md`, "Tile
//! codecs".
//!
//! The coded form is `version: u8`, `flags: u8` (bit 0: delta), then one record per
//! tile in row-major order: `0` same as the base (delta only), `1` raw (the tile's bytes,
//! row after row), `2` LZ4 (`len: u32` big-endian, then an LZ4 block that must expand to
//! exactly the tile's bytes), `3` QOI (`len: u32` big-endian, then a QOI image of the
//! tile's width and height in 4-byte pixels, 4 channels). Nothing trails the last tile.
//!
//! The decoder writes a whole new frame, taking each unchanged tile from the base: the
//! base (a frame the viewer may be showing) is never written to, and a frame that fails
//! to decode is never shown, so a torn or mixed frame cannot come out of it. Every length
//! read is checked against the tile it belongs to before anything is read or written, and
//! the decoder allocates nothing: LZ4 expands into the output's own scratch tile, whose
//! size the geometry fixes.

use thiserror::Error;

/// Whether `coded` (a frame's coding, as sent) is a delta against a base frame.
pub fn is_delta(coded: &[u8]) -> bool {
    coded.get(1).is_some_and(|flags| flags & FLAG_DELTA != 0)
}

/// Side of a tile in pixels.
pub const TILE_SIDE: u32 = 64;
/// The coding's version byte.
pub const TILES_VERSION: u8 = 1;
const FLAG_DELTA: u8 = 1;

const SAME: u8 = 0;
const RAW: u8 = 1;
const LZ4: u8 = 2;
const QOI: u8 = 3;
/// LZ4 output above this share of a tile's bytes (in 1/16ths) tries QOI as well.
const TRY_QOI_ABOVE_16THS: usize = 8;

/// How changed tiles are coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileCompression {
    /// Raw bytes: only unchanged tiles are saved.
    None,
    /// LZ4 where it is smaller than raw.
    Lz4,
    /// LZ4, and QOI too where LZ4 saves less than half: the smallest of the three.
    Lz4Qoi,
}

/// Why coded tiles were refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TileError {
    #[error("coded tiles end early, in tile {0}")]
    Truncated(usize),
    #[error("coded tiles of version {0}, not {TILES_VERSION}")]
    Version(u8),
    #[error("unknown tile record {kind} in tile {tile}")]
    BadKind { tile: usize, kind: u8 },
    #[error("tile {0} refers to a base frame, but this is a key frame or no base is held")]
    NoBase(usize),
    #[error(
        "tile {tile} claims {claimed} compressed bytes, more than the {limit} its size allows"
    )]
    TooLong {
        tile: usize,
        claimed: usize,
        limit: usize,
    },
    #[error("tile {0} does not expand to its size")]
    BadCompression(usize),
    #[error("{0} bytes after the last tile")]
    Trailing(usize),
    #[error("the frame's geometry does not match the buffers ({0})")]
    Geometry(&'static str),
}

/// How a frame's bytes are cut into tiles: rows of `bytes_per_row` bytes, `height` of
/// them, `bytes_per_pixel` each pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileGrid {
    bytes_per_row: usize,
    height: usize,
    /// Bytes of a tile's row, but in the last column.
    col_bytes: usize,
    cols: usize,
    rows: usize,
}

/// One tile's place: rows `y0..y0 + h`, bytes `x0..x0 + w` of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    y0: usize,
    h: usize,
    x0: usize,
    w: usize,
}

impl Tile {
    fn len(&self) -> usize {
        self.w * self.h
    }
}

impl TileGrid {
    /// The grid of a frame; `None` if it holds no byte or a pixel is wider than a row.
    pub fn new(bytes_per_row: u32, height: u32, bytes_per_pixel: u32) -> Option<TileGrid> {
        let (bytes_per_row, height) = (bytes_per_row as usize, height as usize);
        let bpp = bytes_per_pixel as usize;
        if bytes_per_row == 0 || height == 0 || bpp == 0 || bpp > bytes_per_row {
            return None;
        }
        let col_bytes = TILE_SIDE as usize * bpp;
        // Whole tiles, the last one wider by what is left (less than a tile) of the row.
        let cols = (bytes_per_row / col_bytes).max(1);
        let rows = height.div_ceil(TILE_SIDE as usize);
        Some(TileGrid {
            bytes_per_row,
            height,
            col_bytes,
            cols,
            rows,
        })
    }

    /// The tiles cut into at most `n` bands of whole rows of tiles, in order, as even
    /// as the rows allow: the pieces of a frame coded on several cores
    /// ([`TileEncoder::encode_tiles`]).
    pub fn bands(&self, n: usize) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (rows, cols) = (self.rows, self.cols);
        let n = n.clamp(1, rows);
        (0..n).map(move |b| (b * rows / n) * cols..((b + 1) * rows / n) * cols)
    }

    /// Tiles in the frame.
    pub fn tiles(&self) -> usize {
        self.cols * self.rows
    }

    /// The bytes of the frame.
    pub fn frame_len(&self) -> usize {
        self.bytes_per_row * self.height
    }

    /// The bytes of the largest tile (the last column's, which holds the rest of a row).
    pub fn max_tile_len(&self) -> usize {
        // The last column is at least as wide as the others (or is the only one).
        let last_w = self.bytes_per_row - (self.cols - 1) * self.col_bytes;
        last_w * (TILE_SIDE as usize).min(self.height)
    }

    /// The longest a coded frame of this grid can be.
    pub fn max_coded_len(&self) -> usize {
        2 + self.tiles() * 5 + self.frame_len()
    }

    fn tile(&self, i: usize) -> Tile {
        let (row, col) = (i / self.cols, i % self.cols);
        let y0 = row * TILE_SIDE as usize;
        let x0 = col * self.col_bytes;
        let w = if col + 1 == self.cols {
            self.bytes_per_row - x0
        } else {
            self.col_bytes
        };
        Tile {
            y0,
            h: (self.height - y0).min(TILE_SIDE as usize),
            x0,
            w,
        }
    }

    fn rows_of<'a>(&self, t: Tile, pixels: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let stride = self.bytes_per_row;
        (t.y0..t.y0 + t.h).map(move |y| &pixels[y * stride + t.x0..y * stride + t.x0 + t.w])
    }

    fn same(&self, t: Tile, a: &[u8], b: &[u8]) -> bool {
        self.rows_of(t, a)
            .zip(self.rows_of(t, b))
            .all(|(x, y)| x == y)
    }

    fn gather(&self, t: Tile, pixels: &[u8], out: &mut Vec<u8>) {
        for row in self.rows_of(t, pixels) {
            out.extend_from_slice(row);
        }
    }

    fn scatter(&self, t: Tile, bytes: &[u8], out: &mut [u8]) {
        let stride = self.bytes_per_row;
        for (r, src) in bytes.chunks_exact(t.w).enumerate() {
            let at = (t.y0 + r) * stride + t.x0;
            out[at..at + t.w].copy_from_slice(src);
        }
    }

    fn copy_tile(&self, t: Tile, from: &[u8], out: &mut [u8]) {
        let stride = self.bytes_per_row;
        for y in t.y0..t.y0 + t.h {
            let at = y * stride + t.x0;
            out[at..at + t.w].copy_from_slice(&from[at..at + t.w]);
        }
    }
}

/// What one frame's coding did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TileStats {
    pub same: usize,
    pub raw: usize,
    pub lz4: usize,
    pub qoi: usize,
    /// Changed tiles LZ4 was tried on (the encoder's; a decoder leaves it 0).
    pub lz4_tried: usize,
    /// Coded bytes.
    pub bytes: usize,
}

/// A tile QOI was chosen for last time skips the LZ4 try (photographs: it would
/// lose again), but for one frame in this many, staggered over the tiles.
const RETRY_LZ4_EVERY: usize = 16;

/// Appends a coding's two header bytes to `out`; the records of every tile follow
/// ([`TileEncoder::encode_tiles`]).
pub fn push_header(out: &mut Vec<u8>, delta: bool) {
    out.push(TILES_VERSION);
    out.push(if delta { FLAG_DELTA } else { 0 });
}

/// Codes frames; keeps its scratch buffers (sized once for the largest tile) and, per
/// tile, how it was coded last.
#[derive(Default)]
pub struct TileEncoder {
    tile: Vec<u8>,
    packed: Vec<u8>,
    qoi: Vec<u8>,
    /// LZ4's hash table, cleared for each tile instead of made anew.
    lz4_table: lz4_flex::block::CompressTable,
    /// The record kind each tile of the grid got last (sized once per geometry).
    last_kind: Vec<u8>,
    /// Codings made, to stagger the LZ4 retries.
    codings: usize,
}

impl TileEncoder {
    /// Appends the coding of `pixels` to `out`: a delta against `base` (the pixels of a
    /// frame the receiver holds, same grid) if given, a key frame otherwise.
    pub fn encode(
        &mut self,
        grid: &TileGrid,
        pixels: &[u8],
        base: Option<&[u8]>,
        compression: TileCompression,
        out: &mut Vec<u8>,
    ) -> Result<TileStats, TileError> {
        let start = out.len();
        push_header(out, base.is_some());
        let mut stats = self.encode_tiles(grid, 0..grid.tiles(), pixels, base, compression, out)?;
        stats.bytes = out.len() - start;
        Ok(stats)
    }

    /// Appends the records of tiles `tiles` (row-major indices) to `out`, without the
    /// header. A coding is its header then every tile's record in order, so bands of
    /// tiles coded apart (on several cores, by one encoder each) and appended in order
    /// make a whole coding. `stats.bytes` counts the records appended.
    pub fn encode_tiles(
        &mut self,
        grid: &TileGrid,
        tiles: std::ops::Range<usize>,
        pixels: &[u8],
        base: Option<&[u8]>,
        compression: TileCompression,
        out: &mut Vec<u8>,
    ) -> Result<TileStats, TileError> {
        if pixels.len() != grid.frame_len() || base.is_some_and(|b| b.len() != grid.frame_len()) {
            return Err(TileError::Geometry("a buffer is not the frame's size"));
        }
        if tiles.end > grid.tiles() {
            return Err(TileError::Geometry("tiles past the grid"));
        }
        if self.last_kind.len() != grid.tiles() {
            self.last_kind.clear();
            self.last_kind.resize(grid.tiles(), RAW);
        }
        self.codings = self.codings.wrapping_add(1);
        let start = out.len();
        let mut stats = TileStats::default();
        for i in tiles {
            let t = grid.tile(i);
            if base.is_some_and(|b| grid.same(t, pixels, b)) {
                out.push(SAME);
                stats.same += 1;
                continue;
            }
            self.tile.clear();
            grid.gather(t, pixels, &mut self.tile);
            let qoi_fits = compression == TileCompression::Lz4Qoi && t.w % 4 == 0;
            let skip_lz4 =
                qoi_fits && self.last_kind[i] == QOI && (i + self.codings) % RETRY_LZ4_EVERY != 0;
            let mut best: Option<(u8, usize)> = None;
            if compression != TileCompression::None && !skip_lz4 {
                let bound = lz4_flex::block::get_maximum_output_size(self.tile.len());
                self.packed.resize(bound, 0);
                let n = lz4_flex::block::compress_into_with_table(
                    &self.tile,
                    &mut self.packed,
                    &mut self.lz4_table,
                )
                .map_err(|_| TileError::Geometry("LZ4 bound"))?;
                best = Some((LZ4, n));
                stats.lz4_tried += 1;
            }
            let lz4_saves_little =
                best.is_none_or(|(_, n)| n * 16 > self.tile.len() * TRY_QOI_ABOVE_16THS);
            if qoi_fits && lz4_saves_little {
                let (w, h) = ((t.w / 4) as u32, t.h as u32);
                self.qoi.resize(qoi::encode_max_len(w, h, 4u8), 0);
                if let Ok(n) = qoi::encode_to_buf(&mut self.qoi, &self.tile, w, h) {
                    if best.is_none_or(|(_, b)| n < b) {
                        best = Some((QOI, n));
                    }
                }
            }
            match best {
                Some((kind, n)) if n + 4 < self.tile.len() => {
                    out.push(kind);
                    out.extend_from_slice(&(n as u32).to_be_bytes());
                    if kind == LZ4 {
                        out.extend_from_slice(&self.packed[..n]);
                        stats.lz4 += 1;
                    } else {
                        out.extend_from_slice(&self.qoi[..n]);
                        stats.qoi += 1;
                    }
                    self.last_kind[i] = kind;
                    continue;
                }
                _ => {}
            }
            out.push(RAW);
            out.extend_from_slice(&self.tile);
            self.last_kind[i] = RAW;
            stats.raw += 1;
        }
        stats.bytes = out.len() - start;
        Ok(stats)
    }
}

/// Rebuilds frames from their coding; keeps one scratch tile.
#[derive(Default)]
pub struct TileDecoder {
    tile: Vec<u8>,
}

impl TileDecoder {
    /// Decodes `coded` into `out` (the new frame's bytes, all written), taking unchanged
    /// tiles from `base` (the frame the delta refers to). On an error `out` holds part of
    /// a frame and must not be shown.
    pub fn decode(
        &mut self,
        grid: &TileGrid,
        coded: &[u8],
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<TileStats, TileError> {
        if out.len() != grid.frame_len() || base.is_some_and(|b| b.len() != grid.frame_len()) {
            return Err(TileError::Geometry("a buffer is not the frame's size"));
        }
        let mut input = Reader {
            bytes: coded,
            at: 0,
        };
        let version = input.u8(0)?;
        if version != TILES_VERSION {
            return Err(TileError::Version(version));
        }
        let delta = input.u8(0)? & FLAG_DELTA != 0;
        let base = if delta { base } else { None };
        let mut stats = TileStats::default();
        for i in 0..grid.tiles() {
            let t = grid.tile(i);
            match input.u8(i)? {
                SAME => {
                    let base = base.ok_or(TileError::NoBase(i))?;
                    grid.copy_tile(t, base, out);
                    stats.same += 1;
                }
                RAW => {
                    let bytes = input.take(t.len(), i)?;
                    grid.scatter(t, bytes, out);
                    stats.raw += 1;
                }
                kind @ (LZ4 | QOI) => {
                    let claimed = u32::from_be_bytes(
                        input
                            .take(4, i)?
                            .try_into()
                            .map_err(|_| TileError::Truncated(i))?,
                    ) as usize;
                    // Never more than raw: an encoder sends raw then.
                    if claimed >= t.len() {
                        return Err(TileError::TooLong {
                            tile: i,
                            claimed,
                            limit: t.len(),
                        });
                    }
                    let packed = input.take(claimed, i)?;
                    // The scratch tile holds the largest tile of this grid: sized at
                    // most once per geometry, never by what the input claims.
                    self.tile.resize(t.len(), 0);
                    if kind == LZ4 {
                        match lz4_flex::block::decompress_into(packed, &mut self.tile) {
                            Ok(n) if n == t.len() => {}
                            _ => return Err(TileError::BadCompression(i)),
                        }
                        stats.lz4 += 1;
                    } else {
                        // The header must describe this very tile before a pixel is
                        // decoded.
                        let fits = qoi::decode_header(packed).is_ok_and(|h| {
                            h.channels == qoi::Channels::Rgba
                                && h.width as usize * 4 == t.w
                                && h.height as usize == t.h
                        });
                        if !fits || qoi::decode_to_buf(&mut self.tile, packed).is_err() {
                            return Err(TileError::BadCompression(i));
                        }
                        stats.qoi += 1;
                    }
                    grid.scatter(t, &self.tile, out);
                }
                kind => return Err(TileError::BadKind { tile: i, kind }),
            }
        }
        let left = coded.len() - input.at;
        if left > 0 {
            return Err(TileError::Trailing(left));
        }
        stats.bytes = coded.len();
        Ok(stats)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, tile: usize) -> Result<&'a [u8], TileError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(TileError::Truncated(tile))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, tile: usize) -> Result<u8, TileError> {
        Ok(self.take(1, tile)?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn round_trip(
        grid: &TileGrid,
        pixels: &[u8],
        base: Option<&[u8]>,
        c: TileCompression,
    ) -> TileStats {
        let mut coded = Vec::new();
        let sent = TileEncoder::default()
            .encode(grid, pixels, base, c, &mut coded)
            .expect("encodes");
        assert_eq!(sent.bytes, coded.len());
        assert!(coded.len() <= grid.max_coded_len());
        let mut out = vec![0xEE; grid.frame_len()];
        let got = TileDecoder::default()
            .decode(grid, &coded, base, &mut out)
            .expect("decodes");
        assert!(out == pixels, "byte-exact");
        assert_eq!(
            (got.same, got.raw, got.lz4),
            (sent.same, sent.raw, sent.lz4)
        );
        sent
    }

    #[test]
    fn the_grid_covers_every_byte_once_padding_included() {
        for (bpr, h) in [
            (4, 1),
            (256, 1),
            (1023 * 4 + 60, 767),
            (64 * 4, 64),
            (65 * 4, 65),
        ] {
            let grid = TileGrid::new(bpr, h, 4).expect("a grid");
            let mut seen = vec![0u8; grid.frame_len()];
            for i in 0..grid.tiles() {
                let t = grid.tile(i);
                assert!(t.len() <= grid.max_tile_len());
                for y in t.y0..t.y0 + t.h {
                    for b in &mut seen[y * bpr as usize + t.x0..][..t.w] {
                        *b += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{bpr}x{h}");
        }
        assert!(TileGrid::new(0, 5, 4).is_none());
        assert!(TileGrid::new(3, 5, 4).is_none());
    }

    #[test]
    fn an_unchanged_tile_costs_one_byte_and_a_changed_one_is_sent() {
        let grid = TileGrid::new(640 * 4, 480, 4).expect("a grid");
        let base = noise(grid.frame_len(), 1);
        let mut next = base.clone();
        next[200 * 640 * 4 + 300 * 4] ^= 0xFF; // one byte of one tile
        let stats = round_trip(&grid, &next, Some(&base), TileCompression::Lz4);
        assert_eq!((stats.same, stats.raw + stats.lz4), (grid.tiles() - 1, 1));
        assert_eq!(stats.bytes, 2 + (grid.tiles() - 1) + 1 + 64 * 64 * 4);
        // Flat content compresses; noise goes raw.
        let flat = vec![7u8; grid.frame_len()];
        let stats = round_trip(&grid, &flat, None, TileCompression::Lz4);
        assert_eq!(stats.lz4, grid.tiles());
        assert!(stats.bytes < grid.frame_len() / 50, "{}", stats.bytes);
        let stats = round_trip(&grid, &base, None, TileCompression::Lz4);
        assert_eq!(stats.raw, grid.tiles());
        let stats = round_trip(&grid, &flat, None, TileCompression::None);
        assert_eq!(stats.raw, grid.tiles());
    }

    /// Photo-like: smooth gradients under a little noise, as a camera gives.
    fn photo_like(grid: &TileGrid, width: usize) -> Vec<u8> {
        let n = noise(grid.frame_len(), 9);
        (0..grid.frame_len())
            .map(|i| {
                let (p, c) = (i / 4, i % 4);
                let (x, y) = (p % width, p / width);
                if c == 3 {
                    return 255;
                }
                // The same noise on the three channels of a pixel, as luminance noise.
                ((x + 2 * y + c * 40) / 3 % 200) as u8 + (n[p * 4] % 12)
            })
            .collect()
    }

    #[test]
    fn a_tile_lz4_saves_little_of_goes_qoi_when_that_is_smaller() {
        let grid = TileGrid::new(256 * 4, 128, 4).expect("a grid");
        let photo = photo_like(&grid, 256);
        let lz4 = round_trip(&grid, &photo, None, TileCompression::Lz4);
        let both = round_trip(&grid, &photo, None, TileCompression::Lz4Qoi);
        assert_eq!(both.qoi, grid.tiles(), "{both:?}");
        assert!(
            both.bytes * 10 < lz4.bytes * 9,
            "{} against {}",
            both.bytes,
            lz4.bytes
        );
        // Content LZ4 packs well does not pay for a QOI try.
        let flat = vec![3u8; grid.frame_len()];
        assert_eq!(
            round_trip(&grid, &flat, None, TileCompression::Lz4Qoi).qoi,
            0
        );
        // Padding not a whole pixel wide: such tiles cannot be QOI, and still round-trip.
        let odd = TileGrid::new(256 * 4 + 3, 128, 4).expect("a grid");
        let photo = photo_like(&odd, 256);
        round_trip(&odd, &photo, None, TileCompression::Lz4Qoi);
    }

    #[test]
    fn a_tile_that_went_qoi_skips_the_lz4_try_but_now_and_then() {
        let grid = TileGrid::new(512 * 4, 512, 4).expect("a grid");
        let photo = photo_like(&grid, 512);
        let mut enc = TileEncoder::default();
        let mut coded = Vec::new();
        let first = enc
            .encode(&grid, &photo, None, TileCompression::Lz4Qoi, &mut coded)
            .expect("encodes");
        assert_eq!((first.qoi, first.lz4_tried), (grid.tiles(), grid.tiles()));
        // Sixteen more codings: each tile retries LZ4 once among them.
        let mut tried = 0;
        for _ in 0..RETRY_LZ4_EVERY {
            coded.clear();
            let next = enc
                .encode(&grid, &photo, None, TileCompression::Lz4Qoi, &mut coded)
                .expect("encodes");
            assert_eq!(next.qoi, grid.tiles());
            tried += next.lz4_tried;
            let mut out = vec![0; grid.frame_len()];
            TileDecoder::default()
                .decode(&grid, &coded, None, &mut out)
                .expect("decodes");
            assert!(out == photo, "byte-exact");
        }
        assert_eq!(tried, grid.tiles());
        // A tile that packs well with LZ4 again is found at its retry.
        let flat = vec![9u8; grid.frame_len()];
        let mut lz4 = 0;
        for _ in 0..RETRY_LZ4_EVERY {
            coded.clear();
            lz4 = enc
                .encode(&grid, &flat, None, TileCompression::Lz4Qoi, &mut coded)
                .expect("encodes")
                .lz4;
        }
        assert_eq!(lz4, grid.tiles());
    }

    #[test]
    fn bands_coded_apart_and_appended_make_the_whole_coding() {
        let grid = TileGrid::new(300 * 4 + 8, 200, 4).expect("a grid");
        let base = photo_like(&grid, 302);
        let mut next = base.clone();
        for (i, b) in next.iter_mut().enumerate().step_by(4099) {
            *b = b.wrapping_add(i as u8 | 1);
        }
        for n in [1, 2, 3, 4, 64] {
            let bands: Vec<_> = grid.bands(n).collect();
            assert_eq!(bands.len(), n.min(4), "four rows of tiles");
            assert_eq!(bands[0].start, 0);
            assert_eq!(bands.last().map(|b| b.end), Some(grid.tiles()));
            assert!(bands.windows(2).all(|w| w[0].end == w[1].start));
            for base in [None, Some(&base[..])] {
                let mut whole = Vec::new();
                TileEncoder::default()
                    .encode(&grid, &next, base, TileCompression::Lz4Qoi, &mut whole)
                    .expect("encodes");
                let mut pieces = Vec::new();
                push_header(&mut pieces, base.is_some());
                for band in &bands {
                    TileEncoder::default()
                        .encode_tiles(
                            &grid,
                            band.clone(),
                            &next,
                            base,
                            TileCompression::Lz4Qoi,
                            &mut pieces,
                        )
                        .expect("encodes");
                }
                assert!(pieces == whole, "{n} bands");
            }
        }
    }

    #[test]
    fn golden_bytes_of_a_small_delta() {
        // 2x1 pixels of 4 bytes: one tile; unchanged, then changed (raw, too short to pack).
        let grid = TileGrid::new(8, 1, 4).expect("a grid");
        let base = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut coded = Vec::new();
        let mut enc = TileEncoder::default();
        enc.encode(&grid, &base, Some(&base), TileCompression::Lz4, &mut coded)
            .expect("encodes");
        assert_eq!(coded, [1, 1, 0]);
        coded.clear();
        let next = [1, 2, 3, 4, 5, 6, 7, 9];
        enc.encode(&grid, &next, Some(&base), TileCompression::Lz4, &mut coded)
            .expect("encodes");
        assert_eq!(coded, [1, 1, 1, 1, 2, 3, 4, 5, 6, 7, 9]);
        coded.clear();
        enc.encode(&grid, &next, None, TileCompression::None, &mut coded)
            .expect("encodes");
        assert_eq!(coded, [1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 9]);
    }

    #[test]
    fn hostile_codings_are_refused_before_anything_is_read_past_them() {
        let grid = TileGrid::new(64 * 4, 64, 4).expect("one tile");
        let tile = grid.frame_len();
        let mut out = vec![0u8; tile];
        let mut dec = TileDecoder::default();
        let mut decode =
            |coded: &[u8], base: Option<&[u8]>| dec.decode(&grid, coded, base, &mut out);
        // A compressed tile claiming to be longer than the tile itself.
        let mut claim = vec![1, 0, LZ4];
        claim.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&claim, None),
            Err(TileError::TooLong { .. })
        ));
        // One claiming a plausible length the input does not have.
        let mut short = vec![1, 0, LZ4];
        short.extend_from_slice(&100u32.to_be_bytes());
        short.extend_from_slice(&[0; 10]);
        assert_eq!(decode(&short, None), Err(TileError::Truncated(0)));
        // An LZ4 block that expands past the tile: a literal run of 15 + 255 * 70 bytes.
        let mut bomb_block = vec![0xF0];
        bomb_block.extend(std::iter::repeat_n(255u8, 70));
        bomb_block.push(0);
        bomb_block.extend(std::iter::repeat_n(0u8, 200));
        let mut bomb = vec![1, 0, LZ4];
        bomb.extend_from_slice(&(bomb_block.len() as u32).to_be_bytes());
        bomb.extend_from_slice(&bomb_block);
        assert_eq!(decode(&bomb, None), Err(TileError::BadCompression(0)));
        // An LZ4 block that expands to less than the tile.
        let small = lz4_flex::block::compress(&[5u8; 100]);
        let mut under = vec![1, 0, LZ4];
        under.extend_from_slice(&(small.len() as u32).to_be_bytes());
        under.extend_from_slice(&small);
        assert_eq!(decode(&under, None), Err(TileError::BadCompression(0)));
        // A QOI image of another size than the tile, and one cut short.
        let other = qoi::encode_to_vec(vec![9u8; 32 * 64 * 4], 32, 64).expect("qoi");
        let mut wrong = vec![1, 0, QOI];
        wrong.extend_from_slice(&(other.len() as u32).to_be_bytes());
        wrong.extend_from_slice(&other);
        assert_eq!(decode(&wrong, None), Err(TileError::BadCompression(0)));
        let full = qoi::encode_to_vec(noise(tile, 3), 64, 64).expect("qoi");
        let cut = &full[..full.len().min(tile - 1) / 2];
        let mut short_qoi = vec![1, 0, QOI];
        short_qoi.extend_from_slice(&(cut.len() as u32).to_be_bytes());
        short_qoi.extend_from_slice(cut);
        assert_eq!(decode(&short_qoi, None), Err(TileError::BadCompression(0)));
        // A 3-channel QOI image with exactly the tile's bytes (4x64 RGB for a tile of
        // 3x64 RGBA): the header, not the byte count, decides.
        let narrow = TileGrid::new(3 * 4, 64, 4).expect("a narrow grid");
        let rgb = qoi::encode_to_vec(vec![9u8; 4 * 64 * 3], 4, 64).expect("qoi");
        let mut three = vec![1, 0, QOI];
        three.extend_from_slice(&(rgb.len() as u32).to_be_bytes());
        three.extend_from_slice(&rgb);
        let mut narrow_out = vec![0u8; narrow.frame_len()];
        assert_eq!(
            TileDecoder::default().decode(&narrow, &three, None, &mut narrow_out),
            Err(TileError::BadCompression(0))
        );
        // "Same" in a key frame, or with no base held.
        assert_eq!(
            decode(&[1, 0, SAME], Some(&vec![0; tile])),
            Err(TileError::NoBase(0))
        );
        assert_eq!(decode(&[1, 1, SAME], None), Err(TileError::NoBase(0)));
        assert_eq!(
            decode(&[1, 1, 9], None),
            Err(TileError::BadKind { tile: 0, kind: 9 })
        );
        assert_eq!(decode(&[2, 0], None), Err(TileError::Version(2)));
        assert_eq!(
            decode(&[1, 1, SAME, 0], Some(&vec![0; tile])),
            Err(TileError::Trailing(1))
        );
        assert_eq!(decode(&[1], None), Err(TileError::Truncated(0)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any geometry (odd sizes, padded rows), any content, any change: byte-exact.
        #[test]
        fn a_delta_or_key_frame_decodes_to_exactly_the_frame(
            width in 1u32..300,
            height in 1u32..200,
            pad in 0u32..40,
            seed in any::<u64>(),
            flat in any::<bool>(),
            changes in proptest::collection::vec((any::<u32>(), any::<u8>()), 0..50),
            mode in any::<u8>(),
        ) {
            let grid = TileGrid::new(width * 4 + pad, height, 4).expect("a grid");
            let base = if flat {
                vec![(seed % 7) as u8; grid.frame_len()]
            } else {
                noise(grid.frame_len(), seed)
            };
            let mut next = base.clone();
            for (at, v) in changes {
                let len = next.len();
                next[at as usize % len] = v;
            }
            let c = [TileCompression::None, TileCompression::Lz4, TileCompression::Lz4Qoi][mode as usize % 3];
            round_trip(&grid, &next, Some(&base), c);
            round_trip(&grid, &next, None, c);
        }

        /// Random bytes as a coding never panic, whatever the base.
        #[test]
        fn random_codings_are_refused_or_decoded_never_a_panic(
            coded in proptest::collection::vec(any::<u8>(), 0..600),
            width in 1u32..40,
            height in 1u32..40,
        ) {
            let grid = TileGrid::new(width * 4, height, 4).expect("a grid");
            let base = vec![1u8; grid.frame_len()];
            let mut out = vec![0u8; grid.frame_len()];
            let _ = TileDecoder::default().decode(&grid, &coded, Some(&base), &mut out);
        }
    }
}
