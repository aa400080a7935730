//! `texstream bench` end to end: a short run over loopback reports every frame delivered
//! and verified, and bad flags are refused with a message. No timing is asserted.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_texstream");

#[test]
fn a_short_run_delivers_every_frame_and_reports_json() {
    let out = Command::new(BIN)
        .args([
            "bench", "--width", "320", "--height", "240", "--frames", "30", "--json",
        ])
        .output()
        .expect("texstream bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bench --json printed no JSON object ({e}): {stdout}"));
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
    assert!(
        report["sender"]["peak_rss_mib"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(
        report["viewer"]["peak_rss_mib"].as_f64() > Some(0.0),
        "{report}"
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
