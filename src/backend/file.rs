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
//! - `D/E.members/<id>.json`: heartbeats.
//!
//! Followers wake on inotify events for the lease file (the `notify` crate) and on the alive
//! lock becoming free; the retry period is only a backstop.
//!
//! Locks are std's `File::lock`/`try_lock` (flock(2) on Linux, stable since Rust 1.89).
//! A holder on another host (a shared directory) is judged by expiry only.

use super::{AcquireRequest, Backend, BackendError, LeaseView, Outcome, validate_election_name};
use crate::election::lease::{self, Current, Liveness, Observer};
use crate::election::{Grant, Identity, LeaseRecord, Member, Term};
use async_trait::async_trait;
use jiff::Timestamp;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a CAS may wait for the short lease lock before giving up for this round.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The file backend. Cheap to clone.
#[derive(Clone)]
pub struct FileBackend {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    me: Identity,
    lease_path: PathBuf,
    lock_path: PathBuf,
    alive_path: PathBuf,
    history_path: PathBuf,
    members_dir: PathBuf,
    /// The alive lock, while we lead.
    alive: Mutex<Option<File>>,
    notify: Arc<Notify>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    waker: Mutex<Option<mpsc::Sender<()>>>,
    armed: Arc<AtomicBool>,
    /// When the waker saw the alive lock become free.
    freed_at: Arc<Mutex<Option<Timestamp>>>,
    warned_corrupt: Mutex<Option<u64>>,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> BackendError {
    BackendError::Unavailable(format!("{what} {}: {e}", path.display()))
}

impl FileBackend {
    /// Opens (creating if needed) the election `election` in `dir` for participant `me`.
    /// Fails with a clear message if the directory cannot be created or written.
    pub fn open(dir: &Path, election: &str, me: Identity) -> Result<Self, BackendError> {
        validate_election_name(election)?;
        fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{election}.lock")))
            .map_err(|e| io_err("cannot write in", dir, e))?;
        Ok(FileBackend::open_unchecked(dir, election, me))
    }

    /// Opens read-only for observers (`crown status`, `crown history`, the dashboard): does not
    /// create anything.
    pub fn observe(dir: &Path, election: &str) -> Result<Self, BackendError> {
        validate_election_name(election)?;
        if !dir.is_dir() {
            return Err(BackendError::Unavailable(format!(
                "no election directory {} (start a participant with `crown run --dir {}` first)",
                dir.display(),
                dir.display()
            )));
        }
        let me = Identity {
            id: String::new(),
            pid: std::process::id(),
            host: String::new(),
        };
        Ok(FileBackend::open_unchecked(dir, election, me))
    }

    fn open_unchecked(dir: &Path, election: &str, me: Identity) -> Self {
        let inner = Inner {
            dir: dir.to_path_buf(),
            me,
            lease_path: dir.join(format!("{election}.lease")),
            lock_path: dir.join(format!("{election}.lock")),
            alive_path: dir.join(format!("{election}.alive")),
            history_path: dir.join(format!("{election}.history.jsonl")),
            members_dir: dir.join(format!("{election}.members")),
            alive: Mutex::new(None),
            notify: Arc::new(Notify::new()),
            watcher: Mutex::new(None),
            waker: Mutex::new(None),
            armed: Arc::new(AtomicBool::new(false)),
            freed_at: Arc::new(Mutex::new(None)),
            warned_corrupt: Mutex::new(None),
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
            BackendError::Unavailable(format!("cannot watch {}: {e}", self.inner.dir.display()))
        })?;
        w.watch(&self.inner.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| {
                BackendError::Unavailable(format!("cannot watch {}: {e}", self.inner.dir.display()))
            })?;
        *guard = Some(w);
        Ok(())
    }

    /// The election directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Path of the lease record.
    pub fn lease_path(&self) -> &Path {
        &self.inner.lease_path
    }
}

impl Inner {
    fn cas_lock(&self, deadline: Option<std::time::Instant>) -> Result<File, BackendError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| io_err("cannot open", &self.lock_path, e))?;
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        let give_up = deadline.map_or(give_up, |d| d.min(give_up));
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(f),
                Err(TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= give_up {
                        return Err(BackendError::Conflict(format!(
                            "{} is busy (another participant is stuck inside its compare-and-swap)",
                            self.lock_path.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(io_err("cannot lock", &self.lock_path, e));
                }
            }
        }
    }

    fn read_current(&self) -> Result<Current, BackendError> {
        read_current(&self.lease_path)
    }

    fn term_floor(&self) -> Term {
        read_history(&self.history_path)
            .map(|h| h.iter().map(|g| g.term).max().unwrap_or_default())
            .unwrap_or_default()
    }

    fn write_record(&self, rec: &LeaseRecord) -> Result<(), BackendError> {
        let mut bytes = serde_json::to_vec_pretty(rec).expect("record serializes");
        bytes.push(b'\n');
        write_atomic(&self.dir, &self.lease_path, &bytes)
    }

    fn append_history(&self, g: &Grant) -> Result<(), BackendError> {
        let mut line = serde_json::to_vec(g).expect("grant serializes");
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.history_path)
            .map_err(|e| io_err("cannot open", &self.history_path, e))?;
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .map_err(|e| io_err("cannot append to", &self.history_path, e))
    }

    fn open_alive(&self) -> Result<File, BackendError> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.alive_path)
            .map_err(|e| io_err("cannot open", &self.alive_path, e))
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
            tracing::warn!("cannot write {}: {e}", self.alive_path.display());
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
            let path = self.alive_path.clone();
            let notify = self.notify.clone();
            let armed = self.armed.clone();
            let freed_at = self.freed_at.clone();
            let spawned = std::thread::Builder::new()
                .name("crown-alive-waiter".into())
                .spawn(move || {
                    while rx.recv().is_ok() {
                        let Ok(f) = OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .read(true)
                            .write(true)
                            .open(&path)
                        else {
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

    fn transact(
        &self,
        req: AcquireRequest,
        observer: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        let deadline = req.deadline.map(|d| d.into_std());
        let lock = self.cas_lock(deadline)?;
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            // Our renew deadline passed while we waited: write nothing in this term.
            return Err(BackendError::Conflict(
                "renew deadline passed before the write".into(),
            ));
        }
        let cur = self.read_current()?;
        if let Current::Corrupt {
            fingerprint,
            reason,
        } = &cur
        {
            let mut w = self.warned_corrupt.lock().unwrap();
            if *w != Some(*fingerprint) {
                tracing::warn!(
                    "corrupt lease file {}: {reason}; treating it as held until it stays unchanged for the lease duration, then replacing it with a higher term",
                    self.lease_path.display()
                );
                *w = Some(*fingerprint);
            }
        }
        let leading_this = |r: &LeaseRecord| req.held == Some(r.term) && r.holder == self.me.id;
        // Liveness probe: only for a holder on this host that is not us.
        let mut probe: Option<File> = None;
        let mut holder_lock_held = false;
        let mut liveness = Liveness::Unknown;
        let freed_at = self.freed_at.lock().unwrap().take();
        if let Current::Record(r) = &cur
            && r.is_held()
            && !leading_this(r)
            && r.host == self.me.host
        {
            let f = self.open_alive()?;
            match f.try_lock() {
                Ok(()) => {
                    let mut s = String::new();
                    let _ = (&f).read_to_string(&mut s);
                    if s.trim().parse::<u64>().ok() == Some(r.term.0) {
                        liveness = Liveness::HolderGone {
                            noticed_at: freed_at,
                        };
                    }
                    probe = Some(f);
                }
                Err(TryLockError::WouldBlock) => holder_lock_held = true,
                Err(TryLockError::Error(e)) => {
                    tracing::warn!("cannot probe {}: {e}", self.alive_path.display())
                }
            }
        }
        let r = lease::Request {
            me: &self.me,
            held: req.held,
            hold_off: req.hold_off,
            lease_duration: req.lease_duration,
            now: req.now,
            wall_now: Timestamp::now(),
        };
        let mut decision = lease::decide(&cur, observer, &r, liveness);
        if let lease::Decision::Acquire { .. } = decision {
            decision = lease::above_history(decision, self.term_floor());
        }
        let outcome = match decision {
            lease::Decision::Acquire { record, grant } => {
                let alive = self.take_alive(probe.take(), record.term);
                self.write_record(&record)?;
                if let Err(e) = self.append_history(&grant) {
                    tracing::warn!("{e}");
                }
                *self.alive.lock().unwrap() = alive;
                Outcome::Acquired {
                    term: record.term,
                    grant,
                }
            }
            lease::Decision::Renew { record } => {
                let mut alive = self.alive.lock().unwrap();
                if alive.is_none() {
                    *alive = self.take_alive(None, record.term);
                }
                drop(alive);
                self.write_record(&record)?;
                Outcome::Renewed { term: record.term }
            }
            lease::Decision::Follow { leader, expires_in } => {
                if holder_lock_held {
                    self.arm_waker();
                }
                Outcome::Following {
                    leader,
                    recheck_in: expires_in,
                }
            }
            lease::Decision::Lost { leader } => {
                self.alive.lock().unwrap().take();
                Outcome::Lost { leader }
            }
        };
        drop(probe);
        drop(lock);
        Ok(outcome)
    }

    fn release(&self, term: Term) -> Result<(), BackendError> {
        let lock = self.cas_lock(None)?;
        let cur = self.read_current()?;
        let res = match lease::release(&cur, &self.me, term, Timestamp::now()) {
            Some(rec) => self.write_record(&rec),
            None => Ok(()),
        };
        self.alive.lock().unwrap().take();
        drop(lock);
        res
    }
}

/// Reads the lease record: missing, corrupt (with a fingerprint), or a record.
pub fn read_current(path: &Path) -> Result<Current, BackendError> {
    match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Current::Missing),
        Err(e) => Err(io_err("cannot read", path, e)),
        Ok(bytes) => match serde_json::from_slice::<LeaseRecord>(&bytes) {
            Ok(r) => Ok(Current::Record(r)),
            Err(e) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                let reason = if bytes.is_empty() {
                    "file is empty".to_string()
                } else {
                    e.to_string()
                };
                Ok(Current::Corrupt {
                    fingerprint: h.finish(),
                    reason,
                })
            }
        },
    }
}

fn read_history(path: &Path) -> Result<Vec<Grant>, BackendError> {
    let text = match fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io_err("cannot read", path, e)),
        Ok(t) => t,
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Grant>(line) {
            Ok(g) => out.push(g),
            Err(e) => tracing::warn!(
                "skipping unreadable line {} of {}: {e}",
                i + 1,
                path.display()
            ),
        }
    }
    Ok(out)
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("crown");
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("cannot write", path, e)
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Unavailable(format!("file backend task failed: {e}")))?
}

#[async_trait]
impl Backend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn try_acquire_or_renew(
        &self,
        req: AcquireRequest,
        observer: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        let inner = self.inner.clone();
        let mut obs = std::mem::take(observer);
        let (res, obs) = tokio::task::spawn_blocking(move || {
            let r = inner.transact(req, &mut obs);
            (r, obs)
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("file backend task failed: {e}")))?;
        *observer = obs;
        res
    }

    async fn release(&self, term: Term) -> Result<(), BackendError> {
        let inner = self.inner.clone();
        blocking(move || inner.release(term)).await
    }

    async fn abandon(&self) {
        self.inner.alive.lock().unwrap().take();
    }

    async fn changed(&self) {
        self.inner.notify.notified().await
    }

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

    async fn publish_member(&self, member: &Member) -> Result<(), BackendError> {
        let inner = self.inner.clone();
        let m = member.clone();
        blocking(move || {
            fs::create_dir_all(&inner.members_dir)
                .map_err(|e| io_err("cannot create", &inner.members_dir, e))?;
            let path = inner.members_dir.join(format!("{}.json", m.id));
            let mut bytes = serde_json::to_vec(&m).expect("member serializes");
            bytes.push(b'\n');
            write_atomic(&inner.members_dir, &path, &bytes)
        })
        .await
    }

    async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        let path = self.inner.members_dir.join(format!("{id}.json"));
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", &path, e)),
            _ => Ok(()),
        })
        .await
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let dir = self.inner.members_dir.clone();
        blocking(move || {
            let rd = match fs::read_dir(&dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
                Err(e) => return Err(io_err("cannot list", &dir, e)),
                Ok(rd) => rd,
            };
            let mut out = Vec::new();
            for entry in rd.flatten() {
                let p = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                match fs::read(&p).map(|b| serde_json::from_slice::<Member>(&b)) {
                    Ok(Ok(m)) => out.push(m),
                    Ok(Err(e)) => {
                        tracing::warn!("skipping unreadable heartbeat {}: {e}", p.display())
                    }
                    Err(_) => {} // removed while we listed
                }
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        })
        .await
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        let path = self.inner.history_path.clone();
        blocking(move || read_history(&path)).await
    }
}
