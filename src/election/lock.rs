//! What the [`Elector`](super::Elector) needs from a lease store, and nothing more: the
//! [`Lock`] trait, one attempt's inputs ([`AcquireRequest`]) and result ([`Outcome`]), and the
//! error every store reports ([`BackendError`]).
//!
//! Observing an election (the lease as stored, members, history), heartbeats and `--once`
//! duties are separate traits in the backend module; a real backend implements all of them
//! (its `Backend` trait is that bundle), while the elector holds only an `Arc<dyn Lock>`.
//! Nothing in the election core imports from the backends.

use super::lease::Observer;
use super::{Grant, LeaderInfo, Term};
use async_trait::async_trait;
use std::time::Duration;
use tokio::time::Instant;

/// Backend failures. Each maps to a distinct exit code at the edge.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot be reached or used (unwritable dir, refused connection).
    #[error("{0}")]
    Unavailable(String),
    /// The stored state cannot be read (corrupt lease file, malformed Lease).
    #[error("{0}")]
    Corrupt(String),
    /// Another writer got there first; retry later.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Bad input (election name, etc.).
    #[error("{0}")]
    Invalid(String),
    /// The backend refused us (RBAC): which verb on which resource is missing.
    #[error("{0}")]
    Forbidden(String),
}

/// One attempt's inputs.
#[derive(Clone, Copy, Debug)]
pub struct AcquireRequest {
    /// The term we lead in, if we lead.
    pub held: Option<Term>,
    /// Do not acquire now (we just resigned).
    pub hold_off: bool,
    /// Our lease duration.
    pub lease_duration: Duration,
    /// Our retry period (how often a leader renews; backends with sessions keep them alive at
    /// this pace).
    pub retry_period: Duration,
    /// Our renew deadline: a leader stops acting this long after its last successful renewal
    /// began. Session backends publish it, so a successor knows how long before the session
    /// runs out its holder has stopped (etcd).
    pub renew_deadline: Duration,
    /// When the elector began this attempt, on the monotonic clock. Deadlines count from it;
    /// a backend's lease rule must not (it observes the record when its read returns; see
    /// [`crate::election::lease::Request::now`]).
    pub now: Instant,
    /// For a renewal: past this instant the write must not happen (renew deadline).
    pub deadline: Option<Instant>,
}

/// One attempt's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// We were granted the lease in `term`.
    Acquired {
        /// The new fencing token.
        term: Term,
        /// The history entry written for it.
        grant: Grant,
    },
    /// We still hold `term`.
    Renewed {
        /// The term.
        term: Term,
    },
    /// Someone else leads (or nobody, and we may not take it yet).
    Following {
        /// The leader, if any.
        leader: Option<LeaderInfo>,
        /// Re-check no later than this, if nothing wakes us before.
        recheck_in: Option<Duration>,
    },
    /// We believed we led, but the lease is not ours in that term any more.
    Lost {
        /// Who holds it now.
        leader: Option<LeaderInfo>,
    },
}

/// The lock the elector campaigns for: acquire or renew, release, and the wake-ups that make
/// it react at once. Every backend implements it; record-based ones through the shared glue
/// in the backend module's `record` glue.
#[async_trait]
pub trait Lock: Send + Sync + 'static {
    /// Short name: `file`, `etcd`, `kube`, `memory`.
    fn kind(&self) -> &'static str;

    /// Acquire the lease if it is free or expired, renew it if we hold `req.held`, or report
    /// who leads. `observer` keeps this participant's memory of when the record last changed.
    async fn try_acquire_or_renew(
        &self,
        req: AcquireRequest,
        observer: &mut Observer,
    ) -> Result<Outcome, BackendError>;

    /// Release `term` gracefully so a waiting follower can take over at once. A no-op if the
    /// lease is no longer ours in that term.
    async fn release(&self, term: Term) -> Result<(), BackendError>;

    /// We stopped leading without writing (deadline passed, superseded): drop whatever we hold
    /// locally (the file backend's alive lock).
    async fn abandon(&self) {}

    /// Resolves when the lease may have changed (watch/inotify); backends without
    /// notifications never resolve and the elector falls back to its retry period.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }

    /// Resolves when someone asked the holder of `term` to resign through the backend (a
    /// dashboard acting on a remote leader) and we hold `term`. The elector, leading `term`,
    /// then resigns as on SIGUSR1. Backends without such requests never resolve.
    async fn resign_requested(&self, _term: Term) {
        std::future::pending::<()>().await
    }
}
