//! Member heartbeats: an annotation on the participant's own Pod (in a Pod), else one small
//! member Lease `<lease>-member-<id>` per participant; and the member list read from both.

use super::{
    ELECTION_LABEL, Inner, MEMBER_ANNOTATION, MEMBER_MIN_INTERVAL, api_err, labels, micro, pods,
};
use crate::backend::BackendError;
use crate::election::Member;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use tokio::time::Instant;

impl Inner {
    fn member_name(&self, id: &str) -> String {
        let mut n = format!("{}-member-{}", self.name, id.to_ascii_lowercase());
        n.truncate(253);
        n
    }

    /// Heartbeats from member Leases and from Pod annotations; a source this identity may
    /// not list is skipped (an error only when both are refused or unreachable).
    pub(super) async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let inner = self;
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

    pub(super) async fn publish_member(&self, m: &Member) -> Result<(), BackendError> {
        let inner = self;
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

    pub(super) async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        if let Some(pod) = &self.pod {
            return pods::unpublish(&self.pods, &self.namespace, pod).await;
        }
        let name = self.member_name(id);
        match self.leases.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err(
                "delete",
                &format!("leases.coordination.k8s.io {name:?}"),
                &self.namespace,
                e,
            )),
        }
    }
}
