//! `--notify-url URL`: POSTs `{"leader", "id", "term", "election"}` on every change of our
//! role, in order, from its own task and queue (never blocking the elector).
//!
//! Delivery never lets a failing receiver hold back what comes after:
//! - every attempt is bounded ([`ATTEMPT_TIMEOUT`], connecting included);
//! - a notice is retried with backoff (100 ms doubling, [`ATTEMPTS`] attempts) only while no
//!   newer notice waits: as soon as one does, the failing one is dropped (it is stale anyway,
//!   the newer one says where we are now);
//! - while the receiver fails, a queued notice with a newer one behind it is dropped without
//!   an attempt: the newest waits for at most one attempt of an older one;
//! - the queue holds at most [`QUEUE`] notices; when full the oldest is dropped;
//! - at exit the last notice (the final `leader: false`) is attempted within the exit bound;
//! - every notice dropped, for whatever reason, is logged (`notify_dropped`).
//!
//! Deliveries, failed attempts and drops are counted on `/metrics` ([`WebhookCounters`]).

use super::metrics::WebhookCounters;
use crate::election::{Event, Term};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One notification.
#[derive(Clone, Debug, Serialize)]
pub struct Notice {
    /// Whether we lead now.
    pub leader: bool,
    /// Our id.
    pub id: String,
    /// The term granted or ended.
    pub term: Term,
    /// Election name.
    pub election: String,
}

/// Attempts per notice (while no newer notice waits).
pub const ATTEMPTS: u32 = 5;
/// Bound of one attempt, connecting included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Notices queued at most (the oldest is dropped beyond).
pub const QUEUE: usize = 16;

#[derive(Default)]
struct Queue {
    items: VecDeque<Notice>,
    /// The notice being delivered (for the log line if the exit bound cuts it off).
    current: Option<Notice>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    q: Mutex<Queue>,
    wake: Notify,
    counters: WebhookCounters,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn dropped(shared: &Shared, n: &Notice, why: &str) {
    shared.counters.dropped.inc();
    tracing::warn!(
        event = "notify_dropped",
        id = n.id.as_str(),
        term = n.term.0,
        leader = n.leader,
        "[{}] webhook notice (leader {}, term {}) dropped: {why}",
        n.id,
        n.leader,
        n.term
    );
}

/// The queue to the sender task.
pub struct Notifier {
    shared: Arc<Shared>,
    id: String,
    election: String,
    task: tokio::task::JoinHandle<()>,
}

impl Notifier {
    /// Starts the sender task for `url`, counting into `counters`.
    pub fn spawn(url: String, id: String, election: String, counters: WebhookCounters) -> Notifier {
        let shared = Arc::new(Shared {
            counters,
            ..Shared::default()
        });
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(ATTEMPT_TIMEOUT)
            .build()
            .unwrap_or_default();
        let task = tokio::spawn(deliver_all(shared.clone(), client, url));
        Notifier {
            shared,
            id,
            election,
            task,
        }
    }

    /// Queues a notification if `ev` changes our role.
    pub fn observe(&self, ev: &Event) {
        let (leader, term) = match ev {
            Event::StartedLeading { term } => (true, *term),
            Event::StoppedLeading { term, .. } => (false, *term),
            _ => return,
        };
        let n = Notice {
            leader,
            id: self.id.clone(),
            term,
            election: self.election.clone(),
        };
        let mut q = self.shared.lock();
        if q.items.len() >= QUEUE
            && let Some(old) = q.items.pop_front()
        {
            dropped(&self.shared, &old, &format!("queue full ({QUEUE} waiting)"));
        }
        q.items.push_back(n);
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Delivers what is queued (the final notice last, older failing ones dropped), waiting
    /// at most `bound`; logs whatever is left undelivered.
    pub async fn finish(self, bound: Duration) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let mut task = self.task;
        if tokio::time::timeout(bound, &mut task).await.is_err() {
            task.abort();
            let mut q = self.shared.lock();
            let left: Vec<Notice> = q
                .current
                .take()
                .into_iter()
                .chain(q.items.drain(..))
                .collect();
            drop(q);
            for n in left {
                dropped(
                    &self.shared,
                    &n,
                    &format!("crown is exiting and the receiver did not answer within {bound:?}"),
                );
            }
        }
    }
}

async fn deliver_all(shared: Arc<Shared>, client: reqwest::Client, url: String) {
    // The last notice failed: while the receiver keeps failing, a notice with a newer one
    // behind it is dropped without an attempt (only the newest is worth the wait).
    let mut failing = false;
    loop {
        enum Next {
            Send(Notice),
            Skip(Notice),
            Wait,
            Done,
        }
        let next = {
            let mut q = shared.lock();
            match q.items.pop_front() {
                Some(n) if failing && !q.items.is_empty() => Next::Skip(n),
                Some(n) => {
                    q.current = Some(n.clone());
                    Next::Send(n)
                }
                None if q.closed => Next::Done,
                None => Next::Wait,
            }
        };
        let n = match next {
            Next::Send(n) => n,
            Next::Skip(n) => {
                dropped(
                    &shared,
                    &n,
                    "the receiver is failing and a newer notice is waiting",
                );
                continue;
            }
            Next::Wait => {
                shared.wake.notified().await;
                continue;
            }
            Next::Done => break,
        };
        failing = !deliver(&shared, &client, &url, &n).await;
        shared.lock().current = None;
    }
}

/// Tries `n` until it is delivered (true), a newer notice waits, or its attempts run out.
async fn deliver(shared: &Shared, client: &reqwest::Client, url: &str, n: &Notice) -> bool {
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let r = client.post(url).json(n).send().await;
        let err = match r {
            Ok(r) if r.status().is_success() => {
                shared.counters.deliveries.inc();
                tracing::debug!(
                    "[{}] webhook notice (leader {}, term {}) delivered",
                    n.id,
                    n.leader,
                    n.term
                );
                return true;
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        shared.counters.failures.inc();
        let newer = !shared.lock().items.is_empty();
        if newer {
            dropped(
                shared,
                n,
                &format!("attempt {attempt} failed ({err}) and a newer notice is waiting"),
            );
            return false;
        }
        if attempt == ATTEMPTS {
            dropped(
                shared,
                n,
                &format!("{ATTEMPTS} attempts failed, the last: {err}"),
            );
            return false;
        }
        tracing::debug!("[{}] webhook attempt {attempt} failed: {err}", n.id);
        // Wait for the backoff, or less if a newer notice arrives (then give up on this one).
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.wake.notified() => {
                // A newer notice (or the exit, which only shortens the wait).
                let newer = !shared.lock().items.is_empty();
                if newer {
                    dropped(shared, n, &format!("attempt {attempt} failed ({err}) and a newer notice is waiting"));
                    return false;
                }
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    false
}
