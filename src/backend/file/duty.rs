//! `crown run --once` on the file backend: the success record `D/E.duty.json`, written by the
//! leader under the CAS lock `D/E.lock` after re-reading the lease (the same compare as a
//! renewal), read with the directory's rules (no symlink, regular file, size bound) and parsed
//! strictly (see [`crate::once`]).

use super::fsx::Bounded;
use super::{Inner, blocking};
use crate::backend::BackendError;
use crate::backend::duty::{self as once, DutyRecord, MAX_DUTY, Removed};
use crate::election::lease::Current;

impl Inner {
    fn duty_name(&self) -> String {
        format!("{}.duty.json", self.election())
    }

    fn election(&self) -> &str {
        self.lease_name
            .strip_suffix(".lease")
            .expect("lease file is <election>.lease")
    }

    fn duty_shown(&self) -> String {
        self.dir.path().join(self.duty_name()).display().to_string()
    }

    /// The record, strictly parsed; a record for a term above the lease's is refused too.
    pub(super) fn read_duty(&self) -> Result<Option<DutyRecord>, BackendError> {
        let bytes = match self.dir.read_bounded(&self.duty_name(), MAX_DUTY as u64)? {
            None => return Ok(None),
            Some(Bounded::TooBig { size, .. }) => {
                return Err(once::corrupt(
                    &self.duty_shown(),
                    &format!("{size} bytes, over the {MAX_DUTY}-byte limit of a duty record"),
                ));
            }
            Some(Bounded::Data(b)) => b,
        };
        let rec = once::parse(&bytes).map_err(|e| once::corrupt(&self.duty_shown(), &e))?;
        if let Ok(Current::Record(l)) = self.read_current()
            && rec.term > l.term
        {
            return Err(once::corrupt(
                &self.duty_shown(),
                &format!(
                    "term {} is above the lease's term {}: crown never wrote it",
                    rec.term, l.term
                ),
            ));
        }
        Ok(Some(rec))
    }

    /// Writes `rec` under the CAS lock if the lease still names us in `rec.term`.
    pub(super) fn record_duty(&self, rec: &DutyRecord) -> Result<bool, BackendError> {
        // Synced before the lock, renamed under it (see the lease write).
        let staged = self.dir.stage(&self.duty_name(), &once::to_bytes(rec))?;
        let lock = self.cas_lock(None)?;
        let ours = matches!(
            self.read_current()?,
            Current::Record(l) if l.is_held() && l.holder == self.me.id && l.term == rec.term
        );
        if ours {
            staged.commit()?;
        }
        drop(lock);
        if ours {
            self.dir.sync();
        }
        Ok(ours)
    }

    /// Removes the record under the CAS lock, saying what it held.
    pub(super) fn reset_duty(&self) -> Result<Removed, BackendError> {
        let lock = self.cas_lock(None)?;
        let name = self.duty_name();
        let removed = match self.dir.read_bounded(&name, MAX_DUTY as u64) {
            Ok(None) => Removed::Nothing,
            Ok(Some(Bounded::Data(b))) => Removed::from_bytes(&b),
            Ok(Some(Bounded::TooBig { size, .. })) => {
                Removed::Unreadable(format!("{size} bytes, over the {MAX_DUTY}-byte limit"))
            }
            // A symlink or a directory planted under the name: remove only a non-directory.
            Err(e) => Removed::Unreadable(e.to_string()),
        };
        if removed != Removed::Nothing {
            self.dir.remove(&name)?;
        }
        drop(lock);
        Ok(removed)
    }
}

impl super::FileBackend {
    pub(super) async fn duty_async(&self) -> Result<Option<DutyRecord>, BackendError> {
        let inner = self.inner.clone();
        blocking(move || inner.read_duty()).await
    }

    pub(super) async fn record_duty_async(&self, rec: &DutyRecord) -> Result<bool, BackendError> {
        let inner = self.inner.clone();
        let rec = rec.clone();
        blocking(move || inner.record_duty(&rec)).await
    }

    pub(super) async fn reset_duty_async(&self) -> Result<Removed, BackendError> {
        let inner = self.inner.clone();
        blocking(move || inner.reset_duty()).await
    }
}
