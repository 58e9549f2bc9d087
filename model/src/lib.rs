//! Switchyard's domain types (docs/semantics.md, "Data model") and the one place their validation
//! rules live. Every program works with these types; protobuf exists only at
//! the wire (`switchyard-proto`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod defaults;
pub mod duration;
#[cfg(test)]
mod fuzz;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod labels;
pub mod rollback;
pub mod routes;
pub mod validate;
pub mod view;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use validate::ValidationError;

/// One of the two release colors. "No color" is `Option<Color>::None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    /// The color a deploy goes to when `active` is live: the other one, or
    /// blue when nothing is live yet.
    pub fn next(active: Option<Color>) -> Color {
        match active {
            Some(Color::Blue) => Color::Green,
            Some(Color::Green) | None => Color::Blue,
        }
    }

    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    /// Parses `blue`, `green`, or `none` (and the empty string) into an
    /// optional color: the form flags and labels take.
    pub fn parse_optional(text: &str) -> Result<Option<Color>, ValidationError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(None),
            other => other.parse().map(Some),
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Color {
    type Err = ValidationError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            _ => Err(ValidationError::new(
                "color",
                format!("unknown color {text:?}: use blue or green"),
            )),
        }
    }
}

/// Writes an optional color the way people read it: `blue`, `green`, `none`.
pub fn color_name(color: Option<Color>) -> &'static str {
    color.map_or("none", Color::as_str)
}

/// Health of one instance, as Consul names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Unknown,
    Passing,
    Warning,
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Health {
    type Err = ValidationError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "unknown" => Ok(Health::Unknown),
            "passing" => Ok(Health::Passing),
            "warning" => Ok(Health::Warning),
            "critical" => Ok(Health::Critical),
            _ => Err(ValidationError::new(
                "health",
                format!("unknown health {text:?}: use passing, warning, critical or unknown"),
            )),
        }
    }
}

/// A session (lease) id. Instances registered under a session vanish with it.
pub type SessionId = u64;

/// One reachable endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub color: Option<Color>,
    #[serde(default)]
    pub node: String,
    pub address: IpAddr,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub health: Health,
    /// The owning session, if any.
    #[serde(default)]
    pub session: Option<SessionId>,
    /// Revision at which this instance was first registered (set on reads).
    #[serde(skip)]
    pub create_revision: u64,
    /// Revision of the last change to this instance (set on reads).
    #[serde(skip)]
    pub mod_revision: u64,
}

impl Instance {
    /// True when the two describe the same registration, revisions aside.
    pub fn same_registration(&self, other: &Instance) -> bool {
        self.id == other.id
            && self.service == other.service
            && self.color == other.color
            && self.node == other.node
            && self.address == other.address
            && self.port == other.port
            && self.tags == other.tags
            && self.metadata == other.metadata
            && self.health == other.health
            && self.session == other.session
    }

    /// Whether the registry has marked the instance draining: it is up, but
    /// proxies send it no new requests (a rolling deploy is about to stop
    /// it). The mark is the registry's, kept in [`labels::meta::DRAINING`];
    /// an agent's re-registration keeps it and cannot set it.
    pub fn is_draining(&self) -> bool {
        self.metadata.contains_key(labels::meta::DRAINING)
    }

    /// Whether proxies route to the instance: it passes its checks and is
    /// not draining.
    pub fn takes_requests(&self) -> bool {
        self.health == Health::Passing && !self.is_draining()
    }

    /// `ip:port`, with brackets for IPv6, as proxies and test commands want it.
    pub fn target(&self) -> String {
        std::net::SocketAddr::new(self.address, self.port).to_string()
    }
}

/// A service: its live color and (on reads) its instances.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    #[serde(default)]
    pub active_color: Option<Color>,
    /// Revision at which the active color last changed; 0 when never set.
    #[serde(default)]
    pub color_revision: u64,
    /// The share of requests (percent, 0–99) a canary sends to the color
    /// that is not live; the live color takes the rest. 0 when no canary
    /// runs, and always 0 while no color is live. A flip resets it.
    #[serde(default)]
    pub canary_weight: u8,
    /// Revision at which the weights last changed (a flip or a canary
    /// step); 0 when never set.
    #[serde(default)]
    pub weights_revision: u64,
    /// During a canary, whether each client keeps the color it was first
    /// sent to (proxies pin clients by cookie). False without a canary.
    #[serde(default)]
    pub canary_sticky: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip)]
    pub instances: Vec<Instance>,
}

impl Service {
    pub fn new(name: impl Into<String>) -> Self {
        Service {
            name: name.into(),
            ..Service::default()
        }
    }

    /// The color a running canary sends its share to: the one not live,
    /// while the canary weight is above 0.
    pub fn canary_color(&self) -> Option<Color> {
        match self.active_color {
            Some(live) if self.canary_weight > 0 => Some(live.other()),
            _ => None,
        }
    }

    /// The share of requests (percent) `color` takes: 100 for the live
    /// color without a canary, 0 for a color that is neither live nor the
    /// canary, and for colorless instances.
    pub fn weight_of(&self, color: Option<Color>) -> u8 {
        match (color, self.active_color) {
            (Some(c), Some(live)) if c == live => 100 - self.canary_weight.min(99),
            (Some(c), Some(_)) if Some(c) == self.canary_color() => self.canary_weight,
            _ => 0,
        }
    }

    /// Passing instances (not draining) of every color with a weight above 0, each with its
    /// color's weight: what a proxy routes to during a canary. Without a
    /// canary, exactly [`Service::live_instances`] at weight 100.
    pub fn routes(&self) -> impl Iterator<Item = (&Instance, u8)> {
        self.instances.iter().filter_map(move |i| {
            let weight = self.weight_of(i.color);
            (weight > 0 && i.takes_requests()).then_some((i, weight))
        })
    }

    /// Instances of the live color that pass their checks and are not
    /// draining: what a proxy
    /// routes to. None while no color is live: colorless instances are never
    /// live.
    pub fn live_instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(move |i| {
            self.active_color.is_some() && i.color == self.active_color && i.takes_requests()
        })
    }
}

/// What a `SyncNode` did: the revision it committed at (the current one
/// when it changed nothing) and how many instances it added, updated and
/// removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncOutcome {
    pub revision: u64,
    pub added: u32,
    pub updated: u32,
    pub removed: u32,
    /// Instances left out (id, why): their id is another owner's. One
    /// container's label never stops the rest of its node from syncing.
    pub refused: Vec<(String, String)>,
}

/// One line of `ListServices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    pub name: String,
    pub active_color: Option<Color>,
    pub instances: u32,
    pub passing: u32,
}

/// A granted deploy lock. The token fences color changes: it is the revision
/// at which the lock was granted, so a newer holder always has a larger one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockGrant {
    pub token: u64,
    pub ttl_seconds: u32,
}

/// How a deployment ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    InProgress,
    Promoted,
    RolledBack,
    Failed,
    /// Waiting for `cdctl promote` or `cdctl abort`.
    Paused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
            Outcome::Paused => "paused",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long one deploy step took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    pub name: String,
    pub duration_ms: u64,
}

/// The record of one deployment (docs/semantics.md, "Data model").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub from_color: Option<Color>,
    #[serde(default)]
    pub to_color: Option<Color>,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub who: String,
    pub started_at_ms: u64,
    #[serde(default)]
    pub ended_at_ms: u64,
    #[serde(default)]
    pub outcome: Outcome,
    #[serde(default)]
    pub failed_step: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub steps: Vec<StepTiming>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What a proxy last reported: the registry revision its configuration
/// reflects, and whether it can apply changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub proxy_id: String,
    pub applied_revision: u64,
    /// When the registry received the report (its clock), Unix ms.
    pub reported_at_ms: u64,
    pub healthy: bool,
    #[serde(default)]
    pub message: String,
    /// Requests the proxy has in flight to each color of each service, as
    /// of this report. A service it says nothing of: unknown (a proxy that
    /// cannot count, such as nginx without its status module).
    #[serde(default)]
    pub connections: Vec<ColorConnections>,
}

/// One proxy's requests in flight to one color of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColorConnections {
    pub service: String,
    pub color: Color,
    pub connections: u64,
}

impl ProxyStatus {
    /// What this proxy has in flight to `color` of `service`: `None` when
    /// it does not count that service's connections.
    pub fn connections_to(&self, service: &str, color: Color) -> Option<u64> {
        let counted = self.connections.iter().filter(|c| c.service == service);
        let mut counted = counted.peekable();
        counted.peek()?;
        Some(
            counted
                .filter(|c| c.color == color)
                .map(|c| c.connections)
                .sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_alternate_and_start_blue() {
        assert_eq!(Color::next(None), Color::Blue);
        assert_eq!(Color::next(Some(Color::Blue)), Color::Green);
        assert_eq!(Color::next(Some(Color::Green)), Color::Blue);
    }

    #[test]
    fn colors_parse_case_insensitively_and_reject_others() {
        assert_eq!("Blue".parse::<Color>().ok(), Some(Color::Blue));
        assert_eq!(Color::parse_optional("none").ok(), Some(None));
        let error = "purple".parse::<Color>().err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("color") && e.contains("purple")));
    }

    #[test]
    fn stored_instance_json_round_trips_without_revisions() {
        let instance = Instance {
            id: "abc:80".into(),
            service: "web".into(),
            color: Some(Color::Green),
            node: "n1".into(),
            address: "127.0.0.1".parse().expect("literal address"),
            port: 8080,
            tags: vec!["v2".into()],
            metadata: BTreeMap::new(),
            health: Health::Passing,
            session: Some(7),
            create_revision: 5,
            mod_revision: 9,
        };
        let json = serde_json::to_string(&instance).expect("serializable");
        let back: Instance = serde_json::from_str(&json).expect("parses");
        assert!(back.same_registration(&instance));
        assert_eq!(
            back.mod_revision, 0,
            "revisions come from the store, not the record"
        );
    }
}
