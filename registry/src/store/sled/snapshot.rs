//! What is on disk and how the live state comes back from it.
//!
//! The watch history is the log: every revision's events, full key-values
//! included, are one history entry, so the live keys at revision R are a
//! snapshot at some S ≤ R with the entries S+1..=R replayed over it. Keys
//! are not stored one by one: sled would keep a second in-memory copy of
//! every key (its B-tree pages) beside the store's own, and a write would
//! touch three sled keys per instance instead of one entry per revision.
//!
//! A snapshot is the live keys in key order, cut into chunks under
//! `s{revision}{chunk}` and made current by `m:snapshot` in the batch that
//! removes the previous one. Chunks of a snapshot that never became current
//! (a crash while writing it) are removed on open. A data directory of the
//! earlier layout (one sled key per live key under `k`) is converted on
//! open: its keys become the first snapshot.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::live::{LiveKeys, SortedBuilder};
use super::{
    Disk, KEY_PREFIX, LEASE_PREFIX, LeaseInfo, META_COMPACTED, META_COMPRESSED_FROM, META_REVISION,
    State, codec, decode_history, history_key, number_after_prefix, prefixed, storage,
};
use crate::store::{EventKind, KeyValue, LeaseId, StoreError};

const SNAPSHOT_PREFIX: u8 = b's';
const META_SNAPSHOT: &[u8] = b"m:snapshot";
/// Bytes of encoded key-values per snapshot chunk (one sled value).
const CHUNK_BYTES: usize = 256 * 1024;

/// The live state as the disk has it.
pub(super) fn load(disk: &Disk) -> Result<State, StoreError> {
    let tree = &disk.tree;
    let mut state = State::default();
    let mut lease_ttls: HashMap<LeaseId, Duration> = HashMap::new();
    for entry in tree.scan_prefix([LEASE_PREFIX]) {
        let (key, value) = entry.map_err(storage)?;
        let id = number_after_prefix(&key)?;
        lease_ttls.insert(id, Duration::from_millis(codec::decode_u64(&value)?));
    }
    for (id, ttl) in lease_ttls {
        state.leases.insert(id, LeaseInfo { ttl });
    }
    if let Some(bytes) = tree.get(META_REVISION).map_err(storage)? {
        state.revision = codec::decode_u64(&bytes)?;
    }
    if let Some(bytes) = tree.get(META_COMPACTED).map_err(storage)? {
        state.compacted = codec::decode_u64(&bytes)?;
    }
    state.compressed_from = match tree.get(META_COMPRESSED_FROM).map_err(storage)? {
        Some(bytes) => codec::decode_u64(&bytes)?,
        None => {
            // Everything written from now on is compressed.
            let from = state.revision + 1;
            tree.insert(META_COMPRESSED_FROM, codec::encode_u64(from).to_vec())
                .map_err(storage)?;
            disk.db.flush().map_err(storage)?;
            from
        }
    };
    if tree.scan_prefix([KEY_PREFIX]).next().is_some() {
        load_legacy_keys(disk, &mut state)?;
    } else {
        load_snapshot_and_replay(disk, &mut state)?;
    }
    // A key whose lease record is missing still expires, after a short
    // default TTL, rather than living forever.
    let orphaned: Vec<LeaseId> = state
        .kv
        .leases()
        .into_iter()
        .filter(|lease| !state.leases.contains_key(lease))
        .collect();
    for lease in orphaned {
        state.leases.insert(
            lease,
            LeaseInfo {
                ttl: Duration::from_secs(10),
            },
        );
    }
    Ok(state)
}

fn load_snapshot_and_replay(disk: &Disk, state: &mut State) -> Result<(), StoreError> {
    let tree = &disk.tree;
    let snapshot = match tree.get(META_SNAPSHOT).map_err(storage)? {
        Some(bytes) => codec::decode_u64(&bytes)?,
        None => 0,
    };
    // Chunks hold the keys in order, so the blocks fill one after the other.
    let mut keys = SortedBuilder::default();
    for chunk in tree.scan_prefix(snapshot_prefix(snapshot)) {
        let (_, value) = chunk.map_err(storage)?;
        for event in codec::decode_compressed_events(&value)? {
            keys.push(event.kv);
        }
    }
    state.kv = keys.finish();
    if snapshot < state.compacted {
        return Err(StoreError::Storage(format!(
            "the snapshot (revision {snapshot}) is older than the kept history (from revision {}): \
             restore the data directory from a backup or start empty",
            state.compacted + 1
        )));
    }
    if snapshot > state.revision {
        return Err(StoreError::Storage(format!(
            "the snapshot (revision {snapshot}) is newer than the store (revision {}): \
             restore the data directory from a backup or start empty",
            state.revision
        )));
    }
    let mut expected = snapshot + 1;
    for entry in tree.range(history_key(snapshot + 1)..history_key(state.revision + 1)) {
        let (key, value) = entry.map_err(storage)?;
        let revision = number_after_prefix(&key)?;
        if revision != expected {
            break;
        }
        for event in decode_history(state.compressed_from, revision, &value)? {
            match event.kind {
                EventKind::Put => state.kv.insert(event.kv),
                EventKind::Delete => state.kv.remove(&event.kv.key),
            }
        }
        state.history_since_snapshot += value.len() as u64;
        expected += 1;
    }
    if expected != state.revision + 1 {
        return Err(StoreError::Storage(format!(
            "history revision {expected} is missing (the snapshot is at {snapshot}, the store at {}): \
             restore the data directory from a backup or start empty",
            state.revision
        )));
    }
    state.snapshot = snapshot;
    // Chunks of a snapshot that never became current.
    let mut batch = sled::Batch::default();
    let mut stale = 0;
    let current = snapshot_prefix(snapshot);
    for key in tree.scan_prefix([SNAPSHOT_PREFIX]).keys() {
        let key = key.map_err(storage)?;
        if !key.starts_with(&current) {
            batch.remove(key);
            stale += 1;
        }
    }
    if stale > 0 {
        tracing::info!(chunks = stale, "removing an unfinished snapshot");
        tree.apply_batch(batch).map_err(storage)?;
    }
    Ok(())
}

/// The earlier layout: every live key its own sled key. Loaded as is, then
/// written as a snapshot and removed.
fn load_legacy_keys(disk: &Disk, state: &mut State) -> Result<(), StoreError> {
    let tree = &disk.tree;
    for entry in tree.scan_prefix([KEY_PREFIX]) {
        let (key, value) = entry.map_err(storage)?;
        state.kv.insert(codec::decode_kv(&key[1..], &value)?);
    }
    tracing::info!(
        keys = state.kv.len(),
        "converting the data directory to snapshots"
    );
    write_state(disk, state)?;
    let mut batch = sled::Batch::default();
    for key in tree.scan_prefix([KEY_PREFIX]).keys() {
        batch.remove(key.map_err(storage)?);
    }
    tree.apply_batch(batch).map_err(storage)?;
    disk.db.flush().map_err(storage)?;
    state.snapshot = state.revision;
    state.history_since_snapshot = 0;
    Ok(())
}

/// Whether the history since the last snapshot is worth replacing by a new
/// one: once replaying it would cost more than reading the state itself
/// (so snapshots at most double what is written), or once history the
/// store should drop is still needed to rebuild the state.
pub(super) fn due(state: &State, min_bytes: u64, history_revisions: u64) -> bool {
    if state.revision == state.snapshot {
        return false;
    }
    state.history_since_snapshot >= state.kv.bytes().max(min_bytes)
        || state.revision - state.snapshot > history_revisions
}

/// Writes `kv`, the live keys at `revision`, as the current snapshot and
/// removes the one at `previous`. Durable on return; the caller records the
/// new snapshot revision in the state. The registry runs it on a thread of
/// its own over a frozen copy of the keys (`writer.rs`), so writes go on
/// meanwhile; between chunks it gives up with `Closed` once `closing` is
/// cancelled (the chunks written never became current and are removed on
/// the next open).
pub(super) fn write(
    disk: &Disk,
    kv: &LiveKeys,
    revision: u64,
    previous: u64,
    closing: &CancellationToken,
) -> Result<(), StoreError> {
    let mut index: u32 = 0;
    let mut chunk: Vec<KeyValue> = Vec::new();
    let mut chunk_bytes = 0;
    for kv in kv.iter() {
        chunk_bytes += kv.key.len() + kv.value.len();
        chunk.push(kv);
        if chunk_bytes >= CHUNK_BYTES {
            if closing.is_cancelled() {
                return Err(StoreError::Closed);
            }
            write_chunk(disk, chunk_key(revision, index), &mut chunk)?;
            index += 1;
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        write_chunk(disk, chunk_key(revision, index), &mut chunk)?;
    }
    let mut batch = sled::Batch::default();
    batch.insert(META_SNAPSHOT, codec::encode_u64(revision).to_vec());
    if previous != revision {
        for key in disk.tree.scan_prefix(snapshot_prefix(previous)).keys() {
            batch.remove(key.map_err(storage)?);
        }
    }
    disk.tree.apply_batch(batch).map_err(storage)?;
    disk.db.flush().map_err(storage)?;
    Ok(())
}

/// Writes `state`'s live keys as the current snapshot, at its revision, on
/// this thread (while opening or restoring, before any writer runs).
pub(super) fn write_state(disk: &Disk, state: &State) -> Result<(), StoreError> {
    let never = CancellationToken::new();
    write(disk, &state.kv, state.revision, state.snapshot, &never)
}

/// Chunks go in one by one, not as one batch, so a snapshot never needs
/// its whole encoding in memory at once; none counts until `m:snapshot`
/// names its revision.
fn write_chunk(disk: &Disk, key: Vec<u8>, chunk: &mut Vec<KeyValue>) -> Result<(), StoreError> {
    let bytes = codec::compress(&codec::encode_puts(chunk.iter()));
    chunk.clear();
    disk.tree.insert(key, bytes).map_err(storage)?;
    Ok(())
}

fn snapshot_prefix(revision: u64) -> Vec<u8> {
    prefixed(SNAPSHOT_PREFIX, &revision.to_be_bytes())
}

fn chunk_key(revision: u64, index: u32) -> Vec<u8> {
    let mut key = snapshot_prefix(revision);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::super::{SledConfig, SledStore, lock};
    use super::*;
    use crate::store::{Op, Store, Txn};

    async fn put(store: &SledStore, key: &str) -> u64 {
        let txn = Txn {
            success: vec![Op::Put {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                lease: None,
            }],
            ..Txn::default()
        };
        // Bounded: with the snapshot on the writer thread, this would wait
        // for the held snapshot forever.
        let answer = tokio::time::timeout(Duration::from_secs(10), store.txn(txn)).await;
        answer
            .expect("a write answers while a snapshot is being written")
            .expect("the write succeeds")
            .revision
    }

    async fn until_snapshot_at(store: &SledStore, revision: u64) {
        // A bound for a hung thread, not a timing: a loaded CI disk can
        // take seconds over an fsync.
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.shared.read_state().snapshot != revision {
            assert!(
                Instant::now() < deadline,
                "no snapshot at revision {revision}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The keys of the snapshot chunks at `revision`, as on disk.
    fn keys_on_disk(store: &SledStore, revision: u64) -> Vec<Vec<u8>> {
        let keys = store.shared.with_disk(|disk| {
            let mut keys = Vec::new();
            for chunk in disk.tree.scan_prefix(snapshot_prefix(revision)) {
                let (_, value) = chunk.map_err(storage)?;
                let events = codec::decode_compressed_events(&value)?;
                keys.extend(events.into_iter().map(|event| event.kv.key));
            }
            Ok(keys)
        });
        keys.expect("reading the snapshot")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_go_on_while_a_snapshot_of_a_frozen_copy_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = SledConfig::new(dir.path());
        // Every group makes a snapshot due.
        config.snapshot_min_bytes = 1;
        let store = SledStore::open(config.clone()).expect("open");
        let (release, gate) = mpsc::channel();
        *lock(&store.shared.snapshot_gate) = Some(gate);

        assert_eq!(put(&store, "a/01").await, 1);
        // The snapshot of revision 1 is held at the gate; writes go on.
        for n in 2..=20 {
            assert_eq!(put(&store, &format!("a/{n:02}")).await, n);
        }
        assert_eq!(store.shared.read_state().snapshot, 0);
        release.send(()).expect("the snapshot waits at the gate");
        until_snapshot_at(&store, 1).await;
        // It holds the keys as they were at revision 1, not as they are now.
        assert_eq!(keys_on_disk(&store, 1), vec![b"a/01".to_vec()]);

        // The next group starts the next snapshot, of everything, and the
        // previous one is removed.
        let last = put(&store, "a/21").await;
        until_snapshot_at(&store, last).await;
        assert_eq!(keys_on_disk(&store, last).len(), 21);
        assert!(keys_on_disk(&store, 1).is_empty());
        store.close().await.expect("close");

        let store = SledStore::open(config).expect("reopen");
        let reopened = {
            let state = store.shared.read_state();
            (state.revision, state.snapshot, state.kv.len())
        };
        assert_eq!(reopened, (21, 21, 21));
        store.close().await.expect("close");
    }
}
