//! Errors of the wire protocol. Any of them makes the stream dead: the connection closes
//! with the error's text as its reason.

use crate::frame::PixelFormat;

/// Malformed or hostile bytes, or a broken rule of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "not a texstream peer: bad magic {found:02x?} (expected \"TXSTRM\"){}",
        tls_hint(found)
    )]
    BadMagic { found: [u8; 6] },
    #[error(
        "protocol version mismatch: peer speaks version {theirs}, this build speaks version {ours}"
    )]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("{kind} message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLong {
        kind: &'static str,
        len: u64,
        limit: u64,
    },
    #[error("{kind} message is truncated: its body ends inside field `{field}`")]
    Truncated {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} message has {extra} unexpected bytes after its last field")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("{kind} message: field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind} message: field `{field}` has invalid value {value}")]
    InvalidValue {
        kind: &'static str,
        field: &'static str,
        value: u64,
    },
    #[error("frame {seq}: {width}x{height} is outside the limits (1..={max} per side)")]
    BadDimensions {
        seq: u64,
        width: u32,
        height: u32,
        max: u32,
    },
    #[error(
        "frame {seq}: bytes_per_row {bytes_per_row} is less than width {width} x {} bytes \
         per {format} pixel",
        format.bytes_per_pixel()
    )]
    BadRowPitch {
        seq: u64,
        width: u32,
        format: PixelFormat,
        bytes_per_row: u32,
    },
    #[error("frame {seq}: total_len {total_len} is not bytes_per_row x height = {expected}")]
    BadTotalLen {
        seq: u64,
        total_len: u64,
        expected: u64,
    },
    #[error("frame {seq}: {total_len} bytes exceeds the frame limit of {limit} bytes")]
    FrameTooLarge {
        seq: u64,
        total_len: u64,
        limit: u64,
    },
    #[error("coded frame {seq}: {coded_len} coded bytes, outside 2..={max} for its size")]
    BadCodedLen { seq: u64, coded_len: u64, max: u64 },
    #[error("coded frame {seq}: {reason}")]
    BadCoding {
        seq: u64,
        reason: super::tiles::TileError,
    },
    #[error("coded frame {seq} is a delta against frame {base_seq}, but the last whole frame of this connection is {held:?}")]
    BaseMismatch {
        seq: u64,
        base_seq: u64,
        held: Option<u64>,
    },
    #[error("chunk for frame {seq}, which was never started (current frame: {current:?})")]
    ChunkWithoutFrame { seq: u64, current: Option<u64> },
    #[error("frame {seq}: chunk at offset {offset} but {expected} bytes were received so far (chunks must be contiguous and in order)")]
    ChunkOutOfOrder {
        seq: u64,
        offset: u64,
        expected: u64,
    },
    #[error("frame {seq}: chunk of {len} bytes at offset {offset} runs past the frame's end ({total_len} bytes)")]
    ChunkPastEnd {
        seq: u64,
        offset: u64,
        len: u64,
        total_len: u64,
    },
    #[error("frame {seq}: checksum mismatch (announced {expected:016x}, payload hashes to {actual:016x})")]
    ChecksumMismatch {
        seq: u64,
        expected: u64,
        actual: u64,
    },
    #[error(
        "frame memory budget: partial frames from all peers hold {} MiB, at most {} MiB \
         (--frame-memory-mib)",
        .held >> 20,
        .limit >> 20
    )]
    FrameMemory { held: u64, limit: u64 },
    #[error(
        "frame memory budget: this connection's partial frame, the largest, was dropped to \
         make room for a smaller one (--frame-memory-mib)"
    )]
    FrameEvicted,
    #[error(
        "file data past the flow-control window: {queued} bytes not yet stored, at most \
         {window} may be on the way"
    )]
    PastFileWindow { queued: u64, window: u64 },
    #[error("unexpected {kind} message {when}")]
    Unexpected {
        kind: &'static str,
        when: &'static str,
    },
}

/// A TLS record (handshake or alert, version 3.x) where a preamble was expected.
fn tls_hint(found: &[u8; 6]) -> &'static str {
    if matches!(found[0], 0x15 | 0x16) && found[1] == 0x03 {
        "; the peer speaks TLS: use --tls on this side too"
    } else {
        ""
    }
}
