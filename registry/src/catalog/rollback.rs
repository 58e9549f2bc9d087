//! Rolling a service back to its previous color: the one operation behind
//! `cdctl rollback` (the `RollBack` RPC) and the dashboard's button. The
//! rule is `switchyard_model::rollback::plan`; this applies it under the
//! service's deploy lock, flips, and records the rollback.

use switchyard_model::auth::PRINCIPAL_KEY;
use switchyard_model::labels::record;
use switchyard_model::{Color, Deployment, Outcome, defaults, rollback, validate};

use super::{Catalog, CatalogError, now_ms};

/// A rollback done: the revision of its flip and its record.
#[derive(Debug, Clone)]
pub struct RolledBack {
    pub revision: u64,
    pub deployment: Deployment,
}

/// Who asks for a rollback.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The name the record carries (`--who`, or `dashboard`).
    pub who: &'a str,
    /// The principal as the registry knows it, with `--auth`.
    pub principal: Option<&'a str>,
}

impl Catalog {
    /// Rolls `service` back under the deploy lock `lock_token` (0: under a
    /// lock of its own, taken and given back here). Refused with
    /// `Conflict` (FAILED_PRECONDITION) when the rule says no, and with
    /// `ColorMismatch` when the live color is not `expected` (a retried
    /// call whose first attempt already flipped).
    pub async fn roll_back(
        &self,
        service: &str,
        by: Requester<'_>,
        expected: Option<Color>,
        lock_token: u64,
    ) -> Result<RolledBack, CatalogError> {
        validate::service_name("service", service)?;
        validate::holder("who", by.who)?;
        if lock_token != 0 {
            return self
                .roll_back_locked(service, by, expected, lock_token)
                .await;
        }
        let holder = format!("rollback ({})", by.who);
        let ttl = defaults::whole_seconds(defaults::LOCK_TTL);
        let grant = self
            .acquire_lock(service, &holder, ttl, by.principal)
            .await?;
        let done = self
            .roll_back_locked(service, by, expected, grant.token)
            .await;
        if let Err(error) = self.release_lock(service, grant.token).await {
            tracing::warn!(%error, service, "could not release the lock; it expires with its TTL");
        }
        done
    }

    async fn roll_back_locked(
        &self,
        service: &str,
        by: Requester<'_>,
        expected: Option<Color>,
        token: u64,
    ) -> Result<RolledBack, CatalogError> {
        let started_at_ms = now_ms();
        let newest = self.list_deployments(service, 1, None).await?;
        let (_, current) = self.get_service(service).await?;
        if expected.is_some() && current.active_color != expected {
            return Err(CatalogError::ColorMismatch {
                service: service.to_string(),
                current: current.active_color,
                expected,
            });
        }
        let plan = rollback::plan(&current, newest.deployments.first())
            .map_err(|refused| CatalogError::Conflict(refused.to_string()))?;
        let image = match plan.image {
            Some(image) => image,
            None => self.image_made_live(service, plan.to).await?,
        };
        let revision = self
            .set_active_color(service, Some(plan.to), Some(plan.from), token, by.principal)
            .await?;
        let mut metadata = vec![(record::KIND.to_string(), record::ROLLBACK.to_string())];
        if let Some(principal) = by.principal {
            metadata.push((PRINCIPAL_KEY.to_string(), principal.to_string()));
        }
        let deployment = Deployment {
            id: format!("{}-rb{:04x}", now_ms(), rand::random::<u16>()),
            service: service.to_string(),
            from_color: Some(plan.from),
            to_color: Some(plan.to),
            image,
            who: by.who.to_string(),
            started_at_ms,
            ended_at_ms: now_ms(),
            outcome: Outcome::RolledBack,
            error: "rollback".into(),
            metadata: metadata.into_iter().collect(),
            ..Deployment::default()
        };
        if let Err(error) = self.record_deployment(deployment.clone()).await {
            tracing::warn!(%error, service, "the rollback is done but its record was not written");
        }
        Ok(RolledBack {
            revision,
            deployment,
        })
    }

    /// The image of the newest deploy that made `color` live, for when the
    /// instances of `color` do not say theirs (registered by hand, or by
    /// an agent that reads no image); said as unknown rather than empty.
    async fn image_made_live(&self, service: &str, color: Color) -> Result<String, CatalogError> {
        let page = self.list_deployments(service, 50, None).await?;
        let made_live = page.deployments.into_iter().find(|record| {
            record.to_color == Some(color)
                && record.outcome == Outcome::Promoted
                && !record.image.is_empty()
        });
        Ok(made_live.map_or_else(
            || "(unknown: not reported by its instances)".to_string(),
            |record| record.image,
        ))
    }
}
