//! Per-peer and per-node figures, kept in atomics by the network threads and read as
//! plain snapshots by the windows and the command line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::Codec;
use crate::protocol::{Escaped, Role};

/// Identifies a peer slot for the life of the node. A dialed target keeps its id across
/// reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Whether a peer dialed us or we dial it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Origin {
    Accepted,
    Dialed,
}

/// Where a peer's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Dialing, or exchanging hellos.
    Connecting,
    Connected,
    /// The link broke; the next attempt is due at this instant.
    Reconnecting {
        retry_at: Instant,
    },
    /// Closed for good (accepted peers, or a node shutting down).
    Closed,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerState::Connecting => write!(f, "connecting"),
            PeerState::Connected => write!(f, "connected"),
            PeerState::Reconnecting { retry_at } => {
                let left = retry_at.saturating_duration_since(Instant::now());
                write!(f, "reconnecting in {:.1} s", left.as_secs_f64())
            }
            PeerState::Closed => write!(f, "closed"),
        }
    }
}

/// A snapshot of one peer, for display.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub id: PeerId,
    pub origin: Origin,
    /// The dial target as given, or the accepted peer's address.
    pub target: String,
    /// The connected socket's remote address, once known.
    pub addr: Option<SocketAddr>,
    pub state: PeerState,
    /// Name and role from the peer's hello, once connected.
    pub name: Option<String>,
    pub role: Option<Role>,
    pub frames_sent: u64,
    pub frames_skipped: u64,
    /// Frames left out because their pixel format is one the peer's hello does not
    /// take (an older peer takes RGBA8 and BGRA8 only).
    pub frames_format_skipped: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub rtt: Option<Duration>,
    /// Why the last connection ended or the last attempt failed.
    pub last_error: Option<String>,
    /// Successful connections after the first (dialed peers).
    pub reconnects: u64,
    /// Both sides proved they know the shared token.
    pub authenticated: bool,
    /// The connection runs over TLS.
    pub encrypted: bool,
    /// The peer's TLS certificate fingerprint (`SHA256:…`), when encrypted.
    pub tls_fingerprint: Option<String>,
    /// The peer has sent frames: it is a source, which [`crate::net::Node::follow`] can pick.
    pub sends_frames: bool,
    /// How frames to this peer are coded: raw when it takes no coded frames.
    pub codec: Codec,
    /// Frames to this peer go coded now (with `auto`, the choice of the moment).
    pub coding_now: bool,
    /// Frames sent coded, of `frames_sent`.
    pub frames_coded: u64,
    /// Of `frames_coded`, those whose coding another link to the same base made (a
    /// frame is coded once for all such links).
    pub frames_coded_shared: u64,
    /// Pixel bytes of the frames sent, and the bytes they took on the wire (coded or
    /// raw): their ratio is what the codec saves on this link.
    pub frame_bytes_raw: u64,
    pub frame_bytes_wire: u64,
    /// Time spent coding this peer's frames, in microseconds.
    pub coding_us: u64,
}

impl PeerStatus {
    /// One line for logs and the SIGUSR2 listing.
    pub fn line(&self) -> String {
        let addr = self
            .addr
            .map_or_else(|| self.target.clone(), |a| a.to_string());
        let rtt = self.rtt.map_or_else(
            || "-".to_owned(),
            |r| format!("{:.2} ms", r.as_secs_f64() * 1e3),
        );
        format!(
            "{} {} {:?} {} name={} role={} auth={} tls={} sent={} skipped={} received={} tx={}B rx={}B rtt={} codec={}{}{}",
            self.id,
            addr,
            self.origin,
            self.state,
            // Peer-chosen: escaped, so that a name cannot forge a line of the list.
            Escaped(self.name.as_deref().unwrap_or("-")),
            self.role.map_or("-", |r| r.name()),
            if self.authenticated { "token" } else { "none" },
            if self.encrypted { "yes" } else { "no" },
            self.frames_sent,
            self.frames_skipped,
            self.frames_received,
            self.bytes_sent,
            self.bytes_received,
            rtt,
            self.codec_now(),
            self.coding_summary(),
            self.last_error
                .as_ref()
                .map_or_else(String::new, |e| format!(" last_error=\"{}\"", Escaped(e))),
        )
    }
}

impl PeerStatus {
    /// The frames' wire bytes against their raw bytes, as a fraction, once a frame went.
    pub fn wire_ratio(&self) -> Option<f64> {
        (self.frame_bytes_raw > 0)
            .then(|| self.frame_bytes_wire as f64 / self.frame_bytes_raw as f64)
    }

    /// The codec, and with `auto` what it chose: `auto(tiles)`, `auto(raw)`.
    pub fn codec_now(&self) -> String {
        match self.codec {
            Codec::Auto => format!("auto({})", if self.coding_now { "tiles" } else { "raw" }),
            c => c.name().to_owned(),
        }
    }

    /// " coded=N [shared=M] wire=X% coding=Yms": how many frames went coded (and of
    /// those, how many in a coding another link made), their bytes on the wire against
    /// raw, and the time each took to code; empty if none went coded.
    pub fn coding_summary(&self) -> String {
        match self.wire_ratio().filter(|_| self.frames_coded > 0) {
            Some(ratio) => format!(
                " coded={}{} wire={:.1}% coding={:.2}ms",
                self.frames_coded,
                match self.frames_coded_shared {
                    0 => String::new(),
                    n => format!(" shared={n}"),
                },
                ratio * 100.0,
                self.coding_us as f64 / 1e3 / self.frames_coded as f64
            ),
            None => String::new(),
        }
    }
}

/// Counters of one peer slot, updated by its link threads.
#[derive(Default, Debug)]
pub(crate) struct LinkCounters {
    pub frames_sent: AtomicU64,
    pub frames_skipped: AtomicU64,
    pub frames_format_skipped: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Round-trip time in microseconds; 0 = not measured yet.
    pub rtt_us: AtomicU64,
    pub reconnects: AtomicU64,
    pub coding: CodingCounters,
}

/// How a link's frames went out: their raw bytes against the bytes their coding took
/// on the wire, and the time spent coding.
#[derive(Default, Debug)]
pub(crate) struct CodingCounters {
    /// The link's codec (`Codec as u8`): raw where the peer takes no coded frames.
    codec: std::sync::atomic::AtomicU8,
    /// With `auto`: frames go coded now.
    pub coding_now: std::sync::atomic::AtomicBool,
    pub frames_coded: AtomicU64,
    pub frames_shared: AtomicU64,
    pub raw_bytes: AtomicU64,
    pub wire_bytes: AtomicU64,
    pub coding_us: AtomicU64,
}

impl CodingCounters {
    pub fn set_codec(&self, codec: Codec) {
        self.codec.store(codec as u8, Relaxed);
    }

    pub fn codec(&self) -> Codec {
        Codec::from_code(self.codec.load(Relaxed)).unwrap_or_default()
    }

    /// A frame of `raw` bytes went out as `wire` bytes: coded, in `coding_us`, or raw
    /// (`None`).
    pub fn frame(&self, raw: u64, wire: u64, coding_us: Option<u64>) {
        let Some(coding_us) = coding_us else {
            self.raw_bytes.fetch_add(raw, Relaxed);
            self.wire_bytes.fetch_add(wire, Relaxed);
            return;
        };
        self.frames_coded.fetch_add(1, Relaxed);
        self.raw_bytes.fetch_add(raw, Relaxed);
        self.wire_bytes.fetch_add(wire, Relaxed);
        self.coding_us.fetch_add(coding_us, Relaxed);
    }
}

/// Node-wide figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStats {
    /// Whole, verified frames received from peers.
    pub frames_received: u64,
    /// Received frames replaced by a newer one before the consumer took them.
    pub frames_dropped: u64,
    /// Frames whose payload did not match its checksum (each closes its connection).
    pub checksum_failures: u64,
    /// Connections closed because the peer broke the protocol.
    pub protocol_errors: u64,
    /// Successful connections to dialed peers after their first.
    pub reconnects: u64,
    /// Payload and protocol bytes received.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Events the application did not take in time (its queue was full).
    pub events_dropped: u64,
    /// Connections closed at once because a connection limit was reached.
    pub connections_refused: u64,
    /// Handshakes in which a peer failed to prove it knows the token.
    pub auth_failures: u64,
    /// Frames from a second source while another's stream was followed: neither
    /// delivered nor relayed, so two streams never mix.
    pub frames_other_source: u64,
}

#[derive(Default, Debug)]
pub(crate) struct NodeCounters {
    pub frames_received: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub checksum_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub events_dropped: AtomicU64,
    pub connections_refused: AtomicU64,
    pub auth_failures: AtomicU64,
    pub frames_other_source: AtomicU64,
}

impl NodeCounters {
    pub fn snapshot(&self) -> NodeStats {
        NodeStats {
            frames_received: self.frames_received.load(Relaxed),
            frames_dropped: self.frames_dropped.load(Relaxed),
            checksum_failures: self.checksum_failures.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            events_dropped: self.events_dropped.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            frames_other_source: self.frames_other_source.load(Relaxed),
        }
    }
}
