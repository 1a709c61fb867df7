//! What this participant observed of the leader keys ([`Seen`]): which key leads and since
//! when, when the last leader's key went and how its term ended (`released`, `revoked` or
//! `expired`, see `history.rs`), its lease's TTL as last read, and whether the leader before
//! our own grant may still be acting ([`Inner::predecessor_hold`]).

use super::{Inner, LeaderKv, OP_TIMEOUT};
use crate::election::EndKind;
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a won campaign waits before acting ([`Inner::predecessor_hold`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HoldWhy {
    /// The previous leader's session ended before it could have run out.
    Revoked,
    /// It ended within the second that etcd's whole-second TTL leaves open: until its holder
    /// has surely stopped.
    LastSecond,
}

/// Until when the holder of a session that ended (seen at `seen_at`) when a TTL read said it
/// would may still act; `None` if it has stopped by `seen_at`. The read (answered at `when`,
/// `left` whole seconds left, rounded down by etcd) puts the expiry before `when + left + 1 s`,
/// and the holder stops by its renew deadline, counted from its last keep-alive, which is the
/// granted TTL before the expiry: so it has stopped by `when + left + 1 s − (granted − renew
/// deadline)`. A renew deadline not known gives no margin.
pub(super) fn stopped_by(
    when: Instant,
    left: i64,
    granted: Duration,
    renew_deadline: Option<Duration>,
    seen_at: Instant,
) -> Option<Instant> {
    let margin = renew_deadline.map_or(Duration::ZERO, |rd| granted.saturating_sub(rd));
    let upper = when + Duration::from_secs(left.max(0) as u64) + Duration::from_secs(1);
    let by = upper.checked_sub(margin).unwrap_or(when);
    (by > seen_at).then_some(by)
}

/// What this participant observed of the leader keys.
#[derive(Default)]
pub(crate) struct Seen {
    /// The leader key last read.
    leader: Option<LeaderKv>,
    /// When it became leader, if we saw that happen (its predecessor's deletion, or no
    /// leader before it).
    pub(super) leader_since: Option<Timestamp>,
    /// Whether the last read found no leader.
    none_since: Option<Timestamp>,
    /// The last TTL read of the leader's lease: (lease, when the answer came, seconds left).
    ttl: Option<(i64, Instant, i64)>,
    /// When that read was sent: `sent + seconds left` is a lower bound of the lease's expiry
    /// (etcd answered after `sent` and truncates the seconds left).
    ttl_sent: Option<Instant>,
    /// The TTL granted to that lease when it was last read: (lease, seconds).
    granted: Option<(i64, i64)>,
    /// The last leader key we saw deleted, when, and how it ended (once classified).
    pub(super) ended: Option<(LeaderKv, Timestamp, Option<EndKind>)>,
    /// When (on the monotonic clock) that deletion was seen: (key, instant).
    ended_at: Option<(String, Instant)>,
    /// Our own session lease as last kept alive: (lease, a lower bound of its expiry). When our
    /// own leader key goes, this tells a revoke from an expiry as the TTL read of another
    /// leader's lease does.
    own: Option<(i64, Instant)>,
    /// The session lease of the last leader verified as a crown participant (its heartbeat
    /// names the lease).
    pub(super) crown_lease: Option<i64>,
    /// The renew deadline that leader's heartbeat gave, if it gave one.
    pub(super) crown_renew_deadline: Option<Duration>,
    /// The session lease of the last leader found not to be crown's, and since when (a crown
    /// leader's heartbeat can name its new session a moment after its key appears).
    pub(super) foreign_lease: Option<(i64, Instant)>,
}

/// A TTL read of a leader's lease: (lease, when the read was sent, seconds left).
type TtlRead = (i64, Instant, i64);

impl Seen {
    /// The last TTL read.
    fn ttl_read(&self) -> Option<TtlRead> {
        let (lease, _, left) = self.ttl?;
        Some((lease, self.ttl_sent?, left))
    }
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
                let read = s.ttl_read();
                self.classify_in_background(prev, read);
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
        let (prev, read) = {
            let mut s = self.seen.lock().unwrap();
            match &s.leader {
                Some(l) if l.key.as_bytes() == key => {
                    let l = l.clone();
                    s.ended = Some((l.clone(), Timestamp::now(), None));
                    s.ended_at = Some((l.key.clone(), Instant::now()));
                    s.leader = None;
                    s.none_since = Some(Timestamp::now());
                    (l, s.ttl_read())
                }
                _ => return,
            }
        };
        self.classify_in_background(prev, read);
    }

    /// `read`: the last TTL read when the end was noted (a read of the next leader's lease,
    /// spawned once that leader is seen, may replace it before the classification runs).
    fn classify_in_background(self: &Arc<Self>, prev: LeaderKv, read: Option<TtlRead>) {
        let inner = self.clone();
        tokio::spawn(async move {
            let end = inner.classify_end(&prev, read).await;
            let mut s = inner.seen.lock().unwrap();
            if let Some((l, _, e)) = &mut s.ended
                && l.key == prev.key
            {
                *e = Some(end);
            }
        });
    }

    async fn classify_end(&self, prev: &LeaderKv, read: Option<TtlRead>) -> EndKind {
        // The lease first: a resigning client revokes its session right after the delete.
        let ttl = call!(self, "lease ttl", OP_TIMEOUT, |c| c
            .lease_time_to_live(prev.lease, None))
        .map(|r| r.ttl())
        .unwrap_or(-1);
        if ttl > 0 || self.released().await.is_some_and(|r| r.term == prev.term()) {
            return EndKind::Released;
        }
        // Revoked: the key went before the lease could have run out by the last TTL read.
        // `sent + left` is a lower bound of the expiry (etcd answered after `sent` and rounds
        // the seconds left down) and the deletion is seen at or after it happened, so a slow
        // answer or a late watch event can only tip this towards `expired`, never make a
        // crash look revoked.
        let s = self.seen.lock().unwrap();
        let deleted = match &s.ended_at {
            Some((key, at)) if *key == prev.key => *at,
            _ => Instant::now(),
        };
        match (read, s.own) {
            (Some((lease, sent, left)), _)
                if lease == prev.lease
                    && sent + Duration::from_secs(left.max(0) as u64) > deleted =>
            {
                EndKind::Revoked
            }
            (_, Some((lease, until))) if lease == prev.lease && until > deleted => EndKind::Revoked,
            _ => EndKind::Expired,
        }
    }

    /// Notes a keep-alive of our session `lease` sent at `sent` and answered with `ttl`
    /// seconds: etcd renewed it after `sent`, so it cannot expire before `sent + ttl`.
    pub(super) fn kept_alive(&self, lease: i64, sent: Instant, ttl: i64) {
        self.seen.lock().unwrap().own =
            Some((lease, sent + Duration::from_secs(ttl.max(0) as u64)));
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
    ) -> Option<(Instant, HoldWhy)> {
        let (prev, seen_at, expiry, granted, renew_deadline) = {
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
                    Some((when, left))
                }
                _ => None,
            };
            let renew_deadline = s
                .crown_renew_deadline
                .filter(|_| s.crown_lease == Some(prev.lease));
            (prev.clone(), at, expiry, granted, renew_deadline)
        };
        // It ran out as the TTL we read said it would: an expiry (a crash, or cut off), or a
        // revoke within the second the whole-second TTL leaves open. Its holder has stopped by
        // the end of that second, less how long before the expiry its renew deadline falls.
        if let Some((when, left)) = expiry
            && when + Duration::from_secs(left.max(0) as u64) <= seen_at
        {
            let ttl = granted.unwrap_or(own_ttl);
            return stopped_by(when, left, ttl, renew_deadline, seen_at)
                .map(|t| (t, HoldWhy::LastSecond));
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
        Some((seen_at + granted.unwrap_or(own_ttl), HoldWhy::Revoked))
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
        let sent = Instant::now();
        if let Ok(r) = call!(self, "lease ttl", OP_TIMEOUT, |c| c
            .lease_time_to_live(l.lease, None))
        {
            // Taken when the answer is here: `when + left` is then an upper bound of the
            // lease's expiry as etcd computed it (up to the whole second etcd rounds to).
            let mut s = self.seen.lock().unwrap();
            s.ttl = Some((l.lease, Instant::now(), r.ttl()));
            s.ttl_sent = Some(sent);
            s.granted = Some((l.lease, r.granted_ttl()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn an_end_within_the_open_second_waits_for_the_holders_renew_deadline() {
        let when = Instant::now();
        let ttl = Duration::from_secs(2);
        // Read 0 s left; the key went 300 ms later: the expiry may still have been up to
        // 700 ms away, so a revoke could explain it. With no renew deadline known, wait out
        // the whole second.
        let seen = when + MS(300);
        assert_eq!(stopped_by(when, 0, ttl, None, seen), Some(when + MS(1000)));
        // A holder whose renew deadline is 1.5 s of a 2 s TTL stopped 500 ms before its
        // lease ran out.
        assert_eq!(
            stopped_by(when, 0, ttl, Some(MS(1500)), seen),
            Some(when + MS(500))
        );
        // Seen after that: nothing to wait for.
        assert_eq!(
            stopped_by(when, 0, ttl, Some(MS(1500)), when + MS(600)),
            None
        );
        // The default timings (15 s TTL, 10 s renew deadline): never a wait.
        let ttl = Duration::from_secs(15);
        assert_eq!(
            stopped_by(when, 3, ttl, Some(MS(10_000)), when + MS(3000)),
            None
        );
        // A renew deadline above the TTL (no crown participant writes one) gives no margin,
        // and one of 0 no more than a foreign leader gets (no wait at all).
        assert_eq!(
            stopped_by(when, 3, ttl, Some(MS(60_000)), when + MS(3000)),
            Some(when + MS(4000))
        );
        assert_eq!(stopped_by(when, 3, ttl, Some(MS(0)), when + MS(3000)), None);
    }
}
