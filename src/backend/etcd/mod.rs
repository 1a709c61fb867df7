//! The etcd backend: the election protocol of etcd's Go `concurrency.Election`, run on the
//! client, so crown, `etcdctl elect` and Go clients take part in the same elections.
//!
//! Keys, for election key `N = <prefix><election>`:
//! - `N/<lease-id-hex>`: one key per candidate, bound to the candidate's *session lease*; its
//!   value is the participant id (so `etcdctl elect -l N` prints it). The candidate whose key
//!   has the lowest create revision leads, exactly as in Go's `concurrency.Election`.
//! - Everything else crown keeps lives under `N:` — outside every candidate range
//!   `<prefix><name>/` (election names and ids cannot contain `:` or `/`, so these keys have no
//!   `/` after the prefix and lie in no election's range at all, and one election's `N:` range
//!   never holds another's keys); a permission on the prefix `N` covers them all:
//!   - `…:members:<id>`: the [`Member`] heartbeat JSON (plus the participant's session lease),
//!     bound to a member lease of the same TTL, so it vanishes when its participant dies;
//!   - `…:history:<term, 20 digits>`: one [`Grant`] JSON per observed grant (crown's and
//!     foreign), the last `--etcd-history-limit` kept;
//!   - `…:floor`: the highest term compacted out of the history (20 digits);
//!   - `…:released`: `{"term","holder","at"}` of the last graceful resign by crown, written in
//!     the transaction that deletes the leader key.
//!
//! **Term** (the fencing token) = the create revision of the leader key, as etcd advises for
//! fencing: a successor's key was created after the key it follows (that one had the lowest
//! create revision), so terms rise strictly with each grant and are never reused. Anything a
//! leader writes to etcd can be guarded with `Compare::create_revision(key, Equal, term)`.
//!
//! The campaign (see `campaign.rs`): a session lease; the candidate key put on it (if absent);
//! then a watch on the key just ahead in line until every key with a lower create revision is
//! gone; won = our key, with our lease and create revision, is the lowest. A campaign whose
//! session is lost starts over with a new session and never "wins" with a deleted key.
//!
//! Every call carries etcd's `require-leader` metadata, so a member cut off from its quorum
//! answers "no leader" at once instead of hanging, and HTTP/2 keep-alive pings detect a dead or
//! black-holed connection; calls go to one endpoint at a time and move on to the next when one
//! fails.

/// Runs one call on the current endpoint's client, bounded by a timeout; a failure (other than
/// "lease not found" or a denial) moves on to the next endpoint. Evaluates to the timeout's
/// result: `Result<Result<T, etcd_client::Error>, Elapsed>`.
macro_rules! timeout_call {
    ($conn:expr, $limit:expr, |$c:ident| $call:expr) => {{
        let conn: &$crate::backend::etcd::connection::Conn = &$conn;
        let (idx, mut $c) = conn.client();
        let r = tokio::time::timeout($limit, $call).await;
        conn.settle(idx, r.as_ref().map(|r| r.as_ref().err()));
        r
    }};
}

/// [`timeout_call!`] with errors mapped to [`BackendError`]s naming `what`.
macro_rules! call {
    ($conn:expr, $what:expr, $limit:expr, |$c:ident| $call:expr) => {{
        let limit: std::time::Duration = $limit;
        match timeout_call!($conn, limit, |$c| $call) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err($crate::backend::etcd::connection::etcd_err($what, e)),
            Err(_) => Err($crate::backend::BackendError::Unavailable(format!(
                "etcd {} timed out after {} ms",
                $what,
                limit.as_millis()
            ))),
        }
    }};
}

mod campaign;
mod connection;
mod history;
mod members;
mod session;

use super::{AcquireRequest, Backend, BackendError, LeaseView, Outcome, validate_election_name};
use crate::election::lease::Observer;
use crate::election::{Grant, Identity, LeaderInfo, LeaseRecord, Member, Term};
use async_trait::async_trait;
use campaign::{CampaignHandle, Phase};
use connection::Conn;
use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use history::Seen;
use jiff::Timestamp;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, timeout};

/// How many grants the history keeps unless `--etcd-history-limit` says otherwise.
pub const HISTORY_LIMIT: usize = 1000;
/// Bound of one etcd call when the caller gives no deadline.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach etcd and which election to use.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `host:port` or URLs.
    pub endpoints: Vec<String>,
    /// Key prefix; the election key is `<prefix><election>`.
    pub prefix: String,
    /// Election name.
    pub election: String,
    /// CA certificate (PEM).
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    pub key: Option<PathBuf>,
    /// User and password.
    pub user: Option<(String, String)>,
    /// How long to wait for etcd at start.
    pub wait: Duration,
    /// How many grants the history keeps (older ones are compacted).
    pub history_limit: usize,
}

/// Checks `--etcd-prefix`: printable characters only (no control characters), at most 256
/// bytes. Any other byte is allowed: crown joins elections of clients with any prefix.
pub fn validate_prefix(prefix: &str) -> Result<(), BackendError> {
    if prefix.len() > 256 || prefix.chars().any(char::is_control) {
        return Err(BackendError::Invalid(format!(
            "invalid --etcd-prefix {}: use at most 256 bytes of printable characters (no control characters)",
            escape(prefix)
        )));
    }
    Ok(())
}

/// Text for a terminal or a log line: control characters (newlines, escape sequences) become
/// `\u{…}` escapes; the rest is kept.
pub(crate) fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The keys of one election.
pub(crate) struct Keys {
    /// `<prefix><election>`: the election key, as given to `etcdctl elect`.
    name: String,
    /// `<prefix><election>/`: where the candidates' keys live.
    candidates: String,
    members: String,
    history: String,
    floor: String,
    released: String,
}

impl Keys {
    fn new(prefix: &str, election: &str) -> Keys {
        let name = format!("{prefix}{election}");
        let aux = format!("{name}:");
        Keys {
            candidates: format!("{name}/"),
            name,
            members: format!("{aux}members:"),
            history: format!("{aux}history:"),
            floor: format!("{aux}floor"),
            released: format!("{aux}released"),
        }
    }

    fn member(&self, id: &str) -> String {
        format!("{}{id}", self.members)
    }

    fn history(&self, term: Term) -> String {
        format!("{}{:020}", self.history, term.0)
    }
}

/// The etcd backend. Cheap to clone.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

/// Shared state of the backend and its background tasks.
pub(crate) struct Inner {
    conn: Conn,
    keys: Keys,
    me: Option<Identity>,
    history_limit: usize,
    /// Wakes the elector ([`Backend::changed`]).
    notify: Notify,
    campaign: Mutex<Option<CampaignHandle>>,
    timings: Mutex<Option<Timings>>,
    /// The member heartbeat's lease and TTL.
    member_lease: tokio::sync::Mutex<Option<(i64, i64)>>,
    /// The last heartbeat published (re-published when the session changes).
    last_member: Mutex<Option<Member>>,
    /// The current session lease, named in the heartbeat so others can verify our key.
    session: Mutex<Option<i64>>,
    /// Session leases we gave up whose revoke may have failed: their keys are not leaders.
    old_sessions: Mutex<Vec<i64>>,
    seen: Mutex<Seen>,
    watching: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for Inner {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Timings {
    ttl: i64,
    retry: Duration,
}

/// A candidate key as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaderKv {
    key: String,
    /// The value, raw (bytes as lossy UTF-8, not escaped).
    value: String,
    rev: i64,
    lease: i64,
    mod_rev: i64,
}

impl LeaderKv {
    fn from_kv(kv: &etcd_client::KeyValue) -> LeaderKv {
        LeaderKv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            rev: kv.create_revision(),
            lease: kv.lease(),
            mod_rev: kv.mod_revision(),
        }
    }

    fn term(&self) -> Term {
        Term(self.rev.max(0) as u64)
    }

    /// How a key crown cannot verify is described (in place of a host).
    fn foreign(&self) -> String {
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
    /// A crown participant: the value is its id and its heartbeat names this key's lease.
    Crown(Member),
    /// Anything else (etcdctl, Go, another library, a raw key, a crown key not yet verified).
    Foreign,
}

impl EtcdBackend {
    /// Connects and waits (up to `o.wait`) until etcd answers a linearizable read, so an
    /// unreachable cluster gives one clear error instead of a silent hang. `me` is `None` for
    /// observers (`crown status`, `crown history`), which never campaign.
    pub async fn connect(o: EtcdOptions, me: Option<Identity>) -> Result<Self, BackendError> {
        validate_election_name(&o.election)?;
        validate_prefix(&o.prefix)?;
        let keys = Keys::new(&o.prefix, &o.election);
        let id = me.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        let conn = Conn::connect(&o, id, &keys.name).await?;
        let inner = Inner {
            conn,
            keys,
            me,
            history_limit: o.history_limit.max(1),
            notify: Notify::new(),
            campaign: Mutex::new(None),
            timings: Mutex::new(None),
            member_lease: tokio::sync::Mutex::new(None),
            last_member: Mutex::new(None),
            session: Mutex::new(None),
            old_sessions: Mutex::new(vec![]),
            seen: Mutex::new(Seen::default()),
            watching: std::sync::atomic::AtomicBool::new(false),
        };
        let b = EtcdBackend {
            inner: Arc::new(inner),
        };
        if b.inner.me.is_some() {
            b.start_watch();
        }
        Ok(b)
    }

    /// The election key (`<prefix><election>`), as given to `etcdctl elect`.
    pub fn election_key(&self) -> &str {
        &self.inner.keys.name
    }

    fn start_watch(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.watch_loop().await });
    }

    fn timings(&self, req: &AcquireRequest) -> Timings {
        let mut t = self.inner.timings.lock().unwrap();
        *t.get_or_insert_with(|| Timings {
            ttl: (req.lease_duration.as_millis().div_ceil(1000) as i64).max(1),
            retry: req.retry_period,
        })
    }

    fn phase(&self) -> Option<(watch::Receiver<Phase>, Phase)> {
        let g = self.inner.campaign.lock().unwrap();
        g.as_ref().map(|c| {
            let rx = c.phase.clone();
            let p = rx.borrow().clone();
            (rx, p)
        })
    }

    /// Stops the campaign (the task revokes its session lease in the background).
    fn stop_campaign(&self) {
        if let Some(c) = self.inner.campaign.lock().unwrap().take() {
            c.cancel.cancel();
        }
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<Outcome, BackendError> {
        let t = self.timings(req);
        let me = self.inner.me.clone().expect("participant");
        let rx = match self.phase() {
            Some((rx, _)) => Some(rx),
            None if !req.hold_off => Some(self.inner.start_campaign(t)),
            None => None,
        };
        let limit = t.retry.clamp(Duration::from_millis(500), OP_TIMEOUT);
        for _ in 0..2 {
            let phase = rx.as_ref().map(|rx| rx.borrow().clone());
            if let Some(Phase::Won { lease, key, rev }) = &phase {
                let got = call!(self.inner, "read", limit, |c| c.get(key.clone(), None))?;
                let ours = got
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == *rev && kv.lease() == *lease);
                if ours {
                    let term = Term(*rev as u64);
                    let grant = Grant {
                        term,
                        holder: me.id.clone(),
                        acquired_at: Timestamp::now(),
                        pid: Some(me.pid),
                        host: Some(me.host.clone()),
                        previous_holder: None,
                        previous_end: None,
                        gap_ms: None,
                    };
                    let inner = self.inner.clone();
                    let g = grant.clone();
                    tokio::spawn(async move { inner.record_grant(g, true).await });
                    return Ok(Outcome::Acquired { term, grant });
                }
                // The campaign "won" with a key that is gone (its session lease expired): a
                // zombie candidate. Start over with a new session.
                tracing::warn!(
                    "[{}] campaign won but our key {} (revision {rev}) is gone; campaigning again with a new session",
                    me.id,
                    escape(key)
                );
                self.stop_campaign();
                return Ok(Outcome::Following {
                    leader: None,
                    recheck_in: Some(Duration::ZERO),
                });
            }
            let (leader, new) = self.inner.read_leader(limit).await?;
            if let (Some(l), Some(Phase::Waiting { key, .. }), Some(rx)) = (&leader, &phase, &rx)
                && &l.key == key
            {
                // Our key is first in line: the campaign is about to see it. Wait for it.
                let mut rx = rx.clone();
                let _ = timeout(limit, rx.wait_for(|p| !matches!(p, Phase::Waiting { .. }))).await;
                continue;
            }
            let ours = match &phase {
                Some(Phase::Waiting { key, .. } | Phase::Won { key, .. }) => Some(key.clone()),
                _ => None,
            };
            // A key of a session we gave up (its revoke failed while etcd was unreachable)
            // expires by itself; we do not lead. Keys are ours by their lease, never by value.
            let info = match leader {
                Some(l)
                    if Some(&l.key) != ours.as_ref()
                        && !self.inner.old_sessions.lock().unwrap().contains(&l.lease) =>
                {
                    let inner = self.inner.clone();
                    let kv = l.clone();
                    tokio::spawn(async move {
                        inner.poll_leader_ttl(&kv, t.retry).await;
                        if new {
                            inner.record_observed(kv).await;
                        }
                    });
                    Some(self.inner.leader_info(&l, limit).await)
                }
                _ => None,
            };
            return Ok(Outcome::Following {
                leader: info,
                recheck_in: None,
            });
        }
        Ok(Outcome::Following {
            leader: None,
            recheck_in: None,
        })
    }

    async fn renew(&self, req: &AcquireRequest, term: Term) -> Result<Outcome, BackendError> {
        let Some((_, Phase::Won { lease, key, rev })) = self.phase() else {
            return Ok(Outcome::Lost { leader: None });
        };
        if rev as u64 != term.0 {
            return Ok(Outcome::Lost { leader: None });
        }
        let limit = req
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(OP_TIMEOUT);
        // The keep-alive and the read of our key at once: one round trip, not two (a slow link
        // keeps its leader longer). Either failing is a failed renewal.
        let (alive, got) = tokio::join!(
            async { timeout_call!(self.inner, limit, |c| c.lease_keep_alive(lease)) },
            async { call!(self.inner, "read", limit, |c| c.get(key.clone(), None)) }
        );
        match alive {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if connection::lease_gone(&e) => return Ok(Outcome::Lost { leader: None }),
            Ok(Err(e)) => return Err(connection::etcd_err("lease keep-alive", e)),
            Err(_) => {
                return Err(BackendError::Unavailable(format!(
                    "etcd lease keep-alive timed out ({})",
                    self.inner.endpoints
                )));
            }
        }
        match got?.kvs().first() {
            Some(kv) if kv.create_revision() == rev && kv.lease() == lease => {
                Ok(Outcome::Renewed { term })
            }
            _ => Ok(Outcome::Lost { leader: None }),
        }
    }
}

impl Inner {
    fn id(&self) -> &str {
        self.me.as_ref().map(|m| m.id.as_str()).unwrap_or("")
    }

    /// The candidate key with the lowest create revision: the leader.
    /// Also says whether it is another key than the last one read.
    async fn read_leader(
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
    async fn holder(&self, l: &LeaderKv, limit: Duration) -> Holder {
        if validate_election_name(&l.value).is_err() {
            return Holder::Foreign;
        }
        match self.member_record(&l.value, limit).await {
            Some((m, Some(session))) if session == l.lease => Holder::Crown(m),
            _ => Holder::Foreign,
        }
    }

    async fn leader_info(&self, l: &LeaderKv, limit: Duration) -> LeaderInfo {
        let since = self.grant_of(l.term()).await.map(|g| g.acquired_at);
        match self.holder(l, limit).await {
            Holder::Crown(m) => LeaderInfo {
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

    fn revoke_in_background(self: &Arc<Self>, lease: i64) {
        let inner = self.clone();
        tokio::spawn(async move {
            let _ = call!(inner, "lease revoke", OP_TIMEOUT, |c| c.lease_revoke(lease));
        });
    }

    fn member_ttl(&self) -> i64 {
        self.timings
            .lock()
            .unwrap()
            .map(|t| t.ttl.max((3 * t.retry.as_millis()).div_ceil(1000) as i64))
            .unwrap_or(5)
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn try_acquire_or_renew(
        &self,
        req: AcquireRequest,
        _observer: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        if self.inner.me.is_none() {
            return Err(BackendError::Invalid("an observer cannot campaign".into()));
        }
        match req.held {
            Some(term) => self.renew(&req, term).await,
            None => self.acquire(&req).await,
        }
    }

    async fn release(&self, term: Term) -> Result<(), BackendError> {
        let phase = self.phase().map(|(_, p)| p);
        let result = match phase {
            Some(Phase::Won { key, rev, .. }) if rev as u64 == term.0 => {
                let rec = history::Released {
                    term,
                    holder: self.inner.id().to_string(),
                    at: Timestamp::now(),
                };
                let json = serde_json::to_string(&rec).expect("serializes");
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([
                        TxnOp::delete(key, None),
                        TxnOp::put(self.inner.keys.released.clone(), json, None),
                    ]);
                call!(self.inner, "resign", OP_TIMEOUT, |c| c.txn(txn)).map(|_| ())
            }
            _ => Ok(()),
        };
        self.stop_campaign();
        result
    }

    async fn abandon(&self) {
        self.stop_campaign();
    }

    async fn changed(&self) {
        self.inner.notify.notified().await
    }

    async fn lease(&self) -> Result<LeaseView, BackendError> {
        let (Some(l), _) = self.inner.read_leader(OP_TIMEOUT).await? else {
            return Ok(match self.inner.released().await {
                Some(r) => LeaseView::Record(LeaseRecord {
                    holder: String::new(),
                    term: r.term,
                    acquired_at: r.at,
                    renewed_at: r.at,
                    lease_duration_ms: 0,
                    pid: 0,
                    host: String::new(),
                    released_at: Some(r.at),
                    released_by: Some(escape(&r.holder)),
                    revision: 0,
                }),
                None => LeaseView::None,
            });
        };
        let term = l.term();
        let info = self.inner.leader_info(&l, OP_TIMEOUT).await;
        let ttl_ms = {
            call!(self.inner, "lease ttl", OP_TIMEOUT, |c| c
                .lease_time_to_live(l.lease, None))
            .map(|r| r.granted_ttl().max(0) as u64 * 1000)
            .unwrap_or(0)
        };
        let renewed_at = match self.inner.holder(&l, OP_TIMEOUT).await {
            Holder::Crown(m) => m.last_heartbeat,
            Holder::Foreign => history::UNKNOWN_TIME,
        };
        Ok(LeaseView::Record(LeaseRecord {
            holder: info.id,
            term,
            // What etcd cannot prove is "unknown", never the time of this query.
            acquired_at: info.since.unwrap_or(history::UNKNOWN_TIME),
            renewed_at,
            lease_duration_ms: ttl_ms,
            pid: info.pid.unwrap_or(0),
            host: info.host.unwrap_or_default(),
            released_at: None,
            released_by: None,
            revision: l.mod_rev as u64,
        }))
    }

    async fn publish_member(&self, member: &Member) -> Result<(), BackendError> {
        self.inner.publish_member(member).await
    }

    /// Called on a clean exit: also ends our campaign and revokes its session.
    async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        if let Some((_, Phase::Waiting { lease, .. } | Phase::Won { lease, .. })) = self.phase() {
            self.stop_campaign();
            let _ = call!(self.inner, "lease revoke", OP_TIMEOUT, |c| c
                .lease_revoke(lease));
        } else {
            self.stop_campaign();
        }
        self.inner.remove_member(id).await
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        self.inner.members().await
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        self.inner.history().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxiliary_keys_are_outside_every_candidate_range() {
        let names = [
            "jobs",
            "jobs-members",
            "jobs-history",
            "jobs.crown",
            "a",
            "crown",
        ];
        for prefix in ["", "election/", "x."] {
            for a in names {
                let k = Keys::new(prefix, a);
                for aux in [k.member("p-1"), k.history(Term(7)), k.floor, k.released] {
                    for b in names {
                        let other = Keys::new(prefix, b);
                        assert!(
                            !aux.starts_with(&other.candidates),
                            "{aux:?} lies in election {b:?}'s range"
                        );
                    }
                    // No `/` after the prefix: in no election range of this prefix at all.
                    assert!(!aux[prefix.len()..].contains('/'), "{aux:?}");
                }
                // Member and history ranges of one election do not contain another's.
                for b in names {
                    if a != b {
                        let other = Keys::new(prefix, b);
                        assert!(!other.member("x").starts_with(&k.members));
                        assert!(!other.history(Term(1)).starts_with(&k.history));
                    }
                }
            }
        }
    }

    #[test]
    fn history_keys_sort_by_term() {
        let k = Keys::new("", "e");
        assert!(k.history(Term(9)) < k.history(Term(10)));
        assert_eq!(k.history(Term(7)), "e:history:00000000000000000007");
    }

    #[test]
    fn escaping_control_characters() {
        assert_eq!(escape("plain id"), "plain id");
        assert_eq!(escape("a\nBECAME"), "a\\nBECAME");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("election/").is_ok());
        assert!(validate_prefix("a b/ü").is_ok());
        assert!(validate_prefix("a\nb").is_err());
        assert!(validate_prefix("\u{1b}[2J").is_err());
        assert!(validate_prefix(&"x".repeat(257)).is_err());
    }
}
