//! Proxies: each one's last report (`x/px/{proxy}`), listed, and followed
//! as reports are written so a deploy acts on the report that completes
//! its wait instead of asking again and again; reports of proxies silent
//! for long are forgotten, so proxies that come and go (containers with
//! ids of their own) do not pile up for ever.

use futures::StreamExt;
use switchyard_model::{ProxyStatus, validate};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{Catalog, CatalogError, from_json, keys, now_ms, put, to_json};
use crate::store::{Compare, Op, Txn};

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

    /// Removes the reports of proxies silent for `silent_for` or longer;
    /// answers how many. Each removal is guarded by the report's revision,
    /// so a proxy that reports meanwhile is kept (and replicas sweeping at
    /// once remove each report once).
    pub async fn forget_silent_proxies(
        &self,
        silent_for: std::time::Duration,
    ) -> Result<usize, CatalogError> {
        let (_, results) = self
            .read(vec![Op::Range {
                prefix: keys::PROXIES.to_vec(),
            }])
            .await?;
        let now = now_ms();
        let silent_ms = u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX);
        let mut forgotten = 0;
        for kv in results.rest()? {
            let status: ProxyStatus = from_json(&kv)?;
            if now.saturating_sub(status.reported_at_ms) < silent_ms {
                continue;
            }
            let txn = Txn {
                compares: vec![Compare::ModRevision {
                    key: kv.key.clone(),
                    revision: kv.mod_revision,
                }],
                success: vec![Op::Delete { key: kv.key }],
                ..Txn::default()
            };
            if self.commit(txn).await?.is_some() {
                tracing::info!(proxy = %status.proxy_id, "forgot a proxy that stopped reporting");
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// Forgets silent proxies now and then (a tenth of `silent_for`,
    /// between a tenth of a second and a minute) until `stop`.
    pub async fn sweep_silent_proxies(
        self,
        silent_for: std::time::Duration,
        stop: CancellationToken,
    ) {
        let every = (silent_for / 10).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(60),
        );
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            if let Err(error) = self.forget_silent_proxies(silent_for).await {
                tracing::debug!(%error, "could not forget silent proxies; will try again");
            }
        }
    }

    /// Every proxy that reported lately, and the registry's clock now.
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
