//! The agent's loop: follow Docker, keep a session with the registry, and
//! make the registry's view of this node equal to what runs here with one
//! `SyncNode` whenever anything changes (and every `--resync`).
//!
//! One task owns all state, so there are no locks to reason about. Docker or
//! the registry going away is normal: the loop keeps its last known state,
//! retries with backoff and jitter, and on reconnect relists containers or
//! reopens its session and syncs everything. It never exits because a stream
//! ended; only a shutdown signal ends it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tracing::Instrument;

use futures::{Stream, StreamExt};
use switchyard_client::{ClientError, Code, RegistryClient};
use switchyard_model::labels::meta;
use switchyard_model::{Health, Instance, SessionId, color_name};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::checks::{CheckResult, Checks};
use crate::config::Config;
use crate::discover::{ContainerFacts, DiscoverSettings, HealthSource, Skip, discover};
use crate::docker::{ContainerEvent, Engine};
use crate::healthz::SharedStatus;
use crate::metrics::AgentMetrics;

type Events = Pin<Box<dyn Stream<Item = anyhow::Result<ContainerEvent>> + Send>>;

pub struct Agent {
    config: Config,
    client: RegistryClient,
    status: SharedStatus,
    node: Option<String>,
    engine: Option<Engine>,
    events: Option<Events>,
    containers: BTreeMap<String, ContainerFacts>,
    /// Containers sent their stop signal and not yet dead: no longer
    /// registered, so proxies stop sending them requests while they finish
    /// what they have (`docker stop`, Swarm replacing a task).
    stopping: BTreeSet<String>,
    /// Why each container last changed, for the registration log lines.
    reasons: HashMap<String, String>,
    check_results: HashMap<String, Health>,
    checks: Checks,
    check_receiver: mpsc::Receiver<CheckResult>,
    session: Option<SessionId>,
    /// What the registry holds for this node after the last good sync.
    synced: Option<BTreeMap<String, Instance>>,
    /// Containers already reported as misconfigured (reported once).
    reported: HashSet<String>,
    metrics: AgentMetrics,
}

impl Agent {
    pub fn new(
        config: Config,
        status: SharedStatus,
        metrics: AgentMetrics,
    ) -> anyhow::Result<Self> {
        let client = RegistryClient::with_options(&config.registry, &config.access)?;
        let (sender, check_receiver) = mpsc::channel(256);
        Ok(Agent {
            node: config.node.clone(),
            config,
            client,
            status,
            engine: None,
            events: None,
            containers: BTreeMap::new(),
            stopping: BTreeSet::new(),
            reasons: HashMap::new(),
            check_results: HashMap::new(),
            checks: Checks::new(sender),
            check_receiver,
            session: None,
            synced: None,
            reported: HashSet::new(),
            metrics,
        })
    }

    fn set_status(&self, update: impl FnOnce(&mut crate::healthz::Status)) {
        if let Ok(mut status) = self.status.lock() {
            update(&mut status);
        }
    }

    /// Runs until `shutdown`, then deregisters (unless --keep-on-exit).
    ///
    /// A change is synced as soon as no other event is waiting: the select
    /// is biased towards events, so a burst already queued (a container's
    /// create, start and first check) is drained into one SyncNode, and
    /// nothing waits on a timer (a fixed 50 ms settle used to add 50 ms to
    /// every deploy's wait for healthy instances).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut docker_backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut registry_backoff =
            Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut docker_retry_at = Instant::now();
        let mut sync_at: Option<Instant> = None;
        let keepalive_every = Duration::from_secs(u64::from(self.config.ttl_seconds)) / 3;
        let mut keepalive = tokio::time::interval(keepalive_every.max(Duration::from_millis(300)));
        let mut resync = tokio::time::interval(self.config.resync);
        resync.tick().await; // the first tick is immediate; start-up syncs anyway

        loop {
            if self.events.is_none() && Instant::now() >= docker_retry_at {
                match self.connect_docker().await {
                    Ok(()) => {
                        docker_backoff.reset();
                        sync_at = Some(Instant::now());
                    }
                    Err(error) => {
                        let pause = docker_backoff.next_pause();
                        tracing::warn!(error = %format!("{error:#}"), retry_in = ?pause, "Docker unavailable; keeping the last known containers");
                        self.set_status(|s| {
                            s.docker_connected = false;
                            s.last_error = Some(format!("docker: {error:#}"));
                        });
                        docker_retry_at = Instant::now() + pause;
                    }
                }
            }
            let docker_retry = tokio::time::sleep_until(docker_retry_at);
            let sync_due = tokio::time::sleep_until(sync_at.unwrap_or_else(far_future));
            // Biased to events: a queued burst becomes one SyncNode, no timer.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                event = next_event(&mut self.events) => match event {
                    Some(Ok(event)) => {
                        self.metrics.docker_event(&event.action);
                        self.on_event(&event).await;
                        sync_at.get_or_insert_with(Instant::now);
                    }
                    Some(Err(error)) => self.docker_lost(&format!("{error:#}"), &mut docker_retry_at, &mut docker_backoff),
                    None => self.docker_lost("the event stream ended", &mut docker_retry_at, &mut docker_backoff),
                },
                Some(result) = self.check_receiver.recv() => {
                    let previous = self.check_results.insert(result.instance_id.clone(), result.health);
                    if previous != Some(result.health) {
                        self.metrics.check(result.health);
                        self.reasons_for_instance(&result.instance_id, format!("check {}", result.health));
                        sync_at.get_or_insert_with(Instant::now);
                    }
                }
                _ = keepalive.tick() => {
                    if self.keep_alive().await {
                        sync_at = Some(Instant::now());
                    }
                }
                _ = resync.tick() => {
                    if self.engine.is_some()
                        && self.events.is_some()
                        && let Err(error) = self.relist("periodic resync").await
                    {
                        tracing::warn!(error = %format!("{error:#}"), "resync could not list containers");
                    }
                    // Force a SyncNode even if nothing seems to have changed:
                    // it repairs drift on the registry's side too.
                    self.synced = None;
                    sync_at = Some(Instant::now());
                }
                () = docker_retry, if self.events.is_none() => {}
                () = sync_due, if sync_at.is_some() => {
                    match self.sync().await {
                        Ok(()) => {
                            registry_backoff.reset();
                            sync_at = None;
                        }
                        Err(error) => {
                            let pause = registry_backoff.next_pause();
                            tracing::warn!(error = %error, retry_in = ?pause, "registry sync failed; will retry");
                            self.set_status(|s| s.last_error = Some(format!("registry: {error}")));
                            sync_at = Some(Instant::now() + pause);
                        }
                    }
                }
            }
        }
        self.exit().await;
    }

    fn docker_lost(&mut self, why: &str, retry_at: &mut Instant, backoff: &mut Backoff) {
        tracing::warn!(reason = why, "lost the Docker event stream; reconnecting");
        self.metrics.reconnect("docker");
        self.events = None;
        self.engine = None;
        self.set_status(|s| s.docker_connected = false);
        *retry_at = Instant::now() + backoff.next_pause();
    }

    /// Connects, learns the node name, lists every container, and follows
    /// events from a moment before the list, so nothing falls in between.
    async fn connect_docker(&mut self) -> anyhow::Result<()> {
        let engine = Engine::connect().await?;
        let node = match &self.node {
            Some(node) => node.clone(),
            None => {
                let node = engine.node_name().await?;
                tracing::info!(%node, "node name from Docker");
                self.node = Some(node.clone());
                node
            }
        };
        let since = engine.now().await?;
        self.engine = Some(engine.clone());
        self.relist("found at start-up").await?;
        self.events = Some(Box::pin(
            engine.events(since, self.config.only_label.as_deref()),
        ));
        self.set_status(|s| {
            s.docker_connected = true;
            s.node = node;
        });
        tracing::info!(containers = self.containers.len(), "following Docker");
        Ok(())
    }

    /// Replaces the known containers with a fresh list from Docker.
    async fn relist(&mut self, reason: &str) -> anyhow::Result<()> {
        let Some(engine) = self.engine.clone() else {
            return Ok(());
        };
        let mut fresh = BTreeMap::new();
        let running = engine.running(self.config.only_label.as_deref()).await?;
        // A stopping container stays out until it dies; one that died
        // while events were lost is forgotten.
        self.stopping.retain(|id| running.contains(id));
        for id in running {
            if self.stopping.contains(&id) {
                continue;
            }
            if let Some(facts) = engine.inspect(&id).await? {
                fresh.insert(id, facts);
            }
        }
        for id in fresh.keys() {
            if !self.containers.contains_key(id) {
                self.reasons.insert(id.clone(), reason.to_string());
            }
        }
        for id in self.containers.keys() {
            if !fresh.contains_key(id) {
                self.reasons.insert(id.clone(), format!("gone ({reason})"));
            }
        }
        self.containers = fresh;
        Ok(())
    }

    /// Follows one event: a container sent its stop signal leaves the
    /// registry at once (it may take its stop timeout to exit); any other
    /// event re-reads the container, unless it is stopping.
    async fn on_event(&mut self, event: &ContainerEvent) {
        let id = event.container_id.as_str();
        match event.action.as_str() {
            "kill" if self.is_stop_signal(event).await => {
                self.stopping.insert(id.to_string());
                if self.containers.remove(id).is_some() {
                    self.reasons
                        .insert(id.to_string(), "stopping (stop signal sent)".into());
                }
            }
            "die" | "stop" | "destroy" => {
                self.stopping.remove(id);
                self.refresh(id, &event.action).await;
            }
            _ if self.stopping.contains(id) => {}
            action => self.refresh(id, action).await,
        }
    }

    /// Whether a `kill` event carries the container's own stop signal.
    async fn is_stop_signal(&self, event: &ContainerEvent) -> bool {
        let (Some(engine), Some(sent)) = (&self.engine, event.signal.as_deref()) else {
            return false;
        };
        let sent = crate::docker::signal_number(sent);
        sent.is_some() && engine.stop_signal(&event.container_id).await == sent
    }

    /// Re-reads one container after an event about it.
    async fn refresh(&mut self, id: &str, action: &str) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        match engine.inspect(id).await {
            Ok(Some(facts)) => {
                self.containers.insert(id.to_string(), facts);
            }
            Ok(None) => {
                self.containers.remove(id);
            }
            Err(error) => {
                tracing::warn!(container = id, error = %format!("{error:#}"), "cannot inspect; will resync");
                return;
            }
        }
        self.reasons
            .insert(id.to_string(), format!("container {action}"));
    }

    fn reasons_for_instance(&mut self, instance_id: &str, reason: String) {
        let container = self
            .synced
            .as_ref()
            .and_then(|synced| synced.get(instance_id))
            .and_then(|instance| instance.metadata.get(meta::CONTAINER_ID).cloned());
        if let Some(container) = container {
            self.reasons.insert(container, reason);
        }
    }

    /// What the registry should hold for this node now.
    fn desired(&mut self, node: &str) -> Vec<Instance> {
        let settings = DiscoverSettings {
            node: node.to_string(),
            advertise_ip: self.config.advertise_ip,
            internal: self.config.internal,
            network: self.config.network.clone(),
        };
        let mut instances = Vec::new();
        let mut checks = HashMap::new();
        for (id, container) in &self.containers {
            match discover(container, &settings) {
                Ok(found) => {
                    self.reported.remove(id);
                    for desired in found {
                        let mut instance = desired.instance;
                        instance.health = match desired.health {
                            HealthSource::Fixed(health) => health,
                            HealthSource::Check(check) => {
                                let target = SocketAddr::new(instance.address, instance.port);
                                checks.insert(instance.id.clone(), (check, target));
                                self.check_results
                                    .get(&instance.id)
                                    .copied()
                                    .unwrap_or(Health::Critical)
                            }
                        };
                        instances.push(instance);
                    }
                }
                Err(Skip::NotOurs | Skip::Ignored) => {}
                Err(Skip::Invalid(message)) => {
                    if self.reported.insert(id.clone()) {
                        tracing::warn!("not registering: {message}");
                    }
                }
            }
        }
        self.check_results.retain(|id, _| checks.contains_key(id));
        self.checks.reconcile(checks);
        self.one_per_id(instances)
    }

    /// Two containers of this node claiming one `SERVICE_ID`: the one that
    /// started first keeps it and the other is left out (said once), so one
    /// mislabelled container never fails the node's whole sync.
    fn one_per_id(&mut self, instances: Vec<Instance>) -> Vec<Instance> {
        let started = |i: &Instance| {
            i.metadata
                .get(meta::STARTED_AT_MS)
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        let mut kept: BTreeMap<String, Instance> = BTreeMap::new();
        for instance in instances {
            let id = instance.id.clone();
            let loser = match kept.remove(&id) {
                None => {
                    kept.insert(id, instance);
                    continue;
                }
                Some(first) if started(&first) <= started(&instance) => {
                    kept.insert(id.clone(), first);
                    instance
                }
                Some(first) => {
                    kept.insert(id.clone(), instance);
                    first
                }
            };
            if self.reported.insert(format!("duplicate id {id}")) {
                tracing::warn!(
                    id,
                    container = loser.metadata.get(meta::CONTAINER_ID).map(String::as_str),
                    "not registering: another container of this node has the same id (give \
                     it its own SERVICE_ID)"
                );
            }
        }
        kept.into_values().collect()
    }

    async fn ensure_session(&mut self, node: &str) -> Result<SessionId, ClientError> {
        if let Some(session) = self.session {
            return Ok(session);
        }
        let (session, ttl) = self
            .client
            .open_session(node, self.config.ttl_seconds)
            .await?;
        tracing::info!(
            session,
            ttl_seconds = ttl,
            registry = self.client.current_url(),
            "session opened"
        );
        self.session = Some(session);
        self.synced = None;
        self.set_status(|s| s.session = Some(session));
        Ok(session)
    }

    /// One SyncNode with everything, in a span naming the node; logs each
    /// registration change.
    async fn sync(&mut self) -> Result<(), ClientError> {
        let Some(node) = self.node.clone() else {
            // Not even Docker has told us who we are yet.
            return Ok(());
        };
        let desired = self.desired(&node);
        let span = tracing::info_span!("sync", node, instances = desired.len());
        self.sync_desired(&node, desired).instrument(span).await
    }

    /// `node` is known: a session is never opened under an empty name.
    async fn sync_desired(
        &mut self,
        node: &str,
        desired: Vec<Instance>,
    ) -> Result<(), ClientError> {
        for _ in 0..2 {
            let session = self.ensure_session(node).await?;
            let started = Instant::now();
            let synced = self.client.sync_node(session, node, &desired).await;
            let took = started.elapsed();
            self.metrics.containers(self.containers.len());
            match synced {
                Ok(response) => {
                    let refused: HashSet<&str> =
                        response.refused.iter().map(|(id, _)| id.as_str()).collect();
                    for (id, reason) in &response.refused {
                        if self.reported.insert(format!("refused id {id}")) {
                            tracing::warn!(id, "the registry refused this instance: {reason}");
                        }
                    }
                    // What the registry holds: the refused ones are not
                    // counted as registered.
                    let registered: Vec<Instance> = desired
                        .iter()
                        .filter(|i| !refused.contains(i.id.as_str()))
                        .cloned()
                        .collect();
                    self.metrics.synced(took, Some(&registered));
                    let now: BTreeMap<String, Instance> =
                        registered.into_iter().map(|i| (i.id.clone(), i)).collect();
                    self.log_changes(&now);
                    let count = now.len();
                    self.synced = Some(now);
                    self.set_status(|s| {
                        s.instances = count;
                        s.last_sync_revision = response.revision;
                        s.last_error = None;
                    });
                    return Ok(());
                }
                Err(error) if error.code() == Some(Code::NotFound) => {
                    self.metrics.synced(took, None);
                    tracing::warn!(
                        session,
                        "session expired in the registry; opening a new one"
                    );
                    self.lose_session();
                }
                Err(error) => {
                    self.metrics.synced(took, None);
                    return Err(error);
                }
            }
        }
        Err(ClientError::Status {
            code: Code::NotFound,
            message: "the new session vanished at once".into(),
        })
    }

    fn lose_session(&mut self) {
        self.metrics.reconnect("registry");
        self.session = None;
        self.synced = None;
        self.set_status(|s| s.session = None);
    }

    /// Renews the session; answers whether a full sync is needed now (the
    /// session was lost and must be re-established).
    async fn keep_alive(&mut self) -> bool {
        let Some(session) = self.session else {
            return self.node.is_some();
        };
        match self.client.keep_alive(session).await {
            Ok(_) => false,
            Err(error) if error.code() == Some(Code::NotFound) => {
                tracing::warn!(session, "session expired; re-registering everything");
                self.lose_session();
                true
            }
            Err(error) => {
                tracing::warn!(error = %error, "keep-alive failed; retrying");
                self.set_status(|s| s.last_error = Some(format!("registry: {error}")));
                false
            }
        }
    }

    fn log_changes(&self, now: &BTreeMap<String, Instance>) {
        let empty = BTreeMap::new();
        let before = self.synced.as_ref().unwrap_or(&empty);
        let why = |instance: &Instance| {
            instance
                .metadata
                .get(meta::CONTAINER_ID)
                .and_then(|id| self.reasons.get(id))
                .cloned()
                .unwrap_or_else(|| "resync".into())
        };
        for (id, instance) in now {
            match before.get(id) {
                None => tracing::info!(
                    service = %instance.service,
                    id = %id,
                    address = %instance.target(),
                    color = color_name(instance.color),
                    health = %instance.health,
                    reason = %why(instance),
                    "registered"
                ),
                Some(old) if !old.same_registration(instance) => tracing::info!(
                    service = %instance.service,
                    id = %id,
                    address = %instance.target(),
                    health = %format!("{} -> {}", old.health, instance.health),
                    reason = %why(instance),
                    "updated"
                ),
                _ => {}
            }
        }
        for (id, instance) in before {
            if !now.contains_key(id) {
                tracing::info!(service = %instance.service, id = %id, reason = %why(instance), "deregistered");
            }
        }
    }

    async fn exit(self) {
        let Some(session) = self.session else {
            tracing::info!("exiting; no session to close");
            return;
        };
        if self.config.keep_on_exit {
            tracing::info!(
                session,
                ttl_seconds = self.config.ttl_seconds,
                "exiting; instances expire with the session"
            );
            return;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.client.close_session(session)).await
        {
            Ok(Ok(revision)) => tracing::info!(
                session,
                revision,
                "exiting; deregistered this node's instances"
            ),
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "could not deregister on exit; instances expire with the session")
            }
            Err(_) => tracing::warn!(
                "the registry did not answer on exit; instances expire with the session"
            ),
        }
    }
}

async fn next_event(events: &mut Option<Events>) -> Option<anyhow::Result<ContainerEvent>> {
    match events {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
