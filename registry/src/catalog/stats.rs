//! Figures about the catalog that its watch does not carry: sessions and
//! locks open, what proxies reported. The metrics sampler reads them on a
//! timer in one read (one revision), so a scrape never touches the store.
//! (Deployment records are followed instead: see `follow.rs`.)

use switchyard_model::ProxyStatus;

use super::{Catalog, CatalogError, from_json, keys, now_ms};
use crate::store::Op;

/// The catalog's bookkeeping at one revision.
#[derive(Debug, Clone, Default)]
pub struct CatalogStats {
    pub revision: u64,
    pub sessions: usize,
    pub locks: usize,
    pub proxies: Vec<ProxyStatus>,
    /// The registry's clock when read, for the age of proxy reports.
    pub now_ms: u64,
}

impl Catalog {
    /// Watch streams open and their resets.
    pub fn watch_counters(&self) -> std::sync::Arc<super::watch::WatchCounters> {
        std::sync::Arc::clone(&self.watches)
    }

    /// What the store measures about itself.
    pub fn store_stats(&self) -> std::sync::Arc<crate::store::stats::StoreStats> {
        self.store.stats()
    }

    pub async fn stats(&self) -> Result<CatalogStats, CatalogError> {
        let ranges = [keys::SESSIONS, keys::LOCKS, keys::PROXIES];
        let (revision, mut results) = self
            .read(
                ranges
                    .iter()
                    .map(|prefix| Op::Range {
                        prefix: prefix.to_vec(),
                    })
                    .collect(),
            )
            .await?;
        let (sessions, locks, proxies) = (results.range()?, results.range()?, results.range()?);
        Ok(CatalogStats {
            revision,
            sessions: sessions.len(),
            locks: locks.len(),
            proxies: proxies.iter().map(from_json).collect::<Result<_, _>>()?,
            now_ms: now_ms(),
        })
    }
}
