//! What a backup holds: everything durable, read at one revision. Keys that
//! live in sessions (agents' instances, sessions, deploy locks) are left
//! out, since they belong to processes that reconnect and register again;
//! so are proxy reports, whose revisions would mean nothing to a restored
//! registry and could make a deploy believe a proxy applied a flip.

use super::{Catalog, CatalogError, keys};
use crate::store::{KeyValue, Op};

/// The key prefixes a backup reads; anything else is not durable.
const BACKED_UP: [&[u8]; 5] = [
    keys::SERVICES,
    keys::INSTANCES,
    keys::ID_INDEX,
    keys::NODE_INDEX,
    keys::DEPLOYMENTS,
];

impl Catalog {
    /// The durable keys and the revision they were read at, in one
    /// consistent read.
    pub async fn backup(&self) -> Result<(u64, Vec<KeyValue>), CatalogError> {
        let ops = BACKED_UP
            .iter()
            .map(|prefix| Op::Range {
                prefix: prefix.to_vec(),
            })
            .collect();
        let (revision, results) = self.read(ops).await?;
        let entries = results
            .rest()?
            .into_iter()
            .filter(|kv| kv.lease.is_none())
            .collect();
        Ok((revision, entries))
    }
}
