//! A rolling meter of received frames: frames per second, throughput and end-to-end
//! latency over the last second or so, and the medians of each frame's stages. Pure:
//! the caller passes `now`.

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

impl<const N: usize> Default for StageMeter<N> {
    /// Over the last second, as the windows show it.
    fn default() -> StageMeter<N> {
        StageMeter::new(Duration::from_secs(1))
    }
}

/// Medians of `N` timed stages of each frame over the last `window` (the viewer's
/// "Stages" readout). A frame may lack a stage (`None`): each median is over the frames
/// that have it. Bounded like [`FrameMeter`]. Pure: the caller passes `now`.
pub struct StageMeter<const N: usize> {
    window: Duration,
    samples: VecDeque<(Instant, [Option<f64>; N])>,
    scratch: Vec<f64>,
}

impl<const N: usize> StageMeter<N> {
    pub fn new(window: Duration) -> StageMeter<N> {
        StageMeter {
            window,
            samples: VecDeque::with_capacity(256),
            scratch: Vec::with_capacity(256),
        }
    }

    /// A frame's stage times, in milliseconds, recorded at `now`.
    pub fn record(&mut self, now: Instant, stages_ms: [Option<f64>; N]) {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, stages_ms));
    }

    /// Each stage's median over the window; `None` for a stage no frame in it has.
    pub fn medians(&mut self, now: Instant) -> [Option<f64>; N] {
        self.quantiles(now, [0.5]).map(|[median]| median)
    }

    /// Each stage's quantiles `qs` (0.5: the median, 0.99: p99) over the window, by
    /// the nearest rank, from one sort per stage; `None` for a stage no frame in it has.
    pub fn quantiles<const Q: usize>(
        &mut self,
        now: Instant,
        qs: [f64; Q],
    ) -> [[Option<f64>; Q]; N] {
        while let Some((t, _)) = self.samples.front() {
            if now.saturating_duration_since(*t) > self.window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        std::array::from_fn(|i| {
            self.scratch.clear();
            self.scratch
                .extend(self.samples.iter().filter_map(|(_, s)| s[i]));
            self.scratch.sort_by(f64::total_cmp);
            qs.map(|q| {
                let rank = ((self.scratch.len() as f64 * q.clamp(0.0, 1.0)) as usize)
                    .min(self.scratch.len().saturating_sub(1));
                self.scratch.get(rank).copied()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_medians_cover_the_window_and_skip_missing_stages() {
        let t0 = Instant::now();
        let mut m = StageMeter::<2>::new(Duration::from_secs(1));
        assert_eq!(m.medians(t0), [None, None]);
        for i in 0..5u32 {
            let missing = (i % 2 == 0).then_some(10.0);
            m.record(
                t0 + Duration::from_millis(u64::from(i) * 100),
                [Some(f64::from(i)), missing],
            );
        }
        assert_eq!(
            m.medians(t0 + Duration::from_millis(500)),
            [Some(2.0), Some(10.0)]
        );
        // The first two frames (0 and 100 ms) have left the window.
        assert_eq!(
            m.medians(t0 + Duration::from_millis(1150)),
            [Some(3.0), Some(10.0)]
        );
        assert_eq!(m.medians(t0 + Duration::from_secs(5)), [None, None]);
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let t0 = Instant::now();
        let mut m = StageMeter::<1>::new(Duration::from_secs(10));
        for i in 1..=100u32 {
            m.record(t0, [Some(f64::from(i))]);
        }
        assert_eq!(
            m.quantiles(t0, [0.5, 0.99, 0.0, 1.0]),
            [[Some(51.0), Some(100.0), Some(1.0), Some(100.0)]]
        );
    }

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
