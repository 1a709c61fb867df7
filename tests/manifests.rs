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
    for variant in ["kube", "etcd", "examples/sidecar"] {
        let out = env.kubectl(&[
            "apply",
            "--dry-run=server",
            "-k",
            &format!("{ROOT}/k8s/{variant}"),
        ]);
        for kind in [
            "serviceaccount/crown-participant",
            "service/crown",
            "deployment.apps/crown",
            "poddisruptionbudget.policy/crown",
        ] {
            assert!(out.contains(kind), "{variant}: {kind} missing from:\n{out}");
        }
        let kube_only = [
            "role.rbac.authorization.k8s.io/crown-participant",
            "role.rbac.authorization.k8s.io/crown-dashboard",
            "service/crown-leader",
        ];
        for kind in kube_only {
            assert_eq!(
                out.contains(kind),
                variant != "etcd",
                "{variant}: {kind}:\n{out}"
            );
        }
        assert_eq!(
            out.contains("statefulset.apps/etcd"),
            variant == "etcd",
            "{out}"
        );
    }
}

/// The rendered objects of a kustomization (client-side dry run, as JSON).
fn rendered(env: &KubeEnv, dir: &str) -> Vec<Value> {
    let out = env.kubectl(&["apply", "--dry-run=client", "-o", "json", "-k", dir]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().unwrap().clone()
}

fn pod_spec<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    &objs.iter().find(|o| o["kind"] == kind).unwrap()["spec"]["template"]["spec"]
}

#[test]
fn readiness_is_a_healthy_participant_and_the_etcd_variant_mounts_no_token() {
    let env = KubeEnv::start();
    for variant in ["kube", "etcd"] {
        let objs = rendered(&env, &format!("{ROOT}/k8s/{variant}"));
        let d = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        // /readyz is 200 on the leader only: probing it would make followers never Ready,
        // so `rollout status` would never finish and a rolling update would stall.
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"], "/healthz",
            "{variant}"
        );
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
        let pdb = objs
            .iter()
            .find(|o| o["kind"] == "PodDisruptionBudget")
            .unwrap();
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            d["spec"]["selector"]["matchLabels"]
        );
        let automount = &d["spec"]["template"]["spec"]["automountServiceAccountToken"];
        if variant == "etcd" {
            assert_eq!(automount, false);
            assert_eq!(
                pod_spec(&objs, "StatefulSet")["automountServiceAccountToken"],
                false
            );
            let etcd = &pod_spec(&objs, "StatefulSet")["containers"][0];
            for k in ["readinessProbe", "livenessProbe", "securityContext"] {
                assert!(etcd[k].is_object(), "etcd has no {k}");
            }
            assert!(etcd["resources"]["limits"]["memory"].is_string());
            assert_eq!(
                pod_spec(&objs, "StatefulSet")["securityContext"]["runAsNonRoot"],
                true
            );
        } else {
            assert!(automount.is_null(), "{automount}");
            let leader = objs
                .iter()
                .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "crown-leader")
                .unwrap();
            assert_eq!(leader["spec"]["selector"]["crown.io/leader"], "true");
        }
    }
}

/// ROOT as seen from `from` (an absolute directory), e.g. `../../work/crown`.
fn relative_root(from: &std::path::Path) -> String {
    let ups = from.components().count() - 1;
    format!("{}{}", "../".repeat(ups), ROOT.trim_start_matches('/'))
}

#[test]
fn a_namespace_override_works_for_both_variants() {
    let env = KubeEnv::start();
    env.kubectl(&["create", "namespace", "elsewhere"]);
    for variant in ["kube", "etcd"] {
        let dir = tempdir();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: elsewhere\nresources:\n  - {}/k8s/{variant}\n",
                // kustomize takes no absolute bases: climb from the temporary directory.
                relative_root(dir.path())
            ),
        )
        .unwrap();
        let out = env.kubectl(&["kustomize", dir.path().to_str().unwrap()]);
        // Nothing still names the original namespace: not the objects, not RoleBinding
        // subjects, not etcd's member URLs.
        for bad in ["namespace: crown", "crown.svc"] {
            assert!(!out.contains(bad), "{variant}: {bad:?} left in:\n{out}");
        }
        let applied = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&out));
        assert!(applied.contains("deployment.apps/crown"), "{applied}");
        // Only the Namespace object itself is not created by a dry run: everything else is
        // accepted in `elsewhere`.
        assert!(!applied.contains("namespace/crown"), "{applied}");
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
    env.kubectl(&["apply", "-k", &format!("{ROOT}/k8s/kube")]);
    let crown = "leases.coordination.k8s.io/crown";
    let other = "leases.coordination.k8s.io/other-controller";
    let lease = "leases.coordination.k8s.io";
    let events = "events.events.k8s.io";
    let ns = Some("crown");
    // The election Lease by name; create alone (it cannot be limited by name).
    let allowed = [
        ("get", crown),
        ("list", crown),
        ("watch", crown),
        ("update", crown),
        ("create", lease),
        ("create", events),
        ("list", events),
        ("list", "pods"),
        ("patch", "pods"),
    ];
    for (verb, res) in allowed {
        assert!(
            can_i(&env, "crown-participant", verb, res, ns),
            "participant {verb} {res}"
        );
    }
    let denied = [
        ("get", other, ns),
        ("update", other, ns),
        ("patch", other, ns),
        ("delete", other, ns),
        ("delete", crown, ns),
        ("patch", crown, ns),
        ("list", lease, ns),
        ("deletecollection", lease, ns),
        ("get", crown, Some("default")),
        ("delete", events, ns),
        ("get", "pods", ns),
        ("delete", "pods", ns),
        ("patch", "pods", Some("default")),
        ("get", "secrets", ns),
        ("list", "configmaps", ns),
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
    // The dashboard: read the Lease and history, list Pods (heartbeats), `k` deletes the
    // leader's Pod, `r` patches a resign request onto the election Lease.
    for (verb, res) in [
        ("get", crown),
        ("patch", crown),
        ("list", events),
        ("get", "pods"),
        ("list", "pods"),
        ("delete", "pods"),
    ] {
        assert!(
            can_i(&env, "crown-dashboard", verb, res, ns),
            "dashboard {verb} {res}"
        );
    }
    for (verb, res, ns) in [
        ("update", crown, ns),
        ("delete", crown, ns),
        ("patch", other, ns),
        ("create", lease, ns),
        ("patch", "pods", ns),
        ("get", "secrets", ns),
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
    for variant in ["kube", "etcd", "examples/sidecar"] {
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
            .iter()
            .filter(|c| c["name"] == "crown")
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
            let backend = if variant == "etcd" { "etcd" } else { "kube" };
            assert!(said.contains(&format!("backend {backend}")), "{said}");
        }
    }
}

#[test]
fn scripts_pass_shellcheck() {
    let scripts: Vec<String> = std::fs::read_dir(format!("{ROOT}/scripts"))
        .unwrap()
        .chain(std::fs::read_dir(format!("{ROOT}/scripts/lib")).unwrap())
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".sh"))
        .collect();
    assert!(scripts.len() >= 4);
    let out = Command::new("shellcheck").arg("-x").args(&scripts).output().unwrap_or_else(|e| {
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
    // The etcd variant has no Lease: reading one would stop the script (set -e).
    assert!(!etcd.contains("get lease"), "{etcd}");
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
