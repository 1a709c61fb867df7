//! The README's Kubernetes walkthrough on a running control plane: a real kube-apiserver and
//! kube-controller-manager (scripts/kube-test-env.sh), and the test kubelet of
//! tests/common/kubelet.rs running each Pod as a local `crown` process with its Pod's args,
//! downward-API env and a real service-account token (so the shipped, name-scoped Role is what
//! crown runs with).

mod common;
#[path = "common/kubelet.rs"]
mod kubelet;

use common::kube::KubeEnv;
use common::*;
use crown::backend::kube::{ClientOptions, KubeBackend};
use crown::election::{Identity, Term};
use kubelet::rollout_status;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const T: Duration = Duration::from_secs(60);
/// The Deployment's timings (crown's defaults): lease 5 s, retry 1 s.
const LEASE: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_secs(1);

fn lease(env: &KubeEnv) -> Option<(String, u64)> {
    env.lease_holder("crown", "crown")
}

fn pod_ip(env: &KubeEnv, pod: &str) -> String {
    env.kubectl(&[
        "-n",
        "crown",
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.podIP}",
    ])
}

/// The ready addresses of the `crown-leader` Service's EndpointSlices.
fn leader_endpoints(env: &KubeEnv) -> Vec<String> {
    let out = env.kubectl_try(
        &[
            "-n",
            "crown",
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=crown-leader",
            "-o",
            "json",
        ],
        None,
    );
    let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
        return vec![];
    };
    let mut ips = vec![];
    for s in v["items"].as_array().into_iter().flatten() {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if e["conditions"]["ready"] != false {
                for a in e["addresses"].as_array().into_iter().flatten() {
                    ips.push(a.as_str().unwrap_or("").to_string());
                }
            }
        }
    }
    ips
}

/// Waits until the `crown-leader` Service's only ready endpoint is `ip`; says what it saw if not.
fn leader_service_is(env: &KubeEnv, ip: &str) -> Instant {
    let deadline = Instant::now() + T;
    loop {
        let eps = leader_endpoints(env);
        if eps == [ip.to_string()] {
            return Instant::now();
        }
        if Instant::now() > deadline {
            panic!(
                "the crown-leader Service has {eps:?}, not [{ip}]\npods:\n{}\nslices:\n{}\nkubelet logs in {}",
                env.kubectl(&["-n", "crown", "get", "pods", "-o", "wide", "--show-labels"]),
                env.kubectl(&["-n", "crown", "get", "endpointslices", "-o", "yaml"]),
                env.dir.path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Leadership intervals (term, became, stopped) from every crown process's log, by the
/// participants' own timestamps.
fn leadership(k: &kubelet::Kubelet) -> Vec<(u64, jiff::Timestamp, Option<jiff::Timestamp>)> {
    let mut out = vec![];
    for (_, log) in k.logs.all() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let ts = |v: &Value| v["timestamp"].as_str().and_then(|t| t.parse().ok());
        for (i, l) in lines.iter().enumerate() {
            if l["event"] == "became_leader" {
                let term = l["term"].as_u64().unwrap();
                let stop = lines[i..]
                    .iter()
                    .find(|x| x["event"] == "stopped_leading" && x["term"].as_u64() == Some(term))
                    .and_then(ts);
                out.push((term, ts(l).unwrap(), stop));
            }
        }
    }
    out.sort_by_key(|x| x.1);
    out
}

#[test]
fn the_walkthrough_on_a_running_control_plane() {
    let env = KubeEnv::start();
    // 1. Apply, scale, wait for the rollout (every healthy participant is Ready).
    let kubelet = kubelet::deploy_kube_variant(&env, BIN, 3);

    // The leader Service is sampled throughout: never two endpoints.
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(Mutex::new((0usize, vec![])));
    let sampler = {
        let (stop, most) = (stop.clone(), most.clone());
        let kubeconfig = env.kubeconfig();
        let kubectl = env.vars["CROWN_KUBECTL"].clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new(&kubectl)
                    .args([
                        "--kubeconfig",
                        kubeconfig.to_str().unwrap(),
                        "-n",
                        "crown",
                        "get",
                        "endpointslices",
                        "-l",
                        "kubernetes.io/service-name=crown-leader",
                        "-o",
                        "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}",
                    ])
                    .output()
                    .unwrap();
                let ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                let mut m = most.lock().unwrap();
                if ips.len() > m.0 {
                    *m = (ips.len(), ips);
                }
            }
        })
    };

    // 2. Who leads: the Lease, and the leader Service's one endpoint.
    let (holder, term) = eventually("a holder", T, || lease(&env));
    let ip = pod_ip(&env, &holder);
    leader_service_is(&env, &ip);

    // 3. Delete the leader Pod through the dashboard's code path (`k`).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = ClientOptions {
        kubeconfig: Some(env.kubeconfig()),
        ..ClientOptions::default()
    };
    let me = Identity {
        id: String::new(),
        pid: std::process::id(),
        host: "walkthrough".into(),
    };
    let dash = rt
        .block_on(KubeBackend::connect_with(
            &opts, "crown", "crown", "crown", me, T,
        ))
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(
        rt.block_on(dash.delete_leader_pod(&holder, Term(term)))
            .unwrap(),
        holder
    );
    let (holder2, term2) = eventually("a new holder", T, || {
        lease(&env).filter(|(h, t)| h != &holder && *t > term)
    });
    let took = t0.elapsed();
    eprintln!("walkthrough: leader Pod deleted -> new holder (term {term2}) after {took:?}");
    assert!(
        took <= LEASE + Duration::from_secs(1),
        "new leader after {took:?}"
    );
    let ip2 = pod_ip(&env, &holder2);
    let at = leader_service_is(&env, &ip2);
    eprintln!(
        "walkthrough: leader Pod deleted -> crown-leader endpoint moved after {:?}",
        at - t0
    );
    // Generous: one retry period plus this test's kubectl polling.
    assert!(
        at - (t0 + took) <= 3 * RETRY,
        "endpoint moved {:?} after the holder",
        at - (t0 + took)
    );
    rollout_status(&env);

    // 4. Ask the leader to resign (`r`): another takes over within one retry period.
    let t1 = Instant::now();
    rt.block_on(dash.request_resign(Term(term2))).unwrap();
    let (holder3, term3) = eventually("a holder after the resign", T, || {
        lease(&env).filter(|(_, t)| *t > term2)
    });
    let took = t1.elapsed();
    eprintln!("walkthrough: resign request -> new holder (term {term3}) after {took:?}");
    assert!(took <= 2 * RETRY, "resign hand-over took {took:?}");
    assert_ne!(holder3, holder2);
    let ip3 = pod_ip(&env, &holder3);
    let at = leader_service_is(&env, &ip3);
    eprintln!(
        "walkthrough: resign request -> crown-leader endpoint moved after {:?}",
        at - t1
    );
    assert!(
        at - (t1 + took) <= 3 * RETRY,
        "endpoint moved {:?} after the holder",
        at - (t1 + took)
    );

    // 5. A rolling update to a changed pod template completes.
    let before: Vec<String> = env
        .kubectl(&[
            "-n",
            "crown",
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect();
    let t2 = Instant::now();
    env.kubectl(&["-n", "crown", "rollout", "restart", "deployment/crown"]);
    rollout_status(&env);
    eprintln!("walkthrough: rolling update done after {:?}", t2.elapsed());
    let after = eventually("only new Pods", T, || {
        let names: Vec<String> = env
            .kubectl(&[
                "-n",
                "crown",
                "get",
                "pods",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ])
            .split_whitespace()
            .map(String::from)
            .collect();
        (names.len() == 3 && names.iter().all(|n| !before.contains(n))).then_some(names)
    });
    let (holder4, term4) = eventually("a leader after the update", T, || {
        lease(&env).filter(|(h, _)| after.contains(h))
    });
    assert!(term4 > term3);
    let ip4 = pod_ip(&env, &holder4);
    leader_service_is(&env, &ip4);

    // 6. The PodDisruptionBudget, computed by the real disruption controller, allows one
    // voluntary disruption of 3 healthy participants at a time.
    eventually("the PDB sees 3 healthy, allows 1", T, || {
        let s = env.kubectl(&[
            "-n",
            "crown",
            "get",
            "pdb",
            "crown",
            "-o",
            "jsonpath={.status.currentHealthy} {.status.disruptionsAllowed}",
        ]);
        (s.trim() == "3 1").then_some(())
    });
    let pods: ::kube::Api<k8s_openapi::api::core::v1::Pod> = rt.block_on(async {
        let k = ::kube::config::Kubeconfig::read_from(env.kubeconfig()).unwrap();
        let cfg = ::kube::Config::from_custom_kubeconfig(k, &Default::default())
            .await
            .unwrap();
        ::kube::Api::namespaced(::kube::Client::try_from(cfg).unwrap(), "crown")
    });
    let followers: Vec<&String> = after.iter().filter(|n| **n != holder4).collect();
    let ep = ::kube::api::EvictParams::default();
    // An eviction (what a node drain does) of a follower goes through the budget; the
    // leader is untouched and the Deployment replaces the Pod.
    let first = rt.block_on(pods.evict(followers[0], &ep)).unwrap();
    assert_eq!(first.code, 201, "{first:?}");
    rollout_status(&env);
    assert_eq!(lease(&env).map(|l| l.0), Some(holder4.clone()));

    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let (n, ips) = most.lock().unwrap().clone();
    assert!(
        n <= 1,
        "the leader Service had {n} endpoints at once: {ips:?}"
    );

    // At most one leader acting at a time, by the participants' own logs.
    let ls = leadership(&kubelet);
    assert!(ls.len() >= 4, "{ls:?}");
    for w in ls.windows(2) {
        let (t_a, _, end_a) = w[0];
        let (t_b, start_b, _) = w[1];
        assert!(t_b > t_a, "terms not increasing: {ls:?}");
        let end_a =
            end_a.unwrap_or_else(|| panic!("term {t_a} never stopped before term {t_b}: {ls:?}"));
        assert!(end_a <= start_b, "terms {t_a} and {t_b} overlapped: {ls:?}");
    }

    // 7. Clean up: everything goes, every crown process exits.
    env.kubectl(&[
        "delete",
        "-k",
        &format!("{ROOT}/k8s/kube"),
        "--timeout=120s",
    ]);
    eventually("the namespace gone", T, || {
        (!env
            .kubectl_try(&["get", "namespace", "crown"], None)
            .status
            .success())
        .then_some(())
    });
    drop(kubelet);
}
