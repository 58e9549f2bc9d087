//! The commands over a [`Deploy`]: `deploy` (and its dry run), `promote` and
//! `abort` of a paused deploy, and `rollback` to the kept previous color.

use std::process::ExitCode;
use std::time::Duration;
use switchyard_model::defaults;
use tracing::Instrument;

use switchyard_client::{Code, RegistryClient};
use switchyard_model::labels::record;
use switchyard_model::rollback::{self, RollbackRefusal};
use switchyard_model::{Color, Deployment, Health, Outcome};

use super::super::docker::Target;
use super::super::report::Reporter;
use super::super::runtime::{Runtime, RuntimeChoice, RuntimeKind};
use super::super::{Hooks, Settings};
use super::{Deploy, Failure, PAUSED_KEY, Paused};
use crate::args::Output;
use crate::exit::{self, UsageError};

/// Runs `forward` unless Ctrl-C or SIGTERM comes first.
async fn interruptible<T>(
    forward: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::select! {
        result = forward => result,
        () = switchyard_program::shutdown_signal() => Err(Failure::Interrupted),
    }
}

/// `cdctl deploy`.
pub async fn deploy(
    client: &RegistryClient,
    output: Output,
    settings: Settings,
    target: &Target,
) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::connect(settings.runtime, target).await;
    if settings.dry_run {
        let runtime = runtime.as_ref().map_err(|error| format!("{error:#}"));
        super::plan::plan(client, runtime, &settings, &Reporter::new(output)).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // Docker that does not answer is a configuration error, like an image
    // that is not there: nothing was changed, fix the setup and run again.
    let runtime = runtime.map_err(|error| UsageError(format!("{error:#}")))?;
    if runtime.kind() == RuntimeKind::Swarm && settings.network.is_none() {
        eprintln!(
            "cdctl: a Swarm deploy needs --network NET: an attachable overlay network the \
             agent registers task IPs on (or --runtime containers)"
        );
        return Ok(ExitCode::from(exit::USAGE));
    }
    let Some(image) = runtime.image(&settings.image).await? else {
        eprintln!(
            "cdctl: image {} is not on this Docker engine: build or pull it first (deploys never pull)",
            settings.image
        );
        return Ok(ExitCode::from(exit::USAGE));
    };
    if let Some(why) = super::super::require::missing(
        &settings.require,
        &settings.service,
        &settings.image,
        &image,
    )
    .await?
    {
        eprintln!("cdctl: --require: {why}");
        return Ok(ExitCode::from(exit::PRECONDITION));
    }
    let waits = settings.wait_for_promotion;
    let service = settings.service.clone();
    let hooks = settings.hooks();
    let mut deploy = Deploy::new(client, runtime, settings, output);
    deploy.record_image(&image);
    let span = deploy.span("deploy");
    let result = interruptible(deploy.forward())
        .instrument(span.clone())
        .await;
    let code = deploy.finish(result).instrument(span).await;
    if waits && deploy.record.outcome == Outcome::Paused {
        drop(deploy);
        return super::promotion_requests::carry_out_requests(
            client, output, &service, hooks, target,
        )
        .await;
    }
    Ok(ExitCode::from(code))
}

/// Loads the paused deploy of `service` and takes the lock for it; on
/// failure says why (one line) and answers the exit code. `hooks`: what
/// the deploy may run from here on (`None` for an abort, which runs none).
async fn resume<'a>(
    client: &'a RegistryClient,
    output: Output,
    service: &str,
    hooks: Option<Hooks>,
    target: &Target,
) -> Result<Deploy<'a>, ExitCode> {
    load_paused(client, output, service, hooks, target)
        .await
        .map_err(|(code, message)| {
            eprintln!("cdctl: {message}");
            ExitCode::from(code)
        })
}

/// The paused record of `service` and the state it carries.
async fn paused_record(
    client: &RegistryClient,
    service: &str,
) -> Result<(Deployment, Paused), (u8, String)> {
    let latest = client
        .list_deployments(service, 1)
        .await
        .map_err(|e| (exit::UNREACHABLE, e.to_string()))?;
    let Some(record) = latest.into_iter().find(|d| d.outcome == Outcome::Paused) else {
        return Err((
            exit::PRECONDITION,
            format!(
                "no deploy of {service} is paused for promotion (see `cdctl history {service}`)"
            ),
        ));
    };
    let paused: Paused = record
        .metadata
        .get(PAUSED_KEY)
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or((
            exit::FAILURE,
            format!("deploy {} lacks its paused state", record.id),
        ))?;
    Ok((record, paused))
}

/// Refuses to promote without the checks the deploy ran with: the record
/// says which it had, never what they were.
fn hooks_cover(paused: &Paused, hooks: &Hooks, service: &str) -> Result<(), (u8, String)> {
    let missing = if paused.post_tested && hooks.post_test.is_none() {
        "a post-test: pass --post-test"
    } else if paused.analysed && hooks.analysis.is_none() && hooks.prometheus.is_none() {
        "a canary analysis: pass --analysis or --analysis-prometheus and --analysis-query"
    } else {
        return Ok(());
    };
    Err((
        exit::USAGE,
        format!(
            "the paused deploy of {service} ran with {missing} (or --file with the deploy's \
             settings) to `cdctl promote`: commands come from the promoting command, never \
             from the registry's record"
        ),
    ))
}

async fn load_paused<'a>(
    client: &'a RegistryClient,
    output: Output,
    service: &str,
    hooks: Option<Hooks>,
    target: &Target,
) -> Result<Deploy<'a>, (u8, String)> {
    let (record, paused) = paused_record(client, service).await?;
    if let Some(hooks) = &hooks {
        hooks_cover(&paused, hooks, service)?;
    }
    let hooks = hooks.unwrap_or_default();
    let runtime = Runtime::with_kind(paused.runtime, target)
        .await
        .map_err(|e| (exit::FAILURE, format!("{e:#}")))?;
    let retired = runtime
        .checked_leftovers(service, &paused.retired)
        .await
        .map_err(|e| (exit::FAILURE, format!("{e:#}")))?;
    let canary = paused.canary.map(|mut canary| {
        canary.analysis = hooks.analysis;
        canary.prometheus = hooks.prometheus;
        canary
    });
    let settings = Settings {
        service: service.to_string(),
        image: record.image.clone(),
        replicas: paused.replicas,
        replicas_given: true,
        port: None,
        env: Vec::new(),
        labels: Default::default(),
        network: None,
        publish_ip: String::new(),
        health_timeout: Duration::from_millis(paused.health_timeout_ms),
        pre_test: None,
        post_test: hooks.post_test,
        proxy_url: hooks.proxy_url,
        keep_old: paused.keep_old,
        stop_old_after: paused.stop_old_after_ms.map(Duration::from_millis),
        // A paused canary pauses again after its next step.
        manual_promotion: canary.is_some(),
        // The waiting process (if any) carries on; `promote` itself returns.
        wait_for_promotion: false,
        dry_run: false,
        lock_ttl: Duration::from_millis(paused.lock_ttl_ms),
        stop_timeout: Duration::from_millis(paused.stop_timeout_ms),
        proxy_timeout: Duration::from_millis(paused.proxy_timeout_ms),
        proxy_stale: Duration::from_millis(paused.proxy_stale_ms),
        drain_timeout: Duration::from_millis(paused.drain_timeout_ms),
        who: record.who.clone(),
        runtime: match paused.runtime {
            RuntimeKind::Containers => RuntimeChoice::Containers,
            RuntimeKind::Swarm => RuntimeChoice::Swarm,
        },
        canary,
        rolling: None,
        require: Vec::new(),
    };
    let mut deploy = Deploy::new(client, runtime, settings, output);
    deploy.active = record.from_color;
    deploy.next = record
        .to_color
        .unwrap_or_else(|| Color::next(record.from_color));
    deploy.retired = retired;
    deploy.canary_weight = paused.canary_weight;
    deploy.record = record;
    deploy.record.metadata.remove(PAUSED_KEY);
    for key in [
        record::REQUESTED,
        record::REQUESTED_BY,
        record::REQUESTED_AT_MS,
    ] {
        deploy.record.metadata.remove(key);
    }
    if let Err(failure) = deploy.take_lock().await {
        return Err((failure.exit_code(), failure.message()));
    }
    deploy.follow_progress();
    Ok(deploy)
}

/// `cdctl promote SERVICE`: steps 8–12 of a paused deploy, running
/// `hooks` (never commands from the record).
pub async fn promote(
    client: &RegistryClient,
    output: Output,
    service: &str,
    hooks: Hooks,
    target: &Target,
) -> anyhow::Result<ExitCode> {
    let mut deploy = match resume(client, output, service, Some(hooks), target).await {
        Ok(deploy) => deploy,
        Err(code) => return Ok(code),
    };
    let span = deploy.span("promote");
    let result = interruptible(deploy.promote_forward())
        .instrument(span.clone())
        .await;
    Ok(ExitCode::from(deploy.finish(result).instrument(span).await))
}

/// `cdctl abort SERVICE`: rolls a paused deploy back.
pub async fn abort(
    client: &RegistryClient,
    output: Output,
    service: &str,
    target: &Target,
) -> anyhow::Result<ExitCode> {
    let mut deploy = match resume(client, output, service, None, target).await {
        Ok(deploy) => deploy,
        Err(code) => return Ok(code),
    };
    deploy.reporter.begin("abort");
    let span = deploy.span("abort");
    let left = deploy.roll_back().instrument(span).await;
    let code = if left.is_empty() {
        deploy.reporter.end("everything as before the deploy");
        0
    } else {
        deploy.reporter.fail("INCOMPLETE");
        for item in &left {
            deploy.reporter.say(&format!("left behind: {item}"));
        }
        exit::ROLLBACK_FAILED
    };
    let outcome = if left.is_empty() {
        Outcome::RolledBack
    } else {
        Outcome::Failed
    };
    let who = deploy.settings.who.clone();
    deploy
        .write_record(outcome, Some(("aborted", format!("aborted by {who}"))))
        .await;
    deploy.release().await;
    deploy.reporter.summary(&deploy.record, code);
    Ok(ExitCode::from(code))
}

/// `cdctl rollback SERVICE`: back to the previous color while it still runs.
pub async fn rollback(
    client: &RegistryClient,
    output: Output,
    service: &str,
    who: String,
    target: &Target,
) -> anyhow::Result<ExitCode> {
    let grant = match client
        .acquire_lock(
            service,
            &format!("rollback ({who})"),
            defaults::whole_seconds(defaults::LOCK_TTL),
        )
        .await
    {
        Ok(grant) => grant,
        Err(error) if error.code() == Some(Code::Aborted) => {
            eprintln!("cdctl: {}", error.message());
            return Ok(ExitCode::from(exit::LOCK_HELD));
        }
        Err(error) => return Err(error.into()),
    };
    let span = tracing::info_span!("rollback", service, lock = grant.token);
    let outcome = rollback_locked(client, service, grant.token, who, target)
        .instrument(span)
        .await;
    if let Err(error) = client.release_lock(service, grant.token).await {
        tracing::warn!(%error, "could not release the lock; it expires with its TTL");
    }
    match outcome? {
        Ok(record) => {
            let reporter = Reporter::new(output);
            reporter.summary(&record, 0);
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("cdctl: {message}");
            Ok(ExitCode::from(exit::PRECONDITION))
        }
    }
}

/// The registry's one rollback (the RollBack RPC, as the dashboard's
/// button), after waking a kept Swarm service of the previous color; then
/// waits for the proxies to route to it.
async fn rollback_locked(
    client: &RegistryClient,
    service: &str,
    token: u64,
    who: String,
    target: &Target,
) -> anyhow::Result<Result<Deployment, String>> {
    let current = match client.get_service(service).await {
        Ok((_, current)) => current,
        Err(error) if error.code() == Some(Code::NotFound) => {
            return Ok(Err(format!(
                "service {service} is not registered: nothing to roll back"
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let newest = client.list_deployments(service, 1).await?;
    // Refused while paused before anything (a kept Swarm service) wakes.
    if let Err(refused @ RollbackRefusal::Paused { .. }) = rollback::plan(&current, newest.first())
    {
        return Ok(Err(refused.to_string()));
    }
    if let Some(active) = current.active_color {
        wake_kept(client, service, &current, active.other(), target).await?;
    }
    let rolled = client
        .roll_back(service, current.active_color, token, &who)
        .await;
    let (revision, record) = match rolled {
        Ok(done) => done,
        Err(error) if error.code() == Some(Code::FailedPrecondition) => {
            return Ok(Err(error.message()));
        }
        Err(error) if error.code() == Some(Code::Unimplemented) => {
            return Ok(Err(format!(
                "the registry does not know RollBack (it is older than this cdctl): upgrade \
                 cd-registry, or flip back by hand with `cdctl set-color {service} COLOR`"
            )));
        }
        Err(error) => return Err(error.into()),
    };
    // Return once the proxies route to the previous color again.
    if let Err(failure) = super::proxies_at(
        client,
        revision,
        defaults::PROXY_TIMEOUT,
        defaults::PROXY_STALE,
    )
    .await
    {
        eprintln!("cdctl: warning: {}", failure.message());
    }
    Ok(Ok(record))
}

/// How long `cdctl rollback` waits for a kept Swarm service to pass again.
const WAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// With `--keep-old` in Swarm the previous color was scaled to zero: scale
/// it back and wait until all its replicas pass. Answers the service as
/// the registry then lists it, or `None` when there was nothing to wake.
async fn wake_kept(
    client: &RegistryClient,
    service: &str,
    current: &switchyard_model::Service,
    previous: Color,
    target: &Target,
) -> anyhow::Result<Option<switchyard_model::Service>> {
    let already = current
        .instances
        .iter()
        .any(|i| i.color == Some(previous) && i.health == Health::Passing);
    if already {
        return Ok(None);
    }
    // Without Docker here (a CI job that only flips colors) nothing can be
    // scaled up: the registry's view decides, as for containers.
    let runtime = match Runtime::connect(RuntimeChoice::Auto, target).await {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::debug!(error = %format!("{error:#}"), "no Docker to wake a kept color on");
            return Ok(None);
        }
    };
    let kept = runtime.kept_at_zero(service, previous).await?;
    if kept.is_empty() {
        return Ok(None);
    }
    for unit in &kept {
        eprintln!(
            "cdctl: scaling {} back to {} replicas",
            unit.name, unit.replicas
        );
        runtime.restart(unit).await?;
    }
    let deadline = std::time::Instant::now() + WAKE_TIMEOUT;
    let woken = super::registry_waits::follow_until(client, service, deadline, |now| {
        runtime
            .all_passing(&kept, &now.instances)
            .then(|| now.clone())
    })
    .await?;
    if woken.is_none() {
        // Leave it as it was: kept, at zero.
        for unit in &kept {
            if let Err(error) = runtime.stop(unit, defaults::STOP_TIMEOUT).await {
                eprintln!(
                    "cdctl: could not scale {} back to zero: {error:#}",
                    unit.name
                );
            }
        }
        anyhow::bail!(
            "{previous} did not pass again within {WAKE_TIMEOUT:?} after scaling it up; \
             the live color is unchanged (check `docker service ps`)"
        );
    }
    Ok(woken)
}
