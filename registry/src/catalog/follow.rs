//! Records under a prefix followed as they are written: proxy reports (a
//! deploy waiting for its flip to be applied), deployment records
//! (`cdctl history --follow`, and the deploy metrics, which follow
//! deletions too), and which services' deploy locks are held (the
//! dashboard tells a running deploy from one that died).

use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use switchyard_model::{Deployment, validate};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{Catalog, CatalogError, from_json, keys};
use crate::store::{EventKind, Op, WatchItem};

/// Records written at one revision (empty: where a stream starts).
pub type Written<T> = Result<(u64, Vec<T>), CatalogError>;
/// The keys changed at one revision: put (with the record) or deleted.
pub type Changes<T> = Result<(u64, Vec<(Vec<u8>, Option<T>)>), CatalogError>;

impl Catalog {
    /// The changes under `prefix` after `from_revision`, one item per
    /// revision: each key put (with its record) or deleted. Ends after an
    /// error.
    pub(super) async fn record_changes<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: &[u8],
        from_revision: u64,
    ) -> Result<impl Stream<Item = Changes<T>> + Send + 'static + use<T>, CatalogError> {
        let progress = self.config.progress_interval;
        let stream = self
            .store
            .watch(prefix.to_vec(), from_revision, progress)
            .await?;
        Ok(stream.filter_map(|item| async move {
            match item {
                Ok(WatchItem::Events { revision, events }) => Some(
                    events
                        .into_iter()
                        .map(|event| match event.kind {
                            EventKind::Put => {
                                from_json::<T>(&event.kv).map(|r| (event.kv.key, Some(r)))
                            }
                            EventKind::Delete => Ok((event.kv.key, None)),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(|changes| (revision, changes)),
                ),
                Ok(WatchItem::Progress { .. }) => None,
                Err(error) => Some(Err(error.into())),
            }
        }))
    }

    /// The records put under `prefix` after `from_revision`, one item per
    /// revision that put any (deletions are left out). Ends after an error.
    pub(super) async fn written<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: &[u8],
        from_revision: u64,
    ) -> Result<impl Stream<Item = Written<T>> + Send + 'static + use<T>, CatalogError> {
        let changes = self.record_changes::<T>(prefix, from_revision).await?;
        Ok(changes.filter_map(|item| async move {
            match item {
                Ok((revision, changes)) => {
                    let records: Vec<T> = changes.into_iter().filter_map(|(_, r)| r).collect();
                    (!records.is_empty()).then_some(Ok((revision, records)))
                }
                Err(error) => Some(Err(error)),
            }
        }))
    }

    /// Every deployment record with its key, and the revision read at: where
    /// [`Catalog::deployment_changes`] continues.
    pub async fn deployment_records(
        &self,
    ) -> Result<(u64, Vec<(Vec<u8>, Deployment)>), CatalogError> {
        let (revision, results) = self
            .read(vec![Op::Range {
                prefix: keys::DEPLOYMENTS.to_vec(),
            }])
            .await?;
        let records = results
            .rest()?
            .into_iter()
            .map(|kv| from_json::<Deployment>(&kv).map(|record| (kv.key, record)))
            .collect::<Result<_, _>>()?;
        Ok((revision, records))
    }

    /// The services whose deploy lock is held, and the revision read at:
    /// where [`Catalog::lock_changes`] continues.
    pub async fn locked_services(
        &self,
    ) -> Result<(u64, std::collections::BTreeSet<String>), CatalogError> {
        let (revision, results) = self
            .read(vec![Op::Range {
                prefix: keys::LOCKS.to_vec(),
            }])
            .await?;
        let services = results
            .rest()?
            .into_iter()
            .filter_map(|kv| keys::last_segment(&kv.key).map(str::to_string))
            .collect();
        Ok((revision, services))
    }

    /// Deploy locks taken, released or expired after `from_revision`, by
    /// key (the lock record itself is not looked into).
    pub async fn lock_changes(
        &self,
        from_revision: u64,
    ) -> Result<impl Stream<Item = Changes<serde_json::Value>> + Send + 'static + use<>, CatalogError>
    {
        self.record_changes(keys::LOCKS, from_revision).await
    }

    /// Deployment records written or dropped after `from_revision`, by key.
    pub async fn deployment_changes(
        &self,
        from_revision: u64,
    ) -> Result<impl Stream<Item = Changes<Deployment>> + Send + 'static + use<>, CatalogError>
    {
        self.record_changes(keys::DEPLOYMENTS, from_revision).await
    }

    /// Deployment records of `service` (every service when empty) written
    /// after `since_revision` (0: from now on): first an empty item with the
    /// revision the stream starts after, then the records of each revision;
    /// until `stop`, the receiver going away, or an error (the last item).
    pub fn watch_deployments(
        &self,
        service: &str,
        since_revision: u64,
        stop: CancellationToken,
    ) -> Result<ReceiverStream<Written<Deployment>>, CatalogError> {
        let prefix = if service.is_empty() {
            keys::DEPLOYMENTS.to_vec()
        } else {
            validate::service_name("service", service)?;
            keys::deployments_of(service)
        };
        let (sender, receiver) = mpsc::channel(16);
        let catalog = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = catalog.follow_deployments(&prefix, since_revision, &sender) => {}
                () = stop.cancelled() => {}
                () = sender.closed() => {}
            }
        });
        Ok(ReceiverStream::new(receiver))
    }

    async fn follow_deployments(
        &self,
        prefix: &[u8],
        since_revision: u64,
        sender: &mpsc::Sender<Written<Deployment>>,
    ) {
        let start = match since_revision {
            0 => self.store.current_revision().await.map_err(Into::into),
            since => Ok(since),
        };
        let stream = match start {
            Ok(start) => self
                .written::<Deployment>(prefix, start)
                .await
                .map(|s| (start, s)),
            Err(error) => Err(error),
        };
        let (start, stream) = match stream {
            Ok(started) => started,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        if sender.send(Ok((start, Vec::new()))).await.is_err() {
            return;
        }
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                return;
            }
        }
    }
}
