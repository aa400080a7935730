//! The sender worker (`bench sender-worker`): makes each frame (synthetic pixels, or with
//! `--gpu` the live shader rendered and read back), publishes it at the benchmark's pace
//! on a real sender node, follows the viewers' acknowledgements and prints its report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::frame::{Frame, FrameGeometry, FramePool};
use crate::gpu::{check_texture_size, texture_2d, Gpu, LiveMode, LiveShader, Readback};
use crate::net::{now_us, Event, Node, NodeConfig, PeerId};
use crate::protocol::Role;

use super::args::{SenderWorkerArgs, Stop};
use super::content::Content;
use super::process::{cpu_secs, peak_rss_mib};
use super::report::{print_json_line, SenderPeer, SenderReport, SenderStages};
use super::SLOW_VIEWER_NAME;

/// The sender gives up when the viewers make no progress for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A synthetic picture: a cheap pattern that is not all one value.
pub(super) fn synthetic_pixels(len: usize) -> Vec<u8> {
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
pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where the sender's frames come from.
enum Producer {
    /// Each frame's picture (`--content`), copied (and hashed) into a frame buffer.
    Cpu(Box<Content>),
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
            Producer::Cpu(content) => {
                let picture = content.picture(seq);
                let copy_start = Instant::now();
                let frame = Frame::copied(geometry, seq, now_us(), picture, pool);
                Ok((frame, copy_start.elapsed()))
            }
            Producer::Gpu(gpu) => gpu.render(seq, pool),
        }
    }
}

/// The readback ring's size, as in the sender window's capture thread.
const READBACK_RING: usize = 3;
/// Longest wait for the oldest readback when every buffer is in flight.
const RING_FULL_WAIT: Duration = Duration::from_millis(100);

/// The sender's GPU side with `--gpu`, as the sender window's capture thread does it:
/// the live shader's pattern rendered into its target, `copy_texture_to_buffer` into the
/// readback ring's free staging buffer, mapped, then `Frame::copied` out of it. With
/// `--fps max` the ring is kept full: frame n is rendered and copied while the ones
/// before it map, and only with every buffer in flight does it wait, for the oldest
/// one's own submission.
struct GpuProducer {
    gpu: Gpu,
    live: LiveShader,
    /// The live shader's source: its pattern ignores it, but the bind group needs one.
    _source: (wgpu::Texture, wgpu::TextureView),
    readback: Readback,
    /// Readbacks kept in flight: the whole ring with `--fps max`, else the frame due.
    depth: usize,
    /// Frames rendered so far; a frame taken from the ring is renumbered with the
    /// benchmark's own sequence.
    rendered: u64,
    started: Instant,
    stages: SenderStages,
}

impl GpuProducer {
    fn new(width: u32, height: u32, ahead: bool) -> anyhow::Result<GpuProducer> {
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
            readback: Readback::new(READBACK_RING),
            depth: if ahead { READBACK_RING } else { 1 },
            rendered: 0,
            started: Instant::now(),
            stages,
        })
    }

    /// Renders the next frame into a free staging buffer and submits it; its capture
    /// time is the render's start.
    fn submit(&mut self) -> anyhow::Result<()> {
        let (device, queue) = (&self.gpu.device, &self.gpu.queue);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("texstream bench render"),
        });
        let time_secs = self.started.elapsed().as_secs_f32();
        self.live
            .render(queue, &mut encoder, time_secs, LiveMode::Pattern);
        let copied = self.readback.copy(
            device,
            &mut encoder,
            self.live.target(),
            self.rendered,
            now_us(),
        )?;
        let submission = queue.submit([encoder.finish()]);
        self.readback.submitted_as(submission);
        // Only called with a buffer free.
        if !copied {
            bail!("no staging buffer was free for frame {}", self.rendered);
        }
        self.rendered += 1;
        self.stages
            .readbacks
            .record(self.readback.in_flight() as u64);
        Ok(())
    }

    /// Frame `seq`: the ring topped up, then the oldest finished readback (taken in
    /// order, so every frame rendered is published but the last few), waiting (for the
    /// oldest one's submission, bounded) only while none has finished.
    fn render(&mut self, seq: u64, pool: &FramePool) -> anyhow::Result<(Frame, Duration)> {
        while self.readback.in_flight() < self.depth {
            self.submit()?;
        }
        loop {
            self.gpu
                .device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| anyhow::anyhow!("polling the GPU failed: {e}"))?;
            let taking_us = now_us();
            let taking = Instant::now();
            if let Some(frame) = self.readback.take_oldest(pool)? {
                let copy = taking.elapsed();
                let meta = frame.meta();
                self.stages
                    .render_readback_us
                    .push(taking_us.saturating_sub(meta.capture_us));
                self.stages.copy_hash_us.push(micros(copy));
                return Ok((frame.with_seq(seq, meta.capture_us), copy));
            }
            if self.readback.in_flight() == 0 {
                bail!("the readback of frame {seq} finished without a frame");
            }
            self.readback
                .wait_oldest(&self.gpu.device, RING_FULL_WAIT)?;
        }
    }
}

/// "llvmpipe (LLVM 19.1.7, 256 bits), Vulkan": the adapter a `--gpu` run used.
pub(super) fn adapter_name(gpu: &Gpu) -> String {
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
pub(super) const UNACKNOWLEDGED_MAX: u64 = 3;

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

pub(super) fn run_sender(args: &SenderWorkerArgs) -> anyhow::Result<()> {
    let params = &args.params;
    let geometry = params.geometry();
    // The GPU first, so that a machine without one fails before any viewer starts.
    let mut producer = if params.gpu {
        Producer::Gpu(Box::new(GpuProducer::new(
            params.width,
            params.height,
            params.fps.fps().is_none(),
        )?))
    } else {
        Producer::Cpu(Box::new(Content::new(
            &params.content,
            params.width,
            params.height,
            params.pan,
        )?))
    };
    let mut config = NodeConfig::new(Role::Sender);
    config.name = "bench sender".to_owned();
    config.listen = Some(params.listen.clone());
    config.codec = params.codec;
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
            codec: p.codec_now(),
            frames_coded: p.frames_coded,
            frames_coded_shared: p.frames_coded_shared,
            frame_bytes_raw: p.frame_bytes_raw,
            frame_bytes_wire: p.frame_bytes_wire,
            coding_us: p.coding_us,
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
