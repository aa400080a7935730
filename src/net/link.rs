//! One connection: the handshake, the writer thread (control messages, frame chunks and
//! file chunks interleaved; keepalive pings), and the reader loop (reassembly straight
//! from the socket into the frame's buffer, text, files, pongs).

use std::io::{IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::coder::{Begun, Coder, CodingCache};
use super::disk::{DiskContext, DiskJob, DiskQueue};
use super::dispatch::{self, LinkEffects};
use super::files::{
    FileReader, IncomingFiles, OutgoingFile, PeerRef, StreamError, FILE_CHUNK_BYTES,
};
use super::handshake::Handshaken;
use super::liveness::{Liveness, WRITE_SLICE};
use super::node::{Event, PeerSlot, Shared};
use super::reason::LinkEnd;
use super::rx::RxConn;
use super::status::{CodingCounters, Origin, PeerState};
use super::tx::{Closing, Payload, PushOutcome, ReadRequest, TxConn};
use super::{now_us, Codec, NetError};
use crate::frame::{Frame, FramePool};
use crate::protocol::{
    Capabilities, Escaped, FrameAssembler, GoodbyeCode, Message, ProtocolError, Text,
    FILE_WINDOW_BYTES,
};

/// How a reader ended short of a clean end: broken bytes, or a broken connection.
pub(crate) enum ReadEnd {
    Protocol(ProtocolError),
    Io(LinkEnd),
}

impl From<ProtocolError> for ReadEnd {
    fn from(e: ProtocolError) -> ReadEnd {
        ReadEnd::Protocol(e)
    }
}

impl From<NetError> for ReadEnd {
    fn from(e: NetError) -> ReadEnd {
        match e {
            NetError::Protocol(e) => ReadEnd::Protocol(e),
            NetError::Io { context, source } => ReadEnd::Io(LinkEnd::io(context, &source)),
            other => ReadEnd::Io(LinkEnd::Io {
                context: "reading from the peer",
                kind: std::io::ErrorKind::Other,
                message: other.to_string(),
            }),
        }
    }
}

/// What the application, the link's reader and its file worker reach of a live link:
/// the sending half's state ([`TxConn`]) and the condition variables its threads wait
/// on. Every change notifies whoever it concerns; nobody waits while holding the lock
/// except on these condition variables.
pub(crate) struct LinkHandle {
    tx: Mutex<TxConn>,
    /// The writer waits here for something to send (or the keepalive deadline).
    writer_wake: Condvar,
    /// The file worker waits here for a file to read, or room in the read-ahead.
    worker_wake: Condvar,
    /// Signalled when a frame leaves the slot, if anyone waits
    /// ([`LinkHandle::wait_slot_empty`]): no wake-up is spent per frame otherwise.
    taken: Condvar,
    slot_waiters: AtomicUsize,
    /// The socket, shared with the reader and writer (one file descriptor), for a
    /// forced shutdown.
    pub socket: Arc<TcpStream>,
    pub wants_frames: bool,
    pub takes_text: bool,
    pub takes_files: bool,
    /// The peer's hello has `FORMATS`: it takes frames of every pixel format.
    pub takes_all_formats: bool,
    /// The peer's hello has `TILES`: it takes coded frames.
    pub takes_coded: bool,
    /// The node's frame budget needed the room this link's partial frame held: it ends
    /// (see [`LinkHandle::evict`]).
    evicted: AtomicBool,
}

impl LinkHandle {
    /// Codes this link's next frames with `codec` (raw if the peer takes no coded
    /// frames), as a window's codec selector asks; shown in `counters`.
    pub fn set_codec(&self, codec: Codec, counters: &CodingCounters) {
        let codec = if self.takes_coded { codec } else { Codec::Raw };
        lock(&self.tx).change_coding(codec.compression(), codec == Codec::Auto);
        counters.set_codec(codec);
        counters.coding_now.store(
            codec.compression().is_some() && codec != Codec::Auto,
            Relaxed,
        );
        self.writer_wake.notify_one();
    }

    /// Ends the link because the node's frame budget needs the room its partial frame
    /// holds: the goodbye goes out at the next message boundary, and the reader, woken
    /// by a shutdown of the socket's reading side, lets the frame go.
    fn evict(&self) {
        self.evicted.store(true, Relaxed);
        self.close(
            GoodbyeCode::ProtocolError,
            &ProtocolError::FrameEvicted.to_string(),
        );
        let _ = self.socket.shutdown(Shutdown::Read);
    }

    /// Runs `f` on the sending state, then wakes the writer and the file worker.
    pub fn with<R>(&self, f: impl FnOnce(&mut TxConn) -> R) -> R {
        let r = f(&mut lock(&self.tx));
        self.writer_wake.notify_one();
        self.worker_wake.notify_one();
        r
    }

    /// Puts `frame` in the link's one-frame slot; returns whether it replaced one not
    /// yet sent.
    pub fn offer_frame(&self, frame: Frame) -> bool {
        let replaced = lock(&self.tx).offer_frame(frame);
        self.writer_wake.notify_one();
        replaced
    }

    /// Queues a small message; `false` if the peer is too far behind or the link is
    /// closing (the message is dropped).
    pub fn send(&self, msg: &Message) -> bool {
        let queued = lock(&self.tx).send(msg);
        if queued {
            self.writer_wake.notify_one();
        }
        queued
    }

    /// Asks for the goodbye, sent at the next message boundary.
    pub fn close(&self, code: GoodbyeCode, reason: &str) {
        self.with(|tx| tx.close(code, reason));
    }

    /// Waits until the slot is empty (the writer took the frame), at most until
    /// `deadline`; returns whether it is.
    pub fn wait_slot_empty(&self, deadline: Instant) -> bool {
        // Counted before the slot is looked at: a writer that takes the frame after
        // this sees the waiter and wakes it.
        self.slot_waiters.fetch_add(1, SeqCst);
        let mut tx = lock(&self.tx);
        let mut empty = true;
        while !tx.slot_empty() && !tx.is_closed() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                empty = false;
                break;
            }
            tx = match self.taken.wait_timeout(tx, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(tx);
        self.slot_waiters.fetch_sub(1, SeqCst);
        empty
    }

    fn frame_taken(&self) {
        if self.slot_waiters.load(SeqCst) > 0 {
            // Under the lock, so a waiter between its check and its wait cannot miss it.
            let _tx = lock(&self.tx);
            self.taken.notify_all();
        }
    }

    /// The connection is over: everything stops, and the files still on the link are
    /// handed back (to wait for the peer's return).
    fn finish(&self) -> Vec<(u64, OutgoingFile)> {
        let files = lock(&self.tx).take_files();
        self.writer_wake.notify_all();
        self.worker_wake.notify_all();
        self.taken.notify_all();
        files
    }
}

/// Capacity of the file pool's buffers for one link.
pub(crate) const FILE_BUFFERS_PER_LINK: usize = super::tx::FILE_CHUNKS_AHEAD + 2;

/// A socket shared by a connection's reader and writer: `&TcpStream` reads and writes,
/// so the two halves need no second file descriptor. Writes keep the link's deadlines
/// while they block ([`Liveness`]).
struct SharedSocket(Arc<TcpStream>, Arc<Liveness>);

impl Read for SharedSocket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SharedSocket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.write(&self.0, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        self.1.write_vectored(&self.0, bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection's byte streams after its handshake: the socket itself, or the two
/// halves of a TLS session over it. All of them share one socket.
pub(crate) struct Transport {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
    /// The socket, for its address, options and shutdown.
    pub socket: Arc<TcpStream>,
    pub encrypted: bool,
    /// The peer's TLS certificate fingerprint.
    pub peer_fingerprint: Option<String>,
    /// When the peer was last heard from; the writer's deadlines.
    pub liveness: Arc<Liveness>,
}

impl Transport {
    pub fn plain(socket: TcpStream) -> Result<Transport, NetError> {
        let socket = Arc::new(socket);
        let liveness = Arc::new(Liveness::default());
        Ok(Transport {
            reader: Box::new(SharedSocket(socket.clone(), liveness.clone())),
            writer: Box::new(SharedSocket(socket.clone(), liveness.clone())),
            socket,
            encrypted: false,
            peer_fingerprint: None,
            liveness,
        })
    }

    pub fn tls(session: super::tls::TlsSession) -> Result<Transport, NetError> {
        let peer_fingerprint = session.peer_fingerprint.clone();
        let liveness = Arc::new(Liveness::default());
        let (reader, writer, socket) = session.split(liveness.clone())?;
        Ok(Transport {
            reader: Box::new(reader),
            writer: Box::new(writer),
            socket,
            encrypted: true,
            peer_fingerprint,
            liveness,
        })
    }
}

/// Threads a link runs, the one that calls [`run_link`] (its reader) included: the
/// reader, the writer, the file worker (reads the files we send) and the disk worker
/// (writes the files we receive). Fixed: nothing a peer sends starts another.
pub const THREADS_PER_LINK: usize = 4;

/// How long a closing writer waits for the peer to close its side after our goodbye
/// (so that nothing we sent is cut by a reset), before it closes the socket anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Runs a connected link until it ends; returns why it ended.
pub(crate) fn run_link(
    shared: &Arc<Shared>,
    slot: &Arc<PeerSlot>,
    transport: Transport,
    handshaken: Handshaken,
) -> LinkEnd {
    match run_link_inner(shared, slot, transport, handshaken) {
        Ok(end) => end,
        Err(e) => LinkEnd::io("starting the link", &e),
    }
}

fn run_link_inner(
    shared: &Arc<Shared>,
    slot: &Arc<PeerSlot>,
    transport: Transport,
    handshaken: Handshaken,
) -> Result<LinkEnd, std::io::Error> {
    let Handshaken {
        hello,
        authenticated,
    } = handshaken;
    let Transport {
        reader: mut reader_stream,
        writer: writer_stream,
        socket,
        encrypted,
        peer_fingerprint,
        liveness,
    } = transport;
    let config = &shared.config;
    let addr = socket.peer_addr()?;
    socket.set_nodelay(true)?;
    keep_unsent_bytes_low(&socket);
    // A blocked write looks at the deadlines every slice: it gives up once the peer has
    // been silent past the idle deadline, or the write made no progress for as long.
    socket.set_write_timeout(Some(WRITE_SLICE))?;
    liveness.set_idle(config.keepalive.timeout);
    // The handshake was the last thing heard.
    liveness.heard();
    let epoch = liveness.epoch();
    let caps = hello.capabilities;
    let flow = caps.has(Capabilities::FILE_WINDOW);
    let mut tx = TxConn::new(config.chunk_bytes, config.keepalive, epoch);
    if flow {
        tx.set_file_window(FILE_WINDOW_BYTES);
    }
    let codec = shared.codec();
    let coding = caps
        .has(Capabilities::TILES)
        .then(|| codec.compression())
        .flatten();
    if let Some(compression) = coding {
        tx.set_coding(compression);
        if codec == Codec::Auto {
            tx.set_auto();
        }
    }
    slot.counters
        .coding
        .set_codec(if coding.is_some() { codec } else { Codec::Raw });
    let coding_now = coding.is_some() && codec != Codec::Auto;
    slot.counters.coding.coding_now.store(coding_now, Relaxed);
    let link = Arc::new(LinkHandle {
        tx: Mutex::new(tx),
        writer_wake: Condvar::new(),
        worker_wake: Condvar::new(),
        taken: Condvar::new(),
        slot_waiters: AtomicUsize::new(0),
        socket: socket.clone(),
        wants_frames: caps.has(Capabilities::FRAMES_IN),
        takes_text: caps.has(Capabilities::TEXT),
        takes_files: caps.has(Capabilities::FILES_IN),
        takes_all_formats: caps.has(Capabilities::FORMATS),
        takes_coded: caps.has(Capabilities::TILES),
        evicted: AtomicBool::new(false),
    });

    // The writer and the file worker first: nothing is routed to the link before both
    // run, and a failure to start either leaves nothing behind.
    let (done_tx, done_rx) = flume::bounded(1);
    let (reader_done_tx, reader_done_rx) = flume::bounded::<()>(1);
    let writer = {
        let link = link.clone();
        let shared = shared.clone();
        let slot = slot.clone();
        let liveness = liveness.clone();
        let span = tracing::info_span!("tx", peer = %addr);
        std::thread::Builder::new()
            .name(format!("texstream tx {addr}"))
            .spawn(move || {
                let _g = span.enter();
                let mut stream = writer_stream;
                let sent = Sent {
                    link_bytes: &slot.counters.bytes_sent,
                    node_bytes: &shared.counters.bytes_sent,
                    frames: &slot.counters.frames_sent,
                    coding: &slot.counters.coding,
                };
                let stall = shared.config.keepalive.timeout;
                let result = run_writer(
                    &link,
                    &mut *stream,
                    stall,
                    &sent,
                    &liveness,
                    &shared.codings,
                );
                let _ = stream.flush();
                if matches!(result, Ok(WriterEnd::Closed(_))) {
                    // Our goodbye is the last thing we send: let the peer read it and
                    // close its side, so that no reset cuts what is still in flight.
                    let _ = link.socket.shutdown(Shutdown::Write);
                    let _ = reader_done_rx.recv_timeout(CLOSE_LINGER);
                }
                let _ = link.socket.shutdown(Shutdown::Both);
                let _ = done_tx.send(result);
            })?
    };
    let worker = {
        let link = link.clone();
        let shared = shared.clone();
        let slot = slot.clone();
        std::thread::Builder::new()
            .name(format!("texstream files {addr}"))
            .spawn(move || {
                run_file_worker(&link, &shared.file_pool, |file, reason| {
                    shared.emit(Event::FileSent {
                        peer: slot.id,
                        name: file.name,
                        ok: false,
                        message: reason,
                    })
                })
            })
    };
    let worker = match worker {
        Ok(w) => w,
        Err(e) => {
            link.finish();
            let _ = socket.shutdown(Shutdown::Both);
            let _ = writer.join();
            return Err(e);
        }
    };
    let (disk, disk_worker) = super::disk::queue(flow);
    let disk_thread = {
        let files = IncomingFiles::new(
            config.files_dir.clone(),
            config.max_files_per_peer,
            shared.files.clone(),
            PeerRef {
                id: slot.id,
                name: hello.name.clone(),
                instance: hello.instance,
            },
        );
        let cx = DiskContext {
            shared: shared.clone(),
            link: link.clone(),
            peer: slot.id,
            addr,
        };
        std::thread::Builder::new()
            .name(format!("texstream disk {addr}"))
            .spawn(move || disk_worker.run(files, &cx))
    };
    let disk_thread = match disk_thread {
        Ok(t) => t,
        Err(e) => {
            link.finish();
            let _ = socket.shutdown(Shutdown::Both);
            let _ = writer.join();
            let _ = worker.join();
            return Err(e);
        }
    };

    *lock(&slot.link) = Some(link.clone());
    slot.set_connected(addr, &hello, authenticated, encrypted, peer_fingerprint);
    if shared.config.follow_name.as_deref() == Some(hello.name.as_str()) {
        shared.follow_peer(slot.id);
    }
    tracing::debug!(peer = %slot.id, name = %Escaped(&hello.name), role = hello.role.name(), "connected to {addr}");
    shared.emit(Event::PeerConnected {
        peer: slot.id,
        addr,
        name: hello.name.clone(),
        role: hello.role,
    });
    resume_outgoing_files(shared, slot);

    let mut reader = Reader {
        shared: shared.clone(),
        slot: slot.clone(),
        link: link.clone(),
        liveness,
        disk,
        peer_sends_frames: caps.has(Capabilities::FRAMES_OUT),
        cancels_seen: shared.files.transfers.cancel_generation(),
    };
    let mut rx = reader.rx();
    let mut read_result = read_loop(&mut reader_stream, &mut rx, &mut reader);
    let disk_error = reader.disk.take_error();
    // The disk worker ends once it has handled what the reader handed it, and parks
    // the files still coming in (to resume when the peer is back).
    drop(reader);
    let _ = disk_thread.join();
    if link.evicted.load(Relaxed) {
        // Whatever the reader saw after the shutdown (an end of stream, a message cut
        // short), the link ended for the budget.
        read_result = Err(ReadEnd::Protocol(ProtocolError::FrameEvicted));
    } else if let Some(e) = disk_error {
        // Likewise when the disk worker found the peer's file data broken.
        read_result = Err(ReadEnd::Protocol(e));
    }
    let _ = reader_done_tx.try_send(());

    // Answer the peer's end (or tell it why we end), at the next message boundary; then
    // stop routing frames and messages to this link.
    match &read_result {
        Err(ReadEnd::Protocol(e)) => {
            shared.counters.protocol_errors.fetch_add(1, Relaxed);
            if matches!(e, ProtocolError::ChecksumMismatch { .. }) {
                shared.counters.checksum_failures.fetch_add(1, Relaxed);
            }
            // (An evicted link's goodbye is on its way already; this one is ignored.)
            link.close(GoodbyeCode::ProtocolError, &e.to_string());
        }
        _ => link.close(GoodbyeCode::Normal, ""),
    }
    *lock(&slot.link) = None;
    let write_result = match done_rx.recv_timeout(Duration::from_millis(500)) {
        Ok(r) => r,
        Err(_) => {
            let _ = socket.shutdown(Shutdown::Both);
            done_rx.recv().unwrap_or(Ok(WriterEnd::Dropped))
        }
    };
    let _ = socket.shutdown(Shutdown::Both);
    let _ = writer.join();
    // Files we were sending wait for this peer to come back.
    for (wire_id, file) in link.finish() {
        shared.files.park_outgoing(hello.instance, wire_id, file);
    }
    let _ = worker.join();
    // The peer may be back already on a new connection (it redialed before this one
    // was torn down): resume there.
    if let Some(other) = shared.connected_slot_of(hello.instance, slot.id) {
        resume_outgoing_files(shared, &other);
    }

    // The writer's own failure (keepalive, a stalled peer) explains the reader's end.
    let end = match (read_result, write_result) {
        (_, Err(e @ (LinkEnd::KeepaliveTimeout(_) | LinkEnd::PeerStalled(_)))) => e,
        (_, Ok(WriterEnd::Closed(Closing::KeepaliveTimeout(d)))) => LinkEnd::KeepaliveTimeout(d),
        // We closed it (operator, shutdown): the peer's end of stream is only the echo,
        // and so is a reset (bytes the peer sent after our shutdown make the kernel
        // abort the connection).
        (Ok(_) | Err(ReadEnd::Io(_)), Ok(WriterEnd::Closed(Closing::Asked { code, reason })))
            if !reason.is_empty() =>
        {
            LinkEnd::ClosedHere { code, reason }
        }
        (Ok(end), _) => end,
        (Err(ReadEnd::Protocol(e)), _) => LinkEnd::Protocol(e),
        (Err(ReadEnd::Io(end)), _) => end,
    };
    Ok(end)
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes written to a link's socket that may wait unsent in the kernel: past this a
/// write waits, so a frame the link cannot carry yet waits in the link's one-frame slot
/// (where a newer one replaces it) instead of behind stale bytes in the socket buffer.
/// On a link slower than the stream that bounds the delay to about this much on the
/// wire; on a fast one, it is a few chunks of the writer's time.
pub const UNSENT_BYTES_MOST: u32 = 512 << 10;

/// Sets [`UNSENT_BYTES_MOST`] on `socket` (Linux's `TCP_NOTSENT_LOWAT`); elsewhere the
/// socket buffer alone bounds what waits.
fn keep_unsent_bytes_low(socket: &TcpStream) {
    #[cfg(target_os = "linux")]
    if let Err(e) = socket2::SockRef::from(socket).set_tcp_notsent_lowat(UNSENT_BYTES_MOST) {
        tracing::debug!("TCP_NOTSENT_LOWAT not set: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// How a writer ended without an error.
enum WriterEnd {
    /// It sent a goodbye.
    Closed(Closing),
    /// The link was finished from outside.
    Dropped,
}

/// The counters a writer adds to: its link's bytes, frames and coding, the node's
/// bytes.
struct Sent<'a> {
    link_bytes: &'a std::sync::atomic::AtomicU64,
    node_bytes: &'a std::sync::atomic::AtomicU64,
    frames: &'a std::sync::atomic::AtomicU64,
    coding: &'a CodingCounters,
}

/// The writer thread: asks the link's [`TxConn`] for the next bytes and writes them,
/// small messages, bulk head and payload in one vectored write straight from the
/// shared frame or file buffer (no copy of ours). Sleeps on the link's condition
/// variable until something changes or the keepalive deadline. It sees the link, the
/// socket and the counters it adds to, nothing of the node. `stall`: the deadline a
/// blocked write is held to (the keepalive timeout), named when it ends the link.
fn run_writer(
    link: &LinkHandle,
    stream: &mut dyn Write,
    stall: Duration,
    sent: &Sent<'_>,
    liveness: &Liveness,
    codings: &CodingCache,
) -> Result<WriterEnd, LinkEnd> {
    let mut small = Vec::with_capacity(64 << 10);
    let mut coder = Coder::default();
    // The frame on the wire: whether coded, its raw bytes, when it was taken, when it
    // went on the wire and its bytes there.
    let mut on_wire: Option<(bool, usize, Instant, Instant, usize)> = None;
    // The link's rate, bytes a second, as its frames went out: with the coder's time
    // for a frame, how much of a frame on the wire is left when the next one begins
    // to code (TxConn::set_code_ahead).
    let mut wire_rate: Option<f64> = None;
    // A frame taken to be coded, coding (on the coder pool) while the frame before it
    // is still on the wire: how it began, its raw bytes, when it was taken, and the
    // writer's own time spent on it so far.
    let mut coding: Option<(Begun, usize, Instant, Duration)> = None;
    // When the last frame was done on the wire: a frame costs the link the time from
    // then (or from when it was taken, if later) to when it is done.
    let mut last_done = Instant::now();
    let mut tx = lock(&link.tx);
    loop {
        let now = Instant::now();
        tx.on_receive(liveness.last_heard());
        if coding.is_some() && tx.wire_free() {
            let Some((begun, raw_len, taken, spent)) = coding.take() else {
                continue;
            };
            // Finished outside the lock: publishing and the link's other threads go on.
            drop(tx);
            let (coded, shared) = codings.finish(&mut coder, begun);
            let coding_us = (spent + now.elapsed()).as_micros() as u64;
            if shared {
                sent.coding.frames_shared.fetch_add(1, Relaxed);
            }
            tx = lock(&link.tx);
            match coded {
                Ok(c) => {
                    let wire = c.bytes.len() as u64;
                    sent.coding.frame(raw_len as u64, wire, Some(coding_us));
                    tx.start_coded(c.frame, c.base_seq, c.bytes);
                    on_wire = Some((true, raw_len, taken, Instant::now(), wire as usize));
                }
                Err((frame, e)) => {
                    tracing::debug!("frame {} goes raw: {e}", frame.meta().seq);
                    sent.coding.frame(raw_len as u64, raw_len as u64, None);
                    tx.start_raw(frame);
                    on_wire = Some((false, raw_len, taken, Instant::now(), raw_len));
                }
            }
            continue;
        }
        if coding.is_none() {
            if let Some(job) = tx.frame_to_code() {
                // Begun outside the lock; a large frame codes on the pool while this
                // thread writes the frame before it.
                drop(tx);
                link.frame_taken();
                let raw_len = job.frame.pixels().len();
                let begun = codings.begin(&mut coder, job);
                coding = Some((begun, raw_len, now, now.elapsed()));
                tx = lock(&link.tx);
                continue;
            }
        }
        let Some(t) = tx.poll_transmit(now, &mut small) else {
            if tx.is_closed() {
                return Ok(WriterEnd::Dropped);
            }
            let wait = tx.poll_timeout().saturating_duration_since(now);
            tx = match link.writer_wake.wait_timeout(tx, wait) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            continue;
        };
        drop(tx);
        if t.frame_taken {
            link.frame_taken();
            if let Some((_, Payload::Frame { frame, .. })) = &t.bulk {
                let len = frame.pixels().len();
                sent.coding.frame(len as u64, len as u64, None);
                on_wire = Some((false, len, now, now, len));
            }
        }
        let result = match &t.bulk {
            Some((head, payload)) => {
                let payload = payload.bytes();
                let mut slices = [
                    IoSlice::new(&small),
                    IoSlice::new(head),
                    IoSlice::new(payload),
                ];
                write_all_vectored(stream, &mut slices)
                    .map(|()| small.len() + head.len() + payload.len())
            }
            None => stream.write_all(&small).map(|()| small.len()),
        }
        .and_then(|n| stream.flush().map(|()| n));
        if matches!(t.bulk, Some((_, Payload::File { .. }))) {
            // Room in the read-ahead.
            link.worker_wake.notify_one();
        }
        match result {
            Ok(n) => {
                sent.link_bytes.fetch_add(n as u64, Relaxed);
                sent.node_bytes.fetch_add(n as u64, Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // A write blocked past a deadline: the peer went silent (and with it,
                // most likely, stopped reading), or it is heard from but reads nothing.
                return Err(if liveness.silent_at(Instant::now()) {
                    LinkEnd::KeepaliveTimeout(stall)
                } else {
                    LinkEnd::PeerStalled(stall)
                });
            }
            Err(e) => return Err(LinkEnd::io("sending to the peer", &e)),
        }
        if t.frame_done {
            sent.frames.fetch_add(1, Relaxed);
        }
        if let Some(closing) = t.close {
            return Ok(WriterEnd::Closed(closing));
        }
        tx = lock(&link.tx);
        if t.frame_done {
            let done = Instant::now();
            if let Some((coded, raw_len, taken, wire_start, wire_len)) = on_wire.take() {
                let cost = done.duration_since(taken.max(last_done));
                tx.on_frame_sent(coded, raw_len, cost.as_micros() as u64);
                let secs = done.duration_since(wire_start).as_secs_f64();
                if secs > 0.0 {
                    let rate = wire_len as f64 / secs;
                    let rate = wire_rate.map_or(rate, |r| r + 0.3 * (rate - r));
                    wire_rate = Some(rate);
                    if let Some(took) = coder.last_took() {
                        // A quarter more than the coding needs: ready as the wire frees.
                        let ahead = rate * took.as_secs_f64() * 1.25;
                        tx.set_code_ahead(ahead.min(usize::MAX as f64) as usize);
                    }
                }
                let now_coding = tx.coding_now() == Some(true);
                sent.coding.coding_now.store(now_coding, Relaxed);
            }
            last_done = done;
        }
    }
}

/// The file worker: reads the files the peer accepted, one at a time, through buffers
/// of the node's file pool, and hands their chunks to the writer (at most
/// [`super::tx::FILE_CHUNKS_AHEAD`] ahead of the wire). Disk reads never happen on the
/// writer or the reader, so a slow disk never holds up frames. A file that cannot be
/// read fails its transfer and goes to `failed` with the reason.
fn run_file_worker(link: &LinkHandle, pool: &FramePool, failed: impl Fn(OutgoingFile, String)) {
    loop {
        let request = {
            let mut tx = lock(&link.tx);
            loop {
                if tx.is_closed() {
                    return;
                }
                if let Some(r) = tx.take_read() {
                    break r;
                }
                tx = match link.worker_wake.wait(tx) {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
            }
        };
        let id = request.id;
        match stream_file(link, &request, pool) {
            // Sent; the receiver's verdict comes as a FileResult. Stopped: answered,
            // cancelled (the cancel went out already) or the link closed (parked).
            Ok(()) | Err(StreamError::Stopped) => {}
            Err(StreamError::Failed(reason)) => {
                if let Some(file) = link.with(|tx| tx.file_read_failed(id, &reason)) {
                    tracing::debug!(
                        "sending {} failed: {}",
                        Escaped(&file.name),
                        Escaped(&reason)
                    );
                    file.transfer.finish_failed(&reason);
                    failed(file, reason);
                }
            }
        }
    }
}

/// Reads the file of `request` from its offset and queues its chunks on the link, then
/// its checksum (which covers the whole file, also when resuming).
fn stream_file(
    link: &LinkHandle,
    request: &ReadRequest,
    pool: &FramePool,
) -> Result<(), StreamError> {
    let ReadRequest { id, from, file } = request;
    let mut reader = FileReader::open(file, *from)?;
    file.transfer.set_running(*from);
    loop {
        let mut buf = pool.take(FILE_CHUNK_BYTES);
        let Some((offset, len)) = reader.next_chunk(&mut buf)? else {
            break;
        };
        let mut tx = lock(&link.tx);
        loop {
            match tx.push_file_chunk(*id, offset, buf, len) {
                PushOutcome::Queued => break,
                PushOutcome::Stopped => return Err(StreamError::Stopped),
                PushOutcome::Full(back) => {
                    buf = back;
                    tx = match link.worker_wake.wait(tx) {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                }
            }
        }
        drop(tx);
        link.writer_wake.notify_one();
        file.transfer.add_done(len as u64);
    }
    let checksum = reader.finish()?;
    if link.with(|tx| tx.file_read_done(*id, checksum)) {
        Ok(())
    } else {
        Err(StreamError::Stopped)
    }
}

fn write_all_vectored(
    stream: &mut dyn Write,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct Reader {
    shared: Arc<Shared>,
    slot: Arc<PeerSlot>,
    link: Arc<LinkHandle>,
    liveness: Arc<Liveness>,
    /// The link's incoming files, on their own worker.
    disk: DiskQueue,
    /// The peer's hello announced frames it sends.
    peer_sends_frames: bool,
    /// The transfers' cancel generation the disk worker was last told of.
    cancels_seen: u64,
}

/// The reading driver: moves bytes from `stream` to where `rx` says and hands what they
/// complete to [`dispatch::on_event`], until the peer leaves (`Ok` with the reason) or
/// breaks the protocol or the connection (`Err`). It sees the socket, the receiving
/// state and the link's effects, nothing of the node: a frame's payload goes straight
/// from the socket into its buffer.
fn read_loop(
    stream: &mut dyn Read,
    rx: &mut RxConn,
    out: &mut impl LinkEffects,
) -> Result<LinkEnd, ReadEnd> {
    loop {
        out.before_read()?;
        while let Some(event) = rx.poll()? {
            if let Some((code, reason)) = dispatch::on_event(event, out)? {
                return Ok(LinkEnd::PeerGoodbye { code, reason });
            }
        }
        let n = match stream.read(rx.recv_buf()) {
            Ok(0) => {
                rx.on_end_of_stream()?;
                return Ok(LinkEnd::PeerClosed);
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(NetError::io("reading from the peer", e).into()),
        };
        out.received(n);
        rx.advance(n);
    }
}

impl Reader {
    /// The receiving state of this link: frames into the node's pool under its budget,
    /// file data into pooled pieces, frames refused if this link takes none.
    fn rx(&self) -> RxConn {
        let frames = FrameAssembler::with_budget(
            self.shared.pool.clone(),
            self.shared.frame_budget.clone(),
            Some(self.evict_hook()),
        );
        let mut rx = RxConn::new(
            self.shared.config.limits,
            frames,
            self.shared.file_pool.clone(),
            self.frames_refused(),
        );
        if self.shared.config.capabilities().has(Capabilities::TILES) {
            rx.take_coded();
        }
        rx
    }

    /// How the frame budget ends this link ([`LinkHandle::evict`]). Holds the link
    /// weakly: the budget's ledger must not keep a link alive.
    fn evict_hook(&self) -> crate::protocol::Evict {
        let link = Arc::downgrade(&self.link);
        Arc::new(move || {
            if let Some(link) = link.upgrade() {
                link.evict();
            }
        })
    }

    /// Why frames from this peer are refused, if they are: this node takes none, the
    /// peer said in its hello that it sends none, or this node takes frames only from
    /// the peers it dialed (a relay's upstreams) and this one dialed us.
    fn frames_refused(&self) -> Option<&'static str> {
        let config = &self.shared.config;
        if !config.capabilities().has(Capabilities::FRAMES_IN) {
            Some("by a node that takes no frames")
        } else if !self.peer_sends_frames {
            Some("from a peer whose hello said it sends none")
        } else if config.frames_from_dialed_only && self.slot.origin != Origin::Dialed {
            Some("from a peer that dialed a relay (it takes frames from its upstream only)")
        } else {
            None
        }
    }
}

/// A real link's effects: the node delivers frames and texts, the disk worker takes the
/// file messages, the link's lock guards its sending state.
impl LinkEffects for Reader {
    fn tx<R>(&mut self, f: impl FnOnce(&mut TxConn) -> R) -> R {
        self.link.with(f)
    }

    fn send(&mut self, msg: &Message) -> bool {
        self.link.send(msg)
    }

    fn frame(&mut self, frame: Frame) {
        self.slot.counters.frames_received.fetch_add(1, Relaxed);
        self.slot.sends_frames.store(true, Relaxed);
        self.shared.frame_received(self.slot.id, frame);
    }

    fn text(&mut self, text: Text) {
        self.shared.text_received(self.slot.id, text);
    }

    fn disk(&mut self, job: DiskJob) -> Result<(), ProtocolError> {
        self.disk.push(job)
    }

    fn rtt(&mut self, us: u64) {
        self.slot.counters.rtt_us.store(us, Relaxed);
    }

    fn file_sent(&mut self, file: OutgoingFile, ok: bool, message: String) {
        self.shared.emit(Event::FileSent {
            peer: self.slot.id,
            name: file.name,
            ok,
            message,
        });
    }

    fn elapsed_us(&self) -> u64 {
        self.liveness.epoch().elapsed().as_micros() as u64
    }

    fn pong_sent_us(&self) -> u64 {
        now_us()
    }

    fn received(&mut self, bytes: usize) {
        self.liveness.heard();
        self.slot
            .counters
            .bytes_received
            .fetch_add(bytes as u64, Relaxed);
        self.shared
            .counters
            .bytes_received
            .fetch_add(bytes as u64, Relaxed);
    }

    /// The application cancelled transfers since the last read: the disk worker fails
    /// those of this link.
    fn before_read(&mut self) -> Result<(), ProtocolError> {
        let cancels = self.shared.files.transfers.cancel_generation();
        if cancels != self.cancels_seen {
            self.cancels_seen = cancels;
            self.disk.push(DiskJob::Cancelled)?;
        }
        Ok(())
    }
}

impl PeerSlot {
    fn set_connected(
        &self,
        addr: SocketAddr,
        hello: &crate::protocol::Hello,
        authenticated: bool,
        encrypted: bool,
        peer_fingerprint: Option<String>,
    ) {
        let mut info = lock(&self.info);
        info.authenticated = authenticated;
        info.encrypted = encrypted;
        info.tls_fingerprint = peer_fingerprint;
        info.instance = hello.instance;
        info.state = PeerState::Connected;
        info.addr = Some(addr);
        info.name = Some(hello.name.clone());
        info.role = Some(hello.role);
    }
}

/// Offers again, with the same ids, the files this peer's previous connection was
/// receiving when it dropped; the peer answers with where to resume.
fn resume_outgoing_files(shared: &Shared, slot: &PeerSlot) {
    let (instance, name) = {
        let info = lock(&slot.info);
        (info.instance, info.name.clone().unwrap_or_default())
    };
    let Some(link) = lock(&slot.link).clone() else {
        return;
    };
    for (wire_id, file) in shared.files.unpark_outgoing(instance) {
        if !link.takes_files {
            file.transfer
                .finish_failed("the peer came back without taking files");
            continue;
        }
        tracing::info!("offering {} again to resume it", Escaped(&file.name));
        file.transfer.set_waiting(slot.id, &name);
        let transfer = file.transfer.clone();
        if !link.with(|tx| tx.offer_file(wire_id, file)) {
            transfer.finish_failed("the connection closed before the transfer could resume");
        }
    }
}
