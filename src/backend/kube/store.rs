//! The Lease store: reading the Lease (from the watch's view or the apiserver), mapping it to
//! and from a [`LeaseRecord`], the compare-and-swap write, the watch that keeps the view live,
//! and the [`RecordStore`] impl the shared record glue drives.

use super::{HOLDER_ANNOTATION, Inner, KubeBackend, RESIGN_ANNOTATION, api_err, micro};
use crate::backend::BackendError;
use crate::backend::record::{self, Intent, RecordStore};
use crate::election::lease::Current;
use crate::election::{Identity, LeaseRecord, Term};
use async_trait::async_trait;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{PostParams, WatchEvent, WatchParams};
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct HolderInfo {
    id: String,
    pid: u32,
    host: String,
}

impl KubeBackend {
    /// Starts watching the Lease (idempotent): every change wakes [`Lock::changed`](crate::election::Lock::changed).
    pub fn watch(&self) {
        if self.inner.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        self.tasks.spawn(async move {
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={}", inner.name))
                .timeout(290);
            loop {
                inner.invalidate();
                let rv = match inner.leases.get_opt(&inner.name).await {
                    Ok(got) => {
                        let rv = got
                            .as_ref()
                            .and_then(|l| l.metadata.resource_version.clone())
                            .unwrap_or_else(|| "0".into());
                        inner.remember(got);
                        inner.notify.notify_one();
                        rv
                    }
                    Err(e) => {
                        tracing::debug!("lease watch: re-list failed: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                match inner.leases.watch(&wp, &rv).await {
                    Ok(stream) => {
                        let mut stream = std::pin::pin!(stream);
                        while let Some(ev) = stream.next().await {
                            match ev {
                                Ok(WatchEvent::Added(l) | WatchEvent::Modified(l)) => {
                                    inner.remember(Some(l));
                                    inner.notify.notify_one()
                                }
                                Ok(WatchEvent::Deleted(_)) => {
                                    *inner.cache.lock().unwrap() = Some(None);
                                    inner.notify.notify_one()
                                }
                                Ok(WatchEvent::Bookmark(_)) => {}
                                Ok(WatchEvent::Error(_)) | Err(_) => break,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!("lease watch failed: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

impl Inner {
    pub(super) fn invalidate(&self) {
        *self.cache.lock().unwrap() = None;
    }

    /// Keeps `lease` as the current view unless the view already holds a newer version.
    fn remember(&self, lease: Option<Lease>) {
        let rv = |l: &Option<Lease>| {
            l.as_ref()
                .and_then(|l| l.metadata.resource_version.as_ref())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let mut c = self.cache.lock().unwrap();
        let newer = match (&*c, rv(&lease)) {
            (Some(old), Some(new)) => rv(old).is_none_or(|o| new >= o),
            _ => true,
        };
        if newer {
            self.note_resign(lease.as_ref());
            *c = Some(lease);
        }
    }

    /// The Lease from the watch's view if it is live, else from the apiserver.
    async fn read(&self) -> Result<Option<Lease>, BackendError> {
        if let Some(l) = self.cache.lock().unwrap().clone() {
            return Ok(l);
        }
        self.get().await
    }

    pub(super) async fn get(&self) -> Result<Option<Lease>, BackendError> {
        self.leases.get_opt(&self.name).await.map_err(|e| {
            api_err(
                "get",
                &format!("leases.coordination.k8s.io {:?}", self.name),
                &self.namespace,
                e,
            )
        })
    }

    /// The Lease as the shared rule sees it. Malformed fields are logged once and read in the
    /// safest way (a missing holder = released, a bad duration = ours).
    pub(super) fn current(&self, lease: Option<&Lease>) -> Current {
        let Some(l) = lease else {
            return Current::Missing;
        };
        let spec = l.spec.clone().unwrap_or_default();
        let rv = l.metadata.resource_version.clone().unwrap_or_default();
        let revision = rv.parse::<u64>().unwrap_or_else(|_| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            rv.hash(&mut h);
            h.finish()
        });
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let dur = spec.lease_duration_seconds.unwrap_or(0);
        if dur <= 0 && !holder.is_empty() {
            self.warn_once(
                format!("dur:{rv}"),
                &format!(
                    "lease {}/{} has leaseDurationSeconds {:?}: using our own lease duration to judge expiry",
                    self.namespace, self.name, spec.lease_duration_seconds
                ),
            );
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        if transitions < 0 {
            self.warn_once(
                format!("tr:{rv}"),
                &format!(
                    "lease {}/{} has negative leaseTransitions {transitions}: reading it as 0",
                    self.namespace, self.name
                ),
            );
        }
        if !holder.is_empty() && spec.renew_time.is_none() {
            self.warn_once(
                format!("rt:{rv}"),
                &format!("lease {}/{} held by {holder:?} has no renewTime: judging expiry by our own clock only", self.namespace, self.name),
            );
        }
        let info = l
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOLDER_ANNOTATION))
            .and_then(|v| serde_json::from_str::<HolderInfo>(v).ok())
            .filter(|h| h.id == holder);
        let epoch = Timestamp::UNIX_EPOCH;
        Current::Record(LeaseRecord {
            holder: holder.clone(),
            term: Term(transitions.max(0) as u64),
            acquired_at: spec.acquire_time.map(|t| t.0).unwrap_or(epoch),
            renewed_at: spec.renew_time.map(|t| t.0).unwrap_or(epoch),
            lease_duration_ms: (dur.max(0) as u64) * 1000,
            pid: info.as_ref().map(|h| h.pid).unwrap_or(0),
            host: info.map(|h| h.host).unwrap_or_default(),
            released_at: None,
            released_by: None,
            revision,
        })
    }

    fn to_lease(&self, rec: &LeaseRecord, base: Option<&Lease>) -> Lease {
        let mut meta = base
            .map(|l| l.metadata.clone())
            .unwrap_or_else(|| ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            });
        let mut ann = meta.annotations.take().unwrap_or_default();
        if rec.is_held() {
            let info = HolderInfo {
                id: rec.holder.clone(),
                pid: rec.pid,
                host: rec.host.clone(),
            };
            ann.insert(
                HOLDER_ANNOTATION.into(),
                serde_json::to_string(&info).expect("serializes"),
            );
        } else {
            ann.remove(HOLDER_ANNOTATION);
        }
        // A resign request lives only as long as the term it names.
        if !rec.is_held() || ann.get(RESIGN_ANNOTATION) != Some(&rec.term.0.to_string()) {
            ann.remove(RESIGN_ANNOTATION);
        }
        meta.annotations = Some(ann);
        let base_spec = base.and_then(|l| l.spec.clone()).unwrap_or_default();
        Lease {
            metadata: meta,
            spec: Some(LeaseSpec {
                holder_identity: Some(rec.holder.clone()),
                lease_duration_seconds: Some(rec.lease_duration_ms.div_ceil(1000).max(1) as i32),
                acquire_time: Some(micro(rec.acquired_at)),
                renew_time: Some(micro(rec.renewed_at)),
                lease_transitions: Some(rec.term.0.min(i32::MAX as u64) as i32),
                preferred_holder: base_spec.preferred_holder,
                strategy: base_spec.strategy,
            }),
        }
    }

    async fn write(&self, rec: &LeaseRecord, base: Option<&Lease>) -> Result<(), BackendError> {
        let what = format!("leases.coordination.k8s.io {:?}", self.name);
        let lease = self.to_lease(rec, base);
        let pp = PostParams::default();
        let res = match base {
            Some(_) => self
                .leases
                .replace(&self.name, &pp, &lease)
                .await
                .map_err(|e| api_err("update", &what, &self.namespace, e)),
            None => self
                .leases
                .create(&pp, &lease)
                .await
                .map_err(|e| api_err("create", &what, &self.namespace, e)),
        };
        match res {
            Ok(written) => {
                if self.watching.load(Ordering::SeqCst) {
                    self.remember(Some(written));
                }
                Ok(())
            }
            Err(e) => {
                // A 409 means our view was stale: read from the apiserver next time.
                self.invalidate();
                Err(e)
            }
        }
    }
}

/// The Lease as a record store: the version is the Lease as read (its resourceVersion makes
/// the write a compare-and-swap).
#[async_trait]
impl RecordStore for Inner {
    type Version = Option<Lease>;

    fn me(&self) -> &Identity {
        &self.me
    }

    async fn read(&self, intent: Intent) -> Result<(Current, Option<Lease>), BackendError> {
        let base = match intent {
            Intent::Attempt { .. } => {
                let base = self.read().await?;
                self.note_resign(base.as_ref());
                base
            }
            Intent::Release => {
                // Unlabel our Pod before the Lease is free, so the leader Service never
                // selects two.
                if let Some(m) = &self.marker {
                    m.clear(Duration::from_secs(1)).await;
                }
                self.get().await?
            }
        };
        Ok((self.current(base.as_ref()), base))
    }

    async fn floor(&self, _: &mut Option<Lease>) -> Result<Option<Term>, BackendError> {
        match self.history().await {
            Ok(h) => Ok(Some(h.iter().map(|g| g.term).max().unwrap_or_default())),
            Err(e) => {
                self.warn_once(
                    "history".into(),
                    &format!("cannot read the leader history to keep terms increasing: {e}"),
                );
                Ok(None)
            }
        }
    }

    async fn write(
        &self,
        base: &mut Option<Lease>,
        write: record::Write<'_>,
    ) -> Result<(), BackendError> {
        match write {
            record::Write::Acquire { record, grant } => {
                self.write(record, base.as_ref()).await?;
                if let Some(m) = &self.marker {
                    m.set(Some(record.term));
                }
                if let Err(e) = self.record_grant(grant).await {
                    tracing::warn!(
                        "could not record the grant of term {} as an Event: {e}",
                        grant.term
                    );
                }
            }
            record::Write::Renew { record } => {
                self.write(record, base.as_ref()).await?;
                if let Some(m) = &self.marker {
                    m.set(Some(record.term));
                }
            }
            record::Write::Release { record } => self.write(record, base.as_ref()).await?,
        }
        Ok(())
    }
}
