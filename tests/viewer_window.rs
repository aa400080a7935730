//! The viewer window driven through `egui_kittest` on a headless wgpu device (Mesa's
//! lavapipe in CI): a sender node on loopback streams an odd-sized frame that the window
//! shows and holds byte for byte in its texture; chat both ways; a PNG snapshot equal to
//! the frame; the connection state when nothing listens; a frame too large for the GPU;
//! a dropped file as a row of the transfers panel until done, and one cancelled while
//! its receiver is stalled; a gray (R8) and a float32 stream shown as their RGBA8
//! pictures, the float one through the automatic display range and one set.
//! Without an adapter the tests skip with a message, unless TEXSTREAM_REQUIRE_GPU=1 (as
//! in CI), where that is a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::accesskit::Role as A11yRole;
use egui_kittest::kittest::{NodeT as _, Queryable};
use egui_kittest::Harness;
use texstream::app::viewer::ViewerApp;
use texstream::frame::{Frame, FrameGeometry, FramePool, PixelFormat};
use texstream::gpu::{DisplayRange, Gpu, Readback, UPLOAD_RING};
use texstream::net::{
    now_us, Event, KeepaliveConfig, Node, NodeConfig, TransferState, TransferStatus,
};
use texstream::protocol::{Capabilities, FileAccept, Message, Role};

/// How long any one expected outcome may take before a test gives up. It bounds a
/// failing test; it does not measure speed.
const PATIENCE: Duration = Duration::from_secs(20);

const WIDTH: u32 = 1023;
const HEIGHT: u32 = 767;

/// `true` when a GPU adapter exists; otherwise says why the test skips, or fails under
/// TEXSTREAM_REQUIRE_GPU=1.
fn gpu_available(test: &str) -> bool {
    match Gpu::headless() {
        Ok(gpu) => {
            eprintln!("{test}: on {} ({:?})", gpu.info.name, gpu.info.backend);
            true
        }
        Err(e) if std::env::var("TEXSTREAM_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("{test}: TEXSTREAM_REQUIRE_GPU=1 but no GPU: {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped, no GPU adapter: {e}");
            false
        }
    }
}

/// A sender listening on a free loopback port.
fn sender() -> Node {
    let mut config = NodeConfig::new(Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    Node::start(config).expect("start the sender")
}

/// A viewer window dialing `target`, saving snapshots into `dir`; also the wgpu state
/// the harness gave it, to read its texture back.
fn viewer(target: String, dir: &Path) -> (Harness<'static, ViewerApp>, egui_wgpu::RenderState) {
    viewer_with(target, dir, |_| {})
}

/// [`viewer`] with its node's config changed by `tweak` first.
fn viewer_with(
    target: String,
    dir: &Path,
    tweak: impl FnOnce(&mut NodeConfig),
) -> (Harness<'static, ViewerApp>, egui_wgpu::RenderState) {
    let mut config = NodeConfig::new(Role::Viewer);
    config.connect = vec![target];
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    tweak(&mut config);
    let dir = dir.to_owned();
    let mut render_state = None;
    let harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .wgpu()
        .build_eframe(|cc| {
            render_state = cc.wgpu_render_state.clone();
            ViewerApp::new(cc, config, dir).expect("start the viewer")
        });
    let render_state = render_state.expect("the harness gives the app a wgpu render state");
    (harness, render_state)
}

/// Pixels in which every byte, alpha included, depends on its place.
fn test_frame(width: u32, height: u32, seq: u64) -> Frame {
    let pixels: Vec<u8> = (0..width * height)
        .flat_map(|i| {
            let (x, y) = (i % width, i / width);
            [
                (x * 3) as u8,
                (y * 5) as u8,
                (x ^ y) as u8,
                (255 - (x + y) % 200) as u8,
            ]
        })
        .collect();
    Frame::copied(
        FrameGeometry::rgba8(width, height),
        seq,
        now_us(),
        &pixels,
        &FramePool::new(1),
    )
}

/// Steps the window until `done` holds, publishing `frame` (if any) on `sender` each
/// step, since a frame published before the viewer is connected reaches nobody.
fn step_until(
    harness: &mut Harness<'static, ViewerApp>,
    publish: Option<(&Node, &Frame)>,
    what: &str,
    mut done: impl FnMut(&mut Harness<'static, ViewerApp>) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some((node, frame)) = publish {
            node.publish(frame);
        }
        harness.step();
        if done(harness) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn has_label_containing(harness: &Harness<'static, ViewerApp>, text: &str) -> bool {
    harness.query_all_by_label_contains(text).next().is_some()
}

/// Reads the viewer's upload texture back through `texstream::gpu::Readback`.
fn read_viewer_texture(
    harness: &Harness<'static, ViewerApp>,
    rs: &egui_wgpu::RenderState,
) -> Frame {
    let texture = harness
        .state()
        .upload_texture()
        .texture()
        .expect("the viewer has a texture");
    let mut readback = Readback::new(1);
    let mut encoder = rs
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("viewer test readback"),
        });
    assert!(readback
        .copy(&rs.device, &mut encoder, texture, 0, 0)
        .expect("copy the texture"));
    rs.queue.submit([encoder.finish()]);
    readback.submitted();
    readback
        .wait_frame(&rs.device, &FramePool::new(1))
        .expect("read the texture back")
        .expect("a finished readback")
}

fn assert_same_rows(got: &Frame, want: &Frame) {
    assert_eq!(
        (got.meta().width, got.meta().height),
        (want.meta().width, want.meta().height)
    );
    for (y, (a, b)) in got.rows().zip(want.rows()).enumerate() {
        assert!(
            a == b,
            "row {y} of the viewer's texture differs from the frame sent"
        );
    }
}

#[test]
fn shows_an_odd_sized_frame_byte_exact_with_its_controls() {
    if !gpu_available("shows_an_odd_sized_frame_byte_exact_with_its_controls") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sender = sender();
    let (mut harness, rs) = viewer(sender.local_addr().unwrap().to_string(), dir.path());
    let frame = test_frame(WIDTH, HEIGHT, 7);

    step_until(
        &mut harness,
        Some((&sender, &frame)),
        "the first frame",
        |h| h.state().frames_shown() > 0,
    );
    harness.run_steps(2);

    assert_eq!(harness.state().shown_size(), Some((WIDTH, HEIGHT)));
    harness.get_by_label("1023x767");
    // The connection's security, as the status bar states it (no token, no TLS here).
    assert!(has_label_containing(&harness, "open, not encrypted"));
    harness.get_by_label("Fit");
    harness.get_by_label("1:1");
    harness.get_by_label("Snapshot");
    let addr = sender.local_addr().unwrap().to_string();
    assert!(
        has_label_containing(&harness, &format!("connected to {addr}")),
        "the status bar names the sender"
    );
    assert!(has_label_containing(&harness, "fps"));
    assert!(has_label_containing(&harness, "Mb/s"));
    assert!(has_label_containing(&harness, "latency"));
    assert!(has_label_containing(&harness, "dropped"));

    assert_same_rows(&read_viewer_texture(&harness, &rs), &frame);

    // The window draws the frame with the GPU without errors, at fit and at 1:1.
    harness.render().expect("render the window");
    harness.get_by_label("1:1").click();
    harness.run_steps(2);
    harness.render().expect("render the window at 1:1");
    harness.get_by_label("Fit").click();
    harness.run_steps(2);
}

/// The window's UI pass copies no frame: each is copied into the upload ring on the
/// upload thread, and the pass only records its copy into the texture. Through a
/// stream of frames the ring's buffers are made once, and the texture holds the last
/// frame shown byte for byte.
#[test]
fn frames_are_copied_into_staging_off_the_ui_thread() {
    if !gpu_available("frames_are_copied_into_staging_off_the_ui_thread") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sender = sender();
    let (mut harness, rs) = viewer(sender.local_addr().unwrap().to_string(), dir.path());
    let mut seq = 0;
    let mut frame = test_frame(WIDTH, HEIGHT, seq);
    let deadline = Instant::now() + PATIENCE;
    while harness.state().frames_shown() < 20 {
        seq += 1;
        frame = test_frame(WIDTH, HEIGHT, seq);
        sender.publish(&frame);
        harness.step();
        assert!(Instant::now() < deadline, "20 frames never shown");
        std::thread::sleep(Duration::from_millis(5));
    }
    let viewer = harness.state();
    let thread = viewer.upload_thread().expect("an upload thread");
    let staged = thread.counters().frames_staged.load(Relaxed);
    assert!(
        staged >= viewer.frames_shown(),
        "{staged} frames staged on the upload thread, {} shown",
        viewer.frames_shown()
    );
    assert_eq!(
        viewer.bytes_staged_on_ui_thread(),
        0,
        "frames were copied into staging memory on the UI thread"
    );
    assert!(
        thread.counters().buffers_created.load(Relaxed) <= UPLOAD_RING as u64,
        "{} staging buffers for {staged} frames",
        thread.counters().buffers_created.load(Relaxed)
    );
    // Every frame has the same pixels: what is in the texture is the stream's.
    let shown = read_viewer_texture(&harness, &rs);
    assert_same_rows(&shown, &frame);
}

#[test]
fn the_status_bar_shows_the_stages_of_the_frames_shown() {
    if !gpu_available("the_status_bar_shows_the_stages_of_the_frames_shown") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sender = sender();
    let (mut harness, _rs) = viewer(sender.local_addr().unwrap().to_string(), dir.path());
    harness.run_steps(2);
    assert!(
        has_label_containing(&harness, "Stages: -"),
        "no stages before any frame"
    );

    // A new frame each step, so that every one carries a fresh capture time.
    let deadline = Instant::now() + PATIENCE;
    let mut seq = 0;
    let stages = loop {
        sender.publish(&test_frame(64, 48, seq));
        seq += 1;
        harness.step();
        let label = harness
            .query_all_by_label_contains("Stages: wire+verify")
            .next()
            // A label's text is its accessible value.
            .and_then(|node| node.value());
        // Each of the three figures measured, once a frame has been stamped on arrival.
        if let Some(label) = label.filter(|l| !l.contains('-')) {
            break label;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for the stages; the status bar: {:?}",
            harness
                .query_all_by_label_contains("Stages")
                .map(|node| node.value())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("the status bar says {stages:?}");
    let figures: Vec<f64> = stages
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(figures.len(), 3, "three figures in {stages:?}");
    assert!(figures.iter().all(|ms| *ms >= 0.0), "{stages:?}");
    assert!(
        stages.contains("to UI") && stages.contains("upload"),
        "{stages:?}"
    );
}

/// What the network delivered is taken for at most `INCOMING_BUDGET` (10 ms) a pass, as
/// rerun's viewer budgets its messages; the rest waits for the next pass. On a clock that
/// moves 1 ms each time it is read, one pass takes at most ten of 200 texts waiting, and
/// the passes after it the rest, in order.
#[test]
fn a_flood_of_texts_is_taken_a_budget_per_pass() {
    if !gpu_available("a_flood_of_texts_is_taken_a_budget_per_pass") {
        return;
    }
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let dir = tempfile::tempdir().unwrap();
    let sender = sender();
    let addr = sender.local_addr().unwrap().to_string();
    let (mut harness, _rs) = viewer(addr.clone(), dir.path());
    step_until(&mut harness, None, "the viewer to connect", |h| {
        has_label_containing(h, &format!("connected to {addr}"))
    });
    common::wait_connected(&sender, "the sender's own link to the window");
    let reads = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let clock_reads = reads.clone();
    harness.state_mut().set_clock(Arc::new(move || {
        start + Duration::from_millis(clock_reads.fetch_add(1, Relaxed))
    }));
    harness.step();
    let before = harness.state().chat().len();
    const TEXTS: usize = 200;
    for i in 0..TEXTS {
        sender.send_text(&format!("flood {i}"));
    }
    // All of them waiting in the window's node before its next pass.
    let deadline = Instant::now() + PATIENCE;
    while harness.state().node().events().len() < TEXTS {
        assert!(Instant::now() < deadline, "the texts never all arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    harness.step();
    let taken = harness.state().chat().len() - before;
    assert!(
        (1..=10).contains(&taken),
        "one pass took {taken} of {TEXTS} texts"
    );
    let mut passes = 1;
    while harness.state().chat().len() < before + TEXTS {
        assert!(passes < TEXTS, "the texts never all came into the chat");
        harness.step();
        passes += 1;
    }
    assert!(passes >= TEXTS / 10, "{passes} passes for {TEXTS} texts");
    assert_eq!(harness.state().chat().len(), before + TEXTS);
    assert!(harness.query_by_label("flood 199").is_some());
}

#[test]
fn chat_goes_both_ways() {
    if !gpu_available("chat_goes_both_ways") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sender = sender();
    let addr = sender.local_addr().unwrap().to_string();
    let (mut harness, _rs) = viewer(addr.clone(), dir.path());

    step_until(&mut harness, None, "the viewer to connect", |h| {
        has_label_containing(h, &format!("connected to {addr}"))
    });
    // The window's side may finish its handshake first: the sender's link takes text
    // once the sender says it is connected.
    common::wait_connected(&sender, "the sender's own link to the window");
    sender.send_text("hello from the sender");
    step_until(&mut harness, None, "the sender's text in the chat", |h| {
        h.query_by_label("hello from the sender").is_some()
    });

    // The chat's input, not the source panel's address field.
    let chat_input = |h: &Harness<'static, ViewerApp>| {
        h.get_all_by_role(A11yRole::TextInput)
            .filter(|n| n.accesskit_node().label().as_deref() != Some("Address"))
            .count()
    };
    assert_eq!(
        chat_input(&harness),
        1,
        "one text input besides the address"
    );
    harness
        .get_all_by_role(A11yRole::TextInput)
        .find(|n| n.accesskit_node().label().as_deref() != Some("Address"))
        .unwrap()
        .click();
    harness.run_steps(2);
    harness
        .get_all_by_role(A11yRole::TextInput)
        .find(|n| n.accesskit_node().label().as_deref() != Some("Address"))
        .unwrap()
        .type_text("hello from the viewer");
    harness.run_steps(2);
    harness.get_by_label("Send").click();

    let deadline = Instant::now() + PATIENCE;
    loop {
        harness.step();
        let got = sender
            .events()
            .try_iter()
            .any(|e| matches!(e, Event::Text { text, .. } if text.body == "hello from the viewer"));
        if got {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sender never received the viewer's text"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Ours is shown in our own panel too.
    harness.run_steps(2);
    assert!(harness.query_by_label("hello from the viewer").is_some());
}

#[test]
fn snapshot_writes_a_png_equal_to_the_frame() {
    if !gpu_available("snapshot_writes_a_png_equal_to_the_frame") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("snapshots");
    let sender = sender();
    let (mut harness, _rs) = viewer(sender.local_addr().unwrap().to_string(), &snapshots);
    let frame = test_frame(WIDTH, HEIGHT, 3);

    step_until(
        &mut harness,
        Some((&sender, &frame)),
        "the first frame",
        |h| h.state().frames_shown() > 0,
    );
    harness.get_by_label("Snapshot").click();

    let mut png = None;
    step_until(&mut harness, None, "the snapshot PNG", |_| {
        png = pngs_in(&snapshots).into_iter().next();
        png.is_some()
    });
    let png = png.unwrap();
    let saved = image::open(&png).expect("read the snapshot").to_rgba8();
    assert_eq!(saved.dimensions(), (WIDTH, HEIGHT));
    assert!(
        saved.as_raw() == frame.to_image().unwrap().to_rgba8().as_raw(),
        "the snapshot's pixels differ from the frame"
    );
    step_until(
        &mut harness,
        None,
        "the window to report the saved path",
        |h| has_label_containing(h, &png.display().to_string()),
    );
    assert_eq!(pngs_in(&snapshots).len(), 1, "one click, one file");
}

/// Finished PNG files in `dir` (not the hidden temporary ones).
fn pngs_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".png") && !name.starts_with('.')
        })
        .collect()
}

#[test]
fn says_it_is_reconnecting_when_nothing_listens() {
    if !gpu_available("says_it_is_reconnecting_when_nothing_listens") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let (mut harness, _rs) = viewer(target.clone(), dir.path());

    harness.step();
    assert!(
        has_label_containing(&harness, "connecting"),
        "the status says the viewer is connecting"
    );
    step_until(
        &mut harness,
        None,
        "\"reconnecting in\" in the window",
        |h| has_label_containing(h, &format!("{target}: reconnecting in")),
    );
    assert_eq!(harness.state().frames_shown(), 0);
    assert!(has_label_containing(&harness, "no frame yet"));
}

#[test]
fn a_frame_too_large_for_the_gpu_is_explained_not_fatal() {
    if !gpu_available("a_frame_too_large_for_the_gpu_is_explained_not_fatal") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sender = sender();
    // A GPU may take every width the protocol allows by default (lavapipe's 16384 is
    // that limit): the viewer allows wider frames, so one wider than its GPU can come.
    let (mut harness, rs) =
        viewer_with(sender.local_addr().unwrap().to_string(), dir.path(), |c| {
            c.limits.max_dimension = 1 << 20
        });
    let width = rs.device.limits().max_texture_dimension_2d + 1;
    assert!(width <= 1 << 20, "a GPU wider than 2^20 pixels: {width}");
    let frame = test_frame(width, 2, 1);

    step_until(
        &mut harness,
        Some((&sender, &frame)),
        "the too-large message",
        |h| has_label_containing(h, "larger than this GPU's largest texture"),
    );
    assert_eq!(harness.state().frames_shown(), 0);
    assert_eq!(harness.state().shown_size(), None);
    harness.run_steps(3);
    harness.render().expect("the window still renders");

    // A frame that fits is shown afterwards.
    let small = test_frame(64, 48, 2);
    step_until(
        &mut harness,
        Some((&sender, &small)),
        "the small frame",
        |h| h.state().shown_size() == Some((64, 48)),
    );
}

/// The zoom slider's value (screen pixels per frame pixel) and whether "Fit" is on.
fn zoom_and_fit(harness: &Harness<'static, ViewerApp>) -> (f64, bool) {
    use egui_kittest::kittest::NodeT;
    let zoom = harness
        .get_by_role(A11yRole::Slider)
        .accesskit_node()
        .numeric_value()
        .expect("the zoom slider has a value");
    let fit = harness.get_by_label("Fit").accesskit_node().toggled()
        == Some(egui::accesskit::Toggled::True);
    (zoom, fit)
}

#[test]
fn scroll_zooms_drag_pans_and_fit_returns() {
    if !gpu_available("scroll_zooms_drag_pans_and_fit_returns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sender = sender();
    let (mut harness, _rs) = viewer(sender.local_addr().unwrap().to_string(), dir.path());
    let frame = test_frame(WIDTH, HEIGHT, 5);
    step_until(
        &mut harness,
        Some((&sender, &frame)),
        "the first frame",
        |h| h.state().frames_shown() > 0,
    );
    harness.run_steps(2);
    let (fit_zoom, fit) = zoom_and_fit(&harness);
    assert!(fit, "a new window fits the frame");
    assert!(
        fit_zoom < 1.0,
        "1023x767 is fitted into less than 1023 pixels of width"
    );

    // Scrolling over the frame zooms in, and leaves fit mode.
    let centre = egui::pos2(480.0, 400.0);
    harness.hover_at(centre);
    harness.step();
    harness.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, 120.0),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Unknown,
        modifiers: egui::Modifiers::NONE,
    });
    harness.run_steps(8);
    let (zoom, fit) = zoom_and_fit(&harness);
    assert!(
        !fit && zoom > fit_zoom * 1.3,
        "zoom {zoom} after scrolling in from {fit_zoom}"
    );

    harness.get_by_label("Fit").click();
    harness.run_steps(2);
    let (zoom, fit) = zoom_and_fit(&harness);
    assert!(
        fit && (zoom - fit_zoom).abs() < 1e-4,
        "Fit gives {zoom} again, not {fit_zoom}"
    );

    // At 1:1, dragging moves the picture by exactly the drag.
    harness.get_by_label("1:1").click();
    harness.run_steps(2);
    assert_eq!(zoom_and_fit(&harness), (1.0, false));
    harness.remove_cursor();
    harness.run_steps(2);
    let before = harness.render().expect("render before the drag");
    let shift = egui::vec2(40.0, 30.0);
    harness.drag_at(centre);
    harness.step();
    harness.hover_at(centre + shift);
    harness.step();
    harness.drop_at(centre + shift);
    harness.run_steps(2);
    let after = harness.render().expect("render after the drag");
    let ppp = harness.ctx.pixels_per_point();
    let (dx, dy) = ((shift.x * ppp) as u32, (shift.y * ppp) as u32);
    let (x0, y0) = ((300.0 * ppp) as u32, (300.0 * ppp) as u32);
    let mut moved = 0;
    for y in y0..y0 + 100 {
        for x in x0..x0 + 100 {
            let (a, b) = (before.get_pixel(x, y), after.get_pixel(x + dx, y + dy));
            // The renderer dithers by screen position: a moved pixel may differ by 1.
            assert!(
                a.0.iter().zip(b.0).all(|(p, q)| p.abs_diff(q) <= 1),
                "pixel ({x}, {y}) did not move by the drag: {a:?} then {b:?}"
            );
            moved += usize::from(before.get_pixel(x, y) != after.get_pixel(x, y));
        }
    }
    assert!(
        moved > 1000,
        "the picture did not move ({moved} pixels changed)"
    );
}

/// A file dropped on the window, as eframe's integration would hand it over.
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

#[test]
fn a_dropped_file_goes_to_the_sender() {
    if !gpu_available("a_dropped_file_goes_to_the_sender") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("received");
    std::fs::create_dir(&received).unwrap();
    let mut config = NodeConfig::new(Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    config.files_dir = Some(received.clone());
    let sender = Node::start(config).unwrap();
    let addr = sender.local_addr().unwrap().to_string();
    let (mut harness, _rs) = viewer(addr.clone(), &dir.path().join("snapshots"));
    step_until(&mut harness, None, "the viewer to connect", |h| {
        has_label_containing(h, &format!("connected to {addr}"))
    });

    let path = dir.path().join("notes.txt");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(path)));
    // Offered on a thread of its own (the UI thread never reads the file system); the
    // outcome wakes the window.
    step_until(&mut harness, None, "the offer's note", |h| {
        has_label_containing(h, "offered notes.txt to 1 peer")
    });
    // The transfers panel shows it at once, as one sending row.
    harness.step();
    assert_eq!(harness.state().transfers().rows().len(), 1);
    harness.get_by_label("Transfers");
    harness.get_by_label("sending");
    harness.get_by_label("notes.txt");

    let deadline = Instant::now() + PATIENCE;
    let saved = loop {
        harness.step();
        let saved = sender.events().try_iter().find_map(|e| match e {
            Event::FileReceived { name, path, .. } if name == "notes.txt" => Some(path),
            _ => None,
        });
        if let Some(saved) = saved {
            break saved;
        }
        assert!(
            Instant::now() < deadline,
            "the sender never received the file"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        std::fs::read(saved).unwrap() == body,
        "the file arrived changed"
    );
    step_until(&mut harness, None, "the delivery note", |h| {
        has_label_containing(h, "file notes.txt delivered")
    });
    step_until(&mut harness, None, "the row to say done", |h| {
        h.query_by_label("done").is_some()
    });
    harness.get_by_label("300.0 KB / 300.0 KB");
    let row = &harness.state().transfers().rows()[0];
    assert!(matches!(row.state, TransferState::Done { .. }), "{row:?}");
    assert_eq!(row.done_bytes, body.len() as u64);
    // Nothing to cancel, and nothing to open for a file sent.
    assert!(harness.query_by_label("Cancel").is_none());
    assert!(harness.query_by_label("Open folder").is_none());
}

/// The one transfer of the viewer window, as its panel last read it.
fn only_row(harness: &Harness<'static, ViewerApp>) -> Option<TransferStatus> {
    match harness.state().transfers().rows() {
        [row] => Some(row.clone()),
        _ => None,
    }
}

#[test]
fn cancel_stops_a_file_to_a_stalled_receiver() {
    if !gpu_available("cancel_stops_a_file_to_a_stalled_receiver") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The viewer dials a hand-driven peer that takes files, accepts one, then stops
    // reading: the file's bytes back up into the link.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let (mut harness, _rs) = viewer_with(target, &dir.path().join("snapshots"), |c| {
        // Long enough that the stall never ends the link during the test.
        c.keepalive = KeepaliveConfig {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(120),
        };
    });
    let mut peer = common::RawPeer::accept(&listener);
    peer.handshake(common::raw_hello(
        Role::Sender,
        Capabilities::FRAMES_OUT | Capabilities::TEXT | Capabilities::FILES_IN,
        "stalled receiver",
    ));
    step_until(&mut harness, None, "the viewer to connect", |h| {
        has_label_containing(h, "connected to")
    });

    // 200 MB, sparse: read from the page cache far faster than it could be taken.
    let big = dir.path().join("big.bin");
    let size = 200_000_000u64;
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(big)));
    harness.step();
    let id = loop {
        match peer.read_message() {
            Message::FileOffer(offer) => {
                assert_eq!((offer.name.as_str(), offer.size), ("big.bin", size));
                break offer.id;
            }
            _ => continue,
        }
    };
    peer.send_msg(&Message::FileAccept(FileAccept { id, offset: 0 }));
    step_until(&mut harness, None, "the row to be running", |h| {
        only_row(h).is_some_and(|r| r.state == TransferState::Running && r.done_bytes > 0)
    });
    harness.get_by_label("running");
    harness.get_by_label("big.bin");
    harness.get_by_label("to stalled receiver");

    harness.get_by_label("Cancel").click();
    step_until(&mut harness, None, "the row to say it was cancelled", |h| {
        has_label_containing(h, "failed: cancelled")
    });
    assert!(harness.query_by_label("Cancel").is_none());
    let row = only_row(&harness).unwrap();
    assert!(
        matches!(&row.state, TransferState::Failed { reason } if reason.contains("cancelled")),
        "{row:?}"
    );
    assert!(row.done_bytes < size, "{row:?}");

    // The receiver reads again: the stream has stopped, and the cancel reaches it.
    let drain = std::thread::spawn(move || {
        let mut chunk_bytes = 0u64;
        let mut last_chunk = Instant::now();
        let mut cancel_reason = None;
        while last_chunk.elapsed() < Duration::from_millis(1500) {
            match peer.read_message() {
                Message::FileChunk { id: i, data, .. } if i == id => {
                    chunk_bytes += data.len() as u64;
                    last_chunk = Instant::now();
                }
                Message::FileEnd(end) if end.id == id => panic!("the whole file went out"),
                Message::FileCancel(cancel) if cancel.id == id => {
                    cancel_reason = Some(cancel.reason);
                    break;
                }
                _ => {}
            }
        }
        (chunk_bytes, cancel_reason)
    });
    let (chunk_bytes, cancel_reason) = drain.join().unwrap();
    assert!(
        chunk_bytes < size,
        "the receiver got {chunk_bytes} of {size} bytes"
    );
    let reason = cancel_reason.expect("the receiver is told the file was cancelled");
    assert!(reason.contains("cancelled"), "{reason}");
    // Finished rows go with "Clear finished", and the panel with them.
    harness.get_by_label("Clear finished").click();
    step_until(&mut harness, None, "the panel to go", |h| {
        h.query_by_label("Transfers").is_none()
    });
}

#[test]
fn recovers_by_itself_when_the_sender_is_killed_and_restarted() {
    if !gpu_available("recovers_by_itself_when_the_sender_is_killed_and_restarted") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = sender();
    let addr = first.local_addr().expect("listening");
    let (mut harness, _) = viewer(addr.to_string(), tmp.path());
    let before = test_frame(64, 48, 1);
    step_until(
        &mut harness,
        Some((&first, &before)),
        "the first sender's frame",
        |h| h.state().frames_shown() > 0,
    );
    // The sender goes away (the killed-process case, with no goodbye, is covered at the
    // network level in net_loopback and cli; the window must follow either way).
    drop(first);
    step_until(&mut harness, None, "the viewer to notice", |h| {
        has_label_containing(h, "reconnecting") || has_label_containing(h, "connecting")
    });

    // A new sender on the same address: the window reconnects and shows its frames.
    let mut config = NodeConfig::new(Role::Sender);
    config.listen = Some(addr.to_string());
    let second = Node::start(config).expect("restart on the same port");
    let after = test_frame(80, 60, 2);
    step_until(
        &mut harness,
        Some((&second, &after)),
        "the restarted sender's frame",
        |h| h.state().shown_size() == Some((80, 60)),
    );
    assert!(has_label_containing(&harness, "connected to"));
    assert!(harness.state().node().stats().reconnects >= 1);
}

#[test]
fn over_tls_with_a_token_the_status_bar_says_so_and_shows_the_fingerprint() {
    if !gpu_available("over_tls_with_a_token_the_status_bar_says_so_and_shows_the_fingerprint") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tls_for = |name: &str| {
        texstream::net::Tls::new(&texstream::net::TlsOptions {
            dir: Some(dir.path().join(name).join("tls")),
            known_hosts: Some(dir.path().join(name).join("known_hosts")),
            ..Default::default()
        })
        .unwrap()
    };
    let token = texstream::net::Token::new("window secret").unwrap();
    let sender_tls = tls_for("sender");
    let mut config = NodeConfig::new(Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    config.tls = Some(sender_tls.clone());
    config.token = Some(token.clone());
    let sender = Node::start(config).unwrap();
    let viewer_tls = tls_for("viewer");
    let (mut harness, _rs) =
        viewer_with(sender.local_addr().unwrap().to_string(), dir.path(), |c| {
            c.tls = Some(viewer_tls);
            c.token = Some(token);
        });
    let frame = test_frame(64, 48, 1);
    step_until(
        &mut harness,
        Some((&sender, &frame)),
        "a frame over TLS",
        |h| h.state().frames_shown() > 0,
    );
    harness.run_steps(2);
    assert!(has_label_containing(&harness, "token + TLS"));
    // The first bytes of the sender's certificate fingerprint, as the viewer pinned it.
    let short: String = sender_tls
        .fingerprint
        .chars()
        .take("SHA256:".len() + 11)
        .collect();
    assert!(
        has_label_containing(&harness, &short),
        "the status bar shows {short}"
    );
}

/// Steps the window while both senders publish their frame until it shows a frame of
/// `size`, then ten steps more in which it must go on showing that size: one stream,
/// never a mix.
fn shows_only(
    harness: &mut Harness<'static, ViewerApp>,
    senders: [(&Node, &Frame); 2],
    size: (u32, u32),
    what: &str,
) {
    let publish = || {
        for (node, frame) in senders {
            node.publish(frame);
        }
    };
    step_until(harness, None, &format!("{what}'s frame shown"), |h| {
        publish();
        h.state().shown_size() == Some(size)
    });
    for _ in 0..10 {
        publish();
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            harness.state().shown_size(),
            Some(size),
            "{what}: never a mix"
        );
    }
}

/// A sender listening on loopback and announced there under `name`.
fn announced_sender(name: &str) -> (Node, texstream::net::discovery::Announcer) {
    let node = sender();
    let (announcer, _) = texstream::net::discovery::announce(&node, Some(name), None, None)
        .expect("mDNS starts")
        .expect("the sender listens");
    (node, announcer)
}

/// The source panel lists two sources announced on the LAN (multicast on loopback) and
/// switches between them on a click, without a restart: each time, the texture holds
/// the chosen source's frame byte for byte, and the other is hung up.
#[test]
fn the_source_panel_lists_two_lan_sources_and_switches_between_them_on_a_click() {
    if !gpu_available("the_source_panel_lists_two_lan_sources_and_switches_between_them_on_a_click")
    {
        return;
    }
    let tag = std::process::id();
    let (name_a, name_b) = (format!("panel a {tag}"), format!("panel b {tag}"));
    let (a, _announced_a) = announced_sender(&name_a);
    let (b, _announced_b) = announced_sender(&name_b);
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(Role::Viewer);
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    let dir_path = dir.path().to_owned();
    let mut render_state = None;
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .wgpu()
        .build_eframe(|cc| {
            render_state = cc.wgpu_render_state.clone();
            ViewerApp::new(cc, config, dir_path).expect("start the viewer")
        });
    let rs = render_state.expect("a wgpu render state");
    step_until(&mut harness, None, "both sources listed", |h| {
        has_label_containing(h, &name_a) && has_label_containing(h, &name_b)
    });
    assert_eq!(
        harness.state().frames_shown(),
        0,
        "nothing is watched before a click"
    );

    let frame_a = test_frame(301, 211, 1);
    let frame_b = test_frame(177, 389, 2);
    for (name, frame) in [
        (&name_a, &frame_a),
        (&name_b, &frame_b),
        (&name_a, &frame_a),
    ] {
        harness.get_by_label(name.as_str()).click();
        let size = (frame.meta().width, frame.meta().height);
        // Both keep sending: only the one clicked may be shown.
        shows_only(&mut harness, [(&a, &frame_a), (&b, &frame_b)], size, name);
        assert_same_rows(&read_viewer_texture(&harness, &rs), frame);
        let peers = harness.state().node().peers();
        assert_eq!(peers.len(), 1, "the other source is hung up: {peers:#?}");
    }
    let recent: Vec<&str> = harness.state().sources().recent().collect();
    assert_eq!(recent.len(), 2, "{recent:?}");
    assert!(
        recent[0].contains(&name_a) && recent[1].contains(&name_b),
        "{recent:?}"
    );
}

/// `view --source NAME`: the window dials a source by the name it is announced under
/// and shows its frame byte for byte.
#[test]
fn a_window_told_a_source_by_name_shows_its_frames() {
    if !gpu_available("a_window_told_a_source_by_name_shows_its_frames") {
        return;
    }
    let name = format!("by name {}", std::process::id());
    let (a, _announced) = announced_sender(&name);
    let dir = tempfile::tempdir().unwrap();
    let (mut harness, rs) = viewer_with(String::new(), dir.path(), |c| {
        c.connect.clear();
        c.sources = vec![name.clone()];
    });
    let frame = test_frame(333, 97, 5);
    step_until(
        &mut harness,
        Some((&a, &frame)),
        "the named source's frame",
        |h| h.state().shown_size() == Some((333, 97)),
    );
    assert_same_rows(&read_viewer_texture(&harness, &rs), &frame);
}

/// A listening viewer window reached by two senders shows one stream, lists both under
/// "Streams arriving", and shows the other on a click, byte for byte, while both send.
#[test]
fn a_listening_window_reached_by_two_senders_shows_the_one_clicked() {
    if !gpu_available("a_listening_window_reached_by_two_senders_shows_the_one_clicked") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut harness, rs) = viewer_with(String::new(), dir.path(), |c| {
        c.connect.clear();
        c.listen = Some("127.0.0.1:0".to_owned());
    });
    let addr = harness.state().node().local_addr().unwrap().to_string();
    let dialing = |name: &str| {
        let mut c = NodeConfig::new(Role::Sender);
        c.name = name.to_owned();
        c.connect = vec![addr.clone()];
        c.backoff_initial = Duration::from_millis(50);
        Node::start(c).expect("a sender starts")
    };
    let (a, b) = (dialing("stream one"), dialing("stream two"));
    let frame_a = test_frame(211, 150, 1);
    let frame_b = test_frame(150, 211, 2);
    let size_of = |f: &Frame| (f.meta().width, f.meta().height);
    step_until(&mut harness, None, "both streams listed, one shown", |h| {
        a.publish(&frame_a);
        b.publish(&frame_b);
        has_label_containing(h, "Streams arriving") && h.state().shown_size().is_some()
    });
    let (other_name, other) = if harness.state().shown_size() == Some(size_of(&frame_a)) {
        ("stream two", &frame_b)
    } else {
        ("stream one", &frame_a)
    };
    harness
        .query_by_label_contains(&format!("{other_name} (127.0.0.1:"))
        .expect("the other stream is listed with its address")
        .click();
    shows_only(
        &mut harness,
        [(&a, &frame_a), (&b, &frame_b)],
        size_of(other),
        "the stream clicked",
    );
    assert_same_rows(&read_viewer_texture(&harness, &rs), other);
}

/// A frame of `format` from tight `pixels`.
fn frame_in(format: PixelFormat, width: u32, height: u32, seq: u64, pixels: &[u8]) -> Frame {
    let geometry = FrameGeometry {
        width,
        height,
        format,
        bytes_per_row: width * format.bytes_per_pixel(),
    };
    Frame::copied(geometry, seq, now_us(), pixels, &FramePool::new(1))
}

/// The RGBA8 frame a frame of gray values shows as.
fn gray_as_rgba(width: u32, height: u32, gray: &[u8]) -> Frame {
    let rgba: Vec<u8> = gray.iter().flat_map(|&g| [g, g, g, 255]).collect();
    frame_in(PixelFormat::Rgba8, width, height, 0, &rgba)
}

#[test]
fn shows_a_one_channel_and_a_float32_stream_correctly() {
    if !gpu_available("shows_a_one_channel_and_a_float32_stream_correctly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sender = sender();
    let (mut harness, rs) = viewer(sender.local_addr().unwrap().to_string(), dir.path());
    // Odd widths: the rows are padded to 256 bytes in the texture, not in the frame.
    let (width, height) = (257u32, 3u32);
    let gray: Vec<u8> = (0..width * height)
        .map(|i| ((i % width) as u8).wrapping_add((i / width) as u8 * 7))
        .collect();

    // One 8-bit channel: gray, opaque.
    let r8 = frame_in(PixelFormat::R8, width, height, 1, &gray);
    step_until(&mut harness, Some((&sender, &r8)), "the R8 frame", |h| {
        h.state().shown_size() == Some((width, height))
    });
    harness.run_steps(2);
    assert_same_rows(
        &read_viewer_texture(&harness, &rs),
        &gray_as_rgba(width, height, &gray),
    );

    // Float32, one channel, from -8 to 55.75 in steps of 0.25 along a row: under the
    // automatic range (the frame's smallest to largest) a step is one grey level.
    let (width, height) = (256u32, 5u32);
    let depth: Vec<f32> = (0..width * height)
        .map(|i| (i % width) as f32 * 0.25 - 8.0)
        .collect();
    let bytes: Vec<u8> = depth.iter().flat_map(|v| v.to_le_bytes()).collect();
    let r32f = frame_in(PixelFormat::R32F, width, height, 2, &bytes);
    step_until(
        &mut harness,
        Some((&sender, &r32f)),
        "the R32F frame",
        |h| h.state().shown_size() == Some((width, height)),
    );
    harness.run_steps(2);
    let levels: Vec<u8> = (0..width * height).map(|i| (i % width) as u8).collect();
    assert_same_rows(
        &read_viewer_texture(&harness, &rs),
        &gray_as_rgba(width, height, &levels),
    );
    // The window offers the range for float frames, and says the one in use.
    assert!(
        has_label_containing(&harness, "-8.000"),
        "the automatic range is shown"
    );
    let auto = harness.get_by_label("Auto range");
    auto.click();
    harness.run_steps(2);

    // A range of its own: -8 to 23.875 spans half the values; the rest clamp to full.
    harness.state_mut().set_display_range(DisplayRange::Fixed {
        min: -8.0,
        max: 23.875,
    });
    step_until(
        &mut harness,
        None,
        "the frame shown again in the new range",
        |h| h.state().upload_texture().shown_range() == Some((-8.0, 23.875)),
    );
    harness.run_steps(2);
    let clamped: Vec<u8> = levels
        .iter()
        .map(|&l| if l < 128 { l * 2 } else { 255 })
        .collect();
    assert_same_rows(
        &read_viewer_texture(&harness, &rs),
        &gray_as_rgba(width, height, &clamped),
    );
}
