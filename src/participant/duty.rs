//! `crown run --once`: the duty's lines (done by anyone, recorded, not recorded) and the
//! bounded write of its success record. When each happens is decided in
//! `Run`'s steps (run.rs); what a duty is, in [`crate::once`].

use crate::backend::{Backend, BackendError};
use crate::election::Term;
use crate::once::DutyRecord;
use std::time::Duration;

/// `--once`: the duty is done (by anyone): one INFO line; the caller exits 0.
pub(super) fn log_duty_done(id: &str, rec: &DutyRecord) {
    tracing::info!(
        event = "duty_done",
        id,
        term = rec.term.0,
        holder = rec.holder.as_str(),
        "[{id}] duty {}: exiting 0 without running CMD",
        rec.describe()
    );
}

/// Writes the success record `rec`, bounded by `within`: a write whose answer is lost may or
/// may not have landed, and either way resigning is safe (done, or run again: at least once).
pub(super) async fn record(
    backend: &dyn Backend,
    rec: &DutyRecord,
    within: Duration,
) -> Result<bool, BackendError> {
    tokio::time::timeout(within, backend.record_duty(rec))
        .await
        .unwrap_or_else(|_| {
            Err(BackendError::Unavailable(format!(
                "no answer within {}",
                humantime::format_duration(within)
            )))
        })
}

/// CMD exited 0 in `term` and the record says so: the caller releases and exits 0.
pub(super) fn log_recorded(id: &str, term: Term) {
    tracing::info!(
        event = "duty_recorded",
        id,
        term = term.0,
        "[{id}] ✅ duty done: CMD exited 0 in term {}; recorded, releasing and exiting 0",
        term
    );
}

/// CMD exited 0 once `term` was over: not recorded (the current leader runs it).
pub(super) fn log_not_recorded(id: &str, term: Term) {
    tracing::warn!(
        event = "duty_not_recorded",
        id,
        term = term.0,
        "[{id}] CMD exited 0 after term {} was over: not recorded (the current leader runs it)",
        term
    );
}

/// CMD exited 0 in `term` but the record could not be written (`e`): the caller resigns.
pub(super) fn log_record_failed(id: &str, term: Term, e: &BackendError) {
    tracing::warn!(
        event = "duty_not_recorded",
        id,
        term = term.0,
        "[{id}] CMD exited 0 in term {} but the duty could not be recorded ({e}): resigning, so that it runs again",
        term
    );
}
