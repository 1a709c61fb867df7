//! Bad input gets one clear line on stderr and a distinct exit code, or a safe, logged
//! recovery; never a panic.

mod common;
use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Asserts a one-line error (no panic, no backtrace) with `code` containing `needle`.
fn fails(args: &[&str], code: i32, needle: &str) {
    let (c, out, err) = crown(args);
    assert_eq!(c, code, "{args:?}: exit {c}, stderr: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks {needle:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(out.is_empty(), "{args:?} printed to stdout: {out}");
    if code != 2 {
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
    }
}

#[test]
fn bad_flags_exit_2() {
    fails(
        &["run", "--lease-duration", "fast"],
        2,
        "invalid duration \"fast\"",
    );
    fails(
        &["run", "--backend", "zookeeper"],
        2,
        "invalid value 'zookeeper'",
    );
    fails(&["status", "-o", "xml"], 2, "invalid value 'xml'");
    fails(&["frobnicate"], 2, "unrecognized subcommand");
}

/// Out-of-range durations are clap errors (exit 2) with a clear message, never a panic: every
/// duration flag and its environment fallback shares one bounded parser (at most 1 day).
#[test]
fn huge_durations_exit_2() {
    let d = tempdir();
    let dir = d.path().to_str().unwrap();
    for args in [
        &["run", "--dir", dir, "--lease-duration", "1e300"][..],
        &["run", "--dir", dir, "--grace", "1e300", "--", "true"],
        &["tui", "--dir", dir, "--refresh", "1e300"],
        &["demo", "--dir", dir, "--refresh", "1e300"],
        &["demo", "--dir", dir, "--chaos-interval", "1e300"],
        &["demo", "--dir", dir, "--duration", "1e300"],
        &["status", "--dir", dir, "--wait-for-backend", "1e300"],
        &[
            "run",
            "--dir",
            dir,
            "--lease-duration",
            "1.8e19",
            "--renew-deadline",
            "9.3e18",
            "--retry-period",
            "1",
        ],
        &["run", "--dir", dir, "--lease-duration", "25h"],
    ] {
        fails(args, 2, "must be at most 1 day");
    }
    let (c, out, err) = crown_env(
        &["run", "--dir", dir],
        &[("CROWN_RETRY_PERIOD".into(), "1e20".into())],
    );
    assert_eq!(c, 2, "CROWN_RETRY_PERIOD=1e20: exit {c}: {err}");
    assert!(err.contains("must be at most 1 day"), "{err}");
    assert!(!err.contains("panicked") && out.is_empty(), "{err}");
    fails(
        &["tui", "--dir", dir, "--refresh", "0"],
        2,
        "must be greater than zero",
    );
    fails(
        &["run", "--dir", dir, "--retry-period", "0s"],
        2,
        "must be greater than zero",
    );
}

#[test]
fn timings_that_break_the_rule_exit_3() {
    let d = tempdir();
    let dir = d.path().to_str().unwrap();
    fails(
        &[
            "run",
            "--dir",
            dir,
            "--lease-duration",
            "2s",
            "--renew-deadline",
            "3s",
        ],
        3,
        "lease duration (2s) must be greater than renew deadline (3s)",
    );
    fails(
        &[
            "run",
            "--dir",
            dir,
            "--renew-deadline",
            "1s",
            "--retry-period",
            "1s",
        ],
        3,
        "must be greater than 1.2 × retry period",
    );
    fails(
        &["run", "--dir", dir, "--election", "../etc"],
        3,
        "invalid election name",
    );
    fails(
        &["run", "--dir", dir, "--id", "a/b"],
        3,
        "invalid participant id",
    );
}

#[test]
fn unusable_directory_exits_4() {
    let d = tempdir();
    let file = d.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let under = file.join("sub");
    fails(
        &["run", "--dir", under.to_str().unwrap()],
        4,
        "cannot create directory",
    );
    fails(
        &["status", "--dir", d.path().join("nope").to_str().unwrap()],
        4,
        "no election directory",
    );
}

fn write_lease(dir: &std::path::Path, bytes: &[u8]) {
    std::fs::write(dir.join("crown.lease"), bytes).unwrap();
}

#[test]
fn corrupt_lease_file_status_exits_5_and_a_participant_recovers_safely() {
    for (what, bytes) in [
        ("garbage", &b"\x00\xffnot json"[..]),
        ("empty", &b""[..]),
        (
            "truncated",
            &br#"{"holder":"a","term":3,"acquired_at":"2026-01-01T00:00:00Z","#[..],
        ),
    ] {
        let d = tempdir();
        // A history from before the corruption: the next term must go above it.
        std::fs::write(
            d.path().join("crown.history.jsonl"),
            "{\"term\":41,\"holder\":\"old\",\"acquired_at\":\"2026-01-01T00:00:00Z\"}\n",
        )
        .unwrap();
        write_lease(d.path(), bytes);
        fails(
            &["status", "--dir", d.path().to_str().unwrap()],
            5,
            "corrupt lease file",
        );

        let p = Participant::spawn(d.path(), "fixer", &timings_fast());
        p.wait_for(&format!("a warning about the {what} file"), T, |l| {
            l.message().contains("corrupt lease file")
        });
        let l = p.wait_for("recovery", T, |l| l.event() == "became_leader");
        assert_eq!(
            l.term(),
            Some(42),
            "{what}: term must go above the history's"
        );
        let h = history(d.path());
        assert_eq!(h.last().unwrap()["previous_end"], "corrupt");
    }
}

#[test]
fn lease_of_a_holder_on_another_host_is_only_taken_after_expiry() {
    let d = tempdir();
    let now = jiff::Timestamp::now();
    let rec = serde_json::json!({
        "holder": "ghost", "term": 7, "acquired_at": now, "renewed_at": now,
        "lease_duration_ms": 2000, "pid": 1, "host": "some-other-host", "revision": 3
    });
    write_lease(d.path(), rec.to_string().as_bytes());
    let s = status(d.path());
    assert_eq!(s["leader"]["id"], "ghost");
    assert_eq!(s["leader"]["host"], "some-other-host");

    let t0 = std::time::Instant::now();
    let p = Participant::spawn(d.path(), "local", &timings_fast());
    p.wait_for("following the remote holder", T, |l| {
        l.event() == "follower" && l.json["leader"] == "ghost" && l.term() == Some(7)
    });
    let l = p.wait_for("takeover after expiry", T, |l| l.event() == "became_leader");
    assert_eq!(l.term(), Some(8));
    let waited = l.at.duration_since(t0);
    assert!(
        waited >= Duration::from_millis(1900),
        "took a remote host's lease after {waited:?}"
    );
    assert_eq!(history(d.path()).last().unwrap()["previous_end"], "expired");
}

#[test]
fn a_status_of_an_empty_election_says_no_leader() {
    let d = tempdir();
    let (c, out, _) = crown(&["status", "--dir", d.path().to_str().unwrap()]);
    assert_eq!(c, 0);
    assert!(out.contains("leader    none"), "{out}");
    let (c, out, _) = crown(&["history", "--dir", d.path().to_str().unwrap()]);
    assert_eq!(c, 0);
    assert_eq!(out, "no grants yet\n");
}

/// Issue 12 row 17: with no `--id`, the default `<hostname>-<pid>` works for any valid host
/// name. A 64-character host name (set in a private UTS namespace: `unshare -u`, as root)
/// used to fail id validation with exit 3.
#[test]
fn default_id_fits_a_long_hostname() {
    let d = tempdir();
    let host = "h".repeat(64);
    let script = format!(
        "hostname {host} && exec '{BIN}' run --check-config --dir '{}'",
        d.path().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-u", "sh", "-c", &script])
        .env_remove("POD_NAME")
        .output()
        .unwrap_or_else(|e| panic!("unshare not runnable ({e}): apt-get install -y util-linux"));
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !err.contains("Operation not permitted"),
        "this test needs root for `unshare -u` (run `make test` as root, as CI does): {err}"
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    let id = stdout
        .split("id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("config ok line with the id");
    assert!(id.len() <= 63 && id.starts_with("hhhh"), "{stdout}");
}
