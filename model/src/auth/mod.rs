//! Who may do what: roles, tokens and the one decision table every request
//! of a registry with `--auth` goes through (README "Security").
//!
//! The table is a pure function of the caller's role and binding and of
//! what the request touches, so every cell of it is unit-tested here and
//! the registry decides in one place.

use serde::{Deserialize, Serialize};

use crate::validate::ValidationError;

/// What a token (or a client certificate) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and watches.
    Reader,
    /// A reader that reports for its own proxy id.
    Proxy,
    /// Sessions and instances of its own node, and reads.
    Agent,
    /// A reader that deploys: locks, colors, records, external instances.
    Deployer,
    /// Everything, including tokens.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        match text {
            "reader" => Ok(Role::Reader),
            "proxy" => Ok(Role::Proxy),
            "agent" => Ok(Role::Agent),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            _ => Err(ValidationError::new(
                "role",
                format!(
                    "{} is not a role: use reader, proxy, agent, deployer or admin",
                    crate::validate::quote(text)
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Proxy => "proxy",
            Role::Agent => "agent",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

/// The deployment-record metadata key under which a registry with `--auth`
/// writes who recorded it.
pub const PRINCIPAL_KEY: &str = "principal";

/// A token's public description (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Names the token in lists, logs and `revoke`; not a credential.
    pub accessor: String,
    pub role: Role,
    /// The node of an agent token, the proxy id of a proxy token.
    #[serde(default)]
    pub binding: Option<String>,
    /// Service globs a deployer token is limited to (empty: all).
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub created_at_ms: u64,
    /// 0: never.
    #[serde(default)]
    pub expires_at_ms: u64,
}

/// What a new token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub role: Role,
    /// The node of an agent token, the proxy id of a proxy token.
    pub binding: Option<String>,
    /// Service globs a deployer token is limited to (empty: all).
    pub services: Vec<String>,
    pub description: String,
    /// 0: never expires.
    pub ttl_seconds: u64,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    pub binding: Option<String>,
    pub services: Vec<String>,
    /// How it is named in logs and records: the token's accessor and
    /// description.
    pub name: String,
    /// The accessor of the token it was authenticated by (`None`: a client
    /// certificate, or a registry without `--auth`): what a revocation of
    /// that token ends.
    pub token: Option<String>,
}

impl Principal {
    /// Whether `service` is within this principal's service globs (every
    /// service when it has none); the role is decided by [`allowed`].
    fn may_deploy(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|glob| glob_matches(glob, service))
    }

    /// Everything, as a registry without `--auth` treats every caller.
    pub fn anonymous_admin() -> Self {
        Principal {
            role: Role::Admin,
            binding: None,
            services: Vec::new(),
            name: "anonymous".into(),
            token: None,
        }
    }
}

/// What a request touches, as far as authorization cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Reads, watches, history, proxies, next color.
    Read,
    /// A session of `node` (open, keep alive, close).
    Session { node: &'a str },
    /// Instances of `service` on `node` (register, sync, deregister); node
    /// `None`: an external instance (no session, node `external` or given
    /// by hand), owned by whoever deploys `service`. Replacing or removing
    /// an instance asks this of its current owner as well as of the new one.
    Instances {
        node: Option<&'a str>,
        service: &'a str,
    },
    /// Changing some instance, before it is known which: what deregistering
    /// an id that names no instance asks (it then answers NOT_FOUND to the
    /// roles that change instances, PERMISSION_DENIED to the others).
    SomeInstances,
    /// Locks, the color, deployment records of `service`.
    Deploy { service: &'a str },
    /// A proxy's own report.
    ReportProxy { proxy: &'a str },
    /// Backups and tokens.
    Admin,
}

/// Whether `principal` may do `action`; the refusal names the role and
/// what it lacks.
pub fn allowed(principal: &Principal, action: Action<'_>) -> Result<(), String> {
    let role = principal.role;
    let bound = principal.binding.as_deref();
    // A binding may be a glob: `*` for the one agent token every task of a
    // Swarm global service shares (a Docker secret is the same on every
    // node), `proxy-*` for proxies named after their container.
    let binds = |name: &str| bound.is_some_and(|glob| glob_matches(glob, name));
    let ok = match (role, action) {
        (Role::Admin, _) | (_, Action::Read) => true,
        (Role::Agent, Action::Session { node }) => binds(node),
        (
            Role::Agent,
            Action::Instances {
                node: Some(node), ..
            },
        ) => binds(node),
        (Role::Agent | Role::Deployer, Action::SomeInstances) => true,
        // A deployer's scope covers every action on a service, its external
        // instances included.
        (
            Role::Deployer,
            Action::Instances {
                node: None,
                service,
            },
        )
        | (Role::Deployer, Action::Deploy { service }) => principal.may_deploy(service),
        (Role::Proxy, Action::ReportProxy { proxy }) => binds(proxy),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let what = match action {
        Action::Read => "reads".to_string(),
        Action::Session { node } => format!("sessions of node {node}"),
        Action::Instances {
            node: Some(node),
            service: "",
        } => format!("instances of node {node}"),
        Action::Instances {
            node: Some(node),
            service,
        } => format!("instances of node {node} (service {service})"),
        Action::Instances {
            node: None,
            service,
        } => format!("external instances of service {service}"),
        Action::SomeInstances => "instances".to_string(),
        Action::Deploy { service } => format!("deploys of service {service}"),
        Action::ReportProxy { proxy } => format!("reports of proxy {proxy}"),
        Action::Admin => "administration (backups, tokens)".to_string(),
    };
    let scope = match (bound, principal.services.is_empty()) {
        (Some(binding), _) => format!(" bound to {binding}"),
        (None, false) => format!(" limited to {}", principal.services.join(",")),
        (None, true) => String::new(),
    };
    Err(format!(
        "{} (role {}{scope}) may not touch {what}",
        principal.name,
        role.as_str()
    ))
}

/// `*` matches any run of characters; everything else itself.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    match glob.split_once('*') {
        None => glob == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            // Try every place the rest of the glob could start.
            (0..=rest.len())
                .filter(|at| rest.is_char_boundary(*at))
                .any(|at| glob_matches(tail, &rest[at..]))
        }
    }
}

#[cfg(test)]
mod table;

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, binding: Option<&str>, services: &[&str]) -> Principal {
        Principal {
            role,
            binding: binding.map(str::to_string),
            services: services.iter().map(|s| s.to_string()).collect(),
            name: "t".into(),
            token: None,
        }
    }

    #[test]
    fn the_table() {
        let reader = principal(Role::Reader, None, &[]);
        let proxy = principal(Role::Proxy, Some("edge-1"), &[]);
        let agent = principal(Role::Agent, Some("n1"), &[]);
        let deployer = principal(Role::Deployer, None, &["web", "api-*"]);
        let admin = principal(Role::Admin, None, &[]);
        let cases: [(Action<'_>, [bool; 5]); 13] = [
            (Action::Read, [true, true, true, true, true]),
            (
                Action::Session { node: "n1" },
                [false, false, true, false, true],
            ),
            (
                Action::Session { node: "n2" },
                [false, false, false, false, true],
            ),
            (
                Action::Instances {
                    node: Some("n1"),
                    service: "web",
                },
                [false, false, true, false, true],
            ),
            (
                Action::Instances {
                    node: Some("n2"),
                    service: "web",
                },
                [false, false, false, false, true],
            ),
            (
                Action::Instances {
                    node: None,
                    service: "web",
                },
                [false, false, false, true, true],
            ),
            (
                Action::Instances {
                    node: None,
                    service: "db",
                },
                [false, false, false, false, true],
            ),
            (Action::SomeInstances, [false, false, true, true, true]),
            (
                Action::Deploy { service: "web" },
                [false, false, false, true, true],
            ),
            (
                Action::Deploy { service: "api-eu" },
                [false, false, false, true, true],
            ),
            (
                Action::Deploy { service: "db" },
                [false, false, false, false, true],
            ),
            (
                Action::ReportProxy { proxy: "edge-1" },
                [false, true, false, false, true],
            ),
            (Action::Admin, [false, false, false, false, true]),
        ];
        for (action, expected) in cases {
            for (who, want) in [&reader, &proxy, &agent, &deployer, &admin]
                .iter()
                .zip(expected)
            {
                assert_eq!(
                    allowed(who, action).is_ok(),
                    want,
                    "{:?} {action:?}",
                    who.role
                );
            }
        }
        assert!(allowed(&proxy, Action::ReportProxy { proxy: "edge-2" }).is_err());
        // Globbed bindings: the shared agent token of a global service, and
        // proxies named after their containers; never a wider role.
        let any_node = principal(Role::Agent, Some("*"), &[]);
        assert!(allowed(&any_node, Action::Session { node: "worker-7" }).is_ok());
        let on = |node| Action::Instances {
            node,
            service: "web",
        };
        assert!(allowed(&any_node, on(Some("n9"))).is_ok());
        assert!(allowed(&any_node, on(None)).is_err());
        assert!(allowed(&any_node, Action::Deploy { service: "web" }).is_err());
        let proxies = principal(Role::Proxy, Some("proxy-*"), &[]);
        assert!(
            allowed(
                &proxies,
                Action::ReportProxy {
                    proxy: "proxy-3f2a"
                }
            )
            .is_ok()
        );
        assert!(allowed(&proxies, Action::ReportProxy { proxy: "edge-1" }).is_err());
        let refusal = allowed(&deployer, Action::Deploy { service: "db" }).expect_err("db");
        assert!(
            refusal.contains("deployer") && refusal.contains("db"),
            "{refusal}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_matches("web", "web"));
        assert!(!glob_matches("web", "web2"));
        assert!(glob_matches("api-*", "api-eu"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b", "ac"));
    }
}
