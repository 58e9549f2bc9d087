//! A typed client of the registry for `cdctl`, the agent and the tests:
//! domain types in and out, protobuf only inside, and failover across
//! several registry URLs (`--registry URL1,URL2`).
#![forbid(unsafe_code)]

#[cfg(feature = "clap")]
pub mod args;
pub mod backup;
mod deployments;
mod endpoint;
mod proxies;
mod tokens;
/// The watched services kept current from watch events (shared with the
/// registry, whose DNS interface answers from one).
pub use switchyard_model::view;

pub use backup::SavedBackup;
pub use endpoint::{ClientOptions, ClientTls, DEFAULT_TIMEOUT, read_token_file};

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use switchyard_model::watch::WatchEvent;
use switchyard_model::{
    Color, Instance, LockGrant, Service, ServiceSummary, SessionId, SyncOutcome, ValidationError,
};
use switchyard_proto as wire;
use switchyard_proto::v1;
use switchyard_proto::v1::registry_client::RegistryClient as GrpcClient;
/// gRPC status codes, so callers can tell failures apart without tonic.
pub use tonic::Code;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// What a call to the registry can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url:?} is not a registry URL ({why}); use e.g. http://127.0.0.1:7400")]
    BadUrl { url: String, why: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("token: {0}")]
    BadToken(String),
    #[error("the registry answered {code:?}: {message}")]
    Status { code: Code, message: String },
    #[error("the registry sent something this client cannot read: {0}")]
    BadResponse(#[from] ValidationError),
    #[error("the backup could not be taken: {0}")]
    Backup(String),
}

impl ClientError {
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's own message (or ours), without the code.
    pub fn message(&self) -> String {
        match self {
            ClientError::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        ClientError::Status {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// Whether a call that ended with `code` never reached a working
/// registry, so it may succeed on another replica: the one rule for the
/// client's failover and for cdctl's "cannot reach the registry".
fn unreachable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

impl ClientError {
    /// The registry could not be reached (on any of its URLs).
    pub fn is_unreachable(&self) -> bool {
        self.code().is_some_and(unreachable_code)
    }

    /// A watch may resume after this: the registry went away, or the
    /// stream was cut mid-way (which tonic reports as INTERNAL).
    pub fn is_resumable(&self) -> bool {
        self.is_unreachable() || self.code() == Some(Code::Internal)
    }
}

/// Largest message the client accepts (snapshots of big registries).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A registry client over one or more replicas.
pub struct RegistryClient {
    urls: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    /// How long one replica may take to connect and answer a call.
    timeout: Duration,
    credentials: endpoint::Credentials,
}

/// The generated client with the credentials interceptor.
type Grpc = GrpcClient<InterceptedService<Channel, endpoint::Credentials>>;

impl Clone for RegistryClient {
    /// Another client over the same connections and settings (a deploy's
    /// lock renewer runs beside the deploy's own calls).
    fn clone(&self) -> Self {
        RegistryClient {
            urls: self.urls.clone(),
            channels: self.channels.clone(),
            current: AtomicUsize::new(self.current.load(Ordering::Relaxed)),
            timeout: self.timeout,
            credentials: self.credentials.clone(),
        }
    }
}

impl RegistryClient {
    /// `urls`: one or more comma-separated registry URLs. Connects lazily;
    /// each URL gets [`DEFAULT_TIMEOUT`] to connect and to answer.
    pub fn new(urls: &str) -> Result<Self, ClientError> {
        Self::with_timeout(urls, DEFAULT_TIMEOUT)
    }

    /// Like [`Self::new`], with another connect and answer timeout.
    pub fn with_timeout(urls: &str, timeout: Duration) -> Result<Self, ClientError> {
        Self::with_options(
            urls,
            &ClientOptions {
                timeout,
                ..ClientOptions::default()
            },
        )
    }

    /// Like [`Self::new`], with a timeout and TLS material.
    pub fn with_options(urls: &str, options: &ClientOptions) -> Result<Self, ClientError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            return Err(ClientError::BadUrl {
                url: String::new(),
                why: "no URL given".into(),
            });
        }
        let channels = urls
            .iter()
            .map(|url| Ok(endpoint::endpoint(url, options)?.connect_lazy()))
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(RegistryClient {
            urls,
            channels,
            current: AtomicUsize::new(0),
            timeout: options.timeout,
            credentials: endpoint::Credentials::new(options.token.as_deref())?,
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The URL calls go to now.
    pub fn current_url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }

    fn grpc(&self, index: usize) -> Grpc {
        GrpcClient::with_interceptor(self.channels[index].clone(), self.credentials.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs `call` against the current replica, moving on to the next ones
    /// while replicas are unreachable.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Grpc) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.urls.len() {
            let index = (start + step) % self.urls.len();
            // Covers connecting, the HTTP/2 handshake and the answer (for a
            // stream, its start): a registry that accepts and then says
            // nothing costs this long, not the transport's own timeouts.
            let answer = tokio::time::timeout(self.timeout, call(self.grpc(index)))
                .await
                .unwrap_or_else(|_| {
                    Err(Status::unavailable(format!(
                        "no answer within {:?}",
                        self.timeout
                    )))
                });
            match answer {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Err(status) if unreachable_code(status.code()) => {
                    tracing::debug!(url = %self.urls[index], %status, "registry unreachable; trying the next");
                    last = Some(status);
                }
                Err(status) => return Err(status.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| Status::unavailable("no registry URL"))
            .into())
    }

    pub async fn list_services(&self) -> Result<(u64, Vec<ServiceSummary>), ClientError> {
        let response = self
            .call(|mut c| async move { c.list_services(v1::ListServicesRequest {}).await })
            .await?;
        let services = response
            .services
            .into_iter()
            .map(wire::summary_from_wire)
            .collect::<Result<_, _>>()?;
        Ok((response.revision, services))
    }

    pub async fn get_service(&self, name: &str) -> Result<(u64, Service), ClientError> {
        let request = v1::GetServiceRequest {
            name: name.to_string(),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.get_service(request).await }
            })
            .await?;
        let service = response
            .service
            .ok_or_else(|| ValidationError::new("service", "missing from the answer"))?;
        Ok((response.revision, wire::service_from_wire(service)?))
    }

    pub async fn open_session(
        &self,
        node: &str,
        ttl_seconds: u32,
    ) -> Result<(SessionId, u32), ClientError> {
        let request = v1::OpenSessionRequest {
            node: node.to_string(),
            ttl_seconds,
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.open_session(request).await }
            })
            .await?;
        Ok((response.session_id, response.ttl_seconds))
    }

    /// One keep-alive round trip; answers the session's TTL.
    pub async fn keep_alive(&self, session: SessionId) -> Result<u32, ClientError> {
        let response = self
            .call(|mut c| async move {
                let ping = futures::stream::iter([v1::KeepAliveRequest {
                    session_id: session,
                }]);
                let mut answers = c.keep_alive(ping).await?.into_inner();
                match answers.next().await {
                    Some(answer) => answer.map(tonic::Response::new),
                    None => Err(Status::unavailable("keep-alive stream ended")),
                }
            })
            .await?;
        Ok(response.ttl_seconds)
    }

    pub async fn close_session(&self, session: SessionId) -> Result<u64, ClientError> {
        let response = self
            .call(|mut c| async move {
                c.close_session(v1::CloseSessionRequest {
                    session_id: session,
                })
                .await
            })
            .await?;
        Ok(response.revision)
    }

    pub async fn register(
        &self,
        instance: &Instance,
        session: Option<SessionId>,
    ) -> Result<u64, ClientError> {
        let request = v1::RegisterRequest {
            instance: Some(wire::instance_to_wire(instance)),
            session_id: session.unwrap_or(0),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.register(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    pub async fn deregister(&self, id: &str) -> Result<u64, ClientError> {
        let request = v1::DeregisterRequest { id: id.to_string() };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.deregister(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    pub async fn sync_node(
        &self,
        session: SessionId,
        node: &str,
        instances: &[Instance],
    ) -> Result<SyncOutcome, ClientError> {
        let request = v1::SyncNodeRequest {
            session_id: session,
            node: node.to_string(),
            instances: instances.iter().map(wire::instance_to_wire).collect(),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.sync_node(request).await }
            })
            .await?;
        Ok(SyncOutcome {
            revision: response.revision,
            added: response.added,
            updated: response.updated,
            removed: response.removed,
            refused: response
                .refused
                .into_iter()
                .map(|refused| (refused.id, refused.reason))
                .collect(),
        })
    }

    /// The live color and the color the next deploy goes to.
    pub async fn next_color(
        &self,
        service: &str,
    ) -> Result<(Option<Color>, Color, u64), ClientError> {
        let request = v1::NextColorRequest {
            service: service.to_string(),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.next_color(request).await }
            })
            .await?;
        let active = wire::color_from_wire("active_color", response.active_color)?;
        let next = wire::color_from_wire("next_color", response.next_color)?
            .unwrap_or_else(|| Color::next(active));
        Ok((active, next, response.revision))
    }

    /// Makes `color` the live color of `service` if `expected` is live now;
    /// `lock_token` is the caller's deploy lock (0: none). A `color` of
    /// `None` is refused by the registry: use [`Self::clear_active_color`].
    pub async fn set_active_color(
        &self,
        service: &str,
        color: Option<Color>,
        expected: Option<Color>,
        lock_token: u64,
    ) -> Result<u64, ClientError> {
        self.send_color(service, color, expected, lock_token, false)
            .await
    }

    /// Takes `service` dark on purpose: no live color.
    pub async fn clear_active_color(
        &self,
        service: &str,
        expected: Option<Color>,
        lock_token: u64,
    ) -> Result<u64, ClientError> {
        self.send_color(service, None, expected, lock_token, true)
            .await
    }

    /// Puts back a live color a rollback found, including none (a first
    /// deploy rolled back leaves the service as dark as it was).
    pub async fn restore_active_color(
        &self,
        service: &str,
        color: Option<Color>,
        expected: Option<Color>,
        lock_token: u64,
    ) -> Result<u64, ClientError> {
        self.send_color(service, color, expected, lock_token, color.is_none())
            .await
    }

    async fn send_color(
        &self,
        service: &str,
        color: Option<Color>,
        expected: Option<Color>,
        lock_token: u64,
        take_offline: bool,
    ) -> Result<u64, ClientError> {
        let request = v1::SetActiveColorRequest {
            service: service.to_string(),
            color: wire::color_to_wire(color),
            expected_color: wire::color_to_wire(expected),
            lock_token,
            take_offline,
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.set_active_color(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Sends `weight` percent of the requests of `service` to the color that
    /// is not live (0: end the canary), if the weight is `expected_weight`
    /// and `expected_color` is live now; `lock_token` is the caller's deploy
    /// lock (0: none). With `sticky`, proxies keep each client on the color
    /// it was first sent to while the canary runs.
    pub async fn set_canary_weight(
        &self,
        service: &str,
        (weight, sticky): (u8, bool),
        expected_weight: u8,
        expected_color: Option<Color>,
        lock_token: u64,
    ) -> Result<u64, ClientError> {
        let request = v1::SetCanaryWeightRequest {
            service: service.to_string(),
            sticky,
            weight: u32::from(weight),
            expected_weight: u32::from(expected_weight),
            expected_color: wire::color_to_wire(expected_color),
            lock_token,
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.set_canary_weight(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Marks instances `ids` of `service` draining (`reason` says why:
    /// proxies send them no new requests), or with `None` routable again;
    /// `lock_token` is the caller's deploy lock (0: none).
    pub async fn set_draining(
        &self,
        service: &str,
        ids: &[String],
        reason: Option<&str>,
        lock_token: u64,
    ) -> Result<u64, ClientError> {
        let request = v1::SetDrainingRequest {
            service: service.to_string(),
            instance_ids: ids.to_vec(),
            reason: reason.unwrap_or_default().to_string(),
            lock_token,
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.set_draining(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    pub async fn acquire_lock(
        &self,
        service: &str,
        holder: &str,
        ttl_seconds: u32,
    ) -> Result<LockGrant, ClientError> {
        let request = v1::AcquireLockRequest {
            service: service.to_string(),
            holder: holder.to_string(),
            ttl_seconds,
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.acquire_lock(request).await }
            })
            .await?;
        Ok(LockGrant {
            token: response.token,
            ttl_seconds: response.ttl_seconds,
        })
    }

    pub async fn renew_lock(&self, service: &str, token: u64) -> Result<u32, ClientError> {
        let request = v1::RenewLockRequest {
            service: service.to_string(),
            token,
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.renew_lock(request).await }
            })
            .await?;
        Ok(response.ttl_seconds)
    }

    pub async fn release_lock(&self, service: &str, token: u64) -> Result<u64, ClientError> {
        let request = v1::ReleaseLockRequest {
            service: service.to_string(),
            token,
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.release_lock(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Opens a watch stream (`from_revision` 0: snapshot first). The stream
    /// ends with an error when the connection breaks; resume with the last
    /// revision seen.
    pub async fn watch(
        &self,
        services: &[String],
        from_revision: u64,
    ) -> Result<
        impl Stream<Item = Result<WatchEvent, ClientError>> + Send + 'static + use<>,
        ClientError,
    > {
        let request = v1::WatchRequest {
            services: services.to_vec(),
            from_revision,
        };
        let stream = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.watch(request).await }
            })
            .await?;
        Ok(stream.map(|message| {
            let message = message.map_err(ClientError::from)?;
            Ok(wire::watch_event_from_wire(message)?)
        }))
    }
}
