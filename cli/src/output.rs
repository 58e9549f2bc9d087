//! How results are shown: aligned tables for people, JSON for scripts. The
//! JSON shapes are part of cdctl's interface (documented in the README).

use serde_json::{Value, json};
use switchyard_model::watch::{Change, WatchEvent};
use switchyard_model::{Color, Deployment, Instance, Service, ServiceSummary};

fn color_json(color: Option<Color>) -> Value {
    color.map_or(Value::Null, |c| Value::String(c.as_str().into()))
}

pub fn instance_json(instance: &Instance) -> Value {
    json!({
        "id": instance.id,
        "service": instance.service,
        "color": color_json(instance.color),
        "node": instance.node,
        "address": instance.address.to_string(),
        "port": instance.port,
        "health": instance.health.as_str(),
        "tags": instance.tags,
        "metadata": instance.metadata,
        "session": instance.session,
        "create_revision": instance.create_revision,
        "mod_revision": instance.mod_revision,
    })
}

/// The share of requests (percent) each color takes: `{"blue": 90,
/// "green": 10}` during a canary, 100 for the live color otherwise.
pub fn weights_json(service: &Service) -> Value {
    json!({
        "blue": service.weight_of(Some(Color::Blue)),
        "green": service.weight_of(Some(Color::Green)),
    })
}

/// `cdctl status -o json`.
pub fn status_json(revision: u64, service: &Service) -> Value {
    json!({
        "service": service.name,
        "active_color": color_json(service.active_color),
        "color_revision": service.color_revision,
        "weights": weights_json(service),
        "canary_weight": service.canary_weight,
        "canary_sticky": service.canary_sticky,
        "weights_revision": service.weights_revision,
        // Who set the live color, as the registry knows them (with --auth).
        "color_set_by": service.metadata.get(switchyard_model::auth::PRINCIPAL_KEY),
        "revision": revision,
        "instances": service.instances.iter().map(instance_json).collect::<Vec<_>>(),
    })
}

/// One element of `cdctl services -o json`.
pub fn summary_json(summary: &ServiceSummary) -> Value {
    json!({
        "service": summary.name,
        "active_color": color_json(summary.active_color),
        "instances": summary.instances,
        "passing": summary.passing,
    })
}

pub fn deployment_json(deployment: &Deployment) -> Value {
    json!({
        "id": deployment.id,
        "service": deployment.service,
        "from_color": color_json(deployment.from_color),
        "to_color": color_json(deployment.to_color),
        "image": deployment.image,
        "version": deployment.version,
        "who": deployment.who,
        // Who the registry says wrote it (with --auth); null otherwise.
        "principal": deployment.metadata.get(switchyard_model::auth::PRINCIPAL_KEY),
        "started_at_ms": deployment.started_at_ms,
        "ended_at_ms": deployment.ended_at_ms,
        "outcome": deployment.outcome.as_str(),
        "failed_step": deployment.failed_step,
        "error": deployment.error,
        "steps": deployment.steps.iter().map(|s| json!({"name": s.name, "duration_ms": s.duration_ms})).collect::<Vec<_>>(),
    })
}

fn service_json(service: &Service) -> Value {
    json!({
        "service": service.name,
        "active_color": color_json(service.active_color),
        "color_revision": service.color_revision,
        "weights": weights_json(service),
        "canary_weight": service.canary_weight,
        "canary_sticky": service.canary_sticky,
        "weights_revision": service.weights_revision,
        "instances": service.instances.iter().map(instance_json).collect::<Vec<_>>(),
    })
}

/// One line of `cdctl watch`.
pub fn watch_json(event: &WatchEvent) -> Value {
    match event {
        WatchEvent::Snapshot {
            revision,
            services,
            complete,
        } => json!({
            "type": "snapshot",
            "revision": revision,
            "complete": complete,
            "services": services.iter().map(service_json).collect::<Vec<_>>(),
        }),
        WatchEvent::Changes { revision, changes } => json!({
            "type": "changes",
            "revision": revision,
            "changes": changes.iter().map(|change| match change {
                Change::ServiceUpdated(service) => json!({"type": "service_updated", "service": service_json(service)}),
                Change::InstanceUpdated(instance) => json!({"type": "instance_updated", "instance": instance_json(instance)}),
                Change::InstanceRemoved { service, id } => json!({"type": "instance_removed", "service": service, "id": id}),
            }).collect::<Vec<_>>(),
        }),
        WatchEvent::Progress { revision } => json!({"type": "progress", "revision": revision}),
        WatchEvent::Reset { reason, message } => json!({
            "type": "reset",
            "reason": reason.as_str(),
            "message": message,
        }),
    }
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
