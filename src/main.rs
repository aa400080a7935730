//! The `texstream` binary: parses the command line, sets up logging, runs the library.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = texstream::cli::Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("texstream=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(texstream::cli::logline::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A file-size limit (ulimit -f) must fail the one write that crosses it, with a
    // clear error for that transfer, not kill the process: handle SIGXFSZ.
    if let Err(e) = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ) {
        tracing::warn!("cannot handle SIGXFSZ: {e}");
    }
    texstream::cli::run(cli)
}
