//! The session lease of a campaign: granted with the lease duration as TTL, kept alive every
//! retry period by its own task, and declared lost when etcd says it is gone or when no
//! keep-alive has succeeded for a whole TTL.

use super::connection::{etcd_err, lease_gone};
use super::{Inner, OP_TIMEOUT, Timings};
use crate::backend::BackendError;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

impl Inner {
    /// Grants a session lease of `t.ttl` seconds.
    pub(super) async fn grant_session(&self, t: Timings) -> Result<i64, BackendError> {
        let sent = Instant::now();
        let r = call!(self, "lease grant", OP_TIMEOUT, |c| c
            .lease_grant(t.ttl, None))?;
        if r.ttl() > t.ttl {
            tracing::warn!(
                "[{}] etcd granted a {} s session lease instead of {} s (its minimum TTL): a crashed leader is replaced after {} s",
                self.id(),
                r.ttl(),
                t.ttl,
                r.ttl()
            );
        }
        self.kept_alive(r.id(), sent, r.ttl());
        Ok(r.id())
    }

    /// Keeps `lease` alive every retry period until `stop`; cancels the returned token when
    /// the lease is lost.
    pub(super) fn keep_session(
        self: &Arc<Self>,
        lease: i64,
        t: Timings,
        stop: CancellationToken,
    ) -> CancellationToken {
        let lost = CancellationToken::new();
        let lost2 = lost.clone();
        let inner = self.clone();
        tokio::spawn(async move {
            let ttl = Duration::from_secs(t.ttl as u64);
            let mut last_ok = Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = sleep(t.retry) => {}
                }
                let limit = t.retry.max(Duration::from_millis(500));
                let sent = Instant::now();
                let r = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = async { timeout_call!(inner, limit, |c| c.lease_keep_alive(lease)) } => r,
                };
                let gone = match r {
                    Ok(Ok(_)) => {
                        last_ok = Instant::now();
                        // Renewed to its whole TTL after `sent` (at least the TTL we asked).
                        inner.kept_alive(lease, sent, t.ttl);
                        inner.health(None);
                        false
                    }
                    Ok(Err(e)) if lease_gone(&e) => true,
                    Ok(Err(e)) => {
                        inner.health(Some(&etcd_err("lease keep-alive", e).to_string()));
                        last_ok.elapsed() >= ttl
                    }
                    Err(_) => {
                        inner.health(Some("lease keep-alive timed out"));
                        last_ok.elapsed() >= ttl
                    }
                };
                if gone {
                    lost2.cancel();
                    return;
                }
            }
        });
        lost
    }
}
