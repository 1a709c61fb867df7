//! `crown run --once` on the three real backends (a file directory, a 3-member etcd cluster, a
//! kube-apiserver): three participants, CMD appends `start <term> <id>` to a shared log, blocks
//! until the test creates a file, appends `ok <term> <id>` and exits 0.
//!
//! Per backend: kill -9 of the leader mid-run → the next leader runs CMD again in a higher term;
//! once it exits 0 every participant exits 0 and exactly one `ok` line exists; `crown status`
//! shows the duty done in that term; a late joiner exits 0 without running CMD; `crown once
//! reset` → three new participants run it exactly once more, in a higher term; a hostile record
//! (garbage planted in the backend) is refused with exit 5 and shown as unreadable by
//! `crown status`, and `crown once reset` clears it.

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use common::kube::KubeEnv;
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const ELECTION: &str = "mig";

/// CMD: `$0` is the log; `$1` (or `$1.<term>`, for its term only) the file that lets it finish.
const SCRIPT: &str = r#"echo "start $CROWN_TERM $CROWN_ID" >> "$0"; while [ ! -e "$1" ] && [ ! -e "$1.$CROWN_TERM" ]; do sleep 0.05; done; echo "ok $CROWN_TERM $CROWN_ID" >> "$0""#;

struct Setup {
    /// Backend flags (with `-e mig`).
    backend: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    go: PathBuf,
}

impl Setup {
    fn new(backend: &[&str], env: Vec<(String, String)>, scratch: &Path) -> Setup {
        let mut b: Vec<String> = backend.iter().map(|s| s.to_string()).collect();
        b.extend(["-e".to_string(), ELECTION.to_string()]);
        Setup {
            backend: b,
            env,
            log: scratch.join("duty.log"),
            go: scratch.join("go"),
        }
    }

    fn run_args(&self) -> Vec<String> {
        let mut a = self.backend.clone();
        a.extend(timings_fast());
        a.push("--once".into());
        a.extend(["--", "sh", "-c", SCRIPT].map(String::from));
        a.push(self.log.to_str().unwrap().into());
        a.push(self.go.to_str().unwrap().into());
        a
    }

    fn spawn(&self, id: &str) -> Participant {
        Participant::spawn_with(id, &self.run_args(), &self.env)
    }

    /// `crown run --once` to completion: (code, stderr).
    fn run_to_end(&self, id: &str) -> (i32, String) {
        let mut a = vec!["run", "--id", id];
        let args = self.run_args();
        a.extend(args.iter().map(String::as_str));
        let (code, _, err) = crown_env(&a, &self.env);
        (code, err)
    }

    fn crown(&self, sub: &[&str]) -> (i32, String, String) {
        let mut a = sub.to_vec();
        a.extend(self.backend.iter().map(String::as_str));
        crown_env(&a, &self.env)
    }

    fn duty(&self) -> Value {
        let (code, out, err) = self.crown(&["status", "-o", "json"]);
        assert_eq!(code, 0, "status: {err}");
        serde_json::from_str::<Value>(&out).unwrap()["duty"].clone()
    }

    /// The log's lines as (kind, term, id).
    fn log(&self) -> Vec<(String, u64, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Vec<&str> = l.split(' ').collect();
                assert_eq!(v.len(), 3, "log line {l:?}");
                (v[0].to_string(), v[1].parse().unwrap(), v[2].to_string())
            })
            .collect()
    }

    fn wait_log(&self, n: usize) -> Vec<(String, u64, String)> {
        eventually(&format!("{n} lines in the duty log"), T, || {
            let l = self.log();
            (l.len() >= n).then_some(l)
        })
    }
}

fn exits_0(p: &mut Participant) {
    let code = p.wait_exit(T);
    assert_eq!(
        code,
        Some(0),
        "[{}] log:\n{}",
        p.id,
        p.raw.lock().unwrap().join("\n")
    );
}

fn scenario(s: &Setup, plant_garbage: impl Fn()) {
    // Three participants; the leader starts CMD, which blocks.
    let mut ps: Vec<Participant> = ["p1", "p2", "p3"].iter().map(|id| s.spawn(id)).collect();
    let first = s.wait_log(1);
    let (_, t1, a) = first[0].clone();
    assert_eq!(first[0].0, "start");
    // kill -9 of that leader mid-run: the next leader runs CMD again, in a higher term.
    let ai = ps.iter().position(|p| p.id == a).unwrap();
    ps[ai].signal(Signal::SIGKILL);
    ps[ai].wait_exit(T);
    let second = s.wait_log(2);
    let (kind, t2, b) = second[1].clone();
    assert_eq!(kind, "start", "{second:?}");
    assert!(t2 > t1, "rerun in term {t2}, not above {t1}");
    assert_ne!(b, a);
    // Let it finish: every participant exits 0, and the success is recorded once.
    std::fs::write(&s.go, "").unwrap();
    for (i, p) in ps.iter_mut().enumerate() {
        if i != ai {
            exits_0(p);
        }
    }
    // The follower found the record while following: the leader held the lease until it had
    // (it is never granted a term only to find the duty done).
    for p in ps.iter().filter(|p| p.id != a && p.id != b) {
        let l = p.lines();
        assert!(l.iter().any(|x| x.event() == "duty_done"), "[{}]", p.id);
        assert!(
            !l.iter()
                .any(|x| x.event() == "became_leader" && x.term() > Some(t2)),
            "[{}] was granted the lease after the duty was done",
            p.id
        );
    }
    let log = s.log();
    assert_eq!(
        log,
        vec![
            ("start".to_string(), t1, a.clone()),
            ("start".to_string(), t2, b.clone()),
            ("ok".to_string(), t2, b.clone()),
        ]
    );
    let d = s.duty();
    assert_eq!(d["state"], "done", "{d}");
    assert_eq!(d["term"].as_u64(), Some(t2), "{d}");
    assert_eq!(d["holder"], b.as_str(), "{d}");
    assert_eq!(d["exit_code"], 0, "{d}");
    let (code, text, _) = s.crown(&["status"]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!("duty      done (term {t2}, by {b}")),
        "{text}"
    );

    // A late joiner exits 0 without running CMD.
    let mut late = s.spawn("p4");
    exits_0(&mut late);
    late.wait_for("the duty_done line", T, |l| l.event() == "duty_done");
    assert_eq!(s.log().len(), 3, "the late joiner ran CMD");

    // Reset: three new participants run it exactly once more, in a higher term.
    let (code, out, err) = s.crown(&["once", "reset"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("duty reset"), "{out}");
    assert!(out.contains(&format!("term {t2}")), "{out}");
    assert_eq!(s.duty(), Value::Null);
    let mut ps: Vec<Participant> = ["p5", "p6", "p7"].iter().map(|id| s.spawn(id)).collect();
    for p in ps.iter_mut() {
        exits_0(p);
    }
    let log = s.log();
    assert_eq!(log.len(), 5, "{log:?}");
    let (k3, t3, c) = log[3].clone();
    assert_eq!(k3, "start");
    assert!(t3 > t2, "{log:?}");
    assert_eq!(log[4], ("ok".to_string(), t3, c.clone()));
    assert_eq!(s.duty()["term"].as_u64(), Some(t3));

    // A record crown did not write is never "done": exit 5, one line; status shows it.
    plant_garbage();
    let (code, err) = s.run_to_end("p8");
    assert_eq!(code, 5, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unreadable duty record"), "{err}");
    assert_eq!(s.duty()["state"], "unreadable");
    assert_eq!(s.log().len(), 5, "CMD ran despite an unreadable record");
    let (code, out, err) = s.crown(&["once", "reset"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed an unreadable duty record"), "{out}");
    assert_eq!(s.duty(), Value::Null);

    stale_leader_records_nothing(s);
}

/// A leader paused (SIGSTOP) mid-run loses its term; its CMD exits 0 while it is paused. When
/// it resumes, that success is not recorded: only the run of the current term counts.
fn stale_leader_records_nothing(s: &Setup) {
    std::fs::remove_file(&s.go).unwrap();
    let n0 = s.log().len();
    let mut ps: Vec<Participant> = ["q1", "q2", "q3"].iter().map(|id| s.spawn(id)).collect();
    let (_, t1, a) = s.wait_log(n0 + 1)[n0].clone();
    let ai = ps.iter().position(|p| p.id == a).unwrap();
    ps[ai].signal(Signal::SIGSTOP);
    let (k, t2, b) = s.wait_log(n0 + 2)[n0 + 1].clone();
    assert_eq!(k, "start");
    assert!(t2 > t1 && b != a);
    // a's CMD (not paused: its own process group) finishes while a is paused.
    std::fs::write(format!("{}.{t1}", s.go.display()), "").unwrap();
    let ok1 = s.wait_log(n0 + 3)[n0 + 2].clone();
    assert_eq!(ok1, ("ok".to_string(), t1, a.clone()));
    ps[ai].signal(Signal::SIGCONT);
    ps[ai].wait_for("a follower again (or a record attempt)", T, |l| {
        (l.event() == "follower" && l.term() >= Some(t2)) || l.event().starts_with("duty_")
    });
    // If a's loop saw the exit (rather than stopping the child first), it tried and failed.
    if ps[ai]
        .lines()
        .iter()
        .any(|l| l.event() == "child_exited" && l.term() == Some(t1))
    {
        ps[ai].wait_for("duty_not_recorded", T, |l| {
            l.event() == "duty_not_recorded" && l.term() == Some(t1)
        });
    }
    assert_eq!(s.duty(), Value::Null, "a stale term recorded the duty");
    // The current leader's run counts.
    std::fs::write(format!("{}.{t2}", s.go.display()), "").unwrap();
    for p in ps.iter_mut() {
        exits_0(p);
    }
    let d = s.duty();
    assert_eq!(d["term"].as_u64(), Some(t2), "{d}");
    assert_eq!(d["holder"], b.as_str(), "{d}");
    let log = s.log();
    assert_eq!(log.len(), n0 + 4, "{log:?}");
    assert_eq!(log[n0 + 3], ("ok".to_string(), t2, b));
}

#[test]
fn file_backend_runs_the_duty_once() {
    let d = tempdir();
    let dir = path(&d).join("e");
    let scratch = tempdir();
    let s = Setup::new(&["--dir", dir.to_str().unwrap()], vec![], scratch.path());
    let record = dir.join(format!("{ELECTION}.duty.json"));
    scenario(&s, || {
        std::fs::write(&record, "{\"state\":\"done\"").unwrap()
    });

    // A record for a term above the lease's is refused too.
    let forged = r#"{"state":"done","term":999,"holder":"x","pid":1,"host":"h","finished_at":"2026-01-01T00:00:00Z","exit_code":0,"command_hash":"fnv1a64:0123456789abcdef"}"#;
    std::fs::write(&record, forged).unwrap();
    let (code, err) = s.run_to_end("p9");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("above the lease's term"), "{err}");
    // A symlink under the record's name is not followed (exit 4, like every file of the
    // directory).
    std::fs::remove_file(&record).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &record).unwrap();
    let (code, err) = s.run_to_end("p9");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let (code, _, err) = s.crown(&["once", "reset"]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::symlink_metadata(&record).is_err());
    assert!(std::fs::metadata("/etc/passwd").is_ok());
    // A record of another command is not taken as this one's: exit 3.
    std::fs::write(&s.go, "").unwrap();
    let mut a = vec!["run".to_string(), "--id".into(), "q".into()];
    a.extend(s.backend.clone());
    a.extend(["--once", "--", "true"].map(String::from));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(crown_env(&a, &[]).0, 0);
    let (code, err) = s.run_to_end("p9");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("another command"), "{err}");
}

#[test]
fn etcd_backend_runs_the_duty_once() {
    etcd::require_etcd();
    let cluster = etcd::Etcd::start(3);
    let scratch = tempdir();
    let eps = cluster.endpoints();
    let s = Setup::new(
        &["--backend", "etcd", "--endpoints", &eps],
        vec![],
        scratch.path(),
    );
    scenario(&s, || {
        cluster.etcdctl(&["put", &format!("{ELECTION}:duty"), "{\"state\":\"done\"}"]);
    });
}

#[test]
fn kube_backend_runs_the_duty_once() {
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    let scratch = tempdir();
    let s = Setup::new(
        &["--backend", "kube", "--namespace", "crown"],
        env.admin_env(),
        scratch.path(),
    );
    scenario(&s, || {
        env.kubectl(&[
            "-n",
            "crown",
            "annotate",
            "--overwrite",
            "lease",
            ELECTION,
            "crown.io/duty=done",
        ]);
    });
}

/// The fence itself, on the file backend's library API: a leader whose term is over (released,
/// then granted to another) records nothing, and the holder records only for its own term.
#[tokio::test]
async fn file_backend_records_success_only_in_the_current_term() {
    use crown::backend::file::FileBackend;
    use crown::backend::{AcquireRequest, Duties, Lock, Outcome};
    use crown::election::Identity;
    use crown::election::lease::Observer;
    let d = tempdir();
    let me = |id: &str| Identity {
        id: id.into(),
        pid: std::process::id(),
        host: "h".into(),
    };
    let a = FileBackend::open(d.path(), ELECTION, me("a")).unwrap();
    let b = FileBackend::open(d.path(), ELECTION, me("b")).unwrap();
    let req = || AcquireRequest {
        held: None,
        hold_off: false,
        lease_duration: Duration::from_secs(2),
        retry_period: Duration::from_millis(500),
        renew_deadline: Duration::from_millis(1500),
        now: tokio::time::Instant::now(),
        deadline: None,
    };
    let acquire = |x: FileBackend| async move {
        match x
            .try_acquire_or_renew(req(), &mut Observer::default())
            .await
            .unwrap()
        {
            Outcome::Acquired { term, .. } => term,
            o => panic!("not acquired: {o:?}"),
        }
    };
    let duty = crown::once::Duty::new(&["./migrate.sh".to_string()]);
    let t1 = acquire(a.clone()).await;
    a.release(t1).await.unwrap();
    let t2 = acquire(b.clone()).await;
    assert!(t2 > t1);
    // a's run in t1 finished after t1 ended: not recorded.
    assert!(!a.record_duty(&duty.record(&me("a"), t1)).await.unwrap());
    assert!(!a.record_duty(&duty.record(&me("a"), t2)).await.unwrap());
    assert!(!b.record_duty(&duty.record(&me("b"), t1)).await.unwrap());
    assert_eq!(b.duty().await.unwrap(), None);
    assert!(b.record_duty(&duty.record(&me("b"), t2)).await.unwrap());
    let r = a.duty().await.unwrap().expect("recorded");
    assert_eq!((r.term, r.holder.as_str()), (t2, "b"));
    // Released: b's term is over too.
    b.release(t2).await.unwrap();
    assert!(!b.record_duty(&duty.record(&me("b"), t2)).await.unwrap());
}

fn ident(id: &str) -> crown::election::Identity {
    crown::election::Identity {
        id: id.into(),
        pid: std::process::id(),
        host: "h".into(),
    }
}

/// Campaigns with `b` until it is granted the lease (woken by its watch, or every 100 ms).
async fn acquire_on(b: &dyn crown::backend::Backend) -> crown::election::Term {
    use crown::backend::{AcquireRequest, Outcome};
    let mut obs = crown::election::lease::Observer::default();
    let until = tokio::time::Instant::now() + T;
    loop {
        let req = AcquireRequest {
            held: None,
            hold_off: false,
            lease_duration: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
            renew_deadline: Duration::from_millis(1500),
            now: tokio::time::Instant::now(),
            deadline: None,
        };
        if let Outcome::Acquired { term, .. } = b.try_acquire_or_renew(req, &mut obs).await.unwrap()
        {
            return term;
        }
        assert!(tokio::time::Instant::now() < until, "never granted");
        tokio::select! {
            _ = b.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// etcd's fence is the transaction's compare, not the leader's own belief: a leader whose key
/// was deleted (it has not noticed yet) records nothing.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_backend_records_success_only_while_the_leader_key_exists() {
    use crown::backend::Duties;
    use crown::backend::etcd::{EtcdBackend, EtcdOptions};
    etcd::require_etcd();
    let cluster = etcd::Etcd::start(1);
    let opts = EtcdOptions {
        endpoints: vec![cluster.endpoints()],
        prefix: String::new(),
        election: ELECTION.into(),
        cacert: None,
        cert: None,
        key: None,
        user: None,
        wait: Duration::from_secs(10),
        history_limit: 100,
    };
    let duty = crown::once::Duty::new(&["./migrate.sh".to_string()]);
    let a = EtcdBackend::connect(opts.clone(), Some(ident("a")))
        .await
        .unwrap();
    let t1 = acquire_on(&a).await;
    assert!(
        !a.record_duty(&duty.record(&ident("a"), crown::election::Term(t1.0 + 1)))
            .await
            .unwrap()
    );
    cluster.etcdctl(&["del", "--prefix", &format!("{ELECTION}/")]);
    assert!(!a.record_duty(&duty.record(&ident("a"), t1)).await.unwrap());
    assert_eq!(a.duty().await.unwrap(), None);
    let b = EtcdBackend::connect(opts, Some(ident("b"))).await.unwrap();
    let t2 = acquire_on(&b).await;
    assert!(b.record_duty(&duty.record(&ident("b"), t2)).await.unwrap());
    assert_eq!(a.duty().await.unwrap().map(|r| r.term), Some(t2));
}

/// The kube fence re-reads the Lease: a leader whose Lease another writer took (it has not
/// noticed yet) records nothing.
#[tokio::test(flavor = "multi_thread")]
async fn kube_backend_records_success_only_while_the_lease_is_ours() {
    use crown::backend::Duties;
    use crown::backend::kube::{ClientOptions, KubeBackend, set_client_options};
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    set_client_options(ClientOptions {
        kubeconfig: Some(env.kubeconfig()),
        context: None,
        pod_name: None,
    });
    let duty = crown::once::Duty::new(&["./migrate.sh".to_string()]);
    let connect = |id: &'static str| {
        KubeBackend::connect(
            "crown",
            ELECTION,
            ELECTION,
            ident(id),
            Duration::from_secs(10),
        )
    };
    let a = connect("a").await.unwrap();
    let t1 = acquire_on(&a).await;
    env.kubectl(&[
        "-n",
        "crown",
        "patch",
        "lease",
        ELECTION,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"holderIdentity":"stranger"}}"#,
    ]);
    assert!(!a.record_duty(&duty.record(&ident("a"), t1)).await.unwrap());
    assert_eq!(a.duty().await.unwrap(), None);
    env.kubectl(&[
        "-n",
        "crown",
        "patch",
        "lease",
        ELECTION,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"holderIdentity":"a"}}"#,
    ]);
    assert!(a.record_duty(&duty.record(&ident("a"), t1)).await.unwrap());
    assert_eq!(a.duty().await.unwrap().map(|r| r.term), Some(t1));
}

/// `--on-child-exit restart` retries a failed run in the same term, but an exit 0 ends the duty
/// (it is recorded, not restarted); `--once` needs a command.
#[test]
fn restart_retries_failures_and_stops_at_success() {
    let d = tempdir();
    let dir = path(&d).join("e");
    let scratch = tempdir();
    let tried = scratch.path().join("tried");
    let mut args: Vec<String> = ["--dir", dir.to_str().unwrap(), "-e", ELECTION]
        .map(String::from)
        .to_vec();
    args.extend(timings_fast());
    args.extend(
        [
            "--on-child-exit",
            "restart",
            "--once",
            "--",
            "sh",
            "-c",
            r#"echo "$CROWN_TERM" >> "$0"; [ -e "$0.ok" ] && exit 0; touch "$0.ok"; exit 1"#,
            tried.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let mut p = Participant::spawn_with("r", &args, &[]);
    exits_0(&mut p);
    let runs = std::fs::read_to_string(&tried).unwrap();
    let terms: Vec<&str> = runs.lines().collect();
    assert_eq!(terms.len(), 2, "{runs}");
    assert_eq!(terms[0], terms[1], "restarted in another term: {runs}");
    p.wait_for("duty_recorded", T, |l| l.event() == "duty_recorded");
    let (code, _, err) = crown(&["run", "--dir", dir.to_str().unwrap(), "--once"]);
    assert_eq!(code, 2, "{err}");
}

/// The shipped Roles suffice: participants with `crown-participant`'s rights (in Pods, as the
/// Deployment runs them) record the duty, and `crown-dashboard`'s rights reset it.
#[test]
fn kube_shipped_roles_suffice_for_once_and_reset() {
    let env = KubeEnv::start();
    for m in [
        include_str!("../k8s/base/namespace.yaml"),
        include_str!("../k8s/base/serviceaccount.yaml"),
        include_str!("../k8s/kube/rbac.yaml"),
    ] {
        env.kubectl_stdin(&["apply", "-f", "-"], Some(m));
    }
    let scratch = tempdir();
    let participant =
        env.env_for(&env.kubeconfig_as("system:serviceaccount:crown:crown-participant"));
    let dashboard = env.env_for(&env.kubeconfig_as("system:serviceaccount:crown:crown-dashboard"));
    let mut s = Setup::new(
        &["--backend", "kube", "--namespace", "crown"],
        participant,
        scratch.path(),
    );
    // The Role names the Lease `crown`: the default election.
    s.backend.truncate(s.backend.len() - 2);
    std::fs::write(&s.go, "").unwrap();
    let mut ps: Vec<Participant> = ["a", "b"]
        .iter()
        .map(|id| {
            env.create_pod("crown", id, true);
            let mut a = s.run_args();
            a.splice(0..0, ["--pod-name".to_string(), id.to_string()]);
            Participant::spawn_with(id, &a, &s.env)
        })
        .collect();
    for p in ps.iter_mut() {
        exits_0(p);
    }
    assert_eq!(s.log().iter().filter(|l| l.0 == "ok").count(), 1);
    s.env = dashboard;
    assert_eq!(s.duty()["state"], "done");
    let (code, out, err) = s.crown(&["once", "reset"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("duty reset"), "{out}");
    assert_eq!(s.duty(), Value::Null);
}
