//! The sender window driven through `egui_kittest` on a real wgpu device (lavapipe in
//! CI): widgets found by label, a dropped image becomes the stream (checked byte-exact at
//! a viewer), a corrupt file gives a clear message and changes nothing, the file picker
//! loads a typed path, chat typed in the sender window reaches the viewer window, and a
//! file received shows in the transfers panel until done (its folder opened on request)
//! or cancelled (leaving nothing behind), the shader output control streams float
//! frames and `send --format` names only what the shader renders. Skips without a GPU
//! unless TEXSTREAM_REQUIRE_GPU=1.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui::accesskit::Role as AccessRole;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use texstream::app::capture::PATTERN_SIZE;
use texstream::app::sender::{SenderApp, StreamMode};
use texstream::app::viewer::ViewerApp;
use texstream::app::FolderOpener;
use texstream::frame::{Frame, PixelFormat};
use texstream::net::{KeepaliveConfig, Node, NodeConfig, TransferState};
use texstream::protocol::{Capabilities, FileOffer, Message, Role};

fn gpu_present(test: &str) -> bool {
    match texstream::gpu::Gpu::headless() {
        Ok(_) => true,
        Err(e) if std::env::var("TEXSTREAM_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("{test}: TEXSTREAM_REQUIRE_GPU=1 but no GPU: {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped, no GPU: {e}");
            false
        }
    }
}

fn sender_harness(image: Option<PathBuf>) -> Harness<'static, SenderApp> {
    sender_harness_with(image, |_| {})
}

/// [`sender_harness`] with its node's config changed by `tweak` first.
fn sender_harness_with(
    image: Option<PathBuf>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Harness<'static, SenderApp> {
    let mut config = NodeConfig::new(Role::Sender);
    config.listen = Some("127.0.0.1:0".into());
    tweak(&mut config);
    Harness::builder()
        .with_size([1200.0, 720.0])
        .wgpu()
        .build_eframe(move |cc| SenderApp::new(cc, config, image).unwrap())
}

fn viewer_node(sender: &SenderApp) -> Node {
    let mut config = NodeConfig::new(Role::Viewer);
    config.connect = vec![sender.node().local_addr().unwrap().to_string()];
    Node::start(config).unwrap()
}

/// Steps the window until `done` holds, for at most 30 s.
fn step_until<S>(
    harness: &mut Harness<'_, S>,
    what: &str,
    mut done: impl FnMut(&mut Harness<'_, S>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(harness) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        harness.step();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Steps the sender until the viewer receives a frame of `size`; returns it.
fn frame_of_size(harness: &mut Harness<'_, SenderApp>, viewer: &Node, size: (u32, u32)) -> Frame {
    let mut got = None;
    step_until(
        harness,
        &format!("a {}x{} frame at the viewer", size.0, size.1),
        |_| {
            got = viewer
                .frames()
                .try_iter()
                .find(|f| (f.meta().width, f.meta().height) == size);
            got.is_some()
        },
    );
    got.unwrap()
}

fn write_png(dir: &Path, name: &str, width: u32, height: u32) -> (PathBuf, image::RgbaImage) {
    let img = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x * 5) as u8, (y * 3) as u8, (x ^ y) as u8, 255])
    });
    let path = dir.join(name);
    img.save(&path).unwrap();
    (path, img)
}

fn assert_frame_is(frame: &Frame, img: &image::RgbaImage) {
    let row = img.width() as usize * 4;
    for (y, (got, want)) in frame.rows().zip(img.as_raw().chunks_exact(row)).enumerate() {
        assert!(
            got == want,
            "row {y} of the streamed frame differs from the image"
        );
    }
}

/// A file dropped on the window, as the native backend reports one.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn drop_file(harness: &mut Harness<'_, SenderApp>, path: &Path) {
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(path.to_owned())));
}

#[test]
fn the_controls_are_there() {
    if !gpu_present("controls") {
        return;
    }
    let mut harness = sender_harness(None);
    harness.run_steps(3);
    harness.get_by_label("Pick image…");
    harness.get_by_label("Every UI frame");
    harness.get_by_label("Send");
    assert!(harness
        .query_by_label_contains("Listening on 127.0.0.1:")
        .is_some());
    assert_eq!(harness.state().mode(), StreamMode::Pattern);
    // No transfer yet: no transfers panel.
    assert!(harness.query_by_label("Transfers").is_none());
}

#[test]
fn the_codec_is_chosen_in_the_window() {
    if !gpu_present("codec") {
        return;
    }
    let mut harness = sender_harness(None);
    harness.run_steps(3);
    assert_eq!(harness.state().node().codec(), texstream::net::Codec::Raw);
    harness.get_by_label("Codec").click();
    harness.run_steps(3);
    harness.get_by_label("tiles").click();
    harness.run_steps(3);
    assert_eq!(harness.state().node().codec(), texstream::net::Codec::Tiles);
}

#[test]
fn a_dropped_image_becomes_the_stream_and_a_bad_file_changes_nothing() {
    if !gpu_present("drop") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (first, first_img) = write_png(tmp.path(), "first.png", 301, 203);
    let mut harness = sender_harness(Some(first));
    let viewer = viewer_node(harness.state());
    let frame = frame_of_size(&mut harness, &viewer, (301, 203));
    assert_frame_is(&frame, &first_img);

    // Dropping another image makes it the stream: what the viewer gets is the GPU texture.
    let (second, second_img) = write_png(tmp.path(), "second.png", 129, 77);
    drop_file(&mut harness, &second);
    let frame = frame_of_size(&mut harness, &viewer, (129, 77));
    assert_frame_is(&frame, &second_img);
    assert_eq!(
        harness.state().image().map(|(n, s)| (n.to_owned(), s)),
        Some(("second.png".into(), (129, 77)))
    );

    // A corrupt image: a clear message, and the stream goes on with the same picture.
    let corrupt = tmp.path().join("broken.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    drop_file(&mut harness, &corrupt);
    step_until(&mut harness, "the error message", |h| {
        h.state().message().is_some_and(|(_, error)| error)
    });
    let (text, _) = harness.state().message().unwrap();
    assert!(text.contains("broken.png"), "{text}");
    harness.get_by_label_contains("not a readable image");
    let _ = viewer.frames().try_iter().count();
    let frame = frame_of_size(&mut harness, &viewer, (129, 77));
    assert_frame_is(&frame, &second_img);
}

#[test]
fn the_file_picker_loads_a_typed_path() {
    if !gpu_present("picker") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = write_png(tmp.path(), "picked.png", 64, 48);
    let mut harness = sender_harness(None);
    harness.run_steps(2);
    harness.get_by_label("Pick image…").click();
    step_until(&mut harness, "the picker window", |h| {
        h.query_by_label("Up").is_some()
    });
    let inputs = harness.get_all_by_role(AccessRole::TextInput).count();
    assert!(inputs >= 2, "the picker's path field is missing");
    // The picker's path field is the one that holds the current folder.
    let field = harness
        .get_all_by_role(AccessRole::TextInput)
        .find(|n| n.value().is_some_and(|v| v.starts_with('/')))
        .unwrap();
    field.focus();
    harness.run_steps(1);
    let field = harness
        .get_all_by_role(AccessRole::TextInput)
        .find(|n| n.value().is_some_and(|v| v.starts_with('/')))
        .unwrap();
    field.set_text_value_accesskit(path.to_str().unwrap());
    harness.run_steps(1);
    harness.key_press(egui::Key::Enter);
    step_until(&mut harness, "the picked image", |h| {
        h.state().image().is_some()
    });
    assert_eq!(harness.state().image().unwrap().1, (64, 48));
}

/// The capture renders and copies the next frame while the last one is read back:
/// streaming a frame per window frame, more than one readback is in flight at once,
/// and the window's figures say so.
#[test]
fn readbacks_are_pipelined_and_counted() {
    if !gpu_present("pipelined readback") {
        return;
    }
    let mut harness = sender_harness(Some(PathBuf::from("pattern")));
    harness.get_by_label("Every UI frame").click();
    let deadline = Instant::now() + Duration::from_secs(30);
    while harness.state().readbacks_in_flight_peak() < 2 {
        assert!(
            Instant::now() < deadline,
            "never more than one readback in flight ({} frames published)",
            harness.state().frames_published()
        );
        harness.step();
    }
    step_until(&mut harness, "frames published", |h| {
        h.state().frames_published() >= 30
    });
    assert!(harness
        .query_by_label_contains("Readbacks in flight:")
        .is_some());
    // The window times its own passes: a figure, not a dash, once it has run.
    use egui_kittest::kittest::NodeT;
    let ui = harness
        .get_by_label_contains("UI update ")
        .accesskit_node()
        .value()
        .expect("the UI figures have a text");
    assert!(
        !ui.starts_with("UI update - "),
        "the update time is measured: {ui}"
    );
}

/// The channels of a float frame's rows (padding left out) as f32.
fn float_channels(frame: &Frame) -> Vec<f32> {
    let rows = frame.rows().flatten().copied().collect::<Vec<u8>>();
    match frame.meta().format {
        PixelFormat::Rgba16F => rows
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        PixelFormat::Rgba32F => rows
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        other => panic!("{other} is not a float format"),
    }
}

/// "Shader output" renders the pattern into an RGBA32F, then an RGBA16F texture: the
/// viewer gets frames of that format and size, with the bar's 4.0 that RGBA8 would
/// clamp to 1, while the window keeps drawing its preview (an RGBA8 copy for RGBA32F,
/// which egui cannot sample); back to RGBA8, the frames are RGBA8 again.
#[test]
fn the_shader_output_control_streams_float_frames() {
    if !gpu_present("shader output") {
        return;
    }
    let mut harness = sender_harness(Some(PathBuf::from("pattern")));
    let viewer = viewer_node(harness.state());
    let first = frame_of_size(&mut harness, &viewer, PATTERN_SIZE);
    assert_eq!(first.meta().format, PixelFormat::Rgba8);
    for (label, format) in [
        ("RGBA32F", PixelFormat::Rgba32F),
        ("RGBA16F", PixelFormat::Rgba16F),
        ("RGBA8", PixelFormat::Rgba8),
    ] {
        harness.get_by_label("Shader output").click();
        harness.run_steps(2);
        harness.get_by_label(label).click();
        harness.run_steps(2);
        assert_eq!(harness.state().live_format(), format);
        let mut got = None;
        step_until(
            &mut harness,
            &format!("a {format} frame at the viewer"),
            |_| {
                got = viewer
                    .frames()
                    .try_iter()
                    .find(|f| f.meta().format == format);
                got.is_some()
            },
        );
        let frame = got.unwrap();
        let m = frame.meta();
        assert_eq!((m.width, m.height), PATTERN_SIZE);
        assert_eq!(m.bytes_per_row, PATTERN_SIZE.0 * format.bytes_per_pixel());
        if format == PixelFormat::Rgba8 {
            continue;
        }
        let values = float_channels(&frame);
        assert_eq!(values.len(), (PATTERN_SIZE.0 * PATTERN_SIZE.1 * 4) as usize);
        assert!(values.iter().all(|v| v.is_finite()), "{format}: not finite");
        assert!(
            values.iter().any(|&v| v > 3.9),
            "{format}: no value past 1 (the bar at 4)"
        );
        assert!(
            values.iter().any(|&v| v > 0.01 && v < 0.99),
            "{format}: no colour between 0 and 1"
        );
        assert!(harness.state().message().is_none_or(|(_, error)| !error));
    }
}

#[test]
fn send_format_names_only_what_the_shader_renders() {
    let out = std::process::Command::new(common::proc::bin())
        .args(["send", "--format", "rgb32f"])
        .output()
        .expect("texstream runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"rgb32f\" is not a shader format: choose rgba8, rgba16f or rgba32f"),
        "{err}"
    );
}

/// A still picture is read back and hashed once, then published again under new frame
/// numbers with the same pixels: the frames read back (the window's figures) stay at
/// the few in flight when it came, while the frames published go on, and the viewer
/// gets the picture byte-exact.
#[test]
fn a_still_picture_is_read_back_once() {
    if !gpu_present("still picture") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (still, still_img) = write_png(tmp.path(), "still.png", 301, 203);
    let mut harness = sender_harness(Some(still));
    // One capture per window pass.
    harness.get_by_label("Every UI frame").click();
    let viewer = viewer_node(harness.state());
    let frame = frame_of_size(&mut harness, &viewer, (301, 203));
    assert_frame_is(&frame, &still_img);
    // Until the picture was loaded the pattern streamed, every frame read back.
    let (read_back, published) = (
        harness.state().frames_read_back(),
        harness.state().frames_published(),
    );
    step_until(&mut harness, "40 more frames published", |h| {
        h.state().frames_published() >= published + 40
    });
    let again = harness.state().frames_read_back() - read_back;
    assert!(
        again <= 3,
        "{again} frames of an unchanged picture read back (at most the ring's 3 in flight when it came)"
    );
    let _ = viewer.frames().try_iter().count();
    let frame = frame_of_size(&mut harness, &viewer, (301, 203));
    assert_frame_is(&frame, &still_img);
    use egui_kittest::kittest::NodeT;
    let figures = harness
        .get_by_label_contains("Readbacks in flight:")
        .accesskit_node()
        .value()
        .expect("the readback figures have a text");
    assert!(
        figures.ends_with(&format!("{} read back", harness.state().frames_read_back())),
        "{figures}"
    );
}

/// The capture thread held up right after submitting its GPU work (standing for a GPU
/// that takes long, which lavapipe never does) holds no window pass up: while it is held
/// the window keeps making passes, with nothing published, and it streams again once
/// let go.
#[test]
fn the_window_keeps_presenting_while_the_capture_is_held_up() {
    if !gpu_present("held-up capture") {
        return;
    }
    let (release, held) = flume::bounded::<()>(0);
    let (entered_tx, entered) = flume::bounded::<()>(1);
    let after_submit: texstream::app::sender::CaptureHook = std::sync::Arc::new(move || {
        let _ = entered_tx.try_send(());
        // Until the test lets go (drops `release`), 10 s at most.
        let _ = held.recv_timeout(Duration::from_secs(10));
    });
    let mut config = NodeConfig::new(Role::Sender);
    config.listen = Some("127.0.0.1:0".into());
    let options = texstream::app::sender::CaptureOptions {
        after_submit: Some(after_submit),
    };
    let mut harness = Harness::builder()
        .with_size([1200.0, 720.0])
        .wgpu()
        .build_eframe(move |cc| {
            SenderApp::with_capture(cc, config, Some(PathBuf::from("pattern")), options).unwrap()
        });
    // Dropped before the window, should the test fail: the capture thread is let go
    // before the window waits for it to end.
    let let_go = release;
    // A capture command from every pass, as with any window.
    harness.get_by_label("Every UI frame").click();
    entered
        .recv_timeout(Duration::from_secs(20))
        .expect("the capture thread submitted its first frame");
    let holding = Instant::now();
    let mut passes = 0u32;
    let mut slowest = Duration::ZERO;
    while holding.elapsed() < Duration::from_secs(3) {
        let pass = Instant::now();
        harness.step();
        slowest = slowest.max(pass.elapsed());
        passes += 1;
    }
    assert!(
        passes >= 20,
        "the window waited on the capture: {passes} passes in {:?}, the slowest {slowest:?}",
        holding.elapsed()
    );
    assert_eq!(
        harness.state().frames_published(),
        0,
        "the capture was held the whole time"
    );
    drop(let_go);
    step_until(&mut harness, "frames once the capture is let go", |h| {
        h.state().frames_published() >= 10
    });
}

/// A folder that takes 3 s to read holds no window pass up: the picker says it is
/// reading, the window steps on, and the listing shows when it comes.
#[test]
fn a_slow_folder_read_never_holds_the_window_up() {
    if !gpu_present("slow picker") {
        return;
    }
    let mut harness = sender_harness(None);
    let slow: texstream::app::DirReader = std::sync::Arc::new(|_dir: &Path| {
        std::thread::sleep(Duration::from_secs(3));
        Ok(Some(vec![("slowly-listed.png".to_owned(), false)]))
    });
    harness.state_mut().set_dir_reader(slow);
    harness.run_steps(2);
    harness.get_by_label("Pick image…").click();
    let started = Instant::now();
    let mut passes = 0u32;
    let mut slowest = Duration::ZERO;
    let mut saw_reading = false;
    while harness.query_by_label("slowly-listed.png").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the listing never came"
        );
        let pass = Instant::now();
        harness.step();
        slowest = slowest.max(pass.elapsed());
        passes += 1;
        saw_reading |= harness.query_by_label_contains("reading ").is_some();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(saw_reading, "the picker said it was reading meanwhile");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the listing came from the slow reader"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a window pass took {slowest:?} while the folder was read"
    );
    assert!(
        passes >= 20,
        "the window went on: {passes} passes during the read"
    );
}

#[test]
fn chat_typed_in_the_sender_window_reaches_the_viewer_window() {
    if !gpu_present("chat") {
        return;
    }
    let mut sender = sender_harness(None);
    let addr = sender.state().node().local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let snapshots = tmp.path().to_owned();
    let mut viewer: Harness<'static, ViewerApp> = Harness::builder()
        .with_size([1100.0, 720.0])
        .wgpu()
        .build_eframe(move |cc| {
            let mut config = NodeConfig::new(Role::Viewer);
            config.connect = vec![addr];
            ViewerApp::new(cc, config, snapshots).unwrap()
        });
    step_until(&mut sender, "the viewer to connect", |h| {
        h.state().node().peers().iter().any(|p| p.name.is_some())
    });
    viewer.run_steps(2);

    let input = sender.get_by_role(AccessRole::TextInput);
    input.focus();
    input.type_text("hello from the sender window");
    sender.run_steps(1);
    sender.get_by_label("Send").click();
    sender.run_steps(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        viewer.step();
        if viewer
            .query_by_label_contains("hello from the sender window")
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer window never showed the message"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // And back: the viewer node's text reaches the sender window's chat.
    viewer.state().node().send_text("and hello back");
    step_until(&mut sender, "the reply in the sender's chat", |h| {
        h.query_by_label_contains("and hello back").is_some()
    });
}

#[test]
fn a_dropped_animation_plays_and_other_files_are_sent() {
    if !gpu_present("animation") {
        return;
    }
    use image::codecs::gif::GifEncoder;
    let tmp = tempfile::tempdir().unwrap();
    let gif = tmp.path().join("blink.gif");
    {
        let mut enc = GifEncoder::new(std::fs::File::create(&gif).unwrap());
        for colour in [[255, 0, 0, 255], [0, 0, 255, 255]] {
            let img = image::RgbaImage::from_pixel(40, 30, image::Rgba(colour));
            let frame =
                image::Frame::from_parts(img, 0, 0, image::Delay::from_numer_denom_ms(100, 1));
            enc.encode_frame(frame).unwrap();
        }
    }
    let mut harness = sender_harness(None);
    let mut config = NodeConfig::new(Role::Viewer);
    config.connect = vec![harness.state().node().local_addr().unwrap().to_string()];
    config.files_dir = Some(tmp.path().join("received"));
    let viewer = Node::start(config).unwrap();

    // Both frames of the animation reach the viewer, in its own timing.
    drop_file(&mut harness, &gif);
    let mut seen = std::collections::HashSet::new();
    step_until(&mut harness, "both animation frames at the viewer", |_| {
        for f in viewer.frames().try_iter() {
            if (f.meta().width, f.meta().height) == (40, 30) {
                seen.insert(f.pixels()[..4].to_vec());
            }
        }
        seen.len() == 2
    });
    assert!(seen.contains(&vec![255, 0, 0, 255]) && seen.contains(&vec![0, 0, 255, 255]));

    // A file that is not an image is sent to the peers instead.
    let notes = tmp.path().join("notes.bin");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&notes, &content).unwrap();
    drop_file(&mut harness, &notes);
    let mut received = None;
    step_until(&mut harness, "the file at the viewer", |_| {
        for event in viewer.events().try_iter() {
            if let texstream::net::Event::FileReceived { path, .. } = event {
                received = Some(path);
            }
        }
        received.is_some()
    });
    assert_eq!(std::fs::read(received.unwrap()).unwrap(), content);
    step_until(&mut harness, "the delivery note", |h| {
        h.query_by_label_contains("notes.bin delivered").is_some()
    });
}

/// Aborts the whole test process with `what` if [`Watchdog::pet`] is not called for
/// `limit`: a window step that blocks fails the test instead of hanging it.
struct Watchdog {
    last: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Watchdog {
    fn start(what: &'static str, limit: Duration) -> Watchdog {
        let last = std::sync::Arc::new(std::sync::Mutex::new(Some(Instant::now())));
        let watched = last.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let Some(at) = *watched.lock().unwrap() else {
                return;
            };
            if at.elapsed() > limit {
                // Straight to stderr: the test's captured output is lost with the abort.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "{what}: blocked for over {limit:?}; aborting the test process"
                );
                std::process::abort();
            }
        });
        Watchdog { last }
    }

    fn pet(&self) {
        *self.last.lock().unwrap() = Some(Instant::now());
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        *self.last.lock().unwrap() = None;
    }
}

/// The count the window itself shows in "N frames published, …".
fn shown_published(harness: &Harness<'_, SenderApp>) -> u64 {
    use egui_kittest::kittest::NodeT;
    // A label's text is its accesskit value.
    let label = harness
        .get_by_label_contains("frames published")
        .accesskit_node()
        .value()
        .expect("the stats line has a text");
    label
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {label:?}"))
}

#[test]
fn four_stalled_viewers_never_stop_the_window() {
    if !gpu_present("stalled viewers") {
        return;
    }
    use std::io::{Read, Write};
    let mut harness = sender_harness(Some(PathBuf::from("pattern")));
    // One frame streamed per window frame: what is published is what the window drove.
    harness.get_by_label("Every UI frame").click();
    harness.run_steps(2);
    let addr = harness.state().node().local_addr().unwrap();
    // Four viewers that say hello and then never read a byte.
    let stalled: Vec<std::net::TcpStream> = (0..4)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut hello = texstream::protocol::encode_preamble().to_vec();
            texstream::protocol::encode(
                &texstream::protocol::Message::Hello(texstream::protocol::Hello {
                    role: Role::Viewer,
                    capabilities: texstream::protocol::Capabilities(
                        texstream::protocol::Capabilities::FRAMES_IN,
                    ),
                    name: format!("stalled {i}"),
                    auth: Vec::new(),
                    instance: 0,
                }),
                &mut hello,
            );
            s.write_all(&hello).unwrap();
            let mut preamble = [0u8; 8];
            s.read_exact(&mut preamble).unwrap();
            s
        })
        .collect();
    // From here the window keeps stepping (no step may block: the watchdog ends the
    // process) and keeps showing new frames streamed while every viewer's socket is full.
    let watchdog = Watchdog::start("a sender window step", Duration::from_secs(10));
    step_until(&mut harness, "four viewers", |h| {
        watchdog.pet();
        h.state().node().peers().len() == 4
    });
    let before = shown_published(&harness);
    let mut steps = 0u64;
    step_until(&mut harness, "the window to show 60 more frames", |h| {
        watchdog.pet();
        steps += 1;
        shown_published(h) >= before + 60
    });
    drop(watchdog);
    let skipped: u64 = harness
        .state()
        .node()
        .peers()
        .iter()
        .map(|p| p.frames_skipped)
        .sum();
    assert!(
        skipped > 0,
        "the stalled viewers' sockets filled and they skipped frames"
    );
    assert!(
        steps >= 60,
        "one frame per window step at most: {steps} steps"
    );
    drop(stalled);
}

#[test]
fn an_image_too_large_to_stream_is_a_clear_message() {
    if !gpu_present("too large") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wide = tmp.path().join("wide.png");
    image::RgbaImage::new(16385, 1).save(&wide).unwrap();
    let (small, small_img) = write_png(tmp.path(), "small.png", 33, 17);
    let mut harness = sender_harness(Some(small));
    let viewer = viewer_node(harness.state());
    frame_of_size(&mut harness, &viewer, (33, 17));
    drop_file(&mut harness, &wide);
    step_until(&mut harness, "the size message", |h| {
        h.state()
            .message()
            .is_some_and(|(m, error)| error && m.contains("16385x1"))
    });
    assert_frame_is(&frame_of_size(&mut harness, &viewer, (33, 17)), &small_img);
}

#[test]
fn a_received_file_is_a_row_until_done_and_open_folder_opens_its_folder() {
    if !gpu_present("received file") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let received = tmp.path().join("received");
    let files_dir = received.clone();
    let mut harness = sender_harness_with(Some(PathBuf::from("pattern")), move |c| {
        c.files_dir = Some(files_dir);
    });
    let (opened_tx, opened) = flume::bounded(4);
    harness
        .state_mut()
        .set_folder_opener(FolderOpener::new(move |dir| {
            opened_tx.send(dir.to_owned()).unwrap();
            Ok(())
        }));
    let mut config = NodeConfig::new(Role::Viewer);
    config.name = "far viewer".to_owned();
    config.connect = vec![harness.state().node().local_addr().unwrap().to_string()];
    let viewer = Node::start(config).unwrap();
    step_until(&mut harness, "the viewer to connect", |h| {
        h.state().node().peers().iter().any(|p| p.name.is_some())
    });
    // The window's side may finish its handshake first: the viewer's link is ready to
    // send files once the viewer says it is connected.
    common::wait_connected(&viewer, "the viewer's own link to the window");

    let path = tmp.path().join("report.bin");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    assert_eq!(viewer.send_file(&path).unwrap(), 1);
    step_until(&mut harness, "a receiving row", |h| {
        h.query_by_label("receiving").is_some()
    });
    harness.get_by_label("report.bin");
    harness.get_by_label("from far viewer");
    step_until(&mut harness, "the row to say done", |h| {
        h.query_by_label("done").is_some()
    });
    harness.get_by_label("3.0 MB / 3.0 MB");
    let row = harness.state().transfers().rows()[0].clone();
    assert!(matches!(row.state, TransferState::Done { .. }), "{row:?}");
    let stored = row.path.clone().expect("a received file has a path");
    assert_eq!(stored.parent(), Some(received.as_path()));
    assert!(
        std::fs::read(&stored).unwrap() == content,
        "the file arrived changed"
    );
    assert!(harness.query_by_label("Cancel").is_none());

    harness.get_by_label("Open folder").click();
    harness.run_steps(1);
    let dir = opened.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(dir, received);
}

#[test]
fn cancelling_a_file_being_received_leaves_nothing_behind() {
    if !gpu_present("cancel incoming") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let received = tmp.path().join("received");
    let files_dir = received.clone();
    let mut harness = sender_harness_with(Some(PathBuf::from("pattern")), move |c| {
        c.files_dir = Some(files_dir);
        // Long enough that the hand-driven peer never has to answer pings.
        c.keepalive = KeepaliveConfig {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(120),
        };
    });
    let addr = harness.state().node().local_addr().unwrap();
    // A peer that offers a 1 GB file and sends it slowly, one chunk per window step.
    let (mut peer, _) = common::RawPeer::handshaken(
        addr,
        common::raw_hello(Role::FileClient, Capabilities::TEXT, "slow uploader"),
    );
    let size = 1_000_000_000u64;
    peer.send_msg(&Message::FileOffer(FileOffer {
        id: 5,
        size,
        name: "huge.bin".to_owned(),
    }));
    loop {
        match peer.read_message() {
            Message::FileAccept(accept) => {
                assert_eq!((accept.id, accept.offset), (5, 0));
                break;
            }
            Message::FileResult(r) => panic!("the window refused the file: {}", r.message),
            _ => continue,
        }
    }
    let chunk = vec![7u8; 64 << 10];
    let mut offset = 0u64;
    let mut send_chunk = |peer: &mut common::RawPeer| {
        peer.send_msg(&Message::FileChunk {
            id: 5,
            offset,
            data: chunk.clone(),
        });
        offset += chunk.len() as u64;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while harness.query_by_label("running").is_none() {
        assert!(Instant::now() < deadline, "the row never said running");
        send_chunk(&mut peer);
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    harness.get_by_label("receiving");
    harness.get_by_label("huge.bin");
    harness.get_by_label("from slow uploader");
    let part_files = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = part_files(&received);
    assert!(
        before.len() == 1 && before[0].ends_with(".part"),
        "the file is written under a temporary name: {before:?}"
    );

    harness.get_by_label("Cancel").click();
    harness.run_steps(2);
    // The link's reader sees the cancel when the next message arrives; until then the
    // row says it is under way.
    harness.get_by_label("cancelling…");
    let deadline = Instant::now() + Duration::from_secs(30);
    while harness
        .query_by_label("failed: cancelled by the receiver")
        .is_none()
    {
        assert!(Instant::now() < deadline, "the row never said cancelled");
        send_chunk(&mut peer);
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(harness.query_by_label("Cancel").is_none());
    assert!(harness.query_by_label("Open folder").is_none());
    // The file's sender is told, and nothing is left in the folder: no partial file,
    // nothing under the final name.
    let result = loop {
        if let Message::FileResult(r) = peer.read_message() {
            break r;
        }
    };
    assert_eq!(result.id, 5);
    assert!(!result.ok);
    assert!(result.message.contains("cancelled"), "{}", result.message);
    let after = part_files(&received);
    assert!(after.is_empty(), "left in the receive folder: {after:?}");
    assert!(offset < size);
}

/// The sender window says whether it is announced on the LAN and under what name; a
/// browser hears it under that name, at the window's address, until the window closes.
#[test]
fn the_window_shows_the_name_it_is_announced_under_and_a_browser_hears_it() {
    if !gpu_present("announced") {
        return;
    }
    let name = format!("window sender {}", std::process::id());
    let mut harness = sender_harness(None);
    harness.run_steps(2);
    assert!(harness
        .query_by_label_contains("not announced on the LAN")
        .is_some());
    harness.state_mut().announce(Some(&name));
    harness.run_steps(2);
    assert_eq!(harness.state().announced_as(), Some(name.as_str()));
    assert!(harness
        .query_by_label_contains(&format!("On the LAN as \"{name}\""))
        .is_some());
    let addr = harness.state().node().local_addr().unwrap();

    let mut browser = texstream::net::discovery::Browser::start().unwrap();
    let heard = |browser: &mut texstream::net::discovery::Browser, want: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            browser.wait(Duration::from_millis(100));
            let here = browser
                .sources()
                .iter()
                .any(|f| f.name == name && f.addrs.contains(&addr));
            if here == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "heard {want}: {:?}",
                browser.sources()
            );
        }
    };
    heard(&mut browser, true);
    drop(harness);
    heard(&mut browser, false);
}
