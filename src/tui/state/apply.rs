//! Applying one read of the backend to the [`State`]: the leader, the grants and the members
//! are compared with the last read, and each change is logged.

use super::{
    Freshness, LogKind, MemberView, Snapshot, State, Transition, age, fmt_duration, freshness,
    grant_line,
};
use crate::backend::LeaseView;
use crate::election::{Grant, Member};
use crate::report::{escape, history_rows};
use jiff::Timestamp;
use std::collections::BTreeMap;

impl State {
    /// Applies one read of the backend at `now`, logging what changed since the last one.
    pub fn apply(&mut self, mut snap: Snapshot, now: Timestamp) {
        self.now = now;
        sanitize(&mut snap);
        self.mismatched = std::mem::take(&mut snap.mismatched);
        self.track_writers(&snap.members, now);
        if let Some(e) = self.backend_error.take() {
            self.log(LogKind::Info, format!("backend readable again (was: {e})"));
        }
        if let Some(d) = snap.lease.duration() {
            self.lease_duration = d;
        }
        let leader = snap.lease.leader();
        let released_at = snap.lease.released().and_then(|(_, at)| at);
        let history = history_rows(snap.history.clone(), Some(&snap.lease));
        let first = !self.loaded;
        self.loaded = true;

        // Leaders and failovers.
        let new_grants: Vec<Grant> = snap
            .history
            .iter()
            .filter(|g| g.term > self.max_term)
            .cloned()
            .collect();
        if first {
            self.log(
                LogKind::Info,
                format!(
                    "watching {}: {}, {} member(s), {} grant(s) so far",
                    self.election,
                    match &leader {
                        Some(l) => format!("leader {} (term {})", l.id, l.term),
                        None => "no leader".into(),
                    },
                    snap.members.len(),
                    snap.history.len()
                ),
            );
        } else {
            for g in &new_grants {
                self.log(LogKind::Leader, grant_line(g));
            }
            let old = self.leader.as_ref().map(|l| (l.id.as_str(), l.term));
            let new = leader.as_ref().map(|l| (l.id.as_str(), l.term));
            if old != new {
                match (old, new) {
                    (Some((id, term)), None) => self.log(
                        LogKind::Warn,
                        format!("no leader: {id} gave up term {term} (lease free)"),
                    ),
                    (_, Some((id, term))) if !new_grants.iter().any(|g| g.term == term) => {
                        self.log(LogKind::Leader, format!("👑 {id} leads (term {term})"))
                    }
                    _ => {}
                }
            }
        }
        if let Some(t) = snap.history.iter().map(|g| g.term).max() {
            self.max_term = self.max_term.max(t);
        }
        if let Some(l) = &leader {
            self.max_term = self.max_term.max(l.term);
        }

        // Members.
        let mut members: Vec<Member> = snap.members;
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let old: BTreeMap<String, MemberView> = self
            .members
            .drain(..)
            .map(|m| (m.member.id.clone(), m))
            .collect();
        let mut views = Vec::with_capacity(members.len());
        for m in members {
            let alive = if m.host == self.host {
                Some(!snap.dead_pids.contains(&m.pid))
            } else {
                None
            };
            let age = age(now, m.last_heartbeat);
            let fresh = freshness(age, self.retry_period, self.lease_duration);
            let transition = match old.get(&m.id) {
                None => {
                    if !first {
                        self.log(
                            LogKind::Info,
                            format!("member {} appeared (pid {}, host {})", m.id, m.pid, m.host),
                        );
                    }
                    None
                }
                Some(prev) if prev.member.role != m.role => Some(Transition {
                    at: now,
                    from: prev.member.role,
                    to: m.role,
                }),
                Some(prev) => prev.transition.clone(),
            };
            if let Some(prev) = old.get(&m.id)
                && prev.member.pid != m.pid
            {
                self.log(
                    LogKind::Info,
                    format!(
                        "member {} restarted (pid {} → {})",
                        m.id, prev.member.pid, m.pid
                    ),
                );
                self.dead.remove(&m.id);
            }
            let was = self.freshness.insert(m.id.clone(), fresh);
            // A member known dead is reported once as gone, not again as stale.
            if !first && alive != Some(false) {
                match (was, fresh) {
                    (Some(w), Freshness::Stale) if w != Freshness::Stale => self.log(
                        LogKind::Warn,
                        format!(
                            "member {} stale: no heartbeat for {}",
                            m.id,
                            fmt_duration(age)
                        ),
                    ),
                    (Some(Freshness::Stale), f) if f != Freshness::Stale => self.log(
                        LogKind::Info,
                        format!("member {} heartbeating again ({})", m.id, m.role),
                    ),
                    _ => {}
                }
            }
            if alive == Some(false) && self.dead.insert(m.id.clone()) && !first {
                self.log(
                    LogKind::Warn,
                    format!("member {} is gone: pid {} no longer exists", m.id, m.pid),
                );
            }
            views.push(MemberView {
                member: m,
                alive,
                transition,
            });
        }
        for id in old.keys() {
            if !views.iter().any(|v| &v.member.id == id) {
                self.log(LogKind::Info, format!("member {id} left"));
                self.freshness.remove(id);
                self.dead.remove(id);
            }
        }
        self.members = views;
        self.leader = leader;
        self.history = history;
        self.last_released_at = released_at;
    }
}

/// Escapes control characters in every string of a snapshot that is shown or logged.
fn sanitize(snap: &mut Snapshot) {
    fn fix(s: &mut String) {
        if let std::borrow::Cow::Owned(e) = escape(s) {
            *s = e;
        }
    }
    fn fix_opt(s: &mut Option<String>) {
        if let Some(s) = s {
            fix(s);
        }
    }
    match &mut snap.lease {
        LeaseView::Record(r) => {
            fix(&mut r.holder);
            fix(&mut r.host);
            fix_opt(&mut r.released_by);
        }
        LeaseView::Election(e) => {
            fix(&mut e.leader.id);
            fix_opt(&mut e.leader.host);
            fix(&mut e.key);
        }
        LeaseView::Resigned(r) => fix(&mut r.by),
        LeaseView::None => {}
    }
    for m in &mut snap.members {
        fix(&mut m.id);
        fix(&mut m.host);
        fix(&mut m.version);
    }
    for g in &mut snap.history {
        fix(&mut g.holder);
        fix_opt(&mut g.host);
        fix_opt(&mut g.previous_holder);
    }
    for why in snap.mismatched.values_mut() {
        fix(why);
    }
}
