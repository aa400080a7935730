//! How connections are made: the accept loop (admission before a thread is spent),
//! an accepted connection's TLS and handshake, and the dialers that reconnect with
//! backoff. Each hands an established connection to `link::run_link`.

use std::io::Write as _;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admission::Admitted;
use super::backoff::Backoff;
use super::handshake::{handshake, refuse_in_handshake, Handshaken, Side};
use super::link::{lock, run_link, Transport};
use super::node::{Event, PeerSlot, Shared};
use super::reason::{HandshakeFailure, LinkEnd};
use super::status::PeerState;
use super::NetError;
use crate::protocol::{encode, GoodbyeCode, Message};

pub(super) fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    for conn in listener.incoming() {
        if shared.is_shutting_down() {
            break;
        }
        match conn {
            Ok(stream) => {
                // Over a limit: close at once, before a thread or a byte is spent on it.
                // Counted here, before the thread starts, so that a burst of connections
                // cannot all pass the check before any of them is counted.
                let peer = stream.peer_addr().ok();
                let admitted = match Admitted::ask(&shared.admission, peer.map(|a| a.ip())) {
                    Ok(admitted) => admitted,
                    Err(why) => {
                        let n = shared.counters.connections_refused.fetch_add(1, Relaxed);
                        if n.is_power_of_two() {
                            let addr = peer.map_or_else(|| "?".into(), |a| a.to_string());
                            tracing::warn!(
                                "refused a connection: {why}; {} so far, latest from {addr}",
                                n + 1
                            );
                        }
                        continue;
                    }
                };
                let s = shared.clone();
                let addr = peer.map_or_else(|| "?".to_owned(), |a| a.to_string());
                shared.spawn(format!("texstream peer {addr}"), move || {
                    // The ticket lives as long as the connection.
                    accepted(&s, stream, admitted);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: log, breathe, carry on.
                tracing::warn!("accepting a connection failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A connection before its texstream handshake: the socket, or a TLS session over it.
enum Secured {
    Plain(TcpStream),
    Tls(Box<super::tls::TlsSession>),
}

impl Secured {
    fn handshake(&mut self, shared: &Shared, side: Side) -> Result<Handshaken, NetError> {
        let config = &shared.config;
        let (hello, token, limits) = (shared.hello(), config.token.as_ref(), &config.limits);
        let timeout = config.handshake_timeout;
        match self {
            Secured::Plain(s) => handshake(s, &hello, side, token, limits, timeout),
            Secured::Tls(s) => handshake(&mut **s, &hello, side, token, limits, timeout),
        }
    }

    fn refuse(&mut self, shared: &Shared, goodbye: &Message) -> Result<(), NetError> {
        let config = &shared.config;
        match self {
            Secured::Plain(s) => {
                refuse_in_handshake(s, goodbye, &config.limits, config.handshake_timeout)
            }
            Secured::Tls(s) => {
                refuse_in_handshake(&mut **s, goodbye, &config.limits, config.handshake_timeout)
            }
        }
    }

    fn into_transport(self) -> Result<Transport, NetError> {
        match self {
            Secured::Plain(s) => Transport::plain(s),
            Secured::Tls(s) => Transport::tls(*s),
        }
    }
}

/// Serves a connection the accept loop took; `admitted` holds its places (in the
/// handshake until that is over, open until it closes).
fn accepted(shared: &Arc<Shared>, stream: TcpStream, mut admitted: Admitted) {
    let Ok(addr) = stream.peer_addr() else {
        return;
    };
    let span = tracing::info_span!("peer", %addr);
    let _g = span.enter();
    let config = &shared.config;
    let mut conn = match &config.tls {
        None => Secured::Plain(stream),
        Some(tls) => match tls.accept(stream, config.handshake_timeout) {
            Ok(session) => Secured::Tls(Box::new(session)),
            Err(e) => {
                if !shared.is_shutting_down() {
                    shared.handshake_failed(addr, &e);
                }
                return;
            }
        },
    };
    let refusal = if let Some(wait) = shared.auth_penalty(addr.ip()) {
        Some((
            GoodbyeCode::AuthFailed,
            format!(
                "too many failed authentications from {}: try again in {} s",
                addr.ip(),
                wait.as_secs().max(1)
            ),
        ))
    } else if shared.accepted_full() {
        // Say so in the handshake: the dialer sees a failed handshake and backs off,
        // instead of reconnecting at once after a short-lived link.
        let max = config.max_peers.unwrap_or_default();
        Some((
            GoodbyeCode::Full,
            format!("this node is full: it serves at most {max} peers"),
        ))
    } else {
        None
    };
    if let Some((code, reason)) = refusal {
        let bye = Message::Goodbye {
            code,
            reason: reason.clone(),
        };
        if conn.refuse(shared, &bye).is_ok() {
            shared.report_handshake_failure(addr, HandshakeFailure::RefusedHere { code, reason });
        }
        return;
    }
    let result = conn.handshake(shared, Side::Acceptor);
    admitted.handshake_over();
    let handshaken = match result {
        Ok(h) => {
            shared.auth_succeeded(addr.ip());
            h
        }
        Err(e) => {
            if matches!(e, NetError::AuthFailed(_)) {
                shared.auth_failed(addr.ip());
            }
            if !shared.is_shutting_down() {
                shared.handshake_failed(addr, &e);
            }
            return;
        }
    };
    let transport = match conn.into_transport() {
        Ok(t) => t,
        Err(e) => {
            shared.handshake_failed(addr, &e);
            return;
        }
    };
    let Some(slot) = shared.new_accepted_slot(addr) else {
        let max = config.max_peers.unwrap_or_default();
        let reason = format!("this node is full: it serves at most {max} peers");
        let mut bye = Vec::new();
        encode(
            &Message::Goodbye {
                code: GoodbyeCode::Full,
                reason: reason.clone(),
            },
            &mut bye,
        );
        let mut writer = transport.writer;
        let _ = writer.write_all(&bye);
        let _ = writer.flush();
        let _ = transport.socket.shutdown(Shutdown::Both);
        shared.report_handshake_failure(
            addr,
            HandshakeFailure::RefusedHere {
                code: GoodbyeCode::Full,
                reason,
            },
        );
        return;
    };
    let reason = run_link(shared, &slot, transport, handshaken);
    log_disconnect(shared, &slot, addr, reason);
    slot.set_state(PeerState::Closed);
    shared.remove_slot(slot.id);
}

fn log_disconnect(shared: &Shared, slot: &PeerSlot, addr: SocketAddr, reason: LinkEnd) {
    shared.source_gone(slot.id);
    // Reported to the application, which chooses how loudly to say it (and limits
    // how often): the library logs it at debug.
    tracing::debug!("peer {} disconnected: {reason}, from {addr}", slot.id);
    lock(&slot.info).last_error = Some(reason.to_string());
    shared.emit(Event::PeerDisconnected {
        peer: slot.id,
        addr: Some(addr),
        reason,
    });
}

pub(super) fn dial_loop(shared: &Arc<Shared>, slot: &Arc<PeerSlot>) {
    let config = &shared.config;
    let span = tracing::info_span!("dial", target = %slot.target);
    let _g = span.enter();
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut connected_before = false;
    // A source by name that is not heard is said once (and again after it was found),
    // not at every retry.
    let mut said_missing = false;
    let ended = || shared.is_shutting_down() || slot.hung_up.load(Relaxed);
    while !ended() {
        slot.set_state(PeerState::Connecting);
        match dial(shared, &slot.target) {
            // Hung up while dialing: the connection just made ends at once.
            Ok((stream, _, _)) if slot.hung_up.load(Relaxed) => {
                let _ = stream.socket.shutdown(Shutdown::Both);
            }
            Ok((stream, hello, addr)) => {
                said_missing = false;
                backoff.reset();
                if connected_before {
                    slot.counters.reconnects.fetch_add(1, Relaxed);
                    shared.counters.reconnects.fetch_add(1, Relaxed);
                }
                connected_before = true;
                let reason = run_link(shared, slot, stream, hello);
                log_disconnect(shared, slot, addr, reason);
            }
            Err(e @ NetError::SourceNotFound(_)) if !said_missing => {
                said_missing = true;
                tracing::info!("{e}; still looking");
                lock(&slot.info).last_error = Some(e.to_string());
            }
            Err(e) => {
                tracing::debug!("dial failed: {e}");
                lock(&slot.info).last_error = Some(e.to_string());
            }
        }
        if ended() {
            break;
        }
        let delay = backoff.next_delay();
        slot.set_state(PeerState::Reconnecting {
            retry_at: Instant::now() + delay,
        });
        // Woken early by shutdown (the sender dropped) or by a hang-up.
        let woken = flume::Selector::new()
            .recv(&shared.wake_rx, |r| r.is_err())
            .recv(&slot.stop_rx, |_| true)
            .wait_timeout(delay);
        if woken == Ok(true) {
            break;
        }
    }
    slot.set_state(PeerState::Closed);
}

fn dial(shared: &Shared, target: &str) -> Result<(Transport, Handshaken, SocketAddr), NetError> {
    let config = &shared.config;
    // A source dialed by name is looked up afresh each time: it may have moved. Its
    // TLS identity (the known-hosts entry) is the address found.
    let (addr, target) = match target.strip_prefix(super::discovery::BY_NAME) {
        Some(name) => {
            let addr = shared.directory()?.lookup(name)?;
            (addr, addr.to_string())
        }
        None => {
            let addr = target
                .to_socket_addrs()
                .map_err(|e| NetError::io("resolving the address", e))?
                .next()
                .ok_or_else(|| NetError::Resolve(target.to_owned()))?;
            (addr, target.to_owned())
        }
    };
    let target = target.as_str();
    let stream = TcpStream::connect_timeout(&addr, config.connect_timeout)
        .map_err(|e| NetError::io("connecting", e))?;
    let result = (|| {
        let mut conn = match &config.tls {
            None => Secured::Plain(stream),
            Some(tls) => Secured::Tls(Box::new(tls.connect(
                stream,
                target,
                config.handshake_timeout,
            )?)),
        };
        let handshaken = conn.handshake(shared, Side::Dialer)?;
        Ok((conn.into_transport()?, handshaken, addr))
    })();
    if let Err(e) = &result {
        shared.handshake_failed(addr, e);
    }
    result
}
