//! A link's incoming files on a thread of their own: the reader hands each file message
//! (offer, data, end, cancel) to this worker through a bounded queue and goes back to
//! the socket, so a slow disk, an fsync or a resume that waits for an old link never
//! holds up the frames behind them on the same connection.
//!
//! With a peer that speaks file flow control ([`Capabilities::FILE_WINDOW`]) the queue
//! never fills: the worker reports each file's stored bytes ([`FileProgress`]) and the
//! peer keeps at most [`FILE_WINDOW_BYTES`] of its files on the way, a bound the reader
//! enforces (past it, the peer breaks the protocol). A peer without it is held back
//! the old way: when the queue is full, the reader waits for room.
//!
//! [`Capabilities::FILE_WINDOW`]: crate::protocol::Capabilities::FILE_WINDOW

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::files::{FileOutcome, IncomingFiles};
use super::link::LinkHandle;
use super::node::{Event, Shared};
use super::status::PeerId;
use crate::frame::PooledBuf;
use crate::protocol::{
    Escaped, FileCancel, FileEnd, FileOffer, Message, ProtocolError, FILE_WINDOW_BYTES,
};

/// Jobs the queue holds: a window's worth of pieces, and a few small messages. (A peer
/// without flow control waits for room, so it too holds at most this much memory.)
const QUEUE_JOBS: usize = FILE_WINDOW_BYTES as usize / super::rx::FILE_PIECE_BYTES + 8;

/// Stored bytes a file gains between two progress reports (also reported whenever the
/// queue runs empty, so the last bytes of a file are never left unreported).
const PROGRESS_STEP: u64 = 1 << 20;

/// A file message for the worker.
pub(crate) enum DiskJob {
    Offer(FileOffer),
    Data {
        id: u64,
        offset: u64,
        data: PooledBuf,
        len: usize,
    },
    End(FileEnd),
    Cancel(FileCancel),
    /// The application cancelled transfers (the reader sees it between reads): the
    /// worker fails those of this link and tells their senders.
    Cancelled,
}

/// The reader's end of the queue.
pub(crate) struct DiskQueue {
    tx: flume::Sender<DiskJob>,
    /// File data queued and not yet written.
    queued: Arc<AtomicU64>,
    /// The peer keeps to the window: more queued than it allows breaks the protocol.
    flow: bool,
    /// The worker found the peer's file data broken (out of order).
    broken: Arc<Mutex<Option<ProtocolError>>>,
}

impl DiskQueue {
    /// Hands `job` to the worker. Waits for room only for a peer without flow control.
    pub fn push(&self, job: DiskJob) -> Result<(), ProtocolError> {
        if let DiskJob::Data { len, .. } = &job {
            let queued = self.queued.fetch_add(*len as u64, Relaxed) + *len as u64;
            if self.flow && queued > FILE_WINDOW_BYTES {
                return Err(ProtocolError::PastFileWindow {
                    queued,
                    window: FILE_WINDOW_BYTES,
                });
            }
        }
        // The worker lives as long as this queue; a send fails only if it died.
        let _ = self.tx.send(job);
        Ok(())
    }

    /// How the worker found the peer's file data broken, if it did.
    pub fn take_error(&self) -> Option<ProtocolError> {
        super::link::lock(&self.broken).take()
    }
}

/// Who the worker works for.
pub(crate) struct DiskContext {
    pub shared: Arc<Shared>,
    pub link: Arc<LinkHandle>,
    pub peer: PeerId,
    pub addr: SocketAddr,
}

/// A queue for a link whose peer does (`flow`) or does not speak file flow control, and
/// the worker's end of it.
pub(crate) fn queue(flow: bool) -> (DiskQueue, DiskWorker) {
    let (tx, rx) = flume::bounded(QUEUE_JOBS);
    let queued = Arc::new(AtomicU64::new(0));
    let broken = Arc::new(Mutex::new(None));
    (
        DiskQueue {
            tx,
            queued: queued.clone(),
            flow,
            broken: broken.clone(),
        },
        DiskWorker {
            rx,
            queued,
            flow,
            broken,
        },
    )
}

pub(crate) struct DiskWorker {
    rx: flume::Receiver<DiskJob>,
    queued: Arc<AtomicU64>,
    flow: bool,
    broken: Arc<Mutex<Option<ProtocolError>>>,
}

impl DiskWorker {
    /// Runs until the reader drops its end of the queue (having handled what it
    /// held); then `files` is dropped, which parks unfinished transfers to resume.
    pub fn run(self, mut files: IncomingFiles, cx: &DiskContext) {
        let delay = cx.shared.config.file_write_delay;
        let mut out = WorkerEffects { cx, worker: &self };
        // A plain blocking receive: an idle worker sleeps in one wait (a wait with a
        // timeout would allocate a waker each time round, and a link carrying only
        // frames must allocate nothing).
        while let Ok(job) = self.rx.recv() {
            if matches!(job, DiskJob::Data { .. }) && !delay.is_zero() {
                std::thread::sleep(delay);
            }
            // Progress in steps while more data waits, and whenever the queue runs
            // empty, so a file's last bytes are never left unreported.
            let progress = self
                .flow
                .then(|| if self.rx.is_empty() { 1 } else { PROGRESS_STEP });
            if let Err(e) = apply(&mut files, job, progress, &mut out) {
                // Data out of order: the peer breaks the protocol. The reader, woken by
                // the shutdown, ends the link with this reason.
                *super::link::lock(&self.broken) = Some(e);
                let _ = cx.link.socket.shutdown(std::net::Shutdown::Read);
            }
        }
    }
}

/// What handling a file job may do beyond the link's incoming files.
pub(crate) trait DiskEffects {
    /// `len` bytes of file data were written (their buffer is free again).
    fn written(&mut self, len: usize);
    /// Queues a reply to the peer; dropped if the peer is too far behind to take it.
    fn send(&mut self, msg: &Message);
    /// A file arrived whole and verified, or failed.
    fn report(&mut self, outcome: FileOutcome);
}

/// Does `job` on the link's incoming `files`: the one place that decides what each file
/// message means, for the worker thread and the in-memory Pair alike. `progress`: with
/// file flow control, the stored bytes a file gains before it is reported. An error
/// when the peer broke the protocol (data out of order).
pub(crate) fn apply(
    files: &mut IncomingFiles,
    job: DiskJob,
    progress: Option<u64>,
    out: &mut impl DiskEffects,
) -> Result<(), ProtocolError> {
    match job {
        DiskJob::Cancelled => {
            for (reply, outcome) in files.take_cancelled() {
                out.send(&reply);
                out.report(outcome);
            }
        }
        DiskJob::Offer(offer) => out.send(&files.on_offer(&offer)),
        DiskJob::Data {
            id,
            offset,
            data,
            len,
        } => {
            let written = files.on_data(id, offset, &data[..len]);
            drop(data);
            // Counted off before any reply, so a peer answering a progress report
            // with more data never finds the window still full.
            out.written(len);
            match written? {
                Some((reply, outcome)) => {
                    out.send(&reply);
                    out.report(outcome);
                }
                None => {
                    if let Some(report) = progress.and_then(|step| files.progress(id, step)) {
                        out.send(&report);
                    }
                }
            }
        }
        DiskJob::End(end) => {
            if let Some((reply, outcome)) = files.on_end(&end) {
                out.send(&reply);
                out.report(outcome);
            }
        }
        DiskJob::Cancel(cancel) => {
            if let Some(outcome) = files.on_cancel(&cancel) {
                out.report(outcome);
            }
        }
    }
    Ok(())
}

/// The worker's effects: replies on the link, outcomes as the node's events.
struct WorkerEffects<'a> {
    cx: &'a DiskContext,
    worker: &'a DiskWorker,
}

impl DiskEffects for WorkerEffects<'_> {
    fn written(&mut self, len: usize) {
        self.worker.queued.fetch_sub(len as u64, Relaxed);
    }

    fn send(&mut self, msg: &Message) {
        if !self.cx.link.send(msg) {
            tracing::debug!("the peer is not reading: a file reply was dropped");
        }
    }

    fn report(&mut self, outcome: FileOutcome) {
        report(self.cx, outcome);
    }
}

/// What a finished or failed incoming file means for the application.
fn report(cx: &DiskContext, outcome: FileOutcome) {
    let peer = cx.peer;
    cx.shared.emit(match outcome {
        FileOutcome::Received { name, path, size } => {
            tracing::debug!(
                "received file {} ({size} bytes) from {}: {}",
                Escaped(&name),
                cx.addr,
                Escaped(&path.to_string_lossy())
            );
            Event::FileReceived {
                peer,
                name,
                path,
                size,
            }
        }
        FileOutcome::Failed { name, reason } => {
            tracing::debug!(
                "file {} from {} failed: {}",
                Escaped(&name),
                cx.addr,
                Escaped(&reason)
            );
            Event::FileFailed { peer, name, reason }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> DiskJob {
        DiskJob::Data {
            id: 1,
            offset: 0,
            data: PooledBuf::detached(vec![0; len]),
            len,
        }
    }

    #[test]
    fn a_peer_past_its_file_window_breaks_the_protocol() {
        let piece = super::super::rx::FILE_PIECE_BYTES;
        let (queue, worker) = super::queue(true);
        for _ in 0..FILE_WINDOW_BYTES as usize / piece {
            queue.push(data(piece)).expect("within the window");
        }
        assert!(matches!(
            queue.push(data(1)),
            Err(ProtocolError::PastFileWindow { queued, window: FILE_WINDOW_BYTES })
                if queued == FILE_WINDOW_BYTES + 1
        ));
        // Without flow control the same bytes are only held back, not an error.
        drop(worker);
        let (queue, _worker) = super::queue(false);
        for _ in 0..QUEUE_JOBS {
            queue.push(data(piece)).expect("no window");
        }
    }
}
