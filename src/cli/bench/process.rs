//! The parent process of `texstream bench`: it starts the sender and viewer workers
//! (killed if it stops first), collects their JSON lines, combines and prints them; and
//! the /proc readings (CPU time, peak memory) every process reports about itself.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::args::BenchParams;
use super::report::{combine, print_table, SenderReport, ViewerReport};
use super::viewer::slow_viewer;
use super::VIEWER_NAME;

// ---------------------------------------------------------------------------------
// /proc readings (the crate denies unsafe code: no libc).

/// Linux reports process CPU times in clock ticks of 1/100 s (USER_HZ).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of this process so far.
pub(super) fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from field 3 on.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(utime), Some(stime)) => (utime + stime) as f64 / CLOCK_TICKS_PER_SEC,
        _ => 0.0,
    }
}

/// Peak resident set size of this process so far (VmHWM), in MiB.
pub(in crate::cli) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib = line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok()
            })
        })
        .map_or(0.0, |kib| kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------
// The parent: starts the workers, combines their reports.

/// Child processes, killed if still running when this is dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `texstream bench ARGS`, started through `via` (`ip netns exec NS`, `ssh HOST`) if
/// given.
fn worker_command(exe: &std::path::Path, args: &[String], via: Option<&str>) -> Command {
    let mut words = via.into_iter().flat_map(str::split_whitespace);
    let mut cmd = match words.next() {
        Some(first) => {
            let mut cmd = Command::new(first);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    };
    cmd.arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "texstream=warn,warn");
    }
    cmd
}

/// Reads a child's standard output to the end on a thread.
fn collect_stdout(child: &mut Child) -> anyhow::Result<flume::Receiver<String>> {
    let stdout = child
        .stdout
        .take()
        .context("a worker has no standard output")?;
    let (tx, rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("texstream bench output".into())
        .spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut text);
            let _ = tx.send(text);
        })?;
    Ok(rx)
}

/// The last line of a worker's output that parses as `T`.
fn last_json<T: serde::de::DeserializeOwned>(output: &str) -> Option<T> {
    output
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
}

pub(super) fn run_parent(params: &BenchParams, slow: bool, json: bool) -> anyhow::Result<()> {
    if params.tls && slow {
        anyhow::bail!("--slow-viewer is a plain-TCP reader: it does not combine with --tls");
    }
    let exe = std::env::current_exe().context("cannot find the texstream executable")?;
    // A throwaway certificate folder, removed at the end.
    let tls_dir = params
        .tls
        .then(|| std::env::temp_dir().join(format!("texstream-bench-{}", std::process::id())));
    let _cleanup = TempDir(tls_dir.clone());
    let mut params = params.clone();
    params.tls_dir = tls_dir.clone();
    let params = &params;
    let watchdog = Instant::now() + params.watchdog();
    let mut children = Children(Vec::new());

    let mut sender_args = vec!["sender-worker".to_owned()];
    sender_args.extend(params.to_args());
    if slow {
        sender_args.push("--slow-viewer".to_owned());
    }
    let mut sender = worker_command(&exe, &sender_args, params.sender_via.as_deref())
        .spawn()
        .context("cannot start the benchmark sender")?;
    let mut sender_out = BufReader::new(
        sender
            .stdout
            .take()
            .context("the benchmark sender has no standard output")?,
    );
    children.0.push(sender);
    let mut first = String::new();
    sender_out
        .read_line(&mut first)
        .context("cannot read the benchmark sender's address")?;
    let addr: SocketAddr = serde_json::from_str::<serde_json::Value>(&first)
        .ok()
        .and_then(|v| v.get("listening")?.as_str()?.parse().ok())
        .context("the benchmark sender did not start (see its error above)")?;
    let (sender_tx, sender_rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("texstream bench output".into())
        .spawn(move || {
            let mut text = String::new();
            let _ = sender_out.read_to_string(&mut text);
            let _ = sender_tx.send(text);
        })?;

    let mut viewer_outputs = Vec::new();
    for i in 1..=params.viewers {
        let mut args = vec![
            "viewer-worker".to_owned(),
            "--connect".to_owned(),
            addr.to_string(),
            "--name".to_owned(),
            format!("{VIEWER_NAME} {i}"),
        ];
        if let Some(dir) = &tls_dir {
            args.extend(["--tls-dir".to_owned(), dir.display().to_string()]);
        }
        if params.gpu {
            args.push("--gpu".to_owned());
        }
        let mut viewer = worker_command(&exe, &args, params.viewer_via.as_deref())
            .spawn()
            .context("cannot start a benchmark viewer")?;
        viewer_outputs.push(collect_stdout(&mut viewer)?);
        children.0.push(viewer);
    }
    let stop_slow = Arc::new(AtomicBool::new(false));
    let slow_thread = if slow {
        let stop = stop_slow.clone();
        Some(
            std::thread::Builder::new()
                .name("texstream bench slow viewer".into())
                .spawn(move || slow_viewer(addr, &stop))?,
        )
    } else {
        None
    };

    // Wait for every worker, within the watchdog.
    let mut statuses = vec![None; children.0.len()];
    while statuses.iter().any(Option::is_none) {
        for (child, status) in children.0.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait()?;
            }
        }
        if let Some(Some(s)) = statuses.first() {
            // The sender is done: the slow viewer may stop.
            stop_slow.store(true, Relaxed);
            if !s.success() {
                bail!("the benchmark sender failed ({s}); see its error above");
            }
        }
        if Instant::now() > watchdog {
            bail!(
                "the benchmark did not finish within {:.0} s; stopped it",
                params.watchdog().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_slow.store(true, Relaxed);
    for (i, status) in statuses.iter().enumerate().skip(1) {
        if let Some(s) = status.filter(|s| !s.success()) {
            bail!("benchmark viewer {i} failed ({s}); see its error above");
        }
    }
    let sender_report: SenderReport =
        last_json(&sender_rx.recv()?).context("the benchmark sender printed no report")?;
    let mut viewer_reports = Vec::new();
    for (i, rx) in viewer_outputs.iter().enumerate() {
        let report: ViewerReport = last_json(&rx.recv()?)
            .with_context(|| format!("benchmark viewer {} printed no report", i + 1))?;
        viewer_reports.push(report);
    }
    let slow_bytes = match slow_thread {
        Some(t) => Some(
            t.join()
                .map_err(|_| anyhow::anyhow!("the slow viewer thread panicked"))??,
        ),
        None => None,
    };

    let report = combine(params, slow, &sender_report, viewer_reports, slow_bytes);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    if report.checksum_failures > 0 || report.protocol_errors > 0 {
        bail!(
            "{} checksum failures and {} protocol errors during the benchmark",
            report.checksum_failures,
            report.protocol_errors
        );
    }
    if !sender_report.all_acknowledged {
        bail!("not every viewer received the last frame");
    }
    Ok(())
}

/// Removes a folder when dropped.
struct TempDir(Option<std::path::PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
