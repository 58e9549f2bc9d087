//! What a watch of the registry yields (docs/semantics.md, "Watch"): a snapshot, then the
//! changes of each revision in order, progress while idle, and a reset when
//! the stream must start over from a fresh snapshot.

use crate::{Instance, Service};

/// Why a watch stream starts over from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The revision the client asked to resume from is no longer retained.
    Compacted,
    /// The client read too slowly and the server's history moved past it.
    SlowConsumer,
    /// The client asked to resume from a revision the registry has not
    /// reached: it was restored from an older copy, or the client is
    /// confused. Waiting (as etcd does) would leave the client silently
    /// following nothing, so it starts over from the registry's state.
    FutureRevision,
}

impl ResetReason {
    /// The reason's name in JSON output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Compacted => "compacted",
            ResetReason::SlowConsumer => "slow_consumer",
            ResetReason::FutureRevision => "future_revision",
        }
    }
}

/// One change to a watched service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The service record (e.g. its active color); `instances` is empty.
    ServiceUpdated(Service),
    InstanceUpdated(Instance),
    InstanceRemoved {
        service: String,
        id: String,
    },
}

/// What a catalog watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Part of a consistent view at `revision`; the last part is `complete`.
    Snapshot {
        revision: u64,
        services: Vec<Service>,
        complete: bool,
    },
    Changes {
        revision: u64,
        changes: Vec<Change>,
    },
    Progress {
        revision: u64,
    },
    Reset {
        reason: ResetReason,
        message: String,
    },
}

/// Per-allocation overhead counted by [`WatchEvent::approx_bytes`]: the
/// allocator's header and rounding, roughly.
const ALLOCATION: usize = 16;
/// A non-empty `BTreeMap<String, String>` allocates a whole node first.
const MAP_NODE: usize = 560;
/// An `Instance` or `Service` value itself, besides what it points to.
const RECORD: usize = 200;

fn string_bytes(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        text.len() + ALLOCATION
    }
}

fn map_bytes(map: &std::collections::BTreeMap<String, String>) -> usize {
    if map.is_empty() {
        return 0;
    }
    let entries: usize = map
        .iter()
        .map(|(key, value)| string_bytes(key) + string_bytes(value))
        .sum();
    MAP_NODE * map.len().div_ceil(11) + entries
}

fn instance_bytes(instance: &Instance) -> usize {
    RECORD
        + string_bytes(&instance.id)
        + string_bytes(&instance.service)
        + string_bytes(&instance.node)
        + instance
            .tags
            .iter()
            .map(|tag| string_bytes(tag) + 24)
            .sum::<usize>()
        + map_bytes(&instance.metadata)
}

fn service_bytes(service: &Service) -> usize {
    RECORD
        + string_bytes(&service.name)
        + map_bytes(&service.metadata)
        + service.instances.iter().map(instance_bytes).sum::<usize>()
}

impl WatchEvent {
    /// About how much memory the event holds: what a watch stream's queue
    /// counts against its byte budget. Not exact (allocators differ), but
    /// it follows the strings and collections inside, which is what grows;
    /// calibrated against the registry's RSS with non-reading watchers.
    pub fn approx_bytes(&self) -> usize {
        let inner = match self {
            WatchEvent::Snapshot { services, .. } => services.iter().map(service_bytes).sum(),
            WatchEvent::Changes { changes, .. } => changes
                .iter()
                .map(|change| match change {
                    Change::ServiceUpdated(service) => service_bytes(service),
                    Change::InstanceUpdated(instance) => instance_bytes(instance),
                    Change::InstanceRemoved { service, id } => {
                        string_bytes(service) + string_bytes(id)
                    }
                })
                .sum(),
            WatchEvent::Progress { .. } => 0,
            WatchEvent::Reset { message, .. } => string_bytes(message),
        };
        // The event and its vector of changes or services.
        inner + RECORD + ALLOCATION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximate_sizes_grow_with_what_events_carry() {
        let small = WatchEvent::Changes {
            revision: 1,
            changes: vec![Change::InstanceRemoved {
                service: "web".into(),
                id: "w1".into(),
            }],
        };
        let mut service = Service::new("web");
        service
            .metadata
            .insert("padding".into(), "x".repeat(10_000));
        let big = WatchEvent::Changes {
            revision: 2,
            changes: vec![Change::ServiceUpdated(service)],
        };
        assert!(small.approx_bytes() < 1_000, "{}", small.approx_bytes());
        assert!(big.approx_bytes() > 10_000, "{}", big.approx_bytes());
        assert!(WatchEvent::Progress { revision: 3 }.approx_bytes() > 0);
    }
}
