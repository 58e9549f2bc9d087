//! The Swarm side of [`Engine`]: one color of a service is one Swarm
//! service `SERVICE-COLOR`; find, create, update, scale and remove them.
//! A service's whole spec can be saved (as JSON) and put back, which is how
//! a deploy undoes what it did to a service it reused.

use std::collections::HashMap;

use anyhow::Context;
use bollard::models::{
    LocalNodeState, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, TaskSpec,
    TaskSpecContainerSpec,
};
use bollard::query_parameters::{ListServicesOptionsBuilder, UpdateServiceOptionsBuilder};

use super::{COLOR_LABEL, DEPLOY_LABEL, Engine, SERVICE_LABEL, not_found};
use switchyard_model::Color;

/// Label on a service scaled to zero: how many replicas it had, so a
/// rollback can scale it back.
pub const REPLICAS_LABEL: &str = switchyard_model::labels::label::REPLICAS;
const SAVED_SPEC_LABEL: &str = switchyard_model::labels::label::SAVED_SPEC;

/// A Swarm service of one color, as a deploy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmService {
    pub id: String,
    pub name: String,
    /// Replicas it is scaled to now.
    pub replicas: u32,
    pub labels: HashMap<String, String>,
}

/// What to run as one color.
#[derive(Debug, Clone)]
pub struct ServiceDefinition {
    pub name: String,
    pub image: String,
    pub replicas: u32,
    pub env: Vec<String>,
    /// On the service and on its task containers (the agent reads these).
    pub labels: HashMap<String, String>,
    pub network: String,
    pub stop_timeout: std::time::Duration,
}

impl ServiceDefinition {
    fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            name: Some(self.name.clone()),
            labels: Some(self.labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.clone()),
                    env: Some(self.env.clone()),
                    labels: Some(self.labels.clone()),
                    stop_grace_period: Some(
                        i64::try_from(self.stop_timeout.as_nanos()).unwrap_or(i64::MAX),
                    ),
                    ..TaskSpecContainerSpec::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(self.network.clone()),
                    ..NetworkAttachmentConfig::default()
                }]),
                ..TaskSpec::default()
            }),
            mode: Some(replicated(self.replicas)),
            ..ServiceSpec::default()
        }
    }
}

/// How Swarm rolls a service's tasks to a new spec (`update_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingUpdate {
    /// Tasks replaced at a time.
    pub parallelism: u32,
    /// Start each new task before its old one stops (else stop first).
    pub start_first: bool,
    /// How long Swarm watches each replaced task for a failure.
    pub monitor: std::time::Duration,
}

impl RollingUpdate {
    /// Rolls back on the first failed task, and rolls back the same way
    /// it rolled forward.
    fn apply(&self, spec: &mut ServiceSpec) {
        let monitor = i64::try_from(self.monitor.as_nanos()).unwrap_or(i64::MAX);
        spec.update_config = Some(ServiceSpecUpdateConfig {
            parallelism: Some(i64::from(self.parallelism)),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(monitor),
            max_failure_ratio: Some(0.0),
            order: Some(match self.start_first {
                true => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
                false => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            }),
        });
        spec.rollback_config = Some(ServiceSpecRollbackConfig {
            parallelism: Some(i64::from(self.parallelism)),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(monitor),
            max_failure_ratio: Some(0.0),
            order: Some(match self.start_first {
                true => ServiceSpecRollbackConfigOrderEnum::START_FIRST,
                false => ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
            }),
        });
    }
}

/// Where a service's last rolling update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateState {
    /// No update, or one still going (forward or back).
    Running,
    Completed,
    /// Swarm rolled it back (a task failed).
    RolledBack,
    /// Swarm stopped half-way (paused).
    Paused,
}

/// A service's last update: `started` tells one update from the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateProgress {
    pub started: String,
    pub state: UpdateState,
    pub message: String,
}

fn replicated(replicas: u32) -> ServiceSpecMode {
    ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(i64::from(replicas)),
        }),
        ..ServiceSpecMode::default()
    }
}

fn replicas_of(spec: &ServiceSpec) -> u32 {
    spec.mode
        .as_ref()
        .and_then(|mode| mode.replicated.as_ref())
        .and_then(|replicated| replicated.replicas)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

impl Engine {
    /// Whether this engine is a manager of an active swarm (where
    /// `--runtime auto` deploys Swarm services).
    pub async fn is_swarm_manager(&self) -> anyhow::Result<bool> {
        let info = self.docker.info().await.context("reading docker info")?;
        Ok(info.swarm.is_some_and(|swarm| {
            swarm.local_node_state == Some(LocalNodeState::ACTIVE)
                && swarm.control_available == Some(true)
        }))
    }

    /// Swarm services of `service`, of one color or all.
    pub async fn services(
        &self,
        service: &str,
        color: Option<Color>,
    ) -> anyhow::Result<Vec<SwarmService>> {
        let mut labels = vec![format!("{SERVICE_LABEL}={service}")];
        if let Some(color) = color {
            labels.push(format!("{COLOR_LABEL}={color}"));
        }
        self.list_services(labels).await
    }

    /// Swarm services one deploy created or updated.
    pub async fn services_deployed_by(&self, deploy_id: &str) -> anyhow::Result<Vec<SwarmService>> {
        self.list_services(vec![format!("{DEPLOY_LABEL}={deploy_id}")])
            .await
    }

    async fn list_services(&self, labels: Vec<String>) -> anyhow::Result<Vec<SwarmService>> {
        let filters = HashMap::from([("label".to_string(), self.within_scope(labels))]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_services(Some(options))
            .await
            .context("listing Swarm services (is this engine a Swarm manager?)")?;
        let mut services: Vec<SwarmService> = found
            .into_iter()
            .map(|service| {
                let spec = service.spec.unwrap_or_default();
                SwarmService {
                    id: service.id.unwrap_or_default(),
                    name: spec.name.clone().unwrap_or_default(),
                    replicas: replicas_of(&spec),
                    labels: spec.labels.unwrap_or_default(),
                }
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(services)
    }

    /// Creates the service; answers its id.
    pub async fn create_service(&self, definition: &ServiceDefinition) -> anyhow::Result<String> {
        let created = self
            .docker
            .create_service(definition.spec(), None)
            .await
            .with_context(|| format!("creating Swarm service {}", definition.name))?;
        created
            .id
            .with_context(|| format!("Docker created {} but gave no id", definition.name))
    }

    /// Replaces the spec of an existing service (keeping its id), keeping
    /// the spec it replaces in [`SAVED_SPEC_LABEL`] for
    /// [`Self::restore_service`].
    pub async fn redefine_service(
        &self,
        id: &str,
        definition: &ServiceDefinition,
    ) -> anyhow::Result<()> {
        let (mut replaced, version) = self.spec_and_version(id).await?;
        if let Some(labels) = replaced.labels.as_mut() {
            labels.remove(SAVED_SPEC_LABEL);
        }
        let saved = serde_json::to_string(&replaced)
            .with_context(|| format!("saving the spec of service {id}"))?;
        let mut spec = definition.spec();
        spec.labels
            .get_or_insert_with(HashMap::new)
            .insert(SAVED_SPEC_LABEL.into(), saved);
        self.update(id, spec, version).await
    }

    /// Puts a service set aside by deploy `deploy_id` back as it was: the
    /// spec [`Self::redefine_service`] saved, when that deploy redefined
    /// it, and the replicas [`Self::scale`] took away when `start`. Reads
    /// both from the engine, never from the caller.
    pub async fn restore_service(
        &self,
        id: &str,
        deploy_id: &str,
        start: bool,
    ) -> anyhow::Result<()> {
        let (current, version) = self.spec_and_version(id).await?;
        let labels = current.labels.clone().unwrap_or_default();
        let redefined_by_it =
            labels.get(super::DEPLOY_LABEL).map(String::as_str) == Some(deploy_id);
        let mut spec = match labels.get(SAVED_SPEC_LABEL) {
            Some(saved) if redefined_by_it => serde_json::from_str(saved)
                .with_context(|| format!("reading the saved spec of service {id}"))?,
            _ => current,
        };
        let had = spec
            .labels
            .as_ref()
            .and_then(|labels| labels.get(REPLICAS_LABEL))
            .and_then(|n| n.parse::<u32>().ok());
        if let (true, Some(had)) = (start, had) {
            spec.mode = Some(replicated(had));
            if let Some(labels) = spec.labels.as_mut() {
                labels.remove(REPLICAS_LABEL);
            }
        }
        self.update(id, spec, version).await
    }

    /// Scales a service. Scaling to zero remembers the replicas it had in
    /// [`REPLICAS_LABEL`]; scaling up removes that label.
    pub async fn scale(&self, id: &str, replicas: u32) -> anyhow::Result<()> {
        let (mut spec, version) = self.spec_and_version(id).await?;
        let had = replicas_of(&spec);
        let labels = spec.labels.get_or_insert_with(HashMap::new);
        if replicas == 0 {
            if had > 0 {
                labels.insert(REPLICAS_LABEL.into(), had.to_string());
            }
        } else {
            labels.remove(REPLICAS_LABEL);
        }
        spec.mode = Some(replicated(replicas));
        self.update(id, spec, version).await
    }

    /// Redefines the service and lets Swarm roll its tasks over as
    /// `rolling` says (keeping its id and name).
    pub async fn roll_service(
        &self,
        id: &str,
        definition: &ServiceDefinition,
        rolling: RollingUpdate,
    ) -> anyhow::Result<()> {
        let (_, version) = self.spec_and_version(id).await?;
        let mut spec = definition.spec();
        rolling.apply(&mut spec);
        self.update(id, spec, version).await
    }

    /// Asks Swarm to roll the service back to its previous spec.
    pub async fn roll_back_service(&self, id: &str) -> anyhow::Result<()> {
        let (spec, version) = self.spec_and_version(id).await?;
        let options = UpdateServiceOptionsBuilder::default()
            .version(version)
            .rollback("previous")
            .build();
        self.docker
            .update_service(id, spec, options, None)
            .await
            .with_context(|| format!("rolling back Swarm service {id}"))?;
        Ok(())
    }

    /// Where the service's last update is.
    pub async fn update_progress(&self, id: &str) -> anyhow::Result<UpdateProgress> {
        let service = self
            .docker
            .inspect_service(id, None)
            .await
            .with_context(|| format!("inspecting Swarm service {id}"))?;
        let status = service.update_status.unwrap_or_default();
        let state = match status.state {
            Some(ServiceUpdateStatusStateEnum::COMPLETED) => UpdateState::Completed,
            Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => UpdateState::RolledBack,
            Some(
                ServiceUpdateStatusStateEnum::PAUSED
                | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
            ) => UpdateState::Paused,
            _ => UpdateState::Running,
        };
        Ok(UpdateProgress {
            started: format!("{:?}", status.started_at),
            state,
            message: status.message.unwrap_or_default(),
        })
    }

    /// Removes a service; a missing one is fine.
    pub async fn remove_service(&self, id: &str) -> anyhow::Result<()> {
        match self.docker.delete_service(id).await {
            Ok(()) => Ok(()),
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("removing Swarm service {id}")),
        }
    }

    async fn spec_and_version(&self, id: &str) -> anyhow::Result<(ServiceSpec, i32)> {
        let service = self
            .docker
            .inspect_service(id, None)
            .await
            .with_context(|| format!("inspecting Swarm service {id}"))?;
        let version = service
            .version
            .and_then(|v| v.index)
            .and_then(|index| i32::try_from(index).ok())
            .with_context(|| format!("Swarm service {id} has no usable version"))?;
        let spec = service
            .spec
            .with_context(|| format!("Swarm service {id} has no spec"))?;
        Ok((spec, version))
    }

    async fn update(&self, id: &str, spec: ServiceSpec, version: i32) -> anyhow::Result<()> {
        let options = UpdateServiceOptionsBuilder::default()
            .version(version)
            .build();
        self.docker
            .update_service(id, spec, options, None)
            .await
            .with_context(|| format!("updating Swarm service {id}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_labels_the_service_and_its_tasks_alike() {
        let definition = ServiceDefinition {
            name: "web-green".into(),
            image: "web:2".into(),
            replicas: 3,
            env: vec!["A=1".into()],
            labels: HashMap::from([(SERVICE_LABEL.to_string(), "web".to_string())]),
            network: "net".into(),
            stop_timeout: std::time::Duration::from_secs(2),
        };
        let spec = definition.spec();
        assert_eq!(replicas_of(&spec), 3);
        let task = spec.task_template.as_ref().expect("task template");
        let container = task.container_spec.as_ref().expect("container spec");
        assert_eq!(container.labels, spec.labels, "tasks carry the same labels");
        assert_eq!(container.stop_grace_period, Some(2_000_000_000));
        assert_eq!(
            task.networks.as_ref().expect("networks")[0]
                .target
                .as_deref(),
            Some("net")
        );
        // The saved form reads back as the same spec.
        let saved = serde_json::to_string(&spec).expect("serialize");
        let read: ServiceSpec = serde_json::from_str(&saved).expect("deserialize");
        assert_eq!(read, spec);
    }
}
