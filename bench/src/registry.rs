//! The workloads against the Switchyard registry, through its gRPC API as
//! agents and proxies use it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_client::{ClientOptions, RegistryClient};
use switchyard_model::labels::meta;
use switchyard_model::watch::{Change, WatchEvent};
use switchyard_model::{Color, Health, Instance};

use crate::Sizes;
use crate::stats::{CpuSpent, FanOut, Heard, Samples, concurrently, sent_to_receipt};

pub fn instance(service: &str, id: &str, n: usize, session: Option<u64>) -> Instance {
    Instance {
        id: id.to_string(),
        service: service.to_string(),
        color: Some(Color::Blue),
        node: String::new(),
        address: std::net::Ipv4Addr::new(10, 0, (n / 250 % 250) as u8, (n % 250) as u8 + 1).into(),
        port: 8080,
        tags: vec!["bench".into()],
        metadata: [(meta::IMAGE.to_string(), "bench:1".to_string())].into(),
        health: Health::Passing,
        session,
        create_revision: 0,
        mod_revision: 0,
    }
}

/// A registry and how to reach it (TLS, a token), so the same workload
/// runs against a plain registry and one with `--auth` and TLS.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub options: ClientOptions,
}

impl Target {
    pub fn client(&self) -> anyhow::Result<RegistryClient> {
        Ok(RegistryClient::with_options(&self.url, &self.options)?)
    }
}

pub async fn writes(target: &Target, sizes: Sizes) -> anyhow::Result<Samples> {
    writes_tagged(target, sizes, "").await
}

/// [`writes`] with `tag` in every session's node and instance id, so the
/// workload can run again on the same registry.
pub async fn writes_tagged(target: &Target, sizes: Sizes, tag: &str) -> anyhow::Result<Samples> {
    let target = target.clone();
    let tag = tag.to_string();
    concurrently(sizes.clients, sizes.writes, move |client, share| {
        let target = target.clone();
        let tag = tag.clone();
        async move {
            let registry = target.client()?;
            let (session, _) = registry
                .open_session(&format!("bench-{tag}{client}"), 600)
                .await?;
            let mut latencies = Vec::with_capacity(share);
            for n in 0..share {
                let one = instance("bench-w", &format!("w{tag}{client}-{n}"), n, Some(session));
                let started = Instant::now();
                registry.register(&one, Some(session)).await?;
                latencies.push(started.elapsed());
            }
            Ok(latencies)
        }
    })
    .await
}

pub async fn reads(target: &Target, sizes: Sizes) -> anyhow::Result<Samples> {
    let registry = target.client()?;
    for n in 0..10 {
        registry
            .register(&instance("bench-r", &format!("r{n}"), n, None), None)
            .await?;
    }
    let target = target.clone();
    concurrently(sizes.clients, sizes.reads, move |_, share| {
        let target = target.clone();
        async move {
            let registry = target.client()?;
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let started = Instant::now();
                let (_, service) = registry.get_service("bench-r").await?;
                anyhow::ensure!(service.instances.len() == 10, "expected 10 instances");
                latencies.push(started.elapsed());
            }
            Ok(latencies)
        }
    })
    .await
}

/// Flips the color `flips` times while `watchers` watch the service, each
/// flip once every watcher has the one before (as in a deploy); the
/// latency is from each flip being sent to each watcher's receipt. With
/// `pid`, also the registry's resident memory once every watcher is open,
/// and its CPU time per receipt.
pub async fn fan_out(target: &Target, sizes: Sizes, pid: Option<u32>) -> anyhow::Result<FanOut> {
    let registry = target.client()?;
    // One service per fan-out size, so each starts with no live color.
    let service = format!("bench-f{}", sizes.watchers);
    registry
        .register(&instance(&service, &format!("{service}-0"), 0, None), None)
        .await?;
    let ready = Arc::new(AtomicUsize::new(0));
    let heard = Arc::new(Heard::default());
    let connections = (sizes.watchers / 50).max(1);
    let clients: Vec<Arc<RegistryClient>> = (0..connections)
        .map(|_| target.client().map(Arc::new))
        .collect::<Result<_, _>>()?;
    let mut watchers = Vec::new();
    for watcher in 0..sizes.watchers {
        let client = Arc::clone(&clients[watcher % connections]);
        let ready = Arc::clone(&ready);
        let heard = Arc::clone(&heard);
        let service = service.clone();
        let flips = sizes.flips;
        watchers.push(tokio::spawn(async move {
            let mut received: Vec<(u64, Instant)> = Vec::with_capacity(flips);
            let stream = client.watch(std::slice::from_ref(&service), 0).await?;
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event? {
                    WatchEvent::Snapshot { complete: true, .. } => {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                    WatchEvent::Changes { revision, changes }
                        if changes
                            .iter()
                            .any(|c| matches!(c, Change::ServiceUpdated(_))) =>
                    {
                        received.push((revision, Instant::now()));
                        heard.one();
                        if received.len() == flips {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            anyhow::Ok(received)
        }));
    }
    while ready.load(Ordering::SeqCst) < sizes.watchers {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss = pid.map(crate::stats::rss_mib).transpose()?;
    let cpu = CpuSpent::start(pid)?;
    let started = Instant::now();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut current = None;
    for flip in 0..sizes.flips {
        heard.until(sizes.watchers * flip).await?;
        let next = Color::next(current);
        let sent_at = Instant::now();
        let revision = registry
            .set_active_color(&service, Some(next), current, 0)
            .await?;
        sent.insert(revision, sent_at);
        current = Some(next);
    }
    let mut fan_out = sent_to_receipt(watchers, &sent, started).await?;
    cpu.charge(&mut fan_out)?;
    fan_out.rss_mib = rss;
    Ok(fan_out)
}

/// Loads `count` instances (1000 per node, by SyncNode) for the memory figure.
pub async fn load(target: &Target, count: usize) -> anyhow::Result<()> {
    let registry = target.client()?;
    let per_node = 1000;
    for node in 0..count.div_ceil(per_node) {
        let name = format!("mem-{node}");
        let (session, _) = registry.open_session(&name, 3600).await?;
        let instances: Vec<Instance> = (0..per_node.min(count - node * per_node))
            .map(|n| {
                let mut one = instance("bench-m", &format!("m{node}-{n}"), n, Some(session));
                one.node = name.clone();
                one
            })
            .collect();
        registry.sync_node(session, &name, &instances).await?;
    }
    Ok(())
}
