//! End-to-end tests of the `texstream` binary: `serve` and `record` over loopback, the
//! signals, exit codes and error messages, as a user or a script would meet them.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::proc::{saved_frames, write_source_image, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_texstream");

fn summary(lines: &[String]) -> serde_json::Value {
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON summary in:\n{}", lines.join("\n")));
    serde_json::from_str(line).expect("summary is JSON")
}

/// Waits until `dir` holds at least `n` saved frames.
fn wait_for_frames(dir: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.exists() || saved_frames(dir).len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} frames saved in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

fn run_to_end(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("texstream runs")
}

#[test]
fn serve_and_record_an_image_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, img) = write_source_image(tmp.path());
    let serve = Proc::start(&[
        "serve",
        src.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--fps",
        "30",
    ]);
    let addr = serve.listen_addr();
    let out = tmp.path().join("rec");
    let record = Proc::start(&[
        "record",
        "--connect",
        &addr,
        "--out",
        out.to_str().unwrap(),
        "--frames",
        "5",
    ]);
    let (code, lines) = record.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{lines:?}");
    let s = summary(&lines);
    assert_eq!(s["frames_saved"], 5);
    assert_eq!(s["checksum_failures"], 0);
    assert!(s["bytes_received"].as_u64().unwrap() >= 5 * 203 * 117 * 4);
    assert_eq!(assert_frames_equal_source(&out, &img), 5);
}

#[test]
fn a_second_recorder_joins_and_leaves_while_the_first_keeps_receiving() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, img) = write_source_image(tmp.path());
    let serve = Proc::start(&[
        "serve",
        src.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--fps",
        "40",
    ]);
    let addr = serve.listen_addr();
    let out_a = tmp.path().join("a");
    let out_b = tmp.path().join("b");
    let a = Proc::start(&[
        "record",
        "--connect",
        &addr,
        "--out",
        out_a.to_str().unwrap(),
        "--seconds",
        "4",
    ]);
    std::thread::sleep(Duration::from_millis(1000));
    let b = Proc::start(&[
        "record",
        "--connect",
        &addr,
        "--out",
        out_b.to_str().unwrap(),
        "--frames",
        "10",
    ]);
    let (code_b, lines_b) = b.finish(Duration::from_secs(20));
    assert_eq!(code_b, 0, "{lines_b:?}");
    assert_eq!(summary(&lines_b)["frames_saved"], 10);
    let (code_a, lines_a) = a.finish(Duration::from_secs(20));
    assert_eq!(code_a, 0, "{lines_a:?}");
    let s = summary(&lines_a);
    // 4 s at 40 fps is 160 frames; the first recorder kept receiving throughout.
    let received = s["frames_received"].as_u64().unwrap();
    assert!(
        received >= 100,
        "first recorder got only {received} frames: {s}"
    );
    assert_eq!(s["reconnects"], 0);
    assert_eq!(s["checksum_failures"], 0);
    assert_frames_equal_source(&out_a, &img);
    assert_frames_equal_source(&out_b, &img);
    drop(serve);
}

#[test]
fn signals_list_drop_and_stop_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Proc::start(&[
        "serve",
        "pattern",
        "--size",
        "64x48",
        "--listen",
        "127.0.0.1:0",
        "--fps",
        "50",
    ]);
    let addr = serve.listen_addr();
    let out = tmp.path().join("rec");
    let record = Proc::start(&[
        "record",
        "--connect",
        &addr,
        "--out",
        out.to_str().unwrap(),
        "--seconds",
        "60",
    ]);
    serve.wait_line("connected to", Duration::from_secs(10));
    wait_for_frames(&out, 3);

    // SIGUSR2: the peer list, with the recorder's address and state.
    serve.signal("USR2");
    serve.wait_line("1 peer(s)", Duration::from_secs(5));
    let peer = serve.wait_line("Accepted connected", Duration::from_secs(5));
    assert!(peer.contains("127.0.0.1:"), "{peer}");
    assert!(peer.contains("role=viewer"), "{peer}");

    // SIGUSR1: every peer is dropped; the recorder dials again by itself.
    serve.signal("USR1");
    serve.wait_line("dropped by the operator", Duration::from_secs(5));
    serve.wait_line("connected to", Duration::from_secs(10));
    let before = saved_frames(&out).len();
    wait_for_frames(&out, before + 3);

    // SIGTERM: a goodbye to the peers and exit 0.
    serve.signal("TERM");
    let (code, _) = serve.finish(Duration::from_secs(10));
    assert_eq!(code, 0);
    record.wait_line("shutting down", Duration::from_secs(5));
    record.signal("INT");
    let (code, lines) = record.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{lines:?}");
    let s = summary(&lines);
    assert!(s["reconnects"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["frames_received"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn a_sender_killed_and_restarted_is_followed_without_torn_frames() {
    let tmp = tempfile::tempdir().unwrap();
    // A large frame (3000x2000, 24 MB) so that the kill lands mid-frame.
    let img = image::RgbaImage::from_fn(3000, 2000, |x, y| {
        image::Rgba([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8, 255])
    });
    let src = tmp.path().join("big.png");
    img.save(&src).unwrap();
    let first = Proc::start(&[
        "serve",
        src.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--fps",
        "30",
    ]);
    let addr = first.listen_addr();
    let out = tmp.path().join("rec");
    let record = Proc::start(&[
        "record",
        "--connect",
        &addr,
        "--out",
        out.to_str().unwrap(),
        "--seconds",
        "60",
        "--skip-while-busy",
    ]);
    first.wait_line("connected to", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(700));
    drop(first); // SIGKILL: no goodbye, most likely in the middle of a frame.

    let second = Proc::start(&[
        "serve",
        src.to_str().unwrap(),
        "--listen",
        &addr,
        "--fps",
        "30",
    ]);
    second.listen_addr();
    second.wait_line("connected to", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500));
    record.signal("TERM");
    let (code, lines) = record.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{lines:?}");
    let s = summary(&lines);
    assert!(s["reconnects"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["checksum_failures"], 0, "{s}");
    let saved = assert_frames_equal_source(&out, &img);
    assert!(saved >= 2, "only {saved} frames saved: {s}");
}

#[test]
fn bad_inputs_fail_with_a_clear_message_and_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let not_image = tmp.path().join("notes.txt");
    std::fs::write(&not_image, "not a picture").unwrap();
    let out = run_to_end(&[
        "serve",
        not_image.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a readable image") && err.contains("notes.txt"),
        "{err}"
    );

    let missing = run_to_end(&["serve", "/nonexistent/pic.png", "--listen", "127.0.0.1:0"]);
    assert_eq!(missing.status.code(), Some(4));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let busy = run_to_end(&["serve", "pattern", "--listen", &port, "--seconds", "1"]);
    assert_eq!(busy.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("cannot listen on"));

    let usage = run_to_end(&["serve"]);
    assert_eq!(usage.status.code(), Some(2));
    let fps = run_to_end(&["serve", "pattern", "--fps", "0", "--listen", "127.0.0.1:0"]);
    assert_eq!(fps.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&fps.stderr).contains("--fps"));
}

/// A still image is copied and hashed once, however many frames it makes.
#[test]
fn serve_copies_and_hashes_a_still_image_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = common::proc::write_source_image(tmp.path());
    let out = run_to_end(&[
        "serve",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--fps",
        "60",
        "--seconds",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("stopping after"))
        .unwrap_or_else(|| panic!("no summary line: {err}"));
    let frames: u64 = line
        .split("stopping after ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in {line:?}"));
    assert!(frames >= 20, "{line}");
    assert!(
        line.contains("; 1 picture(s) copied and hashed"),
        "{frames} frames from one copy: {line}"
    );
}

/// Each error says its cause once, and a hint only where it fits.
#[test]
fn errors_name_their_cause_once_and_hint_only_where_it_fits() {
    let missing = run_to_end(&["serve", "/nonexistent/pic.png", "--listen", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("cannot open /nonexistent/pic.png"), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause is said once: {err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let busy = run_to_end(&["serve", "pattern", "--listen", &addr, "--seconds", "1"]);
    let err = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr}"))
            && err.contains("(is another texstream running there?)"),
        "{err}"
    );
    assert_eq!(err.matches("in use").count(), 1, "said once: {err}");

    // A name that does not resolve is no other texstream's fault.
    let unknown = run_to_end(&["serve", "pattern", "--listen", "no-such-host.invalid:7878"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(3), "{err}");
    assert!(
        err.contains("cannot listen on no-such-host.invalid:7878"),
        "{err}"
    );
    assert!(!err.contains("another texstream"), "no wrong hint: {err}");
    assert!(
        !err.contains("without a token"),
        "no warning about a port that never opened: {err}"
    );
    // An image that is not one: its decoder's reason, once.
    let tmp = tempfile::tempdir().unwrap();
    let not_image = tmp.path().join("notes.txt");
    std::fs::write(&not_image, "not a picture").unwrap();
    let bad = run_to_end(&[
        "serve",
        not_image.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("not a readable image"), "{err}");
    assert_eq!(err.matches("not recognized").count(), 1, "said once: {err}");
    // A peer name that does not resolve, for a dialer: the lookup's reason, once.
    let lost = run_to_end(&[
        "send-file",
        not_image.to_str().unwrap(),
        "--connect",
        "no-such-host.invalid:7878",
        "--timeout-secs",
        "1",
    ]);
    let err = String::from_utf8_lossy(&lost.stderr);
    assert_eq!(lost.status.code(), Some(6), "{err}");
    assert!(
        err.contains("no peer at no-such-host.invalid:7878")
            && err.contains("resolving the address"),
        "{err}"
    );
    assert_eq!(
        err.matches("resolving the address").count(),
        1,
        "said once: {err}"
    );
    // An address no interface has.
    let foreign = run_to_end(&["serve", "pattern", "--listen", "192.0.2.1:7878"]);
    let err = String::from_utf8_lossy(&foreign.stderr);
    assert_eq!(foreign.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no network interface here has that address")
            && !err.contains("another texstream"),
        "{err}"
    );
}

#[test]
fn every_subcommand_answers_help() {
    for sub in [
        &["--help"][..],
        &["serve", "--help"],
        &["record", "--help"],
        &["demo", "--help"],
    ] {
        let out = run_to_end(sub);
        assert!(out.status.success(), "{sub:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage"), "{sub:?}: {text}");
    }
    let serve = String::from_utf8_lossy(&run_to_end(&["serve", "--help"]).stdout).into_owned();
    for flag in ["--listen", "--connect", "--fps"] {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
}

#[test]
fn the_demo_streams_the_bundled_image() {
    let out = run_to_end(&["demo", "--headless", "--seconds", "2.5"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("viewer:") && l.contains("connected"))
        .unwrap_or_else(|| panic!("no viewer line:\n{text}"));
    let fps: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(fps > 10.0, "{line}");
}
