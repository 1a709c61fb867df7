//! `--notify-url URL`: POSTs `{"leader", "id", "term", "election"}` on every change of our
//! role, in order, from its own task and queue (never blocking the elector), each retried
//! with bounded backoff (100 ms doubling to 5 s, 8 attempts) before it is dropped.

use crate::election::{Event, Term};
use serde::Serialize;
use std::time::Duration;
use tokio::sync::mpsc;

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

const ATTEMPTS: u32 = 8;

/// The queue to the sender task.
pub struct Notifier {
    tx: mpsc::UnboundedSender<Notice>,
    id: String,
    election: String,
    task: tokio::task::JoinHandle<()>,
}

impl Notifier {
    /// Starts the sender task for `url`.
    pub fn spawn(url: String, id: String, election: String) -> Notifier {
        let (tx, mut rx) = mpsc::unbounded_channel::<Notice>();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        let task = tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                let mut backoff = Duration::from_millis(100);
                for attempt in 1..=ATTEMPTS {
                    let r = client.post(&url).json(&n).send().await;
                    let err = match r {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) => format!("HTTP {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    if attempt == ATTEMPTS {
                        tracing::warn!(
                            event = "notify_failed",
                            id = n.id.as_str(),
                            "[{}] dropping notification (leader {}, term {}) after {ATTEMPTS} attempts: {err}",
                            n.id,
                            n.leader,
                            n.term
                        );
                        break;
                    }
                    tracing::debug!("notify attempt {attempt} failed: {err}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        });
        Notifier {
            tx,
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
        let _ = self.tx.send(Notice {
            leader,
            id: self.id.clone(),
            term,
            election: self.election.clone(),
        });
    }

    /// Sends what is queued, waiting at most `bound`.
    pub async fn finish(self, bound: Duration) {
        drop(self.tx);
        let _ = tokio::time::timeout(bound, self.task).await;
    }
}
