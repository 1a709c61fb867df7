//! k8s/ manifests, RBAC, container args and the minikube walkthrough, checked without minikube:
//! against a real kube-apiserver (server-side dry run, impersonated `auth can-i`), the real
//! binary (`--check-config`), shellcheck, and `scripts/setup.sh --dry-run`.

mod common;
use common::kube::KubeEnv;
use common::*;
use serde_json::Value;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn every_manifest_is_accepted_by_the_apiserver_in_both_variants() {
    let env = KubeEnv::start();
    // Server-side dry run cannot create the namespace the other objects live in.
    env.kubectl(&["apply", "-f", &format!("{ROOT}/k8s/base/namespace.yaml")]);
    for variant in ["kube", "etcd"] {
        let out = env.kubectl(&[
            "apply",
            "--dry-run=server",
            "-k",
            &format!("{ROOT}/k8s/{variant}"),
        ]);
        for kind in [
            "serviceaccount/crown-participant",
            "role.rbac.authorization.k8s.io/crown-participant",
            "service/crown",
            "deployment.apps/crown",
        ] {
            assert!(out.contains(kind), "{variant}: {kind} missing from:\n{out}");
        }
        if variant == "etcd" {
            assert!(out.contains("statefulset.apps/etcd"), "{out}");
        }
    }
}

fn can_i(env: &KubeEnv, sa: &str, verb: &str, resource: &str, ns: Option<&str>) -> bool {
    let who = format!("--as=system:serviceaccount:crown:{sa}");
    let mut args = vec!["auth", "can-i", verb, resource, who.as_str()];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let out = env.kubectl_try(&args, None);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {args:?}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

#[test]
fn rbac_allows_exactly_what_each_identity_needs() {
    let env = KubeEnv::start();
    env.kubectl(&["apply", "-k", &format!("{ROOT}/k8s/base")]);
    let lease = "leases.coordination.k8s.io";
    let events = "events.events.k8s.io";
    for verb in ["get", "list", "watch", "create", "update", "delete"] {
        assert!(
            can_i(&env, "crown-participant", verb, lease, Some("crown")),
            "participant {verb} leases"
        );
    }
    assert!(can_i(
        &env,
        "crown-participant",
        "create",
        events,
        Some("crown")
    ));
    assert!(can_i(
        &env,
        "crown-participant",
        "list",
        events,
        Some("crown")
    ));
    let denied = [
        ("patch", lease, Some("crown")),
        ("deletecollection", lease, Some("crown")),
        ("get", lease, Some("default")),
        ("delete", events, Some("crown")),
        ("get", "pods", Some("crown")),
        ("delete", "pods", Some("crown")),
        ("get", "secrets", Some("crown")),
        ("list", "configmaps", Some("crown")),
        ("list", "nodes", None),
        ("list", "namespaces", None),
        ("create", "clusterroles.rbac.authorization.k8s.io", None),
    ];
    for (verb, res, ns) in denied {
        assert!(
            !can_i(&env, "crown-participant", verb, res, ns),
            "participant may {verb} {res} in {ns:?}"
        );
    }
    for (verb, res) in [
        ("get", "pods"),
        ("list", "pods"),
        ("delete", "pods"),
        ("watch", lease),
        ("list", events),
    ] {
        assert!(
            can_i(&env, "crown-dashboard", verb, res, Some("crown")),
            "dashboard {verb} {res}"
        );
    }
    for (verb, res, ns) in [
        ("get", "secrets", Some("crown")),
        ("delete", "pods", Some("default")),
        ("list", "nodes", None),
    ] {
        assert!(
            !can_i(&env, "crown-dashboard", verb, res, ns),
            "dashboard may {verb} {res} in {ns:?}"
        );
    }
}

#[test]
fn deployment_args_parse_with_the_real_binary() {
    let env = KubeEnv::start();
    for variant in ["kube", "etcd"] {
        let out = env.kubectl(&[
            "apply",
            "--dry-run=client",
            "-o",
            "json",
            "-k",
            &format!("{ROOT}/k8s/{variant}"),
        ]);
        let list: Value = serde_json::from_str(&out).unwrap();
        let deployments: Vec<&Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .collect();
        assert_eq!(deployments.len(), 1, "{variant}");
        for c in deployments[0]["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
        {
            let args: Vec<String> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            let mut cmd = Command::new(BIN);
            cmd.args(&args)
                .arg("--check-config")
                .env("POD_NAME", "crown-7d4b9-xk2lp")
                .env("NAMESPACE", "crown");
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(v) = e["value"].as_str() {
                    cmd.env(e["name"].as_str().unwrap(), v);
                }
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{variant}: `crown {}` does not parse: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(said.contains("id crown-7d4b9-xk2lp"), "{said}");
            assert!(said.contains(&format!("backend {variant}")), "{said}");
        }
    }
}

#[test]
fn scripts_pass_shellcheck() {
    let scripts: Vec<String> = std::fs::read_dir(format!("{ROOT}/scripts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".sh"))
        .collect();
    assert!(scripts.len() >= 4);
    let out = Command::new("shellcheck").args(&scripts).output().unwrap_or_else(|e| {
        panic!("shellcheck not found ({e}): install it with `apt-get install -y shellcheck` (make setup)")
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn dry_run(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(format!("{ROOT}/scripts/setup.sh"))
        .args(args)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn setup_dry_run_prints_the_walkthrough_and_the_readme_matches_it() {
    let kube = dry_run(&[]);
    let cmds: Vec<&str> = kube.lines().filter_map(|l| l.strip_prefix("+ ")).collect();
    assert_eq!(
        cmds,
        [
            "minikube start",
            "eval $(minikube docker-env)",
            "docker build -t crown:local .",
            "kubectl apply -k k8s/kube",
            "kubectl -n crown scale deployment/crown --replicas=3",
            "kubectl -n crown rollout status deployment/crown --timeout=180s",
            "kubectl -n crown get lease crown -o wide",
        ]
    );
    let etcd = dry_run(&["--backend", "etcd", "--replicas", "5"]);
    assert!(etcd.contains("+ kubectl apply -k k8s/etcd\n"));
    assert!(etcd.contains("+ kubectl -n crown scale deployment/crown --replicas=5\n"));
    assert!(etcd.contains("+ kubectl -n crown rollout status statefulset/etcd --timeout=180s\n"));
    // Bad arguments are refused with one line and exit 2.
    let bad = Command::new("bash")
        .arg(format!("{ROOT}/scripts/setup.sh"))
        .args(["--backend", "consul"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    // The README's walkthrough shows exactly what the script runs.
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let begin = "<!-- setup-dry-run -->\n```text\n$ scripts/setup.sh --dry-run\n";
    let b = readme
        .find(begin)
        .expect("README has the setup --dry-run block")
        + begin.len();
    let e = b + readme[b..].find("```\n<!-- /setup-dry-run -->").unwrap();
    assert_eq!(
        &readme[b..e],
        kube,
        "README walkthrough differs from scripts/setup.sh --dry-run"
    );
    for c in &cmds[3..] {
        assert!(
            readme.matches(c).count() >= 2,
            "the walkthrough should explain `{c}`"
        );
    }
}
