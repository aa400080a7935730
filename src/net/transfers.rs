//! File transfers as the application sees them: a registry per node of every transfer
//! in and out, with progress, speed, time left, state and a cancel switch. The link
//! threads update it; the windows and the command line read plain snapshots.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::link::lock;
use super::status::PeerId;

/// A transfer's handle on this node (not the id on the wire, which the file's sender
/// picks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A peer sends us a file.
    Incoming,
    /// We send a file to a peer.
    Outgoing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferState {
    /// Offered; the peer has not answered yet.
    Waiting,
    /// Bytes are flowing (outgoing: the last ones may still wait for the receiver's
    /// verdict).
    Running,
    /// The connection dropped; the transfer resumes where it stopped when the same
    /// peer is back (within [`super::files::RESUME_WINDOW`]).
    Paused {
        reason: String,
    },
    /// Stored by the receiver with a matching checksum.
    Done {
        message: String,
    },
    Failed {
        reason: String,
    },
}

impl TransferState {
    pub fn finished(&self) -> bool {
        matches!(
            self,
            TransferState::Done { .. } | TransferState::Failed { .. }
        )
    }
}

/// One transfer, as a snapshot.
#[derive(Clone, Debug)]
pub struct TransferStatus {
    pub id: TransferId,
    pub direction: Direction,
    /// The peer's slot (an accepted peer that reconnects gets a new one).
    pub peer: PeerId,
    pub peer_name: String,
    /// The name as offered (incoming: before cleaning).
    pub name: String,
    pub size: u64,
    /// Bytes received (incoming) or handed to the connection (outgoing).
    pub done_bytes: u64,
    /// Average since the transfer last started or resumed; 0 when not running.
    pub bytes_per_sec: f64,
    pub time_left: Option<Duration>,
    pub state: TransferState,
    /// Outgoing: the file being sent. Incoming: where it was stored, once done.
    pub path: Option<PathBuf>,
    /// How many times it resumed after a dropped connection.
    pub resumes: u32,
}

impl TransferStatus {
    /// Progress between 0 and 1 (a 0-byte file is complete once done).
    pub fn fraction(&self) -> f32 {
        if self.size == 0 {
            return if self.state.finished() { 1.0 } else { 0.0 };
        }
        (self.done_bytes as f64 / self.size as f64).clamp(0.0, 1.0) as f32
    }
}

struct Inner {
    peer: PeerId,
    peer_name: String,
    state: TransferState,
    path: Option<PathBuf>,
    /// When bytes last started flowing, and from which offset.
    run_start: Option<(Instant, u64)>,
    resumes: u32,
}

/// One transfer, shared between the registry and the threads that move its bytes.
pub(crate) struct Transfer {
    pub id: TransferId,
    pub direction: Direction,
    pub name: String,
    pub size: u64,
    done: AtomicU64,
    cancel: AtomicBool,
    inner: Mutex<Inner>,
}

impl Transfer {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Relaxed)
    }

    pub fn add_done(&self, bytes: u64) {
        self.done.fetch_add(bytes, Relaxed);
    }

    pub fn set_running(&self, offset: u64) {
        self.done.store(offset, Relaxed);
        let mut inner = lock(&self.inner);
        if matches!(inner.state, TransferState::Paused { .. }) {
            inner.resumes += 1;
        }
        inner.state = TransferState::Running;
        inner.run_start = Some((Instant::now(), offset));
    }

    pub fn set_waiting(&self, peer: PeerId, peer_name: &str) {
        let mut inner = lock(&self.inner);
        inner.peer = peer;
        peer_name.clone_into(&mut inner.peer_name);
        if !inner.state.finished() && !matches!(inner.state, TransferState::Paused { .. }) {
            inner.state = TransferState::Waiting;
        }
    }

    pub fn set_paused(&self, reason: &str) {
        let mut inner = lock(&self.inner);
        if !inner.state.finished() {
            inner.state = TransferState::Paused {
                reason: reason.to_owned(),
            };
            inner.run_start = None;
        }
    }

    /// Marks the transfer done; `path` is where an incoming file was stored.
    pub fn finish_ok(&self, message: &str, path: Option<PathBuf>) {
        self.done.store(self.size, Relaxed);
        let mut inner = lock(&self.inner);
        inner.state = TransferState::Done {
            message: message.to_owned(),
        };
        if path.is_some() {
            inner.path = path;
        }
        inner.run_start = None;
    }

    /// Marks the transfer failed, unless it has already finished; returns whether this
    /// call finished it.
    pub fn finish_failed(&self, reason: &str) -> bool {
        let mut inner = lock(&self.inner);
        if inner.state.finished() {
            return false;
        }
        inner.state = TransferState::Failed {
            reason: reason.to_owned(),
        };
        inner.run_start = None;
        true
    }

    pub fn is_finished(&self) -> bool {
        lock(&self.inner).state.finished()
    }

    fn status(&self, now: Instant) -> TransferStatus {
        let inner = lock(&self.inner);
        let done_bytes = self.done.load(Relaxed).min(self.size);
        let bytes_per_sec = match inner.run_start {
            Some((since, from)) if inner.state == TransferState::Running => {
                let secs = now.duration_since(since).as_secs_f64();
                if secs > 0.05 {
                    done_bytes.saturating_sub(from) as f64 / secs
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        let time_left = (bytes_per_sec > 0.0)
            .then(|| Duration::from_secs_f64((self.size - done_bytes) as f64 / bytes_per_sec));
        TransferStatus {
            id: self.id,
            direction: self.direction,
            peer: inner.peer,
            peer_name: inner.peer_name.clone(),
            name: self.name.clone(),
            size: self.size,
            done_bytes,
            bytes_per_sec,
            time_left,
            state: inner.state.clone(),
            path: inner.path.clone(),
            resumes: inner.resumes,
        }
    }
}

/// Finished transfers kept for the application to show; older ones are forgotten.
const KEEP_FINISHED: usize = 100;

/// Every transfer of a node.
#[derive(Default)]
pub(crate) struct Transfers {
    list: Mutex<Vec<Arc<Transfer>>>,
    next: AtomicU64,
    /// Counts the application's cancels of incoming transfers: a reader that sees it
    /// change looks for cancelled transfers among its own.
    cancels: AtomicU64,
}

impl Transfers {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &self,
        direction: Direction,
        name: &str,
        size: u64,
        peer: PeerId,
        peer_name: &str,
        path: Option<PathBuf>,
        state: TransferState,
    ) -> Arc<Transfer> {
        let transfer = Arc::new(Transfer {
            id: TransferId(self.next.fetch_add(1, Relaxed) + 1),
            direction,
            name: name.to_owned(),
            size,
            done: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                peer,
                peer_name: peer_name.to_owned(),
                state,
                path,
                run_start: None,
                resumes: 0,
            }),
        });
        let mut list = lock(&self.list);
        list.push(transfer.clone());
        let finished = list.iter().filter(|t| t.is_finished()).count();
        if finished > KEEP_FINISHED {
            let mut extra = finished - KEEP_FINISHED;
            list.retain(|t| {
                if extra > 0 && t.is_finished() {
                    extra -= 1;
                    false
                } else {
                    true
                }
            });
        }
        transfer
    }

    pub fn snapshot(&self) -> Vec<TransferStatus> {
        let now = Instant::now();
        lock(&self.list).iter().map(|t| t.status(now)).collect()
    }

    pub fn get(&self, id: TransferId) -> Option<Arc<Transfer>> {
        lock(&self.list).iter().find(|t| t.id == id).cloned()
    }

    /// Asks for a transfer to stop; the threads that move its bytes see it.
    pub fn request_cancel(&self, transfer: &Transfer) {
        transfer.cancel.store(true, Relaxed);
        if transfer.direction == Direction::Incoming {
            self.cancels.fetch_add(1, Relaxed);
        }
    }

    pub fn cancel_generation(&self) -> u64 {
        self.cancels.load(Relaxed)
    }

    pub fn clear_finished(&self) {
        lock(&self.list).retain(|t| !t.is_finished());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_speed_and_states() {
        let transfers = Transfers::default();
        let t = transfers.add(
            Direction::Outgoing,
            "a.bin",
            1000,
            PeerId(1),
            "viewer",
            None,
            TransferState::Waiting,
        );
        t.set_running(0);
        t.add_done(250);
        let later = Instant::now() + Duration::from_secs(1);
        let s = t.status(later);
        assert_eq!(s.done_bytes, 250);
        assert!((s.fraction() - 0.25).abs() < 1e-6);
        assert!(s.bytes_per_sec > 200.0 && s.bytes_per_sec <= 250.0);
        assert!(s.time_left.is_some());
        t.set_paused("connection lost");
        assert_eq!(t.status(later).bytes_per_sec, 0.0);
        t.set_running(250);
        assert_eq!(t.status(later).resumes, 1);
        assert!(t.finish_failed("cancelled"));
        assert!(
            !t.finish_failed("again"),
            "a finished transfer stays finished"
        );
        t.finish_ok("stored", None);
        assert!(transfers.snapshot()[0].state.finished());
        transfers.clear_finished();
        assert!(transfers.snapshot().is_empty());
    }

    #[test]
    fn a_zero_byte_file_is_complete_once_done() {
        let transfers = Transfers::default();
        let t = transfers.add(
            Direction::Incoming,
            "empty",
            0,
            PeerId(1),
            "sender",
            None,
            TransferState::Running,
        );
        assert_eq!(t.status(Instant::now()).fraction(), 0.0);
        t.finish_ok("stored", Some(PathBuf::from("/x/empty")));
        let s = t.status(Instant::now());
        assert_eq!(s.fraction(), 1.0);
        assert_eq!(s.path, Some(PathBuf::from("/x/empty")));
    }
}
