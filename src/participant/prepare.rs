//! `crown run`, the first step: [`prepare`] checks the flags and the open-file limit, binds
//! `--http`, opens the backend and looks whether a `--once` duty is already done.

use super::duty::log_duty_done;
use super::identity;
use crate::backend::{Backend, validate_election_name};
use crate::cli::RunArgs;
use crate::connect::open_backend;
use crate::election::{Config, Identity};
use crate::exit;
use crate::exit::Failure;
use crate::sidecar;
use std::sync::Arc;

/// What [`prepare`] found out and opened, for `Run::start`.
pub(super) struct Setup {
    pub(super) args: RunArgs,
    pub(super) cfg: Config,
    pub(super) me: Identity,
    pub(super) grace: std::time::Duration,
    pub(super) limits: sidecar::fds::Limits,
    pub(super) listener: Option<(std::net::SocketAddr, tokio::net::TcpListener)>,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) duty: Option<crate::once::Duty>,
}

/// Checks the flags and the open-file limit, binds `--http`, opens the backend. `None`: there
/// is nothing to run (`--check-config`, or a `--once` duty already done) and crown exits 0.
pub(super) async fn prepare(args: RunArgs) -> Result<Option<Setup>, Failure> {
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
