//! Read commands: `services`, `status`, `color`, `history`.

use std::process::ExitCode;

use serde_json::json;
use switchyard_client::RegistryClient;
use switchyard_model::{Color, Service, color_name};

use crate::args::Output;
use crate::output::{deployment_json, print_table, status_json, summary_json, weights_json};

pub async fn services(client: &RegistryClient, output: Output) -> anyhow::Result<ExitCode> {
    let (_, services) = client.list_services().await?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(services.iter().map(summary_json).collect())
        ),
        Output::Table => print_table(
            &["SERVICE", "ACTIVE", "INSTANCES", "PASSING"],
            &services
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        color_name(s.active_color).into(),
                        s.instances.to_string(),
                        s.passing.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(
    client: &RegistryClient,
    output: Output,
    service: &str,
) -> anyhow::Result<ExitCode> {
    let (revision, service) = client.get_service(service).await?;
    match output {
        Output::Json => println!("{}", status_json(revision, &service)),
        Output::Table => {
            let set_by = service
                .metadata
                .get(switchyard_model::auth::PRINCIPAL_KEY)
                .map(|name| format!(" (set by {name} at revision {})", service.color_revision))
                .unwrap_or_default();
            println!(
                "service {}  active color {}{set_by}{}  revision {}",
                service.name,
                color_name(service.active_color),
                canary_text(&service),
                revision
            );
            print_table(
                &["ID", "COLOR", "NODE", "ADDRESS", "HEALTH"],
                &service
                    .instances
                    .iter()
                    .map(|i| {
                        vec![
                            i.id.clone(),
                            color_name(i.color).into(),
                            i.node.clone(),
                            i.target(),
                            i.health.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn color(
    client: &RegistryClient,
    output: Output,
    service: &str,
) -> anyhow::Result<ExitCode> {
    // A service no instance has registered yet has no color: the next
    // deploy gets blue.
    let (revision, service) = match client.get_service(service).await {
        Err(error) if error.code() == Some(switchyard_client::Code::NotFound) => {
            (client.next_color(service).await?.2, Service::new(service))
        }
        other => other?,
    };
    let (active, next) = (service.active_color, Color::next(service.active_color));
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "service": service.name,
                "active_color": active.map(|c| c.as_str()),
                "next_color": next.as_str(),
                "weights": weights_json(&service),
                "canary_weight": service.canary_weight,
                "revision": revision,
            })
        ),
        Output::Table => println!(
            "{}{}  (next deploy: {next})",
            color_name(active),
            canary_text(&service)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `, canary green 10%` while a canary runs; nothing otherwise.
fn canary_text(service: &Service) -> String {
    match service.canary_color() {
        Some(canary) => format!(", canary {canary} {}%", service.canary_weight),
        None => String::new(),
    }
}

pub async fn history(
    client: &RegistryClient,
    output: Output,
    service: &str,
    limit: u32,
) -> anyhow::Result<ExitCode> {
    let deployments = client.list_deployments(service, limit).await?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(deployments.iter().map(deployment_json).collect())
        ),
        Output::Table => print_table(
            &[
                "ID",
                "OUTCOME",
                "FROM",
                "TO",
                "IMAGE",
                "WHO",
                "FAILED STEP",
                "DURATION",
            ],
            &deployments
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.outcome.to_string(),
                        color_name(d.from_color).into(),
                        color_name(d.to_color).into(),
                        d.image.clone(),
                        match d.metadata.get(switchyard_model::auth::PRINCIPAL_KEY) {
                            Some(principal) => format!("{} ({principal})", d.who),
                            None => d.who.clone(),
                        },
                        d.failed_step.clone(),
                        if d.ended_at_ms >= d.started_at_ms && d.ended_at_ms > 0 {
                            format!("{:.1}s", (d.ended_at_ms - d.started_at_ms) as f64 / 1000.0)
                        } else {
                            "-".into()
                        },
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Requests in flight per service and color (`web blue=0 green=3`), or
/// `-` for a proxy that does not count them.
fn in_flight(proxy: &switchyard_model::ProxyStatus) -> String {
    if proxy.connections.is_empty() {
        return "-".into();
    }
    let mut by_service: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for c in &proxy.connections {
        by_service
            .entry(&c.service)
            .or_default()
            .push(format!("{}={}", c.color, c.connections));
    }
    by_service
        .into_iter()
        .map(|(service, colors)| format!("{service} {}", colors.join(" ")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn proxies(client: &RegistryClient, output: Output) -> anyhow::Result<ExitCode> {
    let (proxies, now_ms) = client.list_proxies().await?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(
                proxies
                    .iter()
                    .map(|p| json!({
                        "proxy_id": p.proxy_id,
                        "applied_revision": p.applied_revision,
                        "healthy": p.healthy,
                        "message": p.message,
                        "reported_at_ms": p.reported_at_ms,
                        "seconds_ago": now_ms.saturating_sub(p.reported_at_ms) as f64 / 1000.0,
                        "connections": p.connections,
                    }))
                    .collect()
            )
        ),
        Output::Table => print_table(
            &[
                "PROXY",
                "APPLIED",
                "HEALTHY",
                "LAST REPORT",
                "IN FLIGHT",
                "MESSAGE",
            ],
            &proxies
                .iter()
                .map(|p| {
                    vec![
                        p.proxy_id.clone(),
                        p.applied_revision.to_string(),
                        p.healthy.to_string(),
                        format!(
                            "{:.0}s ago",
                            now_ms.saturating_sub(p.reported_at_ms) as f64 / 1000.0
                        ),
                        in_flight(p),
                        p.message.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(ExitCode::SUCCESS)
}
