//! The sender window: shows a picked image (file picker, command line or drag and drop),
//! an animated GIF/APNG/WebP, or the WGSL live source, keeps it in a GPU texture, reads
//! that texture back through a ring of staging buffers without blocking, and publishes
//! each frame to the viewers. Lists the viewers, the throughput and a chat.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbaImage;

use super::{dropped_paths, peers_ui, repaint_waker, Chat, EguiTexture, FilePicker};
use crate::frame::FramePool;
use crate::gpu::{check_texture_size, LiveMode, LiveShader, Readback};
use crate::net::{now_us, Event, NetError, Node, NodeConfig};
use crate::source::{looks_like_image, Source};

/// Size of the generated pattern.
const PATTERN_SIZE: (u32, u32) = (1280, 720);

/// What is streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMode {
    /// The picked image (or animation) as it is.
    Image,
    /// The picked image through the live shader's moving effect.
    ImageEffect,
    /// The live shader's generated pattern.
    Pattern,
}

impl StreamMode {
    fn label(self) -> &'static str {
        match self {
            StreamMode::Image => "Image",
            StreamMode::ImageEffect => "Image + shader effect",
            StreamMode::Pattern => "Shader pattern",
        }
    }
}

enum Picture {
    Still(RgbaImage),
    Animation {
        frames: Vec<(RgbaImage, Duration)>,
        total: Duration,
        shown: usize,
    },
}

impl Picture {
    fn size(&self) -> (u32, u32) {
        match self {
            Picture::Still(img) => img.dimensions(),
            Picture::Animation { frames, .. } => frames[0].0.dimensions(),
        }
    }

    fn first(&self) -> &RgbaImage {
        match self {
            Picture::Still(img) => img,
            Picture::Animation { frames, .. } => &frames[0].0,
        }
    }
}

struct Loaded {
    name: String,
    picture: Picture,
}

/// GPU resources, made once (the source texture again only when the size changes).
struct SenderGpu {
    render_state: egui_wgpu::RenderState,
    source: wgpu::Texture,
    source_view: wgpu::TextureView,
    live: LiveShader,
    readback: Readback,
    pool: FramePool,
    preview: EguiTexture,
    /// What the preview texture shows: (live target?, its size).
    preview_of: Option<(bool, (u32, u32))>,
    /// Bumped whenever the source texture is re-created.
    source_generation: u64,
    /// The source generation and target size the live shader is bound to.
    live_bound: (u64, (u32, u32)),
}

/// A picked file and what decoding it gave.
type LoadResult = (PathBuf, Result<Source, String>);

/// The sender window's state.
pub struct SenderApp {
    node: Node,
    gpu: Option<SenderGpu>,
    loads: (flume::Sender<LoadResult>, flume::Receiver<LoadResult>),
    loaded: Option<Loaded>,
    mode: StreamMode,
    fps: f32,
    every_ui_frame: bool,
    started: Instant,
    next_capture: Instant,
    seq: u64,
    picker: FilePicker,
    chat: Chat,
    message: Option<(String, bool)>,
    published: u64,
    gpu_busy: u64,
    throughput: (Instant, u64, f64),
    companion: Option<std::process::Child>,
}

impl SenderApp {
    /// Starts the node (its waker repaints this window) and loads `image` if given
    /// (`pattern` starts the shader pattern).
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        mut config: NodeConfig,
        image: Option<PathBuf>,
    ) -> Result<SenderApp, NetError> {
        config.waker = Some(repaint_waker(&cc.egui_ctx));
        let node = Node::start(config)?;
        let gpu = cc.wgpu_render_state.clone().map(SenderGpu::new);
        let now = Instant::now();
        let mut app = SenderApp {
            node,
            gpu,
            loads: flume::bounded(4),
            loaded: None,
            mode: StreamMode::Pattern,
            fps: 30.0,
            every_ui_frame: false,
            started: now,
            next_capture: now,
            seq: 0,
            picker: FilePicker::default(),
            chat: Chat::default(),
            message: None,
            published: 0,
            gpu_busy: 0,
            throughput: (now, 0, 0.0),
            companion: None,
        };
        if app.gpu.is_none() {
            app.message = Some((
                "no GPU: this window cannot read back a texture to stream".into(),
                true,
            ));
        }
        match image {
            Some(path) if path.as_os_str() == "pattern" => {}
            Some(path) => app.load(&cc.egui_ctx, path),
            None => {}
        }
        Ok(app)
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Streams an image already in memory (the demo's bundled picture).
    pub fn show_image(&mut self, name: &str, image: RgbaImage) {
        let _ = self
            .loads
            .0
            .try_send((PathBuf::from(name), Ok(Source::Still(image))));
    }

    /// A process that lives as long as this window (the demo's viewer): ended on exit.
    pub fn attach_companion(&mut self, child: std::process::Child) {
        self.companion = Some(child);
    }

    /// Frames read back and published so far.
    pub fn frames_published(&self) -> u64 {
        self.published
    }

    /// Name and size of the loaded image, if any.
    pub fn image(&self) -> Option<(&str, (u32, u32))> {
        self.loaded
            .as_ref()
            .map(|l| (l.name.as_str(), l.picture.size()))
    }

    pub fn mode(&self) -> StreamMode {
        self.mode
    }

    pub fn set_mode(&mut self, mode: StreamMode) {
        self.mode = mode;
    }

    /// The message line (text, is it an error).
    pub fn message(&self) -> Option<(&str, bool)> {
        self.message.as_ref().map(|(m, e)| (m.as_str(), *e))
    }

    pub fn chat(&self) -> &Chat {
        &self.chat
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
                Ok(Source::Animation { frames, total }) => Picture::Animation {
                    frames,
                    total,
                    shown: usize::MAX,
                },
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
            if let Some(gpu) = &mut self.gpu {
                if let Err(e) = check_texture_size(&gpu.render_state.device, w, h) {
                    self.message = Some((format!("{name}: {e}"), true));
                    continue;
                }
                gpu.set_source(picture.first());
            }
            let kind = if matches!(picture, Picture::Animation { .. }) {
                "animation"
            } else {
                "image"
            };
            self.message = Some((format!("streaming {kind} {name} ({w}x{h})"), false));
            self.loaded = Some(Loaded { name, picture });
            if self.mode == StreamMode::Pattern {
                self.mode = StreamMode::Image;
            }
        }
    }

    /// Everything that is not drawing: network events, loads, drops, capture, readback.
    fn step(&mut self, ctx: &egui::Context) {
        for event in self.node.events().try_iter() {
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
                    self.chat.note(
                        "file",
                        &format!("received {name}, saved as {}", path.display()),
                        now_us(),
                    );
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
        self.take_loaded();

        let now = Instant::now();
        let streaming = self.mode == StreamMode::Pattern || self.loaded.is_some();
        if let (Some(gpu), true) = (&mut self.gpu, streaming) {
            let t = now.duration_since(self.started);
            if let Some(Loaded {
                picture:
                    Picture::Animation {
                        frames,
                        total,
                        shown,
                    },
                ..
            }) = &mut self.loaded
            {
                let index = frame_at(frames, *total, t);
                if index != *shown {
                    gpu.write_source(&frames[index].0);
                    *shown = index;
                }
            }
            let interval = Duration::from_secs_f32(1.0 / self.fps.clamp(1.0, 240.0));
            if self.every_ui_frame || now >= self.next_capture {
                match gpu.capture(self.mode, t, self.seq) {
                    Ok(true) => self.seq += 1,
                    Ok(false) => self.gpu_busy += 1,
                    Err(e) => self.message = Some((e.to_string(), true)),
                }
                self.next_capture = (self.next_capture + interval).max(now);
            }
            match gpu.readback.try_frame(&gpu.render_state.device, &gpu.pool) {
                Ok(Some(frame)) => {
                    self.node.publish(&frame);
                    self.published += 1;
                }
                Ok(None) => {}
                Err(e) => self.message = Some((e.to_string(), true)),
            }
            if self.every_ui_frame || gpu.readback.in_flight() > 0 {
                ctx.request_repaint();
            } else {
                ctx.request_repaint_after(self.next_capture.saturating_duration_since(now));
            }
        }
        let (since, bytes, _) = self.throughput;
        if now.duration_since(since) >= Duration::from_millis(500) {
            let sent = self.node.stats().bytes_sent;
            let mbps = (sent - bytes) as f64 * 8.0 / 1e6 / now.duration_since(since).as_secs_f64();
            self.throughput = (now, sent, mbps);
        }
    }

    fn dropped(&mut self, ctx: &egui::Context, path: &Path) {
        if looks_like_image(path) {
            self.load(ctx, path.to_owned());
            return;
        }
        let name = path.display();
        match self.node.send_file(path) {
            Ok(0) => self
                .chat
                .note("file", &format!("{name}: no peer takes files"), now_us()),
            Ok(n) => self
                .chat
                .note("file", &format!("offering {name} to {n} peer(s)"), now_us()),
            Err(e) => self.message = Some((format!("cannot send {name}: {e}"), true)),
        }
    }

    fn controls_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            if ui.button("Pick image…").clicked() {
                let start = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
                self.picker.open(&start);
            }
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
                            ui.selectable_value(&mut self.mode, mode, mode.label());
                        });
                    }
                });
            ui.add_enabled(
                !self.every_ui_frame,
                egui::Slider::new(&mut self.fps, 1.0..=240.0).text("fps"),
            );
            ui.checkbox(&mut self.every_ui_frame, "Every UI frame");
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
        ui.label(format!(
            "{} frames published, {:.1} Mb/s, {} skipped (GPU busy)",
            self.published, self.throughput.2, self.gpu_busy
        ));
        ui.separator();
        ui.heading("Viewers");
        peers_ui(ui, &self.node.peers());
        ui.separator();
        if let Some(text) = self.chat.chat_ui(ui) {
            self.node.send_text(&text);
            self.chat.note(&self.node.config().name, &text, now_us());
        }
    }

    fn preview_ui(&mut self, ui: &mut egui::Ui) {
        let Some(gpu) = &mut self.gpu else {
            ui.centered_and_justified(|ui| ui.label("No GPU available"));
            return;
        };
        if self.mode != StreamMode::Pattern && self.loaded.is_none() {
            ui.centered_and_justified(|ui| {
                ui.label("Pick an image, drop one on this window, or choose the shader pattern")
            });
            return;
        }
        let Some((id, (w, h))) = gpu.preview(self.mode) else {
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
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.step(&ctx);
        if let Some(path) = self.picker.picker_ui(&ctx, "Pick an image") {
            self.load(&ctx, path);
        }
        egui::Panel::top("sender controls").show(ui, |ui| self.controls_ui(ui));
        egui::Panel::right("sender side")
            .resizable(true)
            .default_size(340.0)
            .show(ui, |ui| self.side_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| self.preview_ui(ui));
        ctx.request_repaint_after(Duration::from_millis(250));
    }

    fn on_exit(&mut self) {
        self.node.shutdown();
        if let Some(mut child) = self.companion.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Index of the animation frame shown at time `t` (looping).
fn frame_at(frames: &[(RgbaImage, Duration)], total: Duration, t: Duration) -> usize {
    let mut at = Duration::from_nanos((t.as_nanos() % total.as_nanos().max(1)) as u64);
    for (i, (_, delay)) in frames.iter().enumerate() {
        if at < *delay {
            return i;
        }
        at -= *delay;
    }
    frames.len() - 1
}

impl SenderGpu {
    fn new(render_state: egui_wgpu::RenderState) -> SenderGpu {
        let device = &render_state.device;
        let (source, source_view) = source_texture(device, 1, 1);
        let live = LiveShader::new(device, &source_view, PATTERN_SIZE.0, PATTERN_SIZE.1);
        SenderGpu {
            render_state,
            source,
            source_view,
            live,
            readback: Readback::new(3),
            pool: FramePool::new(6),
            preview: EguiTexture::default(),
            preview_of: None,
            source_generation: 0,
            live_bound: (0, PATTERN_SIZE),
        }
    }

    /// Makes `img` the source (re-creating the texture only if the size changed).
    fn set_source(&mut self, img: &RgbaImage) {
        let (w, h) = img.dimensions();
        if (self.source.width(), self.source.height()) != (w, h) {
            let device = &self.render_state.device;
            (self.source, self.source_view) = source_texture(device, w, h);
            self.source_generation += 1;
            self.preview_of = None;
        }
        self.write_source(img);
    }

    fn write_source(&self, img: &RgbaImage) {
        let (w, h) = img.dimensions();
        self.render_state.queue.write_texture(
            self.source.as_image_copy(),
            img.as_raw(),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(w * 4),
                rows_per_image: Some(h),
            },
            self.source.size(),
        );
    }

    /// Renders (for the shader modes) and records a readback of what `mode` streams.
    fn capture(
        &mut self,
        mode: StreamMode,
        t: Duration,
        seq: u64,
    ) -> Result<bool, crate::gpu::GpuError> {
        let device = &self.render_state.device;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("texstream sender capture"),
        });
        let copied = match mode {
            StreamMode::Image => {
                self.readback
                    .copy(device, &mut encoder, &self.source, seq, now_us())?
            }
            StreamMode::ImageEffect | StreamMode::Pattern => {
                let size = if mode == StreamMode::Pattern {
                    PATTERN_SIZE
                } else {
                    (self.source.width(), self.source.height())
                };
                if self.live_bound != (self.source_generation, size) {
                    self.live
                        .set_source(device, &self.source_view, size.0, size.1);
                    self.live_bound = (self.source_generation, size);
                    self.preview_of = None;
                }
                let live_mode = if mode == StreamMode::Pattern {
                    LiveMode::Pattern
                } else {
                    LiveMode::Image
                };
                self.live.render(
                    &self.render_state.queue,
                    &mut encoder,
                    t.as_secs_f32(),
                    live_mode,
                );
                self.readback
                    .copy(device, &mut encoder, self.live.target(), seq, now_us())?
            }
        };
        self.render_state.queue.submit([encoder.finish()]);
        self.readback.submitted();
        Ok(copied)
    }

    /// The egui texture showing what is streamed, registered again only when that
    /// texture changed.
    fn preview(&mut self, mode: StreamMode) -> Option<(egui::TextureId, (u32, u32))> {
        let live = mode != StreamMode::Image;
        let texture = if live {
            self.live.target()
        } else {
            &self.source
        };
        let size = (texture.width(), texture.height());
        if self.preview_of != Some((live, size)) {
            let view = texture.create_view(&wgpu::TextureViewDescriptor {
                label: Some("texstream sender preview"),
                ..Default::default()
            });
            self.preview.set(&self.render_state, &view);
            self.preview_of = Some((live, size));
        }
        self.preview.id().map(|id| (id, size))
    }
}

fn source_texture(
    device: &wgpu::Device,
    width: u32,
    height: u32,
) -> (wgpu::Texture, wgpu::TextureView) {
    crate::gpu::texture_2d(
        device,
        "texstream sender source",
        (width, height),
        wgpu::TextureFormat::Rgba8Unorm,
        wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_DST
            | wgpu::TextureUsages::COPY_SRC,
    )
}
