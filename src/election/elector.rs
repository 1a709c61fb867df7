//! The state machine that campaigns for the lease through a [`Lock`] and reports
//! [`Event`]s. A private `State` (following or leading) and one `step` per transition, in the
//! shape of kube-runtime's `watcher`: the spawned task loops over `step` and sends events.
//!
//! Safety rules enforced here, for every backend:
//! - a leader counts its renew deadline from the moment it *sent* its last successful renewal,
//!   so it stops acting before any follower (whose clock starts when it *saw* that renewal)
//!   may consider the lease expired;
//! - before each renewal the deadline is checked first: a leader that was paused (SIGSTOP)
//!   past it steps down without writing anything in its old term;
//! - a renewal that comes back after the deadline does not count;
//! - with a [`BeforeRelease`] hook (the sidecar's child process), every step-down announces
//!   `StoppedLeading`, then awaits the hook (bounded), and only then releases or abandons the
//!   lease: whatever the hook stops is stopped before anyone else can be granted the lease.

mod follow;
mod lead;

use super::handle::{Command, EVENT_BUFFER, ElectorHandle, Events, GrantSlot, Role, Status};
use super::lease::Observer;
use super::lock::{AcquireRequest, Lock};
use super::{Config, ConfigError, Event, Identity, StopReason, Term};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Awaited on every step-down after `StoppedLeading` is announced and before the lease is
/// released or abandoned (see [`Elector::before_release`]). Gets the term that ended.
pub type BeforeRelease = Arc<dyn Fn(Term) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Campaigns for the lease; see the module docs.
pub struct Elector {
    backend: Arc<dyn Lock>,
    cfg: Config,
    me: Identity,
    before_release: Option<(BeforeRelease, Duration)>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("backend", &self.backend.kind())
            .field("cfg", &self.cfg)
            .field("me", &self.me)
            .field(
                "before_release",
                &self.before_release.as_ref().map(|(_, b)| b),
            )
            .finish()
    }
}

enum State {
    Following {
        announced: Option<Option<(String, Term)>>,
        hold_off_until: Option<Instant>,
    },
    Leading {
        term: Term,
        last_renew: Instant,
        next_attempt: Instant,
    },
    Done,
}

/// The term we hold and its renew deadline, until the lease is released or abandoned: what a
/// failed (panicked) elector must still give up.
type Held = Arc<std::sync::Mutex<Option<(Term, Instant)>>>;

struct Ctx {
    held: Held,
    observer: Observer,
    events: broadcast::Sender<Event>,
    grants: watch::Sender<GrantSlot>,
    /// The token of the current grant: cancelled when the grant ends, or when the task is
    /// dropped (it panicked) before anything else happens.
    lead: Option<DropGuard>,
    status: watch::Sender<Status>,
    commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    /// Backend errors while following: since when, the last line logged, how many since.
    follow_errors: Option<(Instant, Instant, u64)>,
}

impl Elector {
    /// An elector for `me` over `backend`, after checking `cfg` (see [`Config::validate`]).
    pub fn new(backend: Arc<dyn Lock>, cfg: Config, me: Identity) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Elector {
            backend,
            cfg,
            me,
            before_release: None,
        })
    }

    /// Runs `hook` on every step-down, between announcing `StoppedLeading` and releasing (or
    /// abandoning) the lease, waiting at most `bound` for it. The lease is still ours
    /// meanwhile only if `bound < lease_duration - renew_deadline`: a longer bound is
    /// refused ([`ConfigError::BeforeReleaseTooLong`]).
    pub fn before_release(
        mut self,
        bound: Duration,
        hook: BeforeRelease,
    ) -> Result<Self, ConfigError> {
        let margin = self.cfg.lease_duration() - self.cfg.renew_deadline();
        if bound >= margin {
            return Err(ConfigError::BeforeReleaseTooLong { bound, margin });
        }
        self.before_release = Some((hook, bound));
        Ok(self)
    }

    /// Starts campaigning (spawns a tokio task). Events arrive on the stream ([`Events`]: it
    /// never holds the elector back). The election ends when `shutdown` is cancelled or the
    /// last [`ElectorHandle`] is dropped; the stream ends after that, once the lease (if
    /// held) has been released.
    pub fn spawn(self, shutdown: CancellationToken) -> (ElectorHandle, Events) {
        let (etx, erx) = broadcast::channel(EVENT_BUFFER);
        let (gtx, grx) = watch::channel(GrantSlot::default());
        let (ctx_cmd, rx_cmd) = mpsc::channel(8);
        let (stx, srx) = watch::channel(Status {
            role: Role::Candidate,
            term: Term(0),
            leader: None,
            deadline: None,
            renew_failures: 0,
        });
        let held: Held = Arc::default();
        let ctx = Ctx {
            held: held.clone(),
            observer: Observer::default(),
            events: etx.clone(),
            grants: gtx,
            lead: None,
            status: stx,
            commands: rx_cmd,
            shutdown,
            follow_errors: None,
        };
        let backend = self.backend.clone();
        let hook = self.before_release.clone();
        let id = self.me.id.clone();
        let task = tokio::spawn(self.run(ctx));
        tokio::spawn(async move {
            if let Err(e) = task.await {
                let message = panic_message(e);
                tracing::error!(id = %id, "[{id}] the elector failed: {message}");
                // The task's state is gone: the grant's token is cancelled already.
                give_up(backend, hook, held, &etx).await;
                let _ = etx.send(Event::Failed { message });
            }
        });
        (
            ElectorHandle {
                commands: ctx_cmd,
                status: srx,
                grants: grx,
                last_grant: std::sync::Mutex::new(Term(0)),
            },
            Events {
                inner: BroadcastStream::new(erx),
            },
        )
    }

    async fn run(self, mut ctx: Ctx) {
        let mut state = State::Following {
            announced: None,
            hold_off_until: None,
        };
        loop {
            state = match state {
                State::Done => break,
                s => self.step(s, &mut ctx).await,
            };
        }
        ctx.lead = None;
        ctx.grants.send_modify(|g| {
            g.current = None;
            g.stopped = true;
        });
    }

    fn req(&self, held: Option<Term>, hold_off: bool) -> AcquireRequest {
        AcquireRequest {
            held,
            hold_off,
            lease_duration: self.cfg.lease_duration(),
            retry_period: self.cfg.retry_period(),
            renew_deadline: self.cfg.renew_deadline(),
            now: Instant::now(),
            deadline: None,
        }
    }

    /// Never waits: a consumer that lags loses the oldest events (see [`Events`]).
    fn emit(&self, ctx: &Ctx, e: Event) {
        let _ = ctx.events.send(e);
    }

    /// One transition.
    async fn step(&self, state: State, ctx: &mut Ctx) -> State {
        match state {
            State::Done => State::Done,
            State::Following {
                announced,
                hold_off_until,
            } => self.follow_step(announced, hold_off_until, ctx).await,
            State::Leading {
                term,
                last_renew,
                next_attempt,
            } => self.lead_step(term, last_renew, next_attempt, ctx).await,
        }
    }
}

/// The panic message of a failed task.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panicked: {msg}")
}

/// After the elector task failed: if it still held a term, announce the step-down, run the
/// before-release hook (the child goes first), then release the lease if its renew deadline
/// has not passed, else abandon it. Each step runs in its own task (a second panic is
/// contained) and is bounded.
async fn give_up(
    backend: Arc<dyn Lock>,
    hook: Option<(BeforeRelease, Duration)>,
    held: Held,
    events: &broadcast::Sender<Event>,
) {
    // A poisoned lock still holds the last value written.
    let held = *held.lock().unwrap_or_else(|p| p.into_inner());
    let Some((term, deadline)) = held else {
        let b = backend.clone();
        let _ = tokio::spawn(async move { b.abandon().await }).await;
        return;
    };
    let _ = events.send(Event::StoppedLeading {
        term,
        reason: StopReason::Failed,
    });
    if let Some((hook, bound)) = hook {
        let _ = timeout(bound, tokio::spawn(hook(term))).await;
    }
    let b = backend.clone();
    let released = if Instant::now() < deadline {
        matches!(
            timeout_at(deadline, tokio::spawn(async move { b.release(term).await })).await,
            Ok(Ok(Ok(())))
        )
    } else {
        false
    };
    if !released {
        let _ = tokio::spawn(async move { backend.abandon().await }).await;
    }
}
