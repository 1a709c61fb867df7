//! The command line (clap derive). Every flag that a deployment sets has an environment
//! fallback (`CROWN_*`, and `POD_NAME` for the id, as in Kubernetes' downward API).

use crate::election::Config;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// crown: leader election you can watch.
#[derive(Debug, Parser)]
#[command(name = "crown", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Campaign for leadership and log every change (SIGTERM/SIGINT release and exit 0;
    /// SIGUSR1 resigns).
    Run(RunArgs),
    /// Print the current leader and members once.
    Status(StatusArgs),
    /// Print the leader history: every grant, how it ended and the gap before it.
    History(StatusArgs),
    /// Internal: runs CMD so that it dies with crown (see `crown::sidecar::child`).
    #[command(name = "__exec-guard", hide = true)]
    ExecGuard(ExecGuardArgs),
}

/// `crown __exec-guard --parent-pid PID -- CMD ARGS…` (internal).
#[derive(Clone, Debug, Args)]
pub struct ExecGuardArgs {
    /// The crown process that must be our parent.
    #[arg(long)]
    pub parent_pid: i32,
    /// The command to exec.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// What to do when the child exits on its own while we lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnChildExit {
    /// Release the lease and exit crown with the child's exit code (like `consul lock`).
    Exit,
    /// Release the lease and stay a follower (may lead again later).
    Resign,
    /// Start the child again in the same term (after 1 s).
    Restart,
}

/// What to do when leadership is lost involuntarily (renew deadline passed, superseded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnLoss {
    /// Stay a follower and campaign again.
    Recampaign,
    /// Exit with code 6.
    Exit,
}

/// Sidecar mode: a child process while leading, an HTTP endpoint, a webhook.
#[derive(Clone, Debug, Args)]
pub struct SidecarArgs {
    /// How long the child gets between SIGTERM and SIGKILL when leadership ends. Must be
    /// less than lease duration − renew deadline [default: 5s, or 80% of that margin if less].
    #[arg(long, value_parser = parse_duration, env = "CROWN_GRACE")]
    pub grace: Option<Duration>,
    /// When the child exits on its own while leading: exit (release, then exit with its
    /// code), resign (release, stay a follower) or restart (same term).
    #[arg(long, value_enum, default_value_t = OnChildExit::Exit, env = "CROWN_ON_CHILD_EXIT")]
    pub on_child_exit: OnChildExit,
    /// When leadership is lost (renew deadline passed or superseded; not on resign or
    /// shutdown): recampaign, or exit with code 6.
    #[arg(long, value_enum, default_value_t = OnLoss::Recampaign, env = "CROWN_ON_LOSS")]
    pub on_loss: OnLoss,
    /// Serve GET /leader, /healthz, /readyz and /metrics on this address (e.g. 127.0.0.1:4040).
    #[arg(long, value_name = "ADDR", env = "CROWN_HTTP")]
    pub http: Option<std::net::SocketAddr>,
    /// POST {"leader", "id", "term", "election"} here on every change of our role
    /// (in order, retried with backoff).
    #[arg(long, value_name = "URL", env = "CROWN_NOTIFY_URL")]
    pub notify_url: Option<String>,
}

/// Which backend holds the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// A lease file in a local directory (zero set-up).
    File,
    /// A Kubernetes coordination.k8s.io/v1 Lease (in-cluster config or $KUBECONFIG).
    Kube,
}

/// Where the election lives.
#[derive(Clone, Debug, Args)]
pub struct BackendArgs {
    /// Backend that holds the lease.
    #[arg(long, value_enum, default_value_t = BackendKind::File, env = "CROWN_BACKEND")]
    pub backend: BackendKind,
    /// Directory of the file backend.
    #[arg(long, env = "CROWN_DIR", default_value_os_t = default_dir())]
    pub dir: PathBuf,
    /// Election name: participants with the same name compete for one lease.
    #[arg(long, short = 'e', env = "CROWN_ELECTION", default_value = "crown")]
    pub election: String,
    /// Kubernetes namespace of the Lease (kube backend).
    #[arg(long, short = 'n', env = "NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Name of the Lease (kube backend) [default: the election name].
    #[arg(long, env = "CROWN_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// How long to wait for an unreachable backend at start before failing.
    #[arg(long, value_parser = parse_duration, default_value = "10s", env = "CROWN_WAIT_FOR_BACKEND")]
    pub wait_for_backend: Duration,
}

impl BackendKind {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::File => "file",
            BackendKind::Kube => "kube",
        }
    }
}

impl BackendArgs {
    /// Where the election lives, for log lines.
    pub fn location(&self) -> String {
        match self.backend {
            BackendKind::File => self.dir.display().to_string(),
            BackendKind::Kube => format!("lease {}/{}", self.namespace, self.lease_name()),
        }
    }

    /// The Lease name (kube backend).
    pub fn lease_name(&self) -> &str {
        self.lease_name.as_deref().unwrap_or(&self.election)
    }
}

/// The default directory of the file backend: `$TMPDIR/crown`.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("crown")
}

/// Election timings; see `crown::election::Config` for the rule.
#[derive(Clone, Debug, Args)]
pub struct TimingArgs {
    /// How long followers wait, on their own clock, after the lease last changed before
    /// taking over a holder that stopped renewing.
    #[arg(long, value_parser = parse_duration, default_value = "5s", env = "CROWN_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down (must be < lease duration).
    #[arg(long, value_parser = parse_duration, default_value = "3s", env = "CROWN_RENEW_DEADLINE")]
    pub renew_deadline: Duration,
    /// Interval between renewals and re-reads (renew deadline must be > 1.2 × this).
    #[arg(long, value_parser = parse_duration, default_value = "1s", env = "CROWN_RETRY_PERIOD")]
    pub retry_period: Duration,
}

impl TimingArgs {
    /// The validated config.
    pub fn config(&self) -> Result<Config, crate::election::ConfigError> {
        Config::new(self.lease_duration, self.renew_deadline, self.retry_period)
    }
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of one-shot commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table.
    Text,
    /// JSON (a stable interface).
    Json,
}

/// `crown run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Backend flags.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Timings.
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Participant id, unique within the election [default: $POD_NAME, else <hostname>-<pid>].
    #[arg(long, env = "POD_NAME")]
    pub id: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "CROWN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Check the flags and configuration, print them, and exit (0 if valid) without touching
    /// the backend. Used to validate container args.
    #[arg(long)]
    pub check_config: bool,
    /// Sidecar flags.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
    /// Command to run while leading (after `--`): started with CROWN_TERM, CROWN_ELECTION and
    /// CROWN_ID on every grant, sent SIGTERM (its process group) then SIGKILL after --grace on
    /// any loss, and stopped before the lease is released.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `crown status` and `crown history`.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// Backend flags.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Parses `5s`, `250ms`, `1m30s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("invalid duration {s:?}: must be >= 0"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 5s, 250ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
