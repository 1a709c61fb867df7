//! Who is behind a pid: the `/proc` readers that let a heartbeat say which process wrote it
//! ([`own_stamp`]) and let the dashboard confirm that the live process at a pid is still that
//! participant before it sends a signal ([`verify`]). A pid alone names nothing: the kernel
//! reuses pids, and a lease or heartbeat is only data anyone who can write the election may
//! have written.

use crate::election::ProcessStamp;
use std::path::Path;

/// This host's boot id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The state letter and the start time (clock ticks since boot, field 22) of `pid`, from
/// `/proc/PID/stat`. `None` if there is no such process.
pub fn stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses `/proc/PID/stat`: fields after the command name (which may hold spaces and
/// parentheses, so split at the last `)`); field 3 is the state, field 22 the start time.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// What identifies this process, for its heartbeats in `election`.
pub fn own_stamp(election: &str) -> Option<ProcessStamp> {
    let (_, start_time) = stat(std::process::id())?;
    Some(ProcessStamp {
        start_time,
        boot_id: boot_id()?,
        election: election.to_string(),
    })
}

/// Whether the command line `argv` is a `crown run` that campaigns in `election` (as far as
/// its flags tell: an election given by environment variable is not visible here).
pub fn is_crown_run(argv: &[String], election: &str, same_exe: bool) -> Result<(), String> {
    let name = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        })
        .unwrap_or_default();
    if !(same_exe || name.starts_with("crown")) || argv.get(1).map(String::as_str) != Some("run") {
        return Err("it is not a `crown run`".into());
    }
    let mut it = argv[2..].iter();
    while let Some(a) = it.next() {
        let named = match a.as_str() {
            "--" => break,
            "--election" | "-e" => it.next().cloned(),
            _ => a
                .strip_prefix("--election=")
                .or_else(|| a.strip_prefix("-e").filter(|v| !v.is_empty()))
                .map(str::to_string),
        };
        if let Some(e) = named
            && e != election
        {
            return Err(format!("it runs election {:?}", crate::text::escape(&e)));
        }
    }
    Ok(())
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

fn same_exe(pid: u32) -> bool {
    match (
        std::fs::read_link(format!("/proc/{pid}/exe")),
        std::fs::read_link("/proc/self/exe"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Confirms that the live process at `pid` is the participant whose heartbeat carried
/// `stamp`, in `election`: same boot, same start time (so not a reused pid), not a zombie,
/// and a `crown run` of that election. The error says why not, for the dashboard's footer.
pub fn verify(pid: u32, stamp: &ProcessStamp, election: &str) -> Result<(), String> {
    if stamp.election != election {
        return Err(format!(
            "its heartbeat is for election {:?}",
            crate::text::escape(&stamp.election)
        ));
    }
    if boot_id().as_deref() != Some(stamp.boot_id.as_str()) {
        return Err("its heartbeat comes from another boot or host".into());
    }
    let Some((state, start)) = stat(pid) else {
        return Err(format!("pid {pid} is gone"));
    };
    if matches!(state, 'Z' | 'X') {
        return Err(format!("pid {pid} is gone"));
    }
    if start != stamp.start_time {
        return Err(format!(
            "pid {pid} is another process now (started at tick {start}, its heartbeat says {})",
            stamp.start_time
        ));
    }
    let argv = cmdline(pid).ok_or_else(|| format!("pid {pid} is gone"))?;
    is_crown_run(&argv, election, same_exe(pid)).map_err(|why| format!("pid {pid}: {why}"))
}

/// Sends `sig` to the participant at `pid` only if it is the process `stamp` describes (see
/// [`verify`]), without a window for pid reuse: the process is pinned by a pidfd first,
/// verified, then signalled through that pidfd (a process that died meanwhile gets nothing; a
/// new process that took its pid is a different pidfd's).
pub fn signal_verified(
    pid: u32,
    stamp: &ProcessStamp,
    election: &str,
    sig: nix::sys::signal::Signal,
) -> Result<(), String> {
    use nix::sys::signal::Signal as S;
    use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
    let raw = i32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
    let p = Pid::from_raw(raw).ok_or_else(|| format!("pid {pid} is out of range"))?;
    let fd = pidfd_open(p, PidfdFlags::empty()).map_err(|e| match e {
        rustix::io::Errno::SRCH => format!("pid {pid} is gone"),
        e => format!("cannot open pid {pid}: {e}"),
    })?;
    verify(pid, stamp, election)?;
    let rsig = match sig {
        S::SIGKILL => Signal::KILL,
        S::SIGSTOP => Signal::STOP,
        S::SIGCONT => Signal::CONT,
        S::SIGUSR1 => Signal::USR1,
        S::SIGTERM => Signal::TERM,
        other => return Err(format!("{other} is not a signal the dashboard sends")),
    };
    pidfd_send_signal(&fd, rsig).map_err(|e| match e {
        rustix::io::Errno::SRCH => format!("pid {pid} is gone"),
        e => format!("{sig} to pid {pid} failed: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn stat_fields_after_a_tricky_command_name() {
        let line =
            "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_verifies_and_a_wrong_start_time_does_not() {
        let me = own_stamp("crown").expect("/proc is readable");
        let pid = std::process::id();
        // The test binary is not a `crown run`: refused for that, after the time matched.
        let e = verify(pid, &me, "crown").unwrap_err();
        assert!(e.contains("not a `crown run`"), "{e}");
        let mut other = me.clone();
        other.start_time += 1;
        assert!(
            verify(pid, &other, "crown")
                .unwrap_err()
                .contains("another process now")
        );
        let mut boot = me.clone();
        boot.boot_id = "00000000-0000-0000-0000-000000000000".into();
        assert!(verify(pid, &boot, "crown").unwrap_err().contains("boot"));
        assert!(verify(pid, &me, "other").unwrap_err().contains("election"));
    }

    #[test]
    fn a_stranger_is_never_signalled_even_with_its_true_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let pid = child.id();
        let stamp = ProcessStamp {
            start_time: stat(pid).unwrap().1,
            boot_id: boot_id().unwrap(),
            election: "crown".into(),
        };
        let e =
            signal_verified(pid, &stamp, "crown", nix::sys::signal::Signal::SIGKILL).unwrap_err();
        assert!(e.contains("not a `crown run`"), "{e}");
        assert!(
            matches!(stat(pid), Some(('S' | 'R', _))),
            "it must still run"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let e =
            signal_verified(pid, &stamp, "crown", nix::sys::signal::Signal::SIGKILL).unwrap_err();
        assert!(e.contains("gone"), "{e}");
    }

    #[test]
    fn crown_run_command_lines() {
        let ok = |s: &str| is_crown_run(&argv(s), "e1", false);
        assert!(ok("/usr/bin/crown run --id a").is_ok());
        assert!(ok("crown run --election e1").is_ok());
        assert!(ok("crown run -e e1 -- sh -c x --election e2").is_ok());
        assert!(ok("crown run --election=e2").is_err());
        assert!(ok("crown run -e e2").is_err());
        assert!(ok("crown status").is_err());
        assert!(ok("sleep 300").is_err());
        assert!(is_crown_run(&argv("/tmp/x/renamed run"), "e1", true).is_ok());
    }
}
