//! `SyncNode`: make the registry's instances of one node exactly the given
//! set, in one guarded transaction (adds, updates, removes); a repeat
//! changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use switchyard_model::{Instance, SessionId, ValidationError, validate};

use super::drain::carry_mark;
use super::{
    Catalog, CatalogError, MAX_ATTEMPTS, ServiceRecord, SyncOutcome, decode_instance, guard,
    instance_puts, keys, put, session_gone, to_json,
};
use crate::store::{KeyValue, Op, StoreError, Txn};

/// What one node has in the store, read for a `SyncNode` at `revision`.
struct NodeState {
    revision: u64,
    /// The node's index entries (`x/nd/{node}/{id}` → service).
    entries: Vec<KeyValue>,
    /// The id index entry of each wanted id, in `wanted`'s order.
    owners: Vec<Option<KeyValue>>,
    /// Each present instance: id, service and its record.
    current: Vec<(String, String, Option<KeyValue>)>,
    /// The record of each service a wanted instance belongs to.
    services: Vec<(String, Option<KeyValue>)>,
}

impl Catalog {
    /// Makes the registry's instances of `node` exactly `desired`, in one
    /// transaction: adds, updates and removes. Repeating it changes nothing.
    pub async fn sync_node(
        &self,
        session: SessionId,
        node: &str,
        desired: Vec<Instance>,
    ) -> Result<SyncOutcome, CatalogError> {
        validate::identifier("node", node)?;
        let mut wanted = wanted_instances(session, node, desired)?;
        let session_node = self.session_node(session).await?;
        if session_node != node {
            return Err(CatalogError::Conflict(format!(
                "session {session} belongs to node {session_node}, not {node}: open a session \
                 for {node}"
            )));
        }
        // Refusals stand across attempts: a refused id is out of `wanted`.
        let mut refused = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let state = self.node_state(node, &mut wanted, &mut refused).await?;
            let (txn, mut outcome) = plan(node, &wanted, &state)?;
            outcome.refused = refused.clone();
            if !txn.success.iter().any(Op::is_write) {
                outcome.revision = state.revision;
                return Ok(outcome);
            }
            match self.commit(txn).await {
                Ok(Some(revision)) => {
                    outcome.revision = revision;
                    return Ok(outcome);
                }
                Ok(None) => continue,
                Err(CatalogError::Store(StoreError::LeaseNotFound(_))) => {
                    return Err(session_gone(session));
                }
                Err(error) => return Err(error),
            }
        }
        Err(CatalogError::Contention(format!("node {node}")))
    }

    /// Two reads: the node's index and the owners of the wanted ids, then
    /// the records those point at and the services. Wanted ids another
    /// owner holds are taken out of `wanted` and added to `refused`.
    async fn node_state(
        &self,
        node: &str,
        wanted: &mut BTreeMap<String, Instance>,
        refused: &mut Vec<(String, String)>,
    ) -> Result<NodeState, CatalogError> {
        let mut ops = vec![Op::Range {
            prefix: keys::node_index_of(node),
        }];
        ops.extend(wanted.keys().map(|id| Op::Get {
            key: keys::id_index(id),
        }));
        let (revision, mut results) = self.read(ops).await?;
        let entries = results.range()?;
        let mut owners: Vec<Option<KeyValue>> = wanted
            .keys()
            .map(|_| results.get())
            .collect::<Result<_, _>>()?;

        let mut present: BTreeMap<String, String> = BTreeMap::new(); // id -> service
        for kv in &entries {
            if let Some(id) = keys::last_segment(&kv.key) {
                present.insert(
                    id.to_string(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                );
            }
        }
        let mut kept_owners = Vec::with_capacity(owners.len());
        let ids: Vec<String> = wanted.keys().cloned().collect();
        for (id, owner) in ids.into_iter().zip(owners.drain(..)) {
            match owner {
                Some(owner) if !present.contains_key(&id) => {
                    let owner_service = String::from_utf8_lossy(&owner.value);
                    refused.push((
                        id.clone(),
                        format!(
                            "instance id {id} is registered elsewhere (service {owner_service}, \
                             another node or an external instance); ids must be unique: give \
                             the container another SERVICE_ID"
                        ),
                    ));
                    wanted.remove(&id);
                }
                owner => kept_owners.push(owner),
            }
        }
        let owners = kept_owners;
        let services: BTreeSet<&str> = wanted.values().map(|i| i.service.as_str()).collect();
        let mut ops: Vec<Op> = present
            .iter()
            .map(|(id, service)| Op::Get {
                key: keys::instance(service, id),
            })
            .collect();
        ops.extend(services.iter().map(|service| Op::Get {
            key: keys::service(service),
        }));
        let (_, mut results) = self.read(ops).await?;
        let current = present
            .into_iter()
            .map(|(id, service)| Ok((id, service, results.get()?)))
            .collect::<Result<_, StoreError>>()?;
        let services = services
            .into_iter()
            .map(|service| Ok((service.to_string(), results.get()?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(NodeState {
            revision,
            entries,
            owners,
            current,
            services,
        })
    }
}

/// `desired`, checked and keyed by id, each in `session` on `node`.
fn wanted_instances(
    session: SessionId,
    node: &str,
    desired: Vec<Instance>,
) -> Result<BTreeMap<String, Instance>, CatalogError> {
    if desired.len() > validate::MAX_SYNC_INSTANCES {
        return Err(ValidationError::new(
            "instances",
            format!(
                "{} instances in one SyncNode; the limit is {}: split the node's \
                 instances across Register calls or raise nothing here",
                desired.len(),
                validate::MAX_SYNC_INSTANCES
            ),
        )
        .into());
    }
    let mut wanted: BTreeMap<String, Instance> = BTreeMap::new();
    for (index, mut instance) in desired.into_iter().enumerate() {
        if instance.node.is_empty() {
            instance.node = node.to_string();
        }
        if instance.node != node {
            return Err(ValidationError::new(
                format!("instances[{index}].node"),
                format!(
                    "instance {} names node {}, but this SyncNode is for {node}",
                    instance.id, instance.node
                ),
            )
            .into());
        }
        instance.session = Some(session);
        validate::instance(&format!("instances[{index}]."), &instance)?;
        if wanted.insert(instance.id.clone(), instance).is_some() {
            return Err(ValidationError::new(
                format!("instances[{index}].id"),
                "the same id appears twice in one SyncNode",
            )
            .into());
        }
    }
    Ok(wanted)
}

/// The guarded transaction that turns `state` into `wanted`, and what it
/// adds, updates and removes. Every key read is guarded by its mod
/// revision, so a change in between fails the commit and the sync retries.
fn plan(
    node: &str,
    wanted: &BTreeMap<String, Instance>,
    state: &NodeState,
) -> Result<(Txn, SyncOutcome), CatalogError> {
    let mut txn = Txn::default();
    let mut outcome = SyncOutcome::default();
    for kv in &state.entries {
        txn.compares.push(guard(kv.key.clone(), Some(kv)));
    }
    for (id, owner) in wanted.keys().zip(&state.owners) {
        txn.compares.push(guard(keys::id_index(id), owner.as_ref()));
    }
    for (service, kv) in &state.services {
        txn.compares
            .push(guard(keys::service(service), kv.as_ref()));
        if kv.is_none() {
            let record = to_json(&ServiceRecord::default())?;
            txn.success.push(put(keys::service(service), record, None));
        }
    }
    let mut existing: HashMap<&str, (&str, Option<Instance>)> = HashMap::new();
    for (id, service, kv) in &state.current {
        txn.compares
            .push(guard(keys::instance(service, id), kv.as_ref()));
        let instance = kv.as_ref().map(decode_instance).transpose()?;
        existing.insert(id.as_str(), (service.as_str(), instance));
    }
    for (id, (service, _)) in &existing {
        if wanted.get(*id).is_some_and(|w| w.service == *service) {
            continue;
        }
        txn.success.push(Op::Delete {
            key: keys::instance(service, id),
        });
        if !wanted.contains_key(*id) {
            txn.success.push(Op::Delete {
                key: keys::id_index(id),
            });
            txn.success.push(Op::Delete {
                key: keys::node_index(node, id),
            });
            outcome.removed += 1;
        }
    }
    for (id, instance) in wanted {
        match existing.get(id.as_str()) {
            Some((service, Some(current))) if *service == instance.service => {
                // The registry's draining mark stays whatever the agent sends.
                let instance = carry_mark(instance.clone(), Some(current));
                if !current.same_registration(&instance) {
                    outcome.updated += 1;
                    txn.success.extend(instance_puts(&instance)?);
                }
            }
            // Changed, or moved to another service: written again.
            Some(_) => {
                outcome.updated += 1;
                txn.success
                    .extend(instance_puts(&carry_mark(instance.clone(), None))?);
            }
            None => {
                outcome.added += 1;
                txn.success
                    .extend(instance_puts(&carry_mark(instance.clone(), None))?);
            }
        }
    }
    Ok((txn, outcome))
}
