//! Headless GPU tests on whatever adapter exists (Mesa's lavapipe in CI): an image goes
//! texture → readback → protocol → loopback TCP → viewer → `write_texture`, and the
//! viewer's texture read back equals the source byte for byte; the live shader moves;
//! its RGBA16F and RGBA32F targets go out as those formats, byte-exact to a viewer and
//! into `record`'s `.npy`; every WGSL file in `shaders/` validates. Without an adapter the GPU tests skip with a
//! message, unless TEXSTREAM_REQUIRE_GPU=1 (as in CI), where that is a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::proc::Proc;
use texstream::frame::{Frame, FrameGeometry, FramePool, PixelFormat};
use texstream::gpu::{
    Gpu, GpuError, LiveMode, LiveShader, Readback, RowLayout, UploadTexture, UploadThread,
    Uploaded, UPLOAD_RING,
};
use texstream::net::{Event, Node, NodeConfig};
use texstream::protocol::Role;

fn gpu_or_skip(test: &str) -> Option<Gpu> {
    match Gpu::headless() {
        Ok(gpu) => {
            eprintln!("{test}: on {} ({:?})", gpu.info.name, gpu.info.backend);
            Some(gpu)
        }
        Err(e) if std::env::var("TEXSTREAM_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("{test}: TEXSTREAM_REQUIRE_GPU=1 but no GPU: {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped, no GPU: {e}");
            None
        }
    }
}

/// Tightly packed RGBA pixels with every channel varying, alpha included.
fn source_pixels(width: u32, height: u32) -> Vec<u8> {
    (0..width * height)
        .flat_map(|i| {
            let (x, y) = (i % width, i / width);
            [
                (x * 3) as u8,
                (y * 5) as u8,
                (x ^ y) as u8,
                (255 - (x + y) % 200) as u8,
            ]
        })
        .collect()
}

fn texture_with(gpu: &Gpu, width: u32, height: u32, pixels: &[u8]) -> wgpu::Texture {
    let size = wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 1,
    };
    let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("test source"),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::COPY_DST
            | wgpu::TextureUsages::COPY_SRC
            | wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: &[],
    });
    gpu.queue.write_texture(
        texture.as_image_copy(),
        pixels,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(width * 4),
            rows_per_image: Some(height),
        },
        size,
    );
    texture
}

fn read_back(
    gpu: &Gpu,
    readback: &mut Readback,
    texture: &wgpu::Texture,
    seq: u64,
    pool: &FramePool,
) -> Frame {
    let mut encoder = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("test readback"),
        });
    assert!(readback
        .copy(&gpu.device, &mut encoder, texture, seq, 1234)
        .unwrap());
    gpu.queue.submit([encoder.finish()]);
    readback.submitted();
    readback
        .wait_frame(&gpu.device, pool)
        .unwrap()
        .expect("a frame comes back")
}

fn assert_rows_equal(frame: &Frame, source: &[u8], what: &str) {
    let m = frame.meta();
    let row_bytes = m.width as usize * 4;
    for (y, (got, want)) in frame.rows().zip(source.chunks_exact(row_bytes)).enumerate() {
        assert!(got == want, "{what}: row {y} differs");
    }
    assert_eq!(frame.rows().count(), m.height as usize);
}

fn round_trip(width: u32, height: u32) {
    let Some(gpu) = gpu_or_skip(&format!("round_trip {width}x{height}")) else {
        return;
    };
    let source = source_pixels(width, height);
    let sender_texture = texture_with(&gpu, width, height, &source);
    let pool = FramePool::new(4);
    let mut readback = Readback::new(2);

    // Sender: the texture as the GPU holds it, rows padded to 256 bytes as read back.
    let frame = read_back(&gpu, &mut readback, &sender_texture, 7, &pool);
    assert_eq!(
        frame.meta().bytes_per_row,
        RowLayout::new(width, height).padded_bytes_per_row
    );
    assert_eq!((frame.meta().seq, frame.meta().capture_us), (7, 1234));
    assert_rows_equal(&frame, &source, "sender readback");

    // Over the real protocol and loopback TCP.
    let mut sender_config = NodeConfig::new(Role::Sender);
    sender_config.listen = Some("127.0.0.1:0".into());
    let sender = Node::start(sender_config).unwrap();
    let mut viewer_config = NodeConfig::new(Role::Viewer);
    viewer_config.connect = vec![sender.local_addr().unwrap().to_string()];
    let viewer = Node::start(viewer_config).unwrap();
    // Publish until the frame arrives: the viewer may see the link up a moment before
    // the sender has registered it, and a frame published then reaches nobody.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let received = loop {
        sender.publish(&frame);
        if let Ok(received) = viewer.frames().recv_timeout(Duration::from_millis(200)) {
            break received;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the frame never arrived; viewer events: {:?}",
            viewer.events().try_iter().collect::<Vec<Event>>()
        );
    };
    assert_eq!(received.meta(), frame.meta());
    assert!(
        received.pixels() == frame.pixels(),
        "the wire changed the frame"
    );

    // Viewer: one persistent texture, fed through the staging ring, padding and all.
    let mut upload = UploadTexture::new();
    assert_eq!(
        upload.upload(&gpu.device, &gpu.queue, &received).unwrap(),
        Uploaded::NewTexture,
        "created on first use"
    );
    assert_eq!(
        upload.upload(&gpu.device, &gpu.queue, &received).unwrap(),
        Uploaded::Same,
        "reused, not re-created"
    );
    UploadTexture::wait_uploaded(&gpu.device, &gpu.queue).unwrap();
    let shown = read_back(&gpu, &mut readback, upload.texture().unwrap(), 8, &pool);
    assert_rows_equal(&shown, &source, "viewer texture");
}

#[test]
fn an_odd_width_image_crosses_gpu_wire_gpu_byte_exact() {
    round_trip(1023, 767);
}

#[test]
fn a_1080p_image_crosses_gpu_wire_gpu_byte_exact() {
    round_trip(1920, 1080);
}

#[test]
fn the_live_shader_renders_motion() {
    let Some(gpu) = gpu_or_skip("live shader") else {
        return;
    };
    let (width, height) = (320, 180);
    let source = texture_with(&gpu, width, height, &source_pixels(width, height));
    let view = source.create_view(&wgpu::TextureViewDescriptor::default());
    let live = LiveShader::new(&gpu.device, &view, width, height);
    let pool = FramePool::new(4);
    let mut readback = Readback::new(3);
    let mut render = |t: f32, mode: LiveMode, seq: u64| {
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("test live"),
            });
        live.render(&gpu.queue, &mut encoder, t, mode);
        assert!(readback
            .copy(&gpu.device, &mut encoder, live.target(), seq, 0)
            .unwrap());
        gpu.queue.submit([encoder.finish()]);
        readback.submitted();
        readback.wait_frame(&gpu.device, &pool).unwrap().unwrap()
    };
    let a = render(0.0, LiveMode::Image, 1);
    let b = render(1.0, LiveMode::Image, 2);
    let p = render(1.0, LiveMode::Pattern, 3);
    assert_eq!((a.meta().width, a.meta().height), (width, height));
    assert!(
        a.pixels() != b.pixels(),
        "the image effect does not move with time"
    );
    assert!(
        b.pixels() != p.pixels(),
        "the pattern mode draws the same as the image mode"
    );
    assert!(
        a.rows().flatten().any(|&v| v != 0 && v != 255),
        "nothing was drawn"
    );
}

/// The texture's pixels copied out with a plain `copy_texture_to_buffer` of the test's
/// own (not through `Readback`), rows without padding.
fn copy_out(gpu: &Gpu, texture: &wgpu::Texture, bytes_per_pixel: u32) -> Vec<u8> {
    let (width, height) = (texture.width(), texture.height());
    let row_bytes = width * bytes_per_pixel;
    let stride = row_bytes.div_ceil(256) * 256;
    let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test copy out"),
        size: u64::from(stride * height),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut encoder = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("test copy out"),
        });
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(stride),
                rows_per_image: Some(height),
            },
        },
        texture.size(),
    );
    gpu.queue.submit([encoder.finish()]);
    buffer.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let mapped = buffer.get_mapped_range(..).unwrap();
    mapped
        .chunks_exact(stride as usize)
        .flat_map(|row| &row[..row_bytes as usize])
        .copied()
        .collect()
}

/// The channels of tight float pixels as f32.
fn channels(format: PixelFormat, bytes: &[u8]) -> Vec<f32> {
    match format {
        PixelFormat::Rgba16F => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

/// The live shader rendering into an RGBA16F and an RGBA32F target (37x19: rows of 296
/// and 592 bytes, padded to 512 and 768) streams frames of that format whose bytes are
/// the texture's — read back through the ring as the sender window does, checked against
/// a copy of the test's own, over loopback TCP to a viewer, and saved by `record` as a
/// `.npy` of the same bytes. The pattern's bar, 4.0, shows the floats are not RGBA8's.
#[test]
fn a_float_live_target_streams_its_own_bytes_and_records_as_npy() {
    let Some(gpu) = gpu_or_skip("float live target") else {
        return;
    };
    let (width, height) = (37, 19);
    let source = texture_with(&gpu, width, height, &source_pixels(width, height));
    let view = source.create_view(&wgpu::TextureViewDescriptor::default());
    let pool = FramePool::new(4);
    let mut readback = Readback::new(3);
    let sender = Node::start({
        let mut c = NodeConfig::new(Role::Sender);
        c.listen = Some("127.0.0.1:0".into());
        c
    })
    .unwrap();
    let addr = sender.local_addr().unwrap().to_string();
    let viewer = Node::start({
        let mut c = NodeConfig::new(Role::Viewer);
        c.connect = vec![addr.clone()];
        c
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (seq, (format, descr)) in [(PixelFormat::Rgba16F, "<f2"), (PixelFormat::Rgba32F, "<f4")]
        .into_iter()
        .enumerate()
    {
        let live = LiveShader::with_format(&gpu.device, &view, width, height, format);
        assert_eq!(live.format(), format);
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("test float live"),
            });
        live.render(&gpu.queue, &mut encoder, 0.0, LiveMode::Pattern);
        assert!(readback
            .copy(&gpu.device, &mut encoder, live.target(), seq as u64, 0)
            .unwrap());
        gpu.queue.submit([encoder.finish()]);
        readback.submitted();
        let frame = readback.wait_frame(&gpu.device, &pool).unwrap().unwrap();
        let bpp = format.bytes_per_pixel();
        let m = frame.meta();
        assert_eq!((m.format, m.width, m.height), (format, width, height));
        assert_eq!(
            m.bytes_per_row,
            RowLayout::with_bytes_per_pixel(width, height, bpp).padded_bytes_per_row
        );
        assert_eq!(m.bytes_per_row, if bpp == 8 { 512 } else { 768 });
        let held = copy_out(&gpu, live.target(), bpp);
        assert!(
            frame.tight_pixels() == held,
            "{format}: the frame is not what the texture holds"
        );
        let values = channels(format, &held);
        assert!(
            values.iter().any(|&v| v > 3.9),
            "{format}: no value past 1 (the bar at 4): {:?}",
            &values[..8]
        );
        assert!(
            values.iter().any(|&v| v > 0.0 && v < 1.0 && v != 0.5),
            "{format}: no colour between 0 and 1"
        );

        // Over the wire to a viewer that takes float formats (the frames before it,
        // published more than once, passed over).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let received = loop {
            sender.publish(&frame);
            let got = viewer.frames().recv_timeout(Duration::from_millis(200));
            if let Some(received) = got.ok().filter(|f| f.meta().seq == seq as u64) {
                break received;
            }
            assert!(std::time::Instant::now() < deadline, "{format}: no frame");
        };
        assert_eq!(received.meta(), frame.meta());
        assert!(
            received.tight_pixels() == held,
            "{format}: the wire changed it"
        );

        // `record` saves it as a .npy of the same bytes.
        let out = tmp.path().join(format.name());
        let record = Proc::start(&[
            "record",
            "--connect",
            &addr,
            "--out",
            out.to_str().unwrap(),
            "--frames",
            "1",
        ]);
        let file = out.join("frame-000001.npy");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !file.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{format}: not recorded"
            );
            sender.publish(&frame);
            std::thread::sleep(Duration::from_millis(50));
        }
        let (code, lines) = record.finish(Duration::from_secs(20));
        assert_eq!(code, 0, "{lines:?}");
        let npy = std::fs::read(&file).unwrap();
        let header_len = usize::from(u16::from_le_bytes([npy[8], npy[9]]));
        let header = std::str::from_utf8(&npy[10..10 + header_len]).unwrap();
        assert!(
            header.contains(&format!(
                "'descr': '{descr}', 'fortran_order': False, 'shape': ({height}, {width}, 4)"
            )),
            "{format}: {header}"
        );
        assert!(
            npy[10 + header_len..] == held[..],
            "{format}: the .npy is not the texture's bytes"
        );
    }
}

#[test]
fn a_frame_larger_than_the_gpu_allows_is_a_clear_error() {
    let Some(gpu) = gpu_or_skip("too large") else {
        return;
    };
    let max = gpu.device.limits().max_texture_dimension_2d;
    let pool = FramePool::new(1);
    let g = FrameGeometry::rgba8(max + 1, 1);
    let frame = Frame::copied(g, 1, 0, &vec![0u8; g.total_len()], &pool);
    let err = UploadTexture::new()
        .upload(&gpu.device, &gpu.queue, &frame)
        .expect_err("must refuse");
    assert!(matches!(err, GpuError::TooLarge { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("larger than this GPU's largest texture"),
        "{err}"
    );
}

/// The upload path makes its staging buffers once: a thousand frames of one size, and
/// of an unpadded size (rows re-padded on the way), through a ring of three, each
/// shown byte-exact; wgpu's per-call staging (`write_texture`) is never used.
#[test]
fn uploads_reuse_a_ring_of_staging_buffers_and_show_every_byte() {
    let Some(gpu) = gpu_or_skip("upload ring") else {
        return;
    };
    let pool = FramePool::new(4);
    let mut readback = Readback::new(2);
    let mut upload = UploadTexture::new();
    // Unpadded rows (301 x 4 bytes), as an image source makes them.
    let g = FrameGeometry::rgba8(301, 77);
    let mut shown = 0u64;
    let mut last_shown: Option<Vec<u8>> = None;
    for seq in 0..1000u64 {
        let pixels: Vec<u8> = (0..g.total_len())
            .map(|i| (i as u64 * 7 + seq) as u8)
            .collect();
        let frame = Frame::copied(g, seq, 0, &pixels, &pool);
        if upload.upload(&gpu.device, &gpu.queue, &frame).unwrap() != Uploaded::Busy {
            shown += 1;
            last_shown = Some(pixels);
        }
        if seq % 100 == 99 {
            // Now and then: the texture holds the last frame shown, exactly.
            UploadTexture::wait_uploaded(&gpu.device, &gpu.queue).unwrap();
            let back = read_back(&gpu, &mut readback, upload.texture().unwrap(), seq, &pool);
            let want = last_shown.as_ref().expect("a frame was shown");
            assert_rows_equal(&back, want, &format!("the frame shown by {seq}"));
        }
    }
    assert!(
        shown >= 500,
        "{shown} of 1000 frames shown ({} busy)",
        upload.busy()
    );
    assert!(
        (1..=UPLOAD_RING as u64).contains(&upload.buffers_created()),
        "{} staging buffers for 1000 frames: made once, not per frame",
        upload.buffers_created()
    );
}

/// The window's upload path: the upload thread copies each frame into the ring and
/// hands it over staged; the caller only records the copy into the texture. Frames that
/// come while the thread is held up are weighed newest-wins (the stale ones never
/// staged), the texture holds the newest byte for byte, two hundred frames more make no
/// staging buffer beyond the ring's, and a caller that stops taking frames never leaves
/// the thread without a buffer.
#[test]
fn the_upload_thread_stages_frames_newest_wins_off_the_calling_thread() {
    let Some(gpu) = gpu_or_skip("upload thread") else {
        return;
    };
    let pool = FramePool::new(4);
    let mut readback = Readback::new(2);
    let mut upload = UploadTexture::new();
    // Unpadded rows (301 x 4 bytes): re-padded on the way.
    let g = FrameGeometry::rgba8(301, 77);
    let pixels = |seq: u64| -> Vec<u8> {
        (0..g.total_len())
            .map(|i| (i as u64 * 7 + seq * 13) as u8)
            .collect()
    };
    let frame = |seq: u64| Frame::copied(g, seq, 0, &pixels(seq), &pool);
    let (frames_tx, frames_rx) = flume::bounded(8);
    let (wake_tx, wake_rx) = flume::unbounded();
    // The thread waits at the gate until it is opened (dropped).
    let (gate_tx, gate_rx) = flume::bounded::<()>(0);
    let thread = UploadThread::spawn(
        gpu.device.clone(),
        frames_rx,
        move || {
            let _ = wake_tx.send(());
        },
        Some(Box::new(move || {
            let _ = gate_rx.recv();
        })),
    )
    .unwrap();
    for seq in 0..5 {
        frames_tx.send(frame(seq)).unwrap();
    }
    drop(gate_tx);
    wake_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let (newest, replaced) = thread.take_newest();
    let staged = newest.expect("a frame staged").unwrap();
    assert_eq!(replaced, 0, "one frame staged");
    assert_eq!(staged.frame().meta().seq, 4, "the newest frame wins");
    assert_eq!(thread.replaced(), 4, "frames 0 to 3 were never staged");
    assert_ne!(
        staged.staged_on(),
        std::thread::current().id(),
        "copied on the upload thread"
    );
    assert_eq!(
        upload.show(&gpu.device, &gpu.queue, staged).unwrap(),
        Uploaded::NewTexture
    );
    UploadTexture::wait_uploaded(&gpu.device, &gpu.queue).unwrap();
    let back = read_back(&gpu, &mut readback, upload.texture().unwrap(), 4, &pool);
    assert_rows_equal(&back, &pixels(4), "the staged frame");

    for seq in 5..205 {
        frames_tx.send(frame(seq)).unwrap();
        wake_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let staged = thread.take_newest().0.expect("a frame staged").unwrap();
        assert_eq!(staged.frame().meta().seq, seq);
        assert_eq!(
            upload.show(&gpu.device, &gpu.queue, staged).unwrap(),
            Uploaded::Same
        );
    }
    UploadTexture::wait_uploaded(&gpu.device, &gpu.queue).unwrap();
    let back = read_back(&gpu, &mut readback, upload.texture().unwrap(), 204, &pool);
    assert_rows_equal(&back, &pixels(204), "the last frame");

    // A window that takes nothing (hidden, or stuck) does not hold the ring: with every
    // buffer staged and waiting, the thread gives back the oldest for each new frame.
    for seq in 205..215 {
        frames_tx.send(frame(seq)).unwrap();
        wake_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("frame {seq} never staged: the ring is held"));
    }
    let (newest, _) = thread.take_newest();
    let staged = newest.expect("a frame staged").unwrap();
    assert_eq!(staged.frame().meta().seq, 214, "the newest frame wins");
    drop(staged);
    let counters = thread.counters();
    assert_eq!(counters.frames_staged.load(Relaxed), 211);
    assert!(
        counters.buffers_created.load(Relaxed) <= UPLOAD_RING as u64,
        "{} staging buffers for 211 frames: made once, not per frame",
        counters.buffers_created.load(Relaxed)
    );
    assert_eq!(
        upload.buffers_created(),
        0,
        "showing a staged frame makes no staging buffer"
    );
}

#[test]
fn every_shader_validates() {
    use wgpu::naga;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wgsl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let module = naga::front::wgsl::parse_str(&text)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&text)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        checked += 1;
    }
    assert!(checked >= 1, "no shaders found in {}", dir.display());
    assert_eq!(
        texstream::gpu::LIVE_SHADER_WGSL,
        std::fs::read_to_string(dir.join("live.wgsl")).unwrap()
    );
}
