//! Keepalive: when to ping and when a silent peer counts as dead. A pure state machine
//! that takes `now`, so its tests need no sleeps.

use std::time::{Duration, Instant};

/// How often to ping, and how long a peer may stay silent before the link is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the link should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Send a ping with this nonce.
    SendPing { nonce: u64 },
    /// Nothing is due before this instant.
    WaitUntil(Instant),
    /// Nothing was received for longer than the timeout.
    Dead { silent_for: Duration },
}

#[derive(Clone, Debug)]
pub struct Keepalive {
    config: KeepaliveConfig,
    last_rx: Instant,
    next_ping: Instant,
    nonce: u64,
}

impl Keepalive {
    pub fn new(config: KeepaliveConfig, now: Instant) -> Keepalive {
        Keepalive {
            config,
            last_rx: now,
            next_ping: now + config.interval,
            nonce: 0,
        }
    }

    /// Something arrived from the peer at `at`.
    pub fn on_receive(&mut self, at: Instant) {
        self.last_rx = self.last_rx.max(at);
    }

    /// The next instant at which [`Keepalive::poll`] has something to do.
    pub fn next_deadline(&self) -> Instant {
        self.next_ping.min(self.last_rx + self.config.timeout)
    }

    pub fn poll(&mut self, now: Instant) -> KeepaliveAction {
        let silent_for = now.saturating_duration_since(self.last_rx);
        if silent_for >= self.config.timeout {
            return KeepaliveAction::Dead { silent_for };
        }
        if now >= self.next_ping {
            self.next_ping = now + self.config.interval;
            self.nonce += 1;
            return KeepaliveAction::SendPing { nonce: self.nonce };
        }
        KeepaliveAction::WaitUntil(self.next_deadline())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_on_interval_and_declares_a_silent_peer_dead() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let cfg = KeepaliveConfig {
            interval: s(1),
            timeout: s(3),
        };
        let mut ka = Keepalive::new(cfg, t0);
        assert_eq!(ka.poll(t0), KeepaliveAction::WaitUntil(t0 + s(1)));
        assert_eq!(ka.poll(t0 + s(1)), KeepaliveAction::SendPing { nonce: 1 });
        assert_eq!(ka.poll(t0 + s(1)), KeepaliveAction::WaitUntil(t0 + s(2)));
        ka.on_receive(t0 + s(2));
        assert_eq!(ka.poll(t0 + s(2)), KeepaliveAction::SendPing { nonce: 2 });
        // Silent since t0+2s: dead at t0+5s, not before.
        assert!(matches!(
            ka.poll(t0 + s(4)),
            KeepaliveAction::SendPing { .. }
        ));
        assert_eq!(
            ka.poll(t0 + s(5)),
            KeepaliveAction::Dead { silent_for: s(3) }
        );
    }

    #[test]
    fn a_late_receive_timestamp_never_moves_time_backwards() {
        let t0 = Instant::now();
        let mut ka = Keepalive::new(KeepaliveConfig::default(), t0 + Duration::from_secs(5));
        ka.on_receive(t0);
        assert!(matches!(
            ka.poll(t0 + Duration::from_secs(14)),
            KeepaliveAction::SendPing { .. }
        ));
    }
}
