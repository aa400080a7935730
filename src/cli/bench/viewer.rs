//! The viewer worker (`bench viewer-worker`): a real viewer node that acknowledges every
//! frame (with `--gpu`, once it is uploaded into one persistent texture) and prints its
//! report; and the slow viewer, a bare connection the parent reads slowly on a thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::frame::Frame;
use crate::gpu::{Gpu, UploadTexture};
use crate::net::{now_us, Event, Node, NodeConfig};
use crate::protocol::{encode, encode_preamble, Capabilities, Hello, Message, Ping, Role};

use super::args::{bench_tls, ViewerWorkerArgs};
use super::process::{cpu_secs, peak_rss_mib};
use super::report::{print_json_line, ViewerReport, ViewerStages};
use super::sender::{adapter_name, micros, UNACKNOWLEDGED_MAX};
use super::SLOW_VIEWER_NAME;

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

pub(super) fn run_viewer(args: &ViewerWorkerArgs) -> anyhow::Result<()> {
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

pub(super) fn slow_viewer(addr: SocketAddr, stop: &AtomicBool) -> anyhow::Result<u64> {
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
