//! crown behaves like the tools platform engineers already use (issue 16): bounded waits like
//! `flock -w`, one-shot commands that fail fast with one line, `RUST_LOG`, `ETCDCTL_*`
//! fallbacks, completions, a man page, kubectl-style output, and an exit-code table that
//! matches `src/exit.rs`.

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use common::*;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A leader on `dir`, waited for.
fn leader(dir: &std::path::Path, id: &str) -> Participant {
    let p = Participant::spawn(dir, id, &timings_fast());
    p.wait_for("leader", T, |l| l.event() == "became_leader");
    p
}

/// `crown run --wait 0` against a held lease tries once and exits 8 at once; `--wait 2s`
/// gives up after about 2 s with the same code and a line saying so.
#[test]
fn wait_gives_up_with_exit_8_file() {
    let d = tempdir();
    let _p1 = leader(d.path(), "p1");
    for (wait, min) in [("0", Duration::ZERO), ("2s", Duration::from_secs(2))] {
        let mut args = timings_fast();
        args.extend(s(&["--dir", d.path().to_str().unwrap(), "--wait", wait]));
        let start = Instant::now();
        let mut p2 = Participant::spawn_with("p2", &args, &[]);
        let code = p2.wait_exit(T);
        let took = start.elapsed();
        assert_eq!(code, Some(8), "--wait {wait}: {:?}", p2.raw.lock().unwrap());
        assert!(took >= min, "--wait {wait} gave up after {took:?}");
        assert!(
            took < min + Duration::from_secs(10),
            "--wait {wait} took {took:?}"
        );
        let lines = p2.lines();
        assert!(
            lines.iter().any(|l| l.event() == "wait_expired"),
            "{:?}",
            p2.raw.lock().unwrap()
        );
        assert!(!lines.iter().any(|l| l.event() == "became_leader"));
    }
}

/// A free election: `--wait 0` is granted, runs the child and exits with its code.
#[test]
fn wait_0_on_a_free_election_leads() {
    let d = tempdir();
    let mut args = timings_fast();
    args.extend(s(&[
        "--dir",
        d.path().to_str().unwrap(),
        "--wait",
        "0",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]));
    let mut p = Participant::spawn_with("p1", &args, &[]);
    assert_eq!(p.wait_exit(T), Some(3), "{:?}", p.raw.lock().unwrap());
    assert!(p.lines().iter().any(|l| l.event() == "became_leader"));
}

/// A leader that goes away within the wait: the waiting participant is granted and stays.
#[test]
fn wait_is_met_when_the_leader_leaves_in_time() {
    let d = tempdir();
    let mut p1 = leader(d.path(), "p1");
    let mut args = timings_fast();
    args.extend(s(&["--dir", d.path().to_str().unwrap(), "--wait", "15s"]));
    let mut p2 = Participant::spawn_with("p2", &args, &[]);
    p2.wait_for("follower", T, |l| l.event() == "follower");
    p1.signal(Signal::SIGTERM);
    assert_eq!(p1.wait_exit(T), Some(0));
    p2.wait_for("leader", T, |l| l.event() == "became_leader");
    p2.signal(Signal::SIGTERM);
    assert_eq!(p2.wait_exit(T), Some(0));
    assert!(!p2.lines().iter().any(|l| l.event() == "wait_expired"));
}

/// The same on etcd: `--wait 1s` against a held election exits 8.
#[test]
fn wait_gives_up_with_exit_8_etcd() {
    etcd::require_etcd();
    let e = etcd::Etcd::start(1);
    let mut args = s(&["--backend", "etcd", "--endpoints", &e.endpoints()]);
    args.extend(timings_fast());
    let p1 = Participant::spawn_with("p1", &args, &[]);
    p1.wait_for("leader", T, |l| l.event() == "became_leader");
    args.extend(s(&["--wait", "1s"]));
    let mut p2 = Participant::spawn_with("p2", &args, &[]);
    assert_eq!(p2.wait_exit(T), Some(8), "{:?}", p2.raw.lock().unwrap());
}
