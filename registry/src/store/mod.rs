//! The key-value store the catalog is written against, in etcd's shape:
//! revisioned keys, multi-key transactions with compare guards, prefix
//! ranges, leases that take their keys with them, and watches that resume
//! from a revision.
//!
//! Backends: [`sled::SledStore`] (embedded, the default) and
//! [`etcd::EtcdStore`] (clustered; several registries share one etcd). Every backend passes
//! the conformance suite in `tests/src/conformance.rs`.
//!
//! **Architecture Invariant:** only modules below `store` know a storage
//! engine; the catalog sees this trait and nothing else.

/// Defaults the flags, `ServerConfig::new` and `SledConfig::new` share, so
/// a registry started by hand and one built in a test keep the same.
pub mod defaults {
    /// Revisions of watch history kept.
    pub const HISTORY_REVISIONS: u64 = 100_000;
    /// Messages buffered per watch stream, and recent revisions in memory.
    pub const WATCH_BUFFER: usize = 1024;
    /// sled's page cache.
    pub const SLED_CACHE_MIB: u64 = 8;
}

pub mod codec;
pub mod etcd;
#[cfg(test)]
mod fuzz;
pub mod sled;
pub mod stats;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

/// A lease id. Zero is never a lease.
pub type LeaseId = u64;

/// A stored key with its revisions, as etcd reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the put that created the key (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last put to the key.
    pub mod_revision: u64,
    /// Number of puts since creation.
    pub version: u64,
    pub lease: Option<LeaseId>,
}

/// A guard of a transaction. Revisions of absent keys compare as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    ModRevision { key: Vec<u8>, revision: u64 },
    CreateRevision { key: Vec<u8>, revision: u64 },
    Value { key: Vec<u8>, value: Vec<u8> },
}

impl Compare {
    pub fn key(&self) -> &[u8] {
        match self {
            Compare::ModRevision { key, .. }
            | Compare::CreateRevision { key, .. }
            | Compare::Value { key, .. } => key,
        }
    }

    /// Whether the guard holds for `current` (None: the key is absent).
    pub fn holds(&self, current: Option<&KeyValue>) -> bool {
        match self {
            Compare::ModRevision { revision, .. } => {
                current.map_or(0, |kv| kv.mod_revision) == *revision
            }
            Compare::CreateRevision { revision, .. } => {
                current.map_or(0, |kv| kv.create_revision) == *revision
            }
            Compare::Value { value, .. } => current.is_some_and(|kv| &kv.value == value),
        }
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Every key starting with `prefix`, in key order.
    Range { prefix: Vec<u8> },
    /// One key (a range of zero or one).
    Get { key: Vec<u8> },
    /// Writes `value`; with a lease the key is deleted when the lease ends.
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Deletes one key if present.
    Delete { key: Vec<u8> },
}

impl Op {
    pub fn is_write(&self) -> bool {
        matches!(self, Op::Put { .. } | Op::Delete { .. })
    }
}

/// `if compares { success } else { failure }`, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// A read of several ranges at one revision.
    pub fn read(ops: Vec<Op>) -> Self {
        Txn {
            success: ops,
            ..Txn::default()
        }
    }

    pub fn is_read_only(&self) -> bool {
        !self.success.iter().chain(&self.failure).any(Op::is_write)
    }
}

/// What one operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Range(Vec<KeyValue>),
    Put,
    Delete { deleted: bool },
}

impl OpResult {
    /// The keys a `Range` or `Get` returned; empty for writes.
    pub fn into_kvs(self) -> Vec<KeyValue> {
        match self {
            OpResult::Range(kvs) => kvs,
            OpResult::Put | OpResult::Delete { .. } => Vec::new(),
        }
    }
}

/// A transaction's results in the order of its operations. A result that
/// is missing, or not the kind its operation gives, is an error: read as
/// "no keys" it would turn a broken store into a false answer.
#[derive(Debug)]
pub struct Results(std::vec::IntoIter<OpResult>);

impl Results {
    pub fn new(results: Vec<OpResult>) -> Self {
        Results(results.into_iter())
    }

    /// The keys of the next operation, a `Range` or a `Get`.
    pub fn range(&mut self) -> Result<Vec<KeyValue>, StoreError> {
        match self.0.next() {
            Some(OpResult::Range(kvs)) => Ok(kvs),
            other => Err(StoreError::Storage(format!(
                "the store answered {} where a read's keys were due: a bug in the store",
                match other {
                    None => "nothing",
                    Some(_) => "a write's result",
                }
            ))),
        }
    }

    /// The key of the next `Get`, `None` when it is absent.
    pub fn get(&mut self) -> Result<Option<KeyValue>, StoreError> {
        let mut kvs = self.range()?;
        if kvs.len() > 1 {
            return Err(StoreError::Storage(format!(
                "the store answered {} keys to a get of one: a bug in the store",
                kvs.len()
            )));
        }
        Ok(kvs.pop())
    }

    /// The keys of every remaining operation, in order.
    pub fn rest(mut self) -> Result<Vec<KeyValue>, StoreError> {
        let mut all = Vec::new();
        while self.0.len() > 0 {
            all.extend(self.range()?);
        }
        Ok(all)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The revision this transaction committed at, or (when it wrote nothing)
    /// the revision its reads reflect.
    pub revision: u64,
    pub results: Vec<OpResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One key changed. For deletes, `kv.value` is empty and `kv.mod_revision`
/// is the revision of the deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// What a watch stream yields, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Every matching change committed at `revision`.
    Events { revision: u64, events: Vec<Event> },
    /// Every matching change up to `revision` has been yielded already.
    Progress { revision: u64 },
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem, StoreError>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "revision {requested} is no longer in the history (compacted through {compacted}); \
         start again from a snapshot"
    )]
    Compacted { requested: u64, compacted: u64 },
    #[error("lease {0} does not exist or has expired")]
    LeaseNotFound(LeaseId),
    #[error("the store is closed")]
    Closed,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Storage(String),
}

/// The store every catalog operation goes through (docs/semantics.md, "Layers").
///
/// Writes are durable when they return. One successful transaction with at
/// least one effective write increments the revision by exactly one.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Runs a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    /// The revision of the last committed write.
    async fn current_revision(&self) -> Result<u64, StoreError>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease; answers its TTL, or `LeaseNotFound`.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Ends a lease, deleting its keys in one revision. Answers the current
    /// revision afterwards.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<u64, StoreError>;

    /// Streams every change under `prefix` after `from_revision`, then live
    /// changes, with a `Progress` item every `progress_every` when idle.
    /// Fails with `Compacted` when the history no longer reaches back.
    async fn watch(
        &self,
        prefix: Vec<u8>,
        from_revision: u64,
        progress_every: Duration,
    ) -> Result<WatchStream, StoreError>;

    /// What the store measures about itself, for metrics; read without
    /// waiting for any write.
    fn stats(&self) -> std::sync::Arc<stats::StoreStats>;

    /// Makes everything durable and stops background work; later calls fail
    /// with `Closed`.
    async fn close(&self) -> Result<(), StoreError>;
}

/// Responses the etcd store's watch reads ahead of its consumer (etcd
/// pushes them over its own stream). Small on purpose: a watcher whose
/// client stopped reading should stop pulling events into memory rather
/// than hold more of them. The sled store reads nothing ahead: its watch is
/// read as its consumer reads.
pub const WATCH_READ_AHEAD: usize = 8;

/// Whether `key` starts with `prefix`; the empty prefix matches every key.
pub fn in_prefix(key: &[u8], prefix: &[u8]) -> bool {
    key.starts_with(prefix)
}
