//! The registry's metrics (`--metrics-listen`, `GET /metrics`): gRPC calls
//! ([`grpc`]), what the catalog holds ([`catalog`]), the store and watch
//! streams ([`store`]), in the Prometheus text format by `prometheus-client`.
//!
//! **Architecture Invariant:** a scrape reads only memory. The catalog's
//! figures are kept current by a watcher and a sampler that run beside the
//! API, and the gRPC figures are atomics; nothing a write waits on is ever
//! locked by a scrape.

pub mod catalog;
pub mod grpc;
mod methods;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use catalog::{CatalogCollector, CatalogFigures};
pub use grpc::{GrpcLayer, GrpcMetrics};
pub use methods::KnownMethods;

/// How often sessions, locks and proxies are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Per-service series, at most, by default (`--metrics-max-services`).
pub const DEFAULT_MAX_SERVICES: usize = 1000;

/// Everything the registry exposes, and the handles that fill it.
pub struct RegistryMetrics {
    pub registry: Arc<Registry>,
    pub grpc: GrpcMetrics,
    figures: Arc<Mutex<CatalogFigures>>,
}

impl RegistryMetrics {
    /// `served`: the gRPC methods the server routes, the only ones counted
    /// by name.
    pub fn new(max_services: usize, catalog: &Catalog, served: KnownMethods) -> Self {
        let mut registry = Registry::default();
        let grpc = GrpcMetrics::register(&mut registry, served);
        registry.register_collector(Box::new(store::StoreCollector {
            stats: catalog.store_stats(),
            watches: catalog.watch_counters(),
        }));
        let figures = Arc::new(Mutex::new(CatalogFigures::default()));
        registry.register_collector(Box::new(CatalogCollector {
            figures: Arc::clone(&figures),
            max_services,
        }));
        RegistryMetrics {
            registry: Arc::new(registry),
            grpc,
            figures,
        }
    }

    /// Keeps the catalog's figures current until `stop`.
    pub fn follow(&self, catalog: Catalog, stop: CancellationToken) {
        tokio::spawn(watch(
            catalog.clone(),
            Arc::clone(&self.figures),
            stop.clone(),
        ));
        tokio::spawn(follow_deploys(
            catalog.clone(),
            Arc::clone(&self.figures),
            stop.clone(),
        ));
        tokio::spawn(sample(catalog, Arc::clone(&self.figures), stop));
    }
}

/// Keeps the deploy figures from the deployment records: read once, then
/// followed write by write (a record is read again only when it changes);
/// after an error, read again.
async fn follow_deploys(
    catalog: Catalog,
    figures: Arc<Mutex<CatalogFigures>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let followed = async {
            let (revision, records) = catalog.deployment_records().await?;
            if let Ok(mut figures) = figures.lock() {
                figures.load_deploys(&records);
            }
            drop(records);
            let changes = catalog.deployment_changes(revision).await?;
            let mut changes = std::pin::pin!(changes);
            while let Some(item) = changes.next().await {
                let (_, changed) = item?;
                if let Ok(mut figures) = figures.lock() {
                    figures.apply_deploys(changed);
                }
            }
            Ok::<(), crate::catalog::CatalogError>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            result = followed => if let Err(error) = result {
                tracing::warn!(%error, "metrics cannot follow the deployment records; reading them again");
            },
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The catalog's watch of every service into `figures`.
async fn watch(catalog: Catalog, figures: Arc<Mutex<CatalogFigures>>, stop: CancellationToken) {
    catalog
        .follow_services(stop, "metrics", |event| {
            if let Ok(mut figures) = figures.lock() {
                figures.apply(event);
            }
        })
        .await;
}

/// Reads the catalog's bookkeeping every [`SAMPLE_EVERY`] into `figures`.
async fn sample(catalog: Catalog, figures: Arc<Mutex<CatalogFigures>>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        match catalog.stats().await {
            Ok(stats) => {
                if let Ok(mut figures) = figures.lock() {
                    figures.set_stats(stats);
                }
            }
            Err(error) => tracing::warn!(%error, "metrics cannot read the catalog's figures"),
        }
    }
}
