//! `texstream relay`: joins one or more endpoints and serves the same stream, text and
//! files to its own peers. Frames are forwarded by the node as received (the same
//! buffer, seq and capture time); files are stored and then passed on; the loop here
//! forwards files, logs per-peer figures and obeys the signals.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::serve::{report_interval, EventLog, PeerReport};
use super::windows::default_files_dir;
use super::{print_peers, ControlSignal, LinkArgs, Signals};
use crate::net::{now_us, Event, Node};
use crate::protocol::{Escaped, Role};

#[derive(Args, Debug)]
#[command(mut_arg("connect", |a| a
    .required_unless_present("source_name")
    .help("Join this sender or relay (HOST:PORT or PORT): a relay must join something \
           (this or --source). Repeat to bridge several endpoints. Reconnects by itself.")))]
pub struct RelayArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// Serve at most this many peers that dial in; more get a "full" goodbye.
    #[arg(long, value_name = "N")]
    pub max_viewers: Option<usize>,
    /// Where files from peers are stored before they are passed on to the other peers
    /// [default: ~/Downloads/texstream].
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<f64>,
    /// Log per-peer figures (frames, skips, Mb/s, round-trip time, latency) this often.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub report_secs: f64,
    /// Do not announce this relay on the LAN (mDNS); it is still reached by address.
    #[arg(long)]
    pub no_announce: bool,
}

pub fn run(args: RelayArgs) -> anyhow::Result<()> {
    let report_every = report_interval(args.report_secs)?;
    if args.link.connect.is_empty() && args.link.source.is_empty() {
        // clap requires --connect or --source; this guards the library's callers.
        anyhow::bail!("a relay must join something: give --connect ADDR or --source NAME");
    }
    let signals = Signals::install()?;
    let mut config = args.link.node_config(Role::Relay, false)?;
    config.max_peers = args.max_viewers;
    let files_dir = args.files_dir.clone().unwrap_or_else(default_files_dir);
    config.files_dir = Some(files_dir.clone());
    // The node forwards frames itself; we only look at the newest for the latency.
    config.frame_queue = 1;
    let node = Node::start(config)?;
    let _announced = (!args.no_announce)
        .then(|| super::announce(&node, &args.link, None, None))
        .flatten();
    if let Some(addr) = node.local_addr() {
        println!("listening on {addr}");
    }
    tracing::info!(
        "relaying from {} (files stored in {})",
        node.config()
            .connect
            .iter()
            .chain(&node.config().sources)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" and "),
        files_dir.display()
    );

    let start = Instant::now();
    let stop_at = args
        .seconds
        .map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let mut last_report = start;
    let mut report = PeerReport::new(start);
    let mut latency = Latency::default();
    let mut events = EventLog::default();
    loop {
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        match node.frames().recv_timeout(Duration::from_millis(50)) {
            Ok(frame) => latency.add(now_us().saturating_sub(frame.meta().capture_us)),
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
        for event in super::events_this_turn(node.events()) {
            if let Event::FileReceived {
                peer, name, path, ..
            } = &event
            {
                // Store and forward: the file is whole and verified on disk; offer it
                // to everyone but the peer it came from.
                match node.send_file_except(path, Some(*peer)) {
                    Ok(n) => tracing::info!("passing {} on to {n} peer(s)", Escaped(name)),
                    Err(e) => tracing::warn!("cannot pass {} on: {e}", Escaped(name)),
                }
            }
            events.log(&event);
        }
        let now = Instant::now();
        let mut list = false;
        match signals.rx.try_recv() {
            Ok(ControlSignal::Stop) => break,
            Ok(ControlSignal::DropPeers) => {
                tracing::info!("SIGUSR1: dropping all peers");
                node.drop_all_peers();
            }
            Ok(ControlSignal::ListPeers) => list = true,
            Err(_) => {}
        }
        if list || now.duration_since(last_report) >= report_every {
            last_report = now;
            let peers = node.peers();
            if list {
                print_peers(&peers, node.stream_source());
            }
            let stats = node.stats();
            tracing::info!(
                "{} frames received and passed on in all, {} reconnects; {}",
                stats.frames_received,
                stats.reconnects,
                latency.take()
            );
            report.log(&peers, now);
        }
    }
    tracing::info!("stopping");
    node.shutdown();
    Ok(())
}

/// Capture-to-here latency of the frames the relay looked at since the last report.
#[derive(Default, Debug)]
struct Latency {
    count: u64,
    sum_us: u64,
    max_us: u64,
}

impl Latency {
    fn add(&mut self, us: u64) {
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Describes the interval's figures and starts the next one.
    fn take(&mut self) -> String {
        let l = std::mem::take(self);
        if l.count == 0 {
            return "no frames since the last report".to_owned();
        }
        format!(
            "latency from capture: mean {:.1} ms, max {:.1} ms over {} frames",
            l.sum_us as f64 / l.count as f64 / 1e3,
            l.max_us as f64 / 1e3,
            l.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summarises_and_resets() {
        let mut l = Latency::default();
        assert_eq!(l.take(), "no frames since the last report");
        l.add(1_000);
        l.add(3_000);
        assert_eq!(
            l.take(),
            "latency from capture: mean 2.0 ms, max 3.0 ms over 2 frames"
        );
        assert_eq!(l.take(), "no frames since the last report");
    }
}
