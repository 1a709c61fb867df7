//! An in-memory backend for fast unit tests of the core (in addition to, never instead of,
//! the real-backend tests). Handles share one store; each has its own identity, a wall-clock
//! skew to prove that skew never causes a takeover, and a switch that makes it unreachable.

use super::record::{self, Intent, RecordStore, Write};
use super::{AcquireRequest, BackendError, Duties, Heartbeat, LeaseView, Lock, Observe, Outcome};
use crate::election::lease::{Current, Observer};
use crate::election::{Grant, Identity, Member, Term};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
struct Store {
    current: Option<crate::election::LeaseRecord>,
    history: Vec<Grant>,
    members: BTreeMap<String, Member>,
    /// Record writes so far: the version a compare-and-swap checks.
    writes: u64,
    watchers: Vec<Arc<Notify>>,
}

/// A pending delay of the next read, and who to tell when it has been decided on.
type SlowRead = (Duration, Arc<Notify>);

/// A handle on a shared in-memory store.
#[derive(Clone)]
pub struct MemoryBackend {
    store: Arc<Mutex<Store>>,
    me: Identity,
    skew: SignedDuration,
    unreachable: Arc<AtomicBool>,
    forbidden: Arc<AtomicBool>,
    notify: Arc<Notify>,
    slow_read: Arc<Mutex<Option<SlowRead>>>,
}

impl MemoryBackend {
    /// A new, empty store, with a handle for `me`.
    pub fn new(me: Identity) -> Self {
        let notify = Arc::new(Notify::new());
        let store = Store {
            watchers: vec![notify.clone()],
            ..Store::default()
        };
        MemoryBackend {
            store: Arc::new(Mutex::new(store)),
            me,
            skew: SignedDuration::ZERO,
            unreachable: Arc::new(AtomicBool::new(false)),
            forbidden: Arc::new(AtomicBool::new(false)),
            notify,
            slow_read: Arc::default(),
        }
    }

    /// Another participant's handle on the same store.
    pub fn handle(&self, me: Identity) -> Self {
        let notify = Arc::new(Notify::new());
        self.store.lock().unwrap().watchers.push(notify.clone());
        MemoryBackend {
            store: self.store.clone(),
            me,
            skew: SignedDuration::ZERO,
            unreachable: Arc::new(AtomicBool::new(false)),
            forbidden: Arc::new(AtomicBool::new(false)),
            notify,
            slow_read: Arc::default(),
        }
    }

    /// This handle's wall clock runs `skew` off the true time.
    pub fn with_skew(mut self, skew: SignedDuration) -> Self {
        self.skew = skew;
        self
    }

    /// Makes every call of this handle fail (a partition) or succeed again.
    pub fn set_unreachable(&self, v: bool) {
        self.unreachable.store(v, Ordering::SeqCst);
    }

    /// Makes every call of this handle fail as forbidden (missing RBAC), or not.
    pub fn set_forbidden(&self, v: bool) {
        self.forbidden.store(v, Ordering::SeqCst);
    }

    /// Delays this handle's next campaign attempt by `by` between the elector's request and the
    /// read (a slow or partitioned network that heals); the returned `Notify` fires when that
    /// read has been decided on.
    pub fn delay_next_read(&self, by: Duration) -> Arc<Notify> {
        let done = Arc::new(Notify::new());
        *self.slow_read.lock().unwrap() = Some((by, done.clone()));
        done
    }

    /// The stored record (for assertions).
    pub fn record(&self) -> Option<crate::election::LeaseRecord> {
        self.store.lock().unwrap().current.clone()
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.forbidden.load(Ordering::SeqCst) {
            return Err(BackendError::Forbidden("memory backend: forbidden".into()));
        }
        if self.unreachable.load(Ordering::SeqCst) {
            Err(BackendError::Unavailable(
                "memory backend: partitioned".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// What a memory write compares against: the store's write count when the record was read.
/// Also tells a [`MemoryBackend::delay_next_read`] caller, when dropped, that the attempt was
/// decided on.
pub struct Version {
    writes: u64,
    _done: Option<NotifyOnDrop>,
}

struct NotifyOnDrop(Arc<Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

#[async_trait]
impl RecordStore for MemoryBackend {
    type Version = Version;

    fn me(&self) -> &Identity {
        &self.me
    }

    fn wall_now(&self) -> Timestamp {
        Timestamp::now() + self.skew
    }

    async fn read(&self, intent: Intent) -> Result<(Current, Version), BackendError> {
        let slow = match intent {
            Intent::Attempt { .. } => self.slow_read.lock().unwrap().take(),
            Intent::Release => None,
        };
        let done = match slow {
            Some((by, done)) => {
                let done = NotifyOnDrop(done);
                tokio::time::sleep(by).await;
                Some(done)
            }
            None => None,
        };
        self.check()?;
        let store = self.store.lock().unwrap();
        let version = Version {
            writes: store.writes,
            _done: done,
        };
        Ok((current(&store), version))
    }

    async fn floor(&self, _: &mut Version) -> Result<Option<Term>, BackendError> {
        let store = self.store.lock().unwrap();
        Ok(Some(
            store.history.last().map(|g| g.term).unwrap_or(Term(0)),
        ))
    }

    async fn write(&self, version: &mut Version, write: Write<'_>) -> Result<(), BackendError> {
        let mut store = self.store.lock().unwrap();
        if store.writes != version.writes {
            return Err(BackendError::Conflict(
                "memory backend: the record changed since it was read".into(),
            ));
        }
        let record = match write {
            Write::Acquire { record, grant } => {
                store.history.push(grant.clone());
                record
            }
            Write::Renew { record } | Write::Release { record } => record,
        };
        store.current = Some(record.clone());
        store.writes += 1;
        version.writes = store.writes;
        wake_all(&store);
        Ok(())
    }
}

fn current(store: &Store) -> Current {
    store
        .current
        .clone()
        .map(Current::Record)
        .unwrap_or(Current::Missing)
}

fn wake_all(store: &Store) {
    for w in &store.watchers {
        w.notify_one();
    }
}

#[async_trait]
impl Lock for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn try_acquire_or_renew(
        &self,
        req: AcquireRequest,
        observer: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        record::try_acquire_or_renew(self, req, observer).await
    }

    async fn release(&self, term: Term) -> Result<(), BackendError> {
        record::release(self, term).await
    }

    async fn changed(&self) {
        self.notify.notified().await
    }
}

#[async_trait]
impl Observe for MemoryBackend {
    async fn lease(&self) -> Result<LeaseView, BackendError> {
        self.check()?;
        Ok(self
            .record()
            .map(LeaseView::Record)
            .unwrap_or(LeaseView::None))
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        self.check()?;
        Ok(self
            .store
            .lock()
            .unwrap()
            .members
            .values()
            .cloned()
            .collect())
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        self.check()?;
        Ok(self.store.lock().unwrap().history.clone())
    }
}

#[async_trait]
impl Heartbeat for MemoryBackend {
    async fn publish_member(&self, member: &Member) -> Result<(), BackendError> {
        self.check()?;
        let mut s = self.store.lock().unwrap();
        s.members.insert(member.id.clone(), member.clone());
        Ok(())
    }

    async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        self.check()?;
        self.store.lock().unwrap().members.remove(id);
        Ok(())
    }
}

#[async_trait]
impl Duties for MemoryBackend {}
