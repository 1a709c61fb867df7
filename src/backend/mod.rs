//! Backends: where the lease lives. One small trait, [`Backend`], that the elector drives.
//!
//! Record-based backends (file, Kubernetes Lease) implement
//! [`Backend::try_acquire_or_renew`] as one compare-and-swap around the shared rule
//! [`crate::election::lease::decide`], so the lease logic exists once. Backends with their own
//! election protocol (etcd) implement the same trait on top of that protocol.

pub mod duty;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "kube")]
pub mod kube;
pub mod memory;
#[cfg(any(feature = "etcd", feature = "kube"))]
pub(crate) mod tasks;

use crate::election::lease::Observer;
use crate::election::{Grant, LeaderInfo, LeaseRecord, Member, Term};
use async_trait::async_trait;
use duty::{DutyRecord, Removed};
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

/// A one-shot view of the lease for `crown status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// No lease record yet.
    None,
    /// The record as stored.
    Record(LeaseRecord),
}

/// What every backend provides. See the module docs.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
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

    /// The Kubernetes namespace in use and the rule that chose it (kube backend), for
    /// `crown status`.
    fn namespace(&self) -> Option<(String, &'static str)> {
        None
    }

    /// The lease as stored (for `crown status`).
    async fn lease(&self) -> Result<LeaseView, BackendError>;

    /// Publish our heartbeat.
    async fn publish_member(&self, member: &Member) -> Result<(), BackendError>;

    /// Remove our heartbeat (clean exit).
    async fn remove_member(&self, id: &str) -> Result<(), BackendError>;

    /// All heartbeats, stale ones included.
    async fn members(&self) -> Result<Vec<Member>, BackendError>;

    /// The leader history, oldest first.
    async fn history(&self) -> Result<Vec<Grant>, BackendError>;

    /// `crown run --once`: the duty's success record, if any (see [`crate::once`]). A record
    /// that does not parse strictly is [`BackendError::Corrupt`], never "done".
    async fn duty(&self) -> Result<Option<DutyRecord>, BackendError> {
        Ok(None)
    }

    /// Records the duty's success, only if the lease is still ours in `rec.term`: one
    /// compare-and-swap with the lease. `Ok(false)`: it is not (nothing written).
    async fn record_duty(&self, _rec: &DutyRecord) -> Result<bool, BackendError> {
        Err(BackendError::Invalid(format!(
            "the {} backend does not record duties (--once)",
            self.kind()
        )))
    }

    /// Removes the duty record (`crown once reset`), readable or not; says what was there.
    async fn reset_duty(&self) -> Result<Removed, BackendError> {
        Err(BackendError::Invalid(format!(
            "the {} backend does not record duties (--once)",
            self.kind()
        )))
    }
}

/// Checks an election name: letters, digits, `.`, `_`, `-`; 1–63 characters.
pub fn validate_election_name(name: &str) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BackendError::Invalid(format!(
            "invalid election name {name:?}: use 1-63 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}
