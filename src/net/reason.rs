//! Why a link ended, or why a connection never became one, as types: the node reports
//! them in [`super::Event::PeerDisconnected`] and [`super::Event::HandshakeFailed`], and
//! the log level comes from a `match` on them, never from their text.

use std::time::Duration;

use crate::protocol::{Escaped, GoodbyeCode, ProtocolError};

/// Why a connection that was established ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// The peer said goodbye, with its code and (peer-chosen) reason.
    PeerGoodbye { code: GoodbyeCode, reason: String },
    /// The peer closed the connection between two messages, without a goodbye.
    PeerClosed,
    /// This side ended it and said why in its goodbye (shutdown, the operator).
    ClosedHere { code: GoodbyeCode, reason: String },
    /// Nothing arrived from the peer for this long.
    KeepaliveTimeout(Duration),
    /// A write to the peer made no progress for this long: it stopped reading.
    PeerStalled(Duration),
    /// The peer's bytes broke the protocol; the goodbye told it so.
    Protocol(ProtocolError),
    /// The connection failed under us (reset, unreachable): what was being done.
    Io {
        context: &'static str,
        kind: std::io::ErrorKind,
        message: String,
    },
}

/// How loudly an event deserves to be logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The normal life of a connection.
    Info,
    /// Something went wrong with the peer or the network.
    Warn,
}

impl LinkEnd {
    /// An end both sides meant: a goodbye (other than a protocol error or a timeout),
    /// a clean close, or our own close.
    pub fn is_orderly(&self) -> bool {
        match self {
            LinkEnd::PeerGoodbye { code, .. } => !matches!(
                code,
                GoodbyeCode::ProtocolError | GoodbyeCode::Timeout | GoodbyeCode::AuthFailed
            ),
            LinkEnd::PeerClosed | LinkEnd::ClosedHere { .. } => true,
            LinkEnd::KeepaliveTimeout(_)
            | LinkEnd::PeerStalled(_)
            | LinkEnd::Protocol(_)
            | LinkEnd::Io { .. } => false,
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            LinkEnd::PeerGoodbye { code, .. } => match code {
                GoodbyeCode::ProtocolError | GoodbyeCode::Timeout | GoodbyeCode::AuthFailed => {
                    Severity::Warn
                }
                GoodbyeCode::Normal | GoodbyeCode::Kicked | GoodbyeCode::Full => Severity::Info,
                GoodbyeCode::Other => Severity::Info,
            },
            LinkEnd::PeerClosed | LinkEnd::ClosedHere { .. } => Severity::Info,
            LinkEnd::KeepaliveTimeout(_) | LinkEnd::PeerStalled(_) | LinkEnd::Protocol(_) => {
                Severity::Warn
            }
            LinkEnd::Io { .. } => Severity::Info,
        }
    }

    pub(crate) fn io(context: &'static str, e: &std::io::Error) -> LinkEnd {
        LinkEnd::Io {
            context,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkEnd::PeerGoodbye { code, reason } if reason.is_empty() => {
                write!(f, "peer said goodbye ({code:?})")
            }
            LinkEnd::PeerGoodbye { code, reason } => {
                // Peer-chosen text: escaped, so it cannot forge log lines or steer a
                // terminal.
                write!(f, "peer said goodbye ({code:?}): {}", Escaped(reason))
            }
            LinkEnd::PeerClosed => write!(f, "connection closed by the peer"),
            LinkEnd::ClosedHere { reason, .. } if reason.is_empty() => {
                write!(f, "closed by this side")
            }
            LinkEnd::ClosedHere { reason, .. } => write!(f, "closed by this side: {reason}"),
            LinkEnd::KeepaliveTimeout(d) => write!(
                f,
                "no traffic from the peer for {:.1} s (keepalive timeout)",
                d.as_secs_f64()
            ),
            LinkEnd::PeerStalled(d) => write!(
                f,
                "peer stopped reading: a write made no progress for {:.1} s",
                d.as_secs_f64()
            ),
            LinkEnd::Protocol(e) => write!(f, "protocol error: {e}"),
            LinkEnd::Io {
                context, message, ..
            } => write!(f, "{context}: {message}"),
        }
    }
}

/// Why a connection never became a link: refused before or in its handshake, or a
/// handshake that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// This node turned the connection away (a limit, an address's penalty, full);
    /// the goodbye it sent carries `code` and `reason`.
    RefusedHere { code: GoodbyeCode, reason: String },
    /// The peer turned us away with a goodbye (full, wrong token, …).
    RefusedByPeer { code: GoodbyeCode, reason: String },
    /// The handshake did not finish in time.
    Timeout(Duration),
    /// The connection closed before the handshake finished; what was expected there.
    Closed(&'static str),
    /// The token did not check out (ours, or the peer's).
    AuthFailed(String),
    /// The TLS session could not be set up (or the certificate changed).
    Tls(String),
    /// The peer's bytes broke the protocol.
    Protocol(ProtocolError),
    /// The connection failed under us: what was being done.
    Io {
        context: &'static str,
        kind: std::io::ErrorKind,
        message: String,
    },
}

impl HandshakeFailure {
    /// Every handshake failure deserves a warning: it points at a peer or a network
    /// that went wrong (any host that reaches the port can cause one), or tells the
    /// user that the node they dialed turned them away (full, wrong token); only a
    /// connection that failed under us (reset, unreachable) is the network's normal
    /// life, retried by the dialer.
    pub fn severity(&self) -> Severity {
        match self {
            HandshakeFailure::RefusedByPeer { .. }
            | HandshakeFailure::RefusedHere { .. }
            | HandshakeFailure::Timeout(_)
            | HandshakeFailure::Closed(_)
            | HandshakeFailure::AuthFailed(_)
            | HandshakeFailure::Tls(_)
            | HandshakeFailure::Protocol(_) => Severity::Warn,
            HandshakeFailure::Io { .. } => Severity::Info,
        }
    }
}

impl From<&super::NetError> for HandshakeFailure {
    fn from(e: &super::NetError) -> HandshakeFailure {
        use super::NetError;
        match e {
            NetError::Io { context, source } => HandshakeFailure::Io {
                context,
                kind: source.kind(),
                message: source.to_string(),
            },
            NetError::Protocol(p) => HandshakeFailure::Protocol(p.clone()),
            NetError::HandshakeTimeout(d) => HandshakeFailure::Timeout(*d),
            NetError::ClosedInHandshake(what) => HandshakeFailure::Closed(what),
            NetError::Goodbye { code, reason } => HandshakeFailure::RefusedByPeer {
                code: *code,
                reason: reason.clone(),
            },
            NetError::AuthFailed(r) => HandshakeFailure::AuthFailed(r.clone()),
            NetError::Tls(r) => HandshakeFailure::Tls(r.clone()),
            // Not made by a handshake; kept whole if one ever is.
            NetError::KeepaliveTimeout(d) => HandshakeFailure::Timeout(*d),
            other @ (NetError::PeerStalled(_)
            | NetError::Listen { .. }
            | NetError::Resolve(_)
            | NetError::SourceNotFound(_)
            | NetError::Discovery(_)
            | NetError::Refused(_)) => HandshakeFailure::Io {
                context: "handshake",
                kind: std::io::ErrorKind::Other,
                message: other.to_string(),
            },
        }
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::RefusedHere { reason, .. } => write!(f, "refused: {reason}"),
            HandshakeFailure::RefusedByPeer { code, reason } => {
                // Peer-chosen text: escaped.
                write!(f, "peer said goodbye ({code:?}): {}", Escaped(reason))
            }
            HandshakeFailure::Timeout(d) => {
                write!(f, "handshake not finished within {:.1} s", d.as_secs_f64())
            }
            HandshakeFailure::Closed(what) => write!(
                f,
                "connection closed during the handshake (is the peer a texstream {what}?)"
            ),
            HandshakeFailure::AuthFailed(r) => write!(f, "authentication failed: {r}"),
            HandshakeFailure::Tls(r) => write!(f, "{r}"),
            HandshakeFailure::Protocol(e) => write!(f, "protocol error: {e}"),
            HandshakeFailure::Io {
                context, message, ..
            } => write!(f, "{context}: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_and_orderliness_come_from_the_kind_not_the_text() {
        let goodbye = |code, reason: &str| LinkEnd::PeerGoodbye {
            code,
            reason: reason.to_owned(),
        };
        // A peer-chosen reason that mentions a keepalive changes nothing.
        let sneaky = goodbye(
            GoodbyeCode::Normal,
            "keepalive protocol error stopped reading",
        );
        assert_eq!(sneaky.severity(), Severity::Info);
        assert!(sneaky.is_orderly());
        assert_eq!(
            LinkEnd::KeepaliveTimeout(Duration::from_secs(10)).severity(),
            Severity::Warn
        );
        assert!(!LinkEnd::Protocol(ProtocolError::UnknownKind(9)).is_orderly());
        assert!(!goodbye(GoodbyeCode::ProtocolError, "").is_orderly());
        assert!(LinkEnd::PeerClosed.is_orderly());
    }

    #[test]
    fn a_handshake_failure_keeps_its_kind_and_says_what_the_error_said() {
        use super::super::NetError;
        let timeout = NetError::HandshakeTimeout(Duration::from_secs(5));
        let failure = HandshakeFailure::from(&timeout);
        assert_eq!(failure, HandshakeFailure::Timeout(Duration::from_secs(5)));
        assert_eq!(failure.to_string(), timeout.to_string());
        assert_eq!(failure.severity(), Severity::Warn);
        let full = NetError::Goodbye {
            code: GoodbyeCode::Full,
            reason: "this node is full".into(),
        };
        assert_eq!(HandshakeFailure::from(&full).severity(), Severity::Warn);
        let reset = NetError::io(
            "reading the hello",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        );
        assert_eq!(HandshakeFailure::from(&reset).severity(), Severity::Info);
        let auth = NetError::AuthFailed("the peer sent no token".into());
        assert_eq!(auth.to_string(), HandshakeFailure::from(&auth).to_string());
        let closed = NetError::ClosedInHandshake("sender");
        assert_eq!(
            closed.to_string(),
            HandshakeFailure::from(&closed).to_string()
        );
    }
}
