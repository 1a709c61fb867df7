//! An in-memory backend for fast unit tests of the core (in addition to, never instead of,
//! the real-backend tests). Handles share one store; each has its own identity, a wall-clock
//! skew to prove that skew never causes a takeover, and a switch that makes it unreachable.

use super::{AcquireRequest, BackendError, Duties, Heartbeat, LeaseView, Lock, Observe, Outcome};
use crate::election::lease::{self, Current, Liveness, Observer};
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

    /// One campaign attempt against the store (the lease rule, under the store's lock).
    fn attempt(
        &self,
        req: AcquireRequest,
        observer: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        self.check()?;
        let mut store = self.store.lock().unwrap();
        let cur = current(&store);
        let floor = store.history.last().map(|g| g.term).unwrap_or(Term(0));
        let r = lease::Request {
            me: &self.me,
            held: req.held,
            hold_off: req.hold_off,
            lease_duration: req.lease_duration,
            // Observed when the read returned, not when the attempt began.
            now: tokio::time::Instant::now(),
            wall_now: self.wall_now(),
        };
        let decision =
            lease::above_history(lease::decide(&cur, observer, &r, Liveness::Unknown), floor);
        Ok(match decision {
            lease::Decision::Acquire { record, grant } => {
                let term = record.term;
                store.current = Some(record);
                store.history.push(grant.clone());
                wake_all(&store);
                Outcome::Acquired { term, grant }
            }
            lease::Decision::Renew { record } => {
                let term = record.term;
                store.current = Some(record);
                wake_all(&store);
                Outcome::Renewed { term }
            }
            lease::Decision::Follow { leader, expires_in } => Outcome::Following {
                leader,
                recheck_in: expires_in,
            },
            lease::Decision::Lost { leader } => Outcome::Lost { leader },
            lease::Decision::Refuse { reason } => return Err(BackendError::Corrupt(reason)),
        })
    }

    fn wall_now(&self) -> Timestamp {
        Timestamp::now() + self.skew
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
        let slow = self.slow_read.lock().unwrap().take();
        if let Some((by, _)) = &slow {
            tokio::time::sleep(*by).await;
        }
        let out = self.attempt(req, observer);
        if let Some((_, done)) = slow {
            done.notify_one();
        }
        out
    }

    async fn release(&self, term: Term) -> Result<(), BackendError> {
        self.check()?;
        let mut store = self.store.lock().unwrap();
        if let Some(rec) = lease::release(&current(&store), &self.me, term, self.wall_now()) {
            store.current = Some(rec);
            wake_all(&store);
        }
        Ok(())
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
