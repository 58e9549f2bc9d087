//! What a deploy waits for in the registry: its new instances passing,
//! instances gone or back, and proxies that applied a revision. Each wait
//! has a deadline and says on timeout what it saw.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_client::view::ServiceView;
use switchyard_client::{ClientError, RegistryClient};
use switchyard_model::{Health, Instance, Service};

use super::super::report::millis;
use super::{Deploy, Failure};

impl Deploy<'_> {
    /// Step 5: follows the service on the registry's watch until every
    /// replica this deploy started passes; answers their targets.
    pub(super) async fn new_targets_when_healthy(&mut self) -> Result<Vec<String>, Failure> {
        let deadline = Instant::now() + self.settings.health_timeout;
        let wanted = self.settings.replicas as usize;
        let ours: HashSet<String> = self
            .runtime
            .deployed_by(&self.record.id)
            .await?
            .into_iter()
            .map(|unit| unit.id)
            .collect();
        let runtime = self.runtime.clone();
        let mut seen = 0;
        let found = follow_until(self.client, &self.settings.service, deadline, |service| {
            let passing: Vec<String> = service
                .instances
                .iter()
                .filter(|i| runtime.owned_by(i, &ours) && i.health == Health::Passing)
                .map(Instance::target)
                .collect();
            seen = passing.len();
            (passing.len() >= wanted).then_some(passing)
        })
        .await?;
        found.ok_or_else(|| {
            Failure::HealthTimeout(format!(
                "{seen} of {wanted} instances of {} passing in the registry after {:?}: check \
                 the containers' logs and health, and that cd-agent runs on this node",
                self.next, self.settings.health_timeout
            ))
        })
    }

    /// Follows the service's instances on the registry's watch until
    /// `done` holds, for at most `patience`.
    pub(super) async fn wait_registry(
        &self,
        what: &str,
        patience: Duration,
        done: impl Fn(&[Instance]) -> bool,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + patience;
        let held = follow_until(self.client, &self.settings.service, deadline, |service| {
            done(&service.instances).then_some(())
        })
        .await?;
        held.ok_or_else(|| {
            Failure::Error(anyhow::anyhow!(
                "waited {patience:?} for {what} in the registry: is cd-agent running on this node?"
            ))
        })
    }
}

/// Follows `service` on the registry's watch until `check` answers for it
/// (an absent service has no instances), or `deadline` passes (`None`).
/// The first answer comes from the watch's snapshot, so a condition that
/// already holds returns at once; every change is checked the moment it
/// arrives. A broken stream resumes from the last revision seen (a reset
/// brings a fresh snapshot); only errors that are not the registry being
/// unreachable end the wait.
pub(super) async fn follow_until<T>(
    client: &RegistryClient,
    service: &str,
    deadline: Instant,
    mut check: impl FnMut(&Service) -> Option<T>,
) -> Result<Option<T>, ClientError> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let filter = [service.to_string()];
    let absent = Service::new(service);
    let mut view = ServiceView::default();
    loop {
        let opened = tokio::time::timeout_at(deadline, client.watch(&filter, view.revision)).await;
        let stream = match opened {
            Err(_) => return Ok(None),
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) if error.is_unreachable() => {
                // Not a poll of the state: the registry is away; the client
                // has already tried every URL it knows.
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RETRY)).await;
                continue;
            }
            Ok(Err(error)) => return Err(error),
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Ok(None),
                Ok(Some(Ok(event))) => event,
                // Ended or cut: resume from `view.revision`.
                Ok(None) => break,
                Ok(Some(Err(error))) if error.is_resumable() => break,
                Ok(Some(Err(error))) => return Err(error),
            };
            if view.apply(&event) && view.revision > 0 {
                let current = view.services.get(service).unwrap_or(&absent);
                if let Some(answer) = check(current) {
                    return Ok(Some(answer));
                }
            }
        }
    }
}

/// How soon a wait tries the registry again when it was unreachable.
const RETRY: Duration = Duration::from_millis(200);

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
