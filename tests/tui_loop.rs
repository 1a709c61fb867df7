//! The dashboard's real loop (`App::run_loop`) on a ratatui `TestBackend`, keys from a channel,
//! over the file backend with three real `crown run` participants: `k y` kills the leader,
//! `p` pauses the next one past its lease and `p` resumes it, `r` makes the leader resign,
//! `q` quits. What the keys did is checked in the participants' own logs and processes, and
//! in the dashboard's event log and last frame. (The whole binary in a terminal: tui_tmux.rs.)

mod common;

use common::*;
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use crown::backend::file::FileBackend;
use crown::tui::app::{App, Options};
use crown::tui::state::State;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Whether `pid` is stopped (state `T` in /proc).
fn stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
        .unwrap_or(false)
}

/// The participant leading above `term`, and its term.
fn leader_above(ps: &[Participant], term: u64) -> (usize, u64) {
    eventually("a leader", T, || {
        ps.iter().enumerate().find_map(|(i, p)| {
            let l = p.lines();
            let last = l
                .iter()
                .rev()
                .find(|l| matches!(l.event(), "became_leader" | "stopped_leading"))?;
            (last.event() == "became_leader" && last.term()? > term)
                .then(|| (i, last.term().unwrap()))
        })
    })
}

#[test]
fn the_real_loop_kills_pauses_resumes_resigns_and_quits() {
    let d = tempdir();
    let dir = path(&d).join("e");
    let mut ps: Vec<Participant> = (1..=3)
        .map(|i| Participant::spawn(&dir, &format!("p{i}"), &timings_fast()))
        .collect();
    let (i1, t1) = leader_above(&ps, 0);

    let (keys, input) = futures::channel::mpsc::unbounded::<std::io::Result<TermEvent>>();
    let press = move |c: char| {
        keys.unbounded_send(Ok(TermEvent::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        ))))
        .unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = FileBackend::observe(&dir, "crown").unwrap();
    let mut state = State::new(
        "crown",
        "file",
        &crown::participant::hostname(),
        false,
        jiff::Timestamp::now(),
    );
    state.retry_period = Duration::from_millis(500);
    state.lease_duration = Duration::from_secs(2);
    let mut app = App::new(Arc::new(backend), state, None);
    let (_tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
    let opts = Options {
        refresh: Duration::from_millis(100),
        headless: false,
        duration: None,
        chaos: None,
        read_timeout: Duration::from_secs(2),
    };

    let loop_thread = std::thread::spawn(move || {
        let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
        let why = rt
            .block_on(app.run_loop(
                &opts,
                &mut exits,
                Some(&mut term),
                Some(input),
                std::future::pending(),
            ))
            .unwrap();
        (why, app, term)
    });

    // k, then y: until the leader is gone (the dashboard needs a read and the leader's
    // heartbeat to confirm its process first; before that, k is refused and logged).
    eventually("k y to kill the leader", T, || {
        press('k');
        press('y');
        std::thread::sleep(Duration::from_millis(300));
        ps[i1].child.try_wait().unwrap().map(|_| ())
    });
    let (i2, t2) = leader_above(&ps, t1);
    assert_ne!(i2, i1);

    // p: the new leader is stopped; past its lease another one takes over.
    let pid2 = ps[i2].pid();
    eventually("p to pause the leader", T, || {
        press('p');
        std::thread::sleep(Duration::from_millis(300));
        stopped(pid2).then_some(())
    });
    let (i3, t3) = leader_above(&ps, t2);
    assert!(i3 != i1 && i3 != i2);
    // p again resumes it: it steps down without acting in its old term.
    press('p');
    ps[i2].wait_for("the resumed leader steps down", T, |l| {
        l.event() == "stopped_leading" && l.term() == Some(t2)
    });
    assert!(!stopped(pid2));

    // r: the leader resigns (SIGUSR1) and someone leads in a higher term.
    eventually("r to make the leader resign", T, || {
        press('r');
        std::thread::sleep(Duration::from_millis(300));
        ps[i3]
            .lines()
            .iter()
            .any(|l| l.event() == "stopped_leading" && l.term() == Some(t3))
            .then_some(())
    });
    let (_, t4) = leader_above(&ps, t3);

    press('q');
    let (why, app, term) = loop_thread.join().unwrap();
    assert_eq!(why, "quit");
    let log: Vec<&str> = app.state.events.iter().map(|e| e.text.as_str()).collect();
    for want in ["kill -9 p", "paused p", "resumed p", "to resign"] {
        assert!(
            log.iter().any(|l| l.contains(want)),
            "no {want:?} in the dashboard's log: {log:#?}"
        );
    }
    // The last frame shows the leader of the last term.
    let frame: String = term
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(frame.contains(&format!("term {t4}")), "{frame}");
    for p in ps.iter_mut() {
        if p.child.try_wait().unwrap().is_none() {
            p.signal(nix::sys::signal::Signal::SIGTERM);
            assert_eq!(p.wait_exit(T), Some(0), "[{}] exit", p.id);
        }
    }
}
