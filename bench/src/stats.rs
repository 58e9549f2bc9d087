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

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after ")".
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// What one watcher received: (revision, when).
pub type Receipts = Vec<(u64, std::time::Instant)>;

/// Receipts counted across every watcher of a fan-out, so that each write
/// goes out once every watcher has the one before: a flip is an isolated
/// event (a deploy flips once and waits), and the three fan-outs (ours,
/// etcd's, the ceiling's) are timed in the same shape. Waiting does not
/// spin: the receipt that completes a write wakes the writer.
#[derive(Default)]
pub struct Heard {
    count: std::sync::atomic::AtomicUsize,
    target: std::sync::atomic::AtomicUsize,
    reached: tokio::sync::Notify,
}

impl Heard {
    /// One watcher received one write.
    pub fn one(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let count = self.count.fetch_add(1, SeqCst) + 1;
        if count >= self.target.load(SeqCst) {
            self.reached.notify_waiters();
        }
    }

    /// Until `count` receipts in all; an error after a minute (a watcher
    /// stopped hearing), so a broken run ends instead of hanging.
    pub async fn until(&self, count: usize) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.target.store(count, SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            // Registered before looking, so a receipt in between still wakes.
            let reached = self.reached.notified();
            if self.count.load(SeqCst) >= count {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, reached).await.is_err() {
                anyhow::bail!(
                    "watchers stopped hearing: {} of {count} receipts after a minute",
                    self.count.load(SeqCst)
                );
            }
        }
    }
}

/// A fan-out as a user sees it: from each write being **sent** to each
/// watcher's receipt, to the last watcher's receipt of each write, and the
/// spread between the first and the last watcher of each write.
pub struct FanOut {
    pub each: Samples,
    pub last: Samples,
    pub spread: Samples,
    /// The server's resident memory with every watcher open (when asked).
    pub rss_mib: Option<f64>,
    /// CPU time per receipt, in microseconds, from the first write sent to
    /// the last receipt: the server's, and this process's (the watchers'
    /// client side; the ceiling's server runs in this process too).
    pub server_cpu_us: Option<f64>,
    pub client_cpu_us: f64,
}

/// CPU ticks (1/100 s) of a server and of this process, read before a
/// fan-out's writes and turned into microseconds per receipt after them.
pub struct CpuSpent {
    server: Option<(u32, u64)>,
    client: u64,
}

impl CpuSpent {
    pub fn start(server: Option<u32>) -> anyhow::Result<Self> {
        Ok(CpuSpent {
            server: server
                .map(|pid| cpu_ticks(pid).map(|ticks| (pid, ticks)))
                .transpose()?,
            client: cpu_ticks(std::process::id())?,
        })
    }

    /// The CPU spent since [`CpuSpent::start`], in microseconds per one of
    /// `count` operations: the server's (when it has a pid), this process's.
    pub fn per(self, count: usize) -> anyhow::Result<(Option<f64>, f64)> {
        let count = count.max(1) as f64;
        // Ticks of 1/100 s to microseconds.
        let per = |ticks: u64| ticks as f64 * 10_000.0 / count;
        let server = match self.server {
            Some((pid, before)) => Some(per(cpu_ticks(pid)?.saturating_sub(before))),
            None => None,
        };
        let client = per(cpu_ticks(std::process::id())?.saturating_sub(self.client));
        Ok((server, client))
    }

    /// Charges the CPU spent since [`CpuSpent::start`] to `fan_out`'s receipts.
    pub fn charge(self, fan_out: &mut FanOut) -> anyhow::Result<()> {
        (fan_out.server_cpu_us, fan_out.client_cpu_us) = self.per(fan_out.each.latencies.len())?;
        Ok(())
    }
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
        server_cpu_us: None,
        client_cpu_us: 0.0,
    })
}

/// The fan-out measured against its ceiling (the same watchers of a server
/// doing nothing but broadcast): each receipt's p99 and the last watcher's,
/// the spread, and ours as a multiple of each.
pub fn watch_ceiling_rows(ours: &FanOut, ceiling: &FanOut) -> Vec<(String, &'static str, f64)> {
    let mut rows = Vec::new();
    for (name, mine, theirs) in [
        ("", &ours.each, &ceiling.each),
        ("_last", &ours.last, &ceiling.last),
        ("_spread", &ours.spread, &ceiling.spread),
    ] {
        let p99 = theirs.percentile_ms(99.0);
        rows.push((format!("watch_ceiling{name}_p99"), "ms", p99));
        rows.push((
            format!("watch{name}_p99_vs_ceiling"),
            "x",
            mine.percentile_ms(99.0) / p99.max(0.01),
        ));
    }
    let ours = ours.server_cpu_us.unwrap_or(0.0) + ours.client_cpu_us;
    rows.push((
        "watch_ceiling_cpu_per_receipt".into(),
        "us",
        ceiling.client_cpu_us,
    ));
    rows.push((
        "watch_cpu_per_receipt_vs_ceiling".into(),
        "x",
        ours / ceiling.client_cpu_us.max(0.01),
    ));
    rows
}

/// CPU time per operation (`unit`: receipt, op) of `workload`: the
/// server's, and the client side's (this process), each beside etcd's.
pub fn cpu_rows(
    workload: &str,
    unit: &str,
    ours: (Option<f64>, f64),
    theirs: (Option<f64>, f64),
) -> Vec<Row> {
    vec![
        Row::lower_is_better(
            &format!("{workload}_server_cpu_per_{unit}"),
            "us",
            ours.0.unwrap_or(0.0),
            theirs.0.unwrap_or(0.0),
        ),
        Row::lower_is_better(
            &format!("{workload}_client_cpu_per_{unit}"),
            "us",
            ours.1,
            theirs.1,
        ),
    ]
}
