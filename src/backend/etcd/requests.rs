//! Resign requests through etcd: the dashboard's `r` on a leader it cannot signal (another
//! host). `…:resign` holds the term to resign (decimal); it is written only while that term's
//! key still leads (a transaction compares the key's create revision, which is the term), and
//! only the holder of that very term acts on it: a stale request names a term that is over and
//! is ignored by everyone. Its value is untrusted: anything but a decimal term of at most 20
//! digits is ignored.

use super::{EtcdBackend, Holder, Inner, LeaderKv, OP_TIMEOUT, RETRY_PAUSE_REQUESTS, escape};
use crate::backend::BackendError;
use crate::election::Term;
use etcd_client::{Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions};
use std::sync::Arc;
use tokio::time::{sleep, timeout};

/// The term a `…:resign` value names, if it is one.
pub(super) fn parse_request(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Inner {
    /// The leader key, read now, if it is `term`'s (and, with `holder`, held by that id): what
    /// acting on a remote leader starts with. Otherwise `Invalid`, saying who leads instead;
    /// `what` is the action, for the message when nobody leads ("nobody to {what}").
    async fn leader_in(
        self: &Arc<Self>,
        term: Term,
        holder: Option<&str>,
        what: &str,
    ) -> Result<LeaderKv, BackendError> {
        let (leader, _) = self.read_leader(OP_TIMEOUT).await?;
        let Some(l) = leader else {
            return Err(BackendError::Invalid(format!(
                "nobody leads {}: nobody to {what}",
                escape(&self.keys.name)
            )));
        };
        let current = escape(&l.value);
        match holder {
            _ if l.term() == term && holder.is_none_or(|h| h == current) => Ok(l),
            None => Err(BackendError::Invalid(format!(
                "term {term} is over: {current} holds term {} now",
                l.term()
            ))),
            Some(h) => Err(BackendError::Invalid(format!(
                "{h} in term {term} no longer leads: {current} holds term {}",
                l.term()
            ))),
        }
    }
}

impl EtcdBackend {
    /// Asks the holder of `term` to resign: writes `…:resign` = `term` in a transaction that
    /// succeeds only while the leader key of `term` still exists. Refuses (`Invalid`, with the
    /// reason) when nobody leads, another term leads, or the leader is not a crown participant
    /// (`etcdctl elect`, a Go client: it would never read the request).
    pub async fn request_resign(&self, term: Term) -> Result<(), BackendError> {
        let inner = &self.inner;
        let l = inner.leader_in(term, None, "ask to resign").await?;
        if let Holder::Foreign = inner.holder(&l, OP_TIMEOUT).await {
            return Err(BackendError::Invalid(format!(
                "the leader of term {term} is not a crown participant ({}): it would not see the request",
                l.foreign()
            )));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                l.key.clone(),
                CompareOp::Equal,
                l.rev,
            )])
            .and_then([TxnOp::put(
                inner.keys.resign.clone(),
                term.0.to_string(),
                None,
            )]);
        let r = call!(inner, "resign request", OP_TIMEOUT, |c| c.txn(txn.clone()))?;
        if !r.succeeded() {
            return Err(BackendError::Invalid(format!(
                "term {term} ended while asking"
            )));
        }
        Ok(())
    }
}

impl EtcdBackend {
    /// Revokes the session lease of the leader `holder` in `term` (the dashboard's `k` on a
    /// leader it cannot signal: a remote "crash"). Its key goes with the lease; a crown
    /// successor then waits out that lease's TTL before leading, so a leader that cannot
    /// notice (cut off) has stopped acting first. Refuses (`Invalid`, with the reason) unless
    /// that leader still holds `term`. Returns the lease id (hex).
    pub async fn revoke_leader(&self, holder: &str, term: Term) -> Result<String, BackendError> {
        let inner = &self.inner;
        let l = inner.leader_in(term, Some(holder), "revoke").await?;
        let lease = l.lease;
        call!(inner, "lease revoke", OP_TIMEOUT, |c| c.lease_revoke(lease))?;
        Ok(format!("{lease:x}"))
    }
}

impl Inner {
    /// Keeps `resign` = the term named by `…:resign` (a read, then a watch from the read's
    /// revision; again on the next endpoint when the watch ends).
    pub(super) async fn resign_loop(self: Arc<Self>) {
        loop {
            let key = self.keys.resign.clone();
            let read = call!(self, "read", OP_TIMEOUT, |c| c.get(key.clone(), None));
            let Ok(got) = read else {
                sleep(RETRY_PAUSE_REQUESTS).await;
                continue;
            };
            self.note_resign(got.kvs().first().map(|kv| kv.value()));
            let from = got.header().map(|h| h.revision() + 1).unwrap_or(0);
            let (idx, mut c) = self.client();
            let started = timeout(
                OP_TIMEOUT,
                c.watch(key, Some(WatchOptions::new().with_start_revision(from))),
            )
            .await;
            if let Ok(Ok(mut stream)) = started {
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.canceled() {
                        break;
                    }
                    for ev in resp.events() {
                        match ev.event_type() {
                            EventType::Put => self.note_resign(ev.kv().map(|kv| kv.value())),
                            EventType::Delete => self.note_resign(None),
                        }
                    }
                }
            }
            self.skip(idx);
            sleep(RETRY_PAUSE_REQUESTS).await;
        }
    }

    fn note_resign(&self, value: Option<&[u8]>) {
        let term = value.and_then(parse_request);
        self.resign.send_if_modified(|v| {
            let changed = *v != term;
            *v = term;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::parse_request;

    #[test]
    fn only_a_decimal_term_is_a_request() {
        assert_eq!(parse_request(b"42"), Some(42));
        assert_eq!(parse_request(b"18446744073709551615"), Some(u64::MAX));
        for junk in [
            &b""[..],
            b"-1",
            b"+4",
            b" 4",
            b"4\n",
            b"0x10",
            b"18446744073709551616",
            b"123456789012345678901",
            b"\xff",
        ] {
            assert_eq!(parse_request(junk), None, "{junk:?}");
        }
    }
}
