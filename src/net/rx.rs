//! The receiving half of one connection as pure state: bytes in, events out. No
//! socket, thread or clock inside (quinn-proto's `Connection` is the model, and
//! [`super::tx::TxConn`] is the sending half).
//!
//! The driver asks [`RxConn::recv_buf`] where the next bytes go, reads into it, and
//! reports how many with [`RxConn::advance`]; then [`RxConn::poll`] hands out what
//! those bytes completed. Where the next bytes go follows the message being read:
//! envelopes and small messages gather in a small buffer, but a frame chunk's payload
//! goes straight into the frame's buffer and a file chunk's into a pooled buffer that
//! can travel on to a disk writer, so payloads are never copied through a read buffer.
//! Every length is checked against the limits before anything is sized by it.

use crate::frame::{Frame, FramePool, PooledBuf};
use crate::protocol::{
    decode_body, Assembled, BulkHead, Envelope, FrameAssembler, Kind, Limits, Message,
    ProtocolError, BULK_HEAD_LEN, ENVELOPE_LEN,
};

/// Bytes of the buffer envelopes and small messages gather in. Small: what it reads
/// ahead of a payload is copied into the payload's destination a second time, so it
/// must not read far ahead (a 256 KiB buffer once took a quarter of every frame's
/// bytes through it).
pub(crate) const RX_BUF_BYTES: usize = 8 << 10;

/// The largest piece of a file chunk handed out at once (honest peers send chunks of
/// this size, so one chunk is one piece).
pub(crate) const FILE_PIECE_BYTES: usize = super::files::FILE_CHUNK_BYTES;

/// What received bytes completed.
pub(crate) enum RxEvent {
    /// A whole frame whose checksum matched.
    Frame(Frame),
    /// Bytes of file chunk data, in the order they came: `len` bytes of `data` belong at
    /// `offset` of transfer `id`. Whether that transfer exists, and whether the offset
    /// is the one it expects, is for the receiver of the event to check.
    FileData {
        id: u64,
        offset: u64,
        data: PooledBuf,
        len: usize,
    },
    /// Any other message a peer may send after the handshake (frame starts and aborts
    /// are taken care of here, and never come out).
    Message(Message),
}

/// Where the bytes being read go.
enum State {
    /// An envelope, in `buf`.
    Envelope,
    /// A bulk message's fixed head, in `buf`.
    BulkHead(Envelope),
    /// A small message's body: in `buf` when it fits there, else in `body`, of which
    /// `filled` bytes have arrived.
    Body { env: Envelope, filled: usize },
    /// A frame chunk's payload, into the frame's own buffer: `filled` of the pending
    /// chunk's bytes have arrived.
    FramePayload { filled: usize },
    /// A file chunk's payload: the piece being filled, `filled` of its `len` bytes in,
    /// at `offset`; `left` bytes of the chunk follow this piece.
    FilePayload {
        id: u64,
        offset: u64,
        piece: PooledBuf,
        len: usize,
        filled: usize,
        left: usize,
    },
    /// A file piece is full and waits to be handed out.
    FilePieceReady {
        id: u64,
        offset: u64,
        piece: PooledBuf,
        len: usize,
        left: usize,
    },
    /// A goodbye or an error was handed out: nothing more is read.
    Closed,
}

/// One connection's receiving half.
pub(crate) struct RxConn {
    limits: Limits,
    frames: FrameAssembler,
    file_pool: FramePool,
    /// Why frames from this peer are refused, if they are (see the link's reader).
    frames_refused: Option<&'static str>,
    /// This node's hello said it takes coded frames.
    takes_coded: bool,
    buf: Box<[u8]>,
    /// `buf[head..tail]` holds bytes not yet parsed.
    head: usize,
    tail: usize,
    /// Bodies larger than `buf` (large texts, hellos): sized by a checked length.
    body: Vec<u8>,
    state: State,
}

impl RxConn {
    /// `frames` reassembles the peer's frames (with the node's budget); file pieces
    /// come from `file_pool`; `frames_refused` says why a frame start is a protocol
    /// error from this peer, if it is.
    pub fn new(
        limits: Limits,
        frames: FrameAssembler,
        file_pool: FramePool,
        frames_refused: Option<&'static str>,
    ) -> RxConn {
        RxConn {
            limits,
            frames,
            file_pool,
            frames_refused,
            takes_coded: false,
            buf: vec![0u8; RX_BUF_BYTES].into_boxed_slice(),
            head: 0,
            tail: 0,
            // Sized for every control message but the rare large text or hello, so the
            // steady state never grows it.
            body: Vec::with_capacity(4 << 10),
            state: State::Envelope,
        }
    }

    /// This node's hello told the peer it takes coded frames
    /// ([`crate::protocol::Capabilities::TILES`]): they are decoded against the last whole
    /// frame, which is kept for it. A coded frame start is a protocol error otherwise.
    pub fn take_coded(&mut self) {
        self.takes_coded = true;
        self.frames.keep_base();
    }

    /// Where the next bytes read from the peer go: never empty until the connection
    /// is closed. Read into it, then call [`RxConn::advance`] with the count, then
    /// [`RxConn::poll`] until it says `None`.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        match &mut self.state {
            State::FramePayload { filled } => {
                let filled = *filled;
                &mut self.frames.pending_dest()[filled..]
            }
            State::FilePayload {
                piece, len, filled, ..
            } => &mut piece[*filled..*len],
            State::Body { env, filled } if env.body_len as usize > self.buf.len() => {
                &mut self.body[*filled..]
            }
            State::Closed | State::FilePieceReady { .. } => &mut [],
            _ => {
                if self.tail == self.buf.len() {
                    // Full: move what is unparsed to the front (less than one message
                    // head or body, which always fits).
                    self.buf.copy_within(self.head..self.tail, 0);
                    self.tail -= self.head;
                    self.head = 0;
                }
                &mut self.buf[self.tail..]
            }
        }
    }

    /// `n` bytes were read into the slice [`RxConn::recv_buf`] gave.
    pub fn advance(&mut self, n: usize) {
        let buf_len = self.buf.len();
        match &mut self.state {
            State::FramePayload { filled } | State::FilePayload { filled, .. } => *filled += n,
            State::Body { env, filled } if env.body_len as usize > buf_len => *filled += n,
            _ => self.tail += n,
        }
        debug_assert!(self.tail <= self.buf.len());
    }

    /// The peer closed its side of the connection: clean between two whole messages;
    /// inside one, the message is cut short.
    pub fn on_end_of_stream(&self) -> Result<(), ProtocolError> {
        let between = matches!(self.state, State::Envelope) && self.head == self.tail;
        if between || matches!(self.state, State::Closed) {
            return Ok(());
        }
        let kind = match &self.state {
            State::Envelope => "message",
            State::BulkHead(env) | State::Body { env, .. } => env.kind.name(),
            State::FramePayload { .. } => Kind::FrameChunk.name(),
            _ => Kind::FileChunk.name(),
        };
        Err(ProtocolError::Truncated {
            kind,
            field: if kind == "message" {
                "envelope"
            } else {
                "body (the connection ended inside it)"
            },
        })
    }

    /// The next thing the bytes received so far complete; `None` until more arrive. An
    /// error closes the connection: nothing more comes out.
    pub fn poll(&mut self) -> Result<Option<RxEvent>, ProtocolError> {
        let polled = self.poll_inner();
        if polled.is_err() {
            self.close();
        }
        polled
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.head = 0;
        self.tail = 0;
    }

    fn buffered(&self) -> usize {
        self.tail - self.head
    }

    fn poll_inner(&mut self) -> Result<Option<RxEvent>, ProtocolError> {
        loop {
            match std::mem::replace(&mut self.state, State::Closed) {
                State::Closed => return Ok(None),
                State::Envelope => {
                    if self.buffered() < ENVELOPE_LEN {
                        self.state = State::Envelope;
                        return Ok(None);
                    }
                    let mut bytes = [0u8; ENVELOPE_LEN];
                    bytes.copy_from_slice(&self.buf[self.head..self.head + ENVELOPE_LEN]);
                    self.head += ENVELOPE_LEN;
                    let env = Envelope::parse(&bytes, &self.limits)?;
                    if env.kind.is_bulk() {
                        self.state = State::BulkHead(env);
                    } else {
                        self.begin_body(env);
                    }
                }
                State::BulkHead(env) => {
                    if self.buffered() < BULK_HEAD_LEN {
                        self.state = State::BulkHead(env);
                        return Ok(None);
                    }
                    let mut bytes = [0u8; BULK_HEAD_LEN];
                    bytes.copy_from_slice(&self.buf[self.head..self.head + BULK_HEAD_LEN]);
                    self.head += BULK_HEAD_LEN;
                    let head = BulkHead::parse(&bytes);
                    let len = env.bulk_payload_len();
                    if env.kind == Kind::FrameChunk {
                        let dest = self.frames.chunk_dest(head, len)?;
                        // What the buffer read ahead goes in first; the rest is read
                        // straight into the frame.
                        let n = (self.tail - self.head).min(dest.len());
                        dest[..n].copy_from_slice(&self.buf[self.head..self.head + n]);
                        self.head += n;
                        self.state = State::FramePayload { filled: n };
                    } else {
                        self.begin_file_piece(head.id, head.offset, len);
                    }
                }
                State::Body { env, filled } => {
                    let len = env.body_len as usize;
                    let message = if len > self.buf.len() {
                        if filled < len {
                            self.state = State::Body { env, filled };
                            return Ok(None);
                        }
                        decode_body(env.kind, &self.body[..len], &self.limits)?
                    } else {
                        if self.buffered() < len {
                            self.state = State::Body { env, filled };
                            return Ok(None);
                        }
                        let body = &self.buf[self.head..self.head + len];
                        self.head += len;
                        decode_body(env.kind, body, &self.limits)?
                    };
                    self.state = State::Envelope;
                    if let Some(event) = self.on_message(message)? {
                        return Ok(Some(event));
                    }
                }
                State::FramePayload { filled } => {
                    if filled < self.frames.pending_dest().len() {
                        self.state = State::FramePayload { filled };
                        return Ok(None);
                    }
                    self.state = State::Envelope;
                    if let Assembled::Complete(frame) = self.frames.chunk_filled()? {
                        return Ok(Some(RxEvent::Frame(frame)));
                    }
                }
                State::FilePayload {
                    id,
                    offset,
                    piece,
                    len,
                    filled,
                    left,
                } => {
                    if filled < len {
                        self.state = State::FilePayload {
                            id,
                            offset,
                            piece,
                            len,
                            filled,
                            left,
                        };
                        return Ok(None);
                    }
                    self.state = State::FilePieceReady {
                        id,
                        offset,
                        piece,
                        len,
                        left,
                    };
                }
                State::FilePieceReady {
                    id,
                    offset,
                    piece,
                    len,
                    left,
                } => {
                    // The next piece (or message) is set up before this one goes out,
                    // so that recv_buf has a place again.
                    if left > 0 {
                        self.begin_file_piece(id, offset + len as u64, left);
                    } else {
                        self.state = State::Envelope;
                    }
                    return Ok(Some(RxEvent::FileData {
                        id,
                        offset,
                        data: piece,
                        len,
                    }));
                }
            }
        }
    }

    /// A small message's envelope arrived: its body is read into `buf` if it fits
    /// there, else into `body`, sized by the length the envelope's parse has checked.
    fn begin_body(&mut self, env: Envelope) {
        let len = env.body_len as usize;
        if len <= self.buf.len() {
            if self.head + len > self.buf.len() {
                self.buf.copy_within(self.head..self.tail, 0);
                self.tail -= self.head;
                self.head = 0;
            }
            self.state = State::Body { env, filled: 0 };
            return;
        }
        self.body.resize(len, 0);
        let n = self.buffered().min(len);
        self.body[..n].copy_from_slice(&self.buf[self.head..self.head + n]);
        self.head += n;
        self.state = State::Body { env, filled: n };
    }

    /// The next piece of a file chunk whose `left` payload bytes begin at `offset`
    /// (pieces of a zero-length chunk: none).
    fn begin_file_piece(&mut self, id: u64, offset: u64, left: usize) {
        if left == 0 {
            self.state = State::Envelope;
            return;
        }
        let len = left.min(FILE_PIECE_BYTES);
        let mut piece = self.file_pool.take(len);
        let n = self.buffered().min(len);
        piece[..n].copy_from_slice(&self.buf[self.head..self.head + n]);
        self.head += n;
        self.state = State::FilePayload {
            id,
            offset,
            piece,
            len,
            filled: n,
            left: left - len,
        };
    }

    /// A whole small message: frame starts and aborts go to the assembler; a goodbye
    /// ends reading; what a peer may never send after the handshake is an error.
    fn on_message(&mut self, message: Message) -> Result<Option<RxEvent>, ProtocolError> {
        match message {
            m @ (Message::FrameStart(_) | Message::CodedFrameStart(_)) => {
                let coded = matches!(m, Message::CodedFrameStart(_));
                // Frames this node never asked for, or not from this peer, or coded ones
                // it did not say it takes, are not reassembled, nor kept: the peer
                // breaks the protocol.
                let refused = self.frames_refused.or((coded && !self.takes_coded)
                    .then_some("from a peer this node did not tell it takes coded frames"));
                if let Some(when) = refused {
                    return Err(ProtocolError::Unexpected {
                        kind: m.kind().name(),
                        when,
                    });
                }
                let abandoned = match m {
                    Message::CodedFrameStart(c) => self.frames.start_coded(c),
                    Message::FrameStart(start) => self.frames.start(start),
                    _ => None,
                };
                if let Some(seq) = abandoned {
                    tracing::trace!(seq, "frame abandoned by a newer frame start");
                }
                Ok(None)
            }
            Message::FrameAbort { seq } => {
                self.frames.abort(seq);
                Ok(None)
            }
            m @ (Message::Hello(_)
            | Message::Auth { .. }
            | Message::FrameChunk { .. }
            | Message::FileChunk { .. }) => Err(ProtocolError::Unexpected {
                kind: m.kind().name(),
                when: "after the handshake",
            }),
            m @ Message::Goodbye { .. } => {
                self.close();
                Ok(Some(RxEvent::Message(m)))
            }
            m => Ok(Some(RxEvent::Message(m))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameGeometry;
    use crate::protocol::{encode, encode_bulk_head, Hello, Text};

    fn conn(refused: Option<&'static str>) -> RxConn {
        RxConn::new(
            Limits::default(),
            FrameAssembler::new(FramePool::new(2)),
            FramePool::new(2),
            refused,
        )
    }

    /// Feeds `wire` in reads of at most `step` bytes; what came out, or the error.
    fn feed(rx: &mut RxConn, wire: &[u8], step: usize) -> Result<Vec<RxEvent>, ProtocolError> {
        let mut out = Vec::new();
        let mut rest = wire;
        loop {
            while let Some(e) = rx.poll()? {
                out.push(e);
            }
            if rest.is_empty() {
                return Ok(out);
            }
            let dst = rx.recv_buf();
            let n = dst.len().min(step).min(rest.len());
            dst[..n].copy_from_slice(&rest[..n]);
            rx.advance(n);
            rest = &rest[n..];
        }
    }

    #[test]
    fn a_frame_chunk_is_read_straight_into_the_frame() {
        let pixels: Vec<u8> = (0..40_000u32).map(|i| (i * 13) as u8).collect();
        let frame = Frame::copied(
            FrameGeometry::rgba8(100, 100),
            9,
            0,
            &pixels,
            &FramePool::new(1),
        );
        let mut wire = Vec::new();
        encode(
            &Message::FrameStart(frame.meta().start_message()),
            &mut wire,
        );
        wire.extend_from_slice(&encode_bulk_head(Kind::FrameChunk, 9, 0, pixels.len()));
        let heads = wire.len();
        let mut rx = conn(None);
        assert!(feed(&mut rx, &wire, usize::MAX).expect("valid").is_empty());
        // After the heads, the place to read into is the rest of the frame itself, all
        // of it in one read: not a buffer it would be copied from.
        assert_eq!(rx.recv_buf().len(), pixels.len());
        wire.extend_from_slice(&pixels);
        let events = feed(&mut rx, &wire[heads..], usize::MAX).expect("valid");
        match &events[..] {
            [RxEvent::Frame(f)] => assert_eq!(f.pixels(), &pixels[..]),
            _ => panic!("one frame expected, got {}", events.len()),
        }
    }

    #[test]
    fn a_file_chunk_comes_out_in_pieces_at_their_offsets() {
        let len = 2 * FILE_PIECE_BYTES + 1000;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut wire = encode_bulk_head(Kind::FileChunk, 4, 5000, len).to_vec();
        wire.extend_from_slice(&data);
        let events = feed(&mut conn(None), &wire, 3000).expect("valid");
        let pieces: Vec<(u64, u64, Vec<u8>)> = events
            .into_iter()
            .map(|e| match e {
                RxEvent::FileData {
                    id,
                    offset,
                    data,
                    len,
                } => (id, offset, data[..len].to_vec()),
                _ => panic!("file data expected"),
            })
            .collect();
        let offsets: Vec<u64> = pieces.iter().map(|p| p.1).collect();
        let p = FILE_PIECE_BYTES as u64;
        assert_eq!(offsets, [5000, 5000 + p, 5000 + 2 * p]);
        assert!(pieces.iter().all(|piece| piece.0 == 4));
        let joined: Vec<u8> = pieces.into_iter().flat_map(|p| p.2).collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn hostile_bytes_end_reading_with_a_reason_and_size_nothing() {
        // A text whose envelope claims 4 GiB: refused at the envelope, and the body
        // buffer never grows.
        let mut rx = conn(None);
        let wire = [Kind::Text as u8, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            feed(&mut rx, &wire, 1),
            Err(ProtocolError::TooLong { kind: "text", .. })
        ));
        assert_eq!(rx.body.capacity(), 4 << 10);
        assert!(rx.recv_buf().is_empty(), "nothing more is read");

        // A hello after the handshake.
        let mut wire = Vec::new();
        encode(
            &Message::Hello(Hello {
                role: crate::protocol::Role::Viewer,
                capabilities: crate::protocol::Capabilities(0),
                name: "x".into(),
                auth: Vec::new(),
                instance: 1,
            }),
            &mut wire,
        );
        assert!(matches!(
            feed(&mut conn(None), &wire, 7),
            Err(ProtocolError::Unexpected { kind: "hello", .. })
        ));

        // A frame from a peer whose frames this node refuses.
        let mut wire = Vec::new();
        let start = Frame::copied(
            FrameGeometry::rgba8(1, 1),
            1,
            0,
            &[0; 4],
            &FramePool::new(1),
        )
        .meta()
        .start_message();
        encode(&Message::FrameStart(start), &mut wire);
        assert!(matches!(
            feed(&mut conn(Some("by a node that takes no frames")), &wire, 64),
            Err(ProtocolError::Unexpected {
                kind: "frame-start",
                when: "by a node that takes no frames"
            })
        ));
    }

    #[test]
    fn the_end_of_the_stream_is_clean_only_between_messages() {
        let mut wire = Vec::new();
        encode(
            &Message::Text(Text {
                sent_us: 0,
                from: "a".into(),
                body: "hi".into(),
            }),
            &mut wire,
        );
        for cut in 0..=wire.len() {
            let mut rx = conn(None);
            let events = feed(&mut rx, &wire[..cut], 1).expect("valid so far");
            let end = rx.on_end_of_stream();
            if cut == 0 || cut == wire.len() {
                assert!(end.is_ok(), "cut at {cut}");
                assert_eq!(events.len(), usize::from(cut > 0));
            } else {
                assert!(end.is_err(), "cut at {cut}");
                assert!(events.is_empty());
            }
        }
    }
}
