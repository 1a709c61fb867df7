//! `crown demo`'s participants: `crown run` child processes of this binary, each logging to
//! `<dir>/<id>.log`. They stop with the demo: SIGTERM (then SIGKILL) on quit, SIGINT or
//! SIGTERM; SIGKILL from a Drop guard on panic. Each child runs in its own process group, so a
//! Ctrl-C in the terminal reaches only the demo, which then stops them in order.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::sync::mpsc;

/// A participant process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Its id.
    pub id: String,
    /// Its pid.
    pub pid: u32,
    /// How it ended, e.g. `exit 0`, `killed by SIGKILL`.
    pub how: String,
}

/// The demo's running participants.
pub struct Demo {
    exe: PathBuf,
    dir: PathBuf,
    election: String,
    flags: Vec<String>,
    /// `--backend` value and backend flags of every participant.
    backend: (&'static str, Vec<String>),
    running: BTreeMap<String, u32>,
    next: usize,
    exits: mpsc::UnboundedSender<Exit>,
    restart: BTreeSet<String>,
    tails: BTreeMap<String, u64>,
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::Error::EINVAL)?;
    kill(Pid::from_raw(pid), sig)
}

/// Whether a process with `pid` exists (a process we may not signal counts as existing).
pub fn exists(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    !matches!(kill(Pid::from_raw(p), None), Err(nix::Error::ESRCH))
}

fn describe(status: io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(sig) => format!("killed by {sig}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            _ => "ended".into(),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

impl Demo {
    /// A demo that starts `exe run …` in `dir` for `election` with the timing `flags`.
    pub fn new(
        exe: PathBuf,
        dir: &Path,
        election: &str,
        flags: Vec<String>,
    ) -> (Demo, mpsc::UnboundedReceiver<Exit>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Demo {
                exe,
                dir: dir.to_path_buf(),
                election: election.to_string(),
                flags,
                backend: (
                    "file",
                    vec!["--dir".into(), dir.to_string_lossy().into_owned()],
                ),
                running: BTreeMap::new(),
                next: 1,
                exits: tx,
                restart: BTreeSet::new(),
                tails: BTreeMap::new(),
            },
            rx,
        )
    }

    /// Runs the participants on another backend: its `--backend` value and its flags (the
    /// default is the file backend in the demo directory).
    pub fn with_backend(mut self, kind: &'static str, flags: Vec<String>) -> Self {
        self.backend = (kind, flags);
        self
    }

    /// The log file of participant `id`.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Running participants: id → pid.
    pub fn running(&self) -> &BTreeMap<String, u32> {
        &self.running
    }

    /// Starts the next participant, `p<N>`. Returns its id and pid.
    pub fn spawn_next(&mut self) -> io::Result<(String, u32)> {
        loop {
            let id = format!("p{}", self.next);
            self.next += 1;
            if !self.running.contains_key(&id) {
                let pid = self.spawn(&id)?;
                return Ok((id, pid));
            }
        }
    }

    /// Starts participant `id` (appending to its log). Returns its pid.
    pub fn spawn(&mut self, id: &str) -> io::Result<u32> {
        let path = self.log_path(id);
        let log = super::open_append_nofollow(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        self.tails
            .entry(id.to_string())
            .or_insert_with(|| log.metadata().map(|m| m.len()).unwrap_or(0));
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("run")
            .args([
                "--backend",
                self.backend.0,
                "--log-format",
                "text",
                "--id",
                id,
            ])
            .args(&self.backend.1)
            .arg("--election")
            .arg(&self.election)
            .args(&self.flags)
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited at once"))?;
        self.running.insert(id.to_string(), pid);
        let tx = self.exits.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let how = describe(child.wait().await);
            let _ = tx.send(Exit { id, pid, how });
        });
        Ok(pid)
    }

    /// Restart `id` when it next exits (chaos mode).
    pub fn restart_when_gone(&mut self, id: &str) {
        self.restart.insert(id.to_string());
    }

    /// Notes an exit; restarts the participant if asked to. Returns the new pid if restarted.
    pub fn exited(&mut self, e: &Exit) -> Option<io::Result<u32>> {
        if self.running.get(&e.id) == Some(&e.pid) {
            self.running.remove(&e.id);
        }
        if self.restart.remove(&e.id) {
            Some(self.spawn(&e.id))
        } else {
            None
        }
    }

    /// New complete lines in the participants' logs since the last call: (id, line).
    pub fn tail(&mut self) -> Vec<(String, String)> {
        let mut out = vec![];
        for (id, offset) in self.tails.iter_mut() {
            let path = self.dir.join(format!("{id}.log"));
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_err() {
                continue;
            }
            let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            *offset += end as u64 + 1;
            for line in String::from_utf8_lossy(&buf[..end]).lines() {
                out.push((id.clone(), strip_log_prefix(line).to_string()));
            }
        }
        out
    }

    /// Stops every participant: SIGCONT (in case one is paused) and SIGTERM, so leaders
    /// release; SIGKILL whatever is left after `grace`. Calls `on_exit` for each exit.
    pub async fn shutdown(
        &mut self,
        exits: &mut mpsc::UnboundedReceiver<Exit>,
        grace: Duration,
        mut on_exit: impl FnMut(&Exit),
    ) {
        self.restart.clear();
        for &pid in self.running.values() {
            let _ = signal(pid, Signal::SIGCONT);
            let _ = signal(pid, Signal::SIGTERM);
        }
        for (sig, wait) in [
            (None, grace),
            (Some(Signal::SIGKILL), Duration::from_secs(2)),
        ] {
            if let Some(sig) = sig {
                for &pid in self.running.values() {
                    let _ = signal(pid, sig);
                }
            }
            let deadline = tokio::time::Instant::now() + wait;
            while !self.running.is_empty() {
                match tokio::time::timeout_at(deadline, exits.recv()).await {
                    Ok(Some(e)) => {
                        self.exited(&e);
                        on_exit(&e);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

impl Drop for Demo {
    /// On panic (or any path that skipped [`Demo::shutdown`]): no participant outlives us.
    fn drop(&mut self) {
        for &pid in self.running.values() {
            let _ = signal(pid, Signal::SIGKILL);
        }
    }
}

/// Drops the timestamp (and an `INFO` level) that `crown run` puts before each message.
pub fn strip_log_prefix(line: &str) -> &str {
    let rest = match line.split_once(' ') {
        Some((ts, rest)) if ts.len() >= 20 && ts.ends_with('Z') && ts.contains('T') => {
            rest.trim_start()
        }
        _ => return line,
    };
    rest.strip_prefix("INFO ").unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in participant that ignores its flags and sleeps.
    fn sleeper(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let exe = dir.join("sleeper.sh");
        std::fs::write(&exe, "#!/bin/sh\necho \"sleeper $*\"\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    #[tokio::test]
    async fn participants_die_with_the_demo() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut demo, mut exits) = Demo::new(sleeper(tmp.path()), tmp.path(), "e", vec![]);
        let (id, pid) = demo.spawn_next().unwrap();
        assert_eq!(id, "p1");
        assert!(exists(pid));
        drop(demo); // as on a panic: the Drop guard kills every participant
        let e = tokio::time::timeout(Duration::from_secs(10), exits.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((e.id.as_str(), e.pid), ("p1", pid));
        assert_eq!(e.how, "killed by SIGKILL");
        assert!(!exists(pid));
    }

    #[tokio::test]
    async fn shutdown_terms_then_reports_each_exit_and_tails_logs() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut demo, mut exits) = Demo::new(sleeper(tmp.path()), tmp.path(), "e", vec![]);
        demo.spawn_next().unwrap();
        demo.spawn_next().unwrap();
        let mut tail = vec![];
        let start = std::time::Instant::now();
        while tail.len() < 2 && start.elapsed() < Duration::from_secs(10) {
            tail.extend(demo.tail());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tail.sort();
        assert_eq!(tail[0].0, "p1");
        assert!(
            tail[0].1.starts_with("sleeper run --backend file"),
            "{tail:?}"
        );
        let mut ended = vec![];
        demo.shutdown(&mut exits, Duration::from_secs(5), |e| {
            ended.push(e.how.clone())
        })
        .await;
        assert_eq!(ended, ["killed by SIGTERM", "killed by SIGTERM"]);
        assert!(demo.running().is_empty());
    }

    #[test]
    fn log_prefix_is_stripped() {
        assert_eq!(
            strip_log_prefix("2025-01-01T12:00:00.123456Z  INFO 🎉 [p1] BECAME LEADER (term 1)"),
            "🎉 [p1] BECAME LEADER (term 1)"
        );
        assert_eq!(
            strip_log_prefix("2025-01-01T12:00:00.123456Z  WARN [p1] lost leadership"),
            "WARN [p1] lost leadership"
        );
        assert_eq!(strip_log_prefix("plain line"), "plain line");
    }
}
