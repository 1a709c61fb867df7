//! A real kube-apiserver (over etcd) per test, started by `scripts/kube-test-env.sh` on free
//! loopback ports, stopped on drop. Fails, never skips, when it cannot be built or started.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kube-test-env.sh");

pub struct KubeEnv {
    pub dir: tempfile::TempDir,
    pub vars: HashMap<String, String>,
}

fn script(args: &[&str], dir: &Path) -> Output {
    Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run scripts/kube-test-env.sh")
}

impl KubeEnv {
    pub fn start() -> KubeEnv {
        let dir = tempfile::Builder::new()
            .prefix("crown-kube-")
            .tempdir()
            .unwrap();
        let out = script(&["start"], dir.path());
        assert!(
            out.status.success(),
            "could not start a kube-apiserver (build it with `scripts/kube-test-env.sh build`; needs Go and the Debian package etcd-server: `make setup`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let vars = env
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        KubeEnv { dir, vars }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn participant_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig-participant")
    }

    /// Environment for a crown process using `kubeconfig`.
    pub fn env_for(&self, kubeconfig: &Path) -> Vec<(String, String)> {
        vec![("KUBECONFIG".into(), kubeconfig.to_str().unwrap().into())]
    }

    pub fn admin_env(&self) -> Vec<(String, String)> {
        self.env_for(&self.kubeconfig())
    }

    /// kubectl as admin; panics with its stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_try(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The holder and `leaseTransitions` of Lease `namespace/lease`, by kubectl; `None`
    /// while it is missing or held by nobody.
    pub fn lease_holder(&self, namespace: &str, lease: &str) -> Option<(String, u64)> {
        let out = self.kubectl_try(
            &[
                "-n",
                namespace,
                "get",
                "lease",
                lease,
                "-o",
                "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
            ],
            None,
        );
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        let (h, t) = s.trim().split_once(' ')?;
        (!h.is_empty()).then(|| (h.to_string(), t.parse().unwrap_or(0)))
    }

    pub fn kubectl_try(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let kubectl = self
            .vars
            .get("CROWN_KUBECTL")
            .cloned()
            .unwrap_or_else(|| "kubectl".into());
        let mut child = Command::new(kubectl)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// A kubeconfig as admin that impersonates `user` (e.g. a service account), written to
    /// the test's directory: RBAC is checked as that user.
    pub fn kubeconfig_as(&self, user: &str) -> PathBuf {
        let raw = self.kubectl(&["config", "view", "--raw", "-o", "json"]);
        let mut cfg: serde_json::Value = serde_json::from_str(&raw).unwrap();
        for u in cfg["users"].as_array_mut().unwrap() {
            u["user"]["as"] = user.into();
        }
        let kc = self
            .dir
            .path()
            .join(format!("kubeconfig-as-{}", user.replace(':', "-")));
        std::fs::write(&kc, serde_json::to_string(&cfg).unwrap()).unwrap();
        kc
    }

    /// A Pod object named `name` with crown's label (or none), as the Deployment makes them.
    /// With no kubelet it stays Pending; crown only labels and annotates it.
    pub fn create_pod(&self, ns: &str, name: &str, crown_label: bool) {
        let labels = if crown_label {
            "  labels:\n    app.kubernetes.io/name: crown\n    app.kubernetes.io/component: participant\n"
        } else {
            ""
        };
        let doc = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{labels}spec:\n  containers:\n    - name: crown\n      image: crown:local\n"
        );
        self.kubectl_stdin(&["apply", "-f", "-"], Some(&doc));
    }

    /// Names of the Pods in `ns` labelled `crown.io/leader=true`.
    pub fn leader_pods(&self, ns: &str) -> Vec<String> {
        let out = self.kubectl(&[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            "crown.io/leader=true",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        out.split_whitespace().map(String::from).collect()
    }

    /// Starts kube-controller-manager (deployment, replicaset, endpointslice, disruption,
    /// namespace, garbage collector controllers) against this apiserver, building it once.
    pub fn start_controller_manager(&self) {
        let out = script(&["start-controller-manager"], self.dir.path());
        assert!(
            out.status.success(),
            "could not start kube-controller-manager (build it with `scripts/kube-test-env.sh build-controller-manager`; needs Go):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn stop_apiserver(&self) {
        let out = script(&["stop-apiserver"], self.dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kill -9 of the apiserver (a crash, not a graceful shutdown).
    pub fn kill_apiserver(&self) {
        let out = script(&["stop-apiserver", "--kill"], self.dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_apiserver(&self) {
        let out = script(&["start-apiserver"], self.dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        let _ = script(&["stop"], self.dir.path());
    }
}
