//! The cost of being watched: a registry holding 1,000 services and
//! 100,000 instances, scraped by Prometheus's rule (`GET /metrics`). How
//! long one scrape takes (anchored on etcd's own `/metrics`), and how much
//! read and write throughput a scrape every second takes away.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use switchyard_model::Instance;
use tokio_util::sync::CancellationToken;

use crate::Sizes;
use crate::registry::{self, Target};
use crate::stats::Samples;

/// Instances per SyncNode (one node's worth).
const PER_NODE: usize = 1000;

/// One keep-alive HTTP/1.1 connection to a metrics endpoint, as Prometheus
/// keeps one per target.
pub struct Scraper {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: String,
}

impl Scraper {
    pub async fn connect(address: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Scraper {
            sender,
            host: address.to_string(),
        })
    }

    /// One scrape: its time and the bytes of the answer.
    pub async fn scrape(&mut self) -> anyhow::Result<(Duration, usize)> {
        let started = Instant::now();
        let body = self.fetch().await?;
        Ok((started.elapsed(), body.len()))
    }

    /// One scrape's text.
    pub async fn body(&mut self) -> anyhow::Result<String> {
        let body = self.fetch().await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn fetch(&mut self) -> anyhow::Result<Bytes> {
        let request = hyper::Request::get("/metrics")
            .header(hyper::header::HOST, &self.host)
            .body(Empty::new())?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET /metrics: {}",
            response.status()
        );
        Ok(response.into_body().collect().await?.to_bytes())
    }
}

/// `scrapes` scrapes one after the other.
pub async fn scrape_times(address: &str, scrapes: usize) -> anyhow::Result<(Samples, usize)> {
    let mut scraper = Scraper::connect(address).await?;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let (took, size) = scraper.scrape().await?;
        latencies.push(took);
        bytes = size;
    }
    let elapsed = started.elapsed();
    Ok((Samples { latencies, elapsed }, bytes))
}

/// Loads `services` services with `instances` instances in all, spread
/// evenly, by SyncNode of [`PER_NODE`] instances per node.
pub async fn load(target: &Target, services: usize, instances: usize) -> anyhow::Result<()> {
    let client = target.client()?;
    for node in 0..instances.div_ceil(PER_NODE) {
        let name = format!("scrape-{node}");
        let (session, _) = client.open_session(&name, 3600).await?;
        let batch: Vec<Instance> = (0..PER_NODE.min(instances - node * PER_NODE))
            .map(|n| {
                let global = node * PER_NODE + n;
                let service = format!("svc-{:04}", global % services);
                let mut one = registry::instance(&service, &format!("i{global}"), n, Some(session));
                one.node = name.clone();
                one
            })
            .collect();
        client.sync_node(session, &name, &batch).await?;
    }
    Ok(())
}

/// Waits until a scrape shows `services` services (the registry's metrics
/// watch has caught up with the load).
pub async fn until_counted(address: &str, services: usize) -> anyhow::Result<()> {
    let wanted = format!("switchyard_services {services}\n");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut scraper = Scraper::connect(address).await?;
    while Instant::now() < deadline {
        if scraper.body().await?.contains(&wanted) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the registry's metrics never counted {services} services")
}

/// Scrapes every second until `stop`; answers how many scrapes were made.
async fn scrape_every_second(address: String, stop: CancellationToken) -> anyhow::Result<usize> {
    let mut scraper = Scraper::connect(&address).await?;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut count = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(count),
            _ = every.tick() => {}
        }
        scraper.scrape().await?;
        count += 1;
    }
}

/// Reads, then writes, on `target`, one round; `scraped`: with a scrape a
/// second meanwhile. Answers their throughputs.
async fn round(
    target: &Target,
    metrics: &str,
    sizes: Sizes,
    scraped: bool,
    tag: &str,
) -> anyhow::Result<(f64, f64)> {
    let stop = CancellationToken::new();
    let scraping =
        scraped.then(|| tokio::spawn(scrape_every_second(metrics.to_string(), stop.clone())));
    let reads = registry::reads(target, sizes).await?.throughput();
    let writes = registry::writes_tagged(target, sizes, tag)
        .await?
        .throughput();
    stop.cancel();
    if let Some(scraping) = scraping {
        anyhow::ensure!(
            scraping.await?? > 0,
            "no scrape happened during a scraped round"
        );
    }
    Ok((reads, writes))
}

/// Read and write throughput unscraped and with a scrape a second, in the
/// order quiet, scraped, scraped, quiet (so a steady drift of the machine
/// cancels out): answers (quiet, scraped) means for reads and for writes.
pub async fn throughput_under_scrape(
    target: &Target,
    metrics: &str,
    sizes: Sizes,
) -> anyhow::Result<[(f64, f64); 2]> {
    let half = Sizes {
        reads: sizes.reads / 2,
        writes: sizes.writes / 2,
        ..sizes
    };
    let mut quiet = (0.0, 0.0);
    let mut scraped = (0.0, 0.0);
    for (index, with_scrapes) in [false, true, true, false].into_iter().enumerate() {
        let (reads, writes) =
            round(target, metrics, half, with_scrapes, &format!("r{index}-")).await?;
        let sum = if with_scrapes {
            &mut scraped
        } else {
            &mut quiet
        };
        sum.0 += reads / 2.0;
        sum.1 += writes / 2.0;
    }
    Ok([(quiet.0, scraped.0), (quiet.1, scraped.1)])
}

/// Rows with an anchor (etcd's own `/metrics`), and rows without.
pub type Rows = (Vec<crate::stats::Row>, Vec<(String, &'static str, f64)>);

/// The scrape rows: load `sizes.services` services and `sizes.loaded`
/// instances into the registry at `target` (metrics at `metrics`), time
/// scrapes of it and of etcd's `/metrics` (`etcd_url`), then price a scrape
/// a second in read and write throughput.
pub async fn rows(
    target: &Target,
    metrics: &str,
    etcd_url: &str,
    sizes: Sizes,
) -> anyhow::Result<Rows> {
    load(target, sizes.services, sizes.loaded).await?;
    until_counted(metrics, sizes.services).await?;
    let (ours, bytes) = scrape_times(metrics, sizes.scrapes).await?;
    let etcd_address = etcd_url.trim_start_matches("http://").trim_end_matches('/');
    let (theirs, _) = scrape_times(etcd_address, sizes.scrapes).await?;
    let name = format!("scrape_{}_services", sizes.services);
    let anchored = vec![
        crate::stats::Row::lower_is_better(
            &format!("{name}_p50"),
            "ms",
            ours.percentile_ms(50.0),
            theirs.percentile_ms(50.0),
        ),
        crate::stats::Row::lower_is_better(
            &format!("{name}_p99"),
            "ms",
            ours.percentile_ms(99.0),
            theirs.percentile_ms(99.0),
        ),
    ];
    let [(quiet_reads, scraped_reads), (quiet_writes, scraped_writes)] =
        throughput_under_scrape(target, metrics, sizes).await?;
    let cost = |quiet: f64, scraped: f64| 100.0 * (1.0 - scraped / quiet.max(1e-9));
    let single = vec![
        (format!("{name}_bytes"), "KiB", bytes as f64 / 1024.0),
        (
            "reads_scraped_cost".to_string(),
            "%",
            cost(quiet_reads, scraped_reads),
        ),
        (
            "writes_scraped_cost".to_string(),
            "%",
            cost(quiet_writes, scraped_writes),
        ),
    ];
    Ok((anchored, single))
}
