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
//!   - `…:history:<term, 20 digits>`: one [`Grant`](crate::election::Grant) JSON per observed grant (crown's and
//!     foreign), the last `--etcd-history-limit` kept;
//!   - `…:floor`: the highest term compacted out of the history (20 digits);
//!   - `…:released`: `{"term","holder","at"}` of the last graceful resign by crown, written in
//!     the transaction that deletes the leader key;
//!   - `…:resign`: the term whose holder is asked to resign (the dashboard's `r`; see
//!     `requests.rs`);
//!   - `…:duty`: the success record of a `crown run --once` duty, put in a transaction that
//!     compares the leader key's create revision with the term (see `duty.rs`).
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
mod duty;
mod history;
mod keys;
mod lease;
mod members;
mod requests;
mod session;

pub use keys::validate_prefix;
pub(crate) use keys::{Keys, escape};

use super::{AcquireRequest, BackendError, validate_election_name};
use crate::election::{Identity, LeaderInfo, Member, Term};
use campaign::{CampaignHandle, Phase};
use connection::Conn;
use etcd_client::{GetOptions, SortOrder, SortTarget};
use history::Seen;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How many grants the history keeps unless `--etcd-history-limit` says otherwise.
pub const HISTORY_LIMIT: usize = 1000;
/// Bound of one etcd call when the caller gives no deadline.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before watching `…:resign` again after its watch ended.
const RETRY_PAUSE_REQUESTS: Duration = Duration::from_millis(200);

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

/// The etcd backend. Cheap to clone; dropping the last clone stops its background tasks.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
    tasks: Arc<crate::backend::tasks::Tasks>,
}

/// Shared state of the backend and its background tasks.
pub(crate) struct Inner {
    conn: Conn,
    keys: Keys,
    me: Option<Identity>,
    history_limit: usize,
    /// Wakes the elector ([`Lock::changed`](crate::backend::Lock::changed)).
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
    /// The term named by `…:resign`, as last read or watched.
    resign: watch::Sender<Option<u64>>,
    /// Our campaign won in this revision but must not act before this instant (see
    /// `history::predecessor_hold`).
    hold: Mutex<Option<(i64, tokio::time::Instant)>>,
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
            resign: watch::channel(None).0,
            hold: Mutex::new(None),
        };
        let b = EtcdBackend {
            inner: Arc::new(inner),
            tasks: Arc::default(),
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
        self.tasks.spawn(async move { inner.watch_loop().await });
        let inner = self.inner.clone();
        self.tasks.spawn(async move { inner.resign_loop().await });
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
        let holder = self.holder(l, limit).await;
        {
            let mut s = self.seen.lock().unwrap();
            match &holder {
                Holder::Crown(_) => s.crown_lease = Some(l.lease),
                Holder::Foreign => {
                    if s.foreign_lease.is_none_or(|(lease, _)| lease != l.lease) {
                        s.foreign_lease = Some((l.lease, tokio::time::Instant::now()));
                    }
                }
            }
        }
        match holder {
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
