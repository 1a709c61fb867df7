//! Test harness: spawns the real `crown` binary in temp dirs, collects its JSON log lines and
//! lets tests await log events (no fixed sleeps).
#![allow(dead_code)]

pub mod kube;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_crown");

/// One parsed log line.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub json: Value,
}

impl Line {
    pub fn event(&self) -> &str {
        self.json["event"].as_str().unwrap_or("")
    }
    pub fn term(&self) -> Option<u64> {
        self.json["term"].as_u64()
    }
    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or("")
    }
    pub fn timestamp(&self) -> jiff::Timestamp {
        self.json["timestamp"].as_str().unwrap().parse().unwrap()
    }
}

type Lines = Arc<(Mutex<Vec<Line>>, Condvar)>;

/// A running `crown run` participant.
pub struct Participant {
    pub id: String,
    pub child: Child,
    pub lines: Lines,
    pub raw: Arc<Mutex<Vec<String>>>,
    /// Set when the reader has seen the end of stderr.
    eof: Arc<std::sync::atomic::AtomicBool>,
}

pub fn timings_fast() -> Vec<String> {
    [
        "--lease-duration",
        "2s",
        "--renew-deadline",
        "1500ms",
        "--retry-period",
        "500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Participant {
    pub fn spawn(dir: &Path, id: &str, extra: &[String]) -> Participant {
        let mut args: Vec<String> = vec!["--dir".into(), dir.to_str().unwrap().into()];
        args.extend(extra.iter().cloned());
        Participant::spawn_with(id, &args, &[])
    }

    /// `crown run --log-format json --id ID ARGS…` with extra environment variables.
    pub fn spawn_with(id: &str, args: &[String], envs: &[(String, String)]) -> Participant {
        let mut cmd = Command::new(BIN);
        cmd.envs(envs.iter().map(|(k, v)| (k, v)));
        Participant::spawn_via(cmd, id, args, "info,crown=debug")
    }

    /// `crown run --log-format json --id ID ARGS…` started by `cmd`: the binary itself, or a
    /// wrapper that execs it (`setpriv`, `sh -c 'ulimit …; exec "$0" "$@"' crown`), so the
    /// pid is crown's. `$CROWN_LOG` is `log`; `$POD_NAME` is unset.
    pub fn spawn_via(mut cmd: Command, id: &str, args: &[String], log: &str) -> Participant {
        let child = cmd
            .args(["run", "--log-format", "json", "--id", id])
            .args(args)
            .env_remove("POD_NAME")
            .env("CROWN_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crown");
        Participant::from_child(id, child)
    }

    /// A participant from a spawned `crown run --log-format json` (or a wrapper that execs
    /// it) whose stderr is piped: its JSON lines are collected as they come.
    pub fn from_child(id: &str, mut child: Child) -> Participant {
        let lines: Lines = Arc::new((Mutex::new(vec![]), Condvar::new()));
        let raw = Arc::new(Mutex::new(vec![]));
        let eof = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let err = child.stderr.take().expect("stderr piped");
        {
            let lines = lines.clone();
            let raw = raw.clone();
            let eof = eof.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines() {
                    let Ok(l) = l else { break };
                    raw.lock().unwrap().push(l.clone());
                    if let Ok(json) = serde_json::from_str::<Value>(&l) {
                        let (m, cv) = &*lines;
                        m.lock().unwrap().push(Line {
                            at: Instant::now(),
                            json,
                        });
                        cv.notify_all();
                    }
                }
                eof.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        }
        Participant {
            id: id.into(),
            child,
            lines,
            raw,
            eof,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for a line matching `pred` (looking at all lines so far), up to `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Line) -> bool) -> Line {
        let (m, cv) = &*self.lines;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "[{}] timed out after {timeout:?} waiting for {what}; log:\n{}",
                    self.id,
                    self.raw.lock().unwrap().join("\n")
                );
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn lines(&self) -> Vec<Line> {
        self.lines.0.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit (bounded) and returns its code, once its last output
    /// lines have been read too (up to 2 s more: a child that inherited stderr may hold it).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let read = Instant::now() + Duration::from_secs(2);
                while !self.eof.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < read {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return st.code();
            }
            if Instant::now() >= deadline {
                panic!("[{}] did not exit within {timeout:?}", self.id);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `crown <args>` to completion: (exit code, stdout, stderr).
pub fn crown(args: &[&str]) -> (i32, String, String) {
    crown_env(args, &[])
}

/// Runs `crown <args>` with extra environment variables.
pub fn crown_env(args: &[&str], envs: &[(String, String)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .env_remove("POD_NAME")
        .stdin(Stdio::null())
        .output()
        .expect("run crown");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `crown status -o json` for `dir`.
pub fn status(dir: &Path) -> Value {
    let (code, out, err) = crown(&["status", "-o", "json", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// `crown history -o json` for `dir`.
pub fn history(dir: &Path) -> Vec<Value> {
    let (code, out, err) = crown(&["history", "-o", "json", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "history failed: {err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("crown-test-")
        .tempdir()
        .unwrap()
}

pub fn path(d: &tempfile::TempDir) -> PathBuf {
    d.path().to_path_buf()
}

/// Polls `f` every 10 ms until it returns Some, up to `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a live process (a zombie counts as gone: on these machines PID 1 may not
/// reap an orphan at once, and `kill -0` succeeds on a zombie).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}
