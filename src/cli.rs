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
    /// Campaign for leadership and log every change (SIGTERM/SIGINT/SIGHUP release and exit 0;
    /// SIGUSR1 resigns).
    Run(RunArgs),
    /// Print the current leader and members once.
    Status(StatusArgs),
    /// Print the leader history: every grant, how it ended and the gap before it.
    History(StatusArgs),
    /// Watch an election live: leader, members, history, failover gaps (observes only; keys
    /// kill, pause or resign a local leader).
    Tui(TuiArgs),
    /// Start N local participants and watch them in the dashboard; without a terminal, print
    /// their logs and the dashboard's events instead. Its participants stop with it.
    Demo(DemoArgs),
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
    /// etcd, in the election layout of `etcdctl elect` and Go's concurrency.Election.
    Etcd,
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
    /// etcd connection flags.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// How long to wait for an unreachable backend at start before failing.
    #[arg(long, value_parser = parse_duration, default_value = "10s", env = "CROWN_WAIT_FOR_BACKEND")]
    pub wait_for_backend: Duration,
}

/// How to reach etcd (etcd backend).
#[derive(Clone, Debug, Default, Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (etcd backend).
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Prefix of every etcd key crown uses; the election key is `<prefix><election>`.
    #[arg(long, env = "CROWN_ETCD_PREFIX", default_value = "")]
    pub etcd_prefix: String,
    /// CA certificate (PEM) to verify etcd's server certificate; implies TLS.
    #[arg(long, env = "ETCD_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd (with --key); implies TLS.
    #[arg(long, env = "ETCD_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for etcd (with --cert).
    #[arg(long, env = "ETCD_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// etcd user name; the password is read from $ETCD_PASSWORD (never a flag).
    #[arg(long, env = "ETCD_USER")]
    pub user: Option<String>,
    /// How many grants the etcd history keeps; older ones are compacted.
    #[arg(long, env = "CROWN_ETCD_HISTORY_LIMIT", default_value_t = crate::backend::etcd::HISTORY_LIMIT as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub etcd_history_limit: u32,
}

impl EtcdArgs {
    /// The same connection as flags for a child `crown run` (the password stays in the
    /// environment).
    pub fn to_flags(&self) -> Vec<String> {
        let mut v = vec![
            "--endpoints".to_string(),
            self.endpoints.join(","),
            "--etcd-prefix".to_string(),
            self.etcd_prefix.clone(),
        ];
        for (flag, path) in [
            ("--cacert", &self.cacert),
            ("--cert", &self.cert),
            ("--key", &self.key),
        ] {
            if let Some(p) = path {
                v.extend([flag.to_string(), p.to_string_lossy().into_owned()]);
            }
        }
        if let Some(u) = &self.user {
            v.extend(["--user".to_string(), u.clone()]);
        }
        if self.etcd_history_limit != 0 {
            v.extend([
                "--etcd-history-limit".to_string(),
                self.etcd_history_limit.to_string(),
            ]);
        }
        v
    }
}

impl BackendKind {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::File => "file",
            BackendKind::Kube => "kube",
            BackendKind::Etcd => "etcd",
        }
    }
}

impl BackendArgs {
    /// Where the election lives, for log lines.
    pub fn location(&self) -> String {
        match self.backend {
            BackendKind::File => self.dir.display().to_string(),
            BackendKind::Kube => format!("lease {}/{}", self.namespace, self.lease_name()),
            BackendKind::Etcd => format!(
                "{} key {}{}",
                self.etcd.endpoints.join(","),
                self.etcd.etcd_prefix,
                self.election
            ),
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

/// `crown tui`.
#[derive(Clone, Debug, Args)]
pub struct TuiArgs {
    /// Backend flags.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The participants' timings: heartbeat ages are coloured against them (the lease
    /// duration stored in the lease record wins when there is one).
    #[command(flatten)]
    pub timing: TimingArgs,
    /// How often to read the backend.
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    pub refresh: Duration,
    /// Where the dashboard writes its own log [default: $TMPDIR/crown-tui.log].
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

/// `crown demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// How many participants to start (p1…pN).
    #[arg(long = "participants", short = 'n', default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=26))]
    pub participants: u16,
    /// Backend that holds the lease: file, or etcd (participants run locally either way).
    #[arg(long, value_enum, default_value_t = BackendKind::File)]
    pub backend: BackendKind,
    /// etcd connection flags (etcd backend).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Directory of the file backend; participants' logs go there too (`<id>.log`).
    #[arg(long, default_value_os_t = default_dir())]
    pub dir: PathBuf,
    /// Election name.
    #[arg(long, short = 'e', default_value = "crown")]
    pub election: String,
    /// Timings, passed on to every participant.
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Stop by itself after this long (e.g. 20s) [default: run until SIGINT/SIGTERM or `q`].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Kill -9 the leader every `--chaos-interval` and restart it, so the log shows failovers.
    #[arg(long)]
    pub chaos: bool,
    /// Interval between chaos kills.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub chaos_interval: Duration,
    /// Print log lines instead of the dashboard even on a terminal.
    #[arg(long)]
    pub headless: bool,
    /// How often to read the backend.
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    pub refresh: Duration,
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
