//! One connection: the handshake, the writer thread (control messages, frame chunks and
//! file chunks interleaved; keepalive pings), and the reader loop (reassembly straight
//! from the socket into the frame's buffer, text, files, pongs).

use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::files::{stream_file, FileOutcome, IncomingFiles, PeerRef, StreamError};
use super::handshake::Handshaken;
use super::keepalive::{Keepalive, KeepaliveAction};
use super::node::{Event, LinkTx, PeerSlot, Shared};
use super::status::PeerState;
use super::{now_us, NetError};
use crate::frame::{Frame, PooledBuf};
use crate::protocol::{
    decode_body, encode, encode_bulk_head, Assembled, BulkHead, Capabilities, Envelope, FileCancel,
    FrameAssembler, GoodbyeCode, Kind, Message, Ping, Pong, ProtocolError, BULK_HEAD_LEN,
    ENVELOPE_LEN,
};

/// Work for a link's writer thread, besides frames (which come through the frame slot).
pub(crate) enum Outgoing {
    Msg(Message),
    /// A frame is waiting in the [`FrameSlot`].
    Wake,
    FileChunk {
        id: u64,
        offset: u64,
        data: PooledBuf,
        len: usize,
    },
    /// Send a goodbye, flush, and close the connection.
    Close {
        code: GoodbyeCode,
        reason: String,
    },
}

/// Capacity of a link's queue of outgoing messages and file chunks.
pub(crate) const OUT_QUEUE: usize = 64;

/// A link's one-frame slot: the newest frame waiting for the writer. Publishing replaces
/// a frame still waiting (that one is skipped) and wakes the writer through its outgoing
/// queue — at most one wake-up in flight, so wakes never crowd out control messages.
/// The writer re-arms the wake-up (and looks at the slot once more) before it sleeps, so
/// a frame is never left waiting for a writer that missed it.
#[derive(Default)]
pub(crate) struct FrameSlot {
    frame: std::sync::Mutex<Option<Frame>>,
    wake_pending: std::sync::atomic::AtomicBool,
    /// Signalled when the writer takes the frame, if anyone waits (see
    /// [`FrameSlot::wait_empty`]): no wake-up is spent per frame otherwise.
    taken: std::sync::Condvar,
    waiting: std::sync::atomic::AtomicUsize,
}

impl FrameSlot {
    /// Puts `frame` in the slot; returns whether it replaced one not yet taken.
    pub fn offer(&self, frame: Frame, out: &flume::Sender<Outgoing>) -> bool {
        let replaced = lock(&self.frame).replace(frame).is_some();
        if !self.wake_pending.swap(true, SeqCst) {
            // A full queue means the writer is busy: it takes the slot in its loop.
            let _ = out.try_send(Outgoing::Wake);
        }
        replaced
    }

    fn take(&self) -> Option<Frame> {
        let frame = lock(&self.frame).take();
        if frame.is_some() && self.waiting.load(SeqCst) > 0 {
            self.taken.notify_all();
        }
        frame
    }

    /// Waits until the slot is empty (the writer took the frame), at most until
    /// `deadline`; returns whether it is.
    pub fn wait_empty(&self, deadline: Instant) -> bool {
        // Counted before the slot is looked at: a writer that takes the frame after
        // this sees the waiter and wakes it.
        self.waiting.fetch_add(1, SeqCst);
        let mut frame = lock(&self.frame);
        let mut empty = true;
        while frame.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                empty = false;
                break;
            }
            frame = match self.taken.wait_timeout(frame, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(frame);
        self.waiting.fetch_sub(1, SeqCst);
        empty
    }

    /// Re-arms the wake-up; returns whether a frame is waiting after all.
    fn arm(&self) -> bool {
        self.wake_pending.store(false, SeqCst);
        lock(&self.frame).is_some()
    }
}

/// A connection's byte streams after its handshake: the socket itself, or the two
/// halves of a TLS session over it.
pub(crate) struct Transport {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
    /// The socket, for its address, options and shutdown.
    pub socket: TcpStream,
    pub encrypted: bool,
    /// The peer's TLS certificate fingerprint.
    pub peer_fingerprint: Option<String>,
}

impl Transport {
    pub fn plain(socket: TcpStream) -> Result<Transport, NetError> {
        let clone = || {
            socket
                .try_clone()
                .map_err(|e| NetError::io("configuring the socket", e))
        };
        Ok(Transport {
            reader: Box::new(clone()?),
            writer: Box::new(clone()?),
            socket,
            encrypted: false,
            peer_fingerprint: None,
        })
    }

    pub fn tls(session: super::tls::TlsSession) -> Result<Transport, NetError> {
        let peer_fingerprint = session.peer_fingerprint.clone();
        let (reader, writer, socket) = session.split()?;
        Ok(Transport {
            reader: Box::new(reader),
            writer: Box::new(writer),
            socket,
            encrypted: true,
            peer_fingerprint,
        })
    }
}

/// Runs a connected link until it ends; returns why it ended.
pub(crate) fn run_link(
    shared: &Arc<Shared>,
    slot: &Arc<PeerSlot>,
    transport: Transport,
    handshaken: Handshaken,
) -> String {
    match run_link_inner(shared, slot, transport, handshaken) {
        Ok(reason) => reason,
        Err(e) => e.to_string(),
    }
}

fn run_link_inner(
    shared: &Arc<Shared>,
    slot: &Arc<PeerSlot>,
    transport: Transport,
    handshaken: Handshaken,
) -> Result<String, NetError> {
    let Handshaken {
        hello,
        authenticated,
    } = handshaken;
    let Transport {
        reader: reader_stream,
        writer: writer_stream,
        socket: stream,
        encrypted,
        peer_fingerprint,
    } = transport;
    let config = &shared.config;
    let setup = |e| NetError::io("configuring the socket", e);
    let addr = stream.peer_addr().map_err(setup)?;
    stream.set_nodelay(true).map_err(setup)?;
    stream
        .set_write_timeout(Some(config.keepalive.timeout))
        .map_err(setup)?;
    let slot_stream = stream.try_clone().map_err(setup)?;
    let writer_socket = stream.try_clone().map_err(setup)?;

    let frame_slot = Arc::new(FrameSlot::default());
    let (out_tx, out_rx) = flume::bounded::<Outgoing>(OUT_QUEUE);
    let epoch = Instant::now();
    let last_rx_us = Arc::new(AtomicU64::new(0));
    let caps = hello.capabilities;
    *lock(&slot.link) = Some(LinkTx {
        frame_slot: frame_slot.clone(),
        out_tx: out_tx.clone(),
        stream: slot_stream,
        wants_frames: caps.has(Capabilities::FRAMES_IN),
        takes_text: caps.has(Capabilities::TEXT),
        takes_files: caps.has(Capabilities::FILES_IN),
    });
    slot.set_connected(addr, &hello, authenticated, encrypted, peer_fingerprint);
    tracing::info!(peer = %slot.id, name = %hello.name, role = hello.role.name(), "connected to {addr}");
    shared.emit(Event::PeerConnected {
        peer: slot.id,
        addr,
        name: hello.name.clone(),
        role: hello.role,
    });
    resume_outgoing_files(shared, slot);

    let (done_tx, done_rx) = flume::bounded(1);
    let writer = {
        let w = Writer {
            stream: writer_stream,
            pending: Vec::with_capacity(64 << 10),
            slot: slot.clone(),
            shared: shared.clone(),
        };
        let last_rx_us = last_rx_us.clone();
        let keepalive = config.keepalive;
        let chunk_bytes = config.chunk_bytes.max(1);
        let span = tracing::info_span!("tx", peer = %addr);
        std::thread::Builder::new()
            .name(format!("texstream tx {addr}"))
            .spawn(move || {
                let _g = span.enter();
                let mut w = w;
                let result = w.run(
                    &frame_slot,
                    out_rx,
                    keepalive,
                    chunk_bytes,
                    epoch,
                    &last_rx_us,
                );
                let _ = w.stream.flush();
                let _ = writer_socket.shutdown(Shutdown::Both);
                let _ = done_tx.send(result);
            })
            .map_err(|e| NetError::io("starting the writer thread", e))?
    };

    let mut reader = Reader {
        shared: shared.clone(),
        slot: slot.clone(),
        out: out_tx.clone(),
        epoch,
        last_rx_us,
        addr,
        peer: PeerRef {
            id: slot.id,
            name: hello.name.clone(),
            instance: hello.instance,
        },
    };
    let read_result = reader.run(reader_stream);
    drop(reader);

    // Queue the goodbye, then stop routing frames and messages to this link. In this
    // order: dropping the link drops the frame slot's only sender, and a writer that saw
    // that disconnect before the goodbye was queued would end without sending it.
    let goodbye = match &read_result {
        Err(NetError::Protocol(e)) => {
            shared.counters.protocol_errors.fetch_add(1, Relaxed);
            if matches!(e, ProtocolError::ChecksumMismatch { .. }) {
                shared.counters.checksum_failures.fetch_add(1, Relaxed);
            }
            Outgoing::Close {
                code: GoodbyeCode::ProtocolError,
                reason: e.to_string(),
            }
        }
        _ => Outgoing::Close {
            code: GoodbyeCode::Normal,
            reason: String::new(),
        },
    };
    if out_tx.try_send(goodbye).is_err() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    *lock(&slot.link) = None;
    drop(out_tx);
    // Files we were sending wait for this peer to come back.
    let unfinished: Vec<_> = lock(&slot.outgoing_files).drain().collect();
    for (wire_id, file) in unfinished {
        shared.files.park_outgoing(hello.instance, wire_id, file);
    }
    // The peer may be back already on a new connection (it redialed before this one
    // was torn down): resume there.
    if let Some(other) = shared.connected_slot_of(hello.instance) {
        resume_outgoing_files(shared, &other);
    }
    let write_result = match done_rx.recv_timeout(Duration::from_millis(500)) {
        Ok(r) => r,
        Err(_) => {
            let _ = stream.shutdown(Shutdown::Both);
            done_rx.recv().unwrap_or(Ok(WriterEnd::Dropped))
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writer.join();

    // The writer's own failure (keepalive, a stalled peer) explains the reader's end.
    let reason = match (read_result, write_result) {
        (_, Err(e @ (NetError::KeepaliveTimeout(_) | NetError::PeerStalled(_)))) => e.to_string(),
        // We closed it (operator, shutdown): the peer's end of stream is only the echo,
        // and so is a reset (bytes the peer sent after our shutdown make the kernel
        // abort the connection).
        (Ok(_) | Err(NetError::Io { .. }), Ok(WriterEnd::Closed(ours))) if !ours.is_empty() => {
            format!("closed by this side: {ours}")
        }
        (Ok(reason), _) => reason,
        (Err(e), _) => e.to_string(),
    };
    Ok(reason)
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Writer {
    stream: Box<dyn Write + Send>,
    /// Small messages gathered until the next flush or bulk write.
    pending: Vec<u8>,
    slot: Arc<PeerSlot>,
    shared: Arc<Shared>,
}

/// How a writer ended without an error.
enum WriterEnd {
    /// It sent a goodbye with this reason (empty when answering the peer's end).
    Closed(String),
    /// The node let go of the link.
    Dropped,
}

impl Writer {
    fn run(
        &mut self,
        frames: &FrameSlot,
        out: flume::Receiver<Outgoing>,
        keepalive: super::KeepaliveConfig,
        chunk_bytes: usize,
        epoch: Instant,
        last_rx_us: &AtomicU64,
    ) -> Result<WriterEnd, NetError> {
        let mut ka = Keepalive::new(keepalive, epoch);
        let mut current: Option<(Frame, usize)> = None;
        let mut next_out: Option<Outgoing> = None;
        loop {
            let now = Instant::now();
            ka.on_receive(epoch + Duration::from_micros(last_rx_us.load(Relaxed)));
            let wait_until = match ka.poll(now) {
                KeepaliveAction::Dead { silent_for } => {
                    // Best effort: the peer may still be reading.
                    let _ = self.msg(&Message::Goodbye {
                        code: GoodbyeCode::Timeout,
                        reason: format!(
                            "nothing received from you for {:.1} s",
                            silent_for.as_secs_f64()
                        ),
                    });
                    let _ = self.flush();
                    return Err(NetError::KeepaliveTimeout(silent_for));
                }
                KeepaliveAction::SendPing { nonce } => {
                    let sent_us = now.duration_since(epoch).as_micros() as u64;
                    self.msg(&Message::Ping(Ping { nonce, sent_us }))?;
                    now
                }
                KeepaliveAction::WaitUntil(t) => t,
            };

            // One queued message or file chunk, then one frame chunk: control and files
            // interleave with a large frame instead of waiting behind it.
            let mut busy = false;
            if let Some(item) = next_out.take().or_else(|| out.try_recv().ok()) {
                busy = true;
                match item {
                    Outgoing::Msg(m) => self.msg(&m)?,
                    // The frame is taken from the slot below.
                    Outgoing::Wake => busy = false,
                    Outgoing::FileChunk {
                        id,
                        offset,
                        data,
                        len,
                    } => {
                        let head = encode_bulk_head(Kind::FileChunk, id, offset, len);
                        self.bulk(&head, &data[..len])?;
                    }
                    Outgoing::Close { code, reason } => {
                        if let Some((frame, _)) = current.take() {
                            self.msg(&Message::FrameAbort {
                                seq: frame.meta().seq,
                            })?;
                        }
                        self.msg(&Message::Goodbye {
                            code,
                            reason: reason.clone(),
                        })?;
                        self.flush()?;
                        return Ok(WriterEnd::Closed(reason));
                    }
                }
            }
            if current.is_none() {
                if let Some(frame) = frames.take() {
                    self.msg(&Message::FrameStart(frame.meta().start_message()))?;
                    current = Some((frame, 0));
                }
            }
            if let Some((frame, offset)) = current.as_mut() {
                busy = true;
                let pixels = frame.pixels();
                let end = (*offset + chunk_bytes).min(pixels.len());
                let head = encode_bulk_head(
                    Kind::FrameChunk,
                    frame.meta().seq,
                    *offset as u64,
                    end - *offset,
                );
                self.bulk(&head, &pixels[*offset..end])?;
                *offset = end;
                if end == pixels.len() {
                    current = None;
                    self.slot.counters.frames_sent.fetch_add(1, Relaxed);
                    self.flush()?;
                }
            }
            if busy {
                continue;
            }

            self.flush()?;
            if frames.arm() {
                continue;
            }
            let timeout = wait_until.saturating_duration_since(Instant::now());
            match out.recv_timeout(timeout) {
                Ok(item) => next_out = Some(item),
                Err(flume::RecvTimeoutError::Timeout) => {}
                // Every sender is gone: the node is being dropped.
                Err(flume::RecvTimeoutError::Disconnected) => {
                    self.flush()?;
                    return Ok(WriterEnd::Dropped);
                }
            }
        }
    }

    fn msg(&mut self, m: &Message) -> Result<(), NetError> {
        encode(m, &mut self.pending);
        if self.pending.len() >= 64 << 10 {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is pending, a bulk head and its payload in one vectored write: the
    /// payload goes from the shared frame to the socket with no copy of ours.
    fn bulk(&mut self, head: &[u8], payload: &[u8]) -> Result<(), NetError> {
        let pending = std::mem::take(&mut self.pending);
        let mut slices = [
            IoSlice::new(&pending),
            IoSlice::new(head),
            IoSlice::new(payload),
        ];
        let total = pending.len() + head.len() + payload.len();
        let result = write_all_vectored(&mut *self.stream, &mut slices);
        self.pending = pending;
        self.pending.clear();
        self.written(total, result)
    }

    fn flush(&mut self) -> Result<(), NetError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.pending);
        let total = self.pending.len();
        self.pending.clear();
        self.written(total, result)
    }

    fn written(&self, bytes: usize, result: std::io::Result<()>) -> Result<(), NetError> {
        match result {
            Ok(()) => {
                self.slot
                    .counters
                    .bytes_sent
                    .fetch_add(bytes as u64, Relaxed);
                self.shared
                    .counters
                    .bytes_sent
                    .fetch_add(bytes as u64, Relaxed);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(NetError::PeerStalled(self.shared.config.keepalive.timeout))
            }
            Err(e) => Err(NetError::io("sending to the peer", e)),
        }
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
    out: flume::Sender<Outgoing>,
    epoch: Instant,
    last_rx_us: Arc<AtomicU64>,
    addr: SocketAddr,
    /// Who is on the other end (taken by the file code at the start of `run`).
    peer: PeerRef,
}

impl Reader {
    /// Reads messages until the peer leaves (`Ok` with the reason) or breaks the
    /// protocol or the connection (`Err`).
    fn run(&mut self, stream: Box<dyn Read + Send>) -> Result<String, NetError> {
        let limits = self.shared.config.limits;
        // Small: it gathers envelopes and small messages. What it reads ahead of a bulk
        // payload is copied into the frame a second time, so it must not read far ahead
        // (a 256 KiB buffer took a quarter of every frame's bytes through it); payloads
        // and bodies larger than it are read straight into their destination.
        let mut r = BufReader::with_capacity(8 << 10, stream);
        let mut frames = FrameAssembler::new(self.shared.pool.clone());
        let peer = std::mem::replace(
            &mut self.peer,
            PeerRef {
                id: self.slot.id,
                name: String::new(),
                instance: 0,
            },
        );
        let mut files = IncomingFiles::new(
            self.shared.config.files_dir.clone(),
            self.shared.config.max_files_per_peer,
            self.shared.files.clone(),
            peer,
        );
        let mut scratch = Vec::new();
        let mut cancels_seen = 0;
        let takes_frames = self
            .shared
            .config
            .capabilities()
            .has(Capabilities::FRAMES_IN);
        loop {
            let cancels = self.shared.files.transfers.cancel_generation();
            if cancels != cancels_seen {
                cancels_seen = cancels;
                for (reply, outcome) in files.take_cancelled() {
                    self.send(reply);
                    self.file_outcome(outcome);
                }
            }
            let mut env = [0u8; ENVELOPE_LEN];
            if !read_first(&mut r, &mut env)? {
                return Ok("connection closed by the peer".to_owned());
            }
            self.touch();
            let env = Envelope::parse(&env, &limits)?;
            self.received(ENVELOPE_LEN + env.body_len as usize);
            if env.kind.is_bulk() {
                let mut head = [0u8; BULK_HEAD_LEN];
                read_rest(&mut r, &mut head, env.kind)?;
                let head = BulkHead::parse(&head);
                let len = env.bulk_payload_len();
                if env.kind == Kind::FrameChunk {
                    // Straight from the socket into the frame's buffer.
                    read_payload(&mut r, frames.chunk_dest(head, len)?, env.kind)?;
                    if let Assembled::Complete(frame) = frames.chunk_filled()? {
                        self.frame_complete(frame);
                    }
                } else if let Some((reply, outcome)) =
                    files.on_chunk(head.id, head.offset, len, &mut r, &mut scratch)?
                {
                    self.send(reply);
                    self.file_outcome(outcome);
                }
                self.touch();
                continue;
            }
            scratch.resize(env.body_len as usize, 0);
            read_rest(&mut r, &mut scratch, env.kind)?;
            match decode_body(env.kind, &scratch, &limits)? {
                Message::Goodbye { code, reason } => {
                    return Ok(format!("peer said goodbye ({code:?}): {reason}"))
                }
                Message::Ping(p) => self.send(Message::Pong(Pong {
                    nonce: p.nonce,
                    ping_sent_us: p.sent_us,
                    sent_us: now_us(),
                })),
                Message::Pong(p) => {
                    let rtt = self.elapsed_us().saturating_sub(p.ping_sent_us).max(1);
                    self.slot.counters.rtt_us.store(rtt, Relaxed);
                }
                Message::FrameStart(start) => {
                    if !takes_frames {
                        // Frames this node never asked for are not reassembled, nor
                        // kept: the peer breaks the protocol.
                        return Err(ProtocolError::Unexpected {
                            kind: "frame-start",
                            when: "by a node that takes no frames",
                        }
                        .into());
                    }
                    if let Some(seq) = frames.start(start) {
                        tracing::trace!(seq, "frame abandoned by a newer frame start");
                    }
                }
                Message::FrameAbort { seq } => {
                    frames.abort(seq);
                }
                Message::Text(text) => self.shared.text_received(self.slot.id, text),
                Message::FileOffer(offer) => {
                    let reply = files.on_offer(&offer);
                    self.send(reply);
                }
                Message::FileAccept(accept) => self.start_file(accept.id, accept.offset),
                Message::FileEnd(end) => {
                    if let Some((reply, outcome)) = files.on_end(&end) {
                        self.send(reply);
                        self.file_outcome(outcome);
                    }
                }
                Message::FileCancel(cancel) => {
                    if let Some(outcome) = files.on_cancel(&cancel) {
                        self.file_outcome(outcome);
                    }
                }
                Message::FileResult(result) => {
                    if let Some(file) = lock(&self.slot.outgoing_files).remove(&result.id) {
                        file.stop.store(true, Relaxed);
                        if result.ok {
                            file.transfer.finish_ok(&result.message, None);
                        } else {
                            file.transfer.finish_failed(&result.message);
                        }
                        self.shared.emit(Event::FileSent {
                            peer: self.slot.id,
                            name: file.name,
                            ok: result.ok,
                            message: result.message,
                        });
                    }
                }
                m @ (Message::Hello(_)
                | Message::Auth { .. }
                | Message::FrameChunk { .. }
                | Message::FileChunk { .. }) => {
                    return Err(ProtocolError::Unexpected {
                        kind: m.kind().name(),
                        when: "after the handshake",
                    }
                    .into())
                }
            }
        }
    }

    fn elapsed_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn touch(&self) {
        self.last_rx_us.store(self.elapsed_us(), Relaxed);
    }

    fn received(&self, bytes: usize) {
        self.slot
            .counters
            .bytes_received
            .fetch_add(bytes as u64, Relaxed);
        self.shared
            .counters
            .bytes_received
            .fetch_add(bytes as u64, Relaxed);
    }

    /// Queues a control message; if the queue is full the peer is not reading and the
    /// message is dropped (keepalive or the write timeout will end the link).
    fn send(&self, m: Message) {
        if self.out.try_send(Outgoing::Msg(m)).is_err() {
            tracing::debug!("outgoing queue full, a control message was dropped");
        }
    }

    fn frame_complete(&self, frame: Frame) {
        self.slot.counters.frames_received.fetch_add(1, Relaxed);
        self.slot.sends_frames.store(true, Relaxed);
        self.shared.frame_received(frame);
    }

    fn file_outcome(&self, outcome: FileOutcome) {
        let peer = self.slot.id;
        self.shared.emit(match outcome {
            FileOutcome::Received { name, path, size } => {
                tracing::info!(
                    "received file {name} ({size} bytes) from {}: {}",
                    self.addr,
                    path.display()
                );
                Event::FileReceived {
                    peer,
                    name,
                    path,
                    size,
                }
            }
            FileOutcome::Failed { name, reason } => {
                tracing::warn!("file {name} from {} failed: {reason}", self.addr);
                Event::FileFailed { peer, name, reason }
            }
        });
    }

    /// The peer accepted a file we offered: stream it from its own thread.
    fn start_file(&self, id: u64, offset: u64) {
        let Some(file) = lock(&self.slot.outgoing_files).get(&id).cloned() else {
            return;
        };
        let out = self.out.clone();
        let pool = self.shared.file_pool.clone();
        let shared = self.shared.clone();
        let slot = self.slot.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("texstream file {id}"))
            .spawn(move || {
                let reason = match stream_file(id, offset, &file, &out, &pool) {
                    // Sent; the receiver's verdict comes as a FileResult. A closed link
                    // parks the transfer; a stopped one was answered already.
                    // Cancelled: `Node::cancel_transfer` told the peer already.
                    Ok(())
                    | Err(
                        StreamError::LinkClosed | StreamError::Stopped | StreamError::Cancelled,
                    ) => return,
                    Err(StreamError::Failed(reason)) => reason,
                };
                let _ = out.try_send(Outgoing::Msg(Message::FileCancel(FileCancel {
                    id,
                    reason: reason.clone(),
                })));
                if lock(&slot.outgoing_files).remove(&id).is_some() {
                    tracing::warn!("sending {} failed: {reason}", file.name);
                    file.transfer.finish_failed(&reason);
                    shared.emit(Event::FileSent {
                        peer: slot.id,
                        name: file.name,
                        ok: false,
                        message: reason,
                    });
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a file transfer thread: {e}");
        }
    }
}

/// Reads a message's first bytes: `Ok(false)` on a clean end of stream before any.
fn read_first(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, NetError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(ProtocolError::Truncated {
                    kind: "message",
                    field: "envelope",
                }
                .into())
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(NetError::io("reading from the peer", e)),
        }
    }
    Ok(true)
}

/// Reads a bulk payload into `dst`: what the buffered reader already holds is copied,
/// the rest is read from the socket straight into `dst` (the reader never buffers it
/// first, which would copy it twice).
fn read_payload(
    r: &mut BufReader<Box<dyn Read + Send>>,
    dst: &mut [u8],
    kind: Kind,
) -> Result<(), NetError> {
    let buffered = r.buffer().len().min(dst.len());
    dst[..buffered].copy_from_slice(&r.buffer()[..buffered]);
    r.consume(buffered);
    read_rest(r.get_mut(), &mut dst[buffered..], kind)
}

/// Reads the rest of a message whose envelope has arrived: an end of stream here means
/// the peer sent a truncated message.
fn read_rest(r: &mut impl Read, buf: &mut [u8], kind: Kind) -> Result<(), NetError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            NetError::Protocol(ProtocolError::Truncated {
                kind: kind.name(),
                field: "body (the connection ended inside it)",
            })
        } else {
            NetError::io("reading from the peer", e)
        }
    })
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
    let Some((out, takes_files)) = lock(&slot.link)
        .as_ref()
        .map(|l| (l.out_tx.clone(), l.takes_files))
    else {
        return;
    };
    for (wire_id, file) in shared.files.unpark_outgoing(instance) {
        if !takes_files {
            file.transfer
                .finish_failed("the peer came back without taking files");
            continue;
        }
        tracing::info!("offering {} again to resume it", file.name);
        file.transfer.set_waiting(slot.id, &name);
        let offer = Message::FileOffer(crate::protocol::FileOffer {
            id: wire_id,
            size: file.size,
            name: file.name.clone(),
        });
        lock(&slot.outgoing_files).insert(wire_id, file);
        if out.try_send(Outgoing::Msg(offer)).is_err() {
            tracing::warn!("a resumed file offer did not fit the peer's queue");
        }
    }
}
