//! The file backend: a lease record in a local directory, zero set-up.
//!
//! Files, for election `E` in directory `D`:
//! - `D/E.lease`: the JSON [`LeaseRecord`], replaced atomically (temp file, fsync, rename), so a
//!   crash at any byte never leaves a torn record;
//! - `D/E.lock`: a short exclusive `flock` held around every read-decide-write (the
//!   compare-and-swap), never while idle;
//! - `D/E.alive`: an exclusive `flock` the leader holds while it leads, with its term written
//!   inside. A follower on the same host that can take this lock, and finds the current term
//!   inside, knows the holder's process is gone and takes over at once. Followers also wait on
//!   this lock in a background thread, so a `kill -9` wakes them without polling;
//! - `D/E.history.jsonl`: one line per grant, appended under the CAS lock;
//! - `D/E.members/<id>.json`: heartbeats;
//! - `D/E.duty.json`: the success record of a `crown run --once` duty (see `duty.rs`).
//!
//! The read-decide-write is the shared glue ([`super::record`]): this backend's version is the
//! held CAS lock, its liveness probe the alive lock, its floor the history.
//!
//! Followers wake on inotify events for the lease file (the `notify` crate) and on the alive
//! lock becoming free; the retry period is only a backstop.
//!
//! Locks are std's `File::lock`/`try_lock` (flock(2) on Linux, stable since Rust 1.89).
//! A holder on another host (a shared directory) is judged by expiry only.

mod alive;
mod duty;
mod fsx;
mod history;
mod members;
mod store;

pub use fsx::{SafeDir, Sharing};

use super::record;
use super::{
    AcquireRequest, BackendError, Duties, LeaseView, Lock, Observe, Outcome, validate_election_name,
};
use crate::election::lease::{Current, Observer};
use crate::election::{Grant, Identity, LeaseRecord, Member, Term};
use async_trait::async_trait;
use history::{FloorCache, Line, scan_floor, scan_lines};
use jiff::Timestamp;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::Notify;

/// A lease record or heartbeat larger than this is corrupt, not loaded.
pub const MAX_RECORD: u64 = 64 * 1024;

/// A history line longer than this is unreadable (a grant is ~250 bytes).
pub const MAX_LINE: usize = 64 * 1024;

/// Observers (`crown history`, the dashboard) read at most this much of the history's end.
pub const HISTORY_TAIL: u64 = 1024 * 1024;

/// The file backend. Cheap to clone.
#[derive(Clone)]
pub struct FileBackend {
    inner: Arc<Inner>,
}

struct Inner {
    dir: Arc<SafeDir>,
    me: Identity,
    lease_name: String,
    lock_name: String,
    alive_name: String,
    history_name: String,
    members_name: String,
    lease_path: PathBuf,
    /// The members directory, once opened.
    members: Mutex<Option<Arc<SafeDir>>>,
    /// The alive lock, while we lead.
    alive: Mutex<Option<File>>,
    notify: Arc<Notify>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    waker: Mutex<Option<mpsc::Sender<()>>>,
    armed: Arc<AtomicBool>,
    /// When the waker saw the alive lock become free.
    freed_at: Arc<Mutex<Option<Timestamp>>>,
    warned_corrupt: Mutex<Option<u64>>,
    /// The term floor read so far from the history (an index: only new lines are read).
    floor: Mutex<FloorCache>,
    /// History lines already warned about (by offset).
    warned_lines: Mutex<HashSet<u64>>,
    /// The observers' view of the history, with the (device, inode, size, mtime) it was read at.
    history_cache: Mutex<Option<(HistoryKey, Vec<Grant>)>>,
}

type HistoryKey = (u64, u64, i64, i64, u64);

fn io_err(what: &str, path: &Path, e: io::Error) -> BackendError {
    BackendError::Unavailable(format!("{what} {}: {e}", path.display()))
}

impl FileBackend {
    /// Opens (creating if needed) the election `election` in `dir` for participant `me`.
    /// Fails with a clear message if the directory cannot be created or written, is not
    /// private to us (or an explicit group share), or holds something other than a regular
    /// file under one of crown's names.
    pub fn open(dir: &Path, election: &str, me: Identity) -> Result<Self, BackendError> {
        validate_election_name(election)?;
        let sd = SafeDir::open(dir, true)?.ok_or_else(|| {
            BackendError::Unavailable(format!("cannot create directory {}", dir.display()))
        })?;
        if let Sharing::Group(g) = sd.sharing() {
            tracing::info!(
                "{} is a group share (group {g}): files are created 0660",
                sd.path().display()
            );
        }
        let b = FileBackend::with_dir(sd, election, me);
        let i = &b.inner;
        for name in [&i.lease_name, &i.alive_name, &i.history_name, &i.lock_name] {
            i.dir.expect_kind(name, false)?;
        }
        i.dir.expect_kind(&i.members_name, true)?;
        i.dir.open_rw(&i.lock_name)?;
        i.dir.sweep_temps(&i.lease_name);
        if let Ok(Some(m)) = i.members_dir(false) {
            m.sweep_temps(&format!("{}.json.", i.me.id));
        }
        Ok(b)
    }

    /// Opens read-only for observers (`crown status`, `crown history`, the dashboard): does not
    /// create anything.
    pub fn observe(dir: &Path, election: &str) -> Result<Self, BackendError> {
        validate_election_name(election)?;
        let Some(sd) = SafeDir::open(dir, false)? else {
            return Err(BackendError::Unavailable(format!(
                "no election directory {} (start a participant with `crown run --dir {}` first)",
                dir.display(),
                dir.display()
            )));
        };
        let me = Identity {
            id: String::new(),
            pid: std::process::id(),
            host: String::new(),
        };
        Ok(FileBackend::with_dir(sd, election, me))
    }

    fn with_dir(dir: SafeDir, election: &str, me: Identity) -> Self {
        let lease_name = format!("{election}.lease");
        let inner = Inner {
            lease_path: dir.path().join(&lease_name),
            dir: Arc::new(dir),
            me,
            lease_name,
            lock_name: format!("{election}.lock"),
            alive_name: format!("{election}.alive"),
            history_name: format!("{election}.history.jsonl"),
            members_name: format!("{election}.members"),
            members: Mutex::new(None),
            alive: Mutex::new(None),
            notify: Arc::new(Notify::new()),
            watcher: Mutex::new(None),
            waker: Mutex::new(None),
            armed: Arc::new(AtomicBool::new(false)),
            freed_at: Arc::new(Mutex::new(None)),
            warned_corrupt: Mutex::new(None),
            floor: Mutex::new(FloorCache::default()),
            warned_lines: Mutex::new(HashSet::new()),
            history_cache: Mutex::new(None),
        };
        FileBackend {
            inner: Arc::new(inner),
        }
    }

    /// Starts the inotify watch (idempotent). Without it the elector polls every retry period.
    pub fn watch(&self) -> Result<(), BackendError> {
        let mut guard = self.inner.watcher.lock().unwrap();
        if guard.is_some() {
            return Ok(());
        }
        use notify::Watcher;
        let notify = self.inner.notify.clone();
        let name = self.inner.lease_path.file_name().map(|n| n.to_os_string());
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Only changes wake the elector: reads (open, close-without-write) are Access
            // events, and a follower reading the lease must not wake itself and the others.
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            {
                notify.notify_one();
            }
        })
        .map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot watch {}: {e}",
                self.inner.dir.path().display()
            ))
        })?;
        w.watch(self.inner.dir.path(), notify::RecursiveMode::NonRecursive)
            .map_err(|e| {
                BackendError::Unavailable(format!(
                    "cannot watch {}: {e}",
                    self.inner.dir.path().display()
                ))
            })?;
        *guard = Some(w);
        Ok(())
    }

    /// The election directory.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// Path of the lease record.
    pub fn lease_path(&self) -> &Path {
        &self.inner.lease_path
    }
}

impl Inner {
    fn history_path(&self) -> PathBuf {
        self.dir.path().join(&self.history_name)
    }

    /// The highest term in the history. Any line that cannot be read is an error (a lower
    /// floor could repeat a granted term): only blank lines are skipped. Only lines appended
    /// since the last call are read.
    fn term_floor(&self) -> Result<Term, BackendError> {
        let refuse = |why: String| {
            BackendError::Corrupt(format!(
                "leader history {}: {why}; refusing to grant a term until it is repaired (a lower term could repeat one already granted)",
                self.history_path().display()
            ))
        };
        let Some((f, st)) = self
            .dir
            .open_read(&self.history_name)
            .map_err(|e| refuse(e.to_string()))?
        else {
            return Ok(Term(0));
        };
        let mut cache = self.floor.lock().unwrap();
        let id = (st.st_dev, st.st_ino);
        let size = st.st_size as u64;
        let fresh = FloorCache {
            file: Some(id),
            ..FloorCache::default()
        };
        if cache.file != Some(id) || size < cache.offset {
            *cache = fresh;
        }
        let mut f = f;
        let (next, floor) = match scan_floor(&mut f, &cache) {
            Ok(r) => r,
            // Rewritten in place since we looked (same inode)? Read it all again once.
            Err(_) if cache.offset > 0 => scan_floor(&mut f, &fresh).map_err(refuse)?,
            Err(e) => return Err(refuse(e)),
        };
        *cache = next;
        Ok(floor)
    }

    /// The record written and synced to a temp file, to be renamed over the lease file.
    fn stage_record(&self, rec: &LeaseRecord) -> Result<fsx::Staged<'_>, BackendError> {
        let mut bytes = serde_json::to_vec_pretty(rec).expect("record serializes");
        bytes.push(b'\n');
        self.dir.stage(&self.lease_name, &bytes)
    }

    fn append_history(&self, g: &Grant) -> Result<(), BackendError> {
        let mut line = serde_json::to_vec(g).expect("grant serializes");
        line.push(b'\n');
        self.dir.append_line(&self.history_name, &line).map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot record the grant of term {} in the leader history, so not granting it: {e}",
                g.term
            ))
        })
    }

    /// The history's last [`HISTORY_TAIL`] bytes, for observers: lines that cannot be read are
    /// skipped with a warning (once each).
    fn read_history(&self) -> Result<Vec<Grant>, BackendError> {
        let path = self.history_path();
        let Some((mut f, st)) = self.dir.open_read(&self.history_name)? else {
            return Ok(vec![]);
        };
        let size = st.st_size as u64;
        let key: HistoryKey = (
            st.st_dev,
            st.st_ino,
            st.st_mtime,
            st.st_mtime_nsec as i64,
            size,
        );
        if let Some((k, v)) = self.history_cache.lock().unwrap().as_ref()
            && *k == key
        {
            return Ok(v.clone());
        }
        let start = size.saturating_sub(HISTORY_TAIL);
        f.seek(SeekFrom::Start(start))
            .map_err(|e| io_err("cannot read", &path, e))?;
        let mut out = Vec::new();
        let mut bad: Vec<(u64, String)> = Vec::new();
        let mut first = start > 0;
        scan_lines(f, start, &mut |off, line| {
            if std::mem::take(&mut first) {
                // Began mid-line: the rest of a line that is not shown.
                return Ok(());
            }
            let b = match line {
                Line::Complete(b) if b.iter().all(u8::is_ascii_whitespace) => return Ok(()),
                Line::Complete(b) => b,
                Line::TooLong => {
                    bad.push((off, format!("over {MAX_LINE} bytes")));
                    return Ok(());
                }
                Line::Torn(b) => b,
            };
            match serde_json::from_slice::<Grant>(b) {
                Ok(g) => out.push(g),
                Err(e) => bad.push((off, e.to_string())),
            }
            Ok(())
        })
        .map_err(|e| BackendError::Unavailable(format!("cannot read {}: {e}", path.display())))?;
        if start > 0 {
            let mut w = self.warned_lines.lock().unwrap();
            if w.insert(u64::MAX) {
                tracing::warn!(
                    "{} is {size} bytes: showing only the grants in its last {HISTORY_TAIL} bytes",
                    path.display()
                );
            }
        }
        let mut w = self.warned_lines.lock().unwrap();
        for (off, why) in bad {
            if w.insert(off) {
                tracing::warn!(
                    "skipping an unreadable line of {} at byte {off}: {why}",
                    path.display()
                );
            }
        }
        *self.history_cache.lock().unwrap() = Some((key, out.clone()));
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Unavailable(format!("file backend task failed: {e}")))?
}

#[async_trait]
impl Lock for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn try_acquire_or_renew(
        &self,
        req: AcquireRequest,
        observer: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        record::try_acquire_or_renew(&self.inner, req, observer).await
    }

    async fn release(&self, term: Term) -> Result<(), BackendError> {
        record::release(&self.inner, term).await
    }

    async fn abandon(&self) {
        self.inner.alive.lock().unwrap().take();
    }

    async fn changed(&self) {
        self.inner.notify.notified().await
    }
}

#[async_trait]
impl Observe for FileBackend {
    async fn lease(&self) -> Result<LeaseView, BackendError> {
        let inner = self.inner.clone();
        blocking(move || match inner.read_current()? {
            Current::Missing => Ok(LeaseView::None),
            Current::Record(r) => Ok(LeaseView::Record(r)),
            Current::Corrupt { reason, .. } => Err(BackendError::Corrupt(format!(
                "corrupt lease file {}: {reason}",
                inner.lease_path.display()
            ))),
        })
        .await
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let inner = self.inner.clone();
        blocking(move || inner.members()).await
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        let inner = self.inner.clone();
        blocking(move || inner.read_history()).await
    }
}

#[async_trait]
impl Duties for FileBackend {
    async fn duty(&self) -> Result<Option<crate::backend::duty::DutyRecord>, BackendError> {
        self.duty_async().await
    }

    async fn record_duty(
        &self,
        rec: &crate::backend::duty::DutyRecord,
    ) -> Result<bool, BackendError> {
        self.record_duty_async(rec).await
    }

    async fn reset_duty(&self) -> Result<crate::backend::duty::Removed, BackendError> {
        self.reset_duty_async().await
    }
}
