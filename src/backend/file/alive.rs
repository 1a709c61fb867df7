//! The alive lock (held by the leader while it leads, its term inside) and its waker, and the
//! short compare-and-swap lock.

use super::{Inner, io_err};
use crate::backend::BackendError;
use crate::election::Term;
use jiff::Timestamp;
use std::fs::{File, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

/// How long a CAS may wait for the short lease lock before giving up for this round.
const LOCK_WAIT: Duration = Duration::from_secs(2);

impl Inner {
    pub(super) fn cas_lock(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> Result<File, BackendError> {
        let f = self.dir.open_rw(&self.lock_name)?;
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        let give_up = deadline.map_or(give_up, |d| d.min(give_up));
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(f),
                Err(TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= give_up {
                        return Err(BackendError::Conflict(format!(
                            "{} is busy (another participant is stuck inside its compare-and-swap)",
                            self.dir.path().join(&self.lock_name).display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(io_err(
                        "cannot lock",
                        &self.dir.path().join(&self.lock_name),
                        e,
                    ));
                }
            }
        }
    }

    pub(super) fn open_alive(&self) -> Result<File, BackendError> {
        self.dir.open_rw(&self.alive_name)
    }

    /// Tries to take the alive lock and write `term` into it.
    pub(super) fn take_alive(&self, f: Option<File>, term: Term) -> Option<File> {
        let mut f = match f {
            Some(f) => f,
            None => {
                let f = self.open_alive().ok()?;
                f.try_lock().ok()?;
                f
            }
        };
        let ok = f
            .set_len(0)
            .and_then(|_| f.seek(SeekFrom::Start(0)))
            .and_then(|_| f.write_all(term.0.to_string().as_bytes()));
        if let Err(e) = ok {
            tracing::warn!(
                "cannot write {}: {e}",
                self.dir.path().join(&self.alive_name).display()
            );
        }
        Some(f)
    }

    /// Arms the background waiter on the alive lock: one wake-up when it becomes free.
    pub(super) fn arm_waker(&self) {
        if self.armed.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut w = self.waker.lock().unwrap();
        if w.is_none() {
            let (tx, rx) = mpsc::channel::<()>();
            let dir = self.dir.clone();
            let name = self.alive_name.clone();
            let notify = self.notify.clone();
            let armed = self.armed.clone();
            let freed_at = self.freed_at.clone();
            let spawned = std::thread::Builder::new()
                .name("crown-alive-waiter".into())
                .spawn(move || {
                    while rx.recv().is_ok() {
                        let Ok(f) = dir.open_rw(&name) else {
                            armed.store(false, Ordering::SeqCst);
                            continue;
                        };
                        if f.lock().is_ok() {
                            *freed_at.lock().unwrap() = Some(Timestamp::now());
                            tracing::debug!("alive lock became free");
                            let _ = f.unlock();
                        }
                        drop(f);
                        armed.store(false, Ordering::SeqCst);
                        notify.notify_one();
                    }
                });
            match spawned {
                Ok(_) => *w = Some(tx),
                Err(e) => {
                    tracing::warn!("cannot start the alive-lock waiter: {e}");
                    return;
                }
            }
        }
        if let Some(tx) = w.as_ref() {
            let _ = tx.send(());
        }
    }
}
