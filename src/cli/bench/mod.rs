//! `texstream bench`: the real sender and viewer endpoints over real loopback TCP with
//! synthetic frames, each side in a process of its own so that its CPU time and peak
//! memory can be reported; prints a table or, with `--json`, one JSON object.
//!
//! The parent process starts the sender (`bench sender-worker`, hidden), reads the
//! address it listens on, starts one process per viewer (`bench viewer-worker`, hidden)
//! and, with `--slow-viewer`, reads slowly from one more connection on a thread of its
//! own. Each worker prints one JSON line when it is done; the parent combines them.
//! Viewers acknowledge every frame with a short text message. With `--fps max` the
//! sender copies frame `n` ahead and publishes it as soon as every viewer's link has
//! taken frame `n - 1` from its slot
//! ([`Node::wait_frame_taken`](crate::net::Node::wait_frame_taken)): one frame on the
//! wire and one waiting per viewer, so the newest-wins slots never evict a frame merely
//! because the producer outran the wire (frames skipped anyway are counted and
//! reported). `--in-flight N` paces by the acknowledgements instead (frame `n` once
//! every viewer has frame `n - N`). Latency at `--fps max` includes the time a prepared
//! frame waits for the wire; it is reported from the copy's start (capture) and from
//! `publish` (the frame handed to the node).
//!
//! `--raw-tcp` measures the floor instead: the same frames and pacing over one bare
//! TCP connection, with no protocol, no copy and no checksum ([`floor`]).
//!
//! With `--gpu` the GPU stages are in the loop, on whatever adapter exists: the sender
//! renders each frame with the live shader on a headless device and reads it back
//! through the staging-buffer ring (`Readback`) — with `--fps max` kept full, as the
//! sender window's capture thread keeps it, so frame n renders while the ones before it
//! map (the readbacks in flight are reported) —, and each viewer writes every frame into
//! one persistent texture (`UploadTexture`) and waits for the GPU before acknowledging
//! it. Each stage is timed per frame (see `StagesMs` in [`report`]); the parent
//! joins the sender's publish times with the viewers' arrival times by frame number
//! (one machine, one clock).
//!
//! The files, by job: [`args`] (the command line, the hidden workers' arguments, the
//! pace and the stop), [`sender`] and [`viewer`] (the two workers, and the slow viewer),
//! [`report`] (what the workers print and what the parent makes of it: the table and
//! the JSON), [`process`] (the parent: starting the workers, /proc readings) and
//! [`floor`] (`--raw-tcp`).

mod args;
mod content;
mod floor;
mod process;
mod report;
mod sender;
mod viewer;

pub use args::BenchArgs;
pub(super) use process::peak_rss_mib;

use args::Worker;
use process::run_parent;
use sender::run_sender;
use viewer::run_viewer;

/// Name prefix of the honest viewers; the sender waits for their acknowledgements.
const VIEWER_NAME: &str = "bench viewer";
/// Name of the viewer that reads slowly; nobody waits for it.
const SLOW_VIEWER_NAME: &str = "bench slow viewer";

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.worker {
        Some(Worker::Sender(worker)) => run_sender(&worker),
        Some(Worker::Viewer(worker)) => run_viewer(&worker),
        None if args.raw_tcp => floor::run(&args.params, args.json),
        None => run_parent(&args.params, args.slow_viewer, args.json),
    }
}
