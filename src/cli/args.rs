//! The arguments several commands share: where the election lives (backend, file directory,
//! etcd and Kubernetes connection flags) and the election timings.
// The doc comments below are clap's `--help` text, written for a terminal, not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use super::{parse_duration, parse_positive_duration};
use crate::election::Config;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

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
