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

use super::{Catalog, CatalogError, decode_instance, decode_service, keys};
use crate::store::{EventKind, StoreError, WatchItem, WatchStream};

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

impl Catalog {
    /// Follows every service into `apply`, event by event, until `stop`:
    /// the in-memory views of metrics and DNS. A watcher like any other (it
    /// never blocks a write); after an error or a reset it starts over from
    /// a snapshot a second later. `who` names the follower in logs.
    pub async fn follow_services(
        &self,
        stop: CancellationToken,
        who: &'static str,
        mut apply: impl FnMut(&switchyard_model::watch::WatchEvent) + Send,
    ) {
        while !stop.is_cancelled() {
            match self.watch(Vec::new(), 0, stop.clone()) {
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
    ///
    /// Nothing runs ahead of the client: each event is read from the store,
    /// decoded and handed over when the stream is polled, and the gRPC layer
    /// polls only while HTTP/2 flow control lets it send. A client that
    /// stops reading therefore stops its own watch (the store keeps nothing
    /// for it but its position); when it reads again the watch catches up
    /// from the history, or is reset if that was compacted past it. One task
    /// per watcher (the stream's), where a task and two queues between the
    /// store, the catalog and the connection used to cost a third of a
    /// fan-out.
    pub fn watch(
        &self,
        services: Vec<String>,
        from_revision: u64,
        cancel: CancellationToken,
    ) -> Result<impl Stream<Item = Result<WatchEvent, CatalogError>> + Send + 'static, CatalogError>
    {
        for (index, name) in services.iter().enumerate() {
            validate::service_name(&format!("services[{index}]"), name)?;
        }
        let run = WatchRun {
            catalog: self.clone(),
            filter: services.iter().cloned().collect(),
            services,
            position: 0,
            resumed_by_client: false,
            phase: Phase::Start(from_revision),
            _open: self.watches.opened(),
        };
        let stream = futures::stream::unfold(run, |mut run| async move {
            let item = run.next().await?;
            Some((item, run))
        });
        Ok(stream.take_until(cancel.cancelled_owned()))
    }

    /// The registry's revision when `revision` is beyond it (the client
    /// followed a registry that was since restored from an older copy).
    async fn ahead_of_registry(&self, revision: u64) -> Result<Option<u64>, CatalogError> {
        let current = self.store.current_revision().await?;
        Ok((revision > current).then_some(current))
    }
}

/// Where one watch is.
enum Phase {
    /// Not started: the client's resume point (0: a snapshot first).
    Start(u64),
    /// A snapshot is due.
    Snapshot,
    /// A snapshot is being sent, part by part.
    Parts(super::snapshot::RawSnapshot),
    /// The store watch from `position` is to be opened.
    Open,
    /// Following the store.
    Follow(WatchStream),
    /// The stream is over (after an error or the store's end).
    Done,
}

/// One watch stream's state, advanced each time its client reads.
struct WatchRun {
    catalog: Catalog,
    services: Vec<String>,
    filter: BTreeSet<String>,
    /// The revision the client has everything up to.
    position: u64,
    /// The position came from the client (a resume), not from a snapshot:
    /// if the history no longer holds it, the reset is `compacted`.
    resumed_by_client: bool,
    phase: Phase,
    _open: OpenWatch,
}

type Item = Result<WatchEvent, CatalogError>;

impl WatchRun {
    /// The next event for the client; `None` once the stream is over (an
    /// error is the last item).
    async fn next(&mut self) -> Option<Item> {
        loop {
            let step = match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Start(from) => self.start(from).await,
                Phase::Snapshot => match self.catalog.raw_snapshot(&self.services).await {
                    Ok(raw) => {
                        self.phase = Phase::Parts(raw);
                        None
                    }
                    Err(error) => Some(Err(error)),
                },
                Phase::Parts(raw) => Some(self.part(raw)),
                Phase::Open => self.open().await,
                Phase::Follow(stream) => self.follow(stream).await,
            };
            if step.is_some() {
                return step;
            }
        }
    }

    /// Where a watch from `from` starts: there, or at a snapshot after a
    /// `future_revision` reset when the registry has not reached it.
    async fn start(&mut self, from: u64) -> Option<Item> {
        if from == 0 {
            self.phase = Phase::Snapshot;
            return None;
        }
        match self.catalog.ahead_of_registry(from).await {
            Ok(None) => {
                self.position = from;
                // A resume point the history no longer holds is the
                // client's to hear about (reset reason `compacted`).
                self.resumed_by_client = true;
                self.phase = Phase::Open;
                None
            }
            Ok(Some(current)) => {
                self.phase = Phase::Snapshot;
                Some(Ok(reset_future(from, current, &self.catalog.watches)))
            }
            Err(error) => Some(Err(error)),
        }
    }

    /// The next part of the snapshot, decoded only now (so memory holds a
    /// part at a time); the last one moves the watch on to the store.
    fn part(&mut self, mut raw: super::snapshot::RawSnapshot) -> Item {
        let revision = raw.revision();
        let chunk = self.catalog.config.snapshot_chunk.max(1);
        let services = raw.next_part(chunk, super::snapshot::PART_INSTANCES)?;
        let complete = raw.remaining() == 0;
        if complete {
            self.position = revision;
            self.phase = Phase::Open;
        } else {
            self.phase = Phase::Parts(raw);
        }
        Ok(WatchEvent::Snapshot {
            revision,
            services,
            complete,
        })
    }

    async fn open(&mut self) -> Option<Item> {
        let stream = self
            .catalog
            .store
            .watch(
                keys::WATCHED.to_vec(),
                self.position,
                self.catalog.config.progress_interval,
            )
            .await;
        match stream {
            Ok(stream) => {
                self.resumed_by_client = false;
                self.phase = Phase::Follow(stream);
                None
            }
            Err(StoreError::Compacted { compacted, .. }) => Some(Ok(self.reset(compacted))),
            Err(error) => Some(Err(error.into())),
        }
    }

    /// The next item of the store watch that concerns the client.
    async fn follow(&mut self, mut stream: WatchStream) -> Option<Item> {
        // The store's end (shutdown) ends the stream cleanly.
        let item = stream.next().await?;
        let event = match item {
            Ok(WatchItem::Events { revision, events }) => {
                self.position = revision;
                match changes(&self.filter, events) {
                    Ok(changes) if changes.is_empty() => None,
                    Ok(changes) => Some(WatchEvent::Changes { revision, changes }),
                    Err(error) => return Some(Err(error)),
                }
            }
            Ok(WatchItem::Progress { revision }) => {
                self.position = self.position.max(revision);
                Some(WatchEvent::Progress {
                    revision: self.position,
                })
            }
            Err(StoreError::Compacted { compacted, .. }) => return Some(Ok(self.reset(compacted))),
            Err(error) => return Some(Err(error.into())),
        };
        self.phase = Phase::Follow(stream);
        event.map(Ok)
    }

    /// The history no longer reaches back to `position`: a reset, then a
    /// fresh snapshot.
    fn reset(&mut self, compacted: u64) -> WatchEvent {
        let position = self.position;
        let (reason, message) = if self.resumed_by_client {
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
        self.catalog.watches.reset(reason);
        self.position = 0;
        self.resumed_by_client = false;
        self.phase = Phase::Snapshot;
        WatchEvent::Reset { reason, message }
    }
}

fn reset_future(asked: u64, current: u64, watches: &WatchCounters) -> WatchEvent {
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
    WatchEvent::Reset {
        reason: ResetReason::FutureRevision,
        message,
    }
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
