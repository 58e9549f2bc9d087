//! Ceilings: the same tonic stack and client shape doing (almost) nothing,
//! so each figure can be read as a share of what is possible here. Reads:
//! the registry's own `grpc.health.v1` Check (no catalog, no store).
//! Fan-out: an in-process tonic server whose only work is a health status
//! broadcast to as many watchers, one change at a time.

use std::sync::Arc;
use std::time::Instant;

use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::Sizes;
use crate::stats::{CpuSpent, FanOut, Heard, Receipts, Samples, concurrently, sent_to_receipt};

const SERVICE: &str = "switchyard.bench";

pub async fn health_client(url: &str) -> anyhow::Result<HealthClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await?;
    Ok(HealthClient::new(channel))
}

/// The registry's health Check, with the reads workload's clients and
/// count: the most a unary call on this stack can do here.
pub async fn reads(url: &str, sizes: Sizes) -> anyhow::Result<Samples> {
    let url = url.to_string();
    concurrently(sizes.clients, sizes.reads, move |_, share| {
        let url = url.clone();
        async move {
            let mut client = health_client(&url).await?;
            let mut latencies = Vec::with_capacity(share);
            for _ in 0..share {
                let started = Instant::now();
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                latencies.push(started.elapsed());
            }
            Ok(latencies)
        }
    })
    .await
}

/// `sizes.watchers` health watchers of an in-process server (over as many
/// connections as the fan-out workload uses), `sizes.flips` status changes,
/// each sent once every watcher has the previous one.
pub async fn fan_out(sizes: Sizes) -> anyhow::Result<FanOut> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let connections = (sizes.watchers / 50).max(1);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(health_client(&url).await?);
    }
    let heard = Arc::new(Heard::default());
    let mut watchers = Vec::new();
    for watcher in 0..sizes.watchers {
        let mut client = clients[watcher % connections].clone();
        let heard = Arc::clone(&heard);
        let flips = sizes.flips;
        watchers.push(tokio::spawn(async move {
            let request = HealthCheckRequest {
                service: SERVICE.into(),
            };
            let mut stream = client.watch(request).await?.into_inner();
            let mut received: Receipts = Vec::with_capacity(flips);
            // The first message is the status now: the watch is in place.
            stream.message().await?;
            heard.one();
            while received.len() < flips && stream.message().await?.is_some() {
                received.push((received.len() as u64 + 1, Instant::now()));
                heard.one();
            }
            anyhow::Ok(received)
        }));
    }
    let cpu = CpuSpent::start(None)?;
    let started = Instant::now();
    let mut sent = std::collections::HashMap::new();
    for flip in 1..=sizes.flips {
        heard.until(sizes.watchers * flip).await?;
        let status = if flip % 2 == 1 {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        sent.insert(flip as u64, Instant::now());
        reporter.set_service_status(SERVICE, status).await;
    }
    let fan_out = sent_to_receipt(watchers, &sent, started).await;
    server.abort();
    let mut fan_out = fan_out?;
    cpu.charge(&mut fan_out)?;
    Ok(fan_out)
}
