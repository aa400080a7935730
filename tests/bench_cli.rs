//! `texstream bench` end to end: a short run over loopback reports every frame delivered
//! and verified (paced by the links, and by acknowledgements), a short `--gpu` run
//! reports every stage, `--raw-tcp` measures the bare floor, and bad flags are refused
//! with a message. No timing is asserted, only how the figures relate. The `--gpu` run skips with a message where there is
//! no GPU adapter, unless TEXSTREAM_REQUIRE_GPU=1 (as in CI), where that is a failure.

use std::process::Command;

use texstream::gpu::Gpu;

const BIN: &str = env!("CARGO_BIN_EXE_texstream");

/// Runs `texstream` with `args`, expects success, returns its one JSON object.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("texstream bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bench --json printed no JSON object ({e}): {stdout}"))
}

#[test]
fn a_short_run_delivers_every_frame_and_reports_json() {
    let report = bench_json(&[
        "bench", "--width", "320", "--height", "240", "--frames", "30", "--json",
    ]);
    let n = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no number {key:?} in {report}"))
    };
    assert_eq!(n("frames_sent"), 30.0, "{report}");
    assert_eq!(n("frames_received"), 30.0, "{report}");
    assert_eq!(n("frames_skipped"), 0.0, "{report}");
    assert_eq!(n("checksum_failures"), 0.0, "{report}");
    assert_eq!(n("frame_bytes"), 320.0 * 240.0 * 4.0, "{report}");
    assert!(n("gbps_total") > 0.0, "{report}");
    assert!(n("fps_per_viewer") > 0.0, "{report}");
    assert!(report["latency_ms"]["max"].as_f64() > Some(0.0), "{report}");
    let tenths = report["latency_p50_ms_by_tenth"]
        .as_array()
        .unwrap_or_else(|| panic!("no latency by tenth: {report}"));
    assert_eq!(tenths.len(), 10, "{report}");
    assert!(tenths.iter().all(|p| p.as_f64() > Some(0.0)), "{report}");
    // Every frame is published after its copy starts: latency from publish is the
    // shorter, frame by frame, hence in every percentile.
    for p in ["p50", "p90", "p99", "max"] {
        let from_publish = report["latency_from_publish_ms"][p].as_f64();
        assert!(from_publish > Some(0.0), "{p}: {report}");
        assert!(
            from_publish <= report["latency_ms"][p].as_f64(),
            "{p}: {report}"
        );
    }
    assert!(
        report["sender"]["peak_rss_mib"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(
        report["viewer"]["peak_rss_mib"].as_f64() > Some(0.0),
        "{report}"
    );
    // Without --gpu: no stage figures.
    assert_eq!(report["gpu"], false, "{report}");
    assert!(report.get("stages_ms").is_none(), "{report}");
    assert!(report.get("end_to_end_ms").is_none(), "{report}");
}

#[test]
fn coded_content_is_delivered_whole_and_its_share_of_raw_reported() {
    let run = |content: &str, codec: &str| {
        bench_json(&[
            "bench",
            "--width",
            "640",
            "--height",
            "360",
            "--frames",
            "40",
            "--content",
            content,
            "--codec",
            codec,
            "--json",
        ])
    };
    let screen = run("screen", "tiles");
    assert_eq!(screen["frames_received"], 40, "{screen}");
    assert_eq!(screen["checksum_failures"], 0, "{screen}");
    assert_eq!(screen["content"], "screen", "{screen}");
    assert_eq!(screen["coding"]["links"][0], "tiles", "{screen}");
    assert_eq!(screen["coding"]["frames_coded"], 40, "{screen}");
    // A moving cursor: after the first frame, a tile or four a frame.
    let share = screen["coding"]["wire_share"].as_f64().expect("a share");
    assert!(share < 0.05, "{screen}");
    // The photo pans: every tile changes every frame; QOI still saves some of it.
    let photo = run("photo", "tiles");
    assert_eq!(photo["frames_received"], 40, "{photo}");
    let share = photo["coding"]["wire_share"].as_f64().expect("a share");
    assert!((0.3..0.95).contains(&share), "{photo}");
    // Raw: nothing coded, every byte on the wire.
    let raw = run("pattern", "raw");
    assert_eq!(raw["coding"]["frames_coded"], 0, "{raw}");
    assert_eq!(raw["coding"]["wire_share"], 1.0, "{raw}");
}

#[test]
fn paced_by_acknowledgements_every_frame_arrives_too() {
    let report = bench_json(&[
        "bench",
        "--width",
        "320",
        "--height",
        "240",
        "--frames",
        "25",
        "--in-flight",
        "1",
        "--json",
    ]);
    assert_eq!(report["in_flight"], 1, "{report}");
    assert_eq!(report["frames_received"], 25, "{report}");
    assert_eq!(report["frames_skipped"], 0, "{report}");
    assert_eq!(report["frames_dropped"], 0, "{report}");
}

#[test]
fn raw_tcp_moves_the_same_frames_over_a_bare_connection() {
    let report = bench_json(&[
        "bench",
        "--raw-tcp",
        "--width",
        "320",
        "--height",
        "240",
        "--frames",
        "50",
        "--json",
    ]);
    assert_eq!(report["mode"], "raw-tcp", "{report}");
    assert_eq!(report["frames_sent"], 50, "{report}");
    assert_eq!(report["frames_received"], 50, "{report}");
    assert_eq!(report["frame_bytes"], 320 * 240 * 4, "{report}");
    assert!(report["gbps_per_viewer"].as_f64() > Some(0.0), "{report}");
    let l = &report["latency_ms"];
    assert!(l["p50"].as_f64() > Some(0.0), "{report}");
    assert!(l["p50"].as_f64() <= l["max"].as_f64(), "{report}");
    // Paced: as many frames as asked for, at that pace.
    let paced = bench_json(&[
        "bench",
        "--raw-tcp",
        "--width",
        "64",
        "--height",
        "64",
        "--fps",
        "100",
        "--frames",
        "20",
        "--json",
    ]);
    assert_eq!(paced["frames_received"], 20, "{paced}");
    assert!(paced["elapsed_secs"].as_f64() > Some(0.15), "{paced}");
}

#[test]
fn a_short_gpu_run_reports_every_stage() {
    match Gpu::headless() {
        Ok(gpu) => eprintln!("on {} ({:?})", gpu.info.name, gpu.info.backend),
        Err(e) if std::env::var("TEXSTREAM_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("TEXSTREAM_REQUIRE_GPU=1 but no GPU: {e}")
        }
        Err(e) => {
            eprintln!("a_short_gpu_run_reports_every_stage: skipped, no GPU adapter: {e}");
            return;
        }
    }
    // An odd width: the readback's padded rows travel as they are.
    let report = bench_json(&[
        "bench", "--gpu", "--width", "333", "--height", "200", "--frames", "20", "--json",
    ]);
    assert_eq!(report["gpu"], true, "{report}");
    assert!(
        report["gpu_adapter"]
            .as_str()
            .is_some_and(|a| !a.is_empty()),
        "{report}"
    );
    assert_eq!(report["frames_sent"], 20, "{report}");
    assert_eq!(report["frames_received"], 20, "{report}");
    assert_eq!(report["checksum_failures"], 0, "{report}");
    // 333 * 4 bytes padded to 1536 per row.
    assert_eq!(report["frame_bytes"], 1536 * 200, "{report}");
    let figures = |l: &serde_json::Value| -> [f64; 4] {
        ["p50", "p90", "p99", "max"].map(|k| {
            l[k].as_f64()
                .unwrap_or_else(|| panic!("no number {k:?} in {l}"))
        })
    };
    for stage in [
        "render_readback",
        "copy_hash",
        "queue",
        "wire_verify",
        "upload",
        "verify_estimate",
    ] {
        let [p50, p90, p99, max] = figures(&report["stages_ms"][stage]);
        assert!(
            0.0 <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
            "stage {stage}: {report}"
        );
    }
    // Stages that do work take some time; a frame's whole way takes more.
    for stage in ["render_readback", "wire_verify", "upload"] {
        assert!(
            report["stages_ms"][stage]["max"].as_f64() > Some(0.0),
            "stage {stage}: {report}"
        );
    }
    let [p50, _, p99, _] = figures(&report["end_to_end_ms"]);
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
}

/// With `--fps max` the sender keeps its readback ring full, as the window's capture
/// thread does: frame n renders while the ones before it map, so more than one readback
/// is in flight (exactly one each time when every frame is waited for before the next).
#[test]
fn a_gpu_run_at_fps_max_keeps_several_readbacks_in_flight() {
    match Gpu::headless() {
        Ok(gpu) => eprintln!("on {} ({:?})", gpu.info.name, gpu.info.backend),
        Err(e) if std::env::var("TEXSTREAM_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("TEXSTREAM_REQUIRE_GPU=1 but no GPU: {e}")
        }
        Err(e) => {
            eprintln!("a_gpu_run_at_fps_max_keeps_several_readbacks_in_flight: skipped, no GPU adapter: {e}");
            return;
        }
    }
    let report = bench_json(&[
        "bench", "--gpu", "--fps", "max", "--width", "640", "--height", "360", "--frames", "30",
        "--json",
    ]);
    assert_eq!(report["frames_received"], 30, "{report}");
    assert_eq!(report["checksum_failures"], 0, "{report}");
    let in_flight = &report["readbacks_in_flight"];
    let peak = in_flight["peak"].as_u64();
    let mean = in_flight["mean"].as_f64();
    assert!(
        peak > Some(1),
        "never more than one readback in flight: {report}"
    );
    assert!(
        peak <= Some(3),
        "more in flight than the ring holds: {report}"
    );
    assert!(
        mean > Some(1.0) && mean <= peak.map(|p| p as f64),
        "{report}"
    );
    // Taken in order: every frame rendered is published, but the ring's last few.
    let rendered = in_flight["frames_rendered"].as_u64().unwrap_or(0);
    assert!((30..=33).contains(&rendered), "{report}");
    // The table says it too.
    let out = Command::new(BIN)
        .args([
            "bench", "--gpu", "--width", "64", "--height", "64", "--frames", "5",
        ])
        .output()
        .expect("texstream bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("readbacks in flight at the sender, as each frame was submitted: peak "),
        "{stdout}"
    );
}

#[test]
fn bad_flags_exit_non_zero_with_a_message() {
    for args in [
        &["bench", "--fps", "fast"][..],
        &["bench", "--width", "0"],
        &["bench", "--frames", "10", "--seconds", "2"],
        &["bench", "--viewers", "0"],
        &["bench", "--chunk", "0"],
        &["bench", "--raw-tcp", "--slow-viewer"],
        &["bench", "--in-flight", "0"],
        &["bench", "--content", "/no/such/picture.png"],
        &["bench", "--codec", "h264"],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .output()
            .expect("texstream bench runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error"),
            "{args:?} exited without saying why: {stderr}"
        );
    }
}

#[test]
fn raw_tcp_refuses_what_a_bare_connection_cannot_do() {
    for extra in [&["--viewers", "2"][..], &["--tls"], &["--in-flight", "2"]] {
        let out = Command::new(BIN)
            .args(["bench", "--raw-tcp", "--frames", "1"])
            .args(extra)
            .output()
            .expect("texstream bench runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(
            stderr.contains("--raw-tcp measures one bare TCP connection"),
            "{extra:?}: {stderr}"
        );
    }
}
