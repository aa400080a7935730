//! The network core: std threads, bounded flume channels, no async runtime.
//!
//! A [`Node`] is one endpoint. It listens, dials, or both; every connection (a *link*)
//! gets a reader (the link's own thread) and a writer thread. Frames published on the
//! node go to each peer that wants frames through that peer's one-frame slot, newest
//! wins, so a slow peer skips frames (counted) and never delays the others or grows
//! memory. Frames received are reassembled into recycled buffers, verified and handed
//! to the application through a bounded channel that also keeps only the newest.
//! Dialed peers reconnect with backoff; keepalive pings find dead peers.

mod admission;
mod backoff;
mod coder;
mod config;
mod connect;
pub mod discovery;
mod disk;
mod dispatch;
mod fdlimit;
mod files;
mod handshake;
mod keepalive;
mod link;
mod liveness;
mod node;
#[cfg(test)]
mod pair;
mod ratelimit;
mod reason;
mod router;
mod rx;
mod status;
mod tls;
mod transfers;
mod tx;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use backoff::Backoff;
pub use config::{Codec, NodeConfig, Waker};
pub use fdlimit::{fds_needed, FDS_PER_CONNECTION, FDS_RESERVED};
pub use files::{
    clean_file_name, ShelfLimits, FILE_CHUNK_BYTES, MAX_INCOMING_PER_PEER, RESUME_WINDOW,
};
pub use handshake::{fuzz_handshake, Handshaken, Token};
pub use keepalive::{Keepalive, KeepaliveAction, KeepaliveConfig};
pub use link::THREADS_PER_LINK;
pub use node::{Event, FileOfferer, Node, Publisher, QueuedText, MAX_QUEUED_TEXT_BYTES};
pub use ratelimit::{held_back_note, Verdict, WarnLimiter};
pub use reason::{HandshakeFailure, LinkEnd, Severity};
pub use router::SOURCE_IDLE;
pub use status::{NodeStats, Origin, PeerId, PeerState, PeerStatus};
pub use tls::{config_dir, Tls, TlsOptions};
pub use transfers::{Direction, TransferId, TransferState, TransferStatus};

use crate::protocol::{GoodbyeCode, ProtocolError};

/// The port texstream listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7878;

/// What ends a connection or keeps one from being made.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("handshake not finished within {:.1} s", .0.as_secs_f64())]
    HandshakeTimeout(Duration),
    #[error("connection closed during the handshake (is the peer a texstream {0}?)")]
    ClosedInHandshake(&'static str),
    #[error("no traffic from the peer for {:.1} s (keepalive timeout)", .0.as_secs_f64())]
    KeepaliveTimeout(Duration),
    #[error("peer stopped reading: a write made no progress for {:.1} s", .0.as_secs_f64())]
    PeerStalled(Duration),
    #[error("peer said goodbye ({code:?}): {}", crate::protocol::Escaped(.reason))]
    Goodbye { code: GoodbyeCode, reason: String },
    #[error("cannot listen on {addr}: {source}{}", listen_hint(.source))]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve {0}: no address found")]
    Resolve(String),
    #[error("no source named {0:?} is heard on the LAN (texstream list shows those that are)")]
    SourceNotFound(String),
    #[error("{0}")]
    Discovery(String),
    #[error("{0}")]
    Refused(String),
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("{0}")]
    Tls(String),
}

/// What most likely stands in the way of a listen that failed with `e`, if anything
/// more than its own message says.
fn listen_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => " (is another texstream running there?)",
        std::io::ErrorKind::AddrNotAvailable => " (no network interface here has that address)",
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need root)",
        _ => "",
    }
}

impl NetError {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> NetError {
        NetError::Io { context, source }
    }
}

/// Wall clock in microseconds since the Unix epoch (capture and chat timestamps).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
