//! The dashboard's state: plain data, updated from backend snapshots at an injected `now`, so
//! every change it notices (new leader, failover gap, member appeared, stale or gone) is
//! testable without a clock, a terminal or a backend.

use crate::backend::LeaseView;
use crate::election::{EndKind, Grant, LeaderInfo, Member, ProcessStamp, Role, Term};
use crate::report::{HistoryRow, escape, history_rows};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// How many event lines the dashboard keeps.
pub const EVENT_CAPACITY: usize = 500;

/// A process the dashboard may signal: a pid confirmed by a heartbeat, with what identifies
/// the process (checked against `/proc` again right before any signal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Participant id.
    pub id: String,
    /// Its pid.
    pub pid: u32,
    /// What its heartbeat says identifies the process.
    pub stamp: ProcessStamp,
}

/// What the dashboard can reach besides processes on this host, by backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// Signals to confirmed local processes only (file backend).
    #[default]
    Local,
    /// Kubernetes: `k` deletes the leader's Pod, `r` asks it to resign through the Lease;
    /// `p` is local only.
    Kube,
    /// etcd: a leader on another host has its session revoked by `k` and is asked to resign
    /// through the `…:resign` key by `r` (signals to a confirmed local one); `p` is local only.
    Etcd,
}

/// What `k` (then `y`) does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillPlan {
    /// SIGKILL a confirmed participant process on this host.
    Signal(Target),
    /// Delete the leader's Pod through the apiserver.
    DeletePod(PodKill),
    /// Revoke the leader's session lease through etcd (`fallback` is always `None`).
    RevokeSession(PodKill),
}

/// The leader's Pod to delete (checked by the apiserver call: same holder and term, crown's
/// label). When the holder names no Pod (crown runs on this host outside a Pod) and
/// `fallback` is a confirmed local process, that process is SIGKILLed instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodKill {
    /// Holder identity = the Pod's name.
    pub holder: String,
    /// The term it holds.
    pub term: Term,
    /// The confirmed local process of that leader, if any.
    pub fallback: Option<Target>,
}

/// What `r` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResignPlan {
    /// SIGUSR1 a confirmed participant process on this host.
    Signal(Target),
    /// Ask the holder of `term` to resign through the backend (the Lease annotation).
    Request {
        /// The leader asked.
        holder: String,
        /// The term to resign; the request is ignored by any other term.
        term: Term,
    },
}

/// What kind of line an event is (its colour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// A new leader or a failover.
    Leader,
    /// Something worth knowing.
    Info,
    /// Something going wrong (stale member, no leader).
    Warn,
    /// An action the dashboard took (kill, pause, resign, start).
    Action,
    /// A failure (backend unreadable, signal refused).
    Error,
}

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Sequence number (strictly increasing), so headless mode prints each line once.
    pub seq: u64,
    /// When the dashboard noticed it.
    pub at: Timestamp,
    /// Its kind.
    pub kind: LogKind,
    /// The text.
    pub text: String,
}

/// How fresh a heartbeat is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Freshness {
    /// Within two retry periods.
    Fresh,
    /// Late, but within the lease duration.
    Late,
    /// Older than the lease duration.
    Stale,
}

/// Judges a heartbeat age against the retry period and the lease duration.
pub fn freshness(age: Duration, retry_period: Duration, lease_duration: Duration) -> Freshness {
    if age <= retry_period.saturating_mul(2) {
        Freshness::Fresh
    } else if age <= lease_duration {
        Freshness::Late
    } else {
        Freshness::Stale
    }
}

/// A member as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its last heartbeat.
    pub member: Member,
    /// Whether its process exists (checked for members on this host only).
    pub alive: Option<bool>,
    /// The last role change the dashboard saw: when, from which role.
    pub transition: Option<Transition>,
}

/// A role change seen by the dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// When the dashboard saw it.
    pub at: Timestamp,
    /// The role before.
    pub from: Role,
    /// The role after.
    pub to: Role,
}

/// One read of the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The lease as stored.
    pub lease: LeaseView,
    /// Heartbeats.
    pub members: Vec<Member>,
    /// Grants, oldest first.
    pub history: Vec<Grant>,
    /// Pids on this host known to be gone (others unknown or alive).
    pub dead_pids: BTreeSet<u32>,
    /// Pids on this host whose live process does not match its heartbeat, with why (a reused
    /// pid, not a `crown run`, another election): never signalled.
    pub mismatched: BTreeMap<u32, String>,
}

/// What identifies one writer of an id's heartbeat: pid and process start time.
type Writer = (u32, Option<u64>);

/// The writers of one id's heartbeat seen lately, to notice two processes sharing an id (their
/// heartbeats overwrite each other, so the pid alternates: A, B, A).
#[derive(Clone, Debug, Default)]
struct IdTrack {
    last: Option<Writer>,
    seen: Vec<(Writer, Timestamp)>,
    /// When the pid last flipped back to one seen before, and the pids involved.
    duplicate: Option<(Timestamp, BTreeSet<u32>)>,
}

/// Why a key does nothing right now (shown greyed in the footer), or what it acts on.
pub type Availability = Result<Target, String>;

/// The dashboard's state.
#[derive(Clone, Debug)]
pub struct State {
    /// Election name.
    pub election: String,
    /// Backend and where it lives, e.g. `file /tmp/crown`.
    pub backend: String,
    /// This host's name (signals only reach processes here).
    pub host: String,
    /// Started by `crown demo` (may start participants).
    pub demo: bool,
    /// Participants' retry period (heartbeat interval).
    pub retry_period: Duration,
    /// Lease duration (from the lease record when there is one).
    pub lease_duration: Duration,
    /// Time zone for clock times.
    pub tz: TimeZone,
    /// Now, as of the last update.
    pub now: Timestamp,
    /// Whether a snapshot has been applied.
    pub loaded: bool,
    /// The lease holder.
    pub leader: Option<LeaderInfo>,
    /// Members, sorted by id.
    pub members: Vec<MemberView>,
    /// Leader history, oldest first.
    pub history: Vec<HistoryRow>,
    /// When the last grant ended, if it did (released).
    pub last_released_at: Option<Timestamp>,
    /// Event log, oldest first.
    pub events: VecDeque<LogLine>,
    /// A process the dashboard stopped (SIGSTOP) and will resume.
    pub paused: Option<Target>,
    /// A kill waiting for y/n.
    pub confirm_kill: Option<Target>,
    /// A Pod deletion waiting for y/n (kube).
    pub confirm_pod: Option<PodKill>,
    /// The help overlay is shown.
    pub help: bool,
    /// The last backend read failed with this.
    pub backend_error: Option<String>,
    /// Where the dashboard logs (shown in the help).
    pub log_path: Option<String>,
    /// Heartbeat pids whose process does not match (from the last snapshot).
    pub mismatched: BTreeMap<u32, String>,
    /// What the keys can reach on this backend.
    pub reach: Reach,
    /// A backend action under way (the keys that act through the backend wait for it).
    pub pending: Option<String>,
    ids: BTreeMap<String, IdTrack>,
    next_seq: u64,
    max_term: Term,
    freshness: BTreeMap<String, Freshness>,
    dead: BTreeSet<String>,
}

impl State {
    /// An empty state.
    pub fn new(election: &str, backend: &str, host: &str, demo: bool, now: Timestamp) -> Self {
        State {
            election: escape(election).into_owned(),
            backend: escape(backend).into_owned(),
            host: escape(host).into_owned(),
            demo,
            retry_period: Duration::from_secs(1),
            lease_duration: Duration::from_secs(5),
            tz: TimeZone::UTC,
            now,
            loaded: false,
            leader: None,
            members: vec![],
            history: vec![],
            last_released_at: None,
            events: VecDeque::new(),
            paused: None,
            confirm_kill: None,
            confirm_pod: None,
            help: false,
            backend_error: None,
            log_path: None,
            mismatched: BTreeMap::new(),
            reach: Reach::Local,
            pending: None,
            ids: BTreeMap::new(),
            next_seq: 1,
            max_term: Term(0),
            freshness: BTreeMap::new(),
            dead: BTreeSet::new(),
        }
    }

    /// Which keys mean what now.
    pub fn mode(&self) -> super::input::Mode {
        if self.confirm_kill.is_some() || self.confirm_pod.is_some() {
            super::input::Mode::ConfirmKill
        } else if self.help {
            super::input::Mode::Help
        } else {
            super::input::Mode::Normal
        }
    }

    /// Appends an event line at `now` (control characters escaped: one event, one line).
    pub fn log(&mut self, kind: LogKind, text: impl Into<String>) {
        let text = text.into();
        let text = match escape(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(e) => e,
        };
        let line = LogLine {
            seq: self.next_seq,
            at: self.now,
            kind,
            text,
        };
        self.next_seq += 1;
        self.events.push_back(line);
        while self.events.len() > EVENT_CAPACITY {
            self.events.pop_front();
        }
    }

    /// Records a failed backend read (logged once per distinct message).
    pub fn apply_error(&mut self, now: Timestamp, message: String) {
        self.now = now;
        if self.backend_error.as_deref() != Some(message.as_str()) {
            self.log(LogKind::Error, format!("backend: {message}"));
        }
        self.backend_error = Some(message);
    }

    /// Moves the clock without a new read (ages and "held for" advance).
    pub fn tick(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// Applies one read of the backend at `now`, logging what changed since the last one.
    pub fn apply(&mut self, mut snap: Snapshot, now: Timestamp) {
        self.now = now;
        sanitize(&mut snap);
        self.mismatched = std::mem::take(&mut snap.mismatched);
        self.track_writers(&snap.members, now);
        if let Some(e) = self.backend_error.take() {
            self.log(LogKind::Info, format!("backend readable again (was: {e})"));
        }
        let (leader, released_at) = match &snap.lease {
            LeaseView::Record(r) => {
                if r.lease_duration_ms > 0 {
                    self.lease_duration = Duration::from_millis(r.lease_duration_ms);
                }
                (r.leader(), if r.is_held() { None } else { r.released_at })
            }
            LeaseView::None => (None, None),
        };
        let history = history_rows(snap.history.clone(), Some(&snap.lease));
        let first = !self.loaded;
        self.loaded = true;

        // Leaders and failovers.
        let new_grants: Vec<Grant> = snap
            .history
            .iter()
            .filter(|g| g.term > self.max_term)
            .cloned()
            .collect();
        if first {
            self.log(
                LogKind::Info,
                format!(
                    "watching {}: {}, {} member(s), {} grant(s) so far",
                    self.election,
                    match &leader {
                        Some(l) => format!("leader {} (term {})", l.id, l.term),
                        None => "no leader".into(),
                    },
                    snap.members.len(),
                    snap.history.len()
                ),
            );
        } else {
            for g in &new_grants {
                self.log(LogKind::Leader, grant_line(g));
            }
            let old = self.leader.as_ref().map(|l| (l.id.as_str(), l.term));
            let new = leader.as_ref().map(|l| (l.id.as_str(), l.term));
            if old != new {
                match (old, new) {
                    (Some((id, term)), None) => self.log(
                        LogKind::Warn,
                        format!("no leader: {id} gave up term {term} (lease free)"),
                    ),
                    (_, Some((id, term))) if !new_grants.iter().any(|g| g.term == term) => {
                        self.log(LogKind::Leader, format!("👑 {id} leads (term {term})"))
                    }
                    _ => {}
                }
            }
        }
        if let Some(t) = snap.history.iter().map(|g| g.term).max() {
            self.max_term = self.max_term.max(t);
        }
        if let Some(l) = &leader {
            self.max_term = self.max_term.max(l.term);
        }

        // Members.
        let mut members: Vec<Member> = snap.members;
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let old: BTreeMap<String, MemberView> = self
            .members
            .drain(..)
            .map(|m| (m.member.id.clone(), m))
            .collect();
        let mut views = Vec::with_capacity(members.len());
        for m in members {
            let alive = if m.host == self.host {
                Some(!snap.dead_pids.contains(&m.pid))
            } else {
                None
            };
            let age = age(now, m.last_heartbeat);
            let fresh = freshness(age, self.retry_period, self.lease_duration);
            let transition = match old.get(&m.id) {
                None => {
                    if !first {
                        self.log(
                            LogKind::Info,
                            format!("member {} appeared (pid {}, host {})", m.id, m.pid, m.host),
                        );
                    }
                    None
                }
                Some(prev) if prev.member.role != m.role => Some(Transition {
                    at: now,
                    from: prev.member.role,
                    to: m.role,
                }),
                Some(prev) => prev.transition.clone(),
            };
            if let Some(prev) = old.get(&m.id)
                && prev.member.pid != m.pid
            {
                self.log(
                    LogKind::Info,
                    format!(
                        "member {} restarted (pid {} → {})",
                        m.id, prev.member.pid, m.pid
                    ),
                );
                self.dead.remove(&m.id);
            }
            let was = self.freshness.insert(m.id.clone(), fresh);
            // A member known dead is reported once as gone, not again as stale.
            if !first && alive != Some(false) {
                match (was, fresh) {
                    (Some(w), Freshness::Stale) if w != Freshness::Stale => self.log(
                        LogKind::Warn,
                        format!(
                            "member {} stale: no heartbeat for {}",
                            m.id,
                            fmt_duration(age)
                        ),
                    ),
                    (Some(Freshness::Stale), f) if f != Freshness::Stale => self.log(
                        LogKind::Info,
                        format!("member {} heartbeating again ({})", m.id, m.role),
                    ),
                    _ => {}
                }
            }
            if alive == Some(false) && self.dead.insert(m.id.clone()) && !first {
                self.log(
                    LogKind::Warn,
                    format!("member {} is gone: pid {} no longer exists", m.id, m.pid),
                );
            }
            views.push(MemberView {
                member: m,
                alive,
                transition,
            });
        }
        for id in old.keys() {
            if !views.iter().any(|v| &v.member.id == id) {
                self.log(LogKind::Info, format!("member {id} left"));
                self.freshness.remove(id);
                self.dead.remove(id);
            }
        }
        self.members = views;
        self.leader = leader;
        self.history = history;
        self.last_released_at = released_at;
    }

    /// Heartbeat age of `m` at `now`.
    pub fn heartbeat_age(&self, m: &Member) -> Duration {
        age(self.now, m.last_heartbeat)
    }

    /// How fresh `m`'s heartbeat is.
    pub fn member_freshness(&self, m: &Member) -> Freshness {
        freshness(
            self.heartbeat_age(m),
            self.retry_period,
            self.lease_duration,
        )
    }

    /// How long the current leader has held the lease (by its own clock's grant time).
    pub fn held_for(&self) -> Option<Duration> {
        self.leader
            .as_ref()
            .and_then(|l| l.since)
            .map(|s| age(self.now, s))
    }

    /// How long a pid flip-flop keeps an id marked as shared by two processes.
    fn duplicate_window(&self) -> Duration {
        // The lease duration may come from a hand-written record: saturate, never overflow.
        (self.lease_duration.saturating_mul(3))
            .max(self.retry_period.saturating_mul(6))
            .clamp(Duration::from_secs(10), Duration::from_secs(600))
    }

    /// Notes who wrote each id's heartbeat, and logs an id that two processes share.
    fn track_writers(&mut self, members: &[Member], now: Timestamp) {
        let window = self.duplicate_window();
        let mut by_id: BTreeMap<&str, Vec<Writer>> = BTreeMap::new();
        for m in members {
            let w = (m.pid, m.process.as_ref().map(|p| p.start_time));
            let ws = by_id.entry(m.id.as_str()).or_default();
            if !ws.contains(&w) {
                ws.push(w);
            }
        }
        // Forget ids not seen for the window (members that left).
        self.ids.retain(|id, t| {
            by_id.contains_key(id.as_str()) || t.seen.iter().any(|(_, at)| age(now, *at) <= window)
        });
        for (id, writers) in by_id {
            let t = self.ids.entry(id.to_string()).or_default();
            t.seen.retain(|(_, at)| age(now, *at) <= window);
            let mut flipped: BTreeSet<u32> = BTreeSet::new();
            if writers.len() > 1 {
                flipped.extend(writers.iter().map(|w| w.0));
            }
            for w in &writers {
                if t.last.is_some_and(|l| l != *w) && t.seen.iter().any(|(s, _)| s == w) {
                    flipped.extend(t.seen.iter().map(|(s, _)| s.0));
                    flipped.insert(w.0);
                }
                t.seen.retain(|(s, _)| s != w);
                t.seen.push((*w, now));
                t.last = Some(*w);
            }
            let was = t
                .duplicate
                .as_ref()
                .is_some_and(|(at, _)| age(now, *at) <= window);
            if flipped.len() > 1 {
                let pids = flipped
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                t.duplicate = Some((now, flipped));
                if !was {
                    self.log(
                        LogKind::Warn,
                        format!(
                            "duplicate id {id}: pids {pids} all publish its heartbeat; k p r will not signal it"
                        ),
                    );
                }
            }
        }
    }

    /// Pids that share `id` (two or more processes publish its heartbeat), if seen lately.
    pub fn duplicate_pids(&self, id: &str) -> Option<&BTreeSet<u32>> {
        let (at, pids) = self.ids.get(id)?.duplicate.as_ref()?;
        (age(self.now, *at) <= self.duplicate_window()).then_some(pids)
    }

    /// The leader, if the dashboard may signal it. A pid named by the lease alone is never
    /// enough: the leader's own heartbeat must confirm it (same id and pid, on this host,
    /// saying it leads in the lease's term, with what identifies its process), its id must not
    /// be shared by two processes, and the live process must match (checked by the snapshot
    /// reader and again right before any signal).
    pub fn leader_target(&self) -> Availability {
        let Some(l) = &self.leader else {
            return Err("no leader".into());
        };
        match l.host.as_deref() {
            Some(h) if h == self.host => {}
            Some(h) => return Err(format!("leader on {h}")),
            None => {}
        }
        let Some(v) = self.members.iter().find(|m| m.member.id == l.id) else {
            return Err(format!("no heartbeat of {} confirms its pid", l.id));
        };
        let m = &v.member;
        if m.host != self.host {
            return Err(format!("leader on {}", m.host));
        }
        if let Some(pids) = self.duplicate_pids(&l.id) {
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            return Err(format!("duplicate id {} (pids {})", l.id, pids.join(", ")));
        }
        if let Some(pid) = l.pid
            && pid != m.pid
        {
            return Err(format!(
                "lease names pid {pid}, heartbeat of {} pid {}",
                l.id, m.pid
            ));
        }
        if m.role != Role::Leader || m.term != l.term {
            return Err(format!(
                "heartbeat of {} says {} in term {}, not leader in term {}",
                l.id, m.role, m.term, l.term
            ));
        }
        let Some(stamp) = &m.process else {
            return Err(format!(
                "heartbeat of {} does not identify its process (older crown)",
                l.id
            ));
        };
        if v.alive == Some(false) {
            return Err(format!("pid {} is gone", m.pid));
        }
        if let Some(why) = self.mismatched.get(&m.pid) {
            return Err(why.clone());
        }
        Ok(Target {
            id: l.id.clone(),
            pid: m.pid,
            stamp: stamp.clone(),
        })
    }

    /// What `k` would kill by a signal (chaos mode uses this).
    pub fn kill_target(&self) -> Availability {
        self.leader_target()
    }

    /// What `k` does. On Kubernetes the leader's Pod is deleted, even when its process runs
    /// on this host (a test kubelet): a killed container is restarted in the same Pod, the
    /// Pod is what Kubernetes manages and what `kubectl delete pod` would remove. A confirmed
    /// local process is the fallback for a holder that names no Pod (crown run on this host
    /// with `--backend kube`). Elsewhere, a confirmed local process only.
    pub fn kill_plan(&self) -> Result<KillPlan, String> {
        match self.reach {
            Reach::Kube => {
                if let Some(p) = &self.pending {
                    return Err(format!("waiting for {p}"));
                }
                let Some(l) = &self.leader else {
                    return Err("no leader".into());
                };
                Ok(KillPlan::DeletePod(PodKill {
                    holder: l.id.clone(),
                    term: l.term,
                    fallback: self.leader_target().ok(),
                }))
            }
            // A confirmed local process is killed for real; a leader elsewhere has its session
            // revoked (a crown successor waits out its TTL, so it has stopped acting first).
            Reach::Etcd => match self.leader_target() {
                Ok(t) => Ok(KillPlan::Signal(t)),
                Err(why) if self.paused.is_some() => Err(why),
                Err(_) => {
                    if let Some(p) = &self.pending {
                        return Err(format!("waiting for {p}"));
                    }
                    let Some(l) = &self.leader else {
                        return Err("no leader".into());
                    };
                    Ok(KillPlan::RevokeSession(PodKill {
                        holder: l.id.clone(),
                        term: l.term,
                        fallback: None,
                    }))
                }
            },
            Reach::Local => self.leader_target().map(KillPlan::Signal),
        }
    }

    /// A refusal of a key that only signals processes on this host, saying so when there is
    /// a leader it cannot reach.
    fn local_only(&self, why: String) -> String {
        if self.leader.is_some() {
            format!("{why}; local only")
        } else {
            why
        }
    }

    /// What `p` would pause (or resume, when something is paused): a confirmed process on
    /// this host, on every backend (there is no remote pause).
    pub fn pause_target(&self) -> Availability {
        match &self.paused {
            Some(t) => Ok(t.clone()),
            None => match self.reach {
                Reach::Local => self.leader_target(),
                Reach::Kube | Reach::Etcd => self.leader_target().map_err(|w| self.local_only(w)),
            },
        }
    }

    /// What `r` does. On Kubernetes always the resign request on the Lease (it reaches the
    /// holder wherever it runs, names the term, and a stale one is ignored), never SIGUSR1. On
    /// etcd SIGUSR1 to a confirmed process on this host, else the resign request through the
    /// `…:resign` key (a crown leader anywhere honours it; etcd refuses it for a foreign one).
    pub fn resign_plan(&self) -> Result<ResignPlan, String> {
        let request = || {
            if let Some(p) = &self.pending {
                return Err(format!("waiting for {p}"));
            }
            let Some(l) = &self.leader else {
                return Err("no leader".into());
            };
            if let Some(p) = &self.paused
                && p.id == l.id
            {
                return Err("leader is paused".into());
            }
            Ok(ResignPlan::Request {
                holder: l.id.clone(),
                term: l.term,
            })
        };
        match self.reach {
            Reach::Kube => request(),
            Reach::Etcd => match self.resign_target() {
                Ok(t) => Ok(ResignPlan::Signal(t)),
                Err(why) if self.paused.is_some() => Err(why),
                Err(_) => request(),
            },
            Reach::Local => self.resign_target().map(ResignPlan::Signal),
        }
    }

    /// What `r` would ask to resign.
    pub fn resign_target(&self) -> Availability {
        let t = self.leader_target()?;
        if self.paused.as_ref().is_some_and(|p| p.pid == t.pid) {
            return Err("leader is paused".into());
        }
        Ok(t)
    }

    /// Whether `n` may start a participant.
    pub fn spawn_available(&self) -> Result<(), String> {
        if self.demo {
            Ok(())
        } else {
            Err("demo only".into())
        }
    }

    /// The failover gaps of the last `n` grants that had one, oldest first: (term, gap ms).
    pub fn recent_gaps(&self, n: usize) -> Vec<(Term, u64)> {
        let gaps: Vec<(Term, u64)> = self
            .history
            .iter()
            .filter_map(|r| r.grant.gap_ms.map(|g| (r.grant.term, g)))
            .collect();
        gaps[gaps.len().saturating_sub(n)..].to_vec()
    }

    /// When grant `i` of the history ended, if it did: the next grant minus its gap, or the
    /// release of the last one.
    pub fn grant_end(&self, i: usize) -> Option<Timestamp> {
        match self.history.get(i + 1) {
            Some(next) => {
                let gap = next.grant.gap_ms.unwrap_or(0);
                next.grant
                    .acquired_at
                    .checked_sub(jiff::SignedDuration::from_millis(gap as i64))
                    .ok()
            }
            None if self.history.get(i).is_some_and(|r| r.ended.is_some()) => self.last_released_at,
            None => None,
        }
    }

    /// A clock time in the dashboard's time zone, `HH:MM:SS`.
    pub fn clock(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone()).strftime("%H:%M:%S").to_string()
    }
}

/// Escapes control characters in every string of a snapshot that is shown or logged.
fn sanitize(snap: &mut Snapshot) {
    fn fix(s: &mut String) {
        if let std::borrow::Cow::Owned(e) = escape(s) {
            *s = e;
        }
    }
    fn fix_opt(s: &mut Option<String>) {
        if let Some(s) = s {
            fix(s);
        }
    }
    if let LeaseView::Record(r) = &mut snap.lease {
        fix(&mut r.holder);
        fix(&mut r.host);
        fix_opt(&mut r.released_by);
    }
    for m in &mut snap.members {
        fix(&mut m.id);
        fix(&mut m.host);
        fix(&mut m.version);
    }
    for g in &mut snap.history {
        fix(&mut g.holder);
        fix_opt(&mut g.host);
        fix_opt(&mut g.previous_holder);
    }
    for why in snap.mismatched.values_mut() {
        fix(why);
    }
}

/// One line for a new grant.
pub fn grant_line(g: &Grant) -> String {
    let mut s = format!("👑 {} leads (term {})", g.holder, g.term);
    match (&g.previous_holder, g.previous_end) {
        (Some(p), Some(end)) => s += &format!(": {p} {}", end_phrase(end)),
        (Some(p), None) => s += &format!(": after {p}"),
        _ => {}
    }
    if let Some(gap) = g.gap_ms {
        s += &format!(", {gap} ms without leader");
    }
    s
}

fn end_phrase(e: EndKind) -> &'static str {
    match e {
        EndKind::Released => "released",
        EndKind::Expired => "expired",
        EndKind::HolderDied => "died",
        EndKind::Corrupt => "(corrupt record replaced)",
        EndKind::Revoked => "revoked",
    }
}

fn age(now: Timestamp, t: Timestamp) -> Duration {
    let d = now.duration_since(t);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// A short human duration: `850ms`, `3.2s`, `42s`, `3m12s`, `1h02m`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 60_000 {
        format!("{}s", d.as_secs())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, (d.as_secs() % 3600) / 60)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::election::LeaseRecord;

    pub fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    pub fn member(id: &str, pid: u32, role: Role, term: u64, hb: &str) -> Member {
        Member {
            id: id.into(),
            pid,
            host: "box".into(),
            role,
            term: Term(term),
            last_heartbeat: ts(hb),
            started_at: ts("2025-01-01T12:00:00Z"),
            version: "0.1.0".into(),
            process: Some(stamp(pid)),
        }
    }

    pub fn stamp(pid: u32) -> ProcessStamp {
        ProcessStamp {
            start_time: 1000 + u64::from(pid),
            boot_id: "boot".into(),
            election: "crown".into(),
        }
    }

    pub fn target(id: &str, pid: u32) -> Target {
        Target {
            id: id.into(),
            pid,
            stamp: stamp(pid),
        }
    }

    pub fn record(holder: &str, term: u64, pid: u32, acquired: &str) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            term: Term(term),
            acquired_at: ts(acquired),
            renewed_at: ts(acquired),
            lease_duration_ms: 2000,
            pid,
            host: "box".into(),
            released_at: None,
            released_by: None,
            revision: 1,
        }
    }

    pub fn grant(term: u64, holder: &str, at: &str, prev: Option<(&str, EndKind, u64)>) -> Grant {
        Grant {
            term: Term(term),
            holder: holder.into(),
            acquired_at: ts(at),
            pid: Some(100 + term as u32),
            host: Some("box".into()),
            previous_holder: prev.map(|p| p.0.to_string()),
            previous_end: prev.map(|p| p.1),
            gap_ms: prev.map(|p| p.2),
        }
    }

    fn state() -> State {
        let mut s = State::new(
            "crown",
            "file /tmp/x",
            "box",
            false,
            ts("2025-01-01T12:00:00Z"),
        );
        s.retry_period = Duration::from_millis(500);
        s.lease_duration = Duration::from_secs(2);
        s
    }

    #[test]
    fn freshness_thresholds() {
        let r = Duration::from_millis(500);
        let l = Duration::from_secs(2);
        assert_eq!(
            freshness(Duration::from_millis(900), r, l),
            Freshness::Fresh
        );
        assert_eq!(
            freshness(Duration::from_millis(1500), r, l),
            Freshness::Late
        );
        assert_eq!(
            freshness(Duration::from_millis(2500), r, l),
            Freshness::Stale
        );
    }

    #[test]
    fn failover_is_logged_once_with_its_gap() {
        let mut s = state();
        let snap1 = Snapshot {
            lease: LeaseView::Record(record("p1", 1, 101, "2025-01-01T12:00:01Z")),
            members: vec![
                member("p1", 101, Role::Leader, 1, "2025-01-01T12:00:05Z"),
                member("p2", 102, Role::Follower, 1, "2025-01-01T12:00:05Z"),
            ],
            history: vec![grant(1, "p1", "2025-01-01T12:00:01Z", None)],
            dead_pids: BTreeSet::new(),
            mismatched: Default::default(),
        };
        s.apply(snap1.clone(), ts("2025-01-01T12:00:05.200Z"));
        assert_eq!(s.events.len(), 1);
        assert!(
            s.events[0].text.contains("leader p1 (term 1)"),
            "{:?}",
            s.events
        );
        s.apply(snap1, ts("2025-01-01T12:00:05.400Z"));
        assert_eq!(s.events.len(), 1, "no change, no line");

        let snap2 = Snapshot {
            lease: LeaseView::Record(record("p2", 2, 102, "2025-01-01T12:00:06Z")),
            members: vec![
                member("p1", 101, Role::Leader, 1, "2025-01-01T12:00:05Z"),
                member("p2", 102, Role::Leader, 2, "2025-01-01T12:00:06Z"),
            ],
            history: vec![
                grant(1, "p1", "2025-01-01T12:00:01Z", None),
                grant(
                    2,
                    "p2",
                    "2025-01-01T12:00:06Z",
                    Some(("p1", EndKind::HolderDied, 12)),
                ),
            ],
            dead_pids: [101].into(),
            mismatched: Default::default(),
        };
        s.apply(snap2, ts("2025-01-01T12:00:06.100Z"));
        let texts: Vec<&str> = s.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts[1..],
            [
                "👑 p2 leads (term 2): p1 died, 12 ms without leader",
                "member p1 is gone: pid 101 no longer exists",
            ]
        );
        assert_eq!(s.recent_gaps(5), vec![(Term(2), 12)]);
        assert_eq!(
            s.members[1].transition.as_ref().map(|t| (t.from, t.to)),
            Some((Role::Follower, Role::Leader))
        );
        assert_eq!(s.grant_end(0), Some(ts("2025-01-01T12:00:05.988Z")));
        assert_eq!(s.grant_end(1), None);
    }

    #[test]
    fn members_appear_go_stale_and_leave() {
        let mut s = state();
        let base = Snapshot {
            lease: LeaseView::None,
            members: vec![],
            history: vec![],
            dead_pids: BTreeSet::new(),
            mismatched: Default::default(),
        };
        s.apply(base.clone(), ts("2025-01-01T12:00:00Z"));
        let mut with = base.clone();
        with.members = vec![member(
            "p3",
            103,
            Role::Candidate,
            0,
            "2025-01-01T12:00:01Z",
        )];
        s.apply(with.clone(), ts("2025-01-01T12:00:01Z"));
        s.apply(with.clone(), ts("2025-01-01T12:00:02Z")); // late: nothing
        s.apply(with, ts("2025-01-01T12:00:03.500Z")); // stale
        s.apply(base, ts("2025-01-01T12:00:04Z"));
        let texts: Vec<&str> = s.events.iter().skip(1).map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "member p3 appeared (pid 103, host box)",
                "member p3 stale: no heartbeat for 2.5s",
                "member p3 left",
            ]
        );
    }

    #[test]
    fn actions_only_on_a_local_leader() {
        let mut s = state();
        assert_eq!(s.kill_target(), Err("no leader".into()));
        assert_eq!(s.spawn_available(), Err("demo only".into()));
        let mut r = record("p1", 1, 101, "2025-01-01T12:00:01Z");
        r.host = "elsewhere".into();
        s.apply(
            Snapshot {
                lease: LeaseView::Record(r.clone()),
                members: vec![],
                history: vec![],
                dead_pids: BTreeSet::new(),
                mismatched: Default::default(),
            },
            ts("2025-01-01T12:00:02Z"),
        );
        assert_eq!(s.kill_target(), Err("leader on elsewhere".into()));
        r.host = "box".into();
        let snap = |members: Vec<Member>| Snapshot {
            lease: LeaseView::Record(r.clone()),
            members,
            history: vec![],
            dead_pids: BTreeSet::new(),
            mismatched: Default::default(),
        };
        // The lease alone names a pid: never enough.
        s.apply(snap(vec![]), ts("2025-01-01T12:00:02Z"));
        assert_eq!(
            s.kill_target(),
            Err("no heartbeat of p1 confirms its pid".into())
        );
        assert!(s.pause_target().is_err() && s.resign_target().is_err());
        let hb = member("p1", 101, Role::Leader, 1, "2025-01-01T12:00:02Z");
        s.apply(snap(vec![hb.clone()]), ts("2025-01-01T12:00:02Z"));
        let t = target("p1", 101);
        assert_eq!(s.kill_target(), Ok(t.clone()));
        s.paused = Some(t.clone());
        assert_eq!(s.resign_target(), Err("leader is paused".into()));
        assert_eq!(s.pause_target(), Ok(t));
    }

    /// A leader `p1` in term 4; on this host with a confirming heartbeat when `local`, else on
    /// host `node-a` (a Pod elsewhere) with no heartbeat here.
    fn leader_at(s: &mut State, local: bool) {
        let mut r = record("p1", 4, 101, "2025-01-01T12:00:01Z");
        let mut members = vec![member("p1", 101, Role::Leader, 4, "2025-01-01T12:00:02Z")];
        if !local {
            r.host = "node-a".into();
            members[0].host = "node-a".into();
        }
        s.apply(
            Snapshot {
                lease: LeaseView::Record(r),
                members,
                history: vec![],
                dead_pids: BTreeSet::new(),
                mismatched: Default::default(),
            },
            ts("2025-01-01T12:00:02Z"),
        );
    }

    #[test]
    fn keys_per_backend_and_leader_kind() {
        let pod = |fallback: Option<Target>| {
            Ok(KillPlan::DeletePod(PodKill {
                holder: "p1".into(),
                term: Term(4),
                fallback,
            }))
        };
        let request = Ok(ResignPlan::Request {
            holder: "p1".into(),
            term: Term(4),
        });
        // No leader: nothing to act on, on any backend.
        for reach in [Reach::Local, Reach::Kube, Reach::Etcd] {
            let mut s = state();
            s.reach = reach;
            assert_eq!(s.kill_plan(), Err("no leader".into()), "{reach:?}");
            assert!(s.resign_plan().is_err() && s.pause_target().is_err());
        }

        // File: a remote leader greys k p r; a local confirmed one gets signals.
        let mut s = state();
        leader_at(&mut s, false);
        assert_eq!(s.kill_plan(), Err("leader on node-a".into()));
        assert_eq!(s.resign_plan(), Err("leader on node-a".into()));
        assert_eq!(s.pause_target(), Err("leader on node-a".into()));
        leader_at(&mut s, true);
        assert_eq!(s.kill_plan(), Ok(KillPlan::Signal(target("p1", 101))));
        assert_eq!(s.resign_plan(), Ok(ResignPlan::Signal(target("p1", 101))));

        // Kube, leader in a Pod elsewhere: k deletes its Pod, r asks through the Lease, p
        // says it is local only.
        let mut s = state();
        s.reach = Reach::Kube;
        leader_at(&mut s, false);
        assert_eq!(s.kill_plan(), pod(None));
        assert_eq!(s.resign_plan(), request);
        assert_eq!(s.pause_target(), Err("leader on node-a; local only".into()));
        // Kube, leader a confirmed process on this host: the Pod still comes first (the local
        // process is the fallback for a holder that names no Pod); r stays the Lease request;
        // p pauses the local process.
        leader_at(&mut s, true);
        assert_eq!(s.kill_plan(), pod(Some(target("p1", 101))));
        assert_eq!(s.resign_plan(), request);
        assert_eq!(s.pause_target(), Ok(target("p1", 101)));
        // A paused leader cannot act on a resign request.
        s.paused = Some(target("p1", 101));
        assert_eq!(s.resign_plan(), Err("leader is paused".into()));
        s.paused = None;
        // One backend action at a time.
        s.pending = Some("deleting Pod p1 (leader in term 4)".into());
        let busy = "waiting for deleting Pod p1 (leader in term 4)".to_string();
        assert_eq!(s.kill_plan(), Err(busy.clone()));
        assert_eq!(s.resign_plan(), Err(busy));
        assert!(s.pause_target().is_ok(), "p is local and never waits");

        // Etcd: a leader elsewhere has its session revoked by k and is asked through the
        // resign key by r; a local one gets signals; p is local only, saying so.
        let mut s = state();
        s.reach = Reach::Etcd;
        leader_at(&mut s, false);
        assert_eq!(
            s.kill_plan(),
            Ok(KillPlan::RevokeSession(PodKill {
                holder: "p1".into(),
                term: Term(4),
                fallback: None
            }))
        );
        assert_eq!(s.resign_plan(), request);
        assert_eq!(s.pause_target(), Err("leader on node-a; local only".into()));
        s.pending = Some("asking p1 to resign term 4".into());
        assert_eq!(
            s.resign_plan(),
            Err("waiting for asking p1 to resign term 4".into())
        );
        s.pending = None;
        leader_at(&mut s, true);
        assert_eq!(s.kill_plan(), Ok(KillPlan::Signal(target("p1", 101))));
        assert_eq!(s.resign_plan(), Ok(ResignPlan::Signal(target("p1", 101))));
        s.paused = Some(target("p1", 101));
        assert_eq!(s.resign_plan(), Err("leader is paused".into()));
    }

    #[test]
    fn a_pod_deletion_asks_first_and_any_other_key_cancels() {
        use crate::tui::input::{Action, Mode, action};
        use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
        let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        let mut s = state();
        s.reach = Reach::Kube;
        leader_at(&mut s, false);
        assert_eq!(action(&key('k'), s.mode()), Action::AskKill);
        let Ok(KillPlan::DeletePod(k)) = s.kill_plan() else {
            panic!("k deletes the Pod on kube")
        };
        s.confirm_pod = Some(k);
        assert_eq!(s.mode(), Mode::ConfirmKill);
        assert_eq!(action(&key('y'), s.mode()), Action::ConfirmKill);
        assert_eq!(action(&key('r'), s.mode()), Action::CancelKill);
    }

    fn local_leader(s: &mut State, members: Vec<Member>, at: &str) {
        s.apply(
            Snapshot {
                lease: LeaseView::Record(record("p1", 4, 101, "2025-01-01T12:00:01Z")),
                members,
                history: vec![],
                dead_pids: BTreeSet::new(),
                mismatched: Default::default(),
            },
            ts(at),
        );
    }

    #[test]
    fn a_heartbeat_must_confirm_the_leases_pid_role_and_process() {
        let at = "2025-01-01T12:00:02Z";
        let hb = || member("p1", 101, Role::Leader, 4, at);
        let mut s = state();
        // A lease naming an unrelated pid, with another process's heartbeat under that id.
        let mut other = hb();
        other.pid = 555;
        local_leader(&mut s, vec![other], at);
        assert_eq!(
            s.kill_target(),
            Err("lease names pid 101, heartbeat of p1 pid 555".into())
        );
        // The heartbeat under the leader's id is a follower's (a shared id): not the leader.
        let mut follower = hb();
        follower.role = Role::Follower;
        let mut s = state();
        local_leader(&mut s, vec![follower], at);
        assert_eq!(
            s.kill_target(),
            Err("heartbeat of p1 says follower in term 4, not leader in term 4".into())
        );
        // An old participant's heartbeat without a process stamp.
        let mut old = hb();
        old.process = None;
        let mut s = state();
        local_leader(&mut s, vec![old], at);
        assert!(
            s.kill_target().unwrap_err().contains("does not identify"),
            "{:?}",
            s.kill_target()
        );
        // The snapshot reader found another process at that pid.
        let mut s = state();
        s.apply(
            Snapshot {
                lease: LeaseView::Record(record("p1", 4, 101, "2025-01-01T12:00:01Z")),
                members: vec![hb()],
                history: vec![],
                dead_pids: BTreeSet::new(),
                mismatched: [(101, "pid 101: it is not a `crown run`".to_string())].into(),
            },
            ts(at),
        );
        assert_eq!(
            s.kill_target(),
            Err("pid 101: it is not a `crown run`".into())
        );
        let mut s = state();
        local_leader(&mut s, vec![hb()], at);
        assert_eq!(s.kill_target(), Ok(target("p1", 101)));
    }

    #[test]
    fn an_id_shared_by_two_processes_is_detected_and_never_signalled() {
        let mut s = state();
        let leader = member("p1", 101, Role::Leader, 4, "2025-01-01T12:00:02Z");
        let mut follower = member("p1", 202, Role::Follower, 4, "2025-01-01T12:00:02Z");
        follower.process = Some(stamp(202));
        local_leader(&mut s, vec![leader.clone()], "2025-01-01T12:00:02Z");
        assert!(s.kill_target().is_ok());
        // Their heartbeats overwrite each other: 101, 202, 101.
        local_leader(&mut s, vec![follower.clone()], "2025-01-01T12:00:02.200Z");
        local_leader(&mut s, vec![leader.clone()], "2025-01-01T12:00:02.400Z");
        assert_eq!(
            s.kill_target(),
            Err("duplicate id p1 (pids 101, 202)".into())
        );
        assert!(s.pause_target().is_err() && s.resign_target().is_err());
        assert_eq!(
            s.events
                .iter()
                .filter(|e| e.text.starts_with("duplicate id p1"))
                .count(),
            1,
            "{:?}",
            s.events
        );
        // A restart (a new pid that stays) is not a duplicate.
        let mut s = state();
        local_leader(&mut s, vec![leader.clone()], "2025-01-01T12:00:02Z");
        let mut restarted = member("p1", 303, Role::Leader, 4, "2025-01-01T12:00:03Z");
        restarted.process = Some(stamp(303));
        let mut r = record("p1", 4, 303, "2025-01-01T12:00:01Z");
        r.revision = 2;
        for at in ["2025-01-01T12:00:03Z", "2025-01-01T12:00:04Z"] {
            s.apply(
                Snapshot {
                    lease: LeaseView::Record(r.clone()),
                    members: vec![restarted.clone()],
                    history: vec![],
                    dead_pids: BTreeSet::new(),
                    mismatched: Default::default(),
                },
                ts(at),
            );
        }
        assert_eq!(s.kill_target(), Ok(target("p1", 303)));
    }

    #[test]
    fn control_characters_never_reach_the_screen_or_the_log() {
        let evil = "p\u{1b}]0;title\u{7}\u{1b}[2J\nforged";
        let mut s = state();
        let mut m = member(evil, 101, Role::Leader, 4, "2025-01-01T12:00:02Z");
        m.host = evil.into();
        let mut r = record(evil, 4, 101, "2025-01-01T12:00:01Z");
        r.host = evil.into();
        let base = Snapshot {
            lease: LeaseView::None,
            members: vec![],
            history: vec![],
            dead_pids: BTreeSet::new(),
            mismatched: Default::default(),
        };
        s.apply(base, ts("2025-01-01T12:00:01Z"));
        s.apply(
            Snapshot {
                lease: LeaseView::Record(r),
                members: vec![m],
                history: vec![grant(
                    4,
                    evil,
                    "2025-01-01T12:00:01Z",
                    Some((evil, EndKind::Expired, 5)),
                )],
                dead_pids: BTreeSet::new(),
                mismatched: Default::default(),
            },
            ts("2025-01-01T12:00:02Z"),
        );
        s.log(LogKind::Error, format!("backend: {evil}"));
        let bad = |t: &str| t.chars().any(|c| c.is_control());
        for e in &s.events {
            assert!(!bad(&e.text), "{:?}", e.text);
        }
        assert!(s.events.len() >= 3, "{:?}", s.events);
        assert!(!bad(&s.members[0].member.id) && !bad(&s.members[0].member.host));
        assert!(!bad(&s.leader.as_ref().unwrap().id));
        assert!(!bad(&s.history[0].grant.holder));
        assert!(s.members[0].member.id.contains("\\u{1b}]0;title"));
    }

    #[test]
    fn a_huge_lease_duration_in_a_record_neither_panics_nor_breaks_the_screen() {
        let mut s = state();
        let mut r = record("p1", 4, 101, "2025-01-01T12:00:01Z");
        r.lease_duration_ms = u64::MAX;
        let m = member("p1", 101, Role::Leader, 4, "2025-01-01T12:00:02Z");
        for at in ["2025-01-01T12:00:02Z", "2025-01-01T12:00:03Z"] {
            s.apply(
                Snapshot {
                    lease: LeaseView::Record(r.clone()),
                    members: vec![m.clone()],
                    history: vec![],
                    dead_pids: BTreeSet::new(),
                    mismatched: Default::default(),
                },
                ts(at),
            );
        }
        assert_eq!(s.kill_target(), Ok(target("p1", 101)));
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
        t.draw(|f| super::super::render::render(f, &s)).unwrap();
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(fmt_duration(Duration::from_millis(3240)), "3.2s");
        assert_eq!(fmt_duration(Duration::from_secs(42)), "42s");
        assert_eq!(fmt_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(fmt_duration(Duration::from_secs(3720)), "1h02m");
    }
}
