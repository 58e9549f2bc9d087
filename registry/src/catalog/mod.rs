//! The domain: sessions, instances, node reconciliation, colors, deploy locks
//! and deployment records (docs/semantics.md), written only against [`Store`].
//!
//! Every write is read → decide → one guarded transaction. The guards are the
//! revisions of what was read, so a concurrent change makes the transaction
//! fail and the operation starts over from a fresh read; nothing is decided
//! on stale data. **Architecture Invariant:** one public operation commits at
//! most one transaction, hence at most one revision.

mod backup;
mod colors;
mod drain;
pub use drain::MAX_DRAINING_PER_CALL;
mod error;
mod follow;
mod history;
pub mod keys;
mod proxies;
mod record;
mod requests;
mod rollback;
pub use rollback::{Requester, RolledBack};
mod snapshot;
mod stats;
mod stored;
mod sync;
pub mod tokens;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use switchyard_model::{Health, Instance, ServiceSummary, SessionId, validate};

use crate::store::{Compare, KeyValue, Op, Results, Store, StoreError, Txn, TxnResponse};

pub use error::CatalogError;
#[cfg(test)]
pub(crate) use record::decode as decode_record;
pub use stats::CatalogStats;
use stored::{LockRecord, ServiceRecord, SessionRecord, decode_instance, decode_service};
pub use watch::{Change, ResetReason, WatchCounters, WatchEvent};

/// How often an operation re-reads and retries after losing a race.
const MAX_ATTEMPTS: usize = 64;
/// Node name given to instances registered without a node or session.
pub const EXTERNAL_NODE: &str = "external";
pub use history::{DEPLOYMENTS_KEPT, DeploymentPage};

/// Settings of the catalog.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// How often an idle watch stream reports progress.
    pub progress_interval: Duration,
    /// Services per snapshot message of a watch stream.
    pub snapshot_chunk: usize,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            progress_interval: Duration::from_secs(5),
            snapshot_chunk: 256,
        }
    }
}

pub use switchyard_model::SyncOutcome;

/// The catalog over one store. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn Store>,
    config: CatalogConfig,
    /// Nodes of sessions read before. A session never changes node and
    /// its id is never reused, so an answer stays true; the authorizer asks
    /// on every agent write, and this spares it a read and a decode.
    session_nodes: Arc<std::sync::Mutex<std::collections::HashMap<SessionId, String>>>,
    /// Watch streams open and their resets, for metrics.
    watches: Arc<watch::WatchCounters>,
}

/// Sessions whose node the catalog remembers, at most; then it starts over.
const SESSION_NODES_KEPT: usize = 65_536;
use switchyard_model::clock::now_ms;

/// A record's stored JSON. Our records are plain structs of strings,
/// numbers and maps, so this fails only on a bug; it is an error rather than
/// empty bytes so that such a bug never stores an empty record.
fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, CatalogError> {
    serde_json::to_vec(value).map_err(|error| CatalogError::Encoding(error.to_string()))
}

fn from_json<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, CatalogError> {
    serde_json::from_slice(&kv.value).map_err(|error| CatalogError::CorruptRecord {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        reason: error.to_string(),
    })
}

fn mod_revision(kv: Option<&KeyValue>) -> u64 {
    kv.map_or(0, |kv| kv.mod_revision)
}

fn guard(key: Vec<u8>, kv: Option<&KeyValue>) -> Compare {
    Compare::ModRevision {
        key,
        revision: mod_revision(kv),
    }
}

fn put(key: Vec<u8>, value: Vec<u8>, lease: Option<u64>) -> Op {
    Op::Put { key, value, lease }
}

/// Takes the single result of a `Get`.
fn session_gone(session: SessionId) -> CatalogError {
    CatalogError::not_found(
        format!("session {session}"),
        "it expired or was closed; open a new session and register again",
    )
}

impl Catalog {
    pub fn new(store: Arc<dyn Store>, config: CatalogConfig) -> Self {
        Catalog {
            store,
            config,
            session_nodes: Arc::default(),
            watches: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads `ops` at one revision; their results in order.
    async fn read(&self, ops: Vec<Op>) -> Result<(u64, Results), CatalogError> {
        let TxnResponse {
            revision, results, ..
        } = self.store.txn(Txn::read(ops)).await?;
        Ok((revision, Results::new(results)))
    }

    /// Every JSON record under `prefix`, decoded, and the revision read at.
    async fn read_records<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
    ) -> Result<(u64, Vec<T>), CatalogError> {
        let (revision, results) = self
            .read(vec![Op::Range {
                prefix: prefix.to_vec(),
            }])
            .await?;
        let records = results
            .rest()?
            .into_iter()
            .map(|kv| from_json::<T>(&kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((revision, records))
    }

    /// Commits `txn`; `None` when a guard failed and the caller should retry.
    async fn commit(&self, txn: Txn) -> Result<Option<u64>, CatalogError> {
        let response = self.store.txn(txn).await?;
        Ok(response.succeeded.then_some(response.revision))
    }

    // ----- sessions -----

    /// Opens a session for `node` that lives `ttl_seconds` after its last keep-alive.
    pub async fn open_session(
        &self,
        node: &str,
        ttl_seconds: u32,
    ) -> Result<(SessionId, u32), CatalogError> {
        validate::identifier("node", node)?;
        let ttl_seconds = validate::ttl_seconds("ttl_seconds", ttl_seconds)?;
        let lease = self
            .store
            .lease_grant(Duration::from_secs(u64::from(ttl_seconds)))
            .await?;
        let record = SessionRecord {
            node: node.to_string(),
            ttl_seconds,
        };
        let txn = Txn {
            success: vec![put(keys::session(lease), to_json(&record)?, Some(lease))],
            ..Txn::default()
        };
        match self.store.txn(txn).await {
            Ok(_) => Ok((lease, ttl_seconds)),
            Err(error) => {
                let _ = self.store.lease_revoke(lease).await;
                Err(error.into())
            }
        }
    }

    pub async fn keep_alive(&self, session: SessionId) -> Result<u32, CatalogError> {
        match self.store.lease_keep_alive(session).await {
            Ok(ttl) => Ok(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)),
            Err(StoreError::LeaseNotFound(_)) => Err(session_gone(session)),
            Err(error) => Err(error.into()),
        }
    }

    /// Ends a session; its instances are removed in the same revision.
    pub async fn close_session(&self, session: SessionId) -> Result<u64, CatalogError> {
        let (_, mut results) = self
            .read(vec![Op::Get {
                key: keys::session(session),
            }])
            .await?;
        if results.get()?.is_none() {
            return Err(session_gone(session));
        }
        match self.store.lease_revoke(session).await {
            Ok(revision) => Ok(revision),
            Err(StoreError::LeaseNotFound(_)) => Err(session_gone(session)),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn session_node(&self, session: SessionId) -> Result<String, CatalogError> {
        let remembered = match self.session_nodes.lock() {
            Ok(nodes) => nodes.get(&session).cloned(),
            Err(poisoned) => poisoned.into_inner().get(&session).cloned(),
        };
        if let Some(node) = remembered {
            return Ok(node);
        }
        let (_, mut results) = self
            .read(vec![Op::Get {
                key: keys::session(session),
            }])
            .await?;
        let kv = results.get()?.ok_or_else(|| session_gone(session))?;
        let record: SessionRecord = from_json(&kv)?;
        if let Ok(mut nodes) = self.session_nodes.lock() {
            if nodes.len() >= SESSION_NODES_KEPT {
                nodes.clear();
            }
            nodes.insert(session, record.node.clone());
        }
        Ok(record.node)
    }

    // ----- instances -----

    /// Registers or updates one instance. With a session the instance lives
    /// as long as the session; without one until it is deregistered.
    /// `may_replace` is asked about the instance the id names now, if any,
    /// inside the same compare-and-swap: whoever owns it must agree to its
    /// replacement (the caller's authorization), and an instance that
    /// changes owner meanwhile is read and asked about again.
    pub async fn register(
        &self,
        mut instance: Instance,
        session: Option<SessionId>,
        may_replace: &(dyn Fn(&Instance) -> Result<(), String> + Sync),
    ) -> Result<u64, CatalogError> {
        if let Some(session) = session {
            let node = self.session_node(session).await?;
            if instance.node.is_empty() {
                instance.node = node;
            }
        } else if instance.node.is_empty() {
            instance.node = EXTERNAL_NODE.to_string();
        }
        instance.session = session;
        validate::instance("instance.", &instance)?;

        for _ in 0..MAX_ATTEMPTS {
            let (revision, mut results) = self
                .read(vec![
                    Op::Get {
                        key: keys::service(&instance.service),
                    },
                    Op::Get {
                        key: keys::id_index(&instance.id),
                    },
                ])
                .await?;
            let service_kv = results.get()?;
            let index_kv = results.get()?;
            let existing = match &index_kv {
                Some(kv) => {
                    let owner = String::from_utf8_lossy(&kv.value).into_owned();
                    self.get_one(keys::instance(&owner, &instance.id)).await?
                }
                None => None,
            };
            let current = existing.as_ref().map(decode_instance).transpose()?;
            if let Some(current) = &current {
                may_replace(current).map_err(CatalogError::NotOwner)?;
                if current.service != instance.service {
                    return Err(CatalogError::Conflict(format!(
                        "instance id {} is registered under service {}: deregister it \
                         first or choose another id",
                        instance.id, current.service
                    )));
                }
            }
            let mut txn = Txn {
                compares: vec![
                    guard(keys::service(&instance.service), service_kv.as_ref()),
                    guard(keys::id_index(&instance.id), index_kv.as_ref()),
                    guard(
                        keys::instance(&instance.service, &instance.id),
                        existing.as_ref(),
                    ),
                ],
                ..Txn::default()
            };
            let instance = drain::carry_mark(instance.clone(), current.as_ref());
            if let Some(current) = &current {
                if current.same_registration(&instance) {
                    return Ok(revision);
                }
                if current.node != instance.node {
                    txn.success.push(Op::Delete {
                        key: keys::node_index(&current.node, &instance.id),
                    });
                }
            }
            if service_kv.is_none() {
                txn.success.push(put(
                    keys::service(&instance.service),
                    to_json(&ServiceRecord::default())?,
                    None,
                ));
            }
            txn.success.extend(instance_puts(&instance)?);
            match self.commit(txn).await {
                Ok(Some(revision)) => return Ok(revision),
                Ok(None) => continue,
                Err(CatalogError::Store(StoreError::LeaseNotFound(_))) => {
                    return Err(session_gone(session.unwrap_or_default()));
                }
                Err(error) => return Err(error),
            }
        }
        Err(CatalogError::Contention(format!(
            "instance {}",
            instance.id
        )))
    }

    async fn get_one(&self, key: Vec<u8>) -> Result<Option<KeyValue>, CatalogError> {
        let (_, mut results) = self.read(vec![Op::Get { key }]).await?;
        Ok(results.get()?)
    }

    /// Removes one instance by id, once `may_remove` agrees (the caller's
    /// authorization against the instance's owner), inside the same
    /// compare-and-swap.
    pub async fn deregister(
        &self,
        id: &str,
        may_remove: &(dyn Fn(&Instance) -> Result<(), String> + Sync),
    ) -> Result<u64, CatalogError> {
        validate::identifier("id", id)?;
        for _ in 0..MAX_ATTEMPTS {
            let index_kv = self.get_one(keys::id_index(id)).await?.ok_or_else(|| {
                CatalogError::not_found(
                    format!("instance {id}"),
                    "list instances with `cdctl status SERVICE`",
                )
            })?;
            let service = String::from_utf8_lossy(&index_kv.value).into_owned();
            let instance_kv = self.get_one(keys::instance(&service, id)).await?;
            let mut txn = Txn {
                compares: vec![
                    guard(keys::id_index(id), Some(&index_kv)),
                    guard(keys::instance(&service, id), instance_kv.as_ref()),
                ],
                success: vec![
                    Op::Delete {
                        key: keys::id_index(id),
                    },
                    Op::Delete {
                        key: keys::instance(&service, id),
                    },
                ],
                ..Txn::default()
            };
            if let Some(kv) = &instance_kv {
                let instance = decode_instance(kv)?;
                may_remove(&instance).map_err(CatalogError::NotOwner)?;
                txn.success.push(Op::Delete {
                    key: keys::node_index(&instance.node, id),
                });
            }
            if let Some(revision) = self.commit(txn).await? {
                return Ok(revision);
            }
        }
        Err(CatalogError::Contention(format!("instance {id}")))
    }

    // ----- reads -----

    /// Every service with its live color and instance counts.
    pub async fn list_services(&self) -> Result<(u64, Vec<ServiceSummary>), CatalogError> {
        let (revision, mut results) = self
            .read(vec![
                Op::Range {
                    prefix: keys::SERVICES.to_vec(),
                },
                Op::Range {
                    prefix: keys::INSTANCES.to_vec(),
                },
            ])
            .await?;
        let services = results.range()?;
        let instances = results.range()?;
        let mut summaries: BTreeMap<String, ServiceSummary> = BTreeMap::new();
        for kv in &services {
            if let Some(keys::Watched::Service(name)) = keys::parse_watched(&kv.key) {
                let service = decode_service(&name, kv)?;
                summaries.insert(
                    name.clone(),
                    ServiceSummary {
                        name,
                        active_color: service.active_color,
                        instances: 0,
                        passing: 0,
                    },
                );
            }
        }
        for kv in &instances {
            let instance = decode_instance(kv)?;
            if let Some(summary) = summaries.get_mut(&instance.service) {
                summary.instances += 1;
                if instance.health == Health::Passing {
                    summary.passing += 1;
                }
            }
        }
        Ok((revision, summaries.into_values().collect()))
    }

    // ----- proxies -----

    /// Records what a proxy applied; `reported_at_ms` is set here, on the
    /// registry's clock. A proxy cannot claim a revision the registry has not
    /// reached: deploys wait on these reports.
    pub fn config(&self) -> &CatalogConfig {
        &self.config
    }
}

/// The three keys one instance occupies, all under its session's lease.
fn instance_puts(instance: &Instance) -> Result<[Op; 3], CatalogError> {
    let lease = instance.session;
    let record = record::encode(instance).map_err(|e| CatalogError::Encoding(e.to_string()))?;
    Ok([
        put(
            keys::instance(&instance.service, &instance.id),
            record,
            lease,
        ),
        put(
            keys::id_index(&instance.id),
            instance.service.clone().into_bytes(),
            lease,
        ),
        put(
            keys::node_index(&instance.node, &instance.id),
            instance.service.clone().into_bytes(),
            lease,
        ),
    ])
}
