//! The store conformance suite: what every [`Store`] backend must do, written
//! once against the trait. A backend joins by implementing [`Backend`]; the
//! test binary runs every case below against every backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cd_registry::store::sled::{SledConfig, SledStore};
use cd_registry::store::{
    Compare, EventKind, Op, OpResult, Store, StoreError, Txn, WatchItem, WatchStream,
};
use futures::StreamExt;

/// A way to open a store of one backend, again and again on the same data.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Opens the store; after `close`, opening again sees the same data.
    async fn open(&self) -> Arc<dyn Store>;
    /// Opens a fresh store that keeps only `revisions` of watch history.
    async fn open_with_short_history(&self, revisions: u64) -> Arc<dyn Store>;
    /// Makes sure history through `revision` is compacted (sled compacts by
    /// itself; etcd on request).
    async fn compact_through(&self, revision: u64);
    /// How long the store may be closed while a lease of `ttl` survives:
    /// sled's leases pause while it is down (a fresh TTL on open); etcd's
    /// keep running in etcd while a registry replica restarts.
    fn survivable_downtime(&self, ttl: Duration) -> Duration;
}

/// The embedded sled backend in a temporary directory.
pub struct SledBackend {
    dir: tempfile::TempDir,
}

impl SledBackend {
    pub fn new() -> Self {
        SledBackend {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    async fn open_at(path: std::path::PathBuf, history: u64) -> Arc<dyn Store> {
        let mut config = SledConfig::new(path);
        config.history_revisions = history;
        config.watch_buffer = 16;
        let store = tokio::task::spawn_blocking(move || SledStore::open(config))
            .await
            .expect("the open task")
            .expect("opening the sled store");
        Arc::new(store)
    }
}

impl Default for SledBackend {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Backend for SledBackend {
    async fn open(&self) -> Arc<dyn Store> {
        Self::open_at(self.dir.path().join("main"), 100_000).await
    }

    async fn open_with_short_history(&self, revisions: u64) -> Arc<dyn Store> {
        Self::open_at(self.dir.path().join("short"), revisions).await
    }

    async fn compact_through(&self, _revision: u64) {}

    fn survivable_downtime(&self, ttl: Duration) -> Duration {
        ttl + ttl / 4
    }
}

/// A real etcd (one member) per test.
pub struct EtcdBackend {
    pub cluster: crate::etcd::EtcdCluster,
}

impl EtcdBackend {
    pub async fn start() -> Self {
        EtcdBackend {
            cluster: crate::etcd::EtcdCluster::start(1).await,
        }
    }
}

#[async_trait::async_trait]
impl Backend for EtcdBackend {
    async fn open(&self) -> Arc<dyn Store> {
        let config = cd_registry::store::etcd::EtcdConfig {
            endpoints: self.cluster.endpoints(),
            connect_timeout: Duration::from_secs(5),
            access: Default::default(),
        };
        let store = cd_registry::store::etcd::EtcdStore::connect(config)
            .await
            .expect("connecting to etcd");
        Arc::new(store)
    }

    async fn open_with_short_history(&self, _revisions: u64) -> Arc<dyn Store> {
        self.open().await
    }

    async fn compact_through(&self, revision: u64) {
        self.cluster.compact(revision).await;
    }

    fn survivable_downtime(&self, ttl: Duration) -> Duration {
        ttl / 4
    }
}

fn key(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

fn put(k: &str, v: &str) -> Op {
    Op::Put {
        key: key(k),
        value: key(v),
        lease: None,
    }
}

fn leased(k: &str, v: &str, lease: u64) -> Op {
    Op::Put {
        key: key(k),
        value: key(v),
        lease: Some(lease),
    }
}

async fn write(store: &dyn Store, ops: Vec<Op>) -> u64 {
    let response = store
        .txn(Txn {
            success: ops,
            ..Txn::default()
        })
        .await
        .expect("an unguarded write succeeds");
    assert!(response.succeeded);
    response.revision
}

async fn get(store: &dyn Store, k: &str) -> Option<cd_registry::store::KeyValue> {
    let response = store
        .txn(Txn::read(vec![Op::Get { key: key(k) }]))
        .await
        .expect("a read succeeds");
    response
        .results
        .into_iter()
        .next()?
        .into_kvs()
        .into_iter()
        .next()
}

async fn range(store: &dyn Store, prefix: &str) -> Vec<String> {
    let response = store
        .txn(Txn::read(vec![Op::Range {
            prefix: key(prefix),
        }]))
        .await
        .expect("a read succeeds");
    response
        .results
        .into_iter()
        .flat_map(OpResult::into_kvs)
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// Next item of a watch, failing the test if none comes in time.
async fn next(stream: &mut WatchStream) -> Result<WatchItem, StoreError> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch item within 10s")
        .expect("the watch stream is still open")
}

/// Next `Events` item, skipping progress.
async fn next_events(stream: &mut WatchStream) -> (u64, Vec<cd_registry::store::Event>) {
    loop {
        match next(stream).await.expect("no watch error") {
            WatchItem::Events { revision, events } => return (revision, events),
            WatchItem::Progress { .. } => continue,
        }
    }
}

const IDLE: Duration = Duration::from_secs(3600);

/// Each successful write transaction is exactly one revision; keys carry
/// create/mod revisions and versions like etcd's.
pub async fn revisions_count_transactions(backend: &dyn Backend) {
    let store = backend.open().await;
    let start = store.current_revision().await.expect("a revision");
    let first = write(&*store, vec![put("a", "1"), put("b", "1")]).await;
    assert_eq!(first, start + 1, "two puts in one txn are one revision");
    let second = write(&*store, vec![put("a", "2")]).await;
    assert_eq!(second, first + 1);
    let a = get(&*store, "a").await.expect("a exists");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (first, second, 2)
    );
    assert_eq!(a.value, b"2");
    assert_eq!(store.current_revision().await.ok(), Some(second));
    store.close().await.expect("close");
}

/// Guards pick the branch; a failed guard writes nothing and bumps nothing.
pub async fn compares_choose_the_branch(backend: &dyn Backend) {
    let store = backend.open().await;
    let revision = write(&*store, vec![put("cas", "x")]).await;
    let failed = store
        .txn(Txn {
            compares: vec![Compare::ModRevision {
                key: key("cas"),
                revision: revision + 100,
            }],
            success: vec![put("cas", "wrong")],
            failure: vec![Op::Get { key: key("cas") }],
        })
        .await
        .expect("txn");
    assert!(!failed.succeeded);
    assert_eq!(failed.revision, revision, "a failed guard bumps nothing");
    let seen = failed.results.into_iter().next().map(OpResult::into_kvs);
    assert_eq!(seen.map(|kvs| kvs.len()), Some(1), "the failure branch ran");
    let ok = store
        .txn(Txn {
            compares: vec![
                Compare::ModRevision {
                    key: key("cas"),
                    revision,
                },
                Compare::CreateRevision {
                    key: key("absent"),
                    revision: 0,
                },
                Compare::Value {
                    key: key("cas"),
                    value: key("x"),
                },
            ],
            success: vec![put("cas", "y")],
            failure: vec![],
        })
        .await
        .expect("txn");
    assert!(ok.succeeded);
    assert_eq!(ok.revision, revision + 1);
    assert_eq!(get(&*store, "cas").await.map(|kv| kv.value), Some(key("y")));
    store.close().await.expect("close");
}

/// Deleting what is not there is not a change.
pub async fn deletes_of_absent_keys_change_nothing(backend: &dyn Backend) {
    let store = backend.open().await;
    let revision = write(&*store, vec![put("d", "1")]).await;
    let absent = write(&*store, vec![Op::Delete { key: key("nope") }]).await;
    assert_eq!(absent, revision);
    let deleted = write(&*store, vec![Op::Delete { key: key("d") }]).await;
    assert_eq!(deleted, revision + 1);
    assert!(get(&*store, "d").await.is_none());
    store.close().await.expect("close");
}

/// Prefix ranges return exactly the keys under the prefix, in order, and a
/// read-only transaction reads several ranges at one revision.
pub async fn ranges_are_prefix_and_ordered(backend: &dyn Backend) {
    let store = backend.open().await;
    write(
        &*store,
        vec![
            put("r/b", ""),
            put("r/a", ""),
            put("r/c/x", ""),
            put("s/a", ""),
            put("r", ""),
        ],
    )
    .await;
    assert_eq!(range(&*store, "r/").await, ["r/a", "r/b", "r/c/x"]);
    assert_eq!(range(&*store, "s/").await, ["s/a"]);
    assert!(range(&*store, "t/").await.is_empty());
    store.close().await.expect("close");
}

/// A put under an unknown lease fails the whole transaction; a lease's keys
/// go when it expires, all in one revision.
pub async fn leases_guard_and_expire_atomically(backend: &dyn Backend) {
    let store = backend.open().await;
    let before = store.current_revision().await.expect("revision");
    let refused = store
        .txn(Txn {
            success: vec![put("plain", "1"), leased("l/x", "1", 987_654_321)],
            ..Txn::default()
        })
        .await;
    assert!(
        matches!(refused, Err(StoreError::LeaseNotFound(_))),
        "{refused:?}"
    );
    assert!(
        get(&*store, "plain").await.is_none(),
        "nothing of it was written"
    );
    assert_eq!(store.current_revision().await.ok(), Some(before));

    let lease = store
        .lease_grant(Duration::from_secs(1))
        .await
        .expect("grant");
    let written = write(
        &*store,
        vec![leased("l/a", "1", lease), leased("l/b", "1", lease)],
    )
    .await;
    let mut watch = store.watch(key("l/"), written, IDLE).await.expect("watch");
    let (revision, events) = next_events(&mut watch).await;
    assert_eq!(revision, written + 1, "expiry is the next revision");
    assert_eq!(events.len(), 2, "both keys in one revision: {events:?}");
    assert!(events.iter().all(|e| e.kind == EventKind::Delete));
    assert!(range(&*store, "l/").await.is_empty());
    let renewed = store.lease_keep_alive(lease).await;
    assert!(
        matches!(renewed, Err(StoreError::LeaseNotFound(_))),
        "{renewed:?}"
    );
    store.close().await.expect("close");
}

/// Keep-alives hold a lease past its TTL; revoking deletes its keys at once.
pub async fn keep_alive_extends_and_revoke_deletes(backend: &dyn Backend) {
    let store = backend.open().await;
    let lease = store
        .lease_grant(Duration::from_secs(1))
        .await
        .expect("grant");
    write(&*store, vec![leased("k/a", "1", lease)]).await;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let ttl = store.lease_keep_alive(lease).await.expect("alive");
        // etcd raises TTLs below its minimum (about 2s); never lowers them.
        assert!(ttl >= Duration::from_secs(1), "{ttl:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        get(&*store, "k/a").await.is_some(),
        "kept alive past its TTL"
    );
    let revoked = store.lease_revoke(lease).await.expect("revoke");
    assert!(get(&*store, "k/a").await.is_none());
    assert_eq!(store.current_revision().await.ok(), Some(revoked));
    assert!(matches!(
        store.lease_revoke(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store.close().await.expect("close");
}

/// A watch from N replays everything after N in order, then follows live.
pub async fn watch_replays_then_follows(backend: &dyn Backend) {
    let store = backend.open().await;
    let first = write(&*store, vec![put("w/1", "a")]).await;
    write(&*store, vec![put("other", "x")]).await;
    let third = write(
        &*store,
        vec![put("w/2", "b"), Op::Delete { key: key("w/1") }],
    )
    .await;
    let mut watch = store
        .watch(key("w/"), first - 1, IDLE)
        .await
        .expect("watch");
    let (revision, events) = next_events(&mut watch).await;
    assert_eq!(revision, first);
    assert_eq!(events[0].kv.key, key("w/1"));
    let (revision, events) = next_events(&mut watch).await;
    assert_eq!(revision, third, "the unrelated revision is skipped");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, EventKind::Delete);
    let live = write(&*store, vec![put("w/3", "c")]).await;
    let (revision, events) = next_events(&mut watch).await;
    assert_eq!((revision, events[0].kv.key.clone()), (live, key("w/3")));
    store.close().await.expect("close");
}

/// An idle watch reports progress carrying the current revision.
pub async fn watch_reports_progress(backend: &dyn Backend) {
    let store = backend.open().await;
    let revision = write(&*store, vec![put("unwatched", "1")]).await;
    let mut watch = store
        .watch(key("p/"), 0, Duration::from_millis(100))
        .await
        .expect("watch");
    match next(&mut watch).await.expect("no error") {
        WatchItem::Progress { revision: seen } => assert_eq!(seen, revision),
        other => panic!("expected progress, got {other:?}"),
    }
    store.close().await.expect("close");
}

/// History older than retained is refused, never silently skipped.
pub async fn watch_refuses_compacted_history(backend: &dyn Backend) {
    let store = backend.open_with_short_history(5).await;
    let first = write(&*store, vec![put("c/0", "")]).await;
    for n in 1..20 {
        write(&*store, vec![put(&format!("c/{n}"), "")]).await;
    }
    let current = store.current_revision().await.expect("revision");
    backend.compact_through(current - 5).await;
    let result = store.watch(key("c/"), first, IDLE).await;
    assert!(
        matches!(result, Err(StoreError::Compacted { .. })),
        "watching from a compacted revision must fail"
    );
    let mut recent = store
        .watch(key("c/"), current - 3, IDLE)
        .await
        .expect("recent history is kept");
    let (revision, _) = next_events(&mut recent).await;
    assert_eq!(revision, current - 2);
    store.close().await.expect("close");
}

/// Concurrent writers get distinct, gap-free revisions, and every
/// acknowledged write is there after the store is closed and reopened.
pub async fn concurrent_writes_are_ordered_and_durable(backend: &dyn Backend) {
    let store = backend.open().await;
    let start = store.current_revision().await.expect("revision");
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for n in 0..50 {
                revisions.push(write(&*store, vec![put(&format!("cw/{writer}/{n}"), "v")]).await);
            }
            revisions
        }));
    }
    let mut revisions = BTreeSet::new();
    for task in tasks {
        for revision in task.await.expect("writer task") {
            assert!(
                revisions.insert(revision),
                "revision {revision} given twice"
            );
        }
    }
    let expected: BTreeSet<u64> = (start + 1..=start + 400).collect();
    assert_eq!(revisions, expected, "revisions are distinct and contiguous");
    store.close().await.expect("close");
    let reopened = backend.open().await;
    assert_eq!(range(&*reopened, "cw/").await.len(), 400);
    assert_eq!(reopened.current_revision().await.ok(), Some(start + 400));
    reopened.close().await.expect("close");
}

/// Leases outlive a restart instead of all expiring at once (sled: even a
/// downtime longer than their TTL, with a fresh TTL on open).
pub async fn leases_survive_reopen_with_fresh_ttl(backend: &dyn Backend) {
    let store = backend.open().await;
    let ttl = Duration::from_secs(2);
    let lease = store.lease_grant(ttl).await.expect("grant");
    write(&*store, vec![leased("g/a", "1", lease)]).await;
    store.close().await.expect("close");
    tokio::time::sleep(backend.survivable_downtime(ttl)).await;
    let reopened = backend.open().await;
    assert!(
        get(&*reopened, "g/a").await.is_some(),
        "a fresh grace period"
    );
    reopened
        .lease_keep_alive(lease)
        .await
        .expect("the lease is still alive after the restart");
    reopened.close().await.expect("close");
}

/// A watcher resumes across a restart from the revision it last saw.
pub async fn watch_resumes_across_reopen(backend: &dyn Backend) {
    let store = backend.open().await;
    let seen = write(&*store, vec![put("rs/1", "")]).await;
    let missed = write(&*store, vec![put("rs/2", "")]).await;
    store.close().await.expect("close");
    let reopened = backend.open().await;
    let mut watch = reopened.watch(key("rs/"), seen, IDLE).await.expect("watch");
    let (revision, events) = next_events(&mut watch).await;
    assert_eq!((revision, events[0].kv.key.clone()), (missed, key("rs/2")));
    reopened.close().await.expect("close");
}

/// A watcher that reads nothing never holds writers up, and when it reads
/// again it gets every revision, in order, with no gap.
pub async fn slow_watchers_do_not_block_writers(backend: &dyn Backend) {
    let store = backend.open().await;
    let start = store.current_revision().await.expect("revision");
    let mut watch = store.watch(key("sw/"), start, IDLE).await.expect("watch");
    let writes = async {
        for n in 0..1000 {
            write(&*store, vec![put(&format!("sw/{n}"), "v")]).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), writes)
        .await
        .expect("writers finished while the watcher was not reading");
    for expected in start + 1..=start + 1000 {
        let (revision, _) = next_events(&mut watch).await;
        assert_eq!(revision, expected, "no gap, no duplicate");
    }
    store.close().await.expect("close");
}
