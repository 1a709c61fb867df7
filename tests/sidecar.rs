//! Sidecar mode end to end: the real binary with a child process, kill -9 of leaders, the
//! HTTP endpoint, the webhook, and the grace rule.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(30);

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Copies the test child script into `dir` (its instances are recognised by that path).
fn child_script(dir: &Path) -> PathBuf {
    let p = dir.join("child.sh");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sidecar/child.sh"),
        &p,
    )
    .unwrap();
    p
}

/// Gone: no /proc entry, or a zombie waiting for init.
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(st) => st
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn fast_sidecar(script: &Path, log: &Path) -> Vec<String> {
    s(&[
        "--lease-duration",
        "2s",
        "--renew-deadline",
        "1500ms",
        "--retry-period",
        "400ms",
        "--grace",
        "300ms",
        "--",
        "sh",
        script.to_str().unwrap(),
        log.to_str().unwrap(),
    ])
}

fn child_pid(p: &Participant, term: u64) -> i32 {
    p.wait_for("child started", T, |l| {
        l.event() == "child_started" && l.term() == Some(term)
    })
    .json["pid"]
        .as_i64()
        .unwrap() as i32
}

/// Waits until child `pid` has logged its start line.
fn logged_start(log: &Path, pid: i32) {
    eventually("the child's start line", T, || {
        parse_log(log).iter().any(|r| r.pid == pid).then_some(())
    });
}

#[derive(Debug)]
struct Run {
    term: u64,
    pid: i32,
    start: u128,
    others: u64,
    stop: Option<u128>,
}

fn parse_log(log: &Path) -> Vec<Run> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs: Vec<Run> = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "start" => runs.push(Run {
                term: f[1].parse().unwrap(),
                pid: f[2].parse().unwrap(),
                start: f[3].parse().unwrap(),
                others: f[4].parse().unwrap(),
                stop: None,
            }),
            "stop" => {
                let pid: i32 = f[2].parse().unwrap();
                let r = runs.iter_mut().rev().find(|r| r.pid == pid).unwrap();
                r.stop = Some(f[3].parse().unwrap());
            }
            other => panic!("bad line {other:?}"),
        }
    }
    runs
}

#[test]
fn twenty_leader_kills_never_run_two_children_at_once() {
    let d = tempdir();
    let script = child_script(d.path());
    let log = d.path().join("children.log");
    let extra = fast_sidecar(&script, &log);
    let mut ps: Vec<Participant> = (0..3)
        .map(|i| Participant::spawn(d.path(), &format!("p{i}"), &extra))
        .collect();
    let mut last_term = 0;
    // pid -> when the test saw it gone (for children killed with their crown).
    let mut gone_at: HashMap<i32, u128> = HashMap::new();
    let began = Instant::now();
    let mut takeovers = vec![];
    for cycle in 0..20 {
        let t0 = Instant::now();
        let (idx, term) = eventually("a new leader", T, || {
            let st = status(d.path());
            let l = &st["leader"];
            let term = l["term"].as_u64()?;
            if term <= last_term {
                return None;
            }
            let id = l["id"].as_str()?;
            Some((ps.iter().position(|p| p.id == id)?, term))
        });
        let pid = child_pid(&ps[idx], term);
        logged_start(&log, pid);
        if cycle > 0 {
            takeovers.push(t0.elapsed());
        }
        last_term = term;
        // Every fourth cycle a graceful stop (SIGTERM: child stopped, then lease released),
        // otherwise kill -9 (the child dies by its parent-death signal).
        let graceful = cycle % 4 == 3;
        let mut p = ps.remove(idx);
        if graceful {
            p.signal(Signal::SIGTERM);
            assert_eq!(p.wait_exit(T), Some(0));
        } else {
            p.signal(Signal::SIGKILL);
        }
        let killed_at = Instant::now();
        eventually("the child gone", Duration::from_secs(1), || {
            gone(pid).then_some(())
        });
        gone_at.insert(pid, now_ns());
        assert!(killed_at.elapsed() < Duration::from_secs(1));
        drop(p);
        ps.push(Participant::spawn(
            d.path(),
            &format!("p{}", cycle + 3),
            &extra,
        ));
    }
    drop(ps);
    let runs = parse_log(&log);
    assert!(runs.len() >= 20, "{runs:?}");
    for w in runs.windows(2) {
        assert!(w[0].term < w[1].term, "terms must increase: {runs:?}");
        let end = w[0].stop.or(gone_at.get(&w[0].pid).copied());
        if let Some(end) = end {
            assert!(
                end <= w[1].start,
                "child {} (term {}) still alive when {} (term {}) started: {runs:?}",
                w[0].pid,
                w[0].term,
                w[1].pid,
                w[1].term
            );
        }
    }
    for r in &runs {
        assert_eq!(r.others, 0, "another child was alive when {r:?} started");
    }
    let graceful: Vec<&Run> = runs.iter().filter(|r| r.stop.is_some()).collect();
    assert!(graceful.len() >= 4, "graceful stops logged: {runs:?}");
    takeovers.sort();
    eprintln!(
        "20 cycles in {:?}; takeover median {:?}, max {:?}",
        began.elapsed(),
        takeovers[takeovers.len() / 2],
        takeovers.last().unwrap()
    );
}

#[test]
fn sigkill_of_crown_takes_its_child_within_a_second() {
    let d = tempdir();
    let p = Participant::spawn(
        d.path(),
        "a",
        &s(&["--", "sh", "-c", "sleep 1000 & exec sleep 1000"]),
    );
    let pid = child_pid(&p, 1);
    p.signal(Signal::SIGKILL);
    let t = Instant::now();
    eventually("the child gone", Duration::from_secs(1), || {
        gone(pid).then_some(())
    });
    eprintln!("child gone {:?} after kill -9 of crown", t.elapsed());
}

#[test]
fn child_exit_releases_and_exits_with_its_code() {
    let d = tempdir();
    let mut p = Participant::spawn(d.path(), "a", &s(&["--", "sh", "-c", "exit 7"]));
    assert_eq!(p.wait_exit(T), Some(7));
    let st = status(d.path());
    assert!(st["leader"].is_null(), "lease released: {st}");
}

#[test]
fn resign_stops_the_child_before_releasing() {
    let d = tempdir();
    let script = child_script(d.path());
    let log = d.path().join("children.log");
    let mut p = Participant::spawn(d.path(), "a", &fast_sidecar(&script, &log));
    let pid = child_pid(&p, 1);
    logged_start(&log, pid);
    p.signal(Signal::SIGUSR1);
    p.wait_for("child stopped", T, |l| l.event() == "child_stopped");
    let pid2 = child_pid(&p, 2);
    assert_ne!(pid, pid2);
    logged_start(&log, pid2);
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_exit(T), Some(0));
    // The stop is logged before the lease was released (the hook ran in between).
    let lines = p.lines();
    let pos = |pred: &dyn Fn(&Line) -> bool| lines.iter().position(pred).unwrap();
    let stopped = pos(&|l: &Line| l.event() == "child_stopped" && l.term() == Some(1));
    let restarted = pos(&|l: &Line| l.event() == "became_leader" && l.term() == Some(2));
    assert!(stopped < restarted);
    let runs = parse_log(&log);
    assert_eq!(runs.len(), 2);
    assert!(runs[0].stop.unwrap() <= runs[1].start);
    assert!(runs[1].stop.is_some());
    let h = history(d.path());
    assert_eq!(h.len(), 2);
}

#[test]
fn grace_must_fit_between_renew_deadline_and_lease_duration() {
    let d = tempdir();
    let (code, _, err) = crown(&[
        "run",
        "--dir",
        d.path().to_str().unwrap(),
        "--lease-duration",
        "5s",
        "--renew-deadline",
        "3s",
        "--grace",
        "3s",
        "--",
        "true",
    ]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("must be less than lease duration − renew deadline"),
        "{err}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn metric(text: &str, name: &str) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
    match s.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
        prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

/// Scrapes `base`/metrics until `ok` holds (at most [`T`]).
async fn metrics_when(base: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + T;
    loop {
        let (code, text) = get(&format!("{base}/metrics")).await;
        assert_eq!(code, 200);
        if ok(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never satisfied:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/metrics` parses as Prometheus text; it has the standard names (build info, process
/// metrics, client-go's leader gauge) and crown's, each election metric labelled `name` only.
fn assert_standard_metrics(text: &str, election: &str) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for want in [
        "crown_build_info",
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
        "leader_election_master_status",
        "crown_term",
        "crown_transitions_total",
        "crown_renew_latency_seconds",
        "crown_renew_failures_total",
        "crown_last_renewal_timestamp_seconds",
        "crown_last_failover_gap_seconds",
        "crown_webhook_deliveries_total",
        "crown_webhook_failures_total",
        "crown_webhook_dropped_total",
    ] {
        assert!(names.contains(want), "{want} missing:\n{text}");
    }
    for s in &scrape.samples {
        let labels: Vec<&str> = s
            .labels
            .keys()
            .map(|k| k.as_str())
            .filter(|k| *k != "le")
            .collect();
        if s.metric.starts_with("process_") {
            assert!(labels.is_empty(), "{}: {labels:?}", s.metric);
        } else if s.metric == "crown_build_info" {
            assert_eq!(s.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
        } else {
            assert_eq!(labels, ["name"], "{}", s.metric);
            assert_eq!(s.labels.get("name"), Some(election), "{}", s.metric);
        }
    }
    let start = metric(text, "process_start_time_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start > now - 600.0 && start <= now + 1.0,
        "{start} vs {now}"
    );
    assert!(metric(text, "process_resident_memory_bytes") > 1e6);
    assert!(metric(text, "process_open_fds") >= 3.0);
}

/// A webhook receiver that refuses connections: every attempt fails, the notice is dropped
/// after its attempts, and the counters say so; a leader's renewals set the last-renewal time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_webhook_failures_and_drops() {
    let d = tempdir();
    let port = free_port();
    let refused = format!("http://127.0.0.1:{}/hook", free_port());
    let mut args = timings_fast();
    args.extend(s(&[
        "--http",
        &format!("127.0.0.1:{port}"),
        "--notify-url",
        &refused,
    ]));
    let a = Participant::spawn(d.path(), "a", &args);
    let a = tokio::task::spawn_blocking(move || {
        a.wait_for("a leads", T, |l| l.event() == "became_leader");
        a.wait_for("the notice dropped", T, |l| l.event() == "notify_dropped");
        a
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let text = metrics_when(&base, |t| {
        metric(t, "crown_last_renewal_timestamp_seconds") > 0.0
    })
    .await;
    assert_standard_metrics(&text, "crown");
    assert_eq!(metric(&text, "leader_election_master_status"), 1.0);
    assert_eq!(metric(&text, "crown_webhook_dropped_total"), 1.0);
    assert_eq!(metric(&text, "crown_webhook_failures_total"), 5.0);
    assert_eq!(metric(&text, "crown_webhook_deliveries_total"), 0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = metric(&text, "crown_last_renewal_timestamp_seconds");
    assert!(last <= now && last > now - 30.0, "{last} vs {now}");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_and_webhook_follow_every_transition() {
    use axum::{Json, Router, extract::State, routing::post};
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<serde_json::Value>>>;
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<Seen>, Json(v): Json<serde_json::Value>| async move {
                    seen.lock().unwrap().push(v);
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let d = tempdir();
    let (pa, pb) = (free_port(), free_port());
    let args = |port: u16| {
        let mut v = timings_fast();
        v.extend(s(&[
            "--http",
            &format!("127.0.0.1:{port}"),
            "--notify-url",
            &hook,
        ]));
        v
    };
    let a = Participant::spawn(d.path(), "a", &args(pa));
    let dir = d.path().to_path_buf();
    let a = tokio::task::spawn_blocking(move || {
        a.wait_for("a leads", T, |l| l.event() == "became_leader");
        a
    })
    .await
    .unwrap();
    let b = Participant::spawn(&dir, "b", &args(pb));
    let b = tokio::task::spawn_blocking(move || {
        b.wait_for("b follows", T, |l| l.event() == "follower");
        b
    })
    .await
    .unwrap();

    let ua = format!("http://127.0.0.1:{pa}");
    let ub = format!("http://127.0.0.1:{pb}");
    let (code, body) = get(&format!("{ua}/leader")).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "a");
    assert_eq!(v["term"], 1);
    assert_eq!(v["self"], true);
    assert!(
        v["since"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    let (_, body) = get(&format!("{ub}/leader")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["self"].as_bool()),
        (Some("a"), Some(false))
    );
    assert_eq!(get(&format!("{ua}/readyz")).await.0, 200);
    assert_eq!(get(&format!("{ub}/readyz")).await.0, 503);
    assert_eq!(get(&format!("{ua}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{ub}/healthz")).await.0, 200);

    // Let a renew a few times, then read its metrics.
    let a = tokio::task::spawn_blocking(move || {
        eventually("two renewals", T, || {
            let n = a
                .lines()
                .iter()
                .filter(|l| l.event() == "leader_heartbeat")
                .count();
            (n >= 2).then_some(())
        });
        a
    })
    .await
    .unwrap();
    let (code, text) = get(&format!("{ua}/metrics")).await;
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "leader_election_master_status"), 1.0);
    assert_eq!(metric(&text, "crown_term"), 1.0);
    assert_eq!(metric(&text, "crown_transitions_total"), 1.0);
    assert_eq!(metric(&text, "crown_renew_failures_total"), 0.0);
    assert!(text.contains("leader_election_master_status{name=\"crown\"} 1"));
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let h = scrape
        .samples
        .iter()
        .find(|s| s.metric == "crown_renew_latency_seconds")
        .expect("histogram");
    match &h.value {
        prometheus_parse::Value::Histogram(b) => {
            assert!(b.last().unwrap().count >= 2.0, "{b:?}")
        }
        other => panic!("not a histogram: {other:?}"),
    }
    let (_, text) = get(&format!("{ub}/metrics")).await;
    assert_eq!(metric(&text, "leader_election_master_status"), 0.0);
    // a's grant was posted to the webhook and counted as delivered (the counter moves once
    // the receiver's answer is in: wait for it).
    let text = metrics_when(&ua, |t| metric(t, "crown_webhook_deliveries_total") >= 1.0).await;
    assert_standard_metrics(&text, "crown");
    assert_eq!(metric(&text, "crown_webhook_deliveries_total"), 1.0);
    assert_eq!(metric(&text, "crown_webhook_failures_total"), 0.0);
    assert_eq!(metric(&text, "crown_webhook_dropped_total"), 0.0);

    // a resigns: b takes over; then b is stopped with SIGTERM.
    a.signal(Signal::SIGUSR1);
    let mut b = tokio::task::spawn_blocking(move || {
        b.wait_for("b leads", T, |l| l.event() == "became_leader");
        b
    })
    .await
    .unwrap();
    assert_eq!(get(&format!("{ub}/readyz")).await.0, 200);
    assert_eq!(get(&format!("{ua}/readyz")).await.0, 503);
    let (_, text) = get(&format!("{ub}/metrics")).await;
    assert_eq!(metric(&text, "crown_term"), 2.0);
    b.signal(Signal::SIGTERM);
    let code = tokio::task::spawn_blocking(move || b.wait_exit(T))
        .await
        .unwrap();
    assert_eq!(code, Some(0));

    let want = |id: &str| -> Vec<(bool, u64)> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|v| v["id"] == id)
            .map(|v| (v["leader"].as_bool().unwrap(), v["term"].as_u64().unwrap()))
            .collect()
    };
    let deadline = Instant::now() + T;
    while want("b").len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(want("a"), vec![(true, 1), (false, 1)]);
    assert_eq!(want("b"), vec![(true, 2), (false, 2)]);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|v| v["election"] == "crown")
    );
    drop(a);
}

#[test]
fn on_loss_exit_stops_the_child_and_exits_6_after_a_pause() {
    let d = tempdir();
    let script = child_script(d.path());
    let log = d.path().join("children.log");
    let mut extra = s(&["--on-loss", "exit"]);
    extra.extend(fast_sidecar(&script, &log));
    let mut a = Participant::spawn(d.path(), "a", &extra);
    let pid = child_pid(&a, 1);
    logged_start(&log, pid);
    let b = Participant::spawn(d.path(), "b", &fast_sidecar(&script, &log));
    b.wait_for("b follows", T, |l| l.event() == "follower");
    // Paused past its renew deadline, a steps down on waking without writing.
    a.signal(Signal::SIGSTOP);
    b.wait_for("b leads", T, |l| l.event() == "became_leader");
    a.signal(Signal::SIGCONT);
    assert_eq!(a.wait_exit(T), Some(6));
    a.wait_for("stopped leading", T, |l| {
        l.event() == "stopped_leading" && l.json["reason"] == "renew deadline passed"
    });
}

#[test]
fn on_child_exit_resign_with_a_child_that_exits_at_once_backs_off() {
    let d = tempdir();
    let mut extra = timings_fast();
    extra.extend(s(&["--on-child-exit", "resign", "--", "true"]));
    let p = Participant::spawn(d.path(), "a", &extra);
    let first = p
        .wait_for("first grant", T, |l| l.event() == "became_leader")
        .at;
    // Observe a 10 s window: without a backoff a grant follows every hold-off (500 ms).
    while first.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = p.lines();
    let grants = lines
        .iter()
        .filter(|l| l.event() == "became_leader" && l.at <= first + Duration::from_secs(10))
        .count();
    eprintln!("{grants} grants in 10 s");
    assert!(
        grants <= 6,
        "{grants} grants in 10 s with a child that exits at once"
    );
    // The backoff is announced, doubling.
    let backoffs: Vec<u64> = lines
        .iter()
        .filter(|l| l.event() == "resign_backoff")
        .map(|l| l.json["backoff_ms"].as_u64().unwrap())
        .collect();
    assert!(backoffs.len() >= 2, "{backoffs:?}");
    assert!(backoffs.windows(2).all(|w| w[1] > w[0]), "{backoffs:?}");
}
