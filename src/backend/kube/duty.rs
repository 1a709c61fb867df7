//! `crown run --once` on Kubernetes: the success record is the annotation `crown.io/duty` on
//! the election Lease, written with a merge patch carrying the resourceVersion at which the
//! Lease was read as ours in that term (the same compare-and-swap as a renewal); renewals keep
//! the Lease's annotations, so it stays until `crown once reset` removes it.

use super::{Inner, api_err};
use crate::backend::BackendError;
use crate::election::lease::Current;
use crate::once::{self, DutyRecord, Removed};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};

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

    async fn patch_duty(&self, l: &Lease, value: Option<String>) -> Result<bool, BackendError> {
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": l.metadata.resource_version,
            "annotations": {DUTY_ANNOTATION: value},
        }});
        match self
            .leases
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                // The cached view is older than this write.
                self.invalidate();
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.invalidate();
                Ok(false)
            }
            Err(e) => Err(api_err("patch", &self.what(), &self.namespace, e)),
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
                .patch_duty(&l, Some(value.trim_end().to_string()))
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
            if self.patch_duty(&l, None).await? {
                return Ok(removed);
            }
        }
        Err(BackendError::Conflict(format!(
            "{} kept changing: could not remove the duty record",
            self.what()
        )))
    }
}
