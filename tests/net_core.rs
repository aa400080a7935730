//! The network core's fixed costs, against real processes: a peer repeating file
//! messages starts no thread and takes no memory in the process that offered the file;
//! a node serves 256 viewers under the usual 1,024 open-file limit (one descriptor per
//! connection); and a sender stopped in the middle of a large frame ends every link in
//! order, between two whole messages.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::{bin, open_fds, proc_figure, Proc};
use common::*;
use texstream::protocol::{
    encode, Capabilities, FileAccept, FileCancel, FileOffer, FileResult, Message, Role,
};

/// Writes `messages` to `stream` as one burst.
fn blast(stream: &mut TcpStream, messages: &[Message]) {
    let mut bytes = Vec::new();
    for m in messages {
        encode(m, &mut bytes);
    }
    stream.write_all(&bytes).expect("the burst is written");
}

#[test]
fn repeated_file_messages_start_no_thread_and_stream_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload.bin");
    let body = random_bytes(8 << 20, 11);
    std::fs::write(&path, &body).unwrap();
    let sender = Proc::start(&[
        "send-file",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--json",
        "--timeout-secs",
        "60",
    ]);
    let pid = sender.child.id();
    let addr: SocketAddr = sender.listen_addr().parse().unwrap();
    let caps = Capabilities::TEXT | Capabilities::FILES_IN;
    let (mut peer, _) = RawPeer::handshaken(addr, raw_hello(Role::Viewer, caps, "hostile"));
    let offer = loop {
        if let Message::FileOffer(offer) = peer.read_message() {
            break offer;
        }
    };
    let threads_before = proc_figure(pid, "Threads");

    // Ten thousand accepts of the one offer, then offers, cancels and results for ids
    // the sender never used, all before reading a byte of the file.
    let mut writer = peer.stream.try_clone().unwrap();
    let accept = Message::FileAccept(FileAccept {
        id: offer.id,
        offset: 0,
    });
    blast(&mut writer, &vec![accept; 10_000]);
    let junk: Vec<Message> = (0..1_000u64)
        .flat_map(|i| {
            let id = offer.id.wrapping_add(1 + i);
            [
                Message::FileOffer(FileOffer {
                    id,
                    size: 1,
                    name: format!("x{i}"),
                }),
                Message::FileCancel(FileCancel {
                    id,
                    reason: "no".into(),
                }),
                Message::FileResult(FileResult {
                    id,
                    ok: true,
                    message: "no".into(),
                }),
            ]
        })
        .collect();
    blast(&mut writer, &junk);
    let threads_during = proc_figure(pid, "Threads");

    // The file arrives once: its bytes in order, one end.
    let mut received = Vec::with_capacity(body.len());
    let mut ends = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends == 0 {
        assert!(Instant::now() < deadline, "the file did not arrive");
        match peer.read_message() {
            Message::FileChunk { id, offset, data } => {
                assert_eq!(id, offer.id);
                assert_eq!(offset, received.len() as u64, "chunks in order, no repeats");
                received.extend_from_slice(&data);
            }
            Message::FileEnd(end) => {
                assert_eq!(end.id, offer.id);
                assert_eq!(end.checksum, xxhash_rust::xxh3::xxh3_64(&body));
                ends += 1;
            }
            _ => {}
        }
    }
    assert!(received == body, "the file's bytes, once");
    let threads_after = proc_figure(pid, "Threads");
    let peak_mib = proc_figure(pid, "VmHWM") / 1024;
    assert!(
        threads_during <= threads_before + 1 && threads_after <= threads_before + 1,
        "threads: {threads_before} before the flood, {threads_during} during, {threads_after} after"
    );
    assert!(peak_mib < 64, "send-file peaked at {peak_mib} MiB");

    peer.send_msg(&Message::FileResult(FileResult {
        id: offer.id,
        ok: true,
        message: "stored".into(),
    }));
    let (code, lines) = sender.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "send-file ends well: {lines:?}");
}

#[test]
fn a_node_serves_256_viewers_under_an_open_file_limit_of_1024() {
    // serve with the default --max-connections (256), under `ulimit -n 1024`. Every
    // viewer here dials from 127.0.0.1: the per-address limits are raised to let them.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:1024", &bin()])
        .args(["serve", "pattern", "--size", "64x64", "--fps", "5"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--max-handshaking-per-address",
            "32",
            "--max-connections-per-address",
            "256",
        ])
        .env("RUST_LOG", "texstream=info");
    let serve = Proc::start_command(cmd, "prlimit runs serve");
    let pid = serve.child.id();
    let addr: SocketAddr = serve.listen_addr().parse().unwrap();
    let fds_before = open_fds(pid);
    let mut viewers = Vec::new();
    for i in 0..256 {
        let (peer, _) = RawPeer::handshaken(
            addr,
            raw_hello(Role::Viewer, Capabilities::FRAMES_IN, &format!("v{i}")),
        );
        viewers.push(peer);
    }
    // Every one of them is served: each gets a whole frame.
    for (i, peer) in viewers.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "viewer {i} got no frame");
            if let Message::FrameStart(_) = peer.read_message() {
                break;
            }
        }
    }
    let fds = open_fds(pid);
    assert!(
        fds <= fds_before + 256 + 8,
        "{fds} descriptors open with 256 viewers ({fds_before} before): one per connection"
    );
    assert!(
        !serve_saw(&serve, "Too many open files"),
        "serve ran out of descriptors"
    );
}

/// Whether `proc` printed a line containing `needle` so far.
fn serve_saw(proc: &Proc, needle: &str) -> bool {
    proc.lines.try_iter().any(|l| l.contains(needle))
}

#[test]
fn a_node_whose_hard_limit_is_too_low_lowers_its_connections_once_and_says_so() {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=200:200", &bin()])
        .args(["serve", "pattern", "--size", "64x64", "--fps", "5"])
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "texstream=info");
    let serve = Proc::start_command(cmd, "prlimit runs serve");
    let line = serve.wait_line("--max-connections", Duration::from_secs(10));
    assert!(
        // (200 - 128 kept aside) / 2 per connection.
        line.contains("serving at most 36 connections") && line.contains("200"),
        "{line}"
    );
}

#[test]
fn a_sender_stopped_in_the_middle_of_a_large_frame_ends_the_link_in_order() {
    // 8 MiB frames at 10 fps through a 20 MB/s link: the link is always inside a frame,
    // with megabytes on their way in the kernel's buffers.
    let serve = Proc::start(&[
        "serve",
        "pattern",
        "--size",
        "2048x1024",
        "--fps",
        "10",
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr: SocketAddr = serve.listen_addr().parse().unwrap();
    let proxy = common::proxy::Proxy::start(addr, 20_000_000);
    let viewer = dialing_viewer("viewer", proxy.addr);
    for _ in 0..2 {
        recv_frame(&viewer, "a whole frame before the stop");
    }
    let before = proxy.to_dialer.load(std::sync::atomic::Ordering::Relaxed);
    // Mid-frame: bytes are flowing.
    let flowing = Instant::now() + Duration::from_secs(5);
    while proxy.to_dialer.load(std::sync::atomic::Ordering::Relaxed) < before + (1 << 20) {
        assert!(Instant::now() < flowing, "no bytes flow");
        std::thread::sleep(Duration::from_millis(5));
    }
    serve.signal("TERM");
    let reason = wait_event_for(
        &viewer,
        Duration::from_secs(15),
        "the sender's goodbye",
        |e| match e {
            texstream::net::Event::PeerDisconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        },
    );
    assert!(reason.is_orderly(), "the viewer saw: {reason}");
    let stats = viewer.stats();
    assert_eq!(stats.protocol_errors, 0, "{reason}");
    assert_eq!(stats.checksum_failures, 0);
    // Whatever the viewer was handed is whole and verified.
    for frame in viewer.frames().try_iter() {
        assert_eq!(frame.pixels().len(), 2048 * 1024 * 4);
        assert_eq!(
            texstream::protocol::checksum(frame.pixels()),
            frame.meta().checksum
        );
    }
    let (code, lines) = serve.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "serve stops cleanly: {lines:?}");
}

#[test]
fn a_flood_of_bad_handshakes_logs_a_few_warnings_not_one_per_connection() {
    let (serve, addr) = small_serve();
    // 200 hosts' worth of junk: each a connection that sends bytes that are no preamble.
    let flood = Instant::now();
    for i in 0..200u32 {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: texstream\r\n\r\n").as_bytes());
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut sink);
    }
    // An honest viewer still gets in and gets a frame.
    let (mut peer, _) = RawPeer::handshaken(
        addr,
        raw_hello(Role::Viewer, Capabilities::FRAMES_IN, "honest"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(peer.read_message(), Message::FrameStart(_)) {
        assert!(Instant::now() < deadline, "the honest viewer got no frame");
    }
    drop(peer);
    // Five lines per ten-second window: on a slow machine the flood may span more.
    let windows = flood.elapsed().as_secs() / 10 + 1;
    serve.signal("TERM");
    let (_, lines) = serve.finish(Duration::from_secs(10));
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("handshake failed"))
        .collect();
    assert!(
        !warnings.is_empty() && warnings.len() as u64 <= 5 * windows,
        "200 bad handshakes in {windows} window(s) of 10 s gave {} warning lines, \
         expected 1 to {}: {warnings:#?}",
        warnings.len(),
        5 * windows
    );
}

#[test]
fn texts_a_peer_does_not_read_cost_a_few_warnings_not_one_per_text() {
    let (serve, addr) = small_serve();
    // A peer that takes texts and never reads them, and one that sends 20 MB of them,
    // which serve passes on to the first: past its socket buffers and its queue, every
    // text forwarded to it is refused.
    let (deaf, _) = RawPeer::handshaken(addr, raw_hello(Role::Viewer, Capabilities::TEXT, "deaf"));
    let (mut talker, _) =
        RawPeer::handshaken(addr, raw_hello(Role::Viewer, Capabilities::TEXT, "talker"));
    // The warnings are counted as they come: were there one per text, the lines would
    // fill the pipe and stall serve, and the test would hang instead of failing.
    let lines = serve.lines.clone();
    let counter =
        std::thread::spawn(move || lines.iter().filter(|l| l.contains("text not sent")).count());
    let flood = Instant::now();
    let mut wire = Vec::new();
    for i in 0..20_000u64 {
        encode(
            &Message::Text(texstream::protocol::Text {
                sent_us: i,
                from: "talker".into(),
                body: "x".repeat(1000),
            }),
            &mut wire,
        );
    }
    talker.send(&wire);
    expect_pong(&mut talker, 7, "serve read the whole flood");
    let windows = flood.elapsed().as_secs() / 10 + 1;
    serve.signal("TERM");
    let (_, rest) = serve.finish(Duration::from_secs(10));
    drop(deaf);
    let warnings =
        counter.join().unwrap() + rest.iter().filter(|l| l.contains("text not sent")).count();
    assert!(
        warnings > 0 && warnings as u64 <= 5 * windows,
        "20,000 texts a peer did not read, in {windows} window(s) of 10 s, gave {warnings} \
         warning lines, expected 1 to {}",
        5 * windows
    );
}

/// A `serve` of a small pattern at 5 fps on a loopback port, and its address.
fn small_serve() -> (Proc, SocketAddr) {
    let serve = Proc::start(&[
        "serve",
        "pattern",
        "--size",
        "64x64",
        "--fps",
        "5",
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr = serve.listen_addr().parse().unwrap();
    (serve, addr)
}
