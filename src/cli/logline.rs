//! The log's last line of defence against forged lines: every record the log writes is
//! one line. Peer-chosen strings are escaped where they are logged
//! ([`crate::protocol::Escaped`]); should one ever be missed, [`OneLine`] still writes
//! a newline or carriage return inside a record, and any other control character but
//! the tab and the ESC of the log's own colours, as an escape.

use std::io::{self, Write};

/// A writer for whole log records (`tracing_subscriber` writes each record with one
/// `write_all`): keeps each record on one line.
pub struct OneLine<W>(pub W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        let unsafe_byte = |b: &u8| b.is_ascii_control() && !matches!(b, b'\t' | 0x1b);
        if !body.iter().any(unsafe_byte) {
            // Nearly always: the record goes out as it is.
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            if unsafe_byte(&b) {
                out.extend(std::ascii::escape_default(b));
            } else {
                out.push(b);
            }
        }
        if body.len() < buf.len() {
            out.push(b'\n');
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Standard error, one line per record: for `tracing_subscriber::fmt().with_writer`.
pub fn stderr() -> OneLine<io::Stderr> {
    OneLine(io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_one_line_whatever_it_carries() {
        let mut w = OneLine(Vec::new());
        w.write_all(b"INFO ok \x1b[1mbold\x1b[0m\ttab\n")
            .expect("writes to a Vec");
        w.write_all(b"WARN name=a\nINFO forged\r\x08line\n")
            .expect("writes to a Vec");
        let text = String::from_utf8(w.0).expect("UTF-8");
        assert_eq!(
            text,
            "INFO ok \x1b[1mbold\x1b[0m\ttab\nWARN name=a\\nINFO forged\\r\\x08line\n"
        );
        assert_eq!(text.lines().count(), 2);
    }
}
