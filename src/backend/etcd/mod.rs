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
mod leader;
mod lease;
mod members;
mod requests;
mod seen;
mod session;

pub use keys::validate_prefix;
pub(crate) use keys::{Keys, escape};

use super::{AcquireRequest, BackendError, validate_election_name};
use crate::election::{Identity, Member};
use campaign::{CampaignHandle, Phase};
use connection::Conn;
use leader::{Holder, LeaderKv};
use seen::Seen;
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
    /// `seen::predecessor_hold`).
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
    /// Published in our heartbeat (see `members.rs`).
    renew_deadline: Duration,
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
        Ok(Self::build(conn, keys, me, o.history_limit))
    }

    /// Takes part in the election `<prefix><election>` through a client you built yourself
    /// (your TLS, credentials and connect options), once etcd answers a linearizable read
    /// within `wait`; the history keeps [`HISTORY_LIMIT`] grants. `me` is `None` for an
    /// observer. Build the client with `ConnectOptions::with_require_leader(true)` and
    /// HTTP/2 keep-alive (as [`EtcdBackend::connect`] does), so that a member cut off from its
    /// quorum answers at once instead of holding calls until they time out. Calls are not
    /// moved between endpoints here: the client balances its own.
    pub async fn with_client(
        client: etcd_client::Client,
        prefix: &str,
        election: &str,
        me: Option<Identity>,
        wait: Duration,
    ) -> Result<Self, BackendError> {
        validate_election_name(election)?;
        validate_prefix(prefix)?;
        let keys = Keys::new(prefix, election);
        let id = me.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        let conn = Conn::with_client(client, id, &keys.name, wait).await?;
        Ok(Self::build(conn, keys, me, HISTORY_LIMIT))
    }

    fn build(conn: Conn, keys: Keys, me: Option<Identity>, history_limit: usize) -> Self {
        let inner = Inner {
            conn,
            keys,
            me,
            history_limit: history_limit.max(1),
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
        b
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
            renew_deadline: req.renew_deadline,
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
