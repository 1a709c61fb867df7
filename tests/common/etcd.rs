//! Real etcd for tests: one member or a three-member cluster of `/usr/bin/etcd` processes on
//! free loopback ports, data in a temp dir, killed on Drop; and a TCP proxy that can black-hole
//! a participant's traffic.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fails (never skips) when etcd is not installed.
pub fn require_etcd() {
    for (bin, arg) in [("etcd", "--version"), ("etcdctl", "version")] {
        let found = Command::new(bin)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "`{bin}` not found: install etcd: apt-get install -y etcd-server etcd-client"
        );
    }
}

/// A loopback port that no other etcd of this test process has had: ports below the kernel's
/// ephemeral range (32768+), handed out once each, so a test never reaches a member of another
/// test's cluster that took over a freed port.
fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20000 + (std::process::id() % 500) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 32700, "out of test ports");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct Etcd {
    dir: tempfile::TempDir,
    cluster: String,
    members: Vec<Member>,
    /// TLS files (ca, server cert, server key, client cert, client key), when serving TLS.
    tls: Option<[std::path::PathBuf; 5]>,
}

impl Etcd {
    /// Starts `n` members and waits until the cluster is healthy.
    pub fn start(n: usize) -> Etcd {
        Etcd::start_with(n, false)
    }

    /// One member serving clients over TLS with client-certificate auth, certificates made by
    /// `openssl` (a CA, a server cert for 127.0.0.1, a client cert).
    pub fn start_tls() -> Etcd {
        Etcd::start_with(1, true)
    }

    /// The TLS files: (ca, client cert, client key).
    pub fn client_tls(&self) -> (String, String, String) {
        let t = self.tls.as_ref().expect("a TLS etcd");
        let s = |p: &std::path::PathBuf| p.to_str().unwrap().to_string();
        (s(&t[0]), s(&t[3]), s(&t[4]))
    }

    fn make_certs(dir: &std::path::Path) -> [std::path::PathBuf; 5] {
        let p = |n: &str| dir.join(n);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (apt-get install -y openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=crown-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        for who in ["server", "client"] {
            let key = format!("{who}-key.pem");
            let csr = format!("{who}.csr");
            let pem = format!("{who}.pem");
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=127.0.0.1",
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ]);
        }
        [
            p("ca.pem"),
            p("server.pem"),
            p("server-key.pem"),
            p("client.pem"),
            p("client-key.pem"),
        ]
    }

    fn start_with(n: usize, tls: bool) -> Etcd {
        require_etcd();
        let dir = tempfile::Builder::new()
            .prefix("crown-etcd-")
            .tempdir()
            .unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let tls = tls.then(|| Etcd::make_certs(dir.path()));
        let mut e = Etcd {
            dir,
            cluster,
            members,
            tls,
        };
        for i in 0..n {
            e.spawn(i);
        }
        e.wait_healthy(&e.endpoints(), Duration::from_secs(30));
        e
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(format!("{}.data", m.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut tls_flags: Vec<&std::ffi::OsStr> = vec![];
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--trusted-ca-file", &t[0]),
                ("--cert-file", &t[1]),
                ("--key-file", &t[2]),
            ] {
                tls_flags.push(flag.as_ref());
                tls_flags.push(path.as_os_str());
            }
            tls_flags.push("--client-cert-auth".as_ref());
        }
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args(&tls_flags)
            .args([
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &self.cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "crown-test",
                "--logger",
                "zap",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// All client endpoints, comma-separated, member 0 first.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the member that is etcd's raft leader now.
    pub fn raft_leader(&self) -> usize {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("endpoint status json");
        let arr = v.as_array().unwrap();
        let leader = arr[0]["Status"]["leader"].as_u64().unwrap();
        let ep = arr
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .expect("leader among the endpoints")["Endpoint"]
            .as_str()
            .unwrap()
            .to_string();
        self.members
            .iter()
            .position(|m| format!("127.0.0.1:{}", m.client) == ep)
            .unwrap()
    }

    /// The raft member id of member `i` (parsed as u64: ids do not survive a double).
    pub fn member_id(&self, i: usize) -> u64 {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("endpoint status json");
        let ep = format!("127.0.0.1:{}", self.members[i].client);
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["Endpoint"].as_str().is_some_and(|e| e.ends_with(&ep)))
            .unwrap_or_else(|| panic!("member {i} not in {out}"))["Status"]["header"]["member_id"]
            .as_u64()
            .unwrap()
    }

    /// `etcdctl move-leader`: makes member `i` etcd's raft leader (and waits until it is).
    pub fn move_leader(&self, i: usize) {
        if self.raft_leader() == i {
            return;
        }
        let id = format!("{:x}", self.member_id(i));
        let out = Command::new("etcdctl")
            .args(self.ctl_tls())
            .args(["--endpoints", &self.endpoints(), "move-leader", &id])
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl move-leader {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.raft_leader() != i {
            assert!(
                Instant::now() < deadline,
                "member {i} did not become raft leader"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `etcdctl watch --prefix <prefix>` through `endpoints`, in the background: every output
    /// line with the instant it arrived.
    pub fn watch(&self, endpoints: &str, prefix: &str) -> Watch {
        let mut child = Command::new("etcdctl")
            .args(self.ctl_tls())
            .args(["--endpoints", endpoints, "watch", "--prefix", prefix])
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
        let o = out.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                o.lock().unwrap().push((Instant::now(), l));
            }
        });
        Watch { child, out }
    }

    /// The endpoints with member `first` first.
    pub fn endpoints_from(&self, first: usize) -> String {
        let mut v = vec![format!("127.0.0.1:{}", self.members[first].client)];
        for (i, m) in self.members.iter().enumerate() {
            if i != first {
                v.push(format!("127.0.0.1:{}", m.client));
            }
        }
        v.join(",")
    }

    /// The client port of member `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Waits until `etcdctl endpoint health` passes for `endpoints`.
    pub fn wait_healthy(&self, endpoints: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = Command::new("etcdctl")
                .args(self.ctl_tls())
                .args(["--endpoints", endpoints, "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd at {endpoints} not healthy within {timeout:?}; logs in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctl_tls(&self) -> Vec<String> {
        match &self.tls {
            Some(_) => {
                let (ca, cert, key) = self.client_tls();
                vec![
                    format!("--cacert={ca}"),
                    format!("--cert={cert}"),
                    format!("--key={key}"),
                ]
            }
            None => vec![],
        }
    }

    /// The session lease (hex) of the leader key of election `crown`: the oldest key under
    /// `crown/` (etcd's election order); `None` if there is none.
    pub fn leader_lease(&self) -> Option<String> {
        let out = self.etcdctl(&[
            "get",
            "--prefix",
            "crown/",
            "--sort-by=CREATE",
            "--order=ASCEND",
            "--limit=1",
            "-w",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        Some(format!("{:x}", v["kvs"][0]["lease"].as_i64()?))
    }

    /// `etcdctl <args>` against the whole cluster: stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .args(self.ctl_tls())
            .args(["--endpoints", &self.endpoints()])
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl elect <name> <value>` in the background.
    pub fn elect(&self, name: &str, value: &str) -> Elect {
        self.etcdctl_bg(&["elect", name, value])
    }

    /// `etcdctl elect -l <name>` (observation mode, runs until killed) in the background.
    pub fn listen(&self, name: &str) -> Elect {
        self.etcdctl_bg(&["elect", "-l", name])
    }

    fn etcdctl_bg(&self, args: &[&str]) -> Elect {
        let mut child = Command::new("etcdctl")
            .args(["--endpoints", &self.endpoints()])
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::<String>::new()));
        let o = out.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                o.lock().unwrap().push(l);
            }
        });
        Elect { child, out }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            // Keep the members' logs of a failed test.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("etcd logs kept in {}", dir.keep().display());
        }
    }
}

/// A background `etcdctl watch`.
pub struct Watch {
    child: Child,
    out: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Watch {
    /// When each key was seen deleted: (instant, key), in order.
    pub fn deletes(&self) -> Vec<(Instant, String)> {
        let out = self.out.lock().unwrap();
        out.windows(2)
            .filter(|w| w[0].1 == "DELETE")
            .map(|w| (w[0].0, w[1].1.clone()))
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Go elector of tests/interop/etcd-go (etcd's own `concurrency.Election`), built and
/// cached by scripts/build-etcd-go.sh.
pub fn etcd_go_bin() -> String {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/build-etcd-go.sh"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot build the Go etcd elector (needs Go and the Go module proxy): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A running Go `concurrency.Election` campaigner.
pub struct GoElector {
    pub child: Child,
    lines: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
}

impl GoElector {
    pub fn start(endpoints: &str, election: &str, id: &str, ttl: u32) -> GoElector {
        let mut child = Command::new(etcd_go_bin())
            .args(["--endpoints", endpoints, "--election", election, "--id", id])
            .args(["--ttl", &ttl.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(vec![]));
        let o = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if let Ok(v) = serde_json::from_str(&l) {
                    o.lock().unwrap().push((Instant::now(), v));
                }
            }
        });
        GoElector { child, lines }
    }

    /// The first event named `event`, if any yet.
    pub fn event(&self, event: &str) -> Option<(Instant, serde_json::Value)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, v)| v["event"] == event)
            .cloned()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }
}

impl Drop for GoElector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A background `etcdctl elect`.
pub struct Elect {
    pub child: Child,
    pub out: Arc<Mutex<Vec<String>>>,
}

impl Elect {
    /// Lines printed so far (the leader key and value, once elected).
    pub fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// Whether it has been elected (it prints its key when it is).
    pub fn elected(&self) -> bool {
        !self.out.lock().unwrap().is_empty()
    }

    /// SIGINT: etcdctl resigns and exits.
    pub fn resign(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Elect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy that can black-hole traffic (stop forwarding in both directions
/// without closing anything, like a network partition) and heal.
pub struct Proxy {
    pub port: u16,
    blocked: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    /// Base delay in ms of every chunk forwarded (each gets base ± base/2); 0 = none.
    delay: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let delay = Arc::new(AtomicU64::new(0));
        let (b, c, dl) = (blocked.clone(), closed.clone(), delay.clone());
        std::thread::spawn(move || {
            while !c.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                            continue;
                        };
                        client.set_nonblocking(false).unwrap();
                        for (from, to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let (b, c, dl) = (b.clone(), c.clone(), dl.clone());
                            std::thread::spawn(move || pump(from, to, b, c, dl));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            blocked,
            closed,
            delay,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops forwarding (connections stay open, bytes wait).
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
    }

    /// Forwards again (and without delay).
    pub fn heal(&self) {
        self.blocked.store(false, Ordering::SeqCst);
        self.delay.store(0, Ordering::SeqCst);
    }

    /// Delays every chunk, each way, by `ms` ± `ms / 2` (order kept).
    pub fn delay(&self, ms: u64) {
        self.delay.store(ms, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

fn pump(
    mut from: TcpStream,
    to: TcpStream,
    blocked: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    delay: Arc<AtomicU64>,
) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    // Delayed bytes go through a queue to a writer thread: each chunk is released at its
    // arrival + its delay (never before an earlier chunk), so latency does not cut throughput.
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let mut out = to.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for (at, bytes) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if out.write_all(&bytes).is_err() {
                break;
            }
        }
    });
    let mut last_release = Instant::now();
    let mut seed = (from.peer_addr().map(|a| a.port()).unwrap_or(1) as u64) | 1;
    let mut buf = [0u8; 16384];
    while !closed.load(Ordering::SeqCst) {
        if blocked.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let d = delay.load(Ordering::SeqCst);
                // base ± half of it, uniformly (xorshift); undelayed chunks still queue behind
                // delayed ones (a heal must not reorder the stream).
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let ms = if d == 0 { 0 } else { d / 2 + seed % (d + 1) };
                let at = (Instant::now() + Duration::from_millis(ms)).max(last_release);
                last_release = at;
                if tx.send((at, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
