//! Requests on a paused deploy: the dashboard's promote and abort. The
//! registry does not run deploys (they need Docker and the deploy's tests),
//! so a request is written onto the paused record, where the `cdctl deploy
//! --wait-for-promotion` that paused it (or any later `cdctl promote`)
//! reads it and carries it out.

use switchyard_model::labels::record;
use switchyard_model::{Deployment, Outcome, validate};

use super::{Catalog, CatalogError, MAX_ATTEMPTS, from_json, guard, keys, now_ms, put};
use crate::store::{Op, Txn};

impl Catalog {
    /// Writes `action` (`promote` or `abort`) by `who` onto the paused
    /// deploy of `service`; answers the revision and the record. Refused
    /// when no deploy is paused, or while one runs (its lock is held).
    pub async fn request_on_paused(
        &self,
        service: &str,
        action: &str,
        who: &str,
    ) -> Result<(u64, Deployment), CatalogError> {
        validate::service_name("service", service)?;
        for _ in 0..MAX_ATTEMPTS {
            let (_, mut results) = self
                .read(vec![
                    Op::Get {
                        key: keys::lock(service),
                    },
                    Op::Range {
                        prefix: keys::deployments_of(service),
                    },
                ])
                .await?;
            if results.get()?.is_some() {
                return Err(CatalogError::Conflict(format!(
                    "a deploy of {service} is running (its lock is held): wait until it pauses \
                     or ends"
                )));
            }
            let mut records = results.range()?;
            records.sort_by_key(|kv| std::cmp::Reverse(kv.create_revision));
            let Some(newest) = records.first() else {
                return Err(no_paused(service));
            };
            let mut paused: Deployment = from_json(newest)?;
            if paused.outcome != Outcome::Paused {
                return Err(no_paused(service));
            }
            let metadata = &mut paused.metadata;
            metadata.insert(record::REQUESTED.into(), action.into());
            metadata.insert(record::REQUESTED_BY.into(), who.into());
            metadata.insert(record::REQUESTED_AT_MS.into(), now_ms().to_string());
            let txn = Txn {
                compares: vec![
                    guard(keys::lock(service), None),
                    guard(newest.key.clone(), Some(newest)),
                ],
                success: vec![put(newest.key.clone(), super::to_json(&paused)?, None)],
                ..Txn::default()
            };
            if let Some(revision) = self.commit(txn).await? {
                return Ok((revision, paused));
            }
        }
        Err(CatalogError::Contention(format!(
            "the paused deploy of {service}"
        )))
    }
}

fn no_paused(service: &str) -> CatalogError {
    CatalogError::not_found(
        format!("a paused deploy of {service}"),
        "only a deploy paused by --manual-promotion can be promoted or aborted",
    )
}
