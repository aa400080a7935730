//! `_Node`: one texstream endpoint (a `texstream::net::Node`) for Python. The package's
//! `Sender` and `Receiver` are thin Python classes over it. Every wait runs without the
//! GIL, in slices between which Ctrl-C is noticed and the node's events are taken.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use texstream::cli::normalize_addr;
use texstream::frame::{Frame, FramePool};
use texstream::net::{
    now_us, Node, NodeConfig, PeerState, PeerStatus, Tls, TlsOptions, Token, TransferState,
};
use texstream::protocol::Role;

use crate::errors::{error, Kind};
use crate::formats::{frame_array, sendable};
use crate::inbox::Inbox;

/// The longest a wait runs without the GIL before it looks at Ctrl-C and events again.
const SLICE: Duration = Duration::from_millis(50);
/// The longest `send` waits for a viewer to take the previous frame; past it the new
/// frame replaces the one still waiting for that viewer (counted as skipped).
const SEND_WAIT: Duration = Duration::from_secs(1);
/// Outgoing frame buffers kept for reuse: the one on the wire, the one waiting, the one
/// being copied, and one spare.
const POOL_BUFFERS: usize = 4;

#[pyclass(frozen, name = "_Node", module = "texstream._texstream")]
pub struct PyNode {
    node: Node,
    /// The node dials (`connect` or `source`): a refused token then is this
    /// endpoint's failure to report, not a stranger's failed attempt to dial in.
    dials: bool,
    closed: AtomicBool,
    inbox: Mutex<Inbox>,
    next_seq: AtomicU64,
    /// Frames `recv` passed over for a newer one the node already held.
    frames_skipped: AtomicU64,
    pool: FramePool,
}

/// A frame as `_Node.recv` returns it: (array, seq, capture_us, received_us, format).
type RecvTuple<'py> = (Bound<'py, PyAny>, u64, u64, u64, &'static str);

impl PyNode {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.load(Relaxed) {
            return Err(error(py, Kind::Closed, "this endpoint is closed"));
        }
        Ok(())
    }

    /// Takes the events waiting (a bounded number), and raises `AuthError` for a
    /// refused token on a connection this endpoint dialed while none is connected.
    fn pump(&self, py: Python<'_>) -> PyResult<()> {
        let mut inbox = self.inbox();
        for event in self.node.events().try_iter().take(crate::inbox::KEPT) {
            inbox.take(event);
        }
        let refused = inbox.failure.as_ref().is_some_and(|f| f.auth) && self.dials;
        if refused && self.connected_peers() == 0 {
            let message = inbox.failure.take().map(|f| f.message).unwrap_or_default();
            return Err(error(py, Kind::AuthError, message));
        }
        Ok(())
    }

    /// Waits without the GIL for at most one slice (or until `deadline`) for an event,
    /// and keeps it.
    fn wait_event(&self, py: Python<'_>, deadline: Option<Instant>) {
        let slice = deadline.map_or(SLICE, |d| {
            d.saturating_duration_since(Instant::now()).min(SLICE)
        });
        if let Ok(event) = py.detach(|| self.node.events().recv_timeout(slice)) {
            self.inbox().take(event);
        }
    }

    fn connected_peers(&self) -> usize {
        self.node
            .peers()
            .iter()
            .filter(|p| p.state == PeerState::Connected)
            .count()
    }

    /// Why nothing came, from the peers' last errors and the last failed handshake.
    fn why_nothing(&self) -> String {
        let mut why: Vec<String> = self
            .node
            .peers()
            .iter()
            .filter(|p| p.state != PeerState::Connected)
            .map(|p| match &p.last_error {
                Some(e) => format!("{} is {}: {e}", p.target, p.state),
                None => format!("{} is {}", p.target, p.state),
            })
            .collect();
        if let Some(f) = &self.inbox().failure {
            why.push(format!("last failed handshake: {}", f.message));
        }
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join("; "))
        }
    }

    /// Waits until `done` says so (`true`), taking events meanwhile, or until the
    /// deadline (`false`; `None`: no deadline).
    fn wait_until(
        &self,
        py: Python<'_>,
        deadline: Option<Instant>,
        mut done: impl FnMut(&PyNode) -> bool,
    ) -> PyResult<bool> {
        loop {
            self.check_open(py)?;
            self.pump(py)?;
            if done(self) {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            self.wait_event(py, deadline);
            py.check_signals()?;
        }
    }

    /// `Timeout`: `what` did not happen within `timeout_secs`, and why, as far as known.
    fn timed_out(&self, py: Python<'_>, what: &str, timeout_secs: Option<f64>) -> PyErr {
        let secs = timeout_secs.unwrap_or_default();
        let why = self.why_nothing();
        error(py, Kind::Timeout, format!("{what} within {secs} s{why}"))
    }
}

fn deadline(timeout_secs: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout_secs {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(t)))
        }
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a number of seconds >= 0 or None, got {t}"
        ))),
    }
}

#[pymethods]
impl PyNode {
    /// Starts the node; see `texstream.Sender` and `texstream.Receiver`.
    #[new]
    #[pyo3(signature = (role, listen, connect, sources, name, token, tls, tls_dir, files_dir))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        role: &str,
        listen: Option<String>,
        connect: Vec<String>,
        sources: Vec<String>,
        name: Option<String>,
        token: Option<String>,
        tls: bool,
        tls_dir: Option<PathBuf>,
        files_dir: Option<PathBuf>,
    ) -> PyResult<PyNode> {
        let role = match role {
            "sender" => Role::Sender,
            "viewer" => Role::Viewer,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "role must be \"sender\" or \"viewer\", got {other:?}"
                )))
            }
        };
        let mut config = NodeConfig::new(role);
        config.listen = listen.as_deref().map(normalize_addr);
        config.connect = connect.iter().map(|a| normalize_addr(a)).collect();
        config.sources = sources;
        if let Some(name) = name {
            config.name = name;
        }
        if let Some(token) = token {
            config.token = Some(
                Token::new(&token)
                    .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("token: {e}")))?,
            );
        }
        if tls {
            let options = TlsOptions {
                cert: None,
                key: None,
                known_hosts: tls_dir.as_ref().map(|d| d.join("known_hosts")),
                dir: tls_dir,
            };
            let tls = py
                .detach(|| Tls::new(&options))
                .map_err(|e| error(py, Kind::Error, e.to_string()))?;
            config.tls = Some(tls);
        }
        config.files_dir = files_dir;
        let dials = !(config.connect.is_empty() && config.sources.is_empty());
        let node = py
            .detach(|| Node::start(config))
            .map_err(|e| error(py, Kind::Error, e.to_string()))?;
        Ok(PyNode {
            node,
            dials,
            closed: AtomicBool::new(false),
            inbox: Mutex::new(Inbox::default()),
            next_seq: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            pool: FramePool::new(POOL_BUFFERS),
        })
    }

    /// The address the node listens on (`host:port`, the real port when asked for 0).
    #[getter]
    fn address(&self) -> Option<String> {
        self.node.local_addr().map(|a| a.to_string())
    }

    /// Copies `array` into a frame and publishes it to every peer that takes frames;
    /// returns its sequence number. With `wait`, first waits (at most `SEND_WAIT`) until
    /// every connected peer has taken the previous frame, so that none is skipped.
    #[pyo3(signature = (array, wait))]
    fn send(&self, py: Python<'_>, array: &Bound<'_, PyAny>, wait: bool) -> PyResult<u64> {
        self.check_open(py)?;
        let sendable = sendable(array).map_err(|m| error(py, Kind::BadArray, m))?;
        let pixels = sendable
            .bytes
            .as_slice()
            .map_err(|e| error(py, Kind::BadArray, e.to_string()))?;
        let geometry = sendable.geometry;
        let seq = self.next_seq.fetch_add(1, Relaxed);
        let node = &self.node;
        let pool = &self.pool;
        py.detach(move || {
            // The one copy on this side: the array into a pooled frame buffer, hashed
            // as it goes; made while the previous frame is still on the wire.
            let frame = Frame::copied(geometry, seq, now_us(), pixels, pool);
            if wait {
                let deadline = Instant::now() + SEND_WAIT;
                for peer in node.peers() {
                    if peer.state == PeerState::Connected {
                        let left = deadline.saturating_duration_since(Instant::now());
                        node.wait_frame_taken(peer.id, left);
                    }
                }
            }
            node.publish(&frame);
        });
        Ok(seq)
    }

    /// The newest frame: (array, seq, capture_us, received_us, format). `Timeout` when
    /// none comes within `timeout` seconds (`None`: wait for ever). Of the frames the
    /// node holds (its newest two), the older is skipped: a slow consumer sees the
    /// latest picture, not one a frame behind.
    #[pyo3(signature = (timeout))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<RecvTuple<'py>> {
        let deadline = deadline(timeout)?;
        loop {
            self.check_open(py)?;
            let slice = deadline.map_or(SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(SLICE)
            });
            let newest = py.detach(|| {
                let frames = self.node.frames();
                let mut newest = frames.recv_timeout(slice).ok()?;
                for newer in frames.try_iter() {
                    newest = newer;
                    self.frames_skipped.fetch_add(1, Relaxed);
                }
                Some(newest)
            });
            if let Some(frame) = newest {
                let received_us = now_us();
                let m = *frame.meta();
                let array = frame_array(py, frame)?;
                return Ok((array, m.seq, m.capture_us, received_us, m.format.name()));
            }
            self.pump(py)?;
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.timed_out(py, "no frame", timeout));
            }
        }
    }

    /// Sends a text message to every peer.
    fn send_text(&self, py: Python<'_>, body: &str) -> PyResult<()> {
        self.check_open(py)?;
        self.node.send_text(body);
        Ok(())
    }

    /// Offers the file at `path` to every connected peer that takes files; with
    /// `timeout`, waits until each has confirmed its checksum (an `Error` naming the
    /// first that failed). Returns how many peers it was offered to; `Closed` when none
    /// takes files.
    #[pyo3(signature = (path, timeout))]
    fn send_file(&self, py: Python<'_>, path: PathBuf, timeout: Option<f64>) -> PyResult<usize> {
        self.check_open(py)?;
        let ids = py
            .detach(|| self.node.offer_file(&path, None))
            .map_err(|e| error(py, Kind::Error, e.to_string()))?;
        if ids.is_empty() {
            return Err(error(
                py,
                Kind::Closed,
                format!(
                    "no connected peer takes files: {} was not sent",
                    path.display()
                ),
            ));
        }
        let Some(timeout) = timeout else {
            return Ok(ids.len());
        };
        let mut failed = None;
        let confirmed = self.wait_until(py, deadline(Some(timeout))?, |me| {
            let transfers = me.node.transfers();
            let mine = transfers.iter().filter(|t| ids.contains(&t.id));
            let mut finished = 0;
            for t in mine {
                match &t.state {
                    TransferState::Done { .. } => finished += 1,
                    TransferState::Failed { reason } => {
                        finished += 1;
                        failed.get_or_insert_with(|| {
                            format!("{} to {}: {reason}", t.name, t.peer_name)
                        });
                    }
                    _ => {}
                }
            }
            finished == ids.len()
        })?;
        if !confirmed {
            let what = format!("{} was not confirmed by every peer", path.display());
            return Err(self.timed_out(py, &what, Some(timeout)));
        }
        match failed {
            Some(reason) => Err(error(
                py,
                Kind::Error,
                format!("file not delivered: {reason}"),
            )),
            None => Ok(ids.len()),
        }
    }

    /// Texts received since the last call: [(from, body, sent_us)]. With `timeout`,
    /// waits that long for at least one when none is waiting.
    #[pyo3(signature = (timeout))]
    fn texts(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<(String, String, u64)>> {
        self.check_open(py)?;
        self.pump(py)?;
        if let Some(t) = timeout.filter(|&t| t > 0.0) {
            self.wait_until(py, deadline(Some(t))?, |me| !me.inbox().texts.is_empty())?;
        }
        let texts = self.inbox().take_texts();
        Ok(texts
            .into_iter()
            .map(|t| (t.from, t.body, t.sent_us))
            .collect())
    }

    /// Files received since the last call: [(name, path, size)]. With `timeout`, waits
    /// that long for at least one when none is waiting.
    #[pyo3(signature = (timeout))]
    fn files(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<(String, PathBuf, u64)>> {
        self.check_open(py)?;
        self.pump(py)?;
        if let Some(t) = timeout.filter(|&t| t > 0.0) {
            self.wait_until(py, deadline(Some(t))?, |me| !me.inbox().files.is_empty())?;
        }
        let files: Vec<_> = self.inbox().files.drain(..).collect();
        Ok(files
            .into_iter()
            .map(|f| (f.name, f.path, f.size))
            .collect())
    }

    /// Waits until at least `count` peers are connected; returns `peers()`.
    #[pyo3(signature = (count, timeout))]
    fn wait_for_peers<'py>(
        &self,
        py: Python<'py>,
        count: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let connected =
            self.wait_until(py, deadline(timeout)?, |me| me.connected_peers() >= count)?;
        if !connected {
            let what = format!("fewer than {count} peer(s) connected");
            return Err(self.timed_out(py, &what, timeout));
        }
        self.peers(py)
    }

    /// Every peer, as dicts.
    fn peers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for p in self.node.peers() {
            list.append(peer_dict(py, &p)?)?;
        }
        Ok(list)
    }

    /// The node's figures, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.node.stats();
        let d = PyDict::new(py);
        d.set_item("frames_received", s.frames_received)?;
        d.set_item("frames_dropped", s.frames_dropped)?;
        d.set_item("checksum_failures", s.checksum_failures)?;
        d.set_item("protocol_errors", s.protocol_errors)?;
        d.set_item("reconnects", s.reconnects)?;
        d.set_item("bytes_received", s.bytes_received)?;
        d.set_item("bytes_sent", s.bytes_sent)?;
        d.set_item("events_dropped", s.events_dropped)?;
        d.set_item("auth_failures", s.auth_failures)?;
        d.set_item("texts_dropped", self.inbox().texts_dropped)?;
        d.set_item("frames_skipped", self.frames_skipped.load(Relaxed))?;
        Ok(d)
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Says goodbye to every peer and stops (waits about a second at most).
    fn close(&self, py: Python<'_>) {
        if !self.closed.swap(true, Relaxed) {
            py.detach(|| self.node.shutdown());
        }
    }
}

fn peer_dict<'py>(py: Python<'py>, p: &PeerStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", p.id.0)?;
    d.set_item("target", &p.target)?;
    d.set_item("address", p.addr.map(|a| a.to_string()))?;
    d.set_item("connected", p.state == PeerState::Connected)?;
    d.set_item("state", p.state.to_string())?;
    d.set_item("name", &p.name)?;
    d.set_item("role", p.role.map(|r| r.name()))?;
    d.set_item("frames_sent", p.frames_sent)?;
    d.set_item("frames_skipped", p.frames_skipped)?;
    d.set_item("frames_format_skipped", p.frames_format_skipped)?;
    d.set_item("frames_received", p.frames_received)?;
    d.set_item("bytes_sent", p.bytes_sent)?;
    d.set_item("bytes_received", p.bytes_received)?;
    d.set_item("authenticated", p.authenticated)?;
    d.set_item("encrypted", p.encrypted)?;
    d.set_item("last_error", &p.last_error)?;
    Ok(d)
}
