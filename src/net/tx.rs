//! The sending half of one connection as pure state: what goes on the wire next, and in
//! what order. No socket, thread, channel or clock inside: the link's writer thread
//! asks [`TxConn::poll_transmit`] for the next bytes and writes them; the application,
//! the link's reader and its file worker change the state through methods, and `now`
//! comes in from outside (quinn-proto's `Connection` is the model).
//!
//! It holds the link's one-frame slot (newest wins), the frame on the wire, small
//! control messages in order, keepalive pings, the goodbye (only ever between whole
//! messages), and every file this node offered on the link as a small state machine:
//! offered → streaming → ended (waiting for the receiver's verdict). A repeated, late or
//! unknown accept changes nothing, so no peer can make a file stream twice.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::coder::AutoCoding;
use super::files::OutgoingFile;
use super::keepalive::{Keepalive, KeepaliveAction, KeepaliveConfig};
use std::sync::Arc;

use crate::frame::{Frame, PooledBuf};
use crate::protocol::tiles::TileCompression;
use crate::protocol::{
    encode, encode_bulk_head, CodedFrameStart, FileCancel, FileEnd, FileOffer, FrameCoding,
    GoodbyeCode, Kind, Message, Ping, BULK_HEAD_LEN, ENVELOPE_LEN,
};

/// Bytes of small messages a link keeps waiting before it refuses more (a peer that
/// does not read cannot make a node keep its texts).
pub(crate) const MAX_PENDING_SMALL_BYTES: usize = 256 << 10;
/// File chunks read ahead of the wire per link.
pub(crate) const FILE_CHUNKS_AHEAD: usize = 4;

/// Envelope and head of a bulk message.
pub(crate) type BulkHeadBytes = [u8; ENVELOPE_LEN + BULK_HEAD_LEN];

/// What the writer sends next: the small messages swapped into its buffer, then at most
/// one bulk message whose payload it writes from where it lies.
pub(crate) struct Transmit {
    pub bulk: Option<(BulkHeadBytes, Payload)>,
    /// A frame's last chunk: the frame has been sent whole.
    pub frame_done: bool,
    /// A frame left the slot for the wire (waiters on the slot may go on).
    pub frame_taken: bool,
    /// The goodbye is in this transmit: after writing it, the connection closes.
    pub close: Option<Closing>,
}

/// A bulk payload, shared, never copied.
pub(crate) enum Payload {
    Frame {
        frame: Frame,
        start: usize,
        end: usize,
    },
    /// Bytes of a coded frame, held by the writer that coded them.
    Coded {
        bytes: Arc<Vec<u8>>,
        start: usize,
        end: usize,
    },
    File {
        data: PooledBuf,
        len: usize,
    },
}

impl Payload {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::Frame { frame, start, end } => &frame.pixels()[*start..*end],
            Payload::Coded { bytes, start, end } => &bytes[*start..*end],
            Payload::File { data, len } => &data[..*len],
        }
    }
}

/// Why this side ends the connection, as the goodbye it sends says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Asked to (shutdown, the operator, a refusal): the goodbye's code and reason.
    Asked { code: GoodbyeCode, reason: String },
    /// Nothing arrived for this long.
    KeepaliveTimeout(Duration),
}

/// Where an outgoing file stands on this link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Offered; the peer has not accepted yet.
    Offered,
    /// Accepted: the file worker reads it from `from`; chunks go out as they come.
    Streaming { from: u64 },
    /// Every byte and the checksum went out; the receiver's verdict is due.
    Ended,
}

struct OutFile {
    file: OutgoingFile,
    state: OutState,
    /// The end of the bytes handed to the connection, and of those the receiver said it
    /// stored: what lies between is on the way (see [`TxConn::set_file_window`]).
    pushed: u64,
    stored: u64,
}

impl OutFile {
    fn on_the_way(&self) -> u64 {
        self.pushed - self.stored
    }
}

/// Work for the link's file worker: read `file` (wire id `id`) from `from`.
#[derive(Clone)]
pub(crate) struct ReadRequest {
    pub id: u64,
    pub from: u64,
    pub file: OutgoingFile,
}

/// What a peer's accept did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptOutcome {
    /// The file starts (or resumes) streaming.
    Started,
    /// Not offered, already streaming or ended: nothing changes.
    Ignored,
}

/// A chunk the file worker read, and where it goes.
pub(crate) enum PushOutcome {
    Queued,
    /// The read-ahead is full, or the file window: wait for the writer to take a chunk,
    /// or the peer to report bytes stored.
    Full(PooledBuf),
    /// The file is no longer streaming (answered, cancelled, link closing): stop.
    Stopped,
}

/// A frame to code before it goes on the wire (see [`TxConn::frame_to_code`]).
pub(crate) struct CodeJob {
    pub frame: Frame,
    /// The last frame this link sent, when the frame may be a delta against it (same
    /// geometry).
    pub base: Option<Frame>,
    pub compression: TileCompression,
}

/// The frame on the wire: its pixels, or the bytes they were coded to; `offset` bytes
/// of them sent.
struct OnWire {
    frame: Frame,
    coded: Option<Arc<Vec<u8>>>,
    offset: usize,
}

impl OnWire {
    /// Bytes still to send.
    fn left(&self) -> usize {
        let len = self
            .coded
            .as_ref()
            .map_or_else(|| self.frame.pixels().len(), |c| c.len());
        len.saturating_sub(self.offset)
    }
}

pub(crate) struct TxConn {
    chunk_bytes: usize,
    epoch: Instant,
    keepalive: Keepalive,
    /// Encoded small messages waiting, in order.
    small: Vec<u8>,
    slot: Option<Frame>,
    current: Option<OnWire>,
    /// How frames are coded for this peer (it takes coded frames and this node codes),
    /// or `None`: raw.
    coding: Option<TileCompression>,
    /// The last frame that went on the wire, which the peer holds whole once it has
    /// read it: the base of the next delta (kept only while coding).
    base: Option<Frame>,
    /// `--codec auto`: each frame coded or raw, whichever costs this link less.
    auto: Option<AutoCoding>,
    /// A frame was taken to be coded and is not on the wire yet: no other frame is
    /// taken before it (it may be a delta against the frame on the wire now).
    coding_pending: bool,
    /// A frame is taken to code while the one before is on the wire once at most this
    /// many of its bytes are left to send ([`TxConn::set_code_ahead`]).
    code_ahead: usize,
    files: BTreeMap<u64, OutFile>,
    reads: VecDeque<ReadRequest>,
    file_chunks: VecDeque<(u64, u64, PooledBuf, usize)>,
    /// Files read whole: their checksum goes out once their last chunk has.
    pending_ends: VecDeque<(u64, u64)>,
    /// Frame and file chunks take turns.
    file_turn: bool,
    closing: Option<Closing>,
    closed: bool,
    /// File bytes this link may have on the way, when the peer reports what it stored.
    file_window: Option<u64>,
    /// Accepts that changed nothing (a hostile or confused peer), for the figures.
    pub ignored_accepts: u64,
}

impl TxConn {
    pub fn new(chunk_bytes: usize, keepalive: KeepaliveConfig, now: Instant) -> TxConn {
        TxConn {
            chunk_bytes: chunk_bytes.max(1),
            epoch: now,
            keepalive: Keepalive::new(keepalive, now),
            small: Vec::with_capacity(64 << 10),
            slot: None,
            current: None,
            coding: None,
            base: None,
            auto: None,
            coding_pending: false,
            code_ahead: usize::MAX,
            files: BTreeMap::new(),
            reads: VecDeque::new(),
            file_chunks: VecDeque::with_capacity(FILE_CHUNKS_AHEAD),
            pending_ends: VecDeque::new(),
            file_turn: false,
            closing: None,
            closed: false,
            file_window: None,
            ignored_accepts: 0,
        }
    }

    /// Frames for this peer are coded with `compression` (the peer's hello said it
    /// takes coded frames): the writer codes each one ([`TxConn::frame_to_code`]).
    pub fn set_coding(&mut self, compression: TileCompression) {
        self.coding = Some(compression);
    }

    /// Changes how the next frames are coded, on a link that runs: `None` raw, else
    /// `compression`, per frame by cost with `auto`. The frame on the wire goes out as
    /// it started. Turning coding on starts from a whole frame (no base is kept while
    /// frames go raw); a change of compression keeps the base, which the peer holds
    /// whatever the coding was.
    pub fn change_coding(&mut self, compression: Option<TileCompression>, auto: bool) {
        match compression {
            None => {
                self.coding = None;
                self.base = None;
                self.auto = None;
            }
            Some(c) => {
                self.coding = Some(c);
                self.auto = match self.auto.take() {
                    Some(kept) if auto => Some(kept),
                    _ if auto => Some(AutoCoding::default()),
                    _ => None,
                };
            }
        }
    }

    /// Each frame goes coded or raw, whichever has cost this link less
    /// ([`AutoCoding`]; the writer reports each frame's cost with
    /// [`TxConn::on_frame_sent`]). Needs [`TxConn::set_coding`] to code at all.
    pub fn set_auto(&mut self) {
        self.auto = Some(AutoCoding::default());
    }

    /// A frame went out whole, `coded` or not, `raw_len` bytes of pixels, at a cost of
    /// `cost_us` of the writer's time (coding it and writing it).
    pub fn on_frame_sent(&mut self, coded: bool, raw_len: usize, cost_us: u64) {
        if let Some(auto) = &mut self.auto {
            auto.on_frame(coded, raw_len, cost_us);
        }
    }

    /// Whether frames to this peer go coded now: `None` if they never do.
    pub fn coding_now(&self) -> Option<bool> {
        self.coding?;
        Some(self.auto.as_ref().is_none_or(AutoCoding::coding))
    }

    /// Whether the next frame goes coded.
    fn codes_next(&self) -> bool {
        self.coding.is_some() && self.auto.as_ref().is_none_or(AutoCoding::codes_next)
    }

    /// Takes the frame in the slot for the wire: with coding on, it becomes the base of
    /// the next delta.
    fn take_slot(&mut self) -> Option<Frame> {
        let frame = self.slot.take()?;
        if let Some(auto) = &mut self.auto {
            auto.taken();
        }
        if self.coding.is_some() {
            self.base = Some(frame.clone());
        }
        Some(frame)
    }

    /// The frame in the slot, when it must be coded before it goes out, with the frame
    /// it may be a delta against. The writer codes it outside the link's lock, while
    /// the frame before it (if any) is still on the wire, then hands the bytes to
    /// [`TxConn::start_coded`] once the wire is free ([`TxConn::wire_free`]); in
    /// between, the frame is the last one sent on this link and no other is taken.
    /// `None` when frames go raw, a frame waits to be coded, or the slot is empty.
    pub fn frame_to_code(&mut self) -> Option<CodeJob> {
        let compression = self.coding?;
        let left_on_wire = self.current.as_ref().map_or(0, OnWire::left);
        if self.coding_pending
            || left_on_wire > self.code_ahead
            || self.closing.is_some()
            || self.closed
            || self.slot.is_none()
            || !self.codes_next()
        {
            return None;
        }
        let last = self.base.take();
        let frame = self.take_slot()?;
        self.coding_pending = true;
        let base = last.filter(|b| b.meta().geometry() == frame.meta().geometry());
        Some(CodeJob {
            frame,
            base,
            compression,
        })
    }

    /// Puts a coded frame on the wire: its start, then its `coded` bytes in chunks.
    /// `base_seq`: the frame the coding is a delta against, if it is one.
    pub fn start_coded(&mut self, frame: Frame, base_seq: Option<u64>, coded: Arc<Vec<u8>>) {
        self.coding_pending = false;
        if self.closed {
            return;
        }
        encode(
            &Message::CodedFrameStart(CodedFrameStart {
                start: frame.meta().start_message(),
                coding: FrameCoding::Tiles,
                base_seq: base_seq.unwrap_or(0),
                coded_len: coded.len() as u64,
            }),
            &mut self.small,
        );
        self.current = Some(OnWire {
            frame,
            coded: Some(coded),
            offset: 0,
        });
    }

    /// Puts a frame taken by [`TxConn::frame_to_code`] on the wire raw after all (its
    /// coding failed).
    pub fn start_raw(&mut self, frame: Frame) {
        self.coding_pending = false;
        if self.closed {
            return;
        }
        encode(
            &Message::FrameStart(frame.meta().start_message()),
            &mut self.small,
        );
        self.current = Some(OnWire {
            frame,
            coded: None,
            offset: 0,
        });
    }

    /// Microseconds since the connection began (ping and pong timestamps).
    pub fn elapsed_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The peer reports the file bytes it stores ([`Message::FileProgress`]): at most
    /// `window` bytes of this link's files are sent ahead of those reports, so that a
    /// receiver's slow disk holds back its files, never its frames.
    pub fn set_file_window(&mut self, window: u64) {
        self.file_window = Some(window);
    }

    /// The peer stored the first `written` bytes of file `id`. A report beyond what was
    /// sent, or going back, changes nothing past the bytes sent.
    pub fn on_progress(&mut self, id: u64, written: u64) {
        if let Some(f) = self.files.get_mut(&id) {
            f.stored = written.clamp(f.stored, f.pushed);
        }
    }

    /// File bytes sent (or queued) that the peer has not reported stored.
    pub fn file_bytes_on_the_way(&self) -> u64 {
        self.files.values().map(OutFile::on_the_way).sum()
    }

    /// Something arrived from the peer at `at`.
    pub fn on_receive(&mut self, at: Instant) {
        self.keepalive.on_receive(at);
    }

    /// Puts `frame` in the one-frame slot; returns whether it replaced one not yet sent
    /// (that one is skipped). Nothing is taken once the connection is closing.
    pub fn offer_frame(&mut self, frame: Frame) -> bool {
        if self.closing.is_some() || self.closed {
            return false;
        }
        self.slot.replace(frame).is_some()
    }

    /// The next frame is taken to code once at most `bytes` of the frame on the wire are
    /// left to send: about what the link sends while a frame codes, so that the coding
    /// is ready as the wire frees, and the frame is no staler than it must be.
    pub fn set_code_ahead(&mut self, bytes: usize) {
        self.code_ahead = bytes;
    }

    /// Whether no frame is on the wire: a coded frame taken before may start.
    pub fn wire_free(&self) -> bool {
        self.current.is_none()
    }

    /// Whether no frame waits in the slot.
    pub fn slot_empty(&self) -> bool {
        self.slot.is_none()
    }

    /// Queues a small message; `false` when the peer is so far behind that
    /// [`MAX_PENDING_SMALL_BYTES`] wait already, or the connection is closing.
    pub fn send(&mut self, msg: &Message) -> bool {
        if self.closing.is_some() || self.closed || self.small.len() >= MAX_PENDING_SMALL_BYTES {
            return false;
        }
        encode(msg, &mut self.small);
        true
    }

    /// Offers a file under wire id `id` (a new one, or a parked one again to resume).
    /// `false` if the connection is closing or `id` is in use on this link.
    pub fn offer_file(&mut self, id: u64, file: OutgoingFile) -> bool {
        if self.closing.is_some() || self.closed || self.files.contains_key(&id) {
            return false;
        }
        encode(
            &Message::FileOffer(FileOffer {
                id,
                size: file.size,
                name: file.name.clone(),
            }),
            &mut self.small,
        );
        self.files.insert(
            id,
            OutFile {
                file,
                state: OutState::Offered,
                pushed: 0,
                stored: 0,
            },
        );
        true
    }

    pub fn file_state(&self, id: u64) -> Option<OutState> {
        self.files.get(&id).map(|f| f.state)
    }

    #[cfg(test)]
    pub fn files_on_link(&self) -> usize {
        self.files.len()
    }

    /// The peer accepted file `id` from byte `from`. Only an offered file starts; any
    /// other accept is ignored.
    pub fn on_accept(&mut self, id: u64, from: u64) -> AcceptOutcome {
        let Some(f) = self.files.get_mut(&id) else {
            self.ignored_accepts += 1;
            return AcceptOutcome::Ignored;
        };
        if f.state != OutState::Offered || from > f.file.size || self.closing.is_some() {
            self.ignored_accepts += 1;
            return AcceptOutcome::Ignored;
        }
        f.state = OutState::Streaming { from };
        f.pushed = from;
        f.stored = from;
        self.reads.push_back(ReadRequest {
            id,
            from,
            file: f.file.clone(),
        });
        AcceptOutcome::Started
    }

    /// The receiver's verdict on file `id` (or its refusal of the offer): the file
    /// leaves the link. `None` for an id this link does not hold.
    pub fn on_result(&mut self, id: u64) -> Option<OutgoingFile> {
        let f = self.files.remove(&id)?;
        self.drop_chunks_of(id);
        self.reads.retain(|r| r.id != id);
        Some(f.file)
    }

    /// Cancels the outgoing file whose transfer is `transfer`: a cancel goes to the
    /// peer, the file leaves the link. Returns its wire id and the file.
    pub fn cancel_transfer(
        &mut self,
        transfer: super::TransferId,
        reason: &str,
    ) -> Option<(u64, OutgoingFile)> {
        let id = *self
            .files
            .iter()
            .find(|(_, f)| f.file.transfer.id == transfer)?
            .0;
        let f = self.files.remove(&id)?;
        self.drop_chunks_of(id);
        self.reads.retain(|r| r.id != id);
        if !self.closed {
            encode(
                &Message::FileCancel(FileCancel {
                    id,
                    reason: reason.to_owned(),
                }),
                &mut self.small,
            );
        }
        Some((id, f.file))
    }

    /// The next file the worker should read, if any.
    pub fn take_read(&mut self) -> Option<ReadRequest> {
        self.reads.pop_front()
    }

    /// A chunk of file `id` at `offset`, read by the worker.
    pub fn push_file_chunk(
        &mut self,
        id: u64,
        offset: u64,
        data: PooledBuf,
        len: usize,
    ) -> PushOutcome {
        if self.closing.is_some() || self.closed || !self.is_streaming(id) {
            return PushOutcome::Stopped;
        }
        if self.file_chunks.len() >= FILE_CHUNKS_AHEAD {
            return PushOutcome::Full(data);
        }
        if let Some(window) = self.file_window {
            // One chunk always may go (else a window smaller than a chunk would stall).
            let on_the_way = self.file_bytes_on_the_way();
            if on_the_way > 0 && on_the_way + len as u64 > window {
                return PushOutcome::Full(data);
            }
        }
        if let Some(f) = self.files.get_mut(&id) {
            f.pushed = offset + len as u64;
        }
        self.file_chunks.push_back((id, offset, data, len));
        PushOutcome::Queued
    }

    /// Whether file `id` is still streaming (the worker checks between chunks).
    pub fn is_streaming(&self, id: u64) -> bool {
        matches!(self.file_state(id), Some(OutState::Streaming { .. }))
    }

    /// The worker read the whole file: its checksum follows the chunks already queued.
    /// `false` if the file stopped streaming meanwhile.
    pub fn file_read_done(&mut self, id: u64, checksum: u64) -> bool {
        if self.closing.is_some() || self.closed || !self.is_streaming(id) {
            return false;
        }
        // The end goes out once its chunks are on the wire (small messages go first in
        // each transmit, so it must wait for them).
        self.pending_ends.push_back((id, checksum));
        if let Some(f) = self.files.get_mut(&id) {
            f.state = OutState::Ended;
        }
        true
    }

    /// The worker could not read file `id`: a cancel goes to the peer with the reason,
    /// and the file leaves the link.
    pub fn file_read_failed(&mut self, id: u64, reason: &str) -> Option<OutgoingFile> {
        let f = self.files.remove(&id)?;
        self.drop_chunks_of(id);
        if self.closing.is_none() && !self.closed {
            encode(
                &Message::FileCancel(FileCancel {
                    id,
                    reason: reason.to_owned(),
                }),
                &mut self.small,
            );
        }
        Some(f.file)
    }

    fn drop_chunks_of(&mut self, id: u64) {
        self.file_chunks.retain(|(chunk_id, ..)| *chunk_id != id);
        self.pending_ends.retain(|(end_id, _)| *end_id != id);
    }

    /// Ends the connection: the goodbye goes out at the next message boundary (a frame
    /// on the wire is aborted first). The first reason given wins.
    pub fn close(&mut self, code: GoodbyeCode, reason: &str) {
        if self.closing.is_none() && !self.closed {
            self.closing = Some(Closing::Asked {
                code,
                reason: reason.to_owned(),
            });
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The files on this link, taken out of it when the connection is gone (to park
    /// them for the peer's return).
    pub fn take_files(&mut self) -> Vec<(u64, OutgoingFile)> {
        self.closed = true;
        self.slot = None;
        self.base = None;
        self.file_chunks.clear();
        self.reads.clear();
        self.pending_ends.clear();
        std::mem::take(&mut self.files)
            .into_iter()
            .map(|(id, f)| (id, f.file))
            .collect()
    }

    /// When the writer must look again even if nothing changes (a ping or the keepalive
    /// deadline).
    pub fn poll_timeout(&self) -> Instant {
        self.keepalive.next_deadline()
    }

    /// The next bytes to write, if any. The small messages waiting are swapped into
    /// `small_out` (cleared first; no copy, no allocation once both buffers are warm).
    pub fn poll_transmit(&mut self, now: Instant, small_out: &mut Vec<u8>) -> Option<Transmit> {
        if self.closed {
            return None;
        }
        small_out.clear();
        match self.keepalive.poll(now) {
            KeepaliveAction::Dead { silent_for } => {
                if self.closing.is_none() {
                    self.closing = Some(Closing::KeepaliveTimeout(silent_for));
                }
            }
            KeepaliveAction::SendPing { nonce } => {
                let sent_us = self.elapsed_us(now);
                encode(&Message::Ping(Ping { nonce, sent_us }), &mut self.small);
            }
            KeepaliveAction::WaitUntil(_) => {}
        }
        if let Some(closing) = self.closing.take() {
            // Between whole messages: what was sent of a frame is abandoned, and said so.
            if let Some(on_wire) = self.current.take() {
                encode(
                    &Message::FrameAbort {
                        seq: on_wire.frame.meta().seq,
                    },
                    &mut self.small,
                );
            }
            let (code, reason) = match &closing {
                Closing::Asked { code, reason } => (*code, reason.clone()),
                Closing::KeepaliveTimeout(silent_for) => (
                    GoodbyeCode::Timeout,
                    format!(
                        "nothing received from you for {:.1} s",
                        silent_for.as_secs_f64()
                    ),
                ),
            };
            encode(&Message::Goodbye { code, reason }, &mut self.small);
            self.closed = true;
            std::mem::swap(&mut self.small, small_out);
            return Some(Transmit {
                bulk: None,
                frame_done: false,
                frame_taken: false,
                close: Some(closing),
            });
        }
        // File ends whose chunks are all on the wire.
        while let Some(&(id, checksum)) = self.pending_ends.front() {
            if self
                .file_chunks
                .iter()
                .any(|(chunk_id, ..)| *chunk_id == id)
            {
                break;
            }
            self.pending_ends.pop_front();
            encode(&Message::FileEnd(FileEnd { id, checksum }), &mut self.small);
        }
        let mut frame_taken = false;
        if self.current.is_none() && !self.coding_pending && !self.codes_next() {
            if let Some(frame) = self.take_slot() {
                self.start_raw(frame);
                frame_taken = true;
            }
        }
        let take_file = !self.file_chunks.is_empty() && (self.file_turn || self.current.is_none());
        let mut frame_done = false;
        let bulk = if take_file {
            self.file_turn = false;
            self.file_chunks.pop_front().map(|(id, offset, data, len)| {
                let head = encode_bulk_head(Kind::FileChunk, id, offset, len);
                (head, Payload::File { data, len })
            })
        } else if let Some(on_wire) = self.current.as_mut() {
            self.file_turn = true;
            let total = on_wire
                .coded
                .as_ref()
                .map_or(on_wire.frame.pixels().len(), |c| c.len());
            let start = on_wire.offset;
            let end = (start + self.chunk_bytes).min(total);
            let head = encode_bulk_head(
                Kind::FrameChunk,
                on_wire.frame.meta().seq,
                start as u64,
                end - start,
            );
            let payload = match &on_wire.coded {
                Some(bytes) => Payload::Coded {
                    bytes: bytes.clone(),
                    start,
                    end,
                },
                None => Payload::Frame {
                    frame: on_wire.frame.clone(),
                    start,
                    end,
                },
            };
            on_wire.offset = end;
            if end == total {
                self.current = None;
                frame_done = true;
            }
            Some((head, payload))
        } else {
            None
        };
        if bulk.is_none() && self.small.is_empty() {
            return None;
        }
        std::mem::swap(&mut self.small, small_out);
        Some(Transmit {
            bulk,
            frame_done,
            frame_taken,
            close: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameGeometry, PooledBuf};
    use crate::net::status::PeerId;
    use crate::net::transfers::{Direction, TransferState, Transfers};
    use crate::protocol::{decode, Limits};

    const S: Duration = Duration::from_secs(1);

    fn conn(now: Instant) -> TxConn {
        let keepalive = KeepaliveConfig {
            interval: S,
            timeout: 3 * S,
        };
        TxConn::new(1000, keepalive, now)
    }

    fn file(transfers: &Transfers, size: u64) -> OutgoingFile {
        OutgoingFile {
            path: "unused".into(),
            name: "f.bin".into(),
            size,
            transfer: transfers.add(
                Direction::Outgoing,
                "f.bin",
                size,
                PeerId(1),
                "peer",
                None,
                TransferState::Waiting,
            ),
        }
    }

    fn frame(seq: u64, len: usize) -> Frame {
        let geometry = FrameGeometry::rgba8((len / 4) as u32, 1);
        let pixels: Vec<u8> = (0..len).map(|i| (i * 7 + seq as usize) as u8).collect();
        Frame::new(geometry, seq, 0, PooledBuf::detached(pixels))
    }

    /// Everything the connection writes until it has nothing more, decoded.
    fn drain(tx: &mut TxConn, now: Instant) -> Vec<Message> {
        let mut wire = Vec::new();
        let mut small = Vec::new();
        while let Some(t) = tx.poll_transmit(now, &mut small) {
            wire.extend_from_slice(&small);
            if let Some((head, payload)) = &t.bulk {
                wire.extend_from_slice(head);
                wire.extend_from_slice(payload.bytes());
            }
            if t.close.is_some() {
                break;
            }
        }
        decode_all(&wire)
    }

    fn decode_all(mut wire: &[u8]) -> Vec<Message> {
        let limits = Limits::default();
        let mut out = Vec::new();
        while let Some((m, used)) = decode(wire, &limits).expect("well-formed bytes") {
            out.push(m);
            wire = &wire[used..];
        }
        assert!(wire.is_empty(), "{} bytes left over", wire.len());
        out
    }

    #[test]
    fn the_next_frame_is_taken_to_code_while_one_is_on_the_wire_and_waits_for_it() {
        let t0 = Instant::now();
        let mut tx = conn(t0);
        tx.set_coding(TileCompression::Lz4);
        let mut small = Vec::new();
        // Frame 1: coded, on the wire (5 chunks of 1000 bytes at most).
        tx.offer_frame(frame(1, 4000));
        let job = tx.frame_to_code().expect("frame 1 to code");
        assert!(job.base.is_none(), "a new link's first frame is whole");
        tx.start_coded(job.frame, None, Arc::new(vec![9; 4000]));
        assert!(tx.poll_transmit(t0, &mut small).is_some());
        assert!(!tx.wire_free());
        // Frame 2 comes: taken to code at once, a delta against frame 1, while frame 1
        // is still going out.
        tx.offer_frame(frame(2, 4000));
        let job = tx
            .frame_to_code()
            .expect("frame 2 to code while 1 is on the wire");
        assert_eq!(job.base.as_ref().map(|b| b.meta().seq), Some(1));
        // Frame 3 comes meanwhile: it waits in the slot; nothing else is taken (raw or
        // coded) before frame 2 is on the wire.
        tx.offer_frame(frame(3, 4000));
        assert!(tx.frame_to_code().is_none());
        let mut seen = Vec::new();
        while let Some(t) = tx.poll_transmit(t0, &mut small) {
            seen.extend_from_slice(&small);
            if let Some((head, payload)) = &t.bulk {
                seen.extend_from_slice(head);
                seen.extend_from_slice(payload.bytes());
            }
            assert!(!t.frame_taken, "no frame taken while frame 2 codes");
        }
        assert!(tx.wire_free());
        let starts = decode_all(&seen)
            .iter()
            .filter(|m| matches!(m, Message::FrameStart(_) | Message::CodedFrameStart(_)))
            .count();
        assert_eq!(
            starts, 0,
            "frame 1's start went before; nothing else started"
        );
        tx.start_coded(job.frame, Some(1), Arc::new(vec![7; 100]));
        // Then frame 3, against frame 2.
        drain(&mut tx, t0);
        let job = tx.frame_to_code().expect("frame 3 to code");
        assert_eq!(job.frame.meta().seq, 3);
        assert_eq!(job.base.as_ref().map(|b| b.meta().seq), Some(2));
    }

    #[test]
    fn the_next_frame_waits_to_code_until_little_of_the_one_on_the_wire_is_left() {
        let t0 = Instant::now();
        let mut tx = conn(t0);
        tx.set_coding(TileCompression::Lz4);
        tx.set_code_ahead(1500);
        let mut small = Vec::new();
        tx.offer_frame(frame(1, 4000));
        let job = tx.frame_to_code().expect("frame 1 to code");
        tx.start_coded(job.frame, None, Arc::new(vec![9; 4000]));
        tx.offer_frame(frame(2, 4000));
        // 4000 bytes to send, 1000 a chunk: frame 2 is taken once 1000 are left.
        let mut left = 4000;
        while left > 1500 {
            assert!(tx.frame_to_code().is_none(), "{left} bytes left");
            assert!(tx.poll_transmit(t0, &mut small).is_some());
            left -= 1000;
        }
        assert!(tx.frame_to_code().is_some(), "{left} bytes left");
    }

    #[test]
    fn a_repeated_accept_starts_one_stream_and_no_other() {
        let t0 = Instant::now();
        let transfers = Transfers::default();
        let mut tx = conn(t0);
        assert!(tx.offer_file(7, file(&transfers, 10)));
        assert_eq!(tx.on_accept(7, 0), AcceptOutcome::Started);
        for _ in 0..10_000 {
            assert_eq!(tx.on_accept(7, 0), AcceptOutcome::Ignored);
        }
        // Unknown ids, and an offset past the file, change nothing either.
        assert_eq!(tx.on_accept(8, 0), AcceptOutcome::Ignored);
        assert_eq!(tx.ignored_accepts, 10_001);
        assert!(tx.take_read().is_some_and(|r| r.id == 7 && r.from == 0));
        assert!(tx.take_read().is_none(), "one stream, not two");
        // Once answered, a late accept is ignored too.
        assert!(tx.on_result(7).is_some());
        assert!(tx.on_result(7).is_none());
        assert_eq!(tx.on_accept(7, 0), AcceptOutcome::Ignored);
        assert!(tx.take_read().is_none());
        assert_eq!(tx.files_on_link(), 0);

        let mut tx = conn(t0);
        assert!(tx.offer_file(1, file(&transfers, 10)));
        assert_eq!(tx.on_accept(1, 11), AcceptOutcome::Ignored, "past the end");
    }

    #[test]
    fn file_chunks_and_frame_chunks_take_turns_and_the_end_follows_the_last_chunk() {
        let t0 = Instant::now();
        let transfers = Transfers::default();
        let mut tx = conn(t0);
        assert!(tx.offer_file(3, file(&transfers, 6)));
        assert_eq!(tx.on_accept(3, 0), AcceptOutcome::Started);
        let _ = tx.take_read();
        assert!(matches!(
            tx.push_file_chunk(3, 0, PooledBuf::detached(vec![1, 2, 3]), 3),
            PushOutcome::Queued
        ));
        assert!(matches!(
            tx.push_file_chunk(3, 3, PooledBuf::detached(vec![4, 5, 6]), 3),
            PushOutcome::Queued
        ));
        assert!(tx.file_read_done(3, 99));
        assert!(!tx.offer_frame(frame(1, 2400)));
        let kinds: Vec<Kind> = drain(&mut tx, t0).iter().map(Message::kind).collect();
        use Kind::*;
        assert_eq!(
            kinds,
            [
                FileOffer, FrameStart, FrameChunk, FileChunk, FrameChunk, FileChunk, FileEnd,
                FrameChunk
            ]
        );
        assert_eq!(tx.file_state(3), Some(OutState::Ended));
    }

    #[test]
    fn the_read_ahead_is_bounded_and_a_stopped_file_takes_no_more() {
        let t0 = Instant::now();
        let transfers = Transfers::default();
        let mut tx = conn(t0);
        assert!(tx.offer_file(1, file(&transfers, 100)));
        let _ = tx.on_accept(1, 0);
        for i in 0..FILE_CHUNKS_AHEAD {
            let data = PooledBuf::detached(vec![0; 1]);
            assert!(matches!(
                tx.push_file_chunk(1, i as u64, data, 1),
                PushOutcome::Queued
            ));
        }
        let data = PooledBuf::detached(vec![0; 1]);
        assert!(matches!(
            tx.push_file_chunk(1, 9, data, 1),
            PushOutcome::Full(_)
        ));
        let id = tx.files.get(&1).map(|f| f.file.transfer.id).expect("file");
        assert!(tx.cancel_transfer(id, "cancelled").is_some());
        let data = PooledBuf::detached(vec![0; 1]);
        assert!(matches!(
            tx.push_file_chunk(1, 9, data, 1),
            PushOutcome::Stopped
        ));
        // The queued chunks went with it: only the offer and the cancel go out.
        let kinds: Vec<Kind> = drain(&mut tx, t0).iter().map(Message::kind).collect();
        assert_eq!(kinds, [Kind::FileOffer, Kind::FileCancel]);
    }

    #[test]
    fn a_close_mid_frame_aborts_it_between_two_chunks_and_sends_nothing_after() {
        let t0 = Instant::now();
        let mut tx = conn(t0);
        tx.offer_frame(frame(5, 4000));
        let mut small = Vec::new();
        let first = tx.poll_transmit(t0, &mut small).expect("the first chunk");
        assert!(first.frame_taken && !first.frame_done);
        tx.close(GoodbyeCode::Normal, "shutting down");
        assert!(
            !tx.send(&Message::FrameAbort { seq: 1 }),
            "closing: no more"
        );
        let last = drain(&mut tx, t0);
        assert_eq!(
            last,
            [
                Message::FrameAbort { seq: 5 },
                Message::Goodbye {
                    code: GoodbyeCode::Normal,
                    reason: "shutting down".into()
                }
            ]
        );
        assert!(tx.is_closed());
        assert!(tx.poll_transmit(t0, &mut small).is_none());
        assert!(!tx.offer_frame(frame(6, 4)), "a closed link takes no frame");
        assert!(tx.slot_empty());
    }

    #[test]
    fn keepalive_pings_on_a_mocked_clock_and_a_silent_peer_is_told_why() {
        let t0 = Instant::now();
        let mut tx = conn(t0);
        assert!(drain(&mut tx, t0).is_empty());
        assert_eq!(tx.poll_timeout(), t0 + S);
        let pings = drain(&mut tx, t0 + S);
        assert!(matches!(pings[..], [Message::Ping(Ping { nonce: 1, .. })]));
        tx.on_receive(t0 + S);
        assert!(matches!(drain(&mut tx, t0 + 2 * S)[..], [Message::Ping(_)]));
        // Silent since t0+1s, with a 3 s timeout: dead at t0+4s.
        let mut small = Vec::new();
        let t = tx.poll_transmit(t0 + 4 * S, &mut small).expect("a goodbye");
        assert_eq!(t.close, Some(Closing::KeepaliveTimeout(3 * S)));
        let said = decode_all(&small);
        assert!(
            matches!(&said[..], [Message::Goodbye { code: GoodbyeCode::Timeout, reason }] if reason.contains("3.0 s")),
            "{said:?}"
        );
    }

    #[test]
    fn small_messages_are_bounded_and_a_newer_frame_replaces_a_waiting_one() {
        let t0 = Instant::now();
        let mut tx = conn(t0);
        let text = Message::Text(crate::protocol::Text {
            sent_us: 0,
            from: "a".into(),
            body: "x".repeat(60_000),
        });
        let mut queued = 0;
        while tx.send(&text) {
            queued += 1;
        }
        assert!((4..=5).contains(&queued), "{queued}");
        assert!(!tx.offer_frame(frame(1, 8)));
        assert!(
            tx.offer_frame(frame(2, 8)),
            "the waiting frame was replaced"
        );
        let got = drain(&mut tx, t0);
        let starts: Vec<u64> = got
            .iter()
            .filter_map(|m| match m {
                Message::FrameStart(s) => Some(s.seq),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [2]);
        assert!(tx.send(&text), "room again once the peer took them");
    }
    #[test]
    fn a_file_window_holds_a_file_back_until_the_peer_reports_bytes_stored() {
        let t0 = Instant::now();
        let transfers = Transfers::default();
        let mut tx = conn(t0);
        tx.set_file_window(10);
        assert!(tx.offer_file(1, file(&transfers, 100)));
        let _ = tx.on_accept(1, 0);
        let _ = tx.take_read();
        let push = |tx: &mut TxConn, offset| {
            tx.push_file_chunk(1, offset, PooledBuf::detached(vec![0; 4]), 4)
        };
        assert!(matches!(push(&mut tx, 0), PushOutcome::Queued));
        assert!(matches!(push(&mut tx, 4), PushOutcome::Queued));
        assert!(
            matches!(push(&mut tx, 8), PushOutcome::Full(_)),
            "12 bytes would be on the way, 10 may"
        );
        // Written to the wire, they are still on the way until the peer says stored.
        assert_eq!(drain(&mut tx, t0).len(), 3);
        assert!(matches!(push(&mut tx, 8), PushOutcome::Full(_)));
        assert_eq!(tx.file_bytes_on_the_way(), 8);
        tx.on_progress(1, 4);
        assert!(matches!(push(&mut tx, 8), PushOutcome::Queued));
        // A report past what was sent counts only what was sent; going back, or an
        // unknown id, changes nothing.
        tx.on_progress(1, 1000);
        assert_eq!(tx.file_bytes_on_the_way(), 0);
        tx.on_progress(1, 2);
        tx.on_progress(9, 50);
        assert_eq!(tx.file_bytes_on_the_way(), 0);
        // A resume starts the count at the accepted offset.
        let mut tx = conn(t0);
        tx.set_file_window(10);
        assert!(tx.offer_file(2, file(&transfers, 100)));
        let _ = tx.on_accept(2, 60);
        assert_eq!(tx.file_bytes_on_the_way(), 0);
        let chunk = PooledBuf::detached(vec![0; 8]);
        assert!(matches!(
            tx.push_file_chunk(2, 60, chunk, 8),
            PushOutcome::Queued
        ));
        assert_eq!(tx.file_bytes_on_the_way(), 8);
    }
}
