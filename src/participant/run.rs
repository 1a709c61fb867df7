//! `crown run` in steps: [`prepare`] (flags, limits, the listener, the backend, a `--once`
//! duty already done), [`Run::start`] (the elector with the child supervisor, HTTP, the
//! webhook, signals, heartbeats: [`super::spawn`]), [`Run::step`] until the elector's stream
//! ends (each [`Step`] to one `on_*` method), then [`Run::finish`]. The sidecar's policies
//! are decided in [`sidecar::policy`]; the `--once` duty's record and lines are in
//! [`super::duty`], the `--wait` deadline in [`WaitLimit`], the events' lines in
//! [`log_event`].

use super::duty;
use super::log::log_event;
use super::prepare::{Setup, prepare};
use super::spawn::{spawn_heartbeats, spawn_signals, start_elector, start_http};
use super::wait::WaitLimit;
use crate::backend::Backend;
use crate::cli::RunArgs;
use crate::election::{Config, ElectorHandle, Event, Events, Identity, Role, Term};
use crate::exit;
use crate::exit::Failure;
use crate::sidecar::policy::{ChildExitAction, Linger, Policies};
use crate::sidecar::{self, child};
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `crown run`. Returns the exit code.
///
/// In the steps the module describes: `prepare`, `Run::start`, `Run::step` until the
/// elector's stream ends, `Run::finish`.
pub async fn run(args: RunArgs) -> Result<i32, Failure> {
    let Some(setup) = prepare(args).await? else {
        return Ok(exit::OK);
    };
    let mut run = Run::start(setup)?;
    while run.step().await {}
    run.finish().await
}
/// What ends `crown run`, as it becomes known; [`Run::finish`] turns it into the result.
struct Outcome {
    /// The exit code if nothing below failed.
    code: i32,
    /// A fatal backend answer (a denial): [`exit::FORBIDDEN`].
    fatal: Option<String>,
    /// The elector failed (panicked): [`exit::INTERNAL`].
    failed: Option<String>,
    /// `--once`: the duty record could not be read (not an outage).
    duty_failure: Option<Failure>,
}

/// One thing the event loop waits for ([`Run::next`]).
enum Step {
    /// An elector event.
    Event(Event),
    /// The elector's event stream ended.
    ElectorEnded,
    /// `--wait` is over without the lease.
    WaitExpired,
    /// `--once`, lingering: time to look whether the linger is over.
    LingerTick,
    /// `--once`: time to look for the duty's success record.
    DutyTick,
    /// The child exited on its own.
    ChildExited(child::Exited),
}

/// A running `crown run`: the elector and everything around it, and the loop's state.
struct Run {
    args: RunArgs,
    cfg: Config,
    me: Identity,
    id: String,
    backend: Arc<dyn Backend>,
    shutdown: CancellationToken,
    handle: ElectorHandle,
    events: Events,
    supervisor: Option<child::Supervisor>,
    child_exits: Option<mpsc::Receiver<child::Exited>>,
    metrics: Arc<sidecar::http::Metrics>,
    http: Option<tokio::task::JoinHandle<()>>,
    notifier: Option<sidecar::notify::Notifier>,
    heartbeats: tokio::task::JoinHandle<()>,
    wait: WaitLimit,
    policies: Policies,
    duty: Option<crate::once::Duty>,
    /// `--once`: followers look for the success record every retry period.
    duty_tick: tokio::time::Interval,
    /// `--once`, recorded: release (shut down) at its end, or once no one else is left.
    linger: Linger,
    outcome: Outcome,
}

impl Run {
    /// Starts the elector (with the child supervisor), `--http`, `--notify-url`, the signal
    /// handlers and the heartbeats.
    fn start(s: Setup) -> Result<Run, Failure> {
        let id = s.me.id.clone();
        tracing::info!(
            event = "starting",
            id = id.as_str(),
            pid = s.me.pid,
            host = s.me.host.as_str(),
            "[{id}] starting (pid {}, host {}, backend {} {}, election {}, lease {:?} / renew {:?} / retry {:?})",
            s.me.pid,
            s.me.host,
            s.backend.kind(),
            s.args.backend.location(),
            s.args.backend.election,
            s.cfg.lease_duration(),
            s.cfg.renew_deadline(),
            s.cfg.retry_period()
        );
        let shutdown = CancellationToken::new();
        let (elector, supervisor, child_exits) = start_elector(&s)?;
        let (handle, events) = elector.spawn(shutdown.clone());
        let metrics = Arc::new(sidecar::http::Metrics::default());
        let http = s.listener.map(|listener| {
            let state = sidecar::http::AppState {
                status: handle.status(),
                metrics: metrics.clone(),
                election: s.args.backend.election.clone(),
                cfg: s.cfg,
            };
            start_http(&id, listener, state, s.limits, &shutdown)
        });
        let notifier = s.args.sidecar.notify_url.clone().map(|url| {
            sidecar::notify::Notifier::spawn(
                url,
                id.clone(),
                s.args.backend.election.clone(),
                metrics.webhook(),
            )
        });
        spawn_signals(&id, &handle, &shutdown)?;
        let heartbeats = spawn_heartbeats(
            &s.backend,
            &s.me,
            &s.args.backend.election,
            &handle,
            &shutdown,
            s.cfg.retry_period(),
        );
        let mut duty_tick = tokio::time::interval(s.cfg.retry_period());
        duty_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Run {
            wait: WaitLimit::new(s.args.wait, s.cfg.lease_duration()),
            policies: Policies::new(s.args.sidecar.on_child_exit, s.args.sidecar.on_loss),
            args: s.args,
            cfg: s.cfg,
            me: s.me,
            id,
            backend: s.backend,
            shutdown,
            handle,
            events,
            supervisor,
            child_exits,
            metrics,
            http,
            notifier,
            heartbeats,
            duty: s.duty,
            duty_tick,
            linger: Linger::default(),
            outcome: Outcome {
                code: exit::OK,
                fatal: None,
                failed: None,
                duty_failure: None,
            },
        })
    }

    /// Waits for the next thing to happen and acts on it; false once the elector has ended.
    async fn step(&mut self) -> bool {
        match self.next().await {
            Step::Event(ev) => self.on_event(ev).await,
            Step::ElectorEnded => {
                self.on_elector_end();
                return false;
            }
            Step::WaitExpired => self.on_wait_expired(),
            Step::LingerTick => self.on_linger_tick().await,
            Step::DutyTick => self.on_duty_tick().await,
            Step::ChildExited(x) => self.on_child_exit(x).await,
        }
        true
    }

    /// The next [`Step`].
    async fn next(&mut self) -> Step {
        let stopping = self.shutdown.is_cancelled();
        let lingering = self.linger.active();
        tokio::select! {
            ev = self.events.next() => match ev {
                Some(ev) => Step::Event(ev),
                None => Step::ElectorEnded,
            },
            _ = self.wait.expired(), if self.wait.pending() => Step::WaitExpired,
            _ = tokio::time::sleep(self.cfg.retry_period() / 4), if lingering && !stopping => Step::LingerTick,
            _ = self.duty_tick.tick(), if self.duty.is_some() && !lingering && !stopping => Step::DutyTick,
            Some(x) = recv_opt(&mut self.child_exits) => Step::ChildExited(x),
        }
    }

    /// Ends the process with `code`: shutdown releases the lease.
    fn exit_with(&mut self, code: i32) {
        self.outcome.code = code;
        self.shutdown.cancel();
    }

    /// The event stream ended: that may only happen after a shutdown, anything else is a bug.
    fn on_elector_end(&mut self) {
        if !self.shutdown.is_cancelled()
            && self.outcome.fatal.is_none()
            && self.outcome.failed.is_none()
        {
            self.outcome.failed = Some("the elector stopped unexpectedly".to_string());
            self.shutdown.cancel();
        }
    }

    /// `--wait` is over without the lease.
    fn on_wait_expired(&mut self) {
        self.wait.give_up(&self.id);
        self.exit_with(exit::WAIT_EXPIRED);
    }

    /// `--once`, lingering after the duty was recorded: release once no one else is left or
    /// the linger is over.
    async fn on_linger_tick(&mut self) {
        let alone =
            match tokio::time::timeout(self.cfg.retry_period(), self.backend.members()).await {
                Ok(Ok(ms)) => ms.iter().all(|m| m.id == self.id),
                _ => false,
            };
        if self.linger.over(alone) {
            self.shutdown.cancel();
        }
    }

    /// `--once`: reads the duty's success record, bounded by the renew deadline (`None`
    /// without `--once`).
    async fn read_duty(&self) -> Option<Result<Option<crate::once::DutyRecord>, Failure>> {
        let d = self.duty.as_ref()?;
        let within = self.cfg.renew_deadline();
        Some(
            d.check_within(self.backend.as_ref(), &self.args.backend.election, within)
                .await,
        )
    }

    /// `--once`: the duty is done (by anyone): exit 0 (releasing the lease if we hold it).
    fn on_duty_found(&mut self, rec: &crate::once::DutyRecord) {
        duty::log_duty_done(&self.id, rec);
        self.exit_with(exit::OK);
    }

    /// `--once`: a follower looks whether the duty has been done meanwhile.
    async fn on_duty_tick(&mut self) {
        let read = self.read_duty().await.expect("guarded");
        let id = self.id.as_str();
        match read {
            Ok(None) => {}
            Ok(Some(rec)) => self.on_duty_found(&rec),
            Err(f) if f.code == exit::BACKEND_UNAVAILABLE => {
                tracing::debug!("[{id}] cannot read the duty record: {f}");
            }
            Err(f) => {
                self.outcome.duty_failure = Some(f);
                self.shutdown.cancel();
            }
        }
    }

    /// The child exited on its own: a `--once` success is recorded, anything else goes to
    /// the `--on-child-exit` policy.
    async fn on_child_exit(&mut self, x: child::Exited) {
        if self.duty.is_some() && x.code == 0 && !self.shutdown.is_cancelled() {
            return self.on_duty_done(x).await;
        }
        let current = self.handle.status().borrow().term;
        let id = self.id.as_str();
        match self
            .policies
            .on_child_exit(&x, current, self.shutdown.is_cancelled())
        {
            ChildExitAction::Nothing => {}
            ChildExitAction::Exit(code) => self.exit_with(code),
            ChildExitAction::Resign => self.handle.resign().await,
            ChildExitAction::ResignFor(d) => {
                tracing::warn!(
                    event = "resign_backoff",
                    id,
                    term = x.term.0,
                    backoff_ms = d.as_millis() as u64,
                    "[{id}] the child ran only {} ms: resigning and staying out of the campaign for {d:?}",
                    x.ran.as_millis()
                );
                self.handle.resign_for(d).await
            }
        }
    }

    /// `--once`: CMD exited 0. Success is recorded by the leader of the term that ran it,
    /// while that term is still current (one compare-and-swap); only then is the lease
    /// released (shutdown, after the linger).
    async fn on_duty_done(&mut self, x: child::Exited) {
        let d = self.duty.as_ref().expect("guarded");
        let id = self.id.as_str();
        let rec = d.record(&self.me, x.term);
        match duty::record(self.backend.as_ref(), &rec, self.cfg.renew_deadline()).await {
            Ok(true) => {
                duty::log_recorded(id, x.term);
                self.outcome.code = exit::OK;
                self.linger.start(self.cfg.retry_period());
            }
            Ok(false) => {
                duty::log_not_recorded(id, x.term);
                if self.policies.exits_on_unrecorded_duty() {
                    self.exit_with(exit::LOST_LEADERSHIP);
                }
            }
            Err(e) => {
                duty::log_record_failed(id, x.term, &e);
                self.handle.resign().await;
            }
        }
    }

    /// An elector event: logged, counted, sent to the webhook, then acted on.
    async fn on_event(&mut self, ev: Event) {
        log_event(&self.id, &ev);
        if self.wait.observe(&ev) {
            self.on_wait_expired();
        }
        self.metrics.observe(&ev);
        if let Some(n) = &self.notifier {
            n.observe(&ev);
        }
        match ev {
            Event::StartedLeading { term } => self.on_started_leading(term).await,
            Event::StoppedLeading { reason, .. }
                if self.policies.exits_on_loss(&reason)
                    && !self.shutdown.is_cancelled()
                    && !self.linger.active() =>
            {
                let id = self.id.as_str();
                tracing::warn!(
                    event = "exiting_on_loss",
                    id,
                    "[{id}] --on-loss exit: exiting with code {}",
                    exit::LOST_LEADERSHIP
                );
                self.exit_with(exit::LOST_LEADERSHIP);
            }
            Event::Fatal { message } => {
                self.outcome.fatal = Some(message);
                self.shutdown.cancel();
            }
            Event::Failed { message } => {
                self.outcome.failed = Some(message);
                self.shutdown.cancel();
            }
            _ => {}
        }
    }

    /// Granted `term`: start the child, unless `--wait` gave up or (`--once`) a predecessor
    /// finished the duty between our grant and now.
    async fn on_started_leading(&mut self, term: Term) {
        let done = match self.wait.gave_up {
            true => false,
            false => match self.read_duty().await {
                None | Some(Ok(None)) => false,
                Some(Ok(Some(rec))) => {
                    self.on_duty_found(&rec);
                    true
                }
                Some(Err(f)) if f.code == exit::BACKEND_UNAVAILABLE => {
                    let id = self.id.as_str();
                    tracing::warn!(
                        event = "duty_unknown",
                        id,
                        term = term.0,
                        "[{id}] cannot read the duty record ({f}): resigning instead of running CMD"
                    );
                    self.handle.resign().await;
                    true
                }
                Some(Err(f)) => {
                    self.outcome.duty_failure = Some(f);
                    self.shutdown.cancel();
                    true
                }
            },
        };
        if let Some(s) = self
            .supervisor
            .as_ref()
            .filter(|_| !self.wait.gave_up && !done)
        {
            s.start(term);
        }
    }

    /// Stops what is left (the child, the webhook, HTTP, heartbeats), removes our heartbeat
    /// and turns the [`Outcome`] into the exit code or failure.
    async fn finish(self) -> Result<i32, Failure> {
        let id = self.id.as_str();
        if let Some(s) = &self.supervisor {
            // Already stopped by the elector's hook; this fences any late start.
            s.stop(Term(u64::MAX)).await;
        }
        if let Some(n) = self.notifier {
            n.finish(std::time::Duration::from_secs(3)).await;
        }
        if let Some(h) = self.http {
            let _ = h.await;
        }
        let _ = self.heartbeats.await;
        if let Err(e) = self.backend.remove_member(id).await {
            tracing::warn!("[{id}] could not remove heartbeat: {e}");
        }
        let role = self.handle.status().borrow().role;
        let o = self.outcome;
        debug_assert!(o.failed.is_some() || role != Role::Leader);
        tracing::info!(event = "stopped", id, "[{id}] stopped");
        if let Some(f) = o.duty_failure {
            return Err(f);
        }
        if let Some(message) = o.failed {
            return Err(Failure::new(
                exit::INTERNAL,
                format!("internal error, the elector failed ({message}); the lease was given up"),
            ));
        }
        match o.fatal {
            Some(message) => Err(Failure::new(exit::FORBIDDEN, message)),
            None => Ok(o.code),
        }
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
