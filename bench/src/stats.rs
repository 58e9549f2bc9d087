//! Turning samples into rows: throughput, percentiles, and ratios oriented
//! so that a ratio above 1 always means Switchyard did better.

use std::time::Duration;

/// What one workload measured on one system.
#[derive(Debug, Clone)]
pub struct Samples {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Samples {
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`th percentile (0–100) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
    }
}

/// One line of the results.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub switchyard: f64,
    pub etcd: f64,
    /// Above 1: Switchyard better.
    pub ratio: f64,
}

impl Row {
    pub fn higher_is_better(name: &str, unit: &str, switchyard: f64, etcd: f64) -> Self {
        Row {
            name: name.into(),
            unit: unit.into(),
            switchyard,
            etcd,
            ratio: switchyard / etcd.max(1e-9),
        }
    }

    /// Latencies and memory. Values below 0.01 (10 µs for latencies) count
    /// as 0.01, so a ratio never divides by a clock's rounding.
    pub fn lower_is_better(name: &str, unit: &str, switchyard: f64, etcd: f64) -> Self {
        Row {
            name: name.into(),
            unit: unit.into(),
            switchyard,
            etcd,
            ratio: etcd.max(0.01) / switchyard.max(0.01),
        }
    }
}

/// Throughput, then p50 and p99.
pub fn throughput_rows(name: &str, ours: &Samples, theirs: &Samples) -> Vec<Row> {
    let mut rows = vec![Row::higher_is_better(
        name,
        "ops/s",
        ours.throughput(),
        theirs.throughput(),
    )];
    rows.extend(percentile_rows(
        name,
        ours,
        theirs,
        &[("p50", 50.0), ("p99", 99.0)],
    ));
    rows
}

/// p50, p99 and the slowest.
pub fn latency_rows(name: &str, ours: &Samples, theirs: &Samples) -> Vec<Row> {
    let points = [("p50", 50.0), ("p99", 99.0), ("max", 100.0)];
    percentile_rows(name, ours, theirs, &points)
}

pub fn percentile_rows(
    name: &str,
    ours: &Samples,
    theirs: &Samples,
    points: &[(&str, f64)],
) -> Vec<Row> {
    points
        .iter()
        .map(|(suffix, percentile)| {
            Row::lower_is_better(
                &format!("{name}_{suffix}"),
                "ms",
                ours.percentile_ms(*percentile),
                theirs.percentile_ms(*percentile),
            )
        })
        .collect()
}

/// Resident memory of a process, from /proc.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmRSS:")
}

/// The most resident memory a process has had, from /proc.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmHWM:")
}

fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} for process {pid}"))?;
    Ok(kib / 1024.0)
}

/// Runs `per_client` on `clients` tasks splitting `total` operations; each
/// task answers its latencies.
pub async fn concurrently<F, Fut>(
    clients: usize,
    total: usize,
    per_client: F,
) -> anyhow::Result<Samples>
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Duration>>> + Send + 'static,
{
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let share = total / clients + usize::from(client < total % clients);
        tasks.push(tokio::spawn(per_client(client, share)));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Samples {
        latencies,
        elapsed: started.elapsed(),
    })
}

/// What one watcher received: (revision, when).
pub type Receipts = Vec<(u64, std::time::Instant)>;

/// A fan-out as a user sees it: from each write being **sent** to each
/// watcher's receipt, to the last watcher's receipt of each write, and the
/// spread between the first and the last watcher of each write.
pub struct FanOut {
    pub each: Samples,
    pub last: Samples,
    pub spread: Samples,
    /// The server's resident memory with every watcher open (when asked).
    pub rss_mib: Option<f64>,
}

/// Times every watcher's receipts against the moment each write (by the
/// revision it got) was sent.
pub async fn sent_to_receipt(
    watchers: Vec<tokio::task::JoinHandle<anyhow::Result<Receipts>>>,
    sent: &std::collections::HashMap<u64, std::time::Instant>,
    started: std::time::Instant,
) -> anyhow::Result<FanOut> {
    use std::collections::HashMap;
    use std::time::Instant;
    let mut each = Vec::new();
    let mut by_write: HashMap<u64, (Instant, Instant)> = HashMap::new();
    for watcher in watchers {
        let received = tokio::time::timeout(Duration::from_secs(120), watcher).await???;
        for (revision, at) in received {
            let Some(sent_at) = sent.get(&revision) else {
                continue;
            };
            each.push(at.saturating_duration_since(*sent_at));
            let (first, last) = by_write.entry(revision).or_insert((at, at));
            *first = (*first).min(at);
            *last = (*last).max(at);
        }
    }
    let elapsed = started.elapsed();
    let last = by_write
        .iter()
        .filter_map(|(revision, (_, last))| {
            sent.get(revision)
                .map(|s| last.saturating_duration_since(*s))
        })
        .collect();
    let spread = by_write
        .values()
        .map(|(first, last)| last.saturating_duration_since(*first))
        .collect();
    let samples = |latencies| Samples { latencies, elapsed };
    Ok(FanOut {
        each: samples(each),
        last: samples(last),
        spread: samples(spread),
        rss_mib: None,
    })
}
