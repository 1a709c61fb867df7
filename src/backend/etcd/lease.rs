//! What the elector calls: acquire (start or follow the campaign), renew (one keep-alive and a
//! read of our key, at once), release (resign in one transaction with the resign record), and
//! the one-shot views for `crown status` / `crown history`.

use super::campaign::Phase;
use super::history;
use super::seen::HoldWhy;
use super::{EtcdBackend, OP_TIMEOUT, connection, escape};
use crate::backend::{
    AcquireRequest, BackendError, Duties, ElectionView, Heartbeat, LeaseView, Lock, Observe,
    Outcome, Resigned,
};
use crate::election::lease::Observer;
use crate::election::{Grant, Member, Term};
use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use jiff::Timestamp;
use std::time::Duration;
use tokio::time::{Instant, timeout};

impl EtcdBackend {
    async fn acquire(&self, req: &AcquireRequest) -> Result<Outcome, BackendError> {
        let t = self.timings(req);
        let me = self.inner.me.clone().expect("participant");
        let rx = match self.phase() {
            Some((rx, _)) => Some(rx),
            None if !req.hold_off => Some(self.inner.start_campaign(t)),
            None => None,
        };
        let limit = t.retry.clamp(Duration::from_millis(500), OP_TIMEOUT);
        for _ in 0..2 {
            let phase = rx.as_ref().map(|rx| rx.borrow().clone());
            if let Some(Phase::Won { lease, key, rev }) = &phase {
                let got = call!(self.inner, "read", limit, |c| c.get(key.clone(), None))?;
                let ours = got
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == *rev && kv.lease() == *lease);
                if ours {
                    if let Some(wait) = self.hold(req, *rev).await {
                        return Ok(Outcome::Following {
                            leader: None,
                            recheck_in: Some(wait),
                        });
                    }
                    let term = Term(*rev as u64);
                    let grant = Grant {
                        term,
                        holder: me.id.clone(),
                        acquired_at: Timestamp::now(),
                        pid: Some(me.pid),
                        host: Some(me.host.clone()),
                        previous_holder: None,
                        previous_end: None,
                        gap_ms: None,
                    };
                    let inner = self.inner.clone();
                    let g = grant.clone();
                    tokio::spawn(async move { inner.record_grant(g, true).await });
                    return Ok(Outcome::Acquired { term, grant });
                }
                // The campaign "won" with a key that is gone (its session lease expired): a
                // zombie candidate. Start over with a new session.
                tracing::warn!(
                    "[{}] campaign won but our key {} (revision {rev}) is gone; campaigning again with a new session",
                    me.id,
                    escape(key)
                );
                self.stop_campaign();
                return Ok(Outcome::Following {
                    leader: None,
                    recheck_in: Some(Duration::ZERO),
                });
            }
            let (leader, new) = self.inner.read_leader(limit).await?;
            if let (Some(l), Some(Phase::Waiting { key, .. }), Some(rx)) = (&leader, &phase, &rx)
                && &l.key == key
            {
                // Our key is first in line: the campaign is about to see it. Wait for it.
                let mut rx = rx.clone();
                let _ = timeout(limit, rx.wait_for(|p| !matches!(p, Phase::Waiting { .. }))).await;
                continue;
            }
            let ours = match &phase {
                Some(Phase::Waiting { key, .. } | Phase::Won { key, .. }) => Some(key.clone()),
                _ => None,
            };
            // A key of a session we gave up (its revoke failed while etcd was unreachable)
            // expires by itself; we do not lead. Keys are ours by their lease, never by value.
            let info = match leader {
                Some(l)
                    if Some(&l.key) != ours.as_ref()
                        && !self.inner.old_sessions.lock().unwrap().contains(&l.lease) =>
                {
                    let inner = self.inner.clone();
                    let kv = l.clone();
                    tokio::spawn(async move {
                        inner.poll_leader_ttl(&kv, t.retry).await;
                        if new {
                            inner.record_observed(kv).await;
                        }
                    });
                    Some(self.inner.leader_info(&l, limit).await)
                }
                _ => None,
            };
            return Ok(Outcome::Following {
                leader: info,
                recheck_in: None,
            });
        }
        Ok(Outcome::Following {
            leader: None,
            recheck_in: None,
        })
    }

    /// How long our won campaign must still wait before acting (the leader before us may
    /// not have noticed that its session was revoked); `None` once we may act.
    async fn hold(&self, req: &AcquireRequest, rev: i64) -> Option<Duration> {
        let stored = *self.inner.hold.lock().unwrap();
        let until = match stored {
            Some((r, until)) if r == rev => until,
            _ => {
                let held = self
                    .inner
                    .predecessor_hold(rev, req.lease_duration, req.retry_period)
                    .await;
                let until = held.map_or_else(Instant::now, |(until, _)| until);
                *self.inner.hold.lock().unwrap() = Some((rev, until));
                let wait = until.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    let why = match held.map(|(_, why)| why) {
                        Some(HoldWhy::LastSecond) => {
                            "the previous leader's session ended within the second its whole-second TTL leaves open, which a revoke could explain"
                        }
                        _ => "the previous leader's session was revoked before it ran out",
                    };
                    tracing::info!(
                        id = %self.inner.id(),
                        "[{}] campaign won, but {why}: waiting {} ms so that it has stopped acting",
                        self.inner.id(),
                        wait.as_millis()
                    );
                }
                until
            }
        };
        let wait = until.saturating_duration_since(Instant::now());
        (!wait.is_zero()).then_some(wait)
    }

    async fn renew(&self, req: &AcquireRequest, term: Term) -> Result<Outcome, BackendError> {
        let Some((_, Phase::Won { lease, key, rev })) = self.phase() else {
            return Ok(Outcome::Lost { leader: None });
        };
        if rev as u64 != term.0 {
            return Ok(Outcome::Lost { leader: None });
        }
        let limit = req
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(OP_TIMEOUT);
        // The keep-alive and the read of our key at once: one round trip, not two (a slow link
        // keeps its leader longer). Either failing is a failed renewal.
        let (alive, got) = tokio::join!(
            async { timeout_call!(self.inner, limit, |c| c.lease_keep_alive(lease)) },
            async { call!(self.inner, "read", limit, |c| c.get(key.clone(), None)) }
        );
        match alive {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if connection::lease_gone(&e) => return Ok(Outcome::Lost { leader: None }),
            Ok(Err(e)) => return Err(connection::etcd_err("lease keep-alive", e)),
            Err(_) => {
                return Err(BackendError::Unavailable(format!(
                    "etcd lease keep-alive timed out ({})",
                    self.inner.endpoints
                )));
            }
        }
        match got?.kvs().first() {
            Some(kv) if kv.create_revision() == rev && kv.lease() == lease => {
                Ok(Outcome::Renewed { term })
            }
            _ => Ok(Outcome::Lost { leader: None }),
        }
    }
}

#[async_trait]
impl Lock for EtcdBackend {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn try_acquire_or_renew(
        &self,
        req: AcquireRequest,
        _observer: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        if self.inner.me.is_none() {
            return Err(BackendError::Invalid("an observer cannot campaign".into()));
        }
        match req.held {
            Some(term) => self.renew(&req, term).await,
            None => self.acquire(&req).await,
        }
    }

    async fn release(&self, term: Term) -> Result<(), BackendError> {
        let phase = self.phase().map(|(_, p)| p);
        let result = match phase {
            Some(Phase::Won { key, rev, .. }) if rev as u64 == term.0 => {
                let rec = history::Released {
                    term,
                    holder: self.inner.id().to_string(),
                    at: Timestamp::now(),
                };
                let json = serde_json::to_string(&rec).expect("serializes");
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([
                        TxnOp::delete(key, None),
                        TxnOp::put(self.inner.keys.released.clone(), json, None),
                    ]);
                call!(self.inner, "resign", OP_TIMEOUT, |c| c.txn(txn)).map(|_| ())
            }
            _ => Ok(()),
        };
        self.stop_campaign();
        result
    }

    async fn abandon(&self) {
        self.stop_campaign();
    }

    async fn changed(&self) {
        self.inner.notify.notified().await
    }

    async fn resign_requested(&self, term: Term) {
        let mut rx = self.inner.resign.subscribe();
        if rx.wait_for(|v| *v == Some(term.0)).await.is_err() {
            std::future::pending::<()>().await
        }
    }
}

#[async_trait]
impl Observe for EtcdBackend {
    async fn lease(&self) -> Result<LeaseView, BackendError> {
        let (Some(l), _) = self.inner.read_leader(OP_TIMEOUT).await? else {
            return Ok(match self.inner.released().await {
                Some(r) => LeaseView::Resigned(Resigned {
                    term: r.term,
                    at: r.at,
                    by: r.holder,
                }),
                None => LeaseView::None,
            });
        };
        let leader = self.inner.leader_info(&l, OP_TIMEOUT).await;
        // The session lease as etcd reports it; what cannot be read is unknown, not zero.
        let (granted_ttl_s, ttl_remaining_s) =
            match call!(self.inner, "lease ttl", OP_TIMEOUT, |c| c
                .lease_time_to_live(l.lease, None))
            {
                // A lease that is gone reports a TTL of -1.
                Ok(r) if r.ttl() >= 0 => {
                    (Some(r.granted_ttl().max(0) as u64), Some(r.ttl() as u64))
                }
                _ => (None, None),
            };
        Ok(LeaseView::Election(ElectionView {
            leader,
            key: l.key.clone(),
            lease_id: l.lease,
            granted_ttl_s,
            ttl_remaining_s,
            mod_revision: l.mod_rev.max(0) as u64,
        }))
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        self.inner.members().await
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        self.inner.history().await
    }
}

#[async_trait]
impl Heartbeat for EtcdBackend {
    async fn publish_member(&self, member: &Member) -> Result<(), BackendError> {
        self.inner.publish_member(member).await
    }

    /// Called on a clean exit: also ends our campaign and revokes its session.
    async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        if let Some((_, Phase::Waiting { lease, .. } | Phase::Won { lease, .. })) = self.phase() {
            self.stop_campaign();
            let _ = call!(self.inner, "lease revoke", OP_TIMEOUT, |c| c
                .lease_revoke(lease));
        } else {
            self.stop_campaign();
        }
        self.inner.remove_member(id).await
    }
}

#[async_trait]
impl Duties for EtcdBackend {
    async fn duty(&self) -> Result<Option<crate::backend::duty::DutyRecord>, BackendError> {
        self.read_duty().await
    }

    async fn record_duty(
        &self,
        rec: &crate::backend::duty::DutyRecord,
    ) -> Result<bool, BackendError> {
        self.write_duty(rec).await
    }

    async fn reset_duty(&self) -> Result<crate::backend::duty::Removed, BackendError> {
        self.delete_duty().await
    }
}
