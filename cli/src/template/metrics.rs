//! `cdctl template --metrics-listen`: what the proxy's follower did, for
//! Prometheus. Renders and reloads by result, the revision applied, and the
//! time from a change reaching it to that change being applied (render,
//! check and reload included: the delay a proxy adds to a flip).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

/// The follower's families; clones share them.
#[derive(Debug, Clone)]
pub struct TemplateMetrics {
    renders: Family<Outcome, Counter>,
    reloads: Family<Outcome, Counter>,
    applied_revision: Gauge,
    apply_seconds: Histogram,
    last_apply: Gauge<f64, AtomicU64>,
}

impl TemplateMetrics {
    pub fn new() -> (Self, Arc<Registry>) {
        let mut registry = Registry::with_prefix("switchyard_template");
        let metrics = TemplateMetrics {
            renders: Family::default(),
            reloads: Family::default(),
            applied_revision: Gauge::default(),
            // 1 ms to ~33 s.
            apply_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            last_apply: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "renders",
            "Outputs rendered, by result: replaced, unchanged, failed (template or check)",
            metrics.renders.clone(),
        );
        r.register(
            "reloads",
            "Reload commands run, by result: ok, failed",
            metrics.reloads.clone(),
        );
        r.register(
            "applied_revision",
            "The registry revision the proxy's configuration reflects",
            metrics.applied_revision.clone(),
        );
        r.register_with_unit(
            "apply_duration",
            "From a registry change reaching the follower to it being applied",
            Unit::Seconds,
            metrics.apply_seconds.clone(),
        );
        r.register_with_unit(
            "last_apply_timestamp",
            "When a configuration was last applied cleanly (Unix time)",
            Unit::Seconds,
            metrics.last_apply.clone(),
        );
        (metrics, Arc::new(registry))
    }

    pub fn rendered(&self, result: &'static str) {
        self.renders.get_or_create(&Outcome { result }).inc();
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&Outcome { result }).inc();
    }

    /// Everything up to `revision` is applied, `took` after the change came.
    pub fn applied(&self, revision: u64, took: Option<Duration>) {
        self.applied_revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        if let Some(took) = took {
            self.apply_seconds.observe(took.as_secs_f64());
        }
        let now = switchyard_program::metrics::unix_now();
        self.last_apply.set(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_and_labelled() {
        let (metrics, registry) = TemplateMetrics::new();
        metrics.rendered("replaced");
        metrics.reloaded(false);
        metrics.applied(42, Some(Duration::from_millis(120)));
        let text = switchyard_program::metrics::render(&registry);
        for expected in [
            "switchyard_template_renders_total{result=\"replaced\"} 1",
            "switchyard_template_reloads_total{result=\"failed\"} 1",
            "switchyard_template_applied_revision 42",
            "switchyard_template_apply_duration_seconds_count 1",
            "switchyard_template_last_apply_timestamp_seconds ",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
    }
}
