//! One sled watch: catch up from the on-disk history, then follow commits
//! live, and fall back to the history whenever the live buffer overflows.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{Committed, Shared, codec, history_key, number_after_prefix, storage};
use crate::store::{Event, StoreError, WatchItem, in_prefix};

/// Revisions read from disk at a time while a watcher catches up.
const CATCH_UP_CHUNK: u64 = 512;

/// One watch: catches up from the on-disk history, then follows commits live,
/// falling back to the history whenever it falls behind the live buffer.
pub(super) struct Watcher {
    pub(super) shared: Arc<Shared>,
    pub(super) prefix: Vec<u8>,
    /// The last revision delivered (or skipped as not matching).
    pub(super) last: u64,
    pub(super) sender: tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
}

enum Next {
    CatchUp,
    Stop,
}

impl Watcher {
    pub(super) async fn run(
        mut self,
        mut receiver: broadcast::Receiver<Arc<Committed>>,
        progress_every: Duration,
    ) {
        loop {
            if let Err(error) = self.catch_up().await {
                let _ = self.sender.send(Err(error)).await;
                return;
            }
            match self.follow(&mut receiver, progress_every).await {
                Next::CatchUp => continue,
                Next::Stop => return,
            }
        }
    }

    async fn deliver(&mut self, revision: u64, events: Vec<Event>) -> bool {
        let matching: Vec<Event> = events
            .into_iter()
            .filter(|event| in_prefix(&event.kv.key, &self.prefix))
            .collect();
        self.last = revision;
        if matching.is_empty() {
            return true;
        }
        self.sender
            .send(Ok(WatchItem::Events {
                revision,
                events: matching,
            }))
            .await
            .is_ok()
    }

    /// Reads every revision after `last` up to the current one from disk.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        loop {
            let (current, compacted) = {
                let state = self.shared.read_state();
                (state.revision, state.compacted)
            };
            if self.last >= current {
                return Ok(());
            }
            if self.last < compacted {
                return Err(StoreError::Compacted {
                    requested: self.last,
                    compacted,
                });
            }
            let until = current.min(self.last + CATCH_UP_CHUNK);
            let from = self.last + 1;
            let entries = self.shared.with_disk(|disk| {
                let mut entries = Vec::new();
                for entry in disk.tree.range(history_key(from)..=history_key(until)) {
                    let (key, value) = entry.map_err(storage)?;
                    entries.push((number_after_prefix(&key)?, codec::decode_events(&value)?));
                }
                Ok(entries)
            })?;
            let complete = entries.first().map(|(revision, _)| *revision) == Some(self.last + 1)
                && entries.len() as u64 == until - self.last;
            if !complete {
                // Compaction overtook this read; the next pass reports it.
                let compacted = self.shared.read_state().compacted;
                if self.last < compacted {
                    return Err(StoreError::Compacted {
                        requested: self.last,
                        compacted,
                    });
                }
                return Err(StoreError::Storage(format!(
                    "watch history between revisions {} and {until} is missing",
                    self.last + 1
                )));
            }
            for (revision, events) in entries {
                if !self.deliver(revision, events).await {
                    return Ok(());
                }
            }
        }
    }

    async fn follow(
        &mut self,
        receiver: &mut broadcast::Receiver<Arc<Committed>>,
        progress_every: Duration,
    ) -> Next {
        let start = tokio::time::Instant::now() + progress_every;
        let mut ticker = tokio::time::interval_at(start, progress_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = receiver.recv() => match received {
                    Ok(committed) => {
                        if committed.revision <= self.last {
                            continue;
                        }
                        if committed.revision > self.last + 1 {
                            return Next::CatchUp;
                        }
                        if !self.deliver(committed.revision, committed.events.clone()).await {
                            return Next::Stop;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Next::CatchUp,
                    Err(broadcast::error::RecvError::Closed) => return Next::Stop,
                },
                _ = ticker.tick() => {
                    let progress = WatchItem::Progress { revision: self.last };
                    if self.sender.send(Ok(progress)).await.is_err() {
                        return Next::Stop;
                    }
                }
                _ = self.sender.closed() => return Next::Stop,
                _ = self.shared.closing.cancelled() => return Next::Stop,
            }
        }
    }
}
