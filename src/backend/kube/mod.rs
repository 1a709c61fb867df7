//! The Kubernetes backend: a `coordination.k8s.io/v1` Lease, wire-compatible with client-go's
//! `LeaseLock`, so crown and client-go participants can share one Lease.
//!
//! - Fields: `holderIdentity` (empty = released), `leaseDurationSeconds`, `acquireTime`,
//!   `renewTime`, `leaseTransitions`. Every write is a `replace` carrying the
//!   `resourceVersion` that was read (a 409 means someone else wrote first: re-read), or a
//!   `create` when there is no Lease yet; never a blind patch or a forced apply.
//! - `term` = `leaseTransitions` as written by the acquisition: +1 per grant, as client-go
//!   does when the holder changes.
//! - The rule is the shared [`crate::election::lease::decide`], through the record glue
//!   ([`super::record`]; the Lease is the version): expiry is judged by this observer's clock
//!   since it last saw the Lease change, never from `renewTime`.
//! - Followers watch the Lease (a field-selected watch), so a release is seen at once; the
//!   elector's retry period re-reads it as a backstop.
//! - crown adds an annotation `crown.io/holder` (`{"id","pid","host"}`) for the dashboard; it is
//!   trusted only when its id matches `holderIdentity` (client-go keeps stale annotations).
//! - In a Pod (`--pod-name`, `$POD_NAME`): the leader labels its Pod `crown.io/leader=true`
//!   (see [`pods`]) so a `crown-leader` Service selects exactly the leader, and the member
//!   heartbeat is an annotation on the participant's own Pod, so the participant needs rights
//!   only on the election Lease by name (plus `create`, and pods list/patch).
//! - Outside a Pod, member heartbeats are one small Lease per participant,
//!   `<lease>-member-<id>`, labelled `app.kubernetes.io/name=crown` and
//!   `crown/election=<election>`, its `crown.io/member` annotation holding the [`Member`] JSON;
//!   deleted on clean exit.
//! - Resign requests: [`KubeBackend::request_resign`] writes the annotation `crown.io/resign`
//!   = the term to resign; only the holder of that very term acts on it (it releases at its
//!   next read, within one retry period); a request for any other term is ignored and dropped
//!   at the next write.
//! - History: one `events.k8s.io/v1` Event per grant, reason `BecameLeader` (as client-go
//!   records), labelled like the members, its `crown.io/grant` annotation holding the
//!   [`Grant`]. Events expire with the apiserver's `--event-ttl` (1 h by default).
//! - `crown run --once`: the success record is the annotation `crown.io/duty` on the Lease
//!   (see `duty.rs`).

pub mod config;
mod duty;
pub mod pods;

pub use config::{
    ClientOptions, Namespace, NamespaceSource, client_options, resolve_namespace,
    set_client_options,
};

use super::record::{self, Intent, RecordStore};
use super::{AcquireRequest, BackendError, Duties, Heartbeat, LeaseView, Lock, Observe, Outcome};
use crate::election::lease::{Current, Observer};
use crate::election::{Grant, Identity, LeaseRecord, Member, Role, Term};
use async_trait::async_trait;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

const HOLDER_ANNOTATION: &str = "crown.io/holder";
const MEMBER_ANNOTATION: &str = "crown.io/member";
const GRANT_ANNOTATION: &str = "crown.io/grant";
const RESIGN_ANNOTATION: &str = "crown.io/resign";
const ELECTION_LABEL: &str = "crown/election";
/// The label every crown Pod and object carries (`=crown`).
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label on the leader's Pod (`=true`), selected by the `crown-leader` Service.
pub const LEADER_LABEL: &str = "crown.io/leader";
/// Member heartbeats are written at most this often unless role or term changes.
const MEMBER_MIN_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct HolderInfo {
    id: String,
    pid: u32,
    host: String,
}

/// The Kubernetes Lease backend. Cheap to clone.
#[derive(Clone)]
pub struct KubeBackend {
    inner: Arc<Inner>,
    /// The Lease watch; dropping the last clone of the backend stops it.
    tasks: Arc<crate::backend::tasks::Tasks>,
}

struct Inner {
    leases: Api<Lease>,
    events: Api<KubeEvent>,
    pods: Api<Pod>,
    namespace: String,
    namespace_source: NamespaceSource,
    /// The Pod we run in (`--pod-name`): leader label and heartbeat annotation.
    pod: Option<String>,
    marker: Option<Arc<pods::PodMarker>>,
    /// The term whose holder (us) was asked to resign, as last read from the Lease.
    resign: watch::Sender<Option<u64>>,
    name: String,
    election: String,
    me: Identity,
    notify: Arc<Notify>,
    watching: AtomicBool,
    /// The Lease as the watch (and our own writes) last showed it; `None` when unknown (no
    /// watch, or it broke), then reads go to the apiserver. Writes are compare-and-swap on
    /// the resourceVersion, so a stale view costs a 409, never safety.
    cache: Mutex<Option<Option<Lease>>>,
    warned: Mutex<HashSet<String>>,
    last_member: Mutex<Option<(Role, Term, Instant)>>,
    /// Our member Lease as we last wrote it: the next heartbeat replaces it without a GET.
    member_lease: Mutex<Option<Lease>>,
}

/// Maps a kube error to one clear line naming the verb and the resource.
pub(crate) fn api_err(verb: &str, resource: &str, ns: &str, e: kube::Error) -> BackendError {
    match e {
        kube::Error::Api(s) if s.code == 403 => BackendError::Forbidden(format!(
            "forbidden: cannot {verb} {resource} in namespace {ns:?} (grant the verb in a Role bound to this identity): {}",
            s.message
        )),
        kube::Error::Api(s) if s.code == 409 => {
            BackendError::Conflict(format!("{verb} {resource}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 404 => BackendError::Unavailable(format!(
            "cannot {verb} {resource} in namespace {ns:?}: not found: {}",
            s.message
        )),
        kube::Error::Api(s) => BackendError::Unavailable(format!(
            "cannot {verb} {resource}: {} ({})",
            s.message, s.code
        )),
        other => BackendError::Unavailable(format!(
            "cannot {verb} {resource}: Kubernetes API unreachable: {other}"
        )),
    }
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

impl KubeBackend {
    /// Connects by kubectl's rules (see [`config`]; `namespace` is the value of
    /// `-n`/`$NAMESPACE`, empty when neither is given) with the process-wide
    /// [`ClientOptions`], and checks within `wait` that the Lease can be read.
    pub async fn connect(
        namespace: &str,
        lease_name: &str,
        election: &str,
        me: Identity,
        wait: Duration,
    ) -> Result<Self, BackendError> {
        Self::connect_with(&client_options(), namespace, lease_name, election, me, wait).await
    }

    /// [`KubeBackend::connect`] with explicit client options.
    pub async fn connect_with(
        opts: &ClientOptions,
        namespace: &str,
        lease_name: &str,
        election: &str,
        me: Identity,
        wait: Duration,
    ) -> Result<Self, BackendError> {
        super::validate_election_name(lease_name)?;
        let cfg = tokio::time::timeout(wait, config::load_config(opts))
            .await
            .map_err(|_| {
                BackendError::Unavailable(
                    "timed out loading the Kubernetes client configuration".into(),
                )
            })??;
        let ns = match config::resolve_namespace_with(
            Some(namespace),
            std::path::Path::new(config::SERVICE_ACCOUNT_NAMESPACE),
            None,
            None,
        ) {
            // Neither the flag nor a Pod's service account: the context's namespace, which
            // is what the loaded configuration says ("default" when the context has none).
            n if n.source == NamespaceSource::Default => Namespace {
                source: if cfg.default_namespace == "default" {
                    NamespaceSource::Default
                } else {
                    NamespaceSource::Context
                },
                name: cfg.default_namespace.clone(),
            },
            n => n,
        };
        let client = Client::try_from(cfg).map_err(|e| {
            BackendError::Unavailable(format!("cannot build a Kubernetes client: {e}"))
        })?;
        let pod = opts
            .pod_name
            .clone()
            .filter(|p| !p.is_empty() && !me.id.is_empty());
        Self::build(client, ns, pod, lease_name, election, me, wait).await
    }

    /// Campaigns with an existing client (your own configuration, credentials or layers) for
    /// the Lease `lease_name` in `namespace`, and checks within `wait` that the Lease can be
    /// read. Does not mark a Pod (see [`ClientOptions`] for that, with [`Self::connect_with`]).
    pub async fn with_client(
        client: Client,
        namespace: &str,
        lease_name: &str,
        election: &str,
        me: Identity,
        wait: Duration,
    ) -> Result<Self, BackendError> {
        super::validate_election_name(lease_name)?;
        let ns = Namespace {
            name: namespace.to_string(),
            source: NamespaceSource::Flag,
        };
        Self::build(client, ns, None, lease_name, election, me, wait).await
    }

    async fn build(
        client: Client,
        ns: Namespace,
        pod: Option<String>,
        lease_name: &str,
        election: &str,
        me: Identity,
        wait: Duration,
    ) -> Result<Self, BackendError> {
        let namespace = ns.name.as_str();
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let marker = pod
            .as_ref()
            .map(|p| pods::PodMarker::start(pods.clone(), namespace, p, lease_name));
        let b = KubeBackend {
            inner: Arc::new(Inner {
                leases: Api::namespaced(client.clone(), namespace),
                events: Api::namespaced(client, namespace),
                pods,
                namespace: namespace.into(),
                namespace_source: ns.source,
                pod,
                marker,
                resign: watch::channel(None).0,
                name: lease_name.into(),
                election: election.into(),
                me,
                notify: Arc::new(Notify::new()),
                watching: AtomicBool::new(false),
                cache: Mutex::new(None),
                warned: Mutex::new(HashSet::new()),
                last_member: Mutex::new(None),
                member_lease: Mutex::new(None),
            }),
            tasks: Arc::default(),
        };
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, b.inner.get()).await {
                Ok(Ok(_)) => return Ok(b),
                Ok(Err(e @ BackendError::Forbidden(_))) => return Err(e),
                Ok(Err(e)) if Instant::now() + Duration::from_millis(500) >= deadline => {
                    return Err(e);
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(_) => {
                    return Err(BackendError::Unavailable(format!(
                        "Kubernetes API did not answer within {wait:?} (use --wait-for-backend to wait longer)"
                    )));
                }
            }
        }
    }

    /// The namespace in use and which rule chose it.
    pub fn namespace(&self) -> Namespace {
        Namespace {
            name: self.inner.namespace.clone(),
            source: self.inner.namespace_source,
        }
    }

    /// Asks the holder of `term` to resign: writes the annotation `crown.io/resign` = `term`
    /// on the Lease, only if `term` is still the current, held term (the write carries the
    /// resourceVersion it checked). The holder releases at its next read of the Lease (at
    /// once with its watch, else within one retry period); any other participant, and a later
    /// holder, ignores it. Refuses (`Invalid`, with the reason) when the Lease is free or in
    /// another term.
    pub async fn request_resign(&self, term: Term) -> Result<(), BackendError> {
        let inner = &self.inner;
        let what = format!("leases.coordination.k8s.io {:?}", inner.name);
        let l = inner.get().await?.ok_or_else(|| {
            BackendError::Invalid(format!(
                "no Lease {}/{}: nobody to ask to resign",
                inner.namespace, inner.name
            ))
        })?;
        let Current::Record(rec) = inner.current(Some(&l)) else {
            unreachable!("a Lease reads as a record")
        };
        if !rec.is_held() {
            return Err(BackendError::Invalid(format!(
                "Lease {}/{} is free: nobody to ask to resign",
                inner.namespace, inner.name
            )));
        }
        if rec.term != term {
            return Err(BackendError::Invalid(format!(
                "term {term} is over: {} holds term {} now",
                rec.holder, rec.term
            )));
        }
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": l.metadata.resource_version,
            "annotations": {RESIGN_ANNOTATION: term.0.to_string()},
        }});
        inner
            .leases
            .patch(&inner.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| api_err("patch", &what, &inner.namespace, e))
    }

    /// Deletes the Pod of the leader `holder` in `term` (the dashboard's kill key on the kube
    /// backend, what one would do with `kubectl delete pod`). Refuses (`Invalid`, with the
    /// reason) unless the Lease is still held by `holder` in `term`, a Pod of that name exists
    /// in the Lease's namespace, and it carries crown's label `app.kubernetes.io/name=crown`.
    /// The delete is conditional on the uid that was checked. Returns the Pod's name.
    pub async fn delete_leader_pod(
        &self,
        holder: &str,
        term: Term,
    ) -> Result<String, BackendError> {
        let inner = &self.inner;
        let ns = &inner.namespace;
        let l = inner.get().await?;
        let rec = match inner.current(l.as_ref()) {
            Current::Record(r) if r.is_held() => r,
            _ => {
                return Err(BackendError::Invalid(format!(
                    "Lease {ns}/{} is not held: no leader Pod to delete",
                    inner.name
                )));
            }
        };
        if rec.holder != holder || rec.term != term {
            return Err(BackendError::Invalid(format!(
                "the leader changed: {} holds term {} now (not {holder} in term {term})",
                rec.holder, rec.term
            )));
        }
        if super::validate_election_name(holder).is_err() {
            return Err(BackendError::Invalid(format!(
                "the holder identity {holder:?} cannot name a Pod"
            )));
        }
        let pod = inner
            .pods
            .get_opt(holder)
            .await
            .map_err(|e| api_err("get", &format!("pods {holder:?}"), ns, e))?
            .ok_or_else(|| {
                BackendError::Invalid(format!(
                    "no Pod {holder:?} in namespace {ns:?}: the leader does not run in a Pod here"
                ))
            })?;
        let crown = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NAME_LABEL))
            .is_some_and(|v| v == "crown");
        if !crown {
            return Err(BackendError::Invalid(format!(
                "Pod {ns}/{holder} does not carry the label {NAME_LABEL}=crown: not deleting it"
            )));
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        inner
            .pods
            .delete(holder, &dp)
            .await
            .map(|_| holder.to_string())
            .map_err(|e| api_err("delete", &format!("pods {holder:?}"), ns, e))
    }

    /// Whether a Pod named `name` exists in the Lease's namespace (the dashboard's `k` falls
    /// back to a local signal for a holder that names no Pod: crown run outside a Pod).
    pub async fn pod_exists(&self, name: &str) -> Result<bool, BackendError> {
        if super::validate_election_name(name).is_err() {
            return Ok(false);
        }
        let inner = &self.inner;
        inner
            .pods
            .get_opt(name)
            .await
            .map(|p| p.is_some())
            .map_err(|e| api_err("get", &format!("pods {name:?}"), &inner.namespace, e))
    }

    /// Starts watching the Lease (idempotent): every change wakes [`Lock::changed`].
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
    fn warn_once(&self, key: String, msg: &str) {
        if self.warned.lock().unwrap().insert(key) {
            tracing::warn!("{msg}");
        }
    }

    fn invalidate(&self) {
        *self.cache.lock().unwrap() = None;
    }

    /// Notes a resign request addressed to us in the Lease as read.
    fn note_resign(&self, lease: Option<&Lease>) {
        let asked = lease.and_then(|l| {
            let spec = l.spec.as_ref()?;
            let term = spec.lease_transitions?;
            let held_by_us = !self.me.id.is_empty()
                && spec.holder_identity.as_deref() == Some(self.me.id.as_str());
            let asked: u64 = l
                .metadata
                .annotations
                .as_ref()?
                .get(RESIGN_ANNOTATION)?
                .parse()
                .ok()?;
            (held_by_us && term >= 0 && asked == term as u64).then_some(asked)
        });
        self.resign.send_if_modified(|v| {
            let changed = *v != asked;
            *v = asked;
            changed
        });
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

    async fn get(&self) -> Result<Option<Lease>, BackendError> {
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
    fn current(&self, lease: Option<&Lease>) -> Current {
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

    async fn record_grant(&self, g: &Grant) -> Result<(), BackendError> {
        let now = Timestamp::now();
        let ev = KubeEvent {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", self.name)),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels(&self.election)),
                annotations: Some(BTreeMap::from([(
                    GRANT_ANNOTATION.to_string(),
                    serde_json::to_string(g).expect("serializes"),
                )])),
                ..ObjectMeta::default()
            },
            event_time: Some(micro(now)),
            reason: Some("BecameLeader".into()),
            action: Some("Acquire".into()),
            type_: Some("Normal".into()),
            note: Some(format!("{} became leader (term {})", g.holder, g.term)),
            reporting_controller: Some("crown.io/leader-election".into()),
            reporting_instance: Some(self.me.id.chars().take(128).collect()),
            regarding: Some(ObjectReference {
                api_version: Some("coordination.k8s.io/v1".into()),
                kind: Some("Lease".into()),
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectReference::default()
            }),
            ..KubeEvent::default()
        };
        self.events
            .create(&PostParams::default(), &ev)
            .await
            .map(|_| ())
            .map_err(|e| api_err("create", "events.events.k8s.io", &self.namespace, e))
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        let list = self
            .events
            .list(&ListParams::default().labels(&format!("{ELECTION_LABEL}={}", self.election)))
            .await
            .map_err(|e| api_err("list", "events.events.k8s.io", &self.namespace, e))?;
        let mut grants: Vec<Grant> = list
            .items
            .iter()
            .filter_map(|e| e.metadata.annotations.as_ref()?.get(GRANT_ANNOTATION))
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect();
        grants.sort_by_key(|g: &Grant| (g.term, g.acquired_at));
        Ok(grants)
    }

    fn member_name(&self, id: &str) -> String {
        let mut n = format!("{}-member-{}", self.name, id.to_ascii_lowercase());
        n.truncate(253);
        n
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

fn labels(election: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), "crown".to_string()),
        (ELECTION_LABEL.to_string(), election.to_string()),
    ])
}

#[async_trait]
impl Lock for KubeBackend {
    fn kind(&self) -> &'static str {
        "kube"
    }

    async fn try_acquire_or_renew(
        &self,
        req: AcquireRequest,
        observer: &mut Observer,
    ) -> Result<Outcome, BackendError> {
        record::try_acquire_or_renew(&*self.inner, req, observer).await
    }

    async fn release(&self, term: Term) -> Result<(), BackendError> {
        record::release(&*self.inner, term).await
    }

    async fn abandon(&self) {
        if let Some(m) = &self.inner.marker {
            m.clear(Duration::from_secs(1)).await;
        }
    }

    async fn changed(&self) {
        self.inner.notify.notified().await
    }

    async fn resign_requested(&self, term: Term) {
        let mut rx = self.inner.resign.subscribe();
        if rx.wait_for(|v| *v == Some(term.0)).await.is_err() {
            std::future::pending::<()>().await
        }
    }
}

#[async_trait]
impl Observe for KubeBackend {
    fn namespace(&self) -> Option<(String, &'static str)> {
        Some((
            self.inner.namespace.clone(),
            self.inner.namespace_source.describe(),
        ))
    }

    async fn lease(&self) -> Result<LeaseView, BackendError> {
        let base = self.inner.get().await?;
        Ok(match self.inner.current(base.as_ref()) {
            Current::Record(r) => LeaseView::Record(r),
            _ => LeaseView::None,
        })
    }

    /// Heartbeats from member Leases and from Pod annotations; a source this identity may
    /// not list is skipped (an error only when both are refused or unreachable).
    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let inner = &self.inner;
        let from_leases = inner
            .leases
            .list(&ListParams::default().labels(&format!("{ELECTION_LABEL}={}", inner.election)))
            .await
            .map_err(|e| api_err("list", "leases.coordination.k8s.io", &inner.namespace, e))
            .map(|list| {
                list.items
                    .iter()
                    .filter_map(|l| l.metadata.annotations.as_ref()?.get(MEMBER_ANNOTATION))
                    .filter_map(|s| serde_json::from_str::<Member>(s).ok())
                    .collect::<Vec<_>>()
            });
        let from_pods = pods::members(&inner.pods, &inner.namespace, &inner.name).await;
        let mut out: Vec<Member> = match (from_leases, from_pods) {
            (Err(e), Err(_)) => return Err(e),
            (a, b) => a
                .unwrap_or_default()
                .into_iter()
                .chain(b.unwrap_or_default())
                .collect(),
        };
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        self.inner.history().await
    }
}

#[async_trait]
impl Heartbeat for KubeBackend {
    async fn publish_member(&self, m: &Member) -> Result<(), BackendError> {
        let inner = &self.inner;
        {
            let last = inner.last_member.lock().unwrap();
            if let Some((role, term, at)) = *last
                && role == m.role
                && term == m.term
                && at.elapsed() < MEMBER_MIN_INTERVAL
            {
                return Ok(());
            }
        }
        if let Some(pod) = &inner.pod {
            pods::publish(&inner.pods, &inner.namespace, pod, &inner.name, m).await?;
            *inner.last_member.lock().unwrap() = Some((m.role, m.term, Instant::now()));
            return Ok(());
        }
        let name = inner.member_name(&m.id);
        let what = format!("leases.coordination.k8s.io {name:?}");
        let cached = inner.member_lease.lock().unwrap().clone();
        let existing = match cached {
            Some(l) => Some(l),
            None => inner
                .leases
                .get_opt(&name)
                .await
                .map_err(|e| api_err("get", &what, &inner.namespace, e))?,
        };
        let mut meta = existing
            .as_ref()
            .map(|l| l.metadata.clone())
            .unwrap_or_else(|| ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(inner.namespace.clone()),
                ..ObjectMeta::default()
            });
        meta.labels = Some(labels(&inner.election));
        let mut ann = meta.annotations.take().unwrap_or_default();
        ann.insert(
            MEMBER_ANNOTATION.into(),
            serde_json::to_string(m).expect("serializes"),
        );
        meta.annotations = Some(ann);
        let lease = Lease {
            metadata: meta,
            spec: Some(LeaseSpec {
                holder_identity: Some(m.id.clone()),
                renew_time: Some(micro(m.last_heartbeat)),
                acquire_time: Some(micro(m.started_at)),
                lease_duration_seconds: Some(MEMBER_MIN_INTERVAL.as_secs() as i32 * 3),
                ..LeaseSpec::default()
            }),
        };
        let pp = PostParams::default();
        let res = match existing {
            Some(_) => inner
                .leases
                .replace(&name, &pp, &lease)
                .await
                .map_err(|e| api_err("update", &what, &inner.namespace, e)),
            None => inner
                .leases
                .create(&pp, &lease)
                .await
                .map_err(|e| api_err("create", &what, &inner.namespace, e)),
        };
        // A conflict or a deleted member Lease: read it afresh next time.
        *inner.member_lease.lock().unwrap() = res.as_ref().ok().cloned();
        res?;
        *inner.last_member.lock().unwrap() = Some((m.role, m.term, Instant::now()));
        Ok(())
    }

    async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        if let Some(pod) = &self.inner.pod {
            return pods::unpublish(&self.inner.pods, &self.inner.namespace, pod).await;
        }
        let name = self.inner.member_name(id);
        match self
            .inner
            .leases
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err(
                "delete",
                &format!("leases.coordination.k8s.io {name:?}"),
                &self.inner.namespace,
                e,
            )),
        }
    }
}

#[async_trait]
impl Duties for KubeBackend {
    async fn duty(&self) -> Result<Option<crate::once::DutyRecord>, BackendError> {
        self.inner.read_duty().await
    }

    async fn record_duty(&self, rec: &crate::once::DutyRecord) -> Result<bool, BackendError> {
        self.inner.write_duty(rec).await
    }

    async fn reset_duty(&self) -> Result<crate::once::Removed, BackendError> {
        self.inner.delete_duty().await
    }
}
