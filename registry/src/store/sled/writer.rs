//! The writer thread: takes every queued request (group commit), evaluates
//! them in order over an overlay of the live state, writes the history
//! entries and lease records as one sled batch, fsyncs once, then publishes
//! the new state and answers the callers. Now and then it writes a snapshot
//! of the live keys, after answering, so history before it can go.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::live::LiveKeys;
use super::{
    Committed, LeaseInfo, MAX_GROUP, META_COMPACTED, META_REVISION, Request, Shared, State, codec,
    history_key, lease_key, lock, snapshot, storage,
};
use crate::store::stats::StoreStats;
use crate::store::{
    Event, EventKind, KeyValue, LeaseId, Op, OpResult, StoreError, Txn, TxnResponse, in_prefix,
};

/// Changes of one group not yet on disk, layered over the live state.
#[derive(Default)]
pub(super) struct Overlay {
    kv: BTreeMap<Vec<u8>, Option<KeyValue>>,
    granted: HashMap<LeaseId, Duration>,
    revoked: HashSet<LeaseId>,
}

impl Overlay {
    /// The key as the group stands: written in the group (borrowed) or live
    /// (decoded from its block).
    fn get<'a>(&'a self, state: &State, key: &[u8]) -> Option<Cow<'a, KeyValue>> {
        match self.kv.get(key) {
            Some(entry) => entry.as_ref().map(Cow::Borrowed),
            None => state.kv.get(key).map(Cow::Owned),
        }
    }

    pub(super) fn range(&self, state: &State, prefix: &[u8]) -> Vec<KeyValue> {
        let live = state.kv.with_prefix(prefix);
        let mut written = self
            .kv
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| in_prefix(key, prefix))
            .peekable();
        if written.peek().is_none() {
            // Reads (an empty overlay) and most of a group's ranges.
            return live.collect();
        }
        let mut merged: BTreeMap<Vec<u8>, KeyValue> = live.map(|kv| (kv.key.clone(), kv)).collect();
        for (key, entry) in written {
            match entry {
                Some(kv) => merged.insert(key.clone(), kv.clone()),
                None => merged.remove(key.as_slice()),
            };
        }
        merged.into_values().collect()
    }

    fn lease_exists(&self, state: &State, lease: LeaseId) -> bool {
        !self.revoked.contains(&lease)
            && (self.granted.contains_key(&lease) || state.leases.contains_key(&lease))
    }

    /// The keys attached to `lease` as the group stands: a scan of the live
    /// keys and of the group's own.
    fn lease_keys(&self, state: &State, lease: LeaseId) -> Vec<Vec<u8>> {
        let live = state
            .kv
            .keys_with_lease(lease)
            .into_iter()
            .filter(|key| !self.kv.contains_key(key));
        let written = self
            .kv
            .iter()
            .filter(|(_, kv)| kv.as_ref().is_some_and(|kv| kv.lease == Some(lease)))
            .map(|(key, _)| key.clone());
        let mut keys: Vec<Vec<u8>> = live.chain(written).collect();
        keys.sort();
        keys
    }
}

/// Answers one caller once its group is durable (or failed).
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Everything one group produced, to be written and then published.
struct Group {
    overlay: Overlay,
    committed: Vec<Committed>,
    revision: u64,
    /// Answers to send once the group is durable (or failed).
    replies: Vec<Reply>,
    close: Option<oneshot::Sender<Result<(), StoreError>>>,
}

pub(super) fn run_writer(
    shared: &Arc<Shared>,
    requests: &mpsc::Receiver<Request>,
    check: Duration,
) {
    loop {
        let mut batch = Vec::new();
        match requests.recv_timeout(check) {
            Ok(request) => batch.push(request),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if !shared.closing.is_cancelled() {
            let expired = take_expired(shared);
            StoreStats::add(&shared.stats.leases_expired, expired.len() as u64);
            batch.extend(expired.into_iter().map(|id| {
                tracing::debug!(lease = id, "lease expired");
                Request::Revoke(id, None)
            }));
        }
        if batch.is_empty() {
            continue;
        }
        if commit_group(shared, batch) {
            return;
        }
    }
}

fn take_expired(shared: &Shared) -> Vec<LeaseId> {
    let now = Instant::now();
    let mut deadlines = lock(&shared.deadlines);
    let expired: Vec<LeaseId> = deadlines
        .iter()
        .filter(|(_, (_, deadline))| *deadline <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in &expired {
        deadlines.remove(id);
    }
    expired
}

/// Evaluates, writes, fsyncs, publishes and answers one group. Returns true
/// when the group closed the store.
fn commit_group(shared: &Arc<Shared>, requests: Vec<Request>) -> bool {
    shared
        .stats
        .commit_group_size
        .observe_size(requests.len() as u64);
    let group = {
        let state = shared.read_state();
        evaluate(shared, &state, requests)
    };
    let Group {
        overlay,
        committed,
        revision,
        replies,
        close,
    } = group;

    let durable = persist(shared, &overlay, &committed, revision);
    match durable {
        Ok(written) => {
            publish(shared, overlay, revision, written);
            for entry in committed {
                shared.recent.push(entry);
            }
            // Before the replies, so a caller that hears back knows whether
            // its write started a snapshot (freezing is a clone of shared
            // blocks, microseconds); the snapshot's tests rely on it.
            if close.is_none() {
                snapshot_if_due(shared);
            }
            for reply in replies {
                reply(Ok(()));
            }
            if close.is_none() {
                measure_size(shared);
            }
        }
        Err(error) => {
            tracing::error!(%error, "disk write failed; refusing further writes until restart");
            shared.failed.store(true, Ordering::Release);
            for reply in replies {
                reply(Err(error.clone()));
            }
        }
    }
    if let Some(reply) = close {
        let flushed = shared.with_disk(|disk| disk.db.flush().map(|_| ()).map_err(storage));
        let _ = reply.send(flushed);
        return true;
    }
    false
}

fn evaluate(shared: &Shared, state: &State, requests: Vec<Request>) -> Group {
    let mut group = Group {
        overlay: Overlay::default(),
        committed: Vec::new(),
        revision: state.revision,
        replies: Vec::new(),
        close: None,
    };
    for request in requests {
        if let Err(error) = shared.check_open() {
            reply_error(request, error);
            continue;
        }
        match request {
            Request::Txn(txn, reply) => {
                let outcome = apply_txn(state, &mut group, txn);
                match outcome {
                    Ok((succeeded, results)) => {
                        let revision = group.revision;
                        group.replies.push(Box::new(move |durable| {
                            let _ = reply.send(durable.map(|()| TxnResponse {
                                succeeded,
                                revision,
                                results,
                            }));
                        }));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Request::Grant(id, ttl, reply) => {
                group.overlay.granted.insert(id, ttl);
                group.replies.push(Box::new(move |durable| {
                    let _ = reply.send(durable.map(|()| id));
                }));
            }
            Request::Revoke(id, reply) => {
                if !group.overlay.lease_exists(state, id) {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(StoreError::LeaseNotFound(id)));
                    }
                    continue;
                }
                let keys = group.overlay.lease_keys(state, id);
                let revision = group.revision + 1;
                let events: Vec<Event> = keys
                    .into_iter()
                    .map(|key| {
                        group.overlay.kv.insert(key.clone(), None);
                        deletion(key, revision)
                    })
                    .collect();
                group.overlay.revoked.insert(id);
                group.overlay.granted.remove(&id);
                if !events.is_empty() {
                    group.revision = revision;
                    group.committed.push(Committed { revision, events });
                }
                if let Some(reply) = reply {
                    let revision = group.revision;
                    group.replies.push(Box::new(move |durable| {
                        let _ = reply.send(durable.map(|()| revision));
                    }));
                }
            }
            Request::Close(reply) => {
                shared.closing.cancel();
                group.close = Some(reply);
            }
        }
    }
    group
}

fn reply_error(request: Request, error: StoreError) {
    match request {
        Request::Txn(_, reply) => drop(reply.send(Err(error))),
        Request::Grant(_, _, reply) => drop(reply.send(Err(error))),
        Request::Revoke(_, Some(reply)) => drop(reply.send(Err(error))),
        Request::Revoke(_, None) => {}
        Request::Close(reply) => drop(reply.send(Err(error))),
    }
}

fn deletion(key: Vec<u8>, revision: u64) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key,
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: None,
        },
    }
}

/// Applies one transaction to the group's overlay; answers whether its
/// guards held and what each operation returned.
fn apply_txn(
    state: &State,
    group: &mut Group,
    txn: Txn,
) -> Result<(bool, Vec<OpResult>), StoreError> {
    let overlay = &mut group.overlay;
    let succeeded = txn
        .compares
        .iter()
        .all(|compare| compare.holds(overlay.get(state, compare.key()).as_deref()));
    let ops = if succeeded { txn.success } else { txn.failure };
    // Check leases before touching anything, so a transaction is all or nothing.
    for op in &ops {
        if let Op::Put {
            lease: Some(lease), ..
        } = op
            && !overlay.lease_exists(state, *lease)
        {
            return Err(StoreError::LeaseNotFound(*lease));
        }
    }
    let revision = group.revision + 1;
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Range { prefix } => results.push(OpResult::Range(overlay.range(state, &prefix))),
            Op::Get { key } => results.push(OpResult::Range(
                overlay
                    .get(state, &key)
                    .map(Cow::into_owned)
                    .into_iter()
                    .collect(),
            )),
            Op::Put { key, value, lease } => {
                let previous = overlay
                    .get(state, &key)
                    .map(|previous| (previous.create_revision, previous.version));
                let kv = KeyValue {
                    create_revision: previous.map_or(revision, |(created, _)| created),
                    version: previous.map_or(1, |(_, version)| version + 1),
                    mod_revision: revision,
                    key: key.clone(),
                    value,
                    lease,
                };
                overlay.kv.insert(key, Some(kv.clone()));
                events.push(Event {
                    kind: EventKind::Put,
                    kv,
                });
                results.push(OpResult::Put);
            }
            Op::Delete { key } => {
                let deleted = overlay.get(state, &key).is_some();
                if deleted {
                    overlay.kv.insert(key.clone(), None);
                    events.push(deletion(key, revision));
                }
                results.push(OpResult::Delete { deleted });
            }
        }
    }
    if !events.is_empty() {
        group.revision = revision;
        group.committed.push(Committed { revision, events });
    }
    Ok((succeeded, results))
}

/// What one group put on disk.
struct Written {
    /// The compacted revision afterwards.
    compacted: u64,
    /// Bytes of history written.
    history_bytes: u64,
}

/// Writes the group as one sled batch and fsyncs. The live keys are not
/// written: the history entries are the log they are rebuilt from.
fn persist(
    shared: &Shared,
    overlay: &Overlay,
    committed: &[Committed],
    revision: u64,
) -> Result<Written, StoreError> {
    let (old_revision, old_compacted, snapshot) = {
        let state = shared.read_state();
        (state.revision, state.compacted, state.snapshot)
    };
    let nothing_written = overlay.kv.is_empty()
        && overlay.granted.is_empty()
        && overlay.revoked.is_empty()
        && committed.is_empty();
    if nothing_written {
        return Ok(Written {
            compacted: old_compacted,
            history_bytes: 0,
        });
    }
    let mut batch = sled::Batch::default();
    let mut history_bytes = 0;
    for entry in committed {
        // Every revision from now on is past `compressed_from`.
        let encoded = codec::compress(&codec::encode_events(&entry.events));
        history_bytes += encoded.len() as u64;
        batch.insert(history_key(entry.revision), encoded);
    }
    for (id, ttl) in &overlay.granted {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        batch.insert(lease_key(*id), codec::encode_u64(millis).to_vec());
    }
    for id in &overlay.revoked {
        batch.remove(lease_key(*id));
    }
    shared.with_disk(|disk| {
        let mut compacted = old_compacted;
        if revision > old_revision {
            batch.insert(META_REVISION, codec::encode_u64(revision).to_vec());
            // History the snapshot does not cover yet is still the log.
            let keep_from = revision
                .saturating_sub(shared.history_revisions)
                .min(snapshot);
            if keep_from > compacted {
                for old in disk
                    .tree
                    .range(history_key(compacted + 1)..history_key(keep_from + 1))
                    .keys()
                {
                    batch.remove(old.map_err(storage)?);
                }
                compacted = keep_from;
                batch.insert(META_COMPACTED, codec::encode_u64(compacted).to_vec());
            }
        }
        disk.tree.apply_batch(batch).map_err(storage)?;
        let started = Instant::now();
        disk.db.flush().map_err(storage)?;
        shared
            .stats
            .fsync_seconds
            .observe_duration(started.elapsed());
        if compacted > old_compacted {
            StoreStats::add(&shared.stats.compactions, 1);
        }
        Ok(Written {
            compacted,
            history_bytes,
        })
    })
}

/// Starts writing a snapshot when the policy in [`snapshot::due`] says so
/// and none is being written. The writer only freezes the live keys (a
/// clone sharing their blocks, under the read lock); a thread of its own
/// writes them, so the writes queued behind this group wait for nothing.
/// A failure is logged and tried again after a later group: the history
/// still holds everything, and is compacted only up to the snapshot on disk.
fn snapshot_if_due(shared: &Arc<Shared>) {
    let mut running = lock(&shared.snapshotting);
    if running.as_ref().is_some_and(|thread| !thread.is_finished()) {
        return;
    }
    if let Some(finished) = running.take() {
        let _ = finished.join();
    }
    let frozen = {
        let state = shared.read_state();
        if !snapshot::due(&state, shared.snapshot_min_bytes, shared.history_revisions) {
            return;
        }
        Frozen {
            kv: state.kv.clone(),
            revision: state.revision,
            previous: state.snapshot,
            history_bytes: state.history_since_snapshot,
        }
    };
    let thread_shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("sled-snapshot".into())
        .spawn(move || write_snapshot(&thread_shared, frozen));
    match spawned {
        Ok(thread) => *running = Some(thread),
        Err(error) => tracing::warn!(%error, "cannot start the snapshot thread; will try again"),
    }
}

/// The live keys as of one revision, for a snapshot.
struct Frozen {
    kv: LiveKeys,
    revision: u64,
    /// The snapshot on disk when this one was frozen, removed once it is current.
    previous: u64,
    /// History bytes written since `previous`, up to `revision`.
    history_bytes: u64,
}

fn write_snapshot(shared: &Shared, frozen: Frozen) {
    #[cfg(test)]
    shared.wait_at_snapshot_gate();
    let started = Instant::now();
    let Frozen {
        kv,
        revision,
        previous,
        history_bytes,
    } = frozen;
    let written =
        shared.with_disk(|disk| snapshot::write(disk, &kv, revision, previous, &shared.closing));
    match written {
        Ok(()) => {
            let mut state = shared.write_state();
            state.snapshot = revision;
            // What was written after the freeze still counts toward the next one.
            state.history_since_snapshot =
                state.history_since_snapshot.saturating_sub(history_bytes);
            drop(state);
            shared
                .stats
                .snapshot_seconds
                .observe_duration(started.elapsed());
            tracing::debug!(revision, keys = kv.len(), elapsed = ?started.elapsed(), "snapshot written");
        }
        Err(StoreError::Closed) => {
            tracing::debug!(revision, "snapshot abandoned: the store is closing");
        }
        Err(error) => {
            tracing::warn!(%error, revision, "writing a snapshot failed; the history still has every change, will try again");
        }
    }
}

/// Reads the data directory's size, at most once a second: a directory
/// listing, cheap but not free on every group.
fn measure_size(shared: &Shared) {
    let mut sized_at = lock(&shared.sized_at);
    if sized_at.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
        return;
    }
    *sized_at = Some(Instant::now());
    drop(sized_at);
    if let Ok(bytes) = shared.with_disk(|disk| disk.db.size_on_disk().map_err(storage)) {
        StoreStats::set(&shared.stats.bytes_on_disk, bytes);
    }
}

/// Makes a durable group visible to readers and keep-alives.
fn publish(shared: &Shared, overlay: Overlay, revision: u64, written: Written) {
    let now = Instant::now();
    let mut state = shared.write_state();
    for (id, ttl) in &overlay.granted {
        state.leases.insert(*id, LeaseInfo { ttl: *ttl });
    }
    for (key, entry) in overlay.kv {
        match entry {
            Some(kv) => {
                state.kv.insert(kv);
            }
            None => {
                state.kv.remove(&key);
            }
        }
    }
    for id in &overlay.revoked {
        state.leases.remove(id);
    }
    state.revision = revision.max(state.revision);
    StoreStats::set(&shared.stats.revision, state.revision);
    state.compacted = written.compacted;
    state.history_since_snapshot += written.history_bytes;
    StoreStats::set(&shared.stats.live_keys, state.kv.len() as u64);
    drop(state);
    let mut deadlines = lock(&shared.deadlines);
    for (id, ttl) in overlay.granted {
        deadlines.insert(id, (ttl, now + ttl));
    }
    for id in overlay.revoked {
        deadlines.remove(&id);
    }
}
