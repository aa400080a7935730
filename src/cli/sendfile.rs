//! `texstream send-file`: sends files to a peer from a script or a terminal, with a
//! progress bar, and exits 0 only once the receiver has confirmed every checksum.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::{exit, ControlSignal, LinkArgs, Signals};
use crate::app::text::human_bytes;
use crate::net::{Event, Node, TransferId, TransferState, TransferStatus};
use crate::protocol::{Escaped, Role};

#[derive(Args, Debug)]
pub struct SendFileArgs {
    /// The files to send, one after the other.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub link: LinkArgs,
    /// Give up when no peer that takes files is connected within this many seconds.
    /// Once a transfer runs, a dropped connection is waited for (the transfer resumes).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout_secs: f64,
    /// Print one JSON object with the outcome instead of the human lines.
    #[arg(long)]
    pub json: bool,
}

/// The outcome of one file.
#[derive(serde::Serialize, Debug)]
struct FileReport {
    file: String,
    size: u64,
    ok: bool,
    message: String,
    resumes: u32,
}

#[derive(serde::Serialize, Debug)]
struct Summary {
    files: Vec<FileReport>,
    bytes: u64,
    elapsed_secs: f64,
    megabytes_per_sec: f64,
    peak_rss_mib: f64,
}

/// Why `send-file` failed, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum SendFileError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Transfer(String),
    #[error("cannot send {path}: {reason}")]
    Source { path: String, reason: String },
}

impl SendFileError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SendFileError::Unreachable(_) => exit::UNREACHABLE,
            SendFileError::Transfer(_) => exit::TRANSFER,
            SendFileError::Source { .. } => exit::SOURCE,
        }
    }
}

pub fn run(args: SendFileArgs) -> anyhow::Result<()> {
    if !(args.timeout_secs.is_finite() && args.timeout_secs > 0.0) {
        anyhow::bail!("--timeout-secs must be a positive number of seconds");
    }
    // Every file is checked before anything is sent.
    for path in &args.files {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(SendFileError::Source {
                    path: path.display().to_string(),
                    reason: "not a regular file".to_owned(),
                }
                .into())
            }
            Err(e) => {
                return Err(SendFileError::Source {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
                .into())
            }
        }
    }
    let signals = Signals::install()?;
    let config = args.link.node_config(Role::FileClient, false)?;
    let target = config
        .connect
        .first()
        .cloned()
        .or_else(|| config.listen.clone())
        .unwrap_or_default();
    let node = Node::start(config)?;
    if let Some(addr) = node.local_addr() {
        println!("listening on {addr}");
    }
    let start = Instant::now();
    let mut progress = Progress::new(args.json);
    let mut reports = Vec::new();
    let mut bytes = 0;
    for (i, path) in args.files.iter().enumerate() {
        let label = format!("[{}/{}] {}", i + 1, args.files.len(), path.display());
        let id = offer_when_connected(&node, path, &target, args.timeout_secs, &signals)?;
        let status = follow(&node, id, &label, &mut progress, &signals)?;
        progress.finish(&label, &status);
        let (ok, message) = match &status.state {
            TransferState::Done { message } => (true, message.clone()),
            TransferState::Failed { reason } => (false, reason.clone()),
            other => (false, format!("{other:?}")),
        };
        if ok {
            bytes += status.size;
        }
        reports.push(FileReport {
            file: path.display().to_string(),
            size: status.size,
            ok,
            message,
            resumes: status.resumes,
        });
    }
    node.shutdown();
    let elapsed_secs = start.elapsed().as_secs_f64();
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.file, r.message))
        .collect();
    if args.json {
        let summary = Summary {
            megabytes_per_sec: bytes as f64 / 1e6 / elapsed_secs.max(1e-9),
            files: reports,
            bytes,
            elapsed_secs,
            peak_rss_mib: super::bench::peak_rss_mib(),
        };
        println!("{}", serde_json::to_string(&summary)?);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(SendFileError::Transfer(format!(
            "{} of {} file(s) not delivered: {}",
            failed.len(),
            args.files.len(),
            failed.join("; ")
        ))
        .into())
    }
}

/// Waits for a peer that takes files and offers it the file; returns the transfer.
fn offer_when_connected(
    node: &Node,
    path: &std::path::Path,
    target: &str,
    timeout_secs: f64,
    signals: &Signals,
) -> anyhow::Result<TransferId> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_secs);
    let mut refused_files = None;
    loop {
        let connected = node
            .peers()
            .iter()
            .any(|p| p.state == crate::net::PeerState::Connected);
        if connected {
            let ids = node
                .offer_file(path, None)
                .map_err(|e| SendFileError::Source {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            if let Some(id) = ids.first() {
                return Ok(*id);
            }
            refused_files = Some(
                "the peer does not take files (a viewer window, record, serve --files-dir or \
                 relay does)",
            );
        }
        if Instant::now() >= deadline {
            let why = refused_files.map(str::to_owned).unwrap_or_else(|| {
                let last = node
                    .peers()
                    .iter()
                    .find_map(|p| p.last_error.clone())
                    .unwrap_or_else(|| "no peer connected".to_owned());
                format!("no peer at {target} within {timeout_secs} s: {last}")
            });
            return Err(SendFileError::Unreachable(why).into());
        }
        for event in node.events().try_iter() {
            // The node logs it already (rate-limited where a peer can cause it).
            if let Event::HandshakeFailed { addr, reason } = event {
                tracing::debug!("handshake with {addr} failed: {reason}");
            }
        }
        if let Ok(ControlSignal::Stop) = signals.rx.recv_timeout(Duration::from_millis(20)) {
            anyhow::bail!("interrupted before sending");
        }
    }
}

/// Shows a transfer's progress until it finishes; returns its final status.
fn follow(
    node: &Node,
    id: TransferId,
    label: &str,
    progress: &mut Progress,
    signals: &Signals,
) -> anyhow::Result<TransferStatus> {
    loop {
        let Some(status) = node.transfers().into_iter().find(|t| t.id == id) else {
            anyhow::bail!("the transfer of {label} vanished");
        };
        if status.state.finished() {
            return Ok(status);
        }
        progress.show(label, &status);
        for event in node.events().try_iter() {
            if let Event::PeerDisconnected { reason, .. } = event {
                tracing::info!("connection lost ({reason}); the transfer resumes on reconnect");
            }
        }
        match signals.rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ControlSignal::Stop) => {
                node.cancel_transfer(id);
                progress.clear();
                anyhow::bail!("interrupted: the transfer of {label} was cancelled");
            }
            Ok(ControlSignal::ListPeers) => super::print_peers(&node.peers(), node.stream_source()),
            Ok(ControlSignal::DropPeers) | Err(_) => {}
        }
    }
}

/// The terminal progress bar (on standard error, only when it is a terminal).
struct Progress {
    enabled: bool,
    quiet: bool,
    shown: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
            quiet,
            shown: false,
        }
    }

    fn show(&mut self, label: &str, t: &TransferStatus) {
        if !self.enabled {
            return;
        }
        let line = progress_line(label, t);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }

    fn finish(&mut self, label: &str, t: &TransferStatus) {
        self.clear();
        if self.quiet {
            return;
        }
        match &t.state {
            TransferState::Done { message } => {
                println!(
                    "{label}: {} sent, {}",
                    human_bytes(t.size),
                    Escaped(message)
                );
            }
            TransferState::Failed { reason } => eprintln!("{label}: failed: {}", Escaped(reason)),
            _ => {}
        }
    }
}

/// `name  [#########.........]  45%  135.0 MB of 300.0 MB  850.2 MB/s  0:03 left`
fn progress_line(label: &str, t: &TransferStatus) -> String {
    const WIDTH: usize = 24;
    let filled = (t.fraction() * WIDTH as f32).round() as usize;
    let bar: String = "#".repeat(filled.min(WIDTH)) + &".".repeat(WIDTH - filled.min(WIDTH));
    let what = match &t.state {
        TransferState::Waiting => "waiting for the receiver".to_owned(),
        TransferState::Paused { .. } => "connection lost, waiting to resume".to_owned(),
        TransferState::Running if t.done_bytes == t.size => {
            "sent, the receiver is verifying".to_owned()
        }
        _ => {
            let left = t.time_left.map_or_else(String::new, |d| {
                let secs = d.as_secs();
                format!("  {}:{:02} left", secs / 60, secs % 60)
            });
            format!("{:.1} MB/s{left}", t.bytes_per_sec / 1e6)
        }
    };
    format!(
        "{label}  [{bar}] {:3.0}%  {} of {}  {what}",
        t.fraction() * 100.0,
        human_bytes(t.done_bytes),
        human_bytes(t.size)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Direction, PeerId};

    #[test]
    fn the_progress_line_shows_bar_sizes_speed_and_time_left() {
        let t = TransferStatus {
            id: TransferId(1),
            direction: Direction::Outgoing,
            peer: PeerId(1),
            peer_name: "viewer".into(),
            name: "big.bin".into(),
            size: 300_000_000,
            done_bytes: 150_000_000,
            bytes_per_sec: 50e6,
            time_left: Some(Duration::from_secs(3)),
            state: TransferState::Running,
            path: None,
            resumes: 0,
        };
        let line = progress_line("[1/1] big.bin", &t);
        assert_eq!(
            line,
            "[1/1] big.bin  [############............]  50%  150.0 MB of 300.0 MB  50.0 MB/s  0:03 left"
        );
        let paused = TransferStatus {
            state: TransferState::Paused { reason: "x".into() },
            ..t
        };
        assert!(progress_line("f", &paused).contains("waiting to resume"));
    }
}
