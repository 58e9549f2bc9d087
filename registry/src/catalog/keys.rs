//! The key layout of the catalog in the store. Everything a watcher sees
//! lives under `v/`; indexes and bookkeeping live under `x/`.
//!
//! | key | value |
//! |---|---|
//! | `v/s/{service}` | service record (JSON) |
//! | `v/i/{service}/{instance id}` | instance record (JSON), leased by its session |
//! | `x/id/{instance id}` | owning service name (ids are unique registry-wide) |
//! | `x/nd/{node}/{instance id}` | owning service name (the node's instances, for SyncNode) |
//! | `x/se/{session id}` | session record (JSON), leased |
//! | `x/lk/{service}` | deploy lock record (JSON), leased; create revision = token |
//! | `x/dp/{service}/{deployment id}` | deployment record (JSON) |
//! | `x/px/{proxy id}` | what the proxy last reported (JSON) |
//! | `x/tk/{accessor}` | a token: role, binding, SHA-256 of its secret (JSON) |
//!
//! Names and ids never contain `/` (validation forbids it), so every key
//! splits back into its parts unambiguously.

pub const WATCHED: &[u8] = b"v/";
pub const SERVICES: &[u8] = b"v/s/";
pub const INSTANCES: &[u8] = b"v/i/";
pub const ID_INDEX: &[u8] = b"x/id/";
pub const NODE_INDEX: &[u8] = b"x/nd/";
pub const DEPLOYMENTS: &[u8] = b"x/dp/";
pub const SESSIONS: &[u8] = b"x/se/";
pub const LOCKS: &[u8] = b"x/lk/";
pub const TOKENS: &[u8] = b"x/tk/";
/// Written when the first tokens were made (`--bootstrap-token-file`,
/// `--seed-token`): later starts never take those files again.
pub const BOOTSTRAPPED: &[u8] = b"x/bootstrapped";

pub fn token(accessor: &str) -> Vec<u8> {
    format!("x/tk/{accessor}").into_bytes()
}

pub fn service(name: &str) -> Vec<u8> {
    format!("v/s/{name}").into_bytes()
}

pub fn instances_of(service: &str) -> Vec<u8> {
    format!("v/i/{service}/").into_bytes()
}

pub fn instance(service: &str, id: &str) -> Vec<u8> {
    format!("v/i/{service}/{id}").into_bytes()
}

pub fn id_index(id: &str) -> Vec<u8> {
    format!("x/id/{id}").into_bytes()
}

pub fn node_index_of(node: &str) -> Vec<u8> {
    format!("x/nd/{node}/").into_bytes()
}

pub fn node_index(node: &str, id: &str) -> Vec<u8> {
    format!("x/nd/{node}/{id}").into_bytes()
}

pub fn session(id: u64) -> Vec<u8> {
    format!("x/se/{id}").into_bytes()
}

pub fn lock(service: &str) -> Vec<u8> {
    format!("x/lk/{service}").into_bytes()
}

pub fn deployments_of(service: &str) -> Vec<u8> {
    format!("x/dp/{service}/").into_bytes()
}

pub fn deployment(service: &str, id: &str) -> Vec<u8> {
    format!("x/dp/{service}/{id}").into_bytes()
}

pub const PROXIES: &[u8] = b"x/px/";

pub fn proxy(id: &str) -> Vec<u8> {
    format!("x/px/{id}").into_bytes()
}

/// What a watched key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    Service(String),
    Instance { service: String, id: String },
}

pub fn parse_watched(key: &[u8]) -> Option<Watched> {
    let text = std::str::from_utf8(key).ok()?;
    if let Some(name) = text.strip_prefix("v/s/") {
        return Some(Watched::Service(name.to_string()));
    }
    let rest = text.strip_prefix("v/i/")?;
    let (service, id) = rest.split_once('/')?;
    Some(Watched::Instance {
        service: service.to_string(),
        id: id.to_string(),
    })
}

/// The last path segment of a key, e.g. the instance id of a node index key.
pub fn last_segment(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok()?.rsplit('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_keys_parse_back() {
        assert_eq!(
            parse_watched(&service("web")),
            Some(Watched::Service("web".into()))
        );
        assert_eq!(
            parse_watched(&instance("web", "c1:80")),
            Some(Watched::Instance {
                service: "web".into(),
                id: "c1:80".into()
            })
        );
        assert_eq!(parse_watched(b"x/id/c1"), None);
        assert_eq!(last_segment(&node_index("n1", "c1")), Some("c1"));
    }
}
