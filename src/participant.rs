//! `crown run`: builds the backend and the elector, logs every event in demo-friendly lines,
//! publishes heartbeats every retry period, and maps signals: SIGINT/SIGTERM release the
//! lease and exit 0, SIGUSR1 asks the leader to resign.

use crate::backend::validate_election_name;
use crate::cli::{LogFormat, OnChildExit, OnLoss, RunArgs};
use crate::election::{Elector, Event, Identity, Member, Role, Status, StopReason, Term};
use crate::exit;
use crate::sidecar::{self, child};
use futures::StreamExt;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::exit::Failure;
// The backends are built at the edge, each behind its cargo feature.
pub use crate::connect::{observe_backend, open_backend};

/// This host's name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Our identity from `--id`/`$POD_NAME` or `<hostname>-<pid>`.
pub fn identity(id: Option<&str>) -> Result<Identity, Failure> {
    let host = hostname();
    let pid = std::process::id();
    let id = match id {
        Some(id) => id.to_string(),
        None => crate::cli::default_id(&host, pid),
    };
    validate_election_name(&id)
        .map_err(|_| Failure::new(exit::CONFIG, format!("invalid participant id {id:?}: use 1-63 letters, digits, '.', '_' or '-', not starting with '.'")))?;
    Ok(Identity { id, pid, host })
}

/// The default log filter of `crown run` and the dashboard: crown's own lines from INFO (role
/// changes; heartbeats are DEBUG), libraries' from WARN.
pub const LOG_DEFAULT: &str = "warn,crown=info";

/// The default log filter of one-shot commands (`status`, `history`): only crown's own
/// warnings, so that a failure is the one `crown: error:` line (the clients' own retries and
/// errors stay quiet).
pub const ONE_SHOT_LOG_DEFAULT: &str = "crown=warn";

/// The log filter: `$CROWN_LOG` if set, else `$RUST_LOG` (the usual variable of Rust
/// services), else `default`; a filter that does not parse falls back to `default`.
pub fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    ["CROWN_LOG", "RUST_LOG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
}

/// Installs the log subscriber (filter from [`log_filter`] with `default`): text lines with
/// only the message, or JSON with fields.
pub fn init_logging(format: LogFormat, default: &str) {
    let filter = log_filter(default);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                |w, field, value| {
                    if field.name() == "message" {
                        // Ids, hosts and errors may come from the backend: one event, one
                        // line, no terminal control.
                        write!(w, "{}", crate::text::escape(&format!("{value:?}")))
                    } else {
                        Ok(())
                    }
                },
            ))
            .try_init(),
    };
}

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

/// `--on-child-exit resign`: a child that exits soon after it started would otherwise make
/// this participant resign and win again every retry period. After such a child it stays out
/// of the campaign for 1 s, doubling on every further short run up to 30 s; a child that ran
/// for [`ResignBackoff::RAN_LONG_ENOUGH`] resets it.
#[derive(Debug, Default)]
pub struct ResignBackoff {
    last: Option<std::time::Duration>,
}

impl ResignBackoff {
    /// A run at least this long resets the backoff.
    pub const RAN_LONG_ENOUGH: std::time::Duration = std::time::Duration::from_secs(10);
    const FIRST: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX: std::time::Duration = std::time::Duration::from_secs(30);

    /// How long to stay out after a child that ran for `ran` (`None`: the usual hold-off of
    /// one retry period).
    pub fn after(&mut self, ran: std::time::Duration) -> Option<std::time::Duration> {
        if ran >= Self::RAN_LONG_ENOUGH {
            self.last = None;
            return None;
        }
        let d = match self.last {
            None => Self::FIRST,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.last = Some(d);
        Some(d)
    }
}

/// `crown run`. Returns the exit code.
pub async fn run(args: RunArgs) -> Result<i32, Failure> {
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
        return Ok(exit::OK);
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
    let id = me.id.clone();
    // `--once`: a duty already done is not run again (and nothing campaigns for it).
    let duty = args.once.then(|| crate::once::Duty::new(&args.command));
    if let Some(d) = &duty
        && let Some(rec) = d.check(backend.as_ref(), &args.backend.election).await?
    {
        log_duty_done(&id, &rec);
        return Ok(exit::OK);
    }
    tracing::info!(
        event = "starting",
        id = id.as_str(),
        pid = me.pid,
        host = me.host.as_str(),
        "[{id}] starting (pid {}, host {}, backend {} {}, election {}, lease {:?} / renew {:?} / retry {:?})",
        me.pid,
        me.host,
        backend.kind(),
        args.backend.location(),
        args.backend.election,
        cfg.lease_duration(),
        cfg.renew_deadline(),
        cfg.retry_period()
    );

    let shutdown = CancellationToken::new();
    let mut elector = Elector::new(backend.clone(), cfg, me.clone())
        .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
    let mut child_exits = None;
    let supervisor = if args.command.is_empty() {
        None
    } else {
        let (s, exits) = child::Supervisor::spawn(child::ChildSpec {
            command: args.command.clone(),
            election: args.backend.election.clone(),
            id: id.clone(),
            grace,
            on_exit: args.sidecar.on_child_exit,
            nofile: (limits.original_soft < limits.soft).then_some(limits.original_soft),
            once: args.once,
        })
        .map_err(|e| {
            Failure::new(
                exit::INTERNAL,
                format!("cannot start the child supervisor: {e}"),
            )
        })?;
        // The child is stopped before the lease is released or abandoned; the bound only
        // matters if SIGKILL does not work.
        let margin = cfg.lease_duration() - cfg.renew_deadline();
        elector = elector
            .before_release(grace + (margin - grace) / 2, s.hook())
            .map_err(|e| Failure::new(exit::CONFIG, e.to_string()))?;
        child_exits = Some(exits);
        Some(s)
    };
    let (handle, mut events) = elector.spawn(shutdown.clone());
    let metrics = Arc::new(sidecar::http::Metrics::default());
    let http = match listener {
        Some((addr, listener)) => {
            let state = Arc::new(sidecar::http::AppState {
                status: handle.status(),
                metrics: metrics.clone(),
                election: args.backend.election.clone(),
                cfg,
            });
            let cap = sidecar::fds::http_budget(limits);
            let task = sidecar::http::serve(listener, state, shutdown.clone(), cap, limits);
            tracing::info!(event = "http_listening", id = id.as_str(), addr = %addr, max_connections = cap, "[{id}] serving /leader /healthz /readyz /metrics on http://{addr} (at most {cap} connections at once)");
            Some(task)
        }
        None => None,
    };
    let notifier = args.sidecar.notify_url.clone().map(|url| {
        sidecar::notify::Notifier::spawn(
            url,
            id.clone(),
            args.backend.election.clone(),
            metrics.webhook(),
        )
    });

    // Signals.
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Failure::new(exit::INTERNAL, e.to_string()))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| Failure::new(exit::INTERNAL, e.to_string()))?;
    let mut sigusr1 = signal(SignalKind::user_defined1())
        .map_err(|e| Failure::new(exit::INTERNAL, e.to_string()))?;
    let mut sighup =
        signal(SignalKind::hangup()).map_err(|e| Failure::new(exit::INTERNAL, e.to_string()))?;
    {
        let shutdown = shutdown.clone();
        let handle = handle.clone();
        let id = id.clone();
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
    }

    // Heartbeats: every retry period and on every role change.
    let started_at = jiff::Timestamp::now();
    // Lets the dashboard confirm it is this process before it signals our pid.
    let stamp = crate::tui::procfs::own_stamp(&args.backend.election);
    let hb = {
        let backend = backend.clone();
        let me = me.clone();
        let mut status = handle.status();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cfg.retry_period());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Failing since, last line logged, failures since: one line when it starts, a
            // summary a minute while it lasts, one when it is over.
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
    };

    let mut fatal = None;
    let mut failed = None;
    let mut code = exit::OK;
    let mut wait = WaitLimit::new(args.wait, cfg.lease_duration());
    let mut backoff = ResignBackoff::default();
    // `--once`: followers look for the success record every retry period.
    let mut duty_tick = tokio::time::interval(cfg.retry_period());
    duty_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut duty_failure: Option<Failure> = None;
    // `--once`, recorded: release (shut down) at this instant, or once no one else is left.
    let mut linger: Option<tokio::time::Instant> = None;
    loop {
        let ev = tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => ev,
                None => {
                    if !shutdown.is_cancelled() && fatal.is_none() && failed.is_none() {
                        // The stream may only end after a shutdown: anything else is a bug.
                        failed = Some("the elector stopped unexpectedly".to_string());
                        shutdown.cancel();
                    }
                    break;
                }
            },
            _ = wait.expired(), if wait.pending() => {
                wait.give_up(&id);
                code = exit::WAIT_EXPIRED;
                shutdown.cancel();
                continue;
            }
            _ = tokio::time::sleep(cfg.retry_period() / 4), if linger.is_some() && !shutdown.is_cancelled() => {
                let alone = match tokio::time::timeout(cfg.retry_period(), backend.members()).await {
                    Ok(Ok(ms)) => ms.iter().all(|m| m.id == id),
                    _ => false,
                };
                if alone || linger.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    shutdown.cancel();
                }
                continue;
            }
            _ = duty_tick.tick(), if duty.is_some() && linger.is_none() && !shutdown.is_cancelled() => {
                let d = duty.as_ref().expect("guarded");
                match d.check_within(backend.as_ref(), &args.backend.election, cfg.renew_deadline()).await {
                    Ok(None) => {}
                    Ok(Some(rec)) => {
                        log_duty_done(&id, &rec);
                        code = exit::OK;
                        shutdown.cancel();
                    }
                    Err(f) if f.code == exit::BACKEND_UNAVAILABLE => {
                        tracing::debug!("[{id}] cannot read the duty record: {f}");
                    }
                    Err(f) => {
                        duty_failure = Some(f);
                        shutdown.cancel();
                    }
                }
                continue;
            }
            Some(x) = recv_opt(&mut child_exits) => {
                if let Some(d) = duty.as_ref().filter(|_| x.code == 0 && !shutdown.is_cancelled()) {
                    // Success is recorded by the leader of the term that ran it, while that
                    // term is still current (one compare-and-swap); only then is the lease
                    // released (shutdown).
                    // Bounded: a write whose answer is lost may or may not have landed, and
                    // either way resigning is safe (done, or run again: at least once).
                    let rec = d.record(&me, x.term);
                    let write = backend.record_duty(&rec);
                    let res = tokio::time::timeout(cfg.renew_deadline(), write)
                        .await
                        .unwrap_or_else(|_| Err(crate::backend::BackendError::Unavailable(format!(
                            "no answer within {}", humantime::format_duration(cfg.renew_deadline())
                        ))));
                    match res {
                        Ok(true) => {
                            tracing::info!(event = "duty_recorded", id = id.as_str(), term = x.term.0,
                                "[{id}] ✅ duty done: CMD exited 0 in term {}; recorded, releasing and exiting 0", x.term);
                            code = exit::OK;
                            // Hold the lease a little longer, so that the followers see the
                            // record (every retry period) and exit as followers, rather than
                            // each being granted the lease in turn only to find it done.
                            linger = Some(tokio::time::Instant::now() + 2 * cfg.retry_period());
                        }
                        Ok(false) => {
                            tracing::warn!(event = "duty_not_recorded", id = id.as_str(), term = x.term.0,
                                "[{id}] CMD exited 0 after term {} was over: not recorded (the current leader runs it)", x.term);
                            if args.sidecar.on_loss == OnLoss::Exit {
                                code = exit::LOST_LEADERSHIP;
                                shutdown.cancel();
                            }
                        }
                        Err(e) => {
                            tracing::warn!(event = "duty_not_recorded", id = id.as_str(), term = x.term.0,
                                "[{id}] CMD exited 0 in term {} but the duty could not be recorded ({e}): resigning, so that it runs again", x.term);
                            handle.resign().await;
                        }
                    }
                    continue;
                }
                match args.sidecar.on_child_exit {
                    OnChildExit::Exit if !shutdown.is_cancelled() => {
                        code = x.code;
                        shutdown.cancel();
                    }
                    OnChildExit::Resign if handle.status().borrow().term == x.term => {
                        match backoff.after(x.ran) {
                            None => handle.resign().await,
                            Some(d) => {
                                tracing::warn!(event = "resign_backoff", id = id.as_str(), term = x.term.0, backoff_ms = d.as_millis() as u64,
                                    "[{id}] the child ran only {} ms: resigning and staying out of the campaign for {d:?}", x.ran.as_millis());
                                handle.resign_for(d).await
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
        };
        log_event(&id, &ev);
        if wait.observe(&ev) {
            wait.give_up(&id);
            code = exit::WAIT_EXPIRED;
            shutdown.cancel();
        }
        metrics.observe(&ev);
        if let Some(n) = &notifier {
            n.observe(&ev);
        }
        match &ev {
            Event::StartedLeading { term } => {
                // `--once`: a predecessor may have finished between our grant and now.
                let done = match &duty {
                    Some(d) if !wait.gave_up => {
                        match d
                            .check_within(
                                backend.as_ref(),
                                &args.backend.election,
                                cfg.renew_deadline(),
                            )
                            .await
                        {
                            Ok(None) => false,
                            Ok(Some(rec)) => {
                                log_duty_done(&id, &rec);
                                code = exit::OK;
                                shutdown.cancel();
                                true
                            }
                            Err(f) if f.code == exit::BACKEND_UNAVAILABLE => {
                                tracing::warn!(
                                    event = "duty_unknown",
                                    id = id.as_str(),
                                    term = term.0,
                                    "[{id}] cannot read the duty record ({f}): resigning instead of running CMD"
                                );
                                handle.resign().await;
                                true
                            }
                            Err(f) => {
                                duty_failure = Some(f);
                                shutdown.cancel();
                                true
                            }
                        }
                    }
                    _ => false,
                };
                if let Some(s) = supervisor.as_ref().filter(|_| !wait.gave_up && !done) {
                    s.start(*term);
                }
            }
            Event::StoppedLeading {
                reason: StopReason::RenewDeadline | StopReason::Superseded,
                ..
            } if args.sidecar.on_loss == OnLoss::Exit
                && !shutdown.is_cancelled()
                && linger.is_none() =>
            {
                tracing::warn!(
                    event = "exiting_on_loss",
                    id = id.as_str(),
                    "[{id}] --on-loss exit: exiting with code {}",
                    exit::LOST_LEADERSHIP
                );
                code = exit::LOST_LEADERSHIP;
                shutdown.cancel();
            }
            Event::Fatal { message } => {
                fatal = Some(message.clone());
                shutdown.cancel();
            }
            Event::Failed { message } => {
                failed = Some(message.clone());
                shutdown.cancel();
            }
            _ => {}
        }
    }
    if let Some(s) = &supervisor {
        // Already stopped by the elector's hook; this fences any late start.
        s.stop(Term(u64::MAX)).await;
    }
    if let Some(n) = notifier {
        n.finish(std::time::Duration::from_secs(3)).await;
    }
    if let Some(h) = http {
        let _ = h.await;
    }
    let _ = hb.await;
    if let Err(e) = backend.remove_member(&id).await {
        tracing::warn!("[{id}] could not remove heartbeat: {e}");
    }
    let role = handle.status().borrow().role;
    debug_assert!(failed.is_some() || role != Role::Leader);
    tracing::info!(event = "stopped", id = id.as_str(), "[{id}] stopped");
    if let Some(f) = duty_failure {
        return Err(f);
    }
    if let Some(message) = failed {
        return Err(Failure::new(
            exit::INTERNAL,
            format!("internal error, the elector failed ({message}); the lease was given up"),
        ));
    }
    match fatal {
        Some(message) => Err(Failure::new(exit::FORBIDDEN, message)),
        None => Ok(code),
    }
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
