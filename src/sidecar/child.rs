//! The child process run while leading.
//!
//! - Started on every grant with `CROWN_TERM`, `CROWN_ELECTION` and `CROWN_ID`, in its own
//!   process group, through `crown __exec-guard` ([`exec_guard`]), which sets
//!   `PR_SET_PDEATHSIG = SIGKILL`, checks that crown is still its parent, and execs the
//!   command: if crown is SIGKILLed, the kernel kills the child at once.
//! - Stopped on any step-down: SIGTERM to its process group and to every other descendant,
//!   SIGKILL after the grace, then SIGKILL to whatever is left of the whole tree. The elector
//!   awaits this (its before-release hook) before releasing or abandoning the lease.
//! - The whole tree, not only the group: crown is a child subreaper
//!   (`PR_SET_CHILD_SUBREAPER`), so descendants that leave the group (`setsid`, a double
//!   fork) are reparented to crown when their parent dies instead of to init. Stopping ends
//!   with a loop that SIGKILLs crown's own children and reaps them until none is left: a pid
//!   that is our unreaped child cannot be reused, so those kills never hit a stranger. The
//!   SIGTERM to deeper descendants goes through a pidfd checked against the start time seen
//!   in `/proc` (no pid-reuse race either). Adopted orphans that exit on their own are reaped
//!   on SIGCHLD.
//! - If crown itself is SIGKILLed, only the direct child dies with it (the parent-death
//!   signal); descendants that left its process group are reparented to init and live on
//!   (see the README: run crown in a cgroup — a systemd unit, a container — to cover that).
//! - A stop fences its term: a late start request for a term that already ended is ignored.
//! - Children are forked by one dedicated thread that lives as long as the supervisor:
//!   `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so it must not be
//!   a pool thread that may retire.

use crate::cli::OnChildExit;
use crate::election::{BeforeRelease, Term};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::CString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

/// `crown __exec-guard --parent-pid P -- CMD…`: dies with its parent, then becomes CMD.
/// Returns only on failure (the exit code).
pub fn exec_guard(parent_pid: i32, nofile: Option<u64>, command: &[String]) -> i32 {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("crown: error: exec guard: cannot set the parent-death signal: {e}");
        return 1;
    }
    // The parent may have died before the line above: then we were reparented.
    if nix::unistd::getppid() != Pid::from_raw(parent_pid) {
        eprintln!("crown: error: exec guard: parent {parent_pid} is gone");
        return 1;
    }
    // The open-file limit crown started with (crown raised its own).
    if let Some(n) = nofile {
        super::fds::restore_soft(n);
    }
    // Already done by the parent (process_group(0)); harmless if repeated.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let args: Result<Vec<CString>, _> = command.iter().map(|a| CString::new(a.as_str())).collect();
    let Ok(args) = args else {
        eprintln!("crown: error: exec guard: argument contains a NUL byte");
        return 1;
    };
    let e = nix::unistd::execvp(&args[0], &args).unwrap_err();
    eprintln!("crown: error: cannot run {:?}: {e}", command[0]);
    127
}

/// The exit code of a finished process (128 + signal if killed).
pub fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// How to run the child.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Election name (`CROWN_ELECTION`).
    pub election: String,
    /// Our id (`CROWN_ID`).
    pub id: String,
    /// SIGTERM → SIGKILL delay.
    pub grace: Duration,
    /// Policy when it exits on its own.
    pub on_exit: OnChildExit,
    /// The soft open-file limit to give the child (the one crown started with).
    pub nofile: Option<u64>,
    /// `crown run --once`: an exit 0 is always reported (never restarted): the duty is done.
    pub once: bool,
}

enum Msg {
    Start(Term),
    Stop(Term, oneshot::Sender<()>),
}

/// Handle to the supervisor task.
#[derive(Clone)]
pub struct Supervisor {
    tx: mpsc::UnboundedSender<Msg>,
}

/// The child exited on its own while we led (reported for `exit` and `resign` policies).
#[derive(Clone, Copy, Debug)]
pub struct Exited {
    /// The term it ran in.
    pub term: Term,
    /// Its exit code (128 + signal if killed).
    pub code: i32,
    /// How long it ran.
    pub ran: Duration,
}

type SpawnReq = (Command, oneshot::Sender<std::io::Result<Child>>);

impl Supervisor {
    /// Starts the supervisor task; unsolicited exits arrive on the receiver.
    pub fn spawn(spec: ChildSpec) -> std::io::Result<(Supervisor, mpsc::Receiver<Exited>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::channel(8);
        let (stx, srx) = std::sync::mpsc::channel::<SpawnReq>();
        // Orphans of the child's tree come to us, not to init (see the module docs).
        nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("crown-child-spawner".into())
            .spawn(move || {
                let _g = rt.enter();
                for (mut cmd, reply) in srx {
                    let _ = reply.send(cmd.spawn());
                }
            })?;
        tokio::spawn(supervise(spec, rx, etx, stx));
        Ok((Supervisor { tx }, erx))
    }

    /// Starts the child for `term` (ignored if that term was already stopped).
    pub fn start(&self, term: Term) {
        let _ = self.tx.send(Msg::Start(term));
    }

    /// Stops the child (if running in `term` or earlier) and fences `term`; returns once
    /// it is gone.
    pub async fn stop(&self, term: Term) {
        let (tx, rx) = oneshot::channel();
        let done = self.tx.send(Msg::Stop(term, tx)).is_ok() && rx.await.is_ok();
        if !done {
            // The supervisor task is gone (it panicked): the lease must not be released with
            // the child still running, so kill every child of ours and its tree.
            let n = kill_orphans().await;
            tracing::error!(
                event = "supervisor_failed",
                "the child supervisor failed; killed {n} remaining processes of the child's tree"
            );
        }
    }

    /// The elector's before-release hook.
    pub fn hook(&self) -> BeforeRelease {
        let s = self.clone();
        Arc::new(move |term| {
            let s = s.clone();
            Box::pin(async move { s.stop(term).await })
        })
    }
}

struct Running {
    term: Term,
    child: Child,
    pid: i32,
    started: Instant,
}

async fn supervise(
    spec: ChildSpec,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    exits: mpsc::Sender<Exited>,
    spawner: std::sync::mpsc::Sender<SpawnReq>,
) {
    let mut fenced = Term(0);
    let mut running: Option<Running> = None;
    let mut restart: Option<(Term, Instant)> = None;
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    loop {
        tokio::select! {
            Some(()) = async { match sigchld.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                reap_adopted(running.as_ref().map(|r| r.pid));
            }
            msg = rx.recv() => match msg {
                None => {
                    if let Some(r) = running.take() {
                        terminate(&spec, r).await;
                    }
                    break;
                }
                Some(Msg::Start(term)) => {
                    if term > fenced && running.as_ref().is_none_or(|r| r.term < term) {
                        if let Some(r) = running.take() {
                            terminate(&spec, r).await;
                        }
                        restart = None;
                        running = start(&spec, term, &spawner).await;
                    }
                }
                Some(Msg::Stop(term, done)) => {
                    fenced = fenced.max(term);
                    restart = restart.filter(|(t, _)| *t > term);
                    if running.as_ref().is_some_and(|r| r.term <= term)
                        && let Some(r) = running.take()
                    {
                        terminate(&spec, r).await;
                    }
                    let _ = done.send(());
                }
            },
            st = async { running.as_mut().expect("guarded").child.wait().await }, if running.is_some() => {
                let r = running.take().expect("guarded");
                let code = st.map(exit_code).unwrap_or(1);
                // Stragglers in its group and the rest of its tree go too.
                let _ = kill(Pid::from_raw(-r.pid), Signal::SIGKILL);
                let killed = kill_orphans().await;
                let line = format!("[{}] child {} exited on its own with code {code} after {} ms (term {}{}): {}", spec.id, r.pid, r.started.elapsed().as_millis(), r.term,
                    if killed > 0 { format!(", {killed} descendants that outlived it killed") } else { String::new() },
                    match spec.on_exit { _ if spec.once && code == 0 => "recording the duty as done", OnChildExit::Exit => "releasing and exiting", OnChildExit::Resign => "resigning", OnChildExit::Restart => "restarting in 1s" });
                // `--once`: a success is what was asked for (INFO), not a surprise (WARN).
                if spec.once && code == 0 {
                    tracing::info!(event = "child_exited", id = spec.id.as_str(), term = r.term.0, pid = r.pid, code, descendants_killed = killed, "{line}");
                } else {
                    tracing::warn!(event = "child_exited", id = spec.id.as_str(), term = r.term.0, pid = r.pid, code, descendants_killed = killed, "{line}");
                }
                match spec.on_exit {
                    OnChildExit::Restart if !(spec.once && code == 0) => restart = Some((r.term, Instant::now() + Duration::from_secs(1))),
                    _ => { let _ = exits.send(Exited { term: r.term, code, ran: r.started.elapsed() }).await; }
                }
            }
            _ = async { sleep_until(restart.expect("guarded").1).await }, if restart.is_some() => {
                let (term, _) = restart.take().expect("guarded");
                if term > fenced && running.is_none() {
                    running = start(&spec, term, &spawner).await;
                }
            }
        }
    }
}

async fn start(
    spec: &ChildSpec,
    term: Term,
    spawner: &std::sync::mpsc::Sender<SpawnReq>,
) -> Option<Running> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cmd = Command::new(exe);
    cmd.arg("__exec-guard")
        .arg("--parent-pid")
        .arg(std::process::id().to_string());
    if let Some(n) = spec.nofile {
        cmd.arg("--nofile").arg(n.to_string());
    }
    cmd.arg("--")
        .args(&spec.command)
        .env("CROWN_TERM", term.0.to_string())
        .env("CROWN_ELECTION", &spec.election)
        .env("CROWN_ID", &spec.id)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    let (tx, rx) = oneshot::channel();
    let res = match spawner.send((cmd, tx)) {
        Ok(()) => rx
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("spawner gone"))),
        Err(_) => Err(std::io::Error::other("spawner gone")),
    };
    match res {
        Ok(child) => {
            let pid = child.id().map(|p| p as i32).unwrap_or(0);
            tracing::info!(
                event = "child_started",
                id = spec.id.as_str(),
                term = term.0,
                pid,
                "[{}] started child {pid} (term {term}): {}",
                spec.id,
                spec.command.join(" ")
            );
            Some(Running {
                term,
                child,
                pid,
                started: Instant::now(),
            })
        }
        Err(e) => {
            tracing::error!(
                event = "child_failed",
                id = spec.id.as_str(),
                term = term.0,
                "[{}] cannot start {:?}: {e}",
                spec.id,
                spec.command[0]
            );
            None
        }
    }
}

/// SIGTERM to the group and every other descendant; once the child is gone, the rest of the
/// tree gets what is left of the grace; then SIGKILL to the group and to the whole tree.
async fn terminate(spec: &ChildSpec, mut r: Running) {
    let began = Instant::now();
    let deadline = began + spec.grace;
    let group = Pid::from_raw(-r.pid);
    if kill(group, Signal::SIGTERM).is_err() {
        let _ = kill(Pid::from_raw(r.pid), Signal::SIGTERM);
    }
    // Descendants outside the group (setsid, their own group) get SIGTERM too.
    for p in descendants() {
        if p.pgrp != r.pid {
            signal_checked(&p, rustix::process::Signal::TERM);
        }
    }
    let (st, killed) = match timeout(spec.grace, r.child.wait()).await {
        Ok(st) => (st, false),
        Err(_) => {
            let _ = kill(group, Signal::SIGKILL);
            let _ = kill(Pid::from_raw(r.pid), Signal::SIGKILL);
            (r.child.wait().await, true)
        }
    };
    let _ = kill(group, Signal::SIGKILL);
    // The rest of the tree may finish its cleanup within the grace.
    while Instant::now() < deadline && descendants().iter().any(|p| p.state != 'Z') {
        reap_adopted(None);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let orphans = kill_orphans().await;
    let code = st.map(exit_code).unwrap_or(1);
    tracing::info!(
        event = "child_stopped",
        id = spec.id.as_str(),
        term = r.term.0,
        pid = r.pid,
        code,
        killed,
        descendants_killed = orphans,
        "[{}] child {} stopped{} in {} ms (term {}, code {code}){}",
        spec.id,
        r.pid,
        if killed {
            " by SIGKILL after the grace"
        } else {
            ""
        },
        began.elapsed().as_millis(),
        r.term,
        if orphans > 0 {
            format!(", {orphans} descendants still running after it killed")
        } else {
            String::new()
        }
    );
}

/// A process as `/proc/PID/stat` shows it.
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    state: char,
    /// Start time (clock ticks since boot): with the pid, it names one process.
    start: u64,
}

fn stat(pid: i32) -> Option<Proc> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold anything, ") " included: the fields follow the last one.
    let (_, rest) = s.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(Proc {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn all_procs() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Every process whose ancestry leads to crown (zombies included).
fn descendants() -> Vec<Proc> {
    let me = std::process::id() as i32;
    let procs = all_procs();
    let mut out: Vec<Proc> = vec![];
    let mut frontier = vec![me];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent && p.pid != me) {
            if !out.iter().any(|o| o.pid == p.pid) {
                out.push(*p);
                frontier.push(p.pid);
            }
        }
    }
    out
}

/// Sends `sig` to `p` only if the process with that pid is still the one we saw (same start
/// time): through a pidfd opened first, so the pid cannot be reused in between.
fn signal_checked(p: &Proc, sig: rustix::process::Signal) {
    let Some(pid) = rustix::process::Pid::from_raw(p.pid) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    if stat(p.pid).is_some_and(|now| now.start == p.start) {
        let _ = rustix::process::pidfd_send_signal(&fd, sig);
    }
}

/// Reaps our children that are zombies, except `keep` (the running child, which tokio reaps).
fn reap_adopted(keep: Option<i32>) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let me = std::process::id() as i32;
    for p in all_procs() {
        if p.ppid == me && p.state == 'Z' && Some(p.pid) != keep {
            let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// SIGKILLs and reaps crown's children until none is left (the child itself must already be
/// reaped): grandchildren of a killed one are reparented to us (we are a subreaper) and go in
/// the next round. A child of ours cannot be reused as a pid before we reap it, so no stranger
/// is ever hit. Returns how many processes it killed.
async fn kill_orphans() -> usize {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let me = std::process::id() as i32;
    let give_up = Instant::now() + Duration::from_secs(5);
    let mut killed: Vec<i32> = vec![];
    loop {
        let kids: Vec<Proc> = all_procs().into_iter().filter(|p| p.ppid == me).collect();
        if kids.is_empty() {
            break;
        }
        for p in &kids {
            if p.state != 'Z' {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                if !killed.contains(&p.pid) {
                    killed.push(p.pid);
                }
            }
        }
        for p in &kids {
            let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
        }
        if Instant::now() >= give_up {
            tracing::error!(
                event = "descendants_left",
                "{} descendants of the child still alive after 5 s of SIGKILL (uninterruptible sleep?)",
                kids.len()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    killed.len()
}
