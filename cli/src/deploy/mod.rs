//! `cdctl deploy`, `promote`, `abort` and `rollback`: blue-green releases.
//!
//! Settings come from flags over `--file switchyard.toml` over defaults
//! ([`Settings`]); [`run::Deploy`] carries out the twelve steps and undoes
//! every step done so far when any fails (or on Ctrl-C / SIGTERM).

pub mod docker;
pub mod prometheus;
mod report;
mod require;
mod run;
pub mod runtime;
pub mod strategy;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_model::defaults;

use anyhow::Context;
use serde::Deserialize;
use switchyard_client::RegistryClient;
use switchyard_model::duration::parse_duration;
use switchyard_model::labels::label;
use switchyard_model::validate;

use crate::args::{DeployArgs, Output, PromoteArgs};

pub use require::Required;
pub use run::{abort, now_ms, promote, rollback};

/// Everything a deploy needs, merged from flags, file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: String,
    pub image: String,
    pub replicas: u32,
    /// Whether `--replicas` (or the file) said it: a rolling deploy keeps
    /// the count it finds unless told otherwise.
    pub replicas_given: bool,
    pub port: Option<u16>,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub network: Option<String>,
    pub publish_ip: String,
    pub health_timeout: Duration,
    pub pre_test: Option<String>,
    pub post_test: Option<String>,
    pub proxy_url: Option<String>,
    pub keep_old: bool,
    pub stop_old_after: Option<Duration>,
    pub manual_promotion: bool,
    /// After pausing, wait for the promote or abort asked on the dashboard.
    pub wait_for_promotion: bool,
    pub dry_run: bool,
    pub lock_ttl: Duration,
    /// How long a stopped container gets to exit before it is killed.
    pub stop_timeout: Duration,
    /// How long step 9 waits for proxies to apply the flip.
    pub proxy_timeout: Duration,
    /// Proxies silent for longer are not waited for.
    pub proxy_stale: Duration,
    /// How long a retiring color may keep requests in flight at proxies
    /// that count them before it is stopped anyway.
    pub drain_timeout: Duration,
    pub who: String,
    /// Containers or Swarm services (auto: Swarm on a manager).
    pub runtime: runtime::RuntimeChoice,
    /// The canary's steps with `--strategy canary`; none for blue-green.
    pub canary: Option<strategy::Canary>,
    /// The batches with `--strategy rolling`.
    pub rolling: Option<strategy::Rolling>,
    /// Environments that must have promoted this image (`--require`).
    pub require: Vec<Required>,
}

/// One service's table in `switchyard.toml`; every key is optional and a
/// flag given on the command line wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    image: Option<String>,
    replicas: Option<u32>,
    port: Option<u16>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    network: Option<String>,
    publish_ip: Option<String>,
    health_timeout: Option<String>,
    pre_test: Option<String>,
    post_test: Option<String>,
    proxy_url: Option<String>,
    keep_old: Option<bool>,
    stop_old_after: Option<String>,
    manual_promotion: Option<bool>,
    wait_for_promotion: Option<bool>,
    lock_ttl: Option<String>,
    stop_timeout: Option<String>,
    proxy_timeout: Option<String>,
    proxy_stale: Option<String>,
    drain_timeout: Option<String>,
    runtime: Option<String>,
    strategy: Option<strategy::Strategy>,
    steps: Option<Vec<u8>>,
    bake: Option<String>,
    analysis: Option<String>,
    analysis_interval: Option<String>,
    analysis_prometheus: Option<String>,
    analysis_query: Option<String>,
    analysis_threshold: Option<f64>,
    sticky: Option<bool>,
    batch: Option<u32>,
    max_unavailable: Option<u32>,
}

/// The `[service]` table of the file at `path`.
fn read_table(path: &Path, service: &str) -> anyhow::Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid: fix the TOML", path.display()))?;
    // Environments sit beside the services' tables (crate::environments).
    table.remove(crate::environments::TABLE);
    let names = table.keys().cloned().collect::<Vec<_>>().join(", ");
    match table.remove(service) {
        Some(toml::Value::Table(settings)) => Ok(settings),
        Some(_) => anyhow::bail!("[{service}] in {} is not a table", path.display()),
        None => anyhow::bail!(
            "{} has no [{service}] table (it has: {names})",
            path.display()
        ),
    }
}

/// The service's settings from `--file`, over the environment's deploy
/// defaults (`[environments.NAME.deploy]`), which fill what it leaves out.
fn file_settings(
    file: Option<&Path>,
    service: &str,
    environment_defaults: Option<&toml::Table>,
) -> anyhow::Result<FileSettings> {
    let mut table = match file {
        Some(path) => read_table(path, service)?,
        None => toml::Table::new(),
    };
    for (key, value) in environment_defaults.cloned().unwrap_or_default() {
        table.entry(key).or_insert(value);
    }
    table
        .try_into()
        .context("the deploy settings are not valid (the service's table or the environment's deploy defaults)")
}

fn duration_setting(name: &str, text: Option<&str>) -> anyhow::Result<Option<Duration>> {
    text.map(|t| parse_duration(t).map_err(|e| anyhow::anyhow!("{name}: {e}")))
        .transpose()
}

/// A duration from the flag, else the file's `name`, else `default`.
fn merged_duration(
    flag: Option<Duration>,
    name: &str,
    file: Option<&str>,
    default: Duration,
) -> anyhow::Result<Duration> {
    match flag {
        Some(value) => Ok(value),
        None => Ok(duration_setting(name, file)?.unwrap_or(default)),
    }
}

/// `--env` pairs over the file's.
fn merged_env(file: BTreeMap<String, String>, flags: &[String]) -> anyhow::Result<Vec<String>> {
    let mut env = file;
    for pair in flags {
        let (key, value) = key_value("--env", pair)?;
        env.insert(key, value);
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// `--label` pairs over the file's; the labels cdctl sets itself are
/// refused.
fn merged_labels(
    file: BTreeMap<String, String>,
    flags: &[String],
) -> anyhow::Result<HashMap<String, String>> {
    let mut labels: HashMap<String, String> = file.into_iter().collect();
    for pair in flags {
        let (key, value) = key_value("--label", pair)?;
        anyhow::ensure!(
            ![label::SERVICE, label::COLOR, label::DEPLOY_ID]
                .iter()
                .any(|ours| key.starts_with(ours)),
            "--label {key} is set by cdctl deploy itself"
        );
        labels.insert(key, value);
    }
    Ok(labels)
}

fn runtime_setting(
    flag: Option<runtime::RuntimeChoice>,
    file: Option<&str>,
) -> anyhow::Result<runtime::RuntimeChoice> {
    if let Some(runtime) = flag {
        return Ok(runtime);
    }
    match file {
        Some(text) => {
            <runtime::RuntimeChoice as clap::ValueEnum>::from_str(text, true).map_err(|_| {
                anyhow::anyhow!("runtime {text:?} in the file: use auto, containers or swarm")
            })
        }
        None => Ok(runtime::RuntimeChoice::Auto),
    }
}

fn key_value(what: &str, text: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = text
        .split_once('=')
        .with_context(|| format!("{what} takes KEY=VALUE, got {text:?}"))?;
    anyhow::ensure!(!key.is_empty(), "{what} takes KEY=VALUE, got {text:?}");
    Ok((key.to_string(), value.to_string()))
}

impl Settings {
    /// Flags over the file over defaults, validated.
    pub fn from_args(args: DeployArgs) -> anyhow::Result<Self> {
        validate::service_name("SERVICE", &args.service)?;
        let file = file_settings(
            args.file.as_deref(),
            &args.service,
            args.environment_defaults.as_ref(),
        )?;
        let canary = canary_setting(&args.canary, &file)?;
        let rolling = rolling_setting(&args.canary, &file)?;
        let image = args
            .image
            .clone()
            .or(file.image.clone())
            .context("no image: pass --image IMAGE or set image in the file")?;
        let replicas_given = args.replicas.or(file.replicas).is_some();
        let replicas = args.replicas.or(file.replicas).unwrap_or(1);
        anyhow::ensure!((1..=100).contains(&replicas), "--replicas must be 1 to 100");
        let after = Afterwards::merged(&args, &file, rolling.is_some())?;
        let times = Durations::merged(&args, &file)?;
        let publish_ip = publish_ip_setting(args.publish_ip.clone(), file.publish_ip.clone())?;
        let runtime = runtime_setting(args.runtime, file.runtime.as_deref())?;
        Ok(Settings {
            service: args.service,
            image,
            replicas,
            replicas_given,
            port: args.port.or(file.port),
            env: merged_env(file.env, &args.env)?,
            labels: merged_labels(file.labels, &args.label)?,
            network: args.network.or(file.network),
            publish_ip,
            health_timeout: times.health_timeout,
            pre_test: args.pre_test.or(file.pre_test),
            post_test: args.checks.post_test.or(file.post_test),
            proxy_url: args.checks.proxy_url.or(file.proxy_url),
            keep_old: after.keep_old,
            stop_old_after: after.stop_old_after,
            manual_promotion: after.manual,
            wait_for_promotion: after.waits,
            dry_run: args.dry_run,
            lock_ttl: times.lock_ttl,
            stop_timeout: times.stop_timeout,
            proxy_timeout: times.proxy_timeout,
            proxy_stale: times.proxy_stale,
            drain_timeout: times.drain_timeout,
            who: args.who.unwrap_or_else(default_who),
            runtime,
            canary,
            rolling,
            require: Vec::new(),
        })
    }
}

/// What becomes of the old color, and whether the deploy pauses.
struct Afterwards {
    keep_old: bool,
    stop_old_after: Option<Duration>,
    manual: bool,
    waits: bool,
}

impl Afterwards {
    /// Flags over the file; refuses what a rolling deploy or the other
    /// choices exclude.
    fn merged(args: &DeployArgs, file: &FileSettings, rolling: bool) -> anyhow::Result<Self> {
        let stop_old_after = match args.stop_old_after {
            Some(after) => Some(after),
            None => duration_setting("stop_old_after", file.stop_old_after.as_deref())?,
        };
        let keep_old = args.keep_old || file.keep_old.unwrap_or(false);
        let waits = args.wait_for_promotion || file.wait_for_promotion.unwrap_or(false);
        let manual = waits || args.manual_promotion || file.manual_promotion.unwrap_or(false);
        anyhow::ensure!(
            !rolling || !(keep_old || manual || stop_old_after.is_some()),
            "--keep-old, --stop-old-after and --manual-promotion belong to blue-green and \
             canary deploys: a rolling deploy replaces the live color's instances"
        );
        anyhow::ensure!(
            !(keep_old && stop_old_after.is_some()),
            "--keep-old and --stop-old-after exclude each other: choose one"
        );
        Ok(Afterwards {
            keep_old,
            stop_old_after,
            manual,
            waits,
        })
    }
}

/// The deploy's durations, each its flag over the file over its default
/// (`switchyard_model::defaults`).
struct Durations {
    lock_ttl: Duration,
    health_timeout: Duration,
    stop_timeout: Duration,
    proxy_timeout: Duration,
    proxy_stale: Duration,
    drain_timeout: Duration,
}

impl Durations {
    fn merged(args: &DeployArgs, file: &FileSettings) -> anyhow::Result<Self> {
        let merge = |flag: Option<Duration>, key: &str, text: &Option<String>, default| {
            merged_duration(flag, key, text.as_deref(), default)
        };
        let lock_ttl = merge(
            args.lock_ttl,
            "lock_ttl",
            &file.lock_ttl,
            defaults::LOCK_TTL,
        )?;
        validate::ttl_seconds("--lock-ttl", defaults::whole_seconds(lock_ttl))?;
        Ok(Durations {
            lock_ttl,
            health_timeout: merge(
                args.health_timeout,
                "health_timeout",
                &file.health_timeout,
                defaults::HEALTH_TIMEOUT,
            )?,
            stop_timeout: merge(
                args.stop_timeout,
                "stop_timeout",
                &file.stop_timeout,
                defaults::STOP_TIMEOUT,
            )?,
            proxy_timeout: merge(
                args.proxy_timeout,
                "proxy_timeout",
                &file.proxy_timeout,
                defaults::PROXY_TIMEOUT,
            )?,
            proxy_stale: merge(
                args.proxy_stale,
                "proxy_stale",
                &file.proxy_stale,
                defaults::PROXY_STALE,
            )?,
            drain_timeout: merge(
                args.drain_timeout,
                "drain_timeout",
                &file.drain_timeout,
                defaults::DRAIN_TIMEOUT,
            )?,
        })
    }
}

/// `--publish-ip` over the file over every address, checked.
fn publish_ip_setting(flag: Option<String>, file: Option<String>) -> anyhow::Result<String> {
    let publish_ip = flag.or(file).unwrap_or_else(|| "0.0.0.0".into());
    anyhow::ensure!(
        publish_ip.parse::<std::net::IpAddr>().is_ok(),
        "--publish-ip {publish_ip:?} is not an IP address"
    );
    Ok(publish_ip)
}

/// The canary from its flags over the file, when the strategy is canary.
fn canary_setting(
    flags: &crate::args::CanaryArgs,
    file: &FileSettings,
) -> anyhow::Result<Option<strategy::Canary>> {
    let chosen = flags.strategy.or(file.strategy).unwrap_or_default();
    let canary_flags = flags.steps.is_some()
        || flags.bake.is_some()
        || flags.analysis.analysis.is_some()
        || flags.analysis.analysis_prometheus.is_some()
        || flags.sticky;
    if chosen != strategy::Strategy::Canary {
        anyhow::ensure!(
            !canary_flags,
            "--steps, --bake and --analysis belong to --strategy canary"
        );
        return Ok(None);
    }
    let prometheus = prometheus_setting(&flags.analysis, file)?;
    let steps = match (&flags.steps, &file.steps) {
        (Some(text), _) => strategy::parse_steps(text)?,
        (None, Some(steps)) => {
            strategy::check_steps(steps).context("steps in the file")?;
            steps.clone()
        }
        (None, None) => strategy::DEFAULT_STEPS.to_vec(),
    };
    Ok(Some(strategy::Canary {
        steps,
        bake: merged_duration(flags.bake, "bake", file.bake.as_deref(), defaults::BAKE)?,
        analysis: flags.analysis.analysis.clone().or(file.analysis.clone()),
        prometheus,
        sticky: flags.sticky || file.sticky.unwrap_or(false),
        analysis_interval: merged_duration(
            flags.analysis_interval,
            "analysis_interval",
            file.analysis_interval.as_deref(),
            defaults::ANALYSIS_INTERVAL,
        )?,
    }))
}

/// The Prometheus analysis from its flags over the file, if any.
fn prometheus_setting(
    flags: &crate::args::AnalysisArgs,
    file: &FileSettings,
) -> anyhow::Result<Option<prometheus::PrometheusCheck>> {
    match (
        flags
            .analysis_prometheus
            .as_ref()
            .or(file.analysis_prometheus.as_ref()),
        flags
            .analysis_query
            .as_ref()
            .or(file.analysis_query.as_ref()),
    ) {
        (Some(url), Some(query)) => Ok(Some(prometheus::PrometheusCheck::new(
            url,
            query.clone(),
            flags.analysis_threshold.or(file.analysis_threshold),
        )?)),
        (None, None) => Ok(None),
        _ => anyhow::bail!("--analysis-prometheus and --analysis-query go together"),
    }
}

/// What a deploy executes or trusts the answer of: its post-test, the URL
/// given to it, and a canary's analyses. A paused deploy's record never
/// carries these: `promote` takes them from its own flags and file, a
/// waiting deploy from its own settings (docs/security.md).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub post_test: Option<String>,
    pub proxy_url: Option<String>,
    pub analysis: Option<String>,
    pub prometheus: Option<prometheus::PrometheusCheck>,
}

impl Hooks {
    /// `cdctl promote`'s flags over its file over the environment's
    /// deploy defaults.
    pub fn from_args(args: &PromoteArgs) -> anyhow::Result<Self> {
        validate::service_name("SERVICE", &args.service)?;
        let file = file_settings(
            args.file.as_deref(),
            &args.service,
            args.environment_defaults.as_ref(),
        )?;
        Ok(Hooks {
            prometheus: prometheus_setting(&args.analysis, &file)?,
            post_test: args.checks.post_test.clone().or(file.post_test),
            proxy_url: args.checks.proxy_url.clone().or(file.proxy_url),
            analysis: args.analysis.analysis.clone().or(file.analysis),
        })
    }
}

impl Settings {
    /// This deploy's own hooks (what a waiting deploy promotes with).
    pub fn hooks(&self) -> Hooks {
        let canary = self.canary.as_ref();
        Hooks {
            post_test: self.post_test.clone(),
            proxy_url: self.proxy_url.clone(),
            analysis: canary.and_then(|c| c.analysis.clone()),
            prometheus: canary.and_then(|c| c.prometheus.clone()),
        }
    }
}

/// The batches from their flags over the file, when the strategy is
/// rolling.
fn rolling_setting(
    flags: &crate::args::CanaryArgs,
    file: &FileSettings,
) -> anyhow::Result<Option<strategy::Rolling>> {
    let chosen = flags.strategy.or(file.strategy).unwrap_or_default();
    let batch = flags.batch.or(file.batch);
    let max_unavailable = flags.max_unavailable.or(file.max_unavailable);
    if chosen != strategy::Strategy::Rolling {
        anyhow::ensure!(
            batch.is_none() && max_unavailable.is_none(),
            "--batch and --max-unavailable belong to --strategy rolling"
        );
        return Ok(None);
    }
    let batch = batch.unwrap_or(1);
    anyhow::ensure!(
        (1..=100).contains(&batch),
        "--batch must be 1 to 100 (instances per batch)"
    );
    let max_unavailable = max_unavailable.unwrap_or(0);
    anyhow::ensure!(
        max_unavailable <= batch,
        "--max-unavailable {max_unavailable} is above --batch {batch}: a batch stops at most \
         its own old instances early"
    );
    Ok(Some(strategy::Rolling {
        batch,
        max_unavailable,
    }))
}

/// Who is deploying: the CI's actor or the local user, and the host.
pub fn default_who() -> String {
    let user = ["GITHUB_ACTOR", "GITLAB_USER_LOGIN", "USER"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

pub async fn deploy(
    client: &RegistryClient,
    output: Output,
    args: DeployArgs,
    require: Vec<Required>,
    target: &docker::Target,
) -> anyhow::Result<ExitCode> {
    // Every way the flags and the settings file can be wrong is a usage
    // error (exit 2), found before anything changes.
    let mut settings =
        Settings::from_args(args).map_err(|error| crate::exit::UsageError(format!("{error:#}")))?;
    settings.require = require;
    run::deploy(client, output, settings, target).await
}
