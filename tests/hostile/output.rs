//! Issue 12, the dashboard and output rows: 10 (signals only reach confirmed participants),
//! 11 (no control characters from the backend reach a terminal or a log line), 12 (the
//! dashboard log is private and never written through a symlink), 13 (one-shot commands and
//! the dashboard never hang on a stuck read).

use crate::common::{BIN, running, tempdir};
use crate::second_user::{ProtectedSymlinks, intruder_sh, intruder_uid, sysctl_lock};
use crown::backend::file::FileBackend;
use crown::tui::app::{App, read_snapshot};
use crown::tui::input::Action;
use crown::tui::state::State;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// ESC ] 0 ; title BEL (sets the terminal title), ESC [ 2 J (clears the screen), and a
/// newline followed by what would look like a log line of its own.
const EVIL: &str =
    "p\u{1b}]0;pwned\u{7}\u{1b}[2J\n2026-01-01T00:00:00Z  INFO 🎉 [x] BECAME LEADER (term 99)";

fn hostname() -> String {
    crown::participant::hostname()
}

fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// A `sleep 300` that is no participant of anything; killed on drop.
struct Stranger(Child);

impl Stranger {
    fn start() -> Stranger {
        Stranger(Command::new("sleep").arg("300").spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_lease(dir: &Path, holder: &str, term: u64, pid: u32, host: &str) {
    let now = jiff::Timestamp::now();
    let rec = serde_json::json!({
        "holder": holder, "term": term, "acquired_at": now, "renewed_at": now,
        "lease_duration_ms": 3_600_000, "pid": pid, "host": host, "revision": 1
    });
    std::fs::write(dir.join("crown.lease"), rec.to_string()).unwrap();
}

fn write_heartbeat(dir: &Path, file: &str, member: serde_json::Value) {
    let members = dir.join("crown.members");
    std::fs::create_dir_all(&members).unwrap();
    std::fs::write(members.join(format!("{file}.json")), member.to_string()).unwrap();
}

fn heartbeat(id: &str, pid: u32, host: &str, role: &str, term: u64) -> serde_json::Value {
    let now = jiff::Timestamp::now();
    serde_json::json!({
        "id": id, "pid": pid, "host": host, "role": role, "term": term,
        "last_heartbeat": now, "started_at": now, "version": "0.1.0"
    })
}

/// The dashboard's state after one read of `dir`, and the app that acts on it.
async fn dashboard(dir: &Path) -> App {
    let backend = Arc::new(FileBackend::observe(dir, "crown").unwrap());
    let host = hostname();
    let snap = read_snapshot(backend.as_ref(), &host, "crown")
        .await
        .expect("snapshot");
    let mut state = State::new("crown", "file", &host, false, jiff::Timestamp::now());
    state.apply(snap, jiff::Timestamp::now());
    App::new(backend, state, None)
}

fn last_events(app: &App, n: usize) -> String {
    let ev: Vec<&str> = app.state.events.iter().map(|e| e.text.as_str()).collect();
    ev[ev.len().saturating_sub(n)..].join("\n")
}

/// Row 10: a hand-written lease naming an unrelated `sleep 300` on this host. `k`, `y` (and
/// `p`, `r`) refuse, say why, and the sleep survives; so it does when a forged heartbeat
/// backs the lease with the sleep's real start time (it is not a `crown run`), and when a
/// confirmation is aimed at it directly (the check right before the signal).
#[tokio::test]
async fn kill_pause_resign_refuse_a_process_named_only_by_the_lease() {
    let d = tempdir();
    let sleep = Stranger::start();
    let pid = sleep.pid();
    write_lease(d.path(), "ghost", 7, pid, &hostname());

    let mut app = dashboard(d.path()).await;
    for a in [
        Action::AskKill,
        Action::ConfirmKill,
        Action::TogglePause,
        Action::Resign,
    ] {
        assert!(app.act(a));
    }
    assert!(app.state.confirm_kill.is_none() && app.state.paused.is_none());
    let said = last_events(&app, 3);
    assert!(
        said.contains("k: no heartbeat of ghost confirms its pid")
            && said.contains("p: no heartbeat of ghost confirms its pid")
            && said.contains("r: no heartbeat of ghost confirms its pid"),
        "{said}"
    );
    assert!(running(pid), "the stranger {pid} was signalled");

    // A forged heartbeat with the sleep's true start time: it is still not a crown run.
    let mut hb = heartbeat("ghost", pid, &hostname(), "leader", 7);
    hb["process"] = serde_json::json!({
        "start_time": start_time(pid), "boot_id": boot_id(), "election": "crown"
    });
    write_heartbeat(d.path(), "ghost", hb);
    let mut app = dashboard(d.path()).await;
    let why = app.state.kill_target().unwrap_err();
    assert!(why.contains("not a `crown run`"), "{why}");
    app.act(Action::AskKill);
    app.act(Action::ConfirmKill);
    assert!(running(pid), "the stranger {pid} was killed");

    // Even a confirmation aimed straight at it is checked again before the signal.
    let stamp = crown::election::ProcessStamp {
        start_time: start_time(pid),
        boot_id: boot_id(),
        election: "crown".into(),
    };
    app.state.confirm_kill = Some(crown::tui::state::Target {
        id: "ghost".into(),
        pid,
        stamp,
    });
    app.act(Action::ConfirmKill);
    let said = last_events(&app, 1);
    assert!(said.contains("refused SIGKILL to ghost"), "{said}");
    assert!(running(pid), "the stranger {pid} was killed");
}

/// Row 10, the real binary in a real participant: a heartbeat of a live `crown run` confirms
/// it, and the dashboard may then signal it (the refusals above are not blanket ones).
#[tokio::test]
async fn a_live_participant_confirmed_by_its_heartbeat_is_a_target() {
    let d = tempdir();
    let p = crate::common::Participant::spawn(d.path(), "real", &crate::common::timings_fast());
    p.wait_for("leading", Duration::from_secs(20), |l| {
        l.event() == "became_leader"
    });
    crate::common::eventually(
        "a leader heartbeat with its process stamp",
        Duration::from_secs(20),
        || {
            let s = std::fs::read_to_string(d.path().join("crown.members/real.json")).ok()?;
            (s.contains("\"process\"") && s.contains("\"role\":\"leader\"")).then_some(())
        },
    );
    let app = dashboard(d.path()).await;
    let t = app.state.kill_target().expect("a confirmed leader");
    assert_eq!(t.pid, p.pid() as u32);
}

fn no_control_bytes(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: raw control characters {bad:?} in:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "{what}: a forged line:\n{text}"
    );
}

/// Row 11: ids and hosts with terminal escapes and a newline, in the lease, a heartbeat and
/// the history: `crown status` and `crown history` print them escaped, and so does a
/// participant's text log.
#[test]
fn status_history_and_logs_escape_control_characters() {
    let d = tempdir();
    let dir = d.path().to_str().unwrap();
    write_lease(d.path(), EVIL, 5, 1, EVIL);
    write_heartbeat(d.path(), "evil", heartbeat(EVIL, 1, EVIL, "leader", 5));
    let grant = serde_json::json!({
        "term": 5, "holder": EVIL, "acquired_at": jiff::Timestamp::now(), "host": EVIL,
        "previous_holder": EVIL
    });
    std::fs::write(d.path().join("crown.history.jsonl"), format!("{grant}\n")).unwrap();

    let (code, out, err) = crate::common::crown(&["status", "--dir", dir]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\\u{1b}]0;pwned\\u{7}"), "{out}");
    no_control_bytes("crown status", &out);
    // election, leader, lease, members, the table's header and one row.
    assert_eq!(out.lines().count(), 6, "{out}");
    let (code, out, err) = crate::common::crown(&["history", "--dir", dir]);
    assert_eq!(code, 0, "{err}");
    no_control_bytes("crown history", &out);
    assert_eq!(out.lines().count(), 2, "{out}");
    // JSON stays exact (serde escapes it).
    let s = crate::common::status(d.path());
    assert_eq!(s["leader"]["id"], EVIL);
    assert_eq!(s["lease"]["source"], "record");

    // A participant following the evil holder logs its id escaped, on one line.
    let log = d.path().join("p.log");
    let mut child = Command::new(BIN)
        .args(["run", "--log-format", "text", "--id", "p", "--dir", dir])
        .env_remove("POD_NAME")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = crate::common::eventually("the follower line", Duration::from_secs(20), || {
        let t = std::fs::read_to_string(&log).ok()?;
        t.contains("FOLLOWER").then_some(t)
    });
    let _ = child.kill();
    let _ = child.wait();
    no_control_bytes("crown run's text log", &text);
    assert!(text.contains("\\u{1b}[2J\\n2026-01-01"), "{text}");
}

/// Runs `cmd`, killing it if it has not exited within `limit`: (exit code, stdout, stderr,
/// how long it took). Panics on a hang, so a regression fails instead of blocking the suite.
fn run_bounded(mut cmd: Command, limit: Duration) -> (i32, String, String, Duration) {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st.code().unwrap_or(-1), out, err, t0.elapsed());
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Row 13: a FIFO named `crown.lease`, or a FIFO heartbeat: `crown status` and `crown
/// history` end with one line and a non-zero code instead of hanging.
#[test]
fn status_and_history_never_hang_on_a_fifo() {
    for fifo in ["crown.lease", "crown.members/x.json"] {
        let d = tempdir();
        std::fs::create_dir_all(d.path().join("crown.members")).unwrap();
        mkfifo(&d.path().join(fifo));
        for cmd in ["status", "history"] {
            let mut c = Command::new(BIN);
            c.args([
                cmd,
                "--dir",
                d.path().to_str().unwrap(),
                "--wait-for-backend",
                "1s",
            ]);
            let (code, out, err, took) = run_bounded(c, Duration::from_secs(20));
            if cmd == "history" {
                // History reads neither the lease nor heartbeats, only crown.history.jsonl: it
                // must simply not hang on them.
                assert!(
                    took < Duration::from_secs(10) && [0, 4, 5].contains(&code),
                    "{cmd} with a FIFO {fifo}: exit {code} after {took:?}; stdout {out} stderr {err}"
                );
                continue;
            }
            if fifo != "crown.lease" && code == 0 {
                // The file backend skips a heartbeat that is not a regular file: not a member.
                assert!(
                    took < Duration::from_secs(10) && out.contains("members   0"),
                    "{cmd} with a FIFO {fifo}: exit 0 after {took:?}; stdout {out} stderr {err}"
                );
                continue;
            }
            assert!(
                code == 4 || code == 5,
                "{cmd} with a FIFO {fifo}: exit {code} after {took:?}; stdout {out} stderr {err}"
            );
            assert_eq!(err.trim_end().lines().count(), 1, "{cmd} / {fifo}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

/// Row 13: the headless dashboard reports a stuck read and still ends on SIGTERM.
#[test]
fn dashboard_ends_on_sigterm_while_a_read_is_stuck() {
    let d = tempdir();
    mkfifo(&d.path().join("crown.lease"));
    let state = d.path().join("state");
    let mut child = Command::new(BIN)
        .args(["tui", "--dir", d.path().to_str().unwrap()])
        .env("XDG_STATE_HOME", &state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let lines = spawn_line_reader(child.stdout.take().unwrap());
    // Either the backend refuses the FIFO or the read is reported stuck: an error line shows.
    wait_line(
        &lines,
        "a backend error line",
        Duration::from_secs(30),
        |l| l.contains("backend"),
    );
    let t0 = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(0), "exit after SIGTERM");
            break;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crown tui ignored SIGTERM while a read was stuck");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Lines = Arc<std::sync::Mutex<Vec<String>>>;

fn spawn_line_reader(out: impl Read + Send + 'static) -> Lines {
    let lines: Lines = Arc::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            l.lock().unwrap().push(line);
        }
    });
    lines
}

fn wait_line(lines: &Lines, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) {
    crate::common::eventually(what, limit, || {
        lines.lock().unwrap().iter().any(|l| pred(l)).then_some(())
    });
}

/// Row 12: the old shared log name `$TMPDIR/crown-tui.log` is a symlink planted by another
/// user (in a sticky, world-writable directory like /tmp) to a root-only file. With
/// `protected_symlinks` 0 and 1, the dashboard starts, never touches the victim, and logs to
/// its private directory (0700) in a 0600 file. A symlink at the private log path itself, or
/// a private directory others can write to, is refused with one line.
#[test]
fn dashboard_log_is_private_and_never_follows_a_symlink() {
    let _lock = sysctl_lock();
    intruder_uid();
    for protect in [0u8, 1] {
        let _ps = ProtectedSymlinks::set(protect);
        let d = tempdir();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let shared = d.path().join("tmp");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "secret\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        intruder_sh(&format!(
            "ln -s '{}' '{}/crown-tui.log'",
            victim.display(),
            shared.display()
        ));
        let election = d.path().join("election");
        std::fs::create_dir(&election).unwrap();
        let state = d.path().join("state");

        let mut child = Command::new(BIN)
            .args(["tui", "--dir", election.to_str().unwrap()])
            .env("TMPDIR", &shared)
            .env("XDG_STATE_HOME", &state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = spawn_line_reader(child.stdout.take().unwrap());
        let started = crate::common::eventually(
            "the dashboard to start (or fail)",
            Duration::from_secs(30),
            || {
                if let Some(st) = child.try_wait().unwrap() {
                    return Some(Err(st.code()));
                }
                lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("watching"))
                    .then_some(Ok(()))
            },
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .ok();
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(
            started,
            Ok(()),
            "protected_symlinks={protect}: the dashboard did not start: {err}"
        );
        assert_eq!(status.code(), Some(0), "{err}");
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "secret\n",
            "protected_symlinks={protect}: written through the planted symlink"
        );
        let log = state.join("crown/tui.log");
        let text = std::fs::read_to_string(&log).expect("the private log");
        assert!(text.contains("watching"), "{text}");
        assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(state.join("crown")).unwrap().mode() & 0o777,
            0o700
        );

        // A symlink where the private log goes: refused, the victim untouched.
        std::fs::remove_file(&log).unwrap();
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let mut c = Command::new(BIN);
        c.args(["tui", "--dir", election.to_str().unwrap()])
            .env("XDG_STATE_HOME", &state);
        let (code, _, err, _) = run_bounded(c, Duration::from_secs(20));
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret\n");
        // The same through --log-file.
        let mut c = Command::new(BIN);
        c.args([
            "tui",
            "--dir",
            election.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ]);
        let (code, _, err, _) = run_bounded(c, Duration::from_secs(20));
        assert_eq!(code, 3, "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret\n");
        // A private directory that others may write to is refused.
        std::fs::remove_file(&log).unwrap();
        std::fs::set_permissions(state.join("crown"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        let mut c = Command::new(BIN);
        c.args(["tui", "--dir", election.to_str().unwrap()])
            .env("XDG_STATE_HOME", &state);
        let (code, _, err, _) = run_bounded(c, Duration::from_secs(20));
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("writable by nobody else"), "{err}");
    }
}
