//! Named environments: `[environments.NAME]` tables in `switchyard.toml`
//! say where an environment's registry and Docker engine are and how to
//! reach them, so one pipeline runs the same commands against staging,
//! production-like and production with `cdctl --env NAME`.
//!
//! What a table says fills in what the command line (flags and their
//! `SWITCHYARD_*` variables) left unsaid; without `--env` nothing changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The table of environments in the file (every other top-level table is
/// a service's deploy settings).
pub const TABLE: &str = "environments";

/// One environment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Registry URLs, comma-separated.
    pub registry: Option<String>,
    /// TLS files and the token file towards that registry.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// The Docker engine deploys use (`unix:///…` or `tcp://…`).
    pub docker_host: Option<String>,
    /// Deploy defaults: `auto`, `containers` or `swarm`, and the network.
    pub runtime: Option<String>,
    pub network: Option<String>,
    /// `KEY=VALUE`: keeps this environment's containers apart on an engine
    /// others share (deploys add it, see only what carries it, and prefix
    /// names with VALUE; its agent runs with `--only-label KEY=VALUE`).
    pub label: Option<String>,
    /// Deploy settings for every service in this environment (the keys of
    /// a service's table); a service's own table and flags win.
    pub deploy: Option<toml::Table>,
}

/// The environment `name` of the file at `path`.
pub fn load(path: &Path, name: &str) -> anyhow::Result<Environment> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "--env {name} reads {}: create it with an [environments.{name}] table, or pass \
             --config PATH",
            path.display()
        )
    })?;
    let mut all = parse(&text).with_context(|| format!("{} is not valid", path.display()))?;
    let known = all.keys().cloned().collect::<Vec<_>>().join(", ");
    all.remove(name).with_context(|| {
        format!(
            "{} has no [environments.{name}] (it has: {})",
            path.display(),
            if known.is_empty() { "none" } else { &known }
        )
    })
}

/// Every environment of a file's text.
pub fn parse(text: &str) -> anyhow::Result<BTreeMap<String, Environment>> {
    let mut table: toml::Table = toml::from_str(text).context("fix the TOML")?;
    match table.remove(TABLE) {
        Some(value) => value
            .try_into()
            .with_context(|| format!("[{TABLE}.NAME] tables take registry, ca, cert, key, token_file, docker_host, runtime, network, label, deploy")),
        None => Ok(BTreeMap::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_sit_beside_service_tables() {
        let text = r#"
            [web]
            image = "web:1"

            [environments.staging]
            registry = "http://staging:7400"
            docker_host = "tcp://staging:2375"

            [environments.production]
            registry = "https://prod-1:7400,https://prod-2:7400"
            ca = "/etc/switchyard/ca.pem"
            token_file = "/run/secrets/deployer"
            network = "edge"

            [environments.production.deploy]
            replicas = 4
            health_timeout = "90s"
        "#;
        let all = parse(text).expect("valid");
        assert_eq!(all.len(), 2);
        assert_eq!(
            all["staging"].docker_host.as_deref(),
            Some("tcp://staging:2375")
        );
        assert_eq!(all["production"].network.as_deref(), Some("edge"));
        let deploy = all["production"].deploy.as_ref().expect("deploy defaults");
        assert_eq!(deploy["replicas"].as_integer(), Some(4));
        assert!(parse("[environments.x]\nregistr = 'typo'").is_err());
        assert!(parse("[web]\nimage = 'w'").expect("none").is_empty());
    }
}
