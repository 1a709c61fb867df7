//! File descriptors: `crown run` raises its soft `RLIMIT_NOFILE` to the hard limit at start,
//! refuses to start (exit 4, one line naming the limit) when even that leaves too few for
//! itself, and keeps a reserve that HTTP clients can never use (see [`http_budget`]), so the
//! elector can always open its lease, lock and history files.
//!
//! The child gets the soft limit crown started with (the exec guard restores it): raising it
//! is crown's business, not the child's.

use crate::exit;
use crate::exit::Failure;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors `crown run` keeps for itself: the runtime (epoll, eventfds, signal pipe), the
/// standard streams, the backend (lease, lock, alive lock, history, heartbeats, inotify, or
/// the etcd/kube connections), the child's pipes, with a margin. HTTP clients never get
/// these. Measured: 17 open at once on the file backend with a child and `--http`.
pub const RESERVED: u64 = 24;

/// Most HTTP connections served at once (further ones wait in the kernel's accept queue,
/// costing crown no descriptor).
pub const HTTP_MAX_CONNECTIONS: usize = 64;

/// HTTP connections below this are not worth serving: with fewer, `--http` is refused at
/// start (exit 4).
const HTTP_MIN_CONNECTIONS: u64 = 4;

/// The open-file limits after [`raise`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The soft limit crown started with (restored for the child).
    pub original_soft: u64,
    /// The soft limit now (the hard limit, if raising it worked).
    pub soft: u64,
}

/// Raises the soft open-file limit to the hard limit (as many servers do); never fails.
pub fn raise() -> Limits {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Limits {
            original_soft: u64::MAX,
            soft: u64::MAX,
        };
    };
    let now = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    Limits {
        original_soft: soft,
        soft: now,
    }
}

/// Descriptors open in this process now (`/proc/self/fd`, not counting the one reading it).
pub fn open_count() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// Fails fast (exit 4) when the limit leaves fewer than [`RESERVED`] descriptors for crown
/// itself (plus a few HTTP connections with `--http`), instead of failing every retry
/// period with EMFILE.
pub fn check(l: Limits, http: bool) -> Result<(), Failure> {
    let open = open_count().unwrap_or(0);
    let need = open + RESERVED + if http { HTTP_MIN_CONNECTIONS } else { 0 };
    if l.soft < need {
        return Err(Failure::new(
            exit::BACKEND_UNAVAILABLE,
            format!(
                "the open-file limit (RLIMIT_NOFILE, ulimit -n) is {}{}: crown needs at least {need} ({open} open now, {RESERVED} kept for the elector{}); raise it",
                l.soft,
                if l.original_soft < l.soft {
                    String::new()
                } else {
                    " and cannot be raised (hard limit)".to_string()
                },
                if http { ", 4 for HTTP clients" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// How many HTTP connections may be open at once: [`HTTP_MAX_CONNECTIONS`], or fewer if the
/// limit would otherwise let them eat into the elector's [`RESERVED`] descriptors.
pub fn http_budget(l: Limits) -> usize {
    let open = open_count().unwrap_or(0);
    let free = l.soft.saturating_sub(open + RESERVED);
    (free.min(HTTP_MAX_CONNECTIONS as u64) as usize).max(1)
}

/// Whether the process is within [`RESERVED`] / 2 descriptors of its limit (the HTTP server
/// then stops accepting until descriptors are freed).
pub fn near_limit(l: Limits) -> bool {
    open_count().is_some_and(|n| n + RESERVED / 2 >= l.soft)
}

/// Restores the soft limit crown started with (in the exec guard, before exec).
pub fn restore_soft(soft: u64) {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard);
    }
}
