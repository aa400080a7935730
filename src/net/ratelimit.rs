//! Warnings that peers can cause, rate-limited: a flood of bad handshakes or broken
//! connections must not become a flood of log lines (nor fill a disk). Pure code over a
//! `now` passed in, like [`super::Backoff`]: the node keeps one [`WarnLimiter`] per kind
//! of warning and asks it before each line.

use std::time::{Duration, Instant};

/// At most `burst` lines per `window`; what is held back is counted and said in one
/// line when the window ends.
#[derive(Debug)]
pub struct WarnLimiter {
    window: Duration,
    burst: u32,
    /// Start of the current window, if any line was asked for yet.
    since: Option<Instant>,
    said: u32,
    held_back: u64,
}

/// What to do with one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it. `held_back` lines like it were suppressed in the window before: say so.
    Log { held_back: u64 },
    /// Do not log it (it is counted).
    Suppress,
}

impl WarnLimiter {
    /// Five lines per ten seconds: enough to see what is going on, few enough that an
    /// attacker's flood costs a line every two seconds.
    pub const DEFAULT_BURST: u32 = 5;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

    pub fn new(burst: u32, window: Duration) -> WarnLimiter {
        WarnLimiter {
            window,
            burst: burst.max(1),
            since: None,
            said: 0,
            held_back: 0,
        }
    }

    /// Whether a warning at `now` is logged.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let mut held_back = 0;
        match self.since {
            Some(since) if now.saturating_duration_since(since) < self.window => {}
            _ => {
                // A new window: say what the last one held back with its first line.
                held_back = std::mem::take(&mut self.held_back);
                self.since = Some(now);
                self.said = 0;
            }
        }
        if self.said < self.burst {
            self.said += 1;
            Verdict::Log { held_back }
        } else {
            self.held_back += 1;
            Verdict::Suppress
        }
    }

    /// Lines held back in the current window so far.
    pub fn held_back(&self) -> u64 {
        self.held_back
    }
}

impl Default for WarnLimiter {
    fn default() -> WarnLimiter {
        WarnLimiter::new(Self::DEFAULT_BURST, Self::DEFAULT_WINDOW)
    }
}

/// ", 12 more like it held back" or nothing: the tail of a rate-limited line.
pub fn held_back_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more like it in the last window were not logged)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_a_burst_per_window_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut limit = WarnLimiter::new(3, Duration::from_secs(10));
        let mut logged = 0;
        // 10,000 warnings within one second.
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            if let Verdict::Log { held_back } = limit.check(now) {
                assert_eq!(
                    held_back, 0,
                    "nothing was held back before the first window"
                );
                logged += 1;
            }
        }
        assert_eq!(logged, 3);
        assert_eq!(limit.held_back(), 9_997);
        // The next window's first line tells of the ones held back, once.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(limit.check(later), Verdict::Log { held_back: 9_997 });
        assert_eq!(limit.check(later), Verdict::Log { held_back: 0 });
        assert_eq!(limit.check(later), Verdict::Log { held_back: 0 });
        assert_eq!(limit.check(later), Verdict::Suppress);
    }

    #[test]
    fn warnings_spread_out_are_all_logged() {
        let t0 = Instant::now();
        let mut limit = WarnLimiter::default();
        for i in 0..100u64 {
            let now = t0 + Duration::from_secs(3 * i);
            assert_eq!(limit.check(now), Verdict::Log { held_back: 0 });
        }
        assert!(held_back_note(0).is_empty());
        assert!(held_back_note(7).contains("7 more"));
    }
}
