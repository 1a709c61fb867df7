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
mod history;
mod members;
pub mod pods;
mod requests;
mod store;

pub use config::{
    ClientOptions, Namespace, NamespaceSource, client_options, resolve_namespace,
    set_client_options,
};

use super::record;
use super::{AcquireRequest, BackendError, Duties, Heartbeat, LeaseView, Lock, Observe, Outcome};
use crate::election::lease::{Current, Observer};
use crate::election::{Grant, Identity, Member, Role, Term};
use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::Api;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicBool;
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
}

impl Inner {
    fn warn_once(&self, key: String, msg: &str) {
        if self.warned.lock().unwrap().insert(key) {
            tracing::warn!("{msg}");
        }
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
        self.inner.members().await
    }

    async fn history(&self) -> Result<Vec<Grant>, BackendError> {
        self.inner.history().await
    }
}

#[async_trait]
impl Heartbeat for KubeBackend {
    async fn publish_member(&self, m: &Member) -> Result<(), BackendError> {
        self.inner.publish_member(m).await
    }

    async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        self.inner.remove_member(id).await
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
