//! What the dashboard shows, kept in memory: the services (the catalog's
//! own watch, as DNS and metrics keep theirs), every deployment record, and
//! every proxy's last report. Each change bumps a version that the pages'
//! event stream sends, so a browser asks for the part that changed.
//!
//! The state starts following the catalog when the dashboard is first
//! opened, so a registry whose dashboard nobody opens pays nothing for it.
//!
//! **Architecture Invariant:** a page reads only this state, never the
//! store: a thousand open dashboards cost the writers nothing but the three
//! watches below.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use switchyard_model::view::ServiceView;
use switchyard_model::{Deployment, ProxyStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, keys};

/// The dashboard's copy of the catalog. Cheap to clone.
#[derive(Clone)]
pub struct UiState {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    services: RwLock<ServiceView>,
    /// Deployment records by their key (unique per service and id).
    deploys: RwLock<BTreeMap<Vec<u8>, Deployment>>,
    proxies: RwLock<BTreeMap<String, ProxyStatus>>,
    /// Services whose deploy lock is held.
    locked: RwLock<std::collections::BTreeSet<String>>,
    version: Versions,
    /// Each follower's first complete read arrived.
    loaded: [AtomicBool; 4],
}

/// Which follower a `loaded` flag belongs to.
const SERVICES: usize = 0;
const DEPLOYS: usize = 1;
const PROXIES: usize = 2;
const LOCKS: usize = 3;

/// A counter bumped on every change the pages show.
struct Versions(watch::Sender<u64>);

impl Default for Versions {
    fn default() -> Self {
        Versions(watch::Sender::new(0))
    }
}

impl UiState {
    /// Starts following `catalog` until `stop`.
    pub fn follow(catalog: &Catalog, stop: &CancellationToken) -> Self {
        let state = UiState {
            inner: Arc::default(),
        };
        tokio::spawn(state.clone().follow_services(catalog.clone(), stop.clone()));
        tokio::spawn(state.clone().follow_deploys(catalog.clone(), stop.clone()));
        tokio::spawn(state.clone().follow_proxies(catalog.clone(), stop.clone()));
        tokio::spawn(state.clone().follow_locks(catalog.clone(), stop.clone()));
        state
    }

    /// Waits (at most `patience`) until every follower has read the
    /// catalog once, so the first page is not an empty one.
    pub async fn loaded(&self, patience: Duration) {
        let mut changes = self.changes();
        let deadline = tokio::time::Instant::now() + patience;
        while !self.inner.loaded.iter().all(|l| l.load(Ordering::Acquire)) {
            let wait = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(wait, Ok(Ok(()))) {
                tracing::warn!(
                    "the dashboard's first read of the catalog is slow; showing what it has"
                );
                return;
            }
        }
    }

    fn mark_loaded(&self, follower: usize) {
        self.inner.loaded[follower].store(true, Ordering::Release);
        self.bump();
    }

    /// A receiver that sees every version bump.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.version.0.subscribe()
    }

    fn bump(&self) {
        self.inner.version.0.send_modify(|version| *version += 1);
    }

    /// `read` over the services as the registry last told them.
    pub fn with_view<R>(&self, read_view: impl FnOnce(&ServiceView) -> R) -> R {
        read_view(&read(&self.inner.services))
    }

    /// The records of `service`, newest first.
    pub fn records_of(&self, service: &str) -> Vec<Deployment> {
        let prefix = keys::deployments_of(service);
        let mut records: Vec<Deployment> = read(&self.inner.deploys)
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, record)| record.clone())
            .collect();
        records.sort_by_key(|record| std::cmp::Reverse(record.started_at_ms));
        records
    }

    /// Each service's newest record.
    pub fn latest_records(&self) -> BTreeMap<String, Deployment> {
        let mut latest: BTreeMap<String, Deployment> = BTreeMap::new();
        for record in read(&self.inner.deploys).values() {
            let newer = latest
                .get(&record.service)
                .is_none_or(|seen| seen.started_at_ms < record.started_at_ms);
            if newer {
                latest.insert(record.service.clone(), record.clone());
            }
        }
        latest
    }

    /// Whether a deploy holds `service`'s lock (a record `in_progress`
    /// without one is a deploy that died).
    pub fn is_locked(&self, service: &str) -> bool {
        read(&self.inner.locked).contains(service)
    }

    /// Every proxy's last report, by id.
    pub fn proxies(&self) -> Vec<ProxyStatus> {
        read(&self.inner.proxies).values().cloned().collect()
    }

    async fn follow_services(self, catalog: Catalog, stop: CancellationToken) {
        catalog
            .follow_services(stop, "ui", |event| {
                let changed = match self.inner.services.write() {
                    Ok(mut view) => view.apply(event),
                    Err(poisoned) => poisoned.into_inner().apply(event),
                };
                if changed {
                    self.mark_loaded(SERVICES);
                }
            })
            .await;
    }

    /// Records read once, then followed write by write; read again after
    /// an error.
    async fn follow_deploys(self, catalog: Catalog, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let followed = async {
                let (revision, records) = catalog.deployment_records().await?;
                *write(&self.inner.deploys) = records.into_iter().collect();
                self.mark_loaded(DEPLOYS);
                let changes = catalog.deployment_changes(revision).await?;
                let mut changes = std::pin::pin!(changes);
                while let Some(item) = changes.next().await {
                    let (_, changed) = item?;
                    let mut deploys = write(&self.inner.deploys);
                    for (key, record) in changed {
                        match record {
                            Some(record) => deploys.insert(key, record),
                            None => deploys.remove(&key),
                        };
                    }
                    drop(deploys);
                    self.bump();
                }
                Ok::<(), crate::catalog::CatalogError>(())
            };
            tokio::select! {
                () = stop.cancelled() => return,
                result = followed => if let Err(error) = result {
                    tracing::warn!(%error, "the dashboard cannot follow the deployment records; reading them again");
                },
            }
            pause(&stop).await;
        }
    }

    async fn follow_proxies(self, catalog: Catalog, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let mut reports = catalog.watch_proxies(stop.clone());
            while let Some(item) = reports.next().await {
                match item {
                    Ok((written, _)) => {
                        let mut proxies = write(&self.inner.proxies);
                        for report in written {
                            proxies.insert(report.proxy_id.clone(), report);
                        }
                        drop(proxies);
                        self.mark_loaded(PROXIES);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the dashboard cannot follow proxy reports; reading them again");
                        break;
                    }
                }
            }
            pause(&stop).await;
        }
    }
}

impl UiState {
    /// The held locks read once, then followed (a lock's lease expiring is
    /// a deletion too); read again after an error.
    async fn follow_locks(self, catalog: Catalog, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let followed = async {
                let (revision, locked) = catalog.locked_services().await?;
                *write(&self.inner.locked) = locked;
                self.mark_loaded(LOCKS);
                let changes = catalog.lock_changes(revision).await?;
                let mut changes = std::pin::pin!(changes);
                while let Some(item) = changes.next().await {
                    let (_, changed) = item?;
                    let mut locked = write(&self.inner.locked);
                    for (key, lock) in changed {
                        let Some(service) = keys::last_segment(&key) else {
                            continue;
                        };
                        match lock {
                            Some(_) => locked.insert(service.to_string()),
                            None => locked.remove(service),
                        };
                    }
                    drop(locked);
                    self.bump();
                }
                Ok::<(), crate::catalog::CatalogError>(())
            };
            tokio::select! {
                () = stop.cancelled() => return,
                result = followed => if let Err(error) = result {
                    tracing::warn!(%error, "the dashboard cannot follow the deploy locks; reading them again");
                },
            }
            pause(&stop).await;
        }
    }
}

async fn pause(stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
