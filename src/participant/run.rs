//! `crown run` in steps: [`prepare`] (flags, limits, the listener, the backend, a `--once`
//! duty already done), [`Run::start`] (the elector with the child supervisor, HTTP, the
//! webhook, signals, heartbeats), [`Run::step`] until the elector's stream ends (each
//! [`Step`] to one `on_*` method), then [`Run::finish`]. The sidecar's policies are decided
//! in [`sidecar::policy`].

use super::{Failure, identity, open_backend};
use crate::backend::{Backend, validate_election_name};
use crate::cli::RunArgs;
use crate::election::{
    Config, Elector, ElectorHandle, Event, Events, Identity, Member, Role, Status, StopReason, Term,
};
use crate::exit;
use crate::sidecar::policy::{ChildExitAction, Linger, Policies};
use crate::sidecar::{self, child};
use futures::StreamExt;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn member(
    me: &Identity,
    s: &Status,
    started_at: jiff::Timestamp,
    process: Option<crate::election::ProcessStamp>,
) -> Member {
    Member {
        id: me.id.clone(),
        pid: me.pid,
        host: me.host.clone(),
        role: s.role,
        term: s.term,
        last_heartbeat: jiff::Timestamp::now(),
        started_at,
        version: env!("CARGO_PKG_VERSION").to_string(),
        process,
    }
}

/// Logs one event as a demo-friendly line (with structured fields for JSON logs).
pub fn log_event(id: &str, ev: &Event) {
    match ev {
        Event::StartedLeading { term } => {
            tracing::info!(
                event = "became_leader",
                id,
                term = term.0,
                "🎉 [{id}] BECAME LEADER (term {term})"
            )
        }
        Event::Renewed { term, .. } => {
            // One every retry period: DEBUG (`RUST_LOG=crown=debug` shows them).
            tracing::debug!(
                event = "leader_heartbeat",
                id,
                term = term.0,
                "👑 [{id}] LEADER heartbeat (term {term})"
            )
        }
        // Asked for (resign, shutdown): INFO; involuntary: WARN.
        Event::StoppedLeading {
            term,
            reason: reason @ (StopReason::Released | StopReason::Shutdown),
        } => tracing::info!(
            event = "stopped_leading", id, term = term.0, reason = %reason,
            "[{id}] lost leadership: {reason} (term {term})"
        ),
        Event::StoppedLeading { term, reason } => tracing::warn!(
            event = "stopped_leading", id, term = term.0, reason = %reason,
            "[{id}] lost leadership: {reason} (term {term})"
        ),
        Event::NewLeader { id: leader, term } => tracing::info!(
            event = "follower",
            id,
            leader = leader.as_str(),
            term = term.0,
            "[{id}] FOLLOWER (leader {leader}, term {term})"
        ),
        Event::NoLeader => {
            tracing::info!(event = "no_leader", id, "[{id}] CANDIDATE (no leader)")
        }
        Event::Fatal { message } => {
            tracing::error!(event = "fatal", id, "[{id}] giving up: {message}")
        }
        Event::Failed { message } => {
            tracing::error!(
                event = "elector_failed",
                id,
                "[{id}] the elector failed: {message}"
            )
        }
        Event::Lagged { missed } => tracing::warn!(
            event = "events_lagged",
            id,
            missed,
            "[{id}] {missed} elector events were dropped (this process read them too slowly)"
        ),
    }
}

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

/// What [`prepare`] found out and opened, for [`Run::start`].
struct Setup {
    args: RunArgs,
    cfg: Config,
    me: Identity,
    grace: std::time::Duration,
    limits: sidecar::fds::Limits,
    listener: Option<(std::net::SocketAddr, tokio::net::TcpListener)>,
    backend: Arc<dyn Backend>,
    duty: Option<crate::once::Duty>,
}

/// Checks the flags and the open-file limit, binds `--http`, opens the backend. `None`: there
/// is nothing to run (`--check-config`, or a `--once` duty already done) and crown exits 0.
async fn prepare(args: RunArgs) -> Result<Option<Setup>, Failure> {
    let cfg = args
        .timing
        .config()
        .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
    let me = identity(args.id.as_deref())?;
    validate_election_name(&args.backend.election)?;
    let grace = sidecar::grace(&args.sidecar, &cfg)?;
    // Descriptors: raise the soft limit, fail fast if crown cannot work within it.
    let limits = sidecar::fds::raise();
    if args.check_config {
        print_config(&args, &cfg, &me, grace);
        return Ok(None);
    }
    sidecar::fds::check(limits, args.sidecar.http.is_some())?;
    // Bind before campaigning: a busy port must not cost a grant.
    let listener = match args.sidecar.http {
        Some(addr) => Some((
            addr,
            sidecar::http::listen(addr)
                .map_err(|e| Failure::new(exit::CONFIG, format!("cannot listen on {addr}: {e}")))?,
        )),
        None => None,
    };
    let backend = open_backend(&args.backend, me.clone()).await?;
    // `--once`: a duty already done is not run again (and nothing campaigns for it).
    let duty = args.once.then(|| crate::once::Duty::new(&args.command));
    if let Some(d) = &duty
        && let Some(rec) = d.check(backend.as_ref(), &args.backend.election).await?
    {
        log_duty_done(&me.id, &rec);
        return Ok(None);
    }
    Ok(Some(Setup {
        args,
        cfg,
        me,
        grace,
        limits,
        listener,
        backend,
        duty,
    }))
}

/// `crown run --check-config`: what would run.
fn print_config(args: &RunArgs, cfg: &Config, me: &Identity, grace: std::time::Duration) {
    println!(
        "config ok: id {} backend {} ({}) election {} lease {:?} renew {:?} retry {:?}",
        me.id,
        args.backend.backend.name(),
        crate::text::escape(&args.backend.location()),
        args.backend.election,
        cfg.lease_duration(),
        cfg.renew_deadline(),
        cfg.retry_period()
    );
    if !args.command.is_empty() {
        println!(
            "sidecar: command {:?} grace {grace:?} on-child-exit {:?} on-loss {:?}{}",
            args.command,
            args.sidecar.on_child_exit,
            args.sidecar.on_loss,
            if args.once { " once" } else { "" }
        );
    }
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
        log_duty_done(&self.id, rec);
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
        // Bounded: a write whose answer is lost may or may not have landed, and either way
        // resigning is safe (done, or run again: at least once).
        let rec = d.record(&self.me, x.term);
        let write = self.backend.record_duty(&rec);
        let res = tokio::time::timeout(self.cfg.renew_deadline(), write)
            .await
            .unwrap_or_else(|_| {
                Err(crate::backend::BackendError::Unavailable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.cfg.renew_deadline())
                )))
            });
        match res {
            Ok(true) => {
                tracing::info!(
                    event = "duty_recorded",
                    id,
                    term = x.term.0,
                    "[{id}] ✅ duty done: CMD exited 0 in term {}; recorded, releasing and exiting 0",
                    x.term
                );
                self.outcome.code = exit::OK;
                self.linger.start(self.cfg.retry_period());
            }
            Ok(false) => {
                tracing::warn!(
                    event = "duty_not_recorded",
                    id,
                    term = x.term.0,
                    "[{id}] CMD exited 0 after term {} was over: not recorded (the current leader runs it)",
                    x.term
                );
                if self.policies.exits_on_unrecorded_duty() {
                    self.exit_with(exit::LOST_LEADERSHIP);
                }
            }
            Err(e) => {
                tracing::warn!(
                    event = "duty_not_recorded",
                    id,
                    term = x.term.0,
                    "[{id}] CMD exited 0 in term {} but the duty could not be recorded ({e}): resigning, so that it runs again",
                    x.term
                );
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

/// The elector, and with a CMD the child supervisor (stopped before the lease is released
/// or abandoned) and its channel of unsolicited exits.
#[allow(clippy::type_complexity)]
fn start_elector(
    s: &Setup,
) -> Result<
    (
        Elector,
        Option<child::Supervisor>,
        Option<mpsc::Receiver<child::Exited>>,
    ),
    Failure,
> {
    let elector = Elector::new(s.backend.clone(), s.cfg, s.me.clone())
        .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
    if s.args.command.is_empty() {
        return Ok((elector, None, None));
    }
    let (supervisor, exits) = child::Supervisor::spawn(child::ChildSpec {
        command: s.args.command.clone(),
        election: s.args.backend.election.clone(),
        id: s.me.id.clone(),
        grace: s.grace,
        on_exit: s.args.sidecar.on_child_exit,
        nofile: (s.limits.original_soft < s.limits.soft).then_some(s.limits.original_soft),
        once: s.args.once,
    })
    .map_err(|e| {
        Failure::new(
            exit::INTERNAL,
            format!("cannot start the child supervisor: {e}"),
        )
    })?;
    // The child is stopped before the lease is released or abandoned; the bound only
    // matters if SIGKILL does not work.
    let margin = s.cfg.lease_duration() - s.cfg.renew_deadline();
    let elector = elector
        .before_release(s.grace + (margin - s.grace) / 2, supervisor.hook())
        .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
    Ok((elector, Some(supervisor), Some(exits)))
}

/// `--http`: serves /leader /healthz /readyz /metrics on the listener bound in [`prepare`].
fn start_http(
    id: &str,
    (addr, listener): (std::net::SocketAddr, tokio::net::TcpListener),
    state: sidecar::http::AppState,
    limits: sidecar::fds::Limits,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let cap = sidecar::fds::http_budget(limits);
    let task = sidecar::http::serve(listener, Arc::new(state), shutdown.clone(), cap, limits);
    tracing::info!(event = "http_listening", id, addr = %addr, max_connections = cap, "[{id}] serving /leader /healthz /readyz /metrics on http://{addr} (at most {cap} connections at once)");
    task
}

/// Signals: SIGTERM, SIGINT and SIGHUP shut down (releasing the lease), SIGUSR1 resigns.
fn spawn_signals(
    id: &str,
    handle: &ElectorHandle,
    shutdown: &CancellationToken,
) -> Result<(), Failure> {
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Failure::new(exit::INTERNAL, e.to_string()))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| Failure::new(exit::INTERNAL, e.to_string()))?;
    let mut sigusr1 = signal(SignalKind::user_defined1())
        .map_err(|e| Failure::new(exit::INTERNAL, e.to_string()))?;
    let mut sighup =
        signal(SignalKind::hangup()).map_err(|e| Failure::new(exit::INTERNAL, e.to_string()))?;
    let shutdown = shutdown.clone();
    let handle = handle.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!(event = "signal", id = id.as_str(), "[{id}] SIGTERM: releasing and exiting"); shutdown.cancel(); }
                _ = sigint.recv() => { tracing::info!(event = "signal", id = id.as_str(), "[{id}] SIGINT: releasing and exiting"); shutdown.cancel(); }
                _ = sighup.recv() => { tracing::info!(event = "signal", id = id.as_str(), "[{id}] SIGHUP (terminal closed): releasing and exiting"); shutdown.cancel(); }
                _ = sigusr1.recv() => { tracing::info!(event = "resign_requested", id = id.as_str(), "[{id}] SIGUSR1: resigning"); handle.resign().await; }
            }
        }
    });
    Ok(())
}

/// Heartbeats: our [`Member`] published every retry period and on every role change, until
/// shutdown. Failures are logged once when they start, as a summary a minute while they
/// last, and once when they are over.
fn spawn_heartbeats(
    backend: &Arc<dyn Backend>,
    me: &Identity,
    election: &str,
    handle: &ElectorHandle,
    shutdown: &CancellationToken,
    retry_period: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let started_at = jiff::Timestamp::now();
    // Lets the dashboard confirm it is this process before it signals our pid.
    let stamp = crate::tui::procfs::own_stamp(election);
    let backend = backend.clone();
    let me = me.clone();
    let mut status = handle.status();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Failing since, last line logged, failures since.
        let mut failing: Option<(tokio::time::Instant, tokio::time::Instant, u64)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = status.changed() => if r.is_err() { break },
                _ = shutdown.cancelled() => break,
            }
            let m = member(
                &me,
                &status.borrow_and_update().clone(),
                started_at,
                stamp.clone(),
            );
            let now = tokio::time::Instant::now();
            match (backend.publish_member(&m).await, &mut failing) {
                (Err(e), None) => {
                    failing = Some((now, now, 0));
                    tracing::warn!("[{}] heartbeat failed: {e}", me.id);
                }
                (Err(e), Some((since, last, n))) => {
                    *n += 1;
                    if now.duration_since(*last) >= std::time::Duration::from_secs(60) {
                        tracing::warn!(
                            "[{}] heartbeats failing for {} s ({n} more; last: {e})",
                            me.id,
                            now.duration_since(*since).as_secs()
                        );
                        *last = now;
                        *n = 0;
                    }
                }
                (Ok(()), Some((since, _, n))) => {
                    tracing::info!(
                        "[{}] heartbeat published again after {} ms ({n} more failures)",
                        me.id,
                        now.duration_since(*since).as_millis()
                    );
                    failing = None;
                }
                (Ok(()), None) => {}
            }
        }
    })
}
/// `--once`: the duty is done (by anyone): one INFO line; the caller exits 0.
fn log_duty_done(id: &str, rec: &crate::once::DutyRecord) {
    tracing::info!(
        event = "duty_done",
        id,
        term = rec.term.0,
        holder = rec.holder.as_str(),
        "[{id}] duty {}: exiting 0 without running CMD",
        rec.describe()
    );
}

/// `crown run --wait`: the deadline to become leader by, once.
struct WaitLimit {
    /// The deadline, while it still matters (not yet leader, not yet given up).
    deadline: Option<tokio::time::Instant>,
    /// What was asked, for the log line.
    asked: std::time::Duration,
    /// Whether one campaign attempt has concluded (we know a leader, or that there is none).
    attempted: bool,
    /// Whether we gave up (the lease, if granted meanwhile, is released at once).
    gave_up: bool,
    /// The latest we wait when no attempt concludes (the backend keeps failing).
    cap: std::time::Duration,
}

impl WaitLimit {
    fn new(wait: Option<std::time::Duration>, lease_duration: std::time::Duration) -> Self {
        WaitLimit {
            deadline: wait.map(|w| tokio::time::Instant::now() + w),
            asked: wait.unwrap_or_default(),
            attempted: false,
            gave_up: false,
            cap: lease_duration,
        }
    }

    /// Whether the deadline still matters.
    fn pending(&self) -> bool {
        self.deadline.is_some() && !self.gave_up
    }

    /// Resolves when we must give up: at the deadline once an attempt has concluded (so
    /// `--wait 0` tries once), or one lease duration later if none does.
    async fn expired(&self) {
        match self.deadline {
            Some(d) if self.attempted => tokio::time::sleep_until(d).await,
            Some(d) => tokio::time::sleep_until(d + self.cap).await,
            None => std::future::pending().await,
        }
    }

    /// Notes an event; true if it means giving up now (an attempt concluded without the lease
    /// at or after the deadline).
    fn observe(&mut self, ev: &Event) -> bool {
        if !self.pending() {
            return false;
        }
        match ev {
            Event::StartedLeading { .. } => {
                self.deadline = None;
                false
            }
            Event::NewLeader { .. } | Event::NoLeader => {
                self.attempted = true;
                self.deadline
                    .is_some_and(|d| tokio::time::Instant::now() >= d)
            }
            _ => false,
        }
    }

    fn give_up(&mut self, id: &str) {
        self.gave_up = true;
        tracing::info!(
            event = "wait_expired",
            id,
            "[{id}] not leader within --wait {}: giving up (exit code {})",
            humantime::format_duration(self.asked),
            exit::WAIT_EXPIRED
        );
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
