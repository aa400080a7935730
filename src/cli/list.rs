//! `texstream list`: the sources announced on the LAN (mDNS), as a table or JSON, once
//! or as they come and go (`--watch`).

use std::time::{Duration, Instant};

use clap::Args;

use crate::net::discovery::{Browser, Found, SourceChange};
use crate::protocol::Escaped;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// How long to listen for announcements.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub seconds: f64,
    /// Print one JSON array of the sources found.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Keep listening, a line per source that appears, changes or leaves (until
    /// SIGINT/SIGTERM, or --seconds if given on the command line too).
    #[arg(long)]
    pub watch: bool,
}

pub fn run(args: ListArgs) -> anyhow::Result<()> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 86_400.0) {
        anyhow::bail!(
            "--seconds must be between 0 and 86400, got {}",
            args.seconds
        );
    }
    let mut browser = Browser::start()?;
    if args.watch {
        return watch(&mut browser);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        browser.wait(left.min(Duration::from_millis(200)));
    }
    let sources = browser.sources();
    if args.json {
        println!("{}", serde_json::to_string(&sources)?);
    } else if sources.is_empty() {
        println!(
            "no texstream sources heard in {} s.\n\
             Sources announce themselves over mDNS (UDP port 5353, multicast 224.0.0.251): \
             one on another subnet, behind a firewall that drops multicast, or started with \
             --no-announce is not heard. Its address still works: \
             texstream view --connect HOST:PORT (TCP port 7878 by default).",
            args.seconds
        );
    } else {
        print_table(&sources);
    }
    if browser.ignored() > 0 {
        tracing::warn!(
            "{} more announcements were ignored (at most {} sources are kept)",
            browser.ignored(),
            crate::net::discovery::MAX_SOURCES
        );
    }
    Ok(())
}

fn watch(browser: &mut Browser) -> anyhow::Result<()> {
    let signals = super::Signals::install()?;
    loop {
        for change in browser.wait(Duration::from_millis(200)) {
            let (sign, found) = match &change {
                SourceChange::Appeared(f) => ('+', f),
                SourceChange::Changed(f) => ('~', f),
                SourceChange::Gone(f) => ('-', f),
            };
            println!("{sign} {}", row(found));
        }
        if matches!(signals.rx.try_recv(), Ok(super::ControlSignal::Stop)) {
            return Ok(());
        }
    }
}

fn print_table(sources: &[Found]) {
    println!("NAME  ADDRESS  SIZE  FPS  ROLE  SECURITY");
    for f in sources {
        println!("{}", row(f));
    }
}

/// One source on one line; the name and role come from the network, so escaped.
fn row(f: &Found) -> String {
    let addr = f
        .addrs
        .first()
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    let fps = f.fps.map_or_else(|| "?".to_owned(), |v| format!("{v}"));
    format!(
        "{} [{}]  {addr}  {}  {fps}  {}  {}",
        Escaped(&f.name),
        Escaped(&f.id),
        f.size(),
        Escaped(&f.role),
        f.security()
    )
}
