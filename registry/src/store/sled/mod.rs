//! The embedded backend: sled on disk, a copy of the live keys in memory.
//!
//! One writer thread owns every change. It takes all the requests waiting
//! (group commit), evaluates them in order against an overlay of the live
//! state, writes the resulting keys, history and lease records as one sled
//! batch, fsyncs once, and only then publishes the new state to readers and
//! watchers and answers the callers. So nothing is acknowledged, read or
//! watched before it is on disk, and a `kill -9` loses only unanswered writes.
//!
//! Reads never touch the disk: they are served from the in-memory copy under
//! a read lock, at the revision it reflects. On disk are the watch history
//! (every revision's events, bounded by `history_revisions`, so watchers
//! resume across restarts) and snapshots of the live keys: the state on
//! open is the last snapshot with the history after it replayed
//! (`snapshot.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::codec;

mod live;
mod restore;
mod snapshot;
mod watch;
mod writer;

use super::stats::StoreStats;
use super::{Event, LeaseId, Op, OpResult, Store, StoreError, Txn, TxnResponse, WatchStream};
use live::LiveKeys;
use watch::{Recent, Watcher};
use writer::{Overlay, run_writer};

/// Live keys of the earlier layout, one sled key each; converted on open.
const KEY_PREFIX: u8 = b'k';
const HISTORY_PREFIX: u8 = b'h';
const LEASE_PREFIX: u8 = b'l';
const META_REVISION: &[u8] = b"m:revision";
const META_COMPACTED: &[u8] = b"m:compacted";
/// The first revision whose history entry is compressed; earlier entries
/// (written before compression) are read as they are.
const META_COMPRESSED_FROM: &[u8] = b"m:compressed-from";
/// Most requests committed under one fsync.
const MAX_GROUP: usize = 1024;

/// Settings of the sled backend.
#[derive(Debug, Clone)]
pub struct SledConfig {
    pub path: PathBuf,
    /// Revisions of watch history kept on disk; older ones are compacted.
    pub history_revisions: u64,
    /// Recent revisions kept in memory for watchers (and at most 16 MiB of
    /// them); a watcher that needs an older one reads the history on disk.
    pub watch_buffer: usize,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// History written since the last snapshot that triggers a new one even
    /// while the live keys are smaller than this.
    pub snapshot_min_bytes: u64,
    /// How often the writer looks for expired leases.
    pub lease_check_interval: Duration,
}

impl SledConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledConfig {
            path: path.into(),
            history_revisions: super::defaults::HISTORY_REVISIONS,
            watch_buffer: super::defaults::WATCH_BUFFER,
            cache_bytes: super::defaults::SLED_CACHE_MIB * 1024 * 1024,
            snapshot_min_bytes: 8 * 1024 * 1024,
            lease_check_interval: Duration::from_millis(100),
        }
    }
}

/// A live lease. Its keys are not listed here: a revoke finds them by
/// scanning the keys (rare, and about a millisecond per 100k keys), which
/// saves a second copy of every leased key in memory and its upkeep on
/// every write.
#[derive(Debug)]
struct LeaseInfo {
    ttl: Duration,
}

/// The live state readers see: only ever what is durable.
#[derive(Debug, Default)]
struct State {
    kv: LiveKeys,
    leases: HashMap<LeaseId, LeaseInfo>,
    revision: u64,
    compacted: u64,
    /// The revision of the snapshot on disk.
    snapshot: u64,
    /// Bytes of history written after that snapshot.
    history_since_snapshot: u64,
    /// See [`META_COMPRESSED_FROM`].
    compressed_from: u64,
}

/// Why the data directory at `path` cannot be opened, and what to do.
fn open_error(path: &std::path::Path, error: &sled::Error) -> StoreError {
    match error {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
            StoreError::Storage(format!(
                "another process holds the data directory {} (is another cd-registry using \
                 it?): stop it, or give this registry its own --data-dir",
                path.display()
            ))
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            StoreError::Storage(format!(
                "cannot open the data directory {}: {io}; give the registry's user access to it",
                path.display()
            ))
        }
        other => damaged(path, &other.to_string()),
    }
}

/// A data directory that opens but whose contents are damaged.
fn damaged(path: &std::path::Path, why: &str) -> StoreError {
    StoreError::Storage(format!(
        "the data directory {dir} is damaged: {why} (sled's files `db` and `conf` in it). To \
         recover, either restore a backup into a new directory (`cd-registry restore --from \
         BACKUP --data-dir NEW_DIR`, backups come from `cdctl snapshot save`) and start with \
         --data-dir NEW_DIR; or move {dir} aside and start empty: agents register their \
         instances again within seconds, but live colors and deployment history then come \
         only from a backup",
        dir = path.display()
    ))
}

/// The events of the history entry of `revision`, as stored.
fn decode_history(
    compressed_from: u64,
    revision: u64,
    bytes: &[u8],
) -> Result<Vec<Event>, StoreError> {
    if revision >= compressed_from {
        codec::decode_compressed_events(bytes)
    } else {
        codec::decode_events(bytes)
    }
}

/// One committed revision, as published to watchers.
#[derive(Debug)]
struct Committed {
    revision: u64,
    events: Vec<Event>,
}

/// The open database; taken out on close so the directory lock is released
/// even while watchers still hold on to `Shared`.
struct Disk {
    db: sled::Db,
    tree: sled::Tree,
}

struct Shared {
    disk: RwLock<Option<Disk>>,
    state: RwLock<State>,
    /// Lease deadlines, apart from `state` so keep-alives never wait for writes.
    deadlines: Mutex<HashMap<LeaseId, (Duration, Instant)>>,
    /// Recent commits for watchers following live.
    recent: Recent,
    /// Set after a failed disk write: the in-memory copy may no longer match
    /// the disk, so every later write is refused until a restart reloads it.
    failed: AtomicBool,
    closing: CancellationToken,
    history_revisions: u64,
    snapshot_min_bytes: u64,
    /// Fsync and snapshot timings, group sizes, compactions, sizes.
    stats: Arc<StoreStats>,
    /// When the writer last read the size on disk (at most once a second).
    sized_at: Mutex<Option<Instant>>,
    /// The thread writing a snapshot, if one was started (`writer.rs`).
    snapshotting: Mutex<Option<JoinHandle<()>>>,
    /// Unit tests hold a snapshot here until they send on the gate.
    #[cfg(test)]
    snapshot_gate: Mutex<Option<mpsc::Receiver<()>>>,
}

enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResponse, StoreError>>),
    Grant(
        LeaseId,
        Duration,
        oneshot::Sender<Result<LeaseId, StoreError>>,
    ),
    /// No reply channel: a lease the writer found expired.
    Revoke(LeaseId, Option<oneshot::Sender<Result<u64, StoreError>>>),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// The embedded store. Cheap to share behind an `Arc`.
pub struct SledStore {
    shared: Arc<Shared>,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn storage(error: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(error.to_string())
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(rest.len() + 1);
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

fn history_key(revision: u64) -> Vec<u8> {
    prefixed(HISTORY_PREFIX, &revision.to_be_bytes())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere already; the data it guards is
    // plain and stays consistent, so keep going rather than cascade.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Runs `action` on the open database, or fails with `Closed`.
    fn with_disk<R>(
        &self,
        action: impl FnOnce(&Disk) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let disk = self.disk.read().unwrap_or_else(|p| p.into_inner());
        match disk.as_ref() {
            Some(disk) => action(disk),
            None => Err(StoreError::Closed),
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a snapshot until the unit test that set a gate sends on it.
    #[cfg(test)]
    fn wait_at_snapshot_gate(&self) {
        let gate = lock(&self.snapshot_gate).take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closing.is_cancelled() {
            return Err(StoreError::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Storage(
                "an earlier disk write failed; restart the registry to reload from disk".into(),
            ));
        }
        Ok(())
    }
}

impl SledStore {
    /// Opens (or creates) the store at `config.path` and starts its writer.
    /// Every lease found on disk gets a fresh TTL from now (docs/semantics.md, guarantee 6).
    /// Builds a new data directory at `path` holding exactly `entries` at
    /// `revision`, with no history before it (`restore.rs`).
    pub fn restore(
        path: &std::path::Path,
        revision: u64,
        entries: Vec<super::KeyValue>,
    ) -> Result<(), StoreError> {
        restore::restore(path, revision, entries)
    }

    pub fn open(config: SledConfig) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_bytes)
            .open()
            .map_err(|error| open_error(&config.path, &error))?;
        let tree = db
            .open_tree("switchyard")
            .map_err(|error| open_error(&config.path, &error))?;
        let disk = Disk { db, tree };
        let state = snapshot::load(&disk).map_err(|error| match error {
            StoreError::Storage(why) => damaged(&config.path, &why),
            other => other,
        })?;
        let state_revision = state.revision;
        let state_keys = state.kv.len() as u64;
        let now = Instant::now();
        let deadlines = state
            .leases
            .iter()
            .map(|(id, info)| (*id, (info.ttl, now + info.ttl)))
            .collect();
        let shared = Arc::new(Shared {
            disk: RwLock::new(Some(disk)),
            state: RwLock::new(state),
            deadlines: Mutex::new(deadlines),
            recent: Recent::new(config.watch_buffer, state_revision),
            failed: AtomicBool::new(false),
            closing: CancellationToken::new(),
            history_revisions: config.history_revisions.max(1),
            snapshot_min_bytes: config.snapshot_min_bytes,
            stats: Arc::new(StoreStats::new("sled")),
            sized_at: Mutex::new(None),
            snapshotting: Mutex::new(None),
            #[cfg(test)]
            snapshot_gate: Mutex::new(None),
        });
        StoreStats::set(&shared.stats.live_keys, state_keys);
        StoreStats::set(&shared.stats.revision, state_revision);
        let (sender, receiver) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let interval = config.lease_check_interval;
        let writer = std::thread::Builder::new()
            .name("sled-writer".into())
            .spawn(move || run_writer(&writer_shared, &receiver, interval))
            .map_err(storage)?;
        Ok(SledStore {
            shared,
            requests: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// How many times the store has flushed to disk since it opened
    /// (groups and snapshots).
    pub fn fsync_count(&self) -> u64 {
        self.shared.stats.fsync_seconds.snapshot().count
            + self.shared.stats.snapshot_seconds.snapshot().count
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.shared.check_open()?;
        let guard = lock(&self.requests);
        let sender = guard.as_ref().ok_or(StoreError::Closed)?;
        sender.send(request).map_err(|_| StoreError::Closed)
    }
}

fn lease_key(id: LeaseId) -> Vec<u8> {
    prefixed(LEASE_PREFIX, &id.to_be_bytes())
}

/// Reads the big-endian number after the one-byte prefix of a history or
/// lease key (big-endian, so that keys sort by number).
fn number_after_prefix(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .get(1..9)
        .and_then(|slice| slice.try_into().ok())
        .ok_or_else(|| StoreError::Storage("corrupt key on disk".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        if txn.is_read_only() {
            self.shared.check_open()?;
            let state = self.shared.read_state();
            let overlay = Overlay::default();
            let succeeded = txn
                .compares
                .iter()
                .all(|compare| compare.holds(state.kv.get(compare.key()).as_ref()));
            let ops = if succeeded { txn.success } else { txn.failure };
            let results = ops
                .into_iter()
                .map(|op| match op {
                    Op::Range { prefix } => OpResult::Range(overlay.range(&state, &prefix)),
                    Op::Get { key } => OpResult::Range(state.kv.get(&key).into_iter().collect()),
                    // Read-only by the check above.
                    Op::Put { .. } => OpResult::Put,
                    Op::Delete { .. } => OpResult::Delete { deleted: false },
                })
                .collect();
            return Ok(TxnResponse {
                succeeded,
                revision: state.revision,
                results,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Txn(txn, reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.shared.check_open()?;
        Ok(self.shared.read_state().revision)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // Positive i64 range, like etcd's lease ids, and never zero.
        let id = rand::random_range(1..=i64::MAX as u64);
        let (reply, answer) = oneshot::channel();
        self.send(Request::Grant(id, ttl, reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.shared.check_open()?;
        let mut deadlines = lock(&self.shared.deadlines);
        match deadlines.get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + *ttl;
                Ok(*ttl)
            }
            None => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Revoke(lease, Some(reply)))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(
        &self,
        prefix: Vec<u8>,
        from_revision: u64,
        progress_every: Duration,
    ) -> Result<WatchStream, StoreError> {
        self.shared.check_open()?;
        // Subscribe before reading the state, so no commit falls between.
        let receiver = self.shared.recent.subscribe();
        let compacted = self.shared.read_state().compacted;
        if from_revision < compacted {
            return Err(StoreError::Compacted {
                requested: from_revision,
                compacted,
            });
        }
        let watcher = Watcher::new(
            Arc::clone(&self.shared),
            prefix,
            from_revision,
            receiver,
            progress_every,
        );
        let stream = futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        });
        Ok(Box::pin(stream))
    }

    fn stats(&self) -> Arc<StoreStats> {
        Arc::clone(&self.shared.stats)
    }

    async fn close(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let sent = lock(&self.requests)
            .take()
            .map(|sender| sender.send(Request::Close(reply)));
        let result = match sent {
            Some(Ok(())) => answer.await.unwrap_or(Err(StoreError::Closed)),
            Some(Err(_)) | None => Ok(()),
        };
        self.shared.closing.cancel();
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer {
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the store's writer thread ended abnormally");
            }
        }
        // A snapshot being written gives up at its next chunk.
        let snapshotting = lock(&self.shared.snapshotting).take();
        if let Some(thread) = snapshotting {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the store's snapshot thread ended abnormally");
            }
        }
        // Drop the database now, releasing its directory lock, even if
        // watchers still hold the shared state for a moment.
        let disk = self
            .shared
            .disk
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(disk);
        result
    }
}
