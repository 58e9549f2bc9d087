//! A rolling deploy on Swarm. A Swarm service's tasks belong to its
//! reconciler: a task cdctl stopped would be started again, and which task
//! a scale-down removes is Swarm's choice. So cdctl redefines the live
//! color's service with the new image and an `update_config` (parallelism
//! `--batch`, start-first unless `--max-unavailable`, roll back on the first
//! failed task), follows Swarm until the update completes or rolls back,
//! then waits until the registry lists every task of the new spec passing
//! and the proxies applied that. Swarm stops old tasks itself, so they are
//! not drained in the registry first: they get `--stop-timeout` after
//! SIGTERM, and the proxies retry what a stopping task refuses.

use std::collections::HashSet;
use std::time::Duration;

use switchyard_model::labels::meta;
use switchyard_model::{Color, Health, Instance};
use tokio::time::Instant;

use super::super::{Deploy, Failure, Forward, failpoint};
use crate::deploy::docker::{UpdateProgress, UpdateState};
use crate::deploy::runtime::Unit;
use crate::deploy::strategy::Rolling;

/// How long Swarm watches each new task for a failure before it goes on.
const MONITOR: Duration = Duration::from_secs(2);
/// How often Swarm's update status is read.
const POLL: Duration = Duration::from_millis(250);

impl Deploy<'_> {
    /// Lets Swarm roll the live color's service over to the new image.
    pub(super) async fn roll_swarm(
        &mut self,
        live: Color,
        rolling: Rolling,
    ) -> Result<Forward, Failure> {
        self.reporter.begin("swarm update");
        let service = self.settings.service.clone();
        let unit = self
            .runtime
            .units(&service, Some(live))
            .await?
            .into_iter()
            .find(|unit| unit.running)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{service} has no running Swarm service of {live} to roll: deploy it with \
                     --strategy blue-green first"
                )
            })?;
        if !self.settings.replicas_given {
            // As many tasks as it has now, unless --replicas says otherwise.
            self.settings.replicas = unit.replicas.max(1);
        }
        let before = self.runtime.swarm_progress(&unit).await?;
        self.swarm_rolled = Some(unit.clone());
        self.runtime
            .roll_swarm(
                &unit,
                &self.settings,
                (live, &self.record.id),
                rolling,
                MONITOR,
            )
            .await?;
        self.rolled = true;
        let batches = self.settings.replicas.div_ceil(rolling.batch.max(1));
        let patience = (self.settings.health_timeout + MONITOR) * batches;
        let done = self.swarm_settles(&unit, &before.started, patience).await?;
        if done.state != UpdateState::Completed {
            return Err(Failure::HealthTimeout(format!(
                "Swarm stopped the update of {} ({:?}: {}); see `docker service ps {}`",
                unit.name, done.state, done.message, unit.name
            )));
        }
        failpoint("swarm-update")?;
        let (deploy_id, wanted) = (self.record.id.clone(), self.settings.replicas as usize);
        let units = HashSet::from([unit.id.clone()]);
        let runtime = self.runtime.clone();
        self.wait_registry(
            "the new tasks passing",
            self.settings.health_timeout,
            |instances| {
                let tasks: Vec<&Instance> = instances
                    .iter()
                    .filter(|i| runtime.owned_by(i, &units))
                    .collect();
                tasks.len() >= wanted && tasks.iter().all(|i| passing_of(i, Some(&deploy_id)))
            },
        )
        .await?;
        let (_, _, revision) = self.client.next_color(&service).await?;
        let proxies = self.proxies_at(revision).await?;
        self.reporter.end(&format!(
            "{} × {} in {} ({} at a time); {proxies}",
            self.settings.replicas, self.settings.image, unit.name, rolling.batch
        ));
        Ok(Forward::Promoted)
    }

    /// Reads Swarm's update status until the update that started after
    /// `before` has ended (completed, rolled back or paused), for at most
    /// `patience`.
    async fn swarm_settles(
        &self,
        unit: &Unit,
        before: &str,
        patience: Duration,
    ) -> Result<UpdateProgress, Failure> {
        let deadline = Instant::now() + patience;
        loop {
            let progress = self.runtime.swarm_progress(unit).await?;
            if progress.started != before && progress.state != UpdateState::Running {
                return Ok(progress);
            }
            if Instant::now() >= deadline {
                return Err(Failure::HealthTimeout(format!(
                    "Swarm's update of {} did not end within {patience:?} ({}); see \
                     `docker service ps {}`",
                    unit.name, progress.message, unit.name
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Undoes a Swarm rolling update: unless Swarm rolled it back already,
    /// asks it to, then waits until the registry lists the old tasks
    /// passing again.
    pub(super) async fn undo_swarm(&mut self, left: &mut Vec<String>, unit: &Unit) {
        let progress = match self.runtime.swarm_progress(unit).await {
            Ok(progress) => progress,
            Err(error) => {
                left.push(format!(
                    "cannot read the update of {}: {error:#}",
                    unit.name
                ));
                return;
            }
        };
        if progress.state != UpdateState::RolledBack {
            if let Err(error) = self.runtime.roll_back_swarm(unit).await {
                left.push(format!(
                    "{} is not rolled back: {error:#} (run `docker service rollback {}`)",
                    unit.name, unit.name
                ));
                return;
            }
            let patience = self.settings.health_timeout + MONITOR * unit.replicas.max(1);
            if let Err(failure) = self.swarm_settles(unit, &progress.started, patience).await {
                tracing::warn!("{}", failure.message());
            }
        }
        let (ours, units) = (self.record.id.clone(), HashSet::from([unit.id.clone()]));
        let (runtime, wanted) = (self.runtime.clone(), unit.replicas as usize);
        self.wait_or_leave(left, "the old tasks passing again", |instances| {
            let tasks: Vec<&Instance> = instances
                .iter()
                .filter(|i| runtime.owned_by(i, &units))
                .collect();
            tasks.len() >= wanted
                && tasks.iter().all(|i| {
                    passing_of(i, None)
                        && i.metadata.get(meta::DEPLOY_ID).map(String::as_str)
                            != Some(ours.as_str())
                })
        })
        .await;
    }
}

/// Whether `instance` passes and (with `deploy`) was started by that
/// deploy.
fn passing_of(instance: &Instance, deploy: Option<&str>) -> bool {
    instance.health == Health::Passing
        && deploy
            .is_none_or(|id| instance.metadata.get(meta::DEPLOY_ID).map(String::as_str) == Some(id))
}
