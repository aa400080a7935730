//! The sender's capture thread: it owns the GPU side of streaming — the picture in a
//! texture (animations advanced at their own timing), the live shader (its target RGBA8,
//! RGBA16F or RGBA32F, streamed as that format), the readback ring — and at the chosen
//! rate reads the streamed texture back and publishes the frame. The
//! window only sends it commands, so the UI's frame rate (vsync, a slow software
//! renderer) never limits the stream and the capture never stalls the UI.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbaImage;

use crate::frame::{FramePool, PixelFormat};
use crate::gpu::{texture_2d, GpuError, LiveMode, LiveShader, Readback};
use crate::meter::StageMeter;
use crate::net::{now_us, Publisher};

/// Size of the generated pattern.
pub const PATTERN_SIZE: (u32, u32) = (1280, 720);

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
    pub fn label(self) -> &'static str {
        match self {
            StreamMode::Image => "Image",
            StreamMode::ImageEffect => "Image + shader effect",
            StreamMode::Pattern => "Shader pattern",
        }
    }
}

/// How often the capture thread streams a frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Fps(f32),
    /// Once per UI pass (the window sends [`Command::UiFrame`]).
    EveryUiFrame,
}

/// A picture to stream: a still image, or an animation's frames with their delays.
pub enum Picture {
    Still(RgbaImage),
    Animation {
        frames: Vec<(RgbaImage, Duration)>,
        total: Duration,
    },
}

impl Picture {
    pub fn size(&self) -> (u32, u32) {
        self.first().dimensions()
    }

    fn first(&self) -> &RgbaImage {
        match self {
            Picture::Still(img) => img,
            Picture::Animation { frames, .. } => &frames[0].0,
        }
    }
}

/// What the window asks of the capture thread.
pub enum Command {
    Picture(Picture),
    Mode(StreamMode),
    /// The live shader's target format, one of [`LIVE_FORMATS`](crate::gpu::LIVE_FORMATS):
    /// what the pattern and the image with the effect stream as. A picture streamed as it
    /// is stays RGBA8.
    LiveFormat(PixelFormat),
    Rate(Rate),
    /// A UI pass happened (used by [`Rate::EveryUiFrame`]).
    UiFrame,
}

/// The texture being streamed, for the window's preview.
#[derive(Clone)]
pub struct Preview {
    pub view: wgpu::TextureView,
    pub size: (u32, u32),
    /// Changes whenever the texture itself changes (the window re-registers it then).
    pub generation: u64,
}

/// What the capture thread reports to the window.
#[derive(Default)]
pub struct CaptureStatus {
    pub published: AtomicU64,
    /// Frames taken out of the readback ring (copied and hashed). An unchanged picture
    /// is read back once and re-published, so this stays behind `published`.
    pub read_back: AtomicU64,
    /// Captures skipped because every staging buffer was still in flight.
    pub gpu_busy: AtomicU64,
    /// Readbacks submitted and not yet taken, now; and the most there ever were. The
    /// capture renders and copies frame n while frame n−1 maps, so at a high rate
    /// more than one is in flight.
    pub readbacks_in_flight: AtomicU64,
    pub readbacks_in_flight_peak: AtomicU64,
    pub preview: Mutex<Option<Preview>>,
    pub error: Mutex<Option<String>>,
    /// The published frames' stages over the last second, in milliseconds: capture
    /// (render and copy recorded) → staging buffer taken, and `Frame::copied` out of it.
    pub stages: Mutex<StageMeter<2>>,
}

/// Called on the capture thread right after each capture's GPU work is submitted.
pub type CaptureHook = Arc<dyn Fn() + Send + Sync>;

/// How the capture thread is set up beyond its channels; the default for the program.
#[derive(Clone, Default)]
pub struct CaptureOptions {
    /// Run after each capture is submitted, on the capture thread: tests hold the thread
    /// here to stand for GPU work that takes long (the window must go on meanwhile).
    pub after_submit: Option<CaptureHook>,
}

/// Starts the capture thread. It ends when `commands`' sender is dropped.
pub fn spawn(
    render_state: &egui_wgpu::RenderState,
    publisher: Publisher,
    ctx: egui::Context,
    status: Arc<CaptureStatus>,
    commands: flume::Receiver<Command>,
    options: CaptureOptions,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let device = render_state.device.clone();
    let queue = render_state.queue.clone();
    std::thread::Builder::new()
        .name("texstream capture".into())
        .spawn(move || {
            let mut capture = Capture::new(device, queue, publisher, ctx, status, options);
            capture.run(&commands);
        })
}

/// How often readbacks in flight are polled.
const READBACK_POLL: Duration = Duration::from_millis(1);
/// Longest wait for the oldest readback when every buffer is in flight.
const RING_FULL_WAIT: Duration = Duration::from_millis(100);

/// The source generation and target size the live shader is bound to.
type LiveBinding = (u64, (u32, u32));

struct Capture {
    device: wgpu::Device,
    queue: wgpu::Queue,
    publisher: Publisher,
    ctx: egui::Context,
    status: Arc<CaptureStatus>,
    source: wgpu::Texture,
    source_view: wgpu::TextureView,
    source_generation: u64,
    live: LiveShader,
    live_bound: LiveBinding,
    readback: Readback,
    pool: FramePool,
    picture: Option<Picture>,
    shown: usize,
    mode: StreamMode,
    rate: Rate,
    started: Instant,
    next_capture: Instant,
    seq: u64,
    /// (streams the live target?, source generation, live binding, live format) the
    /// preview shows.
    preview_of: Option<(bool, u64, LiveBinding, PixelFormat)>,
    preview_generation: u64,
    /// The first frame number captured since the streamed picture last changed (a new
    /// picture, another animation frame, another mode): a readback from it on shows
    /// the picture as it is now.
    unchanged_since: u64,
    /// With [`StreamMode::Image`]: the picture as it is now, read back once, re-published
    /// with [`Frame::with_seq`](crate::frame::Frame::with_seq) until it changes.
    still: Option<crate::frame::Frame>,
    options: CaptureOptions,
}

impl Capture {
    fn new(
        device: wgpu::Device,
        queue: wgpu::Queue,
        publisher: Publisher,
        ctx: egui::Context,
        status: Arc<CaptureStatus>,
        options: CaptureOptions,
    ) -> Capture {
        let (source, source_view) = source_texture(&device, (1, 1));
        let live = LiveShader::new(&device, &source_view, PATTERN_SIZE.0, PATTERN_SIZE.1);
        let now = Instant::now();
        Capture {
            device,
            queue,
            publisher,
            ctx,
            status,
            source,
            source_view,
            source_generation: 0,
            live,
            live_bound: (0, PATTERN_SIZE),
            readback: Readback::new(3),
            pool: FramePool::new(6),
            picture: None,
            shown: usize::MAX,
            mode: StreamMode::Pattern,
            rate: Rate::Fps(30.0),
            started: now,
            next_capture: now,
            seq: 0,
            preview_of: None,
            preview_generation: 0,
            unchanged_since: 0,
            still: None,
            options,
        }
    }

    /// The streamed picture changes from the next capture on: what is read back before
    /// it is not re-published any more.
    fn picture_changed(&mut self) {
        self.unchanged_since = self.seq;
        self.still = None;
    }

    fn streaming(&self) -> bool {
        self.mode == StreamMode::Pattern || self.picture.is_some()
    }

    fn run(&mut self, commands: &flume::Receiver<Command>) {
        loop {
            let capture_at = match self.rate {
                Rate::Fps(_) if self.streaming() => Some(self.next_capture),
                _ => None,
            };
            // Readbacks in flight are polled (never waited for) every millisecond or
            // so, so a finished frame goes out at once, not with the next capture.
            let poll_at = (self.readback.in_flight() > 0).then(|| Instant::now() + READBACK_POLL);
            let deadline = match (capture_at, poll_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let command = match deadline {
                Some(at) => commands.recv_deadline(at),
                None => commands
                    .recv()
                    .map_err(|_| flume::RecvTimeoutError::Disconnected),
            };
            match command {
                Ok(command) => {
                    if !self.apply(command) {
                        continue;
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {
                    if capture_at.is_none_or(|at| Instant::now() < at) {
                        if let Err(e) = self.collect() {
                            *lock(&self.status.error) = Some(e.to_string());
                        }
                        continue;
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
            if !self.streaming() {
                continue;
            }
            let now = Instant::now();
            if let Rate::Fps(fps) = self.rate {
                let interval = Duration::from_secs_f32(1.0 / fps.clamp(1.0, 240.0));
                self.next_capture = (self.next_capture + interval).max(now);
            }
            if let Err(e) = self.capture_and_publish(now) {
                *lock(&self.status.error) = Some(e.to_string());
            }
            if self.publisher_gone() {
                return;
            }
        }
    }

    fn publisher_gone(&self) -> bool {
        !self.publisher.alive()
    }

    /// Applies a command; returns whether to capture right away.
    fn apply(&mut self, command: Command) -> bool {
        match command {
            Command::Picture(picture) => {
                let size = picture.size();
                if (self.source.width(), self.source.height()) != size {
                    (self.source, self.source_view) = source_texture(&self.device, size);
                    self.source_generation += 1;
                }
                write_texture(&self.queue, &self.source, picture.first());
                self.shown = 0;
                self.picture = Some(picture);
                self.picture_changed();
                self.update_preview();
                false
            }
            Command::Mode(mode) => {
                if mode != self.mode {
                    self.picture_changed();
                }
                self.mode = mode;
                self.update_preview();
                false
            }
            Command::LiveFormat(format) => {
                if format != self.live.format() {
                    let (width, height) = self.live_bound.1;
                    self.live = LiveShader::with_format(
                        &self.device,
                        &self.source_view,
                        width,
                        height,
                        format,
                    );
                    self.live_bound.0 = self.source_generation;
                    if self.mode != StreamMode::Image {
                        self.picture_changed();
                    }
                    self.update_preview();
                }
                false
            }
            Command::Rate(rate) => {
                self.rate = rate;
                self.next_capture = Instant::now();
                false
            }
            Command::UiFrame => self.rate == Rate::EveryUiFrame,
        }
    }

    fn capture_and_publish(&mut self, now: Instant) -> Result<(), GpuError> {
        let t = now.duration_since(self.started);
        if let Some(Picture::Animation { frames, total }) = &self.picture {
            let index = crate::source::animation_index(frames, *total, t);
            if index != self.shown {
                write_texture(&self.queue, &self.source, &frames[index].0);
                self.shown = index;
                self.picture_changed();
            }
        }
        // What finished since the last capture goes out first; with every buffer still
        // in flight, wait for the oldest one's own submission (bounded), never for the
        // whole device the window presents from.
        self.collect()?;
        // An unchanged picture, read back once already: the same pixels again under the
        // next number, with no GPU work, copy or hash.
        if let Some(still) = self
            .still
            .as_ref()
            .filter(|_| self.mode == StreamMode::Image)
        {
            let frame = still.with_seq(self.seq, now_us());
            self.seq += 1;
            self.publisher.publish(&frame);
            self.status.published.fetch_add(1, Relaxed);
            return Ok(());
        }
        if self.readback.is_full() {
            self.readback.wait_oldest(&self.device, RING_FULL_WAIT)?;
            self.collect()?;
        }
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("texstream capture"),
            });
        let copied = if self.mode == StreamMode::Image {
            self.readback
                .copy(&self.device, &mut encoder, &self.source, self.seq, now_us())?
        } else {
            let (size, live_mode) = if self.mode == StreamMode::Pattern {
                (PATTERN_SIZE, LiveMode::Pattern)
            } else {
                ((self.source.width(), self.source.height()), LiveMode::Image)
            };
            if self.live_bound != (self.source_generation, size) {
                self.live
                    .set_source(&self.device, &self.source_view, size.0, size.1);
                self.live_bound = (self.source_generation, size);
                self.update_preview();
            }
            self.live
                .render(&self.queue, &mut encoder, t.as_secs_f32(), live_mode);
            self.readback.copy(
                &self.device,
                &mut encoder,
                self.live.target(),
                self.seq,
                now_us(),
            )?
        };
        let submission = self.queue.submit([encoder.finish()]);
        self.readback.submitted_as(submission);
        if let Some(after_submit) = &self.options.after_submit {
            after_submit();
        }
        if copied {
            self.seq += 1;
        } else {
            self.status.gpu_busy.fetch_add(1, Relaxed);
        }
        self.note_in_flight();
        // Nothing waits here: the frame goes out when a later poll finds it mapped.
        self.collect()
    }

    /// Polls the device without blocking and publishes the newest finished readback.
    fn collect(&mut self) -> Result<(), GpuError> {
        if self.readback.in_flight() == 0 {
            return Ok(());
        }
        let taking = Instant::now();
        if let Some(frame) = self.readback.try_frame(&self.device, &self.pool)? {
            self.status.read_back.fetch_add(1, Relaxed);
            if self.mode == StreamMode::Image && frame.meta().seq >= self.unchanged_since {
                // Shares the pixels: kept, they cost no copy.
                self.still = Some(frame.clone());
            }
            self.publish(frame, taking);
        }
        self.note_in_flight();
        Ok(())
    }

    fn note_in_flight(&self) {
        let n = self.readback.in_flight() as u64;
        self.status.readbacks_in_flight.store(n, Relaxed);
        self.status.readbacks_in_flight_peak.fetch_max(n, Relaxed);
    }

    /// Publishes a frame taken from the ring; `taking`: when its take (the poll and
    /// the copy out of the staging buffer) began.
    fn publish(&mut self, frame: crate::frame::Frame, taking: Instant) {
        let copied = Instant::now();
        let ms = |d: Duration| Some(d.as_secs_f64() * 1e3);
        // Capture (recorded) → taken, and the take itself.
        let take = copied.duration_since(taking);
        let since_capture = Duration::from_micros(now_us().saturating_sub(frame.meta().capture_us));
        lock(&self.status.stages)
            .record(copied, [ms(since_capture.saturating_sub(take)), ms(take)]);
        self.publisher.publish(&frame);
        self.status.published.fetch_add(1, Relaxed);
    }

    /// Tells the window which texture to show, when that changed.
    fn update_preview(&mut self) {
        let live = self.mode != StreamMode::Image;
        let key = (
            live,
            self.source_generation,
            self.live_bound,
            self.live.format(),
        );
        if self.preview_of == Some(key) {
            return;
        }
        self.preview_of = Some(key);
        self.preview_generation += 1;
        let texture = if live {
            self.live.preview_target()
        } else {
            &self.source
        };
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            label: Some("texstream sender preview"),
            ..Default::default()
        });
        *lock(&self.status.preview) = Some(Preview {
            view,
            size: (texture.width(), texture.height()),
            generation: self.preview_generation,
        });
        self.ctx.request_repaint();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_texture(queue: &wgpu::Queue, texture: &wgpu::Texture, img: &RgbaImage) {
    let (w, h) = img.dimensions();
    queue.write_texture(
        texture.as_image_copy(),
        img.as_raw(),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(w * 4),
            rows_per_image: Some(h),
        },
        texture.size(),
    );
}

fn source_texture(device: &wgpu::Device, size: (u32, u32)) -> (wgpu::Texture, wgpu::TextureView) {
    texture_2d(
        device,
        "texstream sender source",
        size,
        wgpu::TextureFormat::Rgba8Unorm,
        wgpu::TextureUsages::TEXTURE_BINDING
            | wgpu::TextureUsages::COPY_DST
            | wgpu::TextureUsages::COPY_SRC,
    )
}
