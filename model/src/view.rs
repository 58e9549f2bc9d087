//! A local copy of the watched services, kept current by applying watch
//! events in order: what `cdctl template` renders from and what tests
//! compare with the registry's own answer.

use std::collections::BTreeMap;

use crate::Service;
use crate::watch::{Change, WatchEvent};

/// The services as of `revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceView {
    pub services: BTreeMap<String, Service>,
    /// The last revision applied; 0 before the first complete snapshot.
    pub revision: u64,
    /// A snapshot is arriving in parts; it replaces `services` when complete.
    pending: Option<BTreeMap<String, Service>>,
}

impl ServiceView {
    /// Applies one event; answers whether the view changed (a completed
    /// snapshot or a batch of changes).
    pub fn apply(&mut self, event: &WatchEvent) -> bool {
        match event {
            WatchEvent::Snapshot {
                revision,
                services,
                complete,
            } => {
                let pending = self.pending.get_or_insert_with(BTreeMap::new);
                for service in services {
                    pending.insert(service.name.clone(), service.clone());
                }
                if *complete {
                    self.services = self.pending.take().unwrap_or_default();
                    self.revision = *revision;
                    return true;
                }
                false
            }
            WatchEvent::Changes { revision, changes } => {
                for change in changes {
                    self.apply_change(change);
                }
                self.revision = *revision;
                true
            }
            WatchEvent::Progress { revision } => {
                self.revision = self.revision.max(*revision);
                false
            }
            WatchEvent::Reset { .. } => {
                self.pending = None;
                false
            }
        }
    }

    fn apply_change(&mut self, change: &Change) {
        match change {
            Change::ServiceUpdated(updated) => {
                let service = self
                    .services
                    .entry(updated.name.clone())
                    .or_insert_with(|| Service::new(updated.name.clone()));
                service.active_color = updated.active_color;
                service.color_revision = updated.color_revision;
                service.metadata = updated.metadata.clone();
            }
            Change::InstanceUpdated(instance) => {
                let service = self
                    .services
                    .entry(instance.service.clone())
                    .or_insert_with(|| Service::new(instance.service.clone()));
                match service.instances.iter_mut().find(|i| i.id == instance.id) {
                    Some(existing) => *existing = instance.clone(),
                    None => {
                        service.instances.push(instance.clone());
                        service.instances.sort_by(|a, b| a.id.cmp(&b.id));
                    }
                }
            }
            Change::InstanceRemoved { service, id } => {
                if let Some(service) = self.services.get_mut(service) {
                    service.instances.retain(|i| &i.id != id);
                }
            }
        }
    }
}
