//! The `texstream` command line: argument definitions (clap) and the subcommands — the
//! windows (`send`, `view`), the headless sender and viewer (`serve`, `record`), the
//! demo (what runs with no subcommand) and the benchmark (`bench`).

mod bench;
mod demo;
mod list;
pub mod logline;
mod record;
mod relay;
mod sendfile;
mod serve;
mod signals;
mod windows;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::net::{Codec, NetError, NodeConfig, PeerStatus, Tls, TlsOptions, Token, DEFAULT_PORT};
use crate::protocol::Role;
use crate::source::SourceError;

pub use signals::{ControlSignal, Signals};

#[derive(Parser, Debug)]
#[command(
    name = "texstream",
    version,
    about = "Stream raw RGBA frames over TCP to any number of viewers, with text and files on the same connection.",
    long_about = "Stream raw RGBA frames over TCP to any number of viewers, with text and files on the same connection.\n\nWith no subcommand, runs the demo: a sender window streaming the bundled image to a viewer window over loopback (in the terminal where no display is available).\n\nLogging: set RUST_LOG (e.g. RUST_LOG=texstream=debug)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Sender window: stream an image, an animation or the shader pattern from the GPU.
    Send(windows::SendArgs),
    /// Viewer window: show the stream, chat, send files, take snapshots.
    View(windows::ViewArgs),
    /// Headless sender: stream an image, a folder, an animation or a test pattern.
    Serve(serve::ServeArgs),
    /// Headless viewer: save received frames as PNG, text to a log, files to a folder.
    Record(record::RecordArgs),
    /// Headless relay: join a sender (or another relay) and serve the same stream, text
    /// and files to its own viewers.
    ///
    /// Frames are passed on as they arrive, checksum-verified and never decoded: the same
    /// pixels, frame numbers and capture timestamps, so a viewer's latency counts from
    /// the original capture across every hop. Text goes to every other peer. Files are
    /// stored and forwarded: each is written to --files-dir, and once it is whole and
    /// verified it is offered to every peer but the one it came from. Every --connect
    /// reconnects by itself, so a chain (sender → relay → relay → viewers) heals hop by
    /// hop. Two --connect and no --listen bridge two endpoints that cannot reach each
    /// other (e.g. `serve --listen` and `record --listen` behind different firewalls).
    Relay(relay::RelayArgs),
    /// Send files to a peer (a viewer window, `record`, `serve --files-dir`, a relay)
    /// with a progress bar; exits 0 only when the receiver confirmed every checksum.
    ///
    /// Files are read through a fixed-size buffer, so any size works. A transfer cut by
    /// a dropped connection resumes where it stopped once the connection is back.
    /// Exit codes: 0 all delivered, 4 a file cannot be read, 5 a transfer failed or was
    /// refused (the reason is printed), 6 no peer taking files within --timeout-secs.
    SendFile(sendfile::SendFileArgs),
    /// The demo (what runs with no subcommand): sender and viewer windows over loopback
    /// (`--headless`: both in this process, figures printed once a second).
    Demo(demo::DemoArgs),
    /// Benchmark: the real sender and viewers over loopback TCP with synthetic frames;
    /// throughput, frame rate, latency, CPU time and peak memory of each side.
    Bench(bench::BenchArgs),
    /// The sources announced on the LAN (mDNS): name, address, size, frame rate, role
    /// and what they need (a token, TLS).
    List(list::ListArgs),
}

/// Where to listen and whom to dial; every face takes both.
#[derive(Args, Debug, Clone)]
pub struct LinkArgs {
    /// Accept peers on this address (HOST:PORT, or just PORT for 127.0.0.1:PORT).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Dial this peer (HOST:PORT or PORT); repeat for several. Reconnects by itself.
    #[arg(long, value_name = "ADDR")]
    pub connect: Vec<String>,
    /// Dial the source announced on the LAN under this name (as `texstream list` shows
    /// it: the name, or `NAME [ID]` to pick one of several); repeat for several. It is
    /// looked up again at every reconnect, so a source that moves is followed.
    #[arg(long = "source", id = "source_name", value_name = "NAME")]
    pub source: Vec<String>,
    /// Our name, shown to peers and on our text messages.
    #[arg(long)]
    pub name: Option<String>,
    /// Of several senders reaching us (a listening viewer, a relay dialing two), show
    /// and pass on the stream of the one named NAME (its --name) whenever it is
    /// connected; otherwise the first that sends. SIGUSR2 marks the one shown.
    #[arg(long, value_name = "NAME")]
    pub follow: Option<String>,
    /// Drop a peer silent for this long (the idle deadline); pings go out at a quarter
    /// of it.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub keepalive_secs: f64,
    /// Shared token: peers must prove they know it, and we prove it to them (HMAC
    /// challenge-response; the token never crosses the wire). Both ends need the same.
    #[arg(
        long,
        env = "TEXSTREAM_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the token from the first line of this file.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Encrypt every connection with TLS 1.3 (both ends need it). Without --tls-cert, a
    /// self-signed certificate is made once in ~/.config/texstream/tls; dialers remember
    /// each address's certificate on first use (~/.config/texstream/known_hosts) and
    /// refuse it if it changes.
    #[arg(long)]
    pub tls: bool,
    /// A certificate chain (PEM) to present instead of the self-signed one (implies --tls).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The known-hosts file for TLS fingerprints.
    #[arg(long, value_name = "PATH")]
    pub known_hosts: Option<std::path::PathBuf>,
    /// A peer must finish its handshake within this long, or it is dropped.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub handshake_secs: f64,
    /// Connections accepted at once (handshakes included); more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Accepted connections not yet through their handshake (not yet authenticated) at
    /// once; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_handshaking: usize,
    /// The same, from one IP address: one address cannot take every handshake place.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_handshaking_per_address: usize,
    /// Connections open at once from one IP address (handshakes included): one address
    /// cannot hold every connection place.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections_per_address: usize,
    /// Memory that frames received in part may hold, across all peers; a chunk past it
    /// ends its connection with the reason.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub frame_memory_mib: u64,
    /// Files one peer may be sending us at once; more offers are refused with a reason.
    #[arg(long, value_name = "N", default_value_t = crate::net::MAX_INCOMING_PER_PEER)]
    pub max_files_per_peer: usize,
    /// How frames go to peers that take coded frames, always byte-exact: `raw`;
    /// `delta` (64x64 tiles unchanged since the last frame sent to that peer left out);
    /// `lz4` (and changed tiles LZ4-compressed); `tiles` (changed tiles LZ4 or QOI,
    /// whichever is smallest: for photographs). Without --codec, frames go raw and
    /// peers may send this node coded frames; `--codec raw` asks them for raw ones.
    #[arg(long, value_name = "CODEC", value_parser = parse_codec)]
    pub codec: Option<Codec>,
}

pub(crate) fn parse_codec(name: &str) -> Result<Codec, String> {
    Codec::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
        format!("unknown codec {name:?}; one of: {}", names.join(", "))
    })
}

impl LinkArgs {
    /// A node configuration for `role`; with neither --listen nor --connect, the side
    /// that usually listens listens on the default address and the other dials it.
    fn node_config(&self, role: Role, listens_by_default: bool) -> anyhow::Result<NodeConfig> {
        let mut config = NodeConfig::new(role);
        config.listen = self.listen.as_deref().map(normalize_addr);
        config.connect = self.connect.iter().map(|a| normalize_addr(a)).collect();
        config.sources = self.source.clone();
        config.follow_name = self.follow.clone();
        if config.listen.is_none() && config.connect.is_empty() && config.sources.is_empty() {
            let default = format!("127.0.0.1:{DEFAULT_PORT}");
            if listens_by_default {
                config.listen = Some(default);
            } else {
                config.connect = vec![default];
            }
        }
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        if !(self.keepalive_secs.is_finite() && self.keepalive_secs > 0.0) {
            anyhow::bail!("--keepalive-secs must be a positive number of seconds");
        }
        config.keepalive.timeout = Duration::from_secs_f64(self.keepalive_secs);
        config.keepalive.interval = config.keepalive.timeout / 4;
        if !(self.handshake_secs.is_finite() && self.handshake_secs > 0.0) {
            anyhow::bail!("--handshake-secs must be a positive number of seconds");
        }
        config.handshake_timeout = Duration::from_secs_f64(self.handshake_secs);
        if self.max_connections == 0
            || self.max_handshaking == 0
            || self.max_handshaking_per_address == 0
            || self.max_connections_per_address == 0
        {
            anyhow::bail!(
                "--max-connections, --max-handshaking, --max-handshaking-per-address and \
                 --max-connections-per-address must be at least 1"
            );
        }
        config.max_connections = self.max_connections;
        config.max_files_per_peer = self.max_files_per_peer;
        config.max_handshaking = self.max_handshaking;
        config.max_handshaking_per_address = self.max_handshaking_per_address;
        config.max_connections_per_address = self.max_connections_per_address;
        if self.frame_memory_mib == 0 {
            anyhow::bail!("--frame-memory-mib must be at least 1");
        }
        config.frame_memory = self.frame_memory_mib.saturating_mul(1 << 20);
        config.codec = self.codec.unwrap_or_default();
        config.takes_coded = self.codec != Some(Codec::Raw);
        config.token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(Token::new(t).map_err(|e| anyhow::anyhow!("--token: {e}"))?),
            (None, Some(path)) => Some(Token::from_file(path).map_err(anyhow::Error::msg)?),
            (None, None) => None,
        };
        if self.tls || self.tls_cert.is_some() {
            let tls = Tls::new(&TlsOptions {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                dir: None,
                known_hosts: self.known_hosts.clone(),
            })?;
            if config.listen.is_some() {
                tracing::info!("TLS certificate fingerprint: {}", tls.fingerprint);
            }
            config.tls = Some(tls);
        }
        Ok(config)
    }
}

/// Announces a listening `node` on the LAN under `--name` (default `HOST (role)`), with
/// its frame size and rate when known. `None` (and one warning) when it is not listening
/// or mDNS cannot start: direct addresses work all the same.
fn announce(
    node: &crate::net::Node,
    link: &LinkArgs,
    size: Option<(u32, u32)>,
    fps: Option<f64>,
) -> Option<crate::net::discovery::Announcer> {
    match crate::net::discovery::announce(node, link.name.as_deref(), size, fps) {
        Ok(Some((announcer, name))) => {
            tracing::info!(
                "announced on the LAN as {}",
                crate::protocol::Escaped(&name)
            );
            Some(announcer)
        }
        Ok(None) => None,
        Err(e) => {
            let listen = node
                .local_addr()
                .map_or_else(String::new, |a| a.to_string());
            tracing::warn!("not announced on the LAN ({e}); peers can still connect to {listen}");
            None
        }
    }
}

/// `7878` → `127.0.0.1:7878`; anything else as given.
pub fn normalize_addr(addr: &str) -> String {
    let port_only = addr.strip_prefix(':').unwrap_or(addr);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{port_only}")
    } else {
        addr.to_owned()
    }
}

/// Exit codes of the headless commands, documented in the README.
pub mod exit {
    /// Success, including an end asked for by SIGINT or SIGTERM.
    pub const OK: u8 = 0;
    /// A failure while running.
    pub const FAILURE: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// The listen address could not be bound.
    pub const LISTEN: u8 = 3;
    /// The source could not be opened or is not an image (`send-file`: a file cannot be
    /// read).
    pub const SOURCE: u8 = 4;
    /// `send-file`: a transfer failed or the receiver refused it.
    pub const TRANSFER: u8 = 5;
    /// `send-file`: no peer that takes files was reached in time.
    pub const UNREACHABLE: u8 = 6;
}

/// Runs the parsed command line; prints the error and maps it to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        None => demo::run(demo::DemoArgs::default()),
        Some(Command::Demo(args)) => demo::run(args),
        Some(Command::Send(args)) => windows::run_send(args),
        Some(Command::View(args)) => windows::run_view(args),
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Record(args)) => record::run(args),
        Some(Command::Relay(args)) => relay::run(args),
        Some(Command::SendFile(args)) => sendfile::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::List(args)) => list::run(args),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("texstream: error: {}", error_chain(&e));
            let code = if let Some(e) = e.downcast_ref::<sendfile::SendFileError>() {
                e.exit_code()
            } else if e.downcast_ref::<SourceError>().is_some() {
                exit::SOURCE
            } else if matches!(e.downcast_ref::<NetError>(), Some(NetError::Listen { .. })) {
                exit::LISTEN
            } else {
                exit::FAILURE
            };
            ExitCode::from(code)
        }
    }
}

/// An error and its causes on one line, each said once: a cause whose words its
/// parent's message already holds (as `cannot open X: {io error}` holds the I/O error)
/// is not repeated.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let said = cause.to_string();
        if !said.is_empty() && !line.contains(&said) {
            line.push_str(": ");
            line.push_str(&said);
        }
    }
    line
}

/// The SIGUSR2 listing: one line per peer, to standard error.
/// Events a headless loop handles before it looks at its signals and frames again, and
/// the time it spends on them: a peer that floods texts cannot keep it from its frames,
/// and SIGTERM is obeyed at once.
const EVENTS_PER_TURN: usize = 256;
const EVENT_TIME_PER_TURN: Duration = Duration::from_millis(5);

/// The events a headless loop handles this turn: those waiting, up to
/// [`EVENTS_PER_TURN`] and for at most [`EVENT_TIME_PER_TURN`].
fn events_this_turn(
    events: &flume::Receiver<crate::net::Event>,
) -> impl Iterator<Item = crate::net::Event> + '_ {
    let until = std::time::Instant::now() + EVENT_TIME_PER_TURN;
    std::iter::from_fn(move || {
        if std::time::Instant::now() < until {
            events.try_recv().ok()
        } else {
            None
        }
    })
    .take(EVENTS_PER_TURN)
}

/// The SIGUSR2 listing on standard error: one line a peer; a peer that sends frames is
/// marked `[shown]` when its stream is the one followed (`shown`), `[source]` otherwise.
pub fn print_peers(peers: &[PeerStatus], shown: Option<crate::net::PeerId>) {
    let mut out = format!("texstream: {} peer(s)\n", peers.len());
    for p in peers {
        out.push_str("  ");
        out.push_str(&p.line());
        if shown == Some(p.id) {
            out.push_str(" [shown]");
        } else if p.sends_frames {
            out.push_str(" [source]");
        }
        out.push('\n');
    }
    eprint!("{out}");
}

/// Parses `WIDTHxHEIGHT`.
fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got {s:?}"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=16384).contains(n))
            .ok_or_else(|| format!("{v:?} is not a size between 1 and 16384"))
    };
    Ok((parse(w)?, parse(h)?))
}

/// Reads lines from standard input on a thread and sends each as a text message, so a
/// terminal user (or a script) can chat with the peers. Ends at end of input.
fn forward_stdin_lines(tx: flume::Sender<String>) {
    let _ = std::thread::Builder::new()
        .name("texstream stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut stdin.lock(), &mut line).unwrap_or(0) > 0 {
                let text = line.trim_end_matches(['\r', '\n']).to_owned();
                if !text.is_empty() && tx.send(text).is_err() {
                    break;
                }
                line.clear();
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_sizes_parse() {
        assert_eq!(normalize_addr("7878"), "127.0.0.1:7878");
        assert_eq!(normalize_addr(":9000"), "127.0.0.1:9000");
        assert_eq!(normalize_addr("0.0.0.0:1"), "0.0.0.0:1");
        assert_eq!(parse_size("1920x1080"), Ok((1920, 1080)));
        assert!(parse_size("0x5").is_err());
        assert!(parse_size("wide").is_err());
    }

    #[test]
    fn every_subcommand_has_help() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for sub in Cli::command().get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "{} has no help text",
                sub.get_name()
            );
        }
    }
}
