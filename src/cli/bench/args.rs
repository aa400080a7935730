//! The command line of `texstream bench`: the user's arguments ([`BenchArgs`]), what the
//! parent passes on to its workers ([`BenchParams`] and the hidden workers' arguments),
//! the pace, when a run stops, and the benchmark's TLS set-up.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::content::ContentKind;
use crate::frame::FrameGeometry;
use crate::gpu::RowLayout;
use crate::net::Codec;
use crate::protocol::{Limits, DEFAULT_CHUNK_BYTES};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub(super) worker: Option<Worker>,
    #[command(flatten)]
    pub(super) params: BenchParams,
    /// Add one more viewer that reads slowly (about 26 Mb/s), to show that it changes
    /// nobody else's figures.
    #[arg(long, conflicts_with = "raw_tcp")]
    pub(super) slow_viewer: bool,
    /// Measure the floor instead: the same frames at the same pace over one bare TCP
    /// connection, with no protocol, no copy and no checksum (the ceiling that
    /// `texstream bench`'s latency and throughput are compared with).
    #[arg(long)]
    pub(super) raw_tcp: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub(super) json: bool,
}

/// The internal endpoints the parent process starts.
#[derive(Subcommand, Debug)]
pub(super) enum Worker {
    /// Internal: the sending endpoint of a benchmark.
    #[command(name = "sender-worker", hide = true)]
    Sender(SenderWorkerArgs),
    /// Internal: one viewing endpoint of a benchmark.
    #[command(name = "viewer-worker", hide = true)]
    Viewer(ViewerWorkerArgs),
}

/// What the parent passes on to the sender.
#[derive(Args, Debug, Clone)]
pub(super) struct BenchParams {
    /// Frame width in pixels (RGBA, 4 bytes per pixel).
    #[arg(long, default_value_t = 1920, value_parser = clap::value_parser!(u32).range(1..=16384))]
    pub(super) width: u32,
    /// Frame height in pixels.
    #[arg(long, default_value_t = 1080, value_parser = clap::value_parser!(u32).range(1..=16384))]
    pub(super) height: u32,
    /// Publish this many frames, then stop (default: run for --seconds).
    #[arg(long, value_name = "N", conflicts_with = "seconds", value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) frames: Option<u64>,
    /// Publish for this many seconds (default 5 when --frames is not given).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Viewers, each in its own process.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(super) viewers: u32,
    /// Frames per second to publish (1 to 1000), or `max`: as fast as the viewers take
    /// them (each frame is published once every viewer's link has started sending the
    /// one before, so none is skipped).
    #[arg(long, value_name = "F|max", default_value = "max", value_parser = parse_pace)]
    pub(super) fps: Pace,
    /// With --fps max: pace by the viewers' acknowledgements instead, with at most N
    /// frames published but not yet acknowledged per viewer. More than 1 lets the
    /// sender's one-frame slot per viewer replace frames the writer has not started
    /// yet (counted as skipped).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16))]
    pub(super) in_flight: Option<u64>,
    /// Payload bytes per frame chunk on the wire.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHUNK_BYTES as u64, value_parser = parse_chunk)]
    pub(super) chunk: u64,
    /// Run every connection over TLS 1.3 (a throwaway certificate in a temporary
    /// folder), to measure what encryption costs.
    #[arg(long)]
    pub(super) tls: bool,
    /// Internal: the folder of the benchmark's TLS certificate and known hosts.
    #[arg(long, hide = true, value_name = "DIR")]
    pub(super) tls_dir: Option<std::path::PathBuf>,
    /// Put the GPU stages in the loop, on whatever adapter exists: the sender renders
    /// each frame with the live shader and reads it back through the staging-buffer
    /// ring (kept full with --fps max, several readbacks in flight); each viewer
    /// uploads it into a texture and waits for the GPU. Reports the time of each stage
    /// (render+readback, copy+hash, queue, wire+verify, upload), render → upload end to
    /// end, and the sender's readbacks in flight (peak and mean).
    #[arg(long)]
    pub(super) gpu: bool,
    /// What the frames show: `synthetic` (the same pixels every frame), `pattern` (the
    /// moving test pattern), `screen` (a desktop with a moving cursor), `photo` (a
    /// photo-like picture panned a pixel a frame), or an image or animation FILE,
    /// repeated to fill the frame. Pictures move as at 60 fps whatever the pace.
    #[arg(long, value_name = "KIND|FILE", default_value = "synthetic", value_parser = ContentKind::parse)]
    pub(super) content: ContentKind,
    /// Pan a --content FILE picture a pixel a frame (every tile changes, as with a
    /// moving camera).
    #[arg(long)]
    pub(super) pan: bool,
    /// How the sender codes frames (`texstream serve --help`): raw, delta, lz4, tiles,
    /// auto.
    #[arg(long, value_name = "CODEC", default_value = "raw", value_parser = crate::cli::parse_codec)]
    pub(super) codec: Codec,
    /// The sender listens here (HOST:PORT; port 0 for any): another host's address, or
    /// one inside a network namespace, for a benchmark across a real or emulated link.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub(super) listen: String,
    /// Start the sender worker through this command (words split at spaces), e.g.
    /// `ip netns exec NS` (or `ssh HOST`, where texstream is at the same path and the
    /// clocks agree: latency is measured across them).
    #[arg(long, value_name = "CMD")]
    pub(super) sender_via: Option<String>,
    /// Start each viewer worker through this command, as --sender-via.
    #[arg(long, value_name = "CMD")]
    pub(super) viewer_via: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct SenderWorkerArgs {
    #[command(flatten)]
    pub(super) params: BenchParams,
    /// Wait for a slow viewer besides the --viewers honest ones.
    #[arg(long)]
    pub(super) slow_viewer: bool,
}

#[derive(Args, Debug)]
pub(super) struct ViewerWorkerArgs {
    /// The sender's address.
    #[arg(long, value_name = "ADDR")]
    pub(super) connect: String,
    /// Our name in the hello (the sender tells its viewers apart by it).
    #[arg(long)]
    pub(super) name: String,
    /// Dial over TLS, with the benchmark's certificate folder.
    #[arg(long, value_name = "DIR")]
    pub(super) tls_dir: Option<std::path::PathBuf>,
    /// Upload every frame into a GPU texture and time it.
    #[arg(long)]
    pub(super) gpu: bool,
}

/// TLS material kept in the benchmark's own folder (never the user's config).
pub(super) fn bench_tls(
    enabled: bool,
    dir: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::net::Tls>> {
    let Some(dir) = dir.filter(|_| enabled) else {
        return Ok(None);
    };
    Ok(Some(crate::net::Tls::new(&crate::net::TlsOptions {
        dir: Some(dir.join("tls")),
        known_hosts: Some(dir.join("known_hosts")),
        ..crate::net::TlsOptions::default()
    })?))
}

/// How fast the sender publishes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Pace {
    Max,
    Fps(f64),
}

impl Pace {
    pub(super) fn fps(self) -> Option<f64> {
        match self {
            Pace::Max => None,
            Pace::Fps(f) => Some(f),
        }
    }
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pace::Max => f.write_str("max"),
            Pace::Fps(fps) => write!(f, "{fps}"),
        }
    }
}

fn parse_pace(s: &str) -> Result<Pace, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Pace::Max);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && (1.0..=1000.0).contains(&f) => Ok(Pace::Fps(f)),
        _ => Err(format!(
            "expected frames per second between 1 and 1000, or `max`; got {s:?}"
        )),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "expected a positive number of seconds (at most 86400), got {s:?}"
        )),
    }
}

fn parse_chunk(s: &str) -> Result<u64, String> {
    let max = u64::from(Limits::default().max_chunk_bytes);
    match s.parse::<u64>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a chunk size between 1 and {max} bytes, got {s:?}"
        )),
    }
}

impl BenchParams {
    pub(super) fn geometry(&self) -> FrameGeometry {
        FrameGeometry::rgba8(self.width, self.height)
    }

    /// Bytes of one frame on the wire: with `--gpu`, rows keep the readback's padding.
    pub(super) fn frame_bytes(&self) -> u64 {
        if self.gpu {
            RowLayout::new(self.width, self.height).buffer_size()
        } else {
            self.geometry().total_len() as u64
        }
    }

    /// The command-line arguments that reproduce these parameters in a worker.
    pub(super) fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--width".to_owned(),
            self.width.to_string(),
            "--height".to_owned(),
            self.height.to_string(),
            "--viewers".to_owned(),
            self.viewers.to_string(),
            "--fps".to_owned(),
            self.fps.to_string(),
            "--chunk".to_owned(),
            self.chunk.to_string(),
        ];
        if let Some(n) = self.in_flight {
            args.extend(["--in-flight".to_owned(), n.to_string()]);
        }
        if let Some(frames) = self.frames {
            args.extend(["--frames".to_owned(), frames.to_string()]);
        }
        if let Some(seconds) = self.seconds {
            args.extend(["--seconds".to_owned(), seconds.to_string()]);
        }
        if self.tls {
            args.push("--tls".to_owned());
        }
        if let Some(dir) = &self.tls_dir {
            args.extend(["--tls-dir".to_owned(), dir.display().to_string()]);
        }
        if self.gpu {
            args.push("--gpu".to_owned());
        }
        args.extend([
            "--content".to_owned(),
            self.content.to_arg(),
            "--codec".to_owned(),
            self.codec.name().to_owned(),
            "--listen".to_owned(),
            self.listen.clone(),
        ]);
        if self.pan {
            args.push("--pan".to_owned());
        }
        args
    }

    /// The benchmark's TLS set-up, when asked for.
    pub(super) fn tls(&self) -> anyhow::Result<Option<crate::net::Tls>> {
        bench_tls(self.tls, self.tls_dir.as_deref())
    }

    /// When the run should end: a number of frames, or a time.
    pub(super) fn stop(&self) -> Stop {
        match (self.frames, self.seconds) {
            (Some(n), _) => Stop::Frames(n),
            (None, Some(s)) => Stop::After(Duration::from_secs_f64(s)),
            (None, None) => Stop::After(Duration::from_secs(5)),
        }
    }

    /// A generous bound on the whole run, after which the parent kills its workers.
    pub(super) fn watchdog(&self) -> Duration {
        let publishing = match (self.stop(), self.fps) {
            (Stop::After(d), _) => d.as_secs_f64(),
            (Stop::Frames(n), Pace::Fps(f)) => n as f64 / f,
            // At 100 MB/s, far below what any machine does on loopback.
            (Stop::Frames(n), Pace::Max) => {
                n as f64 * self.geometry().total_len() as f64 * f64::from(self.viewers) / 1e8
            }
        };
        // A software renderer may take a good fraction of a second per large frame.
        let publishing = match self.stop() {
            Stop::Frames(n) if self.gpu => publishing + n as f64 * 0.5,
            _ => publishing,
        };
        Duration::from_secs_f64(90.0 + publishing.min(1e6))
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Stop {
    Frames(u64),
    After(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_and_limits_parse() {
        assert_eq!(parse_pace("max"), Ok(Pace::Max));
        assert_eq!(parse_pace("60"), Ok(Pace::Fps(60.0)));
        assert!(parse_pace("0").is_err());
        assert!(parse_pace("fast").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_chunk("0").is_err());
        assert_eq!(parse_chunk("1048576"), Ok(1 << 20));
    }
}
