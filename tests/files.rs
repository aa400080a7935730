//! Files over live links: a transfer cut by a dropped connection resumes, frames keep
//! flowing beside a file, cancels in both directions, hostile names, a vanished file
//! and an unusable receive folder; and through the binary, a 300 MB and a 0-byte file
//! with frames streaming and peak memory far below the file size.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::proc::{bin, Proc};
use common::proxy::Proxy;
use common::*;
use texstream::net::{
    Direction, Event, Node, PeerState, TransferId, TransferState, TransferStatus,
};
use texstream::protocol::{Capabilities, FileAccept, FileOffer, Message, Role};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A viewer that takes files into `dir` and dials `addr`.
fn receiving_viewer(addr: SocketAddr, dir: &Path) -> Node {
    let mut c = fast_config(Role::Viewer);
    c.name = "receiver".into();
    c.connect = vec![addr.to_string()];
    c.files_dir = Some(dir.to_owned());
    Node::start(c).unwrap()
}

fn transfer(node: &Node, direction: Direction) -> Option<TransferStatus> {
    node.transfers()
        .into_iter()
        .find(|t| t.direction == direction)
}

/// Polls `node`'s transfers until `check` holds.
fn wait_transfer(
    node: &Node,
    what: &str,
    mut check: impl FnMut(&[TransferStatus]) -> bool,
) -> Vec<TransferStatus> {
    let deadline = Instant::now() + 3 * PATIENCE;
    loop {
        let all = node.transfers();
        if check(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; transfers: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn file_sent(node: &Node) -> (bool, String) {
    wait_event_for(node, 3 * PATIENCE, "the receiver's verdict", |e| match e {
        Event::FileSent { ok, message, .. } => Some((*ok, message.clone())),
        _ => None,
    })
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// Resume, frames beside files, cancels
// ---------------------------------------------------------------------------------------

/// The receiver is back on a new connection while the sender's old one still looks
/// alive (its far end vanished without a word): when that one finally times out, the
/// transfer resumes on the new connection, not on the dead one.
#[test]
fn a_transfer_resumes_when_the_old_connection_ends_after_the_peer_is_back() {
    let files = tempfile::tempdir().unwrap();
    let received = tempfile::tempdir().unwrap();
    let content = random_bytes(16 << 20, 11);
    let path = write_file(files.path(), "late.bin", &content);

    let sender = listening_sender("file sender");
    let proxy = Proxy::start(listen_addr(&sender), 40_000_000);
    let viewer = receiving_viewer(proxy.addr, received.path());
    wait_connected(&sender, "the receiver connects through the proxy");
    wait_connected(&viewer, "the receiver is connected");

    sender.offer_file(&path, None).unwrap();
    wait_transfer(&viewer, "a quarter of the file to arrive", |all| {
        all.iter().any(|t| t.done_bytes >= content.len() as u64 / 4)
    });
    proxy.cut_dialer_side();
    // The receiver redials at once; the sender serves the new connection beside the
    // old, silent one.
    let deadline = Instant::now() + PATIENCE;
    while sender.peers().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the receiver came back beside the old link"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let (ok, message) = file_sent(&sender);
    assert!(ok, "the file was confirmed after the resume: {message}");
    let stored = wait_event_for(&viewer, PATIENCE, "the stored file", |e| match e {
        Event::FileReceived { path, .. } => Some(path.clone()),
        _ => None,
    });
    assert!(std::fs::read(&stored).unwrap() == content, "bytes equal");
    let outgoing = transfer(&sender, Direction::Outgoing).unwrap();
    assert!(matches!(outgoing.state, TransferState::Done { .. }));
    assert_eq!(outgoing.resumes, 1, "the sender resumed once");
}

#[test]
fn a_transfer_cut_by_a_dropped_connection_resumes_and_completes() {
    let files = tempfile::tempdir().unwrap();
    let received = tempfile::tempdir().unwrap();
    let content = random_bytes(24 << 20, 7);
    let path = write_file(files.path(), "resume me.bin", &content);

    let sender = listening_sender("file sender");
    let proxy = Proxy::start(listen_addr(&sender), 40_000_000);
    let viewer = receiving_viewer(proxy.addr, received.path());
    wait_connected(&sender, "the receiver connects through the proxy");
    wait_connected(&viewer, "the receiver is connected");

    let ids = sender.offer_file(&path, None).unwrap();
    assert_eq!(ids.len(), 1, "one peer takes files");
    wait_transfer(&viewer, "a quarter of the file to arrive", |all| {
        all.iter().any(|t| t.done_bytes >= content.len() as u64 / 4)
    });
    proxy.cut();

    let (ok, message) = file_sent(&sender);
    assert!(ok, "the file was confirmed after the resume: {message}");
    let stored = wait_event_for(&viewer, PATIENCE, "the stored file", |e| match e {
        Event::FileReceived { path, .. } => Some(path.clone()),
        _ => None,
    });
    assert_eq!(stored, received.path().join("resume me.bin"));
    assert!(std::fs::read(&stored).unwrap() == content, "bytes equal");

    let incoming = transfer(&viewer, Direction::Incoming).unwrap();
    let outgoing = transfer(&sender, Direction::Outgoing).unwrap();
    assert!(matches!(incoming.state, TransferState::Done { .. }));
    assert!(matches!(outgoing.state, TransferState::Done { .. }));
    assert_eq!(incoming.resumes, 1, "the receiver resumed once");
    assert_eq!(outgoing.resumes, 1, "the sender resumed once");
    assert_eq!(incoming.path.as_deref(), Some(stored.as_path()));
    // Started over, the file would have crossed the proxy more than once and a quarter.
    let passed = proxy.to_dialer.load(Relaxed);
    assert!(
        passed < content.len() as u64 * 5 / 4,
        "{passed} bytes crossed for a {} byte file: it resumed, not restarted",
        content.len()
    );
    assert_eq!(
        listing(received.path()),
        ["resume me.bin"],
        "no partial file left"
    );
}

#[test]
fn frames_keep_flowing_while_a_file_crosses_and_the_file_is_not_starved() {
    let files = tempfile::tempdir().unwrap();
    let received = tempfile::tempdir().unwrap();
    let content = random_bytes(64 << 20, 3);
    let path = write_file(files.path(), "beside.bin", &content);
    let sender = listening_sender("sender");
    let viewer = receiving_viewer(listen_addr(&sender), received.path());
    wait_connected(&sender, "viewer connects");
    wait_connected(&viewer, "viewer connected");

    // The viewer sends the file upstream while the sender streams 1080p frames down.
    let geometry = padded_geometry(1920, 1080);
    let pool = texstream::frame::FramePool::new(4);
    let ids = viewer.offer_file(&path, None).unwrap();
    assert!(
        ids.is_empty(),
        "a sender without a files folder takes no files"
    );

    // The other way round: the sender sends a file to the viewer, frames flowing. One
    // frame's pixels are made once and published under new numbers (as a still image
    // is), so that making and checking 8 MB per frame here does not set the pace.
    let ids = sender.offer_file(&path, None).unwrap();
    assert_eq!(ids.len(), 1);
    let template = make_frame(&pool, geometry, 0);
    let mut seq = 0;
    let mut frames_during = 0;
    let start = Instant::now();
    let done = loop {
        seq += 1;
        sender.publish(&template.with_seq(seq, capture_us_for(seq)));
        while let Ok(frame) = viewer.frames().try_recv() {
            let m = frame.meta();
            assert_eq!((m.width, m.height), (geometry.width, geometry.height));
            assert!(
                frame.pixels() == template.pixels(),
                "frame {} intact",
                m.seq
            );
            frames_during += 1;
        }
        if let Ok(Event::FileSent { ok, message, .. }) = sender.events().try_recv() {
            break (ok, message);
        }
        assert!(start.elapsed() < 3 * PATIENCE, "the file never finished");
        std::thread::sleep(Duration::from_millis(4));
    };
    assert!(done.0, "file confirmed: {}", done.1);
    assert!(
        frames_during >= 3,
        "only {frames_during} frames arrived in the {:?} the file took to cross",
        start.elapsed()
    );
    let stored = std::fs::read(received.path().join("beside.bin")).unwrap();
    assert!(stored == content, "bytes equal");
}

/// Frames the viewer takes in `secs` while the sender publishes a small frame every
/// 5 ms (counted by the viewer's node, so none is missed between two looks).
fn frames_in(
    sender: &Node,
    viewer: &Node,
    secs: f64,
    template: &texstream::frame::Frame,
    seq: &mut u64,
) -> u64 {
    let before = viewer.stats().frames_received;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        *seq += 1;
        sender.publish(&template.with_seq(*seq, capture_us_for(*seq)));
        while viewer.frames().try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(5));
    }
    viewer.stats().frames_received - before
}

#[test]
fn a_slow_disk_at_the_receiver_never_slows_the_frames_of_the_same_link() {
    let files = tempfile::tempdir().unwrap();
    let received = tempfile::tempdir().unwrap();
    // 32 MiB through a disk that takes 20 ms for each 256 KiB piece: about 2.6 s, most
    // of it more than the receiver's queue for the disk holds.
    let content = random_bytes(32 << 20, 5);
    let path = write_file(files.path(), "slow.bin", &content);
    let sender = listening_sender("sender");
    let mut c = fast_config(Role::Viewer);
    c.connect = vec![listen_addr(&sender).to_string()];
    c.files_dir = Some(received.path().to_owned());
    c.file_write_delay = Duration::from_millis(20);
    let viewer = Node::start(c).unwrap();
    wait_connected(&sender, "viewer connects");
    wait_connected(&viewer, "viewer connected");

    let pool = texstream::frame::FramePool::new(4);
    let template = make_frame(&pool, padded_geometry(64, 64), 0);
    let mut seq = 0;
    let alone = frames_in(&sender, &viewer, 1.0, &template, &mut seq);
    assert_eq!(sender.offer_file(&path, None).unwrap().len(), 1);
    let beside = frames_in(&sender, &viewer, 1.5, &template, &mut seq) as f64 / 1.5;
    let in_flight = transfer(&viewer, Direction::Incoming).unwrap();
    assert!(
        in_flight.state == TransferState::Running && in_flight.done_bytes < content.len() as u64,
        "the file was still crossing the slow disk: {in_flight:?}"
    );
    assert!(
        beside >= 0.8 * alone as f64,
        "{beside:.0} frames/s beside the slow file, {alone} alone"
    );
    let deadline = Instant::now() + 3 * PATIENCE;
    let (ok, message) = loop {
        if let Ok(Event::FileSent { ok, message, .. }) = sender.events().try_recv() {
            break (ok, message);
        }
        assert!(Instant::now() < deadline, "the file never finished");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(ok, "file confirmed: {message}");
    let stored = std::fs::read(received.path().join("slow.bin")).unwrap();
    assert!(stored == content, "bytes equal");
}

#[test]
fn cancelling_either_side_stops_the_transfer_and_leaves_no_partial_file() {
    let files = tempfile::tempdir().unwrap();
    let received = tempfile::tempdir().unwrap();
    // Larger than what the sender's queue and the sockets hold, so that it is still
    // streaming when cancelled.
    let content = random_bytes(64 << 20, 11);
    let path = write_file(files.path(), "cancel me.bin", &content);
    let sender = listening_sender("sender");
    let proxy = Proxy::start(listen_addr(&sender), 20_000_000);
    let viewer = receiving_viewer(proxy.addr, received.path());
    wait_connected(&sender, "viewer connects");
    wait_connected(&viewer, "viewer connected");

    // The sender cancels.
    sender.offer_file(&path, None).unwrap();
    wait_transfer(&viewer, "bytes to arrive", |all| {
        all.iter().any(|t| t.done_bytes > 1 << 20)
    });
    let id = transfer(&sender, Direction::Outgoing).unwrap().id;
    sender.cancel_transfer(id);
    let reason = wait_event_for(&viewer, PATIENCE, "the receiver hears", |e| match e {
        Event::FileFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("cancelled by the sender"), "{reason}");
    let (ok, message) = file_sent(&sender);
    assert!(!ok && message.contains("cancelled"), "{message}");
    assert!(listing(received.path()).is_empty(), "no partial file");

    // The receiver cancels.
    sender.clear_finished_transfers();
    viewer.clear_finished_transfers();
    sender.offer_file(&path, None).unwrap();
    let incoming = wait_transfer(&viewer, "bytes to arrive again", |all| {
        all.iter().any(|t| t.done_bytes > 1 << 20)
    });
    viewer.cancel_transfer(incoming[0].id);
    let (ok, message) = file_sent(&sender);
    assert!(!ok, "the sender hears it failed");
    assert!(message.contains("cancelled by the receiver"), "{message}");
    wait_transfer(&sender, "the sender's row to fail", |all| {
        all.iter()
            .all(|t| matches!(t.state, TransferState::Failed { .. }))
    });
    assert!(listing(received.path()).is_empty(), "no partial file");
    // The link is still up and still carries files.
    let small = write_file(files.path(), "after.txt", b"still here");
    sender.offer_file(&small, None).unwrap();
    let (ok, message) = file_sent(&sender);
    assert!(ok, "{message}");
    assert_eq!(listing(received.path()), ["after.txt"]);
}

#[test]
fn a_transfer_waiting_to_resume_can_be_cancelled_and_shutdown_cleans_up() {
    let files = tempfile::tempdir().unwrap();
    let received = tempfile::tempdir().unwrap();
    let path = write_file(files.path(), "paused.bin", &random_bytes(8 << 20, 5));
    let sender = listening_sender("sender");
    let proxy = Proxy::start(listen_addr(&sender), 4_000_000);
    let viewer = receiving_viewer(proxy.addr, received.path());
    wait_connected(&sender, "viewer connects");
    sender.offer_file(&path, None).unwrap();
    wait_transfer(&viewer, "bytes to arrive", |all| {
        all.iter().any(|t| t.done_bytes > 0)
    });
    // The sender goes away: the receiver keeps the partial file, paused.
    drop(proxy);
    sender.shutdown();
    let paused = wait_transfer(&viewer, "the receiver to pause", |all| {
        all.iter()
            .any(|t| matches!(t.state, TransferState::Paused { .. }))
    });
    assert_eq!(
        listing(received.path()).len(),
        1,
        "the partial file is kept to resume"
    );
    viewer.cancel_transfer(paused[0].id);
    let all = viewer.transfers();
    assert!(
        matches!(&all[0].state, TransferState::Failed { reason } if reason == "cancelled"),
        "{all:?}"
    );
    assert!(listing(received.path()).is_empty(), "the partial file went");
}

// ---------------------------------------------------------------------------------------
// Hostile names, a vanished file, an unusable folder
// ---------------------------------------------------------------------------------------

/// A raw peer that sends files to a node taking them into `dir`.
fn raw_file_sender(dir: &Path) -> (Node, RawPeer) {
    let mut c = fast_config(Role::Sender);
    c.listen = Some("127.0.0.1:0".into());
    c.files_dir = Some(dir.to_owned());
    let node = Node::start(c).unwrap();
    let (peer, _) = RawPeer::handshaken(
        listen_addr(&node),
        raw_hello(Role::FileClient, Capabilities::TEXT, "raw files"),
    );
    (node, peer)
}

/// Skips pings and frames; returns the next file message.
fn next_file_message(peer: &mut RawPeer) -> Message {
    loop {
        match peer.read_message() {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

#[test]
fn hostile_names_land_inside_the_receive_folder_or_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("inbox");
    std::fs::create_dir(&dir).unwrap();
    let (node, mut peer) = raw_file_sender(&dir);
    let long = "n".repeat(10_000);
    let names: [(&str, &str); 6] = [
        ("../../etc/x", "x"),
        ("/abs", "abs"),
        ("a/b", "b"),
        ("CON", "_CON"),
        ("line\nbreak.txt", "line_break.txt"),
        // Cut to the wire limit (1024 bytes) by the encoder, then to 200 by the node.
        (&long, ""),
    ];
    for (i, (name, expected)) in names.iter().enumerate() {
        let id = 100 + i as u64;
        let body = format!("file {i}").into_bytes();
        peer.send_msg(&Message::FileOffer(FileOffer {
            id,
            size: body.len() as u64,
            name: (*name).to_owned(),
        }));
        assert_eq!(
            next_file_message(&mut peer),
            Message::FileAccept(FileAccept { id, offset: 0 }),
            "{name:?} is accepted"
        );
        peer.send_whole_file(id, &body);
        let Message::FileResult(result) = next_file_message(&mut peer) else {
            panic!("a result for {name:?}");
        };
        assert!(result.ok, "{name:?}: {}", result.message);
        let stored = if expected.is_empty() {
            "n".repeat(200)
        } else {
            (*expected).to_owned()
        };
        assert_eq!(result.message, format!("stored as {stored}"));
        assert_eq!(std::fs::read(dir.join(&stored)).unwrap(), body);
    }
    // Nothing was written outside the folder.
    assert_eq!(listing(root.path()), ["inbox"]);
    assert_eq!(listing(&dir).len(), names.len());
    assert!(!Path::new("/abs").exists() && !root.path().join("etc").exists());

    // A name longer than the wire allows is refused with a clear reason, and only this
    // connection closes.
    let mut raw = vec![0x40];
    let name = "y".repeat(10_000);
    let body_len = 8 + 8 + 2 + name.len();
    raw.extend_from_slice(&(body_len as u32).to_le_bytes());
    raw.extend_from_slice(&7u64.to_le_bytes());
    raw.extend_from_slice(&1u64.to_le_bytes());
    raw.extend_from_slice(&(name.len() as u16).to_le_bytes());
    raw.extend_from_slice(name.as_bytes());
    peer.send(&raw);
    let messages = peer.messages_until_closed(PATIENCE, "an over-long name");
    let goodbye = messages
        .iter()
        .find_map(|m| match m {
            Message::Goodbye { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a goodbye with the reason");
    assert!(
        goodbye.contains("file-offer") || goodbye.contains("length"),
        "{goodbye}"
    );
    assert_eq!(listing(&dir).len(), names.len(), "nothing more was written");
    assert!(node.stats().protocol_errors >= 1);
}

#[test]
fn a_file_that_vanished_before_sending_fails_with_a_clear_reason_and_the_link_lives() {
    let files = tempfile::tempdir().unwrap();
    let path = write_file(files.path(), "gone.bin", b"soon gone");
    let sender = listening_sender("sender");
    let (mut peer, _) = RawPeer::handshaken(
        listen_addr(&sender),
        raw_hello(
            Role::Viewer,
            Capabilities::FRAMES_IN | Capabilities::TEXT | Capabilities::FILES_IN,
            "raw receiver",
        ),
    );
    wait_connected(&sender, "the raw receiver");
    sender.offer_file(&path, None).unwrap();
    let Message::FileOffer(offer) = next_file_message(&mut peer) else {
        panic!("an offer");
    };
    std::fs::remove_file(&path).unwrap();
    peer.send_msg(&Message::FileAccept(FileAccept {
        id: offer.id,
        offset: 0,
    }));
    let Message::FileCancel(cancel) = next_file_message(&mut peer) else {
        panic!("a cancel");
    };
    assert!(cancel.reason.contains("cannot open"), "{}", cancel.reason);
    assert!(cancel.reason.contains("gone.bin"), "{}", cancel.reason);
    let (ok, message) = file_sent(&sender);
    assert!(!ok && message.contains("cannot open"), "{message}");
    // The connection goes on: text still arrives.
    sender.send_text("still here");
    let Message::Text(text) = next_file_message(&mut peer) else {
        panic!("text after the failure");
    };
    assert_eq!(text.body, "still here");
    assert!(sender
        .peers()
        .iter()
        .all(|p| p.state == PeerState::Connected));
}

#[test]
fn an_unusable_receive_folder_fails_the_file_on_both_sides_and_the_stream_goes_on() {
    let files = tempfile::tempdir().unwrap();
    let path = write_file(files.path(), "doc.txt", b"hello");
    // The "folder" is a regular file: it cannot be created, also not by root.
    let not_a_dir = write_file(files.path(), "not a folder", b"");
    let sender = listening_sender("sender");
    let viewer = receiving_viewer(listen_addr(&sender), &not_a_dir);
    wait_connected(&sender, "viewer connects");
    wait_connected(&viewer, "viewer connected");
    sender.offer_file(&path, None).unwrap();
    let (ok, message) = file_sent(&sender);
    assert!(!ok, "refused");
    assert!(
        message.contains("cannot create receive folder") && message.contains("not a folder"),
        "{message}"
    );
    let out = transfer(&sender, Direction::Outgoing).unwrap();
    assert!(matches!(out.state, TransferState::Failed { .. }));
    lockstep(&sender, &[&viewer], padded_geometry(64, 48), 0..=2);
}

#[test]
fn a_zero_byte_file_arrives_and_an_id_is_never_reused_for_another_transfer() {
    let files = tempfile::tempdir().unwrap();
    let received = tempfile::tempdir().unwrap();
    let empty = write_file(files.path(), "empty", b"");
    let sender = listening_sender("sender");
    let _viewer = receiving_viewer(listen_addr(&sender), received.path());
    wait_connected(&sender, "viewer connects");
    let first = sender.offer_file(&empty, None).unwrap();
    assert!(file_sent(&sender).0);
    let second = sender.offer_file(&empty, None).unwrap();
    assert!(file_sent(&sender).0);
    assert_ne!(first, second);
    assert_eq!(listing(received.path()), ["empty", "empty (1)"]);
    assert_eq!(
        std::fs::metadata(received.path().join("empty"))
            .unwrap()
            .len(),
        0
    );
    let all: Vec<TransferId> = sender.transfers().iter().map(|t| t.id).collect();
    assert_eq!(all.len(), 2);
}

// ---------------------------------------------------------------------------------------
// The binary: send-file, record, serve
// ---------------------------------------------------------------------------------------

/// XXH3 of a file, read in pieces.
fn file_hash(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.digest();
        }
        h.update(&buf[..n]);
    }
}

#[test]
fn send_file_moves_300_mb_and_an_empty_file_beside_frames_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let big = dir.path().join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        for i in 0..300u64 {
            f.write_all(&random_bytes(1_000_000, i)).unwrap();
        }
    }
    let empty = write_file(dir.path(), "empty.bin", b"");

    let serve = Proc::start(&[
        "serve",
        "pattern",
        "--size",
        "640x360",
        "--fps",
        "30",
        "--listen",
        "127.0.0.1:0",
    ]);
    let serve_addr = serve.listen_addr();
    let record = Proc::start(&[
        "record",
        "--connect",
        &serve_addr,
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().unwrap(),
        "--skip-while-busy",
    ]);
    let record_addr = record.listen_addr();
    let sent = Command::new(bin())
        .args(["send-file", "--json", "--connect", &record_addr])
        .arg(&big)
        .arg(&empty)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "send-file failed: {stdout}\n{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let reports = summary["files"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r["ok"] == true), "{summary}");
    let sender_rss = summary["peak_rss_mib"].as_f64().unwrap();

    // send-file exits 0 only after the receiver confirmed: the files are in place.
    assert_eq!(file_hash(&out.join("big.bin")), file_hash(&big));
    assert_eq!(std::fs::metadata(out.join("empty.bin")).unwrap().len(), 0);

    let (code, rec, lines) = record.stop_with_summary();
    assert_eq!(code, 0, "{rec}");
    drop(serve);
    assert_eq!(rec["files_received"], 2, "{rec}");
    // Each file is told once: the library reports it, the command logs it.
    for name in ["big.bin", "empty.bin"] {
        let told = lines
            .iter()
            .filter(|l| l.contains(&format!("received file {name}")))
            .count();
        assert_eq!(told, 1, "lines telling {name} arrived: {lines:#?}");
    }
    assert_eq!(rec["checksum_failures"], 0, "{rec}");
    assert!(
        rec["frames_received"].as_u64().unwrap() > 0,
        "frames streamed: {rec}"
    );
    let receiver_rss = rec["peak_rss_mib"].as_f64().unwrap();
    // Far below the 286 MiB file: both stream through fixed-size buffers.
    assert!(sender_rss < 64.0, "send-file peaked at {sender_rss} MiB");
    assert!(receiver_rss < 96.0, "record peaked at {receiver_rss} MiB");
}

#[test]
fn send_file_says_why_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    // Missing file: 4, before dialing anything.
    let missing = Command::new(bin())
        .args(["send-file", "/no/such/file", "--connect", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/file"));

    // Nobody there: 6.
    let file = write_file(dir.path(), "f.txt", b"x");
    let nobody = Command::new(bin())
        .args([
            "send-file",
            "--timeout-secs",
            "1",
            "--connect",
            "127.0.0.1:1",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no peer at 127.0.0.1:1"));

    // A peer that takes no files (serve without --files-dir would take them into the
    // default folder; a viewer node without a folder does not): 6 with the reason.
    let mut c = fast_config(Role::Viewer);
    c.listen = Some("127.0.0.1:0".into());
    let viewer = Node::start(c).unwrap();
    let refusing = Command::new(bin())
        .args(["send-file", "--timeout-secs", "2", "--connect"])
        .arg(listen_addr(&viewer).to_string())
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(refusing.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&refusing.stderr).contains("does not take files"),
        "{}",
        String::from_utf8_lossy(&refusing.stderr)
    );

    // The receiver refuses (its folder is unusable): 5 with its reason.
    let not_a_dir = write_file(dir.path(), "plain", b"");
    let mut c = fast_config(Role::Viewer);
    c.listen = Some("127.0.0.1:0".into());
    c.files_dir = Some(not_a_dir);
    let receiver = Node::start(c).unwrap();
    let refused = Command::new(bin())
        .args(["send-file", "--connect"])
        .arg(listen_addr(&receiver).to_string())
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot create receive folder"), "{stderr}");
}

#[test]
fn a_write_error_mid_file_fails_that_file_on_both_sides_and_the_stream_goes_on() {
    // A file-size limit (prlimit --fsize) makes the receiver's writes fail part-way,
    // as a full disk would.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let big = write_file(dir.path(), "too big.bin", &random_bytes(5_000_000, 9));
    let serve = Proc::start(&[
        "serve",
        "pattern",
        "--size",
        "320x240",
        "--fps",
        "30",
        "--listen",
        "127.0.0.1:0",
    ]);
    let serve_addr = serve.listen_addr();
    let mut prlimit = Command::new("prlimit");
    prlimit
        .arg("--fsize=2000000")
        .arg(bin())
        .args(["record", "--connect", &serve_addr])
        .args(["--listen", "127.0.0.1:0", "--skip-while-busy", "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn");
    let mut record = Proc::start_command(prlimit, "prlimit (util-linux) runs texstream");
    let record_addr = record.listen_addr();

    let sent = Command::new(bin())
        .args(["send-file", "--connect", &record_addr])
        .arg(&big)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert_eq!(sent.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");

    // The receiver lives on, keeps taking frames, and kept no partial file.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        record.child.try_wait().unwrap().is_none(),
        "record is still running"
    );
    let (code, summary, lines) = record.stop_with_summary();
    assert_eq!(code, 0, "{summary}");
    drop(serve);
    assert_eq!(summary["files_failed"], 1, "{summary}");
    let told = lines
        .iter()
        .filter(|l| l.contains("big.bin") && l.contains("failed"))
        .count();
    assert_eq!(told, 1, "lines telling the file failed: {lines:#?}");
    assert!(
        summary["frames_received"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let names = listing(&out);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("frame-") || n == "chat.log"),
        "no partial or final file: {names:?}"
    );
}
