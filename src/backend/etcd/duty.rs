//! `crown run --once` on etcd: the success record is the key `<prefix><election>:duty`, put in
//! one transaction that compares our leader key's create revision with the term (the same
//! compare as a resign), so a leader whose key is gone cannot record success.

use super::campaign::Phase;
use super::{EtcdBackend, OP_TIMEOUT, escape};
use crate::backend::BackendError;
use crate::backend::duty::{self as once, DutyRecord, Removed};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

impl EtcdBackend {
    fn duty_place(&self) -> String {
        format!("key {}", escape(&self.inner.keys.duty))
    }

    pub(super) async fn read_duty(&self) -> Result<Option<DutyRecord>, BackendError> {
        let got = call!(self.inner, "read", OP_TIMEOUT, |c| c
            .get(self.inner.keys.duty.clone(), None))?;
        let Some(kv) = got.kvs().first() else {
            return Ok(None);
        };
        let rec = once::parse(kv.value()).map_err(|e| once::corrupt(&self.duty_place(), &e))?;
        // A term is the create revision of a leader key, which existed before the record.
        if rec.term.0 >= kv.mod_revision().max(0) as u64 {
            return Err(once::corrupt(
                &self.duty_place(),
                &format!(
                    "term {} is not below the revision {} it was written at: crown never wrote it",
                    rec.term,
                    kv.mod_revision()
                ),
            ));
        }
        Ok(Some(rec))
    }

    pub(super) async fn write_duty(&self, rec: &DutyRecord) -> Result<bool, BackendError> {
        let Some((_, Phase::Won { key, rev, .. })) = self.phase() else {
            return Ok(false);
        };
        if rev.max(0) as u64 != rec.term.0 {
            return Ok(false);
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::put(
                self.inner.keys.duty.clone(),
                once::to_bytes(rec),
                None,
            )]);
        let r = call!(self.inner, "txn", OP_TIMEOUT, |c| c.txn(txn))?;
        Ok(r.succeeded())
    }

    pub(super) async fn delete_duty(&self) -> Result<Removed, BackendError> {
        let txn = Txn::new().and_then([TxnOp::delete(
            self.inner.keys.duty.clone(),
            Some(etcd_client::DeleteOptions::new().with_prev_key()),
        )]);
        let r = call!(self.inner, "txn", OP_TIMEOUT, |c| c.txn(txn))?;
        let prev = r.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        Ok(prev.map_or(Removed::Nothing, |b| Removed::from_bytes(&b)))
    }
}
