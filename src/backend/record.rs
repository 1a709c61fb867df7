//! The read-decide-write glue of record-based backends, written once.
//!
//! A record-based backend (file, Kubernetes Lease, memory) stores one [`LeaseRecord`] and
//! implements only a [`RecordStore`]: read the record with an opaque version, write a record
//! as a compare-and-swap against that version, and say how high terms have gone (the history
//! floor). [`try_acquire_or_renew`] and [`release`] hold everything around the shared rule
//! [`lease::decide`], so each backend's [`Lock`](super::Lock) impl calls them in one line:
//!
//! 1. read the record ([`RecordStore::read`]); then the backend's liveness probe
//!    ([`RecordStore::liveness`]: the file backend's alive lock);
//! 2. a renewal whose deadline has passed writes nothing ([`BackendError::Conflict`]);
//! 3. decide, observing the record at [`tokio::time::Instant::now`] taken *after* the read
//!    returned: a read that hung (a partition) must never count as the holder's silence;
//! 4. a grant goes above every term in the history ([`lease::above_history`]);
//! 5. write ([`RecordStore::write`]), then let the backend settle what it holds locally
//!    ([`RecordStore::finish`]); map the decision to an [`Outcome`].
//!
//! Where backends differ, the store decides: what a version is (the held compare-and-swap
//! lock of the file backend, the Lease and its resourceVersion, a counter), where a grant is
//! recorded (the file backend appends its history line before the record and refuses the grant
//! if it cannot; kube records an Event after the write), and what runs around a write (kube's
//! Pod marker, the file backend's alive lock).

use super::{AcquireRequest, BackendError, Outcome};
use crate::election::lease::{self, Current, Liveness, Observer};
use crate::election::{Grant, Identity, LeaseRecord, Term};
use async_trait::async_trait;
use jiff::Timestamp;
use tokio::time::Instant;

/// Why the record is read.
#[derive(Clone, Copy, Debug)]
pub enum Intent {
    /// A campaign attempt (acquire, renew or follow). Past `deadline` (a renewal's renew
    /// deadline) nothing may be written; a store may give up waiting then.
    Attempt {
        /// The renew deadline, for a renewal.
        deadline: Option<Instant>,
    },
    /// A graceful release: read the freshest record (no cache).
    Release,
}

/// A compare-and-swap write, against the version read.
#[derive(Clone, Copy, Debug)]
pub enum Write<'a> {
    /// A new grant: record it in the history (before or after the record, as the store
    /// guarantees its floor), then write `record`.
    Acquire {
        /// The record to write.
        record: &'a LeaseRecord,
        /// The history entry of the grant.
        grant: &'a Grant,
    },
    /// A renewal in the same term.
    Renew {
        /// The record to write.
        record: &'a LeaseRecord,
    },
    /// A release of our term.
    Release {
        /// The record to write.
        record: &'a LeaseRecord,
    },
}

/// How an attempt or a release ended, for [`RecordStore::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Granted (written).
    Acquired,
    /// Renewed (written).
    Renewed,
    /// Someone else leads: nothing written.
    Following,
    /// Our term is over: nothing written.
    Lost,
    /// A release ended (written, not ours any more, or the write failed).
    Released,
}

/// A store of one lease record. See the module docs.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// What a write compares against, and whatever the store holds from the read to the
    /// write (a lock). Dropped without a write when the attempt writes nothing or fails.
    type Version: Send;

    /// Who campaigns.
    fn me(&self) -> &Identity;

    /// This participant's wall clock (the memory backend's runs skewed).
    fn wall_now(&self) -> Timestamp {
        Timestamp::now()
    }

    /// Reads the record.
    async fn read(&self, intent: Intent) -> Result<(Current, Self::Version), BackendError>;

    /// What the store knows beyond the record about its holder (the file backend's alive
    /// lock). `held`: the term we believe we lead in.
    async fn liveness(
        &self,
        _current: &Current,
        _held: Option<Term>,
        _version: &mut Self::Version,
    ) -> Result<Liveness, BackendError> {
        Ok(Liveness::Unknown)
    }

    /// The highest term ever granted (the history), asked before a grant. `Ok(None)`: not
    /// known (the store has said why), grant above the record alone. An error refuses the
    /// grant.
    async fn floor(&self, version: &mut Self::Version) -> Result<Option<Term>, BackendError>;

    /// The compare-and-swap write against `version` (a [`BackendError::Conflict`] when the
    /// record changed since).
    async fn write(
        &self,
        version: &mut Self::Version,
        write: Write<'_>,
    ) -> Result<(), BackendError>;

    /// After a successful attempt or any release whose read succeeded: settle what the store
    /// holds locally. Dropping `version` ends the read-decide-write.
    async fn finish(&self, version: Self::Version, how: Finish) {
        let _ = (version, how);
    }
}

/// [`Lock::try_acquire_or_renew`](super::Lock::try_acquire_or_renew) over a [`RecordStore`].
pub async fn try_acquire_or_renew<S: RecordStore + ?Sized>(
    store: &S,
    req: AcquireRequest,
    observer: &mut Observer,
) -> Result<Outcome, BackendError> {
    let (current, mut version) = store
        .read(Intent::Attempt {
            deadline: req.deadline,
        })
        .await?;
    let liveness = store.liveness(&current, req.held, &mut version).await?;
    if req.deadline.is_some_and(|d| Instant::now() >= d) {
        // Our renew deadline passed while we read: write nothing in this term.
        return Err(BackendError::Conflict(
            "renew deadline passed before the write".into(),
        ));
    }
    let r = lease::Request {
        me: store.me(),
        held: req.held,
        hold_off: req.hold_off,
        lease_duration: req.lease_duration,
        // Observed when the read returned, not when the attempt began.
        now: Instant::now(),
        wall_now: store.wall_now(),
    };
    let mut decision = lease::decide(&current, observer, &r, liveness);
    if let lease::Decision::Acquire { .. } = decision
        && let Some(floor) = store.floor(&mut version).await?
    {
        // Terms survive a deleted or hand-made record: stay above every recorded grant.
        decision = lease::above_history(decision, floor);
    }
    let (outcome, how) = match decision {
        lease::Decision::Acquire { record, grant } => {
            store
                .write(
                    &mut version,
                    Write::Acquire {
                        record: &record,
                        grant: &grant,
                    },
                )
                .await?;
            let term = record.term;
            (Outcome::Acquired { term, grant }, Finish::Acquired)
        }
        lease::Decision::Renew { record } => {
            store
                .write(&mut version, Write::Renew { record: &record })
                .await?;
            (Outcome::Renewed { term: record.term }, Finish::Renewed)
        }
        lease::Decision::Follow { leader, expires_in } => (
            Outcome::Following {
                leader,
                recheck_in: expires_in,
            },
            Finish::Following,
        ),
        lease::Decision::Lost { leader } => (Outcome::Lost { leader }, Finish::Lost),
        lease::Decision::Refuse { reason } => return Err(BackendError::Corrupt(reason)),
    };
    store.finish(version, how).await;
    Ok(outcome)
}

/// [`Lock::release`](super::Lock::release) over a [`RecordStore`]: writes the released record
/// only if the record still shows us holding `term`.
pub async fn release<S: RecordStore + ?Sized>(store: &S, term: Term) -> Result<(), BackendError> {
    let (current, mut version) = store.read(Intent::Release).await?;
    let res = match lease::release(&current, store.me(), term, store.wall_now()) {
        Some(record) => {
            store
                .write(&mut version, Write::Release { record: &record })
                .await
        }
        None => Ok(()),
    };
    store.finish(version, Finish::Released).await;
    res
}
