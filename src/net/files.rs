//! Files over a live link: the receiving side (clean names, temporary files renamed only
//! after the checksum matched, never overwriting), the sending side (a thread that
//! streams a file through a fixed-size buffer, with back-pressure from the link), and
//! the shelf where both keep a transfer cut by a dropped connection until the same peer
//! is back and it resumes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::Checksum;
use unicode_general_category::{get_general_category, GeneralCategory};

use super::link::lock;
use super::status::PeerId;
use super::transfers::{Direction, Transfer, TransferState, Transfers};
use crate::protocol::{
    FileAccept, FileCancel, FileEnd, FileOffer, FileProgress, FileResult, Message, ProtocolError,
};

/// Size of the chunks a file is sent in.
pub const FILE_CHUNK_BYTES: usize = 256 << 10;
/// Transfers one peer may have coming in at once by default; further offers are
/// refused (`NodeConfig::max_files_per_peer`).
pub const MAX_INCOMING_PER_PEER: usize = 16;
/// Longest cleaned file name, in bytes.
const MAX_CLEAN_NAME_BYTES: usize = 200;
/// How long an interrupted transfer waits for its peer to come back.
pub const RESUME_WINDOW: Duration = Duration::from_secs(600);

/// Makes a peer's file name safe to create inside the receive folder: the last path
/// component only, no control or format characters, no `..`, no reserved device names, at most
/// 200 bytes (keeping the extension). Returns the reason when nothing usable is left.
pub fn clean_file_name(offered: &str) -> Result<String, String> {
    let last = offered.rsplit(['/', '\\']).next().unwrap_or("");
    // Format characters (Cf: a right-to-left override that makes `…exe` read as
    // `…txt`, a byte-order mark, zero-width joiners) are dropped; other unprintable
    // characters become `_`.
    let mut name: String = last
        .chars()
        .filter(|&c| get_general_category(c) != GeneralCategory::Format)
        .map(|c| {
            if c == ':' || crate::protocol::is_unsafe_char(c) {
                '_'
            } else {
                c
            }
        })
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
    wire_id: u64,
    name: String,
    tmp_path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    received: u64,
    /// The stored bytes last reported to the file's sender.
    reported: u64,
    hasher: Checksum,
    transfer: Arc<Transfer>,
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

/// An incoming transfer whose connection dropped, until the same peer offers it again:
/// the partial file closed (it holds no descriptor and no buffer), its length and
/// running checksum kept.
struct ParkedIncoming {
    peer_instance: u64,
    since: Instant,
    wire_id: u64,
    name: String,
    tmp_path: PathBuf,
    size: u64,
    received: u64,
    hasher: Checksum,
    transfer: Arc<Transfer>,
}

impl ParkedIncoming {
    /// Opens the partial file again to go on writing it, after checking it is still
    /// what was written; `Err` (the file is deleted) if it is not.
    fn reopen(self) -> Result<Incoming, String> {
        let opened = File::options()
            .append(true)
            .open(&self.tmp_path)
            .and_then(|f| Ok((f.metadata()?.len(), f)));
        let file = match opened {
            Ok((len, f)) if len == self.received => f,
            Ok((len, _)) => {
                let reason = format!(
                    "{} changed while the transfer waited ({len} bytes, {} expected)",
                    self.tmp_path.display(),
                    self.received
                );
                self.discard(&reason);
                return Err(reason);
            }
            Err(e) => {
                let reason = format!("cannot open {} again: {e}", self.tmp_path.display());
                self.discard(&reason);
                return Err(reason);
            }
        };
        Ok(Incoming {
            wire_id: self.wire_id,
            name: self.name,
            tmp_path: self.tmp_path,
            file: BufWriter::with_capacity(FILE_CHUNK_BYTES, file),
            size: self.size,
            received: self.received,
            reported: self.received,
            hasher: self.hasher,
            transfer: self.transfer,
        })
    }

    /// Fails the transfer and deletes its partial file.
    fn discard(self, reason: &str) {
        let _ = std::fs::remove_file(&self.tmp_path);
        self.transfer.finish_failed(reason);
    }
}

/// A node's limits on files, across all its connections: the files coming in at once
/// (each holds a descriptor and a buffer), the transfers waiting to resume in each
/// direction, and the bytes the partial files of the incoming ones may hold on disk.
/// Past a parking limit, the transfer that has waited longest is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShelfLimits {
    pub receiving: usize,
    pub parked: usize,
    pub parked_bytes: u64,
}

impl Default for ShelfLimits {
    fn default() -> ShelfLimits {
        ShelfLimits {
            receiving: 64,
            parked: 64,
            parked_bytes: 16 << 30,
        }
    }
}

/// An outgoing transfer whose connection dropped, to offer again to the same peer.
struct ParkedOutgoing {
    peer_instance: u64,
    since: Instant,
    wire_id: u64,
    file: OutgoingFile,
}

/// A node's file state beyond any one link: the transfer registry and the transfers
/// waiting to resume.
pub(crate) struct FileShelf {
    pub transfers: Transfers,
    limits: ShelfLimits,
    incoming: Mutex<Vec<ParkedIncoming>>,
    outgoing: Mutex<Vec<ParkedOutgoing>>,
    /// Incoming transfers on live links, by (peer instance, wire id): an offer that
    /// resumes one of these waits for its old link to let go of it.
    receiving: Mutex<std::collections::HashSet<(u64, u64)>>,
    /// Incoming transfers open on all links (or being opened).
    open_incoming: AtomicUsize,
    next_tmp: AtomicU64,
}

impl FileShelf {
    pub fn new(limits: ShelfLimits) -> FileShelf {
        FileShelf {
            transfers: Transfers::default(),
            limits,
            incoming: Mutex::new(Vec::new()),
            outgoing: Mutex::new(Vec::new()),
            receiving: Mutex::new(std::collections::HashSet::new()),
            open_incoming: AtomicUsize::new(0),
            next_tmp: AtomicU64::new(1),
        }
    }

    /// A place for one more incoming transfer, if the node has one.
    fn reserve_incoming(&self) -> bool {
        self.open_incoming
            .fetch_update(Relaxed, Relaxed, |n| {
                (n < self.limits.receiving).then_some(n + 1)
            })
            .is_ok()
    }

    fn release_incoming(&self, n: usize) {
        self.open_incoming.fetch_sub(n, Relaxed);
    }

    /// The reason a parked transfer gives up its place to a newer one.
    fn crowded_out(&self) -> String {
        format!(
            "given up for newer ones: at most {} transfers ({} MiB of partial files) \
             wait to resume",
            self.limits.parked,
            self.limits.parked_bytes >> 20
        )
    }

    /// Keeps an outgoing transfer cut by a dropped connection, for the same peer.
    pub fn park_outgoing(&self, peer_instance: u64, wire_id: u64, file: OutgoingFile) {
        if peer_instance == 0 {
            // A peer without an identity cannot be recognised when it comes back.
            file.transfer
                .finish_failed("the connection dropped (the peer cannot resume)");
            return;
        }
        file.transfer
            .set_paused("the connection dropped; resumes when the peer is back");
        let mut parked = lock(&self.outgoing);
        parked.push(ParkedOutgoing {
            peer_instance,
            since: Instant::now(),
            wire_id,
            file,
        });
        // Oldest first out.
        let over = parked.len().saturating_sub(self.limits.parked);
        let gone: Vec<_> = parked.drain(..over).collect();
        drop(parked);
        if !gone.is_empty() {
            let reason = self.crowded_out();
            for p in gone {
                p.file.transfer.finish_failed(&reason);
            }
        }
    }

    /// The outgoing transfers parked for a peer that is back, to offer again.
    pub fn unpark_outgoing(&self, peer_instance: u64) -> Vec<(u64, OutgoingFile)> {
        self.expire(Instant::now());
        if peer_instance == 0 {
            return Vec::new();
        }
        let mut parked = lock(&self.outgoing);
        let (back, keep): (Vec<_>, Vec<_>) = parked
            .drain(..)
            .partition(|p| p.peer_instance == peer_instance);
        *parked = keep;
        back.into_iter().map(|p| (p.wire_id, p.file)).collect()
    }

    fn park_incoming(&self, peer_instance: u64, incoming: Incoming) {
        let key = (peer_instance, incoming.wire_id);
        let Incoming {
            wire_id,
            name,
            tmp_path,
            file,
            size,
            received,
            hasher,
            transfer,
            ..
        } = incoming;
        // Closed while it waits: no descriptor, no buffer.
        let flushed = file.into_inner().map(drop).map_err(|e| e.into_error());
        let parked = ParkedIncoming {
            peer_instance,
            since: Instant::now(),
            wire_id,
            name,
            tmp_path,
            size,
            received,
            hasher,
            transfer,
        };
        match flushed {
            Ok(()) if peer_instance != 0 => {
                parked
                    .transfer
                    .set_paused("the connection dropped; resumes when the peer is back");
                let mut all = lock(&self.incoming);
                all.push(parked);
                // Oldest first out, past the count or the bytes on disk.
                let mut bytes: u64 = all.iter().map(|p| p.received).sum();
                let mut over = 0;
                while all.len() - over > self.limits.parked
                    || (bytes > self.limits.parked_bytes && all.len() - over > 1)
                {
                    bytes -= all[over].received;
                    over += 1;
                }
                let gone: Vec<_> = all.drain(..over).collect();
                drop(all);
                lock(&self.receiving).remove(&key);
                if !gone.is_empty() {
                    let reason = self.crowded_out();
                    for p in gone {
                        p.discard(&reason);
                    }
                }
                return;
            }
            Ok(()) => parked.discard("the connection dropped (the peer cannot resume)"),
            Err(e) => {
                let reason = format!("cannot write {}: {e}", parked.tmp_path.display());
                parked.discard(&reason);
            }
        }
        lock(&self.receiving).remove(&key);
    }

    /// A parked incoming transfer matching a new offer (same peer, id, size and name).
    /// When the old connection that received it has not noticed yet that it dropped
    /// (the peer redialed first), waits up to 2 s for it to let go.
    fn unpark_incoming(&self, peer_instance: u64, offer: &FileOffer) -> Option<Incoming> {
        self.expire(Instant::now());
        if peer_instance == 0 {
            return None;
        }
        let key = (peer_instance, offer.id);
        let deadline = Instant::now() + Duration::from_secs(2);
        while lock(&self.receiving).contains(&key) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut parked = lock(&self.incoming);
        let i = parked.iter().position(|p| {
            p.peer_instance == peer_instance
                && p.wire_id == offer.id
                && p.size == offer.size
                && p.transfer.name == offer.name
        })?;
        // `remove`, not `swap_remove`: the list stays oldest first.
        let found = parked.remove(i);
        drop(parked);
        found.reopen().ok()
    }

    /// Gives up transfers that waited longer than [`RESUME_WINDOW`], and those the
    /// application cancelled while they waited.
    pub fn expire(&self, now: Instant) {
        let too_old = |since: Instant| now.duration_since(since) > RESUME_WINDOW;
        let gone: Vec<_> = {
            let mut parked = lock(&self.incoming);
            let (gone, keep) = parked
                .drain(..)
                .partition(|p| too_old(p.since) || p.transfer.cancelled());
            *parked = keep;
            gone
        };
        for p in gone {
            let reason = if p.transfer.cancelled() {
                "cancelled"
            } else {
                "the peer did not come back within 10 minutes"
            };
            p.discard(reason);
        }
        let mut parked = lock(&self.outgoing);
        parked.retain(|p| {
            let cancelled = p.file.transfer.cancelled();
            if cancelled || too_old(p.since) {
                p.file.transfer.finish_failed(if cancelled {
                    "cancelled"
                } else {
                    "the peer did not come back within 10 minutes"
                });
                false
            } else {
                true
            }
        });
    }

    /// The node is ending: parked transfers fail and their partial files go.
    pub fn discard_all(&self) {
        for p in std::mem::take(&mut *lock(&self.incoming)) {
            p.discard("texstream stopped before the transfer could resume");
        }
        for p in std::mem::take(&mut *lock(&self.outgoing)) {
            p.file
                .transfer
                .finish_failed("texstream stopped before the transfer could resume");
        }
    }
}

/// Fails an incoming transfer and deletes its partial file.
fn discard(incoming: Incoming, reason: &str) {
    let Incoming {
        tmp_path,
        file,
        transfer,
        ..
    } = incoming;
    drop(file);
    let _ = std::fs::remove_file(&tmp_path);
    transfer.finish_failed(reason);
}

/// Who is on the other end of a link, as the file code needs to know.
pub(crate) struct PeerRef {
    pub id: PeerId,
    pub name: String,
    pub instance: u64,
}

/// One link's incoming transfers.
pub(crate) struct IncomingFiles {
    dir: Option<PathBuf>,
    max_active: usize,
    shelf: Arc<FileShelf>,
    peer: PeerRef,
    active: HashMap<u64, Incoming>,
}

impl IncomingFiles {
    pub fn new(
        dir: Option<PathBuf>,
        max_active: usize,
        shelf: Arc<FileShelf>,
        peer: PeerRef,
    ) -> IncomingFiles {
        IncomingFiles {
            dir,
            max_active,
            shelf,
            peer,
            active: HashMap::new(),
        }
    }

    /// Answers an offer with an accept (from the bytes already held, when the offer
    /// resumes a transfer this peer started before its connection dropped), or a failed
    /// result saying why not. (Cancels flow only from a file's sender, results only from
    /// its receiver, so a transfer id is never ambiguous.)
    pub fn on_offer(&mut self, offer: &FileOffer) -> Message {
        match self.try_accept(offer) {
            Ok(offset) => Message::FileAccept(FileAccept {
                id: offer.id,
                offset,
            }),
            Err(message) => Message::FileResult(FileResult {
                id: offer.id,
                ok: false,
                message,
            }),
        }
    }

    fn try_accept(&mut self, offer: &FileOffer) -> Result<u64, String> {
        let Some(dir) = self.dir.clone() else {
            return Err("this peer does not take files".to_owned());
        };
        if self.active.len() >= self.max_active {
            return Err(format!(
                "too many transfers at once (at most {})",
                self.max_active
            ));
        }
        if self.active.contains_key(&offer.id) {
            return Err(format!("transfer id {} is already in use", offer.id));
        }
        if !self.shelf.reserve_incoming() {
            return Err(format!(
                "too many files are coming in to this node at once (at most {})",
                self.shelf.limits.receiving
            ));
        }
        let opened = self.open_transfer(offer, &dir);
        if opened.is_err() {
            self.shelf.release_incoming(1);
        }
        opened
    }

    /// Resumes the parked transfer `offer` continues, or creates its partial file; the
    /// node's place for it is reserved.
    fn open_transfer(&mut self, offer: &FileOffer, dir: &Path) -> Result<u64, String> {
        if let Some(incoming) = self.shelf.unpark_incoming(self.peer.instance, offer) {
            let offset = incoming.received;
            incoming.transfer.set_waiting(self.peer.id, &self.peer.name);
            incoming.transfer.set_running(offset);
            tracing::info!(
                "resuming {} at byte {offset} of {}",
                incoming.name,
                incoming.size
            );
            self.active.insert(offer.id, incoming);
            self.receiving(offer.id, true);
            return Ok(offset);
        }
        let name = clean_file_name(&offer.name)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create receive folder {}: {e}", dir.display()))?;
        let tmp_path = dir.join(format!(
            ".texstream-{}-{}.part",
            std::process::id(),
            self.shelf.next_tmp.fetch_add(1, Relaxed)
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| format!("cannot create {}: {e}", tmp_path.display()))?;
        let transfer = self.shelf.transfers.add(
            Direction::Incoming,
            &offer.name,
            offer.size,
            self.peer.id,
            &self.peer.name,
            None,
            TransferState::Running,
        );
        transfer.set_running(0);
        self.active.insert(
            offer.id,
            Incoming {
                wire_id: offer.id,
                name,
                tmp_path,
                file: BufWriter::with_capacity(FILE_CHUNK_BYTES, file),
                size: offer.size,
                received: 0,
                reported: 0,
                hasher: Checksum::new(),
                transfer,
            },
        );
        self.receiving(offer.id, true);
        Ok(0)
    }

    /// Tracks which of this peer's transfers a live link holds (see `unpark_incoming`).
    fn receiving(&self, wire_id: u64, live: bool) {
        let key = (self.peer.instance, wire_id);
        let mut set = lock(&self.shelf.receiving);
        if live {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Writes a piece of file chunk data to its transfer's file. Data of unknown (for
    /// example just failed) transfers is dropped. A disk error fails the transfer and
    /// returns the failed result to send; data that breaks the order (or runs past the
    /// offered size) is a protocol error.
    pub fn on_data(
        &mut self,
        id: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Option<(Message, FileOutcome)>, ProtocolError> {
        let Some(t) = self.active.get_mut(&id) else {
            return Ok(None);
        };
        if offset != t.received || offset + data.len() as u64 > t.size {
            return Err(ProtocolError::InvalidValue {
                kind: "file-chunk",
                field: "offset",
                value: offset,
            });
        }
        if let Err(e) = t.file.write_all(data) {
            let reason = format!("cannot write {}: {e}", t.tmp_path.display());
            return Ok(Some(self.fail(id, reason)));
        }
        t.hasher.update(data);
        t.received += data.len() as u64;
        t.transfer.add_done(data.len() as u64);
        Ok(None)
    }

    /// A report of the bytes of transfer `id` stored so far, if it has gained at least
    /// `step` since the last one (flow control: the sender may send that much more).
    pub fn progress(&mut self, id: u64, step: u64) -> Option<Message> {
        let t = self.active.get_mut(&id)?;
        if t.received < t.reported + step.max(1) {
            return None;
        }
        t.reported = t.received;
        Some(Message::FileProgress(FileProgress {
            id,
            written: t.received,
        }))
    }

    /// Transfers the application cancelled: each fails, and its result goes to the
    /// file's sender so that it stops.
    pub fn take_cancelled(&mut self) -> Vec<(Message, FileOutcome)> {
        let ids: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, t)| t.transfer.cancelled())
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .map(|id| self.fail(id, "cancelled by the receiver".to_owned()))
            .collect()
    }

    /// The sender says the file is complete: verify, place it, answer with a result.
    pub fn on_end(&mut self, end: &FileEnd) -> Option<(Message, FileOutcome)> {
        let t = self.take_active(end.id)?;
        let Incoming {
            name,
            tmp_path,
            file,
            size,
            received,
            hasher,
            transfer,
            ..
        } = t;
        let fail = |reason: String| {
            let _ = std::fs::remove_file(&tmp_path);
            transfer.finish_failed(&reason);
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
            Ok(path) => {
                let (reply, outcome) = result(end.id, Ok((name, path.clone(), size)));
                if let Message::FileResult(r) = &reply {
                    transfer.finish_ok(&r.message, Some(path));
                }
                Some((reply, outcome))
            }
            Err(e) => fail(format!("cannot store {name} in {}: {e}", dir.display())),
        }
    }

    /// The sender gave up on a transfer.
    pub fn on_cancel(&mut self, cancel: &FileCancel) -> Option<FileOutcome> {
        let t = self.take_active(cancel.id)?;
        let name = t.name.clone();
        let reason = format!("cancelled by the sender: {}", cancel.reason);
        discard(t, &reason);
        Some(FileOutcome::Failed { name, reason })
    }

    /// Transfer `id` leaves this link's active ones (finished, failed or cancelled).
    fn take_active(&mut self, id: u64) -> Option<Incoming> {
        self.receiving(id, false);
        let t = self.active.remove(&id)?;
        self.shelf.release_incoming(1);
        Some(t)
    }

    fn fail(&mut self, id: u64, reason: String) -> (Message, FileOutcome) {
        let name = match self.take_active(id) {
            Some(t) => {
                let name = t.name.clone();
                discard(t, &reason);
                name
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
        // The link is gone: unfinished transfers wait on the shelf for the peer to come
        // back (or leave nothing behind when it cannot).
        self.shelf.release_incoming(self.active.len());
        for (_, t) in self.active.drain() {
            self.shelf.park_incoming(self.peer.instance, t);
        }
    }
}

/// A file this node offered to one peer.
#[derive(Clone)]
pub(crate) struct OutgoingFile {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
    pub transfer: Arc<Transfer>,
}

/// Why streaming a file stopped early.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The receiver answered already, the application cancelled it, or the link
    /// closed (the transfer is parked to resume).
    Stopped,
    /// Reading the file failed, or it changed: the reason.
    Failed(String),
}

/// Reads an outgoing file in chunks from an offset, keeping the checksum of the whole
/// file (the bytes before the offset are read and hashed once, at the start).
pub(crate) struct FileReader<'a> {
    file: &'a OutgoingFile,
    f: File,
    pos: u64,
    hasher: Checksum,
}

impl<'a> FileReader<'a> {
    pub fn open(file: &'a OutgoingFile, from: u64) -> Result<FileReader<'a>, StreamError> {
        let mut f = File::open(&file.path).map_err(|e| {
            StreamError::Failed(format!("cannot open {}: {e}", file.path.display()))
        })?;
        let mut hasher = Checksum::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut pos = 0u64;
        while pos < from {
            let want = (from - pos).min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..want])
                .map_err(|e| read_failed(file, e))?;
            hasher.update(&buf[..want]);
            pos += want as u64;
        }
        f.seek(SeekFrom::Start(from))
            .map_err(|e| read_failed(file, e))?;
        Ok(FileReader {
            file,
            f,
            pos,
            hasher,
        })
    }

    /// Fills `buf` with the next bytes; their offset and length, or `None` at the end.
    pub fn next_chunk(&mut self, buf: &mut [u8]) -> Result<Option<(u64, usize)>, StreamError> {
        let n = read_up_to(&mut self.f, buf).map_err(|e| read_failed(self.file, e))?;
        if n == 0 {
            return Ok(None);
        }
        if self.pos + n as u64 > self.file.size {
            return Err(StreamError::Failed(format!(
                "{} grew while being sent",
                self.file.path.display()
            )));
        }
        self.hasher.update(&buf[..n]);
        let offset = self.pos;
        self.pos += n as u64;
        Ok(Some((offset, n)))
    }

    /// The whole file's checksum, once every byte was read.
    pub fn finish(self) -> Result<u64, StreamError> {
        if self.pos != self.file.size {
            return Err(StreamError::Failed(format!(
                "{} shrank while being sent ({} of {} bytes)",
                self.file.path.display(),
                self.pos,
                self.file.size
            )));
        }
        Ok(self.hasher.digest())
    }
}

fn read_failed(file: &OutgoingFile, e: std::io::Error) -> StreamError {
    StreamError::Failed(format!("cannot read {}: {e}", file.path.display()))
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
        // Format characters go: the name reads as it is stored.
        assert_eq!(ok("rtl-\u{202e}txt.exe"), "rtl-txt.exe");
        assert_eq!(ok("\u{feff}bom.txt"), "bom.txt");
        assert_eq!(ok("zero\u{200b}width\u{2060}.png"), "zerowidth.png");
        assert_eq!(ok("c1\u{9b}31m.txt"), "c1_31m.txt");
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
