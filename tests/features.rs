//! The binary built with only some cargo features: `make demo`'s `cli,file,tui` in the `demo`
//! profile (target/demo/crown, built here by cargo; a no-op when `make demo` built it already).
//! `crown demo` works with it; a backend, `--http` or `--notify-url` it was built without is
//! refused with exactly one line and exit code 9 (`exit::NOT_BUILT`), before anything starts.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// `make demo`'s features.
const DEMO_FEATURES: &str = "cli,file,tui";

/// target/demo/crown with [`DEMO_FEATURES`], built once per test binary.
fn trimmed() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let st = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--profile",
                "demo",
                "--no-default-features",
            ])
            .args([
                "--features",
                DEMO_FEATURES,
                "--bin",
                "crown",
                "--manifest-path",
            ])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .stdin(Stdio::null())
            .status()
            .expect("run cargo");
        assert!(st.success(), "cargo build of the trimmed binary: {st}");
        // The same target directory as this test's own binary: <target>/debug/crown.
        let debug = PathBuf::from(env!("CARGO_BIN_EXE_crown"));
        let bin = debug.parent().unwrap().parent().unwrap().join("demo/crown");
        assert!(
            bin.is_file(),
            "{} is missing after the build",
            bin.display()
        );
        bin
    })
}

/// Runs the trimmed binary; returns (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Command::new(trimmed());
    c.args(args)
        .env_remove("CROWN_BACKEND")
        .env("XDG_RUNTIME_DIR", tmp.path())
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run the trimmed crown");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_not_built(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let (code, out, err) = run(args, env);
    assert_eq!(
        code, 9,
        "{args:?} {env:?}: exit {code}\nstdout: {out}\nstderr: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got:\n{err}");
    assert!(
        err.starts_with("crown: error: this crown was built without ") && err.contains(needle),
        "{args:?}: {err}"
    );
    assert!(out.is_empty(), "{args:?}: stdout {out}");
}

#[test]
fn backends_left_out_are_refused_with_exit_9() {
    let etcd = "the etcd backend (cargo build --features etcd";
    let kube = "the kube backend (cargo build --features kube";
    assert_not_built(&["run", "--backend", "etcd", "--id", "a"], &[], etcd);
    assert_not_built(&["run", "--backend", "kube", "--id", "a"], &[], kube);
    // From the environment too, and for the one-shot commands and the dashboard.
    assert_not_built(&["run", "--id", "a"], &[("CROWN_BACKEND", "etcd")], etcd);
    assert_not_built(&["status", "--backend", "etcd"], &[], etcd);
    assert_not_built(&["history", "--backend", "kube"], &[], kube);
    assert_not_built(&["once", "reset", "--backend", "etcd"], &[], etcd);
    assert_not_built(&["tui", "--backend", "etcd"], &[], etcd);
    assert_not_built(&["demo", "--backend", "etcd", "--headless"], &[], etcd);
}

#[test]
fn sidecar_http_and_webhooks_left_out_are_refused_with_exit_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    assert_not_built(
        &["run", "--dir", dir, "--http", "127.0.0.1:0"],
        &[],
        "--http (cargo build --features sidecar",
    );
    assert_not_built(
        &["run", "--dir", dir, "--notify-url", "http://127.0.0.1:9/"],
        &[],
        "--notify-url (cargo build --features sidecar",
    );
    // Refused before anything is created.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn the_demo_runs_on_the_trimmed_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut args: Vec<String> = ["demo", "-p", "2", "--duration", "5s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(common::timings_fast());
    args.extend(["--dir".to_string(), dir.to_str().unwrap().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(&args, &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("demo | 2 participant(s) in"), "{out}");
    assert!(out.contains("BECAME LEADER (term 1)"), "{out}");
}
