//! The participant's own Pod: the leader label that the `crown-leader` Service selects, and
//! the member heartbeat annotation.
//!
//! - While leading term T the participant's Pod carries the label `crown.io/leader=true` and the
//!   annotation `crown.io/leader-of` = `{"lease": NAME, "term": T}`. On step-down and release
//!   the label is removed before the Lease is released, so the next leader cannot label its
//!   own Pod while this one is still labelled by a clean hand-over.
//! - A crashed or partitioned leader cannot remove its label: the next leader (term > T)
//!   removes the label from every Pod whose `crown.io/leader-of` names this Lease with a lower
//!   term, and only then labels its own Pod. It re-checks every few seconds while leading.
//!   Pods labelled by anyone else (no or another `crown.io/leader-of`) are left alone.
//! - A participant that starts removes a leftover label from its own Pod (a container
//!   restarted after a crash).
//! - Heartbeats: the annotation `crown.io/member` on the own Pod holds
//!   `{"lease": NAME, "member": {...}}`, so no participant needs rights over other Leases.

use super::{LEADER_LABEL, NAME_LABEL, api_err};
use crate::backend::BackendError;
use crate::election::{Member, Term};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Annotation naming the Lease and term a leader label belongs to.
pub const LEADER_OF_ANNOTATION: &str = "crown.io/leader-of";
/// Annotation with a participant's heartbeat.
pub const POD_MEMBER_ANNOTATION: &str = "crown.io/member";
/// While leading, the label is re-checked (and others' stale labels removed) this often.
const RECHECK: Duration = Duration::from_secs(5);

/// The value of [`LEADER_OF_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderOf {
    /// The election Lease's name.
    pub lease: String,
    /// The term the label was set in.
    pub term: u64,
}

/// The value of [`POD_MEMBER_ANNOTATION`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodMember {
    /// The election Lease's name.
    pub lease: String,
    /// The heartbeat.
    pub member: Member,
}

/// Keeps the own Pod's leader label in the desired state, in the background and in order.
pub struct PodMarker {
    pods: Api<Pod>,
    pod: String,
    lease: String,
    namespace: String,
    desired: watch::Sender<Option<Term>>,
    applied: watch::Receiver<Option<Option<Term>>>,
}

fn leader_of(p: &Pod) -> Option<LeaderOf> {
    let a = p.metadata.annotations.as_ref()?.get(LEADER_OF_ANNOTATION)?;
    serde_json::from_str(a).ok()
}

impl PodMarker {
    /// Starts the marker for Pod `pod`; it first removes a leftover label from that Pod.
    pub fn start(pods: Api<Pod>, namespace: &str, pod: &str, lease: &str) -> Arc<PodMarker> {
        let (desired, mut want_rx) = watch::channel(None);
        let (applied_tx, applied) = watch::channel(None);
        let m = Arc::new(PodMarker {
            pods,
            pod: pod.into(),
            lease: lease.into(),
            namespace: namespace.into(),
            desired,
            applied,
        });
        let w = Arc::downgrade(&m);
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                let want = *want_rx.borrow_and_update();
                let Some(m) = w.upgrade() else { return };
                let res = m.reconcile(want).await;
                drop(m);
                let retry = match res {
                    Ok(()) => {
                        applied_tx.send_replace(Some(want));
                        warned = false;
                        want.map(|_| RECHECK)
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!("cannot keep the leader label on this Pod: {e}");
                            warned = true;
                        }
                        Some(Duration::from_secs(1))
                    }
                };
                match retry {
                    Some(d) => {
                        tokio::select! {
                            r = want_rx.changed() => if r.is_err() { return },
                            _ = tokio::time::sleep(d) => {}
                        }
                    }
                    None => {
                        if want_rx.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        m
    }

    /// We lead `term` (Some) or not (None).
    pub fn set(&self, term: Option<Term>) {
        self.desired.send_if_modified(|d| {
            let changed = *d != term;
            *d = term;
            changed
        });
    }

    /// Removes the label and waits (at most `bound`) until it is gone.
    pub async fn clear(&self, bound: Duration) {
        self.set(None);
        let mut rx = self.applied.clone();
        let _ = tokio::time::timeout(bound, rx.wait_for(|a| *a == Some(None))).await;
    }

    async fn patch(&self, name: &str, v: serde_json::Value) -> Result<(), BackendError> {
        self.pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&v))
            .await
            .map(|_| ())
            .map_err(|e| api_err("patch", &format!("pods {name:?}"), &self.namespace, e))
    }

    async fn reconcile(&self, want: Option<Term>) -> Result<(), BackendError> {
        let Some(term) = want else {
            return self
                .patch(
                    &self.pod,
                    serde_json::json!({"metadata": {
                        "labels": {LEADER_LABEL: null},
                        "annotations": {LEADER_OF_ANNOTATION: null},
                    }}),
                )
                .await;
        };
        let labelled = self
            .pods
            .list(&ListParams::default().labels(&format!("{LEADER_LABEL}=true")))
            .await
            .map_err(|e| api_err("list", "pods", &self.namespace, e))?;
        let mut mine_ok = false;
        for p in &labelled.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let of = leader_of(p).filter(|o| o.lease == self.lease);
            if name == self.pod {
                mine_ok = of.is_some_and(|o| o.term == term.0);
                continue;
            }
            match of {
                Some(o) if o.term < term.0 => {
                    tracing::info!(
                        "removing the leader label of Pod {name} (term {}, we lead term {term})",
                        o.term
                    );
                    self.patch(
                        &name,
                        serde_json::json!({"metadata": {
                            "labels": {LEADER_LABEL: null},
                            "annotations": {LEADER_OF_ANNOTATION: null},
                        }}),
                    )
                    .await?;
                }
                Some(o) if o.term > term.0 => {
                    // A newer leader exists: we are about to learn we lost; never label.
                    return Ok(());
                }
                _ => {}
            }
        }
        if !mine_ok {
            let of = serde_json::to_string(&LeaderOf {
                lease: self.lease.clone(),
                term: term.0,
            })
            .expect("serializes");
            self.patch(
                &self.pod,
                serde_json::json!({"metadata": {
                    "labels": {LEADER_LABEL: "true"},
                    "annotations": {LEADER_OF_ANNOTATION: of},
                }}),
            )
            .await?;
        }
        Ok(())
    }
}

/// Writes `m` into Pod `pod`'s heartbeat annotation.
pub async fn publish(
    pods: &Api<Pod>,
    namespace: &str,
    pod: &str,
    lease: &str,
    m: &Member,
) -> Result<(), BackendError> {
    let v = serde_json::to_string(&PodMember {
        lease: lease.into(),
        member: m.clone(),
    })
    .expect("serializes");
    pods.patch(
        pod,
        &PatchParams::default(),
        &Patch::Merge(
            &serde_json::json!({"metadata": {"annotations": {POD_MEMBER_ANNOTATION: v}}}),
        ),
    )
    .await
    .map(|_| ())
    .map_err(|e| api_err("patch", &format!("pods {pod:?}"), namespace, e))
}

/// Removes the heartbeat annotation from Pod `pod` (a missing Pod is fine).
pub async fn unpublish(pods: &Api<Pod>, namespace: &str, pod: &str) -> Result<(), BackendError> {
    match pods
        .patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(
                &serde_json::json!({"metadata": {"annotations": {POD_MEMBER_ANNOTATION: null}}}),
            ),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err("patch", &format!("pods {pod:?}"), namespace, e)),
    }
}

/// Heartbeats of election Lease `lease` from the Pods' annotations.
pub async fn members(
    pods: &Api<Pod>,
    namespace: &str,
    lease: &str,
) -> Result<Vec<Member>, BackendError> {
    let list = pods
        .list(&ListParams::default().labels(&format!("{NAME_LABEL}=crown")))
        .await
        .map_err(|e| api_err("list", "pods", namespace, e))?;
    Ok(list
        .items
        .iter()
        .filter_map(|p| p.metadata.annotations.as_ref()?.get(POD_MEMBER_ANNOTATION))
        .filter_map(|s| serde_json::from_str::<PodMember>(s).ok())
        .filter(|pm| pm.lease == lease)
        .map(|pm| pm.member)
        .collect())
}
