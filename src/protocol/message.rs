//! Message types of the wire protocol and their kind codes.

use crate::frame::PixelFormat;

/// The kind byte that opens every message envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Hello = 0x01,
    Goodbye = 0x02,
    Auth = 0x03,
    Ping = 0x10,
    Pong = 0x11,
    FrameStart = 0x20,
    FrameChunk = 0x21,
    FrameAbort = 0x22,
    CodedFrameStart = 0x23,
    Text = 0x30,
    FileOffer = 0x40,
    FileAccept = 0x41,
    FileChunk = 0x42,
    FileEnd = 0x43,
    FileResult = 0x44,
    FileCancel = 0x45,
    FileProgress = 0x46,
}

impl Kind {
    /// Every kind, in code order.
    pub const ALL: [Kind; 17] = [
        Kind::Hello,
        Kind::Goodbye,
        Kind::Auth,
        Kind::Ping,
        Kind::Pong,
        Kind::FrameStart,
        Kind::FrameChunk,
        Kind::FrameAbort,
        Kind::CodedFrameStart,
        Kind::Text,
        Kind::FileOffer,
        Kind::FileAccept,
        Kind::FileChunk,
        Kind::FileEnd,
        Kind::FileResult,
        Kind::FileCancel,
        Kind::FileProgress,
    ];

    pub fn from_u8(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == code)
    }

    /// The kind's name as written in errors and docs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Goodbye => "goodbye",
            Kind::Auth => "auth",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
            Kind::FrameStart => "frame-start",
            Kind::FrameChunk => "frame-chunk",
            Kind::FrameAbort => "frame-abort",
            Kind::CodedFrameStart => "coded-frame-start",
            Kind::Text => "text",
            Kind::FileOffer => "file-offer",
            Kind::FileAccept => "file-accept",
            Kind::FileChunk => "file-chunk",
            Kind::FileEnd => "file-end",
            Kind::FileResult => "file-result",
            Kind::FileCancel => "file-cancel",
            Kind::FileProgress => "file-progress",
        }
    }

    /// Whether the body is a fixed head followed by a bulk payload (frame or file chunk).
    pub fn is_bulk(self) -> bool {
        matches!(self, Kind::FrameChunk | Kind::FileChunk)
    }
}

/// What a peer is, announced in its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum Role {
    Sender = 1,
    Viewer = 2,
    Relay = 3,
    FileClient = 4,
}

impl Role {
    pub fn from_u8(code: u8) -> Option<Role> {
        [Role::Sender, Role::Viewer, Role::Relay, Role::FileClient]
            .into_iter()
            .find(|r| *r as u8 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Viewer => "viewer",
            Role::Relay => "relay",
            Role::FileClient => "file client",
        }
    }
}

/// Capability bits announced in a hello. Unknown bits are ignored by receivers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// The peer sends frames.
    pub const FRAMES_OUT: u32 = 1 << 0;
    /// The peer wants frames.
    pub const FRAMES_IN: u32 = 1 << 1;
    /// The peer takes text messages.
    pub const TEXT: u32 = 1 << 2;
    /// The peer takes file offers.
    pub const FILES_IN: u32 = 1 << 3;
    /// File flow control: the peer reports the bytes of each file it receives as it
    /// stores them ([`FileProgress`]), and sends a file no further than
    /// [`FILE_WINDOW_BYTES`] past what a peer with this bit reported stored.
    pub const FILE_WINDOW: u32 = 1 << 4;
    /// The peer takes tile-coded frames ([`CodedFrameStart`]): a sender may send it
    /// deltas against the last frame on the link and compressed tiles.
    pub const TILES: u32 = 1 << 5;
    /// The peer takes frames of every [`PixelFormat`] (gray, RGB, float…); a peer
    /// without it takes only RGBA8 and BGRA8 and refuses any other format code, so it
    /// is sent no other.
    pub const FORMATS: u32 = 1 << 6;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit == bit
    }
}

/// The first message on a connection, sent by both sides after the preamble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub role: Role,
    pub capabilities: Capabilities,
    /// Stream or peer name, UTF-8, at most [`super::MAX_NAME_BYTES`].
    pub name: String,
    /// Opaque authentication data, at most [`super::MAX_AUTH_BYTES`]; empty when unused.
    pub auth: Vec<u8>,
    /// A random number fixed for the life of the peer's process: a peer that comes back
    /// with the same instance is the same peer, and interrupted file transfers resume.
    pub instance: u64,
}

/// Why a peer ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GoodbyeCode {
    /// The peer is closing normally (the program ends).
    Normal = 0,
    /// The peer dropped this connection on purpose (an operator asked for it).
    Kicked = 1,
    /// The peer serves no more connections.
    Full = 2,
    /// Our bytes broke the protocol.
    ProtocolError = 3,
    /// Authentication failed.
    AuthFailed = 4,
    /// The peer saw no traffic from us within its keepalive timeout.
    Timeout = 5,
    /// Any other reason; the text says which.
    Other = 255,
}

impl GoodbyeCode {
    pub fn from_u8(code: u8) -> GoodbyeCode {
        match code {
            0 => GoodbyeCode::Normal,
            1 => GoodbyeCode::Kicked,
            2 => GoodbyeCode::Full,
            3 => GoodbyeCode::ProtocolError,
            4 => GoodbyeCode::AuthFailed,
            5 => GoodbyeCode::Timeout,
            _ => GoodbyeCode::Other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ping {
    pub nonce: u64,
    /// Sender's clock when sent, microseconds (any epoch; only the sender reads it back).
    pub sent_us: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pong {
    pub nonce: u64,
    /// The `sent_us` of the ping this answers, echoed.
    pub ping_sent_us: u64,
    /// Responder's wall clock when answering, microseconds since the Unix epoch.
    pub sent_us: u64,
}

/// Announces a frame; its payload follows in frame chunks of the same `seq`, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStart {
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Bytes from one row to the next; at least `width * format.bytes_per_pixel()`, may
    /// carry padding.
    pub bytes_per_row: u32,
    /// Wall clock at capture, microseconds since the Unix epoch.
    pub capture_us: u64,
    /// Payload length: always `bytes_per_row * height`.
    pub total_len: u64,
    /// XXH3-64 of the whole payload.
    pub checksum: u64,
}

/// How a coded frame's bytes are coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameCoding {
    /// [`super::tiles`], version 1: tiles unchanged since the base left out, changed
    /// ones raw, LZ4 or QOI.
    Tiles = 1,
}

impl FrameCoding {
    pub fn from_u8(code: u8) -> Option<FrameCoding> {
        (code == FrameCoding::Tiles as u8).then_some(FrameCoding::Tiles)
    }
}

/// Announces a frame whose pixels follow coded (only to peers with
/// [`Capabilities::TILES`]): `coded_len` bytes in frame chunks of the frame's seq, in
/// order. `start` describes the decoded frame; its checksum is the decoded pixels'.
/// A delta is against the last whole frame of this link, in either direction raw or
/// coded, whose seq is `base_seq` (for a key frame, 0 and not looked at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodedFrameStart {
    pub start: FrameStart,
    pub coding: FrameCoding,
    pub base_seq: u64,
    pub coded_len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    /// Wall clock when written, microseconds since the Unix epoch.
    pub sent_us: u64,
    /// Who wrote it (a peer name), at most [`super::MAX_NAME_BYTES`].
    pub from: String,
    pub body: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOffer {
    pub id: u64,
    pub size: u64,
    /// The sender's file name; the receiver cleans it before use.
    pub name: String,
}

/// The receiver takes an offered file and asks for bytes from `offset` on (0, or where
/// an interrupted transfer stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileAccept {
    pub id: u64,
    pub offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileEnd {
    pub id: u64,
    /// XXH3-64 of the whole file.
    pub checksum: u64,
}

/// The receiver has stored the first `written` bytes of file `id` (sent by peers with
/// [`Capabilities::FILE_WINDOW`]; the file's sender may then send up to
/// [`FILE_WINDOW_BYTES`] past it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileProgress {
    pub id: u64,
    pub written: u64,
}

/// Bytes of one connection's files a sender keeps on the way (sent, not yet reported
/// stored) when both peers have [`Capabilities::FILE_WINDOW`].
pub const FILE_WINDOW_BYTES: u64 = 4 << 20;

/// The receiver's verdict on a file: stored (checksum matched) or failed, with a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileResult {
    pub id: u64,
    pub ok: bool,
    pub message: String,
}

/// The file's sender abandons a transfer (the receiver answers a transfer it cannot
/// take with a failed [`FileResult`] instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCancel {
    pub id: u64,
    pub reason: String,
}

/// One decoded message. Chunk payloads are owned here; the network reader avoids this
/// copy by reading chunk payloads straight into their destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Goodbye {
        code: GoodbyeCode,
        reason: String,
    },
    /// Proof that the sender knows the shared token: HMAC-SHA256 over the two hellos of
    /// this connection (see `docs/PROTOCOL.md`, Authentication).
    Auth {
        proof: [u8; 32],
    },
    Ping(Ping),
    Pong(Pong),
    FrameStart(FrameStart),
    FrameChunk {
        seq: u64,
        offset: u64,
        data: Vec<u8>,
    },
    FrameAbort {
        seq: u64,
    },
    CodedFrameStart(CodedFrameStart),
    Text(Text),
    FileOffer(FileOffer),
    FileAccept(FileAccept),
    FileChunk {
        id: u64,
        offset: u64,
        data: Vec<u8>,
    },
    FileEnd(FileEnd),
    FileResult(FileResult),
    FileCancel(FileCancel),
    FileProgress(FileProgress),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Goodbye { .. } => Kind::Goodbye,
            Message::Auth { .. } => Kind::Auth,
            Message::Ping(_) => Kind::Ping,
            Message::Pong(_) => Kind::Pong,
            Message::FrameStart(_) => Kind::FrameStart,
            Message::FrameChunk { .. } => Kind::FrameChunk,
            Message::FrameAbort { .. } => Kind::FrameAbort,
            Message::CodedFrameStart(_) => Kind::CodedFrameStart,
            Message::Text(_) => Kind::Text,
            Message::FileOffer(_) => Kind::FileOffer,
            Message::FileAccept(_) => Kind::FileAccept,
            Message::FileChunk { .. } => Kind::FileChunk,
            Message::FileEnd(_) => Kind::FileEnd,
            Message::FileResult(_) => Kind::FileResult,
            Message::FileCancel(_) => Kind::FileCancel,
            Message::FileProgress(_) => Kind::FileProgress,
        }
    }
}
