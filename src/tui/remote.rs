//! The dashboard's actions on a leader it cannot signal, through the backend's client
//! ([`Remote`]): delete its Pod (Kubernetes), revoke its session (etcd), ask it to resign
//! (both). Each runs in its own task off the loop and ends as a [`Done`]; the loop shows it
//! ([`App::remote_done`](super::app::App::remote_done)).

use super::state::{PodKill, Target};
use crate::backend::BackendError;
#[cfg(feature = "etcd")]
use crate::backend::etcd::EtcdBackend;
#[cfg(feature = "kube")]
use crate::backend::kube::KubeBackend;
use crate::election::Term;
#[cfg(any(feature = "kube", feature = "etcd"))]
use std::sync::Arc;

/// How a backend action, run in its own task off the loop, ended.
#[derive(Debug)]
pub enum Done {
    /// The leader's Pod was deleted.
    PodDeleted {
        /// Its name.
        pod: String,
        /// The term its crown held.
        term: Term,
    },
    /// The holder names no Pod: SIGKILL its confirmed local process instead.
    NoPod(Target),
    /// The leader's etcd session lease was revoked.
    SessionRevoked {
        /// The leader.
        holder: String,
        /// Its term.
        term: Term,
        /// The lease (hex).
        lease: String,
    },
    /// The resign request was written on the Lease.
    ResignRequested {
        /// The leader asked.
        holder: String,
        /// Its term.
        term: Term,
    },
    /// Refused or failed: the line to show.
    Failed(String),
}

/// The client through which the dashboard acts on a leader it cannot signal.
#[derive(Clone)]
pub enum Remote {
    /// Kubernetes: `k` deletes the leader's Pod, `r` annotates the Lease.
    #[cfg(feature = "kube")]
    Kube(Arc<KubeBackend>),
    /// etcd: `r` writes the resign key.
    #[cfg(feature = "etcd")]
    Etcd(Arc<EtcdBackend>),
}

impl Remote {
    #[cfg_attr(not(any(feature = "kube", feature = "etcd")), allow(unused_variables))]
    pub(super) async fn request_resign(&self, term: Term) -> Result<(), BackendError> {
        match self.clone() {
            #[cfg(feature = "kube")]
            Remote::Kube(k) => k.request_resign(term).await,
            #[cfg(feature = "etcd")]
            Remote::Etcd(e) => e.request_resign(term).await,
        }
    }
}

/// Built without the kube backend: there are no Pods to delete.
#[cfg(not(feature = "kube"))]
pub(super) async fn delete_pod(_: &Remote, _: PodKill) -> Done {
    Done::Failed("k: Pods exist only on Kubernetes".into())
}

/// Deletes the leader's Pod (or finds it has none and a local fallback applies).
#[cfg(feature = "kube")]
pub(super) async fn delete_pod(remote: &Remote, k: PodKill) -> Done {
    #[allow(irrefutable_let_patterns)]
    let Remote::Kube(kube) = remote else {
        return Done::Failed("k: Pods exist only on Kubernetes".into());
    };
    if let Some(t) = k.fallback {
        match kube.pod_exists(&k.holder).await {
            Ok(false) => return Done::NoPod(t),
            Ok(true) => {}
            Err(e) => return Done::Failed(format!("k: {e}")),
        }
    }
    match kube.delete_leader_pod(&k.holder, k.term).await {
        Ok(pod) => Done::PodDeleted { pod, term: k.term },
        Err(e) => Done::Failed(format!("k: refused to delete Pod {}: {e}", k.holder)),
    }
}

/// Built without the etcd backend: there are no sessions to revoke.
#[cfg(not(feature = "etcd"))]
pub(super) async fn revoke_session(_: &Remote, _: PodKill) -> Done {
    Done::Failed("k: sessions exist only on etcd".into())
}

/// Revokes the etcd session of the leader in `k`.
#[cfg(feature = "etcd")]
pub(super) async fn revoke_session(remote: &Remote, k: PodKill) -> Done {
    #[allow(irrefutable_let_patterns)]
    let Remote::Etcd(etcd) = remote else {
        return Done::Failed("k: sessions exist only on etcd".into());
    };
    match etcd.revoke_leader(&k.holder, k.term).await {
        Ok(lease) => Done::SessionRevoked {
            holder: k.holder,
            term: k.term,
            lease,
        },
        Err(e) => Done::Failed(format!("k: refused to revoke {}'s session: {e}", k.holder)),
    }
}
