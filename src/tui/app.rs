//! The dashboard's loop: one `tokio::select!` over terminal input, backend snapshots, child
//! exits (demo), signals, and the optional chaos and stop timers. Everything it notices goes
//! into [`State`]; on a terminal it redraws, headless it prints the new event lines (and the
//! demo participants' log lines, prefixed by their id).
//!
//! The loop never awaits the backend: a reader task ([`spawn_reader`]) reads it every refresh
//! period and sends each snapshot over a channel, so quit keys and signals work even while a
//! read is stuck (a FIFO in the election directory, a hung mount, an unanswering server); a
//! read stuck for longer than [`Options::read_timeout`] shows as a backend error.

use super::demo::{self, Demo, Exit};
use super::input::{Action, action};
use super::remote::{delete_pod, revoke_session};
use super::render::render;
use super::state::{KillPlan, LogKind, LogLine, Reach, ResignPlan, Snapshot, State, Target};
use super::terminal::TerminalGuard;
use crate::backend::Backend;
use crate::participant::Failure;
use crate::{exit, participant};
use crossterm::event::{Event as TermEvent, EventStream};
use futures::{Stream, StreamExt};
use nix::sys::signal::Signal;
use ratatui::Terminal;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

mod reach;

/// The remote actions' client and results (defined in [`super::remote`]), by their old path.
pub use super::remote::{Done, Remote};

/// How long a backend read may take before the dashboard reports it as stuck.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How the loop runs.
pub struct Options {
    /// How often to read the backend.
    pub refresh: Duration,
    /// Print lines instead of drawing.
    pub headless: bool,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    /// Kill -9 the leader (and restart it) at this interval.
    pub chaos: Option<Duration>,
    /// A backend read taking longer than this shows as an error (the reader keeps waiting
    /// for it and never starts a second one meanwhile).
    pub read_timeout: Duration,
}

/// One read of the backend, as the reader task sends it: when, and what it found.
#[derive(Debug)]
pub struct Read {
    /// When the read finished (or was found stuck).
    pub at: jiff::Timestamp,
    /// The snapshot, or the error to show.
    pub result: Result<Snapshot, String>,
}

/// Reads the backend once: lease, heartbeats, history; then checks, on this host, which
/// heartbeat pids are gone and whether the process at the leader's pid matches its heartbeat.
pub async fn read_snapshot(
    backend: &dyn Backend,
    host: &str,
    election: &str,
) -> Result<Snapshot, String> {
    let read = async {
        let lease = backend.lease().await?;
        let members = backend.members().await?;
        let history = backend.history().await?;
        Ok::<_, crate::backend::BackendError>((lease, members, history))
    };
    let (lease, members, history) = read.await.map_err(|e| e.to_string())?;
    let leader = lease.leader();
    let holder = leader.as_ref().map(|l| l.id.as_str());
    let mut dead_pids = BTreeSet::new();
    let mut mismatched = BTreeMap::new();
    for m in members.iter().filter(|m| m.host == host) {
        if !demo::exists(m.pid) {
            dead_pids.insert(m.pid);
        } else if Some(m.id.as_str()) == holder
            && let Some(stamp) = &m.process
            && let Err(why) = super::procfs::verify(m.pid, stamp, election)
        {
            mismatched.insert(m.pid, why);
        }
    }
    Ok(Snapshot {
        lease,
        members,
        history,
        dead_pids,
        mismatched,
    })
}

/// Starts the reader task: a snapshot every `refresh`, sent to the returned channel. One read
/// at a time: a read that takes longer than `timeout` is reported as stuck (once per stuck
/// read) and waited for, never abandoned for a second one that would block too. The task
/// ends when the receiver is dropped.
pub fn spawn_reader(
    backend: Arc<dyn Backend>,
    host: String,
    election: String,
    refresh: Duration,
    timeout: Duration,
) -> (mpsc::Receiver<Read>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let read = read_snapshot(backend.as_ref(), &host, &election);
            tokio::pin!(read);
            let result = tokio::select! {
                r = &mut read => r,
                _ = tokio::time::sleep(timeout) => {
                    let stuck = Read {
                        at: jiff::Timestamp::now(),
                        result: Err(format!(
                            "read stuck: no answer for {} (a FIFO or device in the election directory, a hung mount, an unanswering server?); still waiting",
                            super::state::fmt_duration(timeout)
                        )),
                    };
                    if tx.send(stuck).await.is_err() {
                        return;
                    }
                    read.await
                }
            };
            let done = Read {
                at: jiff::Timestamp::now(),
                result,
            };
            if tx.send(done).await.is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The dashboard and what it controls.
pub struct App {
    backend: Arc<dyn Backend>,
    remote: Option<Remote>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: Option<mpsc::UnboundedReceiver<Done>>,
    /// What is shown.
    pub state: State,
    demo: Option<Demo>,
    printed: u64,
}

impl App {
    /// A dashboard over `backend`, controlling `demo`'s participants if given.
    pub fn new(backend: Arc<dyn Backend>, state: State, demo: Option<Demo>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        App {
            backend,
            remote: None,
            done_tx,
            done_rx: Some(done_rx),
            state,
            demo,
            printed: 0,
        }
    }

    /// Applies one read from the reader task.
    pub fn apply_read(&mut self, read: Read) {
        match read.result {
            Ok(snap) => self.state.apply(snap, read.at),
            Err(e) => self.state.apply_error(read.at, e),
        }
        if let Some(p) = &self.state.paused
            && !demo::exists(p.pid)
        {
            let p = p.clone();
            self.state.log(
                LogKind::Info,
                format!("paused {} (pid {}) is gone", p.id, p.pid),
            );
            self.state.paused = None;
        }
    }

    /// Sends `sig` to `t` if the live process at its pid is still the participant its
    /// heartbeat described (checked in `/proc` right before the signal); otherwise refuses and
    /// says why.
    fn send(&mut self, t: &Target, sig: Signal, what: &str) -> bool {
        match super::procfs::signal_verified(t.pid, &t.stamp, &self.state.election, sig) {
            Ok(()) => {
                self.state.log(LogKind::Action, what.to_string());
                true
            }
            Err(why) => {
                self.state.log(
                    LogKind::Warn,
                    format!("refused {sig} to {} (pid {}): {why}", t.id, t.pid),
                );
                false
            }
        }
    }

    /// Carries out `a`. Returns false to quit.
    pub fn act(&mut self, a: Action) -> bool {
        self.state.tick(jiff::Timestamp::now());
        match a {
            Action::None => {}
            Action::Quit => return false,
            Action::ToggleHelp => self.state.help = !self.state.help,
            Action::AskKill => match self.state.kill_plan() {
                Ok(KillPlan::Signal(t)) => self.state.confirm_kill = Some(t),
                Ok(KillPlan::DeletePod(k) | KillPlan::RevokeSession(k)) => {
                    self.state.confirm_pod = Some(k)
                }
                Err(why) => self.state.log(LogKind::Warn, format!("k: {why}")),
            },
            Action::CancelKill => {
                if let Some(t) = self.state.confirm_kill.take() {
                    self.state
                        .log(LogKind::Info, format!("kill {} cancelled", t.id));
                }
                if let Some(k) = self.state.confirm_pod.take() {
                    let what = if self.state.reach == Reach::Etcd {
                        "revoke the session of"
                    } else {
                        "delete Pod"
                    };
                    self.state
                        .log(LogKind::Info, format!("{what} {} cancelled", k.holder));
                }
            }
            Action::ConfirmKill => {
                if let Some(k) = self.state.confirm_pod.take() {
                    if self.state.reach == Reach::Etcd {
                        let what = format!(
                            "revoking the session of {} (leader in term {})",
                            k.holder, k.term
                        );
                        self.spawn_remote(
                            what,
                            move |r| async move { revoke_session(&r, k).await },
                        );
                    } else {
                        let what = format!("deleting Pod {} (leader in term {})", k.holder, k.term);
                        self.spawn_remote(what, move |r| async move { delete_pod(&r, k).await });
                    }
                }
                if let Some(t) = self.state.confirm_kill.take() {
                    let what = format!("kill -9 {} (pid {})", t.id, t.pid);
                    if self.send(&t, Signal::SIGKILL, &what)
                        && self.state.paused.as_ref().is_some_and(|p| p.pid == t.pid)
                    {
                        self.state.paused = None;
                    }
                }
            }
            Action::TogglePause => match (self.state.paused.clone(), self.state.pause_target()) {
                (Some(p), _) => {
                    let what = format!(
                        "resumed {} (pid {}): SIGCONT; it must step down if its term is over",
                        p.id, p.pid
                    );
                    self.send(&p, Signal::SIGCONT, &what);
                    self.state.paused = None;
                }
                (None, Ok(t)) => {
                    let what = format!(
                        "paused {} (pid {}): SIGSTOP; a follower may take over after {}",
                        t.id,
                        t.pid,
                        super::state::fmt_duration(self.state.lease_duration)
                    );
                    if self.send(&t, Signal::SIGSTOP, &what) {
                        self.state.paused = Some(t);
                    }
                }
                (None, Err(why)) => self.state.log(LogKind::Warn, format!("p: {why}")),
            },
            Action::Resign => match self.state.resign_plan() {
                Ok(ResignPlan::Signal(t)) => {
                    let what = format!("asked {} (pid {}) to resign: SIGUSR1", t.id, t.pid);
                    self.send(&t, Signal::SIGUSR1, &what);
                }
                Ok(ResignPlan::Request { holder, term }) => {
                    let what = format!("asking {holder} to resign term {term}");
                    self.spawn_remote(what, move |r| async move {
                        match r.request_resign(term).await {
                            Ok(()) => Done::ResignRequested { holder, term },
                            Err(e) => Done::Failed(format!("r: refused: {e}")),
                        }
                    });
                }
                Err(why) => self.state.log(LogKind::Warn, format!("r: {why}")),
            },
            Action::Spawn => match (&mut self.demo, self.state.spawn_available()) {
                (Some(d), Ok(())) => match d.spawn_next() {
                    Ok((id, pid)) => self
                        .state
                        .log(LogKind::Action, format!("started {id} (pid {pid})")),
                    Err(e) => self
                        .state
                        .log(LogKind::Error, format!("cannot start a participant: {e}")),
                },
                (_, Err(why)) => self.state.log(LogKind::Warn, format!("n: {why}")),
                (None, Ok(())) => {}
            },
        }
        true
    }

    fn chaos(&mut self) {
        match self.state.kill_target() {
            Ok(t) => {
                let what = format!("chaos: kill -9 {} (pid {})", t.id, t.pid);
                if self.send(&t, Signal::SIGKILL, &what)
                    && let Some(d) = &mut self.demo
                    && d.running().get(&t.id) == Some(&t.pid)
                {
                    d.restart_when_gone(&t.id);
                }
            }
            Err(why) => self
                .state
                .log(LogKind::Info, format!("chaos: {why}, skipped")),
        }
    }

    fn child_exited(&mut self, e: &Exit) {
        self.state.tick(jiff::Timestamp::now());
        self.state.log(
            LogKind::Info,
            format!("{} (pid {}) ended: {}", e.id, e.pid, e.how),
        );
        if let Some(d) = &mut self.demo
            && let Some(r) = d.exited(e)
        {
            match r {
                Ok(pid) => self
                    .state
                    .log(LogKind::Action, format!("restarted {} (pid {pid})", e.id)),
                Err(err) => self
                    .state
                    .log(LogKind::Error, format!("cannot restart {}: {err}", e.id)),
            }
        }
    }

    /// Event lines not yet printed (headless), also sent to the dashboard's log.
    fn take_new_lines(&mut self) -> Vec<LogLine> {
        let new: Vec<LogLine> = self
            .state
            .events
            .iter()
            .filter(|l| l.seq > self.printed)
            .cloned()
            .collect();
        if let Some(l) = new.last() {
            self.printed = l.seq;
        }
        new
    }

    fn flush_lines(&mut self, headless: bool) {
        let lines = self.take_new_lines();
        let tails = match (&mut self.demo, headless) {
            (Some(d), true) => d.tail(),
            _ => vec![],
        };
        for l in &lines {
            match l.kind {
                LogKind::Error => tracing::error!("{}", l.text),
                LogKind::Warn => tracing::warn!("{}", l.text),
                _ => tracing::info!("{}", l.text),
            }
        }
        if headless {
            let mut out = std::io::stdout().lock();
            for (id, line) in tails {
                let _ = writeln!(out, "{id:<4} | {line}");
            }
            let me = if self.demo.is_some() { "demo" } else { "tui" };
            for l in lines {
                let _ = writeln!(out, "{me:<4} | {}", l.text);
            }
            let _ = out.flush();
        }
    }

    /// Runs until quit, a signal, or the duration; then resumes anything paused and stops the
    /// demo's participants. Returns the exit code.
    pub async fn run(
        mut self,
        opts: Options,
        mut exits: mpsc::UnboundedReceiver<Exit>,
    ) -> Result<i32, Failure> {
        let internal = |e: std::io::Error| Failure::new(exit::INTERNAL, e.to_string());
        let mut sigterm = signal(SignalKind::terminate()).map_err(internal)?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(internal)?;
        let mut sighup = signal(SignalKind::hangup()).map_err(internal)?;
        let signals = async move {
            tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
                _ = sighup.recv() => "SIGHUP",
            }
        };
        let mut term = if opts.headless {
            None
        } else {
            Some(TerminalGuard::enter().map_err(|e| {
                Failure::new(exit::INTERNAL, format!("cannot set up the terminal: {e}"))
            })?)
        };
        let input = term.as_ref().map(|_| EventStream::new());
        let why = self
            .run_loop(
                &opts,
                &mut exits,
                term.as_mut().map(|t| &mut t.terminal),
                input,
                signals,
            )
            .await?;
        // Leave the screen first, so what follows is readable.
        drop(term);
        self.finish(&opts, &mut exits, why).await;
        Ok(exit::OK)
    }

    /// The loop itself, over any ratatui backend and any stream of terminal events (tests use
    /// a `TestBackend` and a channel). Returns why it stopped: a quit key, `stop` resolving
    /// (signals), the duration, or the terminal going away. Never awaits the backend.
    pub async fn run_loop<B, I>(
        &mut self,
        opts: &Options,
        exits: &mut mpsc::UnboundedReceiver<Exit>,
        mut terminal: Option<&mut Terminal<B>>,
        mut input: Option<I>,
        stop: impl Future<Output = &'static str>,
    ) -> Result<&'static str, Failure>
    where
        B: ratatui::backend::Backend,
        I: Stream<Item = std::io::Result<TermEvent>> + Unpin,
    {
        let (mut reads, reader) = spawn_reader(
            self.backend.clone(),
            self.state.host.clone(),
            self.state.election.clone(),
            opts.refresh,
            opts.read_timeout,
        );
        let _reader = AbortOnDrop(reader);
        // The screen ticks on its own (ages, "held for") even while reads are stuck.
        let mut tick = tokio::time::interval(opts.refresh.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let stop_at = opts.duration.and_then(|d| Instant::now().checked_add(d));
        let mut chaos = opts.chaos.map(|d| {
            let start = Instant::now().checked_add(d).unwrap_or_else(Instant::now);
            let mut i = tokio::time::interval_at(start, d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        tokio::pin!(stop);
        let mut done_rx = self.done_rx.take();
        let mut why = "quit";
        loop {
            tokio::select! {
                ev = async {
                    match input.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => match ev {
                    Some(Ok(TermEvent::Key(k))) => {
                        if !self.act(action(&k, self.state.mode())) {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.state.log(LogKind::Error, format!("terminal input: {e}"));
                        why = "terminal input failed";
                        break;
                    }
                    None => {
                        why = "terminal closed";
                        break;
                    }
                },
                Some(read) = reads.recv() => self.apply_read(read),
                Some(d) = async {
                    match done_rx.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.remote_done(d),
                _ = tick.tick() => self.state.tick(jiff::Timestamp::now()),
                Some(e) = exits.recv() => self.child_exited(&e),
                _ = async {
                    match chaos.as_mut() {
                        Some(c) => { c.tick().await; }
                        None => std::future::pending().await,
                    }
                } => self.chaos(),
                _ = async {
                    match stop_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => { why = "duration reached"; break; }
                w = &mut stop => { why = w; break; }
            }
            self.flush_lines(opts.headless);
            if let Some(t) = terminal.as_mut() {
                let state = &self.state;
                t.draw(|f| render(f, state))
                    .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot draw: {e}")))?;
            }
        }
        self.done_rx = done_rx;
        Ok(why)
    }

    /// After the loop: resumes anything paused and stops the demo's participants.
    async fn finish(
        &mut self,
        opts: &Options,
        exits: &mut mpsc::UnboundedReceiver<Exit>,
        why: &str,
    ) {
        self.state.tick(jiff::Timestamp::now());
        self.state.log(LogKind::Info, format!("stopping ({why})"));
        if let Some(p) = self.state.paused.take() {
            let what = format!("resumed {} (pid {}): SIGCONT", p.id, p.pid);
            self.send(&p, Signal::SIGCONT, &what);
        }
        self.flush_lines(opts.headless);
        if let Some(mut d) = self.demo.take() {
            let mut lines = vec![];
            d.shutdown(exits, Duration::from_secs(4), |e| {
                lines.push(format!("{} (pid {}) ended: {}", e.id, e.pid, e.how))
            })
            .await;
            for l in lines {
                self.state.log(LogKind::Info, l);
            }
            self.demo = Some(d);
            self.flush_lines(opts.headless);
            if !opts.headless {
                eprintln!(
                    "crown demo: stopped; logs in {}",
                    participant_logs_hint(self)
                );
            }
        }
    }
}

impl Drop for App {
    /// On panic: a participant the dashboard paused must not stay stopped. (The demo's own
    /// Drop guard kills its participants.)
    fn drop(&mut self) {
        if let Some(p) = self.state.paused.take() {
            let _ = super::procfs::signal_verified(
                p.pid,
                &p.stamp,
                &self.state.election,
                Signal::SIGCONT,
            );
        }
    }
}

fn participant_logs_hint(app: &App) -> String {
    app.state
        .log_path
        .as_deref()
        .and_then(|p| std::path::Path::new(p).parent())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the election directory".into())
}

/// This host's name as participants record it.
pub fn this_host() -> String {
    participant::hostname()
}

#[cfg(test)]
mod tests;
