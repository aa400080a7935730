//! The texstream wire protocol: pure bytes ↔ messages, no sockets, threads or clock.
//!
//! A connection starts with an 8-byte [`Preamble`] from each side, then carries
//! messages framed as `kind: u8, body_len: u32 LE, body`. Every length read from the
//! wire is checked against [`Limits`] before anything is allocated. The byte layout of
//! every message is specified in `docs/PROTOCOL.md` and pinned by golden tests.
//!
//! Two ways to decode share one parser:
//! - [`decode`] takes a byte slice and returns `Ok(None)` while a message is incomplete,
//!   `Err` when the bytes are malformed (the stream is then dead), as the tokio-util
//!   codec contract does. Tests, fuzzers and tools use it.
//! - The network reader uses [`Envelope::parse`], [`BulkHead::parse`] and
//!   [`decode_body`] directly, so that the payload of a frame chunk is read from the
//!   socket straight into the frame's buffer without an intermediate copy.

mod assemble;
mod checksum;
mod codec;
mod error;
mod escape;
mod message;
pub mod tiles;

pub use assemble::{Assembled, Evict, FrameAssembler, FrameBudget};
pub use checksum::{checksum, Checksum};
pub use codec::{
    decode, decode_body, decode_preamble, encode, encode_bulk_head, encode_preamble, max_body_len,
    truncate_utf8, BulkHead, Envelope, BULK_HEAD_LEN, ENVELOPE_LEN, PREAMBLE_LEN,
};
pub use error::ProtocolError;
pub use escape::{escaped, is_unsafe_char, Escaped};
pub use message::{
    Capabilities, CodedFrameStart, FileAccept, FileCancel, FileEnd, FileOffer, FileProgress,
    FileResult, FrameCoding, FrameStart, GoodbyeCode, Hello, Kind, Message, Ping, Pong, Role, Text,
    FILE_WINDOW_BYTES,
};

/// The magic bytes that open every texstream connection.
pub const MAGIC: [u8; 6] = *b"TXSTRM";

/// The protocol version this build speaks. Peers with another version are refused with
/// an error that names both versions.
pub const VERSION: u16 = 1;

/// Default size of a frame chunk's payload: 1 MiB.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Limits checked against every length read from the wire, before any allocation.
///
/// The defaults are documented in `docs/PROTOCOL.md`; a receiver may lower them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame chunk or file chunk (default 16 MiB).
    pub max_chunk_bytes: u32,
    /// Largest frame, `bytes_per_row * height` (default 1 GiB: 16384 x 16384 RGBA).
    pub max_frame_bytes: u64,
    /// Largest width or height of a frame, in pixels (default 16384).
    pub max_dimension: u32,
    /// Largest text message body, in bytes of UTF-8 (default 64 KiB).
    pub max_text_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chunk_bytes: 16 << 20,
            max_frame_bytes: 1 << 30,
            max_dimension: 16384,
            max_text_bytes: 64 << 10,
        }
    }
}

/// Largest name carried in a hello (a stream or peer name), in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Largest opaque authentication field of a hello, in bytes.
pub const MAX_AUTH_BYTES: usize = 512;
/// Largest reason or message string (goodbye, file result, file cancel), in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Largest file name in a file offer, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 1024;
