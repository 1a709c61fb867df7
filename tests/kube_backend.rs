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

const RBAC: &str = include_str!("../k8s/kube/rbac.yaml");
const NS: &str = include_str!("../k8s/base/namespace.yaml");
const SA: &str = include_str!("../k8s/base/serviceaccount.yaml");
const PARTICIPANT: &str = "system:serviceaccount:crown:crown-participant";

fn in_pod(id: &str) -> Vec<String> {
    let mut v = kube_args("crown");
    v.extend(["--pod-name".to_string(), id.to_string()]);
    v
}

/// kubectl as `kc`'s identity; returns (success, stderr).
fn kubectl_as(
    env: &KubeEnv,
    kc: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String) {
    let mut a = vec!["--kubeconfig", kc.to_str().unwrap()];
    a.extend_from_slice(args);
    let out = env.kubectl_try(&a, stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_role_suffices_in_a_pod_and_cannot_touch_another_controllers_lease() {
    let env = KubeEnv::start();
    env.kubectl_stdin(&["apply", "-f", "-"], Some(NS));
    env.kubectl_stdin(&["apply", "-f", "-"], Some(SA));
    env.kubectl_stdin(&["apply", "-f", "-"], Some(RBAC));
    // Another controller's leader Lease in the same namespace.
    let other = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: other-controller\n  namespace: crown\nspec:\n  holderIdentity: someone-else\n  leaseDurationSeconds: 15\n";
    env.kubectl_stdin(&["apply", "-f", "-"], Some(other));
    for id in ["a", "b"] {
        env.create_pod("crown", id, true);
    }
    let kc = env.kubeconfig_as(PARTICIPANT);
    let penv = env.env_for(&kc);

    let mut ps: Vec<Participant> = ["a", "b"]
        .iter()
        .map(|id| Participant::spawn_with(id, &in_pod(id), &penv))
        .collect();
    let (li, term) = leader_of(&ps, 0);
    ps[li].wait_for("renewing", T, |x| {
        x.event() == "leader_heartbeat" && x.term() == Some(term)
    });
    // The leader labelled its own Pod; heartbeats live on the Pods (read as admin).
    eventually("the leader's Pod labelled", T, || {
        (env.leader_pods("crown") == [ps[li].id.clone()]).then_some(())
    });
    eventually("two members from the Pods' annotations", T, || {
        let s = status(&env, "crown");
        (s["members"].as_array().unwrap().len() == 2).then_some(())
    });
    // No member Leases: nothing but the election Lease and the other controller's.
    let names = env.kubectl(&[
        "-n",
        "crown",
        "get",
        "leases",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(
        names.split_whitespace().collect::<Vec<_>>(),
        ["crown", "other-controller"]
    );

    // crown's identity cannot update, patch or delete the other Lease.
    let json = env.kubectl(&[
        "-n",
        "crown",
        "get",
        "lease",
        "other-controller",
        "-o",
        "json",
    ]);
    let taken = json.replace("someone-else", "crown-participant");
    for (what, args, stdin) in [
        (
            "update",
            vec!["-n", "crown", "replace", "-f", "-"],
            Some(taken.as_str()),
        ),
        (
            "patch",
            vec![
                "-n",
                "crown",
                "annotate",
                "lease",
                "other-controller",
                "x=y",
            ],
            None,
        ),
        (
            "delete",
            vec!["-n", "crown", "delete", "lease", "other-controller"],
            None,
        ),
    ] {
        let (ok, err) = kubectl_as(&env, &kc, &args, stdin);
        assert!(
            !ok,
            "crown's service account could {what} another controller's Lease"
        );
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{what}: {err}"
        );
    }
    let still = env.kubectl(&[
        "-n",
        "crown",
        "get",
        "lease",
        "other-controller",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(still, "someone-else");

    // A graceful hand-over with the same rights: label moves with the lease.
    ps[li].signal(Signal::SIGTERM);
    assert_eq!(ps[li].wait_exit(T), Some(0));
    let ni = 1 - li;
    ps[ni].wait_for("taking over", T, |l| became(l) && l.term() > Some(term));
    eventually("the new leader's Pod labelled", T, || {
        (env.leader_pods("crown") == [ps[ni].id.clone()]).then_some(())
    });
    ps[ni].signal(Signal::SIGTERM);
    assert_eq!(ps[ni].wait_exit(T), Some(0));
    assert!(env.leader_pods("crown").is_empty());

    // Remove `update` on the election Lease: the next acquisition is refused with one line
    // naming the verb and the resource, and exit code 7.
    let trimmed = RBAC.replace(
        "verbs: [\"get\", \"list\", \"watch\", \"update\"]",
        "verbs: [\"get\", \"list\", \"watch\"]",
    );
    assert_ne!(trimmed, RBAC);
    env.kubectl_stdin(&["apply", "-f", "-"], Some(&trimmed));
    let mut c = Participant::spawn_with("a", &in_pod("a"), &penv);
    assert_eq!(c.wait_exit(T), Some(7));
    let raw = c.raw.lock().unwrap().join("\n");
    assert!(
        raw.contains("forbidden: cannot update leases.coordination.k8s.io"),
        "{raw}"
    );
}

#[test]
fn the_leader_labels_its_pod_and_a_crashed_leaders_label_is_removed_by_term() {
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    let ids = ["a", "b", "c"];
    for id in ids {
        env.create_pod("crown", id, true);
    }
    let mut ps: Vec<Participant> = ids
        .iter()
        .map(|id| Participant::spawn_with(id, &in_pod(id), &env.admin_env()))
        .collect();
    let (li, term) = leader_of(&ps, 0);
    let mut most = 0;
    eventually("the leader's Pod labelled", T, || {
        let l = env.leader_pods("crown");
        most = most.max(l.len());
        (l == [ps[li].id.clone()]).then_some(())
    });
    // kill -9: the dead leader cannot unlabel its Pod (which stays, as after a node loss);
    // the next leader removes that label, checked by term, before labelling its own.
    let dead_id = ps[li].id.clone();
    ps[li].signal(Signal::SIGKILL);
    ps[li].wait_exit(T);
    let dead = ps.remove(li);
    let (ni, term2) = leader_of(&ps, term);
    assert!(term2 > term);
    eventually("only the new leader's Pod labelled", T, || {
        let l = env.leader_pods("crown");
        most = most.max(l.len());
        (l == [ps[ni].id.clone()]).then_some(())
    });
    assert_eq!(most, 1, "two Pods labelled leader at once");
    let of = env.kubectl(&[
        "-n",
        "crown",
        "get",
        "pod",
        &ps[ni].id,
        "-o",
        "jsonpath={.metadata.annotations.crown\\.io/leader-of}",
    ]);
    let of: Value = serde_json::from_str(&of).unwrap();
    assert_eq!(of["lease"], "crown");
    assert_eq!(of["term"].as_u64(), Some(term2));
    let old = env.kubectl(&[
        "-n",
        "crown",
        "get",
        "pod",
        &dead_id,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!old.contains("crown.io/leader"), "{old}");
    // A restarted participant in the dead leader's Pod starts unlabelled and follows.
    drop(dead);
    let back = Participant::spawn_with(&dead_id, &in_pod(&dead_id), &env.admin_env());
    back.wait_for("following", T, |l| {
        l.event() == "follower" && l.term() == Some(term2)
    });
    assert_eq!(env.leader_pods("crown"), [ps[ni].id.clone()]);
}

fn observer(env: &KubeEnv) -> (tokio::runtime::Runtime, crown::backend::kube::KubeBackend) {
    use crown::backend::kube::{ClientOptions, KubeBackend};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = ClientOptions {
        kubeconfig: Some(env.kubeconfig()),
        ..ClientOptions::default()
    };
    let me = crown::election::Identity {
        id: String::new(),
        pid: std::process::id(),
        host: "test".into(),
    };
    let b = rt
        .block_on(KubeBackend::connect_with(
            &opts, "crown", "crown", "crown", me, T,
        ))
        .unwrap();
    (rt, b)
}

#[test]
fn a_resign_request_hands_over_at_once_and_stale_requests_are_ignored() {
    use crown::election::Term;
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    let ps: Vec<Participant> = ["a", "b"]
        .iter()
        .map(|id| Participant::spawn_with(id, &kube_args("crown"), &env.admin_env()))
        .collect();
    let (li, term) = leader_of(&ps, 0);
    let (rt, b) = observer(&env);
    // A request for a term that is not the current one is refused, with the reason.
    let err = rt.block_on(b.request_resign(Term(term + 1))).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("term {} is over", term + 1)),
        "{err}"
    );
    // A stale request already on the Lease (an earlier term) is ignored by the holder.
    env.kubectl(&[
        "-n",
        "crown",
        "annotate",
        "--overwrite",
        "lease",
        "crown",
        &format!("crown.io/resign={}", term.saturating_sub(1)),
    ]);
    let seen = ps[li].lines().len();
    for _ in 0..4 {
        let n = ps[li].lines().len();
        ps[li].wait_for("renewals after the stale request", T, |l| {
            l.event() == "leader_heartbeat" && l.term() == Some(term)
        });
        eventually("one more line", T, || {
            (ps[li].lines().len() > n).then_some(())
        });
    }
    assert!(
        !ps[li].lines()[seen..]
            .iter()
            .any(|l| l.event() == "stopped_leading"),
        "a stale request made the leader resign"
    );
    // ...and dropped by the holder's next write.
    let ann = env.kubectl(&[
        "-n",
        "crown",
        "get",
        "lease",
        "crown",
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(!ann.contains("crown.io/resign"), "{ann}");
    // The request for the current term: the holder releases, the other takes over at once
    // (well before the 2 s lease could expire).
    let t0 = Instant::now();
    rt.block_on(b.request_resign(Term(term))).unwrap();
    ps[li].wait_for("resigning", T, |l| {
        l.event() == "stopped_leading" && l.term() == Some(term) && l.json["reason"] == "released"
    });
    let other = 1 - li;
    let l = ps[other].wait_for("taking over", T, |l| became(l) && l.term() > Some(term));
    let took = l.at - t0;
    assert!(
        took < Duration::from_millis(1500),
        "hand-over took {took:?}"
    );
    // The request ended with its term.
    let ann = env.kubectl(&[
        "-n",
        "crown",
        "get",
        "lease",
        "crown",
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(!ann.contains("crown.io/resign"), "{ann}");
}

#[test]
fn deleting_the_leader_pod_checks_the_lease_and_crowns_label() {
    use crown::election::Term;
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "crown"]);
    env.create_pod("crown", "plain", false);
    env.create_pod("crown", "a", true);
    let (rt, b) = observer(&env);
    // A leader whose Pod lacks crown's label is not deleted.
    let mut p = Participant::spawn_with("plain", &kube_args("crown"), &env.admin_env());
    let t1 = p.wait_for("leading", T, became).term().unwrap();
    let err = rt
        .block_on(b.delete_leader_pod("plain", Term(t1)))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not carry the label app.kubernetes.io/name=crown"),
        "{err}"
    );
    // Nor one named by a stale term or holder.
    let err = rt.block_on(b.delete_leader_pod("a", Term(t1))).unwrap_err();
    assert!(err.to_string().contains("the leader changed"), "{err}");
    env.kubectl(&["-n", "crown", "get", "pod", "plain"]);
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_exit(T), Some(0));
    // A leader without a Pod of its name.
    let mut q = Participant::spawn_with("nopod", &kube_args("crown"), &env.admin_env());
    let t2 = q
        .wait_for("leading", T, |l| became(l) && l.term() > Some(t1))
        .term()
        .unwrap();
    let err = rt
        .block_on(b.delete_leader_pod("nopod", Term(t2)))
        .unwrap_err();
    assert!(err.to_string().contains("no Pod \"nopod\""), "{err}");
    q.signal(Signal::SIGTERM);
    assert_eq!(q.wait_exit(T), Some(0));
    // The leader's crown Pod is deleted.
    let a = Participant::spawn_with("a", &in_pod("a"), &env.admin_env());
    let t3 = a
        .wait_for("leading", T, |l| became(l) && l.term() > Some(t2))
        .term()
        .unwrap();
    assert_eq!(
        rt.block_on(b.delete_leader_pod("a", Term(t3))).unwrap(),
        "a"
    );
    let gone = env.kubectl_try(&["-n", "crown", "get", "pod", "a"], None);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
}

#[test]
fn the_namespace_follows_kubectls_rules_and_status_prints_it() {
    let env = KubeEnv::start();
    for ns in ["myns", "other"] {
        env.kubectl(&["create", "namespace", ns]);
    }
    // A kubeconfig whose current context says `myns`, and a second context `other-ctx`.
    let raw = env.kubectl(&["config", "view", "--raw", "-o", "json"]);
    let mut cfg: Value = serde_json::from_str(&raw).unwrap();
    let mut ctx = cfg["contexts"][0].clone();
    cfg["contexts"][0]["context"]["namespace"] = "myns".into();
    ctx["name"] = "other-ctx".into();
    ctx["context"]["namespace"] = "other".into();
    cfg["contexts"].as_array_mut().unwrap().push(ctx);
    let kc = env.dir.path().join("kubeconfig-contexts");
    std::fs::write(&kc, serde_json::to_string(&cfg).unwrap()).unwrap();
    let kenv = env.env_for(&kc);

    // No -n, no $NAMESPACE: the context's namespace, like kubectl.
    let mut args: Vec<String> = vec!["--backend".into(), "kube".into()];
    args.extend(timings_fast());
    let p = Participant::spawn_with("a", &args, &kenv);
    p.wait_for("leading", T, became);
    let holder = env.kubectl(&[
        "-n",
        "myns",
        "get",
        "lease",
        "crown",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "a");
    assert!(
        !env.kubectl_try(&["-n", "default", "get", "lease", "crown"], None)
            .status
            .success()
    );

    let st = |args: &[&str], envs: &[(String, String)]| -> (i32, String, String) {
        let mut a = vec!["status", "--backend", "kube"];
        a.extend_from_slice(args);
        crown_env(&a, envs)
    };
    let (code, out, err) = st(&[], &kenv);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("namespace myns (from the kubeconfig context)"),
        "{out}"
    );
    assert!(out.contains("leader    a "), "{out}");
    let (code, out, err) = st(&["-o", "json"], &kenv);
    assert_eq!(code, 0, "{err}");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["namespace"], "myns");
    assert_eq!(j["leader"]["id"], "a");

    // --kubeconfig and --context, with no $KUBECONFIG.
    let kcs = kc.to_str().unwrap();
    let (code, out, err) = st(
        &["--kubeconfig", kcs, "--context", "other-ctx", "-o", "json"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["namespace"], "other");
    assert!(j["leader"].is_null(), "{j}");
    // $NAMESPACE beats the context; -n beats $NAMESPACE.
    let ns_env = |ns: &str| vec![("NAMESPACE".to_string(), ns.to_string())];
    let (_, out, _) = st(
        &["--kubeconfig", kcs, "--context", "other-ctx", "-o", "json"],
        &ns_env("myns"),
    );
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["namespace"].as_str(), j["namespace_from"].as_str()),
        (Some("myns"), Some("from -n/$NAMESPACE"))
    );
    let (_, out, _) = st(
        &["--kubeconfig", kcs, "-n", "other", "-o", "json"],
        &ns_env("myns"),
    );
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["namespace"], "other");
    // An unknown context is a clear configuration error.
    let (code, _, err) = st(&["--kubeconfig", kcs, "--context", "nope"], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--context \"nope\": no such context"), "{err}");
}

/// The library on a real apiserver, with a client the caller built itself
/// (`KubeBackend::with_client`): a grant comes as a `Leadership`, a shutdown cancels its token
/// and releases the Lease, and the other participant's next grant has a higher term.
#[test]
fn the_library_campaigns_with_an_existing_client_and_hands_over_on_shutdown() {
    use crown::backend::kube::KubeBackend;
    use crown::{Config, Elector, Identity};
    use std::sync::Arc;
    let env = KubeEnv::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kubeconfig = ::kube::config::Kubeconfig::read_from(env.kubeconfig()).unwrap();
        let cfg = ::kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = ::kube::Client::try_from(cfg).unwrap();
        let elector = |id: &str| {
            let client = client.clone();
            let me = Identity::new(id);
            async move {
                let b = KubeBackend::with_client(client, "default", "lib", "lib", me.clone(), T)
                    .await
                    .unwrap();
                let stop = tokio_util::sync::CancellationToken::new();
                let (h, _events) = Elector::new(Arc::new(b), Config::default(), me)
                    .unwrap()
                    .spawn(stop.clone());
                (stop, h)
            }
        };
        let (stop_a, ha) = elector("lib-a").await;
        let first = tokio::time::timeout(T, ha.leadership())
            .await
            .expect("a grant within 30 s")
            .expect("a leads");
        let (_stop_b, hb) = elector("lib-b").await;
        stop_a.cancel();
        tokio::time::timeout(T, first.cancelled())
            .await
            .expect("shutdown cancels the token");
        let second = tokio::time::timeout(T, hb.leadership())
            .await
            .expect("b is granted the released Lease")
            .expect("b leads");
        assert!(
            second.term() > first.term(),
            "{:?} after {:?}",
            second.term(),
            first.term()
        );
        assert!(ha.leadership().await.is_none(), "a's elector has stopped");
    });
}
