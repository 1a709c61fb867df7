use super::*;
use crate::election::{LeaseRecord, ProcessStamp};

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

/// A snapshot of `lease` and these heartbeats, with no history, dead pid or mismatched process.
fn snapshot(lease: LeaseView, members: Vec<Member>) -> Snapshot {
    Snapshot {
        lease,
        members,
        history: vec![],
        dead_pids: BTreeSet::new(),
        mismatched: Default::default(),
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
    let base = snapshot(LeaseView::None, vec![]);
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
        snapshot(LeaseView::Record(r.clone()), vec![]),
        ts("2025-01-01T12:00:02Z"),
    );
    assert_eq!(s.kill_target(), Err("leader on elsewhere".into()));
    r.host = "box".into();
    let snap = |members: Vec<Member>| snapshot(LeaseView::Record(r.clone()), members);
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
        snapshot(LeaseView::Record(r), members),
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
        snapshot(
            LeaseView::Record(record("p1", 4, 101, "2025-01-01T12:00:01Z")),
            members,
        ),
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
            mismatched: [(101, "pid 101: it is not a `crown run`".to_string())].into(),
            ..snapshot(
                LeaseView::Record(record("p1", 4, 101, "2025-01-01T12:00:01Z")),
                vec![hb()],
            )
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
            snapshot(LeaseView::Record(r.clone()), vec![restarted.clone()]),
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
    let base = snapshot(LeaseView::None, vec![]);
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

fn election(id: &str, term: u64, ttl: Option<u64>) -> LeaseView {
    LeaseView::Election(crate::backend::ElectionView {
        leader: LeaderInfo {
            id: id.into(),
            term: Term(term),
            pid: None,
            host: None,
            since: None,
        },
        key: format!("crown/{id}\u{1b}[2J"),
        lease_id: 0x694d,
        granted_ttl_s: ttl,
        ttl_remaining_s: ttl,
        mod_revision: term,
    })
}

#[test]
fn an_etcd_election_shows_its_leader_ttl_and_resign() {
    let mut s = state();
    let snap = |lease| Snapshot {
        history: vec![grant(4, "p1", "2025-01-01T12:00:01Z", None)],
        ..snapshot(lease, vec![])
    };
    s.apply(
        snap(election("p1\u{1b}[2J", 4, Some(10))),
        ts("2025-01-01T12:00:02Z"),
    );
    let l = s.leader.clone().unwrap();
    assert_eq!((l.id.as_str(), l.term), ("p1\\u{1b}[2J", Term(4)));
    assert_eq!(s.lease_duration, Duration::from_secs(10));
    // An unreadable session lease leaves the last known duration, never zero.
    s.apply(snap(election("p1", 4, None)), ts("2025-01-01T12:00:03Z"));
    assert_eq!(s.lease_duration, Duration::from_secs(10));
    assert_eq!(s.history[0].ended, None);
    let at = ts("2025-01-01T12:00:04Z");
    s.apply(
        snap(LeaseView::Resigned(crate::backend::Resigned {
            term: Term(4),
            at,
            by: "p1".into(),
        })),
        ts("2025-01-01T12:00:05Z"),
    );
    assert_eq!(s.leader, None);
    assert_eq!(s.history[0].ended, Some(EndKind::Released));
    assert_eq!(s.last_released_at, Some(at));
    // A huge TTL from a hostile server neither panics nor breaks the screen.
    s.apply(
        snap(election("p1", 4, Some(u64::MAX))),
        ts("2025-01-01T12:00:06Z"),
    );
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
    t.draw(|f| super::super::render::render(f, &s)).unwrap();
}

#[test]
fn a_huge_lease_duration_in_a_record_neither_panics_nor_breaks_the_screen() {
    let mut s = state();
    let mut r = record("p1", 4, 101, "2025-01-01T12:00:01Z");
    r.lease_duration_ms = u64::MAX;
    let m = member("p1", 101, Role::Leader, 4, "2025-01-01T12:00:02Z");
    for at in ["2025-01-01T12:00:02Z", "2025-01-01T12:00:03Z"] {
        s.apply(
            snapshot(LeaseView::Record(r.clone()), vec![m.clone()]),
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
