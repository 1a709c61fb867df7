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

use crate::election::{Grant, LeaderInfo, LeaseRecord, Member, Term};
use async_trait::async_trait;
use duty::{DutyRecord, Removed};
use jiff::Timestamp;

/// A one-shot view of the lease for `crown status`: what the backend really stores, nothing
/// invented. Record backends (file, Kubernetes Lease) store a [`LeaseRecord`]; etcd stores no
/// record, only the first candidate key and its session lease ([`ElectionView`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// No lease record yet (or, on etcd, no candidate key and no resign record).
    None,
    /// The record as stored (file, Kubernetes).
    Record(LeaseRecord),
    /// An election's leader key and its session lease (etcd).
    Election(ElectionView),
    /// No leader key; the last leader resigned, as its resign record says (etcd).
    Resigned(Resigned),
}

/// The leader of a key-and-session election (etcd), as stored: the first candidate key by
/// creation revision, and the session lease it is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionView {
    /// The leader: id, term (the key's create revision) and, for a crown leader, pid, host and
    /// grant time from its heartbeat and history (`None` where unknown, e.g. a foreign leader).
    pub leader: LeaderInfo,
    /// The leader key (raw, lossy UTF-8; escape before showing).
    pub key: String,
    /// The session lease id the key is attached to.
    pub lease_id: i64,
    /// The session lease's granted TTL in seconds (`None` if the lease could not be read).
    pub granted_ttl_s: Option<u64>,
    /// Seconds the session lease has left, as etcd says (`None` if unreadable or gone).
    pub ttl_remaining_s: Option<u64>,
    /// The key's last modification revision.
    pub mod_revision: u64,
}

/// An election whose last leader resigned (etcd's resign record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resigned {
    /// The term that ended.
    pub term: Term,
    /// When (the resigning leader's wall clock).
    pub at: Timestamp,
    /// Who resigned (raw; escape before showing).
    pub by: String,
}

impl LeaseView {
    /// The leader it names, if any.
    pub fn leader(&self) -> Option<LeaderInfo> {
        match self {
            LeaseView::Record(r) => r.leader(),
            LeaseView::Election(e) => Some(e.leader.clone()),
            LeaseView::None | LeaseView::Resigned(_) => None,
        }
    }

    /// The term that was released and when, if the lease is released.
    pub fn released(&self) -> Option<(Term, Option<Timestamp>)> {
        match self {
            LeaseView::Record(r) if !r.is_held() => Some((r.term, r.released_at)),
            LeaseView::Resigned(r) => Some((r.term, Some(r.at))),
            _ => None,
        }
    }

    /// The holder's lease duration (record) or session TTL (election), where known.
    pub fn duration(&self) -> Option<std::time::Duration> {
        match self {
            LeaseView::Record(r) if r.lease_duration_ms > 0 => {
                Some(std::time::Duration::from_millis(r.lease_duration_ms))
            }
            LeaseView::Election(e) => e
                .granted_ttl_s
                .filter(|s| *s > 0)
                .map(std::time::Duration::from_secs),
            _ => None,
        }
    }
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
