//! `texstream bench`: the real sender and viewer endpoints over real loopback TCP with
//! synthetic frames, each side in a process of its own so that its CPU time and peak
//! memory can be reported; prints a table or, with `--json`, one JSON object.
//!
//! The parent process starts the sender (`bench sender-worker`, hidden), reads the
//! address it listens on, starts one process per viewer (`bench viewer-worker`,
//! hidden) and, with `--slow-viewer`, reads slowly from one more connection on a thread
//! of its own. Each worker prints one JSON line when it is done; the parent combines
//! them. Viewers acknowledge every frame with a short text message. With `--fps max`
//! the sender copies frame `n` ahead and publishes it as soon as every viewer's link
//! has taken frame `n - 1` from its slot ([`Node::wait_frame_taken`]): one frame on the
//! wire and one waiting per viewer, so the newest-wins slots never evict a frame merely
//! because the producer outran the wire (frames skipped anyway are counted and
//! reported). `--in-flight N` paces by the acknowledgements instead (frame `n` once
//! every viewer has frame `n - N`). Latency at `--fps max` includes the time a prepared
//! frame waits for the wire; it is reported from the copy's start (capture) and from
//! `publish` (the frame handed to the node).
//!
//! `--raw-tcp` measures the floor instead: the same frames and pacing over one bare
//! TCP connection, with no protocol, no copy and no checksum ([`floor`]).
//!
//! With `--gpu` the GPU stages are in the loop, on whatever adapter exists: the sender
//! renders each frame with the live shader on a headless device and reads it back
//! through the staging-buffer ring (`Readback`), and each viewer writes every frame into
//! one persistent texture (`UploadTexture`) and waits for the GPU before acknowledging
//! it. Each stage is timed per frame (see [`StagesMs`]); the parent joins the sender's
//! publish times with the viewers' arrival times by frame number (one machine, one clock).

mod floor;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::frame::{Frame, FrameGeometry, FramePool};
use crate::gpu::{
    check_texture_size, texture_2d, Gpu, LiveMode, LiveShader, Readback, RowLayout, UploadTexture,
};
use crate::net::{now_us, Event, Node, NodeConfig, PeerId};
use crate::protocol::{
    encode, encode_preamble, Capabilities, Hello, Limits, Message, Ping, Role, DEFAULT_CHUNK_BYTES,
};

/// Name prefix of the honest viewers; the sender waits for their acknowledgements.
const VIEWER_NAME: &str = "bench viewer";
/// Name of the viewer that reads slowly; nobody waits for it.
const SLOW_VIEWER_NAME: &str = "bench slow viewer";
/// The sender gives up when the viewers make no progress for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Linux reports process CPU times in clock ticks of 1/100 s (USER_HZ).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    worker: Option<Worker>,
    #[command(flatten)]
    params: BenchParams,
    /// Add one more viewer that reads slowly (about 26 Mb/s), to show that it changes
    /// nobody else's figures.
    #[arg(long, conflicts_with = "raw_tcp")]
    slow_viewer: bool,
    /// Measure the floor instead: the same frames at the same pace over one bare TCP
    /// connection, with no protocol, no copy and no checksum (the ceiling that
    /// `texstream bench`'s latency and throughput are compared with).
    #[arg(long)]
    raw_tcp: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// The internal endpoints the parent process starts.
#[derive(Subcommand, Debug)]
enum Worker {
    /// Internal: the sending endpoint of a benchmark.
    #[command(name = "sender-worker", hide = true)]
    Sender(SenderWorkerArgs),
    /// Internal: one viewing endpoint of a benchmark.
    #[command(name = "viewer-worker", hide = true)]
    Viewer(ViewerWorkerArgs),
}

/// What the parent passes on to the sender.
#[derive(Args, Debug, Clone)]
struct BenchParams {
    /// Frame width in pixels (RGBA, 4 bytes per pixel).
    #[arg(long, default_value_t = 1920, value_parser = clap::value_parser!(u32).range(1..=16384))]
    width: u32,
    /// Frame height in pixels.
    #[arg(long, default_value_t = 1080, value_parser = clap::value_parser!(u32).range(1..=16384))]
    height: u32,
    /// Publish this many frames, then stop (default: run for --seconds).
    #[arg(long, value_name = "N", conflicts_with = "seconds", value_parser = clap::value_parser!(u64).range(1..))]
    frames: Option<u64>,
    /// Publish for this many seconds (default 5 when --frames is not given).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Viewers, each in its own process.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    viewers: u32,
    /// Frames per second to publish (1 to 1000), or `max`: as fast as the viewers take
    /// them (each frame is published once every viewer's link has started sending the
    /// one before, so none is skipped).
    #[arg(long, value_name = "F|max", default_value = "max", value_parser = parse_pace)]
    fps: Pace,
    /// With --fps max: pace by the viewers' acknowledgements instead, with at most N
    /// frames published but not yet acknowledged per viewer. More than 1 lets the
    /// sender's one-frame slot per viewer replace frames the writer has not started
    /// yet (counted as skipped).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16))]
    in_flight: Option<u64>,
    /// Payload bytes per frame chunk on the wire.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK_BYTES as u64, value_parser = parse_chunk)]
    chunk: u64,
    /// Run every connection over TLS 1.3 (a throwaway certificate in a temporary
    /// folder), to measure what encryption costs.
    #[arg(long)]
    tls: bool,
    /// Internal: the folder of the benchmark's TLS certificate and known hosts.
    #[arg(long, hide = true, value_name = "DIR")]
    tls_dir: Option<std::path::PathBuf>,
    /// Put the GPU stages in the loop, on whatever adapter exists: the sender renders
    /// each frame with the live shader and reads it back through the staging-buffer
    /// ring; each viewer uploads it into a texture (`write_texture`) and waits for the
    /// GPU. Reports the time of each stage (render+readback, copy+hash, queue,
    /// wire+verify, upload) and render → upload end to end.
    #[arg(long)]
    gpu: bool,
}

#[derive(Args, Debug)]
struct SenderWorkerArgs {
    #[command(flatten)]
    params: BenchParams,
    /// Wait for a slow viewer besides the --viewers honest ones.
    #[arg(long)]
    slow_viewer: bool,
}

#[derive(Args, Debug)]
struct ViewerWorkerArgs {
    /// The sender's address.
    #[arg(long, value_name = "ADDR")]
    connect: String,
    /// Our name in the hello (the sender tells its viewers apart by it).
    #[arg(long)]
    name: String,
    /// Dial over TLS, with the benchmark's certificate folder.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<std::path::PathBuf>,
    /// Upload every frame into a GPU texture and time it.
    #[arg(long)]
    gpu: bool,
}

/// TLS material kept in the benchmark's own folder (never the user's config).
fn bench_tls(
    enabled: bool,
    dir: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::net::Tls>> {
    let Some(dir) = dir.filter(|_| enabled) else {
        return Ok(None);
    };
    Ok(Some(crate::net::Tls::new(&crate::net::TlsOptions {
        dir: Some(dir.join("tls")),
        known_hosts: Some(dir.join("known_hosts")),
        ..crate::net::TlsOptions::default()
    })?))
}

/// How fast the sender publishes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pace {
    Max,
    Fps(f64),
}

impl Pace {
    fn fps(self) -> Option<f64> {
        match self {
            Pace::Max => None,
            Pace::Fps(f) => Some(f),
        }
    }
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pace::Max => f.write_str("max"),
            Pace::Fps(fps) => write!(f, "{fps}"),
        }
    }
}

fn parse_pace(s: &str) -> Result<Pace, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Pace::Max);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && (1.0..=1000.0).contains(&f) => Ok(Pace::Fps(f)),
        _ => Err(format!(
            "expected frames per second between 1 and 1000, or `max`; got {s:?}"
        )),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "expected a positive number of seconds (at most 86400), got {s:?}"
        )),
    }
}

fn parse_chunk(s: &str) -> Result<u64, String> {
    let max = u64::from(Limits::default().max_chunk_bytes);
    match s.parse::<u64>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a chunk size between 1 and {max} bytes, got {s:?}"
        )),
    }
}

impl BenchParams {
    fn geometry(&self) -> FrameGeometry {
        FrameGeometry::rgba8(self.width, self.height)
    }

    /// Bytes of one frame on the wire: with `--gpu`, rows keep the readback's padding.
    fn frame_bytes(&self) -> u64 {
        if self.gpu {
            RowLayout::new(self.width, self.height).buffer_size()
        } else {
            self.geometry().total_len() as u64
        }
    }

    /// The command-line arguments that reproduce these parameters in a worker.
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--width".to_owned(),
            self.width.to_string(),
            "--height".to_owned(),
            self.height.to_string(),
            "--viewers".to_owned(),
            self.viewers.to_string(),
            "--fps".to_owned(),
            self.fps.to_string(),
            "--chunk".to_owned(),
            self.chunk.to_string(),
        ];
        if let Some(n) = self.in_flight {
            args.extend(["--in-flight".to_owned(), n.to_string()]);
        }
        if let Some(frames) = self.frames {
            args.extend(["--frames".to_owned(), frames.to_string()]);
        }
        if let Some(seconds) = self.seconds {
            args.extend(["--seconds".to_owned(), seconds.to_string()]);
        }
        if self.tls {
            args.push("--tls".to_owned());
        }
        if let Some(dir) = &self.tls_dir {
            args.extend(["--tls-dir".to_owned(), dir.display().to_string()]);
        }
        if self.gpu {
            args.push("--gpu".to_owned());
        }
        args
    }

    /// The benchmark's TLS set-up, when asked for.
    fn tls(&self) -> anyhow::Result<Option<crate::net::Tls>> {
        bench_tls(self.tls, self.tls_dir.as_deref())
    }

    /// When the run should end: a number of frames, or a time.
    fn stop(&self) -> Stop {
        match (self.frames, self.seconds) {
            (Some(n), _) => Stop::Frames(n),
            (None, Some(s)) => Stop::After(Duration::from_secs_f64(s)),
            (None, None) => Stop::After(Duration::from_secs(5)),
        }
    }

    /// A generous bound on the whole run, after which the parent kills its workers.
    fn watchdog(&self) -> Duration {
        let publishing = match (self.stop(), self.fps) {
            (Stop::After(d), _) => d.as_secs_f64(),
            (Stop::Frames(n), Pace::Fps(f)) => n as f64 / f,
            // At 100 MB/s, far below what any machine does on loopback.
            (Stop::Frames(n), Pace::Max) => {
                n as f64 * self.geometry().total_len() as f64 * f64::from(self.viewers) / 1e8
            }
        };
        // A software renderer may take a good fraction of a second per large frame.
        let publishing = match self.stop() {
            Stop::Frames(n) if self.gpu => publishing + n as f64 * 0.5,
            _ => publishing,
        };
        Duration::from_secs_f64(90.0 + publishing.min(1e6))
    }
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Frames(u64),
    After(Duration),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.worker {
        Some(Worker::Sender(worker)) => run_sender(&worker),
        Some(Worker::Viewer(worker)) => run_viewer(&worker),
        None if args.raw_tcp => floor::run(&args.params, args.json),
        None => run_parent(&args.params, args.slow_viewer, args.json),
    }
}

// ---------------------------------------------------------------------------------
// What the workers report (one JSON line each on standard output).

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct SenderReport {
    frames_published: u64,
    /// First publish → last acknowledgement from every honest viewer.
    elapsed_secs: f64,
    /// Time spent in `Frame::copied` (copy from the source buffer and XXH3).
    copy_secs: f64,
    cpu_secs: f64,
    peak_rss_mib: f64,
    /// Whether every honest viewer acknowledged the last frame before the sender gave up.
    all_acknowledged: bool,
    peers: Vec<SenderPeer>,
    /// Wall clock (µs since the epoch) just before frame `seq` was published, by seq.
    publish_us: Vec<u64>,
    /// With `--gpu`: the sender's stage times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gpu: Option<SenderStages>,
}

/// The sender's per-frame stage times with `--gpu`, in microseconds.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
struct SenderStages {
    /// The adapter, as wgpu names it, and its backend.
    adapter: String,
    /// Each rendered frame: render start → its staging buffer mapped.
    render_readback_us: Vec<u64>,
    /// Each rendered frame: `Frame::copied` out of the mapped buffer (copy and XXH3).
    copy_hash_us: Vec<u64>,
    /// Each published frame: copied → published (with `--fps max`, the wait for the
    /// viewers' links to take the frame before it).
    queue_us: Vec<u64>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct SenderPeer {
    name: String,
    frames_sent: u64,
    frames_skipped: u64,
    bytes_sent: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct ViewerReport {
    name: String,
    frames_received: u64,
    /// Frames the node replaced before this process took them.
    frames_dropped: u64,
    checksum_failures: u64,
    protocol_errors: u64,
    bytes_payload: u64,
    /// Wall clock (µs since the epoch): the first frame's capture, the last frame's arrival.
    first_capture_us: u64,
    last_receive_us: u64,
    /// Capture → verified frame handed to us, one per frame, in microseconds.
    latencies_us: Vec<u64>,
    /// Each frame received: its number, and the wall clock (µs since the epoch) when the
    /// verified frame was handed to us; in parallel.
    seq: Vec<u64>,
    delivered_us: Vec<u64>,
    cpu_secs: f64,
    peak_rss_mib: f64,
    /// With `--gpu`: the viewer's stage times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gpu: Option<ViewerStages>,
}

/// One viewer's per-frame stage times with `--gpu`; the vectors run in parallel, one
/// entry per frame received.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
struct ViewerStages {
    adapter: String,
    /// `write_texture`, a submit and the wait until the GPU finished, in µs.
    upload_us: Vec<u64>,
    /// Capture (the sender's render start) → upload done, in µs.
    end_to_end_us: Vec<u64>,
    /// XXH3 over one received frame's pixels, timed apart after the run (the reader's
    /// verification cannot be timed apart from the wire without changing `net/`).
    verify_estimate_us: Vec<u64>,
}

// ---------------------------------------------------------------------------------
// /proc readings (the crate denies unsafe code: no libc).

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from field 3 on.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(utime), Some(stime)) => (utime + stime) as f64 / CLOCK_TICKS_PER_SEC,
        _ => 0.0,
    }
}

/// Peak resident set size of this process so far (VmHWM), in MiB.
pub(super) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib = line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()
            })
        })
        .map_or(0.0, |kib| kib as f64 / 1024.0)
}

fn print_json_line(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// The sender worker.

/// A synthetic picture: a cheap pattern that is not all one value.
fn synthetic_pixels(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|i| {
            if i % 4096 == 0 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
            }
            (state >> ((i % 8) * 8)) as u8 ^ (i >> 12) as u8
        })
        .collect()
}

/// Microseconds of a duration, for the stage vectors.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where the sender's frames come from.
enum Producer {
    /// Synthetic pixels, copied (and hashed) into a frame buffer for every frame.
    Cpu(Vec<u8>),
    /// `--gpu`: the live shader rendered on a headless device and read back.
    Gpu(Box<GpuProducer>),
}

impl Producer {
    /// Frame `seq`, and the time spent in `Frame::copied` making it.
    fn produce(
        &mut self,
        geometry: FrameGeometry,
        seq: u64,
        pool: &FramePool,
    ) -> anyhow::Result<(Frame, Duration)> {
        match self {
            Producer::Cpu(source) => {
                let copy_start = Instant::now();
                let frame = Frame::copied(geometry, seq, now_us(), source, pool);
                Ok((frame, copy_start.elapsed()))
            }
            Producer::Gpu(gpu) => gpu.render(seq, pool),
        }
    }
}

/// The sender's GPU side with `--gpu`, as the sender window's capture thread does it:
/// the live shader's pattern rendered into its target, `copy_texture_to_buffer` into the
/// readback ring's free staging buffer, mapped, then `Frame::copied` out of it.
struct GpuProducer {
    gpu: Gpu,
    live: LiveShader,
    /// The live shader's source: its pattern ignores it, but the bind group needs one.
    _source: (wgpu::Texture, wgpu::TextureView),
    readback: Readback,
    started: Instant,
    stages: SenderStages,
}

impl GpuProducer {
    fn new(width: u32, height: u32) -> anyhow::Result<GpuProducer> {
        let gpu = Gpu::headless()?;
        check_texture_size(&gpu.device, width, height)?;
        let source = texture_2d(
            &gpu.device,
            "texstream bench source",
            (1, 1),
            wgpu::TextureFormat::Rgba8Unorm,
            wgpu::TextureUsages::TEXTURE_BINDING,
        );
        let live = LiveShader::new(&gpu.device, &source.1, width, height);
        let stages = SenderStages {
            adapter: adapter_name(&gpu),
            ..SenderStages::default()
        };
        Ok(GpuProducer {
            gpu,
            live,
            _source: source,
            readback: Readback::new(3),
            started: Instant::now(),
            stages,
        })
    }

    /// Renders and reads back frame `seq`; its capture time is the render's start.
    fn render(&mut self, seq: u64, pool: &FramePool) -> anyhow::Result<(Frame, Duration)> {
        let (device, queue) = (&self.gpu.device, &self.gpu.queue);
        let capture_us = now_us();
        let start = Instant::now();
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("texstream bench render"),
        });
        let time_secs = self.started.elapsed().as_secs_f32();
        self.live
            .render(queue, &mut encoder, time_secs, LiveMode::Pattern);
        let copied =
            self.readback
                .copy(device, &mut encoder, self.live.target(), seq, capture_us)?;
        queue.submit([encoder.finish()]);
        self.readback.submitted();
        // Every frame is read before the next is rendered: a buffer is always free.
        if !copied {
            bail!("no staging buffer was free for frame {seq}");
        }
        self.readback.wait_mapped(device)?;
        let mapped = Instant::now();
        let frame = self
            .readback
            .take_frame(pool)?
            .with_context(|| format!("the readback of frame {seq} finished without a frame"))?;
        let copy = mapped.elapsed();
        self.stages
            .render_readback_us
            .push(micros(mapped.duration_since(start)));
        self.stages.copy_hash_us.push(micros(copy));
        Ok((frame, copy))
    }
}

/// "llvmpipe (LLVM 19.1.7, 256 bits), Vulkan": the adapter a `--gpu` run used.
fn adapter_name(gpu: &Gpu) -> String {
    format!("{}, {:?}", gpu.info.name, gpu.info.backend)
}

/// What the sender knows of one honest viewer.
struct Acks {
    name: String,
    /// The newest frame it has acknowledged.
    newest: Option<u64>,
}

/// With `--fps max` and no `--in-flight`: how long the sender waits on the viewers'
/// links at a time before it looks at its events again.
const WRITER_WAIT: Duration = Duration::from_millis(20);
/// With `--fps max` and no `--in-flight`: frames published but not yet acknowledged per
/// viewer, at most. Each viewer's node queues as many verified frames, so no viewer ever
/// has a frame dropped because the sender outran its process (only the wire is
/// measured); on large frames the links' slots limit first.
const UNACKNOWLEDGED_MAX: u64 = 3;

/// Whether every viewer has acknowledged frame `seq - window` (or needs not yet).
fn acked_within(viewers: &HashMap<PeerId, Acks>, seq: u64, window: u64) -> bool {
    viewers
        .values()
        .all(|v| v.newest.map_or(0, |newest| newest + 1) + window > seq)
}

/// An event on the sender's node: an acknowledgement moves a viewer on; a viewer that
/// leaves ends the benchmark.
fn on_sender_event(
    event: Event,
    viewers: &mut HashMap<PeerId, Acks>,
    last_progress: &mut Instant,
) -> anyhow::Result<()> {
    match event {
        Event::Text { peer, text, .. } => {
            let acked = text.body.strip_prefix("ack ").and_then(|n| n.parse().ok());
            if let (Some(v), Some(n)) = (viewers.get_mut(&peer), acked) {
                if v.newest.is_none_or(|old| n > old) {
                    v.newest = Some(n);
                    *last_progress = Instant::now();
                }
            }
        }
        Event::PeerDisconnected { peer, reason, .. } if viewers.contains_key(&peer) => {
            bail!("a viewer left during the benchmark: {reason}");
        }
        _ => {}
    }
    Ok(())
}

fn run_sender(args: &SenderWorkerArgs) -> anyhow::Result<()> {
    let params = &args.params;
    let geometry = params.geometry();
    // The GPU first, so that a machine without one fails before any viewer starts.
    let mut producer = if params.gpu {
        Producer::Gpu(Box::new(GpuProducer::new(params.width, params.height)?))
    } else {
        Producer::Cpu(synthetic_pixels(geometry.total_len()))
    };
    let mut config = NodeConfig::new(Role::Sender);
    config.name = "bench sender".to_owned();
    config.listen = Some("127.0.0.1:0".to_owned());
    config.chunk_bytes = params.chunk as usize;
    config.forward_text = false;
    config.event_queue = 4096;
    config.tls = params.tls()?;
    let node = Node::start(config)?;
    let addr = node
        .local_addr()
        .context("the benchmark sender has no listen address")?;
    print_json_line(&serde_json::json!({ "listening": addr.to_string() }))?;

    // Wait for every viewer.
    let expected = params.viewers as usize + usize::from(args.slow_viewer);
    let mut viewers: HashMap<PeerId, Acks> = HashMap::new();
    let mut slow: Option<PeerId> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while viewers.len() + usize::from(slow.is_some()) < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.events().recv_timeout(left) {
            Ok(Event::PeerConnected { peer, name, .. }) if name == SLOW_VIEWER_NAME => {
                slow = Some(peer);
            }
            Ok(Event::PeerConnected { peer, name, .. }) => {
                viewers.insert(peer, Acks { name, newest: None });
            }
            Ok(_) => {}
            Err(_) => bail!(
                "only {} of {expected} viewers connected within 30 s",
                viewers.len() + usize::from(slow.is_some())
            ),
        }
    }

    let pool = FramePool::new(expected + 2 * params.in_flight.unwrap_or(1) as usize + 4);
    let stop = params.stop();
    let cpu_start = cpu_secs();
    let start = Instant::now();
    let interval = params.fps.fps().map(|f| Duration::from_secs_f64(1.0 / f));
    let mut next_due = start;
    let mut copy_time = Duration::ZERO;
    let mut seq = 0u64;
    let mut last_progress = Instant::now();
    let mut all_acknowledged = true;
    let mut publish_us = Vec::with_capacity(1 << 14);
    // With --fps max: the next frame, copied ahead, and when it was ready.
    let mut prepared: Option<(Frame, Instant)> = None;
    loop {
        // Acknowledgements (progress, and the end of the run) and departures.
        for event in node.events().try_iter() {
            on_sender_event(event, &mut viewers, &mut last_progress)?;
        }
        let now = Instant::now();
        let done = match stop {
            Stop::Frames(n) => seq >= n,
            Stop::After(d) => seq > 0 && now.duration_since(start) >= d,
        };
        let wait = if done {
            let last = seq - 1;
            if viewers
                .values()
                .all(|v| v.newest.is_some_and(|n| n >= last))
            {
                break;
            }
            None
        } else {
            let mut copy = |seq: u64| -> anyhow::Result<(Frame, Instant)> {
                let (frame, copying) = producer.produce(geometry, seq, &pool)?;
                copy_time += copying;
                Ok((frame, Instant::now()))
            };
            let due = match (interval, params.in_flight) {
                (Some(_), _) => next_due <= now,
                (None, in_flight) => {
                    // Copy the next frame while the previous ones are on the wire.
                    if prepared.is_none() {
                        prepared = Some(copy(seq)?);
                    }
                    let window = in_flight.unwrap_or(UNACKNOWLEDGED_MAX);
                    acked_within(&viewers, seq, window)
                        && (in_flight.is_some()
                            // Every viewer's link has started sending the frame before.
                            || viewers
                                .keys()
                                .all(|peer| node.wait_frame_taken(*peer, WRITER_WAIT)))
                }
            };
            if due {
                let (frame, ready) = match prepared.take() {
                    Some(prepared) => prepared,
                    None => copy(seq)?,
                };
                let queued = ready.elapsed();
                publish_us.push(now_us());
                node.publish(&frame);
                if let Producer::Gpu(gpu) = &mut producer {
                    gpu.stages.queue_us.push(micros(queued));
                }
                drop(frame);
                seq += 1;
                if let Some(interval) = interval {
                    next_due = (next_due + interval).max(now);
                }
                continue;
            }
            match interval {
                Some(_) => Some(next_due.saturating_duration_since(now)),
                // Waiting for the links' slots (bounded, above): look at the events, then
                // again.
                None if acked_within(
                    &viewers,
                    seq,
                    params.in_flight.unwrap_or(UNACKNOWLEDGED_MAX),
                ) =>
                {
                    Some(Duration::ZERO)
                }
                // Waiting for an acknowledgement.
                None => None,
            }
        };
        // Paced publishing goes on whatever the viewers do; waiting on them is bounded.
        let stall_left = if done || interval.is_none() {
            (last_progress + STALL_TIMEOUT).saturating_duration_since(now)
        } else {
            STALL_TIMEOUT
        };
        if stall_left.is_zero() {
            if done {
                tracing::warn!("not every viewer acknowledged the last frame; reporting anyway");
                all_acknowledged = false;
                break;
            }
            let newest: Vec<String> = viewers
                .values()
                .map(|v| format!("{}: {:?}", v.name, v.newest))
                .collect();
            bail!(
                "the viewers made no progress for {} s (newest frame each has: {})",
                STALL_TIMEOUT.as_secs(),
                newest.join(", ")
            );
        }
        let timeout = wait.map_or(stall_left, |w| w.min(stall_left));
        match node.events().recv_timeout(timeout) {
            Ok(event) => on_sender_event(event, &mut viewers, &mut last_progress)?,
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => bail!("the sender node stopped"),
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_secs() - cpu_start;
    node.send_text(&format!("end {seq}"));
    let peers = node
        .peers()
        .into_iter()
        .map(|p| SenderPeer {
            name: p.name.unwrap_or_default(),
            frames_sent: p.frames_sent,
            frames_skipped: p.frames_skipped,
            bytes_sent: p.bytes_sent,
        })
        .collect();
    print_json_line(&SenderReport {
        frames_published: seq,
        elapsed_secs: elapsed.as_secs_f64(),
        copy_secs: copy_time.as_secs_f64(),
        cpu_secs: cpu,
        peak_rss_mib: peak_rss_mib(),
        all_acknowledged,
        peers,
        publish_us,
        gpu: match producer {
            Producer::Gpu(gpu) => Some(gpu.stages),
            Producer::Cpu(_) => None,
        },
    })?;
    // Let the viewers take the "end" before the goodbye closes their links.
    std::thread::sleep(Duration::from_millis(100));
    node.shutdown();
    Ok(())
}

// ---------------------------------------------------------------------------------
// The viewer worker.

enum Wake {
    Frame(Result<Frame, flume::RecvError>),
    Event(Result<Event, flume::RecvError>),
}

/// The viewer's GPU side with `--gpu`: one persistent texture every frame is written
/// into, as the viewer window does it.
struct GpuConsumer {
    gpu: Gpu,
    upload: UploadTexture,
    stages: ViewerStages,
    /// The newest frame, for the verification estimate after the run.
    last: Option<Frame>,
}

impl GpuConsumer {
    fn new() -> anyhow::Result<GpuConsumer> {
        let gpu = Gpu::headless()?;
        let stages = ViewerStages {
            adapter: adapter_name(&gpu),
            ..ViewerStages::default()
        };
        Ok(GpuConsumer {
            gpu,
            upload: UploadTexture::new(),
            stages,
            last: None,
        })
    }

    /// Uploads `frame` and waits until the GPU has it.
    fn upload(&mut self, frame: Frame) -> anyhow::Result<()> {
        let (device, queue) = (&self.gpu.device, &self.gpu.queue);
        let start = Instant::now();
        if self.upload.upload(device, queue, &frame)? == crate::gpu::Uploaded::Busy {
            // The ring's buffers come back with the wait below; this frame gets one.
            UploadTexture::wait_uploaded(device, queue)?;
            self.upload.upload(device, queue, &frame)?;
        }
        UploadTexture::wait_uploaded(device, queue)?;
        let upload = start.elapsed();
        let meta = frame.meta();
        let s = &mut self.stages;
        s.upload_us.push(micros(upload));
        s.end_to_end_us
            .push(now_us().saturating_sub(meta.capture_us));
        // The previous frame goes back to the node's pool first.
        self.last = None;
        self.last = Some(frame);
        Ok(())
    }

    /// Times XXH3 over the newest frame's pixels a few times: what the reader's
    /// verification costs, from cache, since it cannot be timed apart from the wire.
    fn estimate_verify(&mut self) {
        let Some(frame) = self.last.take() else {
            return;
        };
        for _ in 0..8 {
            let start = Instant::now();
            std::hint::black_box(crate::protocol::checksum(std::hint::black_box(
                frame.pixels(),
            )));
            self.stages.verify_estimate_us.push(micros(start.elapsed()));
        }
    }
}

fn run_viewer(args: &ViewerWorkerArgs) -> anyhow::Result<()> {
    let mut gpu = if args.gpu {
        Some(GpuConsumer::new()?)
    } else {
        None
    };
    let mut config = NodeConfig::new(Role::Viewer);
    config.name = args.name.clone();
    // Room for every frame the sender may have unacknowledged: none is dropped for
    // being taken late.
    config.frame_queue = UNACKNOWLEDGED_MAX as usize;
    config.connect = vec![args.connect.clone()];
    config.tls = bench_tls(args.tls_dir.is_some(), args.tls_dir.as_deref())?;
    let node = Node::start(config)?;
    let mut report = ViewerReport {
        name: args.name.clone(),
        frames_received: 0,
        frames_dropped: 0,
        checksum_failures: 0,
        protocol_errors: 0,
        bytes_payload: 0,
        first_capture_us: 0,
        last_receive_us: 0,
        latencies_us: Vec::with_capacity(1 << 14),
        seq: Vec::with_capacity(1 << 14),
        delivered_us: Vec::with_capacity(1 << 14),
        cpu_secs: 0.0,
        peak_rss_mib: 0.0,
        gpu: None,
    };
    let mut cpu_start = None;
    let mut newest: Option<u64> = None;
    // Set by the sender's "end N": the last frame is N - 1.
    let mut end: Option<(u64, Instant)> = None;
    let idle = Duration::from_secs(30);
    let mut last_activity = Instant::now();
    loop {
        if let Some((published, at)) = end {
            let complete = published == 0 || newest.is_some_and(|n| n + 1 >= published);
            if complete || at.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        if last_activity.elapsed() > idle {
            bail!(
                "no frame or message from the sender for {} s",
                idle.as_secs()
            );
        }
        let woke = flume::Selector::new()
            .recv(node.frames(), Wake::Frame)
            .recv(node.events(), Wake::Event)
            .wait_timeout(Duration::from_millis(200));
        match woke {
            Ok(Wake::Frame(Ok(frame))) => {
                let now = now_us();
                last_activity = Instant::now();
                let meta = *frame.meta();
                if cpu_start.is_none() {
                    cpu_start = Some(cpu_secs());
                    report.first_capture_us = meta.capture_us;
                }
                report.last_receive_us = now;
                report.frames_received += 1;
                report.bytes_payload += frame.pixels().len() as u64;
                report
                    .latencies_us
                    .push(now.saturating_sub(meta.capture_us));
                report.seq.push(meta.seq);
                report.delivered_us.push(now);
                newest = Some(meta.seq);
                // Acknowledged once uploaded: with one frame in flight, a frame never
                // waits behind the upload of the one before it.
                match &mut gpu {
                    Some(gpu) => gpu.upload(frame)?,
                    None => drop(frame),
                }
                node.send_text(&format!("ack {}", meta.seq));
            }
            Ok(Wake::Event(Ok(event))) => {
                last_activity = Instant::now();
                match event {
                    Event::Text { text, .. } => {
                        if let Some(n) = text.body.strip_prefix("end ").and_then(|n| n.parse().ok())
                        {
                            end = Some((n, Instant::now()));
                        }
                    }
                    Event::PeerDisconnected { reason, .. } => {
                        if end.is_none() {
                            bail!("the sender went away before the end: {reason}");
                        }
                        break;
                    }
                    _ => {}
                }
            }
            Ok(Wake::Frame(Err(_)) | Wake::Event(Err(_))) => bail!("the viewer node stopped"),
            Err(_) => {}
        }
    }
    report.cpu_secs = cpu_start.map_or(0.0, |c| cpu_secs() - c);
    report.peak_rss_mib = peak_rss_mib();
    let stats = node.stats();
    report.frames_dropped = stats.frames_dropped;
    report.checksum_failures = stats.checksum_failures;
    report.protocol_errors = stats.protocol_errors;
    report.gpu = gpu.map(|mut gpu| {
        gpu.estimate_verify();
        gpu.stages
    });
    print_json_line(&report)?;
    node.shutdown();
    Ok(())
}

// ---------------------------------------------------------------------------------
// The slow viewer: a bare connection that reads a little at a time.

/// Bytes the slow viewer reads per step, and the pause after each step.
const SLOW_READ_BYTES: usize = 64 << 10;
const SLOW_READ_PAUSE: Duration = Duration::from_millis(20);

fn slow_viewer(addr: SocketAddr, stop: &AtomicBool) -> anyhow::Result<u64> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("the slow viewer cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut hello = encode_preamble().to_vec();
    encode(
        &Message::Hello(Hello {
            role: Role::Viewer,
            capabilities: Capabilities(Capabilities::FRAMES_IN | Capabilities::TEXT),
            name: SLOW_VIEWER_NAME.to_owned(),
            auth: Vec::new(),
            instance: 0,
        }),
        &mut hello,
    );
    stream.write_all(&hello)?;
    let mut buf = vec![0u8; SLOW_READ_BYTES];
    let mut bytes = 0u64;
    let mut last_ping = Instant::now();
    let mut nonce = 0u64;
    while !stop.load(Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
        // Something now and then, so that the sender's keepalive keeps us.
        if last_ping.elapsed() > Duration::from_secs(2) {
            last_ping = Instant::now();
            nonce += 1;
            let mut ping = Vec::new();
            encode(
                &Message::Ping(Ping {
                    nonce,
                    sent_us: now_us(),
                }),
                &mut ping,
            );
            if stream.write_all(&ping).is_err() {
                break;
            }
        }
        std::thread::sleep(SLOW_READ_PAUSE);
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------
// The parent: starts the workers, combines their reports.

/// Child processes, killed if still running when this is dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn worker_command(exe: &std::path::Path, args: &[String]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "texstream=warn,warn");
    }
    cmd
}

/// Reads a child's standard output to the end on a thread.
fn collect_stdout(child: &mut Child) -> anyhow::Result<flume::Receiver<String>> {
    let stdout = child
        .stdout
        .take()
        .context("a worker has no standard output")?;
    let (tx, rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("texstream bench output".into())
        .spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut text);
            let _ = tx.send(text);
        })?;
    Ok(rx)
}

/// The last line of a worker's output that parses as `T`.
fn last_json<T: serde::de::DeserializeOwned>(output: &str) -> Option<T> {
    output
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
}

/// Latency percentiles, in milliseconds.
#[derive(serde::Serialize, Debug, Clone, Copy, Default)]
struct LatencyMs {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl LatencyMs {
    fn of(samples_us: &mut [u64]) -> LatencyMs {
        samples_us.sort_unstable();
        let at = |p: f64| -> f64 {
            if samples_us.is_empty() {
                return 0.0;
            }
            let rank = (p / 100.0 * samples_us.len() as f64).ceil() as usize;
            samples_us[rank.clamp(1, samples_us.len()) - 1] as f64 / 1e3
        };
        LatencyMs {
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: at(100.0),
        }
    }
}

#[derive(serde::Serialize, Debug)]
struct ViewerFigures {
    name: String,
    frames_received: u64,
    frames_skipped: u64,
    frames_dropped: u64,
    checksum_failures: u64,
    gbps: f64,
    fps: f64,
    latency_ms: LatencyMs,
    latency_from_publish_ms: LatencyMs,
    cpu_secs: f64,
    peak_rss_mib: f64,
}

#[derive(serde::Serialize, Debug)]
struct SideFigures {
    /// Sum over the processes of this side.
    cpu_secs: f64,
    /// The largest over the processes of this side.
    peak_rss_mib: f64,
}

#[derive(serde::Serialize, Debug)]
struct SlowFigures {
    frames_sent: u64,
    frames_skipped: u64,
    bytes_read: u64,
}

/// `--gpu`: each stage's time per frame, in milliseconds. The five stages in the loop
/// follow one another, so their medians add up to about the end-to-end median.
#[derive(serde::Serialize, Debug)]
struct StagesMs {
    /// Sender: render start → the frame's staging buffer mapped (the live shader's pass,
    /// `copy_texture_to_buffer`, submit, `map_async`, the wait for the GPU).
    render_readback: LatencyMs,
    /// Sender: `Frame::copied` out of the mapped staging buffer (copy and XXH3).
    copy_hash: LatencyMs,
    /// Sender: frame ready → published. With `--fps max` the next frame is made while
    /// the previous ones are on their way, and waits here for the viewers to
    /// acknowledge them. The time from publish until the link's writer takes the frame
    /// is not visible outside `net/`; it is part of `wire_verify`.
    queue: LatencyMs,
    /// Publish → the whole, verified frame handed to the viewer process: the writer's
    /// wake-up, both kernel copies over loopback, the reader's verification as it reads,
    /// the node's frame channel. Sender's and viewer's clocks are the same machine's.
    wire_verify: LatencyMs,
    /// Viewer: `write_texture` into the persistent texture, a submit, and the wait until
    /// the GPU finished the copy.
    upload: LatencyMs,
    /// Not a stage of the loop: XXH3 over a received frame, timed after the run, from
    /// cache (eight times per viewer). The reader's verification costs about this and is
    /// inside `wire_verify`.
    verify_estimate: LatencyMs,
}

/// The stage figures of a `--gpu` run: the adapter, the stages, end to end. `None` when
/// the workers ran without `--gpu`.
/// Publish → the whole verified frame handed to the viewer, for each frame the viewer
/// received, in µs: the sender's publish times joined with the viewer's arrivals by
/// frame number (one machine, one clock).
fn from_publish_us<'a>(
    sender: &'a SenderReport,
    viewer: &'a ViewerReport,
) -> impl Iterator<Item = u64> + 'a {
    viewer
        .seq
        .iter()
        .zip(&viewer.delivered_us)
        .filter_map(|(seq, delivered)| {
            let published = sender.publish_us.get(usize::try_from(*seq).ok()?)?;
            Some(delivered.saturating_sub(*published))
        })
}

fn gpu_stages(
    sender: &SenderReport,
    viewers: &[ViewerReport],
) -> Option<(String, StagesMs, LatencyMs)> {
    let s = sender.gpu.as_ref()?;
    let (mut wire, mut upload, mut end_to_end, mut verify) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (report, v) in viewers
        .iter()
        .filter_map(|r| r.gpu.as_ref().map(|g| (r, g)))
    {
        wire.extend(from_publish_us(sender, report));
        upload.extend_from_slice(&v.upload_us);
        end_to_end.extend_from_slice(&v.end_to_end_us);
        verify.extend_from_slice(&v.verify_estimate_us);
    }
    let stages = StagesMs {
        render_readback: LatencyMs::of(&mut s.render_readback_us.clone()),
        copy_hash: LatencyMs::of(&mut s.copy_hash_us.clone()),
        queue: LatencyMs::of(&mut s.queue_us.clone()),
        wire_verify: LatencyMs::of(&mut wire),
        upload: LatencyMs::of(&mut upload),
        verify_estimate: LatencyMs::of(&mut verify),
    };
    Some((s.adapter.clone(), stages, LatencyMs::of(&mut end_to_end)))
}

/// The benchmark's result, printed by `--json` as one object.
#[derive(serde::Serialize, Debug)]
struct BenchReport {
    width: u32,
    height: u32,
    frame_bytes: u64,
    viewers: u32,
    /// Frames per second asked for; `null` for `--fps max`.
    fps_limit: Option<f64>,
    /// With `--fps max`: `null` when each frame is published once the viewers' links
    /// took the one before; N when paced by acknowledgements, N frames at most.
    in_flight: Option<u64>,
    chunk_bytes: u64,
    frames_limit: Option<u64>,
    seconds_limit: Option<f64>,
    slow_viewer: bool,
    /// Every connection ran over TLS 1.3.
    tls: bool,
    /// `--gpu`: the sender rendered and read back every frame on a GPU, the viewers
    /// uploaded every frame to one.
    gpu: bool,
    /// With `--gpu`: the sender's adapter and backend (the viewers open the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_adapter: Option<String>,
    /// With `--gpu`: each stage's time per frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    stages_ms: Option<StagesMs>,
    /// With `--gpu`: render start → upload done at the viewer, every frame of every
    /// honest viewer.
    #[serde(skip_serializing_if = "Option::is_none")]
    end_to_end_ms: Option<LatencyMs>,
    /// Frames the sender published.
    frames_sent: u64,
    /// Whole, verified frames delivered, summed over the honest viewers.
    frames_received: u64,
    /// Frames the sender skipped for an honest viewer (newest wins), summed.
    frames_skipped: u64,
    /// Frames a viewer's node replaced before the viewer took them, summed.
    frames_dropped: u64,
    checksum_failures: u64,
    protocol_errors: u64,
    /// First publish → last frame acknowledged by every honest viewer.
    elapsed_secs: f64,
    /// Frames the sender published per second.
    sender_fps: f64,
    /// Payload (pixel bytes) per second delivered to each viewer, the mean over viewers.
    gbps_per_viewer: f64,
    /// Payload per second delivered, summed over the viewers.
    gbps_total: f64,
    fps_per_viewer: f64,
    /// Capture (the start of the sender's copy and hash of the frame) → whole verified
    /// frame at the viewer, over every frame of every honest viewer.
    latency_ms: LatencyMs,
    /// `publish` (the copied, hashed frame handed to the node) → whole verified frame at
    /// the viewer, over every frame of every honest viewer.
    latency_from_publish_ms: LatencyMs,
    /// The same over the first and over the last tenth of each viewer's frames: does
    /// latency grow during a long run?
    latency_ms_first_tenth: LatencyMs,
    latency_ms_last_tenth: LatencyMs,
    /// The median over each tenth of each viewer's frames in turn (from capture): a
    /// trend over a long run tells growth apart from a noisy stretch.
    latency_p50_ms_by_tenth: Vec<f64>,
    sender: SideFigures,
    /// Time in the sender's `Frame::copied` (source → frame buffer, hashed).
    sender_copy_secs: f64,
    viewer: SideFigures,
    per_viewer: Vec<ViewerFigures>,
    slow: Option<SlowFigures>,
}

fn run_parent(params: &BenchParams, slow: bool, json: bool) -> anyhow::Result<()> {
    if params.tls && slow {
        anyhow::bail!("--slow-viewer is a plain-TCP reader: it does not combine with --tls");
    }
    let exe = std::env::current_exe().context("cannot find the texstream executable")?;
    // A throwaway certificate folder, removed at the end.
    let tls_dir = params
        .tls
        .then(|| std::env::temp_dir().join(format!("texstream-bench-{}", std::process::id())));
    let _cleanup = TempDir(tls_dir.clone());
    let mut params = params.clone();
    params.tls_dir = tls_dir.clone();
    let params = &params;
    let watchdog = Instant::now() + params.watchdog();
    let mut children = Children(Vec::new());

    let mut sender_args = vec!["sender-worker".to_owned()];
    sender_args.extend(params.to_args());
    if slow {
        sender_args.push("--slow-viewer".to_owned());
    }
    let mut sender = worker_command(&exe, &sender_args)
        .spawn()
        .context("cannot start the benchmark sender")?;
    let mut sender_out = BufReader::new(
        sender
            .stdout
            .take()
            .context("the benchmark sender has no standard output")?,
    );
    children.0.push(sender);
    let mut first = String::new();
    sender_out
        .read_line(&mut first)
        .context("cannot read the benchmark sender's address")?;
    let addr: SocketAddr = serde_json::from_str::<serde_json::Value>(&first)
        .ok()
        .and_then(|v| v.get("listening")?.as_str()?.parse().ok())
        .context("the benchmark sender did not start (see its error above)")?;
    let (sender_tx, sender_rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("texstream bench output".into())
        .spawn(move || {
            let mut text = String::new();
            let _ = sender_out.read_to_string(&mut text);
            let _ = sender_tx.send(text);
        })?;

    let mut viewer_outputs = Vec::new();
    for i in 1..=params.viewers {
        let mut args = vec![
            "viewer-worker".to_owned(),
            "--connect".to_owned(),
            addr.to_string(),
            "--name".to_owned(),
            format!("{VIEWER_NAME} {i}"),
        ];
        if let Some(dir) = &tls_dir {
            args.extend(["--tls-dir".to_owned(), dir.display().to_string()]);
        }
        if params.gpu {
            args.push("--gpu".to_owned());
        }
        let mut viewer = worker_command(&exe, &args)
            .spawn()
            .context("cannot start a benchmark viewer")?;
        viewer_outputs.push(collect_stdout(&mut viewer)?);
        children.0.push(viewer);
    }
    let stop_slow = Arc::new(AtomicBool::new(false));
    let slow_thread = if slow {
        let stop = stop_slow.clone();
        Some(
            std::thread::Builder::new()
                .name("texstream bench slow viewer".into())
                .spawn(move || slow_viewer(addr, &stop))?,
        )
    } else {
        None
    };

    // Wait for every worker, within the watchdog.
    let mut statuses = vec![None; children.0.len()];
    while statuses.iter().any(Option::is_none) {
        for (child, status) in children.0.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait()?;
            }
        }
        if let Some(Some(s)) = statuses.first() {
            // The sender is done: the slow viewer may stop.
            stop_slow.store(true, Relaxed);
            if !s.success() {
                bail!("the benchmark sender failed ({s}); see its error above");
            }
        }
        if Instant::now() > watchdog {
            bail!(
                "the benchmark did not finish within {:.0} s; stopped it",
                params.watchdog().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_slow.store(true, Relaxed);
    for (i, status) in statuses.iter().enumerate().skip(1) {
        if let Some(s) = status.filter(|s| !s.success()) {
            bail!("benchmark viewer {i} failed ({s}); see its error above");
        }
    }
    let sender_report: SenderReport =
        last_json(&sender_rx.recv()?).context("the benchmark sender printed no report")?;
    let mut viewer_reports = Vec::new();
    for (i, rx) in viewer_outputs.iter().enumerate() {
        let report: ViewerReport = last_json(&rx.recv()?)
            .with_context(|| format!("benchmark viewer {} printed no report", i + 1))?;
        viewer_reports.push(report);
    }
    let slow_bytes = match slow_thread {
        Some(t) => Some(
            t.join()
                .map_err(|_| anyhow::anyhow!("the slow viewer thread panicked"))??,
        ),
        None => None,
    };

    let report = combine(params, slow, &sender_report, viewer_reports, slow_bytes);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    if report.checksum_failures > 0 || report.protocol_errors > 0 {
        bail!(
            "{} checksum failures and {} protocol errors during the benchmark",
            report.checksum_failures,
            report.protocol_errors
        );
    }
    if !sender_report.all_acknowledged {
        bail!("not every viewer received the last frame");
    }
    Ok(())
}

fn combine(
    params: &BenchParams,
    slow: bool,
    sender: &SenderReport,
    viewers: Vec<ViewerReport>,
    slow_bytes: Option<u64>,
) -> BenchReport {
    let frame_bytes = params.frame_bytes();
    let peer = |name: &str| sender.peers.iter().find(|p| p.name == name);
    let (gpu_adapter, stages_ms, end_to_end_ms) = match gpu_stages(sender, &viewers) {
        Some((adapter, stages, end_to_end)) => (Some(adapter), Some(stages), Some(end_to_end)),
        None => (None, None, None),
    };
    let mut all_latencies = Vec::new();
    let mut all_from_publish = Vec::new();
    let (mut first_tenth, mut last_tenth) = (Vec::new(), Vec::new());
    let mut tenths: Vec<Vec<u64>> = vec![Vec::new(); 10];
    let mut per_viewer = Vec::new();
    for mut v in viewers {
        let secs = (v.last_receive_us.saturating_sub(v.first_capture_us) as f64 / 1e6).max(1e-9);
        all_latencies.extend_from_slice(&v.latencies_us);
        let tenth = v.latencies_us.len() / 10;
        first_tenth.extend_from_slice(&v.latencies_us[..tenth]);
        last_tenth.extend_from_slice(&v.latencies_us[v.latencies_us.len() - tenth..]);
        let len = v.latencies_us.len();
        for (k, part) in tenths.iter_mut().enumerate() {
            part.extend_from_slice(&v.latencies_us[k * len / 10..(k + 1) * len / 10]);
        }
        let mut from_publish: Vec<u64> = from_publish_us(sender, &v).collect();
        all_from_publish.extend_from_slice(&from_publish);
        per_viewer.push(ViewerFigures {
            frames_received: v.frames_received,
            frames_skipped: peer(&v.name).map_or(0, |p| p.frames_skipped),
            frames_dropped: v.frames_dropped,
            checksum_failures: v.checksum_failures,
            gbps: v.bytes_payload as f64 * 8.0 / secs / 1e9,
            fps: v.frames_received as f64 / secs,
            latency_ms: LatencyMs::of(&mut v.latencies_us),
            latency_from_publish_ms: LatencyMs::of(&mut from_publish),
            cpu_secs: v.cpu_secs,
            peak_rss_mib: v.peak_rss_mib,
            name: v.name,
        });
    }
    let n = per_viewer.len().max(1) as f64;
    let sum = |f: fn(&ViewerFigures) -> f64| per_viewer.iter().map(f).sum::<f64>();
    let count = |f: fn(&ViewerFigures) -> u64| per_viewer.iter().map(f).sum::<u64>();
    BenchReport {
        width: params.width,
        height: params.height,
        frame_bytes,
        viewers: params.viewers,
        fps_limit: params.fps.fps(),
        in_flight: params.in_flight,
        chunk_bytes: params.chunk,
        frames_limit: params.frames,
        seconds_limit: match params.stop() {
            Stop::After(d) => Some(d.as_secs_f64()),
            Stop::Frames(_) => None,
        },
        slow_viewer: slow,
        tls: params.tls,
        gpu: params.gpu,
        gpu_adapter,
        stages_ms,
        end_to_end_ms,
        frames_sent: sender.frames_published,
        frames_received: count(|v| v.frames_received),
        frames_skipped: count(|v| v.frames_skipped),
        frames_dropped: count(|v| v.frames_dropped),
        checksum_failures: count(|v| v.checksum_failures),
        protocol_errors: 0,
        elapsed_secs: sender.elapsed_secs,
        sender_fps: sender.frames_published as f64 / sender.elapsed_secs.max(1e-9),
        gbps_per_viewer: sum(|v| v.gbps) / n,
        gbps_total: sum(|v| v.gbps),
        fps_per_viewer: sum(|v| v.fps) / n,
        latency_ms: LatencyMs::of(&mut all_latencies),
        latency_from_publish_ms: LatencyMs::of(&mut all_from_publish),
        latency_ms_first_tenth: LatencyMs::of(&mut first_tenth),
        latency_ms_last_tenth: LatencyMs::of(&mut last_tenth),
        latency_p50_ms_by_tenth: tenths
            .iter_mut()
            .map(|part| LatencyMs::of(part).p50)
            .collect(),
        sender: SideFigures {
            cpu_secs: sender.cpu_secs,
            peak_rss_mib: sender.peak_rss_mib,
        },
        sender_copy_secs: sender.copy_secs,
        viewer: SideFigures {
            cpu_secs: sum(|v| v.cpu_secs),
            peak_rss_mib: per_viewer
                .iter()
                .map(|v| v.peak_rss_mib)
                .fold(0.0, f64::max),
        },
        per_viewer,
        slow: slow_bytes.map(|bytes_read| {
            let p = peer(SLOW_VIEWER_NAME);
            SlowFigures {
                frames_sent: p.map_or(0, |p| p.frames_sent),
                frames_skipped: p.map_or(0, |p| p.frames_skipped),
                bytes_read,
            }
        }),
    }
}

fn print_table(r: &BenchReport) {
    let pace = match (r.fps_limit, r.in_flight) {
        (Some(f), _) => format!("{f} fps"),
        (None, Some(n)) => format!("max, {n} in flight (acknowledged)"),
        (None, None) => "max, as the links take them".to_owned(),
    };
    println!(
        "texstream bench: {}x{} RGBA ({:.2} MiB a frame), {} viewer(s){}, pace {pace}, chunk {} B, {}{:.2} s",
        r.width,
        r.height,
        r.frame_bytes as f64 / (1 << 20) as f64,
        r.viewers,
        if r.slow_viewer { " + 1 slow" } else { "" },
        r.chunk_bytes,
        if r.tls { "TLS 1.3, " } else { "" },
        r.elapsed_secs,
    );
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "frames", "skipped", "dropped", "Gb/s", "fps", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let row = |name: &str,
               frames: u64,
               skipped: u64,
               dropped: u64,
               gbps: f64,
               fps: f64,
               l: &LatencyMs| {
        println!(
            "{name:<16} {frames:>8} {skipped:>8} {dropped:>8} {gbps:>8.2} {fps:>8.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            l.p50, l.p90, l.p99, l.max
        );
    };
    for v in &r.per_viewer {
        row(
            &v.name,
            v.frames_received,
            v.frames_skipped,
            v.frames_dropped,
            v.gbps,
            v.fps,
            &v.latency_ms,
        );
    }
    if r.per_viewer.len() > 1 {
        row(
            "all viewers",
            r.frames_received,
            r.frames_skipped,
            r.frames_dropped,
            r.gbps_total,
            r.fps_per_viewer,
            &r.latency_ms,
        );
    }
    println!(
        "sender: {} frames published ({:.1} fps), {:.2} s copying+hashing; CPU {:.2} s, peak RSS {:.1} MiB",
        r.frames_sent, r.sender_fps, r.sender_copy_secs, r.sender.cpu_secs, r.sender.peak_rss_mib
    );
    println!(
        "viewers: CPU {:.2} s in all, peak RSS {:.1} MiB (largest); checksum failures {}",
        r.viewer.cpu_secs, r.viewer.peak_rss_mib, r.checksum_failures
    );
    let p = &r.latency_from_publish_ms;
    println!(
        "latency above: from capture (the sender's copy starts); from publish (frame handed to the node): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p.p50, p.p90, p.p99, p.max
    );
    let (first, last) = (&r.latency_ms_first_tenth, &r.latency_ms_last_tenth);
    println!(
        "latency, first tenth of the frames: p50 {:.2} ms, p99 {:.2} ms; last tenth: p50 {:.2} ms, p99 {:.2} ms",
        first.p50, first.p99, last.p50, last.p99
    );
    let by_tenth: Vec<String> = r
        .latency_p50_ms_by_tenth
        .iter()
        .map(|p| format!("{p:.2}"))
        .collect();
    println!(
        "latency p50 by tenth of the run, in ms: {}",
        by_tenth.join(" ")
    );
    if let Some(s) = &r.slow {
        println!(
            "slow viewer: {} frames sent to it, {} skipped for it, {:.1} MiB read",
            s.frames_sent,
            s.frames_skipped,
            s.bytes_read as f64 / (1 << 20) as f64
        );
    }
    if let (Some(stages), Some(end_to_end)) = (&r.stages_ms, &r.end_to_end_ms) {
        print_stages(r.gpu_adapter.as_deref().unwrap_or("?"), stages, end_to_end);
    }
}

/// The `--gpu` stage table: one row per stage, what it covers on the right.
fn print_stages(adapter: &str, s: &StagesMs, end_to_end: &LatencyMs) {
    println!("GPU stages per frame, on {adapter}:");
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8}  what",
        "stage", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, l: &LatencyMs, what: &str| {
        println!(
            "{name:<16} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {what}",
            l.p50, l.p90, l.p99, l.max
        );
    };
    row(
        "render+readback",
        &s.render_readback,
        "sender: render start → staging buffer mapped",
    );
    row(
        "copy+hash",
        &s.copy_hash,
        "sender: Frame::copied out of the mapped buffer",
    );
    row(
        "queue",
        &s.queue,
        "sender: frame ready → published (--fps max: waits for the viewers' acks)",
    );
    row(
        "wire+verify",
        &s.wire_verify,
        "publish → verified frame handed to the viewer",
    );
    row(
        "upload",
        &s.upload,
        "viewer: write_texture + submit, until the GPU is done",
    );
    row("end to end", end_to_end, "render start → upload done");
    row(
        "verify (apart)",
        &s.verify_estimate,
        "XXH3 of one received frame, timed after the run; inside wire+verify",
    );
}

/// Removes a folder when dropped.
struct TempDir(Option<std::path::PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_and_limits_parse() {
        assert_eq!(parse_pace("max"), Ok(Pace::Max));
        assert_eq!(parse_pace("60"), Ok(Pace::Fps(60.0)));
        assert!(parse_pace("0").is_err());
        assert!(parse_pace("fast").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_chunk("0").is_err());
        assert_eq!(parse_chunk("1048576"), Ok(1 << 20));
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let l = LatencyMs::of(&mut samples);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(LatencyMs::of(&mut []).max, 0.0);
    }
}
