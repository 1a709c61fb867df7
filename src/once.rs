//! `crown run --once`: a duty with a definite end. CMD runs (only while its participant leads,
//! with `CROWN_TERM`) until one run exits 0; the leader then records that success in the
//! backend — in one compare-and-swap that checks it still holds the lease in the term that ran
//! CMD — and only then releases the lease. Every participant that finds the record (before
//! campaigning, on every grant, and every retry period while following) exits 0 without
//! running CMD. A leader that dies mid-run leaves no record: the next leader runs CMD again in
//! a higher term (at least once, never "exactly once").
//!
//! The record is data another process could have written: it is read with a size bound and
//! parsed strictly ([`parse`]); anything else is [`BackendError::Corrupt`](crate::backend::BackendError::Corrupt) (exit 5), never
//! "done". Where it lives:
//! - file: `D/E.duty.json`, written under the CAS lock `D/E.lock` after re-reading the lease;
//! - etcd: the key `<prefix><election>:duty`, put in a transaction comparing our leader key's
//!   create revision with the term;
//! - kube: the annotation `crown.io/duty` on the Lease, written with a `replace` carrying the
//!   resourceVersion at which the Lease was read as ours in that term.

use crate::election::Term;
use jiff::Timestamp;

pub use crate::backend::duty::{
    DutyRecord, DutyState, MAX_DUTY, Removed, command_hash, corrupt, parse, to_bytes,
};

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
