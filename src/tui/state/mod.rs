//! The dashboard's state: plain data, updated from backend snapshots at an injected `now`, so
//! every change it notices (new leader, failover gap, member appeared, stale or gone) is
//! testable without a clock, a terminal or a backend.

use crate::backend::LeaseView;
use crate::election::{EndKind, Grant, LeaderInfo, Member, Role, Term};
use crate::report::{HistoryRow, escape};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

mod actions;
mod apply;
pub use actions::{Availability, KillPlan, PodKill, Reach, ResignPlan, Target};

/// How many event lines the dashboard keeps.
pub const EVENT_CAPACITY: usize = 500;

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
pub(crate) mod tests;
