//! Coded frames between real nodes on loopback: every codec delivers frames byte for
//! byte (odd sizes and padded rows included), screen-like content takes a small share of
//! raw on the wire, a viewer that asks for raw frames gets raw frames, and a viewer that
//! comes back gets a whole frame first.

mod common;

use common::proc::{saved_frames, write_source_image, Proc};
use common::*;
use texstream::frame::{Frame, FrameGeometry, FramePool};
use texstream::net::{Codec, Node, PeerStatus};
use texstream::protocol::Role;

fn coding_sender(codec: Codec) -> Node {
    let mut c = fast_config(Role::Sender);
    c.name = format!("{} sender", codec.name());
    c.listen = Some("127.0.0.1:0".to_owned());
    c.codec = codec;
    Node::start(c).expect("sender starts")
}

fn viewer(takes_coded: bool, sender: &Node) -> Node {
    let mut c = fast_config(Role::Viewer);
    c.name = "viewer".to_owned();
    c.connect = vec![listen_addr(sender).to_string()];
    c.takes_coded = takes_coded;
    let viewer = Node::start(c).expect("viewer starts");
    wait_connected(sender, "the viewer to connect");
    viewer
}

/// A screen: a flat background, a few lines of "text", and a 16x16 cursor that moves a
/// little every frame (the padding bytes too follow the frame, so they must arrive).
fn screen(geometry: FrameGeometry, seq: u64) -> Vec<u8> {
    let (w, h, bpr) = (
        geometry.width as usize,
        geometry.height as usize,
        geometry.bytes_per_row as usize,
    );
    let mut px = vec![0u8; geometry.total_len()];
    for y in 0..h {
        let row = &mut px[y * bpr..(y + 1) * bpr];
        for x in 0..w {
            let text = y % 20 < 9 && x % 7 < 4 && (x / 7 + y / 20) % 3 != 0;
            let v: [u8; 4] = if text {
                [20, 20, 30, 255]
            } else {
                [236, 238, 240, 255]
            };
            row[x * 4..x * 4 + 4].copy_from_slice(&v);
        }
        for (i, b) in row[w * 4..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
    }
    let (cx, cy) = ((seq as usize * 5) % (w - 16), (seq as usize * 3) % (h - 16));
    for y in cy..cy + 16 {
        for x in cx..cx + 16 {
            px[y * bpr + x * 4..y * bpr + x * 4 + 4].copy_from_slice(&[255, 0, 0, 255]);
        }
    }
    px
}

/// The sender's one peer, once its writer counted `frames` sent (it counts a frame
/// after its last write returns, which may be after the viewer has it).
fn sent_all(sender: &Node, frames: u64) -> PeerStatus {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let peer = sender.peers().remove(0);
        if peer.frames_sent >= frames || std::time::Instant::now() > deadline {
            assert_eq!(peer.frames_sent, frames);
            return peer;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Publishes frames `seqs` of `pixels` one at a time, each once the viewer delivered the
/// one before, and checks every byte and the meta of each.
fn lockstep_pixels(
    sender: &Node,
    viewer: &Node,
    geometry: FrameGeometry,
    seqs: std::ops::RangeInclusive<u64>,
    pixels: impl Fn(u64) -> Vec<u8>,
) {
    let pool = FramePool::new(4);
    for seq in seqs {
        let px = pixels(seq);
        let frame = Frame::copied(geometry, seq, capture_us_for(seq), &px, &pool);
        sender.publish(&frame);
        let got = recv_frame(viewer, &format!("frame {seq}"));
        assert_eq!(got.meta(), frame.meta(), "meta of frame {seq}");
        assert!(got.pixels() == &px[..], "frame {seq} differs");
    }
}

#[test]
fn screen_frames_go_coded_byte_exact_in_a_small_share_of_raw() {
    let geometry = padded_geometry(1023, 601);
    for codec in [Codec::Delta, Codec::Lz4, Codec::Tiles] {
        let sender = coding_sender(codec);
        let viewer = viewer(true, &sender);
        lockstep_pixels(&sender, &viewer, geometry, 1..=30, |seq| {
            screen(geometry, seq)
        });
        let peer = sent_all(&sender, 30);
        assert_eq!(peer.codec, codec);
        assert_eq!(peer.frames_coded, 30);
        let ratio = peer.wire_ratio().expect("frames went");
        // The first frame whole, then the cursor's tiles (and each row's padding, which
        // changes with every frame here: the last column of tiles).
        let most = match codec {
            Codec::Delta => 0.25,
            _ => 0.05,
        };
        assert!(ratio < most, "{}: {:.3} of raw", codec.name(), ratio);
        assert_eq!(viewer.stats().checksum_failures, 0);
        assert_eq!(viewer.stats().protocol_errors, 0);
    }
}

#[test]
fn every_codec_is_byte_exact_on_noise_of_an_odd_padded_size() {
    let geometry = padded_geometry(333, 257);
    for codec in Codec::ALL {
        let sender = coding_sender(codec);
        let viewer = viewer(true, &sender);
        lockstep(&sender, &[&viewer], geometry, 1..=12);
        let peer = sent_all(&sender, 12);
        match codec {
            Codec::Raw => assert_eq!(peer.frames_coded, 0),
            // Noise codes to more than raw: after a try, raw.
            Codec::Auto => assert!((1..12).contains(&peer.frames_coded), "{peer:?}"),
            _ => assert_eq!(peer.frames_coded, 12, "{}", codec.name()),
        }
    }
}

#[test]
fn a_viewer_that_asks_for_raw_frames_gets_raw_frames() {
    let geometry = FrameGeometry::rgba8(640, 360);
    let sender = coding_sender(Codec::Tiles);
    let viewer = viewer(false, &sender);
    lockstep_pixels(&sender, &viewer, geometry, 1..=10, |seq| {
        screen(geometry, seq)
    });
    let peer = sent_all(&sender, 10);
    assert_eq!(peer.codec, Codec::Raw);
    assert_eq!(peer.frames_coded, 0);
    assert_eq!(peer.frame_bytes_wire, peer.frame_bytes_raw);
}

#[test]
fn a_viewer_that_comes_back_gets_a_whole_frame_first() {
    let geometry = FrameGeometry::rgba8(500, 300);
    let sender = coding_sender(Codec::Tiles);
    let first = viewer(true, &sender);
    lockstep_pixels(&sender, &first, geometry, 1..=5, |seq| {
        screen(geometry, seq)
    });
    drop(first);
    // A new link: the sender holds no base for it, the viewer none from the sender. A
    // delta now would end the link (its base unknown): the frames come, whole.
    let second = viewer(true, &sender);
    lockstep_pixels(&sender, &second, geometry, 6..=10, |seq| {
        screen(geometry, seq)
    });
    let stats = second.stats();
    assert_eq!((stats.protocol_errors, stats.checksum_failures), (0, 0));
}

#[test]
fn serve_through_a_relay_to_record_is_coded_on_each_hop_and_byte_exact() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let (src, img) = write_source_image(tmp.path());
    let src = src.to_str().expect("a UTF-8 path");
    let serve = Proc::start(&[
        "serve",
        src,
        "--listen",
        "127.0.0.1:0",
        "--fps",
        "30",
        "--codec",
        "tiles",
    ]);
    let relay = Proc::start(&[
        "relay",
        "--connect",
        &serve.listen_addr(),
        "--listen",
        "127.0.0.1:0",
        "--codec",
        "lz4",
    ]);
    let out = tmp.path().join("out");
    let record = Proc::start(&[
        "record",
        "--connect",
        &relay.listen_addr(),
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]);
    let deadline = std::time::Instant::now() + PATIENCE;
    while saved_frames(&out).len() < 10 {
        assert!(std::time::Instant::now() < deadline, "no 10 frames saved");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Each hop says how it codes for its peer, and what that saved.
    serve.signal("USR2");
    let line = serve.wait_line("codec=tiles", PATIENCE);
    assert!(line.contains(" coded="), "{line}");
    relay.signal("USR2");
    let line = relay.wait_line("codec=lz4", PATIENCE);
    assert!(line.contains(" coded="), "{line}");
    let (code, summary, lines) = record.stop_with_summary();
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(summary["checksum_failures"], 0, "{summary}");
    assert_eq!(summary["protocol_errors"], 0, "{summary}");
    let frames = saved_frames(&out);
    assert!(frames.len() >= 10);
    for f in frames {
        let got = image::open(&f).expect("a PNG").to_rgba8();
        assert!(got == img, "{} differs from the source", f.display());
    }
}

#[test]
fn an_unknown_codec_is_refused_with_the_names_there_are() {
    let out = std::process::Command::new(common::proc::bin())
        .args(["serve", "--codec", "h264"])
        .output()
        .expect("texstream runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown codec \"h264\"; one of: raw, delta, lz4, tiles, auto"),
        "{err}"
    );
}

#[test]
fn every_pixel_format_goes_coded_byte_exact() {
    let sender = coding_sender(Codec::Tiles);
    let viewer = viewer(true, &sender);
    for (i, format) in texstream::frame::PixelFormat::ALL.into_iter().enumerate() {
        let bpp = format.bytes_per_pixel();
        // An odd width and a few bytes of padding: tiles are cut by the pixel's size.
        let geometry = FrameGeometry {
            width: 131,
            height: 70,
            format,
            bytes_per_row: 131 * bpp + 12,
        };
        let first = 1 + i as u64 * 3;
        lockstep(&sender, &[&viewer], geometry, first..=first + 2);
    }
    let peer = sent_all(&sender, 3 * texstream::frame::PixelFormat::ALL.len() as u64);
    assert_eq!(peer.frames_coded, peer.frames_sent);
}

#[test]
fn a_frame_is_coded_once_for_viewers_that_hold_the_same_base() {
    let geometry = FrameGeometry::rgba8(640, 360);
    let sender = coding_sender(Codec::Tiles);
    let a = viewer(true, &sender);
    let b = viewer(true, &sender);
    let frames = 40;
    let pool = FramePool::new(4);
    for seq in 1..=frames {
        let px = screen(geometry, seq);
        let frame = Frame::copied(geometry, seq, capture_us_for(seq), &px, &pool);
        sender.publish(&frame);
        for (name, viewer) in [("a", &a), ("b", &b)] {
            let got = recv_frame(viewer, &format!("frame {seq} at {name}"));
            assert!(got.pixels() == &px[..], "frame {seq} at {name} differs");
        }
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    let peers = loop {
        let peers = sender.peers();
        let sent: u64 = peers.iter().map(|p| p.frames_sent).sum();
        if sent >= 2 * frames || std::time::Instant::now() > deadline {
            break peers;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let coded: u64 = peers.iter().map(|p| p.frames_coded).sum();
    let shared: u64 = peers.iter().map(|p| p.frames_coded_shared).sum();
    assert_eq!(coded, 2 * frames, "{peers:?}");
    // Each frame coded by one link and taken by the other, mostly: a link that finds
    // the other's coding begun but not yet being finished (that link may be slow to
    // come to it) codes its own rather than wait, which a loaded machine makes
    // happen now and then. Without the cache, none is shared.
    assert!(shared >= frames / 2, "{shared} of {frames} codings shared");
    for v in [&a, &b] {
        assert_eq!(v.stats().checksum_failures, 0);
        assert_eq!(v.stats().protocol_errors, 0);
    }
}

#[test]
fn the_codec_changes_on_links_that_run() {
    let geometry = FrameGeometry::rgba8(640, 360);
    let sender = coding_sender(Codec::Raw);
    let first = viewer(true, &sender);
    lockstep_pixels(&sender, &first, geometry, 1..=5, |seq| {
        screen(geometry, seq)
    });
    let peer = sent_all(&sender, 5);
    assert_eq!((peer.codec, peer.frames_coded), (Codec::Raw, 0));
    // Coding starts on the running link with a whole frame, then deltas.
    sender.set_codec(Codec::Tiles);
    assert_eq!(sender.codec(), Codec::Tiles);
    lockstep_pixels(&sender, &first, geometry, 6..=15, |seq| {
        screen(geometry, seq)
    });
    let peer = sent_all(&sender, 15);
    assert_eq!((peer.codec, peer.frames_coded), (Codec::Tiles, 10));
    let coded_bytes = peer.frame_bytes_wire - 5 * geometry.total_len() as u64;
    assert!(
        coded_bytes < geometry.total_len() as u64 * 2,
        "one whole frame and nine small deltas: {coded_bytes} bytes"
    );
    // And back to raw.
    sender.set_codec(Codec::Raw);
    lockstep_pixels(&sender, &first, geometry, 16..=20, |seq| {
        screen(geometry, seq)
    });
    let peer = sent_all(&sender, 20);
    assert_eq!((peer.codec, peer.frames_coded), (Codec::Raw, 10));
    // A link that comes later starts with the codec set last.
    sender.set_codec(Codec::Lz4);
    let late = viewer(true, &sender);
    lockstep_pixels(&sender, &late, geometry, 21..=23, |seq| {
        screen(geometry, seq)
    });
    let late_peer = sender
        .peers()
        .into_iter()
        .find(|p| p.frames_sent > 0 && p.frames_sent <= 3)
        .expect("the late viewer's link");
    assert_eq!(late_peer.codec, Codec::Lz4);
    assert_eq!(first.stats().checksum_failures, 0);
    assert_eq!(late.stats().checksum_failures, 0);
}
