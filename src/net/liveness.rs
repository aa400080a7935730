//! A link's deadlines while a write blocks. The keepalive ([`super::Keepalive`]) ends a
//! link whose peer went silent, but only between writes: a peer with a zero receive
//! window holds a blocking write, and with it the whole writer, for as long as the
//! kernel lets it. So every socket write of a link goes through [`Liveness`]: the
//! socket's send timeout is a short slice ([`WRITE_SLICE`]), and after each slice
//! that sent nothing the write gives up once the peer has been silent past the idle
//! deadline, or the write itself has made no progress for as long.

use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The socket's send timeout while a link runs: how often a blocked write looks at the
/// deadlines.
pub(crate) const WRITE_SLICE: Duration = Duration::from_millis(250);

/// When the peer was last heard from (stamped by the link's reader), and how long it
/// may stay silent.
#[derive(Debug)]
pub(crate) struct Liveness {
    epoch: Instant,
    last_heard_us: AtomicU64,
    /// `u64::MAX` until the link sets it: no deadline during the handshake, which has
    /// its own.
    idle_us: AtomicU64,
}

/// Why a write gave up (the error's message; its kind is `TimedOut`).
pub(crate) const SILENT: &str = "the peer has been silent past the idle deadline";
pub(crate) const STALLED: &str = "a write made no progress for the idle deadline";

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness::new(Instant::now())
    }
}

impl Liveness {
    pub fn new(epoch: Instant) -> Liveness {
        Liveness {
            epoch,
            last_heard_us: AtomicU64::new(0),
            idle_us: AtomicU64::new(u64::MAX),
        }
    }

    /// The instant the link's times count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// From now on, the peer may stay silent (and a write blocked) at most `idle`.
    pub fn set_idle(&self, idle: Duration) {
        let us = u64::try_from(idle.as_micros()).unwrap_or(u64::MAX);
        self.idle_us.store(us, Relaxed);
    }

    /// Something arrived from the peer just now.
    pub fn heard(&self) {
        self.last_heard_us
            .store(self.since_epoch_us(Instant::now()), Relaxed);
    }

    /// When the peer was last heard from.
    pub fn last_heard(&self) -> Instant {
        self.epoch + Duration::from_micros(self.last_heard_us.load(Relaxed))
    }

    /// Whether the peer has been silent for longer than the idle deadline at `now`.
    pub fn silent_at(&self, now: Instant) -> bool {
        let idle = self.idle_us.load(Relaxed);
        self.since_epoch_us(now)
            .saturating_sub(self.last_heard_us.load(Relaxed))
            > idle
    }

    fn since_epoch_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// After a slice in which a write that started at `started` sent nothing: whether
    /// to try again, or the error that ends it.
    fn judge(&self, started: Instant, timed_out: io::Error) -> io::Result<()> {
        let now = Instant::now();
        if self.silent_at(now) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, SILENT));
        }
        let idle = Duration::from_micros(self.idle_us.load(Relaxed));
        if now.saturating_duration_since(started) > idle {
            return Err(io::Error::new(io::ErrorKind::TimedOut, STALLED));
        }
        if self.idle_us.load(Relaxed) == u64::MAX {
            // No deadline set: the socket's own timeout is the answer.
            return Err(timed_out);
        }
        Ok(())
    }

    /// One `write` to `sock`, through slices that time out, until it sends something
    /// or a deadline passes.
    pub fn write(&self, mut sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        let started = Instant::now();
        loop {
            match sock.write(buf) {
                Err(e) if is_timeout(&e) => self.judge(started, e)?,
                other => return other,
            }
        }
    }

    /// As [`Liveness::write`], vectored.
    pub fn write_vectored(&self, mut sock: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let started = Instant::now();
        loop {
            match sock.write_vectored(bufs) {
                Err(e) if is_timeout(&e) => self.judge(started, e)?,
                other => return other,
            }
        }
    }

    /// All of `buf` to `sock`, each write within the deadlines.
    pub fn write_all(&self, sock: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(sock, buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A send timeout: `WouldBlock` (Unix) or `TimedOut` (Windows).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair whose accepting side never reads.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let writer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (silent, _) = listener.accept().expect("accept");
        writer
            .set_write_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        (writer, silent)
    }

    #[test]
    fn a_write_to_a_peer_that_reads_nothing_ends_at_the_idle_deadline() {
        let (writer, _silent) = pair();
        let live = Liveness::new(Instant::now());
        live.set_idle(Duration::from_millis(300));
        live.heard();
        let start = Instant::now();
        let big = vec![0u8; 256 << 20];
        let err = live
            .write_all(&writer, &big)
            .expect_err("the peer reads nothing");
        let took = start.elapsed();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            err.to_string() == SILENT || err.to_string() == STALLED,
            "{err}"
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "gave up after {took:?}"
        );
    }

    #[test]
    fn a_peer_heard_from_keeps_a_slow_write_going_until_it_stalls() {
        let (writer, _silent) = pair();
        let live = Liveness::new(Instant::now());
        live.set_idle(Duration::from_millis(400));
        // Fill the socket's buffers, so the next write blocks.
        let big = vec![0u8; 256 << 20];
        live.heard();
        let _ = live.write_all(&writer, &big);
        // Heard from all along (pings, say): the write ends only as stalled.
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Relaxed) {
                    live.heard();
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            let err = live.write(&writer, &big).expect_err("nothing drains");
            stop.store(true, Relaxed);
            assert_eq!(err.to_string(), STALLED);
        });
    }

    #[test]
    fn without_a_deadline_the_sockets_own_timeout_answers() {
        let (writer, _silent) = pair();
        let live = Liveness::new(Instant::now());
        let big = vec![0u8; 256 << 20];
        let err = live
            .write_all(&writer, &big)
            .expect_err("the peer reads nothing");
        assert!(is_timeout(&err), "{err}");
        assert!(err.to_string() != SILENT && err.to_string() != STALLED);
    }
}
