//! What a rolling deploy asks of the runtime: containers started a batch
//! at a time under free names, or a Swarm service whose tasks Swarm rolls
//! over itself (`update_config`), followed until it completes or rolls
//! back.

use std::collections::HashSet;
use std::time::Duration;

use switchyard_model::Color;

use super::super::Settings;
use super::super::docker::{RollingUpdate, ServiceDefinition, UpdateProgress};
use super::super::strategy::Rolling;
use super::{Runtime, RuntimeKind, Unit, unit_labels};

impl Runtime {
    /// Starts one rolling batch: containers `names` of `color`, labelled
    /// with the deploy; answers how long the slowest took.
    pub async fn start_batch(
        &self,
        settings: &Settings,
        color: Color,
        deploy_id: &str,
        names: Vec<String>,
    ) -> anyhow::Result<Duration> {
        anyhow::ensure!(
            self.kind == RuntimeKind::Containers,
            "a rolling deploy starts containers; Swarm services roll with `docker service \
             update` (use --runtime containers, or --strategy blue-green on Swarm)"
        );
        let labels = unit_labels(settings, self.engine.scope(), color, deploy_id);
        self.start_containers(settings, labels, names).await
    }

    /// Names for `count` more containers of `color`: `SERVICE-COLOR-N` with
    /// the smallest numbers no container of the service has.
    pub async fn free_names(
        &self,
        service: &str,
        color: Color,
        count: u32,
    ) -> anyhow::Result<Vec<String>> {
        let taken: HashSet<String> = self
            .engine
            .containers(service, None)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        Ok((1..)
            .map(|n| self.engine.scoped_name(&format!("{service}-{color}-{n}")))
            .filter(|name| !taken.contains(name))
            .take(count as usize)
            .collect())
    }

    /// Redefines the live color's Swarm service `unit` with the new image
    /// and lets Swarm replace its tasks `rolling.batch` at a time (new ones
    /// first unless `--max-unavailable`), rolling back on the first task
    /// that fails; `monitor` is how long Swarm watches each new task.
    pub async fn roll_swarm(
        &self,
        unit: &Unit,
        settings: &Settings,
        (color, deploy_id): (Color, &str),
        rolling: Rolling,
        monitor: Duration,
    ) -> anyhow::Result<()> {
        let network = settings.network.clone().ok_or_else(|| {
            anyhow::anyhow!("a Swarm deploy needs --network (an overlay network)")
        })?;
        let definition = ServiceDefinition {
            name: unit.name.clone(),
            image: settings.image.clone(),
            replicas: settings.replicas,
            env: settings.env.clone(),
            labels: unit_labels(settings, self.engine.scope(), color, deploy_id),
            network,
            stop_timeout: settings.stop_timeout,
        };
        let update = RollingUpdate {
            parallelism: rolling.batch,
            start_first: rolling.max_unavailable == 0,
            monitor,
        };
        self.engine
            .roll_service(&unit.id, &definition, update)
            .await
    }

    /// Where the last rolling update of a Swarm service is.
    pub async fn swarm_progress(&self, unit: &Unit) -> anyhow::Result<UpdateProgress> {
        self.engine.update_progress(&unit.id).await
    }

    /// Asks Swarm to put a service's previous spec back.
    pub async fn roll_back_swarm(&self, unit: &Unit) -> anyhow::Result<()> {
        self.engine.roll_back_service(&unit.id).await
    }
}
