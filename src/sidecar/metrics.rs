//! What `GET /metrics` serves (Prometheus text format 0.0.4, encoded by `prometheus-client`).
//!
//! Every metric about the election carries one label, `name` (the election), as client-go's
//! `leader_election_master_status{name}` does; `crown_build_info` and the `process_*` metrics
//! carry none. The names are listed in the README ("Metrics").
//!
//! Counters and the histogram live as long as the participant and are fed from its event loop
//! ([`Metrics::observe`]) and the webhook task ([`WebhookCounters`]); the values that describe the
//! present (role, term, renewal failures, the process) are read when scraped.

use crate::election::{Event, Role, Status};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Upper bounds of the renew-latency histogram, in seconds.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type GaugeF64 = Gauge<f64, AtomicU64>;

/// The webhook's counters (cheap clones sharing the values).
#[derive(Clone, Debug, Default)]
pub struct WebhookCounters {
    /// Notices the receiver accepted (HTTP 2xx).
    pub deliveries: Counter,
    /// Attempts that failed (no answer in time, refused, or not 2xx).
    pub failures: Counter,
    /// Notices given up on (newer notice waiting, attempts exhausted, queue full, exit bound).
    pub dropped: Counter,
}

/// The participant's metrics.
#[derive(Debug)]
pub struct Metrics {
    transitions: Counter,
    renew_latency: Histogram,
    last_renewal: GaugeF64,
    last_gap: GaugeF64,
    webhook: WebhookCounters,
    leaderless_since: Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            transitions: Counter::default(),
            renew_latency: Histogram::new(BUCKETS.iter().copied()),
            last_renewal: GaugeF64::default(),
            last_gap: GaugeF64::default(),
            webhook: WebhookCounters::default(),
            leaderless_since: Mutex::new(None),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

impl Metrics {
    /// The counters to hand to the webhook task.
    pub fn webhook(&self) -> WebhookCounters {
        self.webhook.clone()
    }

    /// Records one event.
    pub fn observe(&self, ev: &Event) {
        match ev {
            Event::Renewed { took, .. } => {
                self.renew_latency.observe(took.as_secs_f64());
                self.last_renewal.set(unix_now());
            }
            Event::StartedLeading { .. } | Event::NewLeader { .. } => {
                if matches!(ev, Event::StartedLeading { .. }) {
                    // Being granted the lease is a successful write of it too.
                    self.last_renewal.set(unix_now());
                }
                self.transitions.inc();
                let since = self
                    .leaderless_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(t) = since {
                    self.last_gap.set(t.elapsed().as_secs_f64());
                }
            }
            Event::StoppedLeading { .. } | Event::NoLeader => {
                self.leaderless_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(Instant::now);
            }
            Event::Fatal { .. } | Event::Failed { .. } | Event::Lagged { .. } => {}
        }
    }

    /// The registry of one scrape: the long-lived metrics, plus the present state of the
    /// election (`status`) and of the process.
    pub fn registry(&self, election: &str, status: &Status) -> Registry {
        let mut root = Registry::default();
        root.register(
            "crown_build",
            "Build of this crown binary (always 1)",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("os", std::env::consts::OS),
                ("arch", std::env::consts::ARCH),
                (
                    "profile",
                    if cfg!(debug_assertions) {
                        "debug"
                    } else {
                        "release"
                    },
                ),
            ]),
        );
        process_metrics(&mut root);

        let r =
            root.sub_registry_with_label((Cow::Borrowed("name"), Cow::Owned(election.to_string())));
        r.register(
            "leader_election_master_status",
            "Whether this participant leads (1) or not (0), as client-go names it",
            ConstGauge::new(i64::from(status.role == Role::Leader)),
        );
        r.register(
            "crown_term",
            "The term held (leader) or last seen",
            ConstGauge::new(i64::try_from(status.term.0).unwrap_or(i64::MAX)),
        );
        r.register(
            "crown_transitions",
            "Leader changes this participant saw (including its own grants)",
            self.transitions.clone(),
        );
        r.register(
            "crown_renew_latency_seconds",
            "Time from sending a renewal to its answer",
            self.renew_latency.clone(),
        );
        r.register(
            "crown_renew_failures",
            "Renewals that failed with a backend error",
            ConstCounter::new(status.renew_failures),
        );
        r.register(
            "crown_last_renewal_timestamp_seconds",
            "Unix time of this participant's last successful grant or renewal of the lease (0: none yet)",
            self.last_renewal.clone(),
        );
        r.register(
            "crown_last_failover_gap_seconds",
            "Time this participant saw without a leader before the latest new leader",
            self.last_gap.clone(),
        );
        r.register(
            "crown_webhook_deliveries",
            "Webhook notices the receiver accepted (HTTP 2xx)",
            self.webhook.deliveries.clone(),
        );
        r.register(
            "crown_webhook_failures",
            "Webhook attempts that failed (no answer in time, refused, or not 2xx)",
            self.webhook.failures.clone(),
        );
        r.register(
            "crown_webhook_dropped",
            "Webhook notices given up on (a newer one waiting, attempts exhausted, queue full, or exit)",
            self.webhook.dropped.clone(),
        );
        root
    }

    /// The exposition of one scrape.
    pub fn render(&self, election: &str, status: &Status) -> String {
        let mut o = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(
            &mut o,
            &self.registry(election, status),
        );
        o
    }
}

/// What `/proc/self` says about this process (Linux), the `process_*` metrics every Prometheus
/// client library exports. A value that cannot be read is left out.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads them now.
    pub fn read() -> ProcessStats {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as u64;
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        let mut p = stat
            .as_deref()
            .map(|s| parse_stat(s, ticks, page, btime))
            .unwrap_or_default();
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        p.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        p
    }
}

/// Parses `/proc/PID/stat` (see proc_pid_stat(5)): fields after the parenthesised command name,
/// which may itself hold spaces and parentheses.
pub fn parse_stat(s: &str, ticks: f64, page: u64, btime: Option<u64>) -> ProcessStats {
    let mut p = ProcessStats::default();
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return p;
    };
    // rest starts at field 3 (state): field N is at index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(u), Some(s)) = (num(14), num(15))
        && ticks > 0.0
    {
        p.cpu_seconds = Some((u + s) as f64 / ticks);
    }
    if let (Some(start), Some(b)) = (num(22), btime)
        && ticks > 0.0
    {
        p.start_time = Some(b as f64 + start as f64 / ticks);
    }
    p.virtual_bytes = num(23);
    p.resident_bytes = num(24).map(|pages| pages.saturating_mul(page));
    p
}

fn process_metrics(r: &mut Registry) {
    let p = ProcessStats::read();
    if let Some(v) = p.cpu_seconds {
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            ConstCounter::new(v),
        );
    }
    let gauges = [
        (
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors",
            p.max_fds.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            p.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            p.start_time,
        ),
    ];
    for (name, help, v) in gauges {
        if let Some(v) = v {
            r.register(name, help, ConstGauge::new(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parentheses_in_the_name() {
        // Fields 3.. of a real /proc/self/stat line; utime 250, stime 50, starttime 1000,
        // vsize 4096000, rss 300 pages.
        let line = "4242 (cr) (wn x) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 1000 4096000 300 18446744073709551615";
        let p = parse_stat(line, 100.0, 4096, Some(1_700_000_000));
        assert_eq!(p.cpu_seconds, Some(3.0));
        assert_eq!(p.start_time, Some(1_700_000_010.0));
        assert_eq!(p.virtual_bytes, Some(4_096_000));
        assert_eq!(p.resident_bytes, Some(300 * 4096));
        assert_eq!(
            parse_stat("garbage", 100.0, 4096, None),
            ProcessStats::default()
        );
    }

    #[test]
    fn this_process_has_stats() {
        let p = ProcessStats::read();
        assert!(
            p.cpu_seconds.is_some() && p.resident_bytes.unwrap() > 0,
            "{p:?}"
        );
        assert!(p.open_fds.unwrap() >= 3 && p.max_fds.unwrap() >= p.open_fds.unwrap());
        let now = unix_now();
        let start = p.start_time.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn every_election_metric_has_the_name_label_only() {
        let m = Metrics::default();
        m.observe(&Event::Renewed {
            term: crate::election::Term(1),
            took: Duration::from_millis(3),
        });
        m.webhook().dropped.inc();
        let status = Status {
            role: Role::Leader,
            term: crate::election::Term(7),
            leader: None,
            deadline: None,
            renew_failures: 2,
        };
        let text = m.render("e\"1", &status);
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            if l.starts_with("process_") {
                assert!(!l.contains('{'), "{l}");
            } else if !l.starts_with("crown_build_info") {
                assert!(l.contains("name=\"e\\\"1\""), "{l}");
                assert!(!l.contains("election="), "{l}");
            }
        }
        assert!(
            text.contains("crown_webhook_dropped_total{name=\"e\\\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("crown_renew_latency_seconds_count{name=\"e\\\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\ncrown_build_info{version=\""), "{text}");
        assert!(
            text.contains("leader_election_master_status{name=\"e\\\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("crown_term{name=\"e\\\"1\"} 7\n"), "{text}");
        assert!(
            text.contains("crown_renew_failures_total{name=\"e\\\"1\"} 2\n"),
            "{text}"
        );
    }
}
