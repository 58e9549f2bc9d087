//! The writer thread: takes every queued request (group commit), evaluates
//! them in order over an overlay of the live state, writes keys, history and
//! lease records as one sled batch, fsyncs once, then publishes the new state
//! and answers the callers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{
    Committed, KEY_PREFIX, LeaseInfo, MAX_GROUP, META_COMPACTED, META_REVISION, Request, Shared,
    State, codec, history_key, lease_key, lock, prefixed, storage,
};
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
    fn get<'a>(&'a self, state: &'a State, key: &[u8]) -> Option<&'a KeyValue> {
        match self.kv.get(key) {
            Some(entry) => entry.as_ref(),
            None => state.kv.get(key),
        }
    }

    pub(super) fn range(&self, state: &State, prefix: &[u8]) -> Vec<KeyValue> {
        let mut merged: BTreeMap<&[u8], &KeyValue> = state
            .kv
            .with_prefix(prefix)
            .map(|kv| (kv.key.as_slice(), kv))
            .collect();
        for (key, entry) in self
            .kv
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| in_prefix(key, prefix))
        {
            match entry {
                Some(kv) => merged.insert(key.as_slice(), kv),
                None => merged.remove(key.as_slice()),
            };
        }
        merged.into_values().cloned().collect()
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
            .iter()
            .filter(|kv| kv.lease == Some(lease) && !self.kv.contains_key(&kv.key))
            .map(|kv| kv.key.clone());
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
            batch.extend(take_expired(shared).into_iter().map(|id| {
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
        Ok(compacted) => {
            publish(shared, overlay, revision, compacted);
            for entry in committed {
                // No receivers is fine: nobody is watching.
                let _ = shared.committed.send(Arc::new(entry));
            }
            for reply in replies {
                reply(Ok(()));
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
        .all(|compare| compare.holds(overlay.get(state, compare.key())));
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
                overlay.get(state, &key).cloned().into_iter().collect(),
            )),
            Op::Put { key, value, lease } => {
                let previous = overlay.get(state, &key);
                let kv = KeyValue {
                    create_revision: previous.map_or(revision, |p| p.create_revision),
                    version: previous.map_or(1, |p| p.version + 1),
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

/// Writes the group as one sled batch and fsyncs. Answers the new compacted
/// revision.
fn persist(
    shared: &Shared,
    overlay: &Overlay,
    committed: &[Committed],
    revision: u64,
) -> Result<u64, StoreError> {
    let (old_revision, old_compacted) = {
        let state = shared.read_state();
        (state.revision, state.compacted)
    };
    let nothing_written = overlay.kv.is_empty()
        && overlay.granted.is_empty()
        && overlay.revoked.is_empty()
        && committed.is_empty();
    if nothing_written {
        return Ok(old_compacted);
    }
    let mut batch = sled::Batch::default();
    for (key, entry) in &overlay.kv {
        let stored = prefixed(KEY_PREFIX, key);
        match entry {
            Some(kv) => batch.insert(stored, codec::encode_kv(kv)),
            None => batch.remove(stored),
        }
    }
    for entry in committed {
        batch.insert(
            history_key(entry.revision),
            codec::encode_events(&entry.events),
        );
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
            let keep_from = revision.saturating_sub(shared.history_revisions);
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
        disk.db.flush().map_err(storage)?;
        shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(compacted)
    })
}

/// Makes a durable group visible to readers and keep-alives.
fn publish(shared: &Shared, overlay: Overlay, revision: u64, compacted: u64) {
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
    state.compacted = compacted;
    drop(state);
    let mut deadlines = lock(&shared.deadlines);
    for (id, ttl) in overlay.granted {
        deadlines.insert(id, (ttl, now + ttl));
    }
    for id in overlay.revoked {
        deadlines.remove(&id);
    }
}
