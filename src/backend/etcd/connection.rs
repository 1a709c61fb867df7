//! Reaching etcd: one client per endpoint, calls pinned to one endpoint and moved on to the
//! next when it fails, errors mapped to [`BackendError`]s, and outage warnings that are
//! rate-limited (one line per change of state, then a periodic summary).

use super::super::BackendError;
use super::EtcdOptions;
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, TlsOptions};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};

/// While calls keep failing, one summary line this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// The clients and which endpoint calls go to.
pub(crate) struct Conn {
    /// One client per endpoint; calls go to `current` and move on when it fails (as Go's
    /// clientv3 pins one endpoint), which tonic's balancer does not do for a dead member.
    clients: Vec<Client>,
    current: AtomicUsize,
    /// The endpoints, comma-separated (for messages).
    pub(crate) endpoints: String,
    /// Who we are, for log lines.
    pub(crate) id: String,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Since when background calls fail, if they do.
    failing_since: Option<Instant>,
    /// Failures since the last line logged.
    failures: u64,
    last_line: Option<Instant>,
    last_error: String,
}

pub(crate) fn etcd_err(what: &str, e: etcd_client::Error) -> BackendError {
    if let etcd_client::Error::GRpcStatus(s) = &e {
        let msg = super::escape(s.message());
        return match s.code() {
            tonic::Code::PermissionDenied => BackendError::Forbidden(format!(
                "etcd denied {what}: {msg} (grant the user read/write on the prefix <prefix><election>)"
            )),
            tonic::Code::Unauthenticated => {
                BackendError::Forbidden(format!("etcd rejected the credentials for {what}: {msg}"))
            }
            _ if s.message().contains("authentication failed")
                || s.message().contains("user name is empty") =>
            {
                BackendError::Forbidden(format!(
                    "etcd rejected the credentials for {what}: {msg} (user from --user, password from $ETCD_PASSWORD)"
                ))
            }
            _ => BackendError::Unavailable(format!("etcd {what} failed: {msg}")),
        };
    }
    BackendError::Unavailable(format!(
        "etcd {what} failed: {}",
        super::escape(&e.to_string())
    ))
}

/// The server refused our credentials or permissions: another endpoint would too.
pub(crate) fn denied(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated))
}

/// `lease not found` from a keep-alive: the lease is gone (expired or revoked).
pub(crate) fn lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.message().contains("requested lease not found"),
        _ => false,
    }
}

impl Conn {
    /// The current endpoint's client and its index.
    pub(crate) fn client(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::SeqCst) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// After a call on endpoint `idx`: on failure, move on to the next endpoint.
    pub(crate) fn settle<E>(&self, idx: usize, r: Result<Option<&etcd_client::Error>, &E>) {
        let failed = match r {
            Ok(None) => false,
            Ok(Some(e)) => !lease_gone(e) && !denied(e),
            Err(_) => true,
        };
        if failed {
            self.skip(idx);
        }
    }

    /// Endpoint `idx` failed: calls go to the next one.
    pub(crate) fn skip(&self, idx: usize) {
        if self.clients.len() > 1 {
            let next = (idx + 1) % self.clients.len();
            let _ = self
                .current
                .compare_exchange(idx, next, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Reports how a background call went: the first failure and the recovery are logged at
    /// once; while failing, one summary line every [`SUMMARY_EVERY`].
    pub(crate) fn health(&self, err: Option<&str>) {
        let mut h = self.health.lock().unwrap();
        let now = Instant::now();
        match (err, h.failing_since) {
            (Some(e), None) => {
                *h = Health {
                    failing_since: Some(now),
                    failures: 0,
                    last_line: Some(now),
                    last_error: e.to_string(),
                };
                tracing::warn!(
                    event = "backend_unreachable",
                    id = self.id.as_str(),
                    "[{}] etcd unreachable ({}): {e}; retrying",
                    self.id,
                    self.endpoints
                );
            }
            (Some(e), Some(since)) => {
                h.failures += 1;
                h.last_error = e.to_string();
                if h.last_line
                    .is_none_or(|t| now.duration_since(t) >= SUMMARY_EVERY)
                {
                    h.last_line = Some(now);
                    tracing::warn!(
                        event = "backend_unreachable",
                        id = self.id.as_str(),
                        "[{}] etcd still unreachable after {} s ({} more failed calls; last: {})",
                        self.id,
                        now.duration_since(since).as_secs(),
                        h.failures,
                        h.last_error
                    );
                    h.failures = 0;
                }
            }
            (None, Some(since)) => {
                *h = Health::default();
                tracing::info!(
                    event = "backend_reachable",
                    id = self.id.as_str(),
                    "[{}] etcd reachable again (after {} ms)",
                    self.id,
                    now.duration_since(since).as_millis()
                );
            }
            (None, None) => {}
        }
    }

    /// Connects and waits (up to `o.wait`) until etcd answers a linearizable read, so an
    /// unreachable cluster gives one clear error instead of a silent hang.
    pub(crate) async fn connect(
        o: &EtcdOptions,
        id: String,
        probe_key: &str,
    ) -> Result<Conn, BackendError> {
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
        // HTTP/2 pings every 500 ms, 1 s to answer: a dead or black-holed member is left
        // within about 1.5 s (a killed one at once: its connection is reset).
        let mut opts = ConnectOptions::new()
            .with_keep_alive(Duration::from_millis(500), Duration::from_secs(1))
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
        let shown = super::escape(&endpoints.join(","));
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
                        last = format!("{}: {e}", super::escape(ep));
                    }
                    Err(_) => last = format!("connecting to {} timed out", super::escape(ep)),
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
        Conn::new(clients, shown, id)
            .ready(probe_key, deadline, o.wait)
            .await
    }

    /// A connection over a client the caller built (its own TLS, auth and options), ready
    /// once etcd answers a linearizable read within `wait`. The client balances its own
    /// endpoints: calls are not moved to another one here.
    pub(crate) async fn with_client(
        client: Client,
        id: String,
        probe_key: &str,
        wait: Duration,
    ) -> Result<Conn, BackendError> {
        let deadline = Instant::now() + wait;
        Conn::new(vec![client], "the client's endpoints".into(), id)
            .ready(probe_key, deadline, wait)
            .await
    }

    fn new(clients: Vec<Client>, endpoints: String, id: String) -> Conn {
        Conn {
            clients,
            current: AtomicUsize::new(0),
            endpoints,
            id,
            health: Mutex::new(Health::default()),
        }
    }

    /// Waits until etcd answers a linearizable read of `probe_key` (needs a quorum; "no
    /// leader" fails fast), up to `deadline` (`wait` from the start, for the message).
    async fn ready(
        self,
        probe_key: &str,
        deadline: Instant,
        wait: Duration,
    ) -> Result<Conn, BackendError> {
        let conn = self;
        let unreachable = |last: String| {
            BackendError::Unavailable(format!(
                "cannot reach etcd at {} within {}: {last}",
                conn.endpoints,
                humantime::format_duration(wait)
            ))
        };
        let mut last;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let probe = call!(conn, "read", left.min(Duration::from_secs(2)), |c| c
                .get(probe_key, Some(GetOptions::new().with_count_only()),));
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
        Ok(conn)
    }
}
