//! The wire contract `switchyard.v1`, generated from `proto/switchyard/v1/registry.proto`,
//! and the conversions between its messages and the domain types of
//! `switchyard-model`. This crate is the edge: code elsewhere works with
//! domain types and converts here, in one place.
#![forbid(unsafe_code)]

use switchyard_model::auth::{Role, TokenInfo};
use switchyard_model::{
    Color, ColorConnections, Deployment, Health, Instance, Outcome, ProxyStatus, Service,
    ServiceSummary, StepTiming, ValidationError, validate,
    watch::{Change, ResetReason, WatchEvent},
};

pub mod backup;
#[cfg(test)]
mod fuzz;

/// Generated messages, client and server.
#[allow(clippy::all, clippy::unwrap_used, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("switchyard.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("switchyard_v1_descriptor");

/// Wire color to domain color; unknown enum values are rejected.
pub fn color_from_wire(
    field: impl std::fmt::Display,
    value: i32,
) -> Result<Option<Color>, ValidationError> {
    match v1::Color::try_from(value) {
        Ok(v1::Color::None) => Ok(None),
        Ok(v1::Color::Blue) => Ok(Some(Color::Blue)),
        Ok(v1::Color::Green) => Ok(Some(Color::Green)),
        Err(_) => Err(ValidationError::new(
            field.to_string(),
            format!("unknown color value {value}: use COLOR_NONE, COLOR_BLUE or COLOR_GREEN"),
        )),
    }
}

pub fn color_to_wire(color: Option<Color>) -> i32 {
    match color {
        None => v1::Color::None as i32,
        Some(Color::Blue) => v1::Color::Blue as i32,
        Some(Color::Green) => v1::Color::Green as i32,
    }
}

pub fn health_from_wire(
    field: impl std::fmt::Display,
    value: i32,
) -> Result<Health, ValidationError> {
    match v1::Health::try_from(value) {
        Ok(v1::Health::Unknown) => Ok(Health::Unknown),
        Ok(v1::Health::Passing) => Ok(Health::Passing),
        Ok(v1::Health::Warning) => Ok(Health::Warning),
        Ok(v1::Health::Critical) => Ok(Health::Critical),
        Err(_) => Err(ValidationError::new(
            field.to_string(),
            format!("unknown health value {value}"),
        )),
    }
}

pub fn health_to_wire(health: Health) -> i32 {
    match health {
        Health::Unknown => v1::Health::Unknown as i32,
        Health::Passing => v1::Health::Passing as i32,
        Health::Warning => v1::Health::Warning as i32,
        Health::Critical => v1::Health::Critical as i32,
    }
}

pub fn outcome_from_wire(value: i32) -> Result<Outcome, ValidationError> {
    match v1::Outcome::try_from(value) {
        Ok(v1::Outcome::InProgress) => Ok(Outcome::InProgress),
        Ok(v1::Outcome::Promoted) => Ok(Outcome::Promoted),
        Ok(v1::Outcome::RolledBack) => Ok(Outcome::RolledBack),
        Ok(v1::Outcome::Failed) => Ok(Outcome::Failed),
        Ok(v1::Outcome::Paused) => Ok(Outcome::Paused),
        Ok(v1::Outcome::Unspecified) | Err(_) => Err(ValidationError::new(
            "deployment.outcome",
            format!("unknown outcome value {value}"),
        )),
    }
}

pub fn outcome_to_wire(outcome: Outcome) -> i32 {
    (match outcome {
        Outcome::InProgress => v1::Outcome::InProgress,
        Outcome::Promoted => v1::Outcome::Promoted,
        Outcome::RolledBack => v1::Outcome::RolledBack,
        Outcome::Failed => v1::Outcome::Failed,
        Outcome::Paused => v1::Outcome::Paused,
    }) as i32
}

/// Reads an instance off the wire and validates everything a client supplies.
/// `prefix` names where it sits in the request (e.g. `instances[3].`).
pub fn instance_from_wire(
    prefix: impl std::fmt::Display + Copy,
    wire: v1::Instance,
) -> Result<Instance, ValidationError> {
    let port = validate::port(format_args!("{prefix}port"), wire.port)?;
    let address = validate::ip_address(format_args!("{prefix}address"), &wire.address)?;
    let instance = Instance {
        color: color_from_wire(format_args!("{prefix}color"), wire.color)?,
        health: health_from_wire(format_args!("{prefix}health"), wire.health)?,
        id: wire.id,
        service: wire.service,
        node: wire.node,
        address,
        port,
        tags: wire.tags,
        metadata: wire.metadata.into_iter().collect(),
        session: (wire.session_id != 0).then_some(wire.session_id),
        create_revision: wire.create_revision,
        mod_revision: wire.mod_revision,
    };
    validate::instance(prefix, &instance)?;
    Ok(instance)
}

pub fn instance_to_wire(instance: &Instance) -> v1::Instance {
    v1::Instance {
        id: instance.id.clone(),
        service: instance.service.clone(),
        color: color_to_wire(instance.color),
        node: instance.node.clone(),
        address: instance.address.to_string(),
        port: u32::from(instance.port),
        tags: instance.tags.clone(),
        metadata: instance.metadata.clone().into_iter().collect(),
        health: health_to_wire(instance.health),
        session_id: instance.session.unwrap_or(0),
        create_revision: instance.create_revision,
        mod_revision: instance.mod_revision,
    }
}

pub fn service_to_wire(service: &Service) -> v1::Service {
    v1::Service {
        name: service.name.clone(),
        active_color: color_to_wire(service.active_color),
        color_revision: service.color_revision,
        metadata: service.metadata.clone().into_iter().collect(),
        instances: service.instances.iter().map(instance_to_wire).collect(),
        canary_weight: u32::from(service.canary_weight),
        weights_revision: service.weights_revision,
        canary_sticky: service.canary_sticky,
    }
}

pub fn service_from_wire(wire: v1::Service) -> Result<Service, ValidationError> {
    let instances = wire
        .instances
        .into_iter()
        .enumerate()
        .map(|(index, instance)| instance_from_wire(format_args!("instances[{index}]."), instance))
        .collect::<Result<Vec<_>, _>>()?;
    let active_color = color_from_wire("active_color", wire.active_color)?;
    let canary_weight = match active_color {
        Some(_) => validate::canary_weight("canary_weight", wire.canary_weight)?,
        None if wire.canary_weight == 0 => 0,
        None => {
            return Err(ValidationError::new(
                "canary_weight",
                "a canary needs a live color: the weight must be 0 while none is live",
            ));
        }
    };
    Ok(Service {
        active_color,
        canary_sticky: wire.canary_sticky && canary_weight > 0,
        canary_weight,
        weights_revision: wire.weights_revision,
        name: wire.name,
        color_revision: wire.color_revision,
        metadata: wire.metadata.into_iter().collect(),
        instances,
    })
}

pub fn summary_to_wire(summary: &ServiceSummary) -> v1::ServiceSummary {
    v1::ServiceSummary {
        name: summary.name.clone(),
        active_color: color_to_wire(summary.active_color),
        instances: summary.instances,
        passing: summary.passing,
    }
}

pub fn summary_from_wire(wire: v1::ServiceSummary) -> Result<ServiceSummary, ValidationError> {
    Ok(ServiceSummary {
        active_color: color_from_wire("active_color", wire.active_color)?,
        name: wire.name,
        instances: wire.instances,
        passing: wire.passing,
    })
}

pub fn deployment_to_wire(deployment: &Deployment) -> v1::Deployment {
    v1::Deployment {
        id: deployment.id.clone(),
        service: deployment.service.clone(),
        from_color: color_to_wire(deployment.from_color),
        to_color: color_to_wire(deployment.to_color),
        image: deployment.image.clone(),
        version: deployment.version.clone(),
        who: deployment.who.clone(),
        started_at_ms: deployment.started_at_ms,
        ended_at_ms: deployment.ended_at_ms,
        outcome: outcome_to_wire(deployment.outcome),
        failed_step: deployment.failed_step.clone(),
        error: deployment.error.clone(),
        steps: deployment
            .steps
            .iter()
            .map(|step| v1::StepTiming {
                name: step.name.clone(),
                duration_ms: step.duration_ms,
            })
            .collect(),
        metadata: deployment.metadata.clone().into_iter().collect(),
    }
}

pub fn deployment_from_wire(wire: v1::Deployment) -> Result<Deployment, ValidationError> {
    let deployment = Deployment {
        from_color: color_from_wire("deployment.from_color", wire.from_color)?,
        to_color: color_from_wire("deployment.to_color", wire.to_color)?,
        outcome: outcome_from_wire(wire.outcome)?,
        id: wire.id,
        service: wire.service,
        image: wire.image,
        version: wire.version,
        who: wire.who,
        started_at_ms: wire.started_at_ms,
        ended_at_ms: wire.ended_at_ms,
        failed_step: wire.failed_step,
        error: wire.error,
        steps: wire
            .steps
            .into_iter()
            .map(|step| StepTiming {
                name: step.name,
                duration_ms: step.duration_ms,
            })
            .collect(),
        metadata: wire.metadata.into_iter().collect(),
    };
    // The registry validates what it stores (`validate::deployment`), so
    // records stored under older, looser rules still read back.
    Ok(deployment)
}

pub fn proxy_to_wire(status: &ProxyStatus) -> v1::ProxyStatus {
    v1::ProxyStatus {
        proxy_id: status.proxy_id.clone(),
        applied_revision: status.applied_revision,
        reported_at_ms: status.reported_at_ms,
        healthy: status.healthy,
        message: status.message.clone(),
        connections: status
            .connections
            .iter()
            .map(|c| v1::ColorConnections {
                service: c.service.clone(),
                color: color_to_wire(Some(c.color)),
                connections: c.connections,
            })
            .collect(),
    }
}

fn connections_from_wire(
    wire: Vec<v1::ColorConnections>,
) -> Result<Vec<ColorConnections>, ValidationError> {
    if wire.len() > validate::MAX_PROXY_CONNECTIONS {
        return Err(ValidationError::new(
            "status.connections",
            format!(
                "{} entries; the limit is {}",
                wire.len(),
                validate::MAX_PROXY_CONNECTIONS
            ),
        ));
    }
    wire.into_iter()
        .map(|c| {
            validate::identifier("status.connections.service", &c.service)?;
            let color = color_from_wire("status.connections.color", c.color)?.ok_or_else(|| {
                ValidationError::new(
                    "status.connections.color",
                    "must be COLOR_BLUE or COLOR_GREEN",
                )
            })?;
            Ok(ColorConnections {
                service: c.service,
                color,
                connections: c.connections,
            })
        })
        .collect()
}

pub fn proxy_from_wire(wire: v1::ProxyStatus) -> Result<ProxyStatus, ValidationError> {
    validate::identifier("status.proxy_id", &wire.proxy_id)?;
    let connections = connections_from_wire(wire.connections)?;
    Ok(ProxyStatus {
        connections,
        proxy_id: wire.proxy_id,
        applied_revision: wire.applied_revision,
        reported_at_ms: wire.reported_at_ms,
        healthy: wire.healthy,
        // Diagnostics from the proxy's reload: kept, but never with control
        // characters that could rewrite a terminal or forge a log line.
        message: wire
            .message
            .chars()
            .take(1024)
            .map(|c| {
                if c.is_control() && c != '\n' {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect(),
    })
}

pub fn token_to_wire(token: &TokenInfo) -> v1::Token {
    v1::Token {
        accessor: token.accessor.clone(),
        role: token.role.as_str().to_string(),
        binding: token.binding.clone().unwrap_or_default(),
        services: token.services.clone(),
        description: token.description.clone(),
        created_at_ms: token.created_at_ms,
        expires_at_ms: token.expires_at_ms,
    }
}

pub fn token_from_wire(wire: v1::Token) -> Result<TokenInfo, ValidationError> {
    Ok(TokenInfo {
        accessor: wire.accessor,
        role: Role::parse(&wire.role)?,
        binding: (!wire.binding.is_empty()).then_some(wire.binding),
        services: wire.services,
        description: wire.description,
        created_at_ms: wire.created_at_ms,
        expires_at_ms: wire.expires_at_ms,
    })
}

/// A watch event onto the wire.
pub fn watch_event_to_wire(event: &WatchEvent) -> v1::WatchResponse {
    use v1::watch_response::Kind;
    let (revision, kind) = match event {
        WatchEvent::Snapshot {
            revision,
            services,
            complete,
        } => (
            *revision,
            Kind::Snapshot(v1::Snapshot {
                services: services.iter().map(service_to_wire).collect(),
                complete: *complete,
            }),
        ),
        WatchEvent::Changes { revision, changes } => (
            *revision,
            Kind::Changes(v1::Changes {
                changes: changes.iter().map(change_to_wire).collect(),
            }),
        ),
        WatchEvent::Progress { revision } => (*revision, Kind::Progress(v1::Progress {})),
        WatchEvent::Reset { reason, message } => (
            0,
            Kind::Reset(v1::Reset {
                reason: match reason {
                    ResetReason::Compacted => v1::reset::Reason::Compacted,
                    ResetReason::SlowConsumer => v1::reset::Reason::SlowConsumer,
                    ResetReason::FutureRevision => v1::reset::Reason::FutureRevision,
                } as i32,
                message: message.clone(),
            }),
        ),
    };
    v1::WatchResponse {
        revision,
        kind: Some(kind),
    }
}

fn change_to_wire(change: &Change) -> v1::Change {
    use v1::change::Kind;
    let kind = match change {
        Change::ServiceUpdated(service) => Kind::ServiceUpdated(service_to_wire(service)),
        Change::InstanceUpdated(instance) => Kind::InstanceUpdated(instance_to_wire(instance)),
        Change::InstanceRemoved { service, id } => Kind::InstanceRemoved(v1::InstanceRemoved {
            service: service.clone(),
            id: id.clone(),
        }),
    };
    v1::Change { kind: Some(kind) }
}

/// A watch message off the wire.
pub fn watch_event_from_wire(wire: v1::WatchResponse) -> Result<WatchEvent, ValidationError> {
    use v1::watch_response::Kind;
    let revision = wire.revision;
    match wire.kind {
        Some(Kind::Snapshot(snapshot)) => Ok(WatchEvent::Snapshot {
            revision,
            services: snapshot
                .services
                .into_iter()
                .map(service_from_wire)
                .collect::<Result<_, _>>()?,
            complete: snapshot.complete,
        }),
        Some(Kind::Changes(changes)) => Ok(WatchEvent::Changes {
            revision,
            changes: changes
                .changes
                .into_iter()
                .map(change_from_wire)
                .collect::<Result<_, _>>()?,
        }),
        Some(Kind::Progress(_)) => Ok(WatchEvent::Progress { revision }),
        Some(Kind::Reset(reset)) => Ok(WatchEvent::Reset {
            reason: match v1::reset::Reason::try_from(reset.reason) {
                Ok(v1::reset::Reason::Compacted) => ResetReason::Compacted,
                Ok(v1::reset::Reason::FutureRevision) => ResetReason::FutureRevision,
                _ => ResetReason::SlowConsumer,
            },
            message: reset.message,
        }),
        None => Err(ValidationError::new("watch", "a message with no content")),
    }
}

fn change_from_wire(change: v1::Change) -> Result<Change, ValidationError> {
    use v1::change::Kind;
    match change.kind {
        Some(Kind::ServiceUpdated(service)) => {
            Ok(Change::ServiceUpdated(service_from_wire(service)?))
        }
        Some(Kind::InstanceUpdated(instance)) => {
            Ok(Change::InstanceUpdated(instance_from_wire("", instance)?))
        }
        Some(Kind::InstanceRemoved(removed)) => Ok(Change::InstanceRemoved {
            service: removed.service,
            id: removed.id,
        }),
        None => Err(ValidationError::new("change", "a change with no content")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_round_trips_through_the_wire() {
        let wire = v1::Instance {
            id: "c1:80".into(),
            service: "web".into(),
            color: v1::Color::Blue as i32,
            node: "node-1".into(),
            address: "127.0.0.1".into(),
            port: 8080,
            health: v1::Health::Passing as i32,
            ..Default::default()
        };
        let domain = instance_from_wire("", wire.clone()).expect("valid");
        assert_eq!(domain.color, Some(Color::Blue));
        assert_eq!(instance_to_wire(&domain), wire);
    }

    #[test]
    fn proxy_connections_round_trip_and_bad_ones_are_refused() {
        let counted = |service: &str, color: i32| v1::ColorConnections {
            service: service.into(),
            color,
            connections: 3,
        };
        let wire = v1::ProxyStatus {
            proxy_id: "edge-1".into(),
            connections: vec![counted("web", v1::Color::Green as i32)],
            ..Default::default()
        };
        let domain = proxy_from_wire(wire.clone()).expect("valid");
        assert_eq!(domain.connections_to("web", Color::Green), Some(3));
        assert_eq!(domain.connections_to("web", Color::Blue), Some(0));
        assert_eq!(
            domain.connections_to("api", Color::Blue),
            None,
            "not counted"
        );
        assert_eq!(proxy_to_wire(&domain), wire);
        for bad in [
            counted("web", v1::Color::None as i32),
            counted("web", 9),
            counted("we b", v1::Color::Blue as i32),
        ] {
            let wire = v1::ProxyStatus {
                proxy_id: "edge-1".into(),
                connections: vec![bad],
                ..Default::default()
            };
            let error = proxy_from_wire(wire).expect_err("refused");
            assert!(error.field.starts_with("status.connections"), "{error:?}");
        }
        let flood = v1::ProxyStatus {
            proxy_id: "edge-1".into(),
            connections: vec![counted("web", 1); validate::MAX_PROXY_CONNECTIONS + 1],
            ..Default::default()
        };
        assert!(proxy_from_wire(flood).is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        let wire = v1::Instance {
            id: "c1".into(),
            service: "web".into(),
            address: "127.0.0.1".into(),
            port: 70000,
            ..Default::default()
        };
        let error = instance_from_wire("instance.", wire).expect_err("port out of range");
        assert_eq!(error.field, "instance.port");
        let error = color_from_wire("color", 9).expect_err("unknown color");
        assert!(error.message.contains('9'));
    }
}
