//! Files over a live link: the receiving side (clean names, temporary files renamed only
//! after the checksum matched, never overwriting) and the sending side (a thread that
//! streams a file through a fixed-size buffer, with back-pressure from the link).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use super::link::Outgoing;
use super::NetError;
use crate::frame::FramePool;
use crate::protocol::{
    FileAccept, FileCancel, FileEnd, FileOffer, FileResult, Message, ProtocolError,
};

/// Size of the chunks a file is sent in.
pub const FILE_CHUNK_BYTES: usize = 256 << 10;
/// Transfers one peer may have coming in at once; further offers are refused.
pub const MAX_INCOMING_PER_PEER: usize = 16;
/// Longest cleaned file name, in bytes.
const MAX_CLEAN_NAME_BYTES: usize = 200;

/// Makes a peer's file name safe to create inside the receive folder: the last path
/// component only, no control characters, no `..`, no reserved device names, at most
/// 200 bytes (keeping the extension). Returns the reason when nothing usable is left.
pub fn clean_file_name(offered: &str) -> Result<String, String> {
    let last = offered.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String = last
        .chars()
        .map(|c| if c.is_control() || c == ':' { '_' } else { c })
        .collect();
    name = name.trim().trim_start_matches('.').to_owned();
    if name.is_empty() {
        return Err(format!("file name {offered:?} has no usable part"));
    }
    let stem_upper = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = ["CON", "PRN", "AUX", "NUL"].contains(&stem_upper.as_str())
        || ((stem_upper.starts_with("COM") || stem_upper.starts_with("LPT"))
            && stem_upper.len() == 4
            && stem_upper.as_bytes()[3].is_ascii_digit());
    if reserved {
        name.insert(0, '_');
    }
    if name.len() > MAX_CLEAN_NAME_BYTES {
        let (stem, ext) = split_ext(&name);
        let ext = if ext.len() < 20 { ext } else { "" };
        let keep = MAX_CLEAN_NAME_BYTES - ext.len();
        let stem = crate::protocol::truncate_utf8(stem, keep);
        name = format!("{stem}{ext}");
    }
    Ok(name)
}

/// `("photo", ".png")` for `photo.png`; no extension for dot-less names.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// Moves `tmp` to `dir/name`, or `dir/name (1).ext`, `(2)`, … if taken: never
/// overwrites, even when another process creates the same name at the same moment
/// (a hard link fails if the target exists).
fn place_without_overwrite(tmp: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (stem, ext) = split_ext(name);
    for n in 0..10_000u32 {
        let candidate = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{stem} ({n}){ext}"))
        };
        match std::fs::hard_link(tmp, &candidate) {
            Ok(()) => {
                std::fs::remove_file(tmp)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "10000 files of that name exist already",
    ))
}

struct Incoming {
    name: String,
    tmp_path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    received: u64,
    hasher: Xxh3,
}

/// What a finished or failed incoming transfer means for the application.
pub(crate) enum FileOutcome {
    Received {
        name: String,
        path: PathBuf,
        size: u64,
    },
    Failed {
        name: String,
        reason: String,
    },
}

/// One link's incoming transfers.
pub(crate) struct IncomingFiles {
    dir: Option<PathBuf>,
    active: HashMap<u64, Incoming>,
}

impl IncomingFiles {
    pub fn new(dir: Option<PathBuf>) -> IncomingFiles {
        IncomingFiles {
            dir,
            active: HashMap::new(),
        }
    }

    /// Answers an offer with an accept, or a failed result saying why not. (Cancels
    /// flow only from a file's sender, results only from its receiver, so a transfer id
    /// is never ambiguous.)
    pub fn on_offer(&mut self, offer: &FileOffer) -> Message {
        match self.try_accept(offer) {
            Ok(()) => Message::FileAccept(FileAccept {
                id: offer.id,
                offset: 0,
            }),
            Err(message) => Message::FileResult(FileResult {
                id: offer.id,
                ok: false,
                message,
            }),
        }
    }

    fn try_accept(&mut self, offer: &FileOffer) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Err("this peer does not take files".to_owned());
        };
        if self.active.len() >= MAX_INCOMING_PER_PEER {
            return Err(format!(
                "too many transfers at once (at most {MAX_INCOMING_PER_PEER})"
            ));
        }
        if self.active.contains_key(&offer.id) {
            return Err(format!("transfer id {} is already in use", offer.id));
        }
        let name = clean_file_name(&offer.name)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create receive folder {}: {e}", dir.display()))?;
        let tmp_path = dir.join(format!(
            ".texstream-{}-{}.part",
            std::process::id(),
            offer.id
        ));
        let file = File::create(&tmp_path)
            .map_err(|e| format!("cannot create {}: {e}", tmp_path.display()))?;
        self.active.insert(
            offer.id,
            Incoming {
                name,
                tmp_path,
                file: BufWriter::with_capacity(FILE_CHUNK_BYTES, file),
                size: offer.size,
                received: 0,
                hasher: Xxh3::new(),
            },
        );
        Ok(())
    }

    /// Consumes a file chunk's `len` payload bytes from `src` (always, so the stream
    /// stays in step) and writes them to the transfer's file. Chunks of unknown (for
    /// example just failed) transfers are skipped. A disk error fails the transfer and
    /// returns the failed result to send; a chunk that breaks the order is a protocol error.
    pub fn on_chunk(
        &mut self,
        id: u64,
        offset: u64,
        len: usize,
        src: &mut impl Read,
        scratch: &mut Vec<u8>,
    ) -> Result<Option<(Message, FileOutcome)>, NetError> {
        scratch.resize(len, 0);
        src.read_exact(scratch)
            .map_err(|e| NetError::io("reading a file chunk", e))?;
        let Some(t) = self.active.get_mut(&id) else {
            return Ok(None);
        };
        if offset != t.received || offset + len as u64 > t.size {
            return Err(NetError::Protocol(ProtocolError::InvalidValue {
                kind: "file-chunk",
                field: "offset",
                value: offset,
            }));
        }
        if let Err(e) = t.file.write_all(scratch) {
            let reason = format!("cannot write {}: {e}", t.tmp_path.display());
            return Ok(Some(self.fail(id, reason)));
        }
        t.hasher.update(scratch);
        t.received += len as u64;
        Ok(None)
    }

    /// The sender says the file is complete: verify, place it, answer with a result.
    pub fn on_end(&mut self, end: &FileEnd) -> Option<(Message, FileOutcome)> {
        let t = self.active.remove(&end.id)?;
        let Incoming {
            name,
            tmp_path,
            file,
            size,
            received,
            hasher,
        } = t;
        let fail = |reason: String| {
            let _ = std::fs::remove_file(&tmp_path);
            Some(result(end.id, Err((name.clone(), reason))))
        };
        if received != size {
            return fail(format!("file ended after {received} of {size} bytes"));
        }
        let actual = hasher.digest();
        if actual != end.checksum {
            return fail(format!(
                "checksum mismatch (sender {:016x}, received {actual:016x})",
                end.checksum
            ));
        }
        if let Err(e) = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
        {
            return fail(format!("cannot write {}: {e}", tmp_path.display()));
        }
        let dir = self.dir.clone().unwrap_or_default();
        match place_without_overwrite(&tmp_path, &dir, &name) {
            Ok(path) => Some(result(end.id, Ok((name, path, size)))),
            Err(e) => fail(format!("cannot store {name} in {}: {e}", dir.display())),
        }
    }

    /// The sender gave up on a transfer.
    pub fn on_cancel(&mut self, cancel: &FileCancel) -> Option<FileOutcome> {
        let t = self.active.remove(&cancel.id)?;
        let _ = std::fs::remove_file(&t.tmp_path);
        Some(FileOutcome::Failed {
            name: t.name,
            reason: format!("cancelled by the sender: {}", cancel.reason),
        })
    }

    fn fail(&mut self, id: u64, reason: String) -> (Message, FileOutcome) {
        let name = match self.active.remove(&id) {
            Some(t) => {
                let _ = std::fs::remove_file(&t.tmp_path);
                t.name
            }
            None => String::new(),
        };
        result(id, Err((name, reason)))
    }
}

fn result(
    id: u64,
    outcome: Result<(String, PathBuf, u64), (String, String)>,
) -> (Message, FileOutcome) {
    match outcome {
        Ok((name, path, size)) => (
            Message::FileResult(FileResult {
                id,
                ok: true,
                message: format!(
                    "stored as {}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ),
            }),
            FileOutcome::Received { name, path, size },
        ),
        Err((name, reason)) => (
            Message::FileResult(FileResult {
                id,
                ok: false,
                message: reason.clone(),
            }),
            FileOutcome::Failed { name, reason },
        ),
    }
}

impl Drop for IncomingFiles {
    fn drop(&mut self) {
        // The link is gone: unfinished transfers leave nothing behind.
        for t in self.active.values() {
            let _ = std::fs::remove_file(&t.tmp_path);
        }
    }
}

/// A file this node offered to one peer.
#[derive(Clone)]
pub(crate) struct OutgoingFile {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
    pub cancel: Arc<AtomicBool>,
}

/// Streams `file` from `offset` to a peer's link through buffers of the pool, then sends
/// its checksum. Blocks on the link's bounded queue (back-pressure); ends early if the
/// link closes or the transfer is cancelled. Returns the reason on failure.
pub(crate) fn stream_file(
    id: u64,
    offset: u64,
    file: &OutgoingFile,
    out: &flume::Sender<Outgoing>,
    pool: &FramePool,
) -> Result<(), String> {
    let mut f =
        File::open(&file.path).map_err(|e| format!("cannot open {}: {e}", file.path.display()))?;
    let mut hasher = Xxh3::new();
    // The checksum covers the whole file, also when resuming from an offset.
    let mut pos = 0u64;
    let mut buf = pool.take(FILE_CHUNK_BYTES);
    while pos < offset {
        let want = (offset - pos).min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..want])
            .map_err(|e| format!("cannot read {}: {e}", file.path.display()))?;
        hasher.update(&buf[..want]);
        pos += want as u64;
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot read {}: {e}", file.path.display()))?;
    loop {
        if file.cancel.load(Relaxed) {
            return Err("cancelled".to_owned());
        }
        let mut buf = pool.take(FILE_CHUNK_BYTES);
        let n = read_up_to(&mut f, &mut buf)
            .map_err(|e| format!("cannot read {}: {e}", file.path.display()))?;
        if n == 0 {
            break;
        }
        if pos + n as u64 > file.size {
            return Err(format!("{} grew while being sent", file.path.display()));
        }
        hasher.update(&buf[..n]);
        out.send(Outgoing::FileChunk {
            id,
            offset: pos,
            data: buf,
            len: n,
        })
        .map_err(|_| "the connection closed".to_owned())?;
        pos += n as u64;
    }
    if pos != file.size {
        return Err(format!(
            "{} shrank while being sent ({pos} of {} bytes)",
            file.path.display(),
            file.size
        ));
    }
    out.send(Outgoing::Msg(Message::FileEnd(FileEnd {
        id,
        checksum: hasher.digest(),
    })))
    .map_err(|_| "the connection closed".to_owned())
}

/// Reads until `buf` is full or the file ends.
fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_cleaned_to_one_component_or_refused() {
        let ok = |s: &str| clean_file_name(s).expect("usable name");
        assert_eq!(ok("../../etc/x"), "x");
        assert_eq!(ok("/abs"), "abs");
        assert_eq!(ok("a/b"), "b");
        assert_eq!(ok("a\\b.txt"), "b.txt");
        assert_eq!(ok("CON"), "_CON");
        assert_eq!(ok("lpt1.txt"), "_lpt1.txt");
        assert_eq!(ok("line\nbreak.txt"), "line_break.txt");
        assert_eq!(ok(".hidden"), "hidden");
        assert!(clean_file_name("..").is_err());
        assert!(clean_file_name("a/..").is_err());
        assert!(clean_file_name("").is_err());
        let long = format!("{}.png", "é".repeat(5000));
        let cleaned = ok(&long);
        assert!(
            cleaned.len() <= 200 && cleaned.ends_with(".png"),
            "{cleaned}"
        );
    }

    #[test]
    fn placing_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.txt"), "old").expect("write");
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "new").expect("write");
        let placed = place_without_overwrite(&tmp, dir.path(), "a.txt").expect("placed");
        assert_eq!(placed, dir.path().join("a (1).txt"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.txt")).expect("read"),
            "old"
        );
        assert_eq!(std::fs::read_to_string(placed).expect("read"), "new");
        assert!(!tmp.exists());
    }
}
