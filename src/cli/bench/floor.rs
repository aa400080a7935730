//! `texstream bench --raw-tcp`: the floor that the real path is measured against. The
//! same frames at the same pace go over one bare loopback TCP connection with no
//! protocol, no copy and no checksum: a 16-byte header (frame number, send time) and
//! the pixels, written in `--chunk`-sized writes from one buffer and read into one
//! reused buffer, by two threads of this process. Latency is the header's send time →
//! the frame's last byte read; Gb/s counts the pixels only, as `texstream bench` does.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::net::now_us;

use super::args::{BenchParams, Stop};
use super::process::{cpu_secs, peak_rss_mib};
use super::report::LatencyMs;
use super::sender::synthetic_pixels;

/// Bytes of the header before each frame: its number and its send time (µs since the
/// epoch), both little-endian.
const HEADER_BYTES: usize = 16;

/// What `--raw-tcp --json` prints; the keys it shares with `texstream bench --json`
/// mean the same.
#[derive(serde::Serialize, Debug)]
struct FloorReport {
    mode: &'static str,
    width: u32,
    height: u32,
    frame_bytes: u64,
    /// Frames per second asked for; `null` for `--fps max` (back to back).
    fps_limit: Option<f64>,
    chunk_bytes: u64,
    frames_sent: u64,
    frames_received: u64,
    /// First frame's send → last frame's last byte read.
    elapsed_secs: f64,
    gbps_per_viewer: f64,
    fps_per_viewer: f64,
    /// Send → last byte read, every frame.
    latency_ms: LatencyMs,
    latency_ms_first_tenth: LatencyMs,
    latency_ms_last_tenth: LatencyMs,
    /// Both threads together.
    cpu_secs: f64,
    peak_rss_mib: f64,
}

/// What the reading thread saw.
struct Received {
    frames: u64,
    first_sent_us: u64,
    last_read_us: u64,
    latencies_us: Vec<u64>,
}

pub(super) fn run(params: &BenchParams, json: bool) -> anyhow::Result<()> {
    if params.viewers != 1 || params.tls || params.gpu || params.in_flight.is_some() {
        anyhow::bail!(
            "--raw-tcp measures one bare TCP connection: it takes no --viewers, --tls, --gpu or --in-flight"
        );
    }
    let frame_bytes = params.geometry().total_len();
    let pixels = synthetic_pixels(frame_bytes);
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
    let addr = listener.local_addr()?;
    let cpu_start = cpu_secs();
    let reader = std::thread::Builder::new()
        .name("texstream floor reader".into())
        .spawn(move || read_frames(addr, frame_bytes))?;
    let (mut stream, _) = listener
        .accept()
        .context("the floor's reader did not connect")?;
    stream.set_nodelay(true)?;
    let sent = write_frames(&mut stream, params, &pixels);
    // The reader ends at the end of the stream, also when writing failed.
    let _ = stream.shutdown(Shutdown::Write);
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the floor's reader panicked"))??;
    let frames_sent = sent?;
    let cpu = cpu_secs() - cpu_start;

    let secs =
        (received.last_read_us.saturating_sub(received.first_sent_us) as f64 / 1e6).max(1e-9);
    let mut latencies = received.latencies_us;
    let tenth = latencies.len() / 10;
    let mut first_tenth = latencies[..tenth].to_vec();
    let mut last_tenth = latencies[latencies.len() - tenth..].to_vec();
    let report = FloorReport {
        mode: "raw-tcp",
        width: params.width,
        height: params.height,
        frame_bytes: frame_bytes as u64,
        fps_limit: params.fps.fps(),
        chunk_bytes: params.chunk,
        frames_sent,
        frames_received: received.frames,
        elapsed_secs: secs,
        gbps_per_viewer: (received.frames * frame_bytes as u64) as f64 * 8.0 / secs / 1e9,
        fps_per_viewer: received.frames as f64 / secs,
        latency_ms: LatencyMs::of(&mut latencies),
        latency_ms_first_tenth: LatencyMs::of(&mut first_tenth),
        latency_ms_last_tenth: LatencyMs::of(&mut last_tenth),
        cpu_secs: cpu,
        peak_rss_mib: peak_rss_mib(),
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_floor(&report);
    }
    if report.frames_received != report.frames_sent {
        anyhow::bail!(
            "{} frames sent but {} received over the bare connection",
            report.frames_sent,
            report.frames_received
        );
    }
    Ok(())
}

/// Writes frames at the benchmark's pace until it stops; returns how many were sent.
fn write_frames(
    stream: &mut TcpStream,
    params: &BenchParams,
    pixels: &[u8],
) -> anyhow::Result<u64> {
    let chunk = params.chunk as usize;
    let interval = params.fps.fps().map(|f| Duration::from_secs_f64(1.0 / f));
    let stop = params.stop();
    let start = Instant::now();
    let mut next_due = start;
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        let done = match stop {
            Stop::Frames(n) => seq >= n,
            Stop::After(d) => seq > 0 && now.duration_since(start) >= d,
        };
        if done {
            return Ok(seq);
        }
        if let Some(interval) = interval {
            if next_due > now {
                std::thread::sleep(next_due - now);
            }
            next_due = (next_due + interval).max(Instant::now());
        }
        let mut header = [0u8; HEADER_BYTES];
        header[..8].copy_from_slice(&seq.to_le_bytes());
        header[8..].copy_from_slice(&now_us().to_le_bytes());
        stream
            .write_all(&header)
            .context("writing over the bare connection")?;
        for piece in pixels.chunks(chunk) {
            stream
                .write_all(piece)
                .context("writing over the bare connection")?;
        }
        seq += 1;
    }
}

/// Reads frames into one reused buffer until the stream ends.
fn read_frames(addr: std::net::SocketAddr, frame_bytes: usize) -> anyhow::Result<Received> {
    let mut stream = TcpStream::connect(addr).context("the floor's reader cannot connect")?;
    stream.set_nodelay(true)?;
    let mut buffer = vec![0u8; frame_bytes];
    let mut received = Received {
        frames: 0,
        first_sent_us: 0,
        last_read_us: 0,
        latencies_us: Vec::with_capacity(1 << 14),
    };
    loop {
        let mut header = [0u8; HEADER_BYTES];
        match stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(received),
            Err(e) => return Err(e).context("reading over the bare connection"),
        }
        let sent_us = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
        stream
            .read_exact(&mut buffer)
            .context("reading a frame over the bare connection")?;
        let now = now_us();
        if received.frames == 0 {
            received.first_sent_us = sent_us;
        }
        received.frames += 1;
        received.last_read_us = now;
        received.latencies_us.push(now.saturating_sub(sent_us));
    }
}

fn print_floor(r: &FloorReport) {
    let pace = r
        .fps_limit
        .map_or_else(|| "max (back to back)".to_owned(), |f| format!("{f} fps"));
    println!(
        "texstream bench --raw-tcp: {}x{} RGBA ({:.2} MiB a frame) over one bare TCP connection (no protocol, copy or checksum), pace {pace}, writes of {} B, {:.2} s",
        r.width,
        r.height,
        r.frame_bytes as f64 / (1 << 20) as f64,
        r.chunk_bytes,
        r.elapsed_secs,
    );
    let l = &r.latency_ms;
    println!(
        "{} of {} frames, {:.2} Gb/s, {:.1} fps; latency send → last byte read: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.frames_received, r.frames_sent, r.gbps_per_viewer, r.fps_per_viewer, l.p50, l.p90, l.p99, l.max
    );
    println!(
        "CPU {:.2} s (both threads), peak RSS {:.1} MiB",
        r.cpu_secs, r.peak_rss_mib
    );
}
