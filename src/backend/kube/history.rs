//! The leader history: one `events.k8s.io/v1` Event per grant (reason `BecameLeader`), its
//! `crown.io/grant` annotation holding the [`Grant`].

use super::{ELECTION_LABEL, GRANT_ANNOTATION, Inner, api_err, labels, micro};
use crate::backend::BackendError;
use crate::election::Grant;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use std::collections::BTreeMap;

impl Inner {
    pub(super) async fn record_grant(&self, g: &Grant) -> Result<(), BackendError> {
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

    pub(super) async fn history(&self) -> Result<Vec<Grant>, BackendError> {
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
}
