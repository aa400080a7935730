//! The transfers panel both windows show: one row per file in and out, with progress,
//! speed, time left and state, "Cancel" on unfinished ones and "Open folder" on received
//! ones. The list is read from the node a few times a second, not every frame, and the
//! folder is opened on a thread of its own.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::text::{display_text, human_bytes};
use crate::net::{Direction, Node, TransferId, TransferState, TransferStatus};

/// The list is re-read from the node at most this often (a read clones every name),
/// unless something changed.
pub const READ_EVERY: Duration = Duration::from_millis(200);
/// While a transfer is unfinished the window repaints this often, so the bars move (the
/// node wakes the window only on events).
pub const REPAINT_WHILE_ACTIVE: Duration = Duration::from_millis(200);
/// Characters of a name, peer name or reason shown in a row; the rest is on hover.
const SHOWN_CHARS: usize = 48;
/// The list grows with its rows up to this height (about seven rows), then scrolls.
const MAX_LIST_HEIGHT: f32 = 180.0;
/// Folder openers running at once; further clicks wait for one to end.
const MAX_OPENING: usize = 4;

/// What the panel needs from a node: [`Node`] itself, or a stand-in in tests.
pub trait TransferControl {
    fn transfers(&self) -> Vec<TransferStatus>;
    fn cancel_transfer(&self, id: TransferId);
    fn clear_finished_transfers(&self);
}

impl TransferControl for Node {
    fn transfers(&self) -> Vec<TransferStatus> {
        Node::transfers(self)
    }

    fn cancel_transfer(&self, id: TransferId) {
        Node::cancel_transfer(self, id);
    }

    fn clear_finished_transfers(&self) {
        Node::clear_finished_transfers(self);
    }
}

/// Opens a folder; `Err` says why it could not.
type OpenFn = dyn Fn(&Path) -> Result<(), String> + Send + Sync;

/// Opens a folder in the desktop's file manager. Always called on a thread of its own,
/// never on the UI thread; tests give a stand-in that records the folder.
#[derive(Clone)]
pub struct FolderOpener(Arc<OpenFn>);

impl FolderOpener {
    pub fn new(open: impl Fn(&Path) -> Result<(), String> + Send + Sync + 'static) -> Self {
        FolderOpener(Arc::new(open))
    }

    /// The desktop's own opener: `xdg-open` (`open` on macOS, `explorer` on Windows),
    /// waited for (and so reaped) on the opener's thread.
    pub fn system() -> Self {
        FolderOpener::new(open_with_desktop)
    }
}

impl Default for FolderOpener {
    fn default() -> Self {
        FolderOpener::system()
    }
}

impl std::fmt::Debug for FolderOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FolderOpener")
    }
}

fn open_with_desktop(dir: &Path) -> Result<(), String> {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let status = std::process::Command::new(program)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // explorer answers 1 even when it opened the folder.
    if status.success() || cfg!(windows) {
        Ok(())
    } else {
        Err(format!("{program} failed ({status})"))
    }
}

/// A folder opener's outcome: the folder, and why it could not be opened.
type Opened = (PathBuf, Result<(), String>);

/// The panel's state: the last list read from the node, the transfers asked to stop,
/// and the folder openers in flight.
pub struct TransfersView {
    rows: Vec<TransferStatus>,
    read_at: Option<Instant>,
    /// Something happened (an event, a drop, a click): read at the next refresh.
    changed: bool,
    /// Asked to stop, not finished yet (an outgoing transfer blocked on a full link
    /// stops when its next chunk goes out).
    cancelling: HashSet<TransferId>,
    opener: FolderOpener,
    opened: (flume::Sender<Opened>, flume::Receiver<Opened>),
    opening: usize,
    /// The last folder that could not be opened, and why.
    open_error: Option<String>,
}

impl Default for TransfersView {
    fn default() -> Self {
        TransfersView::new(FolderOpener::system())
    }
}

impl TransfersView {
    pub fn new(opener: FolderOpener) -> Self {
        TransfersView {
            rows: Vec::new(),
            read_at: None,
            changed: true,
            cancelling: HashSet::new(),
            opener,
            // Each opener sends exactly one outcome: the channel is never full.
            opened: flume::bounded(MAX_OPENING),
            opening: 0,
            open_error: None,
        }
    }

    pub fn set_opener(&mut self, opener: FolderOpener) {
        self.opener = opener;
    }

    /// Reads the list at the next [`TransfersView::refresh`], however recent the last
    /// read (a file event arrived, a file was dropped).
    pub fn mark_changed(&mut self) {
        self.changed = true;
    }

    /// Re-reads the list when something changed or the last read is older than
    /// [`READ_EVERY`]; takes the outcomes of folder openers. Never waits.
    pub fn refresh(&mut self, control: &dyn TransferControl, now: Instant) {
        for (dir, result) in self.opened.1.try_iter() {
            self.opening = self.opening.saturating_sub(1);
            self.open_error = result
                .err()
                .map(|e| format!("cannot open {}: {e}", dir.display()));
        }
        let stale = self
            .read_at
            .is_none_or(|at| now.saturating_duration_since(at) >= READ_EVERY);
        if !(self.changed || stale) {
            return;
        }
        self.rows = control.transfers();
        // Oldest first, new ones at the end: a row never moves under the pointer when
        // another starts or finishes.
        self.rows.sort_by_key(|r| r.id);
        self.read_at = Some(now);
        self.changed = false;
        let rows = &self.rows;
        self.cancelling
            .retain(|id| rows.iter().any(|r| r.id == *id && !r.state.finished()));
    }

    /// The transfers as last read, oldest first.
    pub fn rows(&self) -> &[TransferStatus] {
        &self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether a transfer is still under way.
    pub fn active(&self) -> bool {
        self.rows.iter().any(|r| !r.state.finished())
    }

    /// Draws the panel: a header with "Clear finished", then one row per transfer.
    pub fn transfers_ui(&mut self, ui: &mut egui::Ui, control: &dyn TransferControl) {
        let running = self.rows.iter().filter(|r| !r.state.finished()).count();
        let finished = self.rows.len() - running;
        ui.horizontal(|ui| {
            ui.strong("Transfers");
            ui.weak(format!("{running} under way, {finished} finished"));
            if ui
                .add_enabled(finished > 0, egui::Button::new("Clear finished"))
                .on_hover_text("Remove finished transfers from this list")
                .clicked()
            {
                control.clear_finished_transfers();
                self.changed = true;
            }
            if let Some(e) = &self.open_error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
        });
        let mut cancel = None;
        let mut open = None;
        egui::ScrollArea::vertical()
            .id_salt("transfers")
            .auto_shrink([false, true])
            .stick_to_bottom(true)
            .min_scrolled_height(MAX_LIST_HEIGHT)
            .max_height(MAX_LIST_HEIGHT)
            .show(ui, |ui| {
                egui::Grid::new("transfers")
                    .striped(true)
                    .num_columns(8)
                    .show(ui, |ui| {
                        for row in &self.rows {
                            let cancelling = self.cancelling.contains(&row.id);
                            match row_ui(ui, row, cancelling) {
                                Some(RowAction::Cancel) => cancel = Some(row.id),
                                Some(RowAction::OpenFolder(dir)) => open = Some(dir),
                                None => {}
                            }
                            ui.end_row();
                        }
                    });
            });
        if let Some(id) = cancel {
            control.cancel_transfer(id);
            self.cancelling.insert(id);
            self.changed = true;
        }
        if let Some(dir) = open {
            self.open_folder(ui.ctx(), dir);
        }
        if self.active() || self.opening > 0 {
            ui.ctx().request_repaint_after(REPAINT_WHILE_ACTIVE);
        }
    }

    /// Runs the opener on a thread of its own; its outcome comes back through a channel.
    fn open_folder(&mut self, ctx: &egui::Context, dir: PathBuf) {
        if self.opening >= MAX_OPENING {
            self.open_error = Some("still opening folders; try again in a moment".to_owned());
            return;
        }
        let opener = self.opener.clone();
        let done = self.opened.0.clone();
        let ctx = ctx.clone();
        let thread_dir = dir.clone();
        let spawned = std::thread::Builder::new()
            .name("texstream open folder".to_owned())
            .spawn(move || {
                let result = (opener.0)(&thread_dir);
                let _ = done.try_send((thread_dir, result));
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => {
                self.opening += 1;
                self.open_error = None;
            }
            Err(e) => {
                self.open_error = Some(format!("cannot open {}: {e}", dir.display()));
            }
        }
    }
}

enum RowAction {
    Cancel,
    OpenFolder(PathBuf),
}

/// One transfer's cells: direction, name, peer, progress, speed, time left, state,
/// buttons. Names, peer names and reasons come from peers: they are escaped.
fn row_ui(ui: &mut egui::Ui, row: &TransferStatus, cancelling: bool) -> Option<RowAction> {
    let incoming = row.direction == Direction::Incoming;
    ui.label(if incoming { "receiving" } else { "sending" });
    ui.label(shortened(&row.name))
        .on_hover_text(display_text(&row.name));
    let peer = if row.peer_name.is_empty() {
        format!("peer {}", row.peer)
    } else {
        display_text(&row.peer_name)
    };
    let peer = if incoming {
        format!("from {peer}")
    } else {
        format!("to {peer}")
    };
    ui.label(shortened(&peer)).on_hover_text(peer);
    ui.add(
        egui::ProgressBar::new(row.fraction())
            .desired_width(180.0)
            .text(format!(
                "{} / {}",
                human_bytes(row.done_bytes),
                human_bytes(row.size)
            )),
    );
    let running = row.state == TransferState::Running;
    if running && row.bytes_per_sec > 0.0 {
        ui.label(speed_text(row.bytes_per_sec));
    } else {
        ui.weak("-");
    }
    match row.time_left.filter(|_| running) {
        Some(left) => ui.label(time_left_text(left)),
        None => ui.weak("-"),
    };
    state_ui(ui, row, cancelling);
    ui.horizontal(|ui| {
        if !row.state.finished() {
            if cancelling {
                ui.add_enabled(false, egui::Button::new("Cancel"));
            } else if ui
                .button("Cancel")
                .on_hover_text("Stop this transfer (a partial file is deleted)")
                .clicked()
            {
                return Some(RowAction::Cancel);
            }
        }
        let stored = row.path.as_deref().filter(|_| incoming);
        if let (TransferState::Done { .. }, Some(path)) = (&row.state, stored) {
            let dir = path.parent().unwrap_or(path).to_owned();
            if ui
                .button("Open folder")
                .on_hover_text(format!("Show {} in the file manager", path.display()))
                .clicked()
            {
                return Some(RowAction::OpenFolder(dir));
            }
        }
        None
    })
    .inner
}

fn state_ui(ui: &mut egui::Ui, row: &TransferStatus, cancelling: bool) {
    let resumed = match row.resumes {
        0 => String::new(),
        1 => " (resumed once)".to_owned(),
        n => format!(" (resumed {n} times)"),
    };
    match &row.state {
        TransferState::Waiting if cancelling => ui.label("cancelling…"),
        TransferState::Waiting => ui
            .label("waiting")
            .on_hover_text("Offered; the peer has not answered yet"),
        TransferState::Running if cancelling => ui.label("cancelling…"),
        TransferState::Running => ui.label(format!("running{resumed}")),
        TransferState::Paused { reason } => ui
            .colored_label(
                ui.visuals().warn_fg_color,
                "paused: resumes when the peer is back",
            )
            .on_hover_text(display_text(reason)),
        TransferState::Done { message } => {
            let done = ui.label(format!("done{resumed}"));
            if message.is_empty() {
                done
            } else {
                done.on_hover_text(display_text(message))
            }
        }
        TransferState::Failed { reason } => ui
            .colored_label(
                ui.visuals().error_fg_color,
                format!("failed: {}", shortened(reason)),
            )
            .on_hover_text(display_text(reason)),
    };
}

/// `text` escaped (it comes from peers) and cut to [`SHOWN_CHARS`] characters.
fn shortened(text: &str) -> String {
    let shown = display_text(text);
    if shown.chars().count() <= SHOWN_CHARS {
        return shown;
    }
    let mut cut: String = shown.chars().take(SHOWN_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `12.5 MB/s`, `320.0 KB/s`, …
fn speed_text(bytes_per_sec: f64) -> String {
    format!("{}/s", human_bytes(bytes_per_sec as u64))
}

/// `12 s left`, `3 min 05 s left`, `2 h 10 min left`.
fn time_left_text(left: Duration) -> String {
    let secs = left.as_secs_f64().ceil() as u64;
    match secs {
        0..=59 => format!("{secs} s left"),
        60..=3599 => format!("{} min {:02} s left", secs / 60, secs % 60),
        _ => format!("{} h {:02} min left", secs / 3600, secs / 60 % 60),
    }
}

/// Outcomes of offers waiting to be shown, at most; an offering thread waits for room.
const OFFER_OUTCOMES: usize = 64;

/// Offers dropped files on threads of their own and hands the outcomes back to the
/// window: reading a file's metadata may take long (a slow or network mount), and the
/// UI thread never waits on it. Each outcome wakes the window.
pub struct FileOffers {
    tx: flume::Sender<(PathBuf, Result<usize, crate::net::NetError>)>,
    rx: flume::Receiver<(PathBuf, Result<usize, crate::net::NetError>)>,
}

impl Default for FileOffers {
    fn default() -> Self {
        let (tx, rx) = flume::bounded(OFFER_OUTCOMES);
        FileOffers { tx, rx }
    }
}

impl FileOffers {
    /// Offers `path` to every peer that takes files, through `offerer`, off this thread.
    pub fn offer(&self, offerer: crate::net::FileOfferer, path: PathBuf, ctx: &egui::Context) {
        let tx = self.tx.clone();
        let ctx = ctx.clone();
        let shown = path.clone();
        let spawned = std::thread::Builder::new()
            .name("texstream file offer".to_owned())
            .spawn(move || {
                let outcome = offerer.send_file(&path);
                let _ = tx.send((path, outcome));
                ctx.request_repaint();
            });
        if let Err(e) = spawned {
            let _ = self.tx.try_send((
                shown,
                Err(crate::net::NetError::Refused(format!(
                    "cannot start a thread to offer it: {e}"
                ))),
            ));
        }
    }

    /// The offers that finished since the last call: each path, and how many peers it
    /// was offered to or why not.
    pub fn finished(&self) -> Vec<(PathBuf, Result<usize, crate::net::NetError>)> {
        self.rx.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_and_times_read_well() {
        assert_eq!(speed_text(12_500_000.0), "12.5 MB/s");
        assert_eq!(speed_text(320_000.0), "320.0 KB/s");
        assert_eq!(time_left_text(Duration::from_millis(11_200)), "12 s left");
        assert_eq!(time_left_text(Duration::from_secs(185)), "3 min 05 s left");
        assert_eq!(time_left_text(Duration::from_secs(7800)), "2 h 10 min left");
    }

    #[test]
    fn names_from_peers_are_escaped_and_cut() {
        assert_eq!(shortened("a\u{202e}b.txt"), "a\\u{202e}b.txt");
        let long = shortened(&"x".repeat(500));
        assert_eq!(long.chars().count(), SHOWN_CHARS);
        assert!(long.ends_with('…'));
    }
}
