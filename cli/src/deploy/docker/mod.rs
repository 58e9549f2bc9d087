//! The Docker operations a deploy needs, through bollard (DOCKER_HOST or the
//! local socket, API version negotiated): find a service's containers by
//! label, create and start the new color, stop, start, rename and remove;
//! [`swarm`] does the same for Swarm services.
//! **Architecture Invariant:** the only place in cdctl that sees bollard.

mod swarm;

use std::collections::HashMap;

use anyhow::Context;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use switchyard_model::Color;
use switchyard_model::labels::label;

pub use swarm::{
    REPLICAS_LABEL, RollingUpdate, ServiceDefinition, SwarmService, UpdateProgress, UpdateState,
};

/// Labels every deployed container carries (`switchyard_model::labels`).
pub const SERVICE_LABEL: &str = label::SERVICE;
pub const COLOR_LABEL: &str = label::COLOR;
pub const DEPLOY_LABEL: &str = label::DEPLOY_ID;
pub const NETWORK_LABEL: &str = label::NETWORK;

/// A container of a service, as a deploy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContainer {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub labels: HashMap<String, String>,
}

/// What to start for one replica.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    /// Container port to publish (on a random host port at `publish_ip`).
    pub port: Option<u16>,
    pub publish_ip: String,
    /// User-defined network to attach to (then nothing is published).
    pub network: Option<String>,
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    scope: Option<Scope>,
}

fn not_found(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Where a deploy acts: one Docker engine (the environment's
/// `docker_host`; without one, `DOCKER_HOST` or the local socket) and the
/// scope of the environment on it. A value handed to whatever connects;
/// nothing about it is process-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub host: Option<String>,
    pub scope: Option<Scope>,
}

/// The label keeping one environment's containers apart from another's on
/// a shared engine (`label` of `[environments.NAME]`): deploys put it on
/// what they start, list only what carries it, and prefix names with its
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub key: String,
    pub value: String,
}

impl Scope {
    /// `KEY=VALUE`.
    pub fn parse(label: &str) -> anyhow::Result<Self> {
        let (key, value) = label
            .split_once('=')
            .filter(|(key, value)| !key.is_empty() && !value.is_empty())
            .with_context(|| format!("an environment's label is KEY=VALUE, not {label:?}"))?;
        Ok(Scope {
            key: key.to_string(),
            value: value.to_string(),
        })
    }

    /// `name` as this scope names it: prefixed with the scope's value
    /// (what Docker allows in a name of it), so two environments'
    /// `web-blue-1` differ.
    fn name(&self, name: &str) -> String {
        let prefix: String = self
            .value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{prefix}-{name}")
    }
}

impl Engine {
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        let docker = match &target.host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        };
        let docker = docker
            .context("connecting to Docker (the environment's docker_host, DOCKER_HOST or /var/run/docker.sock)")?
            .negotiate_version()
            .await
            .context("cannot reach Docker: is the daemon running and DOCKER_HOST right?")?;
        Ok(Engine {
            docker,
            scope: target.scope.clone(),
        })
    }

    /// The environment's scope on this engine, if it has one.
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    /// `name` as the scope names it (itself without a scope).
    pub fn scoped_name(&self, name: &str) -> String {
        match &self.scope {
            Some(scope) => scope.name(name),
            None => name.to_string(),
        }
    }

    /// `labels` and the scope's, for a listing.
    fn within_scope(&self, mut labels: Vec<String>) -> Vec<String> {
        if let Some(scope) = &self.scope {
            labels.push(format!("{}={}", scope.key, scope.value));
        }
        labels
    }

    /// The image's id and build time; `None` when the engine lacks it.
    pub async fn image(&self, image: &str) -> anyhow::Result<Option<ImageFacts>> {
        match self.docker.inspect_image(image).await {
            Ok(found) => Ok(Some(ImageFacts {
                id: found.id.unwrap_or_default(),
                created_ms: found.created.as_deref().and_then(rfc3339_ms),
            })),
            Err(error) if not_found(&error) => Ok(None),
            Err(error) => Err(error).with_context(|| format!("inspecting image {image}")),
        }
    }

    /// Containers (running or not) of `service`, of one color or all.
    pub async fn containers(
        &self,
        service: &str,
        color: Option<Color>,
    ) -> anyhow::Result<Vec<ServiceContainer>> {
        let mut labels = vec![format!("{SERVICE_LABEL}={service}")];
        if let Some(color) = color {
            labels.push(format!("{COLOR_LABEL}={color}"));
        }
        self.list(labels).await
    }

    /// Containers one deploy started.
    pub async fn deployed_by(&self, deploy_id: &str) -> anyhow::Result<Vec<ServiceContainer>> {
        self.list(vec![format!("{DEPLOY_LABEL}={deploy_id}")]).await
    }

    async fn list(&self, labels: Vec<String>) -> anyhow::Result<Vec<ServiceContainer>> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert("label".into(), self.within_scope(labels));
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .context("listing containers")?;
        let mut containers: Vec<ServiceContainer> = found
            .into_iter()
            .map(|c| ServiceContainer {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|names| names.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                running: matches!(
                    c.state,
                    Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED)
                ),
                labels: c.labels.unwrap_or_default(),
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    /// Creates and starts one container; answers its id.
    pub async fn run(&self, spec: &ContainerSpec) -> anyhow::Result<String> {
        let mut host_config = HostConfig::default();
        let mut exposed = None;
        match (&spec.network, spec.port) {
            (Some(network), _) => host_config.network_mode = Some(network.clone()),
            (None, Some(port)) => {
                let key = format!("{port}/tcp");
                exposed = Some(vec![key.clone()]);
                let binding = PortBinding {
                    host_ip: Some(spec.publish_ip.clone()),
                    host_port: Some(String::new()),
                };
                host_config.port_bindings = Some(HashMap::from([(key, Some(vec![binding]))]));
            }
            (None, None) => host_config.publish_all_ports = Some(true),
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            exposed_ports: exposed,
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating container {}", spec.name))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .with_context(|| format!("starting container {}", spec.name))?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> anyhow::Result<()> {
        self.docker
            .start_container(id, None)
            .await
            .with_context(|| format!("starting container {id}"))
    }

    /// Stops a container, killing it after `timeout` (as `docker stop -t`).
    pub async fn stop(&self, id: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
        let seconds = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("stopping container {id}")),
        }
    }

    pub async fn rename(&self, id: &str, name: &str) -> anyhow::Result<()> {
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.docker
            .rename_container(id, options)
            .await
            .with_context(|| format!("renaming container {id} to {name}"))
    }

    /// Removes a container, running or not; a missing one is fine.
    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("removing container {id}")),
        }
    }
}

/// What a deploy records of its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// `sha256:…`: the same artifact whatever its tags.
    pub id: String,
    /// When it was built (Unix ms), when the engine says.
    pub created_ms: Option<u64>,
}

/// Unix ms of an RFC 3339 timestamp (Docker's `Created`).
fn rfc3339_ms(text: &str) -> Option<u64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn a_scope_is_key_equals_value_and_prefixes_names_with_what_docker_allows() {
        let scope = Scope::parse("env=staging eu/1").expect("a label");
        assert_eq!(
            (scope.key.as_str(), scope.value.as_str()),
            ("env", "staging eu/1")
        );
        assert_eq!(scope.name("web-blue-1"), "staging-eu-1-web-blue-1");
        for bad in ["env", "=x", "env=", ""] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
    }
}
