//! `texstream send` and `texstream view`: the two windows, on eframe's wgpu renderer.

use std::path::PathBuf;

use clap::Args;

use super::LinkArgs;
use crate::app::native_options;
use crate::app::sender::SenderApp;
use crate::app::viewer::ViewerApp;
use crate::frame::PixelFormat;
use crate::gpu::LIVE_FORMATS;
use crate::protocol::Role;

#[derive(Args, Debug)]
pub struct SendArgs {
    /// An image to stream (any format the image crate reads; animated GIF/APNG/WebP
    /// play), or `pattern` for the shader pattern. Images can also be picked or dropped.
    #[arg(value_name = "IMAGE")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub link: LinkArgs,
    /// Where to put the window, X,Y in screen pixels (a hint to the window manager).
    #[arg(long, value_name = "X,Y", value_parser = parse_position)]
    pub position: Option<[f32; 2]>,
    /// Serve at most this many viewers at once.
    #[arg(long, value_name = "N")]
    pub max_viewers: Option<usize>,
    /// Folder for files peers send (default: ~/Downloads/texstream).
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,
    /// Do not announce this sender on the LAN (it is announced under --name, or
    /// `HOST (sender)`, whenever it listens).
    #[arg(long)]
    pub no_announce: bool,
    /// The texture the shader pattern and the image effect render into, streamed as it
    /// is: rgba8, or rgba16f / rgba32f for float pixels (values past 1 kept). Viewers
    /// older than the float formats get none of these frames.
    #[arg(long, value_name = "FORMAT", default_value = "rgba8", value_parser = parse_live_format)]
    pub format: PixelFormat,
}

/// Parses a live shader format name: one of [`LIVE_FORMATS`].
fn parse_live_format(s: &str) -> Result<PixelFormat, String> {
    LIVE_FORMATS
        .into_iter()
        .find(|f| f.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("{s:?} is not a shader format: choose rgba8, rgba16f or rgba32f"))
}

#[derive(Args, Debug)]
pub struct ViewArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// Where to put the window, X,Y in screen pixels (a hint to the window manager).
    #[arg(long, value_name = "X,Y", value_parser = parse_position)]
    pub position: Option<[f32; 2]>,
    /// The window's size, WIDTHxHEIGHT in screen pixels (default 1100x720).
    #[arg(long, value_name = "WxH", value_parser = super::parse_size)]
    pub window_size: Option<(u32, u32)>,
    /// Exit when standard input closes (the demo ties its viewer to the sender's
    /// process this way, so the viewer never outlives it).
    #[arg(long, hide = true)]
    pub exit_with_stdin: bool,
    /// Folder for snapshots (default: the current folder).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub snapshot_dir: PathBuf,
    /// Folder for files peers send (default: ~/Downloads/texstream).
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,
}

/// Prints the listen address on standard output, as `serve` does, for scripts.
fn announce(node: &crate::net::Node) {
    if let Some(addr) = node.local_addr() {
        println!("listening on {addr}");
    }
}

fn placed(mut options: eframe::NativeOptions, position: Option<[f32; 2]>) -> eframe::NativeOptions {
    if let Some(position) = position {
        options.viewport = options.viewport.with_position(position);
    }
    options
}

/// Parses `X,Y`.
fn parse_position(s: &str) -> Result<[f32; 2], String> {
    let (x, y) = s
        .split_once(',')
        .ok_or_else(|| format!("expected X,Y, got {s:?}"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f32>()
            .map_err(|_| format!("{v:?} is not a number"))
    };
    Ok([parse(x)?, parse(y)?])
}

/// Where the windows put received files unless told otherwise.
pub fn default_files_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join("Downloads").join("texstream"),
        None => PathBuf::from("texstream-files"),
    }
}

pub fn run_send(args: SendArgs) -> anyhow::Result<()> {
    let mut config = args.link.node_config(Role::Sender, true)?;
    config.max_peers = args.max_viewers;
    config.files_dir = Some(args.files_dir.unwrap_or_else(default_files_dir));
    let image = args.image;
    let live_format = args.format;
    let announce_as = (!args.no_announce).then(|| args.link.name.clone());
    eframe::run_native(
        "texstream sender",
        placed(
            native_options("texstream sender", [1200.0, 720.0]),
            args.position,
        ),
        Box::new(move |cc| {
            let mut app = SenderApp::new(cc, config, image)?;
            app.set_live_format(live_format);
            if let Some(name) = &announce_as {
                app.announce(name.as_deref());
            }
            announce(app.node());
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the sender window: {e}"))
}

pub fn run_view(args: ViewArgs) -> anyhow::Result<()> {
    if args.exit_with_stdin {
        std::thread::Builder::new()
            .name("texstream parent watch".into())
            .spawn(|| {
                let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                std::process::exit(0);
            })?;
    }
    let mut config = args.link.node_config(Role::Viewer, false)?;
    config.files_dir = Some(args.files_dir.unwrap_or_else(default_files_dir));
    let snapshot_dir = args.snapshot_dir;
    let exit_with_stdin = args.exit_with_stdin;
    eframe::run_native(
        "texstream viewer",
        placed(
            native_options(
                "texstream viewer",
                args.window_size
                    .map_or([1100.0, 720.0], |(w, h)| [w as f32, h as f32]),
            ),
            args.position,
        ),
        Box::new(move |cc| {
            let dialed: Vec<String> = config.connect.clone();
            let by_name: Vec<String> = config.sources.clone();
            let mut app = ViewerApp::new(cc, config, snapshot_dir)?;
            if !exit_with_stdin {
                // The demo's viewer watches an ephemeral port: not worth remembering.
                let sources = app.sources_mut();
                sources.set_recent_file(crate::net::config_dir().join("recent-sources"));
                for target in dialed.iter().rev() {
                    sources.watched(target);
                }
                for name in by_name.iter().rev() {
                    sources.watched(&format!("{}{name}", crate::net::discovery::BY_NAME));
                }
            }
            announce(app.node());
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the viewer window: {e}"))
}

/// Each demo window's size, and the gap between them.
const DEMO_WINDOW: [f32; 2] = [940.0, 720.0];
const DEMO_GAP: f32 = 20.0;

/// The windowed demo: the sender window streams `image` on an ephemeral loopback port,
/// and a viewer window (a second texstream process) connects to it.
pub fn run_demo(name: &str, image: image::RgbaImage) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut config = crate::net::NodeConfig::new(Role::Sender);
    config.listen = Some("127.0.0.1:0".into());
    config.files_dir = Some(default_files_dir());
    let name = name.to_owned();
    eframe::run_native(
        "texstream sender (demo)",
        // Side by side, each half of a 1920-pixel-wide screen: the sender on the
        // left, its viewer on the right.
        placed(
            native_options("texstream sender (demo)", DEMO_WINDOW),
            Some([0.0, 0.0]),
        ),
        Box::new(move |cc| {
            let mut app = SenderApp::new(cc, config, None)?;
            app.show_image(&name, image);
            if let Some(addr) = app.node().local_addr() {
                // The pipe on the viewer's stdin closes when this process ends, however
                // it ends, and the viewer then exits too.
                let child = std::process::Command::new(exe)
                    .args(["view", "--exit-with-stdin", "--connect", &addr.to_string()])
                    .args(["--position", &format!("{},0", DEMO_WINDOW[0] + DEMO_GAP)])
                    .args([
                        "--window-size",
                        &format!("{}x{}", DEMO_WINDOW[0], DEMO_WINDOW[1]),
                    ])
                    .stdin(std::process::Stdio::piped())
                    .spawn()?;
                app.attach_companion(child);
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the demo windows: {e}"))
}

/// Whether a window can be opened here (an X11 or Wayland display is set).
pub fn display_available() -> bool {
    std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty())
}
