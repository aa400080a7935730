//! What the benchmark reports: the JSON line each worker prints when it is done
//! ([`SenderReport`], [`ViewerReport`]), and what the parent makes of them: the
//! percentiles ([`LatencyMs`]), the combined [`BenchReport`] printed as one JSON object
//! or as the table, and the `--gpu` stage table.

use std::io::Write;

use super::args::{BenchParams, Stop};
use super::SLOW_VIEWER_NAME;

// ---------------------------------------------------------------------------------
// What the workers report (one JSON line each on standard output).

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub(super) struct SenderReport {
    pub(super) frames_published: u64,
    /// First publish → last acknowledgement from every honest viewer.
    pub(super) elapsed_secs: f64,
    /// Time spent in `Frame::copied` (copy from the source buffer and XXH3).
    pub(super) copy_secs: f64,
    pub(super) cpu_secs: f64,
    pub(super) peak_rss_mib: f64,
    /// Whether every honest viewer acknowledged the last frame before the sender gave up.
    pub(super) all_acknowledged: bool,
    pub(super) peers: Vec<SenderPeer>,
    /// Wall clock (µs since the epoch) just before frame `seq` was published, by seq.
    pub(super) publish_us: Vec<u64>,
    /// With `--gpu`: the sender's stage times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) gpu: Option<SenderStages>,
}

/// The sender's per-frame stage times with `--gpu`, in microseconds.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
pub(super) struct SenderStages {
    /// The adapter, as wgpu names it, and its backend.
    pub(super) adapter: String,
    /// Each published frame: render start → taken out of the ring (found mapped by a
    /// poll; with `--fps max`, after the frames rendered before it).
    pub(super) render_readback_us: Vec<u64>,
    /// Each rendered frame: `Frame::copied` out of the mapped buffer (copy and XXH3).
    pub(super) copy_hash_us: Vec<u64>,
    /// Each published frame: copied → published (with `--fps max`, the wait for the
    /// viewers' links to take the frame before it).
    pub(super) queue_us: Vec<u64>,
    /// Readbacks in flight as each frame was submitted, itself included.
    #[serde(default)]
    pub(super) readbacks: InFlightCount,
}

/// Readbacks in flight (submitted, not yet taken out of the ring), counted as each frame
/// is submitted, that frame included: 1 every time when each frame is waited for before
/// the next is rendered.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, Default)]
pub(super) struct InFlightCount {
    pub(super) submitted: u64,
    /// The sum over the submissions, for the mean.
    pub(super) sum: u64,
    pub(super) peak: u64,
}

impl InFlightCount {
    pub(super) fn record(&mut self, in_flight: u64) {
        self.submitted += 1;
        self.sum += in_flight;
        self.peak = self.peak.max(in_flight);
    }

    fn figures(&self) -> InFlightFigures {
        InFlightFigures {
            peak: self.peak,
            mean: self.sum as f64 / self.submitted.max(1) as f64,
            frames_rendered: self.submitted,
        }
    }
}

/// `--gpu`: the sender's readbacks in flight, as each frame was submitted (that frame
/// included): the most, and the mean. More than one: frame n was rendered and copied
/// while earlier ones were still mapping.
#[derive(serde::Serialize, Debug, Clone, Copy)]
struct InFlightFigures {
    peak: u64,
    mean: f64,
    /// Frames rendered; with `--fps max` up to the ring's size more than published, the
    /// ring being kept full to the end.
    frames_rendered: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub(super) struct SenderPeer {
    pub(super) name: String,
    pub(super) frames_sent: u64,
    pub(super) frames_skipped: u64,
    pub(super) bytes_sent: u64,
    /// The link's codec (with `auto`, what it chose at the end).
    pub(super) codec: String,
    pub(super) frames_coded: u64,
    /// Of those, codings another link made (the frame coded once for both).
    #[serde(default)]
    pub(super) frames_coded_shared: u64,
    /// The frames' pixel bytes, and what they took on the wire.
    pub(super) frame_bytes_raw: u64,
    pub(super) frame_bytes_wire: u64,
    pub(super) coding_us: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub(super) struct ViewerReport {
    pub(super) name: String,
    pub(super) frames_received: u64,
    /// Frames the node replaced before this process took them.
    pub(super) frames_dropped: u64,
    pub(super) checksum_failures: u64,
    pub(super) protocol_errors: u64,
    pub(super) bytes_payload: u64,
    /// Wall clock (µs since the epoch): the first frame's capture, the last frame's arrival.
    pub(super) first_capture_us: u64,
    pub(super) last_receive_us: u64,
    /// Capture → verified frame handed to us, one per frame, in microseconds.
    pub(super) latencies_us: Vec<u64>,
    /// Each frame received: its number, and the wall clock (µs since the epoch) when the
    /// verified frame was handed to us; in parallel.
    pub(super) seq: Vec<u64>,
    pub(super) delivered_us: Vec<u64>,
    pub(super) cpu_secs: f64,
    pub(super) peak_rss_mib: f64,
    /// With `--gpu`: the viewer's stage times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) gpu: Option<ViewerStages>,
}

/// One viewer's per-frame stage times with `--gpu`; the vectors run in parallel, one
/// entry per frame received.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
pub(super) struct ViewerStages {
    pub(super) adapter: String,
    /// `write_texture`, a submit and the wait until the GPU finished, in µs.
    pub(super) upload_us: Vec<u64>,
    /// Capture (the sender's render start) → upload done, in µs.
    pub(super) end_to_end_us: Vec<u64>,
    /// XXH3 over one received frame's pixels, timed apart after the run (the reader's
    /// verification cannot be timed apart from the wire without changing `net/`).
    pub(super) verify_estimate_us: Vec<u64>,
}

pub(super) fn print_json_line(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// What the parent makes of them: the figures, the table, the JSON object.

/// Latency percentiles, in milliseconds.
#[derive(serde::Serialize, Debug, Clone, Copy, Default)]
pub(super) struct LatencyMs {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

impl LatencyMs {
    pub(super) fn of(samples_us: &mut [u64]) -> LatencyMs {
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
    /// Sender: render start → the frame taken out of the readback ring (the live
    /// shader's pass, `copy_texture_to_buffer`, submit, `map_async`, the wait for the
    /// GPU; with `--fps max`, also the frames rendered before it in the ring).
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
pub(super) struct BenchReport {
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
    /// With `--gpu`: the sender's readbacks in flight (peak and mean, as each frame was
    /// submitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    readbacks_in_flight: Option<InFlightFigures>,
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
    pub(super) checksum_failures: u64,
    pub(super) protocol_errors: u64,
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
    /// What the frames showed (`--content`).
    content: String,
    /// How the sender coded them (`--codec`).
    codec: String,
    /// How the honest viewers' links coded them, summed: frames coded, the frames'
    /// bytes on the wire against their raw bytes, and the time spent coding.
    coding: CodingFigures,
    sender: SideFigures,
    /// Time in the sender's `Frame::copied` (source → frame buffer, hashed).
    sender_copy_secs: f64,
    viewer: SideFigures,
    per_viewer: Vec<ViewerFigures>,
    slow: Option<SlowFigures>,
}

/// What coding did on the honest viewers' links, summed over them.
#[derive(serde::Serialize, Debug, Default)]
struct CodingFigures {
    /// Each link's codec at the end (with `auto`: `auto(tiles)` or `auto(raw)`).
    links: Vec<String>,
    frames_coded: u64,
    /// Of those, codings another link made: each frame coded once for the links that
    /// hold the same base.
    frames_coded_shared: u64,
    frames_sent: u64,
    /// Frame bytes on the wire against their raw bytes.
    wire_share: f64,
    /// Mean time to code one frame, in milliseconds.
    coding_ms_per_frame: f64,
}

impl CodingFigures {
    fn of<'a>(peers: impl Iterator<Item = &'a SenderPeer>) -> CodingFigures {
        let mut f = CodingFigures::default();
        let (mut raw, mut wire, mut us) = (0u64, 0u64, 0u64);
        for p in peers {
            f.links.push(p.codec.clone());
            f.frames_coded += p.frames_coded;
            f.frames_coded_shared += p.frames_coded_shared;
            f.frames_sent += p.frames_sent;
            raw += p.frame_bytes_raw;
            wire += p.frame_bytes_wire;
            us += p.coding_us;
        }
        f.wire_share = wire as f64 / raw.max(1) as f64;
        f.coding_ms_per_frame = us as f64 / 1e3 / f.frames_coded.max(1) as f64;
        f
    }
}

pub(super) fn combine(
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
        readbacks_in_flight: sender.gpu.as_ref().map(|g| g.readbacks.figures()),
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
        content: params.content.to_arg(),
        codec: params.codec.name().to_owned(),
        coding: CodingFigures::of(
            sender
                .peers
                .iter()
                .filter(|p| p.name.starts_with(super::VIEWER_NAME)),
        ),
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

pub(super) fn print_table(r: &BenchReport) {
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
    let c = &r.coding;
    println!(
        "content {}, codec {}: {} of {} frames coded, {:.1} % of raw on the wire{} (Gb/s below: pixels delivered)",
        r.content,
        c.links.join(", "),
        c.frames_coded,
        c.frames_sent,
        c.wire_share * 100.0,
        if c.frames_coded > 0 {
            format!(", {:.2} ms to code a frame", c.coding_ms_per_frame)
        } else {
            String::new()
        },
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
    if let Some(f) = &r.readbacks_in_flight {
        println!(
            "readbacks in flight at the sender, as each frame was submitted: peak {}, mean {:.2} ({} frames rendered)",
            f.peak, f.mean, f.frames_rendered
        );
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
        "sender: render start → taken out of the readback ring",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let l = LatencyMs::of(&mut samples);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(LatencyMs::of(&mut []).max, 0.0);
    }
}
