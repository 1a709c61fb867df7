//! Issue 12, sidecar rows: slowloris clients under a low fd limit (row 8), descendants that
//! leave the child's process group (row 9), a webhook receiver that never answers or refuses
//! (row 15), fd exhaustion at start (row 17).

use crate::common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `crown run --log-format json --id ID ARGS…` under `ulimit -n NOFILE` (soft and hard), as
/// a [`Participant`] (its pid is crown's: the shell execs it).
fn spawn_limited(nofile: u32, id: &str, args: &[String]) -> Participant {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(BIN);
    Participant::spawn_via(sh, id, args, "info,crown=debug")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `GET path` with a 2 s bound: the status code, or None.
fn http_get(port: u16, path: &str) -> Option<u16> {
    let mut c = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out.split_whitespace().nth(1)?.parse().ok()
}

fn became_leader(p: &Participant) -> Vec<u64> {
    p.lines()
        .iter()
        .filter(|l| l.event() == "became_leader")
        .filter_map(|l| l.term())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Row 8: 500 slowloris connections against `--http` under `ulimit -n 64`.

#[test]
fn slowloris_under_a_low_fd_limit_neither_starves_the_leader_nor_kills_http() {
    let d = tempdir();
    let dir = d.path().to_str().unwrap().to_string();
    let port = free_port();
    // Renew every 500 ms with a 3 s deadline: room for a loaded test machine.
    let timings = s(&[
        "--lease-duration",
        "4s",
        "--renew-deadline",
        "3s",
        "--retry-period",
        "500ms",
    ]);
    let mut args = s(&["--dir", &dir, "--http", &format!("127.0.0.1:{port}")]);
    args.extend(timings.clone());
    let a = spawn_limited(64, "a", &args);
    a.wait_for("a leads", T, |l| {
        l.event() == "became_leader" && l.term() == Some(1)
    });
    let mut bargs = s(&["--dir", &dir]);
    bargs.extend(timings);
    let b = Participant::spawn_with("b", &bargs, &[]);
    b.wait_for("b follows a", T, |l| l.event() == "follower");
    eventually("/healthz answers", T, || {
        (http_get(port, "/healthz") == Some(200)).then_some(())
    });

    // 500 clients that send part of a request head and hold, trickling a header line a second.
    let attack_start = Instant::now();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut conns: Vec<TcpStream> = (0..500)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
                let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
                Some(c)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    eprintln!(
        "{} connections opened in {:?}",
        conns.len(),
        attack_start.elapsed()
    );
    assert!(
        conns.len() >= 100,
        "only {} connections opened",
        conns.len()
    );
    // Hold for two lease durations.
    let hold = Duration::from_secs(8);
    while attack_start.elapsed() < hold {
        for c in conns.iter_mut() {
            let _ = c.write_all(b"X-Slow: 1\r\n");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // The leader kept renewing through the attack, in term 1, and nobody else was granted.
    let beats: Vec<Instant> = a
        .lines()
        .iter()
        .filter(|l| l.event() == "leader_heartbeat" && l.term() == Some(1) && l.at > attack_start)
        .map(|l| l.at)
        .collect();
    assert!(
        beats.len() >= 8,
        "a renewed only {} times in {hold:?} under attack; log:\n{}",
        beats.len(),
        a.raw.lock().unwrap().join("\n")
    );
    assert!(
        beats.last().unwrap().elapsed() < Duration::from_secs(2),
        "a stopped renewing"
    );
    assert!(
        !a.lines().iter().any(|l| l.event() == "stopped_leading"),
        "a stepped down under attack:\n{}",
        a.raw.lock().unwrap().join("\n")
    );
    assert!(
        became_leader(&b).is_empty(),
        "b was granted a term during the attack: {:?}",
        became_leader(&b)
    );
    drop(conns);
    // The attackers gone, HTTP answers again.
    let t = Instant::now();
    eventually("/healthz answers after the attack", T, || {
        (http_get(port, "/healthz") == Some(200)).then_some(())
    });
    eprintln!(
        "/healthz answered {:?} after the attackers left",
        t.elapsed()
    );
    assert_eq!(http_get(port, "/readyz"), Some(200), "a still leads");
    assert!(became_leader(&b).is_empty());
}

// ---------------------------------------------------------------------------------------
// Row 9: descendants that leave the process group.

/// The child: starts a `setsid` loop and a double-forked one in a new session, each
/// appending `TERM KIND PID NS` to `log` every 50 ms, then waits.
fn escaping_child(log: &Path) -> Vec<String> {
    let l = log.to_str().unwrap();
    let lp = |kind: &str| {
        format!("while :; do echo \"$CROWN_TERM {kind} $$ $(date +%s%N)\" >> {l}; sleep 0.05; done")
    };
    let script = format!(
        "setsid sh -c '{}' & ( setsid sh -c '{}' & ) ; exec sleep 1000",
        lp("setsid"),
        lp("double")
    );
    s(&["--", "sh", "-c", &script])
}

struct LoopWrite {
    term: u64,
    kind: String,
    pid: i32,
    ns: u128,
}

fn writes(log: &Path) -> Vec<LoopWrite> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(LoopWrite {
                term: f.first()?.parse().ok()?,
                kind: f.get(1)?.to_string(),
                pid: f.get(2)?.parse().ok()?,
                ns: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// Kills the loops named in `log` when dropped (a failing test must not leave them running):
/// only processes whose command line still names the log, so a reused pid is left alone.
struct KillLoops(std::path::PathBuf);

impl Drop for KillLoops {
    fn drop(&mut self) {
        let needle = self.0.to_str().unwrap().to_string();
        for w in writes(&self.0) {
            let cmd = std::fs::read(format!("/proc/{}/cmdline", w.pid)).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(w.pid), Signal::SIGKILL);
            }
        }
    }
}

/// Waits until both loops of `term` have written.
fn both_loops_write(log: &Path, term: u64) {
    eventually(&format!("both loops of term {term} writing"), T, || {
        let w = writes(log);
        let has = |k: &str| w.iter().any(|x| x.term == term && x.kind == k);
        (has("setsid") && has("double")).then_some(())
    });
}

fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(st) => st
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// No write of `old` after the first write of `new`, and every loop of `old` is dead.
fn old_tree_gone_before_new_term(log: &Path, old: u64, new: u64) {
    both_loops_write(log, new);
    let w = writes(log);
    let first_new = w
        .iter()
        .filter(|x| x.term == new)
        .map(|x| x.ns)
        .min()
        .unwrap();
    let last_old = w
        .iter()
        .filter(|x| x.term == old)
        .map(|x| x.ns)
        .max()
        .unwrap();
    let late: Vec<&LoopWrite> = w
        .iter()
        .filter(|x| x.term == old && x.ns > first_new)
        .collect();
    assert!(
        late.is_empty(),
        "{} writes of term {old} after term {new} began (last {} ms after), from {:?}",
        late.len(),
        (last_old - first_new) / 1_000_000,
        late.iter()
            .map(|x| (x.kind.as_str(), x.pid))
            .collect::<std::collections::BTreeSet<_>>()
    );
    for x in w.iter().filter(|x| x.term == old) {
        assert!(
            gone(x.pid),
            "{} loop {} of term {old} still runs",
            x.kind,
            x.pid
        );
    }
}

#[test]
fn graceful_handoff_stops_setsid_and_double_forked_descendants_first() {
    let d = tempdir();
    let log = d.path().join("writes.log");
    let _cleanup = KillLoops(log.clone());
    let mut extra = timings_fast();
    extra.extend(s(&["--grace", "300ms"]));
    extra.extend(escaping_child(&log));
    let mut a = Participant::spawn(d.path(), "a", &extra);
    a.wait_for("a leads", T, |l| {
        l.event() == "became_leader" && l.term() == Some(1)
    });
    both_loops_write(&log, 1);
    let mut b = Participant::spawn(d.path(), "b", &extra);
    b.wait_for("b follows", T, |l| l.event() == "follower");
    a.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit(T), Some(0));
    b.wait_for("b leads", T, |l| {
        l.event() == "became_leader" && l.term() == Some(2)
    });
    old_tree_gone_before_new_term(&log, 1, 2);
    b.signal(Signal::SIGTERM);
    assert_eq!(b.wait_exit(T), Some(0));
}

#[test]
fn resign_stops_setsid_and_double_forked_descendants_first() {
    let d = tempdir();
    let log = d.path().join("writes.log");
    let _cleanup = KillLoops(log.clone());
    let mut extra = timings_fast();
    extra.extend(s(&["--grace", "300ms"]));
    extra.extend(escaping_child(&log));
    let mut a = Participant::spawn(d.path(), "a", &extra);
    a.wait_for("a leads", T, |l| {
        l.event() == "became_leader" && l.term() == Some(1)
    });
    both_loops_write(&log, 1);
    a.signal(Signal::SIGUSR1);
    a.wait_for("a leads again", T, |l| {
        l.event() == "became_leader" && l.term() == Some(2)
    });
    old_tree_gone_before_new_term(&log, 1, 2);
    a.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit(T), Some(0));
    // And on exit the tree of term 2 goes too.
    let w = writes(&log);
    for x in w.iter().filter(|x| x.term == 2) {
        assert!(
            gone(x.pid),
            "{} loop {} of term 2 outlived crown",
            x.kind,
            x.pid
        );
    }
}

// ---------------------------------------------------------------------------------------
// Row 15: webhook receivers that never answer, or refuse.

/// A receiver that reads requests and never answers; the JSON bodies it received, with the
/// instant each arrived.
type Received = Arc<Mutex<Vec<(Instant, Value)>>>;

fn silent_receiver() -> (u16, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(vec![]));
    let g = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            let g = g.clone();
            std::thread::spawn(move || {
                let mut buf = vec![];
                let mut chunk = [0u8; 4096];
                loop {
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(i) = text.find('{')
                        && let Ok(v) = serde_json::from_str::<Value>(&text[i..])
                    {
                        g.lock().unwrap().push((Instant::now(), v));
                        // Hold the connection open, never answer.
                        std::thread::sleep(Duration::from_secs(60));
                        break;
                    }
                }
            });
        }
    });
    (port, got)
}

fn dropped(p: &Participant) -> Vec<(bool, u64)> {
    p.lines()
        .iter()
        .filter(|l| l.event() == "notify_dropped")
        .map(|l| (l.json["leader"].as_bool().unwrap(), l.term().unwrap()))
        .collect()
}

#[test]
fn a_receiver_that_never_answers_delays_no_later_notice_and_the_final_one_is_attempted() {
    let d = tempdir();
    let (port, got) = silent_receiver();
    let mut extra = timings_fast();
    extra.extend(s(&["--notify-url", &format!("http://127.0.0.1:{port}/")]));
    let mut a = Participant::spawn(d.path(), "a", &extra);
    a.wait_for("a leads", T, |l| {
        l.event() == "became_leader" && l.term() == Some(1)
    });
    a.signal(Signal::SIGUSR1);
    let granted = a
        .wait_for("a leads again", T, |l| {
            l.event() == "became_leader" && l.term() == Some(2)
        })
        .at;
    // The grant of term 2 reaches the receiver soon, though term 1's notices never got an answer.
    let arrived = eventually("the term-2 grant notice", T, || {
        got.lock()
            .unwrap()
            .iter()
            .find(|(_, v)| v["leader"] == true && v["term"] == 2)
            .map(|(t, _)| *t)
    });
    let waited = arrived.saturating_duration_since(granted);
    eprintln!("the term-2 grant notice reached the silent receiver {waited:?} after the grant");
    assert!(
        waited < Duration::from_secs(5),
        "the term-2 notice waited {waited:?} behind failing ones"
    );
    let t = Instant::now();
    a.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit(T), Some(0));
    let took = t.elapsed();
    eprintln!("exit took {took:?} with a silent receiver");
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    // The final leader:false was attempted, and every undelivered notice was logged.
    assert!(
        got.lock()
            .unwrap()
            .iter()
            .any(|(_, v)| v["leader"] == false && v["term"] == 2),
        "the final notice never reached the receiver: {:?}",
        got.lock().unwrap()
    );
    let mut d = dropped(&a);
    d.sort();
    assert_eq!(
        d,
        vec![(false, 1), (false, 2), (true, 1), (true, 2)],
        "every notice is logged as dropped; log:\n{}",
        a.raw.lock().unwrap().join("\n")
    );
}

#[test]
fn a_refusing_receiver_costs_a_bounded_exit_and_every_drop_is_logged() {
    let d = tempdir();
    let port = free_port(); // nothing listens: connections are refused
    let mut extra = timings_fast();
    extra.extend(s(&["--notify-url", &format!("http://127.0.0.1:{port}/")]));
    let mut a = Participant::spawn(d.path(), "a", &extra);
    a.wait_for("a leads", T, |l| {
        l.event() == "became_leader" && l.term() == Some(1)
    });
    a.signal(Signal::SIGTERM);
    let t = Instant::now();
    assert_eq!(a.wait_exit(T), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        t.elapsed()
    );
    let mut d = dropped(&a);
    d.sort();
    assert_eq!(
        d,
        vec![(false, 1), (true, 1)],
        "log:\n{}",
        a.raw.lock().unwrap().join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Row 17: fd exhaustion at start.

#[test]
fn a_tiny_fd_limit_fails_fast_with_exit_4_naming_the_limit() {
    let d = tempdir();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 16 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(["run", "--dir", d.path().to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("still running after 10 s under ulimit -n 16; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(4), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("crown: error: ")
            && lines[0].contains("open-file limit")
            && lines[0].contains("16"),
        "{err}"
    );
}
