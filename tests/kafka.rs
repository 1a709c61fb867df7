//! One active Kafka consumer behind crown, on a real broker (scripts/kafka-local.sh: a
//! single-node KRaft broker from Maven Central, run by Java): 3 participants on the file
//! backend each run examples/kafka/consumer.py as the sidecar child; a producer writes 2 000
//! numbered records at a steady rate; the leader is taken down 5 times (kill -9, SIGTERM, and
//! SIGSTOP of crown past the lease then SIGCONT, while its consumer keeps running). Checked on
//! the fenced sink (examples/kafka/sink.py): every record processed; every duplicate at a
//! failover, in a different term; no accepted write from a lower term than one already seen;
//! no two terms committing at the same time; the paused leader's consumer was refused.
//!
//! Needs Java, Maven and kcat (`scripts/install-deps.sh --tests`); fails with that command
//! when they are missing.

mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RECORDS: u64 = 2000;
/// 50 records a second: 40 s of production, long enough for the 5 failovers.
const PERIOD: Duration = Duration::from_millis(20);
const TOPIC: &str = "orders";
const INSTALL: &str = "scripts/install-deps.sh --tests (or: apt-get install -y --no-install-recommends default-jre-headless maven kcat python3)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "tests/kafka.rs needs `{tool}`: install it with {INSTALL}"
    );
}

/// The broker; stopped (and its data removed) on drop.
struct Broker {
    dir: PathBuf,
    bootstrap: String,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let out = Command::new(root().join("scripts/kafka-local.sh"))
            .args(["start", "--dir", dir.to_str().unwrap()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka-local.sh");
        assert!(
            out.status.success(),
            "scripts/kafka-local.sh start failed (install: {INSTALL}); log: {}",
            std::fs::read_to_string(dir.join("kafka.log")).unwrap_or_default()
        );
        let bootstrap = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(
            bootstrap.starts_with("127.0.0.1:"),
            "bootstrap {bootstrap:?}"
        );
        Broker {
            dir: dir.to_path_buf(),
            bootstrap,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/kafka-local.sh"))
            .args(["stop", "--dir", self.dir.to_str().unwrap()])
            .status();
    }
}

fn sink(args: &[&str]) -> (i32, String) {
    let out = Command::new("python3")
        .arg(root().join("examples/kafka/sink.py"))
        .args(args)
        .output()
        .expect("run python3 sink.py");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn sink_json(cmd: &str, db: &Path) -> Value {
    let (code, out) = sink(&[cmd, db.to_str().unwrap()]);
    assert_eq!(code, 0, "sink.py {cmd}: {out}");
    serde_json::from_str(&out).unwrap()
}

/// Polls the sink's status (a Python process per look, so every 100 ms) until `pred`.
fn await_sink(what: &str, db: &Path, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = sink_json("status", db);
        if pred(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; sink status {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn participant(dir: &Path, id: &str, bootstrap: &str, db: &Path) -> Participant {
    let mut args: Vec<String> = vec!["--dir".into(), dir.to_str().unwrap().into()];
    args.extend(
        [
            "--lease-duration",
            "2s",
            "--renew-deadline",
            "1500ms",
            "--retry-period",
            "400ms",
            "--grace",
            "300ms",
            "--",
            "python3",
        ]
        .map(String::from),
    );
    args.push(
        root()
            .join("examples/kafka/consumer.py")
            .to_str()
            .unwrap()
            .into(),
    );
    let envs = [
        ("KAFKA_BOOTSTRAP", bootstrap),
        ("KAFKA_TOPIC", TOPIC),
        ("SINK_DB", db.to_str().unwrap()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    Participant::spawn_with(id, &args, &envs)
}

fn granted_terms(ps: &[Participant]) -> Vec<(usize, u64)> {
    let mut v = vec![];
    for (i, p) in ps.iter().enumerate() {
        for l in p.lines() {
            if l.event() == "became_leader"
                && let Some(t) = l.term()
            {
                v.push((i, t));
            }
        }
    }
    v
}

type Logs =
    std::sync::Arc<std::sync::Mutex<Vec<(String, std::sync::Arc<std::sync::Mutex<Vec<String>>>)>>>;

/// On a failure, prints every participant's crown events and consumer lines.
struct DumpOnPanic(Logs);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (id, raw) in self.0.lock().unwrap().iter() {
            for l in raw.lock().unwrap().iter() {
                if l.contains("consumer[")
                    || [
                        "became_leader",
                        "stopped_leading",
                        "child_",
                        "follower",
                        "busy",
                    ]
                    .iter()
                    .any(|e| l.contains(e))
                {
                    eprintln!("kafka: [{id}] {l}");
                }
            }
        }
    }
}

/// Whether `pid` holds a flock on one of the `*.lock` files in `dir` (from /proc/locks).
fn holds_cas_lock(pid: i32, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".lock"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.ino())
        .collect();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"
            f.len() >= 6
                && f[1] == "FLOCK"
                && f[4] == pid.to_string()
                && f[5]
                    .rsplit(':')
                    .next()
                    .and_then(|i| i.parse::<u64>().ok())
                    .is_some_and(|i| inodes.contains(&i))
        })
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    Kill9,
    Term,
    Stop,
}

#[test]
fn one_active_consumer_survives_five_leader_kills() {
    for tool in ["java", "mvn", "kcat", "python3"] {
        require(tool);
    }
    let tmp = tempdir();
    let base = path(&tmp);
    let broker = Broker::start(&base.join("kafka"));
    let lease_dir = base.join("lease");
    std::fs::create_dir_all(&lease_dir).unwrap();
    let db = base.join("sink.db");
    let (code, out) = sink(&["init", db.to_str().unwrap()]);
    assert_eq!(code, 0, "sink init: {out}");

    // The producer: kcat -P, one numbered record per line, at a steady rate.
    let mut producer = Command::new("kcat")
        .args(["-P", "-b", &broker.bootstrap, "-t", TOPIC, "-p", "0"])
        .args(["-X", "enable.idempotence=true", "-X", "linger.ms=0"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn kcat -P");
    let mut stdin = producer.stdin.take().unwrap();
    let produced = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..RECORDS {
            let due = start + PERIOD * i as u32;
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            // kcat -P reads its input in 1024-byte blocks: a short line waits for the next
            // kilobyte. One line per block makes every record leave at once.
            writeln!(stdin, "{i:<1023}").unwrap();
            stdin.flush().unwrap();
        }
        drop(stdin);
        start.elapsed()
    });

    let mut ps: Vec<Participant> = (0..3)
        .map(|i| participant(&lease_dir, &format!("p{i}"), &broker.bootstrap, &db))
        .collect();
    let logs: Logs = Default::default();
    for p in &ps {
        logs.lock().unwrap().push((p.id.clone(), p.raw.clone()));
    }
    let _dump = DumpOnPanic(logs.clone());

    let kinds = [Kill::Kill9, Kill::Stop, Kill::Term, Kill::Stop, Kill::Kill9];
    let mut failovers = vec![];
    for (k, kind) in kinds.iter().enumerate() {
        // The current leader's consumer is working: its term is the sink's highest and it has
        // committed a few records in it.
        let st = await_sink(
            &format!("a consumer committing before kill {k}"),
            &db,
            Duration::from_secs(60),
            |s| s["in_max_term"].as_u64().unwrap_or(0) >= 25,
        );
        let term = st["max_term"].as_u64().unwrap();
        let leaders: Vec<usize> = granted_terms(&ps)
            .into_iter()
            .filter(|&(_, t)| t == term)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            leaders.len(),
            1,
            "term {term} in the sink was granted to exactly one participant"
        );
        let victim = leaders[0];
        let at = sink_json("status", &db)["distinct_offsets"]
            .as_u64()
            .unwrap();
        eprintln!(
            "kafka: kill {k}: {kind:?} of {} (term {term}) at {at} records",
            ps[victim].id
        );
        match kind {
            Kill::Kill9 => {
                ps[victim].signal(Signal::SIGKILL);
                ps[victim].wait_exit(Duration::from_secs(10));
            }
            Kill::Term => {
                ps[victim].signal(Signal::SIGTERM);
                ps[victim].wait_exit(Duration::from_secs(20));
            }
            Kill::Stop => loop {
                ps[victim].signal(Signal::SIGSTOP);
                // The file backend holds E.lock around each compare-and-swap (a few ms per
                // renewal, more under load): a crown frozen inside it blocks every other
                // participant's CAS until it resumes, so no one can take over. That is the
                // file backend's limit, not the consumer's: resume and pause again.
                if !holds_cas_lock(ps[victim].pid(), &lease_dir) {
                    break;
                }
                eprintln!(
                    "kafka: {} paused inside its CAS (holds E.lock); resuming, pausing again",
                    ps[victim].id
                );
                ps[victim].signal(Signal::SIGCONT);
                std::thread::sleep(Duration::from_millis(50));
            },
        }
        let t0 = Instant::now();
        // A new term's consumer commits; for SIGSTOP, the old consumer is still running then.
        await_sink(
            &format!("a new term's consumer after kill {k} ({kind:?})"),
            &db,
            Duration::from_secs(60),
            |s| s["max_term"].as_u64().unwrap() > term && s["in_max_term"].as_u64().unwrap() >= 10,
        );
        failovers.push((kind, t0.elapsed()));
        match kind {
            Kill::Stop => {
                // The frozen crown's consumer writes on in the old term: resume crown once the
                // fence has turned one of those writes away.
                await_sink(
                    &format!("the fence refusing term {term} after kill {k}"),
                    &db,
                    Duration::from_secs(30),
                    |s| s["refused_from"][term.to_string()].as_u64().unwrap_or(0) > 0,
                );
                ps[victim].signal(Signal::SIGCONT);
                // It finds its lease lost, stops its consumer and stays a follower.
                let p = &ps[victim];
                p.wait_for(
                    "stopped_leading after SIGCONT",
                    Duration::from_secs(30),
                    |l| l.event() == "stopped_leading" && l.term() == Some(term),
                );
            }
            Kill::Kill9 | Kill::Term => {
                let id = format!("p{}", ps.len());
                let fresh = participant(&lease_dir, &id, &broker.bootstrap, &db);
                logs.lock().unwrap().push((id, fresh.raw.clone()));
                ps.push(fresh);
            }
        }
    }
    let took = produced.join().unwrap();
    eprintln!("kafka: produced {RECORDS} records in {took:?}; failovers {failovers:?}");
    assert!(producer.wait().unwrap().success(), "kcat -P failed");
    await_sink(
        "every record processed",
        &db,
        Duration::from_secs(60),
        |s| s["distinct_offsets"].as_u64() == Some(RECORDS),
    );

    let dump = sink_json("dump", &db);
    let rows: Vec<(u64, u64, String, u64, u64)> = dump["processed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap(),
                r[1].as_u64().unwrap(),
                r[2].as_str().unwrap().to_string(),
                r[3].as_u64().unwrap(),
                r[4].as_u64().unwrap(),
            )
        })
        .collect();

    // Every record at least once, each at its own offset (a fresh topic, one producer).
    let mut by_offset: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (_, off, value, term, _) in &rows {
        assert_eq!(value.trim_end(), off.to_string(), "record at offset {off}");
        by_offset.entry(*off).or_default().push(*term);
    }
    let missing: Vec<u64> = (0..RECORDS)
        .filter(|o| !by_offset.contains_key(o))
        .collect();
    assert!(missing.is_empty(), "records never processed: {missing:?}");

    // The fence: in commit order, terms never go down, and commit instants never go back.
    for w in rows.windows(2) {
        assert!(
            w[1].3 >= w[0].3,
            "the sink accepted term {} after term {} (rows {:?} then {:?})",
            w[1].3,
            w[0].3,
            w[0],
            w[1]
        );
        assert!(w[1].4 >= w[0].4, "commit instants out of order: {w:?}");
    }
    // Per term: the span of its commits. No two spans overlap: never two terms committing.
    let mut spans: Vec<(u64, u64, u64, u64, u64)> = vec![]; // term, first/last at, first/last offset
    for (_, off, _, term, at) in &rows {
        match spans.last_mut() {
            Some(s) if s.0 == *term => {
                s.2 = *at;
                s.4 = s.4.max(*off);
            }
            _ => spans.push((*term, *at, *at, *off, *off)),
        }
    }
    for w in spans.windows(2) {
        assert!(
            w[1].1 > w[0].2,
            "terms {} and {} both committed at once: {w:?}",
            w[0].0,
            w[1].0
        );
    }
    let sink_terms: Vec<u64> = spans.iter().map(|s| s.0).collect();
    assert!(
        sink_terms.len() > kinds.len(),
        "one term per leader: {sink_terms:?}"
    );
    // Every term in the sink is one crown granted.
    let granted: HashSet<u64> = granted_terms(&ps).into_iter().map(|(_, t)| t).collect();
    for t in &sink_terms {
        assert!(
            granted.contains(t),
            "term {t} in the sink was never granted by crown ({granted:?})"
        );
    }

    // Duplicates: only at a failover, in two consecutive terms of the sink, on offsets the
    // old term processed after the new term began.
    let mut duplicates = 0;
    for (off, terms) in &by_offset {
        if terms.len() < 2 {
            continue;
        }
        duplicates += terms.len() - 1;
        let distinct: HashSet<&u64> = terms.iter().collect();
        assert_eq!(
            distinct.len(),
            terms.len(),
            "offset {off} processed twice in one term: {terms:?}"
        );
        for pair in terms.windows(2) {
            let (old, new) = (pair[0], pair[1]);
            let i = sink_terms.iter().position(|t| *t == old).unwrap();
            assert_eq!(
                sink_terms.get(i + 1),
                Some(&new),
                "offset {off}: duplicate in terms {old} and {new}, not a failover (terms {sink_terms:?})"
            );
            let (o, n) = (spans[i], spans[i + 1]);
            assert!(
                *off >= n.3 && *off <= o.4,
                "offset {off}: duplicate outside the failover of {old}→{new} ({o:?}, {n:?})"
            );
        }
    }

    // Refusals (awaited above for each paused leader) were of lower terms only.
    let refused = dump["refused"].as_array().unwrap();
    for r in refused {
        assert!(r[2].as_u64() < r[3].as_u64(), "refusal {r}");
    }
    // And the fence, asked directly: a write from a low term is refused and changes nothing.
    let before = sink_json("status", &db);
    let (code, out) = sink(&[
        "write",
        db.to_str().unwrap(),
        "1",
        TOPIC,
        "0",
        "99999",
        "late",
    ]);
    assert_eq!(
        code, 3,
        "a term-1 write after term {}: {out}",
        before["max_term"]
    );
    assert_eq!(
        sink_json("status", &db)["distinct_offsets"],
        before["distinct_offsets"]
    );

    for p in &ps {
        for l in p.raw.lock().unwrap().iter() {
            if l.contains("consumer[") {
                eprintln!("kafka: [{}] {l}", p.id);
            }
        }
    }
    eprintln!(
        "kafka: {} rows, {duplicates} duplicates, {} refused writes, terms {sink_terms:?}",
        rows.len(),
        refused.len()
    );
    drop(ps);
}
