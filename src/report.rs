//! `crown status` and `crown history`: one-shot reads, as a table or as stable JSON.
//!
//! Status JSON:
//! `{"election", "backend", "leader": {"id","term","pid","host","since"} | null,
//!   "lease": {"source": "record"|"election"|"resigned", ...} | null,
//!   "members": [{"id","pid","host","role","term","heartbeat_age_ms"}], "duty"}`.
//! `lease` says what the backend stores and nothing more: a record backend's
//! `{"source":"record","renewed_at","duration_ms","revision","released_at"?,"released_by"?}`,
//! etcd's `{"source":"election","key","lease_id","granted_ttl_s","ttl_remaining_s","mod_revision"}`
//! or `{"source":"resigned","term","released_at","released_by"}`; unknown values are `null`.
//! History JSON: an array, oldest first, of
//! `{"term","holder","pid","host","acquired_at","previous_holder","previous_end","gap_ms","ended"}`
//! where `ended` is how the grant ended (`released`, `expired`, `holder_died`, `corrupt`) or
//! `null` while it lasts.

use crate::backend::{Backend, BackendError, LeaseView};
use crate::election::{EndKind, Grant, Member, Role, Term};
use jiff::Timestamp;
use serde::Serialize;

pub use crate::text::escape;

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

/// The lease in a status report: what the backend really stores, by kind of backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum StatusLease {
    /// A stored lease record (file, Kubernetes Lease).
    Record {
        /// Last renewal (holder's wall clock); `null` when the record has none.
        renewed_at: Option<Timestamp>,
        /// The holder's lease duration; `null` when the record has none.
        duration_ms: Option<u64>,
        /// The record's revision (bumped on every write by crown; 0 for a foreign writer).
        revision: u64,
        /// When it was released, if it was.
        #[serde(skip_serializing_if = "Option::is_none")]
        released_at: Option<Timestamp>,
        /// Who released it, if it was.
        #[serde(skip_serializing_if = "Option::is_none")]
        released_by: Option<String>,
    },
    /// An election's leader key and its session lease (etcd).
    Election {
        /// The leader key (raw; the text output escapes it).
        key: String,
        /// The session lease id, in hex as etcdctl prints it.
        lease_id: String,
        /// The session lease's granted TTL, in seconds; `null` if unreadable.
        granted_ttl_s: Option<u64>,
        /// Seconds the session lease has left, as etcd says; `null` if unreadable or gone.
        ttl_remaining_s: Option<u64>,
        /// The leader key's last modification revision.
        mod_revision: u64,
    },
    /// No leader key; the last leader resigned (etcd's resign record).
    Resigned {
        /// The term that ended.
        term: Term,
        /// When (the resigning leader's wall clock).
        released_at: Timestamp,
        /// Who resigned (raw; the text output escapes it).
        released_by: String,
    },
}

impl StatusLease {
    /// The lease part of a status report.
    pub fn from_view(view: &LeaseView) -> Option<StatusLease> {
        let known = |t: Timestamp| (t != Timestamp::UNIX_EPOCH).then_some(t);
        Some(match view {
            LeaseView::None => return None,
            LeaseView::Record(r) => StatusLease::Record {
                renewed_at: known(r.renewed_at),
                duration_ms: (r.lease_duration_ms > 0).then_some(r.lease_duration_ms),
                revision: r.revision,
                released_at: r.released_at,
                released_by: r.released_by.clone(),
            },
            LeaseView::Election(e) => StatusLease::Election {
                key: e.key.clone(),
                // 16 digits, as `etcdctl lease grant` and `lease list` print it.
                lease_id: format!("{:016x}", e.lease_id),
                granted_ttl_s: e.granted_ttl_s,
                ttl_remaining_s: e.ttl_remaining_s,
                mod_revision: e.mod_revision,
            },
            LeaseView::Resigned(r) => StatusLease::Resigned {
                term: r.term,
                released_at: r.at,
                released_by: r.by.clone(),
            },
        })
    }

    /// One line for `crown status` text output.
    fn line(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        match self {
            StatusLease::Record {
                released_at: Some(at),
                released_by,
                ..
            } => format!(
                "released at {at} by {}",
                escape(released_by.as_deref().unwrap_or("-"))
            ),
            StatusLease::Record {
                renewed_at,
                duration_ms,
                revision,
                ..
            } => format!(
                "record renewed {}, duration {}, revision {revision}",
                opt(renewed_at.map(|t| t.to_string())),
                opt(duration_ms.map(short_ms)),
            ),
            StatusLease::Election {
                key,
                lease_id,
                granted_ttl_s,
                ttl_remaining_s,
                ..
            } => format!(
                "key {}, session lease {lease_id}, ttl {}s of {}s",
                escape(key),
                opt(ttl_remaining_s.map(|s| s.to_string())),
                opt(granted_ttl_s.map(|s| s.to_string())),
            ),
            StatusLease::Resigned {
                term,
                released_at,
                released_by,
            } => format!(
                "resigned at {released_at} by {} (term {term})",
                escape(released_by)
            ),
        }
    }
}

/// How long a one-shot read (`crown status`, `crown history`) may take once the backend is
/// open: `--wait-for-backend`, at least 1 s.
pub fn read_limit(wait_for_backend: std::time::Duration) -> std::time::Duration {
    wait_for_backend.max(std::time::Duration::from_secs(1))
}

/// Runs a one-shot command's backend work within `limit`: a read that never answers (a FIFO
/// in the election directory, a hung mount, a server that accepts and never replies) ends
/// with one line and exit code 4 instead of hanging.
pub async fn bounded<T>(
    limit: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, crate::exit::Failure>>,
) -> Result<T, crate::exit::Failure> {
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(crate::exit::Failure::new(
            crate::exit::BACKEND_UNAVAILABLE,
            format!(
                "no answer from the backend within {}: a read is stuck (a FIFO or device in the election directory, a hung mount, an unanswering server?)",
                humantime::format_duration(limit)
            ),
        )),
    }
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
    /// The lease as the backend stores it; `None` when there is none.
    pub lease: Option<StatusLease>,
    /// Members with a heartbeat.
    pub members: Vec<StatusMember>,
    /// The duty of `crown run --once`: `null` when no success is recorded.
    pub duty: Option<StatusDuty>,
}

/// The state of a `crown run --once` duty in a status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusDuty {
    /// `done`, or `unreadable` (a record that does not parse: never trusted as done).
    pub state: String,
    /// The term whose leader ran it to success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    /// That leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// When its command exited (its wall clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Its exit code (0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why an unreadable record is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The duty's state; a record that cannot be trusted is reported, not an error.
async fn duty(backend: &dyn Backend) -> Result<Option<StatusDuty>, BackendError> {
    Ok(match backend.duty().await {
        Ok(None) => None,
        Ok(Some(r)) => Some(StatusDuty {
            state: "done".into(),
            term: Some(r.term),
            holder: Some(r.holder),
            finished_at: Some(r.finished_at),
            exit_code: Some(r.exit_code),
            error: None,
        }),
        Err(BackendError::Corrupt(why)) => Some(StatusDuty {
            state: "unreadable".into(),
            term: None,
            holder: None,
            finished_at: None,
            exit_code: None,
            error: Some(why),
        }),
        Err(e) => return Err(e),
    })
}

fn age_ms(now: Timestamp, t: Timestamp) -> u64 {
    now.duration_since(t).as_millis().max(0) as u64
}

/// Reads a status report.
pub async fn status(backend: &dyn Backend, election: &str) -> Result<StatusReport, BackendError> {
    let lease = backend.lease().await?;
    let members = backend.members().await?;
    let duty = duty(backend).await?;
    let now = Timestamp::now();
    let leader = lease.leader().map(|l| StatusLeader {
        id: l.id,
        term: l.term,
        pid: l.pid,
        host: l.host,
        since: l.since,
    });
    let lease = StatusLease::from_view(&lease);
    Ok(StatusReport {
        election: election.to_string(),
        backend: backend.kind().to_string(),
        leader,
        lease,
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
        duty,
    })
}

/// A table without borders whose columns fit their widest cell (no wrapping at the
/// terminal's width), right-aligned where `right[i]`, each line indented by `indent`.
fn table(header: &[&str], right: &[bool], rows: Vec<Vec<String>>, indent: &str) -> String {
    use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    for (i, r) in right.iter().enumerate() {
        if let Some(c) = t.column_mut(i) {
            c.set_padding((0, 2));
            if *r {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    let mut out = String::new();
    for line in t.lines() {
        out += indent;
        out += line.trim_end();
        out += "\n";
    }
    out
}

/// A duration for a table: `420ms`, `3.2s`, `5m12s`.
fn short_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// Renders a status report as text; `wide` adds each member's pid and host (like
/// `kubectl -o wide`).
pub fn status_text(r: &StatusReport, wide: bool) -> String {
    let mut s = format!(
        "election  {} ({})\n",
        escape(&r.election),
        escape(&r.backend)
    );
    match &r.leader {
        Some(l) => {
            s += &format!(
                "leader    {} (term {}, pid {}, host {}, since {})\n",
                escape(&l.id),
                l.term,
                l.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                escape(l.host.as_deref().unwrap_or("-")),
                l.since.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
            )
        }
        None => s += "leader    none\n",
    }
    if let Some(l) = &r.lease {
        s += &format!("lease     {}\n", l.line());
    }
    if let Some(d) = &r.duty {
        s += &match (&d.error, d.term, &d.holder, d.finished_at) {
            (Some(e), ..) => format!("duty      unreadable: {}\n", escape(e)),
            (None, Some(t), Some(h), Some(at)) => format!(
                "duty      done (term {t}, by {}, at {at}, exit {})\n",
                escape(h),
                d.exit_code.unwrap_or_default()
            ),
            _ => format!("duty      {}\n", escape(&d.state)),
        };
    }
    s += &format!("members   {}\n", r.members.len());
    if !r.members.is_empty() {
        let mut header = vec!["ID", "ROLE", "TERM", "HEARTBEAT"];
        let mut right = vec![false, false, true, true];
        if wide {
            header.extend(["PID", "HOST"]);
            right.extend([true, false]);
        }
        let rows = r
            .members
            .iter()
            .map(|m| {
                let mut row = vec![
                    escape(&m.id).into_owned(),
                    m.role.to_string(),
                    m.term.0.to_string(),
                    short_ms(m.heartbeat_age_ms),
                ];
                if wide {
                    row.extend([m.pid.to_string(), escape(&m.host).into_owned()]);
                }
                row
            })
            .collect();
        s += &table(&header, &right, rows, "  ");
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
            Some(view) => match view.released() {
                Some((term, _)) if Some(term) == grants.last().map(|g| g.term) => {
                    Some(EndKind::Released)
                }
                _ => None,
            },
            None => None,
        }))
        .collect();
    grants
        .into_iter()
        .zip(ends)
        .map(|(grant, ended)| HistoryRow { grant, ended })
        .collect()
}

/// Renders the history as text, newest last; `wide` adds the holder's pid and host and the
/// previous holder.
pub fn history_text(rows: &[HistoryRow], wide: bool) -> String {
    if rows.is_empty() {
        return "no grants yet\n".into();
    }
    let mut header = vec!["TERM", "HOLDER", "ACQUIRED", "GAP", "ENDED"];
    let mut right = vec![true, false, false, true, false];
    if wide {
        header.extend(["PID", "HOST", "PREVIOUS"]);
        right.extend([true, false, false]);
    }
    let dash = || "-".to_string();
    let body = rows
        .iter()
        .map(|r| {
            let g = &r.grant;
            let mut row = vec![
                g.term.0.to_string(),
                escape(&g.holder).into_owned(),
                g.acquired_at.to_string(),
                g.gap_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(dash),
                r.ended
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "(current)".into()),
            ];
            if wide {
                row.extend([
                    g.pid.map(|p| p.to_string()).unwrap_or_else(dash),
                    g.host
                        .as_deref()
                        .map(|h| escape(h).into_owned())
                        .unwrap_or_else(dash),
                    g.previous_holder
                        .as_deref()
                        .map(|h| escape(h).into_owned())
                        .unwrap_or_else(dash),
                ]);
            }
            row
        })
        .collect();
    table(&header, &right, body, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_history_text_carry_no_control_bytes() {
        let evil = "x\u{1b}]0;pwned\u{7}\u{1b}[2J\nleader    forged";
        let r = StatusReport {
            election: "crown".into(),
            backend: "file".into(),
            leader: Some(StatusLeader {
                id: evil.into(),
                term: Term(3),
                pid: Some(1),
                host: Some(evil.into()),
                since: None,
            }),
            lease: StatusLease::from_view(&LeaseView::Election(crate::backend::ElectionView {
                leader: crate::election::LeaderInfo {
                    id: evil.into(),
                    term: Term(3),
                    pid: None,
                    host: None,
                    since: None,
                },
                key: evil.into(),
                lease_id: 0x694d,
                granted_ttl_s: Some(10),
                ttl_remaining_s: None,
                mod_revision: 3,
            })),
            members: vec![StatusMember {
                id: evil.into(),
                pid: 1,
                host: evil.into(),
                role: Role::Follower,
                term: Term(3),
                heartbeat_age_ms: 5,
            }],
            duty: Some(StatusDuty {
                state: "done".into(),
                term: Some(Term(2)),
                holder: Some(evil.into()),
                finished_at: Some(Timestamp::UNIX_EPOCH),
                exit_code: Some(0),
                error: None,
            }),
        };
        let text = status_text(&r, false);
        assert_eq!(status_text(&r, true).lines().count(), 7);
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && crate::text::unsafe_char(c)),
            "{text:?}"
        );
        assert_eq!(text.lines().count(), 7, "{text}");
        assert!(
            text.contains("session lease 000000000000694d, ttl -s of 10s"),
            "{text}"
        );
        let rows = vec![HistoryRow {
            grant: Grant {
                term: Term(3),
                holder: evil.into(),
                acquired_at: Timestamp::UNIX_EPOCH,
                pid: None,
                host: None,
                previous_holder: None,
                previous_end: None,
                gap_ms: None,
            },
            ended: None,
        }];
        let text = history_text(&rows, false);
        assert_eq!(history_text(&rows, true).lines().count(), 2);
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && crate::text::unsafe_char(c)),
            "{text:?}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
