//! The windows (eframe/egui on wgpu): the sender and the viewer, and the panels both
//! use (peers, chat, transfers). State lives in structs; drawing is in `*_ui`
//! functions; the node comes in through constructors so tests can drive the windows
//! with `egui_kittest`.

pub mod capture;
mod chat;
mod picker;
pub mod sender;
pub mod sources;
pub mod text;
pub mod transfers;
pub mod viewer;

pub use chat::Chat;
pub use picker::{DirReader, FilePicker};
pub use transfers::{FileOffers, FolderOpener, TransferControl, TransfersView};

use crate::net::{PeerStatus, Waker};

/// Window options shared by both windows: wgpu, drag and drop on, and the largest
/// textures and buffers the adapter allows (egui asks for 8192 px; frames may be larger).
pub fn native_options(title: &str, size: [f32; 2]) -> eframe::NativeOptions {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    setup.device_descriptor = std::sync::Arc::new(|adapter: &wgpu::Adapter| {
        let base = if adapter.get_info().backend == wgpu::Backend::Gl {
            wgpu::Limits::downlevel_webgl2_defaults()
        } else {
            wgpu::Limits::default()
        };
        let supported = adapter.limits();
        wgpu::DeviceDescriptor {
            label: Some("texstream window device"),
            required_limits: wgpu::Limits {
                max_texture_dimension_2d: supported.max_texture_dimension_2d,
                max_buffer_size: supported.max_buffer_size,
                ..base
            },
            ..Default::default()
        }
    });
    eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(title)
            .with_inner_size(size)
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: egui_wgpu::WgpuConfiguration {
            wgpu_setup: egui_wgpu::WgpuSetup::CreateNew(setup),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A waker that repaints `ctx` when the network delivers something.
pub fn repaint_waker(ctx: &egui::Context) -> Waker {
    let ctx = ctx.clone();
    Waker::new(move || ctx.request_repaint())
}

/// The peers as a table: address, state, name and role, frames, how they are coded
/// (the codec, and the frames' bytes on the wire against raw), round-trip time.
pub fn peers_ui(ui: &mut egui::Ui, peers: &[PeerStatus]) {
    if peers.is_empty() {
        ui.weak("no peers yet");
        return;
    }
    egui::Grid::new("peers")
        .striped(true)
        .num_columns(8)
        .show(ui, |ui| {
            for h in [
                "Address",
                "State",
                "Peer",
                "Security",
                "Frames sent",
                "Skipped",
                "Coding",
                "RTT",
            ] {
                ui.strong(h);
            }
            ui.end_row();
            for p in peers {
                ui.label(p.addr.map_or_else(|| p.target.clone(), |a| a.to_string()));
                ui.label(p.state.to_string());
                let who = match (&p.name, p.role) {
                    (Some(name), Some(role)) => {
                        format!("{} ({})", text::display_text(name), role.name())
                    }
                    _ => "-".to_owned(),
                };
                ui.label(who);
                security_ui(ui, p);
                ui.label(p.frames_sent.to_string());
                ui.label(p.frames_skipped.to_string());
                ui.label(coding_text(p));
                ui.label(p.rtt.map_or_else(
                    || "-".to_owned(),
                    |r| format!("{:.2} ms", r.as_secs_f64() * 1e3),
                ));
                ui.end_row();
            }
        });
}

/// The codec of the frames sent to viewers that take coded frames, changed on the
/// links that run (`--codec` sets the first). Reads an atomic; a change locks each
/// link's state for a moment, never waits on a frame.
pub fn codec_ui(ui: &mut egui::Ui, node: &crate::net::Node) {
    use crate::net::Codec;
    let now = node.codec();
    let mut chosen = None;
    egui::ComboBox::from_label("Codec")
        .selected_text(now.name())
        .show_ui(ui, |ui| {
            for codec in Codec::ALL {
                let hint = match codec {
                    Codec::Raw => "every frame whole, as it is",
                    Codec::Delta => "only the tiles changed since the last frame, uncompressed",
                    Codec::Lz4 => "changed tiles, LZ4-compressed",
                    Codec::Tiles => "changed tiles, LZ4 or QOI, whichever is smaller",
                    Codec::Auto => "per viewer, raw or tiles: whichever its link carries faster",
                };
                if ui
                    .selectable_label(codec == now, codec.name())
                    .on_hover_text(hint)
                    .clicked()
                {
                    chosen = Some(codec);
                }
            }
        })
        .response
        .on_hover_text("lossless: viewers show the frames byte for byte whichever is chosen");
    if let Some(codec) = chosen.filter(|c| *c != now) {
        node.set_codec(codec);
    }
}

/// "tiles, 4.3 % of raw": the codec of a peer's link and, once frames went, their
/// bytes on the wire against their raw bytes.
pub fn coding_text(p: &PeerStatus) -> String {
    match p.wire_ratio() {
        Some(ratio) if p.frames_coded > 0 => {
            format!("{}, {:.1} % of raw", p.codec_now(), ratio * 100.0)
        }
        _ => p.codec_now(),
    }
}

/// Whether a peer's connection is authenticated (token) and encrypted (TLS), with the
/// TLS certificate's fingerprint on hover.
fn security_ui(ui: &mut egui::Ui, p: &PeerStatus) {
    if p.state != crate::net::PeerState::Connected {
        ui.label("-");
        return;
    }
    let text = security_text(p.authenticated, p.encrypted);
    let label = if p.authenticated && p.encrypted {
        ui.label(text)
    } else {
        ui.colored_label(ui.visuals().warn_fg_color, text)
    };
    if let Some(fp) = &p.tls_fingerprint {
        label.on_hover_text(format!("TLS certificate {fp}"));
    }
}

/// "token + TLS", "TLS only", "token only" or "open".
pub fn security_text(authenticated: bool, encrypted: bool) -> &'static str {
    match (authenticated, encrypted) {
        (true, true) => "token + TLS",
        (false, true) => "TLS, no token",
        (true, false) => "token, not encrypted",
        (false, false) => "open, not encrypted",
    }
}

/// A wgpu texture shown through egui: registered once, re-pointed only when the
/// texture itself is re-created (a size change), never per frame.
#[derive(Default)]
pub struct EguiTexture {
    id: Option<egui::TextureId>,
}

impl EguiTexture {
    /// Registers `view` the first time, or after the texture was re-created.
    pub fn set(&mut self, render_state: &egui_wgpu::RenderState, view: &wgpu::TextureView) {
        let mut renderer = render_state.renderer.write();
        match self.id {
            None => {
                self.id = Some(renderer.register_native_texture(
                    &render_state.device,
                    view,
                    wgpu::FilterMode::Linear,
                ));
            }
            Some(id) => renderer.update_egui_texture_from_wgpu_texture(
                &render_state.device,
                view,
                wgpu::FilterMode::Linear,
                id,
            ),
        }
    }

    pub fn id(&self) -> Option<egui::TextureId> {
        self.id
    }
}

/// Paths of files dropped on the window this frame.
pub fn dropped_paths(ctx: &egui::Context) -> Vec<std::path::PathBuf> {
    ctx.input(|i| {
        i.raw
            .dropped_files
            .iter()
            .map(|f| f.path().to_owned())
            .filter(|p| !p.as_os_str().is_empty())
            .collect()
    })
}

/// The UI thread's time per pass, for the windows' figures: the app's own work
/// (`logic` and `ui`), and the whole pass as eframe measures it (tessellation and
/// painting included, vsync excluded), p50 and p99 over the last second. Logged at
/// debug every five seconds, and each pass at trace, for measurements without a screen
/// reader.
pub struct PassMeter {
    name: &'static str,
    meter: crate::meter::StageMeter<2>,
    began: Option<std::time::Instant>,
    logged: std::time::Instant,
}

impl PassMeter {
    pub fn new(name: &'static str) -> PassMeter {
        PassMeter {
            name,
            meter: crate::meter::StageMeter::default(),
            began: None,
            logged: std::time::Instant::now(),
        }
    }

    /// The app's work for this pass begins.
    pub fn begin(&mut self) {
        self.began = Some(std::time::Instant::now());
    }

    /// The app's work for this pass ends; `whole_prev_s` is eframe's CPU time of the
    /// previous whole pass (`Frame::info().cpu_usage`), when it has one.
    pub fn end(&mut self, whole_prev_s: Option<f32>) {
        let now = std::time::Instant::now();
        let app_ms = self
            .began
            .take()
            .map(|b| now.duration_since(b).as_secs_f64() * 1e3);
        let whole_ms = whole_prev_s.map(|s| f64::from(s) * 1e3);
        self.meter.record(now, [app_ms, whole_ms]);
        // Every pass, for measurements over a whole run (BENCHMARKS.md).
        tracing::trace!(window = self.name, ?app_ms, ?whole_ms, "UI pass");
        if now.duration_since(self.logged) >= std::time::Duration::from_secs(5) {
            self.logged = now;
            let text = self.text(now);
            tracing::debug!("{}: UI pass {text}", self.name);
        }
    }

    /// "UI 0.4/1.9 ms": the app's own work per pass, p50/p99 (short, for a status bar).
    pub fn short_text(&mut self, now: std::time::Instant) -> String {
        match self.meter.quantiles(now, [0.5, 0.99])[0] {
            [Some(p50), Some(p99)] => format!("UI {p50:.1}/{p99:.1} ms"),
            _ => "UI -".to_owned(),
        }
    }

    /// "update 0.4 / 1.9 ms · pass 2.1 / 5.0 ms (p50 / p99)".
    pub fn text(&mut self, now: std::time::Instant) -> String {
        let [[app50, app99], [pass50, pass99]] = self.meter.quantiles(now, [0.5, 0.99]);
        let figure = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        format!(
            "update {} / {} ms · pass {} / {} ms (p50 / p99)",
            figure(app50),
            figure(app99),
            figure(pass50),
            figure(pass99)
        )
    }
}
