//! The agent row: how long from `docker run` to the instance in the
//! registry (the agent's whole path: event, inspect, SyncNode), and the
//! agent's own footprint while idle. etcd has no counterpart here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use switchyard_model::labels::{label, meta};
use switchyard_model::watch::{Change, WatchEvent};

use crate::stats::{Samples, cpu_ticks, rss_mib};

pub struct AgentFigures {
    pub start_to_visible: Samples,
    /// From Docker's own `start` event (its `timeNano`) to the instance on
    /// a watch stream: the agent's share of the path.
    pub event_to_visible: Samples,
    pub idle_rss_mib: f64,
    pub idle_cpu_percent: f64,
}

const SERVICE: &str = "bench-agent";

/// Starts `containers` containers of `image` with `label`, one after the
/// other, and times each until the registry lists it.
pub async fn measure(
    registry: &crate::registry::Target,
    image: &str,
    label: &str,
    agent_pid: u32,
    containers: usize,
) -> anyhow::Result<AgentFigures> {
    let client = registry.client()?;
    let seen: Arc<Mutex<HashMap<String, (Instant, SystemTime)>>> = Arc::default();
    let events = DockerEvents::start(label)?;
    let stream = client.watch(&[SERVICE.to_string()], 0).await?;
    let watcher = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Changes { changes, .. } = event {
                    let at = (Instant::now(), SystemTime::now());
                    for change in changes {
                        if let Change::InstanceUpdated(instance) = change
                            && let Some(id) = instance.metadata.get(meta::CONTAINER_ID)
                            && let Ok(mut seen) = seen.lock()
                        {
                            seen.entry(id.clone()).or_insert(at);
                        }
                    }
                }
            }
        })
    };
    let started = start_containers(image, label, containers).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = seen
            .lock()
            .map(|seen| started.keys().all(|id| seen.contains_key(id)))
            .unwrap_or(false);
        if done {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the agent did not register every container in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
    let seen = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
    let latencies = started
        .iter()
        .filter_map(|(id, before)| {
            seen.get(id)
                .map(|(at, _)| at.saturating_duration_since(*before))
        })
        .collect();
    let start_to_visible = Samples {
        latencies,
        elapsed: Duration::from_secs(1),
    };
    let started_at = events.stop().await;
    let latencies: Vec<Duration> = started
        .keys()
        .filter_map(|id| {
            let (_, wall) = seen.get(id)?;
            wall.duration_since(*started_at.get(id)?).ok()
        })
        .collect();
    anyhow::ensure!(
        latencies.len() == started.len(),
        "Docker reported {} of {} start events",
        latencies.len(),
        started.len()
    );
    let event_to_visible = Samples {
        latencies,
        elapsed: Duration::from_secs(1),
    };

    // Idle: no container changes for a while, then ten seconds measured.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_ticks(agent_pid)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu_after = cpu_ticks(agent_pid)?;
    // Linux reports CPU time in clock ticks of 1/100 s.
    let idle_cpu_percent = (cpu_after - cpu_before) as f64 / 100.0 / 10.0 * 100.0;
    Ok(AgentFigures {
        start_to_visible,
        event_to_visible,
        idle_rss_mib: rss_mib(agent_pid)?,
        idle_cpu_percent,
    })
}

/// Starts `containers` containers of `image`, one after the other;
/// answers each one's id with the moment before its `docker run`.
async fn start_containers(
    image: &str,
    label: &str,
    containers: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut started: HashMap<String, Instant> = HashMap::new();
    let service_label = format!("{}={SERVICE}", label::SERVICE);
    for _ in 0..containers {
        let before = Instant::now();
        let output = tokio::process::Command::new("docker")
            .args([
                "run",
                "-d",
                "-l",
                label,
                "-l",
                &service_label,
                "-p",
                "127.0.0.1::80",
                image,
            ])
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "docker run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        started.insert(
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            before,
        );
    }
    Ok(started)
}

/// `docker events` for the `start` of containers with `label`, read in the
/// background: each container's start time as Docker stamped it.
struct DockerEvents {
    child: tokio::process::Child,
    reader: tokio::task::JoinHandle<HashMap<String, SystemTime>>,
}

impl DockerEvents {
    fn start(label: &str) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        // From a second ago: Docker replays what it has since, so a start
        // before the subscription is in place is still reported.
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .saturating_sub(Duration::from_secs(1));
        let mut child = tokio::process::Command::new("docker")
            .arg("events")
            .arg(format!(
                "--since={}.{:09}",
                since.as_secs(),
                since.subsec_nanos()
            ))
            .args(["--filter", "event=start", "--filter"])
            .arg(format!("label={label}"))
            .args(["--format", "{{.ID}} {{.TimeNano}}"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("docker events has no stdout"))?;
        let reader = tokio::spawn(async move {
            let mut starts = HashMap::new();
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.split_whitespace();
                let (Some(id), Some(nanos)) = (words.next(), words.next()) else {
                    continue;
                };
                if let Ok(nanos) = nanos.parse::<u64>() {
                    starts.insert(
                        id.to_string(),
                        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
                    );
                }
            }
            starts
        });
        Ok(DockerEvents { child, reader })
    }

    /// Stops reading; answers the start times seen, by container id.
    async fn stop(mut self) -> HashMap<String, SystemTime> {
        let _ = self.child.kill().await;
        self.reader.await.unwrap_or_default()
    }
}
