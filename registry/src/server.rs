//! Assembles store, catalog and API into a running server: opens the store,
//! serves gRPC (plus `grpc.health.v1` and reflection) on a bound listener,
//! and on shutdown reports NOT_SERVING, ends streams, drains with a timeout
//! and closes the store so everything is flushed.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchyard_proto::v1::registry_server::RegistryServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::api::RegistryApi;
use crate::catalog::{Catalog, CatalogConfig};
use crate::store::Store;
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::sled::{SledConfig, SledStore};

/// The gRPC service name health checks ask for.
pub const SERVICE_NAME: &str = "switchyard.v1.Registry";
/// Largest response (e.g. one snapshot part) the server sends.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest request the transport decodes at all. The documented limit
/// (`MAX_REQUEST_BYTES`, 4 MiB) is enforced per call in `api`, so that a
/// request between the two is answered INVALID_ARGUMENT naming the limit;
/// beyond this one the transport itself refuses it (OUT_OF_RANGE).
const TRANSPORT_REQUEST_LIMIT: usize = 64 * 1024 * 1024;

/// Which store backs the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// sled in `data_dir`.
    Sled,
    /// An etcd cluster.
    Etcd { endpoints: Vec<String> },
}

/// Everything a registry server needs; tests build it directly.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub store: StoreChoice,
    pub data_dir: PathBuf,
    pub history_revisions: u64,
    pub watch_buffer: usize,
    /// sled's page cache, in bytes.
    pub sled_cache_bytes: u64,
    pub progress_interval: Duration,
    pub drain_timeout: Duration,
}

impl ServerConfig {
    /// Defaults for a data directory, as the flags have them.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            store: StoreChoice::Sled,
            data_dir: data_dir.into(),
            history_revisions: 100_000,
            watch_buffer: 1024,
            sled_cache_bytes: 8 * 1024 * 1024,
            progress_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Opens the configured store.
pub async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    if let StoreChoice::Etcd { endpoints } = &config.store {
        let store = EtcdStore::connect(EtcdConfig {
            endpoints: endpoints.clone(),
            connect_timeout: Duration::from_secs(5),
        })
        .await?;
        return Ok(Arc::new(store));
    }
    let mut sled = SledConfig::new(config.data_dir.clone());
    sled.history_revisions = config.history_revisions;
    sled.watch_buffer = config.watch_buffer;
    sled.cache_bytes = config.sled_cache_bytes;
    let store = tokio::task::spawn_blocking(move || SledStore::open(sled))
        .await
        .context("opening the store")??;
    Ok(Arc::new(store))
}

/// Serves on `listener` until `shutdown` completes, then drains and closes.
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = open_store(&config)
        .await
        .with_context(|| match &config.store {
            StoreChoice::Sled => format!("opening the store in {}", config.data_dir.display()),
            StoreChoice::Etcd { endpoints } => {
                format!("connecting to etcd at {}", endpoints.join(","))
            }
        })?;
    let catalog = Catalog::new(
        Arc::clone(&store),
        CatalogConfig {
            progress_interval: config.progress_interval,
            ..CatalogConfig::default()
        },
    );
    let streams_end = CancellationToken::new();
    let api = RegistryApi::new(catalog, streams_end.clone(), config.watch_buffer);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%address, store = ?config.store, data_dir = %config.data_dir.display(), "cd-registry listening");

    let registry = RegistryServer::new(api)
        .max_decoding_message_size(TRANSPORT_REQUEST_LIMIT)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(registry)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => {
            result.context("serving gRPC")?;
        }
        () = shutdown => {
            tracing::info!("shutting down: draining clients");
            health.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
            health.set_service_status("", ServingStatus::NotServing).await;
            streams_end.cancel();
            let _ = stop_accepting.send(());
            match tokio::time::timeout(config.drain_timeout, &mut server).await {
                Ok(result) => result.context("draining gRPC")?,
                Err(_) => tracing::warn!(
                    timeout = ?config.drain_timeout,
                    "clients still connected after the drain timeout; closing them"
                ),
            }
        }
    }
    store.close().await.context("closing the store")?;
    tracing::info!("store closed; bye");
    Ok(())
}
