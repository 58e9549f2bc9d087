//! The sled backend's disk layout: the live keys come back on open from the
//! last snapshot plus the history after it, and a data directory of the
//! earlier layout (one sled key per live key) is converted.

use std::sync::Arc;
use std::time::Duration;

use cd_registry::store::codec;
use cd_registry::store::sled::{SledConfig, SledStore};
use cd_registry::store::{
    Event, EventKind, KeyValue, Op, OpResult, Store, StoreError, Txn, WatchItem,
};
use futures::StreamExt;

async fn open(config: SledConfig) -> Arc<SledStore> {
    let store = tokio::task::spawn_blocking(move || SledStore::open(config))
        .await
        .expect("the open task")
        .expect("opening the sled store");
    Arc::new(store)
}

async fn write(store: &SledStore, ops: Vec<Op>) -> u64 {
    let response = store
        .txn(Txn {
            success: ops,
            ..Txn::default()
        })
        .await
        .expect("a write succeeds");
    response.revision
}

fn put(key: &str, value: &str, lease: Option<u64>) -> Op {
    Op::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease,
    }
}

/// Every live key with its revisions, version and lease, and the revision.
async fn everything(store: &SledStore) -> (u64, Vec<KeyValue>) {
    let response = store
        .txn(Txn::read(vec![Op::Range { prefix: Vec::new() }]))
        .await
        .expect("a read succeeds");
    let kvs = response
        .results
        .into_iter()
        .flat_map(OpResult::into_kvs)
        .collect();
    (response.revision, kvs)
}

/// Writes that overwrite, delete, lease and revoke, over many revisions.
async fn churn(store: &SledStore, round: usize) {
    let lease = store
        .lease_grant(Duration::from_secs(3600))
        .await
        .expect("grant");
    let doomed = store
        .lease_grant(Duration::from_secs(3600))
        .await
        .expect("grant");
    for n in 0..60 {
        let value = format!("round {round} write {n} {}", "x".repeat(n % 7 * 20));
        write(store, vec![put(&format!("a/{}", n % 13), &value, None)]).await;
        if n % 3 == 0 {
            write(
                store,
                vec![
                    put(&format!("leased/{round}/{n}"), &value, Some(lease)),
                    put(&format!("doomed/{round}/{n}"), &value, Some(doomed)),
                ],
            )
            .await;
        }
        if n % 5 == 0 {
            write(
                store,
                vec![Op::Delete {
                    key: format!("a/{}", (n + 4) % 13).into_bytes(),
                }],
            )
            .await;
        }
    }
    store.lease_revoke(doomed).await.expect("revoke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_rebuilds_the_live_keys_from_snapshots_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || {
        let mut config = SledConfig::new(dir.path());
        // Snapshots every few hundred bytes of history, and history kept
        // for 8 revisions only: the state must come from snapshots.
        config.snapshot_min_bytes = 512;
        config.history_revisions = 8;
        config
    };
    let store = open(config()).await;
    churn(&store, 1).await;
    let before = everything(&store).await;
    assert!(before.0 > 80, "revision {}", before.0);
    assert!(before.1.iter().any(|kv| kv.lease.is_some()));
    assert!(before.1.iter().any(|kv| kv.version > 1));
    assert!(!before.1.iter().any(|kv| kv.key.starts_with(b"doomed/")));
    store.close().await.expect("close");

    let store = open(config()).await;
    assert_eq!(everything(&store).await, before, "after the first reopen");
    // The history from revision 1 is long gone, so what came back came
    // from a snapshot, not from replaying everything.
    let early = store.watch(Vec::new(), 1, Duration::from_secs(60)).await;
    assert!(
        matches!(early, Err(StoreError::Compacted { .. })),
        "history from revision 1 should be compacted"
    );
    churn(&store, 2).await;
    let after = everything(&store).await;
    assert!(after.0 > before.0);
    store.close().await.expect("close");

    let store = open(config()).await;
    assert_eq!(everything(&store).await, after, "after the second reopen");
    // Writing goes on from the same revision.
    let next = write(&store, vec![put("a/next", "1", None)]).await;
    assert_eq!(next, after.0 + 1);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_state_without_a_snapshot_is_the_replayed_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(SledConfig::new(dir.path())).await;
    churn(&store, 1).await;
    let before = everything(&store).await;
    store.close().await.expect("close");
    let store = open(SledConfig::new(dir.path())).await;
    assert_eq!(everything(&store).await, before);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_converts_a_data_directory_of_the_earlier_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease: u64 = 77;
    let service = KeyValue {
        key: b"v/s/web".to_vec(),
        value: b"{\"name\":\"web\"}".to_vec(),
        create_revision: 2,
        mod_revision: 4,
        version: 2,
        lease: None,
    };
    let leased = KeyValue {
        key: b"x/se/9".to_vec(),
        value: b"session".to_vec(),
        create_revision: 3,
        mod_revision: 3,
        version: 1,
        lease: Some(lease),
    };
    {
        // The earlier layout: `k` + key → header + value, `l` + lease id →
        // TTL in milliseconds, `m:revision`.
        let db = sled::open(dir.path()).expect("sled");
        let tree = db.open_tree("switchyard").expect("tree");
        for kv in [&service, &leased] {
            let mut key = vec![b'k'];
            key.extend_from_slice(&kv.key);
            tree.insert(key, codec::encode_kv(kv)).expect("insert");
        }
        let mut lease_key = vec![b'l'];
        lease_key.extend_from_slice(&lease.to_be_bytes());
        tree.insert(lease_key, codec::encode_u64(60_000).to_vec())
            .expect("insert");
        tree.insert(b"m:revision", codec::encode_u64(4).to_vec())
            .expect("insert");
        // History entries of that layout are not compressed: revisions 3
        // and 4 are kept, earlier ones compacted.
        for (revision, kv) in [(3u64, &leased), (4, &service)] {
            let mut key = vec![b'h'];
            key.extend_from_slice(&revision.to_be_bytes());
            let event = Event {
                kind: EventKind::Put,
                kv: kv.clone(),
            };
            tree.insert(key, codec::encode_events(&[event]))
                .expect("insert");
        }
        tree.insert(b"m:compacted", codec::encode_u64(2).to_vec())
            .expect("insert");
        db.flush().expect("flush");
    }

    let store = open(SledConfig::new(dir.path())).await;
    let expected = (4, vec![service.clone(), leased.clone()]);
    assert_eq!(everything(&store).await, expected);
    let next = write(&store, vec![put("v/s/api", "{}", None)]).await;
    assert_eq!(next, 5);
    // A watcher resuming from revision 2 reads the old entries and the new
    // (compressed) one alike.
    let mut watch = store
        .watch(Vec::new(), 2, Duration::from_secs(60))
        .await
        .expect("history from revision 3 is kept");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let item = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a watch item within 10s")
            .expect("the stream is open")
            .expect("no watch error");
        if let WatchItem::Events { revision, events } = item {
            for event in events {
                seen.push((
                    revision,
                    String::from_utf8_lossy(&event.kv.key).into_owned(),
                ));
            }
        }
    }
    assert_eq!(
        seen,
        vec![
            (3, "x/se/9".to_string()),
            (4, "v/s/web".to_string()),
            (5, "v/s/api".to_string())
        ]
    );
    drop(watch);
    // The lease came along: its key goes with it.
    store.lease_revoke(lease).await.expect("the lease exists");
    let (revision, kvs) = everything(&store).await;
    assert_eq!(revision, 6);
    let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![b"v/s/api".as_slice(), b"v/s/web".as_slice()]);
    store.close().await.expect("close");

    {
        let db = sled::open(dir.path()).expect("sled");
        let tree = db.open_tree("switchyard").expect("tree");
        assert!(
            tree.scan_prefix(b"k").next().is_none(),
            "keys of the earlier layout are removed once converted"
        );
        assert!(tree.get(b"m:snapshot").expect("get").is_some());
    }
    let store = open(SledConfig::new(dir.path())).await;
    assert_eq!(everything(&store).await.1, kvs);
    store.close().await.expect("close");
}
