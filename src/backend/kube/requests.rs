//! Requests to the leader from the dashboard: resign (the annotation `crown.io/resign` on the
//! Lease, noted by the holder of that very term) and deleting the leader's Pod.

use super::{Inner, KubeBackend, NAME_LABEL, RESIGN_ANNOTATION, api_err};
use crate::backend::BackendError;
use crate::election::Term;
use crate::election::lease::Current;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};

impl KubeBackend {
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
        if crate::backend::validate_election_name(holder).is_err() {
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
        if crate::backend::validate_election_name(name).is_err() {
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
}

impl Inner {
    /// Notes a resign request addressed to us in the Lease as read.
    pub(super) fn note_resign(&self, lease: Option<&Lease>) {
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
}
