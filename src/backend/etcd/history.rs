//! The leader history: one [`Grant`] per term under `<prefix><election>:history:`,
//! written by whoever can tell — the crown winner for its own term (unconditionally), a crown
//! participant that watched a foreign key become leader for that one (only if no record
//! exists). How the previous term ended is what was observed when its key was deleted:
//! - a crown resign record for that term, or the key deleted while its lease was still
//!   alive: `released`;
//! - the lease gone long before it could have run out (by the last TTL seen): `revoked`;
//! - otherwise: `expired`.
//!
//! The last `history_limit` grants are kept; older ones are deleted in the transaction that
//! raises `…:floor` (the highest compacted term), and a grant at or below the floor is never
//! written again.

use super::{Holder, Inner, LeaderKv, OP_TIMEOUT, escape};
use crate::backend::BackendError;
use crate::election::{EndKind, Grant, Term};
use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::sleep;

/// The record of crown's last graceful resign.
#[derive(Serialize, Deserialize)]
pub(crate) struct Released {
    pub(crate) term: Term,
    pub(crate) holder: String,
    pub(crate) at: Timestamp,
}

impl Inner {
    /// A new leader key that is not ours: record a grant for it if we saw it begin and nobody
    /// has yet (a crown winner overwrites it with its own record).
    pub(super) async fn record_observed(self: Arc<Self>, l: LeaderKv) {
        let since = self.seen.lock().unwrap().leader_since;
        let Some(since) = since else { return };
        let (holder, pid, host) = match self.holder(&l, OP_TIMEOUT).await {
            Holder::Crown(m, _) => (m.id, Some(m.pid), m.host),
            Holder::Foreign => (escape(&l.value), None, l.foreign()),
        };
        let g = Grant {
            term: l.term(),
            holder,
            acquired_at: since,
            pid,
            host: Some(host),
            previous_holder: None,
            previous_end: None,
            gap_ms: None,
        };
        self.record_grant(g, false).await;
    }

    /// Writes the history entry of a grant, with what was observed of its predecessor, and
    /// compacts the history to the last `history_limit` grants. Best effort. `own`: our own
    /// grant (overwrites a record a follower may have written first).
    pub(super) async fn record_grant(self: Arc<Self>, mut g: Grant, own: bool) {
        let limit = OP_TIMEOUT;
        if g.term <= self.floor().await {
            return;
        }
        let ended = self
            .seen
            .lock()
            .unwrap()
            .ended
            .clone()
            .filter(|(p, _, _)| p.term() < g.term);
        let mut pending = None;
        match ended {
            Some((prev, at, end)) => {
                let holder = match self.grant_of(prev.term()).await {
                    Some(pg) => pg.holder,
                    None => escape(&prev.value),
                };
                g.previous_holder = Some(holder);
                g.previous_end = end;
                g.gap_ms = Some(g.acquired_at.duration_since(at).as_millis().max(0) as u64);
                if end.is_none() {
                    pending = Some(prev.key);
                }
            }
            None => {
                // Not observed: the last recorded grant, ended as its resign record says.
                if let Some(p) = self.last_grant().await.filter(|p| p.term < g.term) {
                    let released = self.released().await.filter(|r| r.term == p.term);
                    g.previous_holder = Some(p.holder);
                    g.previous_end = Some(match released {
                        Some(_) => EndKind::Released,
                        None => EndKind::Expired,
                    });
                    g.gap_ms = released
                        .map(|r| g.acquired_at.duration_since(r.at).as_millis().max(0) as u64);
                }
            }
        }
        // Written at once (a holder may die any moment), completed below if the predecessor's
        // end is still being classified.
        let Ok(json) = serde_json::to_string(&g) else {
            return;
        };
        let key = self.keys.history(g.term);
        let put = TxnOp::put(key.clone(), json.clone(), None);
        let txn = if own {
            Txn::new().and_then([put])
        } else {
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([put])
        };
        match call!(self, "history write", limit, |c| c.txn(txn)) {
            Err(e) => {
                tracing::warn!("[{}] could not record grant {}: {e}", self.id(), g.term);
                return;
            }
            Ok(r) if !r.succeeded() => return,
            Ok(_) => {}
        }
        if let Some(prev_key) = pending {
            let mut end = None;
            for _ in 0..100 {
                end = match &self.seen.lock().unwrap().ended {
                    Some((p, _, e)) if p.key == prev_key => *e,
                    _ => Some(EndKind::Expired),
                };
                if end.is_some() {
                    break;
                }
                sleep(Duration::from_millis(20)).await;
            }
            g.previous_end = Some(end.unwrap_or(EndKind::Expired));
            if let Ok(done) = serde_json::to_string(&g) {
                // Only over what we wrote (the winner may have written its own meanwhile).
                let txn = Txn::new()
                    .when([Compare::value(key, CompareOp::Equal, json)])
                    .and_then([TxnOp::put(self.keys.history(g.term), done, None)]);
                let _ = call!(self, "history write", limit, |c| c.txn(txn));
            }
        }
        self.compact_history().await;
    }

    /// Keeps the last `history_limit` grants; raises the floor over the ones deleted.
    async fn compact_history(&self) {
        let Ok(all) = call!(self, "history read", OP_TIMEOUT, |c| c.get(
            self.keys.history.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_sort(SortTarget::Key, SortOrder::Ascend),
            ),
        )) else {
            return;
        };
        // Only crown's own history keys (20 digits), never another key in the range.
        let terms: Vec<u64> = all
            .kvs()
            .iter()
            .filter_map(|kv| {
                let t = std::str::from_utf8(kv.key())
                    .ok()?
                    .strip_prefix(&self.keys.history)?;
                (t.len() == 20 && t.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| t.parse().ok())
                    .flatten()
            })
            .collect();
        let Some(excess) = terms.len().checked_sub(self.history_limit) else {
            return;
        };
        // At most 100 deletions per transaction (etcd allows 128 operations).
        for chunk in terms[..excess].chunks(100) {
            let floor = format!("{:020}", chunk[chunk.len() - 1]);
            let mut ops = vec![TxnOp::put(self.keys.floor.clone(), floor, None)];
            ops.extend(
                chunk
                    .iter()
                    .map(|t| TxnOp::delete(self.keys.history(Term(*t)), None)),
            );
            if call!(self, "history compaction", OP_TIMEOUT, |c| c
                .txn(Txn::new().and_then(ops.clone())))
            .is_err()
            {
                return;
            }
        }
    }

    /// The highest term compacted out of the history (0 if none).
    async fn floor(&self) -> Term {
        call!(self, "read", OP_TIMEOUT, |c| c
            .get(self.keys.floor.clone(), None))
        .ok()
        .and_then(|r| {
            r.kvs()
                .first()
                .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.trim().parse().ok())
        })
        .map(Term)
        .unwrap_or_default()
    }

    async fn last_grant(&self) -> Option<Grant> {
        let r = call!(self, "read", OP_TIMEOUT, |c| c.get(
            self.keys.history.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend)
                    .with_limit(1),
            ),
        ))
        .ok()?;
        r.kvs().first().and_then(|kv| parse_grant(kv.value()))
    }

    pub(super) async fn grant_of(&self, term: Term) -> Option<Grant> {
        let got = call!(self, "read", OP_TIMEOUT, |c| c
            .get(self.keys.history(term), None))
        .ok()?;
        got.kvs()
            .first()
            .and_then(|kv| parse_grant(kv.value()))
            .filter(|g| g.term == term)
    }

    pub(super) async fn released(&self) -> Option<Released> {
        let got = call!(self, "read", OP_TIMEOUT, |c| c
            .get(self.keys.released.clone(), None))
        .ok()?;
        got.kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok())
    }

    pub(super) async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        let got = call!(self, "read", OP_TIMEOUT, |c| c.get(
            self.keys.history.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Ascend),
            ),
        ))?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| parse_grant(kv.value()))
            .collect())
    }
}

/// A grant from etcd, its text escaped (anyone with write access could have written it).
fn parse_grant(v: &[u8]) -> Option<Grant> {
    let mut g: Grant = serde_json::from_slice(v).ok()?;
    g.holder = escape(&g.holder);
    g.host = g.host.map(|h| escape(&h));
    g.previous_holder = g.previous_holder.map(|h| escape(&h));
    Some(g)
}
