//! What the catalog holds, as metrics: instances by service, color and
//! health, each service's live color, the revision, sessions, locks,
//! proxies and their lag, deploys by outcome and their duration.
//!
//! Instances and colors come from the catalog's own watch (a watcher like
//! any other: it never blocks a write, and is reset and re-snapshotted if it
//! falls behind). The rest is read every few seconds by [`sample`]. A
//! scrape only encodes what these two keep in memory.
//!
//! Cardinality is bounded: the first `max_services` services by name get
//! series of their own; the others are summed under `service="_other"`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use switchyard_model::watch::{Change, WatchEvent};
use switchyard_model::{Color, Deployment, Health, Instance, Outcome, Service, color_name};

use crate::catalog::CatalogStats;

/// The series label of services past the cap.
pub const OTHER: &str = "_other";
/// A proxy that has not reported for this long counts as `stale`.
const STALE_AFTER_MS: u64 = 30_000;

/// Instances of one color and health.
type Kind = (&'static str, &'static str);

/// One service as the watch last showed it.
#[derive(Debug, Default, Clone)]
struct ServiceState {
    live: Option<Color>,
    instances: HashMap<String, (Option<Color>, Health)>,
    /// Instances by color and health, kept with `instances`, so a scrape
    /// costs the number of services, not of instances.
    counts: BTreeMap<Kind, u64>,
}

fn kind((color, health): (Option<Color>, Health)) -> Kind {
    (color_name(color), health.as_str())
}

impl ServiceState {
    fn put(&mut self, id: &str, now: (Option<Color>, Health)) {
        if let Some(before) = self.instances.insert(id.to_string(), now) {
            self.forget(before);
        }
        *self.counts.entry(kind(now)).or_default() += 1;
    }

    fn remove(&mut self, id: &str) {
        if let Some(before) = self.instances.remove(id) {
            self.forget(before);
        }
    }

    fn forget(&mut self, before: (Option<Color>, Health)) {
        if let Some(count) = self.counts.get_mut(&kind(before)) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&kind(before));
            }
        }
    }
}

/// The catalog's figures, shared by the followers that fill it and the
/// collector that encodes it.
#[derive(Debug, Default)]
pub struct CatalogFigures {
    services: BTreeMap<String, ServiceState>,
    /// A snapshot arriving in parts.
    pending: Option<BTreeMap<String, ServiceState>>,
    /// The revision of the last change to services or instances.
    changed_at: u64,
    stats: CatalogStats,
    /// Every deployment record kept, by key, as much as the figures need.
    deploys: HashMap<Vec<u8>, DeployFigure>,
}

/// What the deploy figures need of one deployment record.
#[derive(Debug, Clone)]
struct DeployFigure {
    service: String,
    outcome: Outcome,
    /// Seconds from start to end, once it ended.
    seconds: Option<f64>,
}

impl From<&Deployment> for DeployFigure {
    fn from(deployment: &Deployment) -> Self {
        let ended = !matches!(deployment.outcome, Outcome::InProgress | Outcome::Paused);
        DeployFigure {
            service: deployment.service.clone(),
            outcome: deployment.outcome,
            seconds: ended.then(|| {
                deployment
                    .ended_at_ms
                    .saturating_sub(deployment.started_at_ms) as f64
                    / 1000.0
            }),
        }
    }
}

fn state_of(service: &Service) -> ServiceState {
    let mut state = ServiceState {
        live: service.active_color,
        ..ServiceState::default()
    };
    for instance in &service.instances {
        state.put(&instance.id, (instance.color, instance.health));
    }
    state
}

fn last_change(service: &Service) -> u64 {
    service
        .instances
        .iter()
        .map(|i: &Instance| i.mod_revision)
        .chain([service.color_revision])
        .max()
        .unwrap_or(0)
}

impl CatalogFigures {
    /// Applies one event of the catalog's watch.
    pub fn apply(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Snapshot {
                services, complete, ..
            } => {
                let pending = self.pending.get_or_insert_with(BTreeMap::new);
                for service in services {
                    pending.insert(service.name.clone(), state_of(service));
                    self.changed_at = self.changed_at.max(last_change(service));
                }
                if *complete {
                    self.services = self.pending.take().unwrap_or_default();
                }
            }
            WatchEvent::Changes { revision, changes } => {
                self.changed_at = *revision;
                changes.iter().for_each(|change| self.apply_change(change));
            }
            WatchEvent::Progress { .. } => {}
            WatchEvent::Reset { .. } => self.pending = None,
        }
    }

    fn apply_change(&mut self, change: &Change) {
        match change {
            Change::ServiceUpdated(service) => {
                self.services.entry(service.name.clone()).or_default().live = service.active_color;
            }
            Change::InstanceUpdated(instance) => {
                self.services
                    .entry(instance.service.clone())
                    .or_default()
                    .put(&instance.id, (instance.color, instance.health));
            }
            Change::InstanceRemoved { service, id } => {
                if let Some(state) = self.services.get_mut(service) {
                    state.remove(id);
                }
            }
        }
    }

    pub fn set_stats(&mut self, stats: CatalogStats) {
        self.stats = stats;
    }

    /// Starts the deploy figures over from every record, by key.
    pub fn load_deploys(&mut self, records: &[(Vec<u8>, Deployment)]) {
        self.deploys = records
            .iter()
            .map(|(key, record)| (key.clone(), DeployFigure::from(record)))
            .collect();
    }

    /// Applies records written (`Some`) or dropped (`None`), by key.
    pub fn apply_deploys(&mut self, changes: Vec<(Vec<u8>, Option<Deployment>)>) {
        for (key, record) in changes {
            match record {
                Some(record) => self.deploys.insert(key, DeployFigure::from(&record)),
                None => self.deploys.remove(&key),
            };
        }
    }
}

/// Encodes [`CatalogFigures`] on each scrape.
#[derive(Debug, Clone)]
pub struct CatalogCollector {
    pub figures: Arc<Mutex<CatalogFigures>>,
    pub max_services: usize,
}

/// `service` as a series label: itself, or `_other` past the cap.
fn capped(index: usize, name: &str, max_services: usize) -> &str {
    if index < max_services { name } else { OTHER }
}

fn instance_series(
    service: &str,
    (color, health): Kind,
    n: u64,
) -> (Vec<(&'static str, String)>, f64) {
    let labels = vec![
        ("service", service.to_string()),
        ("color", color.to_string()),
        ("health", health.to_string()),
    ];
    (labels, n as f64)
}

pub(super) type Series = Vec<(Vec<(&'static str, String)>, f64)>;

impl CatalogFigures {
    fn instances(&self, max_services: usize) -> Series {
        let mut series = Series::new();
        let mut other: BTreeMap<Kind, u64> = BTreeMap::new();
        for (index, (name, state)) in self.services.iter().enumerate() {
            if index >= max_services {
                for (kind, n) in &state.counts {
                    *other.entry(*kind).or_default() += n;
                }
                continue;
            }
            series.extend(
                state
                    .counts
                    .iter()
                    .map(|(kind, n)| instance_series(name, *kind, *n)),
            );
        }
        series.extend(
            other
                .into_iter()
                .map(|(kind, n)| instance_series(OTHER, kind, n)),
        );
        series
    }

    fn live_colors(&self, max_services: usize) -> Series {
        self.services
            .iter()
            .take(max_services)
            .filter_map(|(name, state)| {
                let color = state.live?;
                let labels = vec![
                    ("service", name.clone()),
                    ("color", color.as_str().to_string()),
                ];
                Some((labels, 1.0))
            })
            .collect()
    }

    fn proxies(&self) -> (Series, Series) {
        let mut by_state: BTreeMap<&'static str, f64> =
            [("healthy", 0.0), ("unhealthy", 0.0), ("stale", 0.0)].into();
        let mut lag = Series::new();
        for proxy in &self.stats.proxies {
            let state = if self.stats.now_ms.saturating_sub(proxy.reported_at_ms) > STALE_AFTER_MS {
                "stale"
            } else if proxy.healthy {
                "healthy"
            } else {
                "unhealthy"
            };
            *by_state.entry(state).or_default() += 1.0;
            let behind = self.changed_at.saturating_sub(proxy.applied_revision);
            lag.push((vec![("proxy", proxy.proxy_id.clone())], behind as f64));
        }
        let states = by_state
            .into_iter()
            .map(|(state, n)| (vec![("state", state.to_string())], n))
            .collect();
        (states, lag)
    }

    /// Deploys by service and outcome, and the summed duration of the
    /// finished ones (for an average with `_count`).
    fn deploys(&self, max_services: usize) -> (Series, Series) {
        let names: BTreeMap<&str, usize> = self
            .services
            .keys()
            .enumerate()
            .map(|(index, name)| (name.as_str(), index))
            .collect();
        let mut counts: BTreeMap<(String, &'static str), f64> = BTreeMap::new();
        let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
        for figure in self.deploys.values() {
            let index = names
                .get(figure.service.as_str())
                .copied()
                .unwrap_or(usize::MAX);
            let service = capped(index, &figure.service, max_services).to_string();
            *counts
                .entry((service.clone(), figure.outcome.as_str()))
                .or_default() += 1.0;
            if let Some(took) = figure.seconds {
                *seconds.entry(service).or_default() += took;
            }
        }
        let counts = counts
            .into_iter()
            .map(|((service, outcome), n)| {
                (
                    vec![("service", service), ("outcome", outcome.to_string())],
                    n,
                )
            })
            .collect();
        let seconds = seconds
            .into_iter()
            .map(|(service, total)| (vec![("service", service)], total))
            .collect();
        (counts, seconds)
    }
}

/// One family: its descriptor, then each series. Whole numbers are written
/// as integers (counts), the rest as floats.
pub(super) fn family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: &Series,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    if let [(labels, value)] = series.as_slice()
        && labels.is_empty()
    {
        return sample(metric, metric_type, *value);
    }
    for (labels, value) in series {
        sample(metric.encode_family(labels)?, metric_type, *value)?;
    }
    Ok(())
}

fn sample(
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
    metric_type: MetricType,
    value: f64,
) -> Result<(), std::fmt::Error> {
    // Counts stay far below 2^53, where f64 holds every integer exactly.
    let whole = value.fract() == 0.0 && value.abs() < 9.0e15;
    match (metric_type, whole) {
        (MetricType::Counter, true) => ConstCounter::new(value as u64).encode(encoder),
        (MetricType::Counter, false) => ConstCounter::new(value).encode(encoder),
        (_, true) => ConstGauge::new(value as i64).encode(encoder),
        (_, false) => ConstGauge::new(value).encode(encoder),
    }
}

fn single(value: f64) -> Series {
    vec![(Vec::new(), value)]
}

impl Collector for CatalogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Ok(figures) = self.figures.lock() else {
            return Ok(());
        };
        let cap = self.max_services;
        let (proxy_states, proxy_lag) = figures.proxies();
        let (deploys, deploy_seconds) = figures.deploys(cap);
        let gauges: [(&str, &str, Series); 8] = [
            (
                "switchyard_revision",
                "The revision of the last change to services or instances",
                single(figures.changed_at as f64),
            ),
            (
                "switchyard_services",
                "Services in the catalog",
                single(figures.services.len() as f64),
            ),
            (
                "switchyard_instances",
                "Instances by service, color and health",
                figures.instances(cap),
            ),
            (
                "switchyard_live_color",
                "1 for each service's live color",
                figures.live_colors(cap),
            ),
            (
                "switchyard_sessions",
                "Agent sessions open",
                single(figures.stats.sessions as f64),
            ),
            (
                "switchyard_locks_held",
                "Deploy locks held",
                single(figures.stats.locks as f64),
            ),
            (
                "switchyard_proxies",
                "Proxies by state: healthy, unhealthy (last apply failed), stale (silent for 30 s)",
                proxy_states,
            ),
            (
                "switchyard_proxy_revision_lag",
                "Revisions a proxy's applied configuration is behind the catalog's last change",
                proxy_lag,
            ),
        ];
        for (name, help, series) in &gauges {
            family(&mut encoder, name, help, MetricType::Gauge, series)?;
        }
        family(
            &mut encoder,
            "switchyard_deploys",
            "Deployment records kept, by service and outcome (the newest 200 per service)",
            MetricType::Counter,
            &deploys,
        )?;
        family(
            &mut encoder,
            "switchyard_deploy_duration_seconds",
            "Summed duration of the finished deploys kept, by service (divide by their count for the average)",
            MetricType::Counter,
            &deploy_seconds,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
