//! Keeps README.md in sync with the real `--help` output and the two set-up commands at its
//! top. `UPDATE_README=1 cargo test --test readme` rewrites the help blocks.

mod common;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(common::BIN)
        .args(args)
        .arg("--help")
        .env("TMPDIR", "/tmp")
        .env_remove("CROWN_DIR")
        .env_remove("CROWN_ELECTION")
        .env_remove("CROWN_BACKEND")
        .env_remove("POD_NAME")
        .env_remove("CROWN_LOG_FORMAT")
        .env_remove("CROWN_LEASE_DURATION")
        .env_remove("CROWN_RENEW_DEADLINE")
        .env_remove("CROWN_RETRY_PERIOD")
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("CROWN_ETCD_PREFIX")
        .env_remove("ETCD_CACERT")
        .env_remove("ETCD_CERT")
        .env_remove("ETCD_KEY")
        .env_remove("ETCD_USER")
        .env_remove("CROWN_GRACE")
        .env_remove("CROWN_ON_CHILD_EXIT")
        .env_remove("CROWN_ON_LOSS")
        .env_remove("CROWN_HTTP")
        .env_remove("CROWN_NOTIFY_URL")
        .env_remove("CROWN_ONCE")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

const BLOCKS: &[(&str, &[&str])] = &[
    ("crown", &[]),
    ("crown run", &["run"]),
    ("crown status", &["status"]),
    ("crown history", &["history"]),
    ("crown once reset", &["once", "reset"]),
];

#[test]
fn readme_help_blocks_match_the_binary() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let mut readme = std::fs::read_to_string(path).unwrap();
    let update = std::env::var_os("UPDATE_README").is_some();
    let mut stale = vec![];
    for (name, args) in BLOCKS {
        let begin = format!("<!-- help: {name} -->\n```text\n$ {name} --help\n");
        let end = "```\n<!-- /help -->";
        let Some(b) = readme.find(&begin) else {
            panic!("README.md lacks the block {begin:?}")
        };
        let start = b + begin.len();
        let stop = start + readme[start..].find(end).expect("block end");
        let want = help(args);
        if readme[start..stop] != want {
            stale.push(*name);
            readme.replace_range(start..stop, &want);
        }
    }
    if update {
        std::fs::write(path, &readme).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "README help out of date for {stale:?}: run UPDATE_README=1 cargo test --test readme"
        );
    }
}

#[test]
fn readme_starts_with_the_two_setup_commands_and_ci_runs_the_test_one() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let first_block: Vec<&str> = readme
        .split("```")
        .nth(1)
        .expect("a code block")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        first_block.len(),
        2,
        "exactly two set-up commands: {first_block:?}"
    );
    assert!(first_block[0].starts_with("make setup demo"));
    assert!(first_block[1].starts_with("make test"));
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "make test"),
        ".ci/run must call `make test`"
    );
}
