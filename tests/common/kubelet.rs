//! A small test kubelet (test harness only, not part of crown): it binds Pods to one fake Node,
//! runs each Pod's `crown` container as a local `crown` process with the Pod's args and
//! downward-API env (POD_NAME, NAMESPACE, status.podIP) and a real service-account token for
//! the Pod's ServiceAccount (a TokenRequest, in a kubeconfig), probes readiness and liveness
//! like the kubelet (HTTP GET, periodSeconds, failureThreshold) and writes the Pod's status
//! (phase, podIP, Ready/ContainersReady conditions, containerStatuses), restarts a container
//! that exits (restartPolicy Always), and on deletion sends SIGTERM, SIGKILL after the grace
//! period, then removes the Pod object.
//!
//! Each Pod gets its own loopback address (127.0.0.2, .3, …) to listen on (`0.0.0.0` in its
//! args becomes that), so every `--http` listener keeps the container's port; its podIP is
//! reported as 10.244.0.N (EndpointSlices refuse loopback addresses). Nothing routes to those
//! podIPs: the kubelet probes the loopback address behind each.
#![allow(dead_code)]

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Node, Pod, Probe, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

pub const NODE: &str = "crown-test-node";

/// One process per running Pod, with what the kubelet knows about it.
struct Running {
    uid: String,
    /// The podIP reported in the status.
    ip: String,
    /// The loopback address the process listens on.
    local: String,
    child: Child,
    log: PathBuf,
    started: Instant,
    ready: bool,
    live_failures: i32,
    next_ready_probe: Instant,
    next_live_probe: Instant,
    restarts: i32,
}

/// A Pod's crown process log lines, for the test to read (one file per Pod and start).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<(String, PathBuf)>>>);

impl Logs {
    /// (pod name, log file) of every container start so far.
    pub fn all(&self) -> Vec<(String, PathBuf)> {
        self.0.lock().unwrap().clone()
    }
}

pub struct Kubelet {
    rt: Option<tokio::runtime::Runtime>,
    stop: tokio_util::sync::CancellationToken,
    pub logs: Logs,
    pub dir: PathBuf,
}

struct Ctx {
    client: kube::Client,
    ns: String,
    bin: String,
    dir: PathBuf,
    server: String,
    ca: String,
    next_ip: u8,
    logs: Logs,
    /// Pods whose process is being stopped (SIGTERM, grace, SIGKILL) before the Pod is removed.
    terminating: Arc<Mutex<HashSet<String>>>,
}

impl Kubelet {
    /// Runs the Pods of namespace `ns` with the binary `bin`, talking to the apiserver at
    /// `server` (CA `ca`) as the admin of `kubeconfig`; files go under `dir`.
    pub fn start(
        kubeconfig: &Path,
        server: &str,
        ca: &str,
        dir: &Path,
        ns: &str,
        bin: &str,
    ) -> Kubelet {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = dir.join("kubelet");
        std::fs::create_dir_all(&dir).unwrap();
        let client = rt.block_on(async {
            let k = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(k, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(cfg).unwrap()
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let logs = Logs::default();
        let ctx = Ctx {
            client,
            ns: ns.into(),
            bin: bin.into(),
            dir: dir.clone(),
            server: server.into(),
            ca: ca.into(),
            terminating: Arc::new(Mutex::new(HashSet::new())),
            next_ip: 2,
            logs: logs.clone(),
        };
        let s = stop.clone();
        rt.spawn(async move {
            let mut ctx = ctx;
            ensure_node(&ctx.client).await;
            let mut running: HashMap<String, Running> = HashMap::new();
            loop {
                if let Err(e) = sync(&mut ctx, &mut running).await {
                    eprintln!("test kubelet: {e}");
                }
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            for (_, mut r) in running.drain() {
                let _ = r.child.start_kill();
                let _ = r.child.wait().await;
            }
        });
        Kubelet {
            rt: Some(rt),
            stop,
            logs,
            dir,
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

async fn ensure_node(client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = Node {
        metadata: ObjectMeta {
            name: Some(NODE.into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    let _ = nodes.create(&PostParams::default(), &n).await;
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn sync(ctx: &mut Ctx, running: &mut HashMap<String, Running>) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let list = pods.list(&ListParams::default()).await.map_err(err)?;
    let mut seen = std::collections::HashSet::new();
    for p in list.items {
        let name = p.metadata.name.clone().unwrap_or_default();
        let uid = p.metadata.uid.clone().unwrap_or_default();
        seen.insert(uid.clone());
        let spec = p.spec.clone().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            if ctx.terminating.lock().unwrap().contains(&uid) {
                continue;
            }
            let grace = p
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64;
            let r = running.remove(&uid);
            ctx.terminating.lock().unwrap().insert(uid.clone());
            let terminating = ctx.terminating.clone();
            let pods = pods.clone();
            tokio::spawn(async move {
                if let Some(mut r) = r {
                    let pid = r.child.id().map(|id| Pid::from_raw(id as i32));
                    if let Some(pid) = pid {
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                    if tokio::time::timeout(Duration::from_secs(grace), r.child.wait())
                        .await
                        .is_err()
                    {
                        let _ = r.child.start_kill();
                        let _ = r.child.wait().await;
                    }
                }
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                let _ = pods.delete(&name, &dp).await;
                terminating.lock().unwrap().remove(&uid);
            });
            continue;
        }
        if spec.node_name.is_none() {
            let binding = serde_json::json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
            });
            let _: Result<serde_json::Value, _> = pods
                .create_subresource("binding", &name, &PostParams::default(), &binding)
                .await;
            continue;
        }
        if spec.node_name.as_deref() != Some(NODE) {
            continue;
        }
        let Some(c) = spec.containers.iter().find(|c| c.name == "crown").cloned() else {
            continue;
        };
        match running.get_mut(&uid) {
            None => {
                let n = ctx.next_ip;
                ctx.next_ip = ctx.next_ip.wrapping_add(1).max(2);
                let r = start(ctx, &p, &c, n, 0).await?;
                running.insert(uid.clone(), r);
                write_status(&pods, &name, running.get(&uid).unwrap()).await?;
            }
            Some(r) => {
                if let Ok(Some(_)) = r.child.try_wait() {
                    // restartPolicy Always (without the back-off growth).
                    let restarts = r.restarts + 1;
                    let n: u8 = r.local.rsplit('.').next().unwrap().parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let nr = start(ctx, &p, &c, n, restarts).await?;
                    *r = nr;
                    write_status(&pods, &name, r).await?;
                    continue;
                }
                let now = Instant::now();
                let mut changed = false;
                if let Some(pr) = &c.readiness_probe
                    && now >= r.next_ready_probe
                {
                    r.next_ready_probe = now + period(pr);
                    let ok = now >= r.started + initial(pr) && probe(pr, &c, &r.local).await;
                    if ok != r.ready {
                        r.ready = ok;
                        changed = true;
                    }
                } else if c.readiness_probe.is_none() && !r.ready {
                    r.ready = true;
                    changed = true;
                }
                if let Some(pr) = &c.liveness_probe
                    && now >= r.next_live_probe
                    && now >= r.started + initial(pr)
                {
                    r.next_live_probe = now + period(pr);
                    if probe(pr, &c, &r.local).await {
                        r.live_failures = 0;
                    } else {
                        r.live_failures += 1;
                        if r.live_failures >= pr.failure_threshold.unwrap_or(3) {
                            let _ = r.child.start_kill();
                        }
                    }
                }
                if changed {
                    write_status(&pods, &name, r).await?;
                }
            }
        }
    }
    // Pods gone without a graceful deletion (force-deleted): stop their processes.
    let gone: Vec<String> = running
        .keys()
        .filter(|u| !seen.contains(*u))
        .cloned()
        .collect();
    for u in gone {
        if let Some(mut r) = running.remove(&u) {
            let _ = r.child.start_kill();
            let _ = r.child.wait().await;
        }
    }
    Ok(())
}

fn period(p: &Probe) -> Duration {
    Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64)
}

fn initial(p: &Probe) -> Duration {
    Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
}

async fn probe(p: &Probe, c: &Container, ip: &str) -> bool {
    let Some(g) = &p.http_get else { return true };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let port = match &g.port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(s.as_str()))
            .map(|cp| cp.container_port)
            .unwrap_or(0),
    };
    let url = format!("http://{ip}:{port}{}", g.path.as_deref().unwrap_or("/"));
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    match reqwest::Client::new()
        .get(&url)
        .timeout(timeout)
        .send()
        .await
    {
        Ok(r) => (200..400).contains(&r.status().as_u16()),
        Err(_) => false,
    }
}

/// `$(VAR)` expansion as Kubernetes does it for env values and args.
fn expand(s: &str, vars: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

async fn service_account_kubeconfig(ctx: &Ctx, sa: &str, pod: &str) -> Result<PathBuf, String> {
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let got: TokenRequest = sas
        .create_subresource("token", sa, &PostParams::default(), &tr)
        .await
        .map_err(|e| format!("token for {sa}: {e}"))?;
    let token = got.status.map(|s| s.token).unwrap_or_default();
    let path = ctx.dir.join(format!("{pod}.kubeconfig"));
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context:\n    cluster: c\n    user: sa\ncurrent-context: sa\n",
        ctx.server, ctx.ca
    );
    std::fs::write(&path, kc).map_err(err)?;
    Ok(path)
}

async fn start(ctx: &Ctx, p: &Pod, c: &Container, n: u8, restarts: i32) -> Result<Running, String> {
    let ip = format!("10.244.0.{n}");
    let local = format!("127.0.0.{n}");
    let name = p.metadata.name.clone().unwrap_or_default();
    let spec = p.spec.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = vec![];
    for e in c.env.iter().flatten() {
        let v = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(f) = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
            match f.field_path.as_str() {
                "metadata.name" => name.clone(),
                "metadata.namespace" => ctx.ns.clone(),
                "status.podIP" => ip.clone(),
                other => return Err(format!("unsupported fieldRef {other}")),
            }
        } else {
            continue;
        };
        vars.push((e.name.clone(), v));
    }
    let args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|a| expand(a, &vars))
        // 0.0.0.0 would be every Pod's address at once: listen on this Pod's own.
        .map(|a| a.replace("0.0.0.0:", &format!("{local}:")))
        .collect();
    let home = ctx.dir.join("home");
    std::fs::create_dir_all(&home).map_err(err)?;
    let mut cmd = Command::new(&ctx.bin);
    cmd.args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .envs(vars.iter().map(|(k, v)| (k, v)));
    if spec.automount_service_account_token != Some(false) {
        let sa = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let kc = service_account_kubeconfig(ctx, &sa, &name).await?;
        cmd.env("KUBECONFIG", kc);
    }
    let log = ctx.dir.join(format!("{name}.{restarts}.log"));
    let f = std::fs::File::create(&log).map_err(err)?;
    cmd.stdout(Stdio::null())
        .stderr(f)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("spawn {}: {e}", ctx.bin))?;
    ctx.logs.0.lock().unwrap().push((name.clone(), log.clone()));
    let now = Instant::now();
    Ok(Running {
        uid: p.metadata.uid.clone().unwrap_or_default(),
        ip,
        local,
        child,
        log,
        started: now,
        ready: false,
        live_failures: 0,
        next_ready_probe: now,
        next_live_probe: now,
        restarts,
    })
}

async fn write_status(pods: &Api<Pod>, name: &str, r: &Running) -> Result<(), String> {
    let now = jiff::Timestamp::now().to_string();
    let ready = if r.ready { "True" } else { "False" };
    let cond =
        |t: &str, s: &str| serde_json::json!({"type": t, "status": s, "lastTransitionTime": now});
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": r.ip,
        "podIPs": [{"ip": r.ip}],
        "startTime": now,
        "conditions": [
            cond("PodScheduled", "True"),
            cond("Initialized", "True"),
            cond("ContainersReady", ready),
            cond("Ready", ready),
        ],
        "containerStatuses": [{
            "name": "crown",
            "ready": r.ready,
            "started": true,
            "restartCount": r.restarts,
            "image": "crown:local",
            "imageID": "",
            "state": {"running": {"startedAt": now}},
        }],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map(|_| ())
        .map_err(|e| format!("status of {name}: {e}"))
}
