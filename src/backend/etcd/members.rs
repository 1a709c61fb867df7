//! Member heartbeats: `<prefix><election>:members:<id>` = the [`Member`] JSON plus the
//! participant's current session lease (`"session": "<hex>"`), on a member lease of its own.
//! The session field is what lets others verify that a candidate key is crown's: a key is a
//! crown participant's only if its value is that participant's id *and* the heartbeat names
//! the key's lease. It also carries the participant's renew deadline (`renew_deadline_ms`): a
//! successor that cannot tell whether that session was revoked in its last second learns from
//! it how long before the session runs out its holder has stopped (`seen::predecessor_hold`).

use super::{Inner, OP_TIMEOUT, escape};
use crate::backend::{BackendError, validate_election_name};
use crate::election::Member;
use etcd_client::{GetOptions, PutOptions};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Heartbeat {
    #[serde(flatten)]
    member: Member,
    /// The session lease (hex) of the participant's campaign, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    /// The participant's renew deadline, in milliseconds (absent before it campaigns, and in
    /// heartbeats of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renew_deadline_ms: Option<u64>,
}

/// A checked heartbeat: the member, the session lease it names, its renew deadline.
pub(super) struct Heard {
    pub(super) member: Member,
    pub(super) session: Option<i64>,
    pub(super) renew_deadline: Option<Duration>,
}

/// A heartbeat read from etcd, checked: the id is a valid id equal to the key's; text fields
/// are escaped. Anything else is not a heartbeat.
fn parse(key: &[u8], value: &[u8], members_prefix: &str) -> Option<Heard> {
    let hb: Heartbeat = serde_json::from_slice(value).ok()?;
    let id = std::str::from_utf8(key)
        .ok()?
        .strip_prefix(members_prefix)?;
    if hb.member.id != id || validate_election_name(id).is_err() {
        return None;
    }
    let session = hb
        .session
        .as_deref()
        .and_then(|s| i64::from_str_radix(s, 16).ok());
    let mut m = hb.member;
    m.host = escape(&m.host);
    m.version = escape(&m.version);
    Some(Heard {
        member: m,
        session,
        renew_deadline: hb.renew_deadline_ms.map(Duration::from_millis),
    })
}

impl Inner {
    pub(super) async fn publish_member(&self, member: &Member) -> Result<(), BackendError> {
        *self.last_member.lock().unwrap() = Some(member.clone());
        self.put_member(member, OP_TIMEOUT).await
    }

    /// Publishes the last heartbeat again (the session changed). Best effort.
    pub(super) async fn republish_member(&self) {
        let m = self.last_member.lock().unwrap().clone();
        if let Some(m) = m {
            let _ = self.put_member(&m, Duration::from_millis(500)).await;
        }
    }

    async fn put_member(&self, member: &Member, limit: Duration) -> Result<(), BackendError> {
        let session = self.session.lock().unwrap().map(|l| format!("{l:x}"));
        let renew_deadline_ms = self
            .timings
            .lock()
            .unwrap()
            .map(|t| t.renew_deadline.as_millis() as u64);
        let json = serde_json::to_string(&Heartbeat {
            member: member.clone(),
            session,
            renew_deadline_ms,
        })
        .expect("serializes");
        let mut lease = self.member_lease.lock().await;
        if let Some((id, _)) = *lease {
            match timeout_call!(self, limit, |c| c.lease_keep_alive(id)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if super::connection::lease_gone(&e) => *lease = None,
                Ok(Err(e)) => {
                    return Err(super::connection::etcd_err("member lease keep-alive", e));
                }
                Err(_) => {
                    return Err(BackendError::Unavailable(
                        "etcd member lease keep-alive timed out".into(),
                    ));
                }
            }
        }
        // The TTL follows the timings once the elector has given them: re-grant if it changed.
        let ttl = self.member_ttl();
        if let Some((old, old_ttl)) = *lease
            && old_ttl != ttl
        {
            *lease = None;
            let _ = call!(self, "lease revoke", limit, |c| c.lease_revoke(old));
        }
        let id = match *lease {
            Some((id, _)) => id,
            None => {
                let r = call!(self, "lease grant", limit, |c| c.lease_grant(ttl, None))?;
                *lease = Some((r.id(), ttl));
                r.id()
            }
        };
        call!(self, "member write", limit, |c| c.put(
            self.keys.member(&member.id),
            json.clone(),
            Some(PutOptions::new().with_lease(id)),
        ))
        .map(|_| ())
    }

    pub(super) async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        *self.last_member.lock().unwrap() = None;
        call!(self, "member delete", OP_TIMEOUT, |c| c
            .delete(self.keys.member(id), None))?;
        if let Some((l, _)) = self.member_lease.lock().await.take() {
            let _ = call!(self, "lease revoke", OP_TIMEOUT, |c| c.lease_revoke(l));
        }
        Ok(())
    }

    pub(super) async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let got = call!(self, "read", OP_TIMEOUT, |c| c.get(
            self.keys.members.clone(),
            Some(GetOptions::new().with_prefix()),
        ))?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| parse(kv.key(), kv.value(), &self.keys.members))
            .map(|h| h.member)
            .collect())
    }

    /// The heartbeat of `id`, with the session lease and renew deadline it names.
    pub(super) async fn member_record(&self, id: &str, limit: Duration) -> Option<Heard> {
        let got = call!(self, "read", limit, |c| c.get(self.keys.member(id), None)).ok()?;
        got.kvs()
            .first()
            .and_then(|kv| parse(kv.key(), kv.value(), &self.keys.members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::{Role, Term};
    use jiff::Timestamp;

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            pid: 7,
            host: "h\u{1b}[2J".into(),
            role: Role::Follower,
            term: Term(3),
            last_heartbeat: Timestamp::UNIX_EPOCH,
            started_at: Timestamp::UNIX_EPOCH,
            version: "1".into(),
            process: None,
        }
    }

    #[test]
    fn heartbeats_carry_the_session_and_are_checked() {
        let json = serde_json::to_vec(&Heartbeat {
            member: member("a"),
            session: Some("694d".into()),
            renew_deadline_ms: Some(1500),
        })
        .unwrap();
        let h = parse(b"p:members:a", &json, "p:members:").unwrap();
        assert_eq!(h.session, Some(0x694d));
        assert_eq!(h.renew_deadline, Some(Duration::from_millis(1500)));
        assert_eq!(h.member.host, "h\\u{1b}[2J");
        // The key names another id, or the id is no crown id: not a heartbeat.
        assert!(parse(b"p:members:b", &json, "p:members:").is_none());
        let bad = serde_json::to_vec(&member("a\nb")).unwrap();
        assert!(parse(b"p:members:a\nb", &bad, "p:members:").is_none());
        // Old heartbeats without a session still parse (and verify nothing).
        let old = serde_json::to_vec(&member("a")).unwrap();
        let h = parse(b"p:members:a", &old, "p:members:").unwrap();
        assert_eq!((h.session, h.renew_deadline), (None, None));
    }
}
