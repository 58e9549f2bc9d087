//! Proxies: each one's last report (`x/px/{proxy}`), listed, and followed
//! as reports are written so a deploy acts on the report that completes
//! its wait instead of asking again and again.

use futures::StreamExt;
use switchyard_model::{ProxyStatus, validate};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{Catalog, CatalogError, keys, now_ms, put, to_json};
use crate::store::Txn;

/// Reports and the registry's clock when they were sent.
type Reports = Result<(Vec<ProxyStatus>, u64), CatalogError>;

impl Catalog {
    pub async fn report_proxy(&self, mut status: ProxyStatus) -> Result<u64, CatalogError> {
        validate::identifier("status.proxy_id", &status.proxy_id)?;
        let current = self.store.current_revision().await?;
        if status.applied_revision > current {
            return Err(CatalogError::Invalid(validate::ValidationError::new(
                "status.applied_revision",
                format!(
                    "{} is beyond the registry's revision {current}: report the revision of \
                     what the proxy applied",
                    status.applied_revision
                ),
            )));
        }
        status.reported_at_ms = now_ms();
        let txn = Txn {
            success: vec![put(keys::proxy(&status.proxy_id), to_json(&status)?, None)],
            ..Txn::default()
        };
        Ok(self.store.txn(txn).await?.revision)
    }

    /// Every proxy that ever reported, and the registry's clock now.
    pub async fn list_proxies(&self) -> Result<(Vec<ProxyStatus>, u64), CatalogError> {
        let (_, proxies) = self.read_records(keys::PROXIES).await?;
        Ok((proxies, now_ms()))
    }

    /// Every proxy's last report, then the reports written at each later
    /// revision, each with the registry's clock; until `stop`, the
    /// receiver going away, or an error (the last item).
    pub fn watch_proxies(&self, stop: CancellationToken) -> ReceiverStream<Reports> {
        let (sender, receiver) = mpsc::channel(16);
        let catalog = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = catalog.follow_proxies(&sender) => {}
                () = stop.cancelled() => {}
                () = sender.closed() => {}
            }
        });
        ReceiverStream::new(receiver)
    }

    async fn follow_proxies(&self, sender: &mpsc::Sender<Reports>) {
        let (revision, all) = match self.read_records::<ProxyStatus>(keys::PROXIES).await {
            Ok(read) => read,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        if sender.send(Ok((all, now_ms()))).await.is_err() {
            return;
        }
        let stream = match self.written::<ProxyStatus>(keys::PROXIES, revision).await {
            Ok(stream) => stream,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let reports = item.map(|(_, reports)| (reports, now_ms()));
            let failed = reports.is_err();
            if sender.send(reports).await.is_err() || failed {
                return;
            }
        }
    }
}
