//! Who leads: the candidate key with the lowest create revision ([`LeaderKv`]) and whether
//! its holder is a crown participant ([`Holder`]: its value is a crown id whose heartbeat
//! names the key's lease), as [`LeaderInfo`] for observers.

use super::{Inner, escape};
use crate::backend::{BackendError, validate_election_name};
use crate::election::{LeaderInfo, Member, Term};
use etcd_client::{GetOptions, SortOrder, SortTarget};
use std::sync::Arc;
use std::time::Duration;

/// A candidate key as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaderKv {
    pub(super) key: String,
    /// The value, raw (bytes as lossy UTF-8, not escaped).
    pub(super) value: String,
    pub(super) rev: i64,
    pub(super) lease: i64,
    pub(super) mod_rev: i64,
}

impl LeaderKv {
    pub(super) fn from_kv(kv: &etcd_client::KeyValue) -> LeaderKv {
        LeaderKv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            rev: kv.create_revision(),
            lease: kv.lease(),
            mod_rev: kv.mod_revision(),
        }
    }

    pub(super) fn term(&self) -> Term {
        Term(self.rev.max(0) as u64)
    }

    /// How a key crown cannot verify is described (in place of a host).
    pub(super) fn foreign(&self) -> String {
        format!(
            "foreign (key {}, lease {:x}, created at revision {})",
            escape(&self.key),
            self.lease,
            self.rev
        )
    }
}

/// Who holds a candidate key, as far as crown can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A crown participant: the value is its id and its heartbeat names this key's lease;
    /// with the renew deadline the heartbeat gives.
    Crown(Member, Option<Duration>),
    /// Anything else (etcdctl, Go, another library, a raw key, a crown key not yet verified).
    Foreign,
}

impl Inner {
    /// The candidate key with the lowest create revision: the leader.
    /// Also says whether it is another key than the last one read.
    pub(super) async fn read_leader(
        self: &Arc<Self>,
        limit: Duration,
    ) -> Result<(Option<LeaderKv>, bool), BackendError> {
        let got = call!(self, "read", limit, |c| c.get(
            self.keys.candidates.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_limit(1),
            ),
        ))?;
        let l = got.kvs().first().map(LeaderKv::from_kv);
        let new = self.observe_leader(l.as_ref());
        Ok((l, new))
    }

    /// Who holds `l`: crown only if its value is a crown id whose heartbeat names `l`'s lease.
    pub(super) async fn holder(&self, l: &LeaderKv, limit: Duration) -> Holder {
        if validate_election_name(&l.value).is_err() {
            return Holder::Foreign;
        }
        match self.member_record(&l.value, limit).await {
            Some(h) if h.session == Some(l.lease) => Holder::Crown(h.member, h.renew_deadline),
            _ => Holder::Foreign,
        }
    }

    pub(super) async fn leader_info(&self, l: &LeaderKv, limit: Duration) -> LeaderInfo {
        let since = self.grant_of(l.term()).await.map(|g| g.acquired_at);
        let holder = self.holder(l, limit).await;
        {
            let mut s = self.seen.lock().unwrap();
            match &holder {
                Holder::Crown(_, rd) => {
                    s.crown_lease = Some(l.lease);
                    s.crown_renew_deadline = *rd;
                }
                Holder::Foreign => {
                    if s.foreign_lease.is_none_or(|(lease, _)| lease != l.lease) {
                        s.foreign_lease = Some((l.lease, tokio::time::Instant::now()));
                    }
                }
            }
        }
        match holder {
            Holder::Crown(m, _) => LeaderInfo {
                id: m.id,
                term: l.term(),
                pid: Some(m.pid),
                host: Some(m.host),
                since,
            },
            Holder::Foreign => LeaderInfo {
                id: escape(&l.value),
                term: l.term(),
                pid: None,
                host: Some(l.foreign()),
                since,
            },
        }
    }
}
