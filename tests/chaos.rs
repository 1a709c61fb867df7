//! The fault campaign (`make chaos` runs ≥ 1000 faults per backend; `make test` a short one).
//!
//! Three participants per backend run `crown run … -- chaos-writer.sh`: while one leads, its
//! workload (the sidecar child) appends `W <term> <id>` to a *fenced log* every 50 ms. The
//! fenced log is a tiny TCP server in this test that rejects a write whose term is lower than
//! the highest term it has accepted, and records everything. Random faults hit the leader or
//! the backend: `kill -9`; SIGSTOP past the lease then SIGCONT (crown is frozen, its child is
//! not: the fence has to reject the child's writes; on the file backend the stop lands outside
//! the compare-and-swap, see `World::stop_outside_cas`); a cut link between the leader and its
//! backend (a black-holing TCP proxy); an etcd member killed; etcd quorum lost and restored;
//! the kube-apiserver restarted; a graceful SIGTERM; (file backend) an unrelated process that
//! holds read-only fds on, and tries `flock` on, every file in the directory, both as root
//! (not a participant) and as a second local user.
//!
//! The campaign fails on (all must be 0):
//! - an accepted write with overlapping leadership: a term below one already accepted, or a
//!   term already written by another holder;
//! - one term granted to two participants (their logs), a grant whose term is not above every
//!   earlier grant, a holder in the backend's history that disagrees with the logs, a write
//!   from a participant that never led in that term;
//! - a leader resumed from SIGSTOP that logs a renewal in its old term;
//! - a cut-off leader whose successor was granted before it stepped down;
//! - an election that does not recover (no leader within a minute after a fault ends).
//!
//! It reports, per fault kind: stale writes rejected, late writes accepted (an old term's write
//! that reached the log after its successor was granted but before the successor wrote: the
//! window only fencing closes), and the longest time without a leader.
//!
//! Environment: `CROWN_CHAOS_FAULTS` (default 50), `CROWN_CHAOS_SEED` (default: the clock; the
//! seed is printed), `CROWN_CHAOS_REPORT` (directory for `<backend>.md`/`.json`, default
//! `target/chaos`).

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "hostile/second_user.rs"]
mod second_user;

use common::kube::KubeEnv;
use common::*;
use etcd::{Etcd, Proxy};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous bound for an election to recover after a fault (functional, not a timing claim).
const RECOVER: Duration = Duration::from_secs(60);
const PARTICIPANTS: usize = 3;

// ---------------------------------------------------------------------------------------------
// The fenced log
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Write {
    at: Instant,
    term: u64,
    id: String,
    /// Index of the fault in progress when the write arrived.
    fault: usize,
}

#[derive(Default)]
struct Fence {
    max: u64,
    accepted: Vec<Write>,
    rejected: Vec<Write>,
}

/// A log that accepts `W <term> <id>` only if `term` ≥ the highest term accepted so far.
struct FencedLog {
    port: u16,
    fence: Arc<Mutex<Fence>>,
    fault: Arc<AtomicUsize>,
}

impl FencedLog {
    fn start() -> FencedLog {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fence = Arc::new(Mutex::new(Fence::default()));
        let fault = Arc::new(AtomicUsize::new(0));
        let (f, n) = (fence.clone(), fault.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (f, n) = (f.clone(), n.clone());
                std::thread::spawn(move || serve(conn, f, n));
            }
        });
        FencedLog { port, fence, fault }
    }
}

fn serve(conn: std::net::TcpStream, fence: Arc<Mutex<Fence>>, fault: Arc<AtomicUsize>) {
    let mut out = conn.try_clone().unwrap();
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let mut it = line.split_whitespace();
        let (Some("W"), Some(term), Some(id)) = (it.next(), it.next(), it.next()) else {
            let _ = out.write_all(b"ERR\n");
            continue;
        };
        let Ok(term) = term.parse::<u64>() else {
            let _ = out.write_all(b"ERR\n");
            continue;
        };
        let w = Write {
            at: Instant::now(),
            term,
            id: id.to_string(),
            fault: fault.load(Ordering::SeqCst),
        };
        let reply = {
            let mut g = fence.lock().unwrap();
            if term < g.max {
                let max = g.max;
                g.rejected.push(w);
                format!("STALE {max}\n")
            } else {
                g.max = term;
                g.accepted.push(w);
                "OK\n".to_string()
            }
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The workload: while crown leads, one fenced write every 50 ms (no fork per write).
const WRITER: &str = r#"#!/usr/bin/env bash
# chaos workload: appends "W <term> <id>" to the fenced log at 127.0.0.1:$1 every 50 ms.
exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
while :; do
  printf 'W %s %s\n' "$CROWN_TERM" "$CROWN_ID" >&3 || exit 1
  read -r _ <&3 || exit 1
  if read -r -t 0.05 -u 3 _; then exit 1; fi
done
"#;

// ---------------------------------------------------------------------------------------------
// The world: a backend server, participants, their links
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill9,
    Pause,
    Sigterm,
    Cut,
    MemberKill,
    RaftLeaderKill,
    Delay,
    Quorum,
    ApiserverRestart,
    Intruder,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill -9 leader",
            Kind::Pause => "SIGSTOP leader past the lease, SIGCONT",
            Kind::Sigterm => "SIGTERM leader (graceful)",
            Kind::Cut => "cut leader's link to the backend, heal",
            Kind::MemberKill => "kill -9 one etcd member, restart",
            Kind::RaftLeaderKill => {
                "kill -9 etcd's raft leader (half the time the crowns' member), restart"
            }
            Kind::Delay => "delay the leader's link to etcd by 200 ms ± 100 ms, heal",
            Kind::Quorum => "kill 2 of 3 etcd members, restore",
            Kind::ApiserverRestart => "kube-apiserver stopped (SIGTERM or kill -9), restarted",
            Kind::Intruder => "an unrelated process holds fds on / tries flock on every file",
        }
    }
    /// Faults after which the old leader stops acting at the injection itself.
    fn stops_leader_at_once(self) -> bool {
        matches!(self, Kind::Kill9 | Kind::Pause | Kind::Sigterm)
    }
}

enum Server {
    File,
    Etcd(Etcd),
    Kube(KubeEnv),
}

struct Member {
    p: Participant,
    proxies: Vec<Proxy>,
    alive: bool,
}

struct World {
    backend: &'static str,
    server: Server,
    dir: tempfile::TempDir,
    fence: FencedLog,
    members: Vec<Member>,
    next: usize,
    rng: u64,
    /// (member index, old term, resumed at): a resumed leader must not renew in its old term.
    resumed: Vec<(usize, u64, Instant)>,
    violations: Vec<String>,
}

/// One fault's outcome.
#[derive(Debug)]
struct Outcome {
    kind: Kind,
    /// The leader hit and its term; the term after the fault.
    leader: String,
    term: u64,
    new_term: u64,
    /// From the start of this fault to the end of its settling.
    took: Duration,
    /// Time without a leader, if the fault ended a term.
    gap: Option<Duration>,
}

impl World {
    fn new(backend: &'static str, seed: u64) -> World {
        let dir = tempdir();
        std::fs::write(dir.path().join("chaos-writer.sh"), WRITER).unwrap();
        let server = match backend {
            "file" => Server::File,
            "etcd" => {
                etcd::require_etcd();
                Server::Etcd(Etcd::start(3))
            }
            "kube" => {
                let env = KubeEnv::start();
                env.kubectl(&["create", "namespace", "chaos"]);
                Server::Kube(env)
            }
            _ => unreachable!(),
        };
        let mut w = World {
            backend,
            server,
            dir,
            fence: FencedLog::start(),
            members: vec![],
            next: 0,
            rng: seed | 1,
            resumed: vec![],
            violations: vec![],
        };
        for _ in 0..PARTICIPANTS {
            w.spawn();
        }
        w
    }

    fn rand(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    }

    fn kinds(&self) -> Vec<Kind> {
        match self.server {
            Server::File => vec![Kind::Kill9, Kind::Pause, Kind::Sigterm, Kind::Intruder],
            Server::Etcd(_) => vec![
                Kind::Kill9,
                Kind::Pause,
                Kind::Sigterm,
                Kind::Cut,
                Kind::MemberKill,
                Kind::RaftLeaderKill,
                Kind::Delay,
                Kind::Quorum,
            ],
            Server::Kube(_) => vec![
                Kind::Kill9,
                Kind::Pause,
                Kind::Sigterm,
                Kind::Cut,
                Kind::ApiserverRestart,
            ],
        }
    }

    /// Starts a new participant (fresh id) with its own links to the backend.
    fn spawn(&mut self) {
        let id = format!("p{}", self.next);
        self.next += 1;
        let mut args: Vec<String> = vec!["--backend".into(), self.backend.into()];
        let mut envs = vec![];
        let mut proxies = vec![];
        match &self.server {
            Server::File => {
                args.extend(["--dir".into(), self.dir.path().display().to_string()]);
            }
            Server::Etcd(e) => {
                proxies = (0..3).map(|i| Proxy::start(e.port(i))).collect();
                let eps: Vec<String> = proxies.iter().map(Proxy::endpoint).collect();
                args.extend(["--endpoints".into(), eps.join(",")]);
            }
            Server::Kube(env) => {
                let proxy = Proxy::start(env.vars["CROWN_KUBE_APISERVER_PORT"].parse().unwrap());
                let kc = std::fs::read_to_string(env.kubeconfig()).unwrap().replace(
                    &env.vars["CROWN_KUBE_APISERVER_URL"],
                    &format!("https://127.0.0.1:{}", proxy.port),
                );
                let path = self.dir.path().join(format!("kubeconfig-{id}"));
                std::fs::write(&path, kc).unwrap();
                envs.push(("KUBECONFIG".to_string(), path.display().to_string()));
                args.extend(["--namespace".into(), "chaos".into()]);
                proxies.push(proxy);
            }
        }
        args.extend(timings_fast());
        args.extend(
            [
                "--grace",
                "300ms",
                "--on-child-exit",
                "restart",
                "--",
                "bash",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.push(
            self.dir
                .path()
                .join("chaos-writer.sh")
                .display()
                .to_string(),
        );
        args.push(self.fence.port.to_string());
        let p = Participant::spawn_with(&id, &args, &envs);
        self.members.push(Member {
            p,
            proxies,
            alive: true,
        });
    }

    /// The flags `crown history` needs for this backend.
    fn history(&self) -> Vec<serde_json::Value> {
        let mut args = vec![
            "history".to_string(),
            "-o".into(),
            "json".into(),
            "--backend".into(),
            self.backend.into(),
        ];
        let mut envs = vec![];
        match &self.server {
            Server::File => args.extend(["--dir".into(), self.dir.path().display().to_string()]),
            Server::Etcd(e) => args.extend(["--endpoints".into(), e.endpoints()]),
            Server::Kube(env) => {
                args.extend(["--namespace".into(), "chaos".into()]);
                envs = env.admin_env();
            }
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = crown_env(&a, &envs);
        assert_eq!(code, 0, "crown history: {err}");
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The participant leading now (alive, its last leadership line a grant), highest term.
    fn leader(&self, above: u64, exclude: Option<usize>) -> Option<(usize, u64, Instant)> {
        let mut best: Option<(usize, u64, Instant)> = None;
        for (i, m) in self.members.iter().enumerate() {
            if !m.alive || Some(i) == exclude {
                continue;
            }
            let lines = m.p.lines.0.lock().unwrap();
            let last = lines
                .iter()
                .rev()
                .find(|l| matches!(l.event(), "became_leader" | "stopped_leading"));
            if let Some(l) = last
                && l.event() == "became_leader"
                && l.term().unwrap_or(0) > above
                && best.is_none_or(|b| l.term().unwrap() > b.1)
            {
                best = Some((i, l.term().unwrap(), l.at));
            }
        }
        best
    }

    /// Waits for a leader above `above` (not `exclude`); None after `timeout`.
    fn wait_leader(
        &self,
        above: u64,
        exclude: Option<usize>,
        timeout: Duration,
    ) -> Option<(usize, u64, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader(above, exclude) {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for member `i` to log `event` in `term` (any term if None) after `after`.
    fn wait_line(
        &self,
        i: usize,
        event: &str,
        term: Option<u64>,
        after: Instant,
        timeout: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.members[i]
                .p
                .lines()
                .iter()
                .find(|l| {
                    l.at >= after && l.event() == event && term.is_none_or(|t| l.term() == Some(t))
                })
                .map(|l| l.at);
            if found.is_some() {
                return found;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, i: usize, sig: Signal) {
        let _ = kill(Pid::from_raw(self.members[i].p.pid()), sig);
    }

    /// Marks member `i` gone (reaped), drops its links, starts a replacement.
    fn replace(&mut self, i: usize) {
        let m = &mut self.members[i];
        let _ = m.p.child.wait();
        m.alive = false;
        m.proxies.clear();
        self.spawn();
    }

    /// The own timestamp of member `i`'s first line `event` (in `term`) read after `after`.
    fn line_time(
        &self,
        i: usize,
        event: &str,
        term: Option<u64>,
        after: Instant,
    ) -> Option<jiff::Timestamp> {
        self.members[i]
            .p
            .lines()
            .iter()
            .find(|l| {
                l.at >= after && l.event() == event && term.is_none_or(|t| l.term() == Some(t))
            })
            .map(|l| l.timestamp())
    }

    /// Every member's log lines since `t0`, in the order the test read them: when read (from
    /// `t0`), the line's own timestamp, who, event, term and message. For violation reports.
    fn timeline(&self, t0: Instant) -> String {
        const LOOKBACK: Duration = Duration::from_secs(3);
        let mut all: Vec<(Instant, String)> = vec![];
        for m in &self.members {
            for l in m.p.lines().into_iter().filter(|l| l.at + LOOKBACK >= t0) {
                all.push((
                    l.at,
                    format!(
                        "{:>6} ms  {}  {}  {} term={:?} {}",
                        l.at.saturating_duration_since(t0).as_millis() as i128
                            - t0.saturating_duration_since(l.at).as_millis() as i128,
                        l.json["timestamp"].as_str().unwrap_or("?"),
                        m.p.id,
                        l.event(),
                        l.term(),
                        l.message()
                    ),
                ));
            }
        }
        all.sort_by_key(|(at, _)| *at);
        all.into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn fail(&mut self, what: String) {
        eprintln!("chaos[{}]: VIOLATION: {what}", self.backend);
        self.violations.push(what);
    }

    /// The compare-and-swap lock files (`*.lock`) of a file election; none for the others.
    fn lock_files(&self) -> Vec<PathBuf> {
        if !matches!(self.server, Server::File) {
            return vec![];
        }
        std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "lock"))
            .collect()
    }

    /// SIGSTOPs member `i`, on a file election at a moment it is not inside its
    /// compare-and-swap: the test holds every `*.lock` while it sends the signal. A participant
    /// frozen inside that section (the re-read, compare and rename of one write) holds the lock
    /// and so stalls every takeover until it resumes or dies; that is the file backend's
    /// documented limit (README, "file backend"), not what this fault tests.
    fn stop_outside_cas(&self, i: usize) {
        let held: Vec<std::fs::File> = self
            .lock_files()
            .iter()
            .filter_map(|p| {
                let f = std::fs::File::open(p).ok()?;
                f.lock().ok()?;
                Some(f)
            })
            .collect();
        self.signal(i, Signal::SIGSTOP);
        drop(held);
    }

    /// For a file election that stalls: which compare-and-swap locks are held right now, as
    /// the test process finds them with a non-blocking flock.
    fn held_locks(&self) -> String {
        if !matches!(self.server, Server::File) {
            return String::new();
        }
        let held: Vec<String> = self
            .lock_files()
            .iter()
            .filter(|p| {
                std::fs::File::open(p).is_ok_and(|f| {
                    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
                })
            })
            .map(|p| p.display().to_string())
            .collect();
        if held.is_empty() {
            " (no compare-and-swap lock is held)".into()
        } else {
            format!(" (held right now: {})", held.join(", "))
        }
    }

    /// Every file of the election directory (the members' heartbeats too), not the test's own.
    fn election_files(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "chaos-writer.sh" || name.starts_with("kubeconfig-") {
                    continue;
                }
                if p.is_dir() {
                    dirs.push(p.clone());
                }
                out.push(p);
            }
        }
        out
    }

    /// The intruder fault: root (not a participant) opens every file read-only and tries a
    /// shared `flock` on each, holding the fds for `hold`; the second user tries the same and
    /// must fail on every file. The leader must not lose its term to any of it.
    fn intrude(&mut self, n: usize, l: usize, term: u64, t0: Instant, hold: Duration) {
        let files = self.election_files();
        let held: Vec<std::fs::File> = files
            .iter()
            .filter_map(|p| std::fs::File::open(p).ok())
            .collect();
        for p in &files {
            let _ = std::process::Command::new("flock")
                .args(["-n", "-s"])
                .arg(p)
                .arg("true")
                .status();
        }
        let mut argv = vec![
            "sh",
            "-c",
            r#"for f; do if { : <"$f"; } 2>/dev/null; then echo "opened $f"; fi; if flock -n -s "$f" true 2>/dev/null; then echo "locked $f"; fi; done"#,
            "sh",
        ];
        let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        argv.extend(paths.iter().map(String::as_str));
        let out = second_user::as_intruder(&argv);
        let got = String::from_utf8_lossy(&out.stdout);
        if !got.trim().is_empty() {
            self.fail(format!(
                "fault {n}: {} reached the election's files: {}",
                second_user::INTRUDER,
                got.trim().replace('\n', "; ")
            ));
        }
        std::thread::sleep(hold.saturating_sub(t0.elapsed()));
        drop(held);
        if let Some(at) = self.wait_line(l, "stopped_leading", Some(term), t0, Duration::ZERO) {
            let id = self.members[l].p.id.clone();
            self.fail(format!(
                "fault {n}: {id} lost term {term} {:?} into an intruder's fds and flocks",
                at - t0
            ));
        }
    }

    /// Runs one fault against the current leader; returns what happened.
    fn fault(&mut self, n: usize, kind: Kind) -> Result<Outcome, String> {
        self.fence.fault.store(n, Ordering::SeqCst);
        let (l, term, _) = self
            .wait_leader(0, None, RECOVER)
            .ok_or("no leader before the fault")?;
        let t0 = Instant::now();
        let mut old_stopped: Option<Instant> = None;
        match kind {
            Kind::Kill9 | Kind::Sigterm => {
                self.signal(
                    l,
                    if kind == Kind::Kill9 {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    },
                );
                self.wait_leader(term, Some(l), RECOVER)
                    .ok_or("no new leader after the old one ended")?;
                self.replace(l);
            }
            Kind::Pause => {
                self.stop_outside_cas(l);
                let (_, _, granted) =
                    self.wait_leader(term, Some(l), RECOVER).ok_or_else(|| {
                        format!(
                            "no new leader while the old one was stopped{}",
                            self.held_locks()
                        )
                    })?;
                // The frozen leader's child writes on: wait until the fence has turned one away.
                let id = self.members[l].p.id.clone();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    let g = self.fence.fence.lock().unwrap();
                    if g.rejected
                        .iter()
                        .any(|w| w.id == id && w.term == term && w.at > granted)
                    {
                        break;
                    }
                    drop(g);
                    std::thread::sleep(Duration::from_millis(5));
                }
                let resumed = Instant::now();
                self.signal(l, Signal::SIGCONT);
                self.resumed.push((l, term, resumed));
                self.wait_line(
                    l,
                    "stopped_leading",
                    Some(term),
                    resumed,
                    Duration::from_secs(15),
                )
                .ok_or("the resumed leader did not step down")?;
            }
            Kind::Cut => {
                for p in &self.members[l].proxies {
                    p.block();
                }
                let down = self.wait_line(l, "stopped_leading", Some(term), t0, RECOVER);
                let (next, new_term, _) = self
                    .wait_leader(term, Some(l), RECOVER)
                    .ok_or("no new leader after cutting the leader off")?;
                let down = down.ok_or("the cut-off leader did not step down")?;
                old_stopped = Some(down);
                // Judged in process time, on the two log lines' own timestamps: the test's
                // reading of the output pipes may lag on a loaded machine.
                let stopped_at = self.line_time(l, "stopped_leading", Some(term), t0);
                let granted_at = self.line_time(next, "became_leader", Some(new_term), t0);
                if let (Some(stopped_at), Some(granted_at)) = (stopped_at, granted_at)
                    && granted_at < stopped_at
                {
                    let id = self.members[l].p.id.clone();
                    let timeline = self.timeline(t0);
                    self.fail(format!(
                        "fault {n}: {id} (term {term}) was cut off and stepped down {:#} after its successor was granted\n{timeline}",
                        stopped_at.duration_since(granted_at)
                    ));
                }
                for p in &self.members[l].proxies {
                    p.heal();
                }
                self.wait_line(l, "follower", Some(new_term), t0, RECOVER)
                    .ok_or("the healed leader did not follow its successor")?;
            }
            Kind::MemberKill => {
                let m = self.rand(3) as usize;
                let hold = 500 + self.rand(1500);
                let Server::Etcd(e) = &mut self.server else {
                    unreachable!()
                };
                e.kill(m);
                std::thread::sleep(Duration::from_millis(hold));
                e.restart(m);
                let eps = e.endpoints();
                e.wait_healthy(&eps, RECOVER);
            }
            Kind::RaftLeaderKill => {
                // Half the time, first make the member the crowns talk to (their first
                // endpoint) the raft leader, so both die together.
                let place = self.rand(2) == 0;
                let hold = 500 + self.rand(1500);
                let Server::Etcd(e) = &mut self.server else {
                    unreachable!()
                };
                if place {
                    e.move_leader(0);
                }
                let r = e.raft_leader();
                e.kill(r);
                std::thread::sleep(Duration::from_millis(hold));
                e.restart(r);
                let eps = e.endpoints();
                e.wait_healthy(&eps, RECOVER);
            }
            Kind::Delay => {
                let hold = 2000 + self.rand(3000);
                for p in &self.members[l].proxies {
                    p.delay(200);
                }
                std::thread::sleep(Duration::from_millis(hold));
                for p in &self.members[l].proxies {
                    p.heal();
                }
            }
            Kind::Quorum => {
                let keep = self.rand(3) as usize;
                {
                    let Server::Etcd(e) = &mut self.server else {
                        unreachable!()
                    };
                    for m in (0..3).filter(|&m| m != keep) {
                        e.kill(m);
                    }
                }
                let down = self
                    .wait_line(
                        l,
                        "stopped_leading",
                        Some(term),
                        t0,
                        Duration::from_secs(15),
                    )
                    .ok_or("the leader did not step down without quorum")?;
                old_stopped = Some(down);
                let hold = self.rand(1000);
                std::thread::sleep(Duration::from_millis(hold));
                // Nobody may be granted leadership while quorum is lost.
                let restore = Instant::now();
                for (i, m) in self.members.iter().enumerate() {
                    if m.p
                        .lines()
                        .iter()
                        .any(|x| x.event() == "became_leader" && x.at > down && x.at < restore)
                    {
                        let id = m.p.id.clone();
                        self.violations.push(format!(
                            "fault {n}: member {i} ({id}) became leader without etcd quorum"
                        ));
                    }
                }
                let Server::Etcd(e) = &mut self.server else {
                    unreachable!()
                };
                for m in (0..3).filter(|&m| m != keep) {
                    e.restart(m);
                }
                let eps = e.endpoints();
                e.wait_healthy(&eps, RECOVER);
            }
            Kind::Intruder => {
                let hold = 300 + self.rand(1200);
                self.intrude(n, l, term, t0, Duration::from_millis(hold));
            }
            Kind::ApiserverRestart => {
                let hold = self.rand(1500);
                let crash = self.rand(2) == 0;
                let Server::Kube(env) = &self.server else {
                    unreachable!()
                };
                // A graceful stop waits for open watches (up to 10 s, then kill -9).
                if crash {
                    env.kill_apiserver();
                } else {
                    env.stop_apiserver();
                }
                std::thread::sleep(Duration::from_millis(hold));
                env.start_apiserver();
            }
        }
        // Settle: a leader again (maybe the same one, maybe a new term).
        let (_, new_term, granted) = self
            .wait_leader(0, None, RECOVER)
            .ok_or("no leader after the fault ended")?;
        let gap = if new_term > term {
            let from = if kind.stops_leader_at_once() {
                Some(t0)
            } else {
                old_stopped.or_else(|| {
                    self.wait_line(l, "stopped_leading", Some(term), t0, Duration::ZERO)
                })
            };
            // A leader replaced without a logged step-down (its pipe lost, say): count from t0.
            let from = from.unwrap_or(t0);
            Some(granted.saturating_duration_since(from))
        } else {
            None
        };
        // Keep N participants running.
        while self.members.iter().filter(|m| m.alive).count() < PARTICIPANTS {
            self.spawn();
        }
        Ok(Outcome {
            kind,
            leader: self.members[l].p.id.clone(),
            term,
            new_term,
            took: t0.elapsed(),
            gap,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Checks and report
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct KindStats {
    count: usize,
    gaps: Vec<Duration>,
    rejected: usize,
    late: usize,
}

fn check(w: &mut World, outcomes: &[Outcome]) -> (String, serde_json::Value) {
    // Grants from every participant's log.
    let mut grants: Vec<(Instant, u64, String)> = vec![];
    for m in &w.members {
        for l in m.p.lines() {
            if l.event() == "became_leader" {
                grants.push((l.at, l.term().unwrap(), m.p.id.clone()));
            }
        }
    }
    grants.sort();
    let mut holder: BTreeMap<u64, String> = BTreeMap::new();
    let mut last = 0u64;
    for (_, term, id) in &grants {
        if let Some(h) = holder.get(term)
            && h != id
        {
            w.violations
                .push(format!("term {term} granted to both {h} and {id}"));
        }
        holder.insert(*term, id.clone());
        if *term <= last {
            w.violations.push(format!(
                "grant of term {term} to {id} after a grant of term {last}"
            ));
        }
        last = last.max(*term);
    }
    // The backend's own history agrees with the logs.
    for row in w.history() {
        let (Some(term), Some(h)) = (row["term"].as_u64(), row["holder"].as_str()) else {
            continue;
        };
        if let Some(id) = holder.get(&term)
            && id != h
        {
            w.violations.push(format!(
                "history says term {term} went to {h}, the logs say {id}"
            ));
        }
    }
    // Resumed leaders never renewed in their old term.
    for &(i, term, resumed) in &w.resumed.clone() {
        let m = &w.members[i].p;
        for l in m.lines() {
            if l.at > resumed
                && l.term() == Some(term)
                && matches!(l.event(), "leader_heartbeat" | "became_leader")
            {
                w.violations.push(format!(
                    "{} logged {} in its old term {term} after SIGCONT",
                    m.id,
                    l.event()
                ));
            }
        }
    }
    // The fenced log, replayed independently of the rule that built it.
    let fence = w.fence.fence.lock().unwrap();
    let mut max = 0u64;
    let mut writer: HashMap<u64, String> = HashMap::new();
    let mut overlap = 0usize;
    for a in &fence.accepted {
        if a.term < max {
            overlap += 1;
        }
        if let Some(h) = writer.get(&a.term)
            && *h != a.id
        {
            overlap += 1;
        }
        writer.entry(a.term).or_insert_with(|| a.id.clone());
        max = max.max(a.term);
        if holder.get(&a.term).is_some_and(|h| *h != a.id) || !holder.contains_key(&a.term) {
            w.violations.push(format!(
                "accepted write in term {} from {}, which was not granted that term",
                a.term, a.id
            ));
        }
    }
    if overlap > 0 {
        w.violations.push(format!(
            "{overlap} accepted writes with overlapping leadership"
        ));
    }
    // Late writes: accepted in an old term after a newer term had been granted.
    // first_after[t]: the earliest grant of any term ≥ t.
    let mut first_after: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut earliest: Option<Instant> = None;
    let by_term: BTreeMap<u64, Instant> = grants.iter().map(|(at, t, _)| (*t, *at)).collect();
    for (t, at) in by_term.iter().rev() {
        let e = earliest.map_or(*at, |e: Instant| e.min(*at));
        earliest = Some(e);
        first_after.insert(*t, e);
    }
    let late: Vec<&Write> = fence
        .accepted
        .iter()
        .filter(|a| {
            first_after
                .range(a.term + 1..)
                .next()
                .is_some_and(|(_, at)| *at < a.at)
        })
        .collect();
    let mut stats: BTreeMap<Kind, KindStats> = BTreeMap::new();
    for o in outcomes {
        let s = stats.entry(o.kind).or_default();
        s.count += 1;
        if let Some(g) = o.gap {
            s.gaps.push(g);
        }
    }
    for r in &fence.rejected {
        if let Some(o) = outcomes.get(r.fault) {
            stats.entry(o.kind).or_default().rejected += 1;
        }
    }
    for a in &late {
        if let Some(o) = outcomes.get(a.fault) {
            stats.entry(o.kind).or_default().late += 1;
        }
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let mut md = format!(
        "| {} fault | faults | stale writes rejected | late writes accepted | terms ended | p50 ms without leader | max ms without leader |\n|---|---|---|---|---|---|---|\n",
        w.backend
    );
    let mut kinds_json = serde_json::Map::new();
    for (k, s) in &stats {
        let mut g: Vec<f64> = s.gaps.iter().map(ms).collect();
        g.sort_by(f64::total_cmp);
        let p50 = g.get(g.len().saturating_sub(1) / 2).copied();
        let max = g.last().copied();
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            k.name(),
            s.count,
            s.rejected,
            s.late,
            g.len(),
            f(p50),
            f(max)
        );
        kinds_json.insert(
            k.name().into(),
            json!({"faults": s.count, "stale_rejected": s.rejected, "late_accepted": s.late,
                   "terms_ended": g.len(), "gap_p50_ms": p50, "gap_max_ms": max}),
        );
    }
    md += &format!(
        "\n{} faults; {} writes accepted, {} stale writes rejected; accepted writes with overlapping leadership: {overlap}; violations: {}\n",
        outcomes.len(),
        fence.accepted.len(),
        fence.rejected.len(),
        w.violations.len()
    );
    let j = json!({
        "backend": w.backend,
        "faults": outcomes.len(),
        "accepted": fence.accepted.len(),
        "rejected": fence.rejected.len(),
        "late_accepted": late.len(),
        "overlap_accepted": overlap,
        "grants": grants.len(),
        "violations": w.violations,
        "kinds": kinds_json,
        "each": outcomes.iter().map(|o| json!({
            "kind": o.kind.name(), "leader": o.leader, "term": o.term, "new_term": o.new_term,
            "gap_ms": o.gap.as_ref().map(ms), "took_ms": ms(&o.took),
        })).collect::<Vec<_>>(),
    });
    (md, j)
}

fn report_dir() -> PathBuf {
    std::env::var_os("CROWN_CHAOS_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos"))
}

fn campaign(backend: &'static str) {
    let faults: usize = std::env::var("CROWN_CHAOS_FAULTS")
        .ok()
        .map(|s| s.parse().expect("CROWN_CHAOS_FAULTS: a number"))
        .unwrap_or(50);
    let seed: u64 = std::env::var("CROWN_CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("CROWN_CHAOS_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!(
        "chaos[{backend}]: {faults} faults, seed {seed} (CROWN_CHAOS_SEED={seed} repeats it)"
    );
    let started = Instant::now();
    let mut w = World::new(backend, seed);
    let kinds = w.kinds();
    let mut outcomes = vec![];
    let mut stuck = None;
    for n in 0..faults {
        let kind = kinds[w.rand(kinds.len() as u64) as usize];
        match w.fault(n, kind) {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                stuck = Some(format!("fault {n} ({}): {e}", kind.name()));
                break;
            }
        }
        if (n + 1) % 50 == 0 {
            eprintln!(
                "chaos[{backend}]: {} faults in {:.0?}",
                n + 1,
                started.elapsed()
            );
        }
        let pause = 100 + w.rand(300);
        std::thread::sleep(Duration::from_millis(pause));
    }
    if let Some(s) = &stuck {
        w.fail(format!("the election did not recover: {s}"));
    }
    let (md, j) = check(&mut w, &outcomes);
    let md = format!(
        "{md}seed {seed}; {} participants, lease 2s / renew deadline 1.5s / retry 500ms, child grace 300ms; {:.0?}\n",
        PARTICIPANTS,
        started.elapsed()
    );
    let dir = report_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{backend}.md")), &md).unwrap();
    std::fs::write(
        dir.join(format!("{backend}.json")),
        serde_json::to_string_pretty(&j).unwrap(),
    )
    .unwrap();
    println!("{md}");
    let rejected = j["rejected"].as_u64().unwrap();
    let paused = outcomes.iter().filter(|o| o.kind == Kind::Pause).count();
    assert!(
        w.violations.is_empty(),
        "chaos[{backend}]: {} violations (seed {seed}):\n{}\n{md}",
        w.violations.len(),
        w.violations.join("\n")
    );
    // Each pause lets the frozen leader's child write past its term: the fence must have seen it.
    assert!(
        paused == 0 || rejected > 0,
        "chaos[{backend}]: {paused} pauses but no stale write was rejected: the fence saw no stale writer"
    );
    assert_eq!(outcomes.len(), faults);
}

#[test]
fn chaos_file() {
    campaign("file");
}

#[test]
fn chaos_etcd() {
    campaign("etcd");
}

#[test]
fn chaos_kube() {
    campaign("kube");
}
