//! The store's own figures and the catalog's watch streams, as metrics:
//! fsync, commit group and snapshot histograms, compactions, expired
//! leases, keys and bytes on disk (embedded store), request latency and
//! retries (etcd), watch streams open and their resets by reason.
//!
//! Everything is read from atomics at scrape time ([`StoreStats`],
//! [`WatchCounters`]); a scrape never waits for the writer.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::catalog::WatchCounters;
use crate::store::stats::{AtomicHistogram, StoreStats};

/// Encodes a store's [`StoreStats`] and the [`WatchCounters`] on each scrape.
#[derive(Debug)]
pub struct StoreCollector {
    pub stats: Arc<StoreStats>,
    pub watches: Arc<WatchCounters>,
}

fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    histogram: &AtomicHistogram,
) -> Result<(), std::fmt::Error> {
    let snapshot = histogram.snapshot();
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum,
        snapshot.count,
        &snapshot.buckets,
        None,
    )
}

fn scalar(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let series = vec![(Vec::new(), value as f64)];
    super::catalog::family(encoder, name, help, metric_type, &series)
}

impl StoreCollector {
    fn encode_sled(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = &self.stats;
        histogram(
            encoder,
            "switchyard_store_fsync_duration_seconds",
            "Time of each flush of a commit group to disk",
            &stats.fsync_seconds,
        )?;
        histogram(
            encoder,
            "switchyard_store_commit_group_requests",
            "Requests committed under one fsync (group commit)",
            &stats.commit_group_size,
        )?;
        histogram(
            encoder,
            "switchyard_store_snapshot_duration_seconds",
            "Time to write a snapshot of the live keys (after which old history can go)",
            &stats.snapshot_seconds,
        )?;
        let figures = [
            (
                "switchyard_store_compactions",
                "Times the watch history on disk was cut back",
                MetricType::Counter,
                &stats.compactions,
            ),
            (
                "switchyard_store_leases_expired",
                "Leases (agent sessions, deploy locks) that expired because nobody renewed them",
                MetricType::Counter,
                &stats.leases_expired,
            ),
            (
                "switchyard_store_keys",
                "Live keys in the store",
                MetricType::Gauge,
                &stats.live_keys,
            ),
            (
                "switchyard_store_size_bytes",
                "Bytes the data directory takes on disk (read at most once a second)",
                MetricType::Gauge,
                &stats.bytes_on_disk,
            ),
        ];
        for (name, help, metric_type, value) in figures {
            scalar(encoder, name, help, metric_type, StoreStats::get(value))?;
        }
        Ok(())
    }

    fn encode_etcd(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        histogram(
            encoder,
            "switchyard_store_request_duration_seconds",
            "Time of each etcd transaction, retries included",
            &self.stats.request_seconds,
        )?;
        scalar(
            encoder,
            "switchyard_store_retries",
            "etcd requests sent again to another member after a connection error",
            MetricType::Counter,
            StoreStats::get(&self.stats.retries),
        )
    }

    fn encode_watches(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        scalar(
            encoder,
            "switchyard_watchers",
            "Watch streams open (the registry's own metrics watch included)",
            MetricType::Gauge,
            self.watches.open(),
        )?;
        let resets = self
            .watches
            .resets()
            .into_iter()
            .map(|(reason, n)| (vec![("reason", reason.as_str().to_string())], n as f64))
            .collect();
        super::catalog::family(
            encoder,
            "switchyard_watch_resets",
            "Watch streams started over from a snapshot, by reason",
            MetricType::Counter,
            &resets,
        )
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        super::catalog::family(
            &mut encoder,
            "switchyard_store_backend",
            "1 for the store backend in use (sled or etcd)",
            MetricType::Gauge,
            &vec![(vec![("backend", self.stats.backend.to_string())], 1.0)],
        )?;
        scalar(
            &mut encoder,
            "switchyard_store_revision",
            "The store's revision (every write counts; on etcd, the last this registry saw)",
            MetricType::Gauge,
            StoreStats::get(&self.stats.revision),
        )?;
        match self.stats.backend {
            "etcd" => self.encode_etcd(&mut encoder)?,
            _ => self.encode_sled(&mut encoder)?,
        }
        self.encode_watches(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::catalog::ResetReason;

    fn render(stats: StoreStats, watches: WatchCounters) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StoreCollector {
            stats: Arc::new(stats),
            watches: Arc::new(watches),
        }));
        switchyard_program::metrics::render(&registry)
    }

    #[test]
    fn sled_figures_and_resets_by_reason() {
        let stats = StoreStats::new("sled");
        stats
            .fsync_seconds
            .observe_duration(Duration::from_millis(2));
        stats.commit_group_size.observe_size(3);
        StoreStats::set(&stats.live_keys, 42);
        StoreStats::raise(&stats.revision, 9);
        StoreStats::raise(&stats.revision, 7);
        let watches = WatchCounters::default();
        watches.reset(ResetReason::SlowConsumer);
        watches.reset(ResetReason::SlowConsumer);
        let text = render(stats, watches);
        for line in [
            "switchyard_store_backend{backend=\"sled\"} 1",
            "switchyard_store_fsync_duration_seconds_bucket{le=\"0.001\"} 0",
            "switchyard_store_fsync_duration_seconds_bucket{le=\"0.0025\"} 1",
            "switchyard_store_fsync_duration_seconds_bucket{le=\"+Inf\"} 1",
            "switchyard_store_fsync_duration_seconds_count 1",
            "switchyard_store_commit_group_requests_bucket{le=\"4.0\"} 1",
            "switchyard_store_keys 42",
            "switchyard_store_revision 9",
            "switchyard_watch_resets_total{reason=\"slow_consumer\"} 2",
            "switchyard_watch_resets_total{reason=\"compacted\"} 0",
            "switchyard_watchers 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("retries"), "{text}");
    }

    #[test]
    fn etcd_shows_requests_and_retries_not_fsyncs() {
        let stats = StoreStats::new("etcd");
        stats
            .request_seconds
            .observe_duration(Duration::from_millis(1));
        StoreStats::add(&stats.retries, 2);
        let text = render(stats, WatchCounters::default());
        assert!(text.contains("switchyard_store_retries_total 2"), "{text}");
        assert!(
            text.contains("switchyard_store_request_duration_seconds_count 1"),
            "{text}"
        );
        assert!(!text.contains("fsync"), "{text}");
    }
}
