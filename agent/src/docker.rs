//! Docker through bollard: connect (DOCKER_HOST or the local socket) with the
//! API version negotiated, so old engines (API 1.41) and new ones both work;
//! list and inspect containers into [`ContainerFacts`]; follow container
//! events. **Architecture Invariant:** only this module sees bollard types.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use anyhow::Context;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, HealthStatusEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures::{Stream, StreamExt};
use switchyard_model::labels::label;

use crate::discover::{ContainerFacts, DockerHealth};

/// A connection to one Docker engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// A container event, reduced to what the agent acts on.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub container_id: String,
    pub action: String,
    /// The signal of a `kill` event, as Docker reports it (a number).
    pub signal: Option<String>,
}

impl Engine {
    /// Connects and negotiates the API version.
    pub async fn connect() -> anyhow::Result<Self> {
        let docker = Docker::connect_with_defaults()
            .context("connecting to Docker (DOCKER_HOST or /var/run/docker.sock)")?;
        let docker = docker
            .negotiate_version()
            .await
            .context("negotiating the Docker API version")?;
        Ok(Engine { docker })
    }

    /// The node name to register under: the Swarm node id in Swarm mode,
    /// otherwise the engine's name.
    pub async fn node_name(&self) -> anyhow::Result<String> {
        let info = self.docker.info().await.context("reading docker info")?;
        let swarm_node = info
            .swarm
            .as_ref()
            .and_then(|swarm| swarm.node_id.clone())
            .filter(|id| !id.is_empty());
        swarm_node
            .or(info.name)
            .filter(|name| !name.is_empty())
            .context("docker info has neither a Swarm node id nor a name: pass --node")
    }

    /// The engine's clock, for replaying events from a moment.
    pub async fn now(&self) -> anyhow::Result<i64> {
        let info = self.docker.info().await.context("reading docker info")?;
        let text = info.system_time.unwrap_or_default();
        // RFC 3339 with nanoseconds; only whole seconds matter here.
        let seconds = parse_rfc3339_seconds(&text)
            .with_context(|| format!("cannot read the engine's time {text:?}"))?;
        Ok(seconds)
    }

    /// Container events since `since` (unix seconds), as they happen. With
    /// `label`, only containers carrying it (`key=value`). Errors leave
    /// this module as `anyhow` errors: bollard stays in here.
    pub fn events(
        &self,
        since: i64,
        label: Option<&str>,
    ) -> impl Stream<Item = anyhow::Result<ContainerEvent>> + Send + use<> {
        let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
        filters.insert("type", vec!["container"]);
        if let Some(label) = label {
            filters.insert("label", vec![label]);
        }
        let options = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        self.docker
            .events(Some(options))
            .filter_map(|event| async move {
                match event {
                    Ok(message) => {
                        let actor = message.actor?;
                        let signal = actor
                            .attributes
                            .as_ref()
                            .and_then(|attributes| attributes.get("signal").cloned());
                        Some(Ok(ContainerEvent {
                            container_id: actor.id?,
                            action: message.action.unwrap_or_default(),
                            signal,
                        }))
                    }
                    Err(error) => Some(Err(anyhow::Error::new(error))),
                }
            })
    }

    /// Ids of the running (and paused) containers, optionally with `label`.
    pub async fn running(&self, label: Option<&str>) -> anyhow::Result<Vec<String>> {
        let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
        if let Some(label) = label {
            filters.insert("label", vec![label]);
        }
        let options = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .context("listing containers")?;
        Ok(containers.into_iter().filter_map(|c| c.id).collect())
    }

    /// What the container is now; `None` when it is gone or not running.
    /// A Swarm task container also carries its service's Switchyard labels.
    pub async fn inspect(&self, id: &str) -> anyhow::Result<Option<ContainerFacts>> {
        let mut facts = match self.docker.inspect_container(id, None).await {
            Ok(response) => facts(response),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(error) => return Err(error).with_context(|| format!("inspecting container {id}")),
        };
        if let Some(facts) = &mut facts
            && let Some(service_id) = facts.labels.get(label::SWARM_SERVICE_ID).cloned()
        {
            let service_labels = self.service_labels(&service_id).await;
            inherit_service_labels(&mut facts.labels, service_labels);
        }
        Ok(facts)
    }

    /// The signal that stops the container (its `StopSignal`, SIGTERM when
    /// it sets none), as a number; `None` when it is gone or unknown.
    pub async fn stop_signal(&self, id: &str) -> Option<u32> {
        let container = self.docker.inspect_container(id, None).await.ok()?;
        let configured = container.config.and_then(|config| config.stop_signal);
        signal_number(configured.as_deref().unwrap_or("SIGTERM"))
    }

    /// A Swarm service's labels. Only managers can answer; on a worker (or
    /// when the service is gone) a task has only its container labels.
    async fn service_labels(&self, service_id: &str) -> HashMap<String, String> {
        match self.docker.inspect_service(service_id, None).await {
            Ok(service) => service
                .spec
                .and_then(|spec| spec.labels)
                .unwrap_or_default(),
            Err(error) => {
                tracing::debug!(service = service_id, %error, "service labels unavailable (not a manager?)");
                HashMap::new()
            }
        }
    }
}

/// Task containers inherit their service's Switchyard and registrator
/// labels (`switchyard.*`, `SERVICE_*`); labels on the container win.
fn inherit_service_labels(
    container: &mut HashMap<String, String>,
    service: HashMap<String, String>,
) {
    for (key, value) in service {
        if key.starts_with(label::PREFIX) || key.starts_with("SERVICE_") {
            container.entry(key).or_insert(value);
        }
    }
}

/// Reduces an inspect answer to the facts discovery uses; `None` unless the
/// container is running (paused counts as running).
fn facts(response: ContainerInspectResponse) -> Option<ContainerFacts> {
    let state = response.state?;
    if !state.running.unwrap_or(false) {
        return None;
    }
    let config = response.config.unwrap_or_default();
    let env = config
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect();
    let exposed = config
        .exposed_ports
        .unwrap_or_default()
        .iter()
        .filter_map(|spec| tcp_port(spec))
        .collect();
    let network = response.network_settings.unwrap_or_default();
    let mut published = BTreeMap::new();
    for (spec, bindings) in network.ports.unwrap_or_default() {
        let Some(port) = tcp_port(&spec) else {
            continue;
        };
        let bindings: Vec<(Option<IpAddr>, u16)> = bindings
            .unwrap_or_default()
            .into_iter()
            .filter_map(|binding| {
                let host_port = binding.host_port?.parse().ok()?;
                let host_ip = binding.host_ip.and_then(|ip| ip.parse().ok());
                Some((host_ip, host_port))
            })
            .collect();
        if !bindings.is_empty() {
            published.insert(port, bindings);
        }
    }
    let networks = network
        .networks
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, endpoint)| {
            let ip = endpoint.ip_address?.parse().ok()?;
            Some((name, ip))
        })
        .collect();
    let docker_health =
        state
            .health
            .and_then(|health| health.status)
            .and_then(|status| match status {
                HealthStatusEnum::STARTING => Some(DockerHealth::Starting),
                HealthStatusEnum::HEALTHY => Some(DockerHealth::Healthy),
                HealthStatusEnum::UNHEALTHY => Some(DockerHealth::Unhealthy),
                HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
            });
    Some(ContainerFacts {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
        env,
        paused: state.paused.unwrap_or(false),
        started_at_ms: state.started_at.as_deref().and_then(unix_ms),
        docker_health,
        published,
        exposed,
        networks,
    })
}

/// Docker's RFC 3339 time (`2026-12-03T05:06:07.123456789Z`) as Unix ms;
/// `None` for Docker's zero time (never started) or text it is not.
fn unix_ms(text: &str) -> Option<u64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .ok()
        .filter(|ms| *ms > 0)
}

/// `80/tcp` → 80; other protocols are not registered.
fn tcp_port(spec: &str) -> Option<u16> {
    let (port, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    (protocol == "tcp").then(|| port.parse().ok()).flatten()
}

/// A signal as Docker writes it (`15`, `SIGTERM`, `TERM`) as a number, for
/// the signals containers stop with.
pub fn signal_number(text: &str) -> Option<u32> {
    if let Ok(number) = text.trim().parse() {
        return Some(number);
    }
    let name = text.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("TERM", 15),
        ("STOP", 19),
        ("WINCH", 28),
        ("PWR", 30),
    ]
    .iter()
    .find(|(known, _)| *known == name)
    .map(|(_, number)| *number)
}

/// Whole seconds since the epoch of an RFC 3339 timestamp.
fn parse_rfc3339_seconds(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times_read_as_unix_milliseconds() {
        assert_eq!(
            unix_ms("2026-12-03T05:06:07.123456789Z"),
            Some(1_796_274_367_123)
        );
        assert_eq!(unix_ms("0001-01-01T00:00:00Z"), None, "never started");
        assert_eq!(unix_ms("yesterday"), None);
    }

    #[test]
    fn stop_signals_read_as_numbers() {
        assert_eq!(signal_number("15"), Some(15));
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("quit"), Some(3));
        assert_eq!(signal_number("SIGWINCH"), Some(28));
        assert_eq!(signal_number("SIGRTMIN+3"), None);
    }

    #[test]
    fn engine_timestamps_parse() {
        assert_eq!(parse_rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_seconds("2026-11-21T23:10:00.123456789Z"),
            Some(1_795_302_600)
        );
        assert_eq!(
            parse_rfc3339_seconds("2026-11-22T00:10:00.5+01:00"),
            Some(1_795_302_600)
        );
        assert_eq!(parse_rfc3339_seconds("garbage"), None);
    }

    #[test]
    fn task_containers_inherit_service_labels_but_keep_their_own() {
        let mut container = HashMap::from([
            ("switchyard.color".to_string(), "green".to_string()),
            (label::SWARM_SERVICE_ID.to_string(), "abc".to_string()),
        ]);
        let service = HashMap::from([
            ("switchyard.service".to_string(), "web".to_string()),
            ("switchyard.color".to_string(), "blue".to_string()),
            ("SERVICE_TAGS".to_string(), "a,b".to_string()),
            ("com.example.team".to_string(), "x".to_string()),
        ]);
        inherit_service_labels(&mut container, service);
        assert_eq!(container["switchyard.service"], "web");
        assert_eq!(
            container["switchyard.color"], "green",
            "the container's own label wins"
        );
        assert_eq!(container["SERVICE_TAGS"], "a,b");
        assert!(
            !container.contains_key("com.example.team"),
            "only Switchyard labels"
        );
    }

    #[test]
    fn only_tcp_ports_count() {
        assert_eq!(tcp_port("80/tcp"), Some(80));
        assert_eq!(tcp_port("53/udp"), None);
        assert_eq!(tcp_port("8080"), Some(8080));
    }
}
