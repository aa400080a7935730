//! Encoding and decoding of the preamble, the message envelope and every message body.

use super::error::ProtocolError;
use super::message::*;
use super::tiles::TileGrid;
use super::{
    Limits, MAGIC, MAX_AUTH_BYTES, MAX_FILE_NAME_BYTES, MAX_NAME_BYTES, MAX_REASON_BYTES, VERSION,
};
use crate::frame::PixelFormat;

/// Bytes of the preamble: magic (6) + version (u16 LE).
pub const PREAMBLE_LEN: usize = 8;
/// Bytes of a message envelope: kind (u8) + body length (u32 LE).
pub const ENVELOPE_LEN: usize = 5;
/// Bytes of the fixed head of a bulk body (frame or file chunk): id (u64) + offset (u64).
pub const BULK_HEAD_LEN: usize = 16;

const FRAME_START_LEN: usize = 45;
/// A coded frame start: the frame start, then coding (1), base seq (8), coded length (8).
const CODED_FRAME_START_LEN: usize = FRAME_START_LEN + 17;

/// The preamble this build sends.
pub fn encode_preamble() -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[..6].copy_from_slice(&MAGIC);
    out[6..].copy_from_slice(&VERSION.to_le_bytes());
    out
}

/// Checks a peer's preamble. `Ok(None)` until 8 bytes are there; bad magic is reported
/// as soon as the bytes present differ from it.
pub fn decode_preamble(input: &[u8]) -> Result<Option<()>, ProtocolError> {
    let seen = input.len().min(MAGIC.len());
    if input[..seen] != MAGIC[..seen] {
        let mut found = [0u8; 6];
        found[..seen].copy_from_slice(&input[..seen]);
        return Err(ProtocolError::BadMagic { found });
    }
    if input.len() < PREAMBLE_LEN {
        return Ok(None);
    }
    let theirs = u16::from_le_bytes([input[6], input[7]]);
    if theirs != VERSION {
        return Err(ProtocolError::VersionMismatch {
            ours: VERSION,
            theirs,
        });
    }
    Ok(Some(()))
}

/// The 5-byte header of every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub kind: Kind,
    pub body_len: u32,
}

impl Envelope {
    /// Parses and checks an envelope: an unknown kind or a body longer than the kind's
    /// limit is an error here, before the body is read or anything allocated.
    pub fn parse(bytes: &[u8; ENVELOPE_LEN], limits: &Limits) -> Result<Envelope, ProtocolError> {
        let kind = Kind::from_u8(bytes[0]).ok_or(ProtocolError::UnknownKind(bytes[0]))?;
        let body_len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let limit = max_body_len(kind, limits);
        if u64::from(body_len) > limit {
            return Err(ProtocolError::TooLong {
                kind: kind.name(),
                len: body_len.into(),
                limit,
            });
        }
        if kind.is_bulk() && (body_len as usize) < BULK_HEAD_LEN {
            return Err(ProtocolError::Truncated {
                kind: kind.name(),
                field: "offset",
            });
        }
        Ok(Envelope { kind, body_len })
    }

    pub fn encode(&self) -> [u8; ENVELOPE_LEN] {
        let mut out = [0u8; ENVELOPE_LEN];
        out[0] = self.kind as u8;
        out[1..].copy_from_slice(&self.body_len.to_le_bytes());
        out
    }

    /// Payload bytes after the fixed head of a bulk message.
    pub fn bulk_payload_len(&self) -> usize {
        self.body_len as usize - BULK_HEAD_LEN
    }
}

/// The largest body a message of `kind` may have under `limits`.
pub fn max_body_len(kind: Kind, limits: &Limits) -> u64 {
    let str8 = 1 + MAX_NAME_BYTES as u64;
    let reason = 2 + MAX_REASON_BYTES as u64;
    match kind {
        Kind::Hello => 1 + 4 + str8 + 2 + MAX_AUTH_BYTES as u64 + 8,
        Kind::Goodbye => 1 + reason,
        Kind::Auth => 32,
        Kind::Ping => 16,
        Kind::Pong => 24,
        Kind::FrameStart => FRAME_START_LEN as u64,
        Kind::CodedFrameStart => CODED_FRAME_START_LEN as u64,
        Kind::FrameChunk | Kind::FileChunk => {
            BULK_HEAD_LEN as u64 + u64::from(limits.max_chunk_bytes)
        }
        Kind::FrameAbort => 8,
        Kind::Text => 8 + str8 + u64::from(limits.max_text_bytes),
        Kind::FileOffer => 16 + 2 + MAX_FILE_NAME_BYTES as u64,
        Kind::FileAccept | Kind::FileEnd | Kind::FileProgress => 16,
        Kind::FileResult => 8 + 1 + reason,
        Kind::FileCancel => 8 + reason,
    }
}

/// The fixed head of a frame chunk (`id` is the frame's seq) or a file chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkHead {
    pub id: u64,
    pub offset: u64,
}

impl BulkHead {
    pub fn parse(bytes: &[u8; BULK_HEAD_LEN]) -> BulkHead {
        let (id, offset) = bytes.split_at(8);
        BulkHead {
            id: u64::from_le_bytes(id.try_into().unwrap_or_default()),
            offset: u64::from_le_bytes(offset.try_into().unwrap_or_default()),
        }
    }
}

/// Envelope and fixed head of a bulk message whose `payload_len` bytes the caller
/// writes right after, from wherever they are (no copy into a message buffer).
pub fn encode_bulk_head(
    kind: Kind,
    id: u64,
    offset: u64,
    payload_len: usize,
) -> [u8; ENVELOPE_LEN + BULK_HEAD_LEN] {
    debug_assert!(kind.is_bulk());
    let mut out = [0u8; ENVELOPE_LEN + BULK_HEAD_LEN];
    let body_len = (BULK_HEAD_LEN + payload_len) as u32;
    out[..ENVELOPE_LEN].copy_from_slice(&Envelope { kind, body_len }.encode());
    out[ENVELOPE_LEN..ENVELOPE_LEN + 8].copy_from_slice(&id.to_le_bytes());
    out[ENVELOPE_LEN + 8..].copy_from_slice(&offset.to_le_bytes());
    out
}

/// Appends the encoding of `msg` (envelope and body) to `out`.
pub fn encode(msg: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[msg.kind() as u8, 0, 0, 0, 0]);
    match msg {
        Message::Hello(h) => {
            out.push(h.role as u8);
            put_u32(out, h.capabilities.0);
            put_str8(out, &h.name);
            put_bytes16(out, &h.auth[..h.auth.len().min(MAX_AUTH_BYTES)]);
            put_u64(out, h.instance);
        }
        Message::Goodbye { code, reason } => {
            out.push(*code as u8);
            put_str16(out, reason, MAX_REASON_BYTES);
        }
        Message::Auth { proof } => out.extend_from_slice(proof),
        Message::Ping(p) => {
            put_u64(out, p.nonce);
            put_u64(out, p.sent_us);
        }
        Message::Pong(p) => {
            put_u64(out, p.nonce);
            put_u64(out, p.ping_sent_us);
            put_u64(out, p.sent_us);
        }
        Message::FrameStart(f) => put_frame_start(out, f),
        Message::CodedFrameStart(c) => {
            put_frame_start(out, &c.start);
            out.push(c.coding as u8);
            put_u64(out, c.base_seq);
            put_u64(out, c.coded_len);
        }
        Message::FrameChunk { seq, offset, data } => {
            put_u64(out, *seq);
            put_u64(out, *offset);
            out.extend_from_slice(data);
        }
        Message::FrameAbort { seq } => put_u64(out, *seq),
        Message::Text(t) => {
            put_u64(out, t.sent_us);
            put_str8(out, &t.from);
            out.extend_from_slice(truncate_utf8(&t.body, limits_text_max()).as_bytes());
        }
        Message::FileOffer(f) => {
            put_u64(out, f.id);
            put_u64(out, f.size);
            put_str16(out, &f.name, MAX_FILE_NAME_BYTES);
        }
        Message::FileAccept(a) => {
            put_u64(out, a.id);
            put_u64(out, a.offset);
        }
        Message::FileProgress(p) => {
            put_u64(out, p.id);
            put_u64(out, p.written);
        }
        Message::FileChunk { id, offset, data } => {
            put_u64(out, *id);
            put_u64(out, *offset);
            out.extend_from_slice(data);
        }
        Message::FileEnd(e) => {
            put_u64(out, e.id);
            put_u64(out, e.checksum);
        }
        Message::FileResult(r) => {
            put_u64(out, r.id);
            out.push(u8::from(r.ok));
            put_str16(out, &r.message, MAX_REASON_BYTES);
        }
        Message::FileCancel(c) => {
            put_u64(out, c.id);
            put_str16(out, &c.reason, MAX_REASON_BYTES);
        }
    }
    let body_len = (out.len() - start - ENVELOPE_LEN) as u32;
    out[start + 1..start + ENVELOPE_LEN].copy_from_slice(&body_len.to_le_bytes());
}

/// Decodes one message from the front of `input`: `Ok(Some((message, bytes_used)))`,
/// `Ok(None)` while the message is incomplete, `Err` on malformed bytes (checked as
/// early as possible: an oversized length fails before its body arrives).
pub fn decode(input: &[u8], limits: &Limits) -> Result<Option<(Message, usize)>, ProtocolError> {
    let Some(env_bytes) = input.first_chunk::<ENVELOPE_LEN>() else {
        return Ok(None);
    };
    let env = Envelope::parse(env_bytes, limits)?;
    let total = ENVELOPE_LEN + env.body_len as usize;
    if input.len() < total {
        return Ok(None);
    }
    let msg = decode_body(env.kind, &input[ENVELOPE_LEN..total], limits)?;
    Ok(Some((msg, total)))
}

/// Decodes a message body of a known kind. The body's length must already have been
/// checked by [`Envelope::parse`].
pub fn decode_body(kind: Kind, body: &[u8], limits: &Limits) -> Result<Message, ProtocolError> {
    let mut r = Reader {
        buf: body,
        kind: kind.name(),
    };
    let msg = match kind {
        Kind::Hello => {
            let role_code = r.u8("role")?;
            let role = Role::from_u8(role_code).ok_or(r.invalid("role", role_code.into()))?;
            let capabilities = Capabilities(r.u32("capabilities")?);
            let name = r.str8("name")?;
            let auth = r.bytes16("auth", MAX_AUTH_BYTES)?.to_vec();
            let instance = r.u64("instance")?;
            Message::Hello(Hello {
                role,
                capabilities,
                name,
                auth,
                instance,
            })
        }
        Kind::Goodbye => Message::Goodbye {
            code: GoodbyeCode::from_u8(r.u8("code")?),
            reason: r.str16("reason", MAX_REASON_BYTES)?,
        },
        Kind::Auth => Message::Auth {
            proof: r.array("proof")?,
        },
        Kind::Ping => Message::Ping(Ping {
            nonce: r.u64("nonce")?,
            sent_us: r.u64("sent_us")?,
        }),
        Kind::Pong => Message::Pong(Pong {
            nonce: r.u64("nonce")?,
            ping_sent_us: r.u64("ping_sent_us")?,
            sent_us: r.u64("sent_us")?,
        }),
        Kind::FrameStart => Message::FrameStart(frame_start(&mut r, limits)?),
        Kind::CodedFrameStart => {
            let start = frame_start(&mut r, limits)?;
            let code = r.u8("coding")?;
            let coding = FrameCoding::from_u8(code).ok_or(r.invalid("coding", code.into()))?;
            let coded = CodedFrameStart {
                start,
                coding,
                base_seq: r.u64("base_seq")?,
                coded_len: r.u64("coded_len")?,
            };
            check_coded_len(&coded)?;
            Message::CodedFrameStart(coded)
        }
        Kind::FrameChunk => Message::FrameChunk {
            seq: r.u64("seq")?,
            offset: r.u64("offset")?,
            data: r.rest().to_vec(),
        },
        Kind::FrameAbort => Message::FrameAbort { seq: r.u64("seq")? },
        Kind::Text => {
            let sent_us = r.u64("sent_us")?;
            let from = r.str8("from")?;
            let rest = r.rest();
            if rest.len() > limits.max_text_bytes as usize {
                return Err(ProtocolError::TooLong {
                    kind: "text",
                    len: rest.len() as u64,
                    limit: limits.max_text_bytes.into(),
                });
            }
            let body = r.utf8(rest, "body")?;
            Message::Text(Text {
                sent_us,
                from,
                body,
            })
        }
        Kind::FileOffer => Message::FileOffer(FileOffer {
            id: r.u64("id")?,
            size: r.u64("size")?,
            name: r.str16("name", MAX_FILE_NAME_BYTES)?,
        }),
        Kind::FileAccept => Message::FileAccept(FileAccept {
            id: r.u64("id")?,
            offset: r.u64("offset")?,
        }),
        Kind::FileProgress => Message::FileProgress(FileProgress {
            id: r.u64("id")?,
            written: r.u64("written")?,
        }),
        Kind::FileChunk => Message::FileChunk {
            id: r.u64("id")?,
            offset: r.u64("offset")?,
            data: r.rest().to_vec(),
        },
        Kind::FileEnd => Message::FileEnd(FileEnd {
            id: r.u64("id")?,
            checksum: r.u64("checksum")?,
        }),
        Kind::FileResult => {
            let id = r.u64("id")?;
            let ok_code = r.u8("ok")?;
            if ok_code > 1 {
                return Err(r.invalid("ok", ok_code.into()));
            }
            Message::FileResult(FileResult {
                id,
                ok: ok_code == 1,
                message: r.str16("message", MAX_REASON_BYTES)?,
            })
        }
        Kind::FileCancel => Message::FileCancel(FileCancel {
            id: r.u64("id")?,
            reason: r.str16("reason", MAX_REASON_BYTES)?,
        }),
    };
    r.finish()?;
    Ok(msg)
}

/// The fields of a frame start, checked against `limits`.
fn frame_start(r: &mut Reader<'_>, limits: &Limits) -> Result<FrameStart, ProtocolError> {
    let seq = r.u64("seq")?;
    let width = r.u32("width")?;
    let height = r.u32("height")?;
    let format_code = r.u8("format")?;
    let format =
        PixelFormat::from_u8(format_code).ok_or(r.invalid("format", format_code.into()))?;
    let start = FrameStart {
        seq,
        width,
        height,
        format,
        bytes_per_row: r.u32("bytes_per_row")?,
        capture_us: r.u64("capture_us")?,
        total_len: r.u64("total_len")?,
        checksum: r.u64("checksum")?,
    };
    check_frame_start(&start, limits)?;
    Ok(start)
}

/// A coded frame's length must fit its (already checked) geometry: at least the
/// coding's two head bytes, at most what the coding of that frame can ever take. This
/// is what makes it safe to take room for the coded bytes as they arrive.
fn check_coded_len(c: &CodedFrameStart) -> Result<(), ProtocolError> {
    let f = &c.start;
    let max = TileGrid::new(f.bytes_per_row, f.height, f.format.bytes_per_pixel())
        .map_or(0, |g| g.max_coded_len() as u64);
    if c.coded_len < 2 || c.coded_len > max {
        return Err(ProtocolError::BadCodedLen {
            seq: f.seq,
            coded_len: c.coded_len,
            max,
        });
    }
    Ok(())
}

/// Checks a frame start's geometry against `limits`: this is what makes it safe to
/// allocate `total_len` bytes for the frame.
fn check_frame_start(f: &FrameStart, limits: &Limits) -> Result<(), ProtocolError> {
    let max = limits.max_dimension;
    if f.width == 0 || f.height == 0 || f.width > max || f.height > max {
        return Err(ProtocolError::BadDimensions {
            seq: f.seq,
            width: f.width,
            height: f.height,
            max,
        });
    }
    if u64::from(f.bytes_per_row) < u64::from(f.width) * u64::from(f.format.bytes_per_pixel()) {
        return Err(ProtocolError::BadRowPitch {
            seq: f.seq,
            width: f.width,
            format: f.format,
            bytes_per_row: f.bytes_per_row,
        });
    }
    let expected = u64::from(f.bytes_per_row) * u64::from(f.height);
    if f.total_len != expected {
        return Err(ProtocolError::BadTotalLen {
            seq: f.seq,
            total_len: f.total_len,
            expected,
        });
    }
    if f.total_len > limits.max_frame_bytes {
        return Err(ProtocolError::FrameTooLarge {
            seq: f.seq,
            total_len: f.total_len,
            limit: limits.max_frame_bytes,
        });
    }
    Ok(())
}

fn put_frame_start(out: &mut Vec<u8>, f: &FrameStart) {
    put_u64(out, f.seq);
    put_u32(out, f.width);
    put_u32(out, f.height);
    out.push(f.format as u8);
    put_u32(out, f.bytes_per_row);
    put_u64(out, f.capture_us);
    put_u64(out, f.total_len);
    put_u64(out, f.checksum);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A string of at most 255 bytes, longer input is cut at a character boundary.
fn put_str8(out: &mut Vec<u8>, s: &str) {
    let s = truncate_utf8(s, MAX_NAME_BYTES);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// A str16 field, cut to `max` bytes on a character boundary so the peer accepts it.
fn put_str16(out: &mut Vec<u8>, s: &str, max: usize) {
    put_bytes16(out, truncate_utf8(s, max).as_bytes());
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

/// Text bodies are cut to the default limit when encoded; a receiver with a lower
/// limit refuses longer ones.
fn limits_text_max() -> usize {
    Limits::default().max_text_bytes as usize
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads fields from a message body, naming the field that is missing or bad.
struct Reader<'a> {
    buf: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Truncated {
                kind: self.kind,
                field,
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn bytes16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], ProtocolError> {
        let len = self.u16(field)? as usize;
        if len > max {
            return Err(ProtocolError::TooLong {
                kind: self.kind,
                len: len as u64,
                limit: max as u64,
            });
        }
        self.take(len, field)
    }

    fn str8(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        let len = self.u8(field)? as usize;
        let bytes = self.take(len, field)?;
        self.utf8(bytes, field)
    }

    fn str16(&mut self, field: &'static str, max: usize) -> Result<String, ProtocolError> {
        let bytes = self.bytes16(field, max)?;
        self.utf8(bytes, field)
    }

    fn utf8(&self, bytes: &[u8], field: &'static str) -> Result<String, ProtocolError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ProtocolError::InvalidUtf8 {
                kind: self.kind,
                field,
            })
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn invalid(&self, field: &'static str, value: u64) -> ProtocolError {
        ProtocolError::InvalidValue {
            kind: self.kind,
            field,
            value,
        }
    }

    fn finish(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                kind: self.kind,
                extra: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_long_strings_are_cut_so_the_peer_accepts_them() {
        let limits = Limits::default();
        let reason = "é".repeat(700); // 1400 bytes
        let mut out = Vec::new();
        encode(
            &Message::Goodbye {
                code: GoodbyeCode::Other,
                reason: reason.clone(),
            },
            &mut out,
        );
        let (msg, used) = decode(&out, &limits).expect("decodes").expect("complete");
        assert_eq!(used, out.len());
        let Message::Goodbye { reason: got, .. } = msg else {
            panic!("not a goodbye: {msg:?}");
        };
        assert!(got.len() <= MAX_REASON_BYTES && reason.starts_with(&got) && !got.is_empty());

        let mut out = Vec::new();
        let text = Text {
            sent_us: 1,
            from: "x".repeat(300),
            body: "y".repeat(70_000),
        };
        encode(&Message::Text(text), &mut out);
        let (msg, _) = decode(&out, &limits).expect("decodes").expect("complete");
        let Message::Text(t) = msg else {
            panic!("not a text");
        };
        assert_eq!((t.from.len(), t.body.len()), (MAX_NAME_BYTES, 64 << 10));
    }
}
