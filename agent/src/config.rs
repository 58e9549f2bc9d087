//! Flags (each also from a `SWITCHYARD_*` environment variable), validated
//! into [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use switchyard_model::duration::parse_duration;
use switchyard_model::validate;

/// Switchyard's node agent: keeps the registry exact for this Docker node's containers.
#[derive(Debug, Parser)]
#[command(name = "cd-agent", version, about)]
pub struct Args {
    /// Registry URL; several comma-separated URLs are tried in turn.
    #[arg(
        long,
        env = "SWITCHYARD_REGISTRY",
        default_value = "http://127.0.0.1:7400"
    )]
    pub registry: String,

    /// Node name (default: the Swarm node id in Swarm mode, else the engine's name).
    #[arg(long, env = "SWITCHYARD_NODE")]
    pub node: Option<String>,

    /// Address clients reach published ports on (default: this host's first
    /// non-loopback IPv4 address outside Docker's bridges).
    #[arg(long, env = "SWITCHYARD_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,

    /// Register container IPs and container ports instead of published ports.
    #[arg(long, env = "SWITCHYARD_INTERNAL")]
    pub internal: bool,

    /// With --internal: the network whose container IP is registered.
    #[arg(long, env = "SWITCHYARD_NETWORK")]
    pub network: Option<String>,

    /// Only containers with this label (KEY=VALUE), e.g. one agent per tenant.
    #[arg(long, env = "SWITCHYARD_ONLY_LABEL")]
    pub only_label: Option<String>,

    /// Session TTL: instances expire this long after the agent stops renewing.
    #[arg(long, env = "SWITCHYARD_TTL", default_value = "15s", value_parser = parse_duration)]
    pub ttl: Duration,

    /// Full re-sync with the registry this often, repairing any drift.
    #[arg(long, env = "SWITCHYARD_RESYNC", default_value = "30s", value_parser = parse_duration)]
    pub resync: Duration,

    /// On SIGTERM, leave instances to expire with the session instead of
    /// deregistering them at once.
    #[arg(long, env = "SWITCHYARD_KEEP_ON_EXIT")]
    pub keep_on_exit: bool,

    /// Where to serve GET /healthz and GET /metrics ("off" to disable; port 0
    /// picks one).
    #[arg(long, env = "SWITCHYARD_HEALTHZ", default_value = "127.0.0.1:7401")]
    pub healthz: String,

    #[command(flatten)]
    pub logging: switchyard_program::LogArgs,

    #[command(flatten)]
    pub access: switchyard_client::args::ClientAccessArgs,

    /// Print the man page (roff) and exit.
    #[arg(long)]
    pub man: bool,
}

/// How long one registry may take to connect and answer the agent. Longer
/// than cdctl's 5 s: a `SyncNode` of thousands of instances over etcd is a
/// large transaction, and an agent retries on its own anyway.
const AGENT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The agent's validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub registry: String,
    /// TLS material and token for the registry.
    pub access: switchyard_client::ClientOptions,
    pub node: Option<String>,
    pub advertise_ip: IpAddr,
    pub internal: bool,
    pub network: Option<String>,
    pub only_label: Option<String>,
    pub ttl_seconds: u32,
    pub resync: Duration,
    pub keep_on_exit: bool,
    pub healthz: Option<SocketAddr>,
}

impl Args {
    pub fn into_config(self) -> anyhow::Result<Config> {
        if let Some(node) = &self.node {
            validate::identifier("--node", node)?;
        }
        let ttl_seconds = u32::try_from(self.ttl.as_secs()).unwrap_or(u32::MAX);
        validate::ttl_seconds("--ttl", ttl_seconds)?;
        anyhow::ensure!(!self.resync.is_zero(), "--resync must be longer than 0");
        if let Some(label) = &self.only_label {
            anyhow::ensure!(
                label.contains('=') && !label.starts_with('='),
                "--only-label takes KEY=VALUE, got {label:?}"
            );
        }
        let advertise_ip = match self.advertise_ip {
            Some(ip) => {
                anyhow::ensure!(!ip.is_unspecified(), "--advertise-ip cannot be {ip}: give an address clients can reach");
                ip
            }
            None => primary_address().context(
                "cannot find this host's address: pass --advertise-ip (the address clients reach published ports on)",
            )?,
        };
        let healthz = switchyard_program::metrics::parse_listen("--healthz", &self.healthz)?;
        let access = self.access.client_options(AGENT_CALL_TIMEOUT)?;
        Ok(Config {
            registry: self.registry,
            access,
            node: self.node,
            advertise_ip,
            internal: self.internal,
            network: self.network,
            only_label: self.only_label,
            ttl_seconds,
            resync: self.resync,
            keep_on_exit: self.keep_on_exit,
            healthz,
        })
    }
}

/// The first non-loopback IPv4 address not on a Docker bridge or veth.
fn primary_address() -> Option<IpAddr> {
    let interfaces = if_addrs::get_if_addrs().ok()?;
    let docker_made = |name: &str| {
        name == "docker0"
            || name.starts_with("br-")
            || name.starts_with("veth")
            || name == "docker_gwbridge"
    };
    interfaces
        .into_iter()
        .filter(|interface| !interface.is_loopback() && !docker_made(&interface.name))
        .map(|interface| interface.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_unspecified())
}
