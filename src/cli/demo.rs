//! The demo that runs with no arguments: a sender streaming the bundled image (or any
//! source) to a viewer over loopback, in one process, printing the viewer's figures
//! once a second.

use std::time::{Duration, Instant};

use clap::Args;

use super::{ControlSignal, Signals};
use crate::frame::FramePool;
use crate::meter::FrameMeter;
use crate::net::{now_us, Node, NodeConfig};
use crate::protocol::Role;
use crate::source::{Frames, Source};

/// The image shipped with texstream, shown by the demo.
pub const BUNDLED_IMAGE: &[u8] = include_bytes!("../../assets/texstream.png");

#[derive(Args, Debug, Default)]
pub struct DemoArgs {
    /// Run without windows: sender and viewer in this process, figures printed once a
    /// second (also what happens when no display is available).
    #[arg(long)]
    pub headless: bool,
    /// With --headless: stream this instead of the bundled image (as `serve SOURCE`).
    #[arg(long)]
    pub source: Option<String>,
    /// With --headless: stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<f64>,
    /// With --headless: frames per second to stream.
    #[arg(long, default_value_t = 60.0)]
    pub fps: f64,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !args.headless {
        if super::windows::display_available() {
            let image = image::load_from_memory(BUNDLED_IMAGE)?.to_rgba8();
            return super::windows::run_demo("texstream.png", image);
        }
        eprintln!(
            "texstream: no display (DISPLAY or WAYLAND_DISPLAY): running the demo in the terminal"
        );
    }
    run_headless(args)
}

fn run_headless(args: DemoArgs) -> anyhow::Result<()> {
    let fps = if args.fps.is_finite() && args.fps > 0.0 {
        args.fps
    } else {
        60.0
    };
    let mut source = Frames::new(match &args.source {
        Some(spec) => Source::open(spec, (1280, 720), Duration::from_secs(3))?,
        None => Source::from_image(image::load_from_memory(BUNDLED_IMAGE)?.to_rgba8()),
    });
    let signals = Signals::install()?;
    let mut sender_config = NodeConfig::new(Role::Sender);
    sender_config.listen = Some("127.0.0.1:0".into());
    let sender = Node::start(sender_config)?;
    let addr = sender
        .local_addr()
        .ok_or_else(|| anyhow::anyhow!("the demo sender has no address"))?;
    let mut viewer_config = NodeConfig::new(Role::Viewer);
    viewer_config.connect = vec![addr.to_string()];
    let viewer = Node::start(viewer_config)?;
    println!(
        "texstream demo: streaming {} from {addr} to a viewer over loopback at {fps} fps (Ctrl-C to stop)",
        source.source().describe()
    );

    let pool = FramePool::new(4);
    let mut meter = FrameMeter::new(Duration::from_secs(1));
    let start = Instant::now();
    let stop_at = args
        .seconds
        .map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let interval = Duration::from_secs_f64(1.0 / fps);
    let (mut next, mut report, mut seq) = (start, start + Duration::from_secs(1), 0u64);
    loop {
        let now = Instant::now();
        if stop_at.is_some_and(|t| now >= t) {
            break;
        }
        if now >= next {
            sender.publish(&source.frame_at(now - start, seq, now_us(), &pool));
            seq += 1;
            next = (next + interval).max(now);
        }
        for frame in viewer.frames().try_iter() {
            let latency_ms = now_us().saturating_sub(frame.meta().capture_us) as f64 / 1e3;
            meter.record(Instant::now(), frame.pixels().len(), latency_ms);
        }
        if now >= report {
            report += Duration::from_secs(1);
            let r = meter.rates(now);
            let stats = viewer.stats();
            let state = viewer
                .peers()
                .first()
                .map_or_else(|| "no sender".to_owned(), |p| p.state.to_string());
            println!(
                "viewer: {:5.1} fps  {:8.1} Mb/s  latency p50 {:.2} ms max {:.2} ms  dropped {}  {}",
                r.fps, r.megabits_per_sec, r.latency_p50_ms, r.latency_max_ms, stats.frames_dropped, state
            );
        }
        let wait = next.min(report).saturating_duration_since(Instant::now());
        if let Ok(ControlSignal::Stop) = signals.rx.recv_timeout(wait.min(Duration::from_millis(5)))
        {
            break;
        }
    }
    viewer.shutdown();
    sender.shutdown();
    Ok(())
}
