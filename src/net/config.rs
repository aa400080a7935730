//! A node's configuration: what it is, where it listens and dials, its limits and
//! timers, with the documented defaults (`NodeConfig::new`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::handshake::Token;
use super::keepalive::KeepaliveConfig;
use super::tls::Tls;
use crate::protocol::tiles::TileCompression;
use crate::protocol::{Capabilities, Limits, Role, DEFAULT_CHUNK_BYTES};

/// How a node behaves. `NodeConfig::new(role)` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub role: Role,
    /// Our name, sent in the hello and as the author of our text messages.
    pub name: String,
    /// Accept peers on this address.
    pub listen: Option<String>,
    /// Dial these `host:port` targets, reconnecting with backoff.
    pub connect: Vec<String>,
    /// Dial the sources announced on the LAN under these names (see
    /// [`super::discovery`]), looked up afresh at every dial, so a source that moves to
    /// another address is followed.
    pub sources: Vec<String>,
    /// Of several peers sending frames, show (and relay) the stream of the one whose
    /// hello gives this name, whenever it is connected; the others only while it is not.
    pub follow_name: Option<String>,
    /// How frames are coded for the peers that take coded frames (default raw).
    pub codec: Codec,
    /// Tell peers this node takes coded frames ([`Capabilities::TILES`]), decoded
    /// against the last whole frame of each link (default yes; `--codec raw` says no).
    pub takes_coded: bool,
    /// Payload bytes per frame chunk (default 1 MiB).
    pub chunk_bytes: usize,
    /// Limits applied to everything peers send.
    pub limits: Limits,
    pub keepalive: KeepaliveConfig,
    /// The whole handshake must finish within this (default 5 s).
    pub handshake_timeout: Duration,
    /// Reconnect delays: first, and the most (defaults 100 ms, 2 s).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Give up a dial attempt after this long (default 3 s).
    pub connect_timeout: Duration,
    /// Accepted peers served at once; more get a "full" goodbye. `None`: no limit.
    pub max_peers: Option<usize>,
    /// Pass text from one peer on to the others (senders and relays do).
    pub forward_text: bool,
    /// Publish received frames to our own peers (relays do).
    pub republish: bool,
    /// Take frames only from the peers this node dialed (relays do: their upstreams),
    /// so that a peer dialing in cannot slip frames into what the relay serves. A peer
    /// that sends them anyway is dropped with the reason.
    pub frames_from_dialed_only: bool,
    /// Take offered files into this folder; `None` refuses offers.
    pub files_dir: Option<PathBuf>,
    /// Files one peer may be sending us at once; more offers are refused (default 16).
    pub max_files_per_peer: usize,
    /// Files coming in at once and transfers waiting to resume, across all peers.
    pub files: super::ShelfLimits,
    /// The shared token: peers must prove they know it (and we prove it to them).
    /// `None`: open to anyone who can connect.
    pub token: Option<Token>,
    /// Run every connection over TLS 1.3 (both ends must).
    pub tls: Option<Tls>,
    /// Connections accepted at once, handshakes included; more are closed at once
    /// (default 256).
    pub max_connections: usize,
    /// Accepted connections still in their handshake (not yet authenticated) at once;
    /// more are closed at once (default 32).
    pub max_handshaking: usize,
    /// The same, from one IP address (default 8): one address holding silent
    /// connections cannot take every handshake place.
    pub max_handshaking_per_address: usize,
    /// Connections open at once from one IP address, handshakes included (default 64):
    /// one address cannot hold every connection place.
    pub max_connections_per_address: usize,
    /// Bytes that partial frames (received in part, not yet whole) may hold across all
    /// connections (default 2 GiB: two frames at the largest size the limits allow). A
    /// chunk past it ends its connection with the reason.
    pub frame_memory: u64,
    /// Complete received frames kept for the application, newest wins (default 2).
    pub frame_queue: usize,
    /// Events kept for the application before further ones are dropped (default 1024).
    pub event_queue: usize,
    /// A pause before each piece of an incoming file is written: a slow disk, for
    /// tests. Zero (the default) in normal use.
    #[doc(hidden)]
    pub file_write_delay: Duration,
    /// Called from network threads after a frame or an event is delivered, so that a
    /// window repaints instead of polling (e.g. `egui::Context::request_repaint`).
    pub waker: Option<Waker>,
}

/// How a node codes the frames it sends to a peer that takes coded frames (see
/// [`crate::protocol::tiles`]; `BENCHMARKS.md`, "Tile codecs", for what each costs and
/// saves). A peer that does not take them gets raw frames whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Codec {
    /// Every frame raw.
    #[default]
    Raw,
    /// Tiles unchanged since the last frame sent on the link left out; changed ones raw.
    Delta,
    /// The same, changed tiles LZ4-compressed where that is smaller.
    Lz4,
    /// The same, changed tiles LZ4 or QOI, whichever is smallest (QOI is tried where
    /// LZ4 saves less than half, as on photographs).
    Tiles,
    /// Per link, `tiles` or raw, whichever costs that link less per frame, measured on
    /// it (coding and sending): raw where the link outruns the coder, coded where the
    /// link is the bottleneck.
    Auto,
}

impl Codec {
    /// Every codec, as named on the command line.
    pub const ALL: [Codec; 5] = [
        Codec::Raw,
        Codec::Delta,
        Codec::Lz4,
        Codec::Tiles,
        Codec::Auto,
    ];

    /// The codec stored as `codec as u8` (an atomic's value), if it is one.
    pub fn from_code(code: u8) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| *c as u8 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Delta => "delta",
            Codec::Lz4 => "lz4",
            Codec::Tiles => "tiles",
            Codec::Auto => "auto",
        }
    }

    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// How changed tiles are compressed; `None` for raw frames.
    pub fn compression(self) -> Option<TileCompression> {
        match self {
            Codec::Raw => None,
            Codec::Delta => Some(TileCompression::None),
            Codec::Lz4 => Some(TileCompression::Lz4),
            Codec::Tiles | Codec::Auto => Some(TileCompression::Lz4Qoi),
        }
    }
}

/// A callback that wakes the application's thread.
#[derive(Clone)]
pub struct Waker(pub Arc<dyn Fn() + Send + Sync>);

impl Waker {
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Waker {
        Waker(Arc::new(f))
    }

    pub(crate) fn wake(&self) {
        (self.0)();
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

impl NodeConfig {
    pub fn new(role: Role) -> NodeConfig {
        NodeConfig {
            role,
            name: format!("texstream {}", role.name()),
            listen: None,
            connect: Vec::new(),
            sources: Vec::new(),
            follow_name: None,
            codec: Codec::Raw,
            takes_coded: true,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            limits: Limits::default(),
            keepalive: KeepaliveConfig::default(),
            handshake_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            max_peers: None,
            forward_text: matches!(role, Role::Sender | Role::Relay),
            republish: role == Role::Relay,
            frames_from_dialed_only: role == Role::Relay,
            files_dir: None,
            max_files_per_peer: super::files::MAX_INCOMING_PER_PEER,
            files: super::ShelfLimits::default(),
            token: None,
            tls: None,
            max_connections: 256,
            max_handshaking: 32,
            max_handshaking_per_address: 8,
            max_connections_per_address: 64,
            frame_memory: 2 << 30,
            frame_queue: 2,
            event_queue: 1024,
            file_write_delay: Duration::ZERO,
            waker: None,
        }
    }

    pub(crate) fn capabilities(&self) -> Capabilities {
        let mut bits = Capabilities::TEXT | Capabilities::FILE_WINDOW | Capabilities::FORMATS;
        if matches!(self.role, Role::Sender | Role::Relay) {
            bits |= Capabilities::FRAMES_OUT;
        }
        if matches!(self.role, Role::Viewer | Role::Relay) {
            bits |= Capabilities::FRAMES_IN;
        }
        if self.files_dir.is_some() {
            bits |= Capabilities::FILES_IN;
        }
        if self.takes_coded && matches!(self.role, Role::Viewer | Role::Relay) {
            bits |= Capabilities::TILES;
        }
        Capabilities(bits)
    }
}
