//! The etcd backend: etcd's own election protocol (the server's `v3election` service), so crown
//! and `etcdctl elect` / Go's `concurrency.Election` take part in the same elections.
//!
//! Keys, for election key `N = <prefix><election>`:
//! - `N/<lease-id-hex>`: one key per candidate, created by the `Campaign` RPC and bound to the
//!   candidate's *session lease*; its value is the participant id (so `etcdctl elect -l N`
//!   prints it). The candidate whose key has the lowest create revision leads, exactly as in
//!   Go's `concurrency.Election`.
//! - `N-members/<id>`: the [`Member`] heartbeat JSON, bound to a member lease of the same TTL, so
//!   it vanishes when its participant dies.
//! - `N-history/<term, 20 digits>`: one [`Grant`] JSON per crown grant; the last 100 are kept.
//! - `N-released`: `{"term","holder","at"}` of the last graceful resign, written in the same
//!   transaction that deletes the leader key, so the successor can tell "released" from
//!   "expired".
//!
//! **Term** (the fencing token) = the create revision of the leader key, as etcd advises for
//! fencing: a successor's key was created after the key it follows (that one had the lowest
//! create revision), so terms rise strictly with each grant and are never reused. Anything a
//! leader writes to etcd can be guarded with `Compare::create_revision(key, Equal, term)`.
//!
//! How the [`Elector`](crate::election::Elector) drives it:
//! - following (`held: None`): starts, if none runs, a background campaign on a fresh session
//!   (lease TTL = lease duration rounded up to whole seconds, kept alive every retry period).
//!   Once the `Campaign` RPC has returned *and* our key still exists with that create revision,
//!   the answer is `Acquired { term }`; before that, `Following { leader }` with the key of the
//!   lowest create revision. A campaign waiting in line is aborted as soon as its session lease
//!   is lost (Go's `Election.Campaign` would go on waiting and "win" with a deleted key), and a
//!   new session campaigns again.
//! - leading (`held: Some(term)`): one lease keep-alive round trip that must come back with
//!   TTL > 0, then a read that our key still exists with create revision `term`; anything else
//!   is `Lost`, an error is an error (the elector steps down at its renew deadline, which comes
//!   before the server can expire the lease: the server's expiry is at least the send time of
//!   the last successful keep-alive plus the TTL, and TTL ≥ lease duration > renew deadline).
//! - `release(term)`: the resign (a transaction deleting our key if its create revision is still
//!   `term`, as the server's `Resign` does) plus the `N-released` record; then the session lease
//!   is revoked, and the next campaign uses a new session.
//! - Followers learn of changes from a watch on `N/` (puts and deletes: `Observe` alone misses
//!   "no leader"), which wakes [`Backend::changed`]; the retry period is only a backstop.
//!
//! Every call carries etcd's `require-leader` metadata, so a member cut off from its quorum
//! answers "no leader" at once instead of hanging, and HTTP/2 keep-alive pings detect a dead or
//! black-holed connection within about two seconds; calls go to one endpoint at a time and move
//! on to the next when one fails.
//!
//! Known limits: a grant's `previous_end` is `released` when the predecessor resigned through
//! crown (or its key vanished while its lease was still alive), otherwise `expired` (a
//! non-crown holder that resigned and closed its session is counted as expired); grants of
//! non-crown leaders are not in the history.

use super::{AcquireRequest, Backend, BackendError, LeaseView, Outcome, validate_election_name};
use crate::election::lease::Observer;
use crate::election::{EndKind, Grant, Identity, LeaderInfo, LeaseRecord, Member, Term};
use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp, WatchOptions,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

/// How many grants the history keeps.
pub const HISTORY_KEEP: usize = 100;
/// Bound of one etcd call when the caller gives no deadline.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before re-issuing a failed `Campaign` RPC on the same session.
const CAMPAIGN_RETRY: Duration = Duration::from_millis(200);

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
}

/// The etcd backend. Cheap to clone.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// One client per endpoint; calls go to `current` and move on when it fails (as Go's
    /// clientv3 pins one endpoint), which tonic's balancer does not do for a dead member.
    clients: Vec<Client>,
    current: std::sync::atomic::AtomicUsize,
    endpoints: String,
    /// `<prefix><election>`: the election name given to the `Campaign` RPC.
    name: String,
    /// `name/`: where the candidates' keys live.
    keys_prefix: String,
    members_prefix: String,
    history_prefix: String,
    released_key: String,
    me: Option<Identity>,
    notify: Notify,
    campaign: Mutex<Option<CampaignHandle>>,
    timings: Mutex<Option<Timings>>,
    member_lease: tokio::sync::Mutex<Option<(i64, i64)>>,
    seen: Mutex<Seen>,
    /// Whether the last background call failed (to log outages once, and recovery once).
    failing: Mutex<bool>,
    watching: std::sync::atomic::AtomicBool,
}

type CampaignFuture =
    Pin<Box<dyn Future<Output = Result<etcd_client::CampaignResponse, etcd_client::Error>> + Send>>;

#[derive(Clone, Copy, Debug)]
struct Timings {
    ttl: i64,
    retry: Duration,
}

struct CampaignHandle {
    cancel: CancellationToken,
    phase: watch::Receiver<Phase>,
}

/// Where our campaign stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Getting a session lease.
    Starting,
    /// Our key `key` (on session `lease`) waits in line.
    Waiting { lease: i64, key: String },
    /// The `Campaign` RPC returned: we lead with `key`, created at revision `rev`.
    Won { lease: i64, key: String, rev: i64 },
}

/// The last leader key this participant saw, for the history of the next grant.
#[derive(Default)]
struct Seen {
    leader: Option<LeaderKv>,
    vanished_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct LeaderKv {
    key: String,
    id: String,
    rev: i64,
    lease: i64,
    mod_rev: i64,
}

#[derive(Serialize, Deserialize)]
struct Released {
    term: Term,
    holder: String,
    at: Timestamp,
}

fn etcd_err(what: &str, e: etcd_client::Error) -> BackendError {
    if let etcd_client::Error::GRpcStatus(s) = &e {
        match s.code() {
            tonic::Code::PermissionDenied => {
                return BackendError::Forbidden(format!(
                    "etcd denied {what}: {} (grant the user read/write on the election prefix)",
                    s.message()
                ));
            }
            tonic::Code::Unauthenticated => {
                return BackendError::Forbidden(format!(
                    "etcd rejected the credentials for {what}: {}",
                    s.message()
                ));
            }
            _ if s.message().contains("authentication failed")
                || s.message().contains("user name is empty") =>
            {
                return BackendError::Forbidden(format!(
                    "etcd rejected the credentials for {what}: {} (user from --user, password from $ETCD_PASSWORD)",
                    s.message()
                ));
            }
            _ => {
                return BackendError::Unavailable(format!("etcd {what} failed: {}", s.message()));
            }
        }
    }
    BackendError::Unavailable(format!("etcd {what} failed: {e}"))
}

/// The server refused our credentials or permissions: another endpoint would too.
fn denied(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated))
}

/// `lease not found` from a keep-alive: the lease is gone (expired or revoked).
fn lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.message().contains("requested lease not found"),
        _ => false,
    }
}

/// Runs one call on the current endpoint's client, bounded by a timeout; a failure (other than
/// "lease not found" or a denial) moves on to the next endpoint. Evaluates to the timeout's
/// result: `Result<Result<T, etcd_client::Error>, Elapsed>`.
macro_rules! timeout_call {
    ($inner:expr, $limit:expr, |$c:ident| $call:expr) => {{
        let inner: &Inner = &$inner;
        let (idx, mut $c) = inner.client();
        let r = timeout($limit, $call).await;
        inner.settle(idx, r.as_ref().map(|r| r.as_ref().err()));
        r
    }};
}

/// [`timeout_call!`] with errors mapped to [`BackendError`]s naming `what`.
macro_rules! call {
    ($inner:expr, $what:expr, $limit:expr, |$c:ident| $call:expr) => {{
        let limit: Duration = $limit;
        match timeout_call!($inner, limit, |$c| $call) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(etcd_err($what, e)),
            Err(_) => Err(BackendError::Unavailable(format!(
                "etcd {} timed out after {} ms",
                $what,
                limit.as_millis()
            ))),
        }
    }};
}

/// The participant id in a leader key's value: crown writes the plain id; a JSON object with an
/// `id` field is read too; anything else is shown as it is.
fn id_from_value(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&s)
        && let Some(serde_json::Value::String(id)) = o.get("id")
    {
        return id.clone();
    }
    s.trim().to_string()
}

fn history_key(prefix: &str, term: Term) -> String {
    format!("{prefix}{:020}", term.0)
}

impl EtcdBackend {
    /// Connects and waits (up to `o.wait`) until etcd answers a linearizable read, so an
    /// unreachable cluster gives one clear error instead of a silent hang. `me` is `None` for
    /// observers (`crown status`, `crown history`), which never campaign.
    pub async fn connect(o: EtcdOptions, me: Option<Identity>) -> Result<Self, BackendError> {
        validate_election_name(&o.election)?;
        let endpoints: Vec<String> = o
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(BackendError::Invalid(
                "no etcd endpoints: give --endpoints host:port,... or $ETCD_ENDPOINTS".into(),
            ));
        }
        let mut opts = ConnectOptions::new()
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
            .with_keep_alive_while_idle(true)
            .with_connect_timeout(Duration::from_secs(1))
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if o.cacert.is_some() || o.cert.is_some() {
            let read = |p: &PathBuf| {
                std::fs::read(p)
                    .map_err(|e| BackendError::Invalid(format!("cannot read {}: {e}", p.display())))
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &o.cacert {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(c), Some(k)) = (&o.cert, &o.key) {
                tls = tls.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?));
            }
            opts = opts.with_tls(tls);
        }
        if let Some((u, p)) = &o.user {
            opts = opts.with_user(u.clone(), p.clone());
        }
        let shown = endpoints.join(",");
        let deadline = Instant::now() + o.wait;
        let unreachable = |last: String| {
            BackendError::Unavailable(format!(
                "cannot reach etcd at {shown} within {}: {last}",
                humantime::format_duration(o.wait)
            ))
        };
        let mut last = String::from("no answer");
        // One client per endpoint. Without auth, connecting is lazy and never fails here; with
        // auth it authenticates, so endpoints that are down at start are left out.
        let mut clients = vec![];
        loop {
            for ep in &endpoints {
                let left = deadline.saturating_duration_since(Instant::now());
                let limit = left.min(Duration::from_secs(2));
                match timeout(limit, Client::connect([ep], Some(opts.clone()))).await {
                    Ok(Ok(c)) => clients.push(c),
                    Ok(Err(e)) => {
                        let e = etcd_err("connect", e);
                        if matches!(e, BackendError::Forbidden(_) | BackendError::Invalid(_)) {
                            return Err(e);
                        }
                        last = format!("{ep}: {e}");
                    }
                    Err(_) => last = format!("connecting to {ep} timed out"),
                }
            }
            if !clients.is_empty() {
                break;
            }
            if Instant::now() + Duration::from_millis(200) >= deadline {
                return Err(unreachable(last));
            }
            sleep(Duration::from_millis(200)).await;
        }
        let name = format!("{}{}", o.prefix, o.election);
        let inner = Inner {
            clients,
            current: std::sync::atomic::AtomicUsize::new(0),
            endpoints: shown.clone(),
            keys_prefix: format!("{name}/"),
            members_prefix: format!("{name}-members/"),
            history_prefix: format!("{name}-history/"),
            released_key: format!("{name}-released"),
            name,
            me,
            notify: Notify::new(),
            campaign: Mutex::new(None),
            timings: Mutex::new(None),
            member_lease: tokio::sync::Mutex::new(None),
            seen: Mutex::new(Seen::default()),
            failing: Mutex::new(false),
            watching: std::sync::atomic::AtomicBool::new(false),
        };
        // Probe with a linearizable read (needs a quorum; "no leader" fails fast).
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let probe = call!(inner, "read", left.min(Duration::from_secs(2)), |c| c.get(
                inner.name.clone(),
                Some(GetOptions::new().with_count_only()),
            ));
            match probe {
                Ok(_) => break,
                Err(e @ BackendError::Forbidden(_)) => return Err(e),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() + Duration::from_millis(200) >= deadline {
                return Err(unreachable(last));
            }
            sleep(Duration::from_millis(200)).await;
        }
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
        &self.inner.name
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

    fn start_campaign(&self, t: Timings) -> watch::Receiver<Phase> {
        let mut g = self.inner.campaign.lock().unwrap();
        if let Some(c) = g.as_ref() {
            return c.phase.clone();
        }
        let (tx, rx) = watch::channel(Phase::Starting);
        let cancel = CancellationToken::new();
        let inner = self.inner.clone();
        let c2 = cancel.clone();
        tokio::spawn(async move { inner.campaign_loop(t, c2, tx).await });
        *g = Some(CampaignHandle {
            cancel,
            phase: rx.clone(),
        });
        rx
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<Outcome, BackendError> {
        let t = self.timings(req);
        let me = self.inner.me.clone().expect("participant");
        let rx = match self.phase() {
            Some((rx, _)) => Some(rx),
            None if !req.hold_off => Some(self.start_campaign(t)),
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
                    tokio::spawn(async move { inner.record_grant(g, limit).await });
                    return Ok(Outcome::Acquired { term, grant });
                }
                // The campaign "won" with a key that is gone (its session lease expired while it
                // waited): a zombie candidate. Start over with a new session.
                tracing::warn!(
                    "[{}] campaign returned but our key {key} (revision {rev}) is gone; campaigning again with a new session",
                    me.id
                );
                self.stop_campaign();
                return Ok(Outcome::Following {
                    leader: None,
                    recheck_in: Some(Duration::ZERO),
                });
            }
            let leader = self.inner.read_leader(limit).await?;
            if let (Some(l), Some(Phase::Waiting { key, .. }), Some(rx)) = (&leader, &phase, &rx)
                && &l.key == key
            {
                // Our key is first in line: the campaign is about to return. Wait for it.
                let mut rx = rx.clone();
                let _ = timeout(limit, rx.wait_for(|p| !matches!(p, Phase::Waiting { .. }))).await;
                continue;
            }
            let ours = match &phase {
                Some(Phase::Waiting { key, .. } | Phase::Won { key, .. }) => Some(key.clone()),
                _ => None,
            };
            // A key of ours that is not our current campaign's is a session we gave up (its
            // revoke failed while etcd was unreachable): it expires by itself; we do not lead.
            let info = match leader {
                Some(l) if Some(&l.key) != ours.as_ref() && l.id != me.id => {
                    Some(self.inner.leader_info(&l).await)
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
        match timeout_call!(self.inner, limit, |c| c.lease_keep_alive(lease)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if lease_gone(&e) => return Ok(Outcome::Lost { leader: None }),
            Ok(Err(e)) => return Err(etcd_err("lease keep-alive", e)),
            Err(_) => {
                return Err(BackendError::Unavailable(format!(
                    "etcd lease keep-alive timed out ({})",
                    self.inner.endpoints
                )));
            }
        }
        let limit = req
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(OP_TIMEOUT);
        let got = call!(self.inner, "read", limit, |c| c.get(key, None))?;
        match got.kvs().first() {
            Some(kv) if kv.create_revision() == rev && kv.lease() == lease => {
                Ok(Outcome::Renewed { term })
            }
            _ => Ok(Outcome::Lost { leader: None }),
        }
    }
}

impl Inner {
    /// The current endpoint's client and its index.
    fn client(&self) -> (usize, Client) {
        let i = self.current.load(std::sync::atomic::Ordering::SeqCst) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// After a call on endpoint `idx`: on failure, move on to the next endpoint.
    fn settle<E>(&self, idx: usize, r: Result<Option<&etcd_client::Error>, &E>) {
        let failed = match r {
            Ok(None) => false,
            Ok(Some(e)) => !lease_gone(e) && !denied(e),
            Err(_) => true,
        };
        if failed && self.clients.len() > 1 {
            let next = (idx + 1) % self.clients.len();
            let _ = self.current.compare_exchange(
                idx,
                next,
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            );
        }
    }

    fn id(&self) -> &str {
        self.me.as_ref().map(|m| m.id.as_str()).unwrap_or("")
    }

    /// Logs the first failure of a background call and the first success after failures.
    fn health(&self, err: Option<&str>) {
        let mut f = self.failing.lock().unwrap();
        match (err, *f) {
            (Some(e), false) => {
                *f = true;
                tracing::warn!(
                    event = "backend_unreachable",
                    id = self.id(),
                    "[{}] etcd unreachable ({}): {e}; retrying",
                    self.id(),
                    self.endpoints
                );
            }
            (None, true) => {
                *f = false;
                tracing::info!(
                    event = "backend_reachable",
                    id = self.id(),
                    "[{}] etcd reachable again",
                    self.id()
                );
            }
            _ => {}
        }
    }

    /// The candidate key with the lowest create revision: the leader.
    async fn read_leader(&self, limit: Duration) -> Result<Option<LeaderKv>, BackendError> {
        let got = call!(self, "read", limit, |c| c.get(
            self.keys_prefix.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_limit(1),
            ),
        ))?;
        let l = got.kvs().first().map(|kv| LeaderKv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            id: id_from_value(kv.value()),
            rev: kv.create_revision(),
            lease: kv.lease(),
            mod_rev: kv.mod_revision(),
        });
        if let Some(l) = &l {
            let mut s = self.seen.lock().unwrap();
            // Only other participants' keys: ours is never our own predecessor.
            if s.leader.as_ref().map(|x| &x.key) != Some(&l.key)
                && self.me.as_ref().is_some_and(|me| me.id != l.id)
            {
                s.leader = Some(l.clone());
                s.vanished_at = None;
            }
        }
        Ok(l)
    }

    async fn member(&self, id: &str) -> Option<Member> {
        let got = call!(self, "read", OP_TIMEOUT, |c| c
            .get(format!("{}{id}", self.members_prefix), None))
        .ok()?;
        got.kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok())
    }

    async fn grant_of(&self, term: Term) -> Option<Grant> {
        let got = call!(self, "read", OP_TIMEOUT, |c| c
            .get(history_key(&self.history_prefix, term), None))
        .ok()?;
        got.kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok())
    }

    async fn leader_info(&self, l: &LeaderKv) -> LeaderInfo {
        let m = self.member(&l.id).await;
        LeaderInfo {
            id: l.id.clone(),
            term: Term(l.rev as u64),
            pid: m.as_ref().map(|m| m.pid),
            host: m.as_ref().map(|m| m.host.clone()),
            since: None,
        }
    }

    async fn released(&self) -> Option<Released> {
        let got = call!(self, "read", OP_TIMEOUT, |c| c
            .get(self.released_key.clone(), None))
        .ok()?;
        got.kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok())
    }

    /// Follows every change under `N/` and wakes the elector; re-creates the watch after errors.
    async fn watch_loop(self: Arc<Self>) {
        loop {
            let (idx, mut c) = self.client();
            let started = timeout(
                OP_TIMEOUT,
                c.watch(
                    self.keys_prefix.clone(),
                    Some(WatchOptions::new().with_prefix()),
                ),
            )
            .await;
            if let Ok(Ok(mut stream)) = started {
                // Changes may have been missed while there was no watch.
                self.notify.notify_one();
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.canceled() {
                        break;
                    }
                    for ev in resp.events() {
                        if ev.event_type() == EventType::Delete
                            && let Some(kv) = ev.kv()
                        {
                            let mut s = self.seen.lock().unwrap();
                            if s.leader.as_ref().map(|l| l.key.as_bytes()) == Some(kv.key()) {
                                s.vanished_at = Some(Timestamp::now());
                            }
                        }
                    }
                    self.notify.notify_one();
                }
            }
            // The watch ended (member gone, no leader, connection cut): try the next endpoint.
            self.settle::<()>(idx, Err(&()));
            sleep(Duration::from_millis(250)).await;
        }
    }

    fn campaign_rpc(&self, lease: i64) -> (usize, CampaignFuture) {
        let (idx, c) = self.client();
        let mut ec = c.election_client();
        let name = self.name.clone();
        let value = self.id().to_string();
        (
            idx,
            Box::pin(async move { ec.campaign(name, value, lease).await }),
        )
    }

    fn revoke_in_background(self: &Arc<Self>, lease: i64) {
        let inner = self.clone();
        tokio::spawn(async move {
            let _ = call!(inner, "lease revoke", OP_TIMEOUT, |c| c.lease_revoke(lease));
        });
    }

    /// One campaign: a session lease, kept alive every retry period, and the `Campaign` RPC.
    /// Starts over with a new session whenever the lease is lost; ends when cancelled.
    async fn campaign_loop(
        self: Arc<Self>,
        t: Timings,
        cancel: CancellationToken,
        tx: watch::Sender<Phase>,
    ) {
        let id = self.id().to_string();
        'session: loop {
            tx.send_replace(Phase::Starting);
            let granted = tokio::select! {
                _ = cancel.cancelled() => return,
                r = async { call!(self, "lease grant", OP_TIMEOUT, |c| c.lease_grant(t.ttl, None)) } => r,
            };
            let lease = match granted {
                Ok(r) => {
                    self.health(None);
                    if r.ttl() > t.ttl {
                        tracing::warn!(
                            "[{id}] etcd granted a {} s session lease instead of {} s (its minimum TTL): a crashed leader is replaced after {} s",
                            r.ttl(),
                            t.ttl,
                            r.ttl()
                        );
                    }
                    r.id()
                }
                Err(e) => {
                    self.health(Some(&e.to_string()));
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = sleep(t.retry) => continue 'session,
                    }
                }
            };
            let key = format!("{}{lease:x}", self.keys_prefix);
            tx.send_replace(Phase::Waiting {
                lease,
                key: key.clone(),
            });
            let ttl = Duration::from_secs(t.ttl as u64);
            let mut last_ok = Instant::now();
            let mut next_ping = Instant::now() + t.retry;
            let mut campaign = Some(self.campaign_rpc(lease));
            let mut campaign_again: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => {
                        self.revoke_in_background(lease);
                        return;
                    }
                    r = async { campaign.as_mut().expect("guarded").1.as_mut().await }, if campaign.is_some() => {
                        let (idx, _) = campaign.take().expect("guarded");
                        match r {
                            Ok(resp) => {
                                let rev = resp.leader().map(|l| l.rev()).unwrap_or_default();
                                tx.send_replace(Phase::Won { lease, key: key.clone(), rev });
                                self.notify.notify_one();
                            }
                            Err(e) => {
                                self.settle::<()>(idx, Ok(Some(&e)));
                                self.health(Some(&etcd_err("campaign", e).to_string()));
                                campaign_again = Some(Instant::now() + CAMPAIGN_RETRY);
                            }
                        }
                    }
                    _ = async { sleep_until(campaign_again.expect("guarded")).await }, if campaign_again.is_some() => {
                        campaign_again = None;
                        campaign = Some(self.campaign_rpc(lease));
                    }
                    _ = sleep_until(next_ping) => {
                        let r = timeout_call!(self, t.retry.max(Duration::from_millis(500)), |c| c.lease_keep_alive(lease));
                        next_ping = Instant::now() + t.retry;
                        let lost = match r {
                            Ok(Ok(_)) => {
                                last_ok = Instant::now();
                                self.health(None);
                                false
                            }
                            Ok(Err(e)) if lease_gone(&e) => true,
                            Ok(Err(e)) => {
                                self.health(Some(&etcd_err("lease keep-alive", e).to_string()));
                                last_ok.elapsed() >= ttl
                            }
                            Err(_) => {
                                self.health(Some("lease keep-alive timed out"));
                                last_ok.elapsed() >= ttl
                            }
                        };
                        if lost {
                            let was = tx.borrow().clone();
                            let doing = if matches!(was, Phase::Won { .. }) { "leading" } else { "waiting" };
                            tracing::warn!(
                                event = "session_lost",
                                id = id.as_str(),
                                "[{id}] etcd session lease {lease:x} lost while {doing}; campaigning again with a new session"
                            );
                            self.revoke_in_background(lease);
                            self.notify.notify_one();
                            continue 'session;
                        }
                    }
                }
            }
        }
    }

    /// Writes the history entry of a grant, with what can be told about its predecessor, and
    /// trims the history to the last [`HISTORY_KEEP`] grants. Best effort.
    async fn record_grant(self: Arc<Self>, mut g: Grant, limit: Duration) {
        // Off the hot path: give the reads and writes time.
        let limit = limit.max(OP_TIMEOUT);
        let (prev, vanished_at) = {
            let s = self.seen.lock().unwrap();
            (
                s.leader
                    .clone()
                    .filter(|l| (l.rev as u64) < g.term.0)
                    .map(|l| (l.id, Term(l.rev as u64), l.lease)),
                s.vanished_at,
            )
        };
        let prev = match prev {
            Some(p) => Some(p),
            None => call!(self, "read", limit, |c| c.get(
                self.history_prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(1),
                ),
            ))
            .ok()
            .and_then(|r| {
                r.kvs()
                    .first()
                    .and_then(|kv| serde_json::from_slice::<Grant>(kv.value()).ok())
            })
            .filter(|p| p.term < g.term)
            .map(|p| (p.holder, p.term, 0)),
        };
        if let Some((holder, term, lease)) = prev {
            let released = self.released().await.filter(|r| r.term == term);
            let lease_alive = lease != 0 && {
                call!(self, "lease ttl", limit, |c| c
                    .lease_time_to_live(lease, None))
                .is_ok_and(|r| r.ttl() > 0)
            };
            let (end, ended_at) = match released {
                Some(r) => (EndKind::Released, Some(r.at)),
                None if lease_alive => (EndKind::Released, vanished_at),
                None => (EndKind::Expired, vanished_at),
            };
            g.previous_holder = Some(holder);
            g.previous_end = Some(end);
            g.gap_ms = ended_at.map(|t| g.acquired_at.duration_since(t).as_millis().max(0) as u64);
        }
        let Ok(json) = serde_json::to_string(&g) else {
            return;
        };
        if let Err(e) = call!(self, "history write", limit, |c| c.put(
            history_key(&self.history_prefix, g.term),
            json,
            None
        )) {
            tracing::warn!("[{}] could not record grant {}: {e}", self.id(), g.term);
            return;
        }
        // Keep the last HISTORY_KEEP.
        let Ok(all) = call!(self, "history read", limit, |c| c.get(
            self.history_prefix.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_sort(SortTarget::Key, SortOrder::Ascend),
            ),
        )) else {
            return;
        };
        let n = all.kvs().len();
        if n > HISTORY_KEEP {
            let first = all.kvs()[0].key().to_vec();
            let keep_from = all.kvs()[n - HISTORY_KEEP].key().to_vec();
            let _ = call!(self, "history trim", limit, |c| c
                .delete(first, Some(DeleteOptions::new().with_range(keep_from))));
        }
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
                let rec = Released {
                    term,
                    holder: self.inner.id().to_string(),
                    at: Timestamp::now(),
                };
                let json = serde_json::to_string(&rec).expect("serializes");
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([
                        TxnOp::delete(key, None),
                        TxnOp::put(self.inner.released_key.clone(), json, None),
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
        let Some(l) = self.inner.read_leader(OP_TIMEOUT).await? else {
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
                    released_by: Some(r.holder),
                    revision: 0,
                }),
                None => LeaseView::None,
            });
        };
        let term = Term(l.rev as u64);
        let m = self.inner.member(&l.id).await;
        let g = self.inner.grant_of(term).await;
        let ttl_ms = {
            call!(self.inner, "lease ttl", OP_TIMEOUT, |c| c
                .lease_time_to_live(l.lease, None))
            .map(|r| r.granted_ttl().max(0) as u64 * 1000)
            .unwrap_or(0)
        };
        let now = Timestamp::now();
        Ok(LeaseView::Record(LeaseRecord {
            holder: l.id.clone(),
            term,
            acquired_at: g.as_ref().map(|g| g.acquired_at).unwrap_or(now),
            renewed_at: m.as_ref().map(|m| m.last_heartbeat).unwrap_or(now),
            lease_duration_ms: ttl_ms,
            pid: m
                .as_ref()
                .map(|m| m.pid)
                .or(g.as_ref().and_then(|g| g.pid))
                .unwrap_or(0),
            host: m
                .as_ref()
                .map(|m| m.host.clone())
                .or(g.as_ref().and_then(|g| g.host.clone()))
                .unwrap_or_default(),
            released_at: None,
            released_by: None,
            revision: l.mod_rev as u64,
        }))
    }

    async fn publish_member(&self, member: &Member) -> Result<(), BackendError> {
        let json = serde_json::to_string(member).expect("serializes");
        let mut lease = self.inner.member_lease.lock().await;
        if let Some((id, _)) = *lease {
            match timeout_call!(self.inner, OP_TIMEOUT, |c| c.lease_keep_alive(id)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if lease_gone(&e) => *lease = None,
                Ok(Err(e)) => return Err(etcd_err("member lease keep-alive", e)),
                Err(_) => {
                    return Err(BackendError::Unavailable(
                        "etcd member lease keep-alive timed out".into(),
                    ));
                }
            }
        }
        // The TTL follows the timings once the elector has given them: re-grant if it changed.
        let ttl = self.inner.member_ttl();
        if let Some((old, old_ttl)) = *lease
            && old_ttl != ttl
        {
            *lease = None;
            self.inner.revoke_in_background(old);
        }
        let id = match *lease {
            Some((id, _)) => id,
            None => {
                let r = call!(self.inner, "lease grant", OP_TIMEOUT, |c| c
                    .lease_grant(ttl, None))?;
                *lease = Some((r.id(), ttl));
                r.id()
            }
        };
        call!(self.inner, "member write", OP_TIMEOUT, |c| c.put(
            format!("{}{}", self.inner.members_prefix, member.id),
            json,
            Some(PutOptions::new().with_lease(id)),
        ))
        .map(|_| ())
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
        call!(self.inner, "member delete", OP_TIMEOUT, |c| c
            .delete(format!("{}{id}", self.inner.members_prefix), None))?;
        if let Some((l, _)) = self.inner.member_lease.lock().await.take() {
            let _ = call!(self.inner, "lease revoke", OP_TIMEOUT, |c| c
                .lease_revoke(l));
        }
        Ok(())
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let got = call!(self.inner, "read", OP_TIMEOUT, |c| c.get(
            self.inner.members_prefix.clone(),
            Some(GetOptions::new().with_prefix()),
        ))?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        let got = call!(self.inner, "read", OP_TIMEOUT, |c| c.get(
            self.inner.history_prefix.clone(),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Ascend),
            ),
        ))?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_values() {
        assert_eq!(id_from_value(b"a"), "a");
        assert_eq!(id_from_value(b"{\"id\":\"b\",\"pid\":1}"), "b");
        assert_eq!(id_from_value(b"hello world\n"), "hello world");
    }

    #[test]
    fn history_keys_sort_by_term() {
        assert!(history_key("h/", Term(9)) < history_key("h/", Term(10)));
        assert_eq!(history_key("h/", Term(7)), "h/00000000000000000007");
    }
}
