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

#[cfg(test)]
mod tests {
    //! The glue over the smallest store: a record in a mutex, every call recorded.
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Log {
        record: Option<LeaseRecord>,
        /// Bumped on every write: the version.
        writes: u64,
        /// What happened, in order.
        calls: Vec<String>,
        floor: Option<Term>,
        read_takes: Duration,
    }

    struct Tiny {
        me: Identity,
        log: Mutex<Log>,
    }

    impl Tiny {
        fn new(record: Option<LeaseRecord>) -> Self {
            Tiny {
                me: Identity {
                    id: "me".into(),
                    pid: 1,
                    host: "h".into(),
                },
                log: Mutex::new(Log {
                    record,
                    ..Log::default()
                }),
            }
        }
        fn calls(&self) -> Vec<String> {
            self.log.lock().unwrap().calls.clone()
        }
    }

    #[async_trait]
    impl RecordStore for Tiny {
        type Version = u64;
        fn me(&self) -> &Identity {
            &self.me
        }
        async fn read(&self, intent: Intent) -> Result<(Current, u64), BackendError> {
            let takes = self.log.lock().unwrap().read_takes;
            tokio::time::sleep(takes).await;
            let mut l = self.log.lock().unwrap();
            l.calls.push(format!("read {intent:?}"));
            let cur = l.record.clone().map_or(Current::Missing, Current::Record);
            Ok((cur, l.writes))
        }
        async fn floor(&self, _: &mut u64) -> Result<Option<Term>, BackendError> {
            let mut l = self.log.lock().unwrap();
            l.calls.push("floor".into());
            Ok(l.floor)
        }
        async fn write(&self, v: &mut u64, w: Write<'_>) -> Result<(), BackendError> {
            let mut l = self.log.lock().unwrap();
            if l.writes != *v {
                return Err(BackendError::Conflict("changed".into()));
            }
            let (what, rec) = match w {
                Write::Acquire { record, .. } => ("acquire", record),
                Write::Renew { record } => ("renew", record),
                Write::Release { record } => ("release", record),
            };
            l.calls.push(format!("write {what} {}", rec.term));
            l.record = Some(rec.clone());
            l.writes += 1;
            Ok(())
        }
        async fn finish(&self, _: u64, how: Finish) {
            self.log
                .lock()
                .unwrap()
                .calls
                .push(format!("finish {how:?}"));
        }
    }

    fn held_by(holder: &str, term: u64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            term: Term(term),
            acquired_at: Timestamp::now(),
            renewed_at: Timestamp::now(),
            lease_duration_ms: 10_000,
            pid: 2,
            host: "h".into(),
            released_at: None,
            released_by: None,
            revision: 0,
        }
    }

    fn req(held: Option<u64>, deadline: Option<Instant>) -> AcquireRequest {
        AcquireRequest {
            held: held.map(Term),
            hold_off: false,
            lease_duration: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(5),
            now: Instant::now(),
            deadline,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_goes_above_the_floor_and_is_written_once() {
        let s = Tiny::new(None);
        s.log.lock().unwrap().floor = Some(Term(41));
        let out = try_acquire_or_renew(&s, req(None, None), &mut Observer::default())
            .await
            .unwrap();
        assert!(
            matches!(out, Outcome::Acquired { term: Term(42), ref grant } if grant.term == Term(42))
        );
        assert_eq!(
            s.calls(),
            [
                "read Attempt { deadline: None }",
                "floor",
                "write acquire 42",
                "finish Acquired"
            ]
        );
        // An unknown floor: above the record alone.
        let s = Tiny::new(None);
        let out = try_acquire_or_renew(&s, req(None, None), &mut Observer::default())
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Acquired { term: Term(1), .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_writes_nothing_and_a_renewal_past_its_deadline_neither() {
        let s = Tiny::new(Some(held_by("other", 3)));
        let out = try_acquire_or_renew(&s, req(None, None), &mut Observer::default())
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Following { .. }), "{out:?}");
        assert_eq!(s.calls()[1..], ["finish Following"]);

        // Ours in term 3, but the read returns after the renew deadline.
        let s = Tiny::new(Some(held_by("me", 3)));
        s.log.lock().unwrap().read_takes = Duration::from_secs(5);
        let deadline = Instant::now() + Duration::from_secs(4);
        let err = try_acquire_or_renew(&s, req(Some(3), Some(deadline)), &mut Observer::default())
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Conflict(_)), "{err}");
        assert_eq!(s.calls().len(), 1, "{:?}", s.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn the_record_is_observed_when_the_read_returns() {
        // The holder's record is read after a 30 s hang; its 10 s lease counts from then,
        // so 9 s later it is not expired yet.
        let s = Tiny::new(Some(held_by("other", 3)));
        let mut obs = Observer::default();
        s.log.lock().unwrap().read_takes = Duration::from_secs(30);
        let out = try_acquire_or_renew(&s, req(None, None), &mut obs)
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Following { .. }), "{out:?}");
        s.log.lock().unwrap().read_takes = Duration::ZERO;
        tokio::time::sleep(Duration::from_secs(9)).await;
        let out = try_acquire_or_renew(&s, req(None, None), &mut obs)
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Following { .. }), "{out:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let out = try_acquire_or_renew(&s, req(None, None), &mut obs)
            .await
            .unwrap();
        assert!(
            matches!(out, Outcome::Acquired { term: Term(4), .. }),
            "{out:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn release_writes_only_our_own_term_and_always_finishes() {
        let s = Tiny::new(Some(held_by("other", 3)));
        release(&s, Term(3)).await.unwrap();
        assert_eq!(s.calls()[1..], ["finish Released"]);
        let s = Tiny::new(Some(held_by("me", 3)));
        release(&s, Term(2)).await.unwrap();
        release(&s, Term(3)).await.unwrap();
        assert_eq!(
            s.calls(),
            [
                "read Release",
                "finish Released",
                "read Release",
                "write release 3",
                "finish Released"
            ]
        );
        assert!(!s.log.lock().unwrap().record.as_ref().unwrap().is_held());
    }
}
