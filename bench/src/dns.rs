//! The DNS rows: queries answered per second over UDP on loopback, and
//! their latency, by clients that each send one query and wait for its
//! answer (closed loop), against the registry that also holds the scrape
//! rows' 1,000 services. The question is A for a service with 10 live
//! instances. The ceiling is the same server asked a name outside its zone:
//! the same parse, a REFUSED answer encoded, no lookup: what answering
//! costs when the view costs nothing. etcd has no DNS, so no ratio.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchyard_model::Color;

use crate::registry::{Target, instance};
use crate::stats::{Samples, concurrently};

const SERVICE: &str = "bench-dns";

/// A DNS query for `name` type A, id `id`, recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// `total` queries for `name` from `clients` UDP clients; each answer must
/// carry the query's id and the response code `rcode`.
async fn ask(
    server: SocketAddr,
    name: &str,
    rcode: u8,
    clients: usize,
    total: usize,
) -> anyhow::Result<Samples> {
    let name = name.to_string();
    concurrently(clients, total, move |client, share| {
        let name = name.clone();
        async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(server).await?;
            let mut latencies = Vec::with_capacity(share);
            let mut answer = vec![0u8; 4096];
            for n in 0..share {
                let id = (client * 7919 + n) as u16;
                let started = Instant::now();
                socket.send(&query(id, &name)).await?;
                let read = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut answer))
                    .await
                    .context("a DNS answer did not come within 2 s (UDP on loopback)")??;
                anyhow::ensure!(
                    read >= 12 && answer[..2] == id.to_be_bytes() && answer[3] & 0x0f == rcode,
                    "unexpected DNS answer {:?}",
                    &answer[..read.min(16)]
                );
                latencies.push(started.elapsed());
            }
            Ok(latencies)
        }
    })
    .await
}

/// What the DNS workload measured.
pub struct DnsFigures {
    pub answered: Samples,
    pub ceiling: Samples,
}

/// Registers a service of 10 live instances on `target`, then asks
/// `server` for it, and for a name outside the zone (the ceiling).
pub async fn measure(
    target: &Target,
    server: SocketAddr,
    clients: usize,
    total: usize,
) -> anyhow::Result<DnsFigures> {
    let registry = target.client()?;
    for n in 0..10 {
        let one = instance(SERVICE, &format!("d{n}"), n, None);
        registry.register(&one, None).await?;
    }
    registry
        .set_active_color(SERVICE, Some(Color::Blue), None, 0)
        .await?;
    let name = format!("{SERVICE}.service.switchyard");
    // Until the DNS view has the service (it follows the catalog's watch,
    // which may still be working through the scrape rows' writes).
    let started = Instant::now();
    loop {
        match ask(server, &name, 0, 1, 1).await {
            Ok(_) => break,
            Err(error) if started.elapsed() > Duration::from_secs(60) => {
                anyhow::bail!("DNS never answered {name}: {error:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    eprintln!("dns: view ready after {:?}", started.elapsed());
    let answered = ask(server, &name, 0, clients, total).await?;
    let ceiling = ask(server, "bench.example", 5, clients, total).await?;
    Ok(DnsFigures { answered, ceiling })
}
