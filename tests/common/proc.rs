//! A `texstream` child process for the end-to-end tests: its output lines on a channel,
//! waits for a line or its listen address, signals, typed input, and its exit.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: this build's, or another one named by `TEXSTREAM_TEST_BIN`
/// (to check that a test fails on a build without the behaviour it names).
pub fn bin() -> String {
    std::env::var("TEXSTREAM_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_texstream").into())
}

/// A child process whose stdout and stderr lines arrive on a channel; killed (SIGKILL)
/// when dropped.
pub struct Proc {
    pub child: Child,
    pub lines: flume::Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        Proc::spawn(args, false)
    }

    /// As [`Proc::start`], with a pipe to the process's standard input.
    pub fn start_with_stdin(args: &[&str]) -> Proc {
        Proc::spawn(args, true)
    }

    fn spawn(args: &[&str], with_stdin: bool) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args).env("RUST_LOG", "texstream=info");
        Proc::spawn_command(cmd, with_stdin, "texstream starts")
    }

    /// As [`Proc::start`], for a command set up by the caller (another program in
    /// front of texstream, a working folder, a log level); `what` names it if it cannot
    /// start.
    pub fn start_command(cmd: Command, what: &str) -> Proc {
        Proc::spawn_command(cmd, false, what)
    }

    fn spawn_command(mut cmd: Command, with_stdin: bool, what: &str) -> Proc {
        let mut child = cmd
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (tx, lines) = flume::bounded(4096);
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            lines,
            stdin,
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(needle) {
                return line;
            }
            seen.push(line);
        }
        panic!(
            "no line containing {needle:?} within {timeout:?}; saw:\n{}",
            seen.join("\n")
        );
    }

    /// Waits for a line that `pick` accepts; returns it.
    pub fn wait_line_where(&self, timeout: Duration, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if pick(&line) {
                return line;
            }
            seen.push(line);
        }
        panic!(
            "no line as wanted within {timeout:?}; saw:\n{}",
            seen.join("\n")
        );
    }

    /// The address from the `listening on ADDR` line the process prints on stdout.
    pub fn listen_addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.trim().to_owned();
            }
            seen.push(line);
        }
        panic!(
            "the process did not print its listen address; saw:\n{}",
            seen.join("\n")
        );
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub fn type_line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("started with a stdin pipe");
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for exit; returns the exit code and all remaining output lines.
    pub fn finish(mut self, timeout: Duration) -> (i32, Vec<String>) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(100));
                let lines = self.lines.try_iter().collect();
                return (status.code().unwrap_or(-1), lines);
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the process to end (SIGTERM) and returns its exit code and JSON summary.
    pub fn stop_with_summary(self) -> (i32, serde_json::Value, Vec<String>) {
        self.signal("TERM");
        let (code, lines) = self.finish(Duration::from_secs(15));
        let line = lines
            .iter()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON summary in:\n{}", lines.join("\n")));
        let summary = serde_json::from_str(line).expect("summary is JSON");
        (code, summary, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test image with an odd size and varied pixels, saved as PNG.
pub fn write_source_image(dir: &Path) -> (PathBuf, image::RgbaImage) {
    let img = image::RgbaImage::from_fn(203, 117, |x, y| {
        image::Rgba([
            (x * 7) as u8,
            (y * 13) as u8,
            ((x ^ y) * 3) as u8,
            (200 + x % 50) as u8,
        ])
    });
    let path = dir.join("source.png");
    img.save(&path).unwrap();
    (path, img)
}

/// The PNG frames `record` saved in `dir`, in order (none if `dir` is missing).
pub fn saved_frames(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut frames: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    frames.sort();
    frames
}

/// A figure from `/proc/PID/status` (`VmRSS`, `VmHWM`: kB; `Threads`).
pub fn proc_figure(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the process's /proc status is readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's fds are listable")
        .count()
}
