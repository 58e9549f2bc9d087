//! Colors and deploy locks: the next color, the compare-and-swap of the live
//! color fenced by the lock's token, and the lock itself (a leased key whose
//! create revision is the token).

use std::time::Duration;

use switchyard_model::auth::PRINCIPAL_KEY;
use switchyard_model::{Color, LockGrant, validate};

use super::{
    Catalog, CatalogError, LockRecord, MAX_ATTEMPTS, ServiceRecord, decode_service, from_json,
    guard, keys, put, to_json,
};
use crate::store::{Compare, KeyValue, Op, Results, StoreError, Txn};

impl Catalog {
    /// The live color of `service` and the color a deploy would go to.
    pub async fn next_color(
        &self,
        service: &str,
    ) -> Result<(Option<Color>, Color, u64), CatalogError> {
        validate::service_name("service", service)?;
        let (revision, mut results) = self
            .read(vec![Op::Get {
                key: keys::service(service),
            }])
            .await?;
        let active = match results.get()? {
            Some(kv) => decode_service(service, &kv)?.active_color,
            None => None,
        };
        Ok((active, Color::next(active), revision))
    }

    /// Compare-and-swap of the live color. Succeeds only when the color is
    /// `expected` and `lock_token` is the live lock (0: no lock may be held).
    /// `by` is who flips it as the registry knows them (with `--auth`); it
    /// is kept in the service's metadata under [`PRINCIPAL_KEY`], and cleared
    /// by a flip without one so an old name is never shown for a new flip.
    /// A flip ends any canary: the new live color takes every request.
    pub async fn set_active_color(
        &self,
        service: &str,
        color: Option<Color>,
        expected: Option<Color>,
        lock_token: u64,
        by: Option<&str>,
    ) -> Result<u64, CatalogError> {
        self.change_service_record(service, lock_token, |record, _| {
            if record.active_color != expected {
                return Err(CatalogError::ColorMismatch {
                    service: service.to_string(),
                    current: record.active_color,
                    expected,
                });
            }
            if record.active_color == color && record.canary_weight == 0 {
                return Ok(false);
            }
            record.active_color = color;
            record.color_set = true;
            record.canary_weight = 0;
            record.canary_sticky = false;
            record.color_revision = 0;
            match by {
                Some(name) => record.metadata.insert(PRINCIPAL_KEY.into(), name.into()),
                None => record.metadata.remove(PRINCIPAL_KEY),
            };
            Ok(true)
        })
        .await
    }

    /// Compare-and-swap of a canary's weight: the share (0–99 percent) of
    /// requests the color that is not live takes. Succeeds only when the
    /// live color is `expected_color` (a canary needs one), the weight is
    /// `expected_weight`, and `lock_token` is the live lock (0: none held).
    /// `sticky` pins each client to its first color while the canary runs.
    pub async fn set_canary_weight(
        &self,
        service: &str,
        (weight, sticky): (u8, bool),
        expected_weight: u8,
        expected_color: Option<Color>,
        lock_token: u64,
    ) -> Result<u64, CatalogError> {
        let sticky = sticky && weight > 0;
        let weight = validate::canary_weight("weight", u32::from(weight))?;
        self.change_service_record(service, lock_token, |record, kv| {
            let live = record.active_color;
            if live != expected_color || live.is_none() {
                return Err(CatalogError::ColorMismatch {
                    service: service.to_string(),
                    current: live,
                    expected: expected_color,
                });
            }
            if record.canary_weight != expected_weight {
                return Err(CatalogError::WeightMismatch {
                    service: service.to_string(),
                    current: record.canary_weight,
                    expected: expected_weight,
                });
            }
            if record.canary_weight == weight && record.canary_sticky == sticky {
                return Ok(false);
            }
            record.color_revision = record.color_revision(kv);
            record.canary_weight = weight;
            record.canary_sticky = sticky;
            Ok(true)
        })
        .await
    }

    /// Reads the record of `service`, checks the lock, lets `change` edit
    /// it (answering whether it changed anything) and commits it if the
    /// record and the lock are still those read; tries again otherwise.
    async fn change_service_record(
        &self,
        service: &str,
        lock_token: u64,
        mut change: impl FnMut(&mut ServiceRecord, &KeyValue) -> Result<bool, CatalogError>,
    ) -> Result<u64, CatalogError> {
        validate::service_name("service", service)?;
        for _ in 0..MAX_ATTEMPTS {
            let (revision, mut results) = self
                .read(vec![
                    Op::Get {
                        key: keys::service(service),
                    },
                    Op::Get {
                        key: keys::lock(service),
                    },
                ])
                .await?;
            let service_kv = results.get()?.ok_or_else(|| {
                CatalogError::not_found(
                    format!("service {service}"),
                    "a service appears when its first instance registers; register one first",
                )
            })?;
            let lock_kv = results.get()?;
            let mut record: ServiceRecord = from_json(&service_kv)?;
            check_lock(service, lock_kv.as_ref(), lock_token)?;
            if !change(&mut record, &service_kv)? {
                return Ok(revision);
            }
            let txn = Txn {
                compares: vec![
                    guard(keys::service(service), Some(&service_kv)),
                    Compare::CreateRevision {
                        key: keys::lock(service),
                        revision: lock_kv.as_ref().map_or(0, |kv| kv.create_revision),
                    },
                ],
                success: vec![put(keys::service(service), to_json(&record)?, None)],
                ..Txn::default()
            };
            if let Some(revision) = self.commit(txn).await? {
                return Ok(revision);
            }
        }
        Err(CatalogError::Contention(format!("service {service}")))
    }

    /// Takes the deploy lock of `service` for `ttl_seconds` (renewable).
    /// `by` is who takes it as the registry knows them (with `--auth`),
    /// named beside the client's `holder` when someone else asks for it.
    pub async fn acquire_lock(
        &self,
        service: &str,
        holder: &str,
        ttl_seconds: u32,
        by: Option<&str>,
    ) -> Result<LockGrant, CatalogError> {
        validate::service_name("service", service)?;
        validate::holder("holder", holder)?;
        let ttl_seconds = validate::ttl_seconds("ttl_seconds", ttl_seconds)?;
        if let Some(kv) = self.get_one(keys::lock(service)).await? {
            return Err(lock_held(service, &kv));
        }
        let lease = self
            .store
            .lease_grant(Duration::from_secs(u64::from(ttl_seconds)))
            .await?;
        let record = LockRecord {
            holder: holder.to_string(),
            principal: by.map(str::to_string),
            lease,
            ttl_seconds,
        };
        let txn = Txn {
            compares: vec![Compare::CreateRevision {
                key: keys::lock(service),
                revision: 0,
            }],
            success: vec![put(keys::lock(service), to_json(&record)?, Some(lease))],
            failure: vec![Op::Get {
                key: keys::lock(service),
            }],
        };
        let response = match self.store.txn(txn).await {
            Ok(response) => response,
            Err(error) => {
                let _ = self.store.lease_revoke(lease).await;
                return Err(error.into());
            }
        };
        if response.succeeded {
            return Ok(LockGrant {
                token: response.revision,
                ttl_seconds,
            });
        }
        let _ = self.store.lease_revoke(lease).await;
        match Results::new(response.results).get()? {
            Some(kv) => Err(lock_held(service, &kv)),
            None => Err(CatalogError::Contention(format!("lock of {service}"))),
        }
    }

    pub async fn renew_lock(&self, service: &str, token: u64) -> Result<u32, CatalogError> {
        validate::service_name("service", service)?;
        let kv = self.live_lock(service, token).await?;
        let record: LockRecord = from_json(&kv)?;
        match self.store.lease_keep_alive(record.lease).await {
            Ok(ttl) => Ok(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)),
            Err(StoreError::LeaseNotFound(_)) => Err(CatalogError::LockLost {
                service: service.to_string(),
                token,
            }),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn release_lock(&self, service: &str, token: u64) -> Result<u64, CatalogError> {
        validate::service_name("service", service)?;
        let kv = self.live_lock(service, token).await?;
        let record: LockRecord = from_json(&kv)?;
        match self.store.lease_revoke(record.lease).await {
            Ok(revision) => Ok(revision),
            Err(StoreError::LeaseNotFound(_)) => Err(CatalogError::LockLost {
                service: service.to_string(),
                token,
            }),
            Err(error) => Err(error.into()),
        }
    }

    async fn live_lock(&self, service: &str, token: u64) -> Result<KeyValue, CatalogError> {
        match self.get_one(keys::lock(service)).await? {
            Some(kv) if kv.create_revision == token => Ok(kv),
            _ => Err(CatalogError::LockLost {
                service: service.to_string(),
                token,
            }),
        }
    }
}

fn lock_held(service: &str, kv: &KeyValue) -> CatalogError {
    let (holder, principal) = match from_json::<LockRecord>(kv) {
        Ok(record) => (record.holder, record.principal),
        Err(_) => ("an unknown holder".into(), None),
    };
    CatalogError::LockHeld {
        service: service.to_string(),
        holder,
        principal,
    }
}

pub(super) fn check_lock(
    service: &str,
    lock: Option<&KeyValue>,
    token: u64,
) -> Result<(), CatalogError> {
    match (lock, token) {
        (None, 0) => Ok(()),
        (Some(kv), 0) => Err(lock_held(service, kv)),
        (Some(kv), token) if kv.create_revision == token => Ok(()),
        (_, token) => Err(CatalogError::LockLost {
            service: service.to_string(),
            token,
        }),
    }
}
