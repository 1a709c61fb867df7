//! `crown demo` without a terminal: it prints the participants' prefixed log lines and the
//! dashboard's events, kills the leader with `--chaos`, stops by itself after `--duration`,
//! and leaves no participant behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_crown");

#[test]
fn headless_demo_with_chaos_shows_failovers_and_stops_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["demo", "-p", "3", "--duration", "7s", "--chaos"])
        .args(["--chaos-interval", "2s", "--lease-duration", "2s"])
        .args([
            "--renew-deadline",
            "1500ms",
            "--retry-period",
            "500ms",
            "--dir",
        ])
        .arg(tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("run crown demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}:\n{stdout}", out.status);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    for needle in [
        "demo | 3 participant(s) in",
        "BECAME LEADER (term 1)",
        "demo | chaos: kill -9 ",
        "ended: killed by SIGKILL",
        "demo | restarted ",
        "leads (term 2): ",
        " ms without leader",
        "demo | stopping (duration reached)",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("p1   | ") || l.starts_with("p2   | ")),
        "participants' lines are prefixed by their id:\n{stdout}"
    );
    // Every participant it started has ended: one "(pid N) ended" per "pid N" started.
    let pids: Vec<u32> = stdout
        .lines()
        .filter_map(|l| l.split("starting (pid ").nth(1))
        .filter_map(|r| r.split(',').next()?.parse().ok())
        .collect();
    assert!(
        pids.len() >= 4,
        "3 + at least one restart: {pids:?}\n{stdout}"
    );
    for pid in pids {
        assert!(
            stdout.contains(&format!("(pid {pid}) ended: ")),
            "pid {pid} not reported ended:\n{stdout}"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "pid {pid} still runs"
        );
    }
}
