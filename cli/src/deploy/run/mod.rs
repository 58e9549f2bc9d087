//! The twelve steps of a blue-green deploy and their undo.
//!
//! Each step records what it changed on the [`Deploy`] before it changes it,
//! so whatever stops it (a failure, Ctrl-C, SIGTERM) the rollback knows what
//! to undo, in reverse order: restart the old color, flip the color back,
//! remove the new containers (found by the deploy's label), restore the
//! leftovers set aside, release the lock. Every wait on the registry checks
//! the instances the agent registered, which proves the whole path.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchyard_client::{ClientError, Code, RegistryClient};
use switchyard_model::labels::record;
use switchyard_model::{Color, Deployment, LockGrant, Outcome, color_name};
use tokio::task::JoinHandle;

use super::Settings;
use super::docker::DEPLOY_LABEL;
use super::report::Reporter;
use super::runtime::{Retired, Runtime, RuntimeKind, Unit};
use crate::args::Output;
use crate::exit;

mod canary;
mod commands;
mod ending;
mod hooks;
mod plan;
pub(super) mod progress;
mod promotion_requests;
mod registry_waits;
mod rolling;

use registry_waits::{drained, proxies_at};

pub use commands::{abort, deploy, promote, rollback};

/// Why a deploy stopped short.
#[derive(Debug)]
pub enum Failure {
    /// Another deploy has the service: it holds the lock, or one is paused
    /// for promotion. Nothing was done.
    Busy(String),
    HealthTimeout(String),
    PreTest(String),
    PostTest(String),
    /// A canary's analysis failed.
    Analysis(String),
    Interrupted,
    Error(anyhow::Error),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Busy(_) => exit::LOCK_HELD,
            Failure::HealthTimeout(_) => exit::HEALTH_TIMEOUT,
            Failure::PreTest(_) => exit::PRE_TEST_FAILED,
            Failure::PostTest(_) | Failure::Analysis(_) => exit::POST_TEST_FAILED,
            Failure::Interrupted => exit::INTERRUPTED,
            Failure::Error(_) => exit::DEPLOY_FAILED,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Busy(m)
            | Failure::HealthTimeout(m)
            | Failure::PreTest(m)
            | Failure::PostTest(m)
            | Failure::Analysis(m) => m.clone(),
            Failure::Interrupted => "interrupted (Ctrl-C or SIGTERM)".into(),
            Failure::Error(error) => format!("{error:#}"),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Error(error)
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Error(error.into())
    }
}

/// What `cdctl promote` and `cdctl abort` need to carry on a paused deploy,
/// kept in the deployment record's metadata. Data only: anyone who may
/// deploy the service can rewrite a record, so nothing here is run, asked
/// for an answer that is trusted, or applied to Docker unchecked. The
/// commands come from the promoting invocation ([`super::Hooks`]); the
/// leftovers named here are checked against the engine before they are
/// touched ([`Runtime::checked_leftovers`]); a Swarm leftover's spec is
/// kept on the engine, not here.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Paused {
    replicas: u32,
    health_timeout_ms: u64,
    /// The deploy ran a post-test: promoting without one is refused
    /// rather than silently skipping it.
    #[serde(default)]
    post_tested: bool,
    /// Its canary had an analysis: likewise.
    #[serde(default)]
    analysed: bool,
    #[serde(default = "default_lock_ttl_ms")]
    lock_ttl_ms: u64,
    keep_old: bool,
    stop_old_after_ms: Option<u64>,
    #[serde(default = "default_stop_timeout_ms")]
    stop_timeout_ms: u64,
    #[serde(default = "default_proxy_ms")]
    proxy_timeout_ms: u64,
    #[serde(default = "default_proxy_ms")]
    proxy_stale_ms: u64,
    #[serde(default = "default_proxy_ms")]
    drain_timeout_ms: u64,
    retired: Vec<Retired>,
    #[serde(default)]
    runtime: RuntimeKind,
    /// A canary paused between steps: its steps and the weight it is at.
    #[serde(default)]
    canary: Option<crate::deploy::strategy::Canary>,
    #[serde(default)]
    canary_weight: u8,
}

fn default_lock_ttl_ms() -> u64 {
    30_000
}

fn default_stop_timeout_ms() -> u64 {
    10_000
}

fn default_proxy_ms() -> u64 {
    30_000
}

const PAUSED_KEY: &str = "paused";

/// How the forward path ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forward {
    Promoted,
    Paused,
}
pub use switchyard_model::clock::now_ms;

/// Test hook: `CDCTL_FAILPOINT=STEP` makes that step fail after doing its
/// work, so tests can prove the rollback from every step.
fn failpoint(step: &str) -> Result<(), Failure> {
    match std::env::var("CDCTL_FAILPOINT") {
        Ok(wanted) if wanted == step => Err(Failure::Error(anyhow::anyhow!(
            "injected failure after step {step} (CDCTL_FAILPOINT)"
        ))),
        _ => Ok(()),
    }
}

pub struct Deploy<'a> {
    client: &'a RegistryClient,
    runtime: Runtime,
    settings: Settings,
    reporter: Reporter,
    record: Deployment,
    lock: Option<LockGrant>,
    renewer: Option<JoinHandle<()>>,
    active: Option<Color>,
    next: Color,
    retired: Vec<Retired>,
    flipped: bool,
    /// The share a canary step gave the new color (0: none, or flipped).
    canary_weight: u8,
    stopped_old: Vec<Unit>,
    /// A rolling deploy's new instances took requests.
    rolled: bool,
    /// Old instances a rolling deploy marked draining.
    drained_old: Vec<String>,
    /// The Swarm service a rolling deploy asked Swarm to roll.
    swarm_rolled: Option<Unit>,
    /// Writes the record as steps go by, until the final write.
    progress: Option<progress::Progress>,
}

impl Drop for Deploy<'_> {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

impl<'a> Deploy<'a> {
    fn new(
        client: &'a RegistryClient,
        runtime: Runtime,
        settings: Settings,
        output: Output,
    ) -> Self {
        let id = format!("{}-{:04x}", now_ms(), clock_and_pid_suffix());
        let record = Deployment {
            id,
            service: settings.service.clone(),
            image: settings.image.clone(),
            version: settings
                .labels
                .get(switchyard_model::labels::label::VERSION)
                .cloned()
                .unwrap_or_default(),
            who: settings.who.clone(),
            started_at_ms: now_ms(),
            ..Deployment::default()
        };
        Deploy {
            client,
            runtime,
            settings,
            reporter: Reporter::new(output),
            record,
            lock: None,
            renewer: None,
            active: None,
            next: Color::Blue,
            retired: Vec::new(),
            flipped: false,
            canary_weight: 0,
            stopped_old: Vec::new(),
            rolled: false,
            drained_old: Vec::new(),
            swarm_rolled: None,
            progress: None,
        }
    }

    /// Keeps the image's id and build time in the record: which artifact
    /// ran, and where its lead time starts.
    fn record_image(&mut self, image: &super::docker::ImageFacts) {
        let metadata = &mut self.record.metadata;
        metadata.insert(record::IMAGE_ID.into(), image.id.clone());
        if let Some(created) = image.created_ms {
            metadata.insert(record::IMAGE_CREATED_MS.into(), created.to_string());
        }
    }

    /// The span a command's work runs in: every log line of it carries
    /// the service, the deploy's id and the image.
    fn span(&self, command: &'static str) -> tracing::Span {
        tracing::info_span!(
            "deploy",
            command,
            service = %self.settings.service,
            deploy_id = %self.record.id,
            image = %self.settings.image,
        )
    }

    /// From now on the record in the registry follows the steps.
    fn follow_progress(&mut self) {
        match &self.progress {
            Some(progress) => progress.update(&self.record),
            None => {
                let progress =
                    progress::Progress::start(self.client, self.record.clone(), &mut self.reporter);
                self.progress = Some(progress);
            }
        }
    }

    fn token(&self) -> u64 {
        self.lock.map_or(0, |lock| lock.token)
    }

    // ----- the steps -----

    /// 1. The service's deploy lock, renewed in the background.
    async fn take_lock(&mut self) -> Result<(), Failure> {
        self.reporter.begin("lock");
        let ttl = switchyard_model::defaults::whole_seconds(self.settings.lock_ttl);
        let holder = format!("{} ({})", self.record.id, self.settings.who);
        let grant = match self
            .client
            .acquire_lock(&self.settings.service, &holder, ttl)
            .await
        {
            Ok(grant) => grant,
            Err(error) if error.code() == Some(Code::Aborted) => {
                return Err(Failure::Busy(error.message()));
            }
            Err(error) => return Err(error.into()),
        };
        tracing::info!(
            service = %self.settings.service,
            ttl_seconds = grant.ttl_seconds,
            "deploy lock taken"
        );
        self.lock = Some(grant);
        let client = self.client.clone();
        let service = self.settings.service.clone();
        let every = self.settings.lock_ttl / 3;
        self.renewer = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(500)));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(error) = client.renew_lock(&service, grant.token).await {
                    tracing::warn!(%error, "could not renew the deploy lock");
                }
            }
        }));
        self.reporter.end(&format!("token {}", grant.token));
        Ok(())
    }

    /// 2. The live color and the next one; refuses while a deploy is paused.
    async fn read_colors(&mut self) -> Result<(), Failure> {
        self.reporter.begin("colors");
        let latest = self
            .client
            .list_deployments(&self.settings.service, 1)
            .await?;
        if let Some(paused) = latest.iter().find(|d| d.outcome == Outcome::Paused) {
            return Err(Failure::Busy(format!(
                "deploy {} of {} is paused for promotion: run `cdctl promote {}` or `cdctl abort {}` first",
                paused.id, paused.service, paused.service, paused.service
            )));
        }
        let (active, next, _) = self.client.next_color(&self.settings.service).await?;
        self.active = active;
        self.next = next;
        self.record.from_color = active;
        self.record.to_color = Some(next);
        self.client.record_deployment(&self.record).await?;
        self.follow_progress();
        self.reporter
            .end(&format!("live {} → deploying {next}", color_name(active)));
        Ok(())
    }

    /// 3. Sets aside leftovers of the next color, then waits until the
    ///    registry no longer lists them.
    async fn clear_leftovers(&mut self) -> Result<(), Failure> {
        self.reporter.begin("clear leftovers");
        let leftovers = self
            .runtime
            .units(&self.settings.service, Some(self.next))
            .await?;
        for unit in &leftovers {
            let retired = self
                .runtime
                .set_aside(unit, &self.record.id, self.settings.stop_timeout)
                .await?;
            self.retired.push(retired);
        }
        let ids: HashSet<String> = leftovers.iter().map(|u| u.id.clone()).collect();
        let runtime = self.runtime.clone();
        self.wait_registry(
            "leftovers deregistered",
            self.settings.health_timeout,
            |instances| !instances.iter().any(|i| runtime.owned_by(i, &ids)),
        )
        .await?;
        self.reporter.end(&format!("{} set aside", leftovers.len()));
        Ok(())
    }

    /// 4. Starts the new color: its containers, or its Swarm service.
    async fn start_containers(&mut self) -> Result<(), Failure> {
        self.reporter.begin("start containers");
        let slowest = self
            .runtime
            .start_color(
                &self.settings,
                self.next,
                &self.record.id,
                &mut self.retired,
            )
            .await?;
        failpoint("start")?;
        let slowest = slowest
            .map(|took| format!(", slowest {} ms", took.as_millis()))
            .unwrap_or_default();
        self.reporter.end(&format!(
            "{} × {} as {} ({}{slowest})",
            self.settings.replicas,
            self.settings.image,
            self.next,
            self.runtime.kind()
        ));
        Ok(())
    }

    /// 5. Waits until the registry lists every replica, passing.
    async fn wait_healthy(&mut self) -> Result<Vec<String>, Failure> {
        self.reporter.begin("wait healthy");
        let targets = self.new_targets_when_healthy().await?;
        failpoint("healthy")?;
        self.proxies_see_new().await;
        self.reporter.end(&targets.join(","));
        Ok(targets)
    }

    /// 8. Compare-and-swap of the live color, fenced by the lock.
    async fn flip(&mut self) -> Result<u64, Failure> {
        self.reporter.begin("flip color");
        let revision = self
            .client
            .set_active_color(
                &self.settings.service,
                Some(self.next),
                self.active,
                self.token(),
            )
            .await?;
        self.flipped = true;
        // The flip ends any canary (the registry resets the weight).
        self.canary_weight = 0;
        failpoint("flip")?;
        self.reporter.end(&format!(
            "{} → {} at revision {revision}",
            color_name(self.active),
            self.next
        ));
        Ok(revision)
    }

    /// 9. Waits until every proxy that reports to the registry has applied
    ///    the flip's revision. Proxies silent for longer than
    ///    `--proxy-stale` are not waited for (and named).
    async fn wait_proxies(&mut self, revision: u64) -> Result<(), Failure> {
        self.reporter.begin("wait proxies");
        let summary = self.proxies_at(revision).await?;
        self.reporter.end(&summary);
        Ok(())
    }

    async fn proxies_at(&self, revision: u64) -> Result<String, Failure> {
        proxies_at(
            self.client,
            revision,
            self.settings.proxy_timeout,
            self.settings.proxy_stale,
        )
        .await
    }

    /// 11. Stops the old color (removed on success), then waits until the
    ///     registry no longer lists it. With --keep-old, containers keep
    ///     running; a Swarm service is scaled to zero and kept.
    async fn stop_old(&mut self) -> Result<(), Failure> {
        self.reporter.begin("stop old");
        let Some(old) = self.active else {
            self.reporter.end("nothing was live");
            return Ok(());
        };
        if self.settings.keep_old && self.runtime.kind() == RuntimeKind::Containers {
            self.reporter
                .end(&format!("kept {old} for `cdctl rollback`"));
            return Ok(());
        }
        if let Some(after) = self.settings.stop_old_after {
            tokio::time::sleep(after).await;
        }
        let drained = self.drain(old).await?;
        let running: Vec<Unit> = self
            .runtime
            .units(&self.settings.service, Some(old))
            .await?
            .into_iter()
            .filter(|unit| unit.running)
            .collect();
        self.stopped_old.extend(running.iter().cloned());
        let timeout = self.settings.stop_timeout;
        let stops = running.iter().map(|unit| self.runtime.stop(unit, timeout));
        for stopped in futures::future::join_all(stops).await {
            stopped?;
        }
        failpoint("stop-old")?;
        let ids: HashSet<String> = running.iter().map(|unit| unit.id.clone()).collect();
        let runtime = self.runtime.clone();
        self.wait_registry(
            "old color deregistered",
            self.settings.health_timeout,
            |instances| !instances.iter().any(|i| runtime.owned_by(i, &ids)),
        )
        .await?;
        let kept = if self.settings.keep_old {
            " (kept at zero replicas for `cdctl rollback`)"
        } else {
            ""
        };
        self.reporter.end(&format!(
            "{} of {old} stopped{kept}; {drained}",
            running.len()
        ));
        Ok(())
    }

    /// Waits until the proxies that count requests have none in flight to
    /// `color` (its servers drain once it is not live), for at most
    /// `--drain-timeout`; answers what it saw.
    async fn drain(&self, color: Color) -> Result<String, Failure> {
        let summary = drained(
            self.client,
            &self.settings.service,
            color,
            self.settings.drain_timeout,
            self.settings.proxy_stale,
        )
        .await?;
        tracing::info!(%color, summary, "drain");
        Ok(summary)
    }

    async fn forward(&mut self) -> Result<Forward, Failure> {
        if self.settings.rolling.is_some() {
            return self.roll_forward().await;
        }
        self.take_lock().await?;
        self.read_colors().await?;
        self.clear_leftovers().await?;
        self.start_containers().await?;
        let targets = self.wait_healthy().await?;
        self.pre_test(&targets).await?;
        if self.settings.manual_promotion {
            return Ok(Forward::Paused);
        }
        self.promote_forward().await
    }

    /// Steps 8–11, shared by `deploy` and `promote`. A canary with
    /// `--manual-promotion` takes one step and pauses again.
    async fn promote_forward(&mut self) -> Result<Forward, Failure> {
        if self.canary_steps().await? == Forward::Paused {
            return Ok(Forward::Paused);
        }
        let revision = self.flip().await?;
        self.wait_proxies(revision).await?;
        self.post_test().await?;
        self.stop_old().await?;
        Ok(Forward::Promoted)
    }
}

/// Not random: the process id mixed with clock bits, unique enough to tell
/// concurrent deploys of one service apart (the lock allows one at a time).
fn clock_and_pid_suffix() -> u16 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ((nanos >> 8) ^ std::process::id()) as u16
}
