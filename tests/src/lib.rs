//! Test support shared by Switchyard's end-to-end tests: start a registry
//! in-process on `127.0.0.1:0` or as the real binary, poll with patience
//! instead of sleeping, and the store conformance suite every backend runs.
#![forbid(unsafe_code)]

pub mod browser;
pub mod conformance;
pub mod docker;
pub mod etcd;
pub mod load;
pub mod process;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cd_registry::server::{ServerConfig, serve};
use switchyard_client::RegistryClient;
use switchyard_model::{Color, Health, Instance};
use switchyard_proto::v1::registry_client::RegistryClient as GrpcClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Polls `check` until it answers `Ok`, or fails the test after `patience`
/// with the last reason it gave.
pub async fn eventually<T, F, Fut>(patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(reason) if Instant::now() >= deadline => {
                panic!("still not true after {patience:?}: {reason}")
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}

tokio::task_local! {
    /// etcd endpoints for the registries a test starts; unset: sled.
    static ETCD_ENDPOINTS: Vec<String>;
}

/// Runs `test` with every [`TestRegistry`] it starts backed by the etcd at
/// `endpoints` instead of sled: how the API tests run on both backends.
pub async fn with_etcd<F: Future>(endpoints: Vec<String>, test: F) -> F::Output {
    ETCD_ENDPOINTS.scope(endpoints, test).await
}

/// A registry served in this process on `127.0.0.1:0`.
pub struct TestRegistry {
    pub address: SocketAddr,
    pub config: ServerConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// Keeps the data directory alive when the registry made its own.
    _owned_dir: Option<tempfile::TempDir>,
}

impl TestRegistry {
    /// Starts a registry with default settings in a fresh temporary directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a registry after `adjust` has changed its settings.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = ServerConfig::new(dir.path().join("data"));
        if let Ok(endpoints) = ETCD_ENDPOINTS.try_with(Clone::clone) {
            config.store = cd_registry::server::StoreChoice::Etcd { endpoints };
        }
        adjust(&mut config);
        let mut registry = Self::start_config(config).await;
        registry._owned_dir = Some(dir);
        registry
    }

    /// Starts a registry on exactly `config` (e.g. a data directory reused
    /// across a restart).
    pub async fn start_config(config: ServerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let address = listener.local_addr().expect("a bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(config.clone(), listener, async {
            let _ = stopped.await;
        }));
        let registry = TestRegistry {
            address,
            config,
            stop: Some(stop),
            task: Some(task),
            _owned_dir: None,
        };
        registry.wait_serving().await;
        registry
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.url()).expect("a valid URL")
    }

    pub async fn grpc(&self) -> GrpcClient<Channel> {
        grpc(&self.url()).await
    }

    /// Health says SERVING. Over TLS the test's own client (which knows
    /// the CA) waits instead: this check speaks plaintext.
    async fn wait_serving(&self) {
        if self.config.tls.is_some() {
            return;
        }
        let url = self.url();
        eventually(patience(), || health_serving(url.clone())).await;
    }

    /// Shuts the registry down gracefully and waits until its store is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => panic!("the registry failed: {error:#}"),
                Err(error) => panic!("the registry task panicked: {error}"),
            }
        }
    }

    /// Stops and starts again on the same data directory (on a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        let owned = self._owned_dir.take();
        let mut restarted = Self::start_config(self.config.clone()).await;
        restarted._owned_dir = owned;
        *self = restarted;
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A raw gRPC client, for requests the typed client would never send.
pub async fn grpc(url: &str) -> GrpcClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("a valid URL")
        .connect()
        .await
        .expect("connecting to the registry");
    GrpcClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
}

/// A raw gRPC client on its own connection with the smallest HTTP/2
/// windows, for streams a test opens and then does not read: the server
/// cannot park much in the windows, so what it buffers is its own.
pub async fn grpc_small_windows(url: &str) -> GrpcClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("a valid URL")
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .expect("connecting to the registry");
    GrpcClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
}

/// A raw watch of every service from `from_revision` (0: snapshot first).
pub async fn raw_watch(
    url: &str,
    from_revision: u64,
) -> tonic::Streaming<switchyard_proto::v1::WatchResponse> {
    grpc(url)
        .await
        .watch(switchyard_proto::v1::WatchRequest {
            services: vec![],
            from_revision,
        })
        .await
        .expect("watch opens")
        .into_inner()
}

/// The next event of a raw watch, within 10 s.
pub async fn next_watch_event(
    stream: &mut tonic::Streaming<switchyard_proto::v1::WatchResponse>,
) -> switchyard_model::watch::WatchEvent {
    let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch message within 10s")
        .expect("no stream error")
        .expect("the stream is open");
    switchyard_proto::watch_event_from_wire(message).expect("a valid event")
}

/// Whether `grpc.health.v1` reports the registry SERVING.
pub async fn health_serving(url: String) -> Result<(), String> {
    // Bounded, so a poll of it gives up and asks again: a connection the
    // registry has not accepted yet (at its descriptor limit, say) would
    // otherwise wait for the handshake forever, and `eventually` with it.
    tokio::time::timeout(Duration::from_secs(2), health_check(url))
        .await
        .map_err(|_| "no health answer within 2s".to_string())?
}

async fn health_check(url: String) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: cd_registry::server::SERVICE_NAME.into(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let status = response.into_inner().status;
    if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("health status {status}"))
    }
}

/// A valid instance for tests.
pub fn instance(service: &str, id: &str, port: u16, color: Option<Color>) -> Instance {
    Instance {
        id: id.to_string(),
        service: service.to_string(),
        color,
        node: String::new(),
        address: "127.0.0.1".parse().expect("literal address"),
        port,
        tags: Vec::new(),
        metadata: Default::default(),
        health: Health::Passing,
        session: None,
        create_revision: 0,
        mod_revision: 0,
    }
}

/// How long a test waits for what should happen: 30 s, or the duration in
/// `SWITCHYARD_TEST_PATIENCE` (e.g. `90s`) on a slower machine. The one
/// setting every wait derives from.
pub fn patience() -> Duration {
    std::env::var("SWITCHYARD_TEST_PATIENCE")
        .ok()
        .and_then(|text| switchyard_model::duration::parse_duration(&text).ok())
        .unwrap_or(Duration::from_secs(30))
}

/// A free loopback port below the kernel's ephemeral range (and Docker's
/// published-port range, which is the same), so a port picked here is not
/// taken by an outgoing connection or a `-p 127.0.0.1::80` before the
/// program under test binds it.
pub fn free_port() -> u16 {
    loop {
        let port: u16 = rand::random_range(20_000..30_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// `GET path` over plain HTTP/1.1; answers the whole response (status line,
/// headers, body).
pub async fn http_get(address: SocketAddr, path: &str) -> Result<String, String> {
    http_get_within(address, path, Duration::from_secs(5)).await
}

/// [`http_get`] for an answer that may take up to `patience`.
pub async fn http_get_within(
    address: SocketAddr,
    path: &str,
    patience: Duration,
) -> Result<String, String> {
    http_request(address, "GET", path, patience).await
}

/// `METHOD path` with no body over plain HTTP/1.1, answered within
/// `patience`.
pub async fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    patience: Duration,
) -> Result<String, String> {
    http_request_with(address, method, path, &[], patience).await
}

/// [`http_request`] with extra `headers`.
pub async fn http_request_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    patience: Duration,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(address);
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tokio::time::timeout(patience, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| format!("reading from {address} timed out"))?
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// The body of an HTTP response.
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}
