//! The file backend end to end: the real binary, several participants in a temp dir.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn became(l: &Line) -> bool {
    l.event() == "became_leader"
}

/// Spawns `ids` and returns them once exactly one leads and the others follow it.
fn cluster(
    dir: &std::path::Path,
    ids: &[&str],
    extra: &[String],
) -> (Vec<Participant>, usize, u64) {
    let ps: Vec<Participant> = ids
        .iter()
        .map(|id| Participant::spawn(dir, id, extra))
        .collect();
    let (leader, term) = eventually("a leader", T, || {
        let s = status(dir);
        let l = &s["leader"];
        if l.is_null() {
            return None;
        }
        let id = l["id"].as_str().unwrap();
        Some((
            ps.iter().position(|p| p.id == id).unwrap(),
            l["term"].as_u64().unwrap(),
        ))
    });
    for (i, p) in ps.iter().enumerate() {
        if i != leader {
            p.wait_for("following the leader", T, |l| {
                l.event() == "follower" && l.term() == Some(term)
            });
        }
    }
    (ps, leader, term)
}

#[test]
fn three_participants_elect_exactly_one_leader() {
    let d = tempdir();
    let (ps, leader, term) = cluster(d.path(), &["a", "b", "c"], &[]);
    ps[leader].wait_for("became leader", T, |l| became(l) && l.term() == Some(term));
    for (i, p) in ps.iter().enumerate() {
        let n = p.lines().iter().filter(|l| became(l)).count();
        assert_eq!(
            n,
            usize::from(i == leader),
            "{} logged BECAME LEADER {n} times",
            p.id
        );
    }
    let s = eventually("three heartbeats with one leader", T, || {
        let s = status(d.path());
        let members = s["members"].as_array().unwrap();
        let leaders = members.iter().filter(|m| m["role"] == "leader").count();
        (members.len() == 3 && leaders == 1).then_some(s)
    });
    assert_eq!(s["election"], "crown");
    assert_eq!(s["backend"], "file");
    assert_eq!(
        s["leader"]["pid"].as_u64().unwrap() as i32,
        ps[leader].pid()
    );
}

#[test]
fn kill_9_of_the_leader_is_detected_at_once_and_the_term_rises() {
    let d = tempdir();
    // A long lease proves the takeover came from crash detection, not from expiry.
    let long: Vec<String> = [
        "--lease-duration",
        "20s",
        "--renew-deadline",
        "10s",
        "--retry-period",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut ps, leader, term) = cluster(d.path(), &["a", "b", "c"], &long);
    let killed_at = Instant::now();
    ps[leader].signal(Signal::SIGKILL);
    ps[leader].wait_exit(T);
    let (i, line) = eventually("a new leader", T, || {
        ps.iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .find_map(|(i, p)| p.lines().into_iter().find(became).map(|l| (i, l)))
    });
    assert!(
        line.term().unwrap() > term,
        "new term {:?} not above {term}",
        line.term()
    );
    let took = line.at.duration_since(killed_at);
    assert!(
        took < Duration::from_secs(5),
        "takeover took {took:?}: crash detection did not work"
    );
    let h = history(d.path());
    let last = h.last().unwrap();
    assert_eq!(last["holder"], ps[i].id.as_str());
    assert_eq!(last["previous_end"], "holder_died");
    assert_eq!(last["previous_holder"], ps[leader].id.as_str());
}

#[test]
fn sigterm_releases_and_hands_over_without_waiting_for_expiry() {
    let d = tempdir();
    let long: Vec<String> = [
        "--lease-duration",
        "20s",
        "--renew-deadline",
        "10s",
        "--retry-period",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut ps, leader, term) = cluster(d.path(), &["a", "b"], &long);
    let other = 1 - leader;
    let t0 = Instant::now();
    ps[leader].signal(Signal::SIGTERM);
    let l = ps[other].wait_for("takeover after release", T, became);
    assert_eq!(l.term(), Some(term + 1));
    assert!(
        l.at.duration_since(t0) < Duration::from_secs(2),
        "handoff took {:?}",
        l.at.duration_since(t0)
    );
    assert_eq!(ps[leader].wait_exit(T), Some(0), "SIGTERM exits 0");
    ps[leader].wait_for("shutdown log", T, |l| {
        l.event() == "stopped_leading" && l.json["reason"] == "shutdown" && l.term() == Some(term)
    });
    let h = history(d.path());
    assert_eq!(h.last().unwrap()["previous_end"], "released");
    assert_eq!(h[h.len() - 2]["ended"], "released");
    // The heartbeat of the participant that left is gone.
    let s = status(d.path());
    assert!(
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != ps[leader].id.as_str())
    );
}

#[test]
fn sigstopped_leader_loses_the_lease_and_never_acts_in_its_old_term() {
    let d = tempdir();
    let (ps, leader, term) = cluster(d.path(), &["a", "b", "c"], &timings_fast());
    let stopped_at = Instant::now();
    ps[leader].signal(Signal::SIGSTOP);
    // Its alive lock is still held (the process exists): only expiry frees the lease.
    let (idx, l) = eventually("a takeover", T, || {
        ps.iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .find_map(|(i, p)| {
                p.lines()
                    .into_iter()
                    .find(|l| became(l) && l.term() > Some(term))
                    .map(|l| (i, l))
            })
    });
    let new_term = l.term().unwrap();
    let waited = l.at.duration_since(stopped_at);
    assert!(
        waited >= Duration::from_millis(1500),
        "took over after {waited:?}, before the lease could expire"
    );
    // Let the new leader renew a few times, then resume the old one.
    ps[idx].wait_for("new leader heartbeat", T, |l| {
        l.event() == "leader_heartbeat" && l.term() == Some(new_term)
    });
    let before = std::fs::read_to_string(d.path().join("crown.history.jsonl")).unwrap();
    let resumed_at = Instant::now();
    ps[leader].signal(Signal::SIGCONT);
    ps[leader].wait_for("step-down on resume", T, |l| {
        l.at >= resumed_at
            && l.event() == "stopped_leading"
            && l.json["reason"] == "renew deadline passed"
            && l.term() == Some(term)
    });
    ps[leader].wait_for("following the new leader", T, |l| {
        l.at >= resumed_at && l.event() == "follower" && l.term() == Some(new_term)
    });
    // Give it several renew periods to misbehave, measured by the new leader's heartbeats.
    let n0 = ps[idx]
        .lines()
        .iter()
        .filter(|l| l.event() == "leader_heartbeat")
        .count();
    eventually("three more heartbeats of the new leader", T, || {
        (ps[idx]
            .lines()
            .iter()
            .filter(|l| l.event() == "leader_heartbeat")
            .count()
            >= n0 + 3)
            .then_some(())
    });
    for l in ps[leader].lines() {
        if l.at >= resumed_at {
            assert!(
                !(matches!(l.event(), "leader_heartbeat" | "became_leader")
                    && l.term() == Some(term)),
                "old leader acted in term {term} after resuming: {}",
                l.message()
            );
        }
    }
    // Nothing was written in the old term: no new grant, and the record is the new leader's.
    let after = std::fs::read_to_string(d.path().join("crown.history.jsonl")).unwrap();
    assert_eq!(before, after, "history changed after the resume");
    let s = status(d.path());
    assert_eq!(s["leader"]["term"].as_u64(), Some(new_term));
    assert_eq!(s["leader"]["id"], ps[idx].id.as_str());
}

/// 20 rounds of random kills (SIGKILL or SIGTERM of the leader, now and then of a follower),
/// replacing each victim. Checker: terms in the history strictly increase, and no two
/// leadership intervals (from BECAME LEADER to the stop log, or to the kill) overlap.
#[test]
fn twenty_rounds_of_random_kills_keep_terms_increasing_and_leaders_disjoint() {
    let d = tempdir();
    let extra = timings_fast();
    let mut ps: Vec<Participant> = ["p0", "p1", "p2"]
        .iter()
        .map(|id| Participant::spawn(d.path(), id, &extra))
        .collect();
    let mut next_id = 3;
    let mut killed: Vec<(String, jiff::Timestamp)> = vec![];
    let mut seed: u64 = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut retired: Vec<Participant> = vec![];
    let mut last_term = 0;
    for round in 0..20 {
        // Wait for a leader with a term above the last one.
        let (li, term) = eventually(&format!("a leader in round {round}"), T, || {
            let s = status(d.path());
            let l = &s["leader"];
            let term = l["term"].as_u64()?;
            if term <= last_term {
                return None;
            }
            let i = ps.iter().position(|p| p.id == l["id"].as_str().unwrap())?;
            ps[i]
                .lines()
                .iter()
                .any(|x| became(x) && x.term() == Some(term))
                .then_some((i, term))
        });
        last_term = term;
        let r = rnd() % 10;
        let victim = if r == 9 { (li + 1) % ps.len() } else { li };
        let sig = if r % 2 == 0 {
            Signal::SIGTERM
        } else {
            Signal::SIGKILL
        };
        let mut p = ps.remove(victim);
        let at = jiff::Timestamp::now();
        p.signal(sig);
        p.wait_exit(T);
        if sig == Signal::SIGKILL {
            killed.push((p.id.clone(), at));
        }
        retired.push(p);
        ps.push(Participant::spawn(d.path(), &format!("p{next_id}"), &extra));
        next_id += 1;
        if victim != li {
            // A follower died: the leader is unchanged; force the next round to move on.
            let l = ps
                .iter()
                .position(|p| {
                    p.lines()
                        .iter()
                        .any(|x| became(x) && x.term() == Some(term))
                })
                .unwrap();
            let mut p = ps.remove(l);
            p.signal(Signal::SIGTERM);
            p.wait_exit(T);
            retired.push(p);
            ps.push(Participant::spawn(d.path(), &format!("p{next_id}"), &extra));
            next_id += 1;
        }
    }
    // Stop everyone cleanly.
    for mut p in ps.drain(..) {
        p.signal(Signal::SIGTERM);
        p.wait_exit(T);
        retired.push(p);
    }

    // Terms strictly increase through the history.
    let h = history(d.path());
    assert!(h.len() >= 20, "only {} grants", h.len());
    for w in h.windows(2) {
        assert!(
            w[1]["term"].as_u64() > w[0]["term"].as_u64(),
            "terms not increasing: {w:?}"
        );
    }
    // Leadership intervals from the logs.
    let mut intervals: Vec<(jiff::Timestamp, jiff::Timestamp, u64, String)> = vec![];
    for p in &retired {
        let lines = p.lines();
        for (i, l) in lines.iter().enumerate() {
            if !became(l) {
                continue;
            }
            let term = l.term().unwrap();
            let end = lines[i..]
                .iter()
                .find(|x| x.event() == "stopped_leading" && x.term() == Some(term))
                .map(|x| x.timestamp())
                .or_else(|| killed.iter().find(|(id, _)| *id == p.id).map(|(_, t)| *t))
                .unwrap_or_else(|| panic!("{} never stopped leading term {term}", p.id));
            intervals.push((l.timestamp(), end, term, p.id.clone()));
        }
    }
    intervals.sort();
    assert!(intervals.len() >= 20);
    let mut terms: Vec<u64> = intervals.iter().map(|i| i.2).collect();
    let sorted = {
        let mut t = terms.clone();
        t.sort();
        t
    };
    assert_eq!(terms, sorted, "leadership order does not follow term order");
    terms.dedup();
    assert_eq!(terms.len(), intervals.len(), "a term was granted twice");
    for w in intervals.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "overlapping leaders: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn text_logs_read_like_a_demo() {
    let d = tempdir();
    let p = std::process::Command::new(BIN)
        .args(["run", "--id", "solo", "--dir"])
        .arg(d.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("a leader", T, || {
        status(d.path())["leader"]["id"].as_str().map(|_| ())
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.id() as i32), Signal::SIGTERM).unwrap();
    let out = p.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("🎉 [solo] BECAME LEADER (term 1)"), "{text}");
    assert!(
        text.contains("[solo] lost leadership: shutdown (term 1)"),
        "{text}"
    );
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn followers_at_rest_stay_idle() {
    // A follower's own read of the lease once woke its file watch (an inotify access event),
    // which read the lease again: half a core per follower, doing nothing.
    let d = tempdir();
    let (ps, leader, _) = cluster(d.path(), &["a", "b", "c"], &[]);
    let before: Vec<u64> = ps.iter().map(|p| cpu_ticks(p.pid())).collect();
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    // /proc counts in USER_HZ ticks, 100 per second on Linux (`getconf CLK_TCK`).
    let ticks = 100.0;
    for (i, p) in ps.iter().enumerate() {
        let share = (cpu_ticks(p.pid()) - before[i]) as f64 / ticks / window.as_secs_f64();
        // Idle is well under 1 % of a core; the bound is generous for a loaded CI machine.
        assert!(
            share < 0.15,
            "{} ({}) used {:.0} % of a core at rest",
            p.id,
            if i == leader { "leader" } else { "follower" },
            share * 100.0
        );
    }
}
