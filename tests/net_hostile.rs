//! Hostile bytes against a live node: each bad peer is closed with a clear reason while
//! an honest viewer keeps receiving its stream of byte-exact frames.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use texstream::frame::{FrameGeometry, FramePool, PixelFormat};
use texstream::net::{Event, Node};
use texstream::protocol::{
    encode_bulk_head, Capabilities, GoodbyeCode, Kind, Message, Role, MAGIC, VERSION,
};

/// What the node's honest viewer is sent, a few milliseconds apart.
const STREAM: FrameGeometry = FrameGeometry {
    width: 256,
    height: 192,
    format: PixelFormat::Rgba8,
    bytes_per_row: 1024,
};

/// How long the node may take to close a hostile connection.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// A listening node publishing a steady stream to one honest viewer. It is a relay that
/// takes frames from any peer that sends them (not only its upstreams, as a relay does
/// by default), so that the hostile frames meet its reassembly (a plain sender refuses
/// any frame outright).
struct Fixture {
    node: Arc<Node>,
    viewer: Node,
    addr: SocketAddr,
    /// Seq of the last frame published so far.
    published: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    publisher: Option<JoinHandle<()>>,
}

impl Fixture {
    fn new() -> Fixture {
        let mut config = fast_config(Role::Relay);
        config.name = "target".to_owned();
        config.listen = Some("127.0.0.1:0".to_owned());
        config.handshake_timeout = Duration::from_secs(1);
        config.frames_from_dialed_only = false;
        let node = Arc::new(Node::start(config).expect("node starts"));
        let addr = listen_addr(&node);
        let viewer = dialing_viewer("honest viewer", addr);
        wait_connected(&node, "the honest viewer to connect");

        let published = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (node, published, stop) = (node.clone(), published.clone(), stop.clone());
            std::thread::spawn(move || {
                let pool = FramePool::new(4);
                let mut seq = 0;
                while !stop.load(Relaxed) {
                    seq += 1;
                    node.publish(&make_frame(&pool, STREAM, seq));
                    published.store(seq, Relaxed);
                    // Sets the stream's rate; nothing waits on it.
                    std::thread::sleep(Duration::from_millis(4));
                }
            })
        };
        let fx = Fixture {
            node,
            viewer,
            addr,
            published,
            stop,
            publisher: Some(publisher),
        };
        fx.viewer_keeps_receiving("before any hostile peer");
        fx
    }

    /// Frames published from now on reach the honest viewer, byte-exact.
    fn viewer_keeps_receiving(&self, when: &str) {
        let after = self.published.load(Relaxed);
        let count_before = self.viewer.stats().frames_received;
        let mut fresh = 0;
        while fresh < 3 {
            let frame = recv_frame(&self.viewer, &format!("honest viewer, {when}"));
            if let Err(e) = check_frame(&frame, STREAM) {
                panic!("honest viewer, {when}: {e}");
            }
            if frame.meta().seq > after {
                fresh += 1;
            }
        }
        assert!(self.viewer.stats().frames_received >= count_before + 3);
    }

    /// Waits for the node to report the connection from `peer` as refused or ended, and
    /// checks the reason names the problem.
    fn reason_for(&self, peer: SocketAddr, phrase: &str) -> String {
        let reason = wait_event(&self.node, &format!("a report on {peer}"), |e| match e {
            Event::HandshakeFailed { addr, reason } if *addr == peer => Some(reason.to_string()),
            Event::PeerDisconnected {
                addr: Some(addr),
                reason,
                ..
            } if *addr == peer => Some(reason.to_string()),
            _ => None,
        });
        assert!(
            reason.contains(phrase),
            "the reason should contain {phrase:?}: {reason}"
        );
        reason
    }

    /// A raw peer past the handshake, announcing itself as a sender (so the node sends
    /// it no frames).
    fn handshaken_sender(&self, name: &str) -> RawPeer {
        let caps = Capabilities::FRAMES_OUT | Capabilities::TEXT;
        RawPeer::handshaken(self.addr, raw_hello(Role::Sender, caps, name)).0
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.join();
        }
    }
}

/// The node closed a handshaken peer for breaking the protocol: a goodbye with the
/// protocol-error code and the same reason, then the end of the stream.
fn expect_protocol_goodbye(raw: &mut RawPeer, phrase: &str) {
    let got = raw.messages_until_closed(CLOSE_WITHIN, phrase);
    let goodbye = got.iter().find_map(|m| match m {
        Message::Goodbye { code, reason } => Some((*code, reason.clone())),
        _ => None,
    });
    match goodbye {
        Some((code, reason)) => {
            assert_eq!(code, GoodbyeCode::ProtocolError, "{reason}");
            assert!(reason.contains(phrase), "goodbye reason: {reason}");
        }
        None => panic!("no goodbye before the close; got {got:?}"),
    }
}

fn bad_magic(fx: &Fixture) {
    let mut raw = RawPeer::connect(fx.addr);
    let peer = raw.local_addr();
    raw.send(b"GET / HTTP/1.1\r\nHost: texstream\r\n\r\n");
    raw.expect_closed(CLOSE_WITHIN, "bad magic");
    fx.reason_for(peer, "bad magic");
    fx.viewer_keeps_receiving("after a peer with bad magic");
}

fn wrong_version(fx: &Fixture) {
    let mut raw = RawPeer::connect(fx.addr);
    let peer = raw.local_addr();
    let mut preamble = MAGIC.to_vec();
    preamble.extend_from_slice(&99u16.to_le_bytes());
    raw.send(&preamble);
    raw.expect_closed(CLOSE_WITHIN, "wrong version");
    let reason = fx.reason_for(peer, "version");
    assert!(
        reason.contains("99") && reason.contains(&format!("version {VERSION}")),
        "the reason names both versions: {reason}"
    );
    fx.viewer_keeps_receiving("after a peer of protocol version 99");
}

fn oversized_length(fx: &Fixture) {
    let mut raw = fx.handshaken_sender("oversized");
    let peer = raw.local_addr();
    // A text envelope claiming a body of almost 4 GiB; no body follows.
    let mut envelope = vec![Kind::Text as u8];
    envelope.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    raw.send(&envelope);
    expect_protocol_goodbye(&mut raw, "exceeds the limit");
    fx.reason_for(peer, "exceeds the limit");
    fx.viewer_keeps_receiving("after an oversized length");
}

fn truncated_chunk(fx: &Fixture) {
    let mut raw = fx.handshaken_sender("truncated");
    let peer = raw.local_addr();
    let geometry = FrameGeometry::rgba8(64, 64);
    let frame = make_frame(&FramePool::new(1), geometry, 5);
    raw.send_msg(&Message::FrameStart(frame.meta().start_message()));
    // Announces the whole payload, sends 1000 bytes of it, then ends its side.
    let len = geometry.total_len();
    raw.send(&encode_bulk_head(Kind::FrameChunk, 5, 0, len));
    raw.send(&frame.pixels()[..1000]);
    raw.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shut the write side");
    expect_protocol_goodbye(&mut raw, "truncated");
    fx.reason_for(peer, "truncated");
    fx.viewer_keeps_receiving("after a truncated chunk");
}

fn checksum_mismatch(fx: &Fixture) {
    let failures_before = fx.node.stats().checksum_failures;
    let mut raw = fx.handshaken_sender("corrupt");
    let peer = raw.local_addr();
    let geometry = FrameGeometry::rgba8(64, 64);
    let frame = make_frame(&FramePool::new(1), geometry, 6);
    raw.send_msg(&Message::FrameStart(frame.meta().start_message()));
    let mut pixels = frame.pixels().to_vec();
    pixels[9000] ^= 0x40;
    for (i, part) in pixels.chunks(4096).enumerate() {
        raw.send(&encode_bulk_head(
            Kind::FrameChunk,
            6,
            (i * 4096) as u64,
            part.len(),
        ));
        raw.send(part);
    }
    expect_protocol_goodbye(&mut raw, "checksum mismatch");
    fx.reason_for(peer, "checksum mismatch");
    let stats = fx.node.stats();
    assert!(
        stats.checksum_failures > failures_before,
        "the failure is counted: {stats:?}"
    );
    assert!(stats.checksum_failures >= 1);
    assert_eq!(stats.frames_received, 0, "the corrupt frame never came out");
    assert!(fx.node.frames().try_recv().is_err());
    fx.viewer_keeps_receiving("after a checksum mismatch");
}

fn chunk_without_start(fx: &Fixture) {
    let mut raw = fx.handshaken_sender("stray chunk");
    let peer = raw.local_addr();
    raw.send(&encode_bulk_head(Kind::FrameChunk, 77, 0, 100));
    raw.send(&[0xAB; 100]);
    expect_protocol_goodbye(&mut raw, "never started");
    let reason = fx.reason_for(peer, "never started");
    assert!(
        reason.contains("77"),
        "the reason names the frame: {reason}"
    );
    fx.viewer_keeps_receiving("after a chunk for a frame never started");
}

fn huge_frame_start(fx: &Fixture) {
    let mut raw = fx.handshaken_sender("64 GiB");
    let peer = raw.local_addr();
    let total_len = 64u64 << 30;
    raw.send_msg(&frame_start_of_64_gib(8));
    expect_protocol_goodbye(&mut raw, "exceeds the frame limit");
    let reason = fx.reason_for(peer, "exceeds the frame limit");
    assert!(reason.contains(&total_len.to_string()), "{reason}");
    fx.viewer_keeps_receiving("after a 64 GiB frame start");
}

fn unknown_format(fx: &Fixture) {
    let mut raw = fx.handshaken_sender("unknown format");
    let peer = raw.local_addr();
    let start = FrameGeometry::rgba8(4, 4).meta(10, 0, 0).start_message();
    let mut bytes = Vec::new();
    texstream::protocol::encode(&Message::FrameStart(start), &mut bytes);
    // The format byte: after the envelope, seq, width and height.
    bytes[5 + 16] = 0x99;
    raw.send(&bytes);
    expect_protocol_goodbye(&mut raw, "format");
    let reason = fx.reason_for(peer, "format");
    assert!(
        reason.contains("153"),
        "the reason names the code: {reason}"
    );
    fx.viewer_keeps_receiving("after an unknown pixel format");
}

fn row_pitch_too_small_for_the_format(fx: &Fixture) {
    let mut raw = fx.handshaken_sender("thin rows");
    let peer = raw.local_addr();
    // 8 RGBA32F pixels need 128 bytes a row; 64 is enough only for 8-bit RGBA.
    let thin = FrameGeometry {
        width: 8,
        height: 2,
        format: PixelFormat::Rgba32F,
        bytes_per_row: 64,
    };
    raw.send_msg(&Message::FrameStart(thin.meta(11, 0, 0).start_message()));
    expect_protocol_goodbye(&mut raw, "bytes_per_row 64 is less than width 8 x 16");
    fx.reason_for(peer, "rgba32f");
    fx.viewer_keeps_receiving("after rows too small for their format");
}

fn silent_in_handshake(fx: &Fixture) {
    // Sends half a preamble and nothing more: the handshake deadline (1 s) ends it.
    let mut raw = RawPeer::connect(fx.addr);
    let peer = raw.local_addr();
    raw.send(&MAGIC[..4]);
    raw.expect_closed(CLOSE_WITHIN, "silent in the handshake");
    fx.reason_for(peer, "handshake not finished");
    fx.viewer_keeps_receiving("after a peer silent in the handshake");
}

#[test]
fn bad_magic_is_refused() {
    bad_magic(&Fixture::new());
}

#[test]
fn wrong_protocol_version_is_refused_naming_both_versions() {
    wrong_version(&Fixture::new());
}

#[test]
fn oversized_length_is_refused_before_reading_the_body() {
    oversized_length(&Fixture::new());
}

#[test]
fn truncated_chunk_closes_the_connection() {
    truncated_chunk(&Fixture::new());
}

#[test]
fn checksum_mismatch_closes_the_connection_and_is_counted() {
    checksum_mismatch(&Fixture::new());
}

#[test]
fn chunk_for_a_frame_never_started_closes_the_connection() {
    chunk_without_start(&Fixture::new());
}

#[test]
fn a_64_gib_frame_start_is_refused() {
    huge_frame_start(&Fixture::new());
}

#[test]
fn an_unknown_pixel_format_is_refused_naming_its_code() {
    unknown_format(&Fixture::new());
}

#[test]
fn a_row_pitch_too_small_for_the_format_is_refused() {
    row_pitch_too_small_for_the_format(&Fixture::new());
}

#[test]
fn a_peer_silent_in_the_handshake_is_dropped() {
    silent_in_handshake(&Fixture::new());
}

#[test]
fn one_node_survives_every_hostile_peer_in_a_row() {
    let fx = Fixture::new();
    bad_magic(&fx);
    wrong_version(&fx);
    oversized_length(&fx);
    truncated_chunk(&fx);
    checksum_mismatch(&fx);
    chunk_without_start(&fx);
    huge_frame_start(&fx);
    unknown_format(&fx);
    row_pitch_too_small_for_the_format(&fx);
    silent_in_handshake(&fx);
    let stats = fx.node.stats();
    assert_eq!(stats.checksum_failures, 1, "{stats:?}");
    assert_eq!(
        stats.protocol_errors, 9,
        "one per case but the silent handshake (a timeout, not a protocol error): {stats:?}"
    );
    assert_eq!(fx.node.peers().len(), 1, "only the honest viewer is left");
}
