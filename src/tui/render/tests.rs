use super::*;
use crate::backend::LeaseView;
use crate::election::EndKind;
use crate::tui::state::tests::{grant, member, record, target, ts};
use crate::tui::state::{LogKind, Snapshot};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::collections::BTreeSet;
use std::time::Duration;

/// Three participants after two failovers (a kill and a pause), p2 paused, with the
/// dashboard's own log lines; every time and pid fixed.
fn busy() -> State {
    let mut s = State::new(
        "crown",
        "file /tmp/crown-demo",
        "box",
        true,
        ts("2025-01-01T12:00:00Z"),
    );
    s.retry_period = Duration::from_millis(500);
    s.log_path = Some("/tmp/crown-demo/crown-tui.log".into());
    let members = |p2hb: &str| {
        vec![
            member("p1", 101, Role::Leader, 1, "2025-01-01T12:00:04.900Z"),
            member("p2", 102, Role::Follower, 1, p2hb),
            member("p3", 103, Role::Follower, 1, "2025-01-01T12:00:04.800Z"),
        ]
    };
    s.apply(
        Snapshot {
            lease: LeaseView::Record(record("p1", 1, 101, "2025-01-01T12:00:01Z")),
            members: members("2025-01-01T12:00:04.950Z"),
            history: vec![grant(1, "p1", "2025-01-01T12:00:01Z", None)],
            dead_pids: BTreeSet::new(),
            mismatched: Default::default(),
        },
        ts("2025-01-01T12:00:05Z"),
    );
    s.log(LogKind::Action, "kill -9 p1 (pid 101)");
    let mut m = members("2025-01-01T12:00:05.400Z");
    m[1].role = Role::Leader;
    m[1].term = crate::election::Term(2);
    s.apply(
        Snapshot {
            lease: LeaseView::Record(record("p2", 2, 102, "2025-01-01T12:00:05.412Z")),
            members: m.clone(),
            history: vec![
                grant(1, "p1", "2025-01-01T12:00:01Z", None),
                grant(
                    2,
                    "p2",
                    "2025-01-01T12:00:05.412Z",
                    Some(("p1", EndKind::HolderDied, 7)),
                ),
            ],
            dead_pids: [101].into(),
            mismatched: Default::default(),
        },
        ts("2025-01-01T12:00:05.500Z"),
    );
    s.paused = Some(target("p2", 102));
    s.log(LogKind::Action, "paused p2 (pid 102): SIGSTOP");
    m[2].role = Role::Leader;
    m[2].term = crate::election::Term(3);
    m[2].last_heartbeat = ts("2025-01-01T12:00:09.900Z");
    s.apply(
        Snapshot {
            lease: LeaseView::Record(record("p3", 3, 103, "2025-01-01T12:00:08.100Z")),
            members: m,
            history: vec![
                grant(1, "p1", "2025-01-01T12:00:01Z", None),
                grant(
                    2,
                    "p2",
                    "2025-01-01T12:00:05.412Z",
                    Some(("p1", EndKind::HolderDied, 7)),
                ),
                grant(
                    3,
                    "p3",
                    "2025-01-01T12:00:08.100Z",
                    Some(("p2", EndKind::Expired, 2104)),
                ),
            ],
            dead_pids: [101].into(),
            mismatched: Default::default(),
        },
        ts("2025-01-01T12:00:10Z"),
    );
    s
}

fn draw(s: &State, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render(f, s)).unwrap();
    t
}

#[test]
fn busy_80x24() {
    insta::assert_snapshot!(draw(&busy(), 80, 24).backend());
}

#[test]
fn busy_120x40() {
    insta::assert_snapshot!(draw(&busy(), 120, 40).backend());
}

#[test]
fn empty_80x24() {
    let s = State::new(
        "crown",
        "file /tmp/crown",
        "box",
        false,
        ts("2025-01-01T12:00:00Z"),
    );
    insta::assert_snapshot!(draw(&s, 80, 24).backend());
}

#[test]
fn remote_leader_greys_the_keys_80x24() {
    let mut s = State::new(
        "crown",
        "kube lease default/crown",
        "box",
        false,
        ts("2025-01-01T12:00:00Z"),
    );
    let mut r = record("pod-a", 7, 1, "2025-01-01T11:59:00Z");
    r.host = "pod-a".into();
    let mut m = member("pod-a", 1, Role::Leader, 7, "2025-01-01T11:59:59.500Z");
    m.host = "pod-a".into();
    s.apply(
        Snapshot {
            lease: LeaseView::Record(r),
            members: vec![m],
            history: vec![grant(
                7,
                "pod-a",
                "2025-01-01T11:59:00Z",
                Some(("pod-b", EndKind::Released, 3)),
            )],
            dead_pids: BTreeSet::new(),
            mismatched: Default::default(),
        },
        ts("2025-01-01T12:00:00Z"),
    );
    insta::assert_snapshot!(draw(&s, 80, 24).backend());
}

#[test]
fn confirm_kill_120x40() {
    let mut s = busy();
    s.confirm_kill = Some(target("p3", 103));
    insta::assert_snapshot!(draw(&s, 120, 40).backend());
}

/// Issue 16: a gap of 0 ms draws no bar and a short gap a short one (they were drawn
/// full width); one grant is `1 grant`.
#[test]
fn gap_bars_are_scaled_and_one_grant_is_singular() {
    let bar_cells = |s: &State, label: &str| -> usize {
        let t = draw(s, 120, 40);
        let buf = t.backend().buffer().clone();
        let w = buf.area.width;
        (0..buf.area.height)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .filter(|row| row.contains(label))
            .map(|row| {
                let gaps = row.rsplit('┌').next().unwrap_or(&row).to_string();
                let gaps = gaps.rsplit("││").next().unwrap_or(&gaps).to_string();
                gaps.chars().filter(|c| "█▉▊▋▌▍▎▏".contains(*c)).count()
            })
            .sum()
    };
    let mut s = busy();
    for (i, g) in s.history.iter_mut().enumerate() {
        if g.grant.gap_ms.is_some() {
            g.grant.gap_ms = Some(if i == 1 { 0 } else { 10 });
        }
    }
    s.lease_duration = Duration::from_secs(2);
    assert_eq!(bar_cells(&s, "0 ms"), 0, "a 0 ms gap draws a bar");
    let t = draw(&s, 120, 40);
    let screen = format!("{:?}", t.backend());
    assert!(!screen.contains("█"), "10 ms of 2 s is no bar:\n{screen}");
    s.history.truncate(1);
    let screen = format!("{:?}", draw(&s, 120, 40).backend());
    assert!(screen.contains("leader history (1 grant)"), "{screen}");
}

#[test]
fn help_80x24() {
    let mut s = busy();
    s.help = true;
    insta::assert_snapshot!(draw(&s, 80, 24).backend());
}
