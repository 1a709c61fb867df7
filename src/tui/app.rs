//! The dashboard's loop: one `tokio::select!` over terminal input, a refresh tick, child
//! exits (demo), signals, and the optional chaos and stop timers. Everything it notices goes
//! into [`State`]; on a terminal it redraws, headless it prints the new event lines (and the
//! demo participants' log lines, prefixed by their id).

use super::demo::{self, Demo, Exit};
use super::input::{Action, action};
use super::render::render;
use super::state::{LogKind, LogLine, Snapshot, State, Target};
use super::terminal::TerminalGuard;
use crate::backend::Backend;
use crate::participant::Failure;
use crate::{exit, participant};
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

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
}

/// The dashboard and what it controls.
pub struct App {
    backend: Arc<dyn Backend>,
    /// What is shown.
    pub state: State,
    demo: Option<Demo>,
    printed: u64,
}

impl App {
    /// A dashboard over `backend`, controlling `demo`'s participants if given.
    pub fn new(backend: Arc<dyn Backend>, state: State, demo: Option<Demo>) -> Self {
        App {
            backend,
            state,
            demo,
            printed: 0,
        }
    }

    async fn refresh(&mut self) {
        let now = jiff::Timestamp::now();
        let read = async {
            let lease = self.backend.lease().await?;
            let members = self.backend.members().await?;
            let history = self.backend.history().await?;
            Ok::<_, crate::backend::BackendError>((lease, members, history))
        };
        match read.await {
            Ok((lease, members, history)) => {
                let dead_pids: BTreeSet<u32> = members
                    .iter()
                    .filter(|m| m.host == self.state.host && !demo::exists(m.pid))
                    .map(|m| m.pid)
                    .collect();
                self.state.apply(
                    Snapshot {
                        lease,
                        members,
                        history,
                        dead_pids,
                    },
                    now,
                );
            }
            Err(e) => self.state.apply_error(now, e.to_string()),
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

    fn send(&mut self, t: &Target, sig: Signal, what: &str) -> bool {
        match demo::signal(t.pid, sig) {
            Ok(()) => {
                self.state.log(LogKind::Action, what.to_string());
                true
            }
            Err(e) => {
                self.state.log(
                    LogKind::Error,
                    format!("{sig} to {} (pid {}) failed: {e}", t.id, t.pid),
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
            Action::AskKill => match self.state.kill_target() {
                Ok(t) => self.state.confirm_kill = Some(t),
                Err(why) => self.state.log(LogKind::Warn, format!("k: {why}")),
            },
            Action::CancelKill => {
                if let Some(t) = self.state.confirm_kill.take() {
                    self.state
                        .log(LogKind::Info, format!("kill {} cancelled", t.id));
                }
            }
            Action::ConfirmKill => {
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
            Action::Resign => match self.state.resign_target() {
                Ok(t) => {
                    let what = format!("asked {} (pid {}) to resign: SIGUSR1", t.id, t.pid);
                    self.send(&t, Signal::SIGUSR1, &what);
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
        let mut term = if opts.headless {
            None
        } else {
            Some(TerminalGuard::enter().map_err(|e| {
                Failure::new(exit::INTERNAL, format!("cannot set up the terminal: {e}"))
            })?)
        };
        let mut input = term.as_ref().map(|_| EventStream::new());
        let mut tick = tokio::time::interval(opts.refresh);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let stop_at = opts.duration.map(|d| Instant::now() + d);
        let mut chaos = opts.chaos.map(|d| {
            let mut i = tokio::time::interval_at(Instant::now() + d, d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
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
                _ = tick.tick() => self.refresh().await,
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
                _ = sigterm.recv() => { why = "SIGTERM"; break; }
                _ = sigint.recv() => { why = "SIGINT"; break; }
                _ = sighup.recv() => { why = "SIGHUP"; break; }
            }
            self.flush_lines(opts.headless);
            if let Some(t) = term.as_mut() {
                let state = &self.state;
                t.terminal
                    .draw(|f| render(f, state))
                    .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot draw: {e}")))?;
            }
        }
        // Leave the screen first, so what follows is readable.
        drop(input);
        drop(term);
        self.state.tick(jiff::Timestamp::now());
        self.state.log(LogKind::Info, format!("stopping ({why})"));
        if let Some(p) = self.state.paused.take() {
            let what = format!("resumed {} (pid {}): SIGCONT", p.id, p.pid);
            self.send(&p, Signal::SIGCONT, &what);
        }
        self.flush_lines(opts.headless);
        if let Some(mut d) = self.demo.take() {
            let mut lines = vec![];
            d.shutdown(&mut exits, Duration::from_secs(4), |e| {
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
                    participant_logs_hint(&self)
                );
            }
        }
        Ok(exit::OK)
    }
}

impl Drop for App {
    /// On panic: a participant the dashboard paused must not stay stopped. (The demo's own
    /// Drop guard kills its participants.)
    fn drop(&mut self) {
        if let Some(p) = self.state.paused.take() {
            let _ = demo::signal(p.pid, Signal::SIGCONT);
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
