//! Admission: whether an accepted connection may go on, as a pure state machine over a
//! `now` passed in (like [`super::Backoff`]): the limits on connections open and in
//! their handshake (in all and per address), and the penalty an address earns by
//! failing to authenticate. The accept loop asks it before a thread or a byte is spent
//! on a connection; an [`Admitted`] ticket gives its places back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::link::lock;

/// The limits admission enforces (from `NodeConfig`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdmissionLimits {
    pub max_connections: usize,
    pub max_handshaking: usize,
    pub max_handshaking_per_address: usize,
    pub max_connections_per_address: usize,
}

/// Why a connection is turned away as it is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Connections {
        open: usize,
        max: usize,
    },
    Handshakes {
        handshaking: usize,
        max: usize,
    },
    Address {
        ip: IpAddr,
        handshaking: usize,
        max: usize,
    },
    AddressConnections {
        ip: IpAddr,
        open: usize,
        max: usize,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Connections { open, max } => {
                write!(f, "{open} connections are open (at most {max}, --max-connections)")
            }
            Refusal::Handshakes { handshaking, max } => write!(
                f,
                "{handshaking} connections are in their handshake (at most {max}, --max-handshaking)"
            ),
            Refusal::Address {
                ip,
                handshaking,
                max,
            } => write!(
                f,
                "{handshaking} connections from {ip} are in their handshake (at most {max}, \
                 --max-handshaking-per-address)"
            ),
            Refusal::AddressConnections { ip, open, max } => write!(
                f,
                "{open} connections from {ip} are open (at most {max}, \
                 --max-connections-per-address)"
            ),
        }
    }
}

/// An address's failed authentications in a row.
#[derive(Debug)]
struct AuthFailures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Failures older than this are forgotten: the count starts over.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses kept before the forgotten ones are swept out.
const SWEEP_ABOVE: usize = 4096;

/// The counts and penalties; pure: every input carries its `now`.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: AdmissionLimits,
    open: usize,
    handshaking: usize,
    /// Connections in their handshake, per address.
    by_address: HashMap<IpAddr, usize>,
    /// Connections open (handshakes included), per address.
    open_by_address: HashMap<IpAddr, usize>,
    auth: HashMap<IpAddr, AuthFailures>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        Admission {
            limits,
            open: 0,
            handshaking: 0,
            by_address: HashMap::new(),
            open_by_address: HashMap::new(),
            auth: HashMap::new(),
        }
    }

    /// Counts a new connection from `ip` (open, and in its handshake), unless a limit
    /// says no. `ip` is `None` for a connection whose address is already gone.
    pub fn admit(&mut self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        let max = self.limits.max_connections;
        if self.open >= max {
            return Err(Refusal::Connections {
                open: self.open,
                max,
            });
        }
        let max = self.limits.max_handshaking;
        if self.handshaking >= max {
            return Err(Refusal::Handshakes {
                handshaking: self.handshaking,
                max,
            });
        }
        if let Some(ip) = ip {
            let open = self.open_by_address.get(&ip).copied().unwrap_or(0);
            let max = self.limits.max_connections_per_address;
            if open >= max {
                return Err(Refusal::AddressConnections { ip, open, max });
            }
            let n = self.by_address.get(&ip).copied().unwrap_or(0);
            let max = self.limits.max_handshaking_per_address;
            if n >= max {
                return Err(Refusal::Address {
                    ip,
                    handshaking: n,
                    max,
                });
            }
            self.by_address.insert(ip, n + 1);
            self.open_by_address.insert(ip, open + 1);
        }
        self.open += 1;
        self.handshaking += 1;
        Ok(())
    }

    /// A connection admitted from `ip` ended its handshake (either way).
    pub fn handshake_over(&mut self, ip: Option<IpAddr>) {
        self.handshaking = self.handshaking.saturating_sub(1);
        if let Some(ip) = ip {
            count_down(&mut self.by_address, ip);
        }
    }

    /// A connection admitted earlier from `ip` closed.
    pub fn closed(&mut self, ip: Option<IpAddr>) {
        self.open = self.open.saturating_sub(1);
        if let Some(ip) = ip {
            count_down(&mut self.open_by_address, ip);
        }
    }

    /// Connections open, and those of them in their handshake.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.open, self.handshaking)
    }

    /// How long `ip` must still wait after failing to authenticate too often.
    pub fn penalty(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.auth.get(&ip)?.blocked_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// `ip` failed to authenticate at `now`; returns its failures in a row.
    pub fn auth_failed(&mut self, ip: IpAddr, now: Instant) -> u32 {
        if self.auth.len() > SWEEP_ABOVE {
            self.auth
                .retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        }
        let f = self.auth.entry(ip).or_insert(AuthFailures {
            count: 0,
            last: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(f.last) > FORGET_AFTER {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        f.blocked_until = auth_block(f.count).map(|d| now + d);
        f.count
    }

    /// `ip` authenticated: its failures are forgotten.
    pub fn auth_succeeded(&mut self, ip: IpAddr) {
        self.auth.remove(&ip);
    }
}

/// One less for `ip`; an address at zero is forgotten (the maps hold only addresses
/// with connections).
fn count_down(counts: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = counts.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&ip);
        }
    }
}

/// How long an address waits after `failures` failed authentications in a row: not at
/// all for the first three, then 1 s, doubling up to a minute.
fn auth_block(failures: u32) -> Option<Duration> {
    (failures >= 3)
        .then(|| Duration::from_secs(1 << (failures - 3).min(6)).min(Duration::from_secs(60)))
}

/// An admitted connection's places: in its handshake until [`Admitted::handshake_over`],
/// open until dropped.
pub(crate) struct Admitted {
    admission: Arc<Mutex<Admission>>,
    ip: Option<IpAddr>,
    in_handshake: bool,
}

impl Admitted {
    /// Asks `admission` for a place for a connection from `ip`.
    pub fn ask(admission: &Arc<Mutex<Admission>>, ip: Option<IpAddr>) -> Result<Admitted, Refusal> {
        lock(admission).admit(ip)?;
        Ok(Admitted {
            admission: admission.clone(),
            ip,
            in_handshake: true,
        })
    }

    /// The handshake is over (either way): its places are free for others.
    pub fn handshake_over(&mut self) {
        if std::mem::take(&mut self.in_handshake) {
            lock(&self.admission).handshake_over(self.ip);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut admission = lock(&self.admission);
        if self.in_handshake {
            admission.handshake_over(self.ip);
        }
        admission.closed(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: usize, handshaking: usize, per_address: usize) -> AdmissionLimits {
        AdmissionLimits {
            max_connections: connections,
            max_handshaking: handshaking,
            max_handshaking_per_address: per_address,
            max_connections_per_address: connections,
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn each_limit_refuses_at_its_edge_and_frees_its_place() {
        let mut a = Admission::new(limits(4, 3, 2));
        assert_eq!(a.admit(ip(1)), Ok(()));
        assert_eq!(a.admit(ip(1)), Ok(()));
        // A third from the same address, though the node has room.
        assert!(matches!(
            a.admit(ip(1)),
            Err(Refusal::Address {
                handshaking: 2,
                max: 2,
                ..
            })
        ));
        assert_eq!(a.admit(ip(2)), Ok(()));
        // Three in their handshake: a fourth address waits.
        assert_eq!(
            a.admit(ip(3)),
            Err(Refusal::Handshakes {
                handshaking: 3,
                max: 3
            })
        );
        a.handshake_over(ip(1));
        assert_eq!(a.admit(ip(3)), Ok(()));
        a.handshake_over(ip(1));
        a.handshake_over(ip(2));
        a.handshake_over(ip(3));
        assert_eq!(a.counts(), (4, 0));
        // Four open: the fifth is refused whatever its address.
        assert_eq!(
            a.admit(ip(9)),
            Err(Refusal::Connections { open: 4, max: 4 })
        );
        a.closed(ip(1));
        assert_eq!(a.admit(ip(9)), Ok(()));
        assert!(Refusal::Connections { open: 4, max: 4 }
            .to_string()
            .contains("--max-connections"));
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_the_connections() {
        let mut a = Admission::new(AdmissionLimits {
            max_connections_per_address: 3,
            ..limits(10, 10, 10)
        });
        for _ in 0..3 {
            assert_eq!(a.admit(ip(1)), Ok(()));
            a.handshake_over(ip(1));
        }
        // Past their handshakes, still open: the address has its share.
        assert_eq!(
            a.admit(ip(1)),
            Err(Refusal::AddressConnections {
                ip: IpAddr::from([10, 0, 0, 1]),
                open: 3,
                max: 3
            })
        );
        assert_eq!(
            a.admit(ip(2)),
            Ok(()),
            "a newcomer from elsewhere is let in"
        );
        a.closed(ip(1));
        assert_eq!(a.admit(ip(1)), Ok(()), "a closed one frees its place");
        assert_eq!(a.counts(), (4, 2));
        assert!(a.open_by_address.len() == 2 && a.by_address.len() == 2);
        for n in [1, 1, 1, 2] {
            a.closed(ip(n));
        }
        a.handshake_over(ip(1));
        a.handshake_over(ip(2));
        assert!(a.open_by_address.is_empty() && a.by_address.is_empty());
    }

    #[test]
    fn failed_authentications_earn_a_growing_penalty_that_expires() {
        let t0 = Instant::now();
        let addr = IpAddr::from([192, 0, 2, 7]);
        let mut a = Admission::new(limits(10, 10, 10));
        assert_eq!(a.auth_failed(addr, t0), 1);
        assert_eq!(a.auth_failed(addr, t0), 2);
        assert_eq!(a.penalty(addr, t0), None, "three tries are free");
        let mut at = t0;
        for (n, wait) in [
            (3, 1),
            (4, 2),
            (5, 4),
            (6, 8),
            (7, 16),
            (8, 32),
            (9, 60),
            (10, 60),
        ] {
            assert_eq!(a.auth_failed(addr, at), n);
            assert_eq!(
                a.penalty(addr, at),
                Some(Duration::from_secs(wait)),
                "after {n}"
            );
            at += Duration::from_secs(wait);
            assert_eq!(a.penalty(addr, at), None, "over after {wait} s");
        }
        // Another address is not affected.
        assert_eq!(a.penalty(IpAddr::from([192, 0, 2, 8]), at), None);
        // A success forgets; so does a long quiet.
        a.auth_succeeded(addr);
        assert_eq!(a.auth_failed(addr, at), 1);
        assert_eq!(a.auth_failed(addr, at), 2);
        let later = at + FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(
            a.auth_failed(addr, later),
            1,
            "forgotten after ten quiet minutes"
        );
    }

    #[test]
    fn a_ticket_gives_its_places_back() {
        let admission = Arc::new(Mutex::new(Admission::new(limits(1, 1, 1))));
        let mut ticket = Admitted::ask(&admission, ip(1)).expect("room");
        assert!(Admitted::ask(&admission, ip(2)).is_err(), "one at a time");
        ticket.handshake_over();
        ticket.handshake_over();
        assert_eq!(lock(&admission).counts(), (1, 0));
        drop(ticket);
        assert_eq!(lock(&admission).counts(), (0, 0));
        assert!(Admitted::ask(&admission, ip(2)).is_ok());
        assert_eq!(
            lock(&admission).counts(),
            (0, 0),
            "a dropped ticket frees both"
        );
    }
}
