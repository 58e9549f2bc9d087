//! What each page shows, as plain values for the templates: built from the
//! dashboard's in-memory state, never from the store. Every text that came
//! from a client (names, metadata, tags, errors) reaches HTML only through
//! the templates, which escape it.

use std::collections::BTreeMap;

use serde::Serialize;
use switchyard_model::labels::record;
use switchyard_model::{Color, Deployment, Instance, Outcome, ProxyStatus, Service, color_name};

use super::state::UiState;
use super::timeline::Segment;

/// Services per page of the list.
pub const PAGE_SIZE: usize = 100;

#[derive(Serialize)]
pub struct ServiceList {
    pub services: Vec<ServiceRow>,
    pub total: usize,
    pub revision: u64,
    pub page: usize,
    pub pages: usize,
    pub q: String,
}

#[derive(Serialize)]
pub struct ServiceRow {
    pub name: String,
    pub live: &'static str,
    pub weights: String,
    pub colors: Vec<ColorCount>,
    /// All instances, and those whose health is passing (as `cdctl
    /// services` counts them; draining ones included).
    pub instances: usize,
    pub passing: usize,
    pub last: Option<RecordRow>,
}

#[derive(Serialize)]
pub struct ColorCount {
    pub color: &'static str,
    pub passing: usize,
    pub total: usize,
}

#[derive(Serialize)]
pub struct RecordRow {
    pub id: String,
    pub outcome: &'static str,
    pub image: String,
    pub who: String,
    pub from: &'static str,
    pub to: &'static str,
    pub started: String,
    pub ago: String,
    pub duration: String,
    pub failed_step: String,
    pub error: String,
    pub kind: String,
}

/// Page `page` (from 1) of the services whose name contains `q`.
pub fn service_list(state: &UiState, q: &str, page: usize, now_ms: u64) -> ServiceList {
    let latest = state.latest_records();
    state.with_view(|view| {
        let matching: Vec<&Service> = view
            .services
            .values()
            .filter(|s| s.name.contains(q))
            .collect();
        let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
        let page = page.clamp(1, pages);
        let services = matching
            .iter()
            .skip((page - 1) * PAGE_SIZE)
            .take(PAGE_SIZE)
            .map(|service| ServiceRow {
                name: service.name.clone(),
                live: color_name(service.active_color),
                weights: weights(service),
                colors: color_counts(&service.instances),
                instances: service.instances.len(),
                passing: service
                    .instances
                    .iter()
                    .filter(|i| i.health == switchyard_model::Health::Passing)
                    .count(),
                last: latest.get(&service.name).map(|r| record_row(r, now_ms)),
            })
            .collect();
        ServiceList {
            services,
            total: matching.len(),
            revision: view.revision,
            page,
            pages,
            q: q.to_string(),
        }
    })
}

/// `blue 90% · green 10%` during a canary; empty otherwise.
fn weights(service: &Service) -> String {
    match (service.active_color, service.canary_color()) {
        (Some(live), Some(canary)) => format!(
            "{live} {}% · {canary} {}%",
            service.weight_of(Some(live)),
            service.canary_weight
        ),
        _ => String::new(),
    }
}

fn color_counts(instances: &[Instance]) -> Vec<ColorCount> {
    let mut counts: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    for instance in instances {
        let count = counts.entry(color_name(instance.color)).or_default();
        count.1 += 1;
        if instance.takes_requests() {
            count.0 += 1;
        }
    }
    counts
        .into_iter()
        .map(|(color, (passing, total))| ColorCount {
            color,
            passing,
            total,
        })
        .collect()
}

pub fn record_row(record: &Deployment, now_ms: u64) -> RecordRow {
    let end = if record.ended_at_ms == 0 {
        now_ms
    } else {
        record.ended_at_ms
    };
    RecordRow {
        id: record.id.clone(),
        outcome: record.outcome.as_str(),
        image: record.image.clone(),
        who: record.who.clone(),
        from: color_name(record.from_color),
        to: color_name(record.to_color),
        started: utc(record.started_at_ms),
        ago: ago(now_ms.saturating_sub(record.started_at_ms)),
        duration: seconds(end.saturating_sub(record.started_at_ms)),
        failed_step: record.failed_step.clone(),
        error: record.error.clone(),
        kind: record
            .metadata
            .get(record::KIND)
            .cloned()
            .unwrap_or_default(),
    }
}

#[derive(Serialize)]
pub struct ServicePage {
    pub name: String,
    pub live: &'static str,
    pub previous: &'static str,
    pub weights: String,
    pub color_revision: u64,
    pub revision: u64,
    pub metadata: Vec<(String, String)>,
    pub colors: Vec<ColorInstances>,
    pub current: Option<CurrentDeploy>,
    pub history: Vec<RecordRow>,
    pub timeline: Vec<Segment>,
    pub can_rollback: bool,
}

#[derive(Serialize)]
pub struct ColorInstances {
    pub color: &'static str,
    pub weight: u8,
    pub instances: Vec<InstanceRow>,
}

#[derive(Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub node: String,
    pub address: String,
    pub health: &'static str,
    pub draining: bool,
    pub age: String,
    pub tags: String,
    pub image: String,
}

/// The deploy in progress or paused for promotion.
#[derive(Serialize)]
pub struct CurrentDeploy {
    pub record: RecordRow,
    pub paused: bool,
    /// `in_progress`, but no deploy holds the lock: it died without
    /// recording its end (its lock expired).
    pub interrupted: bool,
    pub step: String,
    pub steps: Vec<(String, String)>,
    pub requested: String,
    pub requested_by: String,
}

/// The service page, or `None` for a service the registry does not know.
pub fn service_page(state: &UiState, name: &str, now_ms: u64) -> Option<ServicePage> {
    let records = state.records_of(name);
    state.with_view(|view| {
        let service = view.services.get(name)?;
        let previous = service.active_color.map(Color::other);
        let locked = state.is_locked(name);
        let current = records
            .first()
            .and_then(|r| current_deploy(r, locked, now_ms));
        // During a deploy the other color holds the new instances: going
        // "back" to them is not a rollback.
        let can_rollback = current.is_none()
            && previous.is_some()
            && service
                .instances
                .iter()
                .any(|i| i.color == previous && i.takes_requests());
        Some(ServicePage {
            name: service.name.clone(),
            live: color_name(service.active_color),
            previous: color_name(previous),
            weights: weights(service),
            color_revision: service.color_revision,
            revision: view.revision,
            metadata: service.metadata.clone().into_iter().collect(),
            colors: instances_by_color(service, now_ms),
            current,
            history: records.iter().map(|r| record_row(r, now_ms)).collect(),
            timeline: super::timeline::segments(&records, now_ms),
            can_rollback,
        })
    })
}

fn instances_by_color(service: &Service, now_ms: u64) -> Vec<ColorInstances> {
    let mut by_color: BTreeMap<&'static str, ColorInstances> = BTreeMap::new();
    for instance in &service.instances {
        let color = color_name(instance.color);
        by_color
            .entry(color)
            .or_insert_with(|| ColorInstances {
                color,
                weight: service.weight_of(instance.color),
                instances: Vec::new(),
            })
            .instances
            .push(instance_row(instance, now_ms));
    }
    by_color.into_values().collect()
}

fn instance_row(instance: &Instance, now_ms: u64) -> InstanceRow {
    use switchyard_model::labels::meta;
    let started = instance
        .metadata
        .get(meta::STARTED_AT_MS)
        .and_then(|ms| ms.parse::<u64>().ok());
    InstanceRow {
        id: instance.id.clone(),
        node: instance.node.clone(),
        address: std::net::SocketAddr::new(instance.address, instance.port).to_string(),
        health: instance.health.as_str(),
        draining: instance.is_draining(),
        age: started.map_or_else(String::new, |ms| age(now_ms.saturating_sub(ms))),
        tags: instance.tags.join(", "),
        image: instance
            .metadata
            .get(meta::IMAGE)
            .cloned()
            .unwrap_or_default(),
    }
}

fn current_deploy(record: &Deployment, locked: bool, now_ms: u64) -> Option<CurrentDeploy> {
    if !matches!(record.outcome, Outcome::InProgress | Outcome::Paused) {
        return None;
    }
    let meta = |key: &str| record.metadata.get(key).cloned().unwrap_or_default();
    let paused = record.outcome == Outcome::Paused;
    let interrupted = !paused && !locked;
    Some(CurrentDeploy {
        record: record_row(record, now_ms),
        paused,
        interrupted,
        step: if paused {
            "paused for promotion".into()
        } else {
            meta(record::STEP)
        },
        steps: record
            .steps
            .iter()
            .map(|s| (s.name.clone(), seconds(s.duration_ms)))
            .collect(),
        requested: meta(record::REQUESTED),
        requested_by: meta(record::REQUESTED_BY),
    })
}

#[derive(Serialize)]
pub struct ProxyRow {
    pub id: String,
    pub applied: u64,
    pub lag: u64,
    pub reported: String,
    pub healthy: bool,
    pub message: String,
    pub connections: String,
}

/// Every proxy, with how many revisions it is behind the registry.
pub fn proxy_rows(state: &UiState, now_ms: u64) -> (u64, Vec<ProxyRow>) {
    let revision = state.with_view(|view| view.revision);
    let rows = state
        .proxies()
        .into_iter()
        .map(|proxy| proxy_row(proxy, revision, now_ms))
        .collect();
    (revision, rows)
}

fn proxy_row(proxy: ProxyStatus, revision: u64, now_ms: u64) -> ProxyRow {
    let connections = proxy
        .connections
        .iter()
        .map(|c| format!("{} {}={}", c.service, c.color, c.connections))
        .collect::<Vec<_>>()
        .join(", ");
    ProxyRow {
        lag: revision.saturating_sub(proxy.applied_revision),
        applied: proxy.applied_revision,
        reported: ago(now_ms.saturating_sub(proxy.reported_at_ms)),
        healthy: proxy.healthy,
        message: proxy.message,
        connections,
        id: proxy.proxy_id,
    }
}

/// `4.2 s`.
pub fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(ms: u64) -> String {
    format!("{} ago", age(ms))
}

fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// `2026-12-03 04:05:06 UTC`.
pub fn utc(ms: u64) -> String {
    let seconds = i64::try_from(ms / 1000).unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(seconds).map_or_else(
        |_| String::new(),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(ago(3_400), "3 s ago");
        assert_eq!(ago(125_000), "2 min ago");
        assert_eq!(ago(7_300_000), "2 h ago");
        assert_eq!(ago(200_000_000), "2 d ago");
        assert_eq!(seconds(4_250), "4.2 s");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    }
}
