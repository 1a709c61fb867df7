//! `--http ADDR`: `GET /leader`, `/healthz`, `/readyz` and `/metrics` (Prometheus text).

use crate::election::{Config, Role, Status};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub use super::metrics::Metrics;

/// What the handlers read.
pub struct AppState {
    /// The elector's status.
    pub status: watch::Receiver<Status>,
    /// Event counters.
    pub metrics: Arc<Metrics>,
    /// Election name.
    pub election: String,
    /// Timings.
    pub cfg: Config,
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/leader", get(leader))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A client must send a whole request head within this long, also between requests on a
/// kept-alive connection (so idle connections close after it too).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// No connection lives longer than this, however it behaves (a client that never reads its
/// answer, for one).
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Largest request head read (the endpoints take no body).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Connections the kernel completes and queues for us beyond those we serve (the listen
/// backlog; capped by `net.core.somaxconn`). Waiting there costs crown no descriptor.
pub const ACCEPT_QUEUE: u32 = 1024;

/// Binds `addr` with an [`ACCEPT_QUEUE`]-deep accept queue.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(ACCEPT_QUEUE)
}

/// Serves on `listener` until `shutdown`, with at most `max_connections` open at once (more
/// wait in the kernel's accept queue, costing no descriptor), none accepted while the process
/// is near its open-file limit (`limits`), a [`HEADER_READ_TIMEOUT`] and a
/// [`MAX_CONNECTION_LIFETIME`]: slow or idle clients cannot starve the elector of descriptors.
pub fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: tokio_util::sync::CancellationToken,
    max_connections: usize,
    limits: super::fds::Limits,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let app = router(state);
        let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
        let mut conns = tokio::task::JoinSet::new();
        let mut saturated = false;
        loop {
            while conns.try_join_next().is_some() {}
            if permits.available_permits() == 0 && !saturated {
                saturated = true;
                tracing::warn!(
                    event = "http_saturated",
                    "http: {max_connections} connections open (the cap); further ones wait"
                );
            }
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            if permits.available_permits() > 0 {
                saturated = false;
            }
            if super::fds::near_limit(limits) {
                tracing::warn!(
                    event = "http_fd_reserve",
                    "http: near the open-file limit ({}): not accepting for 100 ms",
                    limits.soft
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: wait instead of spinning.
                        tracing::warn!(event = "http_accept_failed", "http: accept failed: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                            _ = shutdown.cancelled() => break,
                        }
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let svc = hyper_util::service::TowerToHyperService::new(app.clone());
            let shutdown = shutdown.clone();
            conns.spawn(async move {
                let _permit = permit;
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .keep_alive(true);
                let conn = b.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = tokio::time::sleep(MAX_CONNECTION_LIFETIME) => {}
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_millis(500), conn.as_mut()).await;
                    }
                }
            });
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        conns.abort_all();
    })
}

async fn leader(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let s = st.status.borrow().clone();
    let l = s.leader.as_ref();
    Json(serde_json::json!({
        "name": l.map(|l| l.id.clone()),
        "term": l.map(|l| l.term.0).unwrap_or(s.term.0),
        "since": l.and_then(|l| l.since).map(|t| t.to_string()),
        "self": s.role == Role::Leader,
    }))
}

async fn healthz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let s = st.status.borrow().clone();
    if s.role == Role::Leader
        && let Some(deadline) = s.deadline
    {
        // The deadline is last renewal + renew deadline; the elector steps down by then, so
        // this only trips if it is stuck.
        let last_renew = deadline - st.cfg.renew_deadline();
        let stale = Instant::now().saturating_duration_since(last_renew);
        if stale > st.cfg.lease_duration() + st.cfg.retry_period() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("leader without renewal for {stale:?}\n"),
            );
        }
    }
    (StatusCode::OK, "ok\n".to_string())
}

async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    if st.status.borrow().role == Role::Leader {
        (StatusCode::OK, "leader\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not leader\n")
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let s = st.status.borrow().clone();
    let body = st.metrics.render(&st.election, &s);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], body)
}
