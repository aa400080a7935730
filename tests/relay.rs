//! Relays, end to end: `texstream relay` in chains and bridges between real `serve` and
//! `record` processes (byte-exact frames, a middle relay killed and restarted, text,
//! files, `--max-viewers`, usage errors), and relay nodes of the library keeping every
//! frame's seq, capture time and bytes across hops.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::{saved_frames, write_source_image, Proc};
use common::{check_frame, fast_config, make_frame, padded_geometry, recv_frame, PATIENCE};
use texstream::frame::FramePool;
use texstream::net::{Event, Node};
use texstream::protocol::Role;

const BIN: &str = env!("CARGO_BIN_EXE_texstream");

/// Waits until `dir` holds at least `n` saved frames.
fn wait_for_frames(dir: &Path, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while saved_frames(dir).len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} frames saved in {} within {PATIENCE:?} (have {})",
            dir.display(),
            saved_frames(dir).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until no new frame has been saved in any of `dirs` for `quiet`; returns the
/// counts then.
fn wait_until_still(dirs: &[&Path], quiet: Duration) -> Vec<usize> {
    let deadline = Instant::now() + PATIENCE;
    let count = || {
        dirs.iter()
            .map(|d| saved_frames(d).len())
            .collect::<Vec<_>>()
    };
    let mut last = count();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "frames kept arriving in {dirs:?} though the chain is broken"
        );
    }
}

/// Checks every PNG in `dir` against the source, pixel for pixel; returns how many.
fn assert_frames_equal_source(dir: &Path, source: &image::RgbaImage) -> usize {
    let frames = saved_frames(dir);
    for f in &frames {
        let got = image::open(f).unwrap().to_rgba8();
        assert_eq!(got.dimensions(), source.dimensions(), "{}", f.display());
        assert!(
            got.as_raw() == source.as_raw(),
            "{} differs from the source",
            f.display()
        );
    }
    frames.len()
}

/// Waits until `path` exists with exactly `want` as its contents.
fn wait_for_file(path: &Path, want: &[u8]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if std::fs::read(path).is_ok_and(|got| got == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not arrive with the sent contents within {PATIENCE:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve_image(src: &Path) -> Proc {
    Proc::start(&[
        "serve",
        src.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--fps",
        "30",
    ])
}

fn record_from(addr: &str, out: &Path) -> Proc {
    Proc::start(&["record", "--connect", addr, "--out", out.to_str().unwrap()])
}

#[test]
fn a_relay_chain_is_byte_exact_and_heals_when_the_middle_relay_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, img) = write_source_image(tmp.path());
    let files = tmp.path().join("files");
    let files = files.to_str().unwrap();
    let serve = serve_image(&src);
    let s = serve.listen_addr();
    let relay = |upstream: &str, listen: &str| {
        Proc::start(&[
            "relay",
            "--connect",
            upstream,
            "--listen",
            listen,
            "--files-dir",
            files,
            "--report-secs",
            "1",
        ])
    };
    let r1 = relay(&s, "127.0.0.1:0");
    let r1_addr = r1.listen_addr();
    let r2 = relay(&r1_addr, "127.0.0.1:0");
    let r2_addr = r2.listen_addr();
    let out_a = tmp.path().join("a");
    let out_b = tmp.path().join("b");
    let a = record_from(&r2_addr, &out_a);
    let b = record_from(&r2_addr, &out_b);
    wait_for_frames(&out_a, 5);
    wait_for_frames(&out_b, 5);

    // The downstream relay reports each peer: its upstream and both recorders.
    r2.signal("USR2");
    r2.wait_line("3 peer(s)", Duration::from_secs(5));
    // Its upstream is the stream it follows and passes on, marked so.
    let upstream = r2.wait_line("[shown]", Duration::from_secs(5));
    assert!(upstream.contains(&r1_addr), "{upstream}");
    let report = r2.wait_line("latency from capture", Duration::from_secs(5));
    assert!(report.contains("passed on"), "{report}");
    r2.wait_line("out ", Duration::from_secs(5));

    // The middle relay dies without a goodbye: the recorders stop getting frames...
    drop(r1);
    let before = wait_until_still(&[&out_a, &out_b], Duration::from_millis(700));
    // ...and a new one on the same port mends the chain: the relays on either side
    // reconnect by themselves.
    let r1 = relay(&s, &r1_addr);
    assert_eq!(r1.listen_addr(), r1_addr);
    wait_for_frames(&out_a, before[0] + 5);
    wait_for_frames(&out_b, before[1] + 5);
    r2.wait_line("1 reconnects", Duration::from_secs(5));

    for (rec, out) in [(a, &out_a), (b, &out_b)] {
        let (code, summary, lines) = rec.stop_with_summary();
        assert_eq!(code, 0, "{lines:?}");
        assert_eq!(summary["checksum_failures"], 0, "{summary}");
        assert_eq!(summary["protocol_errors"], 0, "{summary}");
        let saved = assert_frames_equal_source(out, &img);
        assert_eq!(summary["frames_saved"], saved as u64, "{summary}");
        assert!(saved >= 10, "{summary}");
    }
    // SIGTERM ends a relay cleanly.
    r2.signal("TERM");
    let (code, lines) = r2.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{lines:?}");
    drop((r1, serve));
}

#[test]
fn a_relay_bridges_two_listening_endpoints_with_frames_and_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, img) = write_source_image(tmp.path());
    let mut serve = Proc::start_with_stdin(&[
        "serve",
        src.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--fps",
        "30",
    ]);
    let s = serve.listen_addr();
    let out = tmp.path().join("rec");
    let record = Proc::start(&[
        "record",
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let v = record.listen_addr();
    // Neither end dials: the relay dials both and listens nowhere.
    let relay = Proc::start(&[
        "relay",
        "--connect",
        &s,
        "--connect",
        &v,
        "--files-dir",
        tmp.path().join("files").to_str().unwrap(),
    ]);
    wait_for_frames(&out, 5);

    // A line typed into the sender reaches the recorder through the bridge.
    serve.type_line("hello through the bridge");
    let chat = out.join("chat.log");
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&chat).is_ok_and(|t| t.contains("hello through the bridge")) {
        assert!(
            Instant::now() < deadline,
            "the text did not reach chat.log: {:?}",
            std::fs::read_to_string(&chat)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    relay.wait_line("hello through the bridge", Duration::from_secs(5));

    let (code, summary, lines) = record.stop_with_summary();
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(summary["checksum_failures"], 0, "{summary}");
    assert_eq!(summary["texts"], 1, "{summary}");
    let saved = assert_frames_equal_source(&out, &img);
    assert!(saved >= 5, "{summary}");
    drop((relay, serve));
}

#[test]
fn a_relay_stores_a_file_and_passes_it_on() {
    let tmp = tempfile::tempdir().unwrap();
    // The sender is a library node (the command line has no way to send a file yet).
    let mut config = fast_config(Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    let sender = Node::start(config).unwrap();
    let s = sender.local_addr().unwrap().to_string();
    let relay_files = tmp.path().join("relay-files");
    let relay = Proc::start(&[
        "relay",
        "--connect",
        &s,
        "--listen",
        "127.0.0.1:0",
        "--files-dir",
        relay_files.to_str().unwrap(),
    ]);
    let r = relay.listen_addr();
    let out = tmp.path().join("rec");
    let _record = record_from(&r, &out);

    // Frames until the recorder has one: then the whole chain is up.
    let geometry = padded_geometry(37, 21);
    let pool = FramePool::new(4);
    let deadline = Instant::now() + PATIENCE;
    let mut seq = 0;
    while saved_frames(&out).is_empty() {
        assert!(Instant::now() < deadline, "no frame reached the recorder");
        sender.publish(&make_frame(&pool, geometry, seq));
        seq += 1;
        std::thread::sleep(Duration::from_millis(30));
    }

    let contents = common::random_bytes(700_000, 7);
    let path = tmp.path().join("notes.bin");
    std::fs::write(&path, &contents).unwrap();
    assert_eq!(sender.send_file(&path).unwrap(), 1, "offered to the relay");
    // The relay keeps a copy, the recorder gets it from the relay, and the sender hears
    // that the relay took it whole.
    wait_for_file(&relay_files.join("notes.bin"), &contents);
    wait_for_file(&out.join("notes.bin"), &contents);
    let ok = common::wait_event(&sender, "the relay's verdict on the file", |e| match e {
        Event::FileSent { ok, .. } => Some(*ok),
        _ => None,
    });
    assert!(ok);
    relay.wait_line("passing notes.bin on to 1 peer(s)", Duration::from_secs(5));
    relay.wait_line("file notes.bin sent: ok", Duration::from_secs(5));
}

#[test]
fn a_full_relay_says_so_to_the_extra_viewer() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, _) = write_source_image(tmp.path());
    let serve = serve_image(&src);
    let s = serve.listen_addr();
    let relay = Proc::start(&[
        "relay",
        "--connect",
        &s,
        "--listen",
        "127.0.0.1:0",
        "--max-viewers",
        "1",
        "--files-dir",
        tmp.path().join("files").to_str().unwrap(),
    ]);
    let r = relay.listen_addr();
    let out_a = tmp.path().join("a");
    let out_b = tmp.path().join("b");
    let _a = record_from(&r, &out_a);
    wait_for_frames(&out_a, 2);
    let b = record_from(&r, &out_b);
    let refusal = b.wait_line("full", Duration::from_secs(10));
    assert!(refusal.contains("serves at most 1"), "{refusal}");
    relay.wait_line("this node is full", Duration::from_secs(5));
    // The first viewer goes on; the second got nothing.
    let before = saved_frames(&out_a).len();
    wait_for_frames(&out_a, before + 3);
    let (code, summary, lines) = b.stop_with_summary();
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(summary["frames_received"], 0, "{summary}");
    assert!(saved_frames(&out_b).is_empty());
}

#[test]
fn a_relay_without_connect_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["relay", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--connect"), "{err}");

    let help = Command::new(BIN)
        .args(["relay", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--connect",
        "--listen",
        "--max-viewers",
        "--files-dir",
        "bridge",
    ] {
        assert!(text.contains(needle), "relay --help lacks {needle}: {text}");
    }
}

#[test]
fn relay_nodes_keep_every_frame_intact_across_hops() {
    // sender → relay → relay → viewer, as library nodes: each frame arrives with its
    // seq, capture time, checksum and every byte (padding included) as published.
    let mut c = fast_config(Role::Sender);
    c.listen = Some("127.0.0.1:0".to_owned());
    let sender = Node::start(c).unwrap();
    let relay_after = |upstream: &Node| {
        let mut c = fast_config(Role::Relay);
        c.listen = Some("127.0.0.1:0".to_owned());
        c.connect = vec![upstream.local_addr().unwrap().to_string()];
        Node::start(c).unwrap()
    };
    let r1 = relay_after(&sender);
    let r2 = relay_after(&r1);
    let mut c = fast_config(Role::Viewer);
    c.connect = vec![r2.local_addr().unwrap().to_string()];
    let viewer = Node::start(c).unwrap();
    common::wait_connected(&viewer, "the viewer reaches the second relay");

    let geometry = padded_geometry(1023, 77);
    let pool = FramePool::new(4);
    // Until the whole chain is up, frames may fall into a gap: publish until one lands.
    let deadline = Instant::now() + PATIENCE;
    let mut seq = 1;
    loop {
        sender.publish(&make_frame(&pool, geometry, seq));
        if let Ok(frame) = viewer.frames().recv_timeout(Duration::from_millis(100)) {
            check_frame(&frame, geometry).unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "no frame crossed the chain");
        seq += 1;
    }
    for seq in seq + 1..seq + 20 {
        let frame = make_frame(&pool, geometry, seq);
        sender.publish(&frame);
        let got = recv_frame(&viewer, &format!("frame {seq}"));
        assert_eq!(got.meta(), frame.meta(), "frame {seq} changed on the way");
        check_frame(&got, geometry).unwrap();
    }
    // Nothing flowed back upstream: neither relay sent a frame to the peer it gets
    // frames from.
    let up = sender.peers();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].frames_received, 0, "the sender got frames back");
    for (name, relay) in [("first", &r1), ("second", &r2)] {
        let upstream: Vec<_> = relay
            .peers()
            .into_iter()
            .filter(|p| p.frames_received > 0)
            .collect();
        assert_eq!(upstream.len(), 1, "{name} relay: one upstream");
        assert_eq!(upstream[0].frames_sent, 0, "{name} relay echoed frames");
    }
}

/// The size of each frame saved in `dir`, in order.
fn saved_sizes(dir: &Path) -> Vec<(u32, u32)> {
    saved_frames(dir)
        .iter()
        .filter_map(|p| image::image_dimensions(p).ok())
        .collect()
}

/// Waits until the sizes of the frames saved in `dir` satisfy `done`; returns them.
fn wait_for_sizes(dir: &Path, what: &str, done: impl Fn(&[(u32, u32)]) -> bool) -> Vec<(u32, u32)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let sizes = saved_sizes(dir);
        if done(&sizes) {
            return sizes;
        }
        assert!(Instant::now() < deadline, "{what}: {sizes:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A listening `record --follow NAME` reached by two senders: once the one named comes,
/// every frame saved is its own, though the other came first and keeps sending.
#[test]
fn a_listening_recorder_follows_the_sender_it_is_told_to_by_name() {
    let out = tempfile::tempdir().unwrap();
    let record = Proc::start(&[
        "record",
        "--listen",
        "127.0.0.1:0",
        "--follow",
        "wanted",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let addr = record.listen_addr();
    let serve = |name: &str, size: &str| {
        Proc::start(&[
            "serve",
            "pattern",
            "--size",
            size,
            "--fps",
            "20",
            "--name",
            name,
            "--connect",
            &addr,
            "--no-announce",
        ])
    };
    let _first = serve("first", "64x40");
    wait_for_sizes(out.path(), "the first sender's frames", |s| s.len() >= 3);
    let _wanted = serve("wanted", "48x30");
    let sizes = wait_for_sizes(out.path(), "the wanted sender's frames", |s| {
        s.iter().filter(|&&f| f == (48, 30)).count() >= 10
    });
    let switched = sizes.iter().position(|&s| s == (48, 30)).unwrap();
    assert!(
        sizes[..switched].iter().all(|&s| s == (64, 40)),
        "{sizes:?}"
    );
    assert!(
        sizes[switched..].iter().all(|&s| s == (48, 30)),
        "after the wanted one came, only its frames: {sizes:?}"
    );
    let (code, summary, _) = record.stop_with_summary();
    assert_eq!(code, 0, "{summary}");
}
