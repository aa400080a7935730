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
use super::node::{Event, PeerWarning, Shared};
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
        // A plain blocking receive: an idle worker sleeps in one wait (a wait with a
        // timeout would allocate a waker each time round, and a link carrying only
        // frames must allocate nothing).
        while let Ok(job) = self.rx.recv() {
            match job {
                DiskJob::Cancelled => {
                    for (reply, outcome) in files.take_cancelled() {
                        send(cx, &reply);
                        report(cx, outcome);
                    }
                }
                DiskJob::Offer(offer) => send(cx, &files.on_offer(&offer)),
                DiskJob::Data {
                    id,
                    offset,
                    data,
                    len,
                } => {
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    let written = files.on_data(id, offset, &data[..len]);
                    drop(data);
                    self.queued.fetch_sub(len as u64, Relaxed);
                    match written {
                        Ok(Some((reply, outcome))) => {
                            send(cx, &reply);
                            report(cx, outcome);
                        }
                        Ok(None) => {
                            if self.flow {
                                let step = if self.rx.is_empty() { 1 } else { PROGRESS_STEP };
                                if let Some(progress) = files.progress(id, step) {
                                    send(cx, &progress);
                                }
                            }
                        }
                        Err(e) => {
                            // Data out of order: the peer breaks the protocol. The reader,
                            // woken by the shutdown, ends the link with this reason.
                            *super::link::lock(&self.broken) = Some(e);
                            let _ = cx.link.socket.shutdown(std::net::Shutdown::Read);
                        }
                    }
                }
                DiskJob::End(end) => {
                    if let Some((reply, outcome)) = files.on_end(&end) {
                        send(cx, &reply);
                        report(cx, outcome);
                    }
                }
                DiskJob::Cancel(cancel) => {
                    if let Some(outcome) = files.on_cancel(&cancel) {
                        report(cx, outcome);
                    }
                }
            }
        }
    }
}

/// Queues a reply; if the peer is too far behind to take it, it is dropped (keepalive
/// or the write timeout will end the link).
fn send(cx: &DiskContext, m: &Message) {
    if !cx.link.send(m) {
        tracing::debug!("the peer is not reading: a file reply was dropped");
    }
}

/// What a finished or failed incoming file means for the application.
fn report(cx: &DiskContext, outcome: FileOutcome) {
    let peer = cx.peer;
    cx.shared.emit(match outcome {
        FileOutcome::Received { name, path, size } => {
            tracing::info!(
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
            cx.shared.peer_log(
                PeerWarning::File,
                super::Severity::Warn,
                format_args!(
                    "file {} from {} failed: {}",
                    Escaped(&name),
                    cx.addr,
                    Escaped(&reason)
                ),
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
