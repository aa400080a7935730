//! Reconnect backoff: a pure state machine (no clock, no sleeping) so tests need no sleeps.

use std::time::Duration;

/// Exponential backoff between reconnect attempts: `initial`, doubling up to `max`,
/// back to `initial` after a successful connection. Each delay is drawn between half
/// and all of that step ("equal jitter"), so that viewers which lost the same relay at
/// the same moment do not retry in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    last: Option<Duration>,
    /// xorshift64 state: the jitter needs no quality beyond spreading retries.
    rng: u64,
}

impl Backoff {
    /// A backoff whose jitter is seeded from the process's random hash seed and clock.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(super::now_us());
        Backoff::with_seed(initial, max, h.finish())
    }

    /// The same, with a chosen seed (tests, reproducible runs).
    pub fn with_seed(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            last: None,
            rng: splitmix64(seed) | 1,
        }
    }

    /// The step before jitter: `initial`, doubling on each call, up to the maximum.
    fn next_step(&mut self) -> Duration {
        let next = match self.last {
            None => self.initial,
            Some(last) => (last * 2).min(self.max),
        };
        self.last = Some(next);
        next
    }

    /// The wait before the next attempt: between half and all of the current step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next_step();
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        step / 2 + step.mul_f64(0.5 * fraction)
    }

    /// A connection succeeded: the next failure waits about `initial` again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// Spreads a seed over all 64 bits (neighbouring seeds give unrelated states).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::with_seed(ms(100), ms(1000), 42);
        let steps = [100, 200, 400, 800, 1000, 1000];
        for step in steps {
            let d = b.next_delay();
            assert!(
                d >= ms(step) / 2 && d <= ms(step),
                "{d:?} outside [{}, {step}] ms",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }

    #[test]
    fn backoffs_that_start_together_do_not_retry_together() {
        let ms = Duration::from_millis;
        let delays = |seed| {
            let mut b = Backoff::with_seed(ms(100), ms(2000), seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        // Eight viewers that lost one relay at once: their retries spread out.
        let all: Vec<Vec<Duration>> = (1..=8).map(delays).collect();
        for attempt in 0..8 {
            let mut at: Vec<Duration> = all.iter().map(|d| d[..=attempt].iter().sum()).collect();
            at.sort();
            at.dedup();
            assert_eq!(
                at.len(),
                8,
                "attempt {attempt}: two viewers retried at once"
            );
        }
        assert_eq!(delays(3), delays(3), "a seed gives the same delays");
    }
}
