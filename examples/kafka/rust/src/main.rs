//! One active Kafka consumer, the library way: this process campaigns with crown's [`Elector`]
//! (file backend) and, for each grant, polls one partition only while the grant's
//! [`Leadership`](crown::Leadership) token is live, writing every record tagged with the term
//! into the same fenced SQLite sink as `examples/kafka/sink.py` (same schema, so
//! `sink.py dump` reads it, and Python and Rust consumers can take turns).
//!
//!     crown-kafka-consumer ID      # env: LEASE_DIR, KAFKA_BOOTSTRAP, KAFKA_TOPIC, SINK_DB
//!
//! The offset lives in the sink, written in the record's transaction; the partition is
//! assigned by hand (rskafka has no consumer groups, and crown makes them unnecessary).

use anyhow::{Context, Result, bail};
use crown::backend::file::FileBackend;
use crown::{Config, Elector, Identity};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const SCHEMA: &str = include_str!("schema.sql");

struct Sink {
    db: Connection,
    /// `DB.lock`: writers queue on this flock before SQLite's write lock (a fair hand-off;
    /// SQLite's busy handler sleeps and retries), as sink.py does.
    lock: std::fs::File,
}

/// A write refused by the fence: `term` is lower than `max_term`, already seen.
#[derive(Debug)]
struct Fenced {
    term: u64,
    max_term: u64,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Sink {
    fn open(path: &str) -> Result<Sink> {
        let db = Connection::open(path).with_context(|| format!("open {path}"))?;
        db.busy_timeout(Duration::from_secs(30))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        let have: Option<i64> = db
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE name = 'refused'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if have.is_none() {
            db.execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}COMMIT;"))?;
        }
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(format!("{path}.lock"))?;
        Ok(Sink { db, lock })
    }

    fn next_offset(&self, topic: &str, part: i32) -> Result<i64> {
        Ok(self
            .db
            .query_row(
                "SELECT next_offset FROM offsets WHERE topic = ?1 AND part = ?2",
                params![topic, part],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// One record in `term`, with the offset, in one transaction; refused below the fence.
    fn write(
        &mut self,
        term: u64,
        topic: &str,
        part: i32,
        offset: i64,
        value: &str,
    ) -> Result<std::result::Result<(), Fenced>> {
        self.lock.lock()?;
        let r = self.write_locked(term, topic, part, offset, value);
        self.lock.unlock()?;
        r
    }

    fn write_locked(
        &mut self,
        term: u64,
        topic: &str,
        part: i32,
        offset: i64,
        value: &str,
    ) -> Result<std::result::Result<(), Fenced>> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let max_term: i64 =
            tx.query_row("SELECT max_term FROM fence WHERE id = 1", [], |r| r.get(0))?;
        let max_term = max_term as u64;
        if term < max_term {
            drop(tx); // rolls back
            self.db.execute(
                "INSERT INTO refused (off, term, max_term, at_ns) VALUES (?1, ?2, ?3, ?4)",
                params![offset, term as i64, max_term as i64, now_ns()],
            )?;
            return Ok(Err(Fenced { term, max_term }));
        }
        if term > max_term {
            tx.execute(
                "UPDATE fence SET max_term = ?1 WHERE id = 1",
                params![term as i64],
            )?;
        }
        tx.execute(
            "INSERT INTO processed (topic, part, off, value, term, at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![topic, part, offset, value, term as i64, now_ns()],
        )?;
        tx.execute(
            "INSERT INTO offsets (topic, part, next_offset) VALUES (?1, ?2, ?3) \
             ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset",
            params![topic, part, offset + 1],
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} must be set"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let Some(id) = std::env::args().nth(1) else {
        bail!(
            "usage: crown-kafka-consumer ID  (env: LEASE_DIR, KAFKA_BOOTSTRAP, KAFKA_TOPIC, SINK_DB)"
        );
    };
    let dir = env("LEASE_DIR")?;
    let bootstrap = env("KAFKA_BOOTSTRAP")?;
    let topic = std::env::var("KAFKA_TOPIC").unwrap_or_else(|_| "orders".into());
    let db_path = env("SINK_DB")?;
    let part = 0;

    let me = Identity {
        id: id.clone(),
        pid: std::process::id(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into()),
    };
    let backend = FileBackend::open(std::path::Path::new(&dir), "kafka", me.clone())?;
    backend.watch().ok();
    let cfg = Config::new(
        Duration::from_secs(2),
        Duration::from_millis(1500),
        Duration::from_millis(400),
    )?;
    let shutdown = CancellationToken::new();
    let (handle, _events) = Elector::new(Arc::new(backend), cfg, me)?.spawn(shutdown.clone());
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            shutdown.cancel();
        });
    }

    let client = ClientBuilder::new(vec![bootstrap]).build().await?;
    let mut sink = Sink::open(&db_path)?;
    eprintln!("[{id}] campaigning");
    // One grant at a time; `None` once the elector has stopped (SIGTERM: it releases the lease).
    while let Some(lead) = handle.leadership().await {
        let term = lead.term().0;
        let token = lead.token().clone();
        let mut offset = sink.next_offset(&topic, part)?;
        eprintln!("[{id}] leading in term {term}: reading {topic}/{part} from offset {offset}");
        let pc = tokio::select! {
            _ = token.cancelled() => continue,
            pc = client.partition_client(topic.clone(), part, UnknownTopicHandling::Retry) => pc?,
        };
        'lead: loop {
            let fetched = tokio::select! {
                _ = token.cancelled() => break 'lead,
                r = pc.fetch_records(offset, 1..1_000_000, 100) => r,
            };
            let records = match fetched {
                Ok((records, _high_watermark)) => records,
                Err(e) => {
                    eprintln!("[{id}] fetch at {offset}: {e}; retrying");
                    tokio::select! {
                        _ = token.cancelled() => break 'lead,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            };
            for r in records {
                // The token is checked before every write: none starts after the grant ended.
                if token.is_cancelled() {
                    break 'lead;
                }
                let value = String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default())
                    .into_owned();
                match sink.write(term, &topic, part, r.offset, &value)? {
                    Ok(()) => offset = r.offset + 1,
                    Err(f) => {
                        eprintln!(
                            "[{id}] fenced: term {} is lower than term {} already seen",
                            f.term, f.max_term
                        );
                        token.cancelled().await;
                        break 'lead;
                    }
                }
            }
        }
        eprintln!("[{id}] term {term} over at offset {offset}");
    }
    Ok(())
}
