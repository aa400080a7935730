//! `texstream serve`: the headless sender. Plays a source at a steady rate and
//! publishes each frame to every viewer; logs peers and chat; obeys the signals.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::{forward_stdin_lines, parse_size, print_peers, ControlSignal, LinkArgs, Signals};
use crate::frame::FramePool;
use crate::net::{now_us, Event, Node};
use crate::protocol::Role;
use crate::source::Source;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// An image file (any format the image crate reads), a folder of images (a
    /// slideshow), an animated GIF/APNG/WebP, or `pattern` (a moving test pattern).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    #[command(flatten)]
    pub link: LinkArgs,
    /// Frames per second to stream.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Size of the test pattern, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Seconds each picture of a folder shows.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub slide_secs: f64,
    /// Payload bytes per frame chunk.
    #[arg(long, value_name = "BYTES", default_value_t = crate::protocol::DEFAULT_CHUNK_BYTES)]
    pub chunk_bytes: usize,
    /// Serve at most this many peers at once; more get a "full" goodbye.
    #[arg(long, value_name = "N")]
    pub max_viewers: Option<usize>,
    /// Take files that peers send into this folder (refused when not given).
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<f64>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !(args.fps.is_finite() && args.fps > 0.0 && args.fps <= 1000.0) {
        anyhow::bail!("--fps must be between 0 and 1000, got {}", args.fps);
    }
    let max_chunk = crate::protocol::Limits::default().max_chunk_bytes as usize;
    if args.chunk_bytes == 0 || args.chunk_bytes > max_chunk {
        anyhow::bail!("--chunk-bytes must be between 1 and {max_chunk}");
    }
    let slide = Duration::from_secs_f64(args.slide_secs.max(0.01));
    let mut source = Source::open(&args.source, args.size, slide)?;
    let signals = Signals::install()?;
    let mut config = args.link.node_config(Role::Sender, true)?;
    config.chunk_bytes = args.chunk_bytes;
    config.max_peers = args.max_viewers;
    config.files_dir = args.files_dir.clone();
    let node = Node::start(config)?;
    if let Some(addr) = node.local_addr() {
        println!("listening on {addr}");
    }
    tracing::info!("serving {} at {} fps", source.describe(), args.fps);

    let (chat_tx, chat_rx) = flume::bounded(64);
    forward_stdin_lines(chat_tx);
    let pool = FramePool::new(4);
    let interval = Duration::from_secs_f64(1.0 / args.fps);
    let start = Instant::now();
    let stop_at = args
        .seconds
        .map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let mut next = start;
    let mut seq = 0u64;
    let mut last_report = start;
    loop {
        let now = Instant::now();
        if stop_at.is_some_and(|t| now >= t) {
            break;
        }
        if now >= next {
            let frame = source.frame_at(now - start, seq, now_us(), &pool);
            node.publish(&frame);
            seq += 1;
            next += interval;
            if next < now {
                // Fell behind (a slow decode): skip ahead instead of bursting.
                next = now + interval;
            }
        }
        while let Ok(text) = chat_rx.try_recv() {
            node.send_text(&text);
        }
        for event in node.events().try_iter() {
            log_event(&event);
        }
        if now.duration_since(last_report) >= Duration::from_secs(10) {
            last_report = now;
            let peers = node.peers();
            tracing::info!("{} frames published, {} peers", seq, peers.len());
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        match signals.rx.recv_timeout(wait) {
            Ok(ControlSignal::Stop) => break,
            Ok(ControlSignal::DropPeers) => {
                tracing::info!("SIGUSR1: dropping all peers");
                node.drop_all_peers();
            }
            Ok(ControlSignal::ListPeers) => print_peers(&node.peers()),
            Err(_) => {}
        }
    }
    tracing::info!("stopping after {seq} frames");
    node.shutdown();
    Ok(())
}

/// Logs what the headless commands show of the network.
pub(super) fn log_event(event: &Event) {
    match event {
        Event::Text { text, .. } => println!("[{}] {}", text.from, text.body.escape_debug()),
        Event::FileReceived {
            name, path, size, ..
        } => {
            tracing::info!("received file {name} ({size} bytes): {}", path.display());
        }
        Event::FileFailed { name, reason, .. } => tracing::warn!("file {name} failed: {reason}"),
        Event::FileSent {
            name, ok, message, ..
        } => {
            tracing::info!(
                "file {name} sent: {}: {message}",
                if *ok { "ok" } else { "failed" }
            );
        }
        Event::PeerConnected { .. }
        | Event::PeerDisconnected { .. }
        | Event::HandshakeFailed { .. } => {}
    }
}
