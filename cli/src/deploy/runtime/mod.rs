//! What a color is made of, whichever the runtime: `replicas` containers
//! named `SERVICE-COLOR-N` (`--runtime containers`), or one Swarm service
//! `SERVICE-COLOR` with `replicas` tasks (`--runtime swarm`). The deploy's
//! steps speak of [`Unit`]s and leave the difference to [`Runtime`].
//!
//! The registry tells which unit an instance belongs to by the metadata the
//! agent writes: `container_id` for containers, `swarm_service_id` for
//! tasks (whose containers come and go as Swarm reschedules them).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use switchyard_model::labels::{label, meta};
use switchyard_model::{Color, Health, Instance};

use super::Settings;

mod rollout;

/// How many containers of one deploy start at once: enough that ten
/// replicas take about as long as three, few enough not to swamp a small
/// engine.
const START_CONCURRENCY: usize = 4;
use super::docker::{
    COLOR_LABEL, ContainerSpec, DEPLOY_LABEL, Engine, ImageFacts, NETWORK_LABEL, REPLICAS_LABEL,
    SERVICE_LABEL, Scope, ServiceContainer, ServiceDefinition, SwarmService, Target,
};

/// `--runtime`: what a deploy starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RuntimeChoice {
    /// Swarm services when the engine is a Swarm manager, else containers.
    #[default]
    Auto,
    Containers,
    Swarm,
}

/// The runtime a deploy uses, once chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    #[default]
    Containers,
    Swarm,
}

impl RuntimeKind {
    /// The instance metadata naming the unit an instance belongs to.
    fn owner_key(self) -> &'static str {
        match self {
            RuntimeKind::Containers => meta::CONTAINER_ID,
            RuntimeKind::Swarm => meta::SWARM_SERVICE_ID,
        }
    }

    /// Whether `instance` belongs to one of `units` (by id).
    pub fn owned_by(self, instance: &Instance, units: &HashSet<String>) -> bool {
        instance
            .metadata
            .get(self.owner_key())
            .is_some_and(|id| units.contains(id))
    }

    /// Whether every unit has as many passing instances as it has replicas.
    pub fn all_passing(self, units: &[Unit], instances: &[Instance]) -> bool {
        let mut passing: HashMap<&str, u32> = HashMap::new();
        for instance in instances.iter().filter(|i| i.health == Health::Passing) {
            if let Some(owner) = instance.metadata.get(self.owner_key()) {
                *passing.entry(owner.as_str()).or_default() += 1;
            }
        }
        units
            .iter()
            .all(|unit| passing.get(unit.id.as_str()).copied().unwrap_or(0) >= unit.replicas)
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Containers => "containers",
            RuntimeKind::Swarm => "swarm",
        })
    }
}

/// One part of a color: a container, or a Swarm service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// Instances it stands for when running: 1 for a container, the
    /// replicas (before it was scaled to zero) for a Swarm service.
    pub replicas: u32,
}

impl From<ServiceContainer> for Unit {
    fn from(container: ServiceContainer) -> Self {
        Unit {
            id: container.id,
            name: container.name,
            running: container.running,
            replicas: 1,
        }
    }
}

impl From<SwarmService> for Unit {
    fn from(service: SwarmService) -> Self {
        let remembered = service
            .labels
            .get(REPLICAS_LABEL)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Unit {
            id: service.id,
            name: service.name,
            running: service.replicas > 0,
            replicas: if service.replicas > 0 {
                service.replicas
            } else {
                remembered
            },
        }
    }
}

/// A leftover unit of the next color, set aside while the deploy runs.
/// Containers are stopped and renamed (removed on success, restored on
/// rollback). A Swarm service cannot be renamed: it is scaled to zero with
/// its spec saved, then redefined as the new color (`reused`), and on
/// rollback its saved spec is put back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retired {
    pub id: String,
    pub name: String,
    pub was_running: bool,
    #[serde(default)]
    pub reused: bool,
}

#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    kind: RuntimeKind,
}

impl Runtime {
    /// Connects to Docker and settles `auto`.
    /// Connects to `target`'s engine and settles `auto`.
    pub async fn connect(choice: RuntimeChoice, target: &Target) -> anyhow::Result<Self> {
        let engine = Engine::connect(target).await?;
        let kind = match choice {
            RuntimeChoice::Containers => RuntimeKind::Containers,
            RuntimeChoice::Swarm => {
                anyhow::ensure!(
                    engine.is_swarm_manager().await?,
                    "--runtime swarm needs a Swarm manager: run cdctl against a manager \
                     (DOCKER_HOST) or use --runtime containers"
                );
                RuntimeKind::Swarm
            }
            RuntimeChoice::Auto if engine.is_swarm_manager().await? => RuntimeKind::Swarm,
            RuntimeChoice::Auto => RuntimeKind::Containers,
        };
        Ok(Runtime { engine, kind })
    }

    pub async fn with_kind(kind: RuntimeKind, target: &Target) -> anyhow::Result<Self> {
        Ok(Runtime {
            engine: Engine::connect(target).await?,
            kind,
        })
    }

    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// The image's id and build time; `None` when the engine lacks it.
    pub async fn image(&self, image: &str) -> anyhow::Result<Option<ImageFacts>> {
        self.engine.image(image).await
    }

    /// Whether `instance` belongs to one of `units` (by id).
    pub fn owned_by(&self, instance: &Instance, units: &HashSet<String>) -> bool {
        self.kind.owned_by(instance, units)
    }

    /// Whether every unit has as many passing instances as it has replicas.
    pub fn all_passing(&self, units: &[Unit], instances: &[Instance]) -> bool {
        self.kind.all_passing(units, instances)
    }

    /// The units of `service`, of one color or all.
    pub async fn units(&self, service: &str, color: Option<Color>) -> anyhow::Result<Vec<Unit>> {
        Ok(match self.kind {
            RuntimeKind::Containers => into_units(self.engine.containers(service, color).await?),
            RuntimeKind::Swarm => into_units(self.engine.services(service, color).await?),
        })
    }

    /// The units one deploy started (or, in Swarm, redefined).
    pub async fn deployed_by(&self, deploy_id: &str) -> anyhow::Result<Vec<Unit>> {
        Ok(match self.kind {
            RuntimeKind::Containers => into_units(self.engine.deployed_by(deploy_id).await?),
            RuntimeKind::Swarm => into_units(self.engine.services_deployed_by(deploy_id).await?),
        })
    }

    /// The names the new color's units get.
    pub fn new_names(&self, settings: &Settings, color: Color) -> Vec<String> {
        match self.kind {
            RuntimeKind::Containers => (1..=settings.replicas)
                .map(|n| {
                    self.engine
                        .scoped_name(&format!("{}-{color}-{n}", settings.service))
                })
                .collect(),
            RuntimeKind::Swarm => vec![format!(
                "{}-{color} ({} replicas)",
                settings.service, settings.replicas
            )],
        }
    }

    /// Takes a leftover of the next color out of the way.
    pub async fn set_aside(
        &self,
        unit: &Unit,
        deploy_id: &str,
        stop_timeout: Duration,
    ) -> anyhow::Result<Retired> {
        let retired = Retired {
            id: unit.id.clone(),
            name: unit.name.clone(),
            was_running: unit.running,
            reused: false,
        };
        match self.kind {
            RuntimeKind::Containers => {
                if unit.running {
                    self.engine.stop(&unit.id, stop_timeout).await?;
                }
                let aside = format!("{}-retired-{deploy_id}", unit.name);
                self.engine.rename(&unit.id, &aside).await?;
            }
            RuntimeKind::Swarm => {
                if unit.running {
                    self.engine.scale(&unit.id, 0).await?;
                }
            }
        }
        Ok(retired)
    }

    /// Starts the new color: containers, or one Swarm service (redefining
    /// a retired one of the same name, which cannot be renamed away).
    /// For containers, answers how long the slowest took to start.
    pub async fn start_color(
        &self,
        settings: &Settings,
        color: Color,
        deploy_id: &str,
        retired: &mut [Retired],
    ) -> anyhow::Result<Option<Duration>> {
        let labels = unit_labels(settings, self.engine.scope(), color, deploy_id);
        match self.kind {
            RuntimeKind::Containers => {
                let names = self.new_names(settings, color);
                return self
                    .start_containers(settings, labels, names)
                    .await
                    .map(Some);
            }
            RuntimeKind::Swarm => {
                let network = settings.network.clone().ok_or_else(|| {
                    anyhow::anyhow!("a Swarm deploy needs --network (an overlay network)")
                })?;
                let definition = ServiceDefinition {
                    name: self
                        .engine
                        .scoped_name(&format!("{}-{color}", settings.service)),
                    image: settings.image.clone(),
                    replicas: settings.replicas,
                    env: settings.env.clone(),
                    labels,
                    network,
                    stop_timeout: settings.stop_timeout,
                };
                match retired.iter_mut().find(|r| r.name == definition.name) {
                    Some(leftover) => {
                        // Marked first: a failure half-way must still be undone.
                        leftover.reused = true;
                        self.engine
                            .redefine_service(&leftover.id, &definition)
                            .await?;
                    }
                    None => {
                        self.engine.create_service(&definition).await?;
                    }
                }
            }
        }
        Ok(None)
    }

    pub(super) async fn start_containers(
        &self,
        settings: &Settings,
        labels: HashMap<String, String>,
        names: Vec<String>,
    ) -> anyhow::Result<Duration> {
        let specs: Vec<ContainerSpec> = names
            .into_iter()
            .map(|name| ContainerSpec {
                name,
                image: settings.image.clone(),
                env: settings.env.clone(),
                labels: labels.clone(),
                port: settings.port,
                publish_ip: settings.publish_ip.clone(),
                network: settings.network.clone(),
            })
            .collect();
        self.run_concurrently(specs).await
    }

    /// Runs the containers at most [`START_CONCURRENCY`] at a time; answers
    /// how long the slowest took. On a failure the others in flight are
    /// dropped: the rollback finds whatever they created by its label.
    async fn run_concurrently(&self, specs: Vec<ContainerSpec>) -> anyhow::Result<Duration> {
        use futures::{StreamExt, TryStreamExt};
        let took: Vec<Duration> = futures::stream::iter(specs)
            .map(|spec| async move {
                let started = std::time::Instant::now();
                self.engine.run(&spec).await.map(|_id| started.elapsed())
            })
            .buffer_unordered(START_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(took.into_iter().max().unwrap_or_default())
    }

    /// Stops a unit (a Swarm service is scaled to zero).
    pub async fn stop(&self, unit: &Unit, timeout: Duration) -> anyhow::Result<()> {
        match self.kind {
            RuntimeKind::Containers => self.engine.stop(&unit.id, timeout).await,
            RuntimeKind::Swarm => self.engine.scale(&unit.id, 0).await,
        }
    }

    /// Starts a stopped unit again (a Swarm service at its replicas).
    pub async fn restart(&self, unit: &Unit) -> anyhow::Result<()> {
        match self.kind {
            RuntimeKind::Containers => self.engine.start(&unit.id).await,
            RuntimeKind::Swarm => self.engine.scale(&unit.id, unit.replicas.max(1)).await,
        }
    }

    /// Undoes a unit of the new color: removed, or (a reused Swarm
    /// service) scaled to zero until [`Self::restore`] puts its spec back.
    pub async fn discard_new(&self, unit: &Unit, retired: &[Retired]) -> anyhow::Result<()> {
        match self.kind {
            RuntimeKind::Containers => self.engine.remove(&unit.id).await,
            RuntimeKind::Swarm if retired.iter().any(|r| r.reused && r.id == unit.id) => {
                self.engine.scale(&unit.id, 0).await
            }
            RuntimeKind::Swarm => self.engine.remove_service(&unit.id).await,
        }
    }

    /// Puts a leftover that deploy `deploy_id` set aside back as it was.
    pub async fn restore(&self, retired: &Retired, deploy_id: &str) -> anyhow::Result<()> {
        match self.kind {
            RuntimeKind::Swarm => {
                self.engine
                    .restore_service(&retired.id, deploy_id, retired.was_running)
                    .await
            }
            RuntimeKind::Containers => {
                self.engine.rename(&retired.id, &retired.name).await?;
                if retired.was_running {
                    self.engine.start(&retired.id).await?;
                }
                Ok(())
            }
        }
    }

    /// The leftovers a paused deploy's record names, once each is a unit of
    /// `service` on this engine under the name it had (a container) or as
    /// itself (a Swarm service): a record anyone who deploys the service
    /// can rewrite never makes cdctl rename, start or redefine anything
    /// else.
    pub async fn checked_leftovers(
        &self,
        service: &str,
        named: &[Retired],
    ) -> anyhow::Result<Vec<Retired>> {
        let units = self.units(service, None).await?;
        for retired in named {
            let unit = units
                .iter()
                .find(|unit| !retired.id.is_empty() && unit.id.starts_with(&retired.id))
                .with_context(|| {
                    format!(
                        "the paused record names leftover {} ({}), which is no unit of {service} \
                         on this engine: refusing to touch it (see docs/security.md)",
                        retired.name, retired.id
                    )
                })?;
            let named_as_its_own = match self.kind {
                RuntimeKind::Swarm => retired.name == unit.name,
                RuntimeKind::Containers => {
                    is_container_name_of(&self.engine, service, &retired.name)
                }
            };
            anyhow::ensure!(
                named_as_its_own,
                "the paused record would rename leftover {} to {}, not a name of {service}: \
                 refusing (see docs/security.md)",
                unit.name,
                retired.name
            );
        }
        Ok(named.to_vec())
    }

    /// After a success: the old color's unit goes (a Swarm service kept
    /// with `--keep-old` stays, at zero replicas).
    pub async fn remove_old(&self, unit: &Unit, keep: bool) -> anyhow::Result<()> {
        match self.kind {
            RuntimeKind::Swarm if keep => Ok(()),
            RuntimeKind::Swarm => self.engine.remove_service(&unit.id).await,
            RuntimeKind::Containers => self.engine.remove(&unit.id).await,
        }
    }

    /// After a success: a leftover goes, unless it became the new color.
    pub async fn remove_retired(&self, retired: &Retired) -> anyhow::Result<()> {
        match self.kind {
            RuntimeKind::Swarm if retired.reused => Ok(()),
            RuntimeKind::Swarm => self.engine.remove_service(&retired.id).await,
            RuntimeKind::Containers => self.engine.remove(&retired.id).await,
        }
    }

    /// Swarm services of `color` kept at zero by `--keep-old`, for
    /// `cdctl rollback` to scale up again.
    pub async fn kept_at_zero(&self, service: &str, color: Color) -> anyhow::Result<Vec<Unit>> {
        if self.kind != RuntimeKind::Swarm {
            return Ok(Vec::new());
        }
        Ok(self
            .units(service, Some(color))
            .await?
            .into_iter()
            .filter(|unit| !unit.running && unit.replicas > 0)
            .collect())
    }
}

/// Whether `name` is one a deploy gives a container of `service`:
/// `SERVICE-COLOR-N`, in this environment's scope.
fn is_container_name_of(engine: &Engine, service: &str, name: &str) -> bool {
    [Color::Blue, Color::Green].iter().any(|color| {
        name.strip_prefix(&engine.scoped_name(&format!("{service}-{color}-")))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The labels a deploy puts on what it starts: the user's, then the
/// service, color and deploy id (and the network and port the agent
/// registers).
pub(super) fn unit_labels(
    settings: &Settings,
    scope: Option<&Scope>,
    color: Color,
    deploy_id: &str,
) -> HashMap<String, String> {
    let mut labels = settings.labels.clone();
    labels.insert(SERVICE_LABEL.into(), settings.service.clone());
    labels.insert(COLOR_LABEL.into(), color.to_string());
    labels.insert(DEPLOY_LABEL.into(), deploy_id.to_string());
    if let Some(scope) = scope {
        labels.insert(scope.key.clone(), scope.value.clone());
    }
    if let Some(network) = &settings.network {
        labels.insert(NETWORK_LABEL.into(), network.clone());
        if let Some(port) = settings.port {
            labels.insert(label::PORT.into(), port.to_string());
        }
    }
    labels
}

fn into_units<T: Into<Unit>>(items: Vec<T>) -> Vec<Unit> {
    items.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn instance(owner_key: &str, owner: &str, health: Health) -> Instance {
        Instance {
            id: format!("{owner}-{owner_key}"),
            service: "web".into(),
            color: None,
            node: "n1".into(),
            address: std::net::IpAddr::from([10, 0, 0, 1]),
            port: 80,
            tags: Vec::new(),
            metadata: BTreeMap::from([(owner_key.to_string(), owner.to_string())]),
            health,
            session: None,
            create_revision: 0,
            mod_revision: 0,
        }
    }

    #[test]
    fn a_service_scaled_to_zero_remembers_its_replicas() {
        let kept = Unit::from(SwarmService {
            id: "s1".into(),
            name: "web-blue".into(),
            replicas: 0,
            labels: HashMap::from([(REPLICAS_LABEL.to_string(), "3".to_string())]),
        });
        assert!(!kept.running);
        assert_eq!(kept.replicas, 3);
        let running = Unit::from(SwarmService {
            id: "s2".into(),
            name: "web-green".into(),
            replicas: 2,
            labels: HashMap::new(),
        });
        assert!(running.running);
        assert_eq!(running.replicas, 2);
    }

    #[test]
    fn passing_counts_instances_per_unit_by_the_runtime_owner() {
        let swarm = RuntimeKind::Swarm;
        let unit = Unit {
            id: "svc".into(),
            name: "web-blue".into(),
            running: true,
            replicas: 2,
        };
        let one = vec![
            instance("swarm_service_id", "svc", Health::Passing),
            instance("swarm_service_id", "svc", Health::Critical),
            instance("container_id", "svc", Health::Passing),
        ];
        assert!(!swarm.all_passing(std::slice::from_ref(&unit), &one));
        let two = vec![
            instance("swarm_service_id", "svc", Health::Passing),
            instance("swarm_service_id", "svc", Health::Passing),
        ];
        assert!(swarm.all_passing(std::slice::from_ref(&unit), &two));
        assert!(swarm.owned_by(&two[0], &HashSet::from(["svc".to_string()])));
        assert!(!swarm.owned_by(&one[2], &HashSet::from(["svc".to_string()])));
    }
}
