//! The viewer window's source panel: the sources announced on the LAN (read from the
//! node's directory, which browses on a thread of its own: the UI thread only copies the
//! list when it changed), an address field, the recent sources, and the streams that
//! arrive at this node, one of them shown. A click switches what is watched without a
//! restart; nothing here waits on the network.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::net::discovery::{Directory, Found, BY_NAME};
use crate::net::{Node, Origin, PeerId, PeerState, PeerStatus};

/// Recent sources kept (and written to the recent file).
pub const MAX_RECENT: usize = 8;
/// Bytes of the recent file read at most; longer lines are skipped.
const MAX_RECENT_FILE: u64 = 16 << 10;
const MAX_TARGET_BYTES: usize = 300;

/// What the user asked for in the panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourcePick {
    /// Watch this dial target instead (an address, or `source:NAME [ID]`).
    Watch(String),
    /// Show this peer's stream among those arriving (`None`: the first that sends).
    Show(Option<PeerId>),
}

/// The source panel's state.
pub struct SourcesPanel {
    /// The node's LAN directory, or why there is none.
    directory: Result<Arc<Directory>, String>,
    seen: u64,
    found: Vec<Found>,
    /// The address field.
    address: String,
    /// Why the address typed cannot be dialed.
    address_error: Option<String>,
    recent: VecDeque<String>,
    /// Where the recent sources are kept between runs, if anywhere.
    recent_file: Option<PathBuf>,
}

impl SourcesPanel {
    /// Starts (or shares) `node`'s LAN directory; a failure is shown in the panel.
    pub fn new(node: &Node) -> SourcesPanel {
        SourcesPanel {
            directory: node.directory().map_err(|e| e.to_string()),
            seen: 0,
            found: Vec::new(),
            address: String::new(),
            address_error: None,
            recent: VecDeque::new(),
            recent_file: None,
        }
    }

    /// Keeps the recent sources in `path` (one target a line): read now, written when
    /// the panel is dropped.
    pub fn set_recent_file(&mut self, path: PathBuf) {
        self.recent = read_recent(&path);
        self.recent_file = Some(path);
    }

    /// The sources listed now.
    pub fn found(&self) -> &[Found] {
        &self.found
    }

    /// The recent sources, newest first.
    pub fn recent(&self) -> impl Iterator<Item = &str> {
        self.recent.iter().map(String::as_str)
    }

    /// Takes the directory's list if it changed. One atomic read when it did not.
    pub fn refresh(&mut self) {
        if let Ok(directory) = &self.directory {
            if let Some(found) = directory.sources_since(&mut self.seen) {
                self.found = found;
            }
        }
    }

    /// Notes `target` as watched: first among the recent ones.
    pub fn watched(&mut self, target: &str) {
        push_recent(&mut self.recent, target);
    }

    /// Draws the panel; returns what was clicked, if anything.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        peers: &[PeerStatus],
        shown: Option<PeerId>,
    ) -> Option<SourcePick> {
        let mut pick = None;
        let dialed: Vec<&PeerStatus> = peers
            .iter()
            .filter(|p| p.origin == Origin::Dialed)
            .collect();
        ui.label(egui::RichText::new("On the LAN").strong());
        match &self.directory {
            Err(e) => {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("LAN discovery is off: {e}. Addresses still work."),
                );
            }
            Ok(_) if self.found.is_empty() => {
                ui.weak("no source heard yet (mDNS, UDP 5353)");
            }
            Ok(_) => {
                egui::ScrollArea::vertical()
                    .id_salt("lan sources")
                    .max_height(180.0)
                    .show(ui, |ui| {
                        for f in &self.found {
                            let target = found_target(f);
                            let watching = dialed.iter().any(|p| {
                                p.target == target || p.addr.is_some_and(|a| f.addrs.contains(&a))
                            });
                            let addr = f.addrs.first().map_or_else(String::new, |a| a.to_string());
                            let fps = f
                                .fps
                                .map_or_else(String::new, |fps| format!(" {fps:.0} fps"));
                            let details = format!("{addr} · {}{fps} · {}", f.size(), f.security());
                            ui.horizontal(|ui| {
                                let r = ui
                                    .selectable_label(
                                        watching,
                                        crate::app::text::display_text(&f.name),
                                    )
                                    .on_hover_text(format!("{} [{}]: {details}", f.name, f.id));
                                if r.clicked() && !watching {
                                    pick = Some(SourcePick::Watch(target.clone()));
                                }
                                ui.weak(details);
                            });
                        }
                    });
            }
        }
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            let label = ui.label("Address");
            let edit = ui
                .add(
                    egui::TextEdit::singleline(&mut self.address)
                        .hint_text("HOST:PORT")
                        .desired_width(160.0),
                )
                .labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Connect").clicked() || enter {
                match check_address(&self.address) {
                    Ok(target) => {
                        self.address_error = None;
                        pick = Some(SourcePick::Watch(target));
                    }
                    Err(e) => self.address_error = Some(e),
                }
            }
        });
        if let Some(e) = &self.address_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if !self.recent.is_empty() {
            ui.label(egui::RichText::new("Recent").strong());
            for target in &self.recent {
                let watching = dialed.iter().any(|p| &p.target == target);
                let text = target_text(target);
                if ui
                    .selectable_label(watching, text.clone())
                    .on_hover_text(format!("watch {text} again"))
                    .clicked()
                    && !watching
                {
                    pick = Some(SourcePick::Watch(target.clone()));
                }
            }
        }
        let sources: Vec<&PeerStatus> = peers
            .iter()
            .filter(|p| p.sends_frames && p.state == PeerState::Connected)
            .collect();
        if sources.len() > 1 {
            ui.label(egui::RichText::new("Streams arriving").strong())
                .on_hover_text("peers that send frames here; one is shown, never a mix");
            for p in sources {
                let who = p
                    .name
                    .as_deref()
                    .map_or_else(|| p.target.clone(), crate::app::text::display_text);
                let addr = p.addr.map_or_else(|| p.target.clone(), |a| a.to_string());
                let is_shown = shown == Some(p.id);
                if ui
                    .selectable_label(is_shown, format!("{who} ({addr})"))
                    .on_hover_text(if is_shown {
                        "shown now"
                    } else {
                        "show this stream"
                    })
                    .clicked()
                    && !is_shown
                {
                    pick = Some(SourcePick::Show(Some(p.id)));
                }
            }
        }
        pick
    }
}

impl Drop for SourcesPanel {
    fn drop(&mut self) {
        if let Some(path) = &self.recent_file {
            if let Err(e) = write_recent(path, &self.recent) {
                tracing::warn!("cannot keep the recent sources in {}: {e}", path.display());
            }
        }
    }
}

/// The dial target of a source found on the LAN: by name and id, so that it is
/// followed when it moves and never confused with another of the same name.
pub fn found_target(f: &Found) -> String {
    format!("{BY_NAME}{} [{}]", f.name, f.id)
}

/// A dial target as the panel shows it: a source's name, or the address.
fn target_text(target: &str) -> String {
    match target.strip_prefix(BY_NAME) {
        Some(name) => crate::app::text::display_text(name),
        None => target.to_owned(),
    }
}

/// `HOST:PORT` or `PORT` as typed, checked without resolving (that is the dialer's
/// job, off this thread).
fn check_address(typed: &str) -> Result<String, String> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Err("type an address: HOST:PORT, or a PORT on this machine".to_owned());
    }
    let target = crate::cli::normalize_addr(typed);
    let port = target
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(port)))
            if !host.is_empty() && port != 0 && target.len() <= MAX_TARGET_BYTES =>
        {
            Ok(target)
        }
        _ => Err(format!("{typed:?} is not HOST:PORT")),
    }
}

/// Puts `target` first in `recent`, once, keeping at most [`MAX_RECENT`].
fn push_recent(recent: &mut VecDeque<String>, target: &str) {
    recent.retain(|t| t != target);
    recent.push_front(target.to_owned());
    recent.truncate(MAX_RECENT);
}

fn read_recent(path: &Path) -> VecDeque<String> {
    use std::io::Read as _;
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_RECENT_FILE).read_to_string(&mut text));
    if read.is_err() {
        return VecDeque::new();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.len() <= MAX_TARGET_BYTES)
        .take(MAX_RECENT)
        .map(str::to_owned)
        .collect()
}

fn write_recent(path: &Path, recent: &VecDeque<String>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::new();
    for target in recent {
        text.push_str(target);
        text.push('\n');
    }
    let temp = path.with_extension("part");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_without_resolving() {
        assert_eq!(check_address(" 7878 "), Ok("127.0.0.1:7878".to_owned()));
        assert_eq!(
            check_address("studio.local:7878"),
            Ok("studio.local:7878".to_owned())
        );
        assert_eq!(check_address("[::1]:7878"), Ok("[::1]:7878".to_owned()));
        for bad in ["", "studio", "studio:", ":0", "h:99999", ":x"] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recent_sources_are_kept_newest_first_without_repeats_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("sub").join("recent-sources");
        let mut recent = VecDeque::new();
        for i in 0..12 {
            push_recent(&mut recent, &format!("10.0.0.{i}:7878"));
        }
        push_recent(&mut recent, "10.0.0.5:7878");
        write_recent(&path, &recent).expect("written");
        let back = read_recent(&path);
        assert_eq!(back.len(), MAX_RECENT);
        assert_eq!(back[0], "10.0.0.5:7878");
        assert_eq!(back.iter().filter(|t| *t == "10.0.0.5:7878").count(), 1);
        assert_eq!(back, recent);
        // A hostile or broken file: long lines skipped, the size bounded.
        std::fs::write(&path, format!("{}\n1.2.3.4:5\n", "x".repeat(5000))).expect("written");
        assert_eq!(read_recent(&path), VecDeque::from(["1.2.3.4:5".to_owned()]));
        assert!(read_recent(&dir.path().join("none")).is_empty());
    }
}
