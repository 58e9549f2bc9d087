//! One sled watch: catch up from the on-disk history, then follow commits
//! live from [`Recent`], and fall back to the history whenever the commits
//! it needs are no longer there.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Committed, Shared, decode_history, history_key, lock, number_after_prefix, storage};
use crate::store::{Event, StoreError, WatchItem, in_prefix};

/// Bytes of keys and values the recent commits may hold: a 1,000-instance
/// `SyncNode` is one commit of a few hundred kilobytes, so a bound in
/// revisions alone could keep hundreds of megabytes for watchers that have
/// long read them.
const RECENT_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The most recent commits, in memory for watchers following live: at most
/// `max_entries` revisions and [`RECENT_MAX_BYTES`], whichever comes first
/// (the newest is always kept). The writer pushes and never waits; a
/// watcher that needs a commit no longer here reads the on-disk history.
pub(super) struct Recent {
    ring: Mutex<Ring>,
    /// The newest revision pushed; watchers wait on its changes.
    latest: watch::Sender<u64>,
    max_entries: usize,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<(Arc<Committed>, usize)>,
    bytes: usize,
}

impl Recent {
    pub(super) fn new(max_entries: usize, revision: u64) -> Self {
        Recent {
            ring: Mutex::new(Ring::default()),
            latest: watch::Sender::new(revision),
            max_entries: max_entries.max(1),
        }
    }

    pub(super) fn push(&self, committed: Committed) {
        let revision = committed.revision;
        if self.latest.receiver_count() == 0 {
            // Nobody follows live. A watcher that subscribes later reads
            // everything up to the state it then sees from disk, and this
            // commit is already in that state.
            self.latest.send_replace(revision);
            return;
        }
        // What the events hold in memory: the event itself, then the key's
        // and the value's heap blocks with a little for the allocator.
        let size = committed
            .events
            .iter()
            .map(|event| {
                std::mem::size_of::<Event>()
                    + event.kv.key.capacity()
                    + event.kv.value.capacity()
                    + 32
            })
            .sum::<usize>();
        {
            let mut ring = lock(&self.ring);
            ring.entries.push_back((Arc::new(committed), size));
            ring.bytes += size;
            while ring.entries.len() > 1
                && (ring.entries.len() > self.max_entries || ring.bytes > RECENT_MAX_BYTES)
            {
                if let Some((_, dropped)) = ring.entries.pop_front() {
                    ring.bytes -= dropped;
                }
            }
        }
        self.latest.send_replace(revision);
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The commits after `last`, oldest first; `None` when some of them are
    /// no longer here.
    fn after(&self, last: u64) -> Option<Vec<Arc<Committed>>> {
        let ring = lock(&self.ring);
        match ring.entries.front() {
            // Saturating: a client may ask for any revision, up to u64::MAX.
            Some((oldest, _)) if oldest.revision > last.saturating_add(1) => None,
            _ => {
                // In revision order: a thousand watchers woken by one commit
                // each find their place by bisection, not by a scan of the
                // ring under its lock.
                let first_new = ring
                    .entries
                    .partition_point(|(committed, _)| committed.revision <= last);
                Some(
                    ring.entries
                        .range(first_new..)
                        .map(|(committed, _)| Arc::clone(committed))
                        .collect(),
                )
            }
        }
    }
}

/// Revisions read from disk at a time while a watcher catches up.
const CATCH_UP_CHUNK: u64 = 512;

/// One watch: catches up from the on-disk history, then follows commits live,
/// falling back to the history whenever it falls behind the live buffer.
///
/// It is a stream read by its consumer, not a task of its own: nothing is
/// read ahead of the consumer beyond one catch-up chunk from disk, and a consumer that stops reading costs the
/// store only its position (the commits it has not read stay in [`Recent`]
/// or on disk, as for every watcher).
pub(super) struct Watcher {
    pub(super) shared: Arc<Shared>,
    pub(super) prefix: Vec<u8>,
    /// The last revision delivered (or skipped as not matching).
    pub(super) last: u64,
    /// Read from disk or from [`Recent`], not yet handed to the consumer.
    pending: VecDeque<WatchItem>,
    mode: Mode,
    receiver: watch::Receiver<u64>,
    ticker: tokio::time::Interval,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    CatchUp,
    Follow,
    Stopped,
}

impl Watcher {
    pub(super) fn new(
        shared: Arc<Shared>,
        prefix: Vec<u8>,
        last: u64,
        receiver: watch::Receiver<u64>,
        progress_every: Duration,
    ) -> Self {
        let start = tokio::time::Instant::now() + progress_every;
        let mut ticker = tokio::time::interval_at(start, progress_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watcher {
            shared,
            prefix,
            last,
            pending: VecDeque::new(),
            mode: Mode::CatchUp,
            receiver,
            ticker,
        }
    }

    /// The next item for the consumer; `None` when the store closes (an
    /// error is the last item).
    pub(super) async fn next(&mut self) -> Option<Result<WatchItem, StoreError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            match self.mode {
                Mode::Stopped => return None,
                Mode::CatchUp => {
                    if let Err(error) = self.catch_up() {
                        self.mode = Mode::Stopped;
                        return Some(Err(error));
                    }
                }
                Mode::Follow => self.follow().await,
            }
        }
    }

    /// Queues the events of `revision` under the prefix, if any. Only
    /// matching events are copied: a commit is shared by every watcher and
    /// may hold thousands of other keys.
    fn deliver(&mut self, revision: u64, events: &[Event]) {
        let matching: Vec<Event> = events
            .iter()
            .filter(|event| in_prefix(&event.kv.key, &self.prefix))
            .cloned()
            .collect();
        self.last = revision;
        if !matching.is_empty() {
            self.pending.push_back(WatchItem::Events {
                revision,
                events: matching,
            });
        }
    }

    /// Reads up to [`CATCH_UP_CHUNK`] revisions after `last` from disk;
    /// switches to following live once at the current revision.
    fn catch_up(&mut self) -> Result<(), StoreError> {
        let (current, compacted, compressed_from) = {
            let state = self.shared.read_state();
            (state.revision, state.compacted, state.compressed_from)
        };
        if self.last >= current {
            self.mode = Mode::Follow;
            return Ok(());
        }
        if self.last < compacted {
            return Err(StoreError::Compacted {
                requested: self.last,
                compacted,
            });
        }
        let until = current.min(self.last.saturating_add(CATCH_UP_CHUNK));
        let from = self.last + 1;
        let entries = self.shared.with_disk(|disk| {
            let mut entries = Vec::new();
            for entry in disk.tree.range(history_key(from)..=history_key(until)) {
                let (key, value) = entry.map_err(storage)?;
                let revision = number_after_prefix(&key)?;
                let events = decode_history(compressed_from, revision, &value)?;
                entries.push((revision, events));
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
            self.deliver(revision, &events);
        }
        Ok(())
    }

    /// Takes the commits after `last` from [`Recent`] (back to the disk
    /// when some are gone), or else waits for the next commit, a progress
    /// tick, or the store's close.
    async fn follow(&mut self) {
        // Marked seen before looking, so a push after the look wakes us.
        self.receiver.borrow_and_update();
        let Some(commits) = self.shared.recent.after(self.last) else {
            self.mode = Mode::CatchUp;
            return;
        };
        for committed in commits {
            if committed.revision > self.last.saturating_add(1) {
                self.mode = Mode::CatchUp;
                return;
            }
            self.deliver(committed.revision, &committed.events);
        }
        if !self.pending.is_empty() {
            return;
        }
        tokio::select! {
            changed = self.receiver.changed() => {
                if changed.is_err() {
                    self.mode = Mode::Stopped;
                }
            }
            _ = self.ticker.tick() => {
                self.pending.push_back(WatchItem::Progress { revision: self.last });
            }
            _ = self.shared.closing.cancelled() => self.mode = Mode::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventKind, KeyValue};

    fn commit(revision: u64, value_bytes: usize) -> Committed {
        Committed {
            revision,
            events: vec![Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: b"k".to_vec(),
                    value: vec![0; value_bytes],
                    create_revision: 1,
                    mod_revision: revision,
                    version: revision,
                    lease: None,
                },
            }],
        }
    }

    fn revisions(commits: Option<Vec<Arc<Committed>>>) -> Option<Vec<u64>> {
        commits.map(|commits| commits.iter().map(|c| c.revision).collect())
    }

    #[test]
    fn recent_commits_are_bounded_in_revisions() {
        let recent = Recent::new(3, 0);
        let _follower = recent.subscribe();
        assert_eq!(revisions(recent.after(0)), Some(vec![]));
        for revision in 1..=5 {
            recent.push(commit(revision, 10));
        }
        assert_eq!(revisions(recent.after(2)), Some(vec![3, 4, 5]));
        assert_eq!(revisions(recent.after(4)), Some(vec![5]));
        assert_eq!(revisions(recent.after(5)), Some(vec![]));
        assert_eq!(revisions(recent.after(1)), None, "revision 2 is gone");
        assert_eq!(*recent.subscribe().borrow(), 5);
    }

    #[test]
    fn recent_commits_are_bounded_in_bytes_but_keep_the_newest() {
        let recent = Recent::new(1000, 0);
        let _follower = recent.subscribe();
        for revision in 1..=4 {
            recent.push(commit(revision, RECENT_MAX_BYTES / 3));
        }
        assert_eq!(revisions(recent.after(2)), Some(vec![3, 4]));
        assert_eq!(revisions(recent.after(1)), None);
        recent.push(commit(5, RECENT_MAX_BYTES * 2));
        assert_eq!(revisions(recent.after(4)), Some(vec![5]));
        assert_eq!(revisions(recent.after(3)), None);
    }

    #[test]
    fn recent_commits_are_not_kept_while_nobody_follows() {
        let recent = Recent::new(10, 0);
        recent.push(commit(1, 10));
        assert_eq!(revisions(recent.after(0)), Some(vec![]));
        assert_eq!(*recent.subscribe().borrow(), 1);
        let _follower = recent.subscribe();
        recent.push(commit(2, 10));
        assert_eq!(
            revisions(recent.after(0)),
            None,
            "revision 1 was never kept"
        );
        assert_eq!(revisions(recent.after(1)), Some(vec![2]));
    }
}
