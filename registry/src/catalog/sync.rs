//! `SyncNode`: make the registry's instances of one node exactly the given
//! set, in one guarded transaction (adds, updates, removes); a repeat
//! changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use switchyard_model::{Instance, SessionId, ValidationError, validate};

use super::{
    Catalog, CatalogError, MAX_ATTEMPTS, ServiceRecord, SyncOutcome, decode_instance, guard,
    instance_puts, keys, put, session_gone, single, to_json,
};
use crate::store::{KeyValue, Op, OpResult, StoreError, Txn};

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
        let session_node = self.session_node(session).await?;
        if session_node != node {
            return Err(CatalogError::Conflict(format!(
                "session {session} belongs to node {session_node}, not {node}: open a session \
                 for {node}"
            )));
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

        for _ in 0..MAX_ATTEMPTS {
            // First read: what the node has now, and who owns the wanted ids.
            let mut ops = vec![Op::Range {
                prefix: keys::node_index_of(node),
            }];
            ops.extend(wanted.keys().map(|id| Op::Get {
                key: keys::id_index(id),
            }));
            let (revision, results) = self.read(ops).await?;
            let mut results = results.into_iter();
            let node_entries = results.next().map(OpResult::into_kvs).unwrap_or_default();
            let owners: Vec<Option<KeyValue>> = results.map(|r| single(Some(r))).collect();

            // Second read: the records those indexes point at, and the services.
            let mut present: BTreeMap<String, String> = BTreeMap::new(); // id -> service
            for kv in &node_entries {
                if let Some(id) = keys::last_segment(&kv.key) {
                    present.insert(
                        id.to_string(),
                        String::from_utf8_lossy(&kv.value).into_owned(),
                    );
                }
            }
            for (id, owner) in wanted.keys().zip(&owners) {
                if let Some(owner) = owner
                    && !present.contains_key(id)
                {
                    let owner_service = String::from_utf8_lossy(&owner.value);
                    return Err(CatalogError::Conflict(format!(
                        "instance id {id} is registered on another node (service \
                         {owner_service}); ids must be unique across nodes"
                    )));
                }
            }
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
            let (_, results) = self.read(ops).await?;
            let mut results = results.into_iter();
            let current: Vec<(String, String, Option<KeyValue>)> = present
                .iter()
                .map(|(id, service)| (id.clone(), service.clone(), single(results.next())))
                .collect();
            let service_kvs: Vec<(&str, Option<KeyValue>)> = services
                .iter()
                .map(|service| (*service, single(results.next())))
                .collect();

            // Decide.
            let mut txn = Txn::default();
            let mut outcome = SyncOutcome::default();
            for kv in &node_entries {
                txn.compares.push(guard(kv.key.clone(), Some(kv)));
            }
            for (id, owner) in wanted.keys().zip(&owners) {
                txn.compares.push(guard(keys::id_index(id), owner.as_ref()));
            }
            for (service, kv) in &service_kvs {
                txn.compares
                    .push(guard(keys::service(service), kv.as_ref()));
                if kv.is_none() {
                    txn.success.push(put(
                        keys::service(service),
                        to_json(&ServiceRecord::default())?,
                        None,
                    ));
                }
            }
            let mut existing: HashMap<&str, (&str, Option<Instance>)> = HashMap::new();
            for (id, service, kv) in &current {
                txn.compares
                    .push(guard(keys::instance(service, id), kv.as_ref()));
                let instance = kv.as_ref().map(decode_instance).transpose()?;
                existing.insert(id.as_str(), (service.as_str(), instance));
            }
            for (id, (service, _)) in &existing {
                let keep = wanted.get(*id).is_some_and(|w| w.service == *service);
                if !keep {
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
            }
            for (id, instance) in &wanted {
                match existing.get(id.as_str()) {
                    Some((service, Some(current)))
                        if *service == instance.service && current.same_registration(instance) => {}
                    Some((service, Some(_))) if *service == instance.service => {
                        outcome.updated += 1;
                        txn.success.extend(instance_puts(instance));
                    }
                    Some(_) => {
                        outcome.updated += 1;
                        txn.success.extend(instance_puts(instance));
                    }
                    None => {
                        outcome.added += 1;
                        txn.success.extend(instance_puts(instance));
                    }
                }
            }
            if !txn.success.iter().any(Op::is_write) {
                outcome.revision = revision;
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
}
