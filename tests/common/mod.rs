//! Helpers shared by the network integration tests: frames whose every byte follows from
//! their seq (so any received frame can be checked byte-exact), fast node configs, a
//! raw-socket peer that does the handshake by hand, and waits on events with deadlines.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod proc;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use texstream::frame::{Frame, FrameGeometry, FramePool, PixelFormat};
use texstream::net::{Event, KeepaliveConfig, Node, NodeConfig, PeerId};
use texstream::protocol::{
    decode, encode, encode_preamble, Capabilities, FrameStart, Hello, Limits, Message, Role,
    PREAMBLE_LEN,
};

/// How long any single expected outcome may take before a test gives up. Generous: it
/// bounds a failing test, it does not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// Geometry with rows padded to a multiple of 256 bytes, as wgpu readback gives.
pub fn padded_geometry(width: u32, height: u32) -> FrameGeometry {
    FrameGeometry {
        width,
        height,
        format: PixelFormat::Rgba8,
        bytes_per_row: (width * 4).div_ceil(256) * 256,
    }
}

/// The capture time a generated frame carries: derived from its seq, so it is checkable.
pub fn capture_us_for(seq: u64) -> u64 {
    1_700_000_000_000_000 + seq * 16_667
}

/// SplitMix64 finaliser: a cheap, well-mixed function of one word.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Fills `out` with the bytes of frame `seq`, padding included: every byte depends on
/// the seq and its position, so a byte from another frame or another place shows up.
pub fn fill_pixels(seq: u64, out: &mut [u8]) {
    let seed = mix(seq ^ 0x5445_5853_5452_4D00);
    let mut words = out.chunks_exact_mut(8);
    for (i, word) in (&mut words).enumerate() {
        word.copy_from_slice(&mix(seed ^ i as u64).to_le_bytes());
    }
    let tail = words.into_remainder();
    let last = mix(seed ^ u64::MAX).to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// The pixel bytes frame `seq` of `geometry` must have.
pub fn expected_pixels(geometry: FrameGeometry, seq: u64) -> Vec<u8> {
    let mut out = vec![0u8; geometry.total_len()];
    fill_pixels(seq, &mut out);
    out
}

/// Builds frame `seq` the way a producer does: pool buffer, fill it all, wrap it.
pub fn make_frame(pool: &FramePool, geometry: FrameGeometry, seq: u64) -> Frame {
    let mut buf = pool.take(geometry.total_len());
    fill_pixels(seq, &mut buf);
    Frame::new(geometry, seq, capture_us_for(seq), buf)
}

/// Checks a received frame against what frame `meta.seq` of `geometry` must be: every
/// field of its meta and every pixel byte, padding included. Returns what differs.
pub fn check_frame(frame: &Frame, geometry: FrameGeometry) -> Result<(), String> {
    let m = frame.meta();
    let got = (m.width, m.height, m.format, m.bytes_per_row);
    let want = (
        geometry.width,
        geometry.height,
        geometry.format,
        geometry.bytes_per_row,
    );
    if got != want {
        return Err(format!(
            "frame {}: geometry {got:?}, expected {want:?}",
            m.seq
        ));
    }
    if m.capture_us != capture_us_for(m.seq) {
        return Err(format!(
            "frame {}: capture_us {} expected {}",
            m.seq,
            m.capture_us,
            capture_us_for(m.seq)
        ));
    }
    let expected = expected_pixels(geometry, m.seq);
    if frame.pixels().len() != expected.len() {
        return Err(format!(
            "frame {}: {} bytes, expected {}",
            m.seq,
            frame.pixels().len(),
            expected.len()
        ));
    }
    if frame.pixels() != expected.as_slice() {
        let at = frame
            .pixels()
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!("frame {}: first differing byte at {at}", m.seq));
    }
    let checksum = xxhash_rust::xxh3::xxh3_64(&expected);
    if m.checksum != checksum {
        return Err(format!(
            "frame {}: checksum {:016x} expected {checksum:016x}",
            m.seq, m.checksum
        ));
    }
    Ok(())
}

/// Waits for the next frame, panicking with `what` if none comes in time.
pub fn recv_frame(node: &Node, what: &str) -> Frame {
    node.frames()
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|e| panic!("{what}: no frame within {PATIENCE:?} ({e})"))
}

/// Publishes frames `seqs` one at a time, each only after the viewer delivered the one
/// before, and checks every delivered frame byte-exact.
pub fn lockstep(
    sender: &Node,
    viewers: &[&Node],
    geometry: FrameGeometry,
    seqs: std::ops::RangeInclusive<u64>,
) {
    let pool = FramePool::new(4);
    for seq in seqs {
        let frame = make_frame(&pool, geometry, seq);
        sender.publish(&frame);
        for (i, viewer) in viewers.iter().enumerate() {
            let got = recv_frame(viewer, &format!("viewer {i}, frame {seq}"));
            assert_eq!(got.meta().seq, seq, "viewer {i} got the wrong frame");
            assert_eq!(got.meta(), frame.meta(), "viewer {i}: meta of frame {seq}");
            if let Err(e) = check_frame(&got, geometry) {
                panic!("viewer {i}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Nodes and events
// ---------------------------------------------------------------------------------------

/// A config with short timers, so reconnects and handshakes take milliseconds.
pub fn fast_config(role: Role) -> NodeConfig {
    let mut c = NodeConfig::new(role);
    c.keepalive = KeepaliveConfig {
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
    };
    c.handshake_timeout = Duration::from_secs(2);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(1);
    c
}

/// A sender listening on an ephemeral loopback port.
pub fn listening_sender(name: &str) -> Node {
    let mut c = fast_config(Role::Sender);
    c.name = name.to_owned();
    c.listen = Some("127.0.0.1:0".to_owned());
    Node::start(c).expect("sender starts")
}

/// A viewer that dials `addr`.
pub fn dialing_viewer(name: &str, addr: SocketAddr) -> Node {
    let mut c = fast_config(Role::Viewer);
    c.name = name.to_owned();
    c.connect = vec![addr.to_string()];
    Node::start(c).expect("viewer starts")
}

pub fn listen_addr(node: &Node) -> SocketAddr {
    node.local_addr().expect("node listens")
}

/// Takes events until `pick` accepts one, for at most `timeout`. Panics naming `what`
/// and listing the events seen if none is accepted in time.
pub fn wait_event_for<T>(
    node: &Node,
    timeout: Duration,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.events().recv_timeout(left) {
            Ok(event) => {
                if let Some(t) = pick(&event) {
                    return t;
                }
                seen.push(event);
            }
            Err(_) => panic!("timed out waiting for {what}; events seen meanwhile: {seen:#?}"),
        }
    }
}

/// [`wait_event_for`] with [`PATIENCE`].
pub fn wait_event<T>(node: &Node, what: &str, pick: impl FnMut(&Event) -> Option<T>) -> T {
    wait_event_for(node, PATIENCE, what, pick)
}

/// Waits until `node` has reported `n` more connected peers.
pub fn wait_connections(node: &Node, n: usize, what: &str) {
    for i in 0..n {
        wait_event(node, &format!("{what} ({i} of {n} so far)"), |e| {
            matches!(e, Event::PeerConnected { .. }).then_some(())
        });
    }
}

/// Waits until `node` reports a connected peer; returns its id and name.
pub fn wait_connected(node: &Node, what: &str) -> (PeerId, String) {
    wait_event(node, what, |e| match e {
        Event::PeerConnected { peer, name, .. } => Some((*peer, name.clone())),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------
// Raw peers
// ---------------------------------------------------------------------------------------

/// A hello as a raw test peer sends it.
pub fn raw_hello(role: Role, capabilities: u32, name: &str) -> Hello {
    Hello {
        role,
        capabilities: Capabilities(capabilities),
        name: name.to_owned(),
        auth: Vec::new(),
        instance: 0,
    }
}

/// A connection driven by hand, byte by byte, for the tests that play a peer the node
/// cannot trust.
pub struct RawPeer {
    pub stream: TcpStream,
    /// Bytes read but not yet decoded.
    inbox: Vec<u8>,
}

impl RawPeer {
    pub fn connect(addr: SocketAddr) -> RawPeer {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect to the node");
        stream.set_nodelay(true).expect("nodelay");
        RawPeer {
            stream,
            inbox: Vec::new(),
        }
    }

    /// A connection made elsewhere, of which `already` was read.
    pub fn from_stream(stream: TcpStream, already: &[u8]) -> RawPeer {
        RawPeer {
            stream,
            inbox: already.to_vec(),
        }
    }

    pub fn accept(listener: &TcpListener) -> RawPeer {
        let (stream, _) = listener.accept().expect("accept the node's dial");
        stream.set_nodelay(true).expect("nodelay");
        RawPeer {
            stream,
            inbox: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Connects and does the whole handshake: our preamble and hello, then the node's.
    pub fn handshaken(addr: SocketAddr, hello: Hello) -> (RawPeer, Hello) {
        let mut peer = RawPeer::connect(addr);
        let theirs = peer.handshake(hello);
        (peer, theirs)
    }

    /// Sends our preamble and hello, reads and checks the node's; returns its hello.
    pub fn handshake(&mut self, hello: Hello) -> Hello {
        let mut out = encode_preamble().to_vec();
        encode(&Message::Hello(hello), &mut out);
        self.send(&out);
        self.read_preamble();
        match self.read_message() {
            Message::Hello(h) => h,
            other => panic!("expected the node's hello, got {other:?}"),
        }
    }

    pub fn read_preamble(&mut self) {
        self.fill(PREAMBLE_LEN);
        let preamble: Vec<u8> = self.inbox.drain(..PREAMBLE_LEN).collect();
        assert_eq!(
            preamble,
            encode_preamble(),
            "the node's preamble is this build's"
        );
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the node");
    }

    pub fn send_msg(&mut self, msg: &Message) {
        let mut out = Vec::new();
        encode(msg, &mut out);
        self.send(&out);
    }

    /// Reads until `n` bytes are in the inbox.
    fn fill(&mut self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 64 << 10];
        while self.inbox.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the node sent too little in time");
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "the node closed the connection (wanted {n} bytes, have {})",
                    self.inbox.len()
                ),
                Ok(k) => self.inbox.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading from the node: {e}"),
            }
        }
    }

    /// The next whole message from the node.
    pub fn read_message(&mut self) -> Message {
        let limits = Limits::default();
        loop {
            match decode(&self.inbox, &limits).expect("the node sends valid messages") {
                Some((msg, used)) => {
                    self.inbox.drain(..used);
                    return msg;
                }
                None => {
                    let want = self.inbox.len() + 1;
                    self.fill(want);
                }
            }
        }
    }

    /// Reads messages until the node closes the connection (end of stream or a reset);
    /// returns them. Panics if it is still open after `timeout`.
    pub fn messages_until_closed(&mut self, timeout: Duration, what: &str) -> Vec<Message> {
        let inbox = &mut self.inbox;
        read_until_closed(&mut self.stream, timeout, what, |bytes| {
            inbox.extend_from_slice(bytes)
        });
        let limits = Limits::default();
        let mut messages = Vec::new();
        while let Ok(Some((msg, used))) = decode(&self.inbox, &limits) {
            self.inbox.drain(..used);
            messages.push(msg);
        }
        messages
    }

    /// Reads (and discards) until the node closes the connection: end of stream or a
    /// reset. Panics if it is still open after `timeout`.
    /// Sends `body` as the one chunk of file `id`, then the file's end with its
    /// checksum (XXH3 as a second implementation computes it).
    pub fn send_whole_file(&mut self, id: u64, body: &[u8]) {
        self.send_msg(&Message::FileChunk {
            id,
            offset: 0,
            data: body.to_vec(),
        });
        self.send_msg(&Message::FileEnd(texstream::protocol::FileEnd {
            id,
            checksum: xxhash_rust::xxh3::xxh3_64(body),
        }));
    }

    pub fn expect_closed(&mut self, timeout: Duration, what: &str) {
        self.inbox.clear();
        wait_closed(&mut self.stream, timeout, what);
    }
}

/// Reads and discards until the other end closes the connection (an end of stream, or
/// a reset: a node that left our bytes unread), for at most `timeout`.
pub fn wait_closed(stream: &mut TcpStream, timeout: Duration, what: &str) {
    read_until_closed(stream, timeout, what, |_| {});
}

/// Hands what arrives to `sink` until the other end closes the connection (an end of
/// stream or a reset); panics naming `what` if it is still open after `timeout`.
fn read_until_closed(
    stream: &mut TcpStream,
    timeout: Duration,
    what: &str,
    mut sink: impl FnMut(&[u8]),
) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: the connection was not closed within {timeout:?}"
        );
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(k) => sink(&buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Writes what the node takes: it may close a hostile connection before reading it
/// all. Whether all of it was written.
pub fn send_best_effort(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    let _ = stream.set_write_timeout(Some(PATIENCE));
    stream.write_all(bytes).is_ok()
}

/// The connection is alive and the node read all we sent before: a ping is answered
/// (in order); a goodbye instead fails the test, naming `what`.
pub fn expect_pong(raw: &mut RawPeer, nonce: u64, what: &str) {
    raw.send_msg(&Message::Ping(texstream::protocol::Ping {
        nonce,
        sent_us: 1,
    }));
    loop {
        match raw.read_message() {
            Message::Pong(p) if p.nonce == nonce => return,
            Message::Goodbye { code, reason } => {
                panic!("{what}: the node said goodbye ({code:?}): {reason}")
            }
            _ => {}
        }
    }
}

/// A valid frame start of the largest frame the default limits allow: 16384 x 16384
/// RGBA, exactly 1 GiB.
pub fn frame_start_at_the_limit(seq: u64) -> Message {
    Message::FrameStart(FrameStart {
        seq,
        width: 16384,
        height: 16384,
        format: PixelFormat::Rgba8,
        bytes_per_row: 16384 * 4,
        capture_us: 0,
        total_len: 1 << 30,
        checksum: 0,
    })
}

/// A frame start of consistent geometry (2 GiB rows x 32) adding up to 64 GiB: only the
/// frame-size limit can refuse it, before anything is allocated.
pub fn frame_start_of_64_gib(seq: u64) -> Message {
    Message::FrameStart(FrameStart {
        seq,
        width: 1024,
        height: 32,
        format: PixelFormat::Rgba8,
        bytes_per_row: 1 << 31,
        capture_us: 0,
        total_len: 64 << 30,
        checksum: 0,
    })
}

/// Deterministic pseudo-random bytes (for file contents).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_pixels(seed, &mut out);
    out
}
