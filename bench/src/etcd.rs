//! The same workloads against etcd: puts of records the size of an
//! instance, each client with its own lease (as each agent has its own
//! session), serializable prefix reads, watchers on one key.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};

use crate::Sizes;
use crate::stats::{CpuSpent, FanOut, Heard, Samples, concurrently, sent_to_receipt};

/// The size of the registry's stored instance record (binary, about 70
/// bytes for the bench's instances: see the registry's `catalog::record`).
fn record(n: usize) -> Vec<u8> {
    let mut bytes = format!("{{\"id\":\"{n}\",\"padding\":\"").into_bytes();
    bytes.resize(68, b'x');
    bytes.extend_from_slice(b"\"}");
    bytes
}

pub async fn writes(url: &str, sizes: Sizes) -> anyhow::Result<Samples> {
    let url = url.to_string();
    concurrently(sizes.clients, sizes.writes, move |client, share| {
        let url = url.clone();
        async move {
            let mut etcd = Client::connect([url], None).await?;
            let lease = etcd.lease_grant(600, None).await?.id();
            let mut latencies = Vec::with_capacity(share);
            for n in 0..share {
                let started = Instant::now();
                etcd.put(
                    format!("/bench/w/{client}/{n}"),
                    record(n),
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await?;
                latencies.push(started.elapsed());
            }
            Ok(latencies)
        }
    })
    .await
}

pub async fn reads(url: &str, sizes: Sizes) -> anyhow::Result<Samples> {
    let mut etcd = Client::connect([url], None).await?;
    for n in 0..10 {
        etcd.put(format!("/bench/r/{n}"), record(n), None).await?;
    }
    let url = url.to_string();
    concurrently(sizes.clients, sizes.reads, move |_, share| {
        let url = url.clone();
        async move {
            let mut etcd = Client::connect([url], None).await?;
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let started = Instant::now();
                let options = GetOptions::new().with_prefix().with_serializable();
                let response = etcd.get("/bench/r/", Some(options)).await?;
                anyhow::ensure!(response.kvs().len() == 10, "expected 10 records");
                latencies.push(started.elapsed());
            }
            Ok(latencies)
        }
    })
    .await
}

pub async fn fan_out(url: &str, sizes: Sizes, pid: Option<u32>) -> anyhow::Result<FanOut> {
    let key = format!("/bench/f{}", sizes.watchers);
    let mut writer = Client::connect([url], None).await?;
    writer.put(key.as_str(), "blue", None).await?;
    let ready = Arc::new(AtomicUsize::new(0));
    let heard = Arc::new(Heard::default());
    let connections = (sizes.watchers / 50).max(1);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Client::connect([url], None).await?);
    }
    let mut watchers = Vec::new();
    for watcher in 0..sizes.watchers {
        let mut client = clients[watcher % connections].clone();
        let ready = Arc::clone(&ready);
        let heard = Arc::clone(&heard);
        let key = key.clone();
        let flips = sizes.flips;
        watchers.push(tokio::spawn(async move {
            let mut received: Vec<(u64, Instant)> = Vec::with_capacity(flips);
            let mut stream = client.watch(key.as_str(), None).await?;
            // The "created" answer: the watch is in place.
            stream.message().await?;
            ready.fetch_add(1, Ordering::SeqCst);
            while received.len() < flips {
                let Some(response) = stream.message().await? else {
                    break;
                };
                let at = Instant::now();
                for event in response.events() {
                    if let Some(kv) = event.kv() {
                        received.push((u64::try_from(kv.mod_revision()).unwrap_or(0), at));
                        heard.one();
                    }
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
    for flip in 0..sizes.flips {
        heard.until(sizes.watchers * flip).await?;
        let color = if flip % 2 == 0 { "green" } else { "blue" };
        let sent_at = Instant::now();
        let response = writer.put(key.as_str(), color, None).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        sent.insert(u64::try_from(revision).unwrap_or(0), sent_at);
    }
    let mut fan_out = sent_to_receipt(watchers, &sent, started).await?;
    cpu.charge(&mut fan_out)?;
    fan_out.rss_mib = rss;
    Ok(fan_out)
}

/// Loads `count` records in transactions of 100 puts.
pub async fn load(url: &str, count: usize) -> anyhow::Result<()> {
    let mut etcd = Client::connect([url], None).await?;
    for batch in 0..count.div_ceil(100) {
        let ops: Vec<TxnOp> = (batch * 100..((batch + 1) * 100).min(count))
            .map(|n| TxnOp::put(format!("/bench/m/{n}"), record(n), None))
            .collect();
        etcd.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}
