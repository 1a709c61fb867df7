//! End to end in a real terminal: `crown demo` runs inside tmux (a private server socket);
//! the test reads the screen with `capture-pane -p`, types keys with `send-keys`, and checks
//! the dashboard, the participants' logs and the processes. Every wait polls a predicate
//! with a generous timeout; there are no fixed sleeps.
//!
//! The story: a leader shows; `k` + `y` kill it and the history shows the next term with its
//! failover gap; `p` pauses the new leader past the lease, so a third one takes over in a
//! higher term; `p` resumes the paused one, which logs "lost leadership: renew deadline
//! passed" and never renews its old term again; `q` leaves no process behind.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/kubelet.rs"]
mod kubelet;

use common::running;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_crown");
const WAIT: Duration = Duration::from_secs(60);
/// Tests run in parallel: one tmux server each.
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The kill/pause/resume story measures a real failover on screen: it does not share the two
/// cores with the kube case's control-plane start-up (seen once to starve it past `WAIT`).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

struct Tmux {
    socket: String,
    socket_path: Option<PathBuf>,
}

impl Tmux {
    fn start(cmd: &str, width: u16, height: u16) -> Tmux {
        match Command::new("tmux").arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => panic!("install tmux: apt-get install -y tmux"),
        }
        let mut t = Tmux {
            socket: format!(
                "crown-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            socket_path: None,
        };
        let (w, h) = (width.to_string(), height.to_string());
        let out = t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "crown",
            "-x",
            &w,
            "-y",
            &h,
            cmd,
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = t.run(&["display-message", "-p", "#{socket_path}"]);
        let path = String::from_utf8_lossy(&path.stdout).trim().to_string();
        t.socket_path = (!path.is_empty()).then(|| PathBuf::from(path));
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "crown"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn send(&self, key: &str) {
        let out = self.run(&["send-keys", "-t", "crown", key]);
        assert!(out.status.success(), "send-keys {key} failed");
    }

    /// Polls the screen until `pred` returns something; panics with the last screen.
    fn wait_for<T>(&self, what: &str, pred: impl Fn(&str) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if let Some(v) = pred(&s) {
                return v;
            }
            if start.elapsed() > WAIT {
                panic!("timed out after {WAIT:?} waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Polls `pred` until it holds.
fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The leader in the header: `👑 <id>   term <n>`.
fn header_leader(screen: &str) -> Option<(String, u64)> {
    let line = screen.lines().take(4).find(|l| l.contains('👑'))?;
    let mut it = line.split('👑').nth(1)?.split_whitespace();
    let id = it.next()?.to_string();
    (it.next()? == "term").then_some(())?;
    let term = it.next()?.parse().ok()?;
    Some((id, term))
}

/// The history row of `term`: its cells after the box border.
fn history_row(screen: &str, term: u64) -> Option<Vec<String>> {
    let mut in_history = false;
    for line in screen.lines() {
        if line.contains("leader history") {
            in_history = true;
            continue;
        }
        if in_history {
            if line.starts_with('└') {
                return None;
            }
            let cells: Vec<String> = line
                .trim_start_matches('│')
                .split('│')
                .next()?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if cells.first().map(String::as_str) == Some(term.to_string().as_str()) {
                return Some(cells);
            }
        }
    }
    None
}

fn lease(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("crown.lease")).unwrap()).unwrap()
}

fn member_pids(dir: &Path) -> Vec<(String, u32)> {
    let mut v = vec![];
    for e in std::fs::read_dir(dir.join("crown.members")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json")
            && let Ok(s) = std::fs::read_to_string(&p)
            && let Ok(j) = serde_json::from_str::<Value>(&s)
        {
            v.push((
                j["id"].as_str().unwrap().to_string(),
                j["pid"].as_u64().unwrap() as u32,
            ));
        }
    }
    v
}

fn log_of(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{id}.log"))).unwrap_or_default()
}

fn line_time(line: &str) -> jiff::Timestamp {
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn dashboard_kill_pause_resume_quit() {
    let _heavy = heavy();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("election");
    let exit_file = tmp.path().join("demo.exit");
    let cmd = format!(
        "RUST_LOG=crown=debug '{BIN}' demo -p 3 --dir '{}' --lease-duration 2s --renew-deadline 1500ms --retry-period 500ms; echo $? > '{}'",
        dir.display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&cmd, 100, 30);

    // A leader shows, with three participants.
    let (first, t1) = tmux.wait_for("a leader 👑 and three participants", |s| {
        let l = header_leader(s)?;
        s.contains("participants (3)").then_some(l)
    });
    let pid1 = lease(&dir)["pid"].as_u64().unwrap() as u32;
    assert_eq!(lease(&dir)["holder"], first.as_str());

    // k, confirm with y: the history shows the next term with its failover gap.
    tmux.send("k");
    let prompt = format!("kill {first} (pid {pid1})? y/n");
    tmux.wait_for(&prompt, |s| s.contains(&prompt).then_some(()));
    tmux.send("y");
    let (second, t2) = tmux.wait_for("a new leader after the kill, with its gap", |s| {
        let (id, t) = header_leader(s)?;
        let row = history_row(s, t)?;
        (t > t1 && id != first && row.contains(&"ms".to_string())).then_some((id, t))
    });
    let screen = tmux.screen();
    let row1 = history_row(&screen, t1).expect("old grant in the history");
    assert!(
        row1.join(" ").contains("holder died"),
        "term {t1} should show how it ended: {row1:?}\n{screen}"
    );
    assert!(
        !running(pid1),
        "killed leader {first} (pid {pid1}) still runs"
    );

    // p pauses the new leader past the lease: another takes over in a higher term.
    let pid2 = lease(&dir)["pid"].as_u64().unwrap() as u32;
    tmux.send("p");
    let paused = format!("paused {second} (pid {pid2})");
    tmux.wait_for(&paused, |s| s.contains(&paused).then_some(()));
    let (third, t3) = tmux.wait_for("a leader in a higher term while paused", |s| {
        let (id, t) = header_leader(s)?;
        (t > t2 && id != second).then_some((id, t))
    });
    assert_ne!(third, first);
    let screen = tmux.screen();
    let row2 = history_row(&screen, t2).expect("paused grant in the history");
    assert!(
        row2.join(" ").contains("expired"),
        "term {t2} should have expired: {row2:?}\n{screen}"
    );

    // p again resumes it: it steps down and never renews its old term.
    tmux.send("p");
    tmux.wait_for("the resume in the event log", |s| {
        s.contains(&format!("resumed {second} (pid {pid2})"))
            .then_some(())
    });
    let lost = format!("lost leadership: renew deadline passed (term {t2})");
    wait_until(&format!("{second}'s log to show `{lost}`"), || {
        log_of(&dir, &second).contains(&lost)
    });
    let log = log_of(&dir, &second);
    let lines: Vec<&str> = log.lines().collect();
    let lost_at = lines.iter().position(|l| l.contains(&lost)).unwrap();
    let heartbeat = format!("LEADER heartbeat (term {t2})");
    assert!(
        !lines[lost_at..].iter().any(|l| l.contains(&heartbeat)),
        "{second} renewed term {t2} after resuming:\n{log}"
    );
    // Its last renewal in term t2 came before the grant of the next term: it never acted in
    // its old term once another leader could exist.
    let history = std::fs::read_to_string(dir.join("crown.history.jsonl")).unwrap();
    let next_grant: jiff::Timestamp = history
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|g| g["term"].as_u64().unwrap() > t2)
        .map(|g| g["acquired_at"].as_str().unwrap().parse().unwrap())
        .expect("a grant after the paused term");
    let became = format!("BECAME LEADER (term {t2})");
    let last_act = lines[..lost_at]
        .iter()
        .rev()
        .find(|l| l.contains(&heartbeat) || l.contains(&became))
        .map(|l| line_time(l))
        .expect("it led before the pause");
    assert!(
        last_act < next_grant,
        "{second} acted in term {t2} at {last_act}, after term {t3} was granted at {next_grant}:\n{log}"
    );

    // q: the demo exits 0 and leaves no participant behind.
    let pids: Vec<(String, u32)> = member_pids(&dir);
    assert!(pids.len() >= 3, "member files: {pids:?}");
    tmux.send("q");
    // The shell around the demo records its exit code (tmux 3.3a does not always record a
    // dead pane's status).
    wait_until("the demo to exit", || exit_file.exists());
    let code = std::fs::read_to_string(&exit_file).unwrap();
    assert_eq!(
        code.trim(),
        "0",
        "demo exit status; screen:\n{}",
        tmux.screen()
    );
    for (id, pid) in &pids {
        wait_until(&format!("{id} (pid {pid}) to be gone"), || !running(*pid));
    }
    eprintln!(
        "tui_tmux: passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Issue 12 row 10: a hand-written lease names an unrelated `sleep 300` on this host. `k`
/// refuses (no heartbeat confirms that pid) and says why; `y` after it kills nothing.
#[test]
fn dashboard_never_kills_a_process_named_only_by_a_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("election");
    std::fs::create_dir(&dir).unwrap();
    let mut sleep = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = sleep.id();
    let now = jiff::Timestamp::now();
    let host = crown::participant::hostname();
    let rec = serde_json::json!({
        "holder": "ghost", "term": 7, "acquired_at": now, "renewed_at": now,
        "lease_duration_ms": 3_600_000, "pid": pid, "host": host, "revision": 1
    });
    std::fs::write(dir.join("crown.lease"), rec.to_string()).unwrap();
    let exit_file = tmp.path().join("tui.exit");
    let cmd = format!(
        "XDG_STATE_HOME='{}' '{BIN}' tui --dir '{}'; echo $? > '{}'",
        tmp.path().join("state").display(),
        dir.display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&cmd, 120, 30);
    tmux.wait_for("the hand-written leader", |s| {
        (header_leader(s)? == ("ghost".to_string(), 7)).then_some(())
    });
    tmux.send("k");
    tmux.wait_for("the refusal", |s| {
        s.contains("k: no heartbeat of ghost confirms its pid")
            .then_some(())
    });
    tmux.send("y");
    tmux.send("q");
    wait_until("the dashboard to exit", || exit_file.exists());
    let alive = running(pid);
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert!(
        alive,
        "the dashboard killed an unrelated process (pid {pid})"
    );
}

/// Issue 12 row 13: a FIFO named `crown.lease`: the dashboard still draws, shows the backend
/// problem, and `q` quits at once.
#[test]
fn dashboard_quits_while_a_backend_read_is_stuck() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("election");
    std::fs::create_dir(&dir).unwrap();
    nix::unistd::mkfifo(
        &dir.join("crown.lease"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let exit_file = tmp.path().join("tui.exit");
    let cmd = format!(
        "XDG_STATE_HOME='{}' '{BIN}' tui --dir '{}'; echo $? > '{}'",
        tmp.path().join("state").display(),
        dir.display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&cmd, 120, 30);
    // Either the backend refuses the FIFO or the read is reported stuck.
    tmux.wait_for("the backend problem on screen", |s| {
        s.contains("backend:").then_some(())
    });
    let t0 = Instant::now();
    tmux.send("q");
    wait_until("the dashboard to quit", || exit_file.exists());
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "q took {:?}",
        t0.elapsed()
    );
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
}

/// The holder and term of the walkthrough's Lease, by kubectl.
fn kube_lease(env: &common::kube::KubeEnv) -> Option<(String, u64)> {
    env.lease_holder("crown", "crown")
}

/// Issue 13 item 4: the dashboard at 80×24 on a running control plane (apiserver,
/// controller-manager, the test kubelet running the 3-replica Deployment), as the
/// `crown-dashboard` service account of k8s/kube/rbac.yaml: `k` + `y` deletes the leader's
/// Pod and the screen shows the next term; `r` hands over to another Pod.
#[test]
fn dashboard_deletes_the_leader_pod_and_asks_it_to_resign_on_kube() {
    let _heavy = heavy();
    let env = common::kube::KubeEnv::start();
    let _kubelet = kubelet::deploy_kube_variant(&env, BIN, 3);
    let sa = "system:serviceaccount:crown:crown-dashboard";
    // The dashboard's Role is what its keys need and nothing more.
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-n", "crown", "--as", sa]);
        env.kubectl_try(&a, None).status.success()
    };
    for yes in [
        &["delete", "pods"][..],
        &["get", "pods"],
        &["list", "pods"],
        &["get", "leases/crown"],
        &["patch", "leases/crown"],
        &["list", "events.events.k8s.io"],
    ] {
        assert!(can(yes), "the dashboard cannot {yes:?}");
    }
    for no in [
        &["patch", "pods"][..],
        &["create", "pods"],
        &["update", "leases/crown"],
        &["delete", "leases/crown"],
        &["patch", "leases/other-controller"],
        &["create", "leases"],
        &["list", "leases"],
        &["watch", "leases/crown"],
        &["create", "pods/eviction"],
        &["delete", "deployments.apps"],
        &["get", "secrets"],
    ] {
        assert!(
            !can(no),
            "the dashboard may {no:?}: more than its keys need"
        );
    }

    let (holder, term) = common::eventually("a holder", WAIT, || kube_lease(&env));
    let tmp = tempfile::tempdir().unwrap();
    let exit_file = tmp.path().join("tui.exit");
    let cmd = format!(
        "KUBECONFIG='{}' XDG_STATE_HOME='{}' '{BIN}' tui --backend kube -n crown; echo $? > '{}'",
        env.kubeconfig_as(sa).display(),
        tmp.path().join("state").display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&cmd, 80, 24);
    tmux.wait_for("the leader Pod in the header, k enabled", |s| {
        (header_leader(s)? == (holder.clone(), term) && s.contains("kill pod")).then_some(())
    });

    // k, y: the Pod goes, a follower Pod takes over in a higher term.
    tmux.send("k");
    let prompt = format!("delete Pod {holder} (term {term})? y/n");
    tmux.wait_for(&prompt, |s| s.contains(&prompt).then_some(()));
    tmux.send("y");
    let t0 = Instant::now();
    let (second, t2) = tmux.wait_for("a new leader after the Pod deletion", |s| {
        let (id, t) = header_leader(s)?;
        (t > term && id != holder).then_some((id, t))
    });
    let k_took = t0.elapsed();
    // The event line may have scrolled off the 4-line events pane by now (the old leader's
    // release, its leaving, the new leader and a new member follow it): read the dashboard's
    // log, which gets every event line.
    let log = tmp.path().join("state/crown/tui.log");
    common::eventually("the deletion in the dashboard's log", WAIT, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains(&format!("deleted Pod {holder}")))
            .map(|_| ())
    });
    common::eventually("the old leader Pod gone", WAIT, || {
        (!env
            .kubectl_try(&["-n", "crown", "get", "pod", &holder], None)
            .status
            .success())
        .then_some(())
    });
    assert_eq!(kube_lease(&env).map(|l| l.1 >= t2), Some(true));

    // r: the leader resigns its term through the Lease; another Pod leads.
    tmux.send("r");
    let t0 = Instant::now();
    let (third, t3) = tmux.wait_for("a new leader after the resign request", |s| {
        let (id, t) = header_leader(s)?;
        (t > t2 && id != second).then_some((id, t))
    });
    assert!(
        env.kubectl_try(&["-n", "crown", "get", "pod", &second], None)
            .status
            .success(),
        "r must not delete the Pod"
    );
    let r_took = t0.elapsed();
    eprintln!(
        "kube dashboard: {holder} (term {term}) -k-> {second} ({t2}) on screen after {k_took:?} -r-> {third} ({t3}) after {r_took:?}\n{}",
        tmux.screen()
    );

    tmux.send("q");
    wait_until("the dashboard to exit", || exit_file.exists());
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
}

/// A `crown run --backend etcd` participant in a UTS namespace of its own, named
/// `crown-remote-<id>`: to a dashboard on this host its heartbeat says "another host", so the
/// dashboard must reach it through etcd, never by a signal.
fn remote_etcd_participant(eps: &str, id: &str) -> common::Participant {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--uts",
        "sh",
        "-c",
        &format!("hostname crown-remote-{id} && exec \"$0\" \"$@\""),
        BIN,
    ]);
    let mut args: Vec<String> = ["--backend", "etcd", "--endpoints", eps]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(common::timings_fast());
    common::Participant::spawn_via(cmd, id, &args, "info,crown=debug")
}

/// `crown history -o json` on etcd: the grant of `term`.
fn etcd_grant(eps: &str, term: u64) -> Option<Value> {
    let (code, out, err) = common::crown(&[
        "history",
        "-o",
        "json",
        "--backend",
        "etcd",
        "--endpoints",
        eps,
    ]);
    assert_eq!(code, 0, "crown history failed: {err}");
    let h: Value = serde_json::from_str(&out).unwrap();
    h.as_array()?
        .iter()
        .find(|g| g["term"].as_u64() == Some(term))
        .cloned()
}

/// Polls `crown history` on etcd until `done()` holds and `term` has an end, which must be
/// `how` whenever it is read: a follower may record the next grant (with how it saw `term`
/// end) before the winner writes its own, and `crown history` shows whichever is there.
fn etcd_history_ends(eps: &str, term: u64, how: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    loop {
        let grant = etcd_grant(eps, term);
        let ended = grant.as_ref().map(|g| &g["ended"]);
        if let Some(e) = ended.filter(|e| !e.is_null()) {
            assert_eq!(e, how, "term {term} recorded as ended {e}: {grant:?}");
            if done() {
                return;
            }
        }
        assert!(
            start.elapsed() < WAIT,
            "term {term} not recorded as {how} within {WAIT:?}: {grant:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The etcd counterpart of the kube case: three participants on "other hosts" (their own UTS
/// namespaces) and the dashboard on this one, in tmux. `r` writes the resign key: the leader
/// releases its term and another leads in a higher one. `k` + `y` revokes the new leader's
/// session: its lease is gone from etcd, it loses leadership, and another leads in a higher
/// term. No participant is ever signalled: all of them still run at the end.
#[test]
fn dashboard_revokes_the_leader_session_and_asks_it_to_resign_on_etcd() {
    let _heavy = heavy();
    let e = etcd::Etcd::start(1);
    let eps = e.endpoints();
    let parts: Vec<common::Participant> = ["a", "b", "c"]
        .iter()
        .map(|id| remote_etcd_participant(&eps, id))
        .collect();
    let by_id = |id: &str| parts.iter().find(|p| p.id == id).expect("a participant");
    // Whether some participant logged leading in a term above `t`.
    let led_after = |t: u64| {
        parts.iter().any(|p| {
            p.lines()
                .iter()
                .any(|l| l.event() == "became_leader" && l.term() > Some(t))
        })
    };
    let tmp = tempfile::tempdir().unwrap();
    let exit_file = tmp.path().join("tui.exit");
    let cmd = format!(
        "XDG_STATE_HOME='{}' '{BIN}' tui --backend etcd --endpoints '{eps}'; echo $? > '{}'",
        tmp.path().join("state").display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&cmd, 120, 30);
    let (first, t1) = tmux.wait_for("a leader on another host and three participants", |s| {
        let l = header_leader(s)?;
        s.contains("participants (3)").then_some(l)
    });
    assert!(
        tmux.screen().contains("crown-remote-"),
        "the participants' hosts are not shown:\n{}",
        tmux.screen()
    );

    // r: the dashboard cannot signal the leader, so it writes the resign key; the leader
    // releases term t1 and another participant leads in a higher term.
    tmux.send("r");
    let r_at = Instant::now();
    let asked = format!("asked {first} to resign term {t1}");
    tmux.wait_for(&asked, |s| s.contains(&asked).then_some(()));
    etcd_history_ends(&eps, t1, "released", || led_after(t1));
    let (second, t2) = tmux.wait_for("a new leader after the resign request", |s| {
        let (id, t) = header_leader(s)?;
        (t > t1 && id != first).then_some((id, t))
    });
    let r_took = r_at.elapsed();
    let stop = by_id(&first).wait_for("the resign in the leader's log", WAIT, |l| {
        l.event() == "stopped_leading" && l.term() == Some(t1)
    });
    assert_eq!(stop.json["reason"], "released", "{:?}", stop.json);

    // k, y: the dashboard revokes the new leader's session.
    let lease = common::eventually("the leader's session lease", WAIT, || e.leader_lease());
    let alive = |lease: &str| {
        !e.etcdctl(&["lease", "timetolive", lease])
            .contains("already expired")
    };
    assert!(alive(&lease), "lease {lease} of {second} is not alive");
    tmux.send("k");
    let prompt = format!("revoke the session of {second} (term {t2})? y/n");
    tmux.wait_for(&prompt, |s| s.contains(&prompt).then_some(()));
    tmux.send("y");
    let k_at = Instant::now();
    let revoked = format!("revoked lease {lease} of {second} (leader in term {t2})");
    tmux.wait_for(&revoked, |s| s.contains(&revoked).then_some(()));
    assert!(!alive(&lease), "lease {lease} of {second} still in etcd");
    // From the revoke until (and after) a successor leads, the history says `revoked`.
    etcd_history_ends(&eps, t2, "revoked", || led_after(t2));
    let (third, t3) = tmux.wait_for("a new leader after the revoke", |s| {
        let (id, t) = header_leader(s)?;
        (t > t2 && id != second).then_some((id, t))
    });
    let k_took = k_at.elapsed();
    let lost = by_id(&second).wait_for("the revoke in the leader's log", WAIT, |l| {
        l.event() == "stopped_leading" && l.term() == Some(t2)
    });
    assert!(
        lost.message().contains("lost leadership"),
        "{:?}",
        lost.json
    );
    by_id(&third).wait_for("the new leader's log", WAIT, |l| {
        l.event() == "became_leader" && l.term() == Some(t3)
    });
    etcd_history_ends(&eps, t2, "revoked", || true);
    for p in &parts {
        assert!(
            running(p.pid() as u32),
            "{} (pid {}) was killed: the dashboard may not signal other hosts",
            p.id,
            p.pid()
        );
    }
    eprintln!(
        "etcd dashboard: {first} ({t1}) -r-> {second} ({t2}) on screen after {r_took:?} -k-> {third} ({t3}) after {k_took:?}\n{}",
        tmux.screen()
    );

    tmux.send("q");
    wait_until("the dashboard to exit", || exit_file.exists());
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0");
}
