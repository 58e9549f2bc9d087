//! Validation rules for everything a client can send, with the documented
//! limits. Each failure names the field and says what would be accepted, so
//! the registry can answer `INVALID_ARGUMENT` with a message a person can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::Instance;

/// Largest request the registry decodes, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Most instances one `SyncNode` call may carry.
pub const MAX_SYNC_INSTANCES: usize = 4096;
/// Longest instance id, node name, lock holder or deployment id.
pub const MAX_ID_LEN: usize = 256;
/// Most tags on one instance, and the longest tag.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_LEN: usize = 256;
/// Most metadata entries, longest key, longest value.
pub const MAX_METADATA: usize = 64;
pub const MAX_METADATA_KEY_LEN: usize = 128;
pub const MAX_METADATA_VALUE_LEN: usize = 4096;
/// Session and lock TTL bounds, in seconds.
pub const MIN_TTL_SECONDS: u32 = 1;
pub const MAX_TTL_SECONDS: u32 = 3600;

/// A rejected field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

/// A service name is a lowercase DNS label: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
pub fn service_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let bytes = name.as_bytes();
    let valid_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(valid_char)
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{name:?} is not a service name: use 1 to 63 lowercase letters, digits and \
                 '-', starting and ending with a letter or digit (a DNS label)"
            ),
        ))
    }
}

/// Ids and node names: 1 to 256 characters from `[A-Za-z0-9._:@-]`, so they
/// are safe inside store keys, file names and container names.
pub fn identifier(field: &str, id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes long; the limit is {MAX_ID_LEN}", id.len()),
        ));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || "._:@-".contains(c);
    if let Some(bad) = id.chars().find(|c| !valid(*c)) {
        return Err(ValidationError::new(
            field,
            format!("{id:?} contains {bad:?}; use letters, digits and . _ : @ -"),
        ));
    }
    Ok(())
}

/// Ports are 1..=65535.
pub fn port(field: &str, port: u32) -> Result<u16, ValidationError> {
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ValidationError::new(
            field,
            format!("{port} is not a port: use 1 to 65535"),
        )),
    }
}

/// An IP address in text form; hostnames are not accepted.
pub fn ip_address(field: &str, text: &str) -> Result<IpAddr, ValidationError> {
    let address: IpAddr = text.trim().parse().map_err(|_| {
        ValidationError::new(
            field,
            format!("{text:?} is not an IP address: give an IPv4 or IPv6 address, not a hostname"),
        )
    })?;
    if address.is_unspecified() {
        return Err(ValidationError::new(
            field,
            format!("{address} cannot be reached by clients: advertise a concrete address"),
        ));
    }
    Ok(address)
}

/// Session and lock TTLs.
pub fn ttl_seconds(field: &str, ttl: u32) -> Result<u32, ValidationError> {
    if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(ValidationError::new(
            field,
            format!("{ttl}s is out of range: use {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS} seconds"),
        ))
    }
}

pub fn tags(field: &str, tags: &[String]) -> Result<(), ValidationError> {
    if tags.len() > MAX_TAGS {
        return Err(ValidationError::new(
            field,
            format!("{} tags; the limit is {MAX_TAGS}", tags.len()),
        ));
    }
    if let Some(tag) = tags.iter().find(|t| t.is_empty() || t.len() > MAX_TAG_LEN) {
        return Err(ValidationError::new(
            field,
            format!(
                "tag {:.40?} must be 1 to {MAX_TAG_LEN} bytes long",
                tag.as_str()
            ),
        ));
    }
    Ok(())
}

pub fn metadata(field: &str, metadata: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if metadata.len() > MAX_METADATA {
        return Err(ValidationError::new(
            field,
            format!("{} entries; the limit is {MAX_METADATA}", metadata.len()),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.len() > MAX_METADATA_KEY_LEN {
            return Err(ValidationError::new(
                field,
                format!("key {key:.40?} must be 1 to {MAX_METADATA_KEY_LEN} bytes long"),
            ));
        }
        if value.len() > MAX_METADATA_VALUE_LEN {
            return Err(ValidationError::new(
                field,
                format!("value of {key:?} is longer than {MAX_METADATA_VALUE_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// Everything about an instance a client supplies.
pub fn instance(prefix: &str, instance: &Instance) -> Result<(), ValidationError> {
    identifier(&format!("{prefix}id"), &instance.id)?;
    service_name(&format!("{prefix}service"), &instance.service)?;
    if !instance.node.is_empty() {
        identifier(&format!("{prefix}node"), &instance.node)?;
    }
    port(&format!("{prefix}port"), u32::from(instance.port))?;
    if instance.address.is_unspecified() {
        return Err(ValidationError::new(
            format!("{prefix}address"),
            format!(
                "{} cannot be reached by clients: advertise a concrete address",
                instance.address
            ),
        ));
    }
    tags(&format!("{prefix}tags"), &instance.tags)?;
    metadata(&format!("{prefix}metadata"), &instance.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns_labels() {
        for good in ["web", "a", "web-2", "0abc", &"a".repeat(63)] {
            assert!(service_name("service", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Web",
            "-web",
            "web-",
            "we_b",
            "web.api",
            &"a".repeat(64),
        ] {
            let error = service_name("service", bad).expect_err(bad);
            assert_eq!(error.field, "service");
        }
    }

    #[test]
    fn ports_must_fit_and_not_be_zero() {
        assert_eq!(port("port", 8080).ok(), Some(8080));
        assert!(port("port", 0).is_err());
        assert!(port("port", 65536).is_err());
    }

    #[test]
    fn identifiers_reject_separators_and_empties() {
        assert!(identifier("id", "3f2a9c:8080").is_ok());
        assert!(identifier("id", "").is_err());
        assert!(identifier("id", "a/b").is_err());
        assert!(identifier("id", &"x".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn addresses_must_be_concrete_ips() {
        assert!(ip_address("address", "10.0.0.1").is_ok());
        assert!(ip_address("address", "::1").is_ok());
        assert!(ip_address("address", "0.0.0.0").is_err());
        assert!(ip_address("address", "example.com").is_err());
    }
}
