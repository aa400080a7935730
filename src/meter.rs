//! A rolling meter of received frames: frames per second, throughput and end-to-end
//! latency over the last second or so. Pure: the caller passes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Figures over the meter's window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub fps: f64,
    pub megabits_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_max_ms: f64,
}

/// Keeps the frames of the last `window` (bounded: at most `MAX_SAMPLES`).
pub struct FrameMeter {
    window: Duration,
    samples: VecDeque<(Instant, usize, f64)>,
    scratch: Vec<f64>,
}

const MAX_SAMPLES: usize = 4096;

impl FrameMeter {
    pub fn new(window: Duration) -> FrameMeter {
        FrameMeter {
            window,
            samples: VecDeque::with_capacity(256),
            scratch: Vec::with_capacity(256),
        }
    }

    /// A frame of `bytes` arrived at `now`, `latency_ms` after its capture.
    pub fn record(&mut self, now: Instant, bytes: usize, latency_ms: f64) {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, bytes, latency_ms));
    }

    pub fn rates(&mut self, now: Instant) -> Rates {
        while let Some((t, _, _)) = self.samples.front() {
            if now.saturating_duration_since(*t) > self.window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        if self.samples.is_empty() {
            return Rates::default();
        }
        let secs = self.window.as_secs_f64();
        let bytes: usize = self.samples.iter().map(|s| s.1).sum();
        self.scratch.clear();
        self.scratch.extend(self.samples.iter().map(|s| s.2));
        self.scratch.sort_by(f64::total_cmp);
        Rates {
            fps: self.samples.len() as f64 / secs,
            megabits_per_sec: bytes as f64 * 8.0 / 1e6 / secs,
            latency_p50_ms: self.scratch[self.scratch.len() / 2],
            latency_max_ms: self.scratch[self.scratch.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_window() {
        let t0 = Instant::now();
        let mut m = FrameMeter::new(Duration::from_secs(1));
        for i in 0..30 {
            m.record(
                t0 + Duration::from_millis(i * 33),
                1_000_000,
                2.0 + i as f64,
            );
        }
        let r = m.rates(t0 + Duration::from_millis(990));
        assert_eq!(r.fps, 30.0);
        assert_eq!(r.megabits_per_sec, 240.0);
        assert_eq!(r.latency_max_ms, 31.0);
        let later = m.rates(t0 + Duration::from_millis(1500));
        assert!(later.fps < 30.0 && later.fps > 0.0);
        assert_eq!(m.rates(t0 + Duration::from_secs(5)), Rates::default());
    }
}
