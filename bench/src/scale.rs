//! The scale rows: a registry of its own, started here, loaded with
//! 1,000,000 instances (1,000 services, 1,000 nodes' SyncNode): its
//! resident memory, the time a snapshot of that state takes, writes'
//! p99 while it is written against writes' p99 outside it, and the time
//! to open the data directory again after a restart. etcd has no
//! counterpart run here, so these rows have no ratio.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;

use crate::registry::{self, Target};
use crate::scrape::{self, Scraper};
use crate::stats::{self, Samples};

/// The store's snapshot histogram, as the registry exports it.
const SNAPSHOT_METRIC: &str = "switchyard_store_snapshot_duration_seconds";
/// How often the snapshot histogram is read while writes run.
const POLL: Duration = Duration::from_millis(10);
/// Services the instances are spread over.
const SERVICES: usize = 1000;
/// Instances each write client re-registers in turn (so the state stays
/// the size it was loaded to).
const ROTATION: usize = 50;

/// What the scale run is given.
pub struct Setup<'a> {
    pub bin: &'a Path,
    pub dir: PathBuf,
    pub options: switchyard_client::ClientOptions,
    pub instances: usize,
    pub clients: usize,
    /// `--history-revisions` for the registry, when not its default: the
    /// smoke run makes a snapshot due after a few hundred writes.
    pub history_revisions: Option<u64>,
}

/// A cd-registry child process on free loopback ports.
struct Running {
    child: Child,
    target: Target,
    metrics: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the registry on `setup.dir` and waits until it answers; also
/// answers how long that took (opening the data directory included).
async fn start(setup: &Setup<'_>) -> anyhow::Result<(Running, Duration)> {
    let (port, metrics_port) = (free_port()?, free_port()?);
    let mut command = Command::new(setup.bin);
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--ui", "off", "--log", "warn"])
        .arg("--data-dir")
        .arg(&setup.dir)
        .kill_on_drop(true);
    if let Some(revisions) = setup.history_revisions {
        command.args(["--history-revisions", &revisions.to_string()]);
    }
    let started = Instant::now();
    let mut child = command.spawn()?;
    let target = Target {
        url: format!("http://127.0.0.1:{port}"),
        options: setup.options.clone(),
    };
    let deadline = started + Duration::from_secs(300);
    // Ready as a probe sees it: the health service says SERVING (a
    // ListServices would read every instance, and its own cost would
    // show in the memory figures).
    let serving = HealthCheckRequest {
        service: String::new(),
    };
    loop {
        let answered = match crate::ceiling::health_client(&target.url).await {
            Ok(mut client) => client
                .check(serving.clone())
                .await
                .is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32),
            Err(_) => false,
        };
        if answered {
            break;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the scale registry exited ({status}) before answering");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the scale registry did not answer"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let opened = started.elapsed();
    let running = Running {
        child,
        target,
        metrics: format!("127.0.0.1:{metrics_port}"),
    };
    Ok((running, opened))
}

/// Stops the registry as a service manager does (SIGTERM) and waits for it.
async fn stop(mut running: Running) -> anyhow::Result<()> {
    if let Some(pid) = running.child.id() {
        Command::new("kill").arg(pid.to_string()).status().await?;
    }
    tokio::time::timeout(Duration::from_secs(60), running.child.wait()).await??;
    Ok(())
}

/// The snapshot histogram's (count, sum in seconds), from one scrape.
async fn snapshots(scraper: &mut Scraper) -> anyhow::Result<(u64, f64)> {
    let text = scraper.body().await?;
    let value = |suffix: &str| {
        text.lines()
            .find(|line| {
                line.strip_prefix(SNAPSHOT_METRIC)
                    .is_some_and(|rest| rest.starts_with(suffix))
            })
            .and_then(|line| line.split_whitespace().last())
            .and_then(|number| number.parse::<f64>().ok())
    };
    let (Some(count), Some(sum)) = (value("_count"), value("_sum")) else {
        anyhow::bail!("no {SNAPSHOT_METRIC} in the registry's metrics");
    };
    Ok((count as u64, sum))
}

/// One write, timed: when it was sent and how long it took.
type Timed = (Instant, Duration);

/// Re-registers instances from `clients` tasks until `stop`.
async fn write_until(
    target: Target,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Timed>> {
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (target, stop) = (target.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let registry = target.client()?;
            let mut timed = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("scale-w{client}-{}", n % ROTATION);
                let mut one = registry::instance("scale-writes", &id, n, None);
                // A new port each time, so every write is a change.
                one.port = 1024 + (n % 60_000) as u16;
                let sent = Instant::now();
                registry.register(&one, None).await?;
                timed.push((sent, sent.elapsed()));
                n += 1;
            }
            anyhow::Ok(timed)
        }));
    }
    // A failed write fails the row: no client's samples are dropped.
    let mut timed = Vec::new();
    for task in tasks {
        timed.extend(task.await??);
    }
    Ok(timed)
}

/// Writes until one snapshot has been written (and a second after), then
/// answers the snapshot's duration and the writes sent during it and
/// outside it.
async fn writes_around_a_snapshot(
    running: &Running,
    clients: usize,
) -> anyhow::Result<(Duration, Samples, Samples)> {
    let mut scraper = Scraper::connect(&running.metrics).await?;
    let (count, sum) = snapshots(&mut scraper).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers = tokio::spawn(write_until(
        running.target.clone(),
        clients,
        Arc::clone(&stop),
    ));
    let deadline = started + Duration::from_secs(180);
    let (ended, took) = loop {
        tokio::time::sleep(POLL).await;
        let (now_count, now_sum) = snapshots(&mut scraper).await?;
        if now_count > count {
            let took = (now_sum - sum) / (now_count - count) as f64;
            break (Instant::now(), Duration::from_secs_f64(took.max(0.0)));
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            anyhow::bail!("no snapshot was written within 180 s of writes");
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let timed = writers.await??;
    let elapsed = started.elapsed();
    // The snapshot ended between the last two polls.
    let began = ended.checked_sub(took + POLL).unwrap_or(started);
    let (during, outside): (Vec<Timed>, Vec<Timed>) = timed
        .into_iter()
        .partition(|(sent, latency)| *sent + *latency >= began && *sent <= ended);
    let samples = |timed: Vec<Timed>| Samples {
        latencies: timed.into_iter().map(|(_, latency)| latency).collect(),
        elapsed,
    };
    Ok((took, samples(during), samples(outside)))
}

/// The scale rows.
pub async fn rows(setup: Setup<'_>) -> anyhow::Result<Vec<(String, &'static str, f64)>> {
    let (running, _) = start(&setup).await?;
    let loading = Instant::now();
    scrape::load(&running.target, SERVICES, setup.instances).await?;
    let load_seconds = loading.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = running.child.id().unwrap_or_default();
    let rss = stats::rss_mib(pid)?;
    let (snapshot, during, outside) = writes_around_a_snapshot(&running, setup.clients).await?;
    stop(running).await?;
    let (reopened, opened) = start(&setup).await?;
    let pid = reopened.child.id().unwrap_or_default();
    let rss_reopened = stats::rss_mib(pid)?;
    // Its metrics follower has read every service: the peak of the restart
    // (every follower asking for a snapshot at once) is behind it.
    // (The loaded services and the one the writes went to.)
    scrape::until_counted(&reopened.metrics, SERVICES + 1).await?;
    let peak_reopened = stats::peak_rss_mib(pid)?;
    stop(reopened).await?;
    let n = setup.instances;
    Ok(vec![
        (format!("scale_{n}_load"), "s", load_seconds),
        (format!("scale_{n}_rss"), "MiB", rss),
        (
            format!("scale_{n}_snapshot"),
            "ms",
            snapshot.as_secs_f64() * 1e3,
        ),
        (
            format!("scale_{n}_writes_during_snapshot"),
            "ops",
            during.latencies.len() as f64,
        ),
        (
            format!("scale_{n}_write_p99_during_snapshot"),
            "ms",
            during.percentile_ms(99.0),
        ),
        (
            format!("scale_{n}_write_p99_outside_snapshot"),
            "ms",
            outside.percentile_ms(99.0),
        ),
        (
            format!("scale_{n}_open_after_restart"),
            "ms",
            opened.as_secs_f64() * 1e3,
        ),
        (format!("scale_{n}_rss_after_restart"), "MiB", rss_reopened),
        (
            format!("scale_{n}_peak_rss_after_restart"),
            "MiB",
            peak_reopened,
        ),
    ])
}
