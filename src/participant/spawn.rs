//! `crown run`, started around the elector: the elector itself with the child supervisor,
//! `--http`, the signal handlers and the heartbeats.

use super::prepare::Setup;
use crate::backend::Backend;
use crate::election::{Elector, ElectorHandle, Identity, Member, Status};
use crate::exit;
use crate::exit::Failure;
use crate::sidecar::{self, child};
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Our heartbeat: [`Member`] for status `s`.
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

/// The elector, and with a CMD the child supervisor (stopped before the lease is released
/// or abandoned) and its channel of unsolicited exits.
#[allow(clippy::type_complexity)]
pub(super) fn start_elector(
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

/// `--http`: serves /leader /healthz /readyz /metrics on the listener bound in [`prepare`](super::prepare::prepare).
pub(super) fn start_http(
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
pub(super) fn spawn_signals(
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
pub(super) fn spawn_heartbeats(
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
