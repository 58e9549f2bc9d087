//! What a store measures about itself, for the registry's metrics: fsync and
//! snapshot durations, commit group sizes, compactions, expired leases,
//! live keys and bytes on disk (embedded store); request latency and retries
//! (etcd).
//!
//! **Architecture Invariant:** recording and reading are plain atomics. The
//! sled writer thread records on its hot path, and a scrape reads at any
//! moment; neither ever waits for the other, and no metrics crate type
//! reaches the store (the registry's `metrics` module encodes a
//! [`StoreStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the duration buckets, in seconds: 100 µs to 2.5 s,
/// around a local disk's fsync (etcd's `wal_fsync_duration_seconds` spans
/// the same range).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Upper bounds of the commit group size buckets (requests per fsync).
pub const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram of fixed buckets kept in atomics.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// One count per bound, then the count above the last bound.
    counts: Box<[AtomicU64]>,
    /// The sum in `unit`s: nanoseconds for durations, ones for sizes.
    sum: AtomicU64,
    unit: f64,
}

/// A histogram as read at one moment: per-bucket counts (not cumulative),
/// the last bucket unbounded.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64], unit: f64) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            unit,
        }
    }

    /// A histogram of durations in seconds.
    pub fn seconds() -> Self {
        Self::new(SECONDS_BUCKETS, 1e-9)
    }

    /// A histogram of counts (sizes).
    pub fn sizes(bounds: &'static [f64]) -> Self {
        Self::new(bounds, 1.0)
    }

    fn observe(&self, value: f64, units: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.observe(took.as_secs_f64(), nanos);
    }

    pub fn observe_size(&self, size: u64) {
        self.observe(size as f64, size);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(counts.iter().copied())
            .collect();
        HistogramSnapshot {
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.unit,
            count: counts.iter().sum(),
            buckets,
        }
    }
}

/// Everything a store measures. Figures a backend does not have stay at
/// zero and are not exposed (see [`StoreStats::backend`]).
#[derive(Debug)]
pub struct StoreStats {
    /// `sled` or `etcd`: which figures mean something.
    pub backend: &'static str,
    /// The store's revision: every write counts, proxy reports and
    /// deployment records included (etcd: the last one this registry saw).
    pub revision: AtomicU64,
    pub fsync_seconds: AtomicHistogram,
    pub commit_group_size: AtomicHistogram,
    pub snapshot_seconds: AtomicHistogram,
    pub compactions: AtomicU64,
    pub leases_expired: AtomicU64,
    pub live_keys: AtomicU64,
    pub bytes_on_disk: AtomicU64,
    /// etcd: the time of each request, retries included.
    pub request_seconds: AtomicHistogram,
    /// etcd: requests sent again to another member after a connection error.
    pub retries: AtomicU64,
}

impl StoreStats {
    pub fn new(backend: &'static str) -> Self {
        StoreStats {
            backend,
            revision: AtomicU64::new(0),
            fsync_seconds: AtomicHistogram::seconds(),
            commit_group_size: AtomicHistogram::sizes(GROUP_BUCKETS),
            snapshot_seconds: AtomicHistogram::seconds(),
            compactions: AtomicU64::new(0),
            leases_expired: AtomicU64::new(0),
            live_keys: AtomicU64::new(0),
            bytes_on_disk: AtomicU64::new(0),
            request_seconds: AtomicHistogram::seconds(),
            retries: AtomicU64::new(0),
        }
    }

    pub fn add(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Raises `gauge` to `value` (answers from several tasks may arrive
    /// out of order).
    pub fn raise(gauge: &AtomicU64, value: u64) {
        gauge.fetch_max(value, Ordering::Relaxed);
    }

    pub fn get(figure: &AtomicU64) -> u64 {
        figure.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_bucket_and_sum_in_seconds() {
        let histogram = AtomicHistogram::seconds();
        histogram.observe_duration(Duration::from_micros(80));
        histogram.observe_duration(Duration::from_millis(3));
        histogram.observe_duration(Duration::from_secs(10));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert!((snapshot.sum - 10.00308).abs() < 1e-9, "{}", snapshot.sum);
        assert_eq!(snapshot.buckets[0], (0.0001, 1));
        assert_eq!(snapshot.buckets[5], (0.005, 1));
        assert_eq!(snapshot.buckets.last(), Some(&(f64::MAX, 1)));
        assert_eq!(snapshot.buckets.len(), SECONDS_BUCKETS.len() + 1);
    }

    #[test]
    fn sizes_count_on_their_bound() {
        let histogram = AtomicHistogram::sizes(GROUP_BUCKETS);
        histogram.observe_size(1);
        histogram.observe_size(2);
        histogram.observe_size(3);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets[0], (1.0, 1));
        assert_eq!(snapshot.buckets[1], (2.0, 1));
        assert_eq!(snapshot.buckets[2], (4.0, 1));
        assert_eq!(snapshot.sum, 6.0);
    }
}
