//! crown and client-go's own leaderelection (LeaseLock) sharing one Lease on a real
//! kube-apiserver: each follows the other's leader, handoff works both ways, terms
//! (leaseTransitions) strictly increase and no two leaderships overlap.

mod common;
use common::kube::KubeEnv;
use common::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(40);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The client-go elector from tests/interop/client-go, built (cached) by scripts/build-clientgo.sh.
fn clientgo_bin() -> String {
    let out = Command::new("bash")
        .arg(format!("{ROOT}/scripts/build-clientgo.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot build the client-go elector (needs Go and the Go module proxy): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct GoElector {
    id: String,
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl GoElector {
    fn spawn(bin: &str, env: &KubeEnv, id: &str, timings: &[&str]) -> GoElector {
        let mut child = Command::new(bin)
            .args([
                "--kubeconfig",
                env.kubeconfig().to_str().unwrap(),
                "--namespace",
                "crown",
                "--lease-name",
                "crown",
            ])
            .args(["--id", id, "--release-on-cancel"])
            .args(timings)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(vec![]));
        let out = child.stdout.take().unwrap();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push((Instant::now(), l));
            }
        });
        GoElector {
            id: id.into(),
            child,
            lines,
        }
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> (Instant, String) {
        eventually(&format!("{}: {what}", self.id), T, || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| pred(l))
                .cloned()
        })
    }

    fn term(&self) -> Option<(Instant, u64)> {
        self.lines.lock().unwrap().iter().find_map(|(at, l)| {
            l.strip_prefix(&format!("STARTED_LEADING id={} transitions=", self.id))
                .map(|t| (*at, t.parse().unwrap()))
        })
    }

    fn sigterm(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + T;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} did not exit", self.id);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for GoElector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn crown(env: &KubeEnv, id: &str, timings: &[&str]) -> Participant {
    let mut args: Vec<String> = ["--backend", "kube", "--namespace", "crown"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(timings.iter().map(|s| s.to_string()));
    Participant::spawn_with(id, &args, &env.admin_env())
}

fn became(p: &Participant) -> Option<(Instant, u64)> {
    p.lines()
        .iter()
        .find(|l| l.event() == "became_leader")
        .map(|l| (l.at, l.term().unwrap()))
}

/// Runs the mixed scenario with `timings` for everyone; returns (crown→client-go handoff,
/// client-go→crown handoff) latencies.
fn mixed(timings: &[&str]) -> (Duration, Duration) {
    let bin = clientgo_bin();
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    // (start, end, term, who) of every leadership.
    let mut intervals: Vec<(Instant, Instant, u64, String)> = vec![];

    // 1. crown leads; client-go follows crown's leader.
    let mut c1 = crown(&env, "crown-1", timings);
    c1.wait_for("leading", T, |l| l.event() == "became_leader");
    let mut g1 = GoElector::spawn(&bin, &env, "go-1", timings);
    g1.wait_for("following crown", |l| {
        l == "NEW_LEADER id=go-1 leader=crown-1"
    });

    // 2. crown releases: client-go takes over.
    let t0 = Instant::now();
    c1.signal(Signal::SIGTERM);
    assert_eq!(c1.wait_exit(T), Some(0));
    let c1_end = c1
        .wait_for("stop", T, |l| l.event() == "stopped_leading")
        .at;
    let (g1_start, _) = g1.wait_for("leading after crown released", |l| {
        l.starts_with("STARTED_LEADING id=go-1")
    });
    let to_go = g1_start - t0;
    let (c1_start, c1_term) = became(&c1).unwrap();
    intervals.push((c1_start, c1_end, c1_term, "crown-1".into()));
    let (_, g1_term) = g1.term().unwrap();

    // 3. crown follows client-go's leader.
    let mut c2 = crown(&env, "crown-2", timings);
    c2.wait_for("following client-go", T, |l| {
        l.event() == "follower" && l.json["leader"] == "go-1" && l.term() == Some(g1_term)
    });

    // 4. client-go releases: crown takes over, woken by its watch.
    // client-go cancels the leader's context on SIGTERM, then releases, and only then calls
    // OnStoppedLeading: its leadership ends when the context is cancelled, i.e. at the signal.
    let t1 = Instant::now();
    g1.sigterm();
    intervals.push((g1_start, t1, g1_term, "go-1".into()));
    let l = c2.wait_for("leading after client-go released", T, |l| {
        l.event() == "became_leader"
    });
    let to_crown = l.at - t1;
    let c2_term = l.term().unwrap();

    // 5. crown dies without releasing: client-go takes over after the lease duration.
    let g2 = GoElector::spawn(&bin, &env, "go-2", timings);
    g2.wait_for("following crown", |l| {
        l == "NEW_LEADER id=go-2 leader=crown-2"
    });
    let t2 = Instant::now();
    c2.signal(Signal::SIGKILL);
    c2.wait_exit(T);
    intervals.push((l.at, t2, c2_term, "crown-2".into()));
    let (g2_start, _) = g2.wait_for("leading after crown died", |l| {
        l.starts_with("STARTED_LEADING id=go-2")
    });
    let (_, g2_term) = g2.term().unwrap();
    intervals.push((g2_start, Instant::now(), g2_term, "go-2".into()));

    // Terms strictly increase in leadership order, and leaderships do not overlap.
    intervals.sort_by_key(|i| i.0);
    for w in intervals.windows(2) {
        assert!(
            w[1].2 > w[0].2,
            "terms not increasing: {:?} then {:?}",
            (w[0].2, &w[0].3),
            (w[1].2, &w[1].3)
        );
        assert!(
            w[1].0 >= w[0].1,
            "{} started leading before {} stopped",
            w[1].3,
            w[0].3
        );
    }
    (to_go, to_crown)
}

#[test]
fn crown_and_client_go_share_a_lease_with_crown_timings() {
    let fast = common::timings_fast();
    let (to_go, to_crown) = mixed(&fast.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("handoff crown→client-go {to_go:?}, client-go→crown {to_crown:?}");
    // client-go polls (retry period 500 ms with jitter); crown is woken by its watch.
    assert!(
        to_go < Duration::from_secs(2),
        "crown→client-go handoff {to_go:?}"
    );
    assert!(
        to_crown < Duration::from_secs(1),
        "client-go→crown handoff {to_crown:?}"
    );
}

#[test]
fn crown_and_client_go_share_a_lease_with_client_go_defaults() {
    let (to_go, to_crown) = mixed(&[
        "--lease-duration",
        "15s",
        "--renew-deadline",
        "10s",
        "--retry-period",
        "2s",
    ]);
    eprintln!("handoff crown→client-go {to_go:?}, client-go→crown {to_crown:?}");
    assert!(
        to_go < Duration::from_secs(5),
        "crown→client-go handoff {to_go:?}"
    );
    assert!(
        to_crown < Duration::from_secs(1),
        "client-go→crown handoff {to_crown:?}"
    );
}
