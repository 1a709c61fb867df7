//! The Kubernetes Lease backend on a real kube-apiserver (built from k8s.io/kubernetes by
//! scripts/kube-test-env.sh, started per test on free loopback ports).

mod common;
use common::kube::KubeEnv;
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn kube_args(ns: &str) -> Vec<String> {
    let mut v: Vec<String> = ["--backend", "kube", "--namespace", ns]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(timings_fast());
    v
}

fn status(env: &KubeEnv, ns: &str) -> Value {
    let (code, out, err) = crown_env(
        &["status", "--backend", "kube", "-n", ns, "-o", "json"],
        &env.admin_env(),
    );
    assert_eq!(code, 0, "status: {err}");
    serde_json::from_str(&out).unwrap()
}

fn history(env: &KubeEnv, ns: &str) -> Vec<Value> {
    let (code, out, err) = crown_env(
        &["history", "--backend", "kube", "-n", ns, "-o", "json"],
        &env.admin_env(),
    );
    assert_eq!(code, 0, "history: {err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn became(l: &Line) -> bool {
    l.event() == "became_leader"
}

fn leader_of(ps: &[Participant], above: u64) -> (usize, u64) {
    eventually(&format!("a leader above term {above}"), T, || {
        ps.iter().enumerate().find_map(|(i, p)| {
            p.lines()
                .iter()
                .find(|l| became(l) && l.term() > Some(above))
                .map(|l| (i, l.term().unwrap()))
        })
    })
}

#[test]
fn three_participants_kill_9_takeover_after_the_lease_and_graceful_handoff() {
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    let mut ps: Vec<Participant> = ["a", "b", "c"]
        .iter()
        .map(|id| Participant::spawn_with(id, &kube_args("crown"), &env.admin_env()))
        .collect();
    let (li, term) = leader_of(&ps, 0);
    for (i, p) in ps.iter().enumerate() {
        if i != li {
            p.wait_for("following", T, |l| {
                l.event() == "follower" && l.term() == Some(term)
            });
        }
    }
    // The Lease is client-go compatible.
    let lease: Value =
        serde_json::from_str(&env.kubectl(&["-n", "crown", "get", "lease", "crown", "-o", "json"]))
            .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], ps[li].id.as_str());
    assert_eq!(lease["spec"]["leaseTransitions"].as_u64(), Some(term));
    assert_eq!(lease["spec"]["leaseDurationSeconds"].as_u64(), Some(2));
    let s = eventually("three members", T, || {
        let s = status(&env, "crown");
        (s["members"].as_array().unwrap().len() == 3).then_some(s)
    });
    assert_eq!(s["leader"]["id"], ps[li].id.as_str());

    // kill -9: the others wait for the lease to expire on their own clocks.
    let t0 = Instant::now();
    ps[li].signal(Signal::SIGKILL);
    ps[li].wait_exit(T);
    let dead = ps.remove(li);
    let (ni, term2) = leader_of(&ps, term);
    let took = ps[ni]
        .lines()
        .iter()
        .find(|l| became(l) && l.term() == Some(term2))
        .unwrap()
        .at
        - t0;
    assert!(
        took >= Duration::from_millis(1400),
        "took over after {took:?}, before the lease could expire"
    );
    assert!(term2 > term);
    drop(dead);

    // Graceful release: the follower is woken by its watch and takes over at once.
    let t1 = Instant::now();
    ps[ni].signal(Signal::SIGTERM);
    assert_eq!(ps[ni].wait_exit(T), Some(0));
    let other = 1 - ni;
    let l = ps[other].wait_for("handoff", T, |l| became(l) && l.term() > Some(term2));
    let handoff = l.at - t1;
    assert!(
        handoff < Duration::from_millis(1400),
        "handoff took {handoff:?}: not driven by the watch"
    );

    let h = history(&env, "crown");
    assert!(h.len() >= 3, "{h:?}");
    for w in h.windows(2) {
        assert!(w[1]["term"].as_u64() > w[0]["term"].as_u64());
    }
    assert_eq!(h.last().unwrap()["previous_end"], "released");
    let events = env.kubectl(&["-n", "crown", "get", "events.events.k8s.io", "-o", "json"]);
    assert!(events.contains("BecameLeader"), "{events}");
}

#[test]
fn apiserver_down_mid_term_the_leader_steps_down_within_the_renew_deadline() {
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    let ps: Vec<Participant> = ["a", "b"]
        .iter()
        .map(|id| Participant::spawn_with(id, &kube_args("crown"), &env.admin_env()))
        .collect();
    let (li, term) = leader_of(&ps, 0);
    ps[li].wait_for("a heartbeat", T, |l| l.event() == "leader_heartbeat");
    let t0 = Instant::now();
    env.stop_apiserver();
    let l = ps[li].wait_for("step-down", T, |l| {
        l.event() == "stopped_leading"
            && l.json["reason"] == "renew deadline passed"
            && l.term() == Some(term)
    });
    let after = l.at - t0;
    // Renew deadline 1.5 s from the last renewal, which was at most one retry period earlier.
    assert!(
        after <= Duration::from_millis(1500) + Duration::from_millis(700),
        "stepped down {after:?} after the cut"
    );
    let t1 = Instant::now();
    env.start_apiserver();
    let (ni, term2) = leader_of(&ps, term);
    assert!(term2 > term);
    // Exactly one leader: the other follows the new term.
    let other = 1 - ni;
    ps[other].wait_for("following the new leader", T, |l| {
        l.at >= t1 && l.event() == "follower" && l.term() == Some(term2)
    });
    let s = status(&env, "crown");
    assert_eq!(s["leader"]["id"], ps[ni].id.as_str());
}

fn apply_lease(env: &KubeEnv, spec: &str) {
    let doc = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: crown\n  namespace: crown\nspec:\n{spec}"
    );
    env.kubectl_stdin(&["apply", "-f", "-"], Some(&doc));
}

#[test]
fn malformed_leases_are_logged_and_survived() {
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    // The apiserver itself refuses a negative duration, so that one never reaches us.
    let doc = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: crown\n  namespace: crown\nspec:\n  holderIdentity: x\n  leaseDurationSeconds: -5\n";
    let out = env.kubectl_try(&["apply", "-f", "-"], Some(doc));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be greater than 0"));
    // A holder nobody knows, with no duration and no renewTime.
    apply_lease(&env, "  holderIdentity: stranger\n  leaseTransitions: 4\n");
    let t0 = Instant::now();
    let p = Participant::spawn_with("a", &kube_args("crown"), &env.admin_env());
    p.wait_for("a clear line about the duration", T, |l| {
        l.message().contains("leaseDurationSeconds")
    });
    p.wait_for("a clear line about renewTime", T, |l| {
        l.message().contains("no renewTime")
    });
    p.wait_for("following the stranger", T, |l| {
        l.event() == "follower" && l.json["leader"] == "stranger"
    });
    // Taken only after our own lease duration of no change.
    let l = p.wait_for("takeover", T, became);
    assert_eq!(l.term(), Some(5));
    assert!(
        l.at - t0 >= Duration::from_millis(1900),
        "took a live-looking lease after {:?}",
        l.at - t0
    );

    // Missing fields entirely (no spec fields): read as released, taken at once.
    drop(p);
    env.kubectl(&["-n", "crown", "delete", "lease", "crown"]);
    apply_lease(&env, "  {}\n");
    let t1 = Instant::now();
    let p = Participant::spawn_with("b", &kube_args("crown"), &env.admin_env());
    let l = p.wait_for("takeover", T, became);
    assert!(
        l.at - t1 < Duration::from_millis(1900),
        "an empty Lease should read as released"
    );
    // The term stays above every term in the history (the Events), though the Lease was
    // recreated with no transitions.
    assert_eq!(l.term(), Some(6));
    let raw = p.raw.lock().unwrap().join("\n");
    assert!(!raw.contains("panicked"), "{raw}");
}

const RBAC: &str = include_str!("../k8s/base/rbac.yaml");
const NS: &str = include_str!("../k8s/base/namespace.yaml");

#[test]
fn the_participant_rbac_suffices_and_a_missing_verb_is_named() {
    let env = KubeEnv::start();
    env.kubectl_stdin(&["apply", "-f", "-"], Some(NS));
    env.kubectl_stdin(&["apply", "-f", "-"], Some(RBAC));
    let raw = env.kubectl(&["config", "view", "--raw", "-o", "json"]);
    let mut cfg: Value = serde_json::from_str(&raw).unwrap();
    for u in cfg["users"].as_array_mut().unwrap() {
        u["user"]["as"] = "system:serviceaccount:crown:crown-participant".into();
    }
    let kc = env.dir.path().join("kubeconfig-as-participant");
    std::fs::write(&kc, serde_json::to_string(&cfg).unwrap()).unwrap();
    let penv = env.env_for(&kc);

    let mut a = Participant::spawn_with("a", &kube_args("crown"), &penv);
    let l = a.wait_for("leading with least privilege", T, became);
    a.wait_for("renewing", T, |x| {
        x.event() == "leader_heartbeat" && x.term() == l.term()
    });
    a.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit(T), Some(0));

    // Remove `update` on leases: the next acquisition (an update of the released Lease) is
    // refused with one line naming the verb and the resource, and exit code 7.
    let trimmed = RBAC.replace(
        "verbs: [\"get\", \"list\", \"watch\", \"create\", \"update\", \"delete\"]",
        "verbs: [\"get\", \"list\", \"watch\", \"create\", \"delete\"]",
    );
    assert_ne!(trimmed, RBAC);
    env.kubectl_stdin(&["apply", "-f", "-"], Some(&trimmed));
    let mut b = Participant::spawn_with("b", &kube_args("crown"), &penv);
    assert_eq!(b.wait_exit(T), Some(7));
    let raw = b.raw.lock().unwrap().join("\n");
    assert!(
        raw.contains("forbidden: cannot update leases.coordination.k8s.io"),
        "{raw}"
    );
}
