//! The arguments of each subcommand (`run`, `status`/`history`, `tui`, `demo`, `once`, the
//! internal exec guard) and the choices they take.
// The doc comments below are clap's `--help` text, written for a terminal, not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use super::{
    BackendArgs, BackendKind, EtcdArgs, TimingArgs, default_dir, parse_duration, parse_listen_addr,
    parse_positive_duration,
};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// `crown once …`.
#[derive(Debug, Subcommand)]
pub enum OnceCommand {
    /// Remove the duty's success record, so that the next `crown run --once` runs CMD again
    /// (an unreadable record is removed too). Prints what it removed.
    Reset(OnceResetArgs),
}

/// `crown once reset`.
#[derive(Clone, Debug, Args)]
pub struct OnceResetArgs {
    /// Backend flags.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `crown __exec-guard --parent-pid PID -- CMD ARGS…` (internal).
#[derive(Clone, Debug, Args)]
pub struct ExecGuardArgs {
    /// The crown process that must be our parent.
    #[arg(long)]
    pub parent_pid: i32,
    /// The soft open-file limit to restore before exec (crown raised its own).
    #[arg(long)]
    pub nofile: Option<u64>,
    /// The command to exec.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// What to do when the child exits on its own while we lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnChildExit {
    /// Release the lease and exit crown with the child's own exit code (128 + signal if
    /// killed).
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
    /// less than lease duration − renew deadline [default: 5s, or 80% of that margin if less;
    /// at most 1 day].
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
    /// Serve GET /leader, /healthz, /readyz and /metrics on this address: HOST:PORT
    /// (127.0.0.1:4040, localhost:4040, [::1]:4040) or :PORT for all interfaces.
    #[arg(long, value_name = "ADDR", env = "CROWN_HTTP", value_parser = parse_listen_addr)]
    pub http: Option<std::net::SocketAddr>,
    /// POST {"leader", "id", "term", "election"} here on every change of our role
    /// (in order, retried with backoff).
    #[arg(long, value_name = "URL", env = "CROWN_NOTIFY_URL")]
    pub notify_url: Option<String>,
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
    /// A table with more columns (pid, host; previous holder).
    Wide,
    /// JSON (a stable interface).
    Json,
    /// YAML (the same fields as JSON).
    Yaml,
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
    /// Participant id, unique within the election [default: $POD_NAME, else <hostname>-<pid>,
    /// shortened with a hash when the host name is too long for an id].
    #[arg(long, env = "POD_NAME")]
    pub id: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "CROWN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Give up if not leader within this long, with exit code 8 (like `flock -w` or `consul
    /// lock -timeout`); `0` tries once [default: wait forever].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", env = "CROWN_WAIT")]
    pub wait: Option<Duration>,
    /// Check the flags and configuration, print them, and exit (0 if valid) without touching
    /// the backend. Used to validate container args.
    #[arg(long)]
    pub check_config: bool,
    /// A duty with an end: across all participants of the election, CMD runs (by the leader)
    /// until one run exits 0; that success is recorded in the backend and every participant,
    /// running or started later, then exits 0 without running it. At least once: a leader that
    /// dies mid-run leaves no record and the next leader runs CMD again, with a higher
    /// CROWN_TERM. `crown once reset` clears the record.
    #[arg(long, requires = "command", env = "CROWN_ONCE")]
    pub once: bool,
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
    /// How often to read the backend (at most 1 day).
    #[arg(long, value_parser = parse_positive_duration, default_value = "200ms")]
    pub refresh: Duration,
    /// Where the dashboard writes its own log (never through a symlink) [default:
    /// $XDG_STATE_HOME/crown/tui.log, else ~/.local/state/crown/tui.log].
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

/// `crown demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// How many participants to start (p1…pN).
    #[arg(long = "participants", short = 'p', short_alias = 'n', default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=26))]
    pub participants: u16,
    /// Backend that holds the lease: file, or etcd (participants run locally either way).
    #[arg(long, value_enum, default_value_t = BackendKind::File)]
    pub backend: BackendKind,
    /// etcd connection flags (etcd backend).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Directory of the file backend; participants' logs go there too (`<id>.log`)
    /// [default: $XDG_RUNTIME_DIR/crown, else $TMPDIR/crown-<uid>].
    #[arg(long, default_value_os_t = default_dir(), hide_default_value = true)]
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
    #[arg(long, value_parser = parse_positive_duration, default_value = "5s")]
    pub chaos_interval: Duration,
    /// Print log lines instead of the dashboard even on a terminal.
    #[arg(long)]
    pub headless: bool,
    /// How often to read the backend (at most 1 day).
    #[arg(long, value_parser = parse_positive_duration, default_value = "200ms")]
    pub refresh: Duration,
}
