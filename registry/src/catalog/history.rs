//! Deployment records: what `cdctl deploy` writes at each step and
//! `cdctl history` reads.
//!
//! A record is client-supplied, so nothing in it is trusted for ordering:
//! history is ordered, and trimmed, by the revision at which a record was
//! first written (its key's create revision), never by the dates it claims.
//! Records are size-limited, exist only for registered services or for a
//! deploy in progress (its lock held: a first deploy records before any
//! instance registers), and are listed in pages that always fit in one
//! message.

use switchyard_model::{Deployment, ValidationError, validate};

use super::{Catalog, CatalogError, MAX_ATTEMPTS, from_json, guard, keys, now_ms, put, to_json};
use crate::store::{KeyValue, Op, Txn};

/// Deployment records kept per service; the earliest recorded are dropped.
pub const DEPLOYMENTS_KEPT: usize = 200;
/// About how many bytes of records one page of `ListDeployments` holds
/// (always at least one record), well under any client's message limit.
const PAGE_BYTES: usize = 1024 * 1024;

/// One page of a service's history, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentPage {
    pub deployments: Vec<Deployment>,
    /// Where the next page starts (the `before` of the next call); `None` on
    /// the last page.
    pub next: Option<u64>,
}

impl Catalog {
    /// Writes (or updates, by id) a deployment record of an existing
    /// service; keeps the [`DEPLOYMENTS_KEPT`] most recently created.
    pub async fn record_deployment(&self, deployment: Deployment) -> Result<u64, CatalogError> {
        validate::deployment(&deployment)?;
        check_clock(&deployment, now_ms())?;
        let value = to_json(&deployment)?;
        if value.len() > validate::MAX_DEPLOYMENT_BYTES {
            return Err(ValidationError::new(
                "deployment",
                format!(
                    "is {} bytes stored; the limit is {} (64 KiB): shorten its error text, \
                     steps or metadata",
                    value.len(),
                    validate::MAX_DEPLOYMENT_BYTES
                ),
            )
            .into());
        }
        let service = &deployment.service;
        let key = keys::deployment(service, &deployment.id);
        for _ in 0..MAX_ATTEMPTS {
            let (_, mut results) = self
                .read(vec![
                    Op::Get {
                        key: keys::service(service),
                    },
                    Op::Get {
                        key: keys::lock(service),
                    },
                    Op::Range {
                        prefix: keys::deployments_of(service),
                    },
                ])
                .await?;
            let service_kv = results.get()?;
            let lock_kv = results.get()?;
            if service_kv.is_none() && lock_kv.is_none() {
                return Err(CatalogError::not_found(
                    format!("service {service}"),
                    "deployment records are kept for registered services and for deploys in \
                     progress (holding the service's deploy lock); register an instance or \
                     take the lock first",
                ));
            }
            let mut records = results.range()?;
            let existing = records.iter().find(|kv| kv.key == key).cloned();
            let mut txn = Txn {
                compares: vec![
                    guard(keys::service(service), service_kv.as_ref()),
                    guard(keys::lock(service), lock_kv.as_ref()),
                    guard(key.clone(), existing.as_ref()),
                ],
                success: vec![put(key.clone(), value.clone(), None)],
                ..Txn::default()
            };
            records.retain(|kv| kv.key != key);
            newest_first(&mut records);
            for old in records.iter().skip(DEPLOYMENTS_KEPT.saturating_sub(1)) {
                txn.compares.push(guard(old.key.clone(), Some(old)));
                txn.success.push(Op::Delete {
                    key: old.key.clone(),
                });
            }
            if let Some(revision) = self.commit(txn).await? {
                return Ok(revision);
            }
        }
        Err(CatalogError::Contention(format!(
            "deployment records of {service}"
        )))
    }

    /// Records of `service`, newest first: those created before revision
    /// `before` (all when `None`), at most `limit` (0: no limit) and about a
    /// megabyte.
    pub async fn list_deployments(
        &self,
        service: &str,
        limit: usize,
        before: Option<u64>,
    ) -> Result<DeploymentPage, CatalogError> {
        validate::service_name("service", service)?;
        let (_, results) = self
            .read(vec![Op::Range {
                prefix: keys::deployments_of(service),
            }])
            .await?;
        let mut records: Vec<KeyValue> = results
            .rest()?
            .into_iter()
            .filter(|kv| before.is_none_or(|before| kv.create_revision < before))
            .collect();
        newest_first(&mut records);
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut page = DeploymentPage::default();
        let mut bytes = 0;
        for kv in records.iter().take(limit) {
            if !page.deployments.is_empty() && bytes + kv.value.len() > PAGE_BYTES {
                break;
            }
            bytes += kv.value.len();
            page.deployments.push(from_json::<Deployment>(kv)?);
            page.next = Some(kv.create_revision);
        }
        let more = records.len().min(limit) > page.deployments.len();
        if !more {
            page.next = None;
        }
        Ok(page)
    }
}

/// Newest first by the revision at which each record was first written.
fn newest_first(records: &mut [KeyValue]) {
    records.sort_by_key(|kv| std::cmp::Reverse(kv.create_revision));
}

/// A record may not claim to have started well after now (by the
/// registry's clock).
fn check_clock(deployment: &Deployment, now: u64) -> Result<(), ValidationError> {
    let latest = now.saturating_add(validate::MAX_CLOCK_AHEAD_MS);
    for (field, value) in [
        ("deployment.started_at_ms", deployment.started_at_ms),
        ("deployment.ended_at_ms", deployment.ended_at_ms),
    ] {
        if value > latest {
            return Err(ValidationError::new(
                field,
                format!(
                    "{value} is more than 5 minutes after the registry's clock ({now}): check \
                     the deployer's clock"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_dated_in_the_future_are_refused() {
        let now = 1_800_000_000_000;
        let mut deployment = Deployment {
            id: "d1".into(),
            service: "web".into(),
            started_at_ms: now + 60_000,
            ..Deployment::default()
        };
        assert!(
            check_clock(&deployment, now).is_ok(),
            "a minute of drift is fine"
        );
        deployment.started_at_ms = now + 365 * 24 * 3600 * 1000;
        let error = check_clock(&deployment, now).expect_err("next year");
        assert_eq!(error.field, "deployment.started_at_ms");
    }
}
