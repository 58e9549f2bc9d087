//! The agent's metrics, served at `GET /metrics` beside `/healthz`: what it
//! hears from Docker, how its syncs go, what it registered, and when it
//! last synced (the alert "agent has not synced" reads that).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use switchyard_model::{Health, Instance};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Action {
    action: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabel {
    health: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Peer {
    to: &'static str,
}

/// The agent's families; clones share them.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    events: Family<Action, Counter>,
    syncs: Family<Outcome, Counter>,
    sync_seconds: Histogram,
    containers: Gauge,
    instances: Family<HealthLabel, Gauge>,
    reconnects: Family<Peer, Counter>,
    last_sync: Gauge<f64, AtomicU64>,
    checks: Family<HealthLabel, Counter>,
}

/// Docker's container event actions (Engine API 1.41 and later).
const CONTAINER_ACTIONS: [&str; 25] = [
    "attach",
    "commit",
    "copy",
    "create",
    "destroy",
    "detach",
    "die",
    "exec_create",
    "exec_detach",
    "exec_die",
    "exec_start",
    "export",
    "health_status",
    "kill",
    "oom",
    "pause",
    "rename",
    "resize",
    "restart",
    "start",
    "stop",
    "top",
    "unpause",
    "update",
    "prune",
];

impl AgentMetrics {
    /// The families, registered in a new registry.
    pub fn new() -> (Self, Arc<Registry>) {
        let mut registry = Registry::with_prefix("switchyard_agent");
        let metrics = AgentMetrics {
            events: Family::default(),
            syncs: Family::default(),
            sync_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            containers: Gauge::default(),
            instances: Family::default(),
            reconnects: Family::default(),
            last_sync: Gauge::default(),
            checks: Family::default(),
        };
        let r = &mut registry;
        r.register(
            "docker_events",
            "Docker container events, by action",
            metrics.events.clone(),
        );
        r.register(
            "syncs",
            "SyncNode calls, by result (ok, error)",
            metrics.syncs.clone(),
        );
        r.register_with_unit(
            "sync_duration",
            "Time of one SyncNode call",
            Unit::Seconds,
            metrics.sync_seconds.clone(),
        );
        r.register(
            "containers",
            "Containers the agent follows",
            metrics.containers.clone(),
        );
        r.register(
            "instances",
            "Instances registered for this node, by health",
            metrics.instances.clone(),
        );
        r.register(
            "reconnects",
            "Connections lost and made again, to docker or registry",
            metrics.reconnects.clone(),
        );
        r.register_with_unit(
            "last_sync_timestamp",
            "When the last SyncNode succeeded (Unix time)",
            Unit::Seconds,
            metrics.last_sync.clone(),
        );
        r.register(
            "check_results",
            "Health check results that changed an instance's health",
            metrics.checks.clone(),
        );
        (metrics, Arc::new(registry))
    }

    /// Counts one container event under its action's name: only the name
    /// (Docker sends `exec_create: <command line>` and `health_status:
    /// healthy`; a label per command would leak the commands and add a
    /// series each), and `other` for a name Docker did not have when this
    /// was written.
    pub fn docker_event(&self, action: &str) {
        let name = action.split(':').next().unwrap_or_default().trim();
        let action = CONTAINER_ACTIONS
            .iter()
            .find(|known| **known == name)
            .copied()
            .unwrap_or("other");
        self.events
            .get_or_create(&Action {
                action: action.to_string(),
            })
            .inc();
    }

    /// One SyncNode that took `took`; on success, what it registered.
    pub fn synced(&self, took: Duration, registered: Option<&[Instance]>) {
        self.sync_seconds.observe(took.as_secs_f64());
        let result = if registered.is_some() { "ok" } else { "error" };
        self.syncs.get_or_create(&Outcome { result }).inc();
        let Some(instances) = registered else {
            return;
        };
        for health in [
            Health::Passing,
            Health::Warning,
            Health::Critical,
            Health::Unknown,
        ] {
            let count = instances.iter().filter(|i| i.health == health).count();
            self.instances
                .get_or_create(&HealthLabel {
                    health: health.as_str(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let now = switchyard_program::metrics::unix_now();
        self.last_sync.set(now);
    }

    pub fn containers(&self, count: usize) {
        self.containers
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The connection to `to` ("docker" or "registry") was lost.
    pub fn reconnect(&self, to: &'static str) {
        self.reconnects.get_or_create(&Peer { to }).inc();
    }

    pub fn check(&self, health: Health) {
        self.checks
            .get_or_create(&HealthLabel {
                health: health.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_and_labelled() {
        let (metrics, registry) = AgentMetrics::new();
        metrics.docker_event("start");
        metrics.synced(Duration::from_millis(3), Some(&[]));
        metrics.synced(Duration::from_millis(3), None);
        metrics.reconnect("docker");
        metrics.containers(2);
        metrics.check(Health::Critical);
        let text = switchyard_program::metrics::render(&registry);
        for expected in [
            "switchyard_agent_docker_events_total{action=\"start\"} 1",
            "switchyard_agent_syncs_total{result=\"ok\"} 1",
            "switchyard_agent_syncs_total{result=\"error\"} 1",
            "switchyard_agent_sync_duration_seconds_count 2",
            "switchyard_agent_containers 2",
            "switchyard_agent_instances{health=\"passing\"} 0",
            "switchyard_agent_reconnects_total{to=\"docker\"} 1",
            "switchyard_agent_check_results_total{health=\"critical\"} 1",
            "switchyard_agent_last_sync_timestamp_seconds ",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
    }

    #[test]
    fn events_are_counted_by_action_name_alone() {
        let (metrics, registry) = AgentMetrics::new();
        metrics.docker_event("exec_create: sh -c 'curl http://secret'");
        metrics.docker_event("exec_create: rm -rf /tmp/x");
        metrics.docker_event("health_status: healthy");
        metrics.docker_event("made_up\"{x}");
        let text = switchyard_program::metrics::render(&registry);
        let events: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("switchyard_agent_docker_events_total{"))
            .collect();
        assert_eq!(events.len(), 3, "one series per action name: {events:?}");
        assert!(text.contains("{action=\"exec_create\"} 2"), "{text}");
        assert!(text.contains("{action=\"health_status\"} 1"), "{text}");
        assert!(text.contains("{action=\"other\"} 1"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
