//! What a deploy waits for in the registry: its new instances passing,
//! instances gone or back, and proxies that applied a revision. Each wait
//! has a deadline and says on timeout what it saw.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use switchyard_client::{Code, RegistryClient};
use switchyard_model::{Health, Instance};

use super::super::report::millis;
use super::{Deploy, Failure};

impl Deploy<'_> {
    pub(super) async fn new_targets_when_healthy(&mut self) -> Result<Vec<String>, Failure> {
        let deadline = Instant::now() + self.settings.health_timeout;
        let wanted = self.settings.replicas as usize;
        loop {
            let ours: HashSet<String> = self
                .runtime
                .deployed_by(&self.record.id)
                .await?
                .into_iter()
                .map(|unit| unit.id)
                .collect();
            let instances = self.instances().await?;
            let passing: Vec<&Instance> = instances
                .iter()
                .filter(|i| self.runtime.owned_by(i, &ours) && i.health == Health::Passing)
                .collect();
            if passing.len() >= wanted {
                return Ok(passing.iter().map(|i| i.target()).collect());
            }
            if Instant::now() >= deadline {
                return Err(Failure::HealthTimeout(format!(
                    "{} of {wanted} instances of {} passing in the registry after {:?}: check the \
                     containers' logs and health, and that cd-agent runs on this node",
                    passing.len(),
                    self.next,
                    self.settings.health_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub(super) async fn instances(&self) -> Result<Vec<Instance>, Failure> {
        match self.client.get_service(&self.settings.service).await {
            Ok((_, service)) => Ok(service.instances),
            Err(error) if error.code() == Some(Code::NotFound) => Ok(Vec::new()),
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn wait_registry(
        &self,
        what: &str,
        patience: Duration,
        done: impl Fn(&[Instance]) -> bool,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + patience;
        loop {
            if done(&self.instances().await?) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure::Error(anyhow::anyhow!(
                    "waited {patience:?} for {what} in the registry: is cd-agent running on this node?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until every proxy that reported within `stale` has applied
/// `revision`; answers a summary naming the silent ones not waited for.
pub(super) async fn proxies_at(
    client: &RegistryClient,
    revision: u64,
    timeout: Duration,
    stale: Duration,
) -> Result<String, Failure> {
    let deadline = Instant::now() + timeout;
    let stale_ms = millis(stale);
    loop {
        let (proxies, now_ms) = client.list_proxies().await?;
        let (live, stale): (Vec<_>, Vec<_>) = proxies
            .iter()
            .partition(|p| now_ms.saturating_sub(p.reported_at_ms) <= stale_ms);
        let behind: Vec<String> = live
            .iter()
            .filter(|p| p.applied_revision < revision)
            .map(|p| {
                if p.healthy {
                    format!("{} (at {})", p.proxy_id, p.applied_revision)
                } else {
                    format!(
                        "{} (at {}, unhealthy: {})",
                        p.proxy_id, p.applied_revision, p.message
                    )
                }
            })
            .collect();
        if behind.is_empty() {
            let mut summary = format!("{} proxies at revision {revision}", live.len());
            if !stale.is_empty() {
                let names: Vec<String> = stale
                    .iter()
                    .map(|p| {
                        format!(
                            "{} ({}s ago)",
                            p.proxy_id,
                            now_ms.saturating_sub(p.reported_at_ms) / 1000
                        )
                    })
                    .collect();
                summary.push_str(&format!("; not waited for, silent: {}", names.join(", ")));
            }
            return Ok(summary);
        }
        if Instant::now() >= deadline {
            return Err(Failure::Error(anyhow::anyhow!(
                "proxies did not apply revision {revision} within {:?}: {}",
                timeout,
                behind.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
