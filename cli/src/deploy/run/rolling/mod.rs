//! `--strategy rolling`: new instances replace old ones within the live
//! color, `--batch` at a time, for services that cannot run twice their
//! capacity. Each batch stops up to `--max-unavailable` old instances
//! first, starts its new ones, waits until the registry lists them passing
//! and every reporting proxy applied that, then retires the rest of its old
//! ones. Retiring drains before it stops: the registry marks the instances
//! draining (`SetDraining`), proxies drop them from their upstreams, and
//! only once every reporting proxy applied that is the container stopped
//! (it gets `--stop-timeout` to finish what it has in flight).
//!
//! A failure puts everything back: the old instances stopped so far start
//! again, the ones drained take requests again, and the new ones are
//! drained, then removed.

use std::collections::HashSet;

use switchyard_model::Instance;

use super::{Deploy, Failure, Forward, failpoint};
use crate::deploy::runtime::{RuntimeKind, Unit};

mod on_swarm;

impl Deploy<'_> {
    /// The forward path of a rolling deploy.
    pub(super) async fn roll_forward(&mut self) -> Result<Forward, Failure> {
        let Some(rolling) = self.settings.rolling else {
            return Err(Failure::Error(anyhow::anyhow!("not a rolling deploy")));
        };
        self.take_lock().await?;
        self.read_colors().await?;
        let Some(live) = self.active else {
            return Err(Failure::Error(anyhow::anyhow!(
                "{} has no live color to roll: deploy it first with --strategy blue-green",
                self.settings.service
            )));
        };
        // The new instances join the live color.
        self.next = live;
        self.record.to_color = Some(live);
        self.follow_progress();
        if self.runtime.kind() == RuntimeKind::Swarm {
            return self.roll_swarm(live, rolling).await;
        }
        let mut old: Vec<Unit> = self
            .runtime
            .units(&self.settings.service, Some(live))
            .await?
            .into_iter()
            .filter(|unit| unit.running)
            .collect();
        if !self.settings.replicas_given {
            // As many as run now, unless --replicas says otherwise.
            self.settings.replicas = len(&old).max(1);
        }
        let batches = rolling.batches(len(&old), self.settings.replicas);
        let count = batches.len();
        for (number, (stop, start)) in (1..).zip(batches) {
            self.reporter.begin(&format!("batch {number}/{count}"));
            let retiring: Vec<Unit> = old.drain(..stop as usize).collect();
            let early = rolling.max_unavailable.min(stop) as usize;
            self.retire(&retiring[..early]).await?;
            let started = self.start_batch(start).await?;
            failpoint(&format!("batch-{number}"))?;
            self.retire(&retiring[early..]).await?;
            self.reporter.end(&format!(
                "{} new ({}) passing; {} old retired",
                start,
                started.join(", "),
                retiring.len()
            ));
        }
        Ok(Forward::Promoted)
    }

    /// Starts `count` new containers, waits until the registry lists every
    /// new one of this deploy passing and the proxies applied that; answers
    /// the names it started.
    async fn start_batch(&mut self, count: u32) -> Result<Vec<String>, Failure> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let names = self
            .runtime
            .free_names(&self.settings.service, self.next, count)
            .await?;
        self.runtime
            .start_batch(&self.settings, self.next, &self.record.id, names.clone())
            .await?;
        let started = self.runtime.deployed_by(&self.record.id).await?.len();
        self.targets_when_passing(started).await?;
        let (_, _, revision) = self.client.next_color(&self.settings.service).await?;
        self.proxies_at(revision).await?;
        // From here on the new version takes requests: a failure rolls back.
        self.rolled = true;
        Ok(names)
    }

    /// Drains `units` (no new requests once the proxies applied it), then
    /// stops them and waits until the registry no longer lists them.
    async fn retire(&mut self, units: &[Unit]) -> Result<(), Failure> {
        if units.is_empty() {
            return Ok(());
        }
        let ids: HashSet<String> = units.iter().map(|unit| unit.id.clone()).collect();
        let instances = self.instances_of(&ids).await?;
        if !instances.is_empty() {
            self.drained_old.extend(instances.iter().cloned());
            let reason = format!("rolling deploy {}", self.record.id);
            let revision = self
                .client
                .set_draining(
                    &self.settings.service,
                    &instances,
                    Some(&reason),
                    self.token(),
                )
                .await?;
            self.proxies_at(revision).await?;
        }
        self.stopped_old.extend(units.iter().cloned());
        let timeout = self.settings.stop_timeout;
        let stops = units.iter().map(|unit| self.runtime.stop(unit, timeout));
        for stopped in futures::future::join_all(stops).await {
            stopped?;
        }
        let runtime = self.runtime.clone();
        self.wait_registry(
            "old instances deregistered",
            self.settings.health_timeout,
            |instances| !instances.iter().any(|i| runtime.owned_by(i, &ids)),
        )
        .await
    }

    /// The ids of the registered instances of `units`.
    async fn instances_of(&self, units: &HashSet<String>) -> Result<Vec<String>, Failure> {
        let (_, service) = self.client.get_service(&self.settings.service).await?;
        Ok(service
            .instances
            .iter()
            .filter(|i| self.runtime.owned_by(i, units))
            .map(|i: &Instance| i.id.clone())
            .collect())
    }

    /// Undoes a rolling deploy: the old instances stopped start again (and
    /// pass), those drained take requests again, then the new ones drain
    /// and go.
    pub(super) async fn undo_rollout(&mut self, left: &mut Vec<String>) {
        if let Some(unit) = self.swarm_rolled.take() {
            self.undo_swarm(left, &unit).await;
            return;
        }
        self.undo_stop_old(left).await;
        let drained = std::mem::take(&mut self.drained_old);
        self.set_routable(left, &drained, None).await;
        let ours = match self.runtime.deployed_by(&self.record.id).await {
            Ok(ours) => ours,
            Err(error) => {
                left.push(format!("cannot list the new containers: {error:#}"));
                return;
            }
        };
        let ids: HashSet<String> = ours.iter().map(|unit| unit.id.clone()).collect();
        match self.instances_of(&ids).await {
            Ok(new) => {
                let reason = format!("rollback of {}", self.record.id);
                self.set_routable(left, &new, Some(&reason)).await;
            }
            Err(failure) => tracing::warn!("{}", failure.message()),
        }
        self.remove_new(left, &ours).await;
    }

    /// Marks those of `ids` still registered draining (`reason`) or
    /// routable (`None`), and waits for the proxies.
    async fn set_routable(&self, left: &mut Vec<String>, ids: &[String], reason: Option<&str>) {
        let service = &self.settings.service;
        let registered: Vec<String> = match self.client.get_service(service).await {
            Ok((_, found)) => {
                let present: HashSet<&str> =
                    found.instances.iter().map(|i| i.id.as_str()).collect();
                ids.iter()
                    .filter(|id| present.contains(id.as_str()))
                    .cloned()
                    .collect()
            }
            Err(error) => {
                left.push(format!("cannot read {service}: {}", error.message()));
                return;
            }
        };
        if registered.is_empty() {
            return;
        }
        match self
            .client
            .set_draining(service, &registered, reason, self.token())
            .await
        {
            Ok(revision) => {
                if let Err(failure) = self.proxies_at(revision).await {
                    tracing::warn!("{}", failure.message());
                }
            }
            Err(error) => left.push(format!(
                "instances {} still {}: {}",
                registered.join(", "),
                if reason.is_some() {
                    "routable"
                } else {
                    "draining"
                },
                error.message()
            )),
        }
    }
}

fn len(units: &[Unit]) -> u32 {
    u32::try_from(units.len()).unwrap_or(u32::MAX)
}
