//! `cdctl deploy --dry-run`: what a deploy would do, changing nothing. The
//! registry alone says the colors and what the proxies would gain and lose;
//! Docker, when it answers, adds the containers or services the deploy
//! would set aside, start and stop. A dry run works without Docker, so it
//! can be run from anywhere that reaches the registry.

use switchyard_client::{Code, RegistryClient};
use switchyard_model::{Health, Instance, color_name};

use super::super::Settings;
use super::super::report::Reporter;
use super::super::runtime::{Runtime, RuntimeKind, Unit};
use super::super::strategy::Rolling;

/// Prints the plan for `settings`; `runtime` is Docker, or why it did not
/// answer.
pub(super) async fn plan(
    client: &RegistryClient,
    runtime: Result<&Runtime, String>,
    settings: &Settings,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let service = &settings.service;
    let (active, next, _) = client.next_color(service).await?;
    let instances = match client.get_service(service).await {
        Ok((_, service)) => service.instances,
        Err(error) if error.code() == Some(Code::NotFound) => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    let live: Vec<String> = instances
        .iter()
        .filter(|i| i.color == active && active.is_some() && i.health == Health::Passing)
        .map(Instance::target)
        .collect();
    let say = |text: String| reporter.say(&text);
    say(format!("plan for {service} (dry run: nothing changes)"));
    if let Some(rolling) = settings.rolling {
        rolling_plan(runtime, settings, active, rolling, &say).await?;
        return Ok(());
    }
    say(format!(
        "  live color: {}; deploying {} as {next}",
        color_name(active),
        settings.image
    ));
    match runtime {
        Ok(runtime) => {
            let leftovers = runtime.units(service, Some(next)).await?;
            let old = match active {
                Some(color) => runtime.units(service, Some(color)).await?,
                None => Vec::new(),
            };
            say(format!(
                "  set aside leftovers of {next}: {}",
                names_or_none(&leftovers)
            ));
            say(format!(
                "  start ({}): {}",
                runtime.kind(),
                runtime.new_names(settings, next).join(", ")
            ));
            say(format!(
                "  {}: {}",
                retire_verb(settings, runtime.kind()),
                names_or_none(&old)
            ));
        }
        Err(why) => {
            say(format!(
                "  Docker did not answer ({why}): containers unknown"
            ));
            say(format!(
                "  start: {} of {}",
                settings.replicas, settings.image
            ));
        }
    }
    let canary = match (&settings.canary, active) {
        (Some(canary), Some(_)) => format!(
            "canary {} of requests to {next} (each baked {:?}, analysis {}), ",
            canary
                .steps
                .iter()
                .filter(|step| **step < 100)
                .map(|step| format!("{step}%"))
                .collect::<Vec<_>>()
                .join(", "),
            canary.bake,
            match (&canary.analysis, &canary.prometheus) {
                (Some(command), _) => command.clone(),
                (None, Some(check)) => format!("{} at {}", check.query, check.url),
                (None, None) => "(none)".into(),
            }
        ),
        _ => String::new(),
    };
    say(format!(
        "  then: wait for {} passing, pre-test {}, {canary}flip {} → {next}, post-test {}",
        settings.replicas,
        settings.pre_test.as_deref().unwrap_or("(none)"),
        color_name(active),
        settings.post_test.as_deref().unwrap_or("(none)"),
    ));
    say(format!(
        "  proxies gain {} new instance(s) of {next} and lose: {}",
        settings.replicas,
        if live.is_empty() {
            "(none)".to_string()
        } else {
            live.join(", ")
        }
    ));
    Ok(())
}

/// A rolling deploy's batches: which old containers each stops, how many
/// new ones it starts.
async fn rolling_plan(
    runtime: Result<&Runtime, String>,
    settings: &Settings,
    active: Option<switchyard_model::Color>,
    rolling: Rolling,
    say: &impl Fn(String),
) -> anyhow::Result<()> {
    let Some(live) = active else {
        say(
            "  nothing is live: a rolling deploy needs a live color (deploy with \
             --strategy blue-green first)"
                .into(),
        );
        return Ok(());
    };
    let old: Vec<Unit> = match runtime {
        Ok(runtime) => runtime
            .units(&settings.service, Some(live))
            .await?
            .into_iter()
            .filter(|unit| unit.running)
            .collect(),
        Err(why) => {
            say(format!(
                "  Docker did not answer ({why}): containers unknown"
            ));
            return Ok(());
        }
    };
    let count = u32::try_from(old.len()).unwrap_or(u32::MAX);
    // Without --replicas, as many as run now (a Swarm service's tasks).
    let keep = |now: u32| match settings.replicas_given {
        true => settings.replicas,
        false => now.max(1),
    };
    if let (Ok(runtime), [unit]) = (runtime, old.as_slice())
        && runtime.kind() == RuntimeKind::Swarm
    {
        say(format!(
            "  Swarm rolls {} ({} tasks) to {} with {} task(s), {} at a time, {}",
            unit.name,
            unit.replicas,
            settings.image,
            keep(unit.replicas),
            rolling.batch,
            match rolling.max_unavailable {
                0 => "each new task started before an old one stops",
                _ => "each old task stopped before its new one starts",
            }
        ));
        return Ok(());
    }
    let new = keep(count);
    say(format!(
        "  rolling {} within {live}: {} old replaced by {new} new, {} at a time, at most {} \
         stopped before its replacement passes",
        settings.image,
        old.len(),
        rolling.batch,
        rolling.max_unavailable
    ));
    let mut waiting = old.iter();
    for (number, (stop, start)) in (1..).zip(rolling.batches(count, new)) {
        let stopped: Vec<Unit> = waiting.by_ref().take(stop as usize).cloned().collect();
        say(format!(
            "  batch {number}: start {start}, wait until passing and applied, drain and stop {}",
            names_or_none(&stopped)
        ));
    }
    Ok(())
}

fn retire_verb(settings: &Settings, kind: RuntimeKind) -> &'static str {
    match (settings.keep_old, kind) {
        (true, RuntimeKind::Swarm) => "scale to zero and keep",
        (true, _) => "keep",
        (false, _) => "stop",
    }
}

fn names_or_none(units: &[Unit]) -> String {
    if units.is_empty() {
        "(none)".into()
    } else {
        units
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
