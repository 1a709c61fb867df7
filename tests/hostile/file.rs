//! Issue 12, the file backend: rows 1–7, 13 and 16, and the group-share mode. Root is the
//! victim, `crown-intruder` the other local user; victim files live in each test's temp dir.
//!
//! `CROWN_TEST_BIN=/path/to/old/crown cargo test --test hostile file::` runs these against
//! another binary (how each was checked to fail before the fix).

use super::common::{Line, Participant, timings_fast};
use super::second_user::{INTRUDER, ProtectedSymlinks, as_intruder, intruder_sh, sysctl_lock};
use serde_json::Value;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous functional bound.
const T: Duration = Duration::from_secs(20);

fn bin() -> String {
    std::env::var("CROWN_TEST_BIN").unwrap_or_else(|_| super::common::BIN.to_string())
}

/// A temp dir others can traverse (0755), so the intruder can reach what it may.
fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("crown-hostile-")
        .tempdir()
        .unwrap();
    chmod(d.path(), 0o755);
    d
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command that runs the crown binary as root, or as `user` (setpriv execs it: runuser
/// would stay the parent, and a kill would miss crown).
fn crown_as(user: Option<&str>) -> Command {
    let b = bin();
    match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
                "--",
                &b,
            ]);
            c
        }
        None => Command::new(&b),
    }
}

/// Runs `crown ARGS` (as root, or as `user`) with a bound: None if it had to be killed.
fn crown_bounded(
    user: Option<&str>,
    args: &[&str],
    envs: &[(&str, &str)],
    bound: Duration,
) -> (Option<i32>, String, String) {
    let mut cmd = crown_as(user);
    let mut child = cmd
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("POD_NAME")
        .env_remove("CROWN_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = Instant::now() + bound;
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, o.join().unwrap(), e.join().unwrap())
}

/// `crown run --log-format json --id ID ARGS…`, as root or as `user` (runuser).
fn spawn(user: Option<&str>, id: &str, args: &[String]) -> Participant {
    let mut cmd = crown_as(user);
    cmd.env_remove("CROWN_DIR");
    Participant::spawn_via(cmd, id, args, "info")
}

fn dir_args(dir: &Path) -> Vec<String> {
    let mut a = vec!["--dir".to_string(), dir.display().to_string()];
    a.extend(timings_fast());
    a
}

fn became(l: &Line) -> bool {
    l.event() == "became_leader"
}

fn raw(p: &Participant) -> String {
    p.raw.lock().unwrap().join("\n")
}

/// Victim files: root-only 0600 files with known content; returns their paths.
fn victims(root: &Path, names: &[&str]) -> Vec<PathBuf> {
    let v = root.join("victim");
    std::fs::create_dir_all(&v).unwrap();
    chmod(&v, 0o755);
    names
        .iter()
        .map(|n| {
            let p = v.join(n);
            std::fs::write(&p, format!("SECRET {n}\n")).unwrap();
            chmod(&p, 0o600);
            p
        })
        .collect()
}

fn assert_victims_intact(vs: &[PathBuf]) {
    for p in vs {
        let n = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            format!("SECRET {n}\n"),
            "{} was written through a planted symlink",
            p.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Row 1: a directory planted by another user, full of symlinks
// ---------------------------------------------------------------------------------------------

/// Plants `<share>/<name>` as the intruder's own directory with symlinks to the victims under
/// crown's names.
fn plant(share: &Path, name: &str, vs: &[PathBuf], created: &Path) {
    let d = share.join(name);
    let s = |p: &Path| p.display().to_string();
    intruder_sh(&format!(
        "set -e; mkdir -m 0777 {d}; cd {d}; ln -s {alive} crown.alive; ln -s {hist} crown.history.jsonl; ln -s {lease} crown.lease; ln -s {created} crown.lock; mkdir -m 0777 crown.members",
        d = s(&d),
        alive = s(&vs[0]),
        hist = s(&vs[1]),
        lease = s(&vs[2]),
        created = s(created),
    ));
}

#[test]
fn row1_planted_directory_and_symlinks_are_refused() {
    let _g = sysctl_lock();
    for ps in [0u8, 1] {
        let _p = ProtectedSymlinks::set(ps);
        let root = open_tempdir();
        let share = root.path().join("share");
        std::fs::create_dir(&share).unwrap();
        chmod(&share, 0o1777); // like /tmp
        let vs = victims(root.path(), &["alive", "history", "lease"]);
        let created = root.path().join("victim").join("created-by-crown");
        // The old default (`$TMPDIR/crown`) and the new one (`$TMPDIR/crown-<uid>`).
        plant(&share, "crown", &vs, &created);
        plant(&share, "crown-0", &vs, &created);
        let explicit = share.join("crown");
        let tmpdir = share.display().to_string();
        for (what, args) in [
            ("explicit --dir", vec!["--dir", explicit.to_str().unwrap()]),
            ("default dir", vec![]),
        ] {
            let mut a = vec!["run", "--id", "victim"];
            a.extend(args);
            a.extend(["--lease-duration", "2s", "--renew-deadline", "1500ms"]);
            a.extend(["--retry-period", "500ms"]);
            let (code, _, err) = crown_bounded(
                None,
                &a,
                &[("TMPDIR", &tmpdir), ("XDG_RUNTIME_DIR", "")],
                Duration::from_secs(4),
            );
            assert_victims_intact(&vs);
            assert!(
                !created.exists(),
                "protected_symlinks={ps}, {what}: crown created a file through a symlink"
            );
            assert_eq!(
                code,
                Some(4),
                "protected_symlinks={ps}, {what}: expected exit 4; stderr: {err}"
            );
            assert!(
                err.contains(INTRUDER) && err.contains("mode 0777") && err.lines().count() == 1,
                "protected_symlinks={ps}, {what}: want one line naming owner and mode: {err}"
            );
        }
        // The default directory as a symlink to a directory the intruder owns.
        std::fs::remove_dir_all(share.join("crown-0")).unwrap();
        intruder_sh(&format!(
            "mkdir -m 0700 {s}/mine && ln -s {s}/mine {s}/crown-0",
            s = share.display()
        ));
        let (code, _, err) = crown_bounded(
            None,
            &["run", "--id", "victim"],
            &[("TMPDIR", &tmpdir), ("XDG_RUNTIME_DIR", "")],
            Duration::from_secs(4),
        );
        assert_eq!(code, Some(4), "symlinked default dir: {err}");
        assert!(err.contains("symlink"), "{err}");
    }
}

#[test]
fn row1_default_dir_is_private() {
    let root = open_tempdir();
    let tmpdir = root.path().display().to_string();
    let (code, _, err) = crown_bounded(
        None,
        &["run", "--id", "a", "--", "true"],
        &[("TMPDIR", &tmpdir), ("XDG_RUNTIME_DIR", "")],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "{err}");
    let d = root.path().join("crown-0");
    let m = std::fs::symlink_metadata(&d).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o700, "default dir mode");
    assert_eq!(m.uid(), 0);
    for e in std::fs::read_dir(&d).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        assert_eq!(
            m.mode() & 0o077,
            0,
            "{} is open to others: {:o}",
            e.path().display(),
            m.mode()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Row 2: a fake leader with a one-day lease
// ---------------------------------------------------------------------------------------------

#[test]
fn row2_fake_leader_with_a_day_long_lease_is_not_followed_for_ever() {
    let root = open_tempdir();
    let d = root.path().join("e");
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o700);
    let fake = serde_json::json!({
        "holder": "ghost", "term": 5, "acquired_at": "2026-01-01T00:00:00Z",
        "renewed_at": "2026-01-01T00:00:00Z", "lease_duration_ms": 86_400_000u64,
        "pid": 1, "host": "elsewhere", "revision": 1
    });
    std::fs::write(d.join("crown.lease"), fake.to_string()).unwrap();
    chmod(&d.join("crown.lease"), 0o600);
    let p = spawn(None, "a", &dir_args(&d));
    // Our lease duration is 2 s: the ghost is honoured for at most that long.
    let l = p.wait_for("taking over the fake leader", T, became);
    assert_eq!(l.term(), Some(6), "{}", raw(&p));

    // The same attack needs write access to the directory: a directory the intruder owns
    // is refused, naming owner and mode.
    let share = root.path().join("share");
    std::fs::create_dir(&share).unwrap();
    chmod(&share, 0o1777);
    intruder_sh(&format!("mkdir -m 0755 {}/e", share.display()));
    let e = share.join("e");
    let (code, _, err) = crown_bounded(
        None,
        &["run", "--id", "a", "--dir", e.to_str().unwrap()],
        &[],
        Duration::from_secs(4),
    );
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains(INTRUDER) && err.contains("mode 0755"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Row 3: another user flocks the lock
// ---------------------------------------------------------------------------------------------

#[test]
fn row3_other_users_cannot_open_or_flock_the_locks() {
    let root = open_tempdir();
    let d = root.path().join("e");
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o755); // readable by others, as `mkdir` with umask 022 makes it
    let p = spawn(None, "a", &dir_args(&d));
    let l = p.wait_for("leading", T, became);
    let term = l.term().unwrap();
    for name in [
        "crown.lock",
        "crown.alive",
        "crown.lease",
        "crown.history.jsonl",
    ] {
        let path = d.join(name);
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600, "{name}: {:o}", m.mode());
        let out = as_intruder(&["flock", "-n", "-s", path.to_str().unwrap(), "true"]);
        assert!(
            !out.status.success(),
            "{INTRUDER} could flock {name} of root's election"
        );
    }
    // The leader keeps leading while the intruder tries for 3 s.
    let out = as_intruder(&[
        "flock",
        "-w",
        "3",
        d.join("crown.lock").to_str().unwrap(),
        "sleep",
        "3",
    ]);
    assert!(!out.status.success());
    assert!(
        !p.lines().iter().any(|l| l.event() == "stopped_leading"),
        "the leader stepped down: {}",
        raw(&p)
    );
    assert_eq!(
        p.lines().iter().filter(|l| became(l)).count(),
        1,
        "{}",
        raw(&p)
    );
    let _ = term;
    drop(p);

    // A pre-existing lock file owned by someone else is refused, not used.
    let d2 = root.path().join("e2");
    std::fs::create_dir(&d2).unwrap();
    chmod(&d2, 0o700);
    let lock = d2.join("crown.lock");
    std::fs::write(&lock, "").unwrap();
    chmod(&lock, 0o666);
    sh(&format!("chown {INTRUDER} {}", lock.display()));
    let (code, _, err) = crown_bounded(
        None,
        &["run", "--id", "a", "--dir", d2.to_str().unwrap()],
        &[],
        Duration::from_secs(4),
    );
    assert_eq!(code, Some(4), "a lock owned by {INTRUDER} was used: {err}");
    assert!(err.contains(INTRUDER), "{err}");

    // Ours, but 0644 (as crown made it before): another user may hold it open; refused.
    std::fs::remove_file(&lock).unwrap();
    std::fs::write(&lock, "").unwrap();
    chmod(&lock, 0o644);
    let (code, _, err) = crown_bounded(
        None,
        &["run", "--id", "a", "--dir", d2.to_str().unwrap()],
        &[],
        Duration::from_secs(4),
    );
    assert_eq!(code, Some(4), "a 0644 lock file was used: {err}");
    assert!(err.contains("mode 0644"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Rows 4, 6, 7: terms never go backwards
// ---------------------------------------------------------------------------------------------

fn grant_line(term: u64) -> String {
    format!(
        "{{\"term\":{term},\"holder\":\"old\",\"acquired_at\":\"2026-01-01T00:00:00Z\",\"pid\":1,\"host\":\"h\"}}\n"
    )
}

fn private_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o700);
    d
}

/// Starts a participant and waits for either a grant or a refusal containing `refusal`.
fn grant_or_refusal(d: &Path, refusal: &str) -> (Participant, Line) {
    let p = spawn(None, "a", &dir_args(d));
    let l = p.wait_for("a grant or a refusal", T, |l| {
        became(l) || l.message().contains(refusal)
    });
    (p, l)
}

#[test]
fn row4_unreadable_history_never_lowers_the_floor() {
    let root = open_tempdir();
    let good: String = (48..=50).map(grant_line).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8", {
            let mut b = good.clone().into_bytes();
            b.extend_from_slice(b"{\"term\":51,\"holder\":\"\xff\"}\n");
            b
        }),
        ("a line over the limit", {
            let mut b = good.clone().into_bytes();
            b.extend(std::iter::repeat_n(b'x', 100_000));
            b.push(b'\n');
            b
        }),
        ("a torn last line", {
            let mut b = good.clone().into_bytes();
            b.extend_from_slice(b"{\"term\":51,\"hol");
            b
        }),
        ("garbage", {
            let mut b = good.clone().into_bytes();
            b.extend_from_slice(b"not json\n");
            b
        }),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let d = private_dir(root.path(), &format!("e{i}"));
        std::fs::write(d.join("crown.history.jsonl"), &bytes).unwrap();
        chmod(&d.join("crown.history.jsonl"), 0o600);
        let (p, l) = grant_or_refusal(&d, "refusing to grant");
        assert!(
            !became(&l),
            "{what}: granted term {:?} over a history whose floor is at least 50",
            l.term()
        );
        drop(p);
        // `crown history` still shows what it can, and exits 0.
        let (code, out, err) = crown_bounded(
            None,
            &["history", "-o", "json", "--dir", d.to_str().unwrap()],
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(0), "{what}: crown history: {err}");
        let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
        assert!(rows.len() >= 3, "{what}: {out}");
        // Repaired (the bad part removed), the next grant is above the floor.
        std::fs::write(d.join("crown.history.jsonl"), &good).unwrap();
        let p = spawn(None, "a", &dir_args(&d));
        let l = p.wait_for("a grant after the repair", T, became);
        assert_eq!(l.term(), Some(51), "{what}");
    }
}

#[test]
fn row6_a_torn_last_line_is_not_glued_to_the_next_grant() {
    let root = open_tempdir();
    let d = private_dir(root.path(), "e");
    let mut h = grant_line(6);
    h.push_str(grant_line(7).trim_end()); // whole, but without its newline
    std::fs::write(d.join("crown.history.jsonl"), h).unwrap();
    chmod(&d.join("crown.history.jsonl"), 0o600);
    let p = spawn(None, "a", &dir_args(&d));
    let l = p.wait_for("a grant", T, became);
    assert_eq!(l.term(), Some(8), "{}", raw(&p));
    drop(p);
    let text = std::fs::read_to_string(d.join("crown.history.jsonl")).unwrap();
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "a line was glued: {text}"
    );
    let (code, out, err) = crown_bounded(
        None,
        &["history", "-o", "json", "--dir", d.to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "{err}");
    let terms: Vec<u64> = serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .iter()
        .map(|g| g["term"].as_u64().unwrap())
        .collect();
    assert!(
        terms.ends_with(&[6, 7, 8]),
        "crown history lost a grant: {terms:?}"
    );
}

#[test]
fn row7_the_largest_term_is_an_error_never_a_wrap() {
    let root = open_tempdir();
    for (i, in_lease, in_history) in [(0, true, true), (1, true, false), (2, false, true)] {
        let d = private_dir(root.path(), &format!("e{i}"));
        if in_lease {
            let rec = serde_json::json!({
                "holder": "", "term": u64::MAX, "acquired_at": "2026-01-01T00:00:00Z",
                "renewed_at": "2026-01-01T00:00:00Z", "lease_duration_ms": 2000,
                "pid": 1, "host": "h", "released_at": "2026-01-01T00:00:00Z",
                "released_by": "old", "revision": 3
            });
            std::fs::write(d.join("crown.lease"), rec.to_string()).unwrap();
            chmod(&d.join("crown.lease"), 0o600);
        }
        if in_history {
            std::fs::write(d.join("crown.history.jsonl"), grant_line(u64::MAX)).unwrap();
            chmod(&d.join("crown.history.jsonl"), 0o600);
        }
        let (p, l) = grant_or_refusal(&d, "largest possible term");
        assert!(
            !became(&l),
            "lease {in_lease} history {in_history}: granted term {:?} after u64::MAX: {}",
            l.term(),
            raw(&p)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Row 5: no grant without its history line
// ---------------------------------------------------------------------------------------------

/// `chattr -i` on drop, so the temp dir can be removed.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn row5_no_grant_when_the_history_cannot_be_appended() {
    let root = open_tempdir();
    let d = private_dir(root.path(), "e");
    let hist = d.join("crown.history.jsonl");
    std::fs::write(&hist, (1..=2).map(grant_line).collect::<String>()).unwrap();
    chmod(&hist, 0o600);
    sh(&format!("chattr +i {}", hist.display()));
    let guard = Immutable(hist.clone());
    let (p, l) = grant_or_refusal(&d, "so not granting");
    assert!(
        !became(&l),
        "granted term {:?} without recording it: {}",
        l.term(),
        raw(&p)
    );
    // Appendable again: the next grant is recorded before it is announced.
    drop(guard);
    let l = p.wait_for("a grant once the history is writable", T, became);
    assert_eq!(l.term(), Some(3));
    let text = std::fs::read_to_string(&hist).unwrap();
    assert!(
        text.lines().last().unwrap().contains("\"term\":3"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Row 13: FIFOs, directories, symlinks under crown's names
// ---------------------------------------------------------------------------------------------

#[test]
fn row13_special_files_are_clear_errors_never_a_hang() {
    let root = open_tempdir();
    type Make = fn(&Path);
    let cases: Vec<(&str, &str, Make)> = vec![
        ("FIFO lease", "FIFO", |d| {
            sh(&format!("mkfifo -m 600 {}/crown.lease", d.display()))
        }),
        ("FIFO lock", "FIFO", |d| {
            sh(&format!("mkfifo -m 600 {}/crown.lock", d.display()))
        }),
        ("FIFO history", "FIFO", |d| {
            sh(&format!(
                "mkfifo -m 600 {}/crown.history.jsonl",
                d.display()
            ))
        }),
        ("directory lease", "directory", |d| {
            std::fs::create_dir(d.join("crown.lease")).unwrap()
        }),
        ("symlink lease", "symlink", |d| {
            std::os::unix::fs::symlink("/etc/hostname", d.join("crown.lease")).unwrap()
        }),
    ];
    for (i, (what, word, make)) in cases.into_iter().enumerate() {
        let d = private_dir(root.path(), &format!("e{i}"));
        make(&d);
        let ds = d.to_str().unwrap();
        let (code, _, err) = crown_bounded(
            None,
            &["run", "--id", "a", "--dir", ds],
            &[],
            Duration::from_secs(5),
        );
        assert_eq!(code, Some(4), "{what}: crown run: {err}");
        assert!(err.contains(word), "{what}: {err}");
        let (code, _, err) =
            crown_bounded(None, &["status", "--dir", ds], &[], Duration::from_secs(5));
        assert!(code.is_some(), "{what}: crown status hung");
        if what.ends_with("lease") {
            assert_eq!(code, Some(4), "{what}: crown status: {err}");
            assert!(err.contains(word), "{what}: {err}");
        }
        let (code, _, _) =
            crown_bounded(None, &["history", "--dir", ds], &[], Duration::from_secs(5));
        assert!(code.is_some(), "{what}: crown history hung");
    }
    // A FIFO heartbeat: status answers, without that member.
    let d = private_dir(root.path(), "members");
    let p = spawn(None, "a", &dir_args(&d));
    p.wait_for("leading", T, became);
    sh(&format!(
        "mkfifo -m 600 {}/crown.members/x.json",
        d.display()
    ));
    let (code, out, err) = crown_bounded(
        None,
        &["status", "-o", "json", "--dir", d.to_str().unwrap()],
        &[],
        Duration::from_secs(5),
    );
    assert_eq!(code, Some(0), "crown status with a FIFO heartbeat: {err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["leader"]["id"], "a", "{out}");
}

// ---------------------------------------------------------------------------------------------
// Row 16: attacker-sized files cost bounded memory
// ---------------------------------------------------------------------------------------------

/// Peak RSS in KiB of `crown ARGS` (run to completion, through Python's getrusage).
fn peak_rss_kib(args: &[&str]) -> (i32, u64) {
    let script = "import resource,subprocess,sys\nr=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)\nprint(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let b = bin();
    let out = Command::new("python3")
        .args(["-c", script, &b])
        .args(args)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    let code = it.next().unwrap().parse().unwrap();
    (code, it.next().unwrap().parse().unwrap())
}

#[test]
fn row16_huge_files_cost_bounded_memory() {
    const LIMIT_KIB: u64 = 40 * 1024;
    let root = open_tempdir();
    let d = private_dir(root.path(), "e");
    // A 100 MB lease record.
    let lease = std::fs::File::create(d.join("crown.lease")).unwrap();
    let mut w = std::io::BufWriter::new(&lease);
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        w.write_all(&chunk).unwrap();
    }
    drop(w);
    chmod(&d.join("crown.lease"), 0o600);
    // A 50 MB history of valid grants.
    {
        let f = std::fs::File::create(d.join("crown.history.jsonl")).unwrap();
        let mut w = std::io::BufWriter::new(f);
        let mut t = 1u64;
        let mut n = 0usize;
        while n < 50 << 20 {
            let l = grant_line(t);
            n += l.len();
            w.write_all(l.as_bytes()).unwrap();
            t += 1;
        }
    }
    chmod(&d.join("crown.history.jsonl"), 0o600);
    let ds = d.to_str().unwrap();
    let (code, rss) = peak_rss_kib(&["status", "--dir", ds]);
    assert!(
        rss < LIMIT_KIB,
        "crown status: {rss} KiB peak (exit {code})"
    );
    let (code, rss) = peak_rss_kib(&["history", "--dir", ds]);
    assert_eq!(code, 0);
    // History prints the grants it read (the last 1 MiB, ~4000 rows) as an aligned table, which
    // costs more than status; loading the whole 50 MB file would cost well over 100 MB.
    assert!(rss < 64 * 1024, "crown history: {rss} KiB peak");
    // A participant reads the lease and the whole history (for the floor) in bounded memory.
    let p = spawn(None, "a", &dir_args(&d));
    let l = p.wait_for("a grant over the corrupt lease", T, became);
    assert!(l.term().unwrap() > 100_000, "{}", raw(&p));
    let hwm = std::fs::read_to_string(format!("/proc/{}/status", p.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .map(|v| v.parse::<u64>().unwrap())
        })
        .unwrap();
    assert!(hwm < LIMIT_KIB, "crown run: {hwm} KiB peak");
}

// ---------------------------------------------------------------------------------------------
// Item 3: a group share on purpose
// ---------------------------------------------------------------------------------------------

const GROUP: &str = "crown-share";
const MEMBER: &str = "crown-member";

fn ensure_group_member() {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        super::second_user::intruder_uid(); // asserts root
        let have = |args: &[&str]| Command::new("getent").args(args).output().unwrap();
        if !have(&["group", GROUP]).status.success() {
            let st = Command::new("groupadd").arg(GROUP).status().unwrap();
            assert!(
                st.success() || st.code() == Some(9),
                "groupadd {GROUP} (apt-get install -y passwd)"
            );
        }
        if !have(&["passwd", MEMBER]).status.success() {
            let st = Command::new("useradd")
                .args(["-M", "-s", "/usr/sbin/nologin", "-G", GROUP, MEMBER])
                .status()
                .unwrap();
            assert!(st.success() || st.code() == Some(9), "useradd {MEMBER}");
        }
    });
}

#[test]
fn group_share_lets_members_compete_and_keeps_others_out() {
    ensure_group_member();
    let root = open_tempdir();
    let d = root.path().join("shared");
    std::fs::create_dir(&d).unwrap();
    sh(&format!(
        "chown root:{GROUP} {0} && chmod 2770 {0}",
        d.display()
    ));
    let args = dir_args(&d);
    let member = spawn(Some(MEMBER), "m", &args);
    let l = member.wait_for("the member leads", T, became);
    let t1 = l.term().unwrap();
    let r = spawn(None, "r", &args);
    r.wait_for("root follows", T, |l| l.event() == "follower");
    for name in [
        "crown.lock",
        "crown.alive",
        "crown.lease",
        "crown.history.jsonl",
    ] {
        let m = std::fs::metadata(d.join(name)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o660, "{name}: {:o}", m.mode());
        let out = as_intruder(&["flock", "-n", "-s", d.join(name).to_str().unwrap(), "true"]);
        assert!(!out.status.success(), "{INTRUDER} could flock {name}");
    }
    // The member dies: root (another user of the group) takes over.
    let mut member = member;
    let _ = member.child.kill();
    let _ = member.child.wait();
    let l = r.wait_for("root takes over", T, became);
    assert!(l.term().unwrap() > t1);
    // Others cannot read the election at all.
    let (code, _, err) = crown_bounded(
        Some(INTRUDER),
        &["status", "--dir", d.to_str().unwrap()],
        &[],
        Duration::from_secs(5),
    );
    assert_eq!(code, Some(4), "{err}");
}
