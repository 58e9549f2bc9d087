//! What a watch of the registry yields (DESIGN §2.3): a snapshot, then the
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
