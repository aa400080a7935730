//! A TCP proxy for the end-to-end tests: it passes bytes at a set rate (a slow link on
//! loopback, so that a cut or a stop lands in the middle of a transfer or a frame), and
//! can be cut (the connection dies, both processes live on).
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------

pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
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
                std::thread::spawn(move || pump(upstream, dialer, bytes_per_sec, &down));
                let up = Arc::new(AtomicU64::new(0));
                std::thread::spawn(move || pump(d2, u2, bytes_per_sec, &up));
            }
        });
        Proxy {
            addr,
            conns,
            to_dialer,
        }
    }

    /// Kills every connection through the proxy (the proxy itself keeps accepting).
    pub fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, bytes_per_sec: u64, counter: &AtomicU64) {
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
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
