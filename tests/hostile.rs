//! `texstream serve` under attack. Each test starts one real `serve pattern` process
//! (1280x720 at 30 fps, files into a temporary `inbox/`) with one honest library viewer,
//! then plays a hostile peer against it over raw sockets: random bytes, garbage after a
//! handshake, frames that break the rules, hostile files, a ping flood, a thousand
//! connections opened and dropped, two hundred that never finish their handshake, and
//! oversized messages inside the handshake.
//!
//! After each attack: the process is still running, its memory stayed bounded (read from
//! `/proc/PID/status`), the honest viewer kept receiving at its full rate (frames over the
//! attack window against frames over a window before it, both measured in the same
//! test), the attacker's connection ended with the right reason (the goodbye on the wire,
//! and serve's own log line naming the attacker's address), serve still lists only the
//! honest viewer (SIGUSR2), nothing was written outside the receive folder, and serve
//! ends cleanly on SIGTERM.
//!
//! The tests run one at a time (a lock): each streams about 110 MB/s, and two at once on
//! a 2-core machine would measure each other's load instead of the attack's.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::proc::Proc;
use common::*;
use texstream::frame::{FrameGeometry, FramePool, PixelFormat};
use texstream::net::Node;
use texstream::protocol::{
    encode, encode_bulk_head, encode_preamble, Capabilities, FileAccept, FileEnd, FileOffer,
    FrameStart, GoodbyeCode, Hello, Kind, Message, Ping, Role,
};

const BIN: &str = env!("CARGO_BIN_EXE_texstream");

/// The stream serve plays to the honest viewer.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;

/// Serve's limits in these tests (`--max-handshaking` is its default, given explicitly).
/// Every attacker here connects from 127.0.0.1, so the per-address limit is raised to
/// the same: these tests are about the node-wide limit (`tests/security.rs` tests the
/// per-address one).
const MAX_HANDSHAKING: usize = 32;
const HANDSHAKE_SECS: u64 = 2;
const KEEPALIVE_SECS: u64 = 4;

/// Serve's resident memory must stay under this, peak included. It needs about 15 MiB
/// to stream 1280x720 to one viewer (30 MiB while it takes a 16 MiB file chunk): the
/// bound leaves room, and is far below what the attacks make it take where a limit is
/// missing.
const MEMORY_BOUND_MIB: u64 = 200;

/// During an attack the honest viewer must get at least this share of the frame rate
/// it got just before it.
const FULL_RATE: f64 = 0.6;

/// Frame rates are measured over at least this long.
const WINDOW: Duration = Duration::from_secs(1);

/// How long serve may take to close a hostile connection it has the bytes to judge.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// One test at a time: see the module docs.
static SERIAL: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------
// The fixture: one serve process and one honest viewer
// ---------------------------------------------------------------------------------------

/// Serve flags that some tests change.
#[derive(Clone, Copy)]
struct Options {
    handshake_secs: u64,
    keepalive_secs: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            handshake_secs: HANDSHAKE_SECS,
            keepalive_secs: KEEPALIVE_SECS,
        }
    }
}

struct Fixture {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    /// The temporary folder serve runs in: `inbox/` (its --files-dir) and `home/` (its
    /// HOME), nothing else, ever.
    root: tempfile::TempDir,
    inbox: PathBuf,
    /// Serve's output lines (stdout and stderr), and those read so far.
    lines: flume::Receiver<String>,
    seen: RefCell<Vec<String>>,
    viewer: Node,
    /// Problems with the frames the honest viewer got (a frame serve did not send).
    frame_problems: Arc<Mutex<Vec<String>>>,
    stop_drain: Arc<AtomicBool>,
    drainer: Option<JoinHandle<()>>,
    /// The honest viewer's frame rate before any attack.
    baseline_fps: f64,
    _serial: MutexGuard<'static, ()>,
}

impl Fixture {
    fn start() -> Fixture {
        Fixture::with(Options::default())
    }

    fn with(options: Options) -> Fixture {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let root = tempfile::tempdir().unwrap();
        let inbox = root.path().join("inbox");
        let home = root.path().join("home");
        std::fs::create_dir(&inbox).unwrap();
        std::fs::create_dir(&home).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "pattern", "--size", &format!("{WIDTH}x{HEIGHT}")])
            .args(["--fps", "30", "--listen", "127.0.0.1:0", "--files-dir"])
            .arg(&inbox)
            .args(["--max-handshaking", &MAX_HANDSHAKING.to_string()])
            .args([
                "--max-handshaking-per-address",
                &MAX_HANDSHAKING.to_string(),
            ])
            .args(["--handshake-secs", &options.handshake_secs.to_string()])
            .args(["--keepalive-secs", &options.keepalive_secs.to_string()])
            // Anything written relative to the working folder or HOME would show up in
            // the listing of `root`.
            .current_dir(root.path())
            .env("HOME", &home)
            // Warnings that peers cause are rate-limited; each one held back is still
            // logged at debug, where this suite reads every attacker's reason.
            .env("RUST_LOG", "texstream=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("texstream serve starts");
        let pid = child.id();
        // Unbounded: serve must never block on a full pipe because the test is busy.
        let (tx, lines) = flume::unbounded();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let listening: Option<SocketAddr> =
            std::iter::from_fn(|| lines.recv_deadline(deadline).ok())
                .find_map(|line| line.strip_prefix("listening on ")?.trim().parse().ok());
        let Some(addr) = listening else {
            let _ = child.kill();
            panic!("serve did not print its listen address: {:?}", child.wait());
        };

        let mut config = fast_config(Role::Viewer);
        config.name = "honest viewer".to_owned();
        config.connect = vec![addr.to_string()];
        let viewer = Node::start(config).expect("the honest viewer starts");

        // Takes the viewer's frames as an application would, checking each is one of
        // serve's: its size, in order.
        let frame_problems = Arc::new(Mutex::new(Vec::new()));
        let stop_drain = Arc::new(AtomicBool::new(false));
        let drainer = {
            let frames = viewer.frames().clone();
            let problems = frame_problems.clone();
            let stop = stop_drain.clone();
            std::thread::spawn(move || {
                let mut last_seq = None;
                while !stop.load(Relaxed) {
                    let frame = match frames.recv_timeout(Duration::from_millis(100)) {
                        Ok(frame) => frame,
                        Err(flume::RecvTimeoutError::Timeout) => continue,
                        Err(flume::RecvTimeoutError::Disconnected) => break,
                    };
                    let m = frame.meta();
                    if (m.width, m.height) != (WIDTH, HEIGHT)
                        || last_seq.is_some_and(|last| m.seq <= last)
                    {
                        problems.lock().unwrap().push(format!(
                            "frame {} of {}x{} after frame {last_seq:?}",
                            m.seq, m.width, m.height
                        ));
                    }
                    last_seq = Some(m.seq);
                }
            })
        };

        let mut fx = Fixture {
            child,
            pid,
            addr,
            root,
            inbox,
            lines,
            seen: RefCell::new(Vec::new()),
            viewer,
            frame_problems,
            stop_drain,
            drainer: Some(drainer),
            baseline_fps: 0.0,
            _serial: serial,
        };
        fx.wait_until("the honest viewer's first frames", PATIENCE, || {
            fx.viewer.stats().frames_received >= 5
        });
        let ((), fps) = fx.rate_during(|| ());
        assert!(
            fps > 0.0,
            "the honest viewer receives frames before any attack"
        );
        fx.baseline_fps = fps;
        fx
    }

    // --- measuring --------------------------------------------------------------------

    /// Runs `attack` and measures the honest viewer's frame rate from its start to its
    /// end, over [`WINDOW`] at least.
    fn rate_during<R>(&self, attack: impl FnOnce() -> R) -> (R, f64) {
        let before = self.viewer.stats().frames_received;
        let start = Instant::now();
        let result = attack();
        // The rest of the measuring window (nothing is waited for: frames are counted).
        if let Some(rest) = WINDOW.checked_sub(start.elapsed()) {
            std::thread::sleep(rest);
        }
        let frames = self.viewer.stats().frames_received - before;
        (result, frames as f64 / start.elapsed().as_secs_f64())
    }

    /// The honest viewer got its full rate during an attack.
    fn assert_full_rate(&self, what: &str, fps: f64) {
        eprintln!(
            "{what}: the honest viewer got {fps:.1} fps during the attack, {:.1} before",
            self.baseline_fps
        );
        assert!(
            fps >= FULL_RATE * self.baseline_fps,
            "{what}: the honest viewer got {fps:.1} fps during the attack and {:.1} fps \
             before it (at least {:.0}% expected)",
            self.baseline_fps,
            FULL_RATE * 100.0
        );
    }

    /// A figure from `/proc/PID/status` (`VmRSS`, `VmHWM`: kB; `Threads`).
    fn proc_status(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("serve's /proc status is readable");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in serve's /proc status"))
    }

    fn rss_mib(&self) -> u64 {
        self.proc_status("VmRSS") / 1024
    }

    fn peak_rss_mib(&self) -> u64 {
        self.proc_status("VmHWM") / 1024
    }

    fn threads(&self) -> u64 {
        self.proc_status("Threads")
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("serve's fds are listable")
            .count()
    }

    // --- serve's output ---------------------------------------------------------------

    /// Waits for a line of serve's output that `pick` accepts; returns it.
    fn wait_log(&self, what: &str, timeout: Duration, pick: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.borrow().iter().find(|l| pick(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(line) => {
                    let hit = pick(&line);
                    self.seen.borrow_mut().push(line.clone());
                    if hit {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line for {what} within {timeout:?}; the last lines:\n{}",
                    self.last_lines(30)
                ),
            }
        }
    }

    /// Waits for serve's log line about the connection from `peer` that contains
    /// `phrase` (serve names the peer's address on every line about it).
    fn wait_log_about(&self, peer: SocketAddr, phrase: &str) -> String {
        let at = peer.to_string();
        self.wait_log(&format!("{phrase:?} about {peer}"), PATIENCE, |l| {
            l.contains(&at) && l.contains(phrase)
        })
    }

    fn last_lines(&self, n: usize) -> String {
        self.seen.borrow_mut().extend(self.lines.try_iter());
        let seen = self.seen.borrow();
        seen[seen.len().saturating_sub(n)..].join("\n")
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {sig} {}", self.pid);
    }

    /// The peers serve lists on SIGUSR2, one line each.
    fn peer_lines(&self) -> Vec<String> {
        // Earlier lines are history; the list this signal asks for comes after them.
        self.seen.borrow_mut().extend(self.lines.try_iter());
        self.signal("USR2");
        let deadline = Instant::now() + PATIENCE;
        let next = || {
            let line = self
                .lines
                .recv_deadline(deadline)
                .expect("serve lists its peers on SIGUSR2");
            self.seen.borrow_mut().push(line.clone());
            line
        };
        let count = loop {
            let line = next();
            let header = line
                .strip_prefix("texstream: ")
                .and_then(|rest| rest.strip_suffix(" peer(s)"));
            if let Some(n) = header.and_then(|n| n.parse::<usize>().ok()) {
                break n;
            }
        };
        // The list is one write: its lines follow the header.
        (0..count).map(|_| next()).collect()
    }

    /// Waits until serve lists only the honest viewer; returns its line.
    fn wait_only_the_honest_viewer(&self, what: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lines = self.peer_lines();
            if lines.len() == 1 && lines[0].contains("name=honest viewer") {
                return lines[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: serve should list only the honest viewer, it lists:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // --- the checks after every attack ------------------------------------------------

    /// Polls `done` until it holds, for at most `timeout`.
    fn wait_until(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; serve's last lines:\n{}",
                self.last_lines(30)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Serve is up, its memory stayed bounded, the honest viewer only ever got serve's
    /// frames, intact, on its first connection, and nothing was written outside the
    /// receive folder.
    fn assert_healthy(&mut self, what: &str) {
        self.assert_running_and_clean(what);
        let (peak, now) = (self.peak_rss_mib(), self.rss_mib());
        eprintln!("{what}: serve's resident memory peaked at {peak} MiB, {now} MiB now");
        assert!(
            peak < MEMORY_BOUND_MIB,
            "{what}: serve's resident memory peaked at {peak} MiB, {now} MiB now \
             (bound {MEMORY_BOUND_MIB} MiB)"
        );
    }

    /// [`Fixture::assert_healthy`] but for the peak memory (for an attack that sends
    /// serve that much data).
    fn assert_running_and_clean(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{what}: serve exited ({status}); its last lines:\n{}",
                self.last_lines(40)
            );
        }
        let stats = self.viewer.stats();
        assert_eq!(stats.checksum_failures, 0, "{what}: {stats:?}");
        assert_eq!(stats.protocol_errors, 0, "{what}: {stats:?}");
        assert_eq!(stats.reconnects, 0, "{what}: the honest viewer was dropped");
        let problems = self.frame_problems.lock().unwrap().clone();
        assert!(problems.is_empty(), "{what}: {problems:?}");
        self.assert_nothing_outside_the_inbox(what);
    }

    fn assert_nothing_outside_the_inbox(&self, what: &str) {
        assert_eq!(listing(self.root.path()), ["home", "inbox"], "{what}");
        assert_eq!(
            listing(&self.root.path().join("home")),
            Vec::<String>::new(),
            "{what}: serve wrote into its HOME"
        );
    }

    /// Serve lists only the honest viewer, and ends cleanly on SIGTERM.
    fn finish(mut self, what: &str) {
        self.wait_only_the_honest_viewer(what);
        self.signal("TERM");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: serve did not end within {PATIENCE:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{what}: {}", self.last_lines(20));
        self.assert_nothing_outside_the_inbox(what);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop_drain.store(true, Relaxed);
        if let Some(drainer) = self.drainer.take() {
            let _ = drainer.join();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// Hostile peers
// ---------------------------------------------------------------------------------------

/// A hostile peer's hello as a frame sender (serve sends it no frames).
fn sender_hello(name: &str) -> Hello {
    raw_hello(
        Role::Sender,
        Capabilities::FRAMES_OUT | Capabilities::TEXT,
        name,
    )
}

/// Our preamble and `hello`, as one write.
fn preamble_and_hello(hello: Hello) -> Vec<u8> {
    let mut out = encode_preamble().to_vec();
    encode(&Message::Hello(hello), &mut out);
    out
}

/// The goodbye serve sent before closing a handshaken peer's connection.
fn goodbye_before_close(raw: &mut RawPeer, what: &str) -> (GoodbyeCode, String) {
    let got = raw.messages_until_closed(CLOSE_WITHIN, what);
    got.iter()
        .find_map(|m| match m {
            Message::Goodbye { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{what}: no goodbye before the close; got {got:?}"))
}

/// Serve closed a handshaken peer for breaking the protocol, saying `phrase`, and logged
/// the same reason with the peer's address.
fn expect_protocol_error(fx: &Fixture, raw: &mut RawPeer, what: &str, phrase: &str) {
    let peer = raw.local_addr();
    let (code, reason) = goodbye_before_close(raw, what);
    assert_eq!(code, GoodbyeCode::ProtocolError, "{what}: {reason}");
    assert!(reason.contains(phrase), "{what}: goodbye reason {reason:?}");
    fx.wait_log_about(peer, phrase);
}

/// Skips pings; returns the next other message.
fn next_message(raw: &mut RawPeer) -> Message {
    loop {
        match raw.read_message() {
            Message::Ping(_) => continue,
            m => return m,
        }
    }
}

/// Leaves politely, so that the only reasons in serve's log are the attacks'.
fn leave(mut raw: RawPeer) {
    raw.send_msg(&Message::Goodbye {
        code: GoodbyeCode::Normal,
        reason: String::new(),
    });
    raw.expect_closed(CLOSE_WITHIN, "leaving");
}

// ---------------------------------------------------------------------------------------
// Random bytes, and garbage after a valid start
// ---------------------------------------------------------------------------------------

#[test]
fn random_bytes_close_only_the_attackers_connection() {
    let mut fx = Fixture::start();
    let addr = fx.addr;
    let (expected_logs, fps) = fx.rate_during(|| {
        let mut expected_logs = Vec::new();
        for seed in 1..=4u64 {
            // Random bytes from the first byte on: refused on the magic.
            let mut s = TcpStream::connect(addr).unwrap();
            let local = s.local_addr().unwrap();
            let mut bytes = random_bytes(64 << 10, seed);
            bytes[0] = b'X';
            send_best_effort(&mut s, &bytes);
            wait_closed(&mut s, CLOSE_WITHIN, "random bytes");
            expected_logs.push((local, "bad magic"));

            // A valid preamble, then random bytes where the hello belongs: refused in
            // the handshake (on the envelope, the body, or the clock).
            let mut s = TcpStream::connect(addr).unwrap();
            let local = s.local_addr().unwrap();
            let mut bytes = encode_preamble().to_vec();
            bytes.extend(random_bytes(64 << 10, seed + 100));
            send_best_effort(&mut s, &bytes);
            let within = Duration::from_secs(HANDSHAKE_SECS) + CLOSE_WITHIN;
            wait_closed(&mut s, within, "random bytes after a preamble");
            expected_logs.push((local, "handshake failed"));

            // A whole handshake, then random bytes: a protocol error, said in a goodbye.
            let (mut raw, _) = RawPeer::handshaken(addr, sender_hello("garbage"));
            let local = raw.local_addr();
            raw.send(&random_bytes(4096, seed + 200));
            raw.stream.shutdown(Shutdown::Write).unwrap();
            let (code, reason) = goodbye_before_close(&mut raw, "garbage after a handshake");
            assert_eq!(code, GoodbyeCode::ProtocolError, "seed {seed}: {reason}");
            expected_logs.push((local, "protocol error"));
        }
        expected_logs
    });
    for (peer, phrase) in expected_logs {
        fx.wait_log_about(peer, phrase);
    }
    fx.assert_full_rate("random bytes", fps);
    fx.assert_healthy("random bytes");
    fx.finish("random bytes");
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// A small frame for the frame attacks: 64x64 RGBA, 16 KiB.
const SMALL: FrameGeometry = FrameGeometry {
    width: 64,
    height: 64,
    format: PixelFormat::Rgba8,
    bytes_per_row: 256,
};

/// Starts frame `seq` of [`SMALL`] and sends its first 1000 bytes.
fn start_small_frame(raw: &mut RawPeer, seq: u64) {
    let frame = make_frame(&FramePool::new(1), SMALL, seq);
    let mut out = Vec::new();
    texstream::protocol::encode(&Message::FrameStart(frame.meta().start_message()), &mut out);
    texstream::protocol::encode(
        &Message::FrameChunk {
            seq,
            offset: 0,
            data: frame.pixels()[..1000].to_vec(),
        },
        &mut out,
    );
    // Best effort: a node that refuses the start may close before the rest arrives.
    send_best_effort(&mut raw.stream, &out);
}

/// A chunk head alone: serve judges a chunk on its head, before its payload.
fn chunk_head(raw: &mut RawPeer, seq: u64, offset: u64, len: usize) {
    send_best_effort(
        &mut raw.stream,
        &encode_bulk_head(Kind::FrameChunk, seq, offset, len),
    );
}

/// Serve's refusal of any frame: it asked for none.
const NO_FRAMES: &str = "by a node that takes no frames";

#[test]
fn frames_that_break_the_rules_are_refused_with_the_reason() {
    let mut fx = Fixture::start();
    let addr = fx.addr;
    type Attack = fn(&mut RawPeer);
    let attacks: [(&str, Attack, &str); 7] = [
        (
            "a frame start declaring 64 GiB",
            |raw| raw.send_msg(&frame_start_of_64_gib(8)),
            "68719476736 bytes exceeds the frame limit",
        ),
        (
            "an overlapping chunk",
            |raw| {
                start_small_frame(raw, 5);
                chunk_head(raw, 5, 500, 1000);
            },
            NO_FRAMES,
        ),
        (
            "a chunk that skips ahead",
            |raw| {
                start_small_frame(raw, 5);
                chunk_head(raw, 5, 2000, 1000);
            },
            NO_FRAMES,
        ),
        (
            "a chunk past the frame's end",
            |raw| {
                start_small_frame(raw, 5);
                chunk_head(raw, 5, 1000, SMALL.total_len());
            },
            NO_FRAMES,
        ),
        (
            "a chunk for a frame never started",
            |raw| chunk_head(raw, 77, 0, 100),
            "chunk for frame 77, which was never started",
        ),
        (
            "a chunk for an aborted frame",
            |raw| {
                start_small_frame(raw, 6);
                let mut out = Vec::new();
                texstream::protocol::encode(&Message::FrameAbort { seq: 6 }, &mut out);
                send_best_effort(&mut raw.stream, &out);
                chunk_head(raw, 6, 1000, 1000);
            },
            NO_FRAMES,
        ),
        (
            "a frame whose bytes do not match its checksum",
            |raw| {
                let frame = make_frame(&FramePool::new(1), SMALL, 9);
                let mut pixels = frame.pixels().to_vec();
                pixels[9000] ^= 0x40;
                let mut out = Vec::new();
                texstream::protocol::encode(
                    &Message::FrameStart(frame.meta().start_message()),
                    &mut out,
                );
                texstream::protocol::encode(
                    &Message::FrameChunk {
                        seq: 9,
                        offset: 0,
                        data: pixels,
                    },
                    &mut out,
                );
                send_best_effort(&mut raw.stream, &out);
            },
            NO_FRAMES,
        ),
    ];
    let ((), fps) = fx.rate_during(|| {
        for (what, attack, phrase) in attacks {
            let (mut raw, _) = RawPeer::handshaken(addr, sender_hello(what));
            attack(&mut raw);
            expect_protocol_error(&fx, &mut raw, what, phrase);
        }
    });
    fx.assert_full_rate("frames that break the rules", fps);

    // Serve asked for no frames (its hello has no FRAMES_IN): even a valid frame is
    // refused at its start, never reassembled or kept.
    let (mut raw, _) = RawPeer::handshaken(addr, sender_hello("unasked frames"));
    let frame = make_frame(&FramePool::new(1), SMALL, 1);
    raw.send_msg(&Message::FrameStart(frame.meta().start_message()));
    expect_protocol_error(&fx, &mut raw, "an unasked valid frame", NO_FRAMES);
    leave(raw);
    fx.assert_healthy("frames that break the rules");
    fx.finish("frames that break the rules");
}

#[test]
fn a_frame_start_at_the_size_limit_takes_no_memory_before_its_bytes_arrive() {
    let mut fx = Fixture::start();
    let addr = fx.addr;
    let ((), fps) = fx.rate_during(|| {
        let (mut raw, _) = RawPeer::handshaken(addr, sender_hello("1 GiB promise"));
        // Exactly the default frame limit (1 GiB), so it is valid; then no byte of it.
        // Serve has no reason to hold 1 GiB for 62 bytes.
        raw.send_msg(&frame_start_at_the_limit(1));
        expect_protocol_error(&fx, &mut raw, "a 1 GiB frame start", NO_FRAMES);
    });
    fx.assert_full_rate("a frame start at the size limit", fps);
    fx.assert_healthy("a frame start at the size limit");
    fx.finish("a frame start at the size limit");
}

#[test]
fn frames_pushed_into_serve_are_not_kept_once_their_sender_left() {
    let mut fx = Fixture::start();
    let addr = fx.addr;
    // Two valid 128 MiB frames (8192 x 4096 RGBA, within every limit). Serve never shows
    // or passes on frames; once their sender is gone they are of no use to anyone.
    let geometry = FrameGeometry::rgba8(8192, 4096);
    let pixels = random_bytes(geometry.total_len(), 7);
    let checksum = xxhash_rust::xxh3::xxh3_64(&pixels);
    let ((), fps) = fx.rate_during(|| {
        let (mut raw, _) = RawPeer::handshaken(addr, sender_hello("big frames"));
        raw.send_msg(&Message::FrameStart(FrameStart {
            seq: 1,
            width: geometry.width,
            height: geometry.height,
            format: geometry.format,
            bytes_per_row: geometry.bytes_per_row,
            capture_us: 0,
            total_len: geometry.total_len() as u64,
            checksum,
        }));
        // Refused at the start: the 128 MiB that would follow are never read.
        expect_protocol_error(&fx, &mut raw, "big frames", NO_FRAMES);
    });
    fx.assert_full_rate("frames pushed into serve", fps);
    fx.wait_until_rss_below("frames pushed into serve", Duration::from_secs(3));
    fx.assert_running_and_clean("frames pushed into serve");
    fx.finish("frames pushed into serve");
}

impl Fixture {
    /// Serve's resident memory comes back under the bound within `timeout`.
    fn wait_until_rss_below(&self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let rss = self.rss_mib();
            if rss < MEMORY_BOUND_MIB {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: serve still holds {rss} MiB {timeout:?} after the peer left \
                 (bound {MEMORY_BOUND_MIB} MiB)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// Offers `body` as `name` and sends it whole; returns serve's verdict.
fn send_whole_file(raw: &mut RawPeer, id: u64, name: &str, body: &[u8]) -> (bool, String) {
    raw.send_msg(&Message::FileOffer(FileOffer {
        id,
        size: body.len() as u64,
        name: name.to_owned(),
    }));
    match next_message(raw) {
        Message::FileAccept(FileAccept { id: got, offset: 0 }) if got == id => {}
        Message::FileResult(r) if r.id == id => return (r.ok, r.message),
        other => panic!("{name:?}: expected an accept or a refusal, got {other:?}"),
    }
    raw.send_whole_file(id, body);
    match next_message(raw) {
        Message::FileResult(r) if r.id == id => (r.ok, r.message),
        other => panic!("{name:?}: expected a result, got {other:?}"),
    }
}

#[test]
fn hostile_files_land_inside_the_inbox_or_nowhere() {
    let mut fx = Fixture::start();
    let addr = fx.addr;
    let inbox = fx.inbox.clone();
    let outside = fx.root.path().parent().unwrap().to_owned();
    // Unique names, so that what lands outside can be told from others' files.
    let tag = fx
        .root
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let file_client = || {
        RawPeer::handshaken(
            addr,
            raw_hello(Role::FileClient, Capabilities::TEXT, "hostile files"),
        )
        .0
    };
    let names = [
        (
            format!("../../escape-{tag}.txt"),
            format!("escape-{tag}.txt"),
        ),
        (format!("/tmp/abs-{tag}"), format!("abs-{tag}")),
        (format!("..\\..\\win-{tag}.txt"), format!("win-{tag}.txt")),
        (format!("inbox/../../up-{tag}"), format!("up-{tag}")),
    ];
    let ((), fps) = fx.rate_during(|| {
        let mut raw = file_client();
        // Chunks for transfers never offered, as large as the limit allows: read and
        // skipped, the connection goes on.
        let payload = vec![0x5Au8; 16 << 20];
        for id in 0..8u64 {
            raw.send(&encode_bulk_head(
                Kind::FileChunk,
                9000 + id,
                0,
                payload.len(),
            ));
            raw.send(&payload);
        }
        expect_pong(&mut raw, 3, "after chunks for unknown transfers");

        // Names that climb out of the folder: cleaned to their last component.
        for (i, (name, stored)) in names.iter().enumerate() {
            let (ok, message) = send_whole_file(&mut raw, 100 + i as u64, name, b"payload");
            assert!(ok, "{name:?}: {message}");
            assert_eq!(message, format!("stored as {stored}"), "{name:?}");
        }
        // Names with nothing usable: refused.
        for (i, name) in ["..", "a/..", ""].iter().enumerate() {
            let (ok, message) = send_whole_file(&mut raw, 200 + i as u64, name, b"x");
            assert!(
                !ok && message.contains("no usable part"),
                "{name:?}: {message}"
            );
        }
        // A checksum that does not match: refused, nothing stored.
        raw.send_msg(&Message::FileOffer(FileOffer {
            id: 300,
            size: 4,
            name: format!("corrupt-{tag}"),
        }));
        assert!(matches!(next_message(&mut raw), Message::FileAccept(_)));
        raw.send_msg(&Message::FileChunk {
            id: 300,
            offset: 0,
            data: b"abcd".to_vec(),
        });
        raw.send_msg(&Message::FileEnd(FileEnd {
            id: 300,
            checksum: 1,
        }));
        match next_message(&mut raw) {
            Message::FileResult(r) => {
                assert!(!r.ok && r.message.contains("checksum mismatch"), "{r:?}")
            }
            other => panic!("expected a result, got {other:?}"),
        }
        // Seventeen transfers at once: the seventeenth is refused.
        for id in 0..17u64 {
            raw.send_msg(&Message::FileOffer(FileOffer {
                id: 500 + id,
                size: 1 << 20,
                name: format!("many-{id}"),
            }));
            match next_message(&mut raw) {
                Message::FileAccept(a) if id < 16 => assert_eq!(a.id, 500 + id),
                Message::FileResult(r) if id == 16 => {
                    assert!(!r.ok && r.message.contains("too many transfers"), "{r:?}")
                }
                other => panic!("offer {id}: {other:?}"),
            }
        }
        // Leaving with sixteen unfinished: a peer with no instance cannot resume, so
        // their partial files go.
        drop(raw);

        // A chunk out of order in a live transfer breaks the protocol.
        let mut raw = file_client();
        raw.send_msg(&Message::FileOffer(FileOffer {
            id: 1,
            size: 100,
            name: format!("gap-{tag}"),
        }));
        assert!(matches!(next_message(&mut raw), Message::FileAccept(_)));
        raw.send_msg(&Message::FileChunk {
            id: 1,
            offset: 50,
            data: vec![1; 10],
        });
        expect_protocol_error(&fx, &mut raw, "a file chunk out of order", "offset");
    });
    fx.assert_full_rate("hostile files", fps);

    let stored: Vec<String> = {
        let mut s: Vec<String> = names.iter().map(|(_, stored)| stored.clone()).collect();
        s.sort();
        s
    };
    fx.wait_until("the partial files to go", PATIENCE, || {
        listing(&inbox) == stored
    });
    for name in &stored {
        assert_eq!(std::fs::read(inbox.join(name)).unwrap(), b"payload");
    }
    for name in [
        format!("escape-{tag}.txt"),
        format!("win-{tag}.txt"),
        format!("up-{tag}"),
        format!("abs-{tag}"),
    ] {
        assert!(!outside.join(&name).exists(), "{name} landed outside");
    }
    assert!(!Path::new(&format!("/tmp/abs-{tag}")).exists());
    fx.assert_healthy("hostile files");
    fx.finish("hostile files");
}

// ---------------------------------------------------------------------------------------
// Floods
// ---------------------------------------------------------------------------------------

#[test]
fn a_ping_flood_from_a_peer_that_reads_nothing_is_bounded_and_dropped() {
    let mut fx = Fixture::start();
    let addr = fx.addr;
    const PINGS: u64 = 200_000;
    let (mut raw, _) = RawPeer::handshaken(addr, sender_hello("ping flood"));
    let peer = raw.local_addr();
    let mut flood = Vec::with_capacity(PINGS as usize * 21);
    for nonce in 0..PINGS {
        encode(
            &Message::Ping(Ping {
                nonce,
                sent_us: nonce,
            }),
            &mut flood,
        );
    }
    let (reason, fps) = fx.rate_during(|| {
        raw.stream.set_write_timeout(Some(PATIENCE)).unwrap();
        raw.stream
            .write_all(&flood)
            .expect("serve reads the whole flood");
        // Reading nothing, the peer is dropped: for not reading (serve's writes stall)
        // or for saying nothing more (keepalive), whichever comes first.
        fx.wait_log(
            &format!("the flooder {peer} to be dropped"),
            Duration::from_secs(KEEPALIVE_SECS) + PATIENCE,
            |l| l.contains(&peer.to_string()) && l.contains("disconnected"),
        )
    });
    assert!(
        reason.contains("keepalive") || reason.contains("stopped reading"),
        "the flooder is dropped for being silent or not reading: {reason}"
    );
    let rest = raw.messages_until_closed(CLOSE_WITHIN, "the flooder's connection");
    let pongs: Vec<u64> = rest
        .iter()
        .filter_map(|m| match m {
            Message::Pong(p) => Some(p.nonce),
            _ => None,
        })
        .collect();
    eprintln!(
        "the flooder got {} pongs for {PINGS} pings, then: {reason}",
        pongs.len()
    );
    assert!(!pongs.is_empty(), "serve answered some pings: {rest:?}");
    for m in &rest {
        if let Message::Goodbye { code, reason } = m {
            assert_eq!(
                *code,
                GoodbyeCode::Timeout,
                "the flooder's goodbye: {reason}"
            );
        }
    }
    assert!(
        pongs.windows(2).all(|w| w[0] < w[1]) && pongs.iter().all(|&n| n < PINGS),
        "each pong answers a ping, in order"
    );
    fx.assert_full_rate("a ping flood", fps);
    fx.assert_healthy("a ping flood");
    fx.finish("a ping flood");
}

#[test]
fn a_thousand_connections_opened_and_dropped_leave_nothing_behind() {
    let mut fx = Fixture::start();
    let addr = fx.addr;
    let (threads_before, fds_before) = (fx.threads(), fx.open_fds());
    let ((), fps) = fx.rate_during(|| {
        let frame = make_frame(&FramePool::new(1), SMALL, 1);
        for i in 0..1000 {
            let mut s = TcpStream::connect(addr).unwrap();
            match i % 4 {
                // Nothing at all.
                0 => true,
                // Half a preamble.
                1 => send_best_effort(&mut s, &encode_preamble()[..4]),
                // A whole handshake as a viewer, gone before the first frame.
                2 => send_best_effort(
                    &mut s,
                    &preamble_and_hello(raw_hello(
                        Role::Viewer,
                        Capabilities::FRAMES_IN | Capabilities::TEXT,
                        "drop",
                    )),
                ),
                // A whole handshake as a sender, gone in the middle of a frame.
                _ => {
                    let mut bytes = preamble_and_hello(sender_hello("drop"));
                    encode(
                        &Message::FrameStart(frame.meta().start_message()),
                        &mut bytes,
                    );
                    bytes.extend(encode_bulk_head(Kind::FrameChunk, 1, 0, 1000));
                    bytes.extend(&frame.pixels()[..500]);
                    send_best_effort(&mut s, &bytes)
                }
            };
        }
    });
    fx.assert_full_rate("a thousand connections", fps);
    eprintln!(
        "a thousand connections: serve had {threads_before} threads and {fds_before} fds \
         before, {} and {} right after",
        fx.threads(),
        fx.open_fds()
    );
    // Every connection's thread and socket is gone again: within 30 s, as a thousand
    // connections' ends can take more than 10 s on two cores that run other tests too.
    let teardown = 3 * PATIENCE;
    fx.wait_until("serve's threads to end", teardown, || {
        fx.threads() <= threads_before
    });
    fx.wait_until("serve's sockets to close", teardown, || {
        fx.open_fds() <= fds_before
    });
    fx.assert_healthy("a thousand connections");
    fx.finish("a thousand connections");
}

#[test]
fn two_hundred_silent_connections_are_capped_and_time_out() {
    let mut fx = Fixture::start();
    let addr = fx.addr;
    let ((held, refused, latecomer), fps) = fx.rate_during(|| {
        // Most of them arrive together, as a flood does: queued in the listen backlog
        // (which holds 128) while serve is held still for a moment, then taken in one
        // go; the rest one after another.
        let connect = |_| TcpStream::connect(addr).unwrap();
        let flood_start = Instant::now();
        fx.signal("STOP");
        let mut silent: Vec<TcpStream> = (0..120).map(connect).collect();
        fx.signal("CONT");
        silent.extend((120..200).map(connect));
        // An honest viewer arriving now finds every handshake place taken; it keeps
        // dialing (with backoff) until the silent ones are gone.
        let mut config = fast_config(Role::Viewer);
        config.name = "latecomer".to_owned();
        config.connect = vec![addr.to_string()];
        let latecomer = Node::start(config).unwrap();
        // Serve sends its preamble and hello at once to a connection it takes into its
        // handshake, and closes one over the limit at once without a byte.
        let (mut held, mut refused) = (Vec::new(), 0);
        for mut s in silent {
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            match s.read(&mut [0u8; 64]) {
                Ok(0) => refused += 1,
                Ok(_) => held.push(s),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("serve neither took nor refused a connection: {e}")
                }
                Err(_) => refused += 1,
            }
        }
        // Counted as "at once" only if none could have timed out yet and made room.
        assert!(
            flood_start.elapsed() < Duration::from_secs(HANDSHAKE_SECS),
            "the flood took {:?}, longer than the handshake time: the count means nothing",
            flood_start.elapsed()
        );
        // The held ones run out of handshake time.
        let within = Duration::from_secs(HANDSHAKE_SECS) + CLOSE_WITHIN;
        let peers: Vec<SocketAddr> = held.iter().map(|s| s.local_addr().unwrap()).collect();
        for s in &mut held {
            wait_closed(s, within, "a silent connection");
        }
        (peers, refused, latecomer)
    });
    assert_eq!(held.len() + refused, 200);
    assert!(!held.is_empty(), "serve took none of the connections");
    fx.wait_log_about(held[0], "handshake not finished");
    fx.assert_full_rate("two hundred silent connections", fps);

    // The latecomer gets in once the places are free, and receives the stream.
    wait_connected(&latecomer, "the latecomer to get in");
    let frame = recv_frame(&latecomer, "the latecomer");
    assert_eq!((frame.meta().width, frame.meta().height), (WIDTH, HEIGHT));
    assert_eq!(latecomer.stats().checksum_failures, 0);
    drop(latecomer);
    fx.assert_healthy("two hundred silent connections");
    assert!(
        held.len() <= MAX_HANDSHAKING,
        "at most {MAX_HANDSHAKING} connections may be in their handshake at once \
         (--max-handshaking), serve took {} of 200 silent ones",
        held.len()
    );
    fx.finish("two hundred silent connections");
}

#[test]
fn messages_in_the_handshake_are_judged_by_their_envelope_not_read_whole() {
    // A long handshake deadline: the connections below must be closed for what they
    // sent, not for being slow.
    let mut fx = Fixture::with(Options {
        handshake_secs: 10,
        ..Options::default()
    });
    let addr = fx.addr;
    let ((), fps) = fx.rate_during(|| {
        // As many connections as may be in their handshake, each sending a frame chunk
        // of the largest size in place of its hello: only a hello (or a goodbye) is
        // allowed there, at most 783 bytes, so serve can refuse it on its 5-byte
        // envelope. The last byte of each body is held back.
        let body = vec![0u8; (16 << 20) + 16 - 1];
        let mut conns: Vec<TcpStream> = (0..MAX_HANDSHAKING)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                let mut head = encode_preamble().to_vec();
                head.push(Kind::FrameChunk as u8);
                head.extend_from_slice(&(body.len() as u32 + 1).to_le_bytes());
                send_best_effort(&mut s, &head);
                send_best_effort(&mut s, &body);
                s
            })
            .collect();
        let peak = fx.peak_rss_mib();
        assert!(
            peak < MEMORY_BOUND_MIB,
            "serve took {peak} MiB for {MAX_HANDSHAKING} connections that never finished \
             a hello (bound {MEMORY_BOUND_MIB} MiB)"
        );
        for s in &mut conns {
            wait_closed(s, CLOSE_WITHIN, "a frame chunk in place of a hello");
        }
    });
    fx.assert_full_rate("oversized handshake messages", fps);
    fx.assert_healthy("oversized handshake messages");
    fx.finish("oversized handshake messages");
}

// ---------------------------------------------------------------------------------------
// A node that does take frames: `record --listen`
// ---------------------------------------------------------------------------------------

/// Peak resident memory of process `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .map_or(0, |kib: u64| kib / 1024)
}

#[test]
fn a_viewer_refuses_broken_frames_and_a_promised_gigabyte_costs_it_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let mut command = Command::new(BIN);
    command
        .args([
            "record",
            "--listen",
            "127.0.0.1:0",
            "--skip-while-busy",
            "--out",
        ])
        .arg(&out)
        .current_dir(root.path())
        .env("RUST_LOG", "warn");
    let record = Proc::start_command(command, "texstream record starts");
    let addr: SocketAddr = record.listen_addr().parse().unwrap();

    type Attack = fn(&mut RawPeer);
    let attacks: [(&str, Attack, &str); 5] = [
        (
            "an overlapping chunk",
            |raw| {
                start_small_frame(raw, 5);
                chunk_head(raw, 5, 500, 1000);
            },
            "chunk at offset 500 but 1000 bytes were received",
        ),
        (
            "a chunk that skips ahead",
            |raw| {
                start_small_frame(raw, 5);
                chunk_head(raw, 5, 2000, 1000);
            },
            "chunk at offset 2000 but 1000 bytes were received",
        ),
        (
            "a chunk past the frame's end",
            |raw| {
                start_small_frame(raw, 5);
                chunk_head(raw, 5, 1000, SMALL.total_len());
            },
            "runs past the frame's end",
        ),
        (
            "a chunk for an aborted frame",
            |raw| {
                start_small_frame(raw, 6);
                raw.send_msg(&Message::FrameAbort { seq: 6 });
                chunk_head(raw, 6, 1000, 1000);
            },
            "chunk for frame 6, which was never started",
        ),
        (
            "a frame whose bytes do not match its checksum",
            |raw| {
                let frame = make_frame(&FramePool::new(1), SMALL, 9);
                raw.send_msg(&Message::FrameStart(frame.meta().start_message()));
                let mut pixels = frame.pixels().to_vec();
                pixels[9000] ^= 0x40;
                raw.send_msg(&Message::FrameChunk {
                    seq: 9,
                    offset: 0,
                    data: pixels,
                });
            },
            "checksum mismatch",
        ),
    ];
    for (what, attack, phrase) in attacks {
        let (mut raw, _) = RawPeer::handshaken(addr, sender_hello(what));
        attack(&mut raw);
        let (code, reason) = goodbye_before_close(&mut raw, what);
        assert_eq!(code, GoodbyeCode::ProtocolError, "{what}: {reason}");
        assert!(reason.contains(phrase), "{what}: {reason}");
    }

    // A valid start of the largest frame allowed (1 GiB), then an abort: no byte of it
    // arrives, and no memory is spent on it. A valid small frame still goes through.
    let before = peak_rss_mib(record.child.id());
    let (mut raw, _) = RawPeer::handshaken(addr, sender_hello("1 GiB promise"));
    raw.send_msg(&frame_start_at_the_limit(1));
    raw.send_msg(&Message::FrameAbort { seq: 1 });
    expect_pong(&mut raw, 1, "after a 1 GiB frame start");
    let frame = make_frame(&FramePool::new(1), SMALL, 2);
    raw.send_msg(&Message::FrameStart(frame.meta().start_message()));
    raw.send_msg(&Message::FrameChunk {
        seq: 2,
        offset: 0,
        data: frame.pixels().to_vec(),
    });
    expect_pong(&mut raw, 2, "after a valid frame");
    let after = peak_rss_mib(record.child.id());
    assert!(
        after < before + 64,
        "peak memory went from {before} MiB to {after} MiB for a promised gigabyte"
    );
    let (code, summary, _) = record.stop_with_summary();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["frames_received"], 1, "{summary}");
    assert_eq!(summary["checksum_failures"], 1, "{summary}");
    assert!(listing(&out).iter().any(|n| n.starts_with("frame-")));
}
