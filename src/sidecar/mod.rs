//! Sidecar mode (`crown run … -- CMD`, `--http`, `--notify-url`): a child process that runs
//! only while we lead ([`child`]), an HTTP endpoint for the leader, health and metrics
//! ([`http`]), and a webhook on every role change ([`notify`]); the policies `crown run`
//! applies to them (`--on-child-exit`, `--on-loss`, the `--once` linger: [`policy`]).

pub mod child;
pub mod fds;
#[cfg(feature = "sidecar")]
pub mod http;
#[cfg(feature = "sidecar")]
pub mod metrics;
#[cfg(feature = "sidecar")]
pub mod notify;
pub mod policy;
// Without the `sidecar` feature (no axum, reqwest, prometheus-client): stand-ins.
#[cfg(not(feature = "sidecar"))]
mod off;
#[cfg(not(feature = "sidecar"))]
pub use off::{http, metrics, notify};

use crate::cli::SidecarArgs;
use crate::election::Config;
use crate::exit;
use crate::exit::Failure;
use std::time::Duration;

/// The grace the child gets between SIGTERM and SIGKILL. It must end before any follower may
/// take over: `grace < lease_duration − renew_deadline`. An explicit `--grace` that breaks
/// the rule is a config error; without one, 5 s or 80% of the margin, whichever is less.
pub fn grace(args: &SidecarArgs, cfg: &Config) -> Result<Duration, Failure> {
    let margin = cfg.lease_duration() - cfg.renew_deadline();
    match args.grace {
        Some(g) if g >= margin => Err(Failure::new(
            exit::CONFIG,
            format!(
                "invalid --grace {g:?}: must be less than lease duration − renew deadline ({:?} − {:?} = {margin:?}), so the child is gone before anyone else can be granted the lease",
                cfg.lease_duration(),
                cfg.renew_deadline()
            ),
        )),
        Some(g) => Ok(g),
        None => Ok(Duration::from_secs(5).min(margin.mul_f64(0.8))),
    }
}
