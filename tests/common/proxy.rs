//! A TCP proxy for the end-to-end tests: it passes bytes at a set rate (a slow link on
//! loopback, so that a cut or a stop lands in the middle of a transfer or a frame), and
//! can be cut (the connection dies, both processes live on).
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------

pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Target-side sockets kept open, silent, after a cut of the dialer side only.
    held: Mutex<Vec<TcpStream>>,
    /// Set by a cut of the dialer side only: the pumps leave the target's side open.
    spare_target: Arc<AtomicBool>,
    /// Bytes passed from the target (the listening node) to the dialer.
    pub to_dialer: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(target: SocketAddr, bytes_per_sec: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let to_dialer = Arc::new(AtomicU64::new(0));
        let (c, counter) = (conns.clone(), to_dialer.clone());
        let spare_target = Arc::new(AtomicBool::new(false));
        let spare = spare_target.clone();
        std::thread::spawn(move || {
            for dialer in listener.incoming() {
                let Ok(dialer) = dialer else { continue };
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                c.lock()
                    .unwrap()
                    .extend([dialer.try_clone().unwrap(), upstream.try_clone().unwrap()]);
                let (d2, u2) = (dialer.try_clone().unwrap(), upstream.try_clone().unwrap());
                let down = counter.clone();
                let (spare_down, spare_up) = (spare.clone(), spare.clone());
                std::thread::spawn(move || {
                    pump(upstream, dialer, bytes_per_sec, &down, (&spare_down, true))
                });
                let up = Arc::new(AtomicU64::new(0));
                std::thread::spawn(move || pump(d2, u2, bytes_per_sec, &up, (&spare_up, false)));
            }
        });
        Proxy {
            addr,
            conns,
            held: Mutex::new(Vec::new()),
            spare_target,
            to_dialer,
        }
    }

    /// Kills the dialer's side of every connection through the proxy, while the
    /// target's side stays open and goes silent (as a link whose far end vanished):
    /// the dialer notices at once, the target only by its keepalive.
    pub fn cut_dialer_side(&self) {
        self.spare_target.store(true, Relaxed);
        let mut conns = self.conns.lock().unwrap();
        let mut held = self.held.lock().unwrap();
        for (i, s) in conns.drain(..).enumerate() {
            if i % 2 == 0 {
                let _ = s.shutdown(Shutdown::Both);
            } else {
                held.push(s);
            }
        }
    }

    /// Kills every connection through the proxy (the proxy itself keeps accepting).
    pub fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` at `bytes_per_sec`; at the end shuts both down, but for the
/// target's side (`from` when `spare.1`, else `to`) once `spare.0` is set.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    bytes_per_sec: u64,
    counter: &AtomicU64,
    spare: (&AtomicBool, bool),
) {
    let start = Instant::now();
    let mut total = 0u64;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        total += n as u64;
        counter.fetch_add(n as u64, Relaxed);
        let due = Duration::from_secs_f64(total as f64 / bytes_per_sec as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let (spared, target_is_from) = spare;
    let spared = spared.load(Relaxed);
    if !(spared && target_is_from) {
        let _ = from.shutdown(Shutdown::Both);
    }
    if !spared || target_is_from {
        let _ = to.shutdown(Shutdown::Both);
    }
}
