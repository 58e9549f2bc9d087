//! The stored forms of services, sessions and locks (JSON), and how a
//! stored service or instance becomes the domain's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_model::{Color, Instance, Service};

use super::{CatalogError, from_json, record};
use crate::store::KeyValue;

/// The stored form of a service; instances are stored separately.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ServiceRecord {
    #[serde(default)]
    pub(super) active_color: Option<Color>,
    /// Whether the color was ever set: the service key changes only when the
    /// color or the canary weight does, so its mod revision is then the
    /// weights' revision (and the color's, unless `color_revision` is kept).
    #[serde(default)]
    pub(super) color_set: bool,
    /// A canary's share of requests (percent) to the color not live.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) canary_weight: u8,
    /// Whether the canary pins each client to its first color.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) canary_sticky: bool,
    /// The revision of the last flip, kept once a canary step has changed
    /// the key since (0: the key's mod revision is the flip's).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) color_revision: u64,
    #[serde(default)]
    pub(super) metadata: BTreeMap<String, String>,
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl ServiceRecord {
    /// The revision of the last flip, the record read at `kv`.
    pub(super) fn color_revision(&self, kv: &KeyValue) -> u64 {
        match (self.color_set, self.color_revision) {
            (false, _) => 0,
            (true, 0) => kv.mod_revision,
            (true, kept) => kept,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SessionRecord {
    pub(super) node: String,
    pub(super) ttl_seconds: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LockRecord {
    pub(super) holder: String,
    /// Who took the lock as the registry knows them (with `--auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) principal: Option<String>,
    pub(super) lease: u64,
    pub(super) ttl_seconds: u32,
}

pub(super) fn decode_service(name: &str, kv: &KeyValue) -> Result<Service, CatalogError> {
    let record: ServiceRecord = from_json(kv)?;
    Ok(Service {
        name: name.to_string(),
        active_color: record.active_color,
        color_revision: record.color_revision(kv),
        // The key changes only on a flip or a canary step.
        weights_revision: if record.color_set { kv.mod_revision } else { 0 },
        canary_weight: if record.active_color.is_some() {
            record.canary_weight.min(99)
        } else {
            0
        },
        canary_sticky: record.canary_sticky
            && record.active_color.is_some()
            && record.canary_weight > 0,
        metadata: record.metadata,
        instances: Vec::new(),
    })
}

pub(super) fn decode_instance(kv: &KeyValue) -> Result<Instance, CatalogError> {
    let mut instance = record::decode(&kv.value).map_err(|reason| CatalogError::CorruptRecord {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        reason,
    })?;
    instance.create_revision = kv.create_revision;
    instance.mod_revision = kv.mod_revision;
    Ok(instance)
}
