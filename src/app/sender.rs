//! The sender window: pick an image (file picker, command line or drag and drop), an
//! animated GIF/APNG/WebP, or the WGSL live source; the capture thread
//! ([`super::capture`]) keeps it in a GPU texture, reads it back and publishes it, while
//! the window shows what is streamed, the viewers, the throughput, a chat and the file
//! transfers in and out.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::{self, CaptureStatus, Command, Picture, Rate, PATTERN_SIZE};
use super::{
    dropped_paths, peers_ui, repaint_waker, Chat, EguiTexture, FileOffers, FilePicker,
    FolderOpener, TransfersView,
};
use crate::frame::PixelFormat;
use crate::gpu::{check_texture_size, LIVE_FORMATS};
use crate::net::{now_us, Event, NetError, Node, NodeConfig};
use crate::source::{looks_like_image, Source};

pub use super::capture::{CaptureHook, CaptureOptions, StreamMode};

/// A picked file and what decoding it gave.
type LoadResult = (PathBuf, Result<Source, String>);

/// The sender window's state.
pub struct SenderApp {
    node: Node,
    render_state: Option<egui_wgpu::RenderState>,
    capture: Option<flume::Sender<Command>>,
    capture_thread: Option<std::thread::JoinHandle<()>>,
    status: Arc<CaptureStatus>,
    preview: EguiTexture,
    preview_generation: u64,
    preview_size: Option<(u32, u32)>,
    loads: (flume::Sender<LoadResult>, flume::Receiver<LoadResult>),
    loaded: Option<(String, (u32, u32))>,
    mode: StreamMode,
    /// The live shader's target format: what the pattern and the image with the effect
    /// stream as.
    live_format: PixelFormat,
    fps: f32,
    every_ui_frame: bool,
    sent_rate: Option<Rate>,
    picker: FilePicker,
    chat: Chat,
    transfers: TransfersView,
    offers: FileOffers,
    message: Option<(String, bool)>,
    throughput: (Instant, u64, u64, f64, f64),
    companion: Option<std::process::Child>,
    /// The UI thread's time per pass.
    pass: super::PassMeter,
    /// Whether (and as what) this sender is announced on the LAN.
    lan: Lan,
}

/// The sender's LAN announcement.
enum Lan {
    /// Announced under this name; withdrawn (goodbyes) when dropped.
    Announced {
        _announcer: crate::net::discovery::Announcer,
        name: String,
    },
    /// Not announced, and why.
    Off(String),
}

impl SenderApp {
    /// Starts the node (its waker repaints this window) and the capture thread, and
    /// loads `image` if given (`pattern` starts the shader pattern).
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        config: NodeConfig,
        image: Option<PathBuf>,
    ) -> Result<SenderApp, NetError> {
        SenderApp::with_capture(cc, config, image, CaptureOptions::default())
    }

    /// [`SenderApp::new`] with the capture thread set up by `capture` (tests hold it up
    /// through [`CaptureOptions::after_submit`]).
    pub fn with_capture(
        cc: &eframe::CreationContext<'_>,
        mut config: NodeConfig,
        image: Option<PathBuf>,
        capture: CaptureOptions,
    ) -> Result<SenderApp, NetError> {
        config.waker = Some(repaint_waker(&cc.egui_ctx));
        let node = Node::start(config)?;
        let status = Arc::new(CaptureStatus::default());
        let render_state = cc.wgpu_render_state.clone();
        let (capture, capture_thread, message) = match &render_state {
            Some(rs) => {
                let (tx, rx) = flume::bounded(16);
                match capture::spawn(
                    rs,
                    node.publisher(),
                    cc.egui_ctx.clone(),
                    status.clone(),
                    rx,
                    capture,
                ) {
                    Ok(handle) => (Some(tx), Some(handle), None),
                    Err(e) => (
                        None,
                        None,
                        Some((format!("cannot start the capture thread: {e}"), true)),
                    ),
                }
            }
            None => (
                None,
                None,
                Some((
                    "no GPU: this window cannot read back a texture to stream".to_owned(),
                    true,
                )),
            ),
        };
        let now = Instant::now();
        let mut app = SenderApp {
            node,
            render_state,
            capture,
            capture_thread,
            status,
            preview: EguiTexture::default(),
            preview_generation: 0,
            preview_size: None,
            loads: flume::bounded(4),
            loaded: None,
            mode: StreamMode::Pattern,
            live_format: PixelFormat::Rgba8,
            fps: 30.0,
            every_ui_frame: false,
            sent_rate: None,
            picker: FilePicker::default(),
            chat: Chat::default(),
            transfers: TransfersView::default(),
            offers: FileOffers::default(),
            message,
            throughput: (now, 0, 0, 0.0, 0.0),
            companion: None,
            pass: super::PassMeter::new("sender"),
            lan: Lan::Off("not announced on the LAN".to_owned()),
        };
        match image {
            Some(path) if path.as_os_str() == "pattern" => {}
            Some(path) => app.load(&cc.egui_ctx, path),
            None => {}
        }
        Ok(app)
    }

    /// Announces this sender on the LAN under `name` (default `HOST (sender)`), so
    /// viewers list it; the window says whether that worked.
    pub fn announce(&mut self, name: Option<&str>) {
        self.lan = match crate::net::discovery::announce(&self.node, name, None, None) {
            Ok(Some((announcer, name))) => Lan::Announced {
                _announcer: announcer,
                name,
            },
            Ok(None) => Lan::Off("not announced: not listening".to_owned()),
            Err(e) => Lan::Off(format!("not announced on the LAN: {e}")),
        };
    }

    /// The name this sender is announced under on the LAN, if it is.
    pub fn announced_as(&self) -> Option<&str> {
        match &self.lan {
            Lan::Announced { name, .. } => Some(name),
            Lan::Off(_) => None,
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// How the file picker reads folders (on its loader thread); a slow one in tests.
    pub fn set_dir_reader(&mut self, reader: super::picker::DirReader) {
        self.picker.set_dir_reader(reader);
    }

    /// Streams an image already in memory (the demo's bundled picture).
    pub fn show_image(&mut self, name: &str, image: image::RgbaImage) {
        let _ = self
            .loads
            .0
            .try_send((PathBuf::from(name), Ok(Source::Still(image))));
    }

    /// A process that lives as long as this window (the demo's viewer): ended on exit.
    pub fn attach_companion(&mut self, child: std::process::Child) {
        self.companion = Some(child);
    }

    /// The most readbacks that were in flight at once so far.
    pub fn readbacks_in_flight_peak(&self) -> u64 {
        self.status.readbacks_in_flight_peak.load(Relaxed)
    }

    /// Frames published so far.
    pub fn frames_published(&self) -> u64 {
        self.status.published.load(Relaxed)
    }

    /// Frames taken out of the readback ring (copied and hashed) so far: an unchanged
    /// picture is read back once, then re-published as it is.
    pub fn frames_read_back(&self) -> u64 {
        self.status.read_back.load(Relaxed)
    }

    /// Name and size of the loaded image, if any.
    pub fn image(&self) -> Option<(&str, (u32, u32))> {
        self.loaded.as_ref().map(|(n, s)| (n.as_str(), *s))
    }

    pub fn mode(&self) -> StreamMode {
        self.mode
    }

    pub fn set_mode(&mut self, mode: StreamMode) {
        self.mode = mode;
        self.command(Command::Mode(mode));
    }

    /// The format the live shader renders and streams in.
    pub fn live_format(&self) -> PixelFormat {
        self.live_format
    }

    /// Renders the live shader (the pattern, the image with the effect) into a texture of
    /// `format` from now on, streamed as that format: one of
    /// [`LIVE_FORMATS`](crate::gpu::LIVE_FORMATS) (RGBA8, RGBA16F, RGBA32F); any other
    /// is refused with a message.
    pub fn set_live_format(&mut self, format: PixelFormat) {
        if !LIVE_FORMATS.contains(&format) {
            self.message = Some((
                format!("the shader cannot render {format}: choose rgba8, rgba16f or rgba32f"),
                true,
            ));
            return;
        }
        self.live_format = format;
        self.command(Command::LiveFormat(format));
    }

    /// The message line (text, is it an error).
    pub fn message(&self) -> Option<(&str, bool)> {
        self.message.as_ref().map(|(m, e)| (m.as_str(), *e))
    }

    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// The transfers panel's state (its rows as last read from the node).
    pub fn transfers(&self) -> &TransfersView {
        &self.transfers
    }

    /// How "Open folder" opens a folder (the desktop's opener unless replaced).
    pub fn set_folder_opener(&mut self, opener: FolderOpener) {
        self.transfers.set_opener(opener);
    }

    fn command(&self, command: Command) {
        if let Some(tx) = &self.capture {
            // Bounded: a full queue means the thread is far behind; the command is
            // dropped rather than blocking the UI (a UI-frame tick, typically).
            let _ = tx.try_send(command);
        }
    }

    /// Decodes `path` on a thread; the window picks it up when it is ready.
    fn load(&mut self, ctx: &egui::Context, path: PathBuf) {
        let tx = self.loads.0.clone();
        let ctx = ctx.clone();
        self.message = Some((format!("loading {}…", path.display()), false));
        let spawned = std::thread::Builder::new()
            .name("texstream image loader".into())
            .spawn(move || {
                let spec = path.to_string_lossy().into_owned();
                let result = if path.is_dir() {
                    Err(format!(
                        "{} is a folder: pick an image file",
                        path.display()
                    ))
                } else {
                    Source::open(&spec, PATTERN_SIZE, Duration::from_secs(3))
                        .map_err(|e| e.to_string())
                };
                let _ = tx.send((path, result));
                ctx.request_repaint();
            });
        if let Err(e) = spawned {
            self.message = Some((format!("cannot start loading: {e}"), true));
        }
    }

    fn take_loaded(&mut self) {
        while let Ok((path, result)) = self.loads.1.try_recv() {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let picture = match result {
                Ok(Source::Still(img)) => Picture::Still(img),
                Ok(Source::Animation { frames, total }) => Picture::Animation { frames, total },
                Ok(_) => {
                    self.message = Some((format!("{name} is not an image file"), true));
                    continue;
                }
                Err(e) => {
                    // A bad file changes nothing else: the stream goes on as it was.
                    self.message = Some((e, true));
                    continue;
                }
            };
            let (w, h) = picture.size();
            if let Some(rs) = &self.render_state {
                if let Err(e) = check_texture_size(&rs.device, w, h) {
                    self.message = Some((format!("{name}: {e}"), true));
                    continue;
                }
            }
            let kind = if matches!(picture, Picture::Animation { .. }) {
                "animation"
            } else {
                "image"
            };
            self.message = Some((format!("streaming {kind} {name} ({w}x{h})"), false));
            self.loaded = Some((name, (w, h)));
            self.command(Command::Picture(picture));
            if self.mode == StreamMode::Pattern {
                self.set_mode(StreamMode::Image);
            }
        }
    }

    /// Everything that is not drawing: network events, loads, drops, capture commands.
    fn step(&mut self, ctx: &egui::Context) {
        for event in self.node.events().try_iter() {
            if matches!(
                event,
                Event::FileReceived { .. } | Event::FileFailed { .. } | Event::FileSent { .. }
            ) {
                self.transfers.mark_changed();
            }
            match event {
                Event::Text { text, .. } => self.chat.received(&text),
                Event::FileSent {
                    name, ok, message, ..
                } => {
                    let verdict = if ok { "delivered" } else { "failed" };
                    self.chat
                        .note("file", &format!("{name} {verdict}: {message}"), now_us());
                }
                Event::FileReceived { name, path, .. } => {
                    let note = format!("received {name}, saved as {}", path.display());
                    self.chat.note("file", &note, now_us());
                }
                Event::FileFailed { name, reason, .. } => {
                    self.chat
                        .note("file", &format!("{name} failed: {reason}"), now_us());
                }
                _ => {}
            }
        }
        for path in dropped_paths(ctx) {
            self.dropped(ctx, &path);
        }
        self.offers_finished();
        self.take_loaded();
        self.transfers.refresh(&self.node, Instant::now());
        if let Some(error) = self.status.error.lock().ok().and_then(|mut e| e.take()) {
            self.message = Some((error, true));
        }
        let rate = if self.every_ui_frame {
            Rate::EveryUiFrame
        } else {
            Rate::Fps(self.fps)
        };
        if self.sent_rate != Some(rate) {
            self.sent_rate = Some(rate);
            self.command(Command::Rate(rate));
        }
        if rate == Rate::EveryUiFrame {
            self.command(Command::UiFrame);
            ctx.request_repaint();
        }

        let now = Instant::now();
        let (since, bytes, frames, _, _) = self.throughput;
        let elapsed = now.duration_since(since).as_secs_f64();
        if elapsed >= 0.5 {
            let sent = self.node.stats().bytes_sent;
            let published = self.frames_published();
            let mbps = (sent - bytes) as f64 * 8.0 / 1e6 / elapsed;
            let fps = (published - frames) as f64 / elapsed;
            self.throughput = (now, sent, published, mbps, fps);
        }
    }

    fn dropped(&mut self, ctx: &egui::Context, path: &Path) {
        if looks_like_image(path) {
            self.load(ctx, path.to_owned());
            return;
        }
        self.offers
            .offer(self.node.file_offerer(), path.to_owned(), ctx);
    }

    /// Notes the outcome of each file offer that finished (on its own thread).
    fn offers_finished(&mut self) {
        for (path, outcome) in self.offers.finished() {
            let name = path.display();
            self.transfers.mark_changed();
            match outcome {
                Ok(0) => self
                    .chat
                    .note("file", &format!("{name}: no peer takes files"), now_us()),
                Ok(n) => {
                    self.chat
                        .note("file", &format!("offering {name} to {n} peer(s)"), now_us())
                }
                Err(e) => self.message = Some((format!("cannot send {name}: {e}"), true)),
            }
        }
    }

    fn controls_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            if ui.button("Pick image…").clicked() {
                let start = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
                self.picker.open(ui.ctx(), &start);
            }
            let mut chosen = None;
            egui::ComboBox::from_label("Source")
                .selected_text(self.mode.label())
                .show_ui(ui, |ui| {
                    for mode in [
                        StreamMode::Image,
                        StreamMode::ImageEffect,
                        StreamMode::Pattern,
                    ] {
                        let enabled = mode == StreamMode::Pattern || self.loaded.is_some();
                        ui.add_enabled_ui(enabled, |ui| {
                            if ui
                                .selectable_label(self.mode == mode, mode.label())
                                .clicked()
                            {
                                chosen = Some(mode);
                            }
                        });
                    }
                });
            if let Some(mode) = chosen {
                self.set_mode(mode);
            }
            let mut format = self.live_format;
            egui::ComboBox::from_label("Shader output")
                .selected_text(format.name().to_uppercase())
                .show_ui(ui, |ui| {
                    for option in LIVE_FORMATS {
                        ui.selectable_value(&mut format, option, option.name().to_uppercase());
                    }
                })
                .response
                .on_hover_text(
                    "The texture the shader renders into, streamed as it is: RGBA8, or \
                     16- or 32-bit floats per channel (colours past 1 kept). An image \
                     streamed as it is stays RGBA8.",
                );
            if format != self.live_format {
                self.set_live_format(format);
            }
            ui.add_enabled(
                !self.every_ui_frame,
                egui::Slider::new(&mut self.fps, 1.0..=240.0).text("fps"),
            );
            ui.checkbox(&mut self.every_ui_frame, "Every UI frame");
            super::codec_ui(ui, &self.node);
        });
        if let Some((text, error)) = &self.message {
            if *error {
                ui.colored_label(ui.visuals().error_fg_color, text);
            } else {
                ui.label(text);
            }
        }
    }

    fn side_ui(&mut self, ui: &mut egui::Ui) {
        let config = self.node.config();
        match (self.node.local_addr(), config.connect.first()) {
            (Some(addr), _) => ui.label(format!("Listening on {addr}")),
            (None, Some(target)) => ui.label(format!("Dialing {target}")),
            (None, None) => ui.label("Not listening"),
        };
        match &self.lan {
            Lan::Announced { name, .. } => {
                ui.label(format!(
                    "On the LAN as \"{}\"",
                    super::text::display_text(name)
                ))
                .on_hover_text("announced over mDNS: viewers list it by this name");
            }
            Lan::Off(why) => {
                ui.weak(why);
            }
        }
        ui.label(format!(
            "{} frames published, {:.1} fps, {:.1} Mb/s, {} skipped (GPU busy)",
            self.frames_published(),
            self.throughput.4,
            self.throughput.3,
            self.status.gpu_busy.load(Relaxed)
        ))
        .on_hover_text(
            "Skipped: captures dropped because every staging buffer was still on its way \
             back from the GPU.",
        );
        ui.label(format!("UI {}", self.pass.text(Instant::now())))
            .on_hover_text(
                "the UI thread's time per pass over the last second: this window's own \
                 work, and the whole pass (drawing included, vsync excluded)",
            );
        ui.label(format!(
            "Readbacks in flight: {} (at most {} so far), {} read back",
            self.status.readbacks_in_flight.load(Relaxed),
            self.status.readbacks_in_flight_peak.load(Relaxed),
            self.frames_read_back()
        ))
        .on_hover_text(
            "Frames rendered and copied on the GPU, not yet back: the capture renders the \
             next frame while the last one is read back.\nRead back: frames copied out of \
             the GPU and hashed; an unchanged picture is read back once and published \
             again as it is.",
        );
        self.stages_ui(ui);
        ui.separator();
        ui.heading("Viewers");
        peers_ui(ui, &self.node.peers());
        ui.separator();
        if let Some(text) = self.chat.chat_ui(ui) {
            self.node.send_text(&text);
            self.chat.note(&self.node.config().name, &text, now_us());
        }
    }

    /// "Stages: render+readback 3.2 · copy+hash 0.9 ms", each on hover in words.
    fn stages_ui(&self, ui: &mut egui::Ui) {
        let medians = self
            .status
            .stages
            .lock()
            .map(|mut m| m.medians(Instant::now()))
            .unwrap_or_default();
        let text = match medians {
            [Some(readback), Some(copy)] => {
                format!("Stages: render+readback {readback:.1} · copy+hash {copy:.1} ms")
            }
            _ => "Stages: -".to_owned(),
        };
        ui.label(text).on_hover_text(
            "Medians over the last second, for the frames published:\n\
             render+readback: the live shader's pass (if it is the source) and the copy \
             into a staging buffer, from recording them until the buffer is mapped\n\
             copy+hash: the staging buffer copied into the frame and hashed (XXH3)\n\
             A viewer window shows the rest of the way under Stages.",
        );
    }

    fn preview_ui(&mut self, ui: &mut egui::Ui) {
        let Some(render_state) = &self.render_state else {
            ui.centered_and_justified(|ui| ui.label("No GPU available"));
            return;
        };
        if self.mode != StreamMode::Pattern && self.loaded.is_none() {
            ui.centered_and_justified(|ui| {
                ui.label("Pick an image, drop one on this window, or choose the shader pattern")
            });
            return;
        }
        // Register the streamed texture with egui only when the capture thread says it
        // changed (a new size, another mode), never per frame.
        let preview = self.status.preview.lock().ok().and_then(|p| p.clone());
        if let Some(preview) = preview.filter(|p| p.generation != self.preview_generation) {
            self.preview.set(render_state, &preview.view);
            self.preview_generation = preview.generation;
            self.preview_size = Some(preview.size);
        }
        let (Some(id), Some((w, h))) = (self.preview.id(), self.preview_size) else {
            return;
        };
        let avail = ui.available_size();
        let scale = (avail.x / w as f32)
            .min(avail.y / h as f32)
            .clamp(0.01, 1.0);
        ui.centered_and_justified(|ui| {
            ui.image(egui::load::SizedTexture::new(
                id,
                egui::vec2(w as f32 * scale, h as f32 * scale),
            ));
        });
    }
}

impl eframe::App for SenderApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.pass.begin();
        let ctx = ui.ctx().clone();
        self.step(&ctx);
        if let Some(path) = self.picker.picker_ui(&ctx, "Pick an image") {
            self.load(&ctx, path);
        }
        egui::Panel::top("sender controls").show(ui, |ui| self.controls_ui(ui));
        // The whole width, under the preview and the side panel, while there is a
        // transfer to show.
        if !self.transfers.is_empty() {
            egui::Panel::bottom("sender transfers")
                .show(ui, |ui| self.transfers.transfers_ui(ui, &self.node));
        }
        egui::Panel::right("sender side")
            .resizable(true)
            .default_size(340.0)
            .show(ui, |ui| self.side_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| self.preview_ui(ui));
        // The preview of a live source and the figures refresh at 30 Hz at most; the
        // stream itself runs on the capture thread at its own rate.
        let streaming = self.mode == StreamMode::Pattern || self.loaded.is_some();
        let refresh = if streaming && self.mode != StreamMode::Image {
            Duration::from_millis(33)
        } else {
            Duration::from_millis(250)
        };
        ctx.request_repaint_after(refresh);
        self.pass.end(frame.info().cpu_usage);
    }
}

impl Drop for SenderApp {
    fn drop(&mut self) {
        // Closing the command channel ends the capture thread.
        self.capture.take();
        if let Some(handle) = self.capture_thread.take() {
            let _ = handle.join();
        }
        self.node.shutdown();
        if let Some(mut child) = self.companion.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
