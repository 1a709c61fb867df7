//! Member heartbeats: `D/E.members/<id>.json`.

use super::fsx::{Bounded, SafeDir};
use super::{FileBackend, Inner, MAX_RECORD, blocking};
use crate::backend::{BackendError, Heartbeat, validate_election_name};
use crate::election::Member;
use async_trait::async_trait;
use std::sync::Arc;

impl Inner {
    /// The members directory (created if `create`); `None` if missing.
    pub(super) fn members_dir(&self, create: bool) -> Result<Option<Arc<SafeDir>>, BackendError> {
        let mut m = self.members.lock().unwrap();
        if let Some(d) = m.as_ref() {
            return Ok(Some(d.clone()));
        }
        let d = self.dir.subdir(&self.members_name, create)?.map(Arc::new);
        m.clone_from(&d);
        Ok(d)
    }

    pub(super) fn members(&self) -> Result<Vec<Member>, BackendError> {
        let Some(dir) = self.members_dir(false)? else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        for name in dir.list()? {
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let p = dir.path().join(&name);
            match dir.read_bounded(&name, MAX_RECORD) {
                Ok(Some(Bounded::Data(b))) => match serde_json::from_slice::<Member>(&b) {
                    Ok(m) => out.push(m),
                    Err(e) => tracing::warn!("skipping unreadable heartbeat {}: {e}", p.display()),
                },
                Ok(Some(Bounded::TooBig { size, .. })) => tracing::warn!(
                    "skipping heartbeat {}: {size} bytes, over the {MAX_RECORD}-byte limit",
                    p.display()
                ),
                Ok(None) => {} // removed while we listed
                Err(e) => tracing::warn!("skipping heartbeat: {e}"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

#[async_trait]
impl Heartbeat for FileBackend {
    async fn publish_member(&self, member: &Member) -> Result<(), BackendError> {
        let inner = self.inner.clone();
        let m = member.clone();
        blocking(move || {
            validate_election_name(&m.id)?;
            let dir = inner.members_dir(true)?.expect("created");
            let mut bytes = serde_json::to_vec(&m).expect("member serializes");
            bytes.push(b'\n');
            dir.write_atomic(&format!("{}.json", m.id), &bytes)
        })
        .await
    }

    async fn remove_member(&self, id: &str) -> Result<(), BackendError> {
        let inner = self.inner.clone();
        let name = format!("{id}.json");
        blocking(move || match inner.members_dir(false)? {
            Some(dir) => dir.remove(&name),
            None => Ok(()),
        })
        .await
    }
}
