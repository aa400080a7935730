//! `texstream record`: the headless viewer. Saves received frames losslessly (PNG for
//! 8-bit formats, `.npy` for float ones; [`crate::export`]), text
//! to `chat.log` and received files into its folder, and ends with a one-line JSON
//! summary on standard output.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::{forward_stdin_lines, print_peers, ControlSignal, LinkArgs, Signals};
use crate::frame::Frame;
use crate::net::{Event, Node};
use crate::protocol::{Escaped, Role};

#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// Folder for the frames (frame-NNNNNN.png, or .npy for float formats), chat.log and
    /// received files (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Stop after saving this many frames.
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<f64>,
    /// Save only the frames that arrive while the frame writer is idle, skipping the rest
    /// (default: every frame, which limits the rate to what PNG encoding keeps up with).
    #[arg(long)]
    pub skip_while_busy: bool,
}

/// The summary printed at the end, one JSON object on one line.
#[derive(serde::Serialize, Debug, Default)]
pub struct RecordSummary {
    pub frames_received: u64,
    pub frames_saved: u64,
    pub frames_skipped: u64,
    pub frames_dropped: u64,
    pub bytes_received: u64,
    pub checksum_failures: u64,
    pub protocol_errors: u64,
    pub reconnects: u64,
    pub texts: u64,
    pub files_received: u64,
    pub files_failed: u64,
    pub save_errors: u64,
    pub elapsed_secs: f64,
    /// Peak resident memory of this process.
    pub peak_rss_mib: f64,
}

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let signals = Signals::install()?;
    let mut config = args.link.node_config(Role::Viewer, false)?;
    config.files_dir = Some(args.out.clone());
    let node = Node::start(config)?;
    if let Some(addr) = node.local_addr() {
        println!("listening on {addr}");
    }
    // Through a buffer, flushed once per batch of events: a text is formatted piece by
    // piece, and a flood of them must cost one write, not one per piece.
    let mut chat = BufWriter::with_capacity(
        64 << 10,
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(args.out.join("chat.log"))
            .with_context(|| format!("cannot open {}", args.out.join("chat.log").display()))?,
    );

    // Encoding (PNG) is slow next to the network: it runs on its own thread, fed through
    // a bounded queue.
    let (save_tx, save_rx) = flume::bounded::<(u64, Frame)>(2);
    let save_errors = Arc::new(AtomicU64::new(0));
    let writer = {
        let out = args.out.clone();
        let save_errors = save_errors.clone();
        std::thread::Builder::new()
            .name("texstream save".into())
            .spawn(move || {
                for (n, frame) in save_rx {
                    if let Err(e) = save_frame(&out, n, &frame) {
                        save_errors.fetch_add(1, Relaxed);
                        tracing::error!("{}", super::error_chain(&e));
                    }
                }
            })?
    };

    let (chat_tx, chat_rx) = flume::bounded(64);
    forward_stdin_lines(chat_tx);
    let start = Instant::now();
    let stop_at = args
        .seconds
        .map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let mut summary = RecordSummary::default();
    let mut shown = super::serve::EventLog::default();
    loop {
        if args.frames.is_some_and(|n| summary.frames_saved >= n) {
            break;
        }
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        match node.frames().recv_timeout(Duration::from_millis(20)) {
            Ok(frame) => {
                let n = summary.frames_saved + 1;
                let queued = if args.skip_while_busy {
                    save_tx.try_send((n, frame)).is_ok()
                } else {
                    save_tx.send((n, frame)).is_ok()
                };
                if queued {
                    summary.frames_saved = n;
                } else {
                    summary.frames_skipped += 1;
                }
            }
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
        while let Ok(text) = chat_rx.try_recv() {
            node.send_text(&text);
        }
        for event in super::events_this_turn(node.events()) {
            match &event {
                Event::Text { text, .. } => {
                    summary.texts += 1;
                    writeln!(
                        chat,
                        "{} [{}] {}",
                        text.sent_us,
                        Escaped(&text.from),
                        Escaped(&text.body)
                    )
                    .context("cannot write chat.log")?;
                }
                Event::FileReceived { .. } => summary.files_received += 1,
                Event::FileFailed { .. } => summary.files_failed += 1,
                _ => {}
            }
            shown.log(&event);
        }
        if !chat.buffer().is_empty() {
            chat.flush().context("cannot write chat.log")?;
        }
        match signals.rx.try_recv() {
            Ok(ControlSignal::Stop) => break,
            Ok(ControlSignal::DropPeers) => node.drop_all_peers(),
            Ok(ControlSignal::ListPeers) => print_peers(&node.peers(), node.stream_source()),
            Err(_) => {}
        }
    }
    node.shutdown();
    drop(save_tx);
    let _ = writer.join();

    let stats = node.stats();
    summary.frames_received = stats.frames_received;
    summary.frames_dropped = stats.frames_dropped;
    summary.bytes_received = stats.bytes_received;
    summary.checksum_failures = stats.checksum_failures;
    summary.protocol_errors = stats.protocol_errors;
    summary.reconnects = stats.reconnects;
    summary.save_errors = save_errors.load(Relaxed);
    summary.elapsed_secs = start.elapsed().as_secs_f64();
    summary.peak_rss_mib = super::bench::peak_rss_mib();
    println!("{}", serde_json::to_string(&summary)?);
    if summary.save_errors > 0 {
        anyhow::bail!("{} frames could not be saved", summary.save_errors);
    }
    Ok(())
}

/// Saves `frame` as `frame-NNNNNN.png` (or `.npy` for a float format), byte for byte.
fn save_frame(dir: &Path, n: u64, frame: &Frame) -> anyhow::Result<()> {
    let extension = crate::export::extension(frame.meta().format);
    let path = dir.join(format!("frame-{n:06}.{extension}"));
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    crate::export::write(frame, std::io::BufWriter::new(file), true)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
