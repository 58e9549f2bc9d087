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
                    let mut service = service.clone();
                    // Kept sorted by id, so a change finds its instance by
                    // binary search (a linear find and a sort per change
                    // made a burst of registrations quadratic in a large
                    // service).
                    service.instances.sort_by(|a, b| a.id.cmp(&b.id));
                    pending.insert(service.name.clone(), service);
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
                service.canary_weight = updated.canary_weight;
                service.weights_revision = updated.weights_revision;
                service.canary_sticky = updated.canary_sticky;
                service.metadata = updated.metadata.clone();
            }
            Change::InstanceUpdated(instance) => {
                let service = self
                    .services
                    .entry(instance.service.clone())
                    .or_insert_with(|| Service::new(instance.service.clone()));
                match service
                    .instances
                    .binary_search_by(|i| i.id.as_str().cmp(&instance.id))
                {
                    Ok(at) => service.instances[at] = instance.clone(),
                    Err(at) => service.instances.insert(at, instance.clone()),
                }
            }
            Change::InstanceRemoved { service, id } => {
                if let Some(service) = self.services.get_mut(service)
                    && let Ok(at) = service
                        .instances
                        .binary_search_by(|i| i.id.as_str().cmp(id))
                {
                    service.instances.remove(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Health, Instance};

    fn instance(id: &str, port: u16) -> Instance {
        Instance {
            id: id.into(),
            service: "web".into(),
            color: None,
            node: "n1".into(),
            address: "10.0.0.1".parse().expect("ip"),
            port,
            tags: vec![],
            metadata: Default::default(),
            health: Health::Passing,
            session: None,
            create_revision: 1,
            mod_revision: 1,
        }
    }

    fn ids(view: &ServiceView) -> Vec<(String, u16)> {
        view.services["web"]
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.port))
            .collect()
    }

    #[test]
    fn changes_keep_each_service_sorted_by_id() {
        let mut web = Service::new("web");
        web.instances = vec![instance("c", 1), instance("a", 1)];
        let mut view = ServiceView::default();
        assert!(!view.apply(&WatchEvent::Snapshot {
            revision: 5,
            services: vec![web.clone()],
            complete: false,
        }));
        assert!(view.apply(&WatchEvent::Snapshot {
            revision: 5,
            services: vec![],
            complete: true,
        }));
        let changes = vec![
            Change::InstanceUpdated(instance("b", 1)),
            Change::InstanceUpdated(instance("c", 2)),
            Change::InstanceRemoved {
                service: "web".into(),
                id: "a".into(),
            },
            Change::InstanceRemoved {
                service: "web".into(),
                id: "zz".into(),
            },
            Change::InstanceUpdated(instance("d", 1)),
        ];
        assert!(view.apply(&WatchEvent::Changes {
            revision: 6,
            changes,
        }));
        assert_eq!(
            ids(&view),
            [("b".into(), 1), ("c".into(), 2), ("d".into(), 1)]
        );
        assert_eq!(view.revision, 6);
    }
}
