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
use tokio::time::{Instant, sleep};

/// "Unknown" where a record needs a time: the Unix epoch (shown as unknown).
pub(crate) const UNKNOWN_TIME: Timestamp = Timestamp::UNIX_EPOCH;

/// The record of crown's last graceful resign.
#[derive(Serialize, Deserialize)]
pub(crate) struct Released {
    pub(crate) term: Term,
    pub(crate) holder: String,
    pub(crate) at: Timestamp,
}

/// What this participant observed of the leader keys.
#[derive(Default)]
pub(crate) struct Seen {
    /// The leader key last read.
    leader: Option<LeaderKv>,
    /// When it became leader, if we saw that happen (its predecessor's deletion, or no
    /// leader before it).
    leader_since: Option<Timestamp>,
    /// Whether the last read found no leader.
    none_since: Option<Timestamp>,
    /// The last TTL read of the leader's lease: (lease, when, seconds left).
    ttl: Option<(i64, Instant, i64)>,
    /// The TTL granted to that lease when it was last read: (lease, seconds).
    granted: Option<(i64, i64)>,
    /// The last leader key we saw deleted, when, and how it ended (once classified).
    ended: Option<(LeaderKv, Timestamp, Option<EndKind>)>,
    /// When (on the monotonic clock) that deletion was seen: (key, instant).
    ended_at: Option<(String, Instant)>,
    /// The session lease of the last leader verified as a crown participant (its heartbeat
    /// names the lease).
    pub(super) crown_lease: Option<i64>,
    /// The session lease of the last leader found not to be crown's, and since when (a crown
    /// leader's heartbeat can name its new session a moment after its key appears).
    pub(super) foreign_lease: Option<(i64, Instant)>,
}

impl Inner {
    /// Notes the leader read now; returns whether it is a new one.
    pub(super) fn observe_leader(self: &Arc<Self>, l: Option<&LeaderKv>) -> bool {
        let mut s = self.seen.lock().unwrap();
        let Some(l) = l else {
            if s.none_since.is_none() {
                s.none_since = Some(Timestamp::now());
            }
            return false;
        };
        if s.leader.as_ref().map(|x| &x.key) == Some(&l.key) {
            s.none_since = None;
            return false;
        }
        let live = match (&s.ended, s.none_since, &s.leader) {
            // Its predecessor's deletion made it leader.
            (Some((prev, at, _)), _, None) if prev.rev < l.rev => Some(*at),
            // It appeared after we had seen no leader: now is as close as we can tell.
            (_, Some(_), _) => Some(Timestamp::now()),
            // It replaced the leader we knew, whose deletion our watch has not reported yet:
            // that one ended now, as far as we can tell.
            (_, _, Some(prev)) if prev.rev < l.rev => {
                let prev = prev.clone();
                let now = Timestamp::now();
                s.ended = Some((prev.clone(), now, None));
                s.ended_at = Some((prev.key.clone(), Instant::now()));
                self.classify_in_background(prev);
                Some(now)
            }
            _ => None,
        };
        s.leader = Some(l.clone());
        s.leader_since = live;
        s.none_since = None;
        true
    }

    /// A key under the candidate prefix was deleted: if it was the leader's, note when, and
    /// find out how its term ended.
    pub(super) fn observe_delete(self: &Arc<Self>, key: &[u8], _rev: i64) {
        let prev = {
            let mut s = self.seen.lock().unwrap();
            match &s.leader {
                Some(l) if l.key.as_bytes() == key => {
                    let l = l.clone();
                    s.ended = Some((l.clone(), Timestamp::now(), None));
                    s.ended_at = Some((l.key.clone(), Instant::now()));
                    s.leader = None;
                    s.none_since = Some(Timestamp::now());
                    l
                }
                _ => return,
            }
        };
        self.classify_in_background(prev);
    }

    fn classify_in_background(self: &Arc<Self>, prev: LeaderKv) {
        let inner = self.clone();
        tokio::spawn(async move {
            let end = inner.classify_end(&prev).await;
            let mut s = inner.seen.lock().unwrap();
            if let Some((l, _, e)) = &mut s.ended
                && l.key == prev.key
            {
                *e = Some(end);
            }
        });
    }

    async fn classify_end(&self, prev: &LeaderKv) -> EndKind {
        // The lease first: a resigning client revokes its session right after the delete.
        let ttl = call!(self, "lease ttl", OP_TIMEOUT, |c| c
            .lease_time_to_live(prev.lease, None))
        .map(|r| r.ttl())
        .unwrap_or(-1);
        if ttl > 0 || self.released().await.is_some_and(|r| r.term == prev.term()) {
            return EndKind::Released;
        }
        // Revoked: by the last TTL read (`when + left` never exceeds the real expiry: etcd
        // rounds the seconds left down), the lease had time left when its key went.
        let s = self.seen.lock().unwrap();
        let deleted = match &s.ended_at {
            Some((key, at)) if *key == prev.key => *at,
            _ => Instant::now(),
        };
        match s.ttl {
            Some((lease, when, left))
                if lease == prev.lease
                    && when + Duration::from_secs(left.max(0) as u64) > deleted =>
            {
                EndKind::Revoked
            }
            _ => EndKind::Expired,
        }
    }

    /// After our campaign won in `our_rev`: until when we must not act yet. The leader before
    /// us may still be acting if it was a crown participant whose session lease ended before
    /// it could run out (revoked by an operator, or the dashboard's `k`) while it could not
    /// notice (cut off from etcd, paused): it stops by its renew deadline, counted from its
    /// last keep-alive, which was sent before the deletion we saw and is shorter than its
    /// lease's TTL. So we wait until the deletion + that TTL (the granted TTL last read; our
    /// own lease duration if we never read it). A released term (crown's resign record, or the
    /// key deleted while its lease lived on), a lease that ran out by the TTL we last read,
    /// and a leader verified foreign (it runs no crown child; Go's `Election` does not wait
    /// either) cost nothing; a leader not verified either way counts as crown.
    pub(super) async fn predecessor_hold(
        &self,
        our_rev: i64,
        own_ttl: Duration,
        retry: Duration,
    ) -> Option<Instant> {
        let (prev, seen_at, expiry, granted) = {
            let s = self.seen.lock().unwrap();
            // The leader before us: the one we last read, if our watch of the prefix has not
            // reported its deletion yet (our campaign's own watch can be first), else the one
            // it reported deleted.
            let (prev, at) = match (&s.leader, &s.ended, &s.ended_at) {
                (Some(l), _, _) if l.rev < our_rev => (l, Instant::now()),
                (_, Some((l, _, _)), Some((key, at))) if l.rev < our_rev && *key == l.key => {
                    (l, *at)
                }
                _ => return None,
            };
            // Foreign: found so for two retry periods (by then a crown leader's heartbeat names
            // its session). Unverified counts as crown.
            let foreign = s.crown_lease != Some(prev.lease)
                && s.foreign_lease
                    .is_some_and(|(l, since)| l == prev.lease && since.elapsed() >= 2 * retry);
            if foreign {
                return None;
            }
            let granted = s
                .granted
                .filter(|(lease, g)| *lease == prev.lease && *g > 0)
                .map(|(_, g)| Duration::from_secs(g as u64));
            // The expiry the last TTL read predicts: it holds unless the holder kept the lease
            // alive after that read, which could not have run out before read + TTL.
            let expiry = match s.ttl {
                Some((lease, when, left))
                    if lease == prev.lease
                        && at.saturating_duration_since(when) < granted.unwrap_or(own_ttl) =>
                {
                    Some(when + Duration::from_secs(left.max(0) as u64))
                }
                _ => None,
            };
            (prev.clone(), at, expiry, granted)
        };
        // It ran out as the TTL we read said it would: an expiry (a crash, or cut off).
        if expiry.is_some_and(|e| e <= seen_at) {
            return None;
        }
        // Both reads at once: a graceful handoff pays one round trip, not two.
        let (released, ttl) = tokio::join!(self.released(), async {
            call!(self, "lease ttl", OP_TIMEOUT, |c| c
                .lease_time_to_live(prev.lease, None))
        });
        if released.is_some_and(|r| r.term == prev.term()) {
            return None;
        }
        if ttl.is_ok_and(|r| r.ttl() > 0) {
            return None;
        }
        Some(seen_at + granted.unwrap_or(own_ttl))
    }

    /// Reads how long the leader's lease has left (for telling revoked from expired later).
    pub(super) async fn poll_leader_ttl(&self, l: &LeaderKv, every: Duration) {
        let fresh = self
            .seen
            .lock()
            .unwrap()
            .ttl
            .is_some_and(|(lease, when, _)| lease == l.lease && when.elapsed() < every);
        if fresh || l.lease == 0 {
            return;
        }
        if let Ok(r) = call!(self, "lease ttl", OP_TIMEOUT, |c| c
            .lease_time_to_live(l.lease, None))
        {
            // Taken when the answer is here: `when + left` is then an upper bound of the
            // lease's expiry as etcd computed it (up to the whole second etcd rounds to).
            let mut s = self.seen.lock().unwrap();
            s.ttl = Some((l.lease, Instant::now(), r.ttl()));
            s.granted = Some((l.lease, r.granted_ttl()));
        }
    }

    /// A new leader key that is not ours: record a grant for it if we saw it begin and nobody
    /// has yet (a crown winner overwrites it with its own record).
    pub(super) async fn record_observed(self: Arc<Self>, l: LeaderKv) {
        let since = self.seen.lock().unwrap().leader_since;
        let Some(since) = since else { return };
        let (holder, pid, host) = match self.holder(&l, OP_TIMEOUT).await {
            Holder::Crown(m) => (m.id, Some(m.pid), m.host),
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
