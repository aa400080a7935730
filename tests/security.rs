//! Who may connect: the shared token (both sides prove it, a wrong or missing one fails
//! on both sides with a reason, repeated failures are slowed down) and the connection
//! limits (handshakes and connections at once).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use texstream::frame::FrameGeometry;
use texstream::net::{Event, Node, NodeConfig, Token};
use texstream::protocol::Role;

fn with_token(mut c: NodeConfig, token: Option<&str>) -> NodeConfig {
    c.token = token.map(|t| Token::new(t).unwrap());
    c
}

fn sender(token: Option<&str>) -> Node {
    let mut c = with_token(fast_config(Role::Sender), token);
    c.name = "guarded sender".into();
    c.listen = Some("127.0.0.1:0".into());
    Node::start(c).unwrap()
}

fn viewer(addr: std::net::SocketAddr, token: Option<&str>) -> Node {
    let mut c = with_token(fast_config(Role::Viewer), token);
    c.connect = vec![addr.to_string()];
    // Slow retries: each refused attempt is one event, and the slow-down is visible.
    c.backoff_initial = Duration::from_millis(200);
    c.backoff_max = Duration::from_millis(400);
    Node::start(c).unwrap()
}

fn handshake_failure(node: &Node, what: &str) -> String {
    wait_event(node, what, |e| match e {
        Event::HandshakeFailed { reason, .. } => Some(reason.to_string()),
        _ => None,
    })
}

#[test]
fn the_right_token_connects_and_both_sides_show_it() {
    let s = sender(Some("open sesame"));
    let v = viewer(listen_addr(&s), Some("open sesame"));
    wait_connected(&s, "the viewer with the token");
    wait_connected(&v, "connected");
    lockstep(&s, &[&v], FrameGeometry::rgba8(64, 48), 1..=3);
    assert!(s.peers()[0].authenticated);
    assert!(v.peers()[0].authenticated);
    assert!(s.peers()[0].line().contains("auth=token"));
}

#[test]
fn a_wrong_or_missing_token_is_refused_on_both_sides_with_a_reason() {
    let s = sender(Some("right"));
    let wrong = viewer(listen_addr(&s), Some("wrong"));
    let kind = wait_event(&s, "the sender refuses the wrong token", |e| match e {
        Event::HandshakeFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        matches!(kind, texstream::net::HandshakeFailure::AuthFailed(_)),
        "a typed reason: {kind:?}"
    );
    assert_eq!(kind.severity(), texstream::net::Severity::Warn);
    assert!(kind.to_string().contains("authentication failed"), "{kind}");
    let theirs = handshake_failure(&wrong, "the viewer hears why");
    assert!(theirs.contains("authentication failed"), "{theirs}");
    assert!(wrong.frames().is_empty());
    drop(wrong);

    let s2 = sender(Some("right"));
    let none = viewer(listen_addr(&s2), None);
    let reason = handshake_failure(&none, "a viewer without a token");
    assert!(reason.contains("requires a token"), "{reason}");
    let reason = handshake_failure(&s2, "the sender");
    assert!(reason.contains("authentication failed"), "{reason}");

    // And the other way: a guarded viewer does not talk to an open sender.
    let open = sender(None);
    let guarded = viewer(listen_addr(&open), Some("right"));
    let reason = handshake_failure(&guarded, "a guarded viewer");
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(open.peers().is_empty());
}

#[test]
fn repeated_failures_from_one_address_are_slowed_down() {
    let s = sender(Some("right"));
    let addr = listen_addr(&s);
    let wrong = viewer(addr, Some("wrong"));
    // Three honest failures, then the address waits (1 s, doubling) and its attempts
    // are answered without checking.
    let mut slowed = None;
    for i in 0..8 {
        let reason = handshake_failure(&wrong, &format!("attempt {i}"));
        if reason.contains("too many failed authentications") {
            slowed = Some(i);
            break;
        }
    }
    assert_eq!(slowed, Some(3), "the fourth attempt is turned away");
    drop(wrong);
    // While the address waits, even the right token is turned away...
    let right = viewer(addr, Some("right"));
    let reason = handshake_failure(&right, "the right token while blocked");
    assert!(reason.contains("try again"), "{reason}");
    // ...and once the wait is over, it gets in.
    wait_event_for(
        &right,
        Duration::from_secs(5),
        "the right token after the wait",
        |e| matches!(e, Event::PeerConnected { .. }).then_some(()),
    );
    assert!(s.stats().auth_failures >= 3);
}

/// Opens `n` silent connections to `addr`, then one more, which the node must close
/// within `within` (far sooner than any handshake deadline); returns the silent ones.
fn fill_then_refused(addr: std::net::SocketAddr, n: usize, within: Duration) -> Vec<TcpStream> {
    let silent: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(within + Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    let closed = matches!(extra.read(&mut [0u8; 16]), Ok(0) | Err(_));
    assert!(
        closed && started.elapsed() < within,
        "connection {} was not closed at once ({:?})",
        n + 1,
        started.elapsed()
    );
    silent
}

#[test]
fn handshakes_and_connections_at_once_are_limited() {
    let mut c = fast_config(Role::Sender);
    c.listen = Some("127.0.0.1:0".into());
    c.max_handshaking = 3;
    c.max_connections = 5;
    c.handshake_timeout = Duration::from_millis(1500);
    let s = Node::start(c).unwrap();
    let addr = listen_addr(&s);

    // Three silent connections fill the handshake places: a fourth is closed at once.
    let silent = fill_then_refused(addr, 3, Duration::from_millis(450));
    assert!(s.stats().connections_refused >= 1);

    // The silent ones run out of time and make room: honest viewers get in.
    let honest = dialing_viewer("honest", addr);
    wait_event_for(&honest, Duration::from_secs(5), "the honest viewer", |e| {
        matches!(e, Event::PeerConnected { .. }).then_some(())
    });
    drop(silent);

    // Five connections at once at most: five more viewers make six, and one of them
    // stays out (its dials are refused, counted, and retried) while five are served.
    let refused_before = s.stats().connections_refused;
    let more: Vec<Node> = (0..5)
        .map(|i| dialing_viewer(&format!("v{i}"), addr))
        .collect();
    let connected = |n: &Node| {
        n.peers()
            .iter()
            .any(|p| p.state == texstream::net::PeerState::Connected)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while more.iter().filter(|n| connected(n)).count() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Time for the sixth to be refused a few times over (its backoff is 20–200 ms).
    std::thread::sleep(Duration::from_millis(600));
    let served = s
        .peers()
        .iter()
        .filter(|p| p.state == texstream::net::PeerState::Connected)
        .count();
    assert_eq!(served, 5, "five connections at most");
    assert_eq!(
        more.iter().filter(|n| connected(n)).count(),
        4,
        "one viewer of the six is kept out"
    );
    assert!(
        s.stats().connections_refused > refused_before,
        "the sixth was refused"
    );
    lockstep(&s, &[&honest], FrameGeometry::rgba8(32, 32), 1..=2);
    drop(more);
}

#[test]
fn one_address_cannot_take_every_handshake_place() {
    let mut c = fast_config(Role::Sender);
    c.listen = Some("127.0.0.1:0".into());
    c.max_handshaking = 10;
    c.max_handshaking_per_address = 2;
    c.handshake_timeout = Duration::from_secs(30);
    let s = Node::start(c).unwrap();
    let addr = listen_addr(&s);

    // Two silent connections from 127.0.0.1 fill that address's places: a third from it
    // is closed at once, though the node has room for ten.
    let silent = fill_then_refused(addr, 2, Duration::from_millis(1500));
    assert!(s.stats().connections_refused >= 1);

    // Once they leave, the address's places are free again.
    drop(silent);
    let honest = dialing_viewer("honest", addr);
    wait_event_for(&honest, Duration::from_secs(5), "the honest viewer", |e| {
        matches!(e, Event::PeerConnected { .. }).then_some(())
    });
    // The sender's side of the link is up too before it publishes (else the first
    // frame may go out before the sender knows the viewer).
    wait_connected(&s, "the sender sees the honest viewer");
    lockstep(&s, &[&honest], FrameGeometry::rgba8(32, 32), 1..=2);
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

use texstream::net::{Tls, TlsOptions};

/// TLS material of one node, kept in `dir`.
fn tls_in(dir: &std::path::Path) -> Tls {
    Tls::new(&TlsOptions {
        dir: Some(dir.join("tls")),
        known_hosts: Some(dir.join("known_hosts")),
        ..TlsOptions::default()
    })
    .unwrap()
}

fn tls_sender(dir: &std::path::Path, token: Option<&str>) -> (Node, Tls) {
    let tls = tls_in(dir);
    let mut c = with_token(fast_config(Role::Sender), token);
    c.listen = Some("127.0.0.1:0".into());
    c.tls = Some(tls.clone());
    (Node::start(c).unwrap(), tls)
}

fn tls_viewer(addr: std::net::SocketAddr, dir: &std::path::Path, token: Option<&str>) -> Node {
    let mut c = with_token(fast_config(Role::Viewer), token);
    c.connect = vec![addr.to_string()];
    c.tls = Some(tls_in(dir));
    c.files_dir = Some(dir.join("received"));
    c.backoff_initial = Duration::from_millis(200);
    c.backoff_max = Duration::from_millis(400);
    Node::start(c).unwrap()
}

#[test]
fn tls_carries_frames_byte_exact_and_the_viewer_remembers_the_fingerprint() {
    let (sd, vd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s, tls) = tls_sender(sd.path(), Some("both"));
    let addr = listen_addr(&s);
    let v = tls_viewer(addr, vd.path(), Some("both"));
    wait_connected(&s, "the TLS viewer");
    wait_connected(&v, "connected over TLS");
    // Odd width: padded rows, 1 MiB chunks, several TLS records per chunk.
    lockstep(&s, &[&v], padded_geometry(1023, 767), 1..=20);
    let peer = &v.peers()[0];
    assert!(peer.encrypted && peer.authenticated, "{}", peer.line());
    assert_eq!(
        peer.tls_fingerprint.as_deref(),
        Some(tls.fingerprint.as_str())
    );
    assert!(s.peers()[0].encrypted);
    let known = std::fs::read_to_string(vd.path().join("known_hosts")).unwrap();
    assert_eq!(known.trim(), format!("{addr} {}", tls.fingerprint));
    // Text and files ride the same session.
    s.send_text("over tls");
    let text = wait_event(&v, "text", |e| match e {
        Event::Text { text, .. } => Some(text.body.clone()),
        _ => None,
    });
    assert_eq!(text, "over tls");
    let file = sd.path().join("over tls.bin");
    let body: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &body).unwrap();
    assert_eq!(s.send_file(&file).unwrap(), 1, "the TLS viewer takes files");
    let stored = wait_event(&v, "the file over TLS", |e| match e {
        Event::FileReceived { path, .. } => Some(path.clone()),
        _ => None,
    });
    assert!(std::fs::read(&stored).unwrap() == body, "bytes equal");
    let sent = wait_event(&s, "the receiver's verdict", |e| match e {
        Event::FileSent { ok, .. } => Some(*ok),
        _ => None,
    });
    assert!(sent, "the receiver confirmed the file");
    assert_eq!(s.peers().len(), 1, "still the one session");
    assert!(s.peers()[0].encrypted);
}

#[test]
fn a_changed_certificate_is_refused_loudly() {
    let (sd, vd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s, _) = tls_sender(sd.path(), None);
    let addr = listen_addr(&s);
    // The viewer remembers another certificate for this address.
    std::fs::write(
        vd.path().join("known_hosts"),
        format!("{addr} SHA256:00:11:22\n"),
    )
    .unwrap();
    let v = tls_viewer(addr, vd.path(), None);
    let reason = handshake_failure(&v, "the changed certificate");
    assert!(reason.contains("HAS CHANGED"), "{reason}");
    assert!(reason.contains("known_hosts"), "{reason}");
    assert!(v.peers().iter().all(|p| !p.encrypted));
    assert!(s.peers().is_empty(), "nothing got through");
}

#[test]
fn tls_on_one_side_only_fails_with_a_hint() {
    let (sd, vd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = sender(None);
    let v = tls_viewer(listen_addr(&open), vd.path(), None);
    let reason = handshake_failure(&v, "a TLS viewer meets a plain sender");
    assert!(reason.contains("TLS"), "{reason}");
    drop(v);

    let (s, _) = tls_sender(sd.path(), None);
    let plain = viewer(listen_addr(&s), None);
    let reason = handshake_failure(&s, "a plain viewer meets a TLS sender");
    assert!(reason.contains("not using TLS"), "{reason}");
    let theirs = handshake_failure(&plain, "the plain viewer");
    assert!(theirs.contains("use --tls"), "{theirs}");
}

#[test]
fn a_peer_may_send_only_so_many_files_at_once() {
    use texstream::protocol::{Capabilities, FileOffer, Message};
    let dir = tempfile::tempdir().unwrap();
    let mut c = fast_config(Role::Sender);
    c.listen = Some("127.0.0.1:0".into());
    c.files_dir = Some(dir.path().to_owned());
    c.max_files_per_peer = 2;
    let node = Node::start(c).unwrap();
    let (mut peer, _) = RawPeer::handshaken(
        listen_addr(&node),
        raw_hello(Role::FileClient, Capabilities::TEXT, "many files"),
    );
    for id in 1..=3u64 {
        peer.send_msg(&Message::FileOffer(FileOffer {
            id,
            size: 10,
            name: format!("f{id}"),
        }));
    }
    let mut answers = Vec::new();
    while answers.len() < 3 {
        match peer.read_message() {
            Message::FileAccept(a) => answers.push((a.id, Ok(()))),
            Message::FileResult(r) => answers.push((r.id, Err(r.message))),
            _ => {}
        }
    }
    assert_eq!(answers[0], (1, Ok(())));
    assert_eq!(answers[1], (2, Ok(())));
    assert_eq!(answers[2].0, 3);
    let refusal = answers[2].1.clone().unwrap_err();
    assert!(refusal.contains("at most 2"), "{refusal}");
}
