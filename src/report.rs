//! `crown status` and `crown history`: one-shot reads, as a table or as stable JSON.
//!
//! Status JSON:
//! `{"election", "backend", "leader": {"id","term","pid","host","since"} | null,
//!   "members": [{"id","pid","host","role","term","heartbeat_age_ms"}]}`.
//! History JSON: an array, oldest first, of
//! `{"term","holder","pid","host","acquired_at","previous_holder","previous_end","gap_ms","ended"}`
//! where `ended` is how the grant ended (`released`, `expired`, `holder_died`, `corrupt`) or
//! `null` while it lasts.

use crate::backend::{Backend, BackendError, LeaseView};
use crate::election::{EndKind, Grant, Member, Role, Term};
use jiff::Timestamp;
use serde::Serialize;

/// The leader in a status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusLeader {
    /// Holder id.
    pub id: String,
    /// Term.
    pub term: Term,
    /// Holder pid.
    pub pid: Option<u32>,
    /// Holder host.
    pub host: Option<String>,
    /// Grant time.
    pub since: Option<Timestamp>,
}

/// A member in a status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusMember {
    /// Id.
    pub id: String,
    /// Pid.
    pub pid: u32,
    /// Host.
    pub host: String,
    /// Role at its last heartbeat.
    pub role: Role,
    /// Term at its last heartbeat.
    pub term: Term,
    /// Age of its last heartbeat by our wall clock (informational).
    pub heartbeat_age_ms: u64,
}

/// `crown status` output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Election name.
    pub election: String,
    /// Backend kind.
    pub backend: String,
    /// Current leader, if the lease is held.
    pub leader: Option<StatusLeader>,
    /// Members with a heartbeat.
    pub members: Vec<StatusMember>,
}

fn age_ms(now: Timestamp, t: Timestamp) -> u64 {
    now.duration_since(t).as_millis().max(0) as u64
}

/// Reads a status report.
pub async fn status(backend: &dyn Backend, election: &str) -> Result<StatusReport, BackendError> {
    let lease = backend.lease().await?;
    let members = backend.members().await?;
    let now = Timestamp::now();
    let leader = match lease {
        LeaseView::Record(r) => r.leader().map(|l| StatusLeader {
            id: l.id,
            term: l.term,
            pid: l.pid,
            host: l.host,
            since: l.since,
        }),
        LeaseView::None => None,
    };
    Ok(StatusReport {
        election: election.to_string(),
        backend: backend.kind().to_string(),
        leader,
        members: members
            .into_iter()
            .map(|m: Member| StatusMember {
                heartbeat_age_ms: age_ms(now, m.last_heartbeat),
                id: m.id,
                pid: m.pid,
                host: m.host,
                role: m.role,
                term: m.term,
            })
            .collect(),
    })
}

/// Renders a status report as text.
pub fn status_text(r: &StatusReport) -> String {
    let mut s = format!("election  {} ({})\n", r.election, r.backend);
    match &r.leader {
        Some(l) => {
            s += &format!(
                "leader    {} (term {}, pid {}, host {}, since {})\n",
                l.id,
                l.term,
                l.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                l.host.as_deref().unwrap_or("-"),
                l.since.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
            )
        }
        None => s += "leader    none\n",
    }
    s += &format!("members   {}\n", r.members.len());
    if !r.members.is_empty() {
        s += &format!(
            "  {:<24} {:<10} {:>6} {:>8} {:<16} {:>10}\n",
            "ID", "ROLE", "TERM", "PID", "HOST", "HEARTBEAT"
        );
        for m in &r.members {
            s += &format!(
                "  {:<24} {:<10} {:>6} {:>8} {:<16} {:>8}ms\n",
                m.id,
                m.role.to_string(),
                m.term.0,
                m.pid,
                m.host,
                m.heartbeat_age_ms
            );
        }
    }
    s
}

/// One row of the history report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    /// The grant.
    #[serde(flatten)]
    pub grant: Grant,
    /// How it ended; `None` while it lasts (or if unknown).
    pub ended: Option<EndKind>,
}

/// Reads the history with how each grant ended.
pub async fn history(backend: &dyn Backend) -> Result<Vec<HistoryRow>, BackendError> {
    let grants = backend.history().await?;
    // The lease tells how the last grant ended, if it did (released); a corrupt record is
    // reported but does not hide the history.
    let lease = backend.lease().await.ok();
    Ok(history_rows(grants, lease.as_ref()))
}

/// Pairs each grant with how it ended (from its successor, or the lease for the last one).
pub fn history_rows(grants: Vec<Grant>, lease: Option<&LeaseView>) -> Vec<HistoryRow> {
    let ends: Vec<Option<EndKind>> = grants
        .iter()
        .skip(1)
        .map(|g| g.previous_end)
        .chain(std::iter::once(match lease {
            Some(LeaseView::Record(r))
                if !r.is_held() && Some(r.term) == grants.last().map(|g| g.term) =>
            {
                Some(EndKind::Released)
            }
            _ => None,
        }))
        .collect();
    grants
        .into_iter()
        .zip(ends)
        .map(|(grant, ended)| HistoryRow { grant, ended })
        .collect()
}

/// Renders the history as text, newest last.
pub fn history_text(rows: &[HistoryRow]) -> String {
    if rows.is_empty() {
        return "no grants yet\n".into();
    }
    let mut s = format!(
        "{:>6}  {:<24} {:<32} {:>10}  {}\n",
        "TERM", "HOLDER", "ACQUIRED", "GAP", "ENDED"
    );
    for r in rows {
        let g = &r.grant;
        s += &format!(
            "{:>6}  {:<24} {:<32} {:>10}  {}\n",
            g.term.0,
            g.holder,
            g.acquired_at.to_string(),
            g.gap_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "-".into()),
            r.ended
                .map(|e| e.to_string())
                .unwrap_or_else(|| "(current)".into()),
        );
    }
    s
}
