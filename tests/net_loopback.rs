//! Loopback tests of the network `Node`: frames arrive byte-exact (large, padded, to many
//! viewers, past a stalled one, in both dial directions), viewers outlive a sender killed
//! mid-frame, text and files travel both ways, keepalive, `max_peers` and operator drops.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use texstream::frame::{FrameGeometry, FramePool, PixelFormat};
use texstream::net::{Event, LinkEnd, Node, Origin, PeerId};
use texstream::protocol::{encode_bulk_head, Capabilities, GoodbyeCode, Kind, Message, Role, Text};

const VIEWER_CAPS: u32 = Capabilities::FRAMES_IN | Capabilities::TEXT;
const SENDER_CAPS: u32 = Capabilities::FRAMES_OUT | Capabilities::TEXT;

#[test]
fn full_hd_frames_arrive_byte_exact() {
    let sender = listening_sender("sender");
    let viewer = dialing_viewer("viewer", listen_addr(&sender));
    wait_connected(&sender, "the viewer to connect");

    lockstep(
        &sender,
        &[&viewer],
        FrameGeometry::rgba8(1920, 1080),
        1..=100,
    );

    let stats = viewer.stats();
    assert_eq!(stats.frames_received, 100);
    assert_eq!(stats.checksum_failures, 0);
    let peers = sender.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(
        peers[0].frames_skipped, 0,
        "in lockstep no frame is ever replaced"
    );
}

#[test]
fn odd_size_frames_with_row_padding_arrive_byte_exact() {
    let geometry = padded_geometry(1023, 767);
    assert_eq!(
        geometry.bytes_per_row, 4096,
        "1023 x 4 = 4092 padded to 4096"
    );
    let sender = listening_sender("sender");
    let viewer = dialing_viewer("viewer", listen_addr(&sender));
    wait_connected(&sender, "the viewer to connect");

    // `lockstep` compares every byte, the 4 bytes of padding per row included (the
    // generator fills them with frame-specific bytes, not zeroes).
    lockstep(&sender, &[&viewer], geometry, 1..=100);

    assert_eq!(viewer.stats().frames_received, 100);
}

#[test]
fn four_viewers_keep_up_while_a_fifth_peer_stalls() {
    let geometry = FrameGeometry::rgba8(640, 480);
    const FRAMES: u64 = 100;
    let mut config = fast_config(Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    // The stalled peer must stay connected (and listed) for the whole test: a write
    // that blocks this long, or this much silence, would drop it.
    config.keepalive.timeout = Duration::from_secs(60);
    let sender = Node::start(config).expect("sender starts");
    let addr = listen_addr(&sender);

    // Completes the handshake as a viewer that wants frames, then never reads.
    let (stalled, _) =
        RawPeer::handshaken(addr, raw_hello(Role::Viewer, VIEWER_CAPS, "stalled viewer"));
    let stalled_addr = stalled.local_addr();
    let viewers: Vec<Node> = (0..4)
        .map(|i| dialing_viewer(&format!("viewer {i}"), addr))
        .collect();
    wait_connections(&sender, 5, "four viewers and the stalled peer to connect");

    let consumers: Vec<_> = viewers
        .iter()
        .map(|v| {
            let frames = v.frames().clone();
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                let mut errors = Vec::new();
                // The last frame always arrives (nothing newer replaces it), so this
                // ends on it; the timeout only bounds a failing run.
                while let Ok(frame) = frames.recv_timeout(Duration::from_secs(5)) {
                    if let Err(e) = check_frame(&frame, geometry) {
                        errors.push(e);
                    }
                    seqs.push(frame.meta().seq);
                    if frame.meta().seq == FRAMES {
                        break;
                    }
                }
                (seqs, errors)
            })
        })
        .collect();

    let pool = FramePool::new(4);
    for seq in 1..=FRAMES {
        sender.publish(&make_frame(&pool, geometry, seq));
        // Pacing like a 60 Hz producer (this sleep sets a rate, it waits for nothing).
        std::thread::sleep(Duration::from_millis(17));
    }

    for (i, consumer) in consumers.into_iter().enumerate() {
        let (seqs, errors) = consumer.join().expect("consumer thread");
        assert!(
            errors.is_empty(),
            "viewer {i} got corrupt frames: {errors:?}"
        );
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "viewer {i} got frames out of order: {seqs:?}"
        );
        assert!(
            seqs.len() as u64 >= FRAMES * 95 / 100,
            "viewer {i} received only {} of {FRAMES} frames: {seqs:?}",
            seqs.len()
        );
    }

    let peers = sender.peers();
    assert_eq!(peers.len(), 5, "every peer is still connected: {peers:#?}");
    let stalled_status = peers
        .iter()
        .find(|p| p.addr == Some(stalled_addr))
        .expect("the stalled peer is listed");
    assert!(
        stalled_status.frames_skipped > 0,
        "frames for the stalled peer are skipped, not queued: {stalled_status:#?}"
    );
    for p in peers.iter().filter(|p| p.addr != Some(stalled_addr)) {
        assert!(
            p.frames_skipped <= FRAMES * 5 / 100,
            "an honest viewer lost frames to the stalled one: {}",
            p.line()
        );
    }
    drop(stalled);
}

#[test]
fn viewer_reconnects_to_a_restarted_sender_and_never_shows_the_partial_frame() {
    const PARTIAL_SEQ: u64 = 1_000_000;
    let geometry = FrameGeometry::rgba8(640, 480);
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind the fake sender");
    let addr = fake.local_addr().expect("fake sender address");
    let viewer = dialing_viewer("viewer", addr);

    // A fake sender: handshake, a frame start, two whole chunks and a third cut short.
    let mut conn = RawPeer::accept(&fake);
    let theirs = conn.handshake(raw_hello(Role::Sender, SENDER_CAPS, "doomed sender"));
    assert_eq!(theirs.role, Role::Viewer);
    wait_connected(&viewer, "the viewer to connect to the fake sender");
    let partial = make_frame(&FramePool::new(1), geometry, PARTIAL_SEQ);
    conn.send_msg(&Message::FrameStart(partial.meta().start_message()));
    let chunk = 64 << 10;
    for i in 0..2 {
        let offset = i * chunk;
        conn.send(&encode_bulk_head(
            Kind::FrameChunk,
            PARTIAL_SEQ,
            offset as u64,
            chunk,
        ));
        conn.send(&partial.pixels()[offset..offset + chunk]);
    }
    conn.send(&encode_bulk_head(
        Kind::FrameChunk,
        PARTIAL_SEQ,
        2 * chunk as u64,
        chunk,
    ));
    conn.send(&partial.pixels()[2 * chunk..2 * chunk + 1000]);
    // Killed: the listener and the connection vanish.
    drop(fake);
    drop(conn);
    wait_event(&viewer, "the viewer to notice the sender is gone", |e| {
        matches!(e, Event::PeerDisconnected { .. }).then_some(())
    });
    assert!(
        viewer.frames().try_recv().is_err(),
        "the partial frame must never come out"
    );

    // The sender comes back on the same port; the viewer finds it by itself.
    let mut config = fast_config(Role::Sender);
    config.listen = Some(addr.to_string());
    let sender = Node::start(config).expect("the restarted sender binds the same port");
    wait_connected(&sender, "the viewer to reconnect");

    // Every frame the viewer delivers is checked: the partial one would fail `lockstep`
    // (wrong seq) if it ever came out.
    lockstep(&sender, &[&viewer], geometry, 1..=20);

    let stats = viewer.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(
        stats.frames_received, 20,
        "only whole frames count: {stats:?}"
    );
    assert!(viewer.peers()[0].reconnects >= 1);
}

/// Waits for a text from `from` with `body` at `node`, failing if `node` gets a text
/// with `never` as its body meanwhile.
fn wait_text(node: &Node, from: &str, body: &str, never: Option<&str>, what: &str) -> Text {
    let text = wait_event(node, what, |e| match e {
        Event::Text { text, .. } => {
            assert_ne!(Some(text.body.as_str()), never, "{what}: an echo came back");
            (text.body == body).then(|| text.clone())
        }
        _ => None,
    });
    assert_eq!(text.from, from, "{what}: author");
    text
}

#[test]
fn text_travels_both_ways_and_is_forwarded_between_viewers() {
    let sender = listening_sender("the sender");
    let a = dialing_viewer("viewer A", listen_addr(&sender));
    let b = dialing_viewer("viewer B", listen_addr(&sender));
    wait_connections(&sender, 2, "both viewers to connect");
    wait_connected(&a, "viewer A's link");
    wait_connected(&b, "viewer B's link");

    a.send_text("hello from A ✓");
    let at_sender = wait_text(&sender, "viewer A", "hello from A ✓", None, "A → sender");
    assert!(at_sender.sent_us > 0);
    wait_text(
        &b,
        "viewer A",
        "hello from A ✓",
        None,
        "A → sender → B (forwarded)",
    );

    sender.send_text("hello from the sender");
    // Had the sender echoed A's text back to A, it would have come before this one.
    wait_text(
        &a,
        "the sender",
        "hello from the sender",
        Some("hello from A ✓"),
        "sender → A",
    );
    wait_text(
        &b,
        "the sender",
        "hello from the sender",
        None,
        "sender → B",
    );

    b.send_text("and from B");
    wait_text(&sender, "viewer B", "and from B", None, "B → sender");
    wait_text(&a, "viewer B", "and from B", None, "B → sender → A");
}

#[test]
fn sender_can_dial_a_listening_viewer() {
    let mut viewer_config = fast_config(Role::Viewer);
    viewer_config.name = "listening viewer".to_owned();
    viewer_config.listen = Some("127.0.0.1:0".to_owned());
    let viewer = Node::start(viewer_config).expect("viewer starts");
    let mut sender_config = fast_config(Role::Sender);
    sender_config.connect = vec![listen_addr(&viewer).to_string()];
    let sender = Node::start(sender_config).expect("sender starts");
    wait_connected(&sender, "the sender to reach the viewer");

    lockstep(&sender, &[&viewer], padded_geometry(801, 601), 1..=30);

    let at_sender = sender.peers();
    assert_eq!(at_sender.len(), 1);
    assert_eq!(at_sender[0].origin, Origin::Dialed);
    assert_eq!(at_sender[0].role, Some(Role::Viewer));
    let at_viewer = viewer.peers();
    assert_eq!(at_viewer.len(), 1);
    assert_eq!(at_viewer[0].origin, Origin::Accepted);
    assert_eq!(at_viewer[0].role, Some(Role::Sender));
    assert_eq!(viewer.stats().frames_received, 30);
}

#[test]
fn keepalive_drops_a_peer_that_goes_silent() {
    let mut config = fast_config(Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    config.keepalive.interval = Duration::from_millis(100);
    config.keepalive.timeout = Duration::from_millis(500);
    let node = Node::start(config).expect("node starts");

    // Handshakes, then never sends a byte again (and so never answers a ping).
    let (mut silent, _) = RawPeer::handshaken(
        listen_addr(&node),
        raw_hello(Role::Viewer, VIEWER_CAPS, "silent"),
    );
    let silent_addr = silent.local_addr();
    // Well under the default 10 s timeout: only the configured 500 ms can explain it.
    let reason = wait_event_for(
        &node,
        Duration::from_secs(5),
        "the silent peer to be dropped",
        |e| match e {
            Event::PeerDisconnected {
                addr: Some(a),
                reason,
                ..
            } if *a == silent_addr => Some(reason.clone()),
            _ => None,
        },
    );
    assert!(
        matches!(reason, LinkEnd::KeepaliveTimeout(_)),
        "reason: {reason}"
    );
    let got = silent.messages_until_closed(Duration::from_secs(5), "silent peer");
    assert!(
        got.iter().any(|m| matches!(m, Message::Ping(_))),
        "the node pinged before giving up: {got:?}"
    );
}

#[test]
fn a_full_node_says_so_and_keeps_serving_its_peers() {
    let mut config = fast_config(Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    config.max_peers = Some(2);
    let sender = Node::start(config).expect("sender starts");
    let addr = listen_addr(&sender);
    let a = dialing_viewer("viewer A", addr);
    let b = dialing_viewer("viewer B", addr);
    wait_connections(&sender, 2, "the first two viewers to connect");

    let mut third = RawPeer::connect(addr);
    let third_addr = third.local_addr();
    // Our preamble and hello; the node answers with its preamble and a goodbye in place
    // of its hello.
    let mut out = texstream::protocol::encode_preamble().to_vec();
    texstream::protocol::encode(
        &Message::Hello(raw_hello(Role::Viewer, VIEWER_CAPS, "third")),
        &mut out,
    );
    third.send(&out);
    third.read_preamble();
    match third.read_message() {
        Message::Goodbye { code, reason } => {
            assert_eq!(code, GoodbyeCode::Full);
            assert!(reason.contains("full"), "reason: {reason}");
        }
        other => panic!("expected a goodbye, got {other:?}"),
    }
    third.expect_closed(Duration::from_secs(5), "the refused third peer");
    let reason = wait_event(&sender, "the refusal to be reported", |e| match e {
        Event::HandshakeFailed {
            addr,
            reason:
                texstream::net::HandshakeFailure::RefusedHere {
                    code: GoodbyeCode::Full,
                    reason,
                },
        } if *addr == third_addr => Some(reason.clone()),
        _ => None,
    });
    assert!(
        reason.contains("full"),
        "a typed refusal, \"full\": {reason}"
    );

    lockstep(&sender, &[&a, &b], FrameGeometry::rgba8(320, 240), 1..=10);
    assert_eq!(sender.peers().len(), 2);

    // A refused node that dials sees a failed handshake and backs off (20 ms doubling
    // to 200 ms here) instead of reconnecting at once: a handful of tries in a second.
    let d = dialing_viewer("viewer D", addr);
    let mut refusals = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if let Ok(Event::HandshakeFailed { reason, .. }) =
            d.events().recv_timeout(Duration::from_millis(50))
        {
            assert!(reason.to_string().contains("full"), "reason: {reason}");
            refusals += 1;
        }
    }
    assert!((1..=12).contains(&refusals), "{refusals} tries in a second");
    assert_eq!(d.stats().reconnects, 0, "a refusal is not a connection");
}

#[test]
fn dropped_viewer_reconnects_by_itself_and_receives_again() {
    let geometry = FrameGeometry::rgba8(320, 240);
    let sender = listening_sender("sender");
    let viewer = dialing_viewer("viewer", listen_addr(&sender));
    wait_connected(&sender, "the viewer to connect");
    lockstep(&sender, &[&viewer], geometry, 1..=5);

    sender.drop_all_peers();
    let disconnected = |e: &Event| match e {
        Event::PeerDisconnected { reason, .. } => Some(reason.to_string()),
        _ => None,
    };
    // Both ends say why: the viewer read our goodbye, the sender closed it on purpose.
    for (node, side) in [(&viewer, "viewer"), (&sender, "sender")] {
        let reason = wait_event(node, &format!("the {side} to see the drop"), disconnected);
        assert!(
            reason.contains("dropped by the operator"),
            "{side}'s reason: {reason}"
        );
    }
    wait_connected(&sender, "the viewer to reconnect");

    lockstep(&sender, &[&viewer], geometry, 6..=10);
    assert!(viewer.stats().reconnects >= 1);
    let status = &viewer.peers()[0];
    assert!(status.reconnects >= 1, "{}", status.line());
    assert_eq!(viewer.stats().frames_received, 10);
}

#[test]
fn files_arrive_whole_while_frames_keep_flowing() {
    let geometry = FrameGeometry::rgba8(640, 480);
    let source = tempfile::tempdir().expect("source dir");
    let inbox = tempfile::tempdir().expect("receive dir");
    let contents: HashMap<&str, Vec<u8>> = [
        ("random.bin", random_bytes((3 << 20) + 12_345, 42)),
        ("empty.bin", Vec::new()),
    ]
    .into_iter()
    .collect();
    let paths: Vec<PathBuf> = contents
        .iter()
        .map(|(name, bytes)| {
            let path = source.path().join(name);
            std::fs::write(&path, bytes).expect("write a source file");
            path
        })
        .collect();

    let sender = listening_sender("sender");
    let mut viewer_config = fast_config(Role::Viewer);
    viewer_config.connect = vec![listen_addr(&sender).to_string()];
    viewer_config.files_dir = Some(inbox.path().to_owned());
    let viewer = Node::start(viewer_config).expect("viewer starts");
    wait_connected(&sender, "the viewer to connect");

    for path in &paths {
        assert_eq!(
            sender.send_file(path).expect("offer"),
            1,
            "one peer takes files"
        );
    }

    // Frames in lockstep while the transfers run; collect the file events meanwhile.
    let mut received: HashMap<String, (PathBuf, u64)> = HashMap::new();
    let mut sent: HashMap<String, (bool, String)> = HashMap::new();
    let pool = FramePool::new(4);
    let mut seq = 0;
    while received.len() < 2 || sent.len() < 2 {
        seq += 1;
        assert!(
            seq <= 2000,
            "the files did not finish: {received:?} {sent:?}"
        );
        let frame = make_frame(&pool, geometry, seq);
        sender.publish(&frame);
        let got = recv_frame(&viewer, &format!("frame {seq} during the transfer"));
        assert_eq!(got.meta(), frame.meta());
        check_frame(&got, geometry).expect("byte-exact frame");
        for e in viewer.events().try_iter() {
            match e {
                Event::FileReceived {
                    name, path, size, ..
                } => {
                    received.insert(name, (path, size));
                }
                Event::FileFailed { name, reason, .. } => panic!("{name} failed: {reason}"),
                _ => {}
            }
        }
        for e in sender.events().try_iter() {
            if let Event::FileSent {
                name, ok, message, ..
            } = e
            {
                sent.insert(name, (ok, message));
            }
        }
    }
    lockstep(&sender, &[&viewer], geometry, seq + 1..=seq + 5);

    for (name, bytes) in &contents {
        let (path, size) = &received[*name];
        assert!(
            path.starts_with(inbox.path()),
            "{} is outside the receive folder",
            path.display()
        );
        assert_eq!(*size, bytes.len() as u64);
        let stored = std::fs::read(path).expect("read the received file");
        assert!(stored == *bytes, "{name}: stored content differs");
        let (ok, message) = &sent[*name];
        assert!(ok, "{name}: {message}");
    }
    let mut listing: Vec<String> = std::fs::read_dir(inbox.path())
        .expect("list the receive folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    listing.sort();
    assert_eq!(
        listing,
        ["empty.bin", "random.bin"],
        "nothing else is left behind"
    );
}

#[test]
fn a_producer_that_waits_for_the_links_has_no_frame_skipped() {
    let geometry = FrameGeometry::rgba8(1920, 1080);
    const FRAMES: u64 = 40;
    let sender = listening_sender("sender");
    let viewer = dialing_viewer("viewer", listen_addr(&sender));
    let (peer, _) = wait_connected(&sender, "the viewer to connect");
    assert!(
        sender.wait_frame_taken(PeerId(u64::MAX), Duration::ZERO),
        "a peer that does not exist holds no frame"
    );

    let frames = viewer.frames().clone();
    let consumer = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        while let Ok(frame) = frames.recv_timeout(Duration::from_secs(10)) {
            seqs.push(frame.meta().seq);
            if frame.meta().seq == FRAMES {
                break;
            }
        }
        seqs
    });
    // Back to back, each frame published once the link has taken the one before: one
    // on the wire, one waiting, none replaced.
    let pool = FramePool::new(6);
    for seq in 1..=FRAMES {
        assert!(
            sender.wait_frame_taken(peer, PATIENCE),
            "the link did not take frame {} within {PATIENCE:?}",
            seq - 1
        );
        sender.publish(&make_frame(&pool, geometry, seq));
    }
    let seqs = consumer.join().expect("consumer thread");
    assert_eq!(
        seqs.last(),
        Some(&FRAMES),
        "the last frame arrives: {seqs:?}"
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The writer counts a frame once its last write returned, which can be after the
    // viewer has it.
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        let status = sender.peers().remove(0);
        if status.frames_sent >= FRAMES || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.frames_skipped, 0, "{}", status.line());
    assert_eq!(status.frames_sent, FRAMES, "{}", status.line());
    let stats = viewer.stats();
    assert_eq!(
        stats.frames_received, FRAMES,
        "every frame arrives whole: {stats:?}"
    );
    assert_eq!(stats.checksum_failures, 0);
}

#[test]
fn a_frame_waits_in_the_slot_of_a_peer_that_does_not_read() {
    // 4K: far more than loopback's socket buffers hold, so the writer blocks mid-frame.
    let geometry = FrameGeometry::rgba8(3840, 2160);
    let sender = listening_sender("sender");
    let (stalled, _) = RawPeer::handshaken(
        listen_addr(&sender),
        raw_hello(Role::Viewer, VIEWER_CAPS, "stalled viewer"),
    );
    let (peer, _) = wait_connected(&sender, "the stalled peer to connect");
    let pool = FramePool::new(3);
    sender.publish(&make_frame(&pool, geometry, 1));
    assert!(
        sender.wait_frame_taken(peer, PATIENCE),
        "the writer takes the first frame and blocks on it"
    );
    sender.publish(&make_frame(&pool, geometry, 2));
    assert!(
        !sender.wait_frame_taken(peer, Duration::from_millis(300)),
        "the second frame waits behind the first, which the peer does not read"
    );
    // Once the peer is gone its link no longer holds a frame.
    drop(stalled);
    wait_event(&sender, "the stalled peer to be dropped", |e| {
        matches!(e, Event::PeerDisconnected { .. }).then_some(())
    });
    assert!(sender.wait_frame_taken(peer, Duration::ZERO));
}

#[test]
fn a_file_offerer_works_from_another_thread_and_says_when_its_node_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notes.bin");
    std::fs::write(&path, b"some bytes").expect("write the file");
    let sender = listening_sender("sender");
    let offerer = sender.file_offerer();
    let (p, o) = (path.clone(), offerer.clone());
    let from_thread = std::thread::spawn(move || o.send_file(&p))
        .join()
        .expect("offering thread");
    assert_eq!(from_thread.expect("offered"), 0, "no peer takes files yet");
    let missing = offerer
        .send_file(&dir.path().join("missing.bin"))
        .expect_err("a missing file is an error");
    assert!(missing.to_string().contains("missing.bin"), "{missing}");
    drop(sender);
    let gone = offerer.send_file(&path).expect_err("the node is gone");
    assert!(gone.to_string().contains("shut down"), "{gone}");
}

/// A viewer that reaches two senders follows one stream: their frames never mix. The
/// other's take over only once the first is gone.
#[test]
fn a_viewer_of_two_senders_follows_one_stream_and_never_mixes_them() {
    let a = listening_sender("sender a");
    let b = listening_sender("sender b");
    let mut c = fast_config(Role::Viewer);
    c.name = "viewer of two".into();
    c.connect = vec![listen_addr(&a).to_string(), listen_addr(&b).to_string()];
    let viewer = Node::start(c).expect("the viewer starts");
    wait_connected(&a, "the viewer reaches a");
    wait_connected(&b, "the viewer reaches b");
    let deadline = std::time::Instant::now() + PATIENCE;
    while viewer
        .peers()
        .iter()
        .filter(|p| p.state == texstream::net::PeerState::Connected)
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "both links are up");
        std::thread::sleep(Duration::from_millis(5));
    }

    let g = FrameGeometry::rgba8(64, 32);
    let pool = FramePool::new(8);
    let frame = |fill: u8, seq: u64| {
        let mut buf = pool.take(g.total_len());
        buf.fill(fill);
        texstream::frame::Frame::new(g, seq, 0, buf)
    };
    // Both publish, interleaved, for a while: every frame delivered is one source's.
    let mut seen = Vec::new();
    for seq in 0..60u64 {
        a.publish(&frame(0xAA, seq));
        b.publish(&frame(0xBB, seq));
        std::thread::sleep(Duration::from_millis(5));
        seen.extend(viewer.frames().try_iter().map(|f| f.pixels()[0]));
    }
    std::thread::sleep(Duration::from_millis(100));
    seen.extend(viewer.frames().try_iter().map(|f| f.pixels()[0]));
    assert!(seen.len() >= 10, "frames came: {}", seen.len());
    let first = seen[0];
    assert!(
        seen.iter().all(|&v| v == first),
        "one stream only, never both: {seen:x?}"
    );
    assert!(
        viewer.stats().frames_other_source > 0,
        "the other's were left out"
    );
    let followed = viewer.stream_source().expect("a source is followed");

    // The followed sender goes: the other's stream is taken at once.
    let (gone, other, other_fill) = if first == 0xAA {
        (a, b, 0xBB)
    } else {
        (b, a, 0xAA)
    };
    drop(gone);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seq = 100;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the other sender's stream was never taken"
        );
        other.publish(&frame(other_fill, seq));
        seq += 1;
        std::thread::sleep(Duration::from_millis(10));
        if viewer
            .frames()
            .try_iter()
            .any(|f| f.pixels()[0] == other_fill)
        {
            break;
        }
    }
    assert_ne!(
        viewer.stream_source(),
        Some(followed),
        "a new source is followed"
    );
}

/// Frames of one byte value, to tell their sender by.
fn filled(pool: &FramePool, fill: u8, seq: u64) -> texstream::frame::Frame {
    let g = FrameGeometry::rgba8(64, 32);
    let mut buf = pool.take(g.total_len());
    buf.fill(fill);
    texstream::frame::Frame::new(g, seq, 0, buf)
}

/// Publishes `a`'s and `b`'s frames in turn for `rounds` rounds; returns the fill of
/// every frame `viewer` delivered meanwhile, in order.
fn publish_both(viewer: &Node, a: &Node, b: &Node, rounds: u64, pool: &FramePool) -> Vec<u8> {
    let mut seen = Vec::new();
    for seq in 0..rounds {
        a.publish(&filled(pool, 0xAA, seq));
        b.publish(&filled(pool, 0xBB, seq));
        std::thread::sleep(Duration::from_millis(5));
        seen.extend(viewer.frames().try_iter().map(|f| f.pixels()[0]));
    }
    std::thread::sleep(Duration::from_millis(50));
    seen.extend(viewer.frames().try_iter().map(|f| f.pixels()[0]));
    seen
}

/// Two senders dial one listening viewer. It shows the first one's stream; chosen by
/// hand, the other's stream is shown instead, and from its first frame on every frame
/// delivered is the chosen one's, while both keep sending.
#[test]
fn two_senders_dialing_one_listening_viewer_show_only_the_chosen_one() {
    let mut c = fast_config(Role::Viewer);
    c.listen = Some("127.0.0.1:0".to_owned());
    let viewer = Node::start(c).expect("the viewer starts");
    let dialing_sender = |name: &str| {
        let mut c = fast_config(Role::Sender);
        c.name = name.to_owned();
        c.connect = vec![listen_addr(&viewer).to_string()];
        Node::start(c).expect("a sender starts")
    };
    let a = dialing_sender("sender a");
    let b = dialing_sender("sender b");
    wait_connections(&viewer, 2, "both senders reach the viewer");
    let pool = FramePool::new(8);

    let seen = publish_both(&viewer, &a, &b, 40, &pool);
    assert!(seen.len() >= 10, "frames came: {}", seen.len());
    assert!(seen.iter().all(|&v| v == seen[0]), "one stream: {seen:x?}");
    let other_fill = if seen[0] == 0xAA { 0xBB } else { 0xAA };
    // Both are listed as sources; the viewer picks the one it does not show.
    let peers = viewer.peers();
    let sources: Vec<_> = peers.iter().filter(|p| p.sends_frames).collect();
    assert_eq!(sources.len(), 2, "both are sources: {peers:#?}");
    let other_name = if other_fill == 0xAA {
        "sender a"
    } else {
        "sender b"
    };
    let other = sources
        .iter()
        .find(|p| p.name.as_deref() == Some(other_name))
        .expect("the other sender is listed by name");
    viewer.follow(Some(other.id));
    assert_eq!(viewer.chosen_source(), Some(other.id));

    let seen = publish_both(&viewer, &a, &b, 60, &pool);
    let first = seen
        .iter()
        .position(|&v| v == other_fill)
        .unwrap_or_else(|| panic!("the chosen stream is shown: {seen:x?}"));
    assert!(
        first <= 2,
        "at most the frames already on their way are the old stream's: {seen:x?}"
    );
    assert!(
        seen[first..].iter().all(|&v| v == other_fill),
        "after its first frame, only the chosen stream's: {seen:x?}"
    );
    assert!(
        seen[first..].len() >= 10,
        "the chosen one's frames: {seen:x?}"
    );
    assert_eq!(viewer.stream_source(), Some(other.id));
}

/// `switch_to` hangs up the source dialed and dials another: the old one is never
/// redialed, and only the new one's frames are shown.
#[test]
fn switching_to_another_source_hangs_up_the_first_for_good() {
    let a = listening_sender("sender a");
    let b = listening_sender("sender b");
    let viewer = dialing_viewer("switcher", listen_addr(&a));
    wait_connected(&a, "the viewer reaches a");
    let pool = FramePool::new(8);
    let seen = publish_both(&viewer, &a, &b, 20, &pool);
    assert!(
        !seen.is_empty() && seen.iter().all(|&v| v == 0xAA),
        "{seen:x?}"
    );

    let id = viewer.switch_to(&listen_addr(&b).to_string());
    wait_connected(&b, "the viewer reaches b");
    wait_event(&a, "a sees the viewer leave", |e| {
        matches!(e, Event::PeerDisconnected { .. }).then_some(())
    });
    let seen = publish_both(&viewer, &a, &b, 40, &pool);
    let first = seen
        .iter()
        .position(|&v| v == 0xBB)
        .unwrap_or_else(|| panic!("b's stream is shown: {seen:x?}"));
    assert!(seen[first..].iter().all(|&v| v == 0xBB), "{seen:x?}");
    // Long past the dialer's backoff (200 ms at most): a is not dialed again.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        a.events()
            .try_iter()
            .all(|e| !matches!(e, Event::PeerConnected { .. })),
        "a hung-up source is never redialed"
    );
    let peers = viewer.peers();
    assert_eq!(peers.len(), 1, "one dialed peer is left: {peers:#?}");
    assert_eq!(peers[0].id, id);
    assert!(!viewer.hang_up(PeerId(u64::MAX)), "no such peer");
}

/// A frame of `format`, 5x3 with padded rows, its bytes counting up from `seed`.
fn frame_in(pool: &FramePool, format: PixelFormat, seq: u64, seed: u8) -> texstream::frame::Frame {
    let geometry = FrameGeometry {
        width: 5,
        height: 3,
        format,
        bytes_per_row: 5 * format.bytes_per_pixel() + 3,
    };
    let pixels: Vec<u8> = (0..geometry.total_len())
        .map(|i| seed.wrapping_add(i as u8))
        .collect();
    texstream::frame::Frame::copied(geometry, seq, 0, &pixels, pool)
}

#[test]
fn formats_past_rgba8_go_only_to_peers_whose_hello_takes_them() {
    let sender = listening_sender("sender");
    let addr = listen_addr(&sender);
    let (mut old, theirs) = RawPeer::handshaken(addr, raw_hello(Role::Viewer, VIEWER_CAPS, "old"));
    assert!(
        theirs.capabilities.has(Capabilities::FORMATS),
        "this build takes every format"
    );
    let (old_id, _) = wait_connected(&sender, "the older viewer");
    let (mut new, _) = RawPeer::handshaken(
        addr,
        raw_hello(Role::Viewer, VIEWER_CAPS | Capabilities::FORMATS, "new"),
    );
    let (new_id, _) = wait_connected(&sender, "the newer viewer");
    let viewer = dialing_viewer("viewer", addr);
    let (viewer_id, _) = wait_connected(&sender, "the node viewer");

    let pool = FramePool::new(4);
    let mut seq = 0;
    for format in PixelFormat::ALL {
        seq += 1;
        let frame = frame_in(&pool, format, seq, seq as u8);
        sender.publish(&frame);
        for id in [old_id, new_id, viewer_id] {
            assert!(
                sender.wait_frame_taken(id, PATIENCE),
                "{format}: a link took it"
            );
        }
        let got = recv_frame(&viewer, &format!("the {format} frame at the node viewer"));
        assert_eq!(got.meta(), frame.meta(), "{format}");
        assert_eq!(got.pixels(), frame.pixels(), "{format}");
    }
    // A text after the frames marks the end of what the older peer gets.
    sender.send_text("end");
    let formats_until = |peer: &mut RawPeer, n: usize| {
        let mut formats = Vec::new();
        while formats.len() < n {
            match peer.read_message() {
                Message::FrameStart(start) => formats.push(start.format),
                Message::Text(_) if n == usize::MAX => break,
                _ => {}
            }
        }
        formats
    };
    assert_eq!(
        formats_until(&mut old, usize::MAX),
        [PixelFormat::Rgba8, PixelFormat::Bgra8],
        "an older peer gets only the formats it knows"
    );
    assert_eq!(
        formats_until(&mut new, PixelFormat::ALL.len()),
        PixelFormat::ALL
    );
    let peers = sender.peers();
    let skipped = |id| {
        peers
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.frames_format_skipped)
    };
    assert_eq!(
        skipped(old_id),
        Some(6),
        "each format it cannot take is counted"
    );
    assert_eq!(skipped(new_id), Some(0));
    assert_eq!(skipped(viewer_id), Some(0));
}
