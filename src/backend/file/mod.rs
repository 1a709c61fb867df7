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

mod duty;
mod fsx;
mod history;

pub use fsx::{SafeDir, Sharing};

use super::record::{self, Finish, Intent, RecordStore};
use super::{
    AcquireRequest, BackendError, Duties, Heartbeat, LeaseView, Lock, Observe, Outcome,
    validate_election_name,
};
use crate::election::lease::{Current, Liveness, Observer};
use crate::election::{Grant, Identity, LeaseRecord, Member, Term};
use async_trait::async_trait;
use fsx::Bounded;
use history::{FloorCache, Line, scan_floor, scan_lines};
use jiff::Timestamp;
use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a CAS may wait for the short lease lock before giving up for this round.
const LOCK_WAIT: Duration = Duration::from_secs(2);

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
    fn cas_lock(&self, deadline: Option<std::time::Instant>) -> Result<File, BackendError> {
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

    fn read_current(&self) -> Result<Current, BackendError> {
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

    fn open_alive(&self) -> Result<File, BackendError> {
        self.dir.open_rw(&self.alive_name)
    }

    /// Tries to take the alive lock and write `term` into it.
    fn take_alive(&self, f: Option<File>, term: Term) -> Option<File> {
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
    fn arm_waker(&self) {
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

    /// The members directory (created if `create`); `None` if missing.
    fn members_dir(&self, create: bool) -> Result<Option<Arc<SafeDir>>, BackendError> {
        let mut m = self.members.lock().unwrap();
        if let Some(d) = m.as_ref() {
            return Ok(Some(d.clone()));
        }
        let d = self.dir.subdir(&self.members_name, create)?.map(Arc::new);
        m.clone_from(&d);
        Ok(d)
    }

    fn members(&self) -> Result<Vec<Member>, BackendError> {
        let Some(dir) = self.members_dir(false)? else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        for name in dir.list()? {
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let p = dir.path().join(&name);
            match dir.read_bounded(&name, MAX_RECORD) {
                Ok(Some(Bounded::Data(b))) => match serde_json::from_slice::<Member>(&b) {
                    Ok(m) => out.push(m),
                    Err(e) => tracing::warn!("skipping unreadable heartbeat {}: {e}", p.display()),
                },
                Ok(Some(Bounded::TooBig { size, .. })) => tracing::warn!(
                    "skipping heartbeat {}: {size} bytes, over the {MAX_RECORD}-byte limit",
                    p.display()
                ),
                Ok(None) => {} // removed while we listed
                Err(e) => tracing::warn!("skipping heartbeat: {e}"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
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
struct Txn {
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
impl Heartbeat for FileBackend {
    async fn publish_member(&self, member: &Member) -> Result<(), BackendError> {
        let inner = self.inner.clone();
        let m = member.clone();
        blocking(move || {
            validate_election_name(&m.id)?;
            let dir = inner.members_dir(true)?.expect("created");
            let mut bytes = serde_json::to_vec(&m).expect("member serializes");
            bytes.push(b'\n');
            dir.write_atomic(&format!("{}.json", m.id), &bytes)
        })
        .await
    }

    async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        let inner = self.inner.clone();
        let name = format!("{id}.json");
        blocking(move || match inner.members_dir(false)? {
            Some(dir) => dir.remove(&name),
            None => Ok(()),
        })
        .await
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
