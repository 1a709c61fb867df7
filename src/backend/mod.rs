//! Backends: where the lease lives.
//!
//! The elector needs only [`Lock`] (defined in the election core, [`crate::election::lock`],
//! and re-exported here with its [`AcquireRequest`], [`Outcome`] and [`BackendError`]).
//! Everything else a backend offers is split by who needs it: [`Observe`] (`crown status`,
//! `crown history`, the dashboard), [`Heartbeat`] (members) and [`Duties`] (`--once`).
//! [`Backend`] bundles the four; every real backend implements all of them, so an
//! `Arc<dyn Backend>` serves the whole binary and upcasts to the elector's `Arc<dyn Lock>`.
//!
//! Record-based backends (file, Kubernetes Lease, memory) implement only a
//! [`record::RecordStore`] (read the record with a version, compare-and-swap write, history
//! floor, their hooks); the read-decide-write around [`crate::election::lease::decide`] is
//! written once, in [`record`]. Backends with their own election protocol (etcd) implement
//! [`Lock`] on top of that protocol.

pub mod duty;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "kube")]
pub mod kube;
pub mod memory;
pub mod record;
#[cfg(any(feature = "etcd", feature = "kube"))]
pub(crate) mod tasks;

pub use crate::election::lock::{AcquireRequest, BackendError, Lock, Outcome};

use crate::election::{Grant, LeaseRecord, Member};
use async_trait::async_trait;
use duty::{DutyRecord, Removed};

/// A one-shot view of the lease for `crown status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// No lease record yet.
    None,
    /// The record as stored.
    Record(LeaseRecord),
}

/// What observers need (`crown status`, `crown history`, the dashboard): the election as
/// stored, read without campaigning.
#[async_trait]
pub trait Observe: Send + Sync + 'static {
    /// The Kubernetes namespace in use and the rule that chose it (kube backend), for
    /// `crown status`.
    fn namespace(&self) -> Option<(String, &'static str)> {
        None
    }

    /// The lease as stored (for `crown status`).
    async fn lease(&self) -> Result<LeaseView, BackendError>;

    /// All heartbeats, stale ones included.
    async fn members(&self) -> Result<Vec<Member>, BackendError>;

    /// The leader history, oldest first.
    async fn history(&self) -> Result<Vec<Grant>, BackendError>;
}

/// A participant's heartbeat, for observers.
#[async_trait]
pub trait Heartbeat: Send + Sync + 'static {
    /// Publish our heartbeat.
    async fn publish_member(&self, member: &Member) -> Result<(), BackendError>;

    /// Remove our heartbeat (clean exit).
    async fn remove_member(&self, id: &str) -> Result<(), BackendError>;
}

/// `crown run --once`: the duty's success record, fenced by the lease (see [`crate::once`]).
/// Backends without duties keep the defaults, which refuse.
#[async_trait]
pub trait Duties: Lock {
    /// The duty's success record, if any. A record that does not parse strictly is
    /// [`BackendError::Corrupt`], never "done".
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

/// Everything a real backend provides: the elector's [`Lock`], [`Observe`], [`Heartbeat`] and
/// [`Duties`]. Implemented for every type that implements the four, so `Arc<dyn Backend>`
/// serves `crown run`, `status` and the dashboard, and upcasts to the `Arc<dyn Lock>` the
/// elector takes.
pub trait Backend: Lock + Observe + Heartbeat + Duties {}

impl<T: Lock + Observe + Heartbeat + Duties + ?Sized> Backend for T {}

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
