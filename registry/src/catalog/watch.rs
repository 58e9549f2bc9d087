//! Watch = snapshot + ordered deltas, resumable (docs/semantics.md, "Watch"), built on the
//! store's watch of the `v/` keys.
//!
//! The stream never skips silently: when the store's history no longer
//! reaches back to where the client is (it asked for a compacted revision, or
//! it read so slowly that the live position was compacted away beneath it),
//! the client gets a `Reset` and then a fresh snapshot. Writers are never
//! blocked by a watcher: the store buffers per watcher and falls back to its
//! on-disk history.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use switchyard_model::validate;
pub use switchyard_model::watch::{Change, ResetReason, WatchEvent};
use tokio_util::sync::CancellationToken;

use super::outbox::{Outbox, outbox};
use super::{Catalog, CatalogError, decode_instance, decode_service, keys};
use crate::store::{EventKind, StoreError, WatchItem};

type Sender = Outbox;

/// Watch streams open and resets by reason, for metrics.
#[derive(Debug, Default)]
pub struct WatchCounters {
    open: AtomicU64,
    /// Indexed by [`reason_index`].
    resets: [AtomicU64; 3],
}

/// Counts a watch stream as open while alive.
pub struct OpenWatch(Arc<WatchCounters>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

const REASONS: [ResetReason; 3] = [
    ResetReason::Compacted,
    ResetReason::SlowConsumer,
    ResetReason::FutureRevision,
];

fn reason_index(reason: ResetReason) -> usize {
    match reason {
        ResetReason::Compacted => 0,
        ResetReason::SlowConsumer => 1,
        ResetReason::FutureRevision => 2,
    }
}

impl WatchCounters {
    fn opened(self: &Arc<Self>) -> OpenWatch {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenWatch(Arc::clone(self))
    }

    pub(crate) fn reset(&self, reason: ResetReason) {
        self.resets[reason_index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// Watch streams open now (the registry's own metrics watch included).
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Resets so far, by reason.
    pub fn resets(&self) -> Vec<(ResetReason, u64)> {
        REASONS
            .iter()
            .map(|reason| {
                (
                    *reason,
                    self.resets[reason_index(*reason)].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// How much one watch stream may queue for its client.
#[derive(Debug, Clone, Copy)]
pub struct WatchBuffer {
    pub messages: usize,
    pub bytes: usize,
}

impl Catalog {
    /// Follows every service into `apply`, event by event, until `stop`:
    /// the in-memory views of metrics and DNS. A watcher like any other (it
    /// never blocks a write); after an error or a reset it starts over from
    /// a snapshot a second later. `who` names the follower in logs.
    pub async fn follow_services(
        &self,
        buffer_bytes: usize,
        stop: CancellationToken,
        who: &'static str,
        mut apply: impl FnMut(&switchyard_model::watch::WatchEvent) + Send,
    ) {
        let buffer = WatchBuffer {
            messages: crate::store::defaults::WATCH_BUFFER,
            bytes: buffer_bytes,
        };
        while !stop.is_cancelled() {
            match self.watch(Vec::new(), 0, buffer, stop.clone()) {
                Ok(stream) => {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(Ok(event)) = stream.next().await {
                        apply(&event);
                    }
                }
                Err(error) => tracing::warn!(%error, who, "cannot watch the catalog; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }

    /// Watches `services` (all when empty) from `from_revision` (0: snapshot
    /// first). The stream ends when `cancel` fires.
    pub fn watch(
        &self,
        services: Vec<String>,
        from_revision: u64,
        buffer: WatchBuffer,
        cancel: CancellationToken,
    ) -> Result<impl Stream<Item = Result<WatchEvent, CatalogError>> + Send + 'static, CatalogError>
    {
        for (index, name) in services.iter().enumerate() {
            validate::service_name(&format!("services[{index}]"), name)?;
        }
        let (sender, stream) = outbox(buffer.messages, buffer.bytes);
        let catalog = self.clone();
        tokio::spawn(async move {
            let _open = catalog.watches.opened();
            tokio::select! {
                () = catalog.run_watch(services, from_revision, &sender) => {}
                () = cancel.cancelled() => {}
                () = sender.closed() => {}
            }
        });
        Ok(stream)
    }

    async fn run_watch(&self, services: Vec<String>, from_revision: u64, sender: &Sender) {
        let filter: BTreeSet<String> = services.iter().cloned().collect();
        let Some(mut position) = self.start_position(from_revision, sender).await else {
            return;
        };
        // A client's resume point that the history no longer holds is the
        // client's to hear about (reset reason `compacted`).
        let mut resumed_by_client = position != 0;
        loop {
            if position == 0 {
                match self.send_snapshot(&services, sender).await {
                    Some(revision) => position = revision,
                    None => return,
                }
            }
            let stream = self
                .store
                .watch(
                    keys::WATCHED.to_vec(),
                    position,
                    self.config.progress_interval,
                )
                .await;
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(StoreError::Compacted { compacted, .. }) => {
                    if !reset(
                        sender,
                        resumed_by_client,
                        position,
                        compacted,
                        &self.watches,
                    )
                    .await
                    {
                        return;
                    }
                    position = 0;
                    resumed_by_client = false;
                    continue;
                }
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            resumed_by_client = false;
            loop {
                let Some(item) = stream.next().await else {
                    // The store closed (shutdown): end the stream cleanly.
                    return;
                };
                let delivered = match item {
                    Ok(WatchItem::Events { revision, events }) => {
                        position = revision;
                        match changes(&filter, events) {
                            Ok(changes) if changes.is_empty() => true,
                            Ok(changes) => {
                                send(sender, WatchEvent::Changes { revision, changes }).await
                            }
                            Err(error) => {
                                let _ = sender.send(Err(error)).await;
                                return;
                            }
                        }
                    }
                    Ok(WatchItem::Progress { revision }) => {
                        position = position.max(revision);
                        send(sender, WatchEvent::Progress { revision: position }).await
                    }
                    Err(StoreError::Compacted { compacted, .. }) => {
                        if !reset(sender, false, position, compacted, &self.watches).await {
                            return;
                        }
                        position = 0;
                        break;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                if !delivered {
                    return;
                }
            }
        }
    }

    /// Where a watch from `from_revision` starts: there, or at a snapshot
    /// (0) after a `future_revision` reset when the registry has not
    /// reached it. `None`: the stream is over.
    async fn start_position(&self, from_revision: u64, sender: &Sender) -> Option<u64> {
        if from_revision == 0 {
            return Some(0);
        }
        match self.ahead_of_registry(from_revision).await {
            Ok(None) => Some(from_revision),
            Ok(Some(current)) => reset_future(sender, from_revision, current, &self.watches)
                .await
                .then_some(0),
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                None
            }
        }
    }

    /// The registry's revision when `revision` is beyond it (the client
    /// followed a registry that was since restored from an older copy).
    async fn ahead_of_registry(&self, revision: u64) -> Result<Option<u64>, CatalogError> {
        let current = self.store.current_revision().await?;
        Ok((revision > current).then_some(current))
    }

    /// Sends a snapshot in parts, each decoded as it goes (the outbox's
    /// bound then holds memory to a few parts); answers its revision, or
    /// None when the client went away or the read failed (the error was sent).
    async fn send_snapshot(&self, services: &[String], sender: &Sender) -> Option<u64> {
        let failed = |error| async move {
            let _ = sender.send(Err(error)).await;
            None
        };
        let mut raw = match self.raw_snapshot(services).await {
            Ok(raw) => raw,
            Err(error) => return failed(error).await,
        };
        let revision = raw.revision();
        let chunk = self.config.snapshot_chunk.max(1);
        loop {
            let services = match raw.next_part(chunk, super::snapshot::PART_INSTANCES) {
                Ok(services) => services,
                Err(error) => return failed(error).await,
            };
            let complete = raw.remaining() == 0;
            let event = WatchEvent::Snapshot {
                revision,
                services,
                complete,
            };
            if !send(sender, event).await {
                return None;
            }
            if complete {
                return Some(revision);
            }
        }
    }
}

async fn send(sender: &Sender, event: WatchEvent) -> bool {
    sender.send(Ok(event)).await
}

async fn reset(
    sender: &Sender,
    asked_by_client: bool,
    position: u64,
    compacted: u64,
    watches: &WatchCounters,
) -> bool {
    let (reason, message) = if asked_by_client {
        (
            ResetReason::Compacted,
            format!(
                "revision {position} is older than the retained history (compacted through \
                 {compacted}); a fresh snapshot follows"
            ),
        )
    } else {
        (
            ResetReason::SlowConsumer,
            format!(
                "this watcher fell behind the retained history (at revision {position}, \
                 compacted through {compacted}); a fresh snapshot follows"
            ),
        )
    };
    tracing::info!(reason = reason.as_str(), position, compacted, "watch reset");
    watches.reset(reason);
    send(sender, WatchEvent::Reset { reason, message }).await
}

async fn reset_future(sender: &Sender, asked: u64, current: u64, watches: &WatchCounters) -> bool {
    watches.reset(ResetReason::FutureRevision);
    let message = format!(
        "revision {asked} is ahead of this registry (at {current}): it was restored from an \
         older copy or is another registry; a fresh snapshot follows"
    );
    tracing::warn!(
        reason = ResetReason::FutureRevision.as_str(),
        asked,
        current,
        "watch reset"
    );
    send(
        sender,
        WatchEvent::Reset {
            reason: ResetReason::FutureRevision,
            message,
        },
    )
    .await
}

fn changes(
    filter: &BTreeSet<String>,
    events: Vec<crate::store::Event>,
) -> Result<Vec<Change>, CatalogError> {
    let mut changes = Vec::new();
    for event in events {
        let Some(watched) = keys::parse_watched(&event.kv.key) else {
            continue;
        };
        let service = match &watched {
            keys::Watched::Service(name) => name,
            keys::Watched::Instance { service, .. } => service,
        };
        if !filter.is_empty() && !filter.contains(service) {
            continue;
        }
        match (event.kind, watched) {
            (EventKind::Put, keys::Watched::Service(name)) => {
                changes.push(Change::ServiceUpdated(decode_service(&name, &event.kv)?));
            }
            (EventKind::Put, keys::Watched::Instance { .. }) => {
                changes.push(Change::InstanceUpdated(decode_instance(&event.kv)?));
            }
            (EventKind::Delete, keys::Watched::Instance { service, id }) => {
                changes.push(Change::InstanceRemoved { service, id });
            }
            // Service records are never deleted.
            (EventKind::Delete, keys::Watched::Service(_)) => {}
        }
    }
    Ok(changes)
}
