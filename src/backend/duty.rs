//! The success record of a `crown run --once` duty (see [`crate::once`]): its format, strict
//! parsing of what a backend returns, and what a reset removed. Shared by the file, etcd and
//! kube backends, which store it beside their lease.

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
