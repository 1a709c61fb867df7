//! The compare-and-swap store: reading the lease record and the [`RecordStore`] the shared
//! read-decide-write runs on.

use super::fsx::Bounded;
use super::{Inner, MAX_RECORD, blocking};
use crate::backend::BackendError;
use crate::backend::record::{self, Finish, Intent, RecordStore};
use crate::election::lease::{Current, Liveness};
use crate::election::{Identity, LeaseRecord, Term};
use async_trait::async_trait;
use std::fs::{File, TryLockError};
use std::io::Read;
use std::sync::Arc;

impl Inner {
    pub(super) fn read_current(&self) -> Result<Current, BackendError> {
        let bytes = match self.dir.read_bounded(&self.lease_name, MAX_RECORD)? {
            None => return Ok(Current::Missing),
            Some(Bounded::TooBig { size, fingerprint }) => {
                return Ok(Current::Corrupt {
                    fingerprint,
                    reason: format!(
                        "{size} bytes, over the {MAX_RECORD}-byte limit of a lease record"
                    ),
                });
            }
            Some(Bounded::Data(b)) => b,
        };
        Ok(parse_record(&bytes))
    }
}

/// Parses a lease record: corrupt (with a fingerprint) or a record.
fn parse_record(bytes: &[u8]) -> Current {
    use std::hash::{Hash, Hasher};
    match serde_json::from_slice::<LeaseRecord>(bytes) {
        Ok(r) => Current::Record(r),
        Err(e) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            let reason = if bytes.is_empty() {
                "file is empty".to_string()
            } else {
                e.to_string()
            };
            Current::Corrupt {
                fingerprint: h.finish(),
                reason,
            }
        }
    }
}

/// One read-decide-write. The record is read without the compare-and-swap lock (it is
/// replaced by an atomic rename, so a read is never torn); the write takes the lock, reads the
/// record again and writes only if it is still what was read, all in one blocking task. The
/// lock is so held for microseconds, by one thread: a participant frozen (SIGSTOP) or starved
/// between the read and the write holds nothing that others wait for. The holder's alive lock,
/// if the liveness probe took it, is in `probe`.
pub(super) struct Txn {
    probe: Option<File>,
    holder_lock_held: bool,
    /// The record as read: the version the write compares against.
    seen: Current,
    /// A renewal's renew deadline: past it, nothing is written.
    deadline: Option<std::time::Instant>,
}

#[async_trait]
impl RecordStore for Arc<Inner> {
    type Version = Txn;

    fn me(&self) -> &Identity {
        &self.me
    }

    async fn read(&self, intent: Intent) -> Result<(Current, Txn), BackendError> {
        let inner = self.clone();
        blocking(move || {
            let deadline = match intent {
                Intent::Attempt { deadline } => deadline.map(|d| d.into_std()),
                Intent::Release => None,
            };
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                // Our renew deadline has passed: write nothing in this term.
                return Err(BackendError::Conflict(
                    "renew deadline passed before the write".into(),
                ));
            }
            let cur = inner.read_current()?;
            if let (
                Intent::Attempt { .. },
                Current::Corrupt {
                    fingerprint,
                    reason,
                },
            ) = (intent, &cur)
            {
                let mut w = inner.warned_corrupt.lock().unwrap();
                if *w != Some(*fingerprint) {
                    tracing::warn!(
                        "corrupt lease file {}: {reason}; treating it as held until it stays unchanged for the lease duration, then replacing it with a higher term",
                        inner.lease_path.display()
                    );
                    *w = Some(*fingerprint);
                }
            }
            let txn = Txn {
                probe: None,
                holder_lock_held: false,
                seen: cur.clone(),
                deadline,
            };
            Ok((cur, txn))
        })
        .await
    }

    /// The alive-lock probe: only for a holder on this host that is not us.
    async fn liveness(
        &self,
        current: &Current,
        held: Option<Term>,
        txn: &mut Txn,
    ) -> Result<Liveness, BackendError> {
        let freed_at = self.freed_at.lock().unwrap().take();
        let leading_this = |r: &LeaseRecord| held == Some(r.term) && r.holder == self.me.id;
        let term = match current {
            Current::Record(r) if r.is_held() && !leading_this(r) && r.host == self.me.host => {
                r.term
            }
            _ => return Ok(Liveness::Unknown),
        };
        let inner = self.clone();
        let (probe, holder_lock_held, liveness) = blocking(move || {
            let f = inner.open_alive()?;
            Ok(match f.try_lock() {
                Ok(()) => {
                    let mut s = String::new();
                    let _ = (&f).take(64).read_to_string(&mut s);
                    let liveness = if s.trim().parse::<u64>().ok() == Some(term.0) {
                        Liveness::HolderGone {
                            noticed_at: freed_at,
                        }
                    } else {
                        Liveness::Unknown
                    };
                    (Some(f), false, liveness)
                }
                Err(TryLockError::WouldBlock) => (None, true, Liveness::Unknown),
                Err(TryLockError::Error(e)) => {
                    tracing::warn!(
                        "cannot probe {}: {e}",
                        inner.dir.path().join(&inner.alive_name).display()
                    );
                    (None, false, Liveness::Unknown)
                }
            })
        })
        .await?;
        txn.probe = probe;
        txn.holder_lock_held = holder_lock_held;
        Ok(liveness)
    }

    async fn floor(&self, _: &mut Txn) -> Result<Option<Term>, BackendError> {
        let inner = self.clone();
        blocking(move || inner.term_floor().map(Some)).await
    }

    async fn write(&self, txn: &mut Txn, write: record::Write<'_>) -> Result<(), BackendError> {
        let inner = self.clone();
        let probe = txn.probe.take();
        let seen = txn.seen.clone();
        let deadline = txn.deadline;
        let (grant, record) = match write {
            record::Write::Acquire { record, grant } => (Some(grant.clone()), record.clone()),
            record::Write::Renew { record } | record::Write::Release { record } => {
                (None, record.clone())
            }
        };
        let renew = matches!(write, record::Write::Renew { .. });
        // One blocking task from the lock to the last write: an attempt the elector gives up
        // on (its future dropped) cannot free the lock under a write still in flight.
        blocking(move || {
            // Written and synced before the lock: under it only a read, a compare and a
            // rename (plus the history line of a grant). A participant frozen while it holds
            // the lock stalls every other participant until it resumes or dies.
            let staged = inner.stage_record(&record)?;
            let lock = inner.cas_lock(deadline)?;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                // Our renew deadline passed while we waited: write nothing in this term.
                return Err(BackendError::Conflict(
                    "renew deadline passed before the write".into(),
                ));
            }
            if inner.read_current()? != seen {
                return Err(BackendError::Conflict(format!(
                    "{} changed since it was read",
                    inner.lease_path.display()
                )));
            }
            if let Some(grant) = grant {
                // No grant without its history line on disk: a later floor must see it.
                inner.append_history(&grant)?;
                let alive = inner.take_alive(probe, record.term);
                staged.commit()?;
                *inner.alive.lock().unwrap() = alive;
            } else {
                if renew {
                    let mut alive = inner.alive.lock().unwrap();
                    if alive.is_none() {
                        *alive = inner.take_alive(None, record.term);
                    }
                }
                staged.commit()?;
            }
            drop(lock);
            inner.dir.sync();
            Ok(())
        })
        .await
    }

    async fn finish(&self, txn: Txn, how: Finish) {
        match how {
            Finish::Following if txn.holder_lock_held => self.arm_waker(),
            Finish::Lost | Finish::Released => {
                self.alive.lock().unwrap().take();
            }
            _ => {}
        }
        drop(txn);
    }
}
