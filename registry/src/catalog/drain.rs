//! Draining: the registry's mark on an instance that is up but should get
//! no new requests, so a rolling deploy can take it out of the proxies
//! before it stops the container (as Consul's maintenance mode and HAProxy's
//! `drain` state do).
//!
//! The mark lives in the instance's metadata under
//! [`meta::DRAINING`](switchyard_model::labels::meta::DRAINING), so it
//! travels with the instance on reads, watches and backups without a new
//! record format. It belongs to the registry: [`carry_mark`] is applied to
//! every registration (`Register`, `SyncNode`), so an agent re-registering
//! its containers keeps the mark and no client can set it by registering.

use switchyard_model::labels::meta;
use switchyard_model::{Instance, validate};

use super::{Catalog, CatalogError, MAX_ATTEMPTS, decode_instance, guard, instance_puts, keys};
use crate::store::{Compare, Op, Txn};

/// The most instances one `SetDraining` marks: a rolling batch is far
/// smaller, and the transaction stays small.
pub const MAX_DRAINING_PER_CALL: usize = 256;

/// `wanted` as a registration would store it over `current`: the draining
/// mark is the one already stored, whatever the registration says.
pub(super) fn carry_mark(mut wanted: Instance, current: Option<&Instance>) -> Instance {
    wanted.metadata.remove(meta::DRAINING);
    if let Some(mark) = current.and_then(|c| c.metadata.get(meta::DRAINING)) {
        wanted
            .metadata
            .insert(meta::DRAINING.to_string(), mark.clone());
    }
    wanted
}

impl Catalog {
    /// Marks instances `ids` of `service` draining (`mark` says why) or, with
    /// `None`, routable again, in one transaction fenced by the deploy lock
    /// like a flip (`lock_token` 0: no lock may be held). Every instance
    /// must be registered.
    pub async fn set_draining(
        &self,
        service: &str,
        ids: &[String],
        mark: Option<&str>,
        lock_token: u64,
    ) -> Result<u64, CatalogError> {
        validate::service_name("service", service)?;
        check_ids(ids)?;
        if let Some(mark) = mark {
            if mark.is_empty() {
                return Err(validate::ValidationError::new(
                    "reason",
                    "must not be empty: say why the instances drain (e.g. a deploy id)",
                )
                .into());
            }
            validate::text("reason", mark, validate::MAX_METADATA_VALUE_LEN, false)?;
        }
        for _ in 0..MAX_ATTEMPTS {
            let mut ops = vec![Op::Get {
                key: keys::lock(service),
            }];
            ops.extend(ids.iter().map(|id| Op::Get {
                key: keys::instance(service, id),
            }));
            let (revision, mut results) = self.read(ops).await?;
            let lock_kv = results.get()?;
            super::colors::check_lock(service, lock_kv.as_ref(), lock_token)?;
            let mut txn = Txn {
                compares: vec![Compare::CreateRevision {
                    key: keys::lock(service),
                    revision: lock_kv.as_ref().map_or(0, |kv| kv.create_revision),
                }],
                ..Txn::default()
            };
            for id in ids.iter() {
                let kv = results.get()?.ok_or_else(|| {
                    CatalogError::not_found(
                        format!("instance {id} of service {service}"),
                        "list the service's instances (`cdctl get SERVICE`) and name one of them",
                    )
                })?;
                let mut instance = decode_instance(&kv)?;
                let changed = match mark {
                    Some(mark) => instance
                        .metadata
                        .insert(meta::DRAINING.into(), mark.into())
                        .is_none_or(|old| old != mark),
                    None => instance.metadata.remove(meta::DRAINING).is_some(),
                };
                txn.compares
                    .push(guard(keys::instance(service, id), Some(&kv)));
                if changed {
                    txn.success.extend(instance_puts(&instance)?);
                }
            }
            if txn.success.is_empty() {
                return Ok(revision);
            }
            if let Some(revision) = self.commit(txn).await? {
                return Ok(revision);
            }
        }
        Err(CatalogError::Contention(format!("service {service}")))
    }
}

fn check_ids(ids: &[String]) -> Result<(), CatalogError> {
    if ids.is_empty() || ids.len() > MAX_DRAINING_PER_CALL {
        return Err(validate::ValidationError::new(
            "instance_ids",
            format!(
                "{} ids; name 1 to {MAX_DRAINING_PER_CALL} instances per call",
                ids.len()
            ),
        )
        .into());
    }
    for id in ids {
        validate::identifier("instance_ids", id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(mark: Option<&str>) -> Instance {
        let mut instance = Instance {
            id: "i1".into(),
            service: "web".into(),
            color: None,
            node: "n1".into(),
            address: std::net::IpAddr::from([10, 0, 0, 1]),
            port: 80,
            tags: Vec::new(),
            metadata: Default::default(),
            health: switchyard_model::Health::Passing,
            session: None,
            create_revision: 0,
            mod_revision: 0,
        };
        if let Some(mark) = mark {
            instance.metadata.insert(meta::DRAINING.into(), mark.into());
        }
        instance
    }

    #[test]
    fn a_registration_keeps_the_stored_mark_and_cannot_set_one() {
        let kept = carry_mark(instance(None), Some(&instance(Some("deploy 1"))));
        assert_eq!(
            kept.metadata.get(meta::DRAINING).map(String::as_str),
            Some("deploy 1")
        );
        assert!(kept.is_draining());
        let refused = carry_mark(instance(Some("mine")), Some(&instance(None)));
        assert!(!refused.is_draining());
        let new = carry_mark(instance(Some("mine")), None);
        assert!(!new.is_draining());
    }
}
