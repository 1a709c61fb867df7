//! The lease rule shared by every record-based backend (file, Kubernetes Lease): given what
//! the backend read, decide whether to acquire, renew, follow or give up.
//!
//! Expiry is judged only on the observer's own monotonic clock: the lease counts as expired
//! when the observer has seen no change to the record for the lease duration. The holder's
//! wall-clock timestamps are never compared with ours, so clock skew cannot cause a takeover.

use super::{EndKind, Grant, Identity, LeaderInfo, LeaseRecord, Term};
use jiff::Timestamp;
use std::time::Duration;
use tokio::time::Instant;

/// What a backend found where the lease record lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Current {
    /// No record yet.
    Missing,
    /// A record that does not parse (hand-edited, truncated by something other than crown).
    Corrupt {
        /// A fingerprint of the raw bytes, so a change is noticed.
        fingerprint: u64,
        /// Why it does not parse.
        reason: String,
    },
    /// A well-formed record.
    Record(LeaseRecord),
}

impl Current {
    /// The leader the record names, if any.
    pub fn leader(&self) -> Option<LeaderInfo> {
        match self {
            Current::Record(r) => r.leader(),
            _ => None,
        }
    }
}

/// What the backend knows about the holder's process, beyond the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing beyond the record: rely on expiry.
    Unknown,
    /// The holder's process is gone (file backend: its alive lock was free).
    HolderGone {
        /// When the backend noticed, if it knows (used for the history's gap).
        noticed_at: Option<Timestamp>,
    },
}

/// Remembers when this observer last saw the record change, on its monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    seen: Option<(Current, Instant)>,
}

impl Observer {
    /// Records what was read at `now`; returns how long it has stayed unchanged.
    pub fn see(&mut self, current: &Current, now: Instant) -> Duration {
        match &self.seen {
            Some((c, at)) if c == current => now.saturating_duration_since(*at),
            _ => {
                self.seen = Some((current.clone(), now));
                Duration::ZERO
            }
        }
    }
}

/// The inputs of one decision.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// Who decides.
    pub me: &'a Identity,
    /// The term this participant believes it holds, if it leads.
    pub held: Option<Term>,
    /// Do not acquire now (just resigned); still renew or follow.
    pub hold_off: bool,
    /// Our lease duration (written into the record; used when a record carries none).
    pub lease_duration: Duration,
    /// When `current` was read, on the monotonic clock: taken after the read returned, never
    /// before it was sent. The record may have changed at any moment while the read was in
    /// flight, so only the later instant is safe to count expiry from; a request built before a
    /// read that hung (a partition) would count the hang as time the holder was silent.
    pub now: Instant,
    /// Now, on our wall clock (only written, never compared).
    pub wall_now: Timestamp,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write `record` (compare-and-swap against what was read): a new grant.
    Acquire {
        /// The record to write.
        record: LeaseRecord,
        /// The history entry for this grant.
        grant: Grant,
    },
    /// Write `record`: a renewal in the same term.
    Renew {
        /// The record to write.
        record: LeaseRecord,
    },
    /// Someone else holds a live lease (or we hold off): wait.
    Follow {
        /// The leader, if any.
        leader: Option<LeaderInfo>,
        /// When the lease would expire by our clock, if nothing changes.
        expires_in: Option<Duration>,
    },
    /// We thought we led, but the record says otherwise: stop acting at once.
    Lost {
        /// Who holds it now, if anyone.
        leader: Option<LeaderInfo>,
    },
    /// The lease is free but no term may be granted (the last term is `u64::MAX`): an error
    /// for the operator, never a wrapped term.
    Refuse {
        /// One line saying why.
        reason: String,
    },
}

fn exhausted(term: Term) -> Decision {
    Decision::Refuse {
        reason: format!(
            "term {term} is the largest possible term: crown cannot grant a higher one (the lease record or history was written by something other than crown)"
        ),
    }
}

/// The rule. See the module docs.
pub fn decide(
    current: &Current,
    observer: &mut Observer,
    req: &Request<'_>,
    liveness: Liveness,
) -> Decision {
    let unchanged_for = observer.see(current, req.now);
    let lease_ms = req.lease_duration.as_millis() as u64;

    if let Some(held) = req.held {
        return match current {
            Current::Record(r) if r.holder == req.me.id && r.term == held => {
                let mut record = r.clone();
                record.renewed_at = req.wall_now;
                record.lease_duration_ms = lease_ms;
                record.revision += 1;
                Decision::Renew { record }
            }
            other => Decision::Lost {
                leader: other.leader(),
            },
        };
    }

    // Not leading: is the lease free?
    let (free, prev): (bool, Option<(&LeaseRecord, EndKind)>) = match current {
        Current::Missing => (true, None),
        Current::Corrupt { .. } => (unchanged_for >= req.lease_duration, None),
        Current::Record(r) if !r.is_held() => (true, Some((r, EndKind::Released))),
        Current::Record(r) => {
            // The holder's duration is honoured only up to our own: a record cannot make us
            // follow a holder that stopped renewing for longer than we would wait ourselves
            // (like client-go, which judges expiry by its own LeaseDuration).
            let dur = if r.lease_duration_ms > 0 {
                Duration::from_millis(r.lease_duration_ms).min(req.lease_duration)
            } else {
                req.lease_duration
            };
            if let Liveness::HolderGone { .. } = liveness {
                (true, Some((r, EndKind::HolderDied)))
            } else if unchanged_for >= dur {
                (true, Some((r, EndKind::Expired)))
            } else {
                return Decision::Follow {
                    leader: r.leader(),
                    expires_in: Some(dur - unchanged_for),
                };
            }
        }
    };
    let expires_in = match current {
        Current::Corrupt { .. } => Some(req.lease_duration.saturating_sub(unchanged_for)),
        _ => None,
    };
    if !free || req.hold_off {
        return Decision::Follow {
            leader: None,
            expires_in,
        };
    }

    let prev_term = match current {
        Current::Record(r) => r.term,
        _ => Term(0),
    };
    let Some(term) = prev_term.checked_next() else {
        return exhausted(prev_term);
    };
    let (previous_holder, previous_end, ended_at) = match (current, prev) {
        (_, Some((r, EndKind::Released))) => (
            r.released_by.clone(),
            Some(EndKind::Released),
            r.released_at.unwrap_or(r.renewed_at),
        ),
        (_, Some((r, EndKind::HolderDied))) => {
            let noticed = match liveness {
                Liveness::HolderGone {
                    noticed_at: Some(t),
                } => t,
                _ => r.renewed_at,
            };
            (Some(r.holder.clone()), Some(EndKind::HolderDied), noticed)
        }
        (_, Some((r, kind))) => (Some(r.holder.clone()), Some(kind), r.renewed_at),
        (Current::Corrupt { .. }, None) => (None, Some(EndKind::Corrupt), req.wall_now),
        _ => (None, None, req.wall_now),
    };
    let gap_ms = previous_end.map(|_| {
        let d = req.wall_now.duration_since(ended_at).as_millis();
        d.max(0) as u64
    });
    let revision = match current {
        Current::Record(r) => r.revision + 1,
        _ => 1,
    };
    let record = LeaseRecord {
        holder: req.me.id.clone(),
        term,
        acquired_at: req.wall_now,
        renewed_at: req.wall_now,
        lease_duration_ms: lease_ms,
        pid: req.me.pid,
        host: req.me.host.clone(),
        released_at: None,
        released_by: None,
        revision,
    };
    let grant = Grant {
        term,
        holder: req.me.id.clone(),
        acquired_at: req.wall_now,
        pid: Some(req.me.pid),
        host: Some(req.me.host.clone()),
        previous_holder,
        previous_end,
        gap_ms,
    };
    Decision::Acquire { record, grant }
}

/// Raises an acquisition's term above `floor`, the highest term known from elsewhere (the
/// history), so terms are never reused even when the record was deleted or replaced by hand.
/// Backends call it only when `decide` says `Acquire`, so reading the history costs nothing on
/// renewals.
pub fn above_history(decision: Decision, floor: Term) -> Decision {
    match decision {
        Decision::Acquire {
            mut record,
            mut grant,
        } if record.term <= floor => {
            let Some(term) = floor.checked_next() else {
                return exhausted(floor);
            };
            record.term = term;
            grant.term = term;
            Decision::Acquire { record, grant }
        }
        other => other,
    }
}

/// The record that releases `term`, if `current` still shows us holding it.
pub fn release(
    current: &Current,
    me: &Identity,
    term: Term,
    wall_now: Timestamp,
) -> Option<LeaseRecord> {
    match current {
        Current::Record(r) if r.holder == me.id && r.term == term => {
            let mut record = r.clone();
            record.holder = String::new();
            record.released_at = Some(wall_now);
            record.released_by = Some(me.id.clone());
            record.revision += 1;
            Some(record)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(id: &str) -> Identity {
        Identity {
            id: id.into(),
            pid: 1,
            host: "h".into(),
        }
    }

    fn req<'a>(me: &'a Identity, held: Option<Term>, now: Instant) -> Request<'a> {
        Request {
            me,
            held,
            hold_off: false,
            lease_duration: Duration::from_secs(5),
            now,
            wall_now: Timestamp::now(),
        }
    }

    fn acquire(d: Decision) -> (LeaseRecord, Grant) {
        match d {
            Decision::Acquire { record, grant } => (record, grant),
            other => panic!("expected acquire, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn missing_record_is_acquired_with_term_above_floor() {
        let a = me("a");
        let mut o = Observer::default();
        let r = req(&a, None, Instant::now());
        let d = decide(&Current::Missing, &mut o, &r, Liveness::Unknown);
        let (rec, grant) = acquire(above_history(d, Term(41)));
        assert_eq!(rec.term, Term(42));
        assert_eq!(grant.term, Term(42));
        assert_eq!(rec.holder, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn held_lease_expires_only_after_unchanged_for_lease_duration() {
        let (a, b) = (me("a"), me("b"));
        let mut ob = Observer::default();
        let (rec, _) = acquire(decide(
            &Current::Missing,
            &mut Observer::default(),
            &req(&a, None, Instant::now()),
            Liveness::Unknown,
        ));
        let cur = Current::Record(rec);
        let t0 = Instant::now();
        assert!(matches!(
            decide(&cur, &mut ob, &req(&b, None, t0), Liveness::Unknown),
            Decision::Follow { .. }
        ));
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(matches!(
            decide(
                &cur,
                &mut ob,
                &req(&b, None, Instant::now()),
                Liveness::Unknown
            ),
            Decision::Follow { .. }
        ));
        tokio::time::advance(Duration::from_millis(1)).await;
        let (rec2, grant) = acquire(decide(
            &cur,
            &mut ob,
            &req(&b, None, Instant::now()),
            Liveness::Unknown,
        ));
        assert_eq!(rec2.term, Term(2));
        assert_eq!(grant.previous_end, Some(EndKind::Expired));
        assert_eq!(grant.previous_holder.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn holder_gone_is_taken_at_once_and_released_is_free() {
        let (a, b) = (me("a"), me("b"));
        let (rec, _) = acquire(decide(
            &Current::Missing,
            &mut Observer::default(),
            &req(&a, None, Instant::now()),
            Liveness::Unknown,
        ));
        let cur = Current::Record(rec.clone());
        let (_, g) = acquire(decide(
            &cur,
            &mut Observer::default(),
            &req(&b, None, Instant::now()),
            Liveness::HolderGone { noticed_at: None },
        ));
        assert_eq!(g.previous_end, Some(EndKind::HolderDied));
        let rel = release(&cur, &a, Term(1), Timestamp::now()).unwrap();
        assert!(release(&cur, &b, Term(1), Timestamp::now()).is_none());
        let (r2, g2) = acquire(decide(
            &Current::Record(rel),
            &mut Observer::default(),
            &req(&b, None, Instant::now()),
            Liveness::Unknown,
        ));
        assert_eq!(r2.term, Term(2));
        assert_eq!(g2.previous_end, Some(EndKind::Released));
        assert_eq!(g2.previous_holder.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn leader_renews_its_term_and_loses_on_any_other() {
        let a = me("a");
        let (rec, _) = acquire(decide(
            &Current::Missing,
            &mut Observer::default(),
            &req(&a, None, Instant::now()),
            Liveness::Unknown,
        ));
        let cur = Current::Record(rec.clone());
        let mut o = Observer::default();
        match decide(
            &cur,
            &mut o,
            &req(&a, Some(Term(1)), Instant::now()),
            Liveness::Unknown,
        ) {
            Decision::Renew { record } => {
                assert_eq!(record.term, Term(1));
                assert_eq!(record.revision, rec.revision + 1);
            }
            d => panic!("{d:?}"),
        }
        // A stale term (we were paused and someone else took over) is never renewed.
        assert!(matches!(
            decide(
                &cur,
                &mut o,
                &req(&a, Some(Term(0)), Instant::now()),
                Liveness::Unknown
            ),
            Decision::Lost { .. }
        ));
        let corrupt = Current::Corrupt {
            fingerprint: 7,
            reason: "x".into(),
        };
        assert!(matches!(
            decide(
                &corrupt,
                &mut o,
                &req(&a, Some(Term(1)), Instant::now()),
                Liveness::Unknown
            ),
            Decision::Lost { leader: None }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn corrupt_record_replaced_only_after_lease_duration_with_higher_term() {
        let b = me("b");
        let corrupt = Current::Corrupt {
            fingerprint: 7,
            reason: "x".into(),
        };
        let mut o = Observer::default();
        let mut r = req(&b, None, Instant::now());
        assert!(matches!(
            decide(&corrupt, &mut o, &r, Liveness::Unknown),
            Decision::Follow { .. }
        ));
        tokio::time::advance(Duration::from_secs(5)).await;
        r.now = Instant::now();
        let (rec, g) = acquire(above_history(
            decide(&corrupt, &mut o, &r, Liveness::Unknown),
            Term(9),
        ));
        assert_eq!(rec.term, Term(10));
        assert_eq!(g.term, Term(10));
        assert_eq!(g.previous_end, Some(EndKind::Corrupt));
    }

    #[tokio::test(start_paused = true)]
    async fn the_largest_term_is_refused_never_wrapped() {
        let (a, b) = (me("a"), me("b"));
        let (mut rec, _) = acquire(decide(
            &Current::Missing,
            &mut Observer::default(),
            &req(&a, None, Instant::now()),
            Liveness::Unknown,
        ));
        rec.term = Term(u64::MAX);
        let rel = release(&Current::Record(rec), &a, Term(u64::MAX), Timestamp::now()).unwrap();
        let d = decide(
            &Current::Record(rel),
            &mut Observer::default(),
            &req(&b, None, Instant::now()),
            Liveness::Unknown,
        );
        assert!(matches!(d, Decision::Refuse { .. }), "{d:?}");
        let d = decide(
            &Current::Missing,
            &mut Observer::default(),
            &req(&b, None, Instant::now()),
            Liveness::Unknown,
        );
        let d = above_history(d, Term(u64::MAX));
        assert!(matches!(d, Decision::Refuse { .. }), "{d:?}");
        assert_eq!(Term(u64::MAX).checked_next(), None);
        assert_eq!(Term(1).checked_next(), Some(Term(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_records_lease_duration_is_honoured_only_up_to_ours() {
        let (a, b) = (me("a"), me("b"));
        let (mut rec, _) = acquire(decide(
            &Current::Missing,
            &mut Observer::default(),
            &req(&a, None, Instant::now()),
            Liveness::Unknown,
        ));
        rec.lease_duration_ms = 86_400_000;
        let cur = Current::Record(rec);
        let mut ob = Observer::default();
        match decide(
            &cur,
            &mut ob,
            &req(&b, None, Instant::now()),
            Liveness::Unknown,
        ) {
            Decision::Follow { expires_in, .. } => {
                assert_eq!(expires_in, Some(Duration::from_secs(5)))
            }
            d => panic!("{d:?}"),
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let (_, g) = acquire(decide(
            &cur,
            &mut ob,
            &req(&b, None, Instant::now()),
            Liveness::Unknown,
        ));
        assert_eq!(g.previous_end, Some(EndKind::Expired));
    }
}
