//! Two connected links in memory on a mocked clock, as quinn-proto's test `Pair`: each
//! end is the pure state a link's threads drive ([`TxConn`] sending, [`RxConn`]
//! receiving, [`IncomingFiles`] for the files coming in) and the decisions a link makes
//! on what it receives, the very code a link's reader and disk worker run
//! ([`dispatch::on_event`], [`disk::apply`]); the "wire" between them is
//! a byte queue that delivers in pieces of pseudo-random sizes, or not at all when cut.
//! No socket, thread or sleep: keepalive, goodbyes mid-frame, files, cancels and
//! resumes run in microseconds and fail the same way every time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::coder::Coder;
use super::disk::{self, DiskEffects, DiskJob};
use super::dispatch::{self, LinkEffects};
use super::files::{FileOutcome, FileReader, FileShelf, IncomingFiles, OutgoingFile, PeerRef};
use super::keepalive::KeepaliveConfig;
use super::rx::{RxConn, RxEvent};
use super::status::PeerId;
use super::transfers::{Direction, TransferState};
use super::tx::{Closing, PushOutcome, TxConn};
use super::ShelfLimits;
use crate::frame::{Frame, FrameGeometry, FramePool, PooledBuf};
use crate::protocol::tiles::TileCompression;
use crate::protocol::{FrameAssembler, GoodbyeCode, Limits, Message, ProtocolError, Text};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// What an end saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Frame { seq: u64, pixels: Bytes },
    Text(Bytes),
    Goodbye(GoodbyeCode, String),
    Received { name: String, bytes: Bytes },
    FileFailed(String),
    Sent { ok: bool, message: String },
    Error(String),
    Closed(Closing),
}

/// Bytes compared in full, shown by length.
#[derive(PartialEq)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

/// One end: a link's state without its threads.
struct End {
    tx: TxConn,
    rx: RxConn,
    files: Option<IncomingFiles>,
    shelf: Arc<FileShelf>,
    dir: std::path::PathBuf,
    peer_instance: u64,
    /// Bytes written, not yet delivered to the other end.
    wire: VecDeque<u8>,
    small: Vec<u8>,
    /// What the file worker read and has not yet handed to `tx`.
    read: VecDeque<(u64, u64, PooledBuf, usize)>,
    read_done: VecDeque<(u64, u64)>,
    seen: Vec<Seen>,
    rtt: Option<u64>,
    done: bool,
    /// File flow control on this end's links (both ends send progress reports).
    window: Option<u64>,
    /// The disk is stalled: its writes (and the jobs behind them) wait here, undone.
    stalled: Option<VecDeque<DiskJob>>,
    /// The clock as the reader last saw it.
    now: Instant,
    /// File bytes handed to the disk, over every connection.
    stored: u64,
    /// Frames go coded both ways (each end's hello said it takes them).
    coding: bool,
    coder: Coder,
    /// Bytes this end wrote, over every connection.
    sent: u64,
}

impl End {
    fn new(instance: u64, peer_instance: u64, now: Instant, shelf: Arc<FileShelf>) -> End {
        let dir = std::env::temp_dir().join(format!(
            "texstream-pair-{}-{instance}-{:x}",
            std::process::id(),
            Arc::as_ptr(&shelf) as usize
        ));
        let mut end = End {
            tx: TxConn::new(0, keepalive(), now),
            rx: rx(),
            files: None,
            shelf,
            dir,
            peer_instance,
            wire: VecDeque::new(),
            small: Vec::new(),
            read: VecDeque::new(),
            read_done: VecDeque::new(),
            seen: Vec::new(),
            rtt: None,
            done: false,
            window: None,
            stalled: None,
            stored: 0,
            coding: false,
            coder: Coder::default(),
            sent: 0,
            now,
        };
        end.reconnect(now);
        end
    }

    /// A new connection to the same peer: fresh link state, the same node (its file
    /// shelf); what the old link was sending is parked and offered again.
    fn reconnect(&mut self, now: Instant) {
        for (wire_id, file) in self.tx.take_files() {
            self.shelf.park_outgoing(self.peer_instance, wire_id, file);
        }
        // Dropping the old IncomingFiles parks its unfinished transfers.
        self.files = None;
        self.files = Some(IncomingFiles::new(
            Some(self.dir.clone()),
            4,
            self.shelf.clone(),
            PeerRef {
                id: PeerId(self.peer_instance),
                name: "peer".into(),
                instance: self.peer_instance,
            },
        ));
        self.tx = TxConn::new(1000, keepalive(), now);
        if let Some(window) = self.window {
            self.tx.set_file_window(window);
        }
        self.rx = rx();
        if self.coding {
            self.tx.set_coding(TileCompression::Lz4Qoi);
            self.rx.take_coded();
        }
        self.wire.clear();
        self.read.clear();
        self.read_done.clear();
        self.done = false;
        for (wire_id, file) in self.shelf.unpark_outgoing(self.peer_instance) {
            assert!(self.tx.offer_file(wire_id, file));
        }
    }

    /// The writer and the file worker, one step: the file worker reads what the peer
    /// accepted and queues it; the writer puts on the wire what `tx` has.
    fn write(&mut self, now: Instant) {
        while let Some(req) = self.tx.take_read() {
            let mut reader = FileReader::open(&req.file, req.from).expect("readable");
            loop {
                let mut buf = PooledBuf::detached(vec![0; 700]);
                match reader.next_chunk(&mut buf).expect("readable") {
                    Some((offset, len)) => self.read.push_back((req.id, offset, buf, len)),
                    None => break,
                }
            }
            self.read_done
                .push_back((req.id, reader.finish().expect("unchanged")));
        }
        while let Some((id, offset, buf, len)) = self.read.pop_front() {
            match self.tx.push_file_chunk(id, offset, buf, len) {
                PushOutcome::Queued => {}
                PushOutcome::Full(buf) => {
                    self.read.push_front((id, offset, buf, len));
                    break;
                }
                PushOutcome::Stopped => self.read.retain(|c| c.0 != id),
            }
        }
        if self.read.is_empty() {
            while let Some((id, checksum)) = self.read_done.pop_front() {
                self.tx.file_read_done(id, checksum);
            }
        }
        loop {
            // The writer codes a frame outside the link's lock, as a link's does.
            if let Some(job) = self.tx.frame_to_code() {
                match self.coder.code(job) {
                    Ok(c) => self.tx.start_coded(c.frame, c.base_seq, c.bytes),
                    Err((frame, _)) => self.tx.start_raw(frame),
                }
            }
            let Some(t) = self.tx.poll_transmit(now, &mut self.small) else {
                break;
            };
            let before = self.wire.len();
            self.wire.extend(&self.small);
            if let Some((head, payload)) = &t.bulk {
                self.wire.extend(head);
                self.wire.extend(payload.bytes());
            }
            self.sent += (self.wire.len() - before) as u64;
            if let Some(closing) = t.close {
                self.seen.push(Seen::Closed(closing));
                break;
            }
        }
    }

    /// The reader: `bytes` arrived from the peer, in pieces of the sizes `sizes` gives.
    fn read(&mut self, bytes: &mut VecDeque<u8>, sizes: &mut Sizes, now: Instant) {
        while !bytes.is_empty() && !self.done {
            let dst = self.rx.recv_buf();
            let n = sizes.next().min(dst.len()).min(bytes.len());
            for (d, b) in dst[..n].iter_mut().zip(bytes.drain(..n)) {
                *d = b;
            }
            self.rx.advance(n);
            self.tx.on_receive(now);
            loop {
                match self.rx.poll() {
                    Ok(Some(event)) => self.on_event(event, now),
                    Ok(None) => break,
                    Err(e) => {
                        self.seen.push(Seen::Error(e.to_string()));
                        self.done = true;
                        break;
                    }
                }
            }
        }
    }

    /// What the link's reader does with `event` ([`dispatch::on_event`], the code a
    /// real link runs).
    fn on_event(&mut self, event: RxEvent, now: Instant) {
        self.now = now;
        match dispatch::on_event(event, self) {
            Ok(None) => {}
            Ok(Some((code, reason))) => {
                self.seen.push(Seen::Goodbye(code, reason));
                self.done = true;
            }
            Err(e) => {
                self.seen.push(Seen::Error(e.to_string()));
                self.done = true;
            }
        }
    }

    /// The disk worker does `job` ([`disk::apply`], the code a real worker runs).
    fn run_disk(&mut self, job: DiskJob) {
        // Progress after every write, as a real worker whose queue runs empty.
        let progress = self.window.map(|_| 1);
        let files = self.files.as_mut().expect("connected");
        let mut out = EndDisk {
            tx: &mut self.tx,
            seen: &mut self.seen,
            stored: &mut self.stored,
        };
        if let Err(e) = disk::apply(files, job, progress, &mut out) {
            self.seen.push(Seen::Error(e.to_string()));
            self.done = true;
        }
    }

    /// The stalled disk goes on: what waited is done, in order.
    fn unstall(&mut self) {
        for job in self.stalled.take().unwrap_or_default() {
            self.run_disk(job);
        }
    }

    /// The application cancelled its incoming transfers (the reader's cancel check).
    fn cancel_incoming(&mut self) {
        for t in self.shelf.transfers.snapshot() {
            if t.direction == Direction::Incoming {
                if let Some(t) = self.shelf.transfers.get(t.id) {
                    self.shelf.transfers.request_cancel(&t);
                }
            }
        }
        self.run_disk(DiskJob::Cancelled);
    }

    fn offer(&mut self, wire_id: u64, name: &str, bytes: &[u8]) {
        let path = self.dir.join(format!("out-{name}"));
        std::fs::create_dir_all(&self.dir).expect("temp dir");
        std::fs::write(&path, bytes).expect("written");
        let size = bytes.len() as u64;
        let transfer = self.shelf.transfers.add(
            Direction::Outgoing,
            name,
            size,
            PeerId(self.peer_instance),
            "peer",
            None,
            TransferState::Waiting,
        );
        let file = OutgoingFile {
            path,
            name: name.into(),
            size,
            transfer,
        };
        assert!(self.tx.offer_file(wire_id, file));
    }
}

/// An end's reader effects: what a real link hands to its node and disk worker is
/// recorded, or done at once.
impl LinkEffects for End {
    fn tx<R>(&mut self, f: impl FnOnce(&mut TxConn) -> R) -> R {
        f(&mut self.tx)
    }

    fn frame(&mut self, frame: Frame) {
        self.seen.push(Seen::Frame {
            seq: frame.meta().seq,
            pixels: Bytes(frame.pixels().to_vec()),
        });
    }

    fn text(&mut self, text: Text) {
        self.seen.push(Seen::Text(Bytes(text.body.into_bytes())));
    }

    fn disk(&mut self, job: DiskJob) -> Result<(), ProtocolError> {
        // A stalled disk holds back its writes, and whatever comes after one: the
        // worker does its jobs in order.
        match &mut self.stalled {
            Some(waiting) if !waiting.is_empty() || matches!(job, DiskJob::Data { .. }) => {
                waiting.push_back(job)
            }
            _ => self.run_disk(job),
        }
        Ok(())
    }

    fn rtt(&mut self, us: u64) {
        self.rtt = Some(us);
    }

    fn file_sent(&mut self, _file: OutgoingFile, ok: bool, message: String) {
        self.seen.push(Seen::Sent { ok, message });
    }

    fn elapsed_us(&self) -> u64 {
        self.tx.elapsed_us(self.now)
    }
}

/// An end's disk worker effects.
struct EndDisk<'a> {
    tx: &'a mut TxConn,
    seen: &'a mut Vec<Seen>,
    stored: &'a mut u64,
}

impl DiskEffects for EndDisk<'_> {
    fn written(&mut self, len: usize) {
        *self.stored += len as u64;
    }

    fn send(&mut self, msg: &Message) {
        self.tx.send(msg);
    }

    fn report(&mut self, outcome: FileOutcome) {
        self.seen.push(match outcome {
            FileOutcome::Received { name, path, .. } => Seen::Received {
                name,
                bytes: Bytes(std::fs::read(path).expect("stored")),
            },
            FileOutcome::Failed { reason, .. } => Seen::FileFailed(reason),
        });
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.files = None;
        self.shelf.discard_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn keepalive() -> KeepaliveConfig {
    KeepaliveConfig {
        interval: S,
        timeout: 3 * S,
    }
}

fn rx() -> RxConn {
    let frames = FrameAssembler::new(FramePool::new(4));
    RxConn::new(Limits::default(), frames, FramePool::new(4), None)
}

/// Read sizes from 1 byte to a few KiB, pseudo-random but the same every run.
struct Sizes(u64);

impl Sizes {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        // Mostly small reads, now and then a large one.
        match self.0 % 8 {
            0 => 1,
            1..=5 => 1 + (self.0 >> 8) as usize % 64,
            _ => 1 + (self.0 >> 8) as usize % 5000,
        }
    }
}

/// Two ends, the wire between them, and the clock.
struct Pair {
    a: End,
    b: End,
    now: Instant,
    sizes: Sizes,
    /// Bytes still cross the wire.
    up: bool,
}

impl Pair {
    fn new(seed: u64) -> Pair {
        let now = Instant::now();
        let shelf = |limits| Arc::new(FileShelf::new(limits));
        Pair {
            a: End::new(1, 2, now, shelf(ShelfLimits::default())),
            b: End::new(2, 1, now, shelf(ShelfLimits::default())),
            now,
            sizes: Sizes(seed | 1),
            up: true,
        }
    }

    /// Runs both ends until neither has anything more to say.
    fn drive(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    /// One round: both ends write, and what they wrote crosses (unless the wire is
    /// cut). `false` if nothing was on the wire.
    fn step(&mut self) -> bool {
        self.a.write(self.now);
        self.b.write(self.now);
        if !self.up || (self.a.wire.is_empty() && self.b.wire.is_empty()) {
            return false;
        }
        let mut wire = std::mem::take(&mut self.a.wire);
        self.b.read(&mut wire, &mut self.sizes, self.now);
        let mut wire = std::mem::take(&mut self.b.wire);
        self.a.read(&mut wire, &mut self.sizes, self.now);
        true
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.drive();
    }

    /// The connection drops and both ends connect again (each keeps its node state).
    fn reconnect(&mut self) {
        self.a.reconnect(self.now);
        self.b.reconnect(self.now);
        self.up = true;
        self.drive();
    }
}

fn frame(seq: u64, len: usize) -> Frame {
    let pixels: Vec<u8> = (0..len)
        .map(|i| (i * 31 + seq as usize * 7) as u8)
        .collect();
    Frame::copied(
        FrameGeometry::rgba8((len / 4) as u32, 1),
        seq,
        0,
        &pixels,
        &FramePool::new(1),
    )
}

fn text(body: &str) -> Message {
    Message::Text(Text {
        sent_us: 0,
        from: "a".into(),
        body: body.into(),
    })
}

fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = Sizes(seed | 1);
    (0..len).map(|_| s.next() as u8).collect()
}

#[test]
fn frames_texts_and_pings_cross_whole_however_the_bytes_are_cut() {
    for seed in 1..=20 {
        let mut p = Pair::new(seed);
        let mut expected = Vec::new();
        for seq in 1..=5u64 {
            // Texts above 8 KiB take the large-body path.
            let body = format!("text {seq} {}", "é".repeat(seq as usize * 900));
            p.a.tx.send(&text(&body));
            let f = frame(seq, 4 * (1 + seq as usize * 997));
            // Small messages go out ahead of a frame's chunks.
            expected.push(Seen::Text(Bytes(body.into_bytes())));
            expected.push(Seen::Frame {
                seq,
                pixels: Bytes(f.pixels().to_vec()),
            });
            p.a.tx.offer_frame(f);
            p.drive();
        }
        assert_eq!(p.b.seen, expected, "seed {seed}");
        // A ping a second in, answered 5 ms later: the round trip measures 5 ms.
        p.now += S;
        p.a.write(p.now);
        p.now += 5 * MS;
        p.drive();
        assert_eq!(p.a.rtt, Some(5_000), "seed {seed}");
    }
}

#[test]
fn coded_frames_cross_byte_exact_as_small_deltas_and_a_new_connection_starts_afresh() {
    const W: u32 = 400;
    const H: u32 = 200;
    for seed in 1..=10 {
        let mut p = Pair::new(seed);
        p.a.coding = true;
        p.b.coding = true;
        p.reconnect();
        let pool = FramePool::new(1);
        let geometry = FrameGeometry::rgba8(W, H);
        let mut pixels = pseudo_random_bytes(geometry.total_len(), seed);
        let mut expected = Vec::new();
        let mut sent_per_frame = Vec::new();
        for seq in 1..=6u64 {
            // A few bytes of one tile change from one frame to the next.
            let at = (seq as usize * 7919 * seed as usize) % pixels.len();
            pixels[at] = pixels[at].wrapping_add(1);
            let f = Frame::copied(geometry, seq, 0, &pixels, &pool);
            expected.push(Seen::Frame {
                seq,
                pixels: Bytes(pixels.clone()),
            });
            let before = p.a.sent;
            p.a.tx.offer_frame(f);
            p.drive();
            sent_per_frame.push(p.a.sent - before);
            if seq == 3 {
                // A new connection: no base on either side, so a key frame first.
                p.reconnect();
            }
        }
        assert_eq!(p.b.seen, expected, "seed {seed}");
        let raw = geometry.total_len() as u64;
        // Noise does not compress: the key frames carry it all, the deltas one tile.
        for (i, sent) in sent_per_frame.iter().enumerate() {
            let key = i == 0 || i == 3;
            assert_eq!(*sent > raw, key, "frame {}: {sent} bytes of {raw}", i + 1);
            if !key {
                // One tile of 18 (64 to 127 pixels wide), and the frame's head.
                assert!(*sent < raw / 10, "frame {}: {sent} bytes of {raw}", i + 1);
            }
        }
    }
}

#[test]
fn a_silent_peer_is_dropped_at_the_keepalive_deadline_and_told_why() {
    let mut p = Pair::new(3);
    p.drive();
    // Pings every second keep a live link up as long as it lasts.
    for _ in 0..10 {
        p.advance(S);
    }
    assert!(p.a.seen.is_empty() && p.b.seen.is_empty());
    // The wire goes dead: 3 s of silence, and no more.
    p.up = false;
    let cut = p.now;
    p.advance(3 * S - MS);
    assert!(p.a.seen.is_empty(), "{:?}", p.a.seen);
    p.advance(MS);
    assert_eq!(p.now - cut, 3 * S);
    assert_eq!(p.a.seen, [Seen::Closed(Closing::KeepaliveTimeout(3 * S))]);
    // What it said, had the wire carried it.
    p.up = true;
    let mut wire = std::mem::take(&mut p.a.wire);
    p.b.read(&mut wire, &mut p.sizes, p.now);
    // (Both ends heard nothing, so both gave up.)
    assert!(
        matches!(&p.b.seen[..], [Seen::Closed(Closing::KeepaliveTimeout(_)), Seen::Goodbye(GoodbyeCode::Timeout, why)] if why.contains("3.0 s")),
        "{:?}",
        p.b.seen
    );
}

#[test]
fn a_goodbye_in_the_middle_of_a_frame_is_an_orderly_end_and_no_frame() {
    let mut p = Pair::new(5);
    p.a.tx.offer_frame(frame(1, 40_000));
    // Two of the frame's 40 chunks go out, then the sender is stopped.
    let mut small = Vec::new();
    for _ in 0..2 {
        let t = p.a.tx.poll_transmit(p.now, &mut small).expect("a chunk");
        p.a.wire.extend(&small);
        let (head, payload) = t.bulk.expect("a chunk");
        p.a.wire.extend(&head);
        p.a.wire.extend(payload.bytes());
    }
    p.a.tx.close(GoodbyeCode::Normal, "stopped");
    p.drive();
    assert_eq!(
        p.b.seen,
        [Seen::Goodbye(GoodbyeCode::Normal, "stopped".into())],
        "no partial frame, no error"
    );
    assert!(
        p.b.rx.on_end_of_stream().is_ok(),
        "the end is between messages"
    );
}

#[test]
fn the_stream_cut_inside_a_message_is_a_truncated_message() {
    let mut p = Pair::new(7);
    p.a.tx.offer_frame(frame(1, 4000));
    p.a.write(p.now);
    let mut wire = std::mem::take(&mut p.a.wire);
    wire.truncate(wire.len() - 10);
    p.b.read(&mut wire, &mut p.sizes, p.now);
    assert!(p.b.seen.is_empty());
    assert!(matches!(
        p.b.rx.on_end_of_stream(),
        Err(ProtocolError::Truncated {
            kind: "frame-chunk",
            ..
        })
    ));
}

#[test]
fn a_file_crosses_byte_for_byte_and_is_verified() {
    let mut p = Pair::new(9);
    let bytes = pseudo_random_bytes(100_000, 1);
    p.a.offer(1, "data.bin", &bytes);
    p.a.tx.offer_frame(frame(1, 8000));
    p.drive();
    assert_eq!(
        p.b.seen,
        [
            Seen::Frame {
                seq: 1,
                pixels: Bytes(frame(1, 8000).pixels().to_vec())
            },
            Seen::Received {
                name: "data.bin".into(),
                bytes: Bytes(bytes)
            }
        ]
    );
    assert!(
        matches!(&p.a.seen[..], [Seen::Sent { ok: true, message }] if message.starts_with("stored as")),
        "{:?}",
        p.a.seen
    );
}

#[test]
fn a_transfer_cut_by_a_dropped_connection_resumes_where_it_stopped() {
    let mut p = Pair::new(11);
    let bytes = pseudo_random_bytes(200_000, 2);
    p.a.offer(4, "big.bin", &bytes);
    // Offer, accept, and the first part of the file: then the link drops.
    for _ in 0..6 {
        p.step();
    }
    let got =
        p.b.shelf
            .transfers
            .snapshot()
            .iter()
            .map(|t| t.done_bytes)
            .sum::<u64>();
    assert!(got > 0 && got < bytes.len() as u64, "cut part way: {got}");
    p.reconnect();
    assert_eq!(
        p.b.seen,
        [Seen::Received {
            name: "big.bin".into(),
            bytes: Bytes(bytes)
        }]
    );
    assert_eq!(
        p.b.stored, 200_000,
        "each byte stored once: the second link resumed"
    );
    let transfers = p.b.shelf.transfers.snapshot();
    assert_eq!(transfers.len(), 1, "one transfer, resumed: {transfers:?}");
}

#[test]
fn a_cancel_by_the_receiver_stops_the_sender_and_leaves_nothing() {
    let mut p = Pair::new(13);
    p.a.offer(2, "x.bin", &pseudo_random_bytes(300_000, 3));
    for _ in 0..4 {
        p.step();
    }
    p.b.cancel_incoming();
    p.drive();
    assert_eq!(
        p.b.seen,
        [Seen::FileFailed("cancelled by the receiver".into())]
    );
    assert_eq!(
        p.a.seen,
        [Seen::Sent {
            ok: false,
            message: "cancelled by the receiver".into()
        }]
    );
    assert_eq!(p.a.tx.files_on_link(), 0);
    let left: Vec<_> = std::fs::read_dir(&p.b.dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no partial file left: {left:?}");
}

#[test]
fn a_receiver_whose_disk_stalls_holds_back_its_file_and_never_the_frames() {
    let mut p = Pair::new(17);
    for end in [&mut p.a, &mut p.b] {
        end.window = Some(10_000);
        end.tx.set_file_window(10_000);
    }
    let bytes = pseudo_random_bytes(300_000, 4);
    p.a.offer(1, "slow.bin", &bytes);
    p.b.stalled = Some(VecDeque::new());
    for seq in 1..=30 {
        p.a.tx.offer_frame(frame(seq, 4000));
        p.drive();
        let waiting: usize =
            p.b.stalled
                .iter()
                .flatten()
                .map(|job| match job {
                    DiskJob::Data { len, .. } => *len,
                    _ => 0,
                })
                .sum();
        assert!(
            waiting <= 10_000 && p.a.tx.file_bytes_on_the_way() <= 10_000,
            "frame {seq}: {waiting} bytes wait for the disk, {} on the way",
            p.a.tx.file_bytes_on_the_way()
        );
    }
    let frames =
        p.b.seen
            .iter()
            .filter(|s| matches!(s, Seen::Frame { .. }))
            .count();
    assert_eq!(frames, 30, "every frame crossed while the disk stalled");
    assert!(p.b.seen.iter().all(|s| matches!(s, Seen::Frame { .. })));
    // The disk goes on: the file completes, byte for byte.
    p.b.unstall();
    p.drive();
    assert_eq!(
        p.b.seen.last(),
        Some(&Seen::Received {
            name: "slow.bin".into(),
            bytes: Bytes(bytes)
        })
    );
}
