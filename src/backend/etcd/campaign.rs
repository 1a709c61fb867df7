//! The client-side campaign, the protocol of Go's `concurrency.Election.Campaign`:
//!
//! 1. a session lease (see `session.rs`);
//! 2. the candidate key `<prefix><election>/<lease-hex>` put on it if absent (its value the
//!    participant id); its create revision is our place in line and our term if we win;
//! 3. wait until no key of the prefix has a lower create revision: read the key just ahead
//!    (the highest create revision below ours) together with our own key in one transaction,
//!    then watch that key (from the read's revision on, so nothing is missed) for its deletion,
//!    and read again;
//! 4. won = our key, with our lease and create revision, is the lowest in the prefix.
//!
//! Nothing waits in a server-side request: a dead or partitioned member only costs the time to
//! notice it (a reset connection at once, HTTP/2 pings otherwise) and to read and watch again
//! through the next endpoint. A session lost while waiting ends the campaign on that session
//! (never a "win" with a deleted key, which Go's `Campaign` can return); a new session starts
//! over at the end of the line.
//!
//! Beside campaigns, every participant watches the whole candidate prefix to wake its elector
//! and to observe how a leader's key went away (see `history.rs`).

use super::{Inner, LeaderKv, OP_TIMEOUT, Timings, escape};
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;

/// Pause before retrying a failed read or watch (on the next endpoint).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// A watch that reports nothing for this long is re-checked by a read anyway.
const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// How many given-up sessions are remembered (their keys are never taken for leaders).
const OLD_SESSIONS: usize = 16;

/// A running campaign.
pub(crate) struct CampaignHandle {
    pub(crate) cancel: CancellationToken,
    pub(crate) phase: watch::Receiver<Phase>,
}

/// Where our campaign stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Getting a session lease and putting our key.
    Starting,
    /// Our key `key` (on session `lease`, created at revision `rev`) waits in line.
    Waiting { lease: i64, key: String, rev: i64 },
    /// No key is ahead of ours: we lead with `key`, created at revision `rev`.
    Won { lease: i64, key: String, rev: i64 },
}

/// How a session's campaign ended without a cancel or a lost lease.
enum SessionEnd {
    Won,
    /// Our key is gone or is not ours (deleted by someone, or its lease expired).
    KeyGone,
}

impl Inner {
    /// Starts the campaign task unless one runs; returns its phase.
    pub(super) fn start_campaign(self: &Arc<Self>, t: Timings) -> watch::Receiver<Phase> {
        let mut g = self.campaign.lock().unwrap();
        if let Some(c) = g.as_ref() {
            return c.phase.clone();
        }
        let (tx, rx) = watch::channel(Phase::Starting);
        let cancel = CancellationToken::new();
        let inner = self.clone();
        let c2 = cancel.clone();
        tokio::spawn(async move { inner.campaign_loop(t, c2, tx).await });
        *g = Some(CampaignHandle {
            cancel,
            phase: rx.clone(),
        });
        rx
    }

    /// We leave `lease`: its key must never count as ours again; revoke it.
    fn give_up(self: &Arc<Self>, lease: i64) {
        {
            let mut old = self.old_sessions.lock().unwrap();
            old.push(lease);
            let n = old.len();
            if n > OLD_SESSIONS {
                old.drain(..n - OLD_SESSIONS);
            }
        }
        let mut s = self.session.lock().unwrap();
        if *s == Some(lease) {
            *s = None;
        }
        drop(s);
        self.revoke_in_background(lease);
    }

    /// One campaign: sessions one after the other until cancelled.
    async fn campaign_loop(
        self: Arc<Self>,
        t: Timings,
        cancel: CancellationToken,
        tx: watch::Sender<Phase>,
    ) {
        let id = self.id().to_string();
        loop {
            tx.send_replace(Phase::Starting);
            let granted = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.grant_session(t) => r,
            };
            let lease = match granted {
                Ok(l) => {
                    self.health(None);
                    l
                }
                Err(e) => {
                    self.health(Some(&e.to_string()));
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = sleep(t.retry) => continue,
                    }
                }
            };
            *self.session.lock().unwrap() = Some(lease);
            let stop = cancel.child_token();
            let lost = self.keep_session(lease, t, stop.clone());
            let key = format!("{}{lease:x}", self.keys.candidates);
            let why = tokio::select! {
                _ = cancel.cancelled() => {
                    stop.cancel();
                    self.give_up(lease);
                    return;
                }
                _ = lost.cancelled() => "lost",
                end = self.run_session(lease, &key, &tx) => match end {
                    SessionEnd::KeyGone => "gone",
                    SessionEnd::Won => tokio::select! {
                        _ = cancel.cancelled() => {
                            stop.cancel();
                            self.give_up(lease);
                            return;
                        }
                        _ = lost.cancelled() => "lost",
                    },
                },
            };
            stop.cancel();
            let doing = if matches!(*tx.borrow(), Phase::Won { .. }) {
                "leading"
            } else {
                "waiting"
            };
            tx.send_replace(Phase::Starting);
            let what = if why == "lost" {
                format!("etcd session lease {lease:x} lost")
            } else {
                format!("our candidate key {} is gone", escape(&key))
            };
            tracing::warn!(
                event = "session_lost",
                id = id.as_str(),
                "[{id}] {what} while {doing}; campaigning again with a new session"
            );
            self.give_up(lease);
            self.notify.notify_one();
        }
    }

    /// Puts our key on `lease` and waits until it is the lowest in line.
    async fn run_session(
        self: &Arc<Self>,
        lease: i64,
        key: &str,
        tx: &watch::Sender<Phase>,
    ) -> SessionEnd {
        // Name the session in our heartbeat first, so others can verify our key at once.
        let _ = timeout(OP_TIMEOUT, self.republish_member()).await;
        let rev = loop {
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    self.id(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key, None)]);
            match call!(self, "campaign", OP_TIMEOUT, |c| c.txn(txn)) {
                Ok(r) if r.succeeded() => {
                    self.health(None);
                    break r.header().map(|h| h.revision()).unwrap_or_default();
                }
                Ok(r) => {
                    // A retry after a put whose answer was lost: the key is there already.
                    let kv = r.op_responses().into_iter().find_map(|o| match o {
                        TxnOpResponse::Get(g) => g.kvs().first().map(LeaderKv::from_kv),
                        _ => None,
                    });
                    match kv {
                        Some(kv) if kv.lease == lease => break kv.rev,
                        _ => return SessionEnd::KeyGone,
                    }
                }
                Err(e) => {
                    self.health(Some(&e.to_string()));
                    sleep(RETRY_PAUSE).await;
                }
            }
        };
        tx.send_replace(Phase::Waiting {
            lease,
            key: key.to_string(),
            rev,
        });
        loop {
            // Our key and the one just ahead of it, at one revision.
            let ahead = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(rev - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1);
            let txn = Txn::new().and_then([
                TxnOp::get(key, None),
                TxnOp::get(self.keys.candidates.clone(), Some(ahead)),
            ]);
            let r = match call!(self, "read", OP_TIMEOUT, |c| c.txn(txn)) {
                Ok(r) => r,
                Err(e) => {
                    self.health(Some(&e.to_string()));
                    sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            self.health(None);
            let at = r.header().map(|h| h.revision()).unwrap_or_default();
            let mut gets = r.op_responses().into_iter().filter_map(|o| match o {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(LeaderKv::from_kv)),
                _ => None,
            });
            let mine = gets.next().flatten();
            let ahead = gets.next().flatten();
            if !mine.is_some_and(|m| m.lease == lease && m.rev == rev) {
                return SessionEnd::KeyGone;
            }
            match ahead {
                None => {
                    tx.send_replace(Phase::Won {
                        lease,
                        key: key.to_string(),
                        rev,
                    });
                    self.notify.notify_one();
                    return SessionEnd::Won;
                }
                Some(a) => self.wait_deleted(&a.key, at).await,
            }
        }
    }

    /// Returns once `key` was deleted after revision `at`, or the watch failed or went quiet
    /// for [`RECHECK_EVERY`] (the caller reads again either way).
    async fn wait_deleted(self: &Arc<Self>, key: &str, at: i64) {
        let (idx, mut c) = self.client();
        let opts = WatchOptions::new().with_start_revision(at + 1);
        let mut stream = match timeout(OP_TIMEOUT, c.watch(key, Some(opts))).await {
            Ok(Ok(s)) => s,
            _ => {
                self.skip(idx);
                sleep(RETRY_PAUSE).await;
                return;
            }
        };
        loop {
            match timeout(RECHECK_EVERY, stream.message()).await {
                Err(_) => return,
                Ok(Ok(Some(resp))) => {
                    if resp.canceled() || resp.compact_revision() > 0 {
                        sleep(RETRY_PAUSE).await;
                        return;
                    }
                    if let Some(e) = resp
                        .events()
                        .iter()
                        .find(|e| e.event_type() == EventType::Delete)
                    {
                        // Whichever watch sees a leader go first records it (the history of
                        // our grant names it).
                        if let Some(kv) = e.kv() {
                            self.observe_delete(kv.key(), kv.mod_revision());
                        }
                        return;
                    }
                }
                Ok(_) => {
                    // The stream ended (member gone, no leader, connection cut).
                    self.skip(idx);
                    sleep(RETRY_PAUSE).await;
                    return;
                }
            }
        }
    }

    /// Follows every change under the candidate prefix and wakes the elector; notes how a
    /// leader key went away; re-creates the watch after errors.
    pub(super) async fn watch_loop(self: Arc<Self>) {
        loop {
            let (idx, mut c) = self.client();
            let started = timeout(
                OP_TIMEOUT,
                c.watch(
                    self.keys.candidates.clone(),
                    Some(WatchOptions::new().with_prefix().with_prev_key()),
                ),
            )
            .await;
            if let Ok(Ok(mut stream)) = started {
                // Changes may have been missed while there was no watch.
                self.notify.notify_one();
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.canceled() {
                        break;
                    }
                    self.notify.notify_one();
                    for ev in resp.events() {
                        if ev.event_type() == EventType::Delete
                            && let Some(kv) = ev.kv()
                        {
                            self.observe_delete(kv.key(), kv.mod_revision());
                        }
                    }
                }
            }
            // The watch ended (member gone, no leader, connection cut): try the next endpoint.
            self.skip(idx);
            sleep(RETRY_PAUSE).await;
        }
    }
}
