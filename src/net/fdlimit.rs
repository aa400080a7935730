//! File descriptors: what a node's limits need, against what the process may open
//! (`RLIMIT_NOFILE`). Checked once at start: the soft limit is raised as far as the
//! hard limit allows, or `--max-connections` is lowered, with one warning.

/// Descriptors kept aside for everything but connections: the listener, the log, the
/// binary's own files, a window's display and GPU (64), and the files coming in, at
/// most [`super::ShelfLimits::receiving`] (64 by default) across all peers. Transfers
/// waiting to resume hold none: their partial files are closed.
pub const FDS_RESERVED: u64 = 64 + 64;
/// Descriptors one connection holds: its socket (reader, writer and TLS halves share
/// it), and at most one file its worker is reading.
pub const FDS_PER_CONNECTION: u64 = 2;

/// What the node's limits need.
pub fn fds_needed(max_connections: usize, dial_targets: usize) -> u64 {
    FDS_RESERVED + (max_connections + dial_targets) as u64 * FDS_PER_CONNECTION
}

/// What [`fit`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdPlan {
    /// The soft limit is enough as it is.
    Enough,
    /// Raise the soft limit to this (within the hard limit).
    Raise(u64),
    /// Even the hard limit is too low: serve at most this many connections.
    Lower { max_connections: usize, limit: u64 },
}

/// Pure: fits `max_connections` accepted and `dial_targets` dialed connections into
/// the `soft` and `hard` limits (`None`: unlimited).
pub fn fit(
    max_connections: usize,
    dial_targets: usize,
    soft: Option<u64>,
    hard: Option<u64>,
) -> FdPlan {
    let needed = fds_needed(max_connections, dial_targets);
    if soft.is_none_or(|s| s >= needed) {
        return FdPlan::Enough;
    }
    if hard.is_none_or(|h| h >= needed) {
        return FdPlan::Raise(needed);
    }
    let limit = hard.unwrap_or(needed);
    let room = limit.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION;
    FdPlan::Lower {
        max_connections: (room as usize).saturating_sub(dial_targets).max(1),
        limit,
    }
}

/// Applies [`fit`] to this process; returns the `max_connections` to use.
pub fn ensure(max_connections: usize, dial_targets: usize) -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let now = getrlimit(Resource::Nofile);
        match fit(max_connections, dial_targets, now.current, now.maximum) {
            FdPlan::Enough => max_connections,
            FdPlan::Raise(to) => {
                let raised = Rlimit {
                    current: Some(to),
                    maximum: now.maximum,
                };
                match setrlimit(Resource::Nofile, raised) {
                    Ok(()) => {
                        tracing::debug!("raised the open-file limit to {to}");
                        max_connections
                    }
                    Err(e) => {
                        let soft = now.current.unwrap_or(u64::MAX);
                        let lowered = lowered_to(soft, dial_targets);
                        tracing::warn!(
                            "--max-connections {max_connections} needs {} open files, the limit is {soft} and cannot be raised ({e}): serving at most {lowered} connections",
                            fds_needed(max_connections, dial_targets)
                        );
                        lowered.min(max_connections)
                    }
                }
            }
            FdPlan::Lower {
                max_connections: lowered,
                limit,
            } => {
                let soft = Rlimit {
                    current: Some(limit),
                    maximum: now.maximum,
                };
                let _ = setrlimit(Resource::Nofile, soft);
                tracing::warn!(
                    "--max-connections {max_connections} needs {} open files, but this process may open at most {limit} (ulimit -Hn): serving at most {lowered} connections",
                    fds_needed(max_connections, dial_targets)
                );
                lowered
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dial_targets;
        max_connections
    }
}

fn lowered_to(limit: u64, dial_targets: usize) -> usize {
    ((limit.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION) as usize)
        .saturating_sub(dial_targets)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_raised_within_the_hard_limit_or_connections_lowered() {
        // The defaults (256 connections) need 640: a 1024 soft limit is enough.
        assert_eq!(fds_needed(256, 0), 640);
        assert_eq!(fit(256, 0, Some(1024), Some(1024)), FdPlan::Enough);
        assert_eq!(fit(256, 0, None, None), FdPlan::Enough);
        // 1000 connections under a 1024 soft limit and a large hard one: raise.
        assert_eq!(fit(1000, 0, Some(1024), Some(1 << 20)), FdPlan::Raise(2128));
        assert_eq!(fit(1000, 0, Some(1024), None), FdPlan::Raise(2128));
        // A hard limit of 256: (256 - 128) / 2 = 64 connections, less the dialers.
        assert_eq!(
            fit(256, 2, Some(256), Some(256)),
            FdPlan::Lower {
                max_connections: 62,
                limit: 256
            }
        );
        // Never down to nothing.
        assert_eq!(
            fit(256, 0, Some(10), Some(10)),
            FdPlan::Lower {
                max_connections: 1,
                limit: 10
            }
        );
    }
}
