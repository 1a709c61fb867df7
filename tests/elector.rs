//! The election core on paused tokio time, over the in-memory backend: step-down at the renew
//! deadline, expiry judged on the observer's clock whatever the holder's wall clock says,
//! graceful release and resign.

use crown::backend::memory::MemoryBackend;
use crown::election::{Config, Elector, Event, Events, Identity, StopReason, Term};
use futures::StreamExt;
use jiff::SignedDuration;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn ident(id: &str) -> Identity {
    Identity {
        id: id.into(),
        pid: 1,
        host: "h".into(),
    }
}

/// Next event that is not a leader heartbeat, with a generous (virtual) timeout.
async fn next(ev: &mut Events) -> Event {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(120), ev.next())
            .await
            .expect("an event within 120 s of virtual time")
            .expect("stream open");
        if !matches!(e, Event::Renewed { .. }) {
            return e;
        }
    }
}

fn start(
    b: MemoryBackend,
    id: &str,
    cfg: Config,
) -> (CancellationToken, crown::election::ElectorHandle, Events) {
    let tok = CancellationToken::new();
    let (h, ev) = Elector::new(Arc::new(b), cfg, ident(id))
        .unwrap()
        .spawn(tok.clone());
    (tok, h, ev)
}

/// Asserts that the next event of a follower says `a` leads in term 1.
async fn follows_a(ev: &mut Events) {
    assert_eq!(
        next(ev).await,
        Event::NewLeader {
            id: "a".into(),
            term: Term(1)
        }
    );
}

/// Two participants on one in-memory backend: `a`, granted term 1, and `b`, its follower.
struct Pair {
    a: MemoryBackend,
    b: MemoryBackend,
    ta: CancellationToken,
    ha: crown::election::ElectorHandle,
    ea: Events,
    hb: crown::election::ElectorHandle,
    eb: Events,
    _tb: CancellationToken,
}

/// The common opening: starts `a` on backend `a` and waits for its grant (term 1), then
/// starts `b` on a handle of the same backend and waits for its `NewLeader` (a, term 1).
async fn leader_and_follower_on(a: MemoryBackend, cfg: Config) -> Pair {
    let b = a.handle(ident("b"));
    let (ta, ha, mut ea) = start(a.clone(), "a", cfg);
    assert_eq!(next(&mut ea).await, Event::StartedLeading { term: Term(1) });
    let (tb, hb, mut eb) = start(b.clone(), "b", cfg);
    follows_a(&mut eb).await;
    Pair {
        a,
        b,
        ta,
        ha,
        ea,
        hb,
        eb,
        _tb: tb,
    }
}

/// [`leader_and_follower_on`] a fresh backend.
async fn leader_and_follower(cfg: Config) -> Pair {
    leader_and_follower_on(MemoryBackend::new(ident("a")), cfg).await
}

#[tokio::test(start_paused = true)]
async fn leader_steps_down_at_renew_deadline_before_any_follower_takes_over() {
    let cfg = Config::default();
    let Pair { a, b, ea, eb, .. } = &mut leader_and_follower(cfg).await;

    // Let a renew a few times, then cut it off. Its last successful renewal happened at most
    // one retry period before the cut.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let cut = Instant::now();
    a.set_unreachable(true);
    let last_change_seen_by_b = cut - cfg.retry_period();

    assert_eq!(
        next(ea).await,
        Event::StoppedLeading {
            term: Term(1),
            reason: StopReason::RenewDeadline
        }
    );
    let stopped = Instant::now();
    assert!(
        stopped - cut <= cfg.renew_deadline(),
        "stepped down {:?} after the cut",
        stopped - cut
    );

    assert_eq!(next(eb).await, Event::StartedLeading { term: Term(2) });
    let taken = Instant::now();
    assert!(taken > stopped, "b took over before a stepped down");
    assert!(
        taken - last_change_seen_by_b >= cfg.lease_duration(),
        "b took over early"
    );
    assert!(
        taken - cut <= cfg.lease_duration() + cfg.retry_period(),
        "b took over late: {:?}",
        taken - cut
    );
    assert_eq!(b.record().unwrap().term, Term(2));
}

/// A follower's read that hangs (a partition that heals, a slow apiserver) and returns a record
/// renewed while it hung has observed that record when the read returned, not when the
/// attempt began: counting from the attempt's start would count the hang as time the holder
/// was silent, and take over from a leader that is still within its renew deadline. (Seen in
/// the kube fault campaign: a healed follower led 130 ms before the cut-off leader stepped
/// down.)
#[tokio::test(start_paused = true)]
async fn a_read_that_hung_counts_expiry_from_when_it_returned() {
    let cfg = Config::default();
    let Pair { a, b, ea, eb, .. } = &mut leader_and_follower(cfg).await;
    // b's next read hangs for most of a lease while a renews; right after it returns, a is
    // cut off.
    let hang = cfg.lease_duration() - cfg.retry_period() / 2;
    b.delay_next_read(hang).notified().await;
    let read = Instant::now();
    a.set_unreachable(true);

    assert_eq!(
        next(ea).await,
        Event::StoppedLeading {
            term: Term(1),
            reason: StopReason::RenewDeadline
        }
    );
    let stopped = Instant::now();
    assert_eq!(next(eb).await, Event::StartedLeading { term: Term(2) });
    let taken = Instant::now();
    assert!(
        taken >= stopped,
        "b led {:?} before a stepped down (its read returned {:?} before a stepped down)",
        stopped - taken,
        stopped - read
    );
    assert!(
        taken - read >= cfg.lease_duration(),
        "b took over {:?} after its read returned, within a lease of {:?}",
        taken - read,
        cfg.lease_duration()
    );
}

/// Expiry is measured on the observer's monotonic clock: a holder whose wall clock runs an
/// hour behind (its renewals look an hour old) is never taken over while it renews, and one an
/// hour ahead is taken over on time once it stops.
async fn skew_case(skew: SignedDuration) {
    let cfg = Config::default();
    let Pair { a, eb, .. } =
        &mut leader_and_follower_on(MemoryBackend::new(ident("a")).with_skew(skew), cfg).await;

    // 60 s of renewals: b must stay a follower.
    let quiet = tokio::time::timeout(Duration::from_secs(60), next(eb)).await;
    assert!(
        quiet.is_err(),
        "b reported {quiet:?} while a was renewing (skew {skew})"
    );
    assert_eq!(a.record().unwrap().term, Term(1));

    let cut = Instant::now();
    a.set_unreachable(true);
    assert_eq!(next(eb).await, Event::StartedLeading { term: Term(2) });
    let taken = Instant::now() - cut;
    assert!(
        taken >= cfg.lease_duration() - cfg.retry_period()
            && taken <= cfg.lease_duration() + cfg.retry_period(),
        "takeover {taken:?} after the cut with skew {skew}"
    );
}

#[tokio::test(start_paused = true)]
async fn holder_clock_an_hour_behind_causes_no_takeover() {
    skew_case(SignedDuration::from_hours(-1)).await;
}

#[tokio::test(start_paused = true)]
async fn holder_clock_an_hour_ahead_does_not_delay_takeover() {
    skew_case(SignedDuration::from_hours(1)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_and_a_follower_takes_over_without_waiting_for_expiry() {
    let cfg = Config::default();
    let Pair { ta, b, ea, eb, .. } = &mut leader_and_follower(cfg).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    ta.cancel();
    assert_eq!(
        next(ea).await,
        Event::StoppedLeading {
            term: Term(1),
            reason: StopReason::Shutdown
        }
    );
    assert!(ea.next().await.is_none(), "a's stream ends after shutdown");
    assert_eq!(next(eb).await, Event::StartedLeading { term: Term(2) });
    assert!(
        Instant::now() - t0 < cfg.retry_period(),
        "handoff waited for a poll"
    );
    let h = b.handle(ident("x"));
    let grants = crown::backend::Observe::history(&h).await.unwrap();
    assert_eq!(grants.len(), 2);
    assert_eq!(
        grants[1].previous_end,
        Some(crown::election::EndKind::Released)
    );
}

#[tokio::test(start_paused = true)]
async fn resign_hands_over_and_terms_strictly_increase() {
    let cfg = Config::default();
    let Pair { ha, hb, ea, eb, .. } = &mut leader_and_follower(cfg).await;
    let mut last = Term(1);
    for round in 0..6 {
        let (h, e_leader, e_follower, follower) = if round % 2 == 0 {
            (&*ha, &mut *ea, &mut *eb, "b")
        } else {
            (&*hb, &mut *eb, &mut *ea, "a")
        };
        // Let the previous resigner's hold-off (one retry period) pass first.
        tokio::time::sleep(cfg.retry_period() * 2).await;
        h.resign().await;
        assert_eq!(
            next(e_leader).await,
            Event::StoppedLeading {
                term: last,
                reason: StopReason::Released
            }
        );
        let started = next(e_follower).await;
        let Event::StartedLeading { term } = started else {
            panic!("{follower}: {started:?}")
        };
        assert!(term > last, "term {term} after {last}");
        last = term;
        // The resigned leader may first see the lease free, then the new leader.
        let mut seen = next(e_leader).await;
        if seen == Event::NoLeader {
            seen = next(e_leader).await;
        }
        assert_eq!(
            seen,
            Event::NewLeader {
                id: follower.into(),
                term
            }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn leader_that_finds_another_term_in_the_record_stops_at_once() {
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let (_ta, _ha, mut ea) = start(a.clone(), "a", cfg);
    assert_eq!(next(&mut ea).await, Event::StartedLeading { term: Term(1) });
    // Another participant with a clock of its own takes the lease "by force" (as a follower
    // that judged it expired while a was paused would).
    let b = a.handle(ident("b"));
    a.set_unreachable(true);
    let (_tb, _hb, mut eb) = start(b.clone(), "b", cfg);
    assert_eq!(
        next(&mut ea).await,
        Event::StoppedLeading {
            term: Term(1),
            reason: StopReason::RenewDeadline
        }
    );
    follows_a(&mut eb).await;
    assert_eq!(next(&mut eb).await, Event::StartedLeading { term: Term(2) });
    a.set_unreachable(false);
    // a comes back: it follows b and never renews term 1.
    assert_eq!(
        next(&mut ea).await,
        Event::NewLeader {
            id: "b".into(),
            term: Term(2)
        }
    );
    assert_eq!(b.record().unwrap().holder, "b");
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_backend_stops_the_elector_with_a_fatal_event_after_stepping_down() {
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let (_ta, _ha, mut ea) = start(a.clone(), "a", cfg);
    assert_eq!(next(&mut ea).await, Event::StartedLeading { term: Term(1) });
    a.set_forbidden(true);
    // A leader retries until its deadline and steps down; as a follower the refusal is fatal.
    assert_eq!(
        next(&mut ea).await,
        Event::StoppedLeading {
            term: Term(1),
            reason: StopReason::RenewDeadline
        }
    );
    assert_eq!(
        next(&mut ea).await,
        Event::Fatal {
            message: "memory backend: forbidden".into()
        }
    );
    assert!(ea.next().await.is_none());
}

/// A memory backend whose renewals panic once `armed` is set (a bug in a backend, say).
struct PanicOnRenew {
    inner: MemoryBackend,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl crown::election::Lock for PanicOnRenew {
    fn kind(&self) -> &'static str {
        "memory"
    }
    async fn try_acquire_or_renew(
        &self,
        req: crown::backend::AcquireRequest,
        observer: &mut crown::election::lease::Observer,
    ) -> Result<crown::backend::Outcome, crown::backend::BackendError> {
        if req.held.is_some() && self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("renewal bug");
        }
        self.inner.try_acquire_or_renew(req, observer).await
    }
    async fn release(&self, term: Term) -> Result<(), crown::backend::BackendError> {
        self.inner.release(term).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_elector_reports_failure_runs_the_hook_and_releases_the_lease() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let b = a.handle(ident("b"));
    let armed = Arc::new(AtomicBool::new(false));
    let hooked = Arc::new(AtomicBool::new(false));
    let hook: crown::election::BeforeRelease = {
        let hooked = hooked.clone();
        Arc::new(move |_term| {
            let hooked = hooked.clone();
            Box::pin(async move { hooked.store(true, Ordering::SeqCst) })
        })
    };
    let tok = CancellationToken::new();
    let (_ha, mut ea) = Elector::new(
        Arc::new(PanicOnRenew {
            inner: a.clone(),
            armed: armed.clone(),
        }),
        cfg,
        ident("a"),
    )
    .unwrap()
    .before_release(Duration::from_millis(500), hook)
    .unwrap()
    .spawn(tok.clone());
    assert_eq!(next(&mut ea).await, Event::StartedLeading { term: Term(1) });
    let (_tb, _hb, mut eb) = start(b.clone(), "b", cfg);
    follows_a(&mut eb).await;
    let t0 = Instant::now();
    armed.store(true, Ordering::SeqCst);
    // The failure is an event, after a step-down, never a silent end of the stream.
    assert_eq!(
        next(&mut ea).await,
        Event::StoppedLeading {
            term: Term(1),
            reason: StopReason::Failed
        }
    );
    match next(&mut ea).await {
        Event::Failed { message } => assert!(message.contains("renewal bug"), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(ea.next().await.is_none());
    // The lease was released (after the hook), not left to expire.
    assert_eq!(next(&mut eb).await, Event::StartedLeading { term: Term(2) });
    assert!(hooked.load(Ordering::SeqCst), "the before-release hook ran");
    assert!(
        Instant::now() - t0 < cfg.retry_period() + Duration::from_millis(500),
        "b waited {:?}: the lease was not released",
        Instant::now() - t0
    );
    let grants = crown::backend::Observe::history(&b).await.unwrap();
    assert_eq!(
        grants[1].previous_end,
        Some(crown::election::EndKind::Released)
    );
}

/// A memory backend that counts the elector's calls and whose renewals can be made to hang
/// (a backend that stops answering without an error).
#[derive(Default)]
struct Probe {
    acquires: std::sync::atomic::AtomicU64,
    releases: std::sync::atomic::AtomicU64,
    hang_renewals: std::sync::atomic::AtomicBool,
}

struct Probed {
    inner: MemoryBackend,
    probe: Arc<Probe>,
}

#[async_trait::async_trait]
impl crown::election::Lock for Probed {
    fn kind(&self) -> &'static str {
        "memory"
    }
    async fn try_acquire_or_renew(
        &self,
        req: crown::backend::AcquireRequest,
        observer: &mut crown::election::lease::Observer,
    ) -> Result<crown::backend::Outcome, crown::backend::BackendError> {
        use std::sync::atomic::Ordering;
        self.probe.acquires.fetch_add(1, Ordering::SeqCst);
        if req.held.is_some() && self.probe.hang_renewals.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.try_acquire_or_renew(req, observer).await
    }
    async fn release(&self, term: Term) -> Result<(), crown::backend::BackendError> {
        self.probe
            .releases
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.release(term).await
    }
    async fn changed(&self) {
        self.inner.changed().await
    }
}

fn start_probed(
    b: MemoryBackend,
    id: &str,
    cfg: Config,
) -> (
    Arc<Probe>,
    CancellationToken,
    crown::election::ElectorHandle,
    Events,
) {
    let probe = Arc::new(Probe::default());
    let tok = CancellationToken::new();
    let backend = Probed {
        inner: b,
        probe: probe.clone(),
    };
    let (h, ev) = Elector::new(Arc::new(backend), cfg, ident(id))
        .unwrap()
        .spawn(tok.clone());
    (probe, tok, h, ev)
}

/// Lets every other task run many times without letting virtual time pass: a task that spins
/// (calls the backend without waiting) gets thousands of turns here.
async fn spin_a_while() {
    for _ in 0..2000 {
        tokio::task::yield_now().await;
    }
}

fn calls(p: &Probe) -> (u64, u64) {
    use std::sync::atomic::Ordering;
    (
        p.acquires.load(Ordering::SeqCst),
        p.releases.load(Ordering::SeqCst),
    )
}

/// Issue 14, trap 1: dropping every handle of a leader ends the election: the lease is
/// released exactly once, the grant's token is cancelled, the stream ends, and the backend is
/// not called again (the old elector read the closed command channel as "renew now" and
/// renewed in a hot loop).
#[tokio::test(start_paused = true)]
async fn dropping_every_handle_of_a_leader_releases_once_and_stops_calling_the_backend() {
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let (probe, _ta, ha, mut ea) = start_probed(a.clone(), "a", cfg);
    assert_eq!(next(&mut ea).await, Event::StartedLeading { term: Term(1) });
    let lead = ha.leadership().await.expect("a leads");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = calls(&probe);
    assert_eq!(before.1, 0);
    let ha2 = ha.clone();
    drop(ha);
    drop(ha2);
    spin_a_while().await;
    let after = calls(&probe);
    assert!(
        after.0 - before.0 <= 1,
        "{} backend calls right after the last handle was dropped",
        after.0 - before.0
    );
    assert_eq!(after.1, 1, "the lease is released once");
    assert!(
        lead.token().is_cancelled(),
        "the grant's token is cancelled"
    );
    assert_eq!(
        next(&mut ea).await,
        Event::StoppedLeading {
            term: Term(1),
            reason: StopReason::Shutdown
        }
    );
    assert!(ea.next().await.is_none(), "the stream ends");
    assert!(
        !a.record().unwrap().is_held(),
        "released, not left to expire"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(calls(&probe), after, "no backend call after the release");
}

/// Trap 1 for a follower: no handle left ends its election too, without spinning.
#[tokio::test(start_paused = true)]
async fn dropping_every_handle_of_a_follower_stops_it_without_spinning() {
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let b = a.handle(ident("b"));
    let (_ta, _ha, mut ea) = start(a.clone(), "a", cfg);
    assert_eq!(next(&mut ea).await, Event::StartedLeading { term: Term(1) });
    let (probe, _tb, hb, mut eb) = start_probed(b, "b", cfg);
    follows_a(&mut eb).await;
    let before = calls(&probe);
    drop(hb);
    spin_a_while().await;
    let after = calls(&probe);
    assert!(
        after.0 - before.0 <= 1,
        "{} backend calls right after the last handle was dropped",
        after.0 - before.0
    );
    assert!(eb.next().await.is_none(), "the stream ends");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(calls(&probe), after, "no backend call once stopped");
    assert_eq!(after.1, 0, "a follower releases nothing");
}

/// Issue 14, trap 2: a consumer that never reads the events does not hold the leader back.
/// Renewals continue, `status()` never says Leader past the renew deadline, and the reader
/// that finally looks gets a `Lagged` marker first (the old elector awaited a bounded
/// channel inside its renewal step: after 64 unread events it stopped renewing while its
/// status still said Leader).
#[tokio::test(start_paused = true)]
async fn a_consumer_that_never_reads_events_does_not_stall_the_leader() {
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let b = a.handle(ident("b"));
    let (_ta, ha, mut ea) = start(a.clone(), "a", cfg);
    let status = ha.status();
    let lead = ha.leadership().await.expect("a leads");
    assert_eq!(lead.term(), Term(1));
    let (_tb, _hb, _eb) = start(b.clone(), "b", cfg);
    let rev0 = a.record().unwrap().revision;
    // 300 s: several times the event buffer's worth of renewals.
    let t0 = Instant::now();
    let mut samples = 0;
    while Instant::now() - t0 < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = status.borrow().clone();
        if s.role == crown::election::Role::Leader {
            let deadline = s.deadline.expect("a leader has a deadline");
            assert!(
                Instant::now() < deadline,
                "status says Leader {:?} past its renew deadline",
                Instant::now() - deadline
            );
            samples += 1;
        }
    }
    assert!(samples > 1000, "a led all along ({samples} samples)");
    let rec = a.record().unwrap();
    assert_eq!((rec.holder.as_str(), rec.term), ("a", Term(1)));
    assert!(
        rec.revision - rev0 >= 250,
        "renewals continued: {} writes in 300 s",
        rec.revision - rev0
    );
    assert!(!lead.token().is_cancelled());
    match ea.next().await {
        Some(Event::Lagged { missed }) => assert!(missed > 100, "missed {missed}"),
        other => panic!("expected a Lagged marker first, got {other:?}"),
    }
    // Then the newest events, still in order.
    assert!(matches!(ea.next().await, Some(Event::Renewed { .. })));
}

/// Issue 14, trap 4: a before-release hook bound that could outlast the lease is refused.
#[test]
fn a_before_release_bound_that_outlasts_the_lease_is_refused() {
    let cfg = Config::default();
    let margin = cfg.lease_duration() - cfg.renew_deadline();
    let hook: crown::election::BeforeRelease = Arc::new(|_| Box::pin(async {}));
    let elector = || Elector::new(Arc::new(MemoryBackend::new(ident("a"))), cfg, ident("a"));
    let e = elector()
        .unwrap()
        .before_release(margin, hook.clone())
        .unwrap_err();
    assert_eq!(
        e,
        crown::election::ConfigError::BeforeReleaseTooLong {
            bound: margin,
            margin
        }
    );
    assert!(e.to_string().contains("must be less than"), "{e}");
    elector()
        .unwrap()
        .before_release(margin - Duration::from_millis(1), hook)
        .unwrap();
}

/// `Leadership`: a leader whose renewals hang has its token cancelled no later than its
/// renew deadline, while the lease is still its own (nobody else granted yet).
#[tokio::test(start_paused = true)]
async fn leadership_is_cancelled_by_the_renew_deadline_when_renewals_hang() {
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let b = a.handle(ident("b"));
    let (probe, _ta, ha, _ea) = start_probed(a.clone(), "a", cfg);
    let lead = ha.leadership().await.expect("a leads");
    assert_eq!(lead.term(), Term(1));
    let (_tb, _hb, mut eb) = start(b.clone(), "b", cfg);
    follows_a(&mut eb).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    probe
        .hang_renewals
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Renewals sent from now on never answer: the deadline is that of the last one that did.
    let deadline = ha.status().borrow().deadline.expect("leading");
    tokio::time::timeout(Duration::from_secs(60), lead.cancelled())
        .await
        .expect("the token is cancelled");
    assert!(
        Instant::now() <= deadline,
        "cancelled {:?} after the renew deadline",
        Instant::now() - deadline
    );
    assert_eq!(b.record().unwrap().term, Term(1), "nobody else was granted");
    assert_eq!(next(&mut eb).await, Event::StartedLeading { term: Term(2) });
}

/// `Leadership`: resign cancels the token, and the next call returns the next grant, once.
#[tokio::test(start_paused = true)]
async fn leadership_is_cancelled_on_resign_and_each_grant_is_returned_once() {
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let (_ta, ha, _ea) = start(a.clone(), "a", cfg);
    let first = ha.leadership().await.expect("a leads");
    assert_eq!(first.term(), Term(1));
    ha.resign().await;
    tokio::time::timeout(Duration::from_secs(1), first.cancelled())
        .await
        .expect("resign cancels the token");
    // Alone in the election, a takes the lease again after its hold-off, in a new term.
    let second = tokio::time::timeout(Duration::from_secs(60), ha.leadership())
        .await
        .expect("a second grant")
        .expect("a leads again");
    assert_eq!(second.term(), Term(2));
    assert!(!second.token().is_cancelled());
    // The same grant is not returned twice to one handle; a new handle gets the live one.
    let again = tokio::time::timeout(Duration::from_secs(10), ha.leadership()).await;
    assert!(again.is_err(), "returned {again:?} again");
}

/// `Leadership`: a shutdown cancels the token, and `leadership()` then says the elector
/// has stopped.
#[tokio::test(start_paused = true)]
async fn leadership_is_cancelled_on_shutdown_and_then_there_is_none() {
    let cfg = Config::default();
    let a = MemoryBackend::new(ident("a"));
    let (ta, ha, mut ea) = start(a.clone(), "a", cfg);
    let lead = ha.leadership().await.expect("a leads");
    ta.cancel();
    tokio::time::timeout(Duration::from_secs(1), lead.cancelled())
        .await
        .expect("shutdown cancels the token");
    while ea.next().await.is_some() {}
    assert!(ha.leadership().await.is_none());
    assert!(!a.record().unwrap().is_held());
}
