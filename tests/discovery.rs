//! Sources found by name: a listening `serve` announces itself over mDNS (on the
//! loopback interface when it listens on 127.0.0.1) and `texstream list` finds it, with
//! its address, size and rate; it is gone once the source stops; two sources of one
//! name are both listed; `--no-announce` is not.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::proc::{bin, saved_frames, Proc};

/// A name no other test (or other run on this machine) uses.
fn unique(tag: &str) -> String {
    format!("disc {tag} {}", std::process::id())
}

fn serve(name: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "serve",
        "pattern",
        "--size",
        "64x48",
        "--fps",
        "7",
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let p = Proc::start(&args);
    let addr = p.listen_addr();
    (p, addr)
}

/// `texstream list --json` over `secs` seconds: the sources named `name`.
fn listed(name: &str, secs: &str) -> Vec<serde_json::Value> {
    let out = Command::new(bin())
        .args(["list", "--json", "--seconds", secs])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("list --json prints JSON ({e}): {:?}", out.stdout));
    all.into_iter().filter(|s| s["name"] == name).collect()
}

#[test]
fn a_source_is_listed_within_3_s_with_its_figures_and_gone_once_it_stops() {
    let name = unique("one");
    let watch = Proc::start(&["list", "--watch"]);
    let (source, addr) = serve(&name, &[]);
    let appeared = watch.wait_line(&format!("+ {name}"), Duration::from_secs(3));
    assert!(appeared.contains(&addr), "{appeared}");
    let found = listed(&name, "3");
    assert_eq!(found.len(), 1, "{found:?}");
    let s = &found[0];
    assert_eq!(s["addrs"][0], addr.as_str(), "{s}");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(64), Some(48))
    );
    assert_eq!(s["fps"].as_f64(), Some(7.0));
    assert_eq!(s["role"], "sender");
    assert_eq!(
        (s["token"].as_bool(), s["tls"].as_bool()),
        (Some(false), Some(false))
    );

    // A source that stops says goodbye: a browser that saw it drops it at once, and a
    // new listing does not show it.
    source.signal("TERM");
    let (code, _) = source.finish(Duration::from_secs(10));
    assert_eq!(code, 0);
    watch.wait_line(&format!("- {name}"), Duration::from_secs(10));
    assert!(
        listed(&name, "2").is_empty(),
        "a stopped source is not listed"
    );
}

#[test]
fn a_source_killed_without_goodbyes_leaves_a_watching_list_within_10_s() {
    let name = unique("killed");
    let watch = Proc::start(&["list", "--watch"]);
    let (source, _) = serve(&name, &[]);
    watch.wait_line(&format!("+ {name}"), Duration::from_secs(3));
    drop(source); // SIGKILL: no goodbye goes out
    watch.wait_line(&format!("- {name}"), Duration::from_secs(10));
}

#[test]
fn two_sources_of_one_name_are_both_listed_and_told_apart() {
    let name = unique("twin");
    let (_a, addr_a) = serve(&name, &[]);
    let (_b, addr_b) = serve(&name, &["--token", "s3cret"]);
    let found = listed(&name, "3");
    assert_eq!(found.len(), 2, "{found:?}");
    let mut addrs: Vec<&str> = found
        .iter()
        .map(|s| s["addrs"][0].as_str().unwrap())
        .collect();
    addrs.sort();
    let mut expected = vec![addr_a.as_str(), addr_b.as_str()];
    expected.sort();
    assert_eq!(addrs, expected);
    assert_ne!(found[0]["id"], found[1]["id"]);
    let tokens: Vec<bool> = found
        .iter()
        .map(|s| s["token"].as_bool().unwrap())
        .collect();
    assert!(
        tokens.contains(&true) && tokens.contains(&false),
        "{found:?}"
    );
}

#[test]
fn a_source_started_with_no_announce_is_not_listed() {
    let name = unique("quiet");
    let (_quiet, _) = serve(&name, &["--no-announce"]);
    // One announced beside it: the listing works, and still has no quiet one.
    let loud = unique("loud");
    let (_loud, _) = serve(&loud, &[]);
    let out = Command::new(bin())
        .args(["list", "--json", "--seconds", "3"])
        .output()
        .unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(all.iter().any(|s| s["name"] == loud.as_str()), "{all:?}");
    assert!(all.iter().all(|s| s["name"] != name.as_str()), "{all:?}");
}

#[test]
fn list_says_why_when_it_hears_nothing_of_a_name() {
    let out = Command::new(bin())
        .args(["list", "--seconds", "0.5"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // Other tests' sources may be heard; when none is, the reasons are printed.
    if !text.starts_with("NAME") {
        assert!(
            text.contains("UDP port 5353") && text.contains("--connect"),
            "{text}"
        );
    }
    let bad = Command::new(bin())
        .args(["list", "--seconds=-1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--seconds"));
}

/// `record --source NAME --out DIR`, and `extra`.
fn record_by_name(name: &str, out: &std::path::Path, extra: &[&str]) -> Proc {
    let mut args = vec!["record", "--source", name, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

/// Waits until `dir` holds more than `n` saved frames; returns how many it holds.
fn frames_beyond(dir: &std::path::Path, n: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let saved = saved_frames(dir).len();
        if saved > n {
            return saved;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no frame beyond the {n} saved"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn record_finds_a_source_by_name_and_follows_it_to_another_port() {
    let name = unique("moving");
    let out = tempfile::tempdir().unwrap();
    let (first, addr_first) = serve(&name, &[]);
    let record = record_by_name(&name, out.path(), &[]);
    record.wait_line(
        &format!("connected to {addr_first}"),
        Duration::from_secs(10),
    );
    let before = frames_beyond(out.path(), 0);
    // The source stops and comes back on another port, a new process of the same name.
    first.signal("TERM");
    let (code, _) = first.finish(Duration::from_secs(10));
    assert_eq!(code, 0);
    let (_second, addr_second) = serve(&name, &[]);
    assert_ne!(addr_first, addr_second);
    record.wait_line(
        &format!("connected to {addr_second}"),
        Duration::from_secs(15),
    );
    frames_beyond(out.path(), before);
    let (code, summary, _) = record.stop_with_summary();
    assert_eq!(code, 0, "{summary}");
    assert!(summary["reconnects"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["checksum_failures"], 0, "{summary}");
}

#[test]
fn a_name_nobody_announces_is_said_once_and_looked_for_until_the_end() {
    let name = unique("nobody");
    let out = tempfile::tempdir().unwrap();
    let record = record_by_name(&name, out.path(), &["--seconds", "3"]);
    let (code, lines) = record.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{lines:#?}");
    let said = lines
        .iter()
        .filter(|l| l.contains(&format!("no source named \"{name}\" is heard")))
        .count();
    assert_eq!(said, 1, "{lines:#?}");
}

#[test]
fn a_relay_dials_its_upstream_by_name_and_passes_its_frames_on() {
    let name = unique("upstream");
    let (_source, addr) = serve(&name, &[]);
    let relay = Proc::start(&[
        "relay",
        "--source",
        &name,
        "--listen",
        "127.0.0.1:0",
        "--no-announce",
    ]);
    let relay_addr = relay.listen_addr();
    relay.wait_line(&format!("connected to {addr}"), Duration::from_secs(10));
    let out = tempfile::tempdir().unwrap();
    let record = Proc::start(&[
        "record",
        "--connect",
        &relay_addr,
        "--out",
        out.path().to_str().unwrap(),
    ]);
    frames_beyond(out.path(), 2);
    let (code, summary, _) = record.stop_with_summary();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["checksum_failures"], 0, "{summary}");
}
