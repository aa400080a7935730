//! Sources found by name on the LAN: a listening sender or relay announces itself over
//! mDNS/DNS-SD (`_texstream._tcp.local.`, with the `mdns-sd` crate: one thread, no async
//! runtime), and `texstream list` browses for them.
//!
//! What an announcement says is in its TXT record: the name people see, the role, the
//! frame size and rate, the codecs, and whether a token or TLS is needed (never the
//! token). Everything read back from the network is bounded before it is kept: names are
//! cut to [`MAX_NAME_BYTES`], numbers past their range are dropped, a source lists at
//! most [`MAX_ADDRS`] addresses and a browser keeps at most [`MAX_SOURCES`] sources.
//! Two sources with one name are told apart by the instance id each adds to its
//! service name.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::protocol::{truncate_utf8, Role};

/// The DNS-SD service type texstream announces and browses.
pub const SERVICE_TYPE: &str = "_texstream._tcp.local.";
/// The version of the TXT record's keys.
const TXT_VERSION: &str = "1";
/// Bytes of a source's name kept from an announcement.
pub const MAX_NAME_BYTES: usize = 128;
/// Addresses kept of one source.
pub const MAX_ADDRS: usize = 8;
/// Sources a browser keeps; announcements past it are ignored (and counted).
pub const MAX_SOURCES: usize = 256;

/// What a source says of itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Announcement {
    /// The name people see, e.g. `studio (sender)`.
    pub name: String,
    pub role: Role,
    /// Frame size, if known when announced.
    pub size: Option<(u32, u32)>,
    pub fps: Option<f64>,
    /// Peers must prove they know a token.
    pub token: bool,
    /// Connections are TLS.
    pub tls: bool,
    /// The node's instance id (from its hello): tells two sources of one name apart.
    pub instance: u64,
}

impl Announcement {
    /// The service instance label: the name (cut to fit a DNS label) and the instance
    /// id, so two sources of one name never collide.
    fn instance_label(&self) -> String {
        let tag = format!(" [{:08x}]", self.instance as u32);
        // A DNS label holds 63 bytes.
        let name = truncate_utf8(&self.name, 63 - tag.len());
        format!("{name}{tag}")
    }

    /// The TXT record's keys and values.
    fn txt(&self) -> Vec<(&'static str, String)> {
        let mut txt = vec![
            ("v", TXT_VERSION.to_owned()),
            ("name", truncate_utf8(&self.name, MAX_NAME_BYTES).to_owned()),
            ("role", self.role.name().to_owned()),
            ("id", format!("{:016x}", self.instance)),
            ("codecs", "raw".to_owned()),
            ("auth", if self.token { "token" } else { "none" }.to_owned()),
            ("tls", if self.tls { "1" } else { "0" }.to_owned()),
        ];
        if let Some((w, h)) = self.size {
            txt.push(("w", w.to_string()));
            txt.push(("h", h.to_string()));
        }
        if let Some(fps) = self.fps {
            txt.push(("fps", format!("{fps}")));
        }
        txt
    }
}

/// A source found on the network.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Found {
    /// The service's full DNS-SD name: unique per source.
    #[serde(skip)]
    pub fullname: String,
    pub name: String,
    pub role: String,
    /// The instance id, in hex.
    pub id: String,
    pub addrs: Vec<SocketAddr>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub codecs: String,
    pub token: bool,
    pub tls: bool,
}

impl Found {
    /// A source from a resolved announcement, bounded; `None` if it is not one of ours
    /// or has no usable address.
    pub fn from_resolved(r: &ResolvedService) -> Option<Found> {
        let txt = |key: &str| r.get_property_val_str(key);
        let text = |key: &str, max: usize| {
            txt(key)
                .map(|v| truncate_utf8(v.trim(), max).to_owned())
                .unwrap_or_default()
        };
        if r.get_port() == 0 {
            return None;
        }
        let mut addrs: Vec<SocketAddr> = r
            .get_addresses()
            .iter()
            .map(|ip| SocketAddr::new(ip.to_ip_addr(), r.get_port()))
            .filter(|a| is_unicast(a.ip()))
            .collect();
        // IPv4 first, then by address: the same order every time.
        addrs.sort_by_key(|a| (a.is_ipv6(), *a));
        addrs.truncate(MAX_ADDRS);
        if addrs.is_empty() {
            return None;
        }
        let dimension = |key: &str| {
            txt(key)
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|&v| (1..=65_535).contains(&v))
        };
        let fps = txt("fps")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f > 0.0 && *f <= 1000.0);
        let mut name = text("name", MAX_NAME_BYTES);
        if name.is_empty() {
            name = truncate_utf8(r.get_fullname(), MAX_NAME_BYTES).to_owned();
        }
        Some(Found {
            fullname: truncate_utf8(r.get_fullname(), 255).to_owned(),
            name,
            role: text("role", 16),
            id: text("id", 16),
            addrs,
            width: dimension("w"),
            height: dimension("h"),
            fps,
            codecs: text("codecs", 64),
            token: txt("auth") == Some("token"),
            tls: txt("tls") == Some("1"),
        })
    }

    /// Whether `name` picks this source: its name, its id, or `NAME [ID]` as `list`
    /// prints it.
    pub fn answers_to(&self, name: &str) -> bool {
        let tagged = name
            .strip_prefix(self.name.as_str())
            .and_then(|rest| rest.strip_prefix(" ["))
            .and_then(|rest| rest.strip_suffix(']'));
        name == self.name || name == self.id || tagged == Some(self.id.as_str())
    }

    /// `1920x1080`, or `?` when the source did not say.
    pub fn size(&self) -> String {
        match (self.width, self.height) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => "?".to_owned(),
        }
    }

    /// `token, TLS`, `open`…
    pub fn security(&self) -> &'static str {
        match (self.token, self.tls) {
            (true, true) => "token, TLS",
            (true, false) => "token",
            (false, true) => "TLS",
            (false, false) => "open",
        }
    }
}

/// Whether `ip` can be dialed: not unspecified, multicast or broadcast (an announcement
/// may claim anything).
fn is_unicast(ip: IpAddr) -> bool {
    let v4_broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !ip.is_unspecified() && !ip.is_multicast() && !v4_broadcast
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct DiscoveryError(String);

impl From<mdns_sd::Error> for DiscoveryError {
    fn from(e: mdns_sd::Error) -> DiscoveryError {
        DiscoveryError(e.to_string())
    }
}

/// This machine's host name, for the `.local.` name of an announcement and the default
/// source names.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "texstream".to_owned())
}

/// Announces a listening `node` on the LAN under `name` (default `HOST (role)`), with
/// its frame size and rate when known; returns the announcer and the name announced.
/// `Ok(None)` when the node does not listen.
pub fn announce(
    node: &super::Node,
    name: Option<&str>,
    size: Option<(u32, u32)>,
    fps: Option<f64>,
) -> Result<Option<(Announcer, String)>, DiscoveryError> {
    let Some(listen) = node.local_addr() else {
        return Ok(None);
    };
    let config = node.config();
    let what = Announcement {
        name: name.map_or_else(
            || format!("{} ({})", host_name(), config.role.name()),
            str::to_owned,
        ),
        role: config.role,
        size,
        fps,
        token: config.token.is_some(),
        tls: config.tls.is_some(),
        instance: node.instance(),
    };
    let announcer = Announcer::start(&what, listen)?;
    Ok(Some((announcer, what.name)))
}

/// An announcement on the LAN, withdrawn (with mDNS goodbyes) when dropped.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Announcer {
    /// Announces `what` as reachable at `listen`: on its address's interface if it is a
    /// specific one (loopback only for 127.0.0.1), on every interface's addresses if it
    /// is unspecified (0.0.0.0).
    pub fn start(what: &Announcement, listen: SocketAddr) -> Result<Announcer, DiscoveryError> {
        let daemon = ServiceDaemon::new()?;
        let host = format!("{}.local.", dns_label(&host_name()));
        let txt = what.txt();
        let props: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let label = what.instance_label();
        let info = if listen.ip().is_unspecified() {
            ServiceInfo::new(SERVICE_TYPE, &label, &host, "", listen.port(), &props[..])?
                .enable_addr_auto()
        } else {
            if listen.ip().is_loopback() {
                daemon.disable_interface(IfKind::All)?;
                daemon.enable_interface(match listen.ip() {
                    IpAddr::V4(_) => IfKind::LoopbackV4,
                    IpAddr::V6(_) => IfKind::LoopbackV6,
                })?;
            }
            ServiceInfo::new(
                SERVICE_TYPE,
                &label,
                &host,
                listen.ip(),
                listen.port(),
                &props[..],
            )?
        };
        let fullname = info.get_fullname().to_owned();
        daemon.register(info)?;
        Ok(Announcer { daemon, fullname })
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // The goodbyes go out before the daemon stops; wait a little for them.
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }
}

/// A host name as one DNS label: letters, digits and hyphens, at most 63 bytes.
fn dns_label(name: &str) -> String {
    let label: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    if label.is_empty() {
        "texstream".to_owned()
    } else {
        label
    }
}

/// A change in what a browser sees.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceChange {
    Appeared(Found),
    /// The source's address or figures changed.
    Changed(Found),
    Gone(Found),
}

/// How often a browser asks its sources whether they are still there, and how long
/// each has to answer: a source that ended without its goodbyes (killed, cut off) is
/// dropped within about `VERIFY_EVERY + VERIFY_WITHIN` instead of when its records
/// expire (two minutes and more).
const VERIFY_EVERY: Duration = Duration::from_secs(4);
const VERIFY_WITHIN: Duration = Duration::from_secs(2);

/// The sources on the LAN, as they come and go.
pub struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    sources: SourceTable,
    last_verify: std::time::Instant,
}

impl Browser {
    pub fn start() -> Result<Browser, DiscoveryError> {
        let daemon = ServiceDaemon::new()?;
        let events = daemon.browse(SERVICE_TYPE)?;
        Ok(Browser {
            daemon,
            events,
            sources: SourceTable::default(),
            last_verify: std::time::Instant::now(),
        })
    }

    /// Every [`VERIFY_EVERY`], asks each known source to answer within
    /// [`VERIFY_WITHIN`]; one that does not is removed (and reported gone).
    fn verify(&mut self) {
        let now = std::time::Instant::now();
        if now.duration_since(self.last_verify) < VERIFY_EVERY {
            return;
        }
        self.last_verify = now;
        for fullname in self.sources.by_fullname.keys() {
            // A full command queue only delays the check to the next round.
            let _ = self.daemon.verify(fullname.clone(), VERIFY_WITHIN);
        }
    }

    /// Takes what the network said since the last call; returns the changes.
    pub fn poll(&mut self) -> Vec<SourceChange> {
        let mut changes = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            changes.extend(self.sources.on_event(event));
        }
        changes
    }

    /// Waits at most `timeout` for something to happen, then as [`Browser::poll`].
    pub fn wait(&mut self, timeout: Duration) -> Vec<SourceChange> {
        self.verify();
        match self.events.recv_timeout(timeout) {
            Ok(event) => {
                let mut changes: Vec<SourceChange> =
                    self.sources.on_event(event).into_iter().collect();
                changes.extend(self.poll());
                changes
            }
            Err(_) => Vec::new(),
        }
    }

    /// The sources seen now, by name.
    pub fn sources(&self) -> Vec<Found> {
        self.sources.list()
    }

    /// Announcements ignored because the table was full.
    pub fn ignored(&self) -> u64 {
        self.sources.ignored
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        let _ = self.daemon.shutdown();
    }
}

/// What a dial target starts with when it names a source instead of an address.
pub const BY_NAME: &str = "source:";

/// The sources a node dials by name: a [`Browser`] on a thread of its own keeps what
/// the LAN announces, so a dial finds a source's newest address without waiting.
pub struct Directory {
    shared: std::sync::Arc<DirectoryShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct DirectoryShared {
    sources: std::sync::Mutex<Vec<Found>>,
    /// Bumped at every change of `sources`, so a window copies them only then.
    generation: std::sync::atomic::AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

impl Directory {
    pub fn start() -> Result<Directory, DiscoveryError> {
        let mut browser = Browser::start()?;
        let shared = std::sync::Arc::new(DirectoryShared {
            sources: std::sync::Mutex::new(Vec::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("texstream sources".into())
            .spawn(move || {
                while !s.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if !browser.wait(Duration::from_millis(200)).is_empty() {
                        *super::link::lock(&s.sources) = browser.sources();
                        s.generation
                            .fetch_add(1, std::sync::atomic::Ordering::Release);
                    }
                }
            })
            .map_err(|e| DiscoveryError(format!("cannot start a thread: {e}")))?;
        Ok(Directory {
            shared,
            thread: Some(thread),
        })
    }

    /// The sources heard now, if they changed since `seen` (a generation this returned
    /// before, 0 at first); `seen` is brought up to date. Cheap when nothing changed:
    /// one atomic read, no copy.
    pub fn sources_since(&self, seen: &mut u64) -> Option<Vec<Found>> {
        let now = self
            .shared
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        if now == *seen {
            return None;
        }
        *seen = now;
        Some(super::link::lock(&self.shared.sources).clone())
    }

    /// The address of the source called `name` (its name, `NAME [ID]` as `list`
    /// prints it, or its id). Of several sources of one name, the first by id.
    pub fn lookup(&self, name: &str) -> Result<SocketAddr, super::NetError> {
        let sources = super::link::lock(&self.shared.sources);
        sources
            .iter()
            .find(|f| f.answers_to(name))
            .and_then(|f| f.addrs.first().copied())
            .ok_or_else(|| super::NetError::SourceNotFound(name.to_owned()))
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sources a browser knows, bounded: pure, so its limits are tested without a
/// network.
#[derive(Default)]
struct SourceTable {
    by_fullname: BTreeMap<String, Found>,
    ignored: u64,
}

impl SourceTable {
    fn on_event(&mut self, event: ServiceEvent) -> Option<SourceChange> {
        match event {
            ServiceEvent::ServiceResolved(r) => self.resolved(Found::from_resolved(&r)?),
            ServiceEvent::ServiceRemoved(_, fullname) => {
                self.by_fullname.remove(&fullname).map(SourceChange::Gone)
            }
            _ => None,
        }
    }

    fn resolved(&mut self, found: Found) -> Option<SourceChange> {
        let full = self.by_fullname.len() >= MAX_SOURCES;
        match self.by_fullname.get_mut(&found.fullname) {
            Some(known) if *known == found => None,
            Some(known) => {
                *known = found.clone();
                Some(SourceChange::Changed(found))
            }
            None if full => {
                self.ignored += 1;
                None
            }
            None => {
                self.by_fullname
                    .insert(found.fullname.clone(), found.clone());
                Some(SourceChange::Appeared(found))
            }
        }
    }

    fn list(&self) -> Vec<Found> {
        let mut list: Vec<Found> = self.by_fullname.values().cloned().collect();
        list.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(fullname: &str, port: u16, txt: &[(&str, &str)]) -> ResolvedService {
        let info = ServiceInfo::new(SERVICE_TYPE, "x", "h.local.", "192.0.2.7", port, txt)
            .expect("service info");
        let mut r = info.as_resolved_service();
        r.fullname = fullname.to_owned();
        r
    }

    #[test]
    fn an_announcement_reads_back_as_it_was_said() {
        let a = Announcement {
            name: "studio (sender)".into(),
            role: Role::Sender,
            size: Some((1920, 1080)),
            fps: Some(59.94),
            token: true,
            tls: false,
            instance: 0xabcdef0123456789,
        };
        let txt = a.txt();
        let props: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let found = Found::from_resolved(&resolved("s._texstream._tcp.local.", 7878, &props))
            .expect("ours");
        assert_eq!(found.name, "studio (sender)");
        assert_eq!(found.role, "sender");
        assert_eq!(found.id, "abcdef0123456789");
        assert_eq!(
            found.addrs,
            vec!["192.0.2.7:7878".parse().expect("an address")]
        );
        assert_eq!(
            (found.width, found.height, found.fps),
            (Some(1920), Some(1080), Some(59.94))
        );
        assert_eq!(found.security(), "token");
        assert_eq!(a.instance_label(), "studio (sender) [23456789]");
        for name in [
            "studio (sender)",
            "abcdef0123456789",
            "studio (sender) [abcdef0123456789]",
        ] {
            assert!(found.answers_to(name), "{name}");
        }
        for name in [
            "studio",
            "studio (sender) [23456789]",
            "studio (sender) [abcdef0123456789",
        ] {
            assert!(!found.answers_to(name), "{name}");
        }
    }

    #[test]
    fn hostile_announcements_are_bounded_or_ignored() {
        // A TXT string holds 255 bytes at most (a key, `=`, the value).
        let huge = "n".repeat(250);
        let found = Found::from_resolved(&resolved(
            "big._texstream._tcp.local.",
            7878,
            &[
                ("name", &huge),
                ("w", "99999999999"),
                ("h", "-3"),
                ("fps", "NaN"),
                ("role", &huge),
            ],
        ))
        .expect("bounded, kept");
        assert_eq!(found.name.len(), MAX_NAME_BYTES);
        assert_eq!(found.role.len(), 16);
        assert_eq!((found.width, found.height, found.fps), (None, None, None));
        // No port: not a source.
        assert!(Found::from_resolved(&resolved("p._texstream._tcp.local.", 0, &[])).is_none());

        // Thousands of records: the table keeps its limit and counts the rest.
        let mut table = SourceTable::default();
        for i in 0..3000 {
            let r = resolved(
                &format!("s{i}._texstream._tcp.local."),
                7878,
                &[("name", "x")],
            );
            table.on_event(ServiceEvent::ServiceResolved(Box::new(r)));
        }
        assert_eq!(table.list().len(), MAX_SOURCES);
        assert_eq!(table.ignored, 3000 - MAX_SOURCES as u64);
    }

    #[test]
    fn a_source_comes_changes_and_goes_once_each() {
        let mut table = SourceTable::default();
        let r = |port| {
            ServiceEvent::ServiceResolved(Box::new(resolved(
                "a._texstream._tcp.local.",
                port,
                &[("name", "a")],
            )))
        };
        assert!(matches!(
            table.on_event(r(1000)),
            Some(SourceChange::Appeared(_))
        ));
        assert_eq!(table.on_event(r(1000)), None, "the same again is no change");
        assert!(
            matches!(table.on_event(r(2000)), Some(SourceChange::Changed(f)) if f.addrs[0].port() == 2000)
        );
        let gone =
            ServiceEvent::ServiceRemoved(SERVICE_TYPE.into(), "a._texstream._tcp.local.".into());
        assert!(matches!(table.on_event(gone), Some(SourceChange::Gone(_))));
        assert!(table.list().is_empty());
    }
}
