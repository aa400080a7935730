//! The viewer window: takes the newest frame its upload thread staged each pass without
//! blocking, copies it on the GPU into one persistent texture (registered with egui
//! once), and shows it fitted, 1:1 or zoomed and panned (gray and RGB frames as opaque
//! RGBA, float ones through a display range chosen in the toolbar, each frame's own by
//! default), with a status bar (rate, throughput, latency, the stages of a frame, drops,
//! resolution, connection state), PNG snapshots saved off the UI thread, the source
//! panel (sources on the LAN, an address, recent ones, one click to switch), chat,
//! peers, files sent by dropping them on the window, and the transfers in and out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::sources::{SourcePick, SourcesPanel};
use super::text::human_bytes;
use super::{dropped_paths, peers_ui, Chat, EguiTexture, FileOffers, FolderOpener, TransfersView};
use crate::frame::Frame;
use crate::gpu::{DisplayRange, Staged, UploadTexture, UploadThread, Uploaded};
use crate::meter::{FrameMeter, StageMeter};
use crate::net::{now_us, Event, NetError, Node, NodeConfig, PeerState, PeerStatus, Waker};

/// How often the status bar's figures refresh while no frame arrives.
const STATUS_REFRESH: Duration = Duration::from_millis(250);
/// How long one pass spends on what the network delivered (the newest staged frame's
/// copy into the texture, then the events), as rerun's viewer budgets its incoming
/// messages: what is left waits for the next pass, which is asked for at once.
pub const INCOMING_BUDGET: Duration = Duration::from_millis(10);

/// The clock the pass's budget is read from: `Instant::now` unless a test passes its own.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;
/// Zoom limits, in screen pixels per frame pixel.
const ZOOM_MIN: f32 = 0.02;
const ZOOM_MAX: f32 = 32.0;
/// A stream with no new frame for this long says so in the status bar.
const STALE_AFTER: Duration = Duration::from_secs(2);
/// Author shown on notes about transfers and connections in the chat panel.
const NOTE_FROM: &str = "texstream";

/// How the frame is placed in the view.
struct View {
    /// Fit the frame to the view (follows window resizes); otherwise `zoom` and `pan`.
    fit: bool,
    /// Screen pixels per frame pixel (1.0 is 1:1).
    zoom: f32,
    /// Offset of the frame's centre from the view's centre, in points.
    pan: egui::Vec2,
}

impl Default for View {
    fn default() -> View {
        View {
            fit: true,
            zoom: 1.0,
            pan: egui::Vec2::ZERO,
        }
    }
}

/// The stages of a shown frame the status bar reports: capture → taken by the upload
/// thread (the wire and the checksum, and whatever the sender did after its capture
/// timestamp), staged → taken by the window, and the copy into a staging buffer on the
/// upload thread.
const STAGES: usize = 3;

/// The node's waker for this window. With an upload thread it repaints for events only:
/// a frame wakes the window once the thread has staged it (a wake-up per received frame
/// as well would run a pass with nothing to show). Without one, for everything.
fn node_waker(
    events: Arc<OnceLock<flume::Receiver<Event>>>,
    ctx: &egui::Context,
    frames_staged: bool,
) -> Waker {
    let ctx = ctx.clone();
    Waker::new(move || {
        if !frames_staged || events.get().is_none_or(|e| !e.is_empty()) {
            ctx.request_repaint();
        }
    })
}

/// A snapshot being written on its own thread.
struct SavingSnapshot {
    done: flume::Receiver<Result<PathBuf, String>>,
}

/// The viewer window's state. The node comes in through [`ViewerApp::new`]'s config.
pub struct ViewerApp {
    node: Node,
    /// Device, queue and egui renderer; `None` when eframe runs without wgpu.
    render_state: Option<egui_wgpu::RenderState>,
    upload: UploadTexture,
    /// Copies each incoming frame into the upload ring; `None` without wgpu.
    upload_thread: Option<UploadThread>,
    /// Bytes of frames copied into staging buffers on the UI thread (none: the upload
    /// thread copies them).
    bytes_staged_on_ui: u64,
    texture: EguiTexture,
    /// The frame in the texture, kept (shared, not copied) for snapshots.
    last_frame: Option<Frame>,
    /// The UI thread's time per pass.
    pass: super::PassMeter,
    last_frame_at: Option<Instant>,
    frames_shown: u64,
    /// Frames the window took but replaced by a newer one in the same pass.
    frames_skipped: u64,
    /// Why the newest frame could not be shown (too large for this GPU, no wgpu).
    show_error: Option<String>,
    meter: FrameMeter,
    /// Medians of the shown frames' [`STAGES`], in milliseconds.
    stages: StageMeter<STAGES>,
    view: View,
    chat: Chat,
    sources: SourcesPanel,
    transfers: TransfersView,
    offers: FileOffers,
    snapshot_dir: PathBuf,
    saving: Option<SavingSnapshot>,
    /// The last snapshot's outcome, shown in the toolbar.
    snapshot_note: Option<Result<PathBuf, String>>,
    /// What [`INCOMING_BUDGET`] is measured on.
    clock: Clock,
    /// Events the last pass left for the next one, its budget spent.
    events_left: bool,
}

impl ViewerApp {
    /// Starts the node (its waker repaints this window) and keeps eframe's wgpu handles.
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        mut config: NodeConfig,
        snapshot_dir: PathBuf,
    ) -> Result<ViewerApp, NetError> {
        let events = Arc::new(OnceLock::new());
        let frames_staged = cc.wgpu_render_state.is_some();
        config.waker = Some(node_waker(events.clone(), &cc.egui_ctx, frames_staged));
        let node = Node::start(config)?;
        let _ = events.set(node.events().clone());
        let upload_thread = match &cc.wgpu_render_state {
            Some(rs) => {
                let ctx = cc.egui_ctx.clone();
                let thread = UploadThread::spawn(
                    rs.device.clone(),
                    node.frames().clone(),
                    move || ctx.request_repaint(),
                    None,
                )
                .map_err(|source| NetError::Io {
                    context: "cannot start the viewer's upload thread",
                    source,
                })?;
                Some(thread)
            }
            None => None,
        };
        let sources = SourcesPanel::new(&node);
        Ok(ViewerApp {
            sources,
            node,
            render_state: cc.wgpu_render_state.clone(),
            upload: UploadTexture::new(),
            upload_thread,
            bytes_staged_on_ui: 0,
            texture: EguiTexture::default(),
            last_frame: None,
            last_frame_at: None,
            frames_shown: 0,
            frames_skipped: 0,
            pass: super::PassMeter::new("viewer"),
            show_error: None,
            meter: FrameMeter::new(Duration::from_secs(1)),
            stages: StageMeter::new(Duration::from_secs(1)),
            view: View::default(),
            chat: Chat::default(),
            transfers: TransfersView::default(),
            offers: FileOffers::default(),
            snapshot_dir,
            saving: None,
            snapshot_note: None,
            clock: Arc::new(Instant::now),
            events_left: false,
        })
    }

    /// Measures each pass's [`INCOMING_BUDGET`] on `clock` (a test's, moved as it likes).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Frames written into the texture so far.
    pub fn frames_shown(&self) -> u64 {
        self.frames_shown
    }

    /// Width and height of the frame in the texture.
    pub fn shown_size(&self) -> Option<(u32, u32)> {
        self.last_frame
            .as_ref()
            .filter(|_| self.show_error.is_none())
            .map(|f| (f.meta().width, f.meta().height))
    }

    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// The source panel: sources on the LAN, recent ones.
    pub fn sources(&self) -> &SourcesPanel {
        &self.sources
    }

    pub fn sources_mut(&mut self) -> &mut SourcesPanel {
        &mut self.sources
    }

    /// Watches `target` instead of what is watched now (an address, or `source:NAME`
    /// for a source on the LAN): the sources dialed now are hung up, and the next
    /// frame shown is the new one's. Never waits.
    pub fn watch(&mut self, target: &str) {
        self.node.switch_to(target);
        self.sources.watched(target);
        let shown = target
            .strip_prefix(crate::net::discovery::BY_NAME)
            .unwrap_or(target);
        self.chat
            .note(NOTE_FROM, &format!("watching {shown}"), now_us());
    }

    /// The transfers panel's state (its rows as last read from the node).
    pub fn transfers(&self) -> &TransfersView {
        &self.transfers
    }

    /// How "Open folder" opens a folder (the desktop's opener unless replaced).
    pub fn set_folder_opener(&mut self, opener: FolderOpener) {
        self.transfers.set_opener(opener);
    }

    /// The persistent texture frames are written into.
    pub fn upload_texture(&self) -> &UploadTexture {
        &self.upload
    }

    /// Takes what the network delivered: the newest complete frame (older ones are
    /// skipped), then events while [`INCOMING_BUDGET`] lasts — at least one, so a slow
    /// upload never starves them —, the rest left for the next pass. Never waits.
    fn take_from_network(&mut self) {
        let deadline = (self.clock)() + INCOMING_BUDGET;
        self.take_frames();
        let events = self.node.events().clone();
        self.events_left = false;
        while let Ok(event) = events.try_recv() {
            self.on_event(event);
            if (self.clock)() >= deadline {
                self.events_left = !events.is_empty();
                break;
            }
        }
    }

    /// The newest frame the upload thread staged into the texture (older ones are
    /// skipped, their buffers given back). Without wgpu, the newest received frame is
    /// only kept, to say why it is not shown.
    fn take_frames(&mut self) {
        let Some(thread) = &self.upload_thread else {
            let mut newest = None;
            for frame in self.node.frames().try_iter() {
                if newest.replace(frame).is_some() {
                    self.frames_skipped += 1;
                }
            }
            if let Some(frame) = newest {
                self.show_error = Some(
                    "frames arrive, but this window has no wgpu renderer to show them".to_owned(),
                );
                self.last_frame = Some(frame);
            }
            return;
        };
        let (newest, replaced) = thread.take_newest();
        self.frames_skipped += replaced;
        match newest {
            Some(Ok(staged)) => self.show_staged(staged),
            Some(Err((frame, e))) => {
                self.show_error = Some(format!("cannot show this frame: {e}"));
                self.last_frame = Some(frame);
            }
            None => {}
        }
    }

    /// Copies a staged frame into the texture on the GPU: a command recorded and
    /// submitted, nothing waited for, no pixel touched.
    fn show_staged(&mut self, staged: Staged) {
        let Some(rs) = &self.render_state else {
            return;
        };
        let now = Instant::now();
        let shown_us = now_us();
        let frame = staged.frame().clone();
        let m = frame.meta();
        if staged.staged_on() == std::thread::current().id() {
            self.bytes_staged_on_ui += frame.pixels().len() as u64;
        }
        let (taken_us, staged_us, copy_ms) =
            (staged.taken_us(), staged.staged_us(), staged.copy_ms());
        match self.upload.show(&rs.device, &rs.queue, staged) {
            Ok(uploaded) => {
                if uploaded == Uploaded::NewTexture {
                    if let Some(view) = self.upload.view() {
                        self.texture.set(rs, view);
                    }
                }
                self.frames_shown += 1;
                self.show_error = None;
            }
            Err(e) => self.show_error = Some(format!("cannot show this frame: {e}")),
        }
        let latency_us = shown_us.saturating_sub(m.capture_us);
        self.meter
            .record(now, frame.pixels().len(), latency_us as f64 / 1e3);
        self.last_frame_at = Some(now);
        let ms = |us: u64| us as f64 / 1e3;
        self.stages.record(
            now,
            [
                Some(ms(taken_us.saturating_sub(m.capture_us))),
                Some(ms(shown_us.saturating_sub(staged_us))),
                Some(copy_ms),
            ],
        );
        tracing::trace!(seq = m.seq, "frame shown");
        self.last_frame = Some(frame);
    }

    /// Bytes of frames copied into staging buffers on the UI thread: none, the upload
    /// thread copies them.
    pub fn bytes_staged_on_ui_thread(&self) -> u64 {
        self.bytes_staged_on_ui
    }

    /// The thread that stages frames for the texture; `None` without wgpu.
    pub fn upload_thread(&self) -> Option<&UploadThread> {
        self.upload_thread.as_ref()
    }

    fn on_event(&mut self, event: Event) {
        let now = now_us();
        if matches!(
            event,
            Event::FileReceived { .. } | Event::FileFailed { .. } | Event::FileSent { .. }
        ) {
            self.transfers.mark_changed();
        }
        match event {
            Event::Text { text, .. } => self.chat.received(&text),
            Event::FileReceived {
                name, path, size, ..
            } => self.chat.note(
                NOTE_FROM,
                &format!(
                    "received file {name} ({}), saved as {}",
                    human_bytes(size),
                    path.display()
                ),
                now,
            ),
            Event::FileFailed { name, reason, .. } => self.chat.note(
                NOTE_FROM,
                &format!("receiving file {name} failed: {reason}"),
                now,
            ),
            Event::FileSent {
                name, ok, message, ..
            } => {
                let verdict = if ok { "delivered" } else { "not delivered" };
                let body = if message.is_empty() {
                    format!("file {name} {verdict}")
                } else {
                    format!("file {name} {verdict}: {message}")
                };
                self.chat.note(NOTE_FROM, &body, now);
            }
            Event::PeerConnected { addr, name, .. } => {
                self.chat
                    .note(NOTE_FROM, &format!("connected to {name} at {addr}"), now);
            }
            Event::PeerDisconnected { addr, reason, .. } => {
                let who = addr.map_or_else(|| "a peer".to_owned(), |a| a.to_string());
                self.chat
                    .note(NOTE_FROM, &format!("{who} disconnected: {reason}"), now);
            }
            // Repeats while a dialed peer keeps failing; the status bar shows the reason.
            Event::HandshakeFailed { .. } => {}
        }
    }

    /// Offers each dropped file to every peer that takes files, on a thread of its own;
    /// notes the outcome of each offer that finished.
    fn send_dropped(&mut self, ctx: &egui::Context) {
        for path in dropped_paths(ctx) {
            self.offers.offer(self.node.file_offerer(), path, ctx);
        }
        for (path, outcome) in self.offers.finished() {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let body = match outcome {
                Ok(0) => format!("{name} not sent: no connected peer takes files"),
                Ok(1) => format!("offered {name} to 1 peer"),
                Ok(n) => format!("offered {name} to {n} peers"),
                Err(e) => format!("cannot send {name}: {e}"),
            };
            self.chat.note(NOTE_FROM, &body, now_us());
            self.transfers.mark_changed();
        }
    }

    /// Starts saving the current frame as PNG on its own thread.
    fn start_snapshot(&mut self, ctx: &egui::Context) {
        let Some(frame) = self.last_frame.clone() else {
            return;
        };
        let (tx, rx) = flume::bounded(1);
        let dir = self.snapshot_dir.clone();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("texstream snapshot".to_owned())
            .spawn(move || {
                let result = save_snapshot(&frame, &dir);
                let _ = tx.send(result);
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => self.saving = Some(SavingSnapshot { done: rx }),
            Err(e) => self.snapshot_note = Some(Err(format!("cannot start saving: {e}"))),
        }
    }

    fn poll_snapshot(&mut self) {
        let Some(saving) = &self.saving else {
            return;
        };
        match saving.done.try_recv() {
            Ok(result) => {
                self.snapshot_note = Some(result);
                self.saving = None;
            }
            Err(flume::TryRecvError::Empty) => {}
            Err(flume::TryRecvError::Disconnected) => {
                self.snapshot_note = Some(Err("the snapshot thread ended early".to_owned()));
                self.saving = None;
            }
        }
    }

    fn toolbar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if ui
                .selectable_label(self.view.fit, "Fit")
                .on_hover_text("Fit the frame to the window (double-click the frame)")
                .clicked()
            {
                self.view.fit = true;
                self.view.pan = egui::Vec2::ZERO;
            }
            if ui
                .selectable_label(!self.view.fit && self.view.zoom == 1.0, "1:1")
                .on_hover_text("One frame pixel per screen pixel")
                .clicked()
            {
                self.view = View {
                    fit: false,
                    zoom: 1.0,
                    pan: egui::Vec2::ZERO,
                };
            }
            let mut zoom = self.view.zoom;
            let slider = ui
                .add(
                    egui::Slider::new(&mut zoom, ZOOM_MIN..=ZOOM_MAX)
                        .logarithmic(true)
                        .custom_formatter(|z, _| format!("{:.0} %", z * 100.0))
                        .custom_parser(|s| {
                            let percent = s.trim().trim_end_matches('%').trim();
                            percent.parse::<f64>().ok().map(|p| p / 100.0)
                        })
                        .text("Zoom"),
                )
                .on_hover_text("Or scroll over the frame; drag it to pan");
            if slider.changed() {
                self.view.fit = false;
                self.view.zoom = zoom;
            }
            ui.separator();
            let can_snapshot = self.last_frame.is_some() && self.saving.is_none();
            if ui
                .add_enabled(can_snapshot, egui::Button::new("Snapshot"))
                .on_hover_text(format!(
                    "Save the frame shown as PNG (float frames as .npy) in {}",
                    self.snapshot_dir.display()
                ))
                .clicked()
            {
                self.start_snapshot(ui.ctx());
            }
            if self.saving.is_some() {
                ui.spinner();
                ui.label("saving…");
            } else {
                match &self.snapshot_note {
                    Some(Ok(path)) => {
                        ui.label(format!("saved {}", path.display()));
                    }
                    Some(Err(e)) => {
                        ui.colored_label(
                            ui.visuals().error_fg_color,
                            format!("snapshot failed: {e}"),
                        );
                    }
                    None => {}
                }
            }
            if self
                .last_frame
                .as_ref()
                .is_some_and(|f| f.meta().format.is_float())
            {
                ui.separator();
                self.range_ui(ui);
            }
        });
    }

    /// The display range of float frames: each frame's own (Auto) or one chosen here.
    /// A change shows the frame in the texture again, so that a still stream follows.
    fn range_ui(&mut self, ui: &mut egui::Ui) {
        let range = self.upload.display_range();
        let mut auto = range == DisplayRange::Auto;
        let (mut min, mut max) = match range {
            DisplayRange::Fixed { min, max } => (min, max),
            DisplayRange::Auto => self.upload.shown_range().unwrap_or((0.0, 1.0)),
        };
        ui.checkbox(&mut auto, "Auto range").on_hover_text(
            "Float frames: show each from its smallest to its largest value (off: the \
             range set here; values outside it are clamped)",
        );
        let speed = f64::from((max - min).abs().max(1e-3)) / 200.0;
        ui.add_enabled(
            !auto,
            egui::DragValue::new(&mut min).speed(speed).prefix("min "),
        );
        ui.add_enabled(
            !auto,
            egui::DragValue::new(&mut max).speed(speed).prefix("max "),
        );
        if auto {
            ui.label(format!("{min:.3} … {max:.3}"));
        }
        let chosen = if auto {
            DisplayRange::Auto
        } else {
            DisplayRange::Fixed { min, max }
        };
        if chosen != range {
            self.set_display_range(chosen);
            ui.ctx().request_repaint();
        }
    }

    /// How float frames are shown: each frame's own range, or `min`..`max` (values
    /// outside clamped). The frame shown is uploaded again with it on the next pass.
    pub fn set_display_range(&mut self, range: DisplayRange) {
        self.upload.set_display_range(range);
        if let Some(thread) = &self.upload_thread {
            thread.set_display_range(range);
            if let Some(frame) = self.last_frame.clone() {
                thread.again(frame);
            }
        }
    }

    fn status_ui(&mut self, ui: &mut egui::Ui, peers: &[PeerStatus]) {
        let now = Instant::now();
        let rates = self.meter.rates(now);
        let stats = self.node.stats();
        ui.horizontal_wrapped(|ui| {
            ui.label(connection_text(peers, self.node.local_addr()));
            if let Some(p) = peers.iter().find(|p| p.state == PeerState::Connected) {
                ui.separator();
                let text = super::security_text(p.authenticated, p.encrypted);
                match &p.tls_fingerprint {
                    // The first bytes identify it at a glance; the whole one on hover.
                    Some(fp) => ui
                        .label(format!("{text} {}", short_fingerprint(fp)))
                        .on_hover_text(format!("the sender's TLS certificate: {fp}")),
                    None if p.authenticated => ui.label(text),
                    None => ui.colored_label(ui.visuals().warn_fg_color, text),
                };
            }
            ui.separator();
            match &self.last_frame {
                Some(frame) => {
                    let m = frame.meta();
                    ui.label(format!("{}x{}", m.width, m.height))
                        .on_hover_text(format!("{:?}, frame #{}", m.format, m.seq));
                }
                None => {
                    ui.weak("no frame yet");
                }
            }
            ui.separator();
            ui.label(format!("{:.1} fps", rates.fps));
            ui.label(format!("{:.1} Mb/s", rates.megabits_per_sec));
            let latency = if rates.fps > 0.0 {
                format!(
                    "latency {:.1} ms (max {:.1})",
                    rates.latency_p50_ms, rates.latency_max_ms
                )
            } else {
                "latency -".to_owned()
            };
            ui.label(latency)
                .on_hover_text("capture to arrival, median and max over the last second");
            self.stages_ui(ui, now);
            let pass = &mut self.pass;
            ui.label(pass.short_text(now)).on_hover_ui(|ui| {
                ui.label(format!(
                    "the UI thread's time per pass over the last second, p50/p99: this \
                     window's own work, and the whole pass (drawing included, vsync \
                     excluded): {}",
                    pass.text(now)
                ));
            });
            ui.label(format!(
                "dropped {}",
                stats.frames_dropped
                    + self.frames_skipped
                    + self
                        .upload_thread
                        .as_ref()
                        .map_or(0, UploadThread::replaced)
            ))
            .on_hover_text("frames received but replaced by a newer one before being shown");
            if stats.checksum_failures > 0 {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("checksum failures {}", stats.checksum_failures),
                );
            }
            if let Some(at) = self.last_frame_at {
                let idle = now.saturating_duration_since(at);
                if idle > STALE_AFTER {
                    ui.weak(format!("last frame {:.0} s ago", idle.as_secs_f64()));
                }
            }
        });
    }

    /// "Stages: wire+verify 3.1 · to UI 0.4 · upload 2.0 ms", each on hover in words.
    fn stages_ui(&mut self, ui: &mut egui::Ui, now: Instant) {
        let [wire, to_ui, upload] = self.stages.medians(now);
        let figure = |ms: Option<f64>| ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}"));
        let text = if wire.is_none() && to_ui.is_none() && upload.is_none() {
            "Stages: -".to_owned()
        } else {
            format!(
                "Stages: wire+verify {} · to UI {} · upload {} ms",
                figure(wire),
                figure(to_ui),
                figure(upload)
            )
        };
        ui.label(text).on_hover_text(format!(
            "Medians over the last second, for the frames shown:\n\
             wire+verify {} ms: the frame's capture timestamp → the whole frame received \
             and its checksum verified, taken by the upload thread (includes what the \
             sender did after capturing it: a sender window's readback and copy)\n\
             to UI {} ms: staged → taken by this window's next pass\n\
             upload {} ms: the copy into a mapped staging buffer, on the upload thread \
             (the window only records the GPU's copy into the texture, which runs with \
             its next submit)",
            figure(wire),
            figure(to_ui),
            figure(upload)
        ));
    }

    fn side_ui(&mut self, ui: &mut egui::Ui, peers: &[PeerStatus]) {
        let shown = self.node.stream_source();
        let pick = egui::CollapsingHeader::new("Sources")
            .default_open(true)
            .show(ui, |ui| self.sources.ui(ui, peers, shown))
            .body_returned
            .flatten();
        match pick {
            Some(SourcePick::Watch(target)) => self.watch(&target),
            Some(SourcePick::Show(peer)) => self.node.follow(peer),
            None => {}
        }
        ui.separator();
        egui::CollapsingHeader::new("Peers")
            .default_open(true)
            .show(ui, |ui| {
                egui::ScrollArea::horizontal()
                    .id_salt("viewer peers")
                    .show(ui, |ui| peers_ui(ui, peers));
            });
        ui.separator();
        if let Some(body) = self.chat.chat_ui(ui) {
            let connected = peers.iter().any(|p| p.state == PeerState::Connected);
            self.node.send_text(&body);
            self.chat.note(&self.node.config().name, &body, now_us());
            if !connected {
                self.chat
                    .note(NOTE_FROM, "not delivered: no peer is connected", now_us());
            }
        }
    }

    /// The frame, fitted or zoomed and panned; or why there is none.
    fn frame_ui(&mut self, ui: &mut egui::Ui, peers: &[PeerStatus]) {
        let (rect, response) =
            ui.allocate_exact_size(ui.available_size(), egui::Sense::click_and_drag());
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 0.0, egui::Color32::from_gray(16));
        let shown = self.shown_size().zip(self.texture.id());
        let Some(((width, height), texture_id)) = shown else {
            let message = match &self.show_error {
                Some(e) => e.clone(),
                None => format!(
                    "Waiting for frames: {}",
                    connection_text(peers, self.node.local_addr())
                ),
            };
            let text = egui::RichText::new(message).size(16.0);
            let text = if self.show_error.is_some() {
                text.color(ui.visuals().error_fg_color)
            } else {
                text.color(ui.visuals().weak_text_color())
            };
            // A label, not painted text: screen readers and UI tests find it.
            ui.put(rect.shrink(16.0), egui::Label::new(text).wrap());
            return;
        };
        let size = egui::vec2(width as f32, height as f32);
        let pixels_per_point = ui.ctx().pixels_per_point();
        if self.view.fit {
            let fit = (rect.width() / size.x).min(rect.height() / size.y);
            self.view.zoom = (fit * pixels_per_point).clamp(ZOOM_MIN, ZOOM_MAX);
            self.view.pan = egui::Vec2::ZERO;
        }
        if response.double_clicked() {
            self.view.fit = true;
        }
        if response.dragged() {
            self.view.fit = false;
            self.view.pan += response.drag_delta();
        }
        if response.hovered() {
            let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            let factor = pinch * (scroll / 200.0).exp();
            if factor != 1.0 {
                let old = self.view.zoom;
                let new = (old * factor).clamp(ZOOM_MIN, ZOOM_MAX);
                // Keep the frame pixel under the pointer where it is.
                if let Some(pointer) = response.hover_pos() {
                    let from_centre = pointer - (rect.center() + self.view.pan);
                    self.view.pan += from_centre - from_centre * (new / old);
                }
                self.view.zoom = new;
                self.view.fit = false;
            }
        }
        let shown_size = size * self.view.zoom / pixels_per_point;
        // Keep at least a corner of the frame in view.
        let limit = (rect.size() + shown_size) / 2.0 - egui::Vec2::splat(32.0);
        self.view.pan = self
            .view
            .pan
            .clamp(-limit.max(egui::Vec2::ZERO), limit.max(egui::Vec2::ZERO));
        let image_rect = egui::Rect::from_center_size(rect.center() + self.view.pan, shown_size);
        painter.image(
            texture_id,
            image_rect,
            egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
            egui::Color32::WHITE,
        );
        if response.dragged() {
            ui.ctx().set_cursor_icon(egui::CursorIcon::Grabbing);
        } else if response.hovered() {
            ui.ctx().set_cursor_icon(egui::CursorIcon::Grab);
        }
    }
}

impl eframe::App for ViewerApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.pass.begin();
        self.take_from_network();
        if self.events_left {
            // The budget ran out: the rest in the very next pass.
            ctx.request_repaint();
        }
        self.poll_snapshot();
        self.sources.refresh();
        self.send_dropped(ctx);
        self.transfers.refresh(&self.node, Instant::now());
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let peers = self.node.peers();
        egui::Panel::top("viewer toolbar").show(ui, |ui| self.toolbar_ui(ui));
        egui::Panel::bottom("viewer status").show(ui, |ui| self.status_ui(ui, &peers));
        // Above the status bar, the whole width, while there is a transfer to show.
        if !self.transfers.is_empty() {
            egui::Panel::bottom("viewer transfers")
                .show(ui, |ui| self.transfers.transfers_ui(ui, &self.node));
        }
        egui::Panel::right("viewer side")
            .resizable(true)
            .default_size(320.0)
            .show(ui, |ui| self.side_ui(ui, &peers));
        egui::CentralPanel::default()
            .frame(egui::Frame::NONE)
            .show(ui, |ui| self.frame_ui(ui, &peers));
        let hovering_files = ui.input(|i| !i.raw.hovered_files.is_empty());
        if hovering_files {
            let screen = ui.ctx().content_rect();
            let painter = ui.ctx().layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("texstream viewer drop hint"),
            ));
            painter.rect_filled(screen, 0.0, egui::Color32::from_black_alpha(160));
            painter.text(
                screen.center(),
                egui::Align2::CENTER_CENTER,
                "Drop to send to the connected peers",
                egui::FontId::proportional(20.0),
                egui::Color32::WHITE,
            );
        }
        // Frames and events wake the window through the node's waker; this keeps the
        // figures (and "reconnecting in …") moving while nothing arrives.
        ui.ctx().request_repaint_after(STATUS_REFRESH);
        self.pass.end(frame.info().cpu_usage);
    }
}

impl Drop for ViewerApp {
    /// A goodbye to every peer when the window closes.
    fn drop(&mut self) {
        self.node.shutdown();
    }
}

/// Where the connection stands, in words: why nothing moves, when nothing does.
fn connection_text(peers: &[PeerStatus], listening: Option<std::net::SocketAddr>) -> String {
    let mut parts: Vec<String> = peers
        .iter()
        .filter(|p| p.state != PeerState::Closed)
        .map(|p| {
            let addr = p.addr.map_or_else(|| p.target.clone(), |a| a.to_string());
            match p.state {
                PeerState::Connected => format!("connected to {addr}"),
                PeerState::Connecting => format!("connecting to {}…", p.target),
                PeerState::Reconnecting { .. } => match &p.last_error {
                    Some(e) => format!("{}: {} ({e})", p.target, p.state),
                    None => format!("{}: {}", p.target, p.state),
                },
                PeerState::Closed => String::new(),
            }
        })
        .collect();
    if parts.len() > 3 {
        let more = parts.len() - 2;
        parts.truncate(2);
        parts.push(format!("{more} more peers"));
    }
    match (parts.is_empty(), listening) {
        (true, Some(addr)) => format!("listening on {addr}, waiting for a sender"),
        (true, None) => "no peers".to_owned(),
        (false, Some(addr)) => format!("{} · listening on {addr}", parts.join(" · ")),
        (false, None) => parts.join(" · "),
    }
}

/// Writes `frame` losslessly (PNG, or `.npy` for a float frame: `crate::export`) into
/// `dir` under a new name (never overwriting), first under a hidden temporary name, so
/// that the file appears only once complete.
fn save_snapshot(frame: &Frame, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let seq = frame.meta().seq;
    let extension = crate::export::extension(frame.meta().format);
    let stem = format!("snapshot-{}-frame{seq}", now_us() / 1000);
    let temp = dir.join(format!(".{stem}.{extension}.part"));
    let written = std::fs::File::create(&temp)
        .and_then(|file| crate::export::write(frame, std::io::BufWriter::new(file), false))
        .map_err(|e| format!("cannot write {}: {e}", temp.display()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let result = publish_file(&temp, dir, &stem, extension);
    let _ = std::fs::remove_file(&temp);
    result
}

/// Gives the finished `temp` its final name, `STEM.EXT` or `STEM-2.EXT`, …
fn publish_file(temp: &Path, dir: &Path, stem: &str, extension: &str) -> Result<PathBuf, String> {
    for n in 1..1000 {
        let name = if n == 1 {
            format!("{stem}.{extension}")
        } else {
            format!("{stem}-{n}.{extension}")
        };
        let path = dir.join(name);
        // A hard link fails if the name is taken: no overwriting, and no window in
        // which the file exists half written.
        match std::fs::hard_link(temp, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            // A file system without hard links: rename, checking the name first.
            Err(_) if !path.exists() => {
                return std::fs::rename(temp, &path)
                    .map(|()| path.clone())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()));
            }
            Err(_) => continue,
        }
    }
    Err(format!(
        "no free file name for {stem}.{extension} in {}",
        dir.display()
    ))
}

/// `SHA256:ab:cd:ef:01…` — the first four bytes of a fingerprint.
fn short_fingerprint(fp: &str) -> String {
    let cut: String = fp.chars().take("SHA256:".len() + 11).collect();
    format!("{cut}...")
}
