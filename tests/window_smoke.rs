//! Real windows under a real X11 display (Xvfb in CI): `texstream view` and
//! `texstream send` on loopback; a screenshot of the viewer window (taken with `xwd`)
//! must show the sent image's colours. Skips without a display or `xwd`, unless
//! TEXSTREAM_REQUIRE_GPU=1 (CI), where that is a failure. With TEXSTREAM_SCREENSHOT_DIR
//! set, the screenshots are also saved there as PNG.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_texstream");

/// The four circles of `assets/texstream.png`.
const CIRCLES: [(&str, [u8; 3]); 4] = [
    ("red", [230, 40, 50]),
    ("green", [40, 200, 80]),
    ("blue", [40, 90, 230]),
    ("yellow", [250, 210, 30]),
];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn required() -> bool {
    std::env::var("TEXSTREAM_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn skip(why: &str) {
    assert!(!required(), "TEXSTREAM_REQUIRE_GPU=1 but {why}");
    eprintln!("window smoke test skipped: {why}");
}

/// A screenshot of the window named `name`, as RGB rows.
fn screenshot(name: &str) -> Option<image::RgbImage> {
    let out = Command::new("xwd")
        .args(["-silent", "-name", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_xwd(&out.stdout)
}

/// Reads an XWD dump (ZPixmap, 24/32 bits per pixel), as `xwd` writes it.
fn parse_xwd(data: &[u8]) -> Option<image::RgbImage> {
    let field = |i: usize| -> Option<u64> {
        let bytes: [u8; 4] = data.get(i * 4..i * 4 + 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes).into())
    };
    let header_size = field(0)? as usize;
    let (width, height) = (field(4)? as u32, field(5)? as u32);
    let byte_order = field(7)?; // 0: least significant byte first
    let bits_per_pixel = field(11)?;
    let bytes_per_line = field(12)? as usize;
    let (red_mask, green_mask, blue_mask) =
        (field(14)? as u32, field(15)? as u32, field(16)? as u32);
    let ncolors = field(19)? as usize;
    if bits_per_pixel != 32 {
        return None;
    }
    let pixels = data.get(header_size + ncolors * 12..)?;
    let channel = |p: u32, mask: u32| ((p & mask) >> mask.trailing_zeros()) as u8;
    let mut img = image::RgbImage::new(width, height);
    for y in 0..height as usize {
        for x in 0..width as usize {
            let at = y * bytes_per_line + x * 4;
            let bytes: [u8; 4] = pixels.get(at..at + 4)?.try_into().ok()?;
            let p = if byte_order == 0 {
                u32::from_le_bytes(bytes)
            } else {
                u32::from_be_bytes(bytes)
            };
            img.put_pixel(
                x as u32,
                y as u32,
                image::Rgb([
                    channel(p, red_mask),
                    channel(p, green_mask),
                    channel(p, blue_mask),
                ]),
            );
        }
    }
    Some(img)
}

/// How many pixels are within `tolerance` of `colour` on every channel.
fn count_near(img: &image::RgbImage, colour: [u8; 3], tolerance: u8) -> usize {
    img.pixels()
        .filter(|p| {
            p.0.iter()
                .zip(colour)
                .all(|(a, b)| a.abs_diff(b) <= tolerance)
        })
        .count()
}

fn all_circles_seen(img: &image::RgbImage) -> bool {
    CIRCLES.iter().all(|(_, c)| count_near(img, *c, 12) > 500)
}

#[test]
fn the_viewer_window_shows_the_sent_image() {
    if std::env::var_os("DISPLAY").is_none_or(|d| d.is_empty()) {
        return skip("no X11 display (run under xvfb-run)");
    }
    if Command::new("xwd")
        .arg("-help")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return skip("xwd is not installed (apt-get install x11-apps)");
    }
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/texstream.png");
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().to_str().unwrap();
    let spawn = |args: &[&str], stdout: Stdio| {
        Killed(
            Command::new(BIN)
                .args(args)
                .env("RUST_LOG", "texstream=warn")
                .stdout(stdout)
                .spawn()
                .unwrap(),
        )
    };
    // The sender takes a free port itself and says which; nothing else can take it
    // between a probe and the bind.
    let mut sender = spawn(
        &[
            "send",
            image.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--position",
            "1120,0",
            "--files-dir",
            files,
        ],
        Stdio::piped(),
    );
    let addr = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(sender.0.stdout.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
            .expect("the sender says where it listens");
        // Keep reading, so the sender never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        addr
    };
    let _viewer = spawn(
        &[
            "view",
            "--connect",
            &addr,
            "--position",
            "0,0",
            "--files-dir",
            files,
        ],
        Stdio::null(),
    );
    let _sender = sender;

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(shot) = screenshot("texstream viewer") {
            if all_circles_seen(&shot) {
                if std::env::var_os("TEXSTREAM_SCREENSHOT_DIR").is_some() {
                    // Pictures for the README: let the figures settle first.
                    std::thread::sleep(Duration::from_secs(5));
                    let shot = screenshot("texstream viewer").unwrap_or(shot);
                    save(&shot, "viewer.png");
                }
                if let Some(sender) = screenshot("texstream sender") {
                    save(&sender, "sender.png");
                }
                return;
            }
            last = Some(shot);
        }
    }
    let seen: Vec<String> = last
        .as_ref()
        .map(|img| {
            CIRCLES
                .iter()
                .map(|(n, c)| format!("{n}: {}", count_near(img, *c, 12)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(img) = &last {
        let path = std::env::temp_dir().join("texstream-viewer-failed.png");
        let _ = img.save(&path);
        eprintln!("last screenshot saved to {}", path.display());
    }
    panic!("the viewer window never showed the image's colours (pixels seen per colour: {seen:?})");
}

fn save(img: &image::RgbImage, name: &str) {
    if let Some(dir) = std::env::var_os("TEXSTREAM_SCREENSHOT_DIR") {
        let path = Path::new(&dir).join(name);
        img.save(&path).unwrap();
        eprintln!("screenshot saved: {}", path.display());
    }
}
