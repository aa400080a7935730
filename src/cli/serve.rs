//! `texstream serve`: the headless sender. Plays a source at a steady rate and
//! publishes each frame to every viewer; logs peers, per-viewer figures and chat; obeys
//! the signals. Also home to what the headless commands share: [`EventLog`] and
//! [`PeerReport`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::{forward_stdin_lines, parse_size, print_peers, ControlSignal, LinkArgs, Signals};
use crate::frame::FramePool;
use crate::net::{
    held_back_note, now_us, Event, Node, PeerId, PeerStatus, Severity, Verdict, WarnLimiter,
};
use crate::protocol::{Escaped, Role};
use crate::source::{Frames, Source};

#[derive(Args, Debug)]
// A sender dials viewers by address; --source (a source by name) and --follow (which
// stream to show) are for the viewing side.
#[command(mut_arg("source_name", |a| a.hide(true)), mut_arg("follow", |a| a.hide(true)))]
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
    /// Take files that peers send into this folder (default: ~/Downloads/texstream).
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub seconds: Option<f64>,
    /// Log per-viewer figures (frames, skips, Mb/s, round-trip time) this often.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub report_secs: f64,
    /// Do not announce this source on the LAN (mDNS); it is still reached by address.
    #[arg(long)]
    pub no_announce: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !(args.fps.is_finite() && args.fps > 0.0 && args.fps <= 1000.0) {
        anyhow::bail!("--fps must be between 0 and 1000, got {}", args.fps);
    }
    let max_chunk = crate::protocol::Limits::default().max_chunk_bytes as usize;
    if args.chunk_bytes == 0 || args.chunk_bytes > max_chunk {
        anyhow::bail!("--chunk-bytes must be between 1 and {max_chunk}");
    }
    let report_every = report_interval(args.report_secs)?;
    let slide = Duration::from_secs_f64(args.slide_secs.max(0.01));
    let mut source = Frames::new(Source::open(&args.source, args.size, slide)?);
    let signals = Signals::install()?;
    let mut config = args.link.node_config(Role::Sender, true)?;
    config.chunk_bytes = args.chunk_bytes;
    config.max_peers = args.max_viewers;
    config.files_dir = Some(
        args.files_dir
            .clone()
            .unwrap_or_else(super::windows::default_files_dir),
    );
    let node = Node::start(config)?;
    if let Some(addr) = node.local_addr() {
        println!("listening on {addr}");
    }
    tracing::info!("serving {} at {} fps", source.source().describe(), args.fps);
    let _announced = (!args.no_announce)
        .then(|| super::announce(&node, &args.link, source.source().size(), Some(args.fps)))
        .flatten();

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
    let mut report = PeerReport::new(start);
    let mut events = EventLog::default();
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
        for event in super::events_this_turn(node.events()) {
            events.log(&event);
        }
        if now.duration_since(last_report) >= report_every {
            last_report = now;
            tracing::info!("{seq} frames published");
            report.log(&node.peers(), now);
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
            Ok(ControlSignal::ListPeers) => {
                let peers = node.peers();
                print_peers(&peers, node.stream_source());
                report.log(&peers, Instant::now());
            }
            Err(_) => {}
        }
    }
    tracing::info!(
        "stopping after {seq} frames; {} picture(s) copied and hashed",
        source.copies()
    );
    node.shutdown();
    Ok(())
}

/// Texts printed to standard output per [`TEXT_WINDOW`]; more are counted and said.
const TEXTS_SHOWN: u32 = 20;
const TEXT_WINDOW: Duration = Duration::from_secs(1);
/// Bytes of one text printed; the rest is said as a count.
const TEXT_SHOWN_BYTES: usize = 512;

/// Shows what the headless commands show of the network: texts on standard output,
/// the rest in the log. A peer that floods texts must not flood the terminal (nor hold
/// up the loop that prints them: serve publishes frames from it), so at most
/// [`TEXTS_SHOWN`] texts a second are printed, each cut to [`TEXT_SHOWN_BYTES`].
pub(super) struct EventLog {
    texts: WarnLimiter,
    /// What any host that reaches us can cause any number of: failed incoming files,
    /// failed handshakes, connections ended by a fault.
    file_failures: WarnLimiter,
    handshakes: WarnLimiter,
    disconnects: WarnLimiter,
}

impl Default for EventLog {
    fn default() -> EventLog {
        EventLog {
            texts: WarnLimiter::new(TEXTS_SHOWN, TEXT_WINDOW),
            file_failures: WarnLimiter::default(),
            handshakes: WarnLimiter::default(),
            disconnects: WarnLimiter::default(),
        }
    }
}

impl EventLog {
    pub fn log(&mut self, event: &Event) {
        if let Event::Text { text, .. } = event {
            if let Verdict::Log { held_back } = self.texts.check(Instant::now()) {
                if held_back > 0 {
                    println!("({held_back} more texts were not shown)");
                }
                println!("{}", shown_text(text));
            }
            return;
        }
        let now = Instant::now();
        match event {
            Event::FileFailed { name, reason, .. } => {
                if let Verdict::Log { held_back } = self.file_failures.check(now) {
                    tracing::warn!(
                        "file {} failed: {}{}",
                        Escaped(name),
                        Escaped(reason),
                        held_back_note(held_back)
                    );
                }
            }
            // What points at a broken or hostile peer or network: warned, rate-limited.
            Event::HandshakeFailed { addr, reason } if reason.severity() == Severity::Warn => {
                if let Verdict::Log { held_back } = self.handshakes.check(now) {
                    tracing::warn!(
                        "handshake failed: {reason}, with {addr}{}",
                        held_back_note(held_back)
                    );
                }
            }
            Event::PeerDisconnected { peer, addr, reason }
                if reason.severity() == Severity::Warn =>
            {
                if let Verdict::Log { held_back } = self.disconnects.check(now) {
                    let addr = addr.map_or_else(|| "?".to_owned(), |a| a.to_string());
                    tracing::warn!(
                        "peer {peer} disconnected: {reason}, from {addr}{}",
                        held_back_note(held_back)
                    );
                }
            }
            _ => log_event(event),
        }
    }
}

/// `[from] body`, escaped (names and texts come from peers: they cannot forge a line or
/// steer the terminal), the body cut to [`TEXT_SHOWN_BYTES`].
fn shown_text(text: &crate::protocol::Text) -> String {
    let body = crate::protocol::truncate_utf8(&text.body, TEXT_SHOWN_BYTES);
    let cut = text.body.len() - body.len();
    let note = if cut > 0 {
        format!(" … ({cut} more bytes)")
    } else {
        String::new()
    };
    format!("[{}] {}{note}", Escaped(&text.from), Escaped(body))
}

/// Logs what the headless commands show of the network but texts ([`EventLog`]).
fn log_event(event: &Event) {
    match event {
        // Shown by `EventLog::log`, rate-limited.
        Event::Text { .. } => {}
        Event::FileReceived {
            name, path, size, ..
        } => {
            tracing::info!(
                "received file {} ({size} bytes): {}",
                Escaped(name),
                Escaped(&path.to_string_lossy())
            );
        }
        // Shown by `EventLog::log`, rate-limited.
        Event::FileFailed { .. } => {}
        Event::FileSent {
            name,
            ok: true,
            message,
            ..
        } => tracing::info!("file {} sent: ok: {}", Escaped(name), Escaped(message)),
        Event::FileSent {
            name,
            ok: false,
            message,
            ..
        } => tracing::warn!("file {} sent: failed: {}", Escaped(name), Escaped(message)),
        Event::PeerConnected {
            peer,
            addr,
            name,
            role,
        } => tracing::info!(
            peer = %peer,
            name = %Escaped(name),
            role = role.name(),
            "connected to {addr}"
        ),
        // The normal end of a connection (faults are told by `EventLog::log`).
        Event::PeerDisconnected { peer, addr, reason } => {
            let addr = addr.map_or_else(|| "?".to_owned(), |a| a.to_string());
            tracing::info!(peer = %peer, "disconnected: {reason}, from {addr}");
        }
        // A handshake that failed for a reason of ours or the network's (a reset).
        Event::HandshakeFailed { addr, reason } => {
            tracing::debug!("handshake failed: {reason}, with {addr}")
        }
    }
}

/// Checks a `--report-secs` value.
pub(super) fn report_interval(secs: f64) -> anyhow::Result<Duration> {
    if !(secs.is_finite() && secs > 0.0) {
        anyhow::bail!("--report-secs must be a positive number of seconds, got {secs}");
    }
    Ok(Duration::from_secs_f64(secs.max(0.1)))
}

/// Per-peer figures over the time since the previous report: frames out (and skipped)
/// and in, Mb/s each way, round-trip time. `serve` and `relay` log it every
/// `--report-secs` and on SIGUSR2.
pub(super) struct PeerReport {
    since: Instant,
    last: HashMap<PeerId, Totals>,
}

/// The counters of one peer that a report turns into differences.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    frames_sent: u64,
    frames_skipped: u64,
    frames_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    frame_bytes_raw: u64,
    frame_bytes_wire: u64,
}

impl Totals {
    fn of(p: &PeerStatus) -> Totals {
        Totals {
            frames_sent: p.frames_sent,
            frames_skipped: p.frames_skipped,
            frames_received: p.frames_received,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            frame_bytes_raw: p.frame_bytes_raw,
            frame_bytes_wire: p.frame_bytes_wire,
        }
    }

    fn minus(self, before: Totals) -> Totals {
        Totals {
            frames_sent: self.frames_sent.saturating_sub(before.frames_sent),
            frames_skipped: self.frames_skipped.saturating_sub(before.frames_skipped),
            frames_received: self.frames_received.saturating_sub(before.frames_received),
            bytes_sent: self.bytes_sent.saturating_sub(before.bytes_sent),
            bytes_received: self.bytes_received.saturating_sub(before.bytes_received),
            frame_bytes_raw: self.frame_bytes_raw.saturating_sub(before.frame_bytes_raw),
            frame_bytes_wire: self
                .frame_bytes_wire
                .saturating_sub(before.frame_bytes_wire),
        }
    }
}

impl PeerReport {
    pub fn new(now: Instant) -> PeerReport {
        PeerReport {
            since: now,
            last: HashMap::new(),
        }
    }

    /// Logs one line per peer (at `info`) and starts the next interval.
    pub fn log(&mut self, peers: &[PeerStatus], now: Instant) {
        let secs = now.duration_since(self.since).as_secs_f64();
        tracing::info!("{} peer(s), figures over the last {secs:.1} s", peers.len());
        for line in self.lines(peers, now) {
            tracing::info!("  {line}");
        }
    }

    /// One line per peer: what changed since the last call (a peer that arrived since
    /// then counts from zero), then starts the next interval.
    fn lines(&mut self, peers: &[PeerStatus], now: Instant) -> Vec<String> {
        let secs = now.duration_since(self.since).as_secs_f64().max(1e-3);
        let mbps = |bytes: u64| bytes as f64 * 8.0 / secs / 1e6;
        let mut next = HashMap::with_capacity(peers.len());
        let lines = peers
            .iter()
            .map(|p| {
                let totals = Totals::of(p);
                let d = totals.minus(self.last.get(&p.id).copied().unwrap_or_default());
                next.insert(p.id, totals);
                let addr = p.addr.map_or_else(|| p.target.clone(), |a| a.to_string());
                let rtt = p.rtt.map_or_else(
                    || "-".to_owned(),
                    |r| format!("{:.2} ms", r.as_secs_f64() * 1e3),
                );
                // What the link's codec made of the frames: on the wire against raw.
                let coding = if p.codec == crate::net::Codec::Raw || d.frame_bytes_raw == 0 {
                    String::new()
                } else {
                    format!(
                        ", {}: frames {:.1} Mb/s on the wire for {:.1} Mb/s raw ({:.1} %)",
                        p.codec_now(),
                        mbps(d.frame_bytes_wire),
                        mbps(d.frame_bytes_raw),
                        d.frame_bytes_wire as f64 * 100.0 / d.frame_bytes_raw as f64
                    )
                };
                format!(
                    "{} {addr} {} {:?} {}: out {} frames ({} skipped) {:.1} Mb/s{coding}, \
                     in {} frames {:.1} Mb/s, rtt {rtt}",
                    p.id,
                    p.role.map_or("-", |r| r.name()),
                    p.name.as_deref().unwrap_or("-"),
                    p.state,
                    d.frames_sent,
                    d.frames_skipped,
                    mbps(d.bytes_sent),
                    d.frames_received,
                    mbps(d.bytes_received),
                )
            })
            .collect();
        self.last = next;
        self.since = now;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Origin, PeerState};
    use crate::protocol::Role;

    fn peer(id: u64, frames_sent: u64, bytes_sent: u64) -> PeerStatus {
        PeerStatus {
            frames_format_skipped: 0,
            id: PeerId(id),
            origin: Origin::Accepted,
            target: format!("127.0.0.1:{}", 5000 + id),
            addr: None,
            state: PeerState::Connected,
            name: Some("v\u{1b}[31m".to_owned()),
            role: Some(Role::Viewer),
            frames_sent,
            frames_skipped: frames_sent / 10,
            frames_received: 0,
            bytes_sent,
            bytes_received: 100,
            rtt: Some(Duration::from_micros(1500)),
            last_error: None,
            reconnects: 0,
            authenticated: false,
            encrypted: false,
            tls_fingerprint: None,
            sends_frames: false,
            codec: crate::net::Codec::Raw,
            coding_now: false,
            frames_coded: 0,
            frames_coded_shared: 0,
            frame_bytes_raw: bytes_sent,
            frame_bytes_wire: bytes_sent,
            coding_us: 0,
        }
    }

    #[test]
    fn peer_report_gives_figures_since_the_last_report() {
        let t0 = Instant::now();
        let mut report = PeerReport::new(t0);
        // 1_000_000 bytes in 2 s = 4 Mb/s.
        let first = report.lines(&[peer(1, 20, 1_000_000)], t0 + Duration::from_secs(2));
        assert_eq!(first.len(), 1);
        assert!(
            first[0].contains("out 20 frames (2 skipped) 4.0 Mb/s"),
            "{}",
            first[0]
        );
        assert!(first[0].contains("rtt 1.50 ms"), "{}", first[0]);
        assert!(first[0].contains("127.0.0.1:5001 viewer"), "{}", first[0]);
        // The peer's name is escaped, never passed raw to the terminal.
        assert!(!first[0].contains('\u{1b}'), "{}", first[0]);

        // One second later: 10 more frames, 500_000 more bytes (4 Mb/s), and a new peer
        // counted from zero; the first interval's peers are forgotten once gone.
        let second = report.lines(
            &[peer(1, 30, 1_500_000), peer(2, 5, 250_000)],
            t0 + Duration::from_secs(3),
        );
        assert!(
            second[0].contains("out 10 frames (1 skipped) 4.0 Mb/s"),
            "{}",
            second[0]
        );
        assert!(
            second[1].contains("out 5 frames (0 skipped) 2.0 Mb/s"),
            "{}",
            second[1]
        );
        // A coded link: its frames' bytes on the wire beside their raw bytes.
        let mut coded = peer(2, 15, 350_000);
        coded.codec = crate::net::Codec::Tiles;
        coded.frame_bytes_raw = 250_000 + 1_000_000;
        coded.frame_bytes_wire = 250_000 + 50_000;
        let coded = report.lines(&[coded], t0 + Duration::from_secs(4));
        assert!(
            coded[0].contains(
                ", tiles: frames 0.4 Mb/s on the wire for 8.0 Mb/s raw (5.0 %), in 0 frames"
            ),
            "{}",
            coded[0]
        );
        let third = report.lines(&[peer(2, 5, 250_000)], t0 + Duration::from_secs(5));
        assert_eq!(third.len(), 1);
        assert!(
            third[0].contains("out 0 frames (0 skipped) 0.0 Mb/s"),
            "{}",
            third[0]
        );
        assert_eq!(report.last.len(), 1);
    }
}
