//! Which instances a container stands for: service name, color, ports,
//! address, tags and how its health is known. A pure function of what Docker
//! reports (as [`ContainerFacts`]) and the agent's settings, so every rule is
//! unit-tested without Docker.
//!
//! Rules (README "cd-agent" documents them for users):
//! - Service: label `switchyard.service`; else env or label `SERVICE_NAME`
//!   (registrator). Env or label `SERVICE_IGNORE` (any value) skips the
//!   container. Neither: not ours.
//! - Ports: label `switchyard.port` (a container port) picks one; otherwise
//!   every published TCP port (internal mode: every exposed TCP port).
//!   One port: one instance, id = short container id (or `SERVICE_ID`).
//!   Several: one instance per port, id `SHORTID:PORT`, service
//!   `NAME-PORT`, unless `switchyard.port.P.service` / `SERVICE_P_NAME`
//!   names it; `switchyard.port.P.ignore` / `SERVICE_P_IGNORE` skips a port.
//! - Address: the advertise IP and the published host port (or the host IP
//!   the port is bound to, when it is bound to one address); in internal mode
//!   (`--internal`, or label `switchyard.network=NET`) the container's IP on
//!   that network and the container port.
//! - Color: label `switchyard.color` (blue|green); none: no color.
//! - Tags: `switchyard.tags` or `SERVICE_TAGS` (comma-separated).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use switchyard_model::labels::{label, meta};
use switchyard_model::{Color, Health, Instance, validate};

/// What the agent knows of one running (or paused) container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFacts {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub env: HashMap<String, String>,
    pub paused: bool,
    /// When it started (Unix ms), as Docker says.
    pub started_at_ms: Option<u64>,
    /// Docker HEALTHCHECK status, when the container has one.
    pub docker_health: Option<DockerHealth>,
    /// Container port (e.g. 80) → published host bindings (host IP, host port).
    pub published: BTreeMap<u16, Vec<(Option<IpAddr>, u16)>>,
    /// Exposed TCP container ports.
    pub exposed: Vec<u16>,
    /// Network name → the container's IP on it.
    pub networks: BTreeMap<String, IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerHealth {
    Starting,
    Healthy,
    Unhealthy,
}

/// How the agent settles an instance's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthSource {
    /// Docker HEALTHCHECK (or paused): known from the container itself.
    Fixed(Health),
    /// An agent-run check; critical until its first result.
    Check(Check),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Check {
    pub kind: CheckKind,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// GET `path` on the instance's address; 2xx and 3xx pass.
    Http { path: String },
    /// A TCP connection to the instance's address.
    Tcp,
}

/// One instance to register, and how its health is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub instance: Instance,
    pub health: HealthSource,
}

/// The agent's settings that discovery depends on.
#[derive(Debug, Clone)]
pub struct DiscoverSettings {
    pub node: String,
    pub advertise_ip: IpAddr,
    /// Register container IPs and container ports.
    pub internal: bool,
    /// The network whose IP is registered in internal mode (None: the only
    /// network, or the first by name).
    pub network: Option<String>,
}

/// Why a container stands for no instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No service label: not ours, silently.
    NotOurs,
    /// `SERVICE_IGNORE`.
    Ignored,
    /// Ours, but something is wrong; worth a log line.
    Invalid(String),
}

const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Shorter `switchyard.check.interval` labels are raised to this.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl ContainerFacts {
    /// A label, or else an environment variable of the same name.
    fn setting(&self, name: &str) -> Option<&str> {
        self.labels
            .get(name)
            .or_else(|| self.env.get(name))
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// The instances `container` stands for.
pub fn discover(
    container: &ContainerFacts,
    settings: &DiscoverSettings,
) -> Result<Vec<Desired>, Skip> {
    if container.setting("SERVICE_IGNORE").is_some() {
        return Err(Skip::Ignored);
    }
    let base_name = container
        .labels
        .get(label::SERVICE)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .or_else(|| container.setting("SERVICE_NAME"))
        .ok_or(Skip::NotOurs)?;
    let invalid =
        |message: String| Skip::Invalid(format!("container {}: {message}", container.name));

    let color = match container.labels.get(label::COLOR) {
        Some(text) => Color::parse_optional(text).map_err(|e| invalid(e.to_string()))?,
        None => None,
    };
    let network_label = container.labels.get(label::NETWORK).cloned();
    let internal = settings.internal || network_label.is_some();
    let internal_ip = if internal {
        let wanted = network_label.or_else(|| settings.network.clone());
        Some(container_ip(container, wanted.as_deref()).map_err(invalid)?)
    } else {
        None
    };
    let ports = ports_of(container, internal).map_err(invalid)?;
    let tags = tags_of(container);
    let health = health_source(container).map_err(invalid)?;
    let several = ports.len() > 1;

    let mut desired = Vec::new();
    for port in ports {
        let (address, advertised_port) = match internal_ip {
            Some(ip) => (ip, port),
            None => published_address(container, port, settings.advertise_ip).map_err(invalid)?,
        };
        let service = container
            .labels
            .get(&label::port_service(port))
            .map(String::as_str)
            .or_else(|| container.setting(&format!("SERVICE_{port}_NAME")))
            .map(str::to_string)
            .unwrap_or_else(|| {
                if several {
                    format!("{base_name}-{port}")
                } else {
                    base_name.to_string()
                }
            });
        validate::service_name("service", &service).map_err(|e| invalid(e.to_string()))?;
        let id = match container.setting("SERVICE_ID") {
            Some(id) if !several => id.to_string(),
            _ if several => format!("{}:{port}", container.short_id()),
            _ => container.short_id().to_string(),
        };
        let instance = Instance {
            id,
            service,
            color,
            node: settings.node.clone(),
            address,
            port: advertised_port,
            tags: tags.clone(),
            metadata: metadata_of(container, port),
            health: Health::Unknown,
            session: None,
            create_revision: 0,
            mod_revision: 0,
        };
        validate::instance("", &instance).map_err(|e| invalid(e.to_string()))?;
        desired.push(Desired {
            instance,
            health: health.clone(),
        });
    }
    Ok(desired)
}

/// The ports to register: the `switchyard.port` label, else every exposed
/// port (on an internal network) or every published one, less those
/// ignored.
fn ports_of(container: &ContainerFacts, internal: bool) -> Result<Vec<u16>, String> {
    let ports: Vec<u16> = match container.labels.get(label::PORT) {
        Some(text) => {
            let port = text
                .trim()
                .parse::<u32>()
                .ok()
                .and_then(|p| validate::port(label::PORT, p).ok())
                .ok_or_else(|| format!("label {}={text:?} is not a port", label::PORT))?;
            vec![port]
        }
        None if internal => container.exposed.clone(),
        None => container.published.keys().copied().collect(),
    };
    let ports: Vec<u16> = ports
        .into_iter()
        .filter(|port| {
            container
                .setting(&format!("SERVICE_{port}_IGNORE"))
                .is_none()
                && !container.labels.contains_key(&label::port_ignore(*port))
        })
        .collect();
    if ports.is_empty() {
        return Err(if internal {
            format!("exposes no TCP port: set label {}", label::PORT)
        } else {
            format!(
                "publishes no TCP port: publish one (-p) or use --internal / {}",
                label::NETWORK
            )
        });
    }
    Ok(ports)
}

/// `switchyard.tags` (or `SERVICE_TAGS`), split at commas.
fn tags_of(container: &ContainerFacts) -> Vec<String> {
    container
        .labels
        .get(label::TAGS)
        .map(String::as_str)
        .or_else(|| container.setting("SERVICE_TAGS"))
        .map(|text| {
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What the instance of `container`'s `port` records about where it came
/// from.
fn metadata_of(container: &ContainerFacts, port: u16) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    metadata.insert(meta::CONTAINER.to_string(), container.name.clone());
    metadata.insert(meta::CONTAINER_ID.to_string(), container.id.clone());
    metadata.insert(meta::IMAGE.to_string(), container.image.clone());
    metadata.insert(meta::CONTAINER_PORT.to_string(), port.to_string());
    if let Some(started) = container.started_at_ms {
        metadata.insert(meta::STARTED_AT_MS.to_string(), started.to_string());
    }
    for (label, key) in [
        (label::VERSION, meta::VERSION),
        (label::DEPLOY_ID, meta::DEPLOY_ID),
        // Swarm task containers: which service and task they belong to
        // (`cdctl deploy --runtime swarm` tells its tasks by these).
        (label::SWARM_SERVICE_ID, meta::SWARM_SERVICE_ID),
        (label::SWARM_SERVICE_NAME, meta::SWARM_SERVICE),
        (label::SWARM_TASK_ID, meta::SWARM_TASK_ID),
    ] {
        if let Some(value) = container.labels.get(label) {
            metadata.insert(key.to_string(), value.clone());
        }
    }
    metadata
}

fn container_ip(container: &ContainerFacts, network: Option<&str>) -> Result<IpAddr, String> {
    match network {
        Some(name) => container.networks.get(name).copied().ok_or_else(|| {
            format!(
                "has no address on network {name:?} (it is on: {})",
                container
                    .networks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        None => container
            .networks
            .values()
            .next()
            .copied()
            .ok_or_else(|| "has no network address: is it on a network?".to_string()),
    }
}

fn published_address(
    container: &ContainerFacts,
    port: u16,
    advertise_ip: IpAddr,
) -> Result<(IpAddr, u16), String> {
    let bindings = container
        .published
        .get(&port)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            format!("container port {port} is not published: publish it (-p) or use --internal")
        })?;
    // Prefer a binding on every address (reachable at the advertise IP);
    // else a port bound to one address is reachable only there. A loopback
    // binding is reachable from this host alone: registered, it would send
    // every other host's proxies to their own loopback.
    let reachable =
        |ip: &Option<IpAddr>| ip.is_none_or(|ip| !ip.is_loopback() || advertise_ip.is_loopback());
    let (host_ip, host_port) = bindings
        .iter()
        .find(|(ip, _)| ip.is_none_or(|ip| ip.is_unspecified()))
        .or_else(|| bindings.iter().find(|(ip, _)| *ip == Some(advertise_ip)))
        .or_else(|| bindings.iter().find(|(ip, _)| reachable(ip)))
        .copied()
        .ok_or_else(|| {
            format!(
                "container port {port} is published only on loopback, which other hosts \
                 cannot reach: publish it on 0.0.0.0 or on {advertise_ip}, or use --internal"
            )
        })?;
    let address = match host_ip {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => advertise_ip,
    };
    Ok((address, host_port))
}

fn health_source(container: &ContainerFacts) -> Result<HealthSource, String> {
    if container.paused {
        return Ok(HealthSource::Fixed(Health::Critical));
    }
    if let Some(health) = container.docker_health {
        return Ok(HealthSource::Fixed(match health {
            DockerHealth::Starting | DockerHealth::Unhealthy => Health::Critical,
            DockerHealth::Healthy => Health::Passing,
        }));
    }
    let interval = match container.labels.get(label::CHECK_INTERVAL) {
        Some(text) => switchyard_model::duration::parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!("label switchyard.check.interval={text:?} is not a duration like 5s")
            })?
            // Each flap of a check is a sync and a reload of every proxy;
            // a container's label must not set that pace (Consul's floor).
            .max(MIN_CHECK_INTERVAL),
        None => DEFAULT_CHECK_INTERVAL,
    };
    if let Some(path) = container.labels.get(label::CHECK_HTTP) {
        let path = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
        return Ok(HealthSource::Check(Check {
            kind: CheckKind::Http { path },
            interval,
        }));
    }
    if container.labels.contains_key(label::CHECK_TCP) {
        return Ok(HealthSource::Check(Check {
            kind: CheckKind::Tcp,
            interval,
        }));
    }
    Ok(HealthSource::Fixed(Health::Passing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DiscoverSettings {
        DiscoverSettings {
            node: "node-1".into(),
            advertise_ip: "192.0.2.10".parse().expect("ip"),
            internal: false,
            network: None,
        }
    }

    fn web() -> ContainerFacts {
        let mut facts = ContainerFacts {
            id: "0123456789abcdef0123".into(),
            name: "web-blue-1".into(),
            image: "web:1".into(),
            ..ContainerFacts::default()
        };
        facts
            .labels
            .insert("switchyard.service".into(), "web".into());
        facts
            .labels
            .insert("switchyard.color".into(), "blue".into());
        facts
            .published
            .insert(80, vec![(Some("0.0.0.0".parse().expect("ip")), 32768)]);
        facts.exposed.push(80);
        facts
            .networks
            .insert("bridge".into(), "172.17.0.5".parse().expect("ip"));
        facts
    }

    fn only(container: &ContainerFacts, settings: &DiscoverSettings) -> Desired {
        let mut desired = discover(container, settings).expect("discovered");
        assert_eq!(desired.len(), 1);
        desired.remove(0)
    }

    #[test]
    fn a_labelled_container_with_one_published_port_is_one_instance() {
        let desired = only(&web(), &settings());
        let instance = &desired.instance;
        assert_eq!(instance.id, "0123456789ab");
        assert_eq!(instance.service, "web");
        assert_eq!(instance.color, Some(Color::Blue));
        assert_eq!(instance.target(), "192.0.2.10:32768");
        assert_eq!(instance.node, "node-1");
        assert_eq!(
            instance.metadata.get("image").map(String::as_str),
            Some("web:1")
        );
        assert_eq!(desired.health, HealthSource::Fixed(Health::Passing));
    }

    #[test]
    fn a_port_bound_to_one_address_is_registered_there() {
        let mut facts = web();
        facts
            .published
            .insert(80, vec![(Some("198.51.100.7".parse().expect("ip")), 40000)]);
        assert_eq!(
            only(&facts, &settings()).instance.target(),
            "198.51.100.7:40000"
        );
    }

    #[test]
    fn a_port_published_on_loopback_only_is_refused_unless_the_node_is_loopback() {
        let mut facts = web();
        let loopback = Some("127.0.0.1".parse().expect("ip"));
        facts.published.insert(80, vec![(loopback, 40000)]);
        let refused = discover(&facts, &settings()).err();
        assert!(
            matches!(&refused, Some(Skip::Invalid(why)) if why.contains("only on loopback")),
            "{refused:?}"
        );
        // Beside a reachable binding, the reachable one is registered.
        let other = Some("198.51.100.7".parse().expect("ip"));
        facts
            .published
            .insert(80, vec![(loopback, 40000), (other, 40001)]);
        assert_eq!(
            only(&facts, &settings()).instance.target(),
            "198.51.100.7:40001"
        );
        // A node that advertises loopback (one host, tests) keeps it.
        let mut local = settings();
        local.advertise_ip = "127.0.0.1".parse().expect("ip");
        facts.published.insert(80, vec![(loopback, 40000)]);
        assert_eq!(only(&facts, &local).instance.target(), "127.0.0.1:40000");
    }

    #[test]
    fn check_intervals_below_a_second_are_raised_to_one() {
        let mut facts = web();
        facts
            .labels
            .insert("switchyard.check.tcp".into(), "true".into());
        facts
            .labels
            .insert("switchyard.check.interval".into(), "1ms".into());
        let HealthSource::Check(check) = only(&facts, &settings()).health else {
            panic!("a check")
        };
        assert_eq!(check.interval, MIN_CHECK_INTERVAL);
    }

    #[test]
    fn internal_mode_uses_the_container_ip_and_port() {
        let mut facts = web();
        facts
            .networks
            .insert("overlay-a".into(), "10.0.1.7".parse().expect("ip"));
        let mut internal = settings();
        internal.internal = true;
        internal.network = Some("overlay-a".into());
        assert_eq!(only(&facts, &internal).instance.target(), "10.0.1.7:80");
        facts
            .labels
            .insert("switchyard.network".into(), "bridge".into());
        assert_eq!(only(&facts, &settings()).instance.target(), "172.17.0.5:80");
        facts
            .labels
            .insert("switchyard.network".into(), "missing".into());
        assert!(
            matches!(discover(&facts, &settings()), Err(Skip::Invalid(m)) if m.contains("missing"))
        );
    }

    #[test]
    fn registrator_style_containers_register_and_ignore() {
        let mut facts = web();
        facts.labels.clear();
        assert_eq!(discover(&facts, &settings()), Err(Skip::NotOurs));
        facts.env.insert("SERVICE_NAME".into(), "legacy".into());
        facts.env.insert("SERVICE_TAGS".into(), "a, b".into());
        facts.env.insert("SERVICE_ID".into(), "legacy-1".into());
        let desired = only(&facts, &settings());
        assert_eq!(desired.instance.service, "legacy");
        assert_eq!(desired.instance.id, "legacy-1");
        assert_eq!(desired.instance.tags, ["a", "b"]);
        assert_eq!(desired.instance.color, None);
        facts.env.insert("SERVICE_IGNORE".into(), "true".into());
        assert_eq!(discover(&facts, &settings()), Err(Skip::Ignored));
    }

    #[test]
    fn several_published_ports_give_one_instance_each_with_overrides() {
        let mut facts = web();
        facts.published.insert(9090, vec![(None, 32770)]);
        facts.published.insert(9100, vec![(None, 32771)]);
        facts
            .labels
            .insert("switchyard.port.9090.service".into(), "web-admin".into());
        facts
            .labels
            .insert("switchyard.port.9100.ignore".into(), "true".into());
        let desired = discover(&facts, &settings()).expect("discovered");
        let named: Vec<(String, String, u16)> = desired
            .iter()
            .map(|d| {
                (
                    d.instance.id.clone(),
                    d.instance.service.clone(),
                    d.instance.port,
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                ("0123456789ab:80".to_string(), "web-80".to_string(), 32768),
                ("0123456789ab:9090".into(), "web-admin".into(), 32770),
            ]
        );
        facts.labels.insert("switchyard.port".into(), "9090".into());
        assert_eq!(only(&facts, &settings()).instance.id, "0123456789ab");
    }

    #[test]
    fn health_comes_from_docker_then_checks_then_running() {
        let mut facts = web();
        facts
            .labels
            .insert("switchyard.check.http".into(), "healthz".into());
        facts
            .labels
            .insert("switchyard.check.interval".into(), "2s".into());
        assert_eq!(
            only(&facts, &settings()).health,
            HealthSource::Check(Check {
                kind: CheckKind::Http {
                    path: "/healthz".into()
                },
                interval: Duration::from_secs(2)
            })
        );
        facts.docker_health = Some(DockerHealth::Starting);
        assert_eq!(
            only(&facts, &settings()).health,
            HealthSource::Fixed(Health::Critical)
        );
        facts.docker_health = Some(DockerHealth::Healthy);
        assert_eq!(
            only(&facts, &settings()).health,
            HealthSource::Fixed(Health::Passing)
        );
        facts.paused = true;
        assert_eq!(
            only(&facts, &settings()).health,
            HealthSource::Fixed(Health::Critical)
        );
    }

    #[test]
    fn mistakes_are_reported_not_registered() {
        let mut facts = web();
        facts
            .labels
            .insert("switchyard.color".into(), "purple".into());
        assert!(
            matches!(discover(&facts, &settings()), Err(Skip::Invalid(m)) if m.contains("purple"))
        );
        let mut facts = web();
        facts
            .labels
            .insert("switchyard.service".into(), "Bad_Name".into());
        assert!(matches!(
            discover(&facts, &settings()),
            Err(Skip::Invalid(_))
        ));
        let mut facts = web();
        facts.published.clear();
        assert!(
            matches!(discover(&facts, &settings()), Err(Skip::Invalid(m)) if m.contains("publish"))
        );
    }
}
