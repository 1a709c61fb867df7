//! The command line (clap derive). Every flag that a deployment sets has an environment
//! fallback (`CROWN_*`, and `POD_NAME` for the id, as in Kubernetes' downward API).
// The doc comments below are clap's `--help` text, written for a terminal, not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use crate::election::Config;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Logging, for `--help`.
pub const LOG_HELP: &str = "Logs go to stderr. RUST_LOG sets the filter (CROWN_LOG too, and wins \
when both are set), e.g. RUST_LOG=crown=debug to see every leader heartbeat. Default: crown's \
role changes (INFO) and libraries' warnings; status and history print only their result or one \
error line.";

/// crown: leader election you can watch.
#[derive(Debug, Parser)]
#[command(name = "crown", version, about, long_about = None, propagate_version = true, after_help = LOG_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Kubernetes client flags (kube backend).
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How to reach Kubernetes (kube backend): kubectl's flags. Global, so they go anywhere on
/// the command line; `main` hands them to the kube backend (`crown::connect::set_kube_options`).
#[derive(Clone, Debug, Default, Args)]
pub struct KubeArgs {
    /// Kubernetes: the kubeconfig file to use [default: $KUBECONFIG, else ~/.kube/config,
    /// else the in-cluster service account].
    #[arg(long, global = true, value_name = "FILE", display_order = 1000)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes: the kubeconfig context to use [default: its current-context].
    #[arg(long, global = true, value_name = "NAME", display_order = 1001)]
    pub context: Option<String>,
    /// Kubernetes: the Pod this participant runs in. While leading it is labelled
    /// crown.io/leader=true (for a leader Service) and it carries the heartbeat.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "POD_NAME",
        display_order = 1002
    )]
    pub pod_name: Option<String>,
}

/// `--etcd-history-limit`'s default: the etcd backend's own (the same number in a crown built
/// without it, so that `--help` does not change).
#[cfg(feature = "etcd")]
pub const ETCD_HISTORY_LIMIT: u32 = crate::backend::etcd::HISTORY_LIMIT as u32;
/// `--etcd-history-limit`'s default: the etcd backend's own (the same number in a crown built
/// without it, so that `--help` does not change).
#[cfg(not(feature = "etcd"))]
pub const ETCD_HISTORY_LIMIT: u32 = 1000;

/// The one-shot commands: they give up on an unanswering backend after `--timeout`.
pub const ONE_SHOT: [&str; 2] = ["status", "history"];

/// The command line as the binary parses it: the derive, with `--wait-for-backend` of the
/// one-shot commands presented as `--timeout` (default 3 s, like `kubectl --request-timeout`;
/// the old name stays as a hidden alias). The argument id is unchanged, so the value still
/// lands in [`BackendArgs::wait_for_backend`].
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    for name in ONE_SHOT {
        cmd = cmd.mut_subcommand(name, one_shot_timeout);
    }
    cmd.mut_subcommand("once", |c| c.mut_subcommand("reset", one_shot_timeout))
}

fn one_shot_timeout(c: clap::Command) -> clap::Command {
    c.mut_arg("wait_for_backend", |a| {
        a.long("timeout")
            .alias("wait-for-backend")
            .value_name("DURATION")
            .env("CROWN_TIMEOUT")
            .default_value("3s")
            .help(
                "Give up (exit code 4, one line) when the backend does not answer within \
                 this long: connecting, and then reading",
            )
    })
}

/// Parses the process's arguments with [`command`] (exits 2 with clap's message on bad
/// flags), then applies the `ETCDCTL_*` fallbacks (see [`EtcdArgs::apply_etcdctl_env`]).
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    let mut cli =
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command()).exit());
    if let Some((_, sub)) = matches.subcommand() {
        // `crown once reset`: its flags are one level down.
        let sub = match &cli.command {
            Command::Once(_) => sub.subcommand().map_or(sub, |(_, m)| m),
            _ => sub,
        };
        let etcd = match &mut cli.command {
            Command::Run(a) => Some(&mut a.backend.etcd),
            Command::Status(a) | Command::History(a) => Some(&mut a.backend.etcd),
            Command::Tui(a) => Some(&mut a.backend.etcd),
            Command::Demo(a) => Some(&mut a.etcd),
            Command::Once(OnceCommand::Reset(a)) => Some(&mut a.backend.etcd),
            Command::ExecGuard(_) | Command::Completions { .. } | Command::Man => None,
        };
        if let Some(etcd) = etcd
            && let Err(msg) = etcd.apply_etcdctl_env(sub, |k| std::env::var(k).ok())
        {
            command()
                .error(clap::error::ErrorKind::ValueValidation, msg)
                .exit();
        }
        if let Command::Demo(_) = cli.command
            && demo_used_dash_n(std::env::args().skip_while(|a| a != "demo"))
        {
            eprintln!(
                "crown: warning: `crown demo -n` is deprecated and will be removed: use -p/--participants (-n is the namespace everywhere else)"
            );
        }
    }
    cli
}

/// Whether `crown demo` arguments name the participant count with the old `-n`.
fn demo_used_dash_n(args: impl Iterator<Item = String>) -> bool {
    args.into_iter().any(|a| {
        a == "-n"
            || a.strip_prefix("-n")
                .is_some_and(|v| v.trim_start_matches('=').parse::<u16>().is_ok())
    })
}

/// Parses a listen address: `HOST:PORT` where HOST is an IP address (`[::1]` for IPv6) or a
/// name resolved now (`localhost`; the first IPv4 address if it has one), or `:PORT` for all
/// interfaces (0.0.0.0).
pub fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{SocketAddr, ToSocketAddrs};
    let bad = |why: &str| {
        format!("invalid listen address {s:?}: {why} (e.g. :4040, 127.0.0.1:4040, localhost:4040)")
    };
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad("not a port number"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    port.parse::<u16>().map_err(|_| bad("not a port number"))?;
    if host.is_empty()
        || host.len() > 253
        || host.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad("not a host name"));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad(&format!("{host} has no address")))
}

/// The man page (roff): the top-level page, then one section per visible subcommand with its
/// synopsis, description and options, then the environment that sets the log filter.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut cmd = command();
    cmd.build();
    let top = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    top.render_options_section(&mut out)?;
    let visible = |c: &clap::Command| !c.is_hide_set() && c.get_name() != "help";
    let mut subs: Vec<(String, &clap::Command)> = vec![];
    let mut top: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| visible(s)).collect();
    top.sort_by_key(|s| s.get_display_order());
    for sub in top {
        let name = format!("crown {}", sub.get_name());
        // Nested commands (`crown once reset`) get their own sections after their parent.
        let nested: Vec<(String, &clap::Command)> = sub
            .get_subcommands()
            .filter(|s| visible(s))
            .map(|s| (format!("{name} {}", s.get_name()), s))
            .collect();
        subs.push((name, sub));
        subs.extend(nested);
    }
    for (name, sub) in subs {
        out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        let man = clap_mangen::Man::new(sub.clone().bin_name(&name));
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        // The subcommand's own sections become subsections of its section.
        let part = String::from_utf8_lossy(&part).replace("\n.SH ", "\n.SS ");
        let part = part
            .strip_prefix(".SH ")
            .map_or(part.clone(), |p| format!(".SS {p}"));
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b".SH ENVIRONMENT\n");
    roff_paragraph(&mut out, LOG_HELP);
    roff_paragraph(
        &mut out,
        "Every flag that a deployment sets has a variable, named in its description \
         (CROWN_*, POD_NAME, ETCD_*; ETCDCTL_* as fallbacks for the etcd flags).",
    );
    out.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    roff_paragraph(
        &mut out,
        "0 success; 1 internal error; 2 bad flags; 3 invalid configuration; 4 backend \
         unavailable; 5 corrupt stored state; 6 leadership lost with --on-loss exit; 7 the \
         backend denied a verb (Kubernetes RBAC); 8 not leader within --wait; with a child and \
         --on-child-exit exit, the child's code (with --once: 0 once the duty is done, by this \
         participant or another).",
    );
    Ok(out)
}

/// One roff paragraph of plain text (a leading `.` or `'` escaped; backslashes doubled).
fn roff_paragraph(out: &mut Vec<u8>, text: &str) {
    let text = text.replace('\\', "\\e");
    out.extend_from_slice(b".PP\n");
    for line in text.split('\n') {
        if line.starts_with('.') || line.starts_with('\'') {
            out.extend_from_slice(b"\\&");
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Campaign for leadership and log every change (SIGTERM/SIGINT/SIGHUP release and exit 0;
    /// SIGUSR1 resigns).
    #[command(after_help = LOG_HELP)]
    Run(RunArgs),
    /// Print the current leader and members once.
    Status(StatusArgs),
    /// Print the leader history: every grant, how it ended and the gap before it.
    History(StatusArgs),
    /// Watch an election live: leader, members, history, failover gaps (keys kill, pause or
    /// resign a local leader; on kube, delete the leader's Pod or ask it to resign).
    Tui(TuiArgs),
    /// Start N local participants and watch them in the dashboard; without a terminal, print
    /// their logs and the dashboard's events instead. Its participants stop with it.
    Demo(DemoArgs),
    /// Manage the duty of `crown run --once` (its state shows in `crown status`).
    #[command(subcommand)]
    Once(OnceCommand),
    /// Print a shell completion script (e.g. `crown completions bash >
    /// /etc/bash_completion.d/crown`, or `source <(crown completions zsh)`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (e.g. `crown man | man -l -`, or `crown man >
    /// /usr/local/share/man/man1/crown.1`).
    Man,
    /// Internal: runs CMD so that it dies with crown (see `crown::sidecar::child`).
    #[command(name = "__exec-guard", hide = true)]
    ExecGuard(ExecGuardArgs),
}

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
    /// Directory of the file backend: private to you, or a group share (setgid, mode 2770)
    /// [default: $XDG_RUNTIME_DIR/crown, else $TMPDIR/crown-<uid>].
    #[arg(long, env = "CROWN_DIR", default_value_os_t = default_dir(), hide_default_value = true)]
    pub dir: PathBuf,
    /// Election name: participants with the same name compete for one lease.
    #[arg(long, short = 'e', env = "CROWN_ELECTION", default_value = "crown")]
    pub election: String,
    /// Kubernetes namespace of the Lease (kube backend) [default: the Pod's service-account
    /// namespace in a Pod, else the kubeconfig context's namespace, else default].
    #[arg(
        long,
        short = 'n',
        env = "NAMESPACE",
        default_value = "",
        hide_default_value = true
    )]
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
    #[arg(long, env = "CROWN_ETCD_HISTORY_LIMIT", default_value_t = ETCD_HISTORY_LIMIT, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub etcd_history_limit: u32,
}

impl EtcdArgs {
    /// etcdctl's variables as fallbacks for the flags and crown's own variables, as `etcdctl`
    /// users expect: `ETCDCTL_ENDPOINTS`, `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`,
    /// `ETCDCTL_USER` (a name; etcdctl's `name:password` form is refused: the password comes
    /// only from `$ETCD_PASSWORD` or `$ETCDCTL_PASSWORD`). A flag or a crown variable wins.
    pub fn apply_etcdctl_env(
        &mut self,
        m: &clap::ArgMatches,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        use clap::parser::ValueSource;
        let unset = |id: &str| {
            !matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let no_endpoints = self.endpoints.iter().all(|e| e.trim().is_empty());
        if (unset("endpoints") || no_endpoints)
            && let Some(v) = get("ETCDCTL_ENDPOINTS")
        {
            self.endpoints = v.split(',').map(|e| e.trim().to_string()).collect();
        }
        for (id, name, slot) in [
            ("cacert", "ETCDCTL_CACERT", &mut self.cacert),
            ("cert", "ETCDCTL_CERT", &mut self.cert),
            ("key", "ETCDCTL_KEY", &mut self.key),
        ] {
            if unset(id)
                && let Some(v) = get(name)
            {
                *slot = Some(PathBuf::from(v));
            }
        }
        if unset("user")
            && let Some(v) = get("ETCDCTL_USER")
        {
            if v.contains(':') {
                return Err("ETCDCTL_USER holds a password (name:password): crown takes the password only from $ETCD_PASSWORD or $ETCDCTL_PASSWORD".into());
            }
            self.user = Some(v);
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("a client certificate needs both --cert and --key (or ETCDCTL_CERT and ETCDCTL_KEY)".into());
        }
        Ok(())
    }

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
            #[cfg(feature = "kube")]
            BackendKind::Kube => format!(
                "lease {}/{}",
                crate::backend::kube::resolve_namespace(&self.namespace).name,
                self.lease_name()
            ),
            #[cfg(not(feature = "kube"))]
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

/// The default directory of the file backend, private to the user: `$XDG_RUNTIME_DIR/crown`
/// when `$XDG_RUNTIME_DIR` is an absolute directory we own, else `$TMPDIR/crown-<uid>` (created
/// 0700 and verified: a directory another user planted there is refused, never used).
pub fn default_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && x.is_absolute()
        && std::fs::metadata(&x).is_ok_and(|m| m.is_dir() && m.uid() == euid)
    {
        return x.join("crown");
    }
    std::env::temp_dir().join(format!("crown-{euid}"))
}

/// Election timings; see `crown::election::Config` for the rule.
#[derive(Clone, Debug, Args)]
pub struct TimingArgs {
    /// How long followers wait, on their own clock, after the lease last changed before
    /// taking over a holder that stopped renewing.
    #[arg(long, value_parser = parse_positive_duration, default_value = "5s", env = "CROWN_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down (must be < lease duration).
    #[arg(long, value_parser = parse_positive_duration, default_value = "3s", env = "CROWN_RENEW_DEADLINE")]
    pub renew_deadline: Duration,
    /// Interval between renewals and re-reads (renew deadline must be > 1.2 × this).
    #[arg(long, value_parser = parse_positive_duration, default_value = "1s", env = "CROWN_RETRY_PERIOD")]
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

/// The longest duration any flag accepts (lease duration, renew deadline, retry period,
/// grace, refresh, waits): one day. Longer values are typos, and bounding them keeps every
/// deadline computed from them (`Instant + duration`) far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses `5s`, `250ms`, `1m30s`, or a bare number of seconds, from 0 up to
/// [`MAX_DURATION`] (1 day).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = if let Ok(secs) = s.trim().parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return Err(format!("invalid duration {s:?}: must be >= 0"));
        }
        // Compared as f64 first: `Duration::from_secs_f64` panics on huge values.
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(too_long(s));
        }
        Duration::from_secs_f64(secs)
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 5s, 250ms)"))?
    };
    if d > MAX_DURATION {
        return Err(too_long(s));
    }
    Ok(d)
}

/// Like [`parse_duration`], but zero is refused too (periods, timings).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(d)
}

fn too_long(s: &str) -> String {
    format!("invalid duration {s:?}: must be at most 1 day (24h)")
}

/// The default participant id, `<hostname>-<pid>`, made to fit the id rules (1–63 letters,
/// digits, `.`, `_`, `-`, not starting with `.`) for any host name: other characters become
/// `-`, and a host name too long to fit is cut and followed by a hash of the whole name, so
/// two long names with the same beginning still give different ids.
pub fn default_id(host: &str, pid: u32) -> String {
    const MAX: usize = 63;
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    let clean = if clean.is_empty() { "host" } else { clean };
    let suffix = format!("-{pid}");
    if clean.len() + suffix.len() <= MAX {
        return format!("{clean}{suffix}");
    }
    // FNV-1a (64 bit) of the original name: stable across Rust versions and platforms.
    let hash = host.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let hash = format!("-{:08x}", hash as u32);
    let keep = MAX - suffix.len() - hash.len();
    // `clean` is ASCII, so any byte index is a char boundary.
    format!("{}{hash}{suffix}", &clean[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn durations_are_bounded_and_never_panic() {
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("86400").unwrap(), MAX_DURATION);
        for s in [
            "1e300",
            "1e20",
            "1.8e19",
            "inf",
            "86401",
            "25h",
            "2days",
            "1000000000000000000000s",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains("invalid duration"), "{s}: {e}");
        }
        assert!(
            parse_duration("1e300")
                .unwrap_err()
                .contains("at most 1 day")
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(
            parse_positive_duration("0s")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert_eq!(
            parse_positive_duration("1ms").unwrap(),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn listen_addresses() {
        let a = |s: &str| parse_listen_addr(s).map(|a| a.to_string());
        assert_eq!(a(":4040").unwrap(), "0.0.0.0:4040");
        assert_eq!(a("127.0.0.1:4040").unwrap(), "127.0.0.1:4040");
        assert_eq!(a("[::1]:4040").unwrap(), "[::1]:4040");
        assert_eq!(a("localhost:4040").unwrap(), "127.0.0.1:4040");
        for bad in [
            ":",
            ":http",
            ":70000",
            "localhost",
            "localhost:",
            "4040",
            "a b:1",
            "\u{1b}:1",
        ] {
            assert!(
                a(bad).unwrap_err().contains("invalid listen address"),
                "{bad}"
            );
        }
    }

    fn etcd_matches(args: &[&str]) -> (EtcdArgs, clap::ArgMatches) {
        use clap::FromArgMatches;
        let m =
            command().get_matches_from(["crown", "status", "--backend", "etcd"].iter().chain(args));
        let cli = Cli::from_arg_matches(&m).unwrap();
        let Command::Status(a) = cli.command else {
            unreachable!()
        };
        (a.backend.etcd, m.subcommand().unwrap().1.clone())
    }

    #[test]
    fn etcdctl_variables_are_fallbacks() {
        let env = |k: &str| match k {
            "ETCDCTL_ENDPOINTS" => Some("http://10.0.0.1:2379, 10.0.0.2:2379".to_string()),
            "ETCDCTL_CACERT" => Some("/ca.pem".into()),
            "ETCDCTL_CERT" => Some("/c.pem".into()),
            "ETCDCTL_KEY" => Some("/k.pem".into()),
            "ETCDCTL_USER" => Some("root".into()),
            _ => None,
        };
        let (mut e, m) = etcd_matches(&[]);
        e.apply_etcdctl_env(&m, env).unwrap();
        assert_eq!(e.endpoints, ["http://10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(e.cacert.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(e.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(e.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(e.user.as_deref(), Some("root"));
        // A flag wins.
        let (mut e, m) = etcd_matches(&["--endpoints", "1.2.3.4:2379", "--user", "bob"]);
        e.apply_etcdctl_env(&m, env).unwrap();
        assert_eq!(e.endpoints, ["1.2.3.4:2379"]);
        assert_eq!(e.user.as_deref(), Some("bob"));
        // No variables: the defaults stay.
        let (mut e, m) = etcd_matches(&[]);
        e.apply_etcdctl_env(&m, |_| None).unwrap();
        assert_eq!(e.endpoints, ["127.0.0.1:2379"]);
        assert!(e.cacert.is_none() && e.user.is_none());
        // etcdctl's name:password form and a lone certificate are refused.
        let (mut e, m) = etcd_matches(&[]);
        let err = e
            .apply_etcdctl_env(&m, |k| (k == "ETCDCTL_USER").then(|| "root:pw".into()))
            .unwrap_err();
        assert!(err.contains("password"), "{err}");
        let (mut e, m) = etcd_matches(&[]);
        let err = e
            .apply_etcdctl_env(&m, |k| (k == "ETCDCTL_CERT").then(|| "/c.pem".into()))
            .unwrap_err();
        assert!(err.contains("--key"), "{err}");
    }

    #[test]
    fn demo_dash_n_is_noticed() {
        let used = |a: &[&str]| demo_used_dash_n(a.iter().map(|s| s.to_string()));
        assert!(used(&["demo", "-n", "3"]));
        assert!(used(&["demo", "-n3"]));
        assert!(used(&["demo", "-n=3"]));
        assert!(!used(&["demo", "-p", "3"]));
        assert!(!used(&["demo", "--participants", "3", "-e", "-n"][..4]));
    }

    fn valid_id(id: &str) -> bool {
        crate::backend::validate_election_name(id).is_ok()
    }

    #[test]
    fn default_id_fits_the_rules_for_any_host_name() {
        assert_eq!(default_id("vm", 42), "vm-42");
        let long = "a".repeat(60);
        let id = default_id(&long, 4_194_304);
        assert!(valid_id(&id), "{id}");
        assert_eq!(id.len(), 63);
        assert!(id.ends_with("-4194304"), "{id}");
        // Same beginning, different names: different ids.
        let other = format!("{}b", "a".repeat(70));
        assert_ne!(default_id(&long, 7), default_id(&other, 7));
        assert_eq!(default_id(&long, 7), default_id(&long, 7), "stable");
        for host in [
            "x".repeat(253),
            "node-1.eu-west-1.compute.internal.example.org.very-long-domain-name".into(),
            ".hidden".into(),
            "".into(),
            "über host/\n\u{1b}".into(),
            "...".into(),
        ] {
            let id = default_id(&host, u32::MAX);
            assert!(valid_id(&id), "{host:?} -> {id:?}");
        }
    }
}
