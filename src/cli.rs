//! The command line (clap derive). Every flag that a deployment sets has an environment
//! fallback (`CROWN_*`, and `POD_NAME` for the id, as in Kubernetes' downward API).
// The doc comments below are clap's `--help` text, written for a terminal, not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod args;
mod commands;
mod man;
mod parse;

pub use args::*;
pub use commands::*;
pub use man::*;
pub use parse::*;

use clap::{Parser, Subcommand};

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

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
