//! The node: one endpoint with its listener, its dialers and its peers. The public API
//! the windows and the command line use (publish, text, files, status, events).

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::admission::{Admission, AdmissionLimits};
pub(crate) use super::config::NodeConfig;
use super::connect::{accept_loop, dial_loop};
use super::files::{FileShelf, OutgoingFile};
use super::link::{lock, LinkHandle, FILE_BUFFERS_PER_LINK};
use super::ratelimit::{Verdict, WarnLimiter};
use super::reason::{HandshakeFailure, LinkEnd, Severity};
use super::router::{format_goes_to, frame_goes_to, text_goes_to, Follow, FrameFrom, Route};
use super::status::{LinkCounters, NodeCounters, NodeStats, Origin, PeerId, PeerState, PeerStatus};
use super::transfers::{Direction, TransferId, TransferState, TransferStatus};
use super::{now_us, NetError};
use crate::frame::{Frame, FramePool};
use crate::protocol::{Escaped, FrameBudget, GoodbyeCode, Hello, Message, Role, Text};

/// Bytes of text the event queue may hold: past it, texts that arrive are dropped (and
/// counted with the other dropped events) until the application takes some. A text
/// flood then costs at most this much memory, not the queue's length in 64 KiB texts.
pub const MAX_QUEUED_TEXT_BYTES: u64 = 4 << 20;

/// A text event's share of [`MAX_QUEUED_TEXT_BYTES`]; dropping the event gives it back.
/// A clone holds no share.
#[derive(Debug, Default)]
pub struct QueuedText(Option<(Arc<AtomicU64>, u64)>);

impl Clone for QueuedText {
    fn clone(&self) -> QueuedText {
        QueuedText(None)
    }
}

impl Drop for QueuedText {
    fn drop(&mut self) {
        if let Some((queued, bytes)) = self.0.take() {
            queued.fetch_sub(bytes, Relaxed);
        }
    }
}

/// What happened on the network, for the application. Frames come separately, through
/// [`Node::frames`].
#[derive(Clone, Debug)]
pub enum Event {
    PeerConnected {
        peer: PeerId,
        addr: SocketAddr,
        name: String,
        role: Role,
    },
    PeerDisconnected {
        peer: PeerId,
        addr: Option<SocketAddr>,
        reason: LinkEnd,
    },
    /// A connection was refused or failed before it was established (bad handshake,
    /// wrong version, node full).
    HandshakeFailed {
        addr: SocketAddr,
        reason: HandshakeFailure,
    },
    Text {
        peer: PeerId,
        text: Text,
        /// The text's share of what texts may hold in the event queue
        /// ([`MAX_QUEUED_TEXT_BYTES`]), given back when the event is dropped.
        queued: QueuedText,
    },
    FileReceived {
        peer: PeerId,
        name: String,
        path: PathBuf,
        size: u64,
    },
    FileFailed {
        peer: PeerId,
        name: String,
        reason: String,
    },
    /// The receiver's verdict on a file we sent.
    FileSent {
        peer: PeerId,
        name: String,
        ok: bool,
        message: String,
    },
}

pub(crate) struct SlotInfo {
    pub state: PeerState,
    pub addr: Option<SocketAddr>,
    pub name: Option<String>,
    pub role: Option<Role>,
    /// The peer's process, from its hello (0: unknown).
    pub instance: u64,
    pub authenticated: bool,
    pub encrypted: bool,
    pub tls_fingerprint: Option<String>,
    pub last_error: Option<String>,
}

/// A peer as the node tracks it: an accepted connection, or a dial target that keeps
/// its slot (and id) across reconnects.
pub(crate) struct PeerSlot {
    pub id: PeerId,
    pub origin: Origin,
    pub target: String,
    pub info: Mutex<SlotInfo>,
    pub counters: LinkCounters,
    /// The live link, while there is one.
    pub link: Mutex<Option<Arc<LinkHandle>>>,
    /// The peer has sent us frames: frames never flow back to it (a relay chain or a
    /// bridge never echoes a stream upstream).
    pub sends_frames: AtomicBool,
    /// Set by [`Node::hang_up`]: a dialed slot's loop ends instead of redialing.
    pub hung_up: AtomicBool,
    /// Wakes a dialed slot's loop out of its backoff when it is hung up.
    pub(super) stop_tx: flume::Sender<()>,
    pub(super) stop_rx: flume::Receiver<()>,
}

impl PeerSlot {
    /// What the router needs to know of this peer, over its live `link`.
    fn route(&self, link: &LinkHandle) -> Route {
        Route {
            id: self.id,
            wants_frames: link.wants_frames,
            sends_frames: self.sends_frames.load(Relaxed),
            takes_text: link.takes_text,
            takes_all_formats: link.takes_all_formats,
        }
    }

    fn status(&self) -> PeerStatus {
        let info = lock(&self.info);
        let c = &self.counters;
        let rtt_us = c.rtt_us.load(Relaxed);
        PeerStatus {
            id: self.id,
            origin: self.origin,
            target: self.target.clone(),
            addr: info.addr,
            state: info.state,
            name: info.name.clone(),
            role: info.role,
            frames_sent: c.frames_sent.load(Relaxed),
            frames_skipped: c.frames_skipped.load(Relaxed),
            frames_format_skipped: c.frames_format_skipped.load(Relaxed),
            frames_received: c.frames_received.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
            rtt: (rtt_us > 0).then(|| Duration::from_micros(rtt_us)),
            last_error: info.last_error.clone(),
            reconnects: c.reconnects.load(Relaxed),
            authenticated: info.authenticated,
            encrypted: info.encrypted,
            tls_fingerprint: info.tls_fingerprint.clone(),
            sends_frames: self.sends_frames.load(Relaxed),
            codec: c.coding.codec(),
            coding_now: c.coding.coding_now.load(Relaxed),
            frames_coded: c.coding.frames_coded.load(Relaxed),
            frames_coded_shared: c.coding.frames_shared.load(Relaxed),
            frame_bytes_raw: c.coding.raw_bytes.load(Relaxed),
            frame_bytes_wire: c.coding.wire_bytes.load(Relaxed),
            coding_us: c.coding.coding_us.load(Relaxed),
        }
    }

    pub(super) fn set_state(&self, state: PeerState) {
        lock(&self.info).state = state;
    }
}

/// State shared by the node's threads.
pub(crate) struct Shared {
    pub config: NodeConfig,
    /// The sources heard on the LAN: started with the node when it dials some by name,
    /// or on first use (a source dialed by name later, a window's source list).
    directory: Mutex<Option<Arc<super::discovery::Directory>>>,
    pub counters: NodeCounters,
    /// Buffers for received frames.
    pub pool: FramePool,
    /// The bytes partial frames hold, across all connections.
    pub frame_budget: FrameBudget,
    /// Bytes of text in the event queue (see [`MAX_QUEUED_TEXT_BYTES`]).
    queued_text_bytes: Arc<AtomicU64>,
    /// Buffers for outgoing file chunks.
    pub file_pool: FramePool,
    /// The last frames coded, for links that send the same frame against the same base.
    pub codings: super::coder::CodingCache,
    /// How frames are coded for the peers that take coded frames: the config's codec
    /// until [`Node::set_codec`] changes it (`Codec as u8`).
    codec: std::sync::atomic::AtomicU8,
    /// File transfers, and those waiting to resume.
    pub files: Arc<FileShelf>,
    /// Ours, sent in the hello: peers recognise us when we come back.
    pub instance: u64,
    /// Accepted connections open and in their handshake (in all, per address), and
    /// the addresses that failed to authenticate: checked before a connection is served.
    pub(super) admission: Arc<Mutex<Admission>>,
    /// The peer list, read without a lock (`publish` on a capture thread and the UI
    /// thread's `peers` never wait for each other); changed copy-on-write under
    /// `peers_edit`, only when a peer comes or goes.
    peers: ArcSwap<Vec<Arc<PeerSlot>>>,
    peers_edit: Mutex<()>,
    next_peer: AtomicU64,
    next_file: AtomicU64,
    shutting_down: AtomicBool,
    /// Dropped at shutdown: sleeping dialers wake up.
    wake_tx: Mutex<Option<flume::Sender<()>>>,
    pub(super) wake_rx: flume::Receiver<()>,
    events_tx: flume::Sender<Event>,
    frames_tx: flume::Sender<Frame>,
    frames_evict: flume::Receiver<Frame>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The peer whose frames this node delivers and relays.
    source: Mutex<Follow>,
    /// Rate limits for the warnings any host that reaches us can cause.
    peer_warnings: Mutex<[WarnLimiter; PeerWarning::KINDS]>,
}

/// Kinds of warning a peer (or any host that reaches the port) can cause, each
/// rate-limited on its own so a flood of one kind does not hide the others.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PeerWarning {
    /// A failed authentication (counted towards the address's penalty).
    Auth = 0,
    /// A peer too far behind to take what is sent to it.
    NotReading = 1,
    /// A peer that cannot take the format of the frames published (an older build).
    OldFormats = 2,
}

impl PeerWarning {
    const KINDS: usize = 3;
}

impl Shared {
    /// How frames are coded for peers that take coded frames, now.
    pub fn codec(&self) -> super::Codec {
        super::Codec::from_code(self.codec.load(Relaxed)).unwrap_or(self.config.codec)
    }

    /// Logs `message`, something a peer (or any host that reaches the port) caused: at
    /// warn when `severity` says so and the rate limit of `kind` lets it through (ended
    /// by how many like it were held back), at debug otherwise.
    pub(crate) fn peer_log(
        &self,
        kind: PeerWarning,
        severity: Severity,
        message: std::fmt::Arguments<'_>,
    ) {
        let verdict = match severity {
            Severity::Warn => lock(&self.peer_warnings)[kind as usize].check(Instant::now()),
            Severity::Info => Verdict::Suppress,
        };
        match verdict {
            Verdict::Log { held_back } => {
                tracing::warn!("{message}{}", super::ratelimit::held_back_note(held_back));
            }
            Verdict::Suppress => tracing::debug!("{message}"),
        }
    }

    pub fn emit(&self, event: Event) {
        if self.events_tx.try_send(event).is_err() {
            self.event_dropped();
        }
        self.wake();
    }

    /// An event the application will not see: counted, and said now and then.
    fn event_dropped(&self) {
        let n = self.counters.events_dropped.fetch_add(1, Relaxed);
        if n.is_power_of_two() {
            tracing::warn!(
                "the application is not taking events; {} dropped so far",
                n + 1
            );
        }
    }

    fn wake(&self) {
        if let Some(waker) = &self.config.waker {
            waker.wake();
        }
    }

    /// A whole, verified frame arrived from `from`: hand it to the application (newest
    /// wins), and pass it on to our own peers if we relay — when `from` is the stream
    /// this node follows (see [`Follow`]).
    pub fn frame_received(&self, from: PeerId, frame: Frame) {
        self.counters.frames_received.fetch_add(1, Relaxed);
        match lock(&self.source).on_frame(from, Instant::now()) {
            FrameFrom::Followed => {}
            FrameFrom::NewSource => tracing::info!(peer = %from, "following this peer's stream"),
            FrameFrom::Other => {
                self.counters.frames_other_source.fetch_add(1, Relaxed);
                return;
            }
        }
        if self.config.republish {
            self.publish(&frame);
        }
        offer_newest(&self.frames_tx, &self.frames_evict, frame, || {
            self.counters.frames_dropped.fetch_add(1, Relaxed);
        });
        self.wake();
    }

    /// Shows `peer`'s stream alone (see [`Follow::choose`]).
    pub(super) fn follow_peer(&self, peer: PeerId) {
        tracing::info!(peer = %peer, "showing this peer's stream, as --follow asks");
        lock(&self.source).choose(Some(peer));
    }

    /// `peer`'s connection ended: if its stream was followed, the next source may take over.
    pub(super) fn source_gone(&self, peer: PeerId) {
        lock(&self.source).gone(peer);
    }

    pub fn text_received(&self, from: PeerId, text: Text) {
        tracing::debug!(peer = %from, "text from {}: {} bytes", Escaped(&text.from), text.body.len());
        if self.config.forward_text {
            self.send_text_except(Some(from), &text);
        }
        let bytes = (text.body.len() + text.from.len()) as u64;
        let queued = &self.queued_text_bytes;
        if queued
            .fetch_update(Relaxed, Relaxed, |q| {
                (q + bytes <= MAX_QUEUED_TEXT_BYTES).then_some(q + bytes)
            })
            .is_err()
        {
            self.event_dropped();
            return;
        }
        let queued = QueuedText(Some((queued.clone(), bytes)));
        self.emit(Event::Text {
            peer: from,
            text,
            queued,
        });
    }

    fn send_text_except(&self, except: Option<PeerId>, text: &Text) {
        for slot in self.slots() {
            let link = lock(&slot.link).clone();
            if let Some(link) = link.filter(|l| text_goes_to(&slot.route(l), except)) {
                if !link.send(&Message::Text(text.clone())) {
                    self.peer_log(
                        PeerWarning::NotReading,
                        Severity::Warn,
                        format_args!("text not sent to peer #{}: it is not reading", slot.id.0),
                    );
                }
            }
        }
    }

    pub fn publish(&self, frame: &Frame) {
        // Over the current list as it is (a lock-free load, no clone): nothing is
        // allocated per frame, and no lock the UI thread takes is held.
        for slot in self.peers.load().iter() {
            let link = lock(&slot.link);
            let Some(link) = link.as_ref().filter(|l| frame_goes_to(&slot.route(l))) else {
                continue;
            };
            let format = frame.meta().format;
            if !format_goes_to(&slot.route(link), format) {
                // Counted for every frame left out; said once per peer slot (and
                // rate-limited across peers), not once per frame.
                let c = &slot.counters.frames_format_skipped;
                if c.fetch_add(1, Relaxed) == 0 {
                    let addr = lock(&slot.info).addr;
                    self.peer_log(
                        PeerWarning::OldFormats,
                        Severity::Warn,
                        format_args!(
                            "{format} frames are not sent to a peer that takes only rgba8 \
                             and bgra8 (an older texstream: upgrade it to see them), peer \
                             #{} {}",
                            slot.id.0,
                            addr.map_or_else(|| slot.target.clone(), |a| a.to_string())
                        ),
                    );
                }
                continue;
            }
            if link.offer_frame(frame.clone()) {
                slot.counters.frames_skipped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Offers a file to every connected peer that takes files, but `except`; returns
    /// one transfer per peer. The file is read only while it is sent, through a
    /// fixed-size buffer.
    fn offer_file(&self, path: &Path, except: Option<PeerId>) -> Result<Vec<TransferId>, NetError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| NetError::Refused(format!("cannot read {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(NetError::Refused(format!(
                "not a regular file: {}",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_owned());
        let mut offered = Vec::new();
        for slot in self.slots() {
            if Some(slot.id) == except {
                continue;
            }
            let link = lock(&slot.link).clone();
            let Some(link) = link.filter(|l| l.takes_files) else {
                continue;
            };
            let peer_name = lock(&slot.info).name.clone().unwrap_or_default();
            let id = self.next_file.fetch_add(1, Relaxed);
            let transfer = self.files.transfers.add(
                Direction::Outgoing,
                &name,
                meta.len(),
                slot.id,
                &peer_name,
                Some(path.to_owned()),
                TransferState::Waiting,
            );
            let file = OutgoingFile {
                path: path.to_owned(),
                name: name.clone(),
                size: meta.len(),
                transfer: transfer.clone(),
            };
            // The offer is state on the link (never a message that could be lost or a
            // thread waiting for room): it goes out in order, behind what is queued.
            if link.with(|tx| tx.offer_file(id, file)) {
                offered.push(transfer.id);
            } else {
                transfer.finish_failed("the connection closed before the offer went out");
            }
        }
        Ok(offered)
    }

    fn slots(&self) -> Vec<Arc<PeerSlot>> {
        self.peers.load().to_vec()
    }

    /// Changes the peer list: a new list, swapped in whole (readers keep the one they
    /// loaded); one change at a time.
    fn edit_peers<R>(&self, f: impl FnOnce(&mut Vec<Arc<PeerSlot>>) -> R) -> R {
        let _one_at_a_time = lock(&self.peers_edit);
        let mut peers = self.peers.load().to_vec();
        let out = f(&mut peers);
        self.peers.store(Arc::new(peers));
        out
    }

    /// Another slot than `except` whose live connection is from peer `instance`: where a
    /// peer that redialed before its old connection was torn down now is. The old slot
    /// itself still reads as connected while it is being torn down, so it is skipped.
    pub fn connected_slot_of(&self, instance: u64, except: PeerId) -> Option<Arc<PeerSlot>> {
        if instance == 0 {
            return None;
        }
        self.peers
            .load()
            .iter()
            .find(|s| {
                if s.id == except || lock(&s.link).is_none() {
                    return false;
                }
                let info = lock(&s.info);
                info.instance == instance && info.state == PeerState::Connected
            })
            .cloned()
    }

    pub(super) fn new_slot(&self, origin: Origin, target: String) -> Arc<PeerSlot> {
        let slot = self.make_slot(origin, target);
        self.edit_peers(|peers| peers.push(slot.clone()));
        slot
    }

    /// How long an address that failed to authenticate too often must wait.
    pub(super) fn auth_penalty(&self, ip: std::net::IpAddr) -> Option<Duration> {
        lock(&self.admission).penalty(ip, Instant::now())
    }

    pub(super) fn auth_failed(&self, ip: std::net::IpAddr) {
        let count = lock(&self.admission).auth_failed(ip, Instant::now());
        self.counters.auth_failures.fetch_add(1, Relaxed);
        self.peer_log(
            PeerWarning::Auth,
            Severity::Warn,
            format_args!("authentication failed for {ip} ({count} time(s) in a row)"),
        );
    }

    pub(super) fn auth_succeeded(&self, ip: std::net::IpAddr) {
        lock(&self.admission).auth_succeeded(ip);
    }

    /// Whether `max_peers` accepted peers are served already.
    pub(super) fn accepted_full(&self) -> bool {
        let Some(max) = self.config.max_peers else {
            return false;
        };
        self.peers
            .load()
            .iter()
            .filter(|s| s.origin == Origin::Accepted)
            .count()
            >= max
    }

    /// A slot for a peer that dialed us, unless `max_peers` accepted peers are already
    /// served (checked and inserted under one lock, so two peers arriving together
    /// cannot both take the last place).
    pub(super) fn new_accepted_slot(&self, addr: SocketAddr) -> Option<Arc<PeerSlot>> {
        self.edit_peers(|peers| {
            if let Some(max) = self.config.max_peers {
                let accepted = peers
                    .iter()
                    .filter(|s| s.origin == Origin::Accepted)
                    .count();
                if accepted >= max {
                    return None;
                }
            }
            let slot = self.make_slot(Origin::Accepted, addr.to_string());
            peers.push(slot.clone());
            Some(slot)
        })
    }

    fn make_slot(&self, origin: Origin, target: String) -> Arc<PeerSlot> {
        let (stop_tx, stop_rx) = flume::bounded(1);
        Arc::new(PeerSlot {
            id: PeerId(self.next_peer.fetch_add(1, Relaxed)),
            origin,
            target,
            info: Mutex::new(SlotInfo {
                state: PeerState::Connecting,
                addr: None,
                name: None,
                role: None,
                instance: 0,
                authenticated: false,
                encrypted: false,
                tls_fingerprint: None,
                last_error: None,
            }),
            counters: LinkCounters::default(),
            link: Mutex::new(None),
            sends_frames: AtomicBool::new(false),
            hung_up: AtomicBool::new(false),
            stop_tx,
            stop_rx,
        })
    }

    /// The LAN directory, started now if it is not running yet.
    pub(super) fn directory(&self) -> Result<Arc<super::discovery::Directory>, NetError> {
        let mut directory = lock(&self.directory);
        if let Some(d) = directory.as_ref() {
            return Ok(d.clone());
        }
        let d = Arc::new(
            super::discovery::Directory::start().map_err(|e| NetError::Discovery(e.to_string()))?,
        );
        *directory = Some(d.clone());
        Ok(d)
    }

    /// Starts dialing `target` (an address, or `source:NAME`) on a thread of its own,
    /// in a slot of its own; returns the slot's id.
    fn dial(self: &Arc<Shared>, target: String) -> PeerId {
        let s = self.clone();
        let slot = self.new_slot(Origin::Dialed, target.clone());
        let id = slot.id;
        self.spawn(format!("texstream dial {target}"), move || {
            dial_loop(&s, &slot)
        });
        id
    }

    /// Logs and reports a failed handshake; protocol violations count as such.
    pub(super) fn handshake_failed(&self, addr: SocketAddr, error: &NetError) {
        if matches!(error, NetError::Protocol(_)) {
            self.counters.protocol_errors.fetch_add(1, Relaxed);
        }
        self.report_handshake_failure(addr, HandshakeFailure::from(error));
    }

    /// Logs (rate-limited where a peer can cause it) and reports a connection that
    /// never became a link.
    pub(super) fn report_handshake_failure(&self, addr: SocketAddr, reason: HandshakeFailure) {
        // Reported; the application chooses how loudly to say it (and limits how often).
        tracing::debug!("handshake failed: {reason}, with {addr}");
        self.emit(Event::HandshakeFailed { addr, reason });
    }

    pub(super) fn remove_slot(&self, id: PeerId) {
        self.edit_peers(|peers| peers.retain(|s| s.id != id));
    }

    pub(super) fn hello(&self) -> Hello {
        Hello {
            role: self.config.role,
            capabilities: self.config.capabilities(),
            name: self.config.name.clone(),
            auth: Vec::new(),
            instance: self.instance,
        }
    }

    pub(super) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Relaxed)
    }

    pub(super) fn spawn(&self, name: String, f: impl FnOnce() + Send + 'static) {
        match std::thread::Builder::new().name(name).spawn(f) {
            Ok(handle) => {
                let mut threads = lock(&self.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
            }
            Err(e) => tracing::error!("cannot start a thread: {e}"),
        }
    }
}

/// Puts `item` into a one-or-few-slot channel, evicting the oldest waiting item when it
/// is full (newest wins); `on_evict` counts each eviction.
fn offer_newest<T>(
    tx: &flume::Sender<T>,
    evict: &flume::Receiver<T>,
    item: T,
    on_evict: impl Fn(),
) {
    let mut item = item;
    loop {
        match tx.try_send(item) {
            Ok(()) | Err(flume::TrySendError::Disconnected(_)) => return,
            Err(flume::TrySendError::Full(back)) => {
                item = back;
                if evict.try_recv().is_ok() {
                    on_evict();
                }
            }
        }
    }
}

/// Publishes frames on a node from any thread; see [`Node::publisher`].
#[derive(Clone)]
pub struct Publisher {
    shared: std::sync::Weak<Shared>,
}

impl Publisher {
    /// Whether the node is still running.
    pub fn alive(&self) -> bool {
        self.shared.strong_count() > 0
    }

    /// As [`Node::publish`]; returns `false` once the node is gone.
    pub fn publish(&self, frame: &Frame) -> bool {
        match self.shared.upgrade() {
            Some(shared) => {
                shared.publish(frame);
                true
            }
            None => false,
        }
    }
}

/// Offers files on a node from any thread; see [`Node::file_offerer`].
#[derive(Clone)]
pub struct FileOfferer {
    shared: std::sync::Weak<Shared>,
}

impl FileOfferer {
    /// As [`Node::send_file`]: offers `path` to every connected peer that takes files
    /// and returns how many; an error once the node is gone.
    pub fn send_file(&self, path: &Path) -> Result<usize, NetError> {
        let shared = self
            .shared
            .upgrade()
            .filter(|s| !s.is_shutting_down())
            .ok_or_else(|| NetError::Refused("the node has shut down".to_owned()))?;
        shared.offer_file(path, None).map(|ids| ids.len())
    }
}

/// One texstream endpoint. Dropping it shuts it down (goodbye to every peer).
pub struct Node {
    shared: Arc<Shared>,
    local_addr: Option<SocketAddr>,
    events: flume::Receiver<Event>,
    frames: flume::Receiver<Frame>,
}

impl Node {
    /// Binds the listener (if any) and starts dialing (if asked). Fails only if the
    /// listen address cannot be bound; dial targets are retried until shutdown.
    pub fn start(mut config: NodeConfig) -> Result<Node, NetError> {
        if config.listen.is_some() {
            // Every connection the limits allow must be able to open its socket.
            config.max_connections = super::fdlimit::ensure(
                config.max_connections,
                config.connect.len() + config.sources.len(),
            );
        }
        let listener = match &config.listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr.as_str()).map_err(|source| NetError::Listen {
                        addr: addr.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let (events_tx, events) = flume::bounded(config.event_queue.max(1));
        let (frames_tx, frames) = flume::bounded(config.frame_queue.max(1));
        let (wake_tx, wake_rx) = flume::bounded(1);
        let pool_size = config.frame_queue + 4;
        let directory = if config.sources.is_empty() {
            None
        } else {
            Some(Arc::new(
                super::discovery::Directory::start()
                    .map_err(|e| NetError::Discovery(e.to_string()))?,
            ))
        };
        let shared = Arc::new(Shared {
            directory: Mutex::new(directory),
            counters: NodeCounters::default(),
            pool: FramePool::new(pool_size),
            frame_budget: FrameBudget::new(config.frame_memory),
            queued_text_bytes: Arc::new(AtomicU64::new(0)),
            file_pool: FramePool::new(2 * FILE_BUFFERS_PER_LINK),
            codings: Default::default(),
            codec: std::sync::atomic::AtomicU8::new(config.codec as u8),
            files: Arc::new(FileShelf::new(config.files)),
            instance: random_u64().max(1),
            admission: Arc::new(Mutex::new(Admission::new(AdmissionLimits {
                max_connections: config.max_connections,
                max_handshaking: config.max_handshaking,
                max_handshaking_per_address: config.max_handshaking_per_address,
                max_connections_per_address: config.max_connections_per_address,
            }))),
            peers: ArcSwap::from_pointee(Vec::new()),
            peers_edit: Mutex::new(()),
            next_peer: AtomicU64::new(1),
            // Random, so that ids do not repeat across restarts.
            next_file: AtomicU64::new(random_u64() >> 16),
            shutting_down: AtomicBool::new(false),
            wake_tx: Mutex::new(Some(wake_tx)),
            wake_rx,
            events_tx,
            frames_evict: frames.clone(),
            frames_tx,
            threads: Mutex::new(Vec::new()),
            source: Mutex::new(Follow::default()),
            peer_warnings: Mutex::new(std::array::from_fn(|_| WarnLimiter::default())),
            config,
        });
        if let (Some(listener), Some(addr)) = (listener, local_addr) {
            tracing::info!("listening on {addr}");
            if !addr.ip().is_loopback() && shared.config.token.is_none() {
                // Said once the port is really open, never for a listen that failed.
                tracing::warn!(
                    "listening on {addr} without a token: anyone who can reach this machine \
                     on that address can connect, watch the stream, chat and send files; set \
                     --token (or TEXSTREAM_TOKEN) on every end to allow only those who know it"
                );
            }
            let s = shared.clone();
            shared.spawn(format!("texstream accept {addr}"), move || {
                accept_loop(&s, listener)
            });
        }
        let by_name = shared
            .config
            .sources
            .iter()
            .map(|name| format!("{}{name}", super::discovery::BY_NAME));
        for target in shared.config.connect.clone().into_iter().chain(by_name) {
            shared.dial(target);
        }
        Ok(Node {
            shared,
            local_addr,
            events,
            frames,
        })
    }

    /// The bound listen address (with the real port when asked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// This node's instance id, sent in its hellos (and in its LAN announcement).
    pub fn instance(&self) -> u64 {
        self.shared.instance
    }

    /// Sends a frame to every peer that wants frames. Never blocks: each peer has a
    /// one-frame slot, and a frame still waiting there is replaced (counted as skipped
    /// for that peer). The pixels are shared, not copied.
    pub fn publish(&self, frame: &Frame) {
        self.shared.publish(frame);
    }

    /// Waits until the link of `peer` has taken the frame last published to it (its
    /// writer has started sending it), for at most `timeout`; returns whether the
    /// peer's slot is empty — also `true` for a peer that is gone, has no live link or
    /// takes no frames.
    ///
    /// A producer that must not have frames replaced publishes the next frame once
    /// this returns `true` for every peer it cares about: one frame then goes over the
    /// wire while the next waits, and none is skipped. It blocks: never call it on a UI
    /// thread.
    pub fn wait_frame_taken(&self, peer: PeerId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // Looked up under the peers lock (no list is cloned per frame), then waited on
        // with no lock of the node's held.
        let link = self
            .shared
            .peers
            .load()
            .iter()
            .find(|s| s.id == peer)
            .and_then(|s| lock(&s.link).clone());
        link.is_none_or(|l| !l.wants_frames || l.wait_slot_empty(deadline))
    }

    /// A handle that publishes frames on this node from another thread (a capture
    /// thread, say). Cheap to clone; it does not keep the node running.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Sends a text message to every peer. Never blocks.
    pub fn send_text(&self, body: &str) {
        let text = Text {
            sent_us: now_us(),
            from: self.shared.config.name.clone(),
            body: crate::protocol::truncate_utf8(
                body,
                self.shared.config.limits.max_text_bytes as usize,
            )
            .to_owned(),
        };
        self.shared.send_text_except(None, &text);
    }

    /// Offers a file to every connected peer that takes files; returns how many. The
    /// transfers run on their own threads; [`Node::transfers`] shows their progress and
    /// [`Event::FileSent`] reports each result.
    pub fn send_file(&self, path: &Path) -> Result<usize, NetError> {
        self.offer_file(path, None).map(|ids| ids.len())
    }

    /// As [`Node::send_file`], to every peer but `except` (a relay passes a file on to
    /// everyone but the peer it came from).
    pub fn send_file_except(&self, path: &Path, except: Option<PeerId>) -> Result<usize, NetError> {
        self.offer_file(path, except).map(|ids| ids.len())
    }

    /// Offers a file to every connected peer that takes files, but `except`; returns
    /// one transfer per peer. The file is read only while it is sent, through a
    /// fixed-size buffer. Reads the file's metadata: from a UI thread, go through
    /// [`Node::file_offerer`] on a thread of its own.
    pub fn offer_file(
        &self,
        path: &Path,
        except: Option<PeerId>,
    ) -> Result<Vec<TransferId>, NetError> {
        self.shared.offer_file(path, except)
    }

    /// A handle that offers files on this node from another thread, so that a window
    /// never waits on the file system (a dropped file on a slow mount, say). Cheap to
    /// clone; it does not keep the node running.
    pub fn file_offerer(&self) -> FileOfferer {
        FileOfferer {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Every file transfer in and out (the last 100 finished ones too), with progress.
    pub fn transfers(&self) -> Vec<TransferStatus> {
        self.shared.files.expire(Instant::now());
        self.shared.files.transfers.snapshot()
    }

    /// Stops a transfer: an outgoing one sends the peer a cancel, an incoming one tells
    /// the file's sender it failed; a partial file is deleted either way.
    pub fn cancel_transfer(&self, id: TransferId) {
        let files = &self.shared.files;
        let Some(transfer) = files.transfers.get(id) else {
            return;
        };
        if transfer.is_finished() {
            return;
        }
        files.transfers.request_cancel(&transfer);
        // An outgoing file is cancelled here, whether it is waiting for an answer,
        // streaming, or sent and waiting for the verdict: the cancel goes behind the
        // chunks already queued, and the receiver drops the partial file. (An incoming
        // one is cancelled by its link's reader, which sees the flag.)
        if transfer.direction == Direction::Outgoing {
            for slot in self.shared.slots() {
                let Some(link) = lock(&slot.link).clone() else {
                    continue;
                };
                let Some((_, file)) = link.with(|tx| tx.cancel_transfer(id, "cancelled")) else {
                    continue;
                };
                transfer.finish_failed("cancelled");
                self.shared.emit(Event::FileSent {
                    peer: slot.id,
                    name: file.name,
                    ok: false,
                    message: "cancelled".to_owned(),
                });
            }
        }
        files.expire(Instant::now());
    }

    /// Forgets finished transfers (the windows' "clear" button).
    pub fn clear_finished_transfers(&self) {
        self.shared.files.transfers.clear_finished();
    }

    /// Complete, verified frames from peers. Keeps only the newest few: take them
    /// promptly (the windows take the newest each repaint).
    pub fn frames(&self) -> &flume::Receiver<Frame> {
        &self.frames
    }

    pub fn events(&self) -> &flume::Receiver<Event> {
        &self.events
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.slots().iter().map(|s| s.status()).collect()
    }

    /// How frames are coded for peers that take coded frames (`--codec`, or what
    /// [`Node::set_codec`] set last).
    pub fn codec(&self) -> super::Codec {
        self.shared.codec()
    }

    /// Codes frames with `codec` from now on: for the links that run, from their next
    /// frame (a whole one, when coding starts), and for those to come. Peers that take
    /// no coded frames keep getting raw ones.
    pub fn set_codec(&self, codec: super::Codec) {
        self.shared.codec.store(codec as u8, Relaxed);
        for slot in self.shared.slots().iter() {
            if let Some(link) = lock(&slot.link).as_ref() {
                link.set_codec(codec, &slot.counters.coding);
            }
        }
    }

    pub fn stats(&self) -> NodeStats {
        self.shared.counters.snapshot()
    }

    /// The peer whose stream this node follows now, if any.
    pub fn stream_source(&self) -> Option<PeerId> {
        lock(&self.shared.source).source()
    }

    /// Shows `peer`'s stream alone from its next frame on, whichever others send, until
    /// its connection ends; `None`: the first peer that sends is followed again.
    pub fn follow(&self, peer: Option<PeerId>) {
        lock(&self.shared.source).choose(peer);
    }

    /// The peer chosen with [`Node::follow`], while its connection lasts.
    pub fn chosen_source(&self) -> Option<PeerId> {
        lock(&self.shared.source).chosen()
    }

    /// Starts dialing `target` as well (`HOST:PORT`, or `source:NAME` for a source
    /// announced on the LAN), reconnecting until hung up; returns its peer id.
    pub fn dial(&self, target: &str) -> PeerId {
        self.shared.dial(target.to_owned())
    }

    /// Stops dialing `peer` (a dialed peer) and ends its connection with a goodbye;
    /// `false` if no dialed peer has that id.
    pub fn hang_up(&self, peer: PeerId) -> bool {
        self.hang_up_saying(peer, "hung up")
    }

    fn hang_up_saying(&self, peer: PeerId, reason: &str) -> bool {
        let Some(slot) = self
            .shared
            .slots()
            .into_iter()
            .find(|s| s.id == peer && s.origin == Origin::Dialed)
        else {
            return false;
        };
        slot.hung_up.store(true, Relaxed);
        let _ = slot.stop_tx.try_send(());
        close_link(&slot, GoodbyeCode::Normal, reason);
        self.shared.remove_slot(peer);
        true
    }

    /// Watches `target` instead of what this node dials now: every dialed peer is hung
    /// up and `target` dialed (an address, or `source:NAME`). Accepted peers stay.
    pub fn switch_to(&self, target: &str) -> PeerId {
        for slot in self.shared.slots() {
            if slot.origin == Origin::Dialed {
                self.hang_up_saying(slot.id, "switched to another source");
            }
        }
        self.follow(None);
        self.dial(target)
    }

    /// The sources announced on the LAN, as a directory browsing on a thread of its own
    /// (started on first use, shared with the node's dials by name).
    pub fn directory(&self) -> Result<Arc<super::discovery::Directory>, NetError> {
        self.shared.directory()
    }

    /// Drops every connected peer with a goodbye. Dialed peers reconnect by themselves.
    pub fn drop_all_peers(&self) {
        for slot in self.shared.slots() {
            close_link(&slot, GoodbyeCode::Kicked, "dropped by the operator");
        }
    }

    /// Says goodbye to every peer, stops listening and dialing, and waits (about a
    /// second at most) for the threads to end.
    pub fn shutdown(&self) {
        if self.shared.shutting_down.swap(true, Relaxed) {
            return;
        }
        lock(&self.shared.wake_tx).take();
        for slot in self.shared.slots() {
            close_link(&slot, GoodbyeCode::Normal, "shutting down");
        }
        if let Some(addr) = self.local_addr {
            // Wake the accept loop, which then sees the flag.
            let wake = if addr.ip().is_unspecified() {
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
            } else {
                addr
            };
            let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
        }
        // Each link sends its goodbye at the next message boundary and waits for the
        // peer to close its side; a peer that does not read is cut after this.
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        loop {
            let done = lock(&self.shared.threads).iter().all(|t| t.is_finished());
            if done {
                break;
            }
            if Instant::now() > deadline {
                for slot in self.shared.slots() {
                    if let Some(link) = lock(&slot.link).as_ref() {
                        let _ = link.socket.shutdown(Shutdown::Both);
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
        // No peer comes back now: transfers waiting to resume fail, partial files go.
        self.shared.files.discard_all();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long [`Node::shutdown`] lets links say goodbye before it cuts them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

fn close_link(slot: &PeerSlot, code: GoodbyeCode, reason: &str) {
    if let Some(link) = lock(&slot.link).clone() {
        link.close(code, reason);
    }
}

/// A random number (not for secrets): std's per-process hash seed, mixed with the
/// clock and the process id.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(super::now_us());
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameGeometry;

    /// `publish` reads the peer list without a lock: a change of the list in progress
    /// (a peer coming or going) never holds a frame back.
    #[test]
    fn publish_goes_on_while_the_peer_list_is_being_changed() {
        let mut c = NodeConfig::new(Role::Sender);
        c.listen = Some("127.0.0.1:0".into());
        let sender = Node::start(c).expect("the sender starts");
        let mut c = NodeConfig::new(Role::Viewer);
        c.connect = vec![sender.local_addr().expect("it listens").to_string()];
        let viewer = Node::start(c).expect("the viewer starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sender
            .peers()
            .iter()
            .all(|p| p.state != PeerState::Connected)
        {
            assert!(Instant::now() < deadline, "the viewer connects");
            std::thread::sleep(Duration::from_millis(5));
        }

        let editing = lock(&sender.shared.peers_edit);
        let pool = FramePool::new(2);
        let g = FrameGeometry::rgba8(64, 64);
        let mut buf = pool.take(g.total_len());
        buf.fill(7);
        let frame = Frame::new(g, 1, 0, buf);
        let publisher = sender.publisher();
        let (done_tx, done) = flume::bounded(1);
        std::thread::spawn(move || {
            publisher.publish(&frame);
            let _ = done_tx.send(());
        });
        assert!(
            done.recv_timeout(Duration::from_secs(5)).is_ok(),
            "publish waited for the change of the peer list"
        );
        let got = viewer
            .frames()
            .recv_timeout(Duration::from_secs(10))
            .expect("the frame arrives meanwhile");
        assert!(got.pixels().iter().all(|&b| b == 7));
        drop(editing);
    }
}
