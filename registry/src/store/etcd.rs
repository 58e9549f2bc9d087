//! The clustered backend: the `Store` trait on the etcd v3 API. Revisions are
//! etcd's revisions, transactions are etcd txns with compares, leases are
//! etcd leases, watches are etcd watches from a start revision. Several
//! registry replicas over one etcd cluster are one registry: all state and
//! all ordering live in etcd; a replica keeps nothing but connections.
//!
//! etcd must allow transactions as large as a `SyncNode` of
//! `MAX_SYNC_INSTANCES` (run it with `--max-txn-ops 32768` and
//! `--max-request-bytes 10485760`; see `deploy/`).

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
};
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{
    Compare, Event, EventKind, KeyValue, LeaseId, Op, OpResult, Store, StoreError, Txn,
    TxnResponse, WatchItem, WatchStream,
};

/// Settings of the etcd backend.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    pub access: EtcdAccess,
}

/// How the registry proves itself to an etcd that requires TLS or users
/// (`--etcd-ca`, `--etcd-cert`, `--etcd-key`, `--etcd-user`,
/// `--etcd-password-file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    /// PEM CA of etcd's server certificate (with `https://` endpoints).
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for `--client-cert-auth`.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// An etcd user (after `etcdctl auth enable`) and its password's file.
    pub user: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
}

impl EtcdAccess {
    /// `options` with TLS and the user this access names.
    fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, StoreError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|error| {
                StoreError::Unavailable(format!("reading {}: {error}", path.display()))
            })
        };
        if self.ca.is_some() || self.cert.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            }
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Unavailable(
                        "--etcd-cert and --etcd-key go together".into(),
                    ));
                }
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.user {
            let file = self.password_file.as_ref().ok_or_else(|| {
                StoreError::Unavailable("--etcd-user needs --etcd-password-file".into())
            })?;
            let password = String::from_utf8_lossy(&read(file)?).trim_end().to_string();
            options = options.with_user(user.clone(), password);
        }
        Ok(options)
    }
}

/// A store on an etcd cluster.
pub struct EtcdStore {
    client: Client,
    closing: CancellationToken,
    /// Request latency and retries; etcd's own `/metrics` has the rest.
    stats: std::sync::Arc<super::stats::StoreStats>,
}

fn unavailable(error: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(format!("etcd: {error}"))
}

/// Maps an etcd error, telling "lease not found" apart.
fn classify(error: etcd_client::Error, lease: Option<LeaseId>) -> StoreError {
    // etcd says it in a gRPC status or in a keep-alive error.
    if error.to_string().contains("lease not found") {
        return StoreError::LeaseNotFound(lease.unwrap_or(0));
    }
    unavailable(error)
}

/// Whether the request certainly did not reach etcd (the member it went to
/// is down), so it is safe to send again: the client balances it onto
/// another member.
fn not_sent(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable
                && (status.message().contains("connect")
                    || status.message().contains("refused")
                    || status.message().contains("transport"))
        }
        _ => false,
    }
}

/// Attempts for a request whose member was unreachable.
const ATTEMPTS: usize = 5;

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: to_u64(kv.create_revision()),
        mod_revision: to_u64(kv.mod_revision()),
        version: to_u64(kv.version()),
        lease: (kv.lease() != 0).then(|| to_u64(kv.lease())),
    }
}

fn compare(compare: &Compare) -> EtcdCompare {
    match compare {
        Compare::ModRevision { key, revision } => {
            EtcdCompare::mod_revision(key.clone(), CompareOp::Equal, to_i64(*revision))
        }
        Compare::CreateRevision { key, revision } => {
            EtcdCompare::create_revision(key.clone(), CompareOp::Equal, to_i64(*revision))
        }
        Compare::Value { key, value } => {
            EtcdCompare::value(key.clone(), CompareOp::Equal, value.clone())
        }
    }
}

fn operation(op: &Op) -> TxnOp {
    match op {
        Op::Range { prefix } if prefix.is_empty() => {
            TxnOp::get(vec![0u8], Some(GetOptions::new().with_from_key()))
        }
        Op::Range { prefix } => TxnOp::get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        Op::Get { key } => TxnOp::get(key.clone(), None),
        Op::Put { key, value, lease } => TxnOp::put(
            key.clone(),
            value.clone(),
            lease.map(|lease| PutOptions::new().with_lease(to_i64(lease))),
        ),
        Op::Delete { key } => TxnOp::delete(key.clone(), None),
    }
}

impl EtcdStore {
    /// Connects to the cluster (any of `endpoints`; the client balances and
    /// fails over between them).
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let options = config.access.apply(options)?;
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|error| {
                StoreError::Unavailable(format!(
                    "cannot reach etcd at {}: {error} (check --etcd-endpoints)",
                    config.endpoints.join(",")
                ))
            })?;
        let store = EtcdStore {
            client,
            closing: CancellationToken::new(),
            stats: std::sync::Arc::new(super::stats::StoreStats::new("etcd")),
        };
        // Fail now, not on the first request, when etcd does not answer.
        store.current_revision().await?;
        Ok(store)
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closing.is_cancelled() {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.check_open()?;
        let lease = txn
            .success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                Op::Put { lease, .. } => *lease,
                _ => None,
            });
        let request = etcd_client::Txn::new()
            .when(txn.compares.iter().map(compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(operation).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(operation).collect::<Vec<_>>());
        let mut attempt = 0;
        let started = std::time::Instant::now();
        let response = loop {
            attempt += 1;
            match self.client.kv_client().txn(request.clone()).await {
                Ok(response) => break response,
                Err(error) if attempt < ATTEMPTS && not_sent(&error) => {
                    super::stats::StoreStats::add(&self.stats.retries, 1);
                    tracing::debug!(%error, attempt, "etcd member unreachable; retrying on another");
                    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                }
                Err(error) => return Err(classify(error, lease)),
            }
        };
        self.stats
            .request_seconds
            .observe_duration(started.elapsed());
        let revision = response.header().map_or(0, |h| to_u64(h.revision()));
        super::stats::StoreStats::raise(&self.stats.revision, revision);
        let results = response
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => {
                    OpResult::Range(get.kvs().iter().map(key_value).collect())
                }
                TxnOpResponse::Put(_) => OpResult::Put,
                TxnOpResponse::Delete(delete) => OpResult::Delete {
                    deleted: delete.deleted() > 0,
                },
                TxnOpResponse::Txn(_) => OpResult::Put,
            })
            .collect();
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            revision,
            results,
        })
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.check_open()?;
        let response = self
            .client
            .kv_client()
            .get(vec![0u8], Some(GetOptions::new().with_count_only()))
            .await
            .map_err(unavailable)?;
        Ok(response.header().map_or(0, |h| to_u64(h.revision())))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.check_open()?;
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let response = self
            .client
            .lease_client()
            .grant(seconds, None)
            .await
            .map_err(unavailable)?;
        Ok(to_u64(response.id()))
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.check_open()?;
        let (mut keeper, mut answers) = self
            .client
            .lease_client()
            .keep_alive(to_i64(lease))
            .await
            .map_err(|error| classify(error, Some(lease)))?;
        keeper
            .keep_alive()
            .await
            .map_err(|error| classify(error, Some(lease)))?;
        let answer = answers.message().await;
        tracing::debug!(lease, ?answer, "etcd keep-alive answer");
        match answer {
            Ok(Some(answer)) if answer.ttl() > 0 => Ok(Duration::from_secs(to_u64(answer.ttl()))),
            Ok(_) => Err(StoreError::LeaseNotFound(lease)),
            Err(error) => Err(classify(error, Some(lease))),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<u64, StoreError> {
        self.check_open()?;
        let response = self
            .client
            .lease_client()
            .revoke(to_i64(lease))
            .await
            .map_err(|error| classify(error, Some(lease)))?;
        Ok(response.header().map_or(0, |h| to_u64(h.revision())))
    }

    async fn watch(
        &self,
        prefix: Vec<u8>,
        from_revision: u64,
        progress_every: Duration,
    ) -> Result<WatchStream, StoreError> {
        self.check_open()?;
        self.refuse_compacted_start(&prefix, from_revision).await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(to_i64(from_revision.saturating_add(1)));
        let mut stream = self
            .client
            .watch_client()
            .watch(prefix, Some(options))
            .await
            .map_err(unavailable)?;
        // The first answer says whether the watch could start there.
        let created = stream.message().await.map_err(unavailable)?;
        if let Some(created) = &created
            && created.compact_revision() > 0
        {
            return Err(StoreError::Compacted {
                requested: from_revision,
                compacted: to_u64(created.compact_revision()),
            });
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(crate::store::WATCH_READ_AHEAD);
        let closing = self.closing.clone();
        tokio::spawn(async move {
            let (mut requests, mut responses) = stream.split();
            let mut ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + progress_every,
                progress_every,
            );
            let mut pending = created.into_iter().collect::<Vec<_>>();
            loop {
                let response = match pending.pop() {
                    Some(response) => response,
                    None => tokio::select! {
                        message = responses.next() => match message {
                            Some(Ok(response)) => response,
                            Some(Err(error)) => {
                                let _ = sender.send(Err(unavailable(error))).await;
                                return;
                            }
                            None => {
                                let _ = sender.send(Err(StoreError::Unavailable("etcd ended the watch".into()))).await;
                                return;
                            }
                        },
                        _ = ticker.tick() => {
                            // etcd answers with a progress notification.
                            if requests.request_progress().await.is_err() {
                                return;
                            }
                            continue;
                        }
                        () = sender.closed() => return,
                        () = closing.cancelled() => return,
                    },
                };
                if !forward(response, from_revision, &sender).await {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    fn stats(&self) -> std::sync::Arc<super::stats::StoreStats> {
        std::sync::Arc::clone(&self.stats)
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.closing.cancel();
        Ok(())
    }
}

/// One `Events` item per revision, in order.
fn group_by_revision(events: &[etcd_client::Event]) -> Vec<WatchItem> {
    let mut items: Vec<WatchItem> = Vec::new();
    for event in events {
        let Some(kv) = event.kv() else { continue };
        let kv = key_value(kv);
        let revision = kv.mod_revision;
        let event = Event {
            kind: match event.event_type() {
                EventType::Put => EventKind::Put,
                EventType::Delete => EventKind::Delete,
            },
            kv,
        };
        match items.last_mut() {
            Some(WatchItem::Events {
                revision: last,
                events,
            }) if *last == revision => events.push(event),
            _ => items.push(WatchItem::Events {
                revision,
                events: vec![event],
            }),
        }
    }
    items
}

impl EtcdStore {
    /// etcd tells a compacted start revision only in a later watch
    /// message; a read at that revision says it at once.
    async fn refuse_compacted_start(
        &self,
        prefix: &[u8],
        from_revision: u64,
    ) -> Result<(), StoreError> {
        if from_revision == 0 {
            return Ok(());
        }
        let probe = GetOptions::new()
            .with_prefix()
            .with_count_only()
            .with_revision(to_i64(from_revision.saturating_add(1)));
        let Err(error) = self.client.kv_client().get(prefix, Some(probe)).await else {
            return Ok(());
        };
        let text = error.to_string();
        if text.contains("compacted") {
            return Err(StoreError::Compacted {
                requested: from_revision,
                compacted: from_revision.saturating_add(1),
            });
        }
        if text.contains("future revision") {
            return Ok(());
        }
        Err(unavailable(error))
    }
}

/// Passes one etcd watch response on as watch items (or the error that
/// ends the watch); false when the watch is over.
async fn forward(
    response: WatchResponse,
    from_revision: u64,
    sender: &tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
) -> bool {
    if response.compact_revision() > 0 {
        let compacted = to_u64(response.compact_revision());
        let _ = sender
            .send(Err(StoreError::Compacted {
                requested: from_revision,
                compacted,
            }))
            .await;
        return false;
    }
    if response.canceled() {
        let reason = response.cancel_reason().to_string();
        let _ = sender
            .send(Err(StoreError::Unavailable(format!(
                "etcd canceled the watch: {reason}"
            ))))
            .await;
        return false;
    }
    let revision = response.header().map_or(0, |h| to_u64(h.revision()));
    if response.events().is_empty() {
        return response.created()
            || sender
                .send(Ok(WatchItem::Progress { revision }))
                .await
                .is_ok();
    }
    for item in group_by_revision(response.events()) {
        if sender.send(Ok(item)).await.is_err() {
            return false;
        }
    }
    true
}
