//! Reconnect backoff: a pure state machine (no clock, no sleeping) so tests need no sleeps.

use std::time::Duration;

/// Exponential backoff between reconnect attempts: `initial`, doubling up to `max`,
/// back to `initial` after a successful connection.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    last: Option<Duration>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            last: None,
        }
    }

    /// The wait before the next attempt; each call doubles it, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let next = match self.last {
            None => self.initial,
            Some(last) => (last * 2).min(self.max),
        };
        self.last = Some(next);
        next
    }

    /// A connection succeeded: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let seen: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(
            seen,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
    }
}
