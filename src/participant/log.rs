//! The demo-friendly lines `crown run` logs for each elector event (with structured fields
//! for JSON logs).

use crate::election::{Event, StopReason};

/// Logs one event as a demo-friendly line (with structured fields for JSON logs).
pub fn log_event(id: &str, ev: &Event) {
    match ev {
        Event::StartedLeading { term } => {
            tracing::info!(
                event = "became_leader",
                id,
                term = term.0,
                "🎉 [{id}] BECAME LEADER (term {term})"
            )
        }
        Event::Renewed { term, .. } => {
            // One every retry period: DEBUG (`RUST_LOG=crown=debug` shows them).
            tracing::debug!(
                event = "leader_heartbeat",
                id,
                term = term.0,
                "👑 [{id}] LEADER heartbeat (term {term})"
            )
        }
        // Asked for (resign, shutdown): INFO; involuntary: WARN.
        Event::StoppedLeading {
            term,
            reason: reason @ (StopReason::Released | StopReason::Shutdown),
        } => tracing::info!(
            event = "stopped_leading", id, term = term.0, reason = %reason,
            "[{id}] lost leadership: {reason} (term {term})"
        ),
        Event::StoppedLeading { term, reason } => tracing::warn!(
            event = "stopped_leading", id, term = term.0, reason = %reason,
            "[{id}] lost leadership: {reason} (term {term})"
        ),
        Event::NewLeader { id: leader, term } => tracing::info!(
            event = "follower",
            id,
            leader = leader.as_str(),
            term = term.0,
            "[{id}] FOLLOWER (leader {leader}, term {term})"
        ),
        Event::NoLeader => {
            tracing::info!(event = "no_leader", id, "[{id}] CANDIDATE (no leader)")
        }
        Event::Fatal { message } => {
            tracing::error!(event = "fatal", id, "[{id}] giving up: {message}")
        }
        Event::Failed { message } => {
            tracing::error!(
                event = "elector_failed",
                id,
                "[{id}] the elector failed: {message}"
            )
        }
        Event::Lagged { missed } => tracing::warn!(
            event = "events_lagged",
            id,
            missed,
            "[{id}] {missed} elector events were dropped (this process read them too slowly)"
        ),
    }
}
