//! Assembles store, catalog and API into a running server: opens the store,
//! serves gRPC (plus `grpc.health.v1` and reflection) on a bound listener
//! through the bounded accept loop of [`incoming`], and on shutdown reports
//! NOT_SERVING, ends streams, drains with a timeout and closes the store so
//! everything is flushed.

mod bootstrap;
mod idle;
mod incoming;
mod tls;

pub use bootstrap::SeedToken;

pub use tls::{Tls, TlsFiles};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchyard_proto::v1::registry_server::RegistryServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::api::{RegistryApi, WatchLimits};
use crate::auth::Authorizer;
use crate::catalog::{Catalog, CatalogConfig};
use crate::connection::{Authenticated, Peer};
use crate::metrics::{GrpcLayer, KnownMethods, RegistryMetrics};
use crate::store::etcd::{EtcdAccess, EtcdConfig, EtcdStore};
use crate::store::sled::{SledConfig, SledStore};
use crate::store::{Store, defaults};

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

/// What one client, or all of them together, may hold of the registry's
/// connections, streams and memory. README "Limits and hardening" lists
/// each with its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Of those, how many one source (IPv4 address or IPv6 /64) may hold.
    pub max_connections_per_source: usize,
    /// A connection with no call open this long is closed.
    pub idle_timeout: Duration,
    /// How long a new connection may take to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Concurrent HTTP/2 streams one connection may open.
    pub max_streams_per_connection: u32,
    /// Watch streams open at once, over all connections.
    pub max_watchers: usize,
    /// Of those, how many one principal (a token, a client certificate, or
    /// anyone without `--auth`) may hold.
    pub max_watchers_per_principal: usize,
    /// HTTP/2 pings on connections: an unanswered ping closes the connection.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// The metrics and dashboard listener.
    pub http: switchyard_program::http::HttpLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            // A host runs an agent and a few proxies; 256 leaves room for
            // many hosts behind one NAT address and still takes 16 sources
            // to fill every slot.
            max_connections_per_source: 256,
            // grpc-go's MaxConnectionIdle, which is off by default there;
            // our own clients hold a stream open or connect per command.
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            max_streams_per_connection: 1000,
            max_watchers: 10_000,
            // Proxies that share one reader token fit in a quarter; a
            // leaked token cannot lock the others out.
            max_watchers_per_principal: 2_500,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            http: switchyard_program::http::HttpLimits::default(),
        }
    }
}

/// Everything a registry server needs; tests build it directly.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub store: StoreChoice,
    /// Where to serve `GET /metrics`; none when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Services with series of their own in the metrics.
    pub metrics_max_services: usize,
    /// Whether the dashboard is served on the metrics listener.
    pub ui: crate::ui::UiMode,
    /// The DNS interface; off when `None`.
    pub dns: Option<crate::dns::DnsConfig>,
    pub data_dir: PathBuf,
    pub history_revisions: u64,
    pub watch_buffer: usize,
    /// sled's page cache, in bytes.
    pub sled_cache_bytes: u64,
    pub progress_interval: Duration,
    pub drain_timeout: Duration,
    /// Reports of proxies silent this long are removed.
    pub forget_proxies_after: Duration,
    pub limits: Limits,
    /// TLS on the listener; plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// Tokens and roles on every call (`--auth`).
    pub auth: bool,
    /// With `auth`: where to write an admin token made on first start.
    pub bootstrap_token_file: Option<PathBuf>,
    /// With `auth`: tokens made beforehand, accepted from the first start.
    pub seed_tokens: Vec<SeedToken>,
    /// With `auth`: when every admin token was revoked, make a new one into
    /// the (emptied) bootstrap token file.
    pub bootstrap_anew: bool,
    /// TLS and credentials towards etcd.
    pub etcd_access: EtcdAccess,
}

impl ServerConfig {
    /// Defaults for a data directory, as the flags have them.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            store: StoreChoice::Sled,
            metrics_listen: None,
            metrics_max_services: crate::metrics::DEFAULT_MAX_SERVICES,
            ui: crate::ui::UiMode::Auto,
            dns: None,
            data_dir: data_dir.into(),
            history_revisions: defaults::HISTORY_REVISIONS,
            watch_buffer: defaults::WATCH_BUFFER,
            sled_cache_bytes: defaults::SLED_CACHE_MIB * 1024 * 1024,
            progress_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            forget_proxies_after: Duration::from_secs(24 * 3600),
            limits: Limits::default(),
            tls: None,
            auth: false,
            bootstrap_token_file: None,
            seed_tokens: Vec::new(),
            bootstrap_anew: false,
            etcd_access: EtcdAccess::default(),
        }
    }
}

/// An interceptor that lets through only authenticated calls (all of
/// them with `--auth` off), before their bodies are read: tonic decodes a
/// request's message only after this returns, so a caller without a
/// credential never makes the registry buffer its body. Who the caller is
/// goes along in the extensions ([`Authenticated`]), for the API's own
/// checks.
fn credentials_required(
    auth: Authorizer,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut request: tonic::Request<()>| {
        let who = auth.authenticate(request.metadata(), request.extensions().get::<Peer>())?;
        request.extensions_mut().insert(Authenticated(who));
        Ok(request)
    }
}

/// The most header bytes one request may carry. HTTP/2's usual 16 KiB would
/// cut a long credential off at the transport with a bare 431 (gRPC
/// `UNKNOWN`); this lets a credential of up to 1 MiB reach the authorizer,
/// which answers `UNAUTHENTICATED` as it does for any bad one. Headers are
/// not flow-controlled, so this is also what one connection can make the
/// registry hold while a request is read (Go's gRPC allows 16 MiB).
const MAX_HEADER_LIST_BYTES: u32 = 1024 * 1024 + 64 * 1024;

/// Every service the server routes: the registry's API, health, and both
/// versions of reflection (what the metrics count by name).
const SERVED_DESCRIPTOR_SETS: [&[u8]; 4] = [
    switchyard_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// What server reflection describes: the registry's API and health.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Re-reads the TLS certificate and key on every SIGHUP until `stop`: new
/// handshakes get the new certificate, open connections keep theirs.
async fn reload_on_sighup(tls: Tls, stop: CancellationToken) {
    let hangup = tokio::signal::unix::SignalKind::hangup();
    let mut signals = match tokio::signal::unix::signal(hangup) {
        Ok(signals) => signals,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; certificates reload only on restart");
            return;
        }
    };
    loop {
        tokio::select! {
            received = signals.recv() => {
                if received.is_none() {
                    return;
                }
            }
            () = stop.cancelled() => return,
        }
        match tls.reload() {
            Ok(()) => {
                tracing::info!("SIGHUP: TLS certificate, client CA and revocation lists reloaded")
            }
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "SIGHUP: the TLS files could not be reloaded; still serving with the old ones"
            ),
        }
    }
}

/// Descriptors the registry needs besides its connections: the store's
/// files, the listener, etcd connections, logs.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The connections the registry can really hold: `--max-connections`, or
/// fewer when the descriptor limit is lower (then it warns), so that the
/// accept loop refuses the extra connections politely instead of failing
/// to accept at all.
fn effective_max_connections(max_connections: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let Some(soft) = limit.current else {
        return max_connections;
    };
    let needed = (max_connections as u64).saturating_add(RESERVED_DESCRIPTORS);
    if soft >= needed {
        return max_connections;
    }
    let usable = usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS).max(1))
        .unwrap_or(max_connections);
    tracing::warn!(
        descriptor_limit = soft,
        max_connections,
        serving_at_most = usable,
        "the descriptor limit is below --max-connections + {RESERVED_DESCRIPTORS}: raise it \
         (LimitNOFILE=, ulimit -n) or lower --max-connections"
    );
    usable
}

/// Opens the configured store; errors name the directory or endpoints.
pub async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    if let StoreChoice::Etcd { endpoints } = &config.store {
        let store = EtcdStore::connect(EtcdConfig {
            endpoints: endpoints.clone(),
            connect_timeout: Duration::from_secs(5),
            access: config.etcd_access.clone(),
        })
        .await
        .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
        return Ok(Arc::new(store));
    }
    let mut sled = SledConfig::new(config.data_dir.clone());
    sled.history_revisions = config.history_revisions;
    sled.watch_buffer = config.watch_buffer;
    sled.cache_bytes = config.sled_cache_bytes;
    let store = tokio::task::spawn_blocking(move || SledStore::open(sled))
        .await
        .context("opening the store")?
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Arc::new(store))
}

/// The catalog over `store`, the authorizer (with its first tokens), and
/// the API in front of them; streams end when `streams_end` is cancelled.
async fn registry_api(
    config: &ServerConfig,
    store: Arc<dyn Store>,
    streams_end: &CancellationToken,
) -> anyhow::Result<(RegistryApi, Authorizer, Catalog)> {
    let catalog = Catalog::new(
        store,
        CatalogConfig {
            progress_interval: config.progress_interval,
            ..CatalogConfig::default()
        },
    );
    let auth = if config.auth {
        bootstrap::bootstrap(
            &catalog,
            config.bootstrap_token_file.as_deref(),
            &config.seed_tokens,
            config.bootstrap_anew,
        )
        .await?;
        Authorizer::start(catalog.clone(), streams_end.clone()).await?
    } else {
        Authorizer::disabled()
    };
    let api = RegistryApi::new(
        catalog.clone(),
        streams_end.clone(),
        WatchLimits {
            total: config.limits.max_watchers,
            per_principal: config.limits.max_watchers_per_principal,
        },
        auth.clone(),
    );
    Ok((api, auth, catalog))
}

/// The connections to serve: accepted from `listener` within the limits,
/// through TLS when configured (its certificate reloaded on SIGHUP), until
/// `accepting` is cancelled.
fn accept(
    config: &ServerConfig,
    listener: TcpListener,
    accepting: &CancellationToken,
) -> anyhow::Result<ReceiverStream<std::io::Result<incoming::Connection>>> {
    let tls = match &config.tls {
        Some(files) => {
            let tls = Tls::load(files).context("setting up TLS")?;
            tokio::spawn(reload_on_sighup(tls.clone(), accepting.clone()));
            Some(tls)
        }
        None => None,
    };
    let limits = config.limits;
    Ok(incoming::incoming(
        listener,
        incoming::ConnectionLimits {
            max_connections: effective_max_connections(limits.max_connections),
            per_source: limits.max_connections_per_source,
            idle_timeout: limits.idle_timeout,
            handshake_timeout: limits.handshake_timeout,
            tls,
        },
        accepting.clone(),
    ))
}

/// The registry's health and the server's overall health (`""`): what
/// load balancers probe.
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status(SERVICE_NAME, status).await;
    health.set_service_status("", status).await;
}

/// The registry's metrics; with `--metrics-listen`, followed from the
/// catalog and served until `stop`, with the dashboard beside them when
/// `--ui` says so.
async fn start_metrics(
    config: &ServerConfig,
    catalog: Catalog,
    auth: Authorizer,
    stop: &CancellationToken,
) -> anyhow::Result<RegistryMetrics> {
    let served = KnownMethods::from_descriptor_sets(&SERVED_DESCRIPTOR_SETS);
    let metrics = RegistryMetrics::new(config.metrics_max_services, &catalog, served);
    if let Some(address) = config.metrics_listen {
        metrics.follow(catalog.clone(), stop.clone());
        let mut app = switchyard_program::metrics::router(Arc::clone(&metrics.registry));
        let ui = config.ui.enabled(address);
        if ui {
            app = app.merge(crate::ui::router(catalog, auth, stop.clone())?);
        }
        let bound = switchyard_program::http::serve(
            "metrics",
            address,
            app,
            config.limits.http,
            stop.clone(),
        )
        .await?;
        tracing::info!(address = %bound, "metrics listening");
        if ui {
            tracing::info!(url = %format!("http://{bound}/ui/"), "dashboard listening");
        }
    }
    Ok(metrics)
}

/// Serves on `listener` until `shutdown` completes, then drains and closes.
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let streams_end = CancellationToken::new();
    let (api, auth, catalog) = registry_api(&config, Arc::clone(&store), &streams_end).await?;
    if let Some(dns) = config.dns.clone() {
        let bound = crate::dns::serve(dns, catalog.clone(), streams_end.clone()).await?;
        tracing::info!(address = %bound, "DNS listening");
    }
    tokio::spawn(
        catalog
            .clone()
            .sweep_silent_proxies(config.forget_proxies_after, streams_end.clone()),
    );
    let metrics = start_metrics(&config, catalog, auth.clone(), &streams_end).await?;

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    // Both versions: grpcurl and grpc-go speak v1, while Python's
    // grpcio-reflection and older tools still ask v1alpha.
    // Reflection describes the whole API: with --auth it needs a valid
    // credential (any role); health stays open for load balancers.
    let reflection = tonic::service::interceptor::InterceptedService::new(
        reflection_builder()
            .build_v1()
            .context("building the reflection service")?,
        credentials_required(auth.clone()),
    );
    let reflection_v1alpha = tonic::service::interceptor::InterceptedService::new(
        reflection_builder()
            .build_v1alpha()
            .context("building the v1alpha reflection service")?,
        credentials_required(auth.clone()),
    );

    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        %address,
        store = ?config.store,
        data_dir = %config.data_dir.display(),
        tls = config.tls.is_some(),
        "cd-registry listening"
    );

    let registry = tonic::service::interceptor::InterceptedService::new(
        RegistryServer::new(api)
            .max_decoding_message_size(TRANSPORT_REQUEST_LIMIT)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        credentials_required(auth.clone()),
    );
    let limits = config.limits;
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let accepting = CancellationToken::new();
    let incoming = accept(&config, listener, &accepting)?;
    let server = Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .layer(GrpcLayer::new(metrics.grpc.clone()))
        .layer(idle::CallsLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
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
            set_health(&health, ServingStatus::NotServing).await;
            streams_end.cancel();
            accepting.cancel();
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
