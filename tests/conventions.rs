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

/// A loopback port nothing listens on (bound, then closed).
fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Asserts a one-shot command against a refused backend: exit 4 within 4 s with exactly one
/// stderr line, crown's own (no client-library ERROR line before it).
fn fails_fast(args: &[&str], envs: &[(String, String)]) {
    let start = Instant::now();
    let (code, out, err) = crown_env(args, envs);
    let took = start.elapsed();
    assert_eq!(code, 4, "{args:?}: exit {code}: {err}");
    assert!(took < Duration::from_secs(4), "{args:?} took {took:?}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line:\n{err}");
    assert!(err.starts_with("crown: error: "), "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?}: {out}");
}

fn quiet_env() -> Vec<(String, String)> {
    // The defaults under test: no filter from the caller's environment.
    vec![
        ("CROWN_LOG".into(), String::new()),
        ("RUST_LOG".into(), String::new()),
    ]
}

#[test]
fn one_shot_commands_fail_fast_on_a_refused_etcd() {
    let ep = format!("127.0.0.1:{}", refused_port());
    for cmd in ["status", "history"] {
        fails_fast(
            &[cmd, "--backend", "etcd", "--endpoints", &ep],
            &quiet_env(),
        );
    }
    // The old flag name still works.
    let (code, _, err) = crown_env(
        &[
            "status",
            "--backend",
            "etcd",
            "--endpoints",
            &ep,
            "--wait-for-backend",
            "1s",
        ],
        &quiet_env(),
    );
    assert_eq!(code, 4, "{err}");
}

#[test]
fn one_shot_commands_fail_fast_on_a_refused_kube_server() {
    let d = tempdir();
    let kc = d.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"https://127.0.0.1:{}\"}}\n  name: c\n\
             contexts:\n- context: {{cluster: c, user: u}}\n  name: x\ncurrent-context: x\n\
             users:\n- name: u\n  user: {{token: abc}}\n",
            refused_port()
        ),
    )
    .unwrap();
    let mut env = quiet_env();
    env.push(("KUBECONFIG".into(), kc.to_str().unwrap().into()));
    for cmd in ["status", "history"] {
        fails_fast(&[cmd, "--backend", "kube"], &env);
    }
}

#[test]
fn one_shot_help_shows_timeout_not_wait_for_backend() {
    for cmd in ["status", "history"] {
        let (code, out, _) = crown(&[cmd, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("--timeout <DURATION>"), "{out}");
        assert!(out.contains("[default: 3s]"), "{out}");
        assert!(!out.contains("--wait-for-backend"), "{out}");
    }
    let (_, out, _) = crown(&["run", "--help"]);
    assert!(out.contains("--wait-for-backend"), "{out}");
}

/// `crown run` with stderr in a file, the log filter variables set only as given.
fn run_logged(
    dir: &std::path::Path,
    log: &std::path::Path,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Child {
    std::process::Command::new(BIN)
        .args(["run", "--id", "solo", "--dir"])
        .arg(dir)
        .args(timings_fast())
        .args(extra)
        .env_remove("CROWN_LOG")
        .env_remove("RUST_LOG")
        .env_remove("POD_NAME")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The number of renewals a leader has counted on /metrics (its renew latency histogram).
fn renewals(port: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with("crown_renew_latency_seconds_count"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// By default a leader's renewals are not logged (DEBUG), its grant is; a clean SIGTERM
/// shutdown logs no WARN line.
#[test]
fn default_logs_hide_heartbeats_and_a_clean_shutdown_warns_nothing() {
    let d = tempdir();
    let log = d.path().join("stderr");
    let dir = d.path().join("election");
    let port = refused_port();
    let http = format!("127.0.0.1:{port}");
    let mut p = run_logged(&dir, &log, &["--http", &http], &[]);
    eventually("3 renewals", T, || renewals(port).filter(|n| *n >= 3));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(p.wait().unwrap().code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("🎉 [solo] BECAME LEADER (term 1)"), "{text}");
    assert!(text.contains("[solo] stopped"), "{text}");
    assert!(!text.contains("heartbeat"), "heartbeats at INFO:\n{text}");
    assert!(!text.contains("WARN"), "a clean shutdown warned:\n{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

/// `RUST_LOG=debug` (and its alias `CROWN_LOG`) shows the heartbeats.
#[test]
fn rust_log_debug_shows_heartbeats() {
    for (var, value) in [("RUST_LOG", "debug"), ("CROWN_LOG", "crown=debug")] {
        let d = tempdir();
        let log = d.path().join("stderr");
        let mut p = run_logged(&d.path().join("election"), &log, &[], &[(var, value)]);
        eventually(&format!("a heartbeat line with {var}={value}"), T, || {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("👑 [solo] LEADER heartbeat (term 1)")
                .then_some(())
        });
        let _ = p.kill();
        let _ = p.wait();
    }
}

#[test]
fn help_names_both_log_variables() {
    for args in [&["--help"][..], &["run", "--help"]] {
        let (code, out, _) = crown(args);
        assert_eq!(code, 0);
        assert!(
            out.contains("RUST_LOG") && out.contains("CROWN_LOG"),
            "{out}"
        );
    }
}

/// `--http :PORT` listens on all interfaces, `--http localhost:PORT` on a name.
#[test]
fn http_takes_port_only_and_host_names() {
    for form in [":{}", "localhost:{}"] {
        let d = tempdir();
        let log = d.path().join("stderr");
        let port = refused_port();
        let addr = form.replace("{}", &port.to_string());
        let mut p = run_logged(&d.path().join("election"), &log, &["--http", &addr], &[]);
        eventually(&format!("/metrics on --http {addr}"), T, || {
            renewals(port).filter(|n| *n >= 1)
        });
        let _ = p.kill();
        let _ = p.wait();
    }
    let (code, _, err) = crown(&["run", "--http", ":http"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid listen address"), "{err}");
}

/// `ETCDCTL_ENDPOINTS` reaches etcd when neither `--endpoints` nor `$ETCD_ENDPOINTS` is
/// given; the flag wins over it.
#[test]
fn etcdctl_endpoints_is_a_fallback() {
    etcd::require_etcd();
    let e = etcd::Etcd::start(1);
    let mut args = s(&["--backend", "etcd"]);
    args.extend(timings_fast());
    let env = vec![
        (
            "ETCDCTL_ENDPOINTS".to_string(),
            format!("http://{}", e.endpoints()),
        ),
        ("ETCD_ENDPOINTS".to_string(), String::new()),
    ];
    let p1 = Participant::spawn_with("p1", &args, &env);
    p1.wait_for("leader", T, |l| l.event() == "became_leader");
    let (code, out, err) = crown_env(&["status", "--backend", "etcd", "-o", "json"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"p1\""), "{out}");
    // A flag wins: a refused endpoint fails although ETCDCTL_ENDPOINTS is good.
    let bad = format!("127.0.0.1:{}", refused_port());
    let (code, _, err) = crown_env(
        &[
            "status",
            "--backend",
            "etcd",
            "--endpoints",
            &bad,
            "--timeout",
            "1s",
        ],
        &env,
    );
    assert_eq!(code, 4, "{err}");
}

/// `-o yaml` carries the same data as `-o json`; `-o wide` adds columns; text columns line
/// up whatever the length of the ids.
#[test]
fn output_formats_yaml_wide_and_aligned_tables() {
    let d = tempdir();
    let dir = d.path().to_str().unwrap();
    let long = "checkout-worker-7f9c8d6b5-xk2vq-with-a-very-long-pod-name";
    let _a = leader(d.path(), long);
    let _b = Participant::spawn(d.path(), "p2", &timings_fast());
    eventually("two members", T, || {
        (status(d.path())["members"].as_array()?.len() == 2).then_some(())
    });
    for cmd in ["status", "history"] {
        // A heartbeat or renewal may land between the two reads: retry the pair until none did.
        let mut last = None;
        for _ in 0..20 {
            let (c, json, err) = crown(&[cmd, "--dir", dir, "-o", "json"]);
            assert_eq!(c, 0, "{err}");
            let (c, yaml, err) = crown(&[cmd, "--dir", dir, "-o", "yaml"]);
            assert_eq!(c, 0, "{err}");
            let mut j: serde_json::Value = serde_json::from_str(&json).unwrap();
            let mut y: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
            // Heartbeat ages move between the two reads.
            for v in [&mut j, &mut y] {
                if let Some(ms) = v.get_mut("members").and_then(|m| m.as_array_mut()) {
                    for m in ms {
                        m["heartbeat_age_ms"] = 0.into();
                    }
                }
            }
            if j == y {
                last = None;
                break;
            }
            last = Some((yaml, json));
        }
        if let Some((yaml, json)) = last {
            panic!("{cmd}: yaml and json differ in 20 tries; last yaml {yaml}\njson {json}");
        }
    }
    let (c, text, _) = crown(&["status", "--dir", dir]);
    assert_eq!(c, 0);
    let (c, wide, _) = crown(&["status", "--dir", dir, "-o", "wide"]);
    assert_eq!(c, 0);
    for (out, cols) in [(&text, 4), (&wide, 6)] {
        // election, leader, lease and members lines, then the table.
        let table: Vec<&str> = out.lines().skip(4).collect();
        assert!(
            out.lines()
                .nth(2)
                .unwrap()
                .starts_with("lease     record renewed "),
            "{out}"
        );
        assert_eq!(table.len(), 3, "{out}");
        assert_eq!(table[0].split_whitespace().count(), cols, "{out}");
        // Every column starts where its header starts.
        let role = table[0].find("ROLE").unwrap();
        for row in &table[1..] {
            let r = row.find("leader").or_else(|| row.find("follower")).unwrap();
            assert_eq!(r, role, "misaligned:\n{out}");
        }
    }
    assert!(wide.contains("PID") && wide.contains("HOST"), "{wide}");
    let (c, hist, _) = crown(&["history", "--dir", dir, "-o", "wide"]);
    assert_eq!(c, 0);
    assert!(hist.lines().next().unwrap().contains("PREVIOUS"), "{hist}");
}

/// `crown completions SHELL` prints a script for bash, zsh and fish (and the others clap
/// knows) naming the subcommands and flags; bash's parses (`bash -n`).
#[test]
fn completions_generate() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = crown(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["status", "participants", "timeout", "wait"] {
            assert!(out.contains(word), "{shell} lacks {word}");
        }
    }
    let (_, bash, _) = crown(&["completions", "bash"]);
    let d = tempdir();
    let f = d.path().join("crown.bash");
    std::fs::write(&f, &bash).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success(), "bash -n rejects the completion script");
    let (code, _, err) = crown(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

/// `crown man` writes a man page that `man -l` renders without a warning, with every
/// subcommand's section, the log variables and the exit codes.
#[test]
fn man_page_renders() {
    let have_man = std::process::Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_man,
        "`man` not found: install man-db: scripts/install-deps.sh --tests (apt-get install -y man-db)"
    );
    let (code, page, err) = crown(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    let d = tempdir();
    let f = d.path().join("crown.1");
    std::fs::write(&f, &page).unwrap();
    let out = std::process::Command::new("man")
        .arg("-l")
        .arg(&f)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.trim().is_empty(), "man warned: {warnings}");
    for s in [
        "CROWN RUN",
        "CROWN STATUS",
        "CROWN HISTORY",
        "CROWN DEMO",
        "--lease-duration",
        "RUST_LOG",
        "EXIT STATUS",
    ] {
        assert!(text.contains(s), "the rendered page lacks {s:?}:\n{text}");
    }
}

/// Every exit code in `src/exit.rs` is in the README's table, and the table has no other
/// number; the codes are distinct.
#[test]
fn readme_exit_codes_match_src_exit_rs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let src = std::fs::read_to_string(format!("{root}/src/exit.rs")).unwrap();
    let mut consts: Vec<(String, i32)> = src
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const ")?;
            let (name, value) = rest.split_once(": i32 =")?;
            Some((
                name.trim().to_string(),
                value.trim().trim_end_matches(';').trim().parse().ok()?,
            ))
        })
        .collect();
    assert!(consts.len() >= 9, "parsed {consts:?}");
    consts.sort_by_key(|c| c.1);
    let codes: Vec<i32> = consts.iter().map(|c| c.1).collect();
    let mut distinct = codes.clone();
    distinct.dedup();
    assert_eq!(codes, distinct, "two constants share a code: {consts:?}");

    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = readme
        .split("\n## Exit codes\n")
        .nth(1)
        .expect("README has an `## Exit codes` section");
    let section = section.split("\n## ").next().unwrap();
    let mut table: Vec<i32> = section
        .lines()
        .filter_map(|l| {
            l.strip_prefix("| ")?
                .split(" |")
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    table.sort();
    assert_eq!(
        table, codes,
        "README exit-code table {table:?} vs src/exit.rs {consts:?}"
    );
}
