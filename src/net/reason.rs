//! Why a link ended, as a type: the node reports it in [`super::Event::PeerDisconnected`],
//! and the log level comes from a `match` on it, never from its text.

use std::time::Duration;

use crate::protocol::{GoodbyeCode, ProtocolError};

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
                write!(f, "peer said goodbye ({code:?}): {}", reason.escape_debug())
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
}
