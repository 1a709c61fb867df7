//! The dashboard's state: plain data, updated from backend snapshots at an injected `now`, so
//! every change it notices (new leader, failover gap, member appeared, stale or gone) is
//! testable without a clock, a terminal or a backend.

use crate::backend::LeaseView;
use crate::election::{EndKind, Grant, LeaderInfo, Member, Role, Term};
use crate::report::{HistoryRow, history_rows};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// How many event lines the dashboard keeps.
pub const EVENT_CAPACITY: usize = 500;

/// A process the dashboard may signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Participant id.
    pub id: String,
    /// Its pid.
    pub pid: u32,
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
    if age <= retry_period * 2 {
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
    /// The help overlay is shown.
    pub help: bool,
    /// The last backend read failed with this.
    pub backend_error: Option<String>,
    /// Where the dashboard logs (shown in the help).
    pub log_path: Option<String>,
    next_seq: u64,
    max_term: Term,
    freshness: BTreeMap<String, Freshness>,
    dead: BTreeSet<String>,
}

impl State {
    /// An empty state.
    pub fn new(election: &str, backend: &str, host: &str, demo: bool, now: Timestamp) -> Self {
        State {
            election: election.to_string(),
            backend: backend.to_string(),
            host: host.to_string(),
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
            help: false,
            backend_error: None,
            log_path: None,
            next_seq: 1,
            max_term: Term(0),
            freshness: BTreeMap::new(),
            dead: BTreeSet::new(),
        }
    }

    /// Which keys mean what now.
    pub fn mode(&self) -> super::input::Mode {
        if self.confirm_kill.is_some() {
            super::input::Mode::ConfirmKill
        } else if self.help {
            super::input::Mode::Help
        } else {
            super::input::Mode::Normal
        }
    }

    /// Appends an event line at `now`.
    pub fn log(&mut self, kind: LogKind, text: impl Into<String>) {
        let line = LogLine {
            seq: self.next_seq,
            at: self.now,
            kind,
            text: text.into(),
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
    pub fn apply(&mut self, snap: Snapshot, now: Timestamp) {
        self.now = now;
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

    /// The leader, if the dashboard may signal it: it must run on this host with a known pid.
    pub fn leader_target(&self) -> Availability {
        let Some(l) = &self.leader else {
            return Err("no leader".into());
        };
        let Some(pid) = l.pid else {
            return Err("leader pid unknown".into());
        };
        match l.host.as_deref() {
            Some(h) if h == self.host => {}
            Some(h) => return Err(format!("leader on {h}")),
            None => return Err("leader host unknown".into()),
        }
        if self
            .members
            .iter()
            .any(|m| m.member.id == l.id && m.member.pid == pid && m.alive == Some(false))
        {
            return Err(format!("pid {pid} is gone"));
        }
        Ok(Target {
            id: l.id.clone(),
            pid,
        })
    }

    /// What `k` would kill.
    pub fn kill_target(&self) -> Availability {
        self.leader_target()
    }

    /// What `p` would pause (or resume, when something is paused).
    pub fn pause_target(&self) -> Availability {
        match &self.paused {
            Some(t) => Ok(t.clone()),
            None => self.leader_target(),
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
            },
            ts("2025-01-01T12:00:02Z"),
        );
        assert_eq!(s.kill_target(), Err("leader on elsewhere".into()));
        r.host = "box".into();
        s.apply(
            Snapshot {
                lease: LeaseView::Record(r),
                members: vec![],
                history: vec![],
                dead_pids: BTreeSet::new(),
            },
            ts("2025-01-01T12:00:02Z"),
        );
        let t = Target {
            id: "p1".into(),
            pid: 101,
        };
        assert_eq!(s.kill_target(), Ok(t.clone()));
        s.paused = Some(t.clone());
        assert_eq!(s.resign_target(), Err("leader is paused".into()));
        assert_eq!(s.pause_target(), Ok(t));
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
