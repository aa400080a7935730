//! A link writer's frame coder: codes the frames of one link with
//! [`crate::protocol::tiles`] (a delta against the last frame the link sent, changed
//! tiles compressed), outside the link's lock, into a buffer it keeps and reuses, so
//! that nothing is allocated per frame once it has grown to the largest coding.
//!
//! A large frame is cut into bands of tile rows, coded at once by the writer's thread
//! and the coder pool's (one fixed pool for the process, a thread per core but one) and
//! appended in order. The pool is written here rather than taken from rayon: rayon's
//! injector allocates a block for every 63 jobs handed to it from outside its threads,
//! which is an allocation every 63 frames. Here each coder keeps one [`Work`] of its
//! own, queued while its bands are being taken; nothing is allocated per frame.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::link::lock;
use super::tx::CodeJob;
use crate::frame::Frame;
use crate::protocol::tiles::{self, TileCompression, TileEncoder, TileError, TileGrid};

/// Frames smaller than this are coded on the writer's own thread: handing them to the
/// pool would cost more than it saves.
const PARALLEL_FROM_BYTES: usize = 512 << 10;
/// Bands per thread coding: more bands than threads even out bands that code slower
/// (busy rows of a screen, next to still ones).
const BANDS_PER_THREAD: usize = 2;

/// What coding one frame gave.
pub(crate) struct Coded {
    pub frame: Frame,
    /// The frame the coding is a delta against, if it is one.
    pub base_seq: Option<u64>,
    pub bytes: Arc<Vec<u8>>,
}

impl Coded {
    /// `job`'s frame in a coding another link made of it, against the same base.
    fn shared(job: CodeJob, bytes: &Bytes) -> Coded {
        Coded {
            base_seq: job.base.as_ref().map(|b| b.meta().seq),
            frame: job.frame,
            bytes: bytes.clone(),
        }
    }
}

/// The coder threads, shared by every link of the process: the works whose bands are
/// still to take, and the threads' wake-up.
struct Pool {
    queue: Mutex<VecDeque<Arc<Work>>>,
    wake: Condvar,
    /// Threads coding a frame: the pool's and the writer's own.
    threads: usize,
}

/// The pool, started at the first large frame; `None` on one core.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads < 2 {
            return None;
        }
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            threads,
        }));
        for i in 1..threads {
            let started = std::thread::Builder::new()
                .name(format!("texstream coder {i}"))
                .spawn(move || pool.run());
            if let Err(e) = started {
                tracing::warn!("coder thread {i} did not start: {e}");
            }
        }
        Some(pool)
    })
}

impl Pool {
    /// A pool thread: takes a band of the first queued work, codes it, and again.
    fn run(&self) {
        loop {
            let work = {
                let mut queue = lock(&self.queue);
                loop {
                    if let Some(work) = queue.front() {
                        break work.clone();
                    }
                    queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
            };
            if !work.code_one() {
                // Every band taken: off the queue, if its coder has not done that yet
                // (nor queued its next frame meanwhile).
                lock(&self.queue).retain(|w| !Arc::ptr_eq(w, &work) || w.bands_left());
            }
        }
    }
}

/// One band of a frame's tiles: its encoder (which remembers how each tile went) and
/// the records it coded, reused frame after frame.
#[derive(Default)]
struct Band {
    tiles: Range<usize>,
    encoder: TileEncoder,
    out: Vec<u8>,
    result: Option<TileError>,
}

/// A frame being coded in bands, shared by its coder and the pool's threads.
struct Work {
    state: Mutex<WorkState>,
    /// The last band is done.
    done: Condvar,
    bands: Vec<Mutex<Band>>,
}

#[derive(Default)]
struct WorkState {
    job: Option<BandJob>,
    /// The next band to take, and the bands done.
    next: usize,
    finished: usize,
    /// When the last band was done.
    done_at: Option<std::time::Instant>,
}

#[derive(Clone)]
struct BandJob {
    grid: TileGrid,
    frame: Frame,
    base: Option<Frame>,
    compression: TileCompression,
}

impl Work {
    fn new(grid: &TileGrid, bands: usize) -> Work {
        Work {
            state: Mutex::new(WorkState::default()),
            done: Condvar::new(),
            bands: grid
                .bands(bands)
                .map(|tiles| {
                    Mutex::new(Band {
                        tiles,
                        ..Band::default()
                    })
                })
                .collect(),
        }
    }

    /// Whether a band of its frame is still to take.
    fn bands_left(&self) -> bool {
        let state = lock(&self.state);
        state.job.is_some() && state.next < self.bands.len()
    }

    /// Takes and codes the next band, if one is left (`false` if none was).
    fn code_one(&self) -> bool {
        let (i, job) = {
            let mut state = lock(&self.state);
            let Some(job) = state.job.clone().filter(|_| state.next < self.bands.len()) else {
                return false;
            };
            state.next += 1;
            (state.next - 1, job)
        };
        {
            let mut band = lock(&self.bands[i]);
            let band = &mut *band;
            band.out.clear();
            band.result = band
                .encoder
                .encode_tiles(
                    &job.grid,
                    band.tiles.clone(),
                    job.frame.pixels(),
                    job.base.as_ref().map(|b| b.pixels()),
                    job.compression,
                    &mut band.out,
                )
                .err();
        }
        drop(job);
        let mut state = lock(&self.state);
        state.finished += 1;
        if state.finished == self.bands.len() {
            state.done_at = Some(std::time::Instant::now());
            self.done.notify_all();
        }
        true
    }
}

/// Coding buffers a coder keeps at most: its codings are held by the node's
/// [`CodingCache`] and by the wires of the links that share them, so it needs a few.
const CODER_BUFFERS: usize = 8;

#[derive(Default)]
pub(crate) struct Coder {
    encoder: TileEncoder,
    /// The bands of the last grid coded on the pool.
    work: Option<(TileGrid, Arc<Work>)>,
    /// Coded bytes of the last frames, each reused once nothing else holds it (the
    /// wires that send it and the cache let go).
    bufs: Vec<Arc<Vec<u8>>>,
    /// The frame begun ([`Coder::begin`]) and not finished: the job, its grid, the
    /// buffer it goes to, and whether the pool codes it.
    pending: Option<(CodeJob, TileGrid, usize, bool)>,
    /// When the pending frame was begun, and how long the last frame took to code.
    begun_at: Option<std::time::Instant>,
    last_took: Option<std::time::Duration>,
}

impl Drop for Coder {
    fn drop(&mut self) {
        if let (Some(pool), Some((_, work))) = (pool(), &self.work) {
            // Pool threads coding a band of it hold it until they are done.
            lock(&pool.queue).retain(|w| !Arc::ptr_eq(w, work));
        }
    }
}

impl Coder {
    /// Codes `job`'s frame; on an error (a geometry the tiles cannot cut), gives the
    /// frame back to go raw.
    pub fn code(&mut self, job: CodeJob) -> Result<Coded, (Frame, TileError)> {
        self.begin(job)?;
        self.finish()
    }

    /// Starts coding `job`'s frame: a large one goes to the pool's threads at once, to
    /// code while this thread does something else (writes the frame before it);
    /// [`Coder::finish`] helps with what is left and takes the result. A small one is
    /// coded in `finish`. On an error, gives the frame back to go raw.
    pub fn begin(&mut self, job: CodeJob) -> Result<(), (Frame, TileError)> {
        debug_assert!(self.pending.is_none(), "a coding begun twice");
        let meta = *job.frame.meta();
        let Some(grid) = TileGrid::new(
            meta.bytes_per_row,
            meta.height,
            meta.format.bytes_per_pixel(),
        ) else {
            return Err((job.frame, TileError::Geometry("no tile grid for the frame")));
        };
        // A buffer nothing else holds; a new one only while the coder has fewer than
        // the wires and the cache hold at once (never in steady state).
        let free = match self.bufs.iter().position(|b| Arc::strong_count(b) == 1) {
            Some(i) => i,
            None if self.bufs.len() < CODER_BUFFERS => {
                self.bufs.push(Arc::default());
                self.bufs.len() - 1
            }
            None => {
                self.bufs[0] = Arc::default();
                0
            }
        };
        let parallel = match pool() {
            Some(pool) if grid.frame_len() >= PARALLEL_FROM_BYTES => {
                let work = match &self.work {
                    Some((g, work)) if *g == grid => work.clone(),
                    _ => {
                        let work = Arc::new(Work::new(&grid, pool.threads * BANDS_PER_THREAD));
                        self.work = Some((grid, work.clone()));
                        work
                    }
                };
                *lock(&work.state) = WorkState {
                    job: Some(BandJob {
                        grid,
                        frame: job.frame.clone(),
                        base: job.base.clone(),
                        compression: job.compression,
                    }),
                    next: 0,
                    finished: 0,
                    done_at: None,
                };
                lock(&pool.queue).push_back(work);
                pool.wake.notify_all();
                true
            }
            _ => false,
        };
        self.pending = Some((job, grid, free, parallel));
        self.begun_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// How long the last frame took to code, from its begin to its last band done
    /// (not counting a wait for the wire): `None` before the first.
    pub fn last_took(&self) -> Option<std::time::Duration> {
        self.last_took
    }

    /// Finishes the coding [`Coder::begin`] started: codes the bands no pool thread
    /// took yet, waits for the others, and appends them in order.
    pub fn finish(&mut self) -> Result<Coded, (Frame, TileError)> {
        let Some((job, grid, free, parallel)) = self.pending.take() else {
            unreachable!("finish without begin");
        };
        let Some(out) = Arc::get_mut(&mut self.bufs[free]) else {
            return Err((job.frame, TileError::Geometry("coding buffer shared")));
        };
        out.clear();
        let begun = self.begun_at.take();
        let (coded, done_at) = match (pool(), &self.work) {
            (Some(pool), Some((_, work))) if parallel => finish_bands(pool, work, &job, out),
            _ => {
                let start = std::time::Instant::now();
                let base = job.base.as_ref().map(|b| b.pixels());
                let coded = self
                    .encoder
                    .encode(&grid, job.frame.pixels(), base, job.compression, out)
                    .map(|_| ());
                // Coded here and now: its time is this encode's alone.
                self.last_took = Some(start.elapsed());
                (coded, None)
            }
        };
        if let (Some(begun), Some(done)) = (begun, done_at) {
            self.last_took = Some(done.saturating_duration_since(begun));
        }
        match coded {
            Ok(()) => Ok(Coded {
                base_seq: job.base.as_ref().map(|b| b.meta().seq),
                frame: job.frame,
                bytes: self.bufs[free].clone(),
            }),
            Err(e) => Err((job.frame, e)),
        }
    }
}

/// Codes what is left of `work`'s bands on this thread, waits for those the pool's
/// threads took, and appends them all to `out` in order.
fn finish_bands(
    pool: &Pool,
    work: &Arc<Work>,
    job: &CodeJob,
    out: &mut Vec<u8>,
) -> (Result<(), TileError>, Option<std::time::Instant>) {
    while work.code_one() {}
    lock(&pool.queue).retain(|w| !Arc::ptr_eq(w, work));
    let done_at = {
        let mut state = lock(&work.state);
        while state.finished < work.bands.len() {
            state = work.done.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        // The frames go back to their pools when the wire is done with them.
        state.job = None;
        state.done_at
    };
    (append_bands(work, job, out), done_at)
}

/// Appends the coding's header and `work`'s bands, in order, to `out`.
fn append_bands(work: &Work, job: &CodeJob, out: &mut Vec<u8>) -> Result<(), TileError> {
    tiles::push_header(out, job.base.is_some());
    for band in &work.bands {
        let band = lock(band);
        if let Some(e) = &band.result {
            return Err(e.clone());
        }
        out.extend_from_slice(&band.out);
    }
    Ok(())
}

/// Codings kept for other links: the last few only, since links that keep up code the
/// same frame against the same base at about the same time.
const CACHE_ENTRIES: usize = 2;
/// How long a link waits for another link's coding of the frame it wants.
const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a coding is of: a frame (its header's seq and its pixels' address), against a
/// base (the same), with a compression. Two links that code the same frame against the
/// same base get the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CodingKey {
    frame: (u64, usize),
    base: Option<(u64, usize)>,
    compression: TileCompression,
}

impl CodingKey {
    fn of(job: &CodeJob) -> CodingKey {
        let id = |f: &Frame| (f.meta().seq, f.pixels().as_ptr() as usize);
        CodingKey {
            frame: id(&job.frame),
            base: job.base.as_ref().map(id),
            compression: job.compression,
        }
    }
}

/// A coding's bytes, shared by the links that send it.
type Bytes = Arc<Vec<u8>>;

/// A coding begun through the cache ([`CodingCache::begin`]).
pub(crate) enum Begun {
    /// Done already: another link's (`true`), or an error.
    Done(Result<Coded, (Frame, TileError)>, bool),
    /// Another link codes the frame: its coding is taken at the finish.
    Other(CodingKey, CodeJob),
    /// Ours, begun on the coder.
    Ours(CodingKey),
}

/// Where a coding in the cache stands.
enum Slot {
    /// Begun by a link that has not come to finish it: it may be waiting for its own
    /// wire to free (a slow link), so no other link waits for it.
    Begun,
    /// Being finished by its link: done within a coding's time.
    Finishing,
    Done(Bytes),
}

/// A node's last codings, shared by its links' writers: a frame is coded once for
/// every link that holds the same base, not once per link. A link that finds the frame
/// being finished by another waits for it (at most [`CACHE_WAIT`]) rather than code it
/// too; one only begun by another (whose link may be slow to come to it) it codes
/// itself, so a slow link never holds back another.
#[derive(Default)]
pub(crate) struct CodingCache {
    /// Oldest first.
    entries: Mutex<VecDeque<(CodingKey, Slot)>>,
    ready: Condvar,
}

impl CodingCache {
    /// Begins the coding of `job`: finds it made or being made by another link, or
    /// begins it on `coder` (see [`Coder::begin`]).
    pub fn begin(&self, coder: &mut Coder, job: CodeJob) -> Begun {
        let key = CodingKey::of(&job);
        let mut entries = lock(&self.entries);
        match entries.iter().find(|(k, _)| *k == key) {
            Some((_, Slot::Done(bytes))) => {
                return Begun::Done(Ok(Coded::shared(job, bytes)), true)
            }
            Some(_) => return Begun::Other(key, job),
            None => {}
        }
        if entries.len() == CACHE_ENTRIES {
            entries.pop_front();
        }
        entries.push_back((key, Slot::Begun));
        drop(entries);
        match coder.begin(job) {
            Ok(()) => Begun::Ours(key),
            Err(e) => {
                self.settle(key, None);
                Begun::Done(Err(e), false)
            }
        }
    }

    /// The coding `begun` started, once done. The `bool`: it was another link's.
    pub fn finish(
        &self,
        coder: &mut Coder,
        begun: Begun,
    ) -> (Result<Coded, (Frame, TileError)>, bool) {
        match begun {
            Begun::Done(coded, shared) => (coded, shared),
            Begun::Ours(key) => {
                if let Some((_, slot)) = lock(&self.entries).iter_mut().find(|(k, _)| *k == key) {
                    *slot = Slot::Finishing;
                }
                let coded = coder.finish();
                self.settle(key, coded.as_ref().ok().map(|c| c.bytes.clone()));
                (coded, false)
            }
            Begun::Other(key, job) => {
                let deadline = std::time::Instant::now() + CACHE_WAIT;
                let mut entries = lock(&self.entries);
                loop {
                    match entries.iter().find(|(k, _)| *k == key) {
                        Some((_, Slot::Done(bytes))) => {
                            return (Ok(Coded::shared(job, bytes)), true)
                        }
                        Some((_, Slot::Finishing)) => {
                            let left =
                                deadline.saturating_duration_since(std::time::Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            entries = match self.ready.wait_timeout(entries, left) {
                                Ok((guard, _)) => guard,
                                Err(poisoned) => poisoned.into_inner().0,
                            };
                        }
                        // Its link has not come to it (it may be slow), it was
                        // evicted, or its coder failed: code it here.
                        Some((_, Slot::Begun)) | None => break,
                    }
                }
                drop(entries);
                (coder.code(job), false)
            }
        }
    }

    /// Our coding of `key` is done: kept for the others, or dropped (`None`: failed).
    fn settle(&self, key: CodingKey, bytes: Option<Bytes>) {
        let mut entries = lock(&self.entries);
        if let Some(i) = entries.iter().position(|(k, _)| *k == key) {
            match bytes {
                Some(b) => entries[i].1 = Slot::Done(b),
                None => {
                    entries.remove(i);
                }
            }
        }
        drop(entries);
        self.ready.notify_all();
    }
}

/// Probe the other choice after this many frames at first, doubling (to
/// [`PROBE_MOST`]) each time the probe confirms the choice.
const PROBE_FIRST: u32 = 32;
const PROBE_MOST: u32 = 512;
/// Weight of a new frame in a choice's running cost.
const COST_WEIGHT: f64 = 0.3;
/// The choice in use is dropped once it costs this much more than the other's last
/// measure.
const SWITCH_ABOVE: f64 = 1.25;

/// Frames between probes of a choice that costs `ratio` times the one in use: a probe
/// is weighed before it is made. It costs about `ratio - 1` frames' worth more than the
/// frame it replaces, so spacing probes `PROBE_FIRST * ratio` apart keeps what probing
/// costs under 1/`PROBE_FIRST` (3 %) of the link's time, however dear the other choice
/// is (a raw frame on a slow link costs 20 to 200 coded ones).
fn probe_interval(ratio: f64) -> u32 {
    (f64::from(PROBE_FIRST) * ratio).clamp(f64::from(PROBE_FIRST), f64::from(PROBE_MOST)) as u32
}

/// `--codec auto` on one link: codes frames or sends them raw, whichever costs this
/// link less per frame, as measured on it: the writer's time for a frame, coding and
/// sending it (so a link faster than the coder gets raw frames, a slow one coded ones),
/// per byte of raw frame. Pure: the writer reports each frame's cost
/// ([`AutoCoding::on_frame`]); now and then one frame goes the other way, to measure it
/// again (more seldom while it keeps losing).
#[derive(Clone, Debug)]
pub(crate) struct AutoCoding {
    coding: bool,
    /// Microseconds per raw byte, raw (`[0]`) and coded (`[1]`).
    cost: [Option<f64>; 2],
    since_probe: u32,
    probe_every: u32,
    /// The frame on the wire measures the choice not in use.
    probing: bool,
}

impl Default for AutoCoding {
    fn default() -> Self {
        AutoCoding {
            coding: false,
            cost: [None, None],
            since_probe: 0,
            probe_every: PROBE_FIRST,
            probing: false,
        }
    }
}

impl AutoCoding {
    /// Whether the next frame goes coded (changes nothing; [`AutoCoding::taken`] does).
    pub fn codes_next(&self) -> bool {
        if self.probe_due() {
            !self.coding
        } else {
            self.coding
        }
    }

    fn probe_due(&self) -> bool {
        self.cost[usize::from(!self.coding)].is_none() || self.since_probe >= self.probe_every
    }

    /// The next frame was taken for the wire, as [`AutoCoding::codes_next`] said.
    pub fn taken(&mut self) {
        if self.probe_due() {
            self.probing = true;
            self.since_probe = 0;
        } else {
            self.since_probe += 1;
        }
    }

    /// A frame of `raw_len` bytes went out, coded or not, and cost the writer `cost_us`.
    pub fn on_frame(&mut self, coded: bool, raw_len: usize, cost_us: u64) {
        let per_byte = cost_us as f64 / raw_len.max(1) as f64;
        let probe = std::mem::take(&mut self.probing);
        let slot = &mut self.cost[usize::from(coded)];
        *slot = Some(match *slot {
            // A probe's measure replaces one that is old by now.
            Some(old) if !probe => old + COST_WEIGHT * (per_byte - old),
            _ => per_byte,
        });
        let (Some(raw), Some(code)) = (self.cost[0], self.cost[1]) else {
            return;
        };
        let (ours, theirs) = if self.coding {
            (code, raw)
        } else {
            (raw, code)
        };
        if probe {
            if theirs < ours {
                self.coding = !self.coding;
                self.probe_every = probe_interval(ours / theirs);
            } else {
                self.probe_every = (self.probe_every * 2)
                    .max(probe_interval(theirs / ours))
                    .min(PROBE_MOST);
            }
        } else if ours > theirs * SWITCH_ABOVE {
            self.coding = !self.coding;
            self.since_probe = 0;
            self.probe_every = probe_interval(ours / theirs);
        }
    }

    /// Whether frames go coded now (what the link shows).
    pub fn coding(&self) -> bool {
        self.coding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameGeometry, PooledBuf};
    use crate::protocol::tiles::TileDecoder;

    /// A frame of sensor-like noise over a gradient, `seq` shifting it.
    fn photo(g: FrameGeometry, seq: u64) -> Frame {
        let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let pixels = (0..g.total_len())
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((i / 4 % 1999 + i / 7777) as u8 / 2).wrapping_add(x as u8 % 9)
            })
            .collect();
        Frame::new(g, seq, 0, PooledBuf::detached(pixels))
    }

    #[test]
    fn a_coding_another_link_only_began_is_not_waited_for() {
        let g = FrameGeometry::rgba8(1000, 563);
        let (frame, base) = (photo(g, 2), photo(g, 1));
        let job = || CodeJob {
            frame: frame.clone(),
            base: Some(base.clone()),
            compression: TileCompression::Lz4Qoi,
        };
        let cache = CodingCache::default();
        // Link A begins the frame, then waits on its own wire (a slow link): it does
        // not come to finish it.
        let mut slow = Coder::default();
        let a = cache.begin(&mut slow, job());
        assert!(matches!(a, Begun::Ours(_)));
        // Link B, on a fast link, wants the same frame against the same base: it codes
        // it itself rather than wait for A.
        let mut fast = Coder::default();
        let b = cache.begin(&mut fast, job());
        assert!(matches!(b, Begun::Other(..)));
        let start = std::time::Instant::now();
        let (coded, shared) = cache.finish(&mut fast, b);
        assert!(start.elapsed() < CACHE_WAIT / 2, "{:?}", start.elapsed());
        assert!(!shared);
        let coded = coded.map_err(|(_, e)| e).expect("codes");
        // Once A finishes, a third link takes A's coding, the same bytes.
        let (a_coded, _) = cache.finish(&mut slow, a);
        let a_coded = a_coded.map_err(|(_, e)| e).expect("codes");
        assert!(a_coded.bytes == coded.bytes);
        let mut third = Coder::default();
        let (c, shared) = match cache.begin(&mut third, job()) {
            Begun::Done(c, shared) => (c, shared),
            _ => panic!("A's coding is in the cache"),
        };
        assert!(shared);
        assert!(Arc::ptr_eq(
            &c.map_err(|(_, e)| e).expect("shared").bytes,
            &a_coded.bytes
        ));
    }

    #[test]
    fn a_large_frame_coded_in_bands_on_the_pool_decodes_byte_exact() {
        // Large enough to go to the pool; odd width, so the last column is wider.
        let g = FrameGeometry::rgba8(1000, 563);
        let grid = TileGrid::new(g.bytes_per_row, g.height, 4).expect("a grid");
        assert!(grid.frame_len() >= PARALLEL_FROM_BYTES);
        let mut coder = Coder::default();
        let mut decoder = TileDecoder::default();
        let mut base: Option<Frame> = None;
        for seq in 1..=4 {
            let frame = photo(g, seq);
            let job = CodeJob {
                frame: frame.clone(),
                base: base.clone(),
                compression: TileCompression::Lz4Qoi,
            };
            let coded = coder.code(job).map_err(|(_, e)| e).expect("codes");
            assert_eq!(coded.base_seq, base.as_ref().map(|b| b.meta().seq));
            let mut out = vec![0; grid.frame_len()];
            let stats = decoder
                .decode(
                    &grid,
                    &coded.bytes,
                    base.as_ref().map(|b| b.pixels()),
                    &mut out,
                )
                .expect("decodes");
            assert!(out == frame.pixels(), "frame {seq} byte-exact");
            assert_eq!(stats.same + stats.raw + stats.lz4 + stats.qoi, grid.tiles());
            base = Some(frame);
        }
        if let Some(pool) = pool() {
            let bands = coder.work.as_ref().map_or(0, |(_, w)| w.bands.len());
            assert_eq!(
                bands,
                (BANDS_PER_THREAD * pool.threads).min(9),
                "coded in bands"
            );
        }
    }

    /// Runs `frames` frames through `auto` on a link where a raw frame costs `raw_us`
    /// and a coded one `coded_us`; returns how many went coded.
    fn run(auto: &mut AutoCoding, frames: u32, raw_us: u64, coded_us: u64) -> u32 {
        let mut coded = 0;
        for _ in 0..frames {
            let code = auto.codes_next();
            auto.taken();
            auto.on_frame(code, 1000, if code { coded_us } else { raw_us });
            coded += u32::from(code);
        }
        coded
    }

    #[test]
    fn the_cheaper_way_wins_and_the_other_is_measured_again_seldom() {
        // A slow link: raw frames cost 20x coded ones.
        let mut auto = AutoCoding::default();
        let coded = run(&mut auto, 1000, 66_000, 3_000);
        assert!(auto.coding());
        // All but one raw frame at the start and one probe: a raw frame costs 22 coded
        // ones, so it is probed again PROBE_MOST frames later, not after 32, 64, ...
        assert!(coded >= 998, "{coded} of 1000 coded");
        // A fast link: coding costs 10x sending raw (photographs on loopback).
        let mut auto = AutoCoding::default();
        let coded = run(&mut auto, 1000, 2_300, 25_000);
        assert!(!auto.coding());
        assert!(coded <= 10, "{coded} of 1000 coded");
    }

    #[test]
    fn a_change_of_content_or_link_is_followed() {
        let mut auto = AutoCoding::default();
        run(&mut auto, 600, 2_300, 25_000);
        assert!(!auto.coding());
        // The content becomes a screen: coding it is now cheaper than sending it raw.
        // Found at the next probe, at most PROBE_MOST frames later.
        run(&mut auto, PROBE_MOST + 1, 2_300, 1_500);
        assert!(auto.coding());
        // Coding gets dear (photographs) on a fast link: raw again, without waiting
        // for a probe, once the running cost passes raw's by the margin.
        let coded = run(&mut auto, 10, 2_300, 25_000);
        assert!(!auto.coding());
        assert!(coded < 10, "{coded}");
        // The link slows down to where a raw frame costs 16 coded ones: coding wins
        // against its last measure at once, and raw is probed again twice in 1000
        // frames (after 84, weighed by that stale measure, then 512 frames on; at 32,
        // 64, 128, 256, 512 without weighing).
        let coded = run(&mut auto, 1000, 66_000, 4_000);
        assert!(auto.coding());
        assert!(coded >= 997, "{} raw frames of 1000", 1000 - coded);
    }

    #[test]
    fn costs_that_are_close_do_not_flap() {
        let mut auto = AutoCoding::default();
        let mut switches = 0;
        let mut last = auto.coding();
        for i in 0..2000u64 {
            let code = auto.codes_next();
            auto.taken();
            // Within 10 % of each other, noisy.
            let cost = if code {
                1_000 + i * 7919 % 100
            } else {
                1_050 + i * 104_729 % 100
            };
            auto.on_frame(code, 1000, cost);
            if auto.coding() != last {
                switches += 1;
                last = auto.coding();
            }
        }
        assert!(switches <= 10, "{switches} switches");
    }
}
