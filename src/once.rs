//! `crown run --once`: a duty with a definite end. CMD runs (only while its participant leads,
//! with `CROWN_TERM`) until one run exits 0; the leader then records that success in the
//! backend — in one compare-and-swap that checks it still holds the lease in the term that ran
//! CMD — and only then releases the lease. Every participant that finds the record (before
//! campaigning, on every grant, and every retry period while following) exits 0 without
//! running CMD. A leader that dies mid-run leaves no record: the next leader runs CMD again in
//! a higher term (at least once, never "exactly once").
//!
//! The record is data another process could have written: it is read with a size bound and
//! parsed strictly ([`parse`]); anything else is [`BackendError::Corrupt`] (exit 5), never
//! "done". Where it lives:
//! - file: `D/E.duty.json`, written under the CAS lock `D/E.lock` after re-reading the lease;
//! - etcd: the key `<prefix><election>:duty`, put in a transaction comparing our leader key's
//!   create revision with the term;
//! - kube: the annotation `crown.io/duty` on the Lease, written with a `replace` carrying the
//!   resourceVersion at which the Lease was read as ours in that term.

use crate::backend::{BackendError, validate_election_name};
use crate::election::Term;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A duty record larger than this is corrupt (a real one is ~250 bytes).
pub const MAX_DUTY: usize = 4096;

/// What a duty record says. Only success is ever recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DutyState {
    /// A run exited 0 in `term`.
    Done,
}

/// The success record of a `--once` duty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DutyRecord {
    /// Always `done`.
    pub state: DutyState,
    /// The term whose leader ran CMD to success.
    pub term: Term,
    /// That leader's id.
    pub holder: String,
    /// Its pid.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// When CMD exited (the leader's wall clock, informational).
    pub finished_at: Timestamp,
    /// CMD's exit code (always 0).
    pub exit_code: i32,
    /// `fnv1a64:<16 hex digits>` of CMD's argv, so that another command is not skipped as done.
    pub command_hash: String,
}

impl DutyRecord {
    /// One line for logs and `crown status`.
    pub fn describe(&self) -> String {
        format!(
            "done in term {} by {} at {} (exit {})",
            self.term, self.holder, self.finished_at, self.exit_code
        )
    }
}

/// FNV-1a (64 bit) of the argv (each argument followed by a NUL byte): stable across Rust
/// versions and platforms.
pub fn command_hash(argv: &[String]) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for a in argv {
        for b in a.bytes().chain(std::iter::once(0)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("fnv1a64:{h:016x}")
}

/// Parses a stored duty record strictly: at most [`MAX_DUTY`] bytes of JSON with exactly the
/// fields crown writes, `state` done, exit code 0, a term ≥ 1, a valid participant id, a host
/// without control characters, and a well-formed command hash. The error says why, in one
/// line.
pub fn parse(bytes: &[u8]) -> Result<DutyRecord, String> {
    if bytes.len() > MAX_DUTY {
        return Err(format!(
            "{} bytes, over the {MAX_DUTY}-byte limit of a duty record",
            bytes.len()
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("empty".into());
    }
    let r: DutyRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if r.term.0 == 0 {
        return Err("term 0 (terms start at 1)".into());
    }
    if r.exit_code != 0 {
        return Err(format!("exit code {} in a success record", r.exit_code));
    }
    validate_election_name(&r.holder).map_err(|_| "holder is not a valid participant id")?;
    if r.host.len() > 253 || r.host.chars().any(char::is_control) {
        return Err("host is not a host name".into());
    }
    let hash_ok = r.command_hash.strip_prefix("fnv1a64:").is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !hash_ok {
        return Err("command_hash is not fnv1a64:<16 hex digits>".into());
    }
    Ok(r)
}

/// The record as stored (one line of JSON).
pub fn to_bytes(r: &DutyRecord) -> Vec<u8> {
    let mut v = serde_json::to_vec(r).expect("duty record serializes");
    v.push(b'\n');
    v
}

/// A corrupt-record error naming where it lives.
pub fn corrupt(place: &str, why: &str) -> BackendError {
    BackendError::Corrupt(format!(
        "unreadable duty record {place}: {why} (not trusted as done; `crown once reset` clears it)"
    ))
}

/// What `crown once reset` removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// There was no record.
    Nothing,
    /// A success record.
    Record(DutyRecord),
    /// A record that did not parse (why).
    Unreadable(String),
}

impl Removed {
    /// From the raw bytes that were removed.
    pub fn from_bytes(bytes: &[u8]) -> Removed {
        match parse(bytes) {
            Ok(r) => Removed::Record(r),
            Err(e) => Removed::Unreadable(e),
        }
    }
}

/// The duty of one `crown run --once` participant: its command's hash, and the checks and
/// the record it makes.
#[derive(Clone, Debug)]
pub struct Duty {
    hash: String,
}

impl Duty {
    /// The duty of running `command`.
    pub fn new(command: &[String]) -> Duty {
        Duty {
            hash: command_hash(command),
        }
    }

    /// Whether the duty is done: `Ok(Some)` a success record for this command; `Ok(None)` not
    /// done. A record for another command is a configuration error (exit 3), an unreadable
    /// one exit 5.
    pub async fn check(
        &self,
        backend: &dyn crate::backend::Backend,
        election: &str,
    ) -> Result<Option<DutyRecord>, crate::exit::Failure> {
        match backend.duty().await? {
            Some(r) if r.command_hash != self.hash => Err(crate::exit::Failure::new(
                crate::exit::CONFIG,
                format!(
                    "election {election}'s duty was done with another command ({}, {}; ours is {}): run `crown once reset -e {election}` first, or use another election",
                    r.command_hash,
                    r.describe(),
                    self.hash
                ),
            )),
            r => Ok(r),
        }
    }

    /// [`Duty::check`] bounded by `limit` (a read that does not answer in time is
    /// "backend unavailable", exit code 4), so a stuck backend never stalls `crown run`'s
    /// event loop.
    pub async fn check_within(
        &self,
        backend: &dyn crate::backend::Backend,
        election: &str,
        limit: std::time::Duration,
    ) -> Result<Option<DutyRecord>, crate::exit::Failure> {
        tokio::time::timeout(limit, self.check(backend, election))
            .await
            .unwrap_or_else(|_| {
                Err(crate::exit::Failure::new(
                    crate::exit::BACKEND_UNAVAILABLE,
                    format!(
                        "reading the duty record did not answer within {}",
                        humantime::format_duration(limit)
                    ),
                ))
            })
    }

    /// The success record of a run by `me` in `term`.
    pub fn record(&self, me: &crate::election::Identity, term: Term) -> DutyRecord {
        DutyRecord {
            state: DutyState::Done,
            term,
            holder: me.id.clone(),
            pid: me.pid,
            host: me.host.clone(),
            finished_at: Timestamp::now(),
            exit_code: 0,
            command_hash: self.hash.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> DutyRecord {
        DutyRecord {
            state: DutyState::Done,
            term: Term(3),
            holder: "p2".into(),
            pid: 42,
            host: "vm".into(),
            finished_at: "2026-11-29T21:00:00Z".parse().unwrap(),
            exit_code: 0,
            command_hash: command_hash(&["./migrate.sh".into()]),
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(parse(&to_bytes(&rec())).unwrap(), rec());
    }

    #[test]
    fn hash_separates_arguments() {
        assert_ne!(
            command_hash(&["a b".into()]),
            command_hash(&["a".into(), "b".into()])
        );
        assert_eq!(command_hash(&[]), "fnv1a64:cbf29ce484222325");
    }

    #[test]
    fn hostile_records_are_refused() {
        let ok = String::from_utf8(to_bytes(&rec())).unwrap();
        let bad = [
            String::new(),
            "   \n".into(),
            "null".into(),
            "[]".into(),
            "{".into(),
            ok.replace("\"done\"", "\"running\""),
            ok.replace("\"term\":3", "\"term\":0"),
            ok.replace("\"term\":3", "\"term\":-1"),
            ok.replace("\"exit_code\":0", "\"exit_code\":1"),
            ok.replace("\"holder\":\"p2\"", "\"holder\":\"../x\""),
            ok.replace("\"host\":\"vm\"", "\"host\":\"\\u001b[2J\""),
            ok.replace("fnv1a64:", "md5:"),
            ok.replace("}", ",\"extra\":1}"),
            format!("{}{}", ok, " ".repeat(MAX_DUTY)),
        ];
        for b in bad {
            assert!(parse(b.as_bytes()).is_err(), "accepted {b:?}");
        }
    }
}
