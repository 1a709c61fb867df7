//! `crown run --once` on Kubernetes: the success record is the annotation `crown.io/duty` on
//! the election Lease, written with a `replace` carrying the resourceVersion at which the
//! Lease was read as ours in that term (the same compare-and-swap as a renewal); renewals keep
//! the Lease's annotations, so it stays until `crown once reset` removes it.

use super::{Inner, api_err};
use crate::backend::BackendError;
use crate::backend::duty::{self as once, DutyRecord, Removed};
use crate::election::lease::Current;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};

/// The annotation holding the record.
pub(super) const DUTY_ANNOTATION: &str = "crown.io/duty";

/// How often a compare-and-swap is retried when a renewal got in between (409).
const TRIES: usize = 5;

impl Inner {
    fn duty_place(&self) -> String {
        format!(
            "annotation {DUTY_ANNOTATION} of Lease {}/{}",
            self.namespace, self.name
        )
    }

    fn what(&self) -> String {
        format!("leases.coordination.k8s.io {:?}", self.name)
    }

    fn duty_of(l: &Lease) -> Option<&String> {
        l.metadata.annotations.as_ref()?.get(DUTY_ANNOTATION)
    }

    pub(super) async fn read_duty(&self) -> Result<Option<DutyRecord>, BackendError> {
        let Some(l) = self.get().await? else {
            return Ok(None);
        };
        let Some(raw) = Self::duty_of(&l) else {
            return Ok(None);
        };
        let rec = once::parse(raw.as_bytes()).map_err(|e| once::corrupt(&self.duty_place(), &e))?;
        if let Current::Record(r) = self.current(Some(&l))
            && rec.term > r.term
        {
            return Err(once::corrupt(
                &self.duty_place(),
                &format!(
                    "term {} is above the Lease's term {}: crown never wrote it",
                    rec.term, r.term
                ),
            ));
        }
        Ok(Some(rec))
    }

    /// Writes (`Some`) or removes (`None`) the annotation on `l`, as read: a `replace`
    /// (participants have `update` on the Lease) when writing, a merge patch (what the
    /// dashboard's Role grants) when removing; both carry `l`'s resourceVersion.
    /// `Ok(false)`: the Lease changed since (409).
    async fn put_duty(&self, l: &Lease, value: Option<String>) -> Result<bool, BackendError> {
        let res = match value {
            Some(v) => {
                let mut l = l.clone();
                l.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(DUTY_ANNOTATION.into(), v);
                self.leases
                    .replace(&self.name, &PostParams::default(), &l)
                    .await
                    .map_err(|e| ("update", e))
            }
            None => {
                let patch = serde_json::json!({"metadata": {
                    "resourceVersion": l.metadata.resource_version,
                    "annotations": {DUTY_ANNOTATION: null},
                }});
                self.leases
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| ("patch", e))
            }
        };
        // The cached view is older than this write (or than the write that beat us).
        self.invalidate();
        match res {
            Ok(_) => Ok(true),
            Err((_, kube::Error::Api(s))) if s.code == 409 => Ok(false),
            Err((verb, e)) => Err(api_err(verb, &self.what(), &self.namespace, e)),
        }
    }

    pub(super) async fn write_duty(&self, rec: &DutyRecord) -> Result<bool, BackendError> {
        let value = String::from_utf8(once::to_bytes(rec)).expect("JSON is UTF-8");
        for _ in 0..TRIES {
            let Some(l) = self.get().await? else {
                return Ok(false);
            };
            let ours = matches!(
                self.current(Some(&l)),
                Current::Record(r) if r.is_held() && r.holder == self.me.id && r.term == rec.term
            );
            if !ours {
                return Ok(false);
            }
            if self
                .put_duty(&l, Some(value.trim_end().to_string()))
                .await?
            {
                return Ok(true);
            }
        }
        Err(BackendError::Conflict(format!(
            "{} kept changing: could not record the duty",
            self.what()
        )))
    }

    pub(super) async fn delete_duty(&self) -> Result<Removed, BackendError> {
        for _ in 0..TRIES {
            let Some(l) = self.get().await? else {
                return Ok(Removed::Nothing);
            };
            let Some(raw) = Self::duty_of(&l) else {
                return Ok(Removed::Nothing);
            };
            let removed = Removed::from_bytes(raw.as_bytes());
            if self.put_duty(&l, None).await? {
                return Ok(removed);
            }
        }
        Err(BackendError::Conflict(format!(
            "{} kept changing: could not remove the duty record",
            self.what()
        )))
    }
}
