//! Validation rules for everything a client can send, with the documented
//! limits. Each failure names the field and says what would be accepted, so
//! the registry can answer `INVALID_ARGUMENT` with a message a person can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::{Deployment, Instance};

/// Largest request the registry decodes, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Most instances one `SyncNode` call may carry.
pub const MAX_SYNC_INSTANCES: usize = 4096;
/// Longest instance id, node name, lock holder or deployment id.
pub const MAX_ID_LEN: usize = 256;
/// Color counts one proxy report may carry (two colors of 2,048 services).
pub const MAX_PROXY_CONNECTIONS: usize = 4096;
/// Most tags on one instance, and the longest tag.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_LEN: usize = 256;
/// Most metadata entries, longest key, longest value.
pub const MAX_METADATA: usize = 64;
pub const MAX_METADATA_KEY_LEN: usize = 128;
pub const MAX_METADATA_VALUE_LEN: usize = 4096;
/// Longest free-text field of a deployment record (image, version, who,
/// failed step), and its error text.
pub const MAX_TEXT_LEN: usize = 1024;
pub const MAX_ERROR_LEN: usize = 16 * 1024;
/// Most step timings in one deployment record.
pub const MAX_STEPS: usize = 64;
/// Largest deployment record, as stored.
pub const MAX_DEPLOYMENT_BYTES: usize = 64 * 1024;
/// How far ahead of the registry's clock a deployment may say it started:
/// clocks drift, but a record dated next year is a lie.
pub const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;
/// Characters of a rejected value quoted back in an error message.
pub const QUOTED_CHARS: usize = 64;
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

/// A value for an error message: Debug-quoted (control characters escaped),
/// at most [`QUOTED_CHARS`] characters of it, and its length when cut. An
/// error that repeated a 16 KiB value in full exceeded gRPC's metadata
/// limit and reached the client as a transport error instead.
pub fn quote(value: &str) -> String {
    if value.chars().count() <= QUOTED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(QUOTED_CHARS).collect();
    format!("{head:?}… ({} bytes)", value.len())
}

/// [`quote`], written only when displayed.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote(self.0))
    }
}

/// Free text (lock holders, tags, metadata, record fields): at most
/// `max_len` bytes and no control characters, which would let a client
/// forge log lines or rewrite an operator's terminal. `multiline` allows
/// newlines and tabs (error texts), nothing else.
pub fn text(
    field: impl fmt::Display + Copy,
    value: &str,
    max_len: usize,
    multiline: bool,
) -> Result<(), ValidationError> {
    if value.len() > max_len {
        return Err(ValidationError::new(
            field.to_string(),
            format!("is {} bytes long; the limit is {max_len}", value.len()),
        ));
    }
    let allowed = |c: char| multiline && (c == '\n' || c == '\t');
    if let Some(bad) = value.chars().find(|c| c.is_control() && !allowed(*c)) {
        return Err(ValidationError::new(
            field.to_string(),
            format!(
                "{} contains the control character {bad:?}; send printable text",
                quote(value)
            ),
        ));
    }
    Ok(())
}

/// A service name is a lowercase DNS label: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
pub fn service_name(field: impl fmt::Display + Copy, name: &str) -> Result<(), ValidationError> {
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
            field.to_string(),
            format!(
                "{} is not a service name: use 1 to 63 lowercase letters, digits and \
                 '-', starting and ending with a letter or digit (a DNS label)",
                quote(name)
            ),
        ))
    }
}

/// Ids and node names: 1 to 256 characters from `[A-Za-z0-9._:@-]`, so they
/// are safe inside store keys, file names and container names.
pub fn identifier(field: impl fmt::Display + Copy, id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(ValidationError::new(field.to_string(), "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(ValidationError::new(
            field.to_string(),
            format!("is {} bytes long; the limit is {MAX_ID_LEN}", id.len()),
        ));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || "._:@-".contains(c);
    if let Some(bad) = id.chars().find(|c| !valid(*c)) {
        return Err(ValidationError::new(
            field.to_string(),
            format!(
                "{} contains {bad:?}; use letters, digits and . _ : @ -",
                quote(id)
            ),
        ));
    }
    Ok(())
}

/// Ports are 1..=65535.
pub fn port(field: impl fmt::Display + Copy, port: u32) -> Result<u16, ValidationError> {
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ValidationError::new(
            field.to_string(),
            format!("{port} is not a port: use 1 to 65535"),
        )),
    }
}

/// An IP address in text form; hostnames are not accepted.
pub fn ip_address(field: impl fmt::Display + Copy, text: &str) -> Result<IpAddr, ValidationError> {
    let address: IpAddr = text.trim().parse().map_err(|_| {
        ValidationError::new(
            field.to_string(),
            format!(
                "{} is not an IP address: give an IPv4 or IPv6 address, not a hostname",
                quote(text)
            ),
        )
    })?;
    if address.is_unspecified() {
        return Err(ValidationError::new(
            field.to_string(),
            format!("{address} cannot be reached by clients: advertise a concrete address"),
        ));
    }
    Ok(address)
}

/// The share of a canary: 0 (no canary) to 99 percent. 100 is not a weight
/// but a flip: the canary color becomes the live one.
pub fn canary_weight(field: impl fmt::Display + Copy, weight: u32) -> Result<u8, ValidationError> {
    match u8::try_from(weight) {
        Ok(weight) if weight < 100 => Ok(weight),
        _ => Err(ValidationError::new(
            field.to_string(),
            format!(
                "{weight}% is out of range: use 0 to 99 (100% is a flip: `cdctl set-color`, or a \
                 canary's last step)"
            ),
        )),
    }
}

/// Session and lock TTLs.
pub fn ttl_seconds(field: impl fmt::Display + Copy, ttl: u32) -> Result<u32, ValidationError> {
    if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(ValidationError::new(
            field.to_string(),
            format!("{ttl}s is out of range: use {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS} seconds"),
        ))
    }
}

pub fn tags(field: impl fmt::Display + Copy, tags: &[String]) -> Result<(), ValidationError> {
    if tags.len() > MAX_TAGS {
        return Err(ValidationError::new(
            field.to_string(),
            format!("{} tags; the limit is {MAX_TAGS}", tags.len()),
        ));
    }
    for (index, tag) in tags.iter().enumerate() {
        if tag.is_empty() {
            return Err(ValidationError::new(
                format!("{field}[{index}]"),
                "must not be empty",
            ));
        }
        text(format_args!("{field}[{index}]"), tag, MAX_TAG_LEN, false)?;
    }
    Ok(())
}

pub fn metadata(
    field: impl fmt::Display + Copy,
    metadata: &BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    if metadata.len() > MAX_METADATA {
        return Err(ValidationError::new(
            field.to_string(),
            format!("{} entries; the limit is {MAX_METADATA}", metadata.len()),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() {
            return Err(ValidationError::new(field.to_string(), "a key is empty"));
        }
        text(
            format_args!("{field} key"),
            key,
            MAX_METADATA_KEY_LEN,
            false,
        )?;
        text(
            format_args!("{field}[{}]", Quoted(key)),
            value,
            MAX_METADATA_VALUE_LEN,
            false,
        )?;
    }
    Ok(())
}

/// A lock holder: who a deploy lock names in errors and logs.
pub fn holder(field: impl fmt::Display + Copy, holder: &str) -> Result<(), ValidationError> {
    if holder.is_empty() {
        return Err(ValidationError::new(
            field.to_string(),
            "must not be empty: name the deployer (e.g. user@host)",
        ));
    }
    text(field, holder, MAX_ID_LEN, false)
}

/// Everything in a deployment record a client supplies, except the clock
/// and the stored size, which the registry checks.
pub fn deployment(deployment: &Deployment) -> Result<(), ValidationError> {
    identifier("deployment.id", &deployment.id)?;
    service_name("deployment.service", &deployment.service)?;
    for (field, value) in [
        ("deployment.image", &deployment.image),
        ("deployment.version", &deployment.version),
        ("deployment.who", &deployment.who),
        ("deployment.failed_step", &deployment.failed_step),
    ] {
        text(field, value, MAX_TEXT_LEN, false)?;
    }
    text("deployment.error", &deployment.error, MAX_ERROR_LEN, true)?;
    if deployment.steps.len() > MAX_STEPS {
        return Err(ValidationError::new(
            "deployment.steps",
            format!("{} steps; the limit is {MAX_STEPS}", deployment.steps.len()),
        ));
    }
    for (index, step) in deployment.steps.iter().enumerate() {
        text(
            format_args!("deployment.steps[{index}].name"),
            &step.name,
            MAX_TAG_LEN,
            false,
        )?;
    }
    if deployment.ended_at_ms != 0 && deployment.ended_at_ms < deployment.started_at_ms {
        return Err(ValidationError::new(
            "deployment.ended_at_ms",
            format!(
                "{} is before started_at_ms {}",
                deployment.ended_at_ms, deployment.started_at_ms
            ),
        ));
    }
    metadata("deployment.metadata", &deployment.metadata)
}

/// Everything about an instance a client supplies. Field names are only
/// spelled out for an error: a client reading a service validates every
/// instance in it, and formatting each field's name up front was most of
/// what that cost.
pub fn instance(
    prefix: impl fmt::Display + Copy,
    instance: &Instance,
) -> Result<(), ValidationError> {
    identifier(format_args!("{prefix}id"), &instance.id)?;
    service_name(format_args!("{prefix}service"), &instance.service)?;
    if !instance.node.is_empty() {
        identifier(format_args!("{prefix}node"), &instance.node)?;
    }
    port(format_args!("{prefix}port"), u32::from(instance.port))?;
    if instance.address.is_unspecified() {
        return Err(ValidationError::new(
            format!("{prefix}address"),
            format!(
                "{} cannot be reached by clients: advertise a concrete address",
                instance.address
            ),
        ));
    }
    tags(format_args!("{prefix}tags"), &instance.tags)?;
    metadata(format_args!("{prefix}metadata"), &instance.metadata)
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
    fn errors_quote_at_most_64_characters_and_say_how_long() {
        let long = "a".repeat(16 * 1024);
        let message = service_name("service", &long)
            .expect_err("too long")
            .to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("(16384 bytes)"), "{message}");
        assert_eq!(quote("web"), "\"web\"");
    }

    #[test]
    fn free_text_refuses_control_characters() {
        for bad in [
            "x\n2026-01-01 INFO holder=admin",
            "x\u{1b}[2J",
            "a\rb",
            "\u{0}",
        ] {
            let error = holder("holder", bad).expect_err(bad);
            assert!(error.message.contains("control character"), "{error}");
            assert!(
                !error.to_string().contains('\u{1b}'),
                "the error escapes it"
            );
        }
        assert!(holder("holder", "deployer@ci-42 (job 7)").is_ok());
        assert!(text("error", "line 1\n\tline 2", 100, true).is_ok());
        assert!(text("error", "bell\u{7}", 100, true).is_err());
        let tagged = tags("tags", &["ok".into(), "bad\u{1b}".into()]).expect_err("escape");
        assert_eq!(tagged.field, "tags[1]");
        let meta = BTreeMap::from([("k".to_string(), "v\n".to_string())]);
        assert!(metadata("metadata", &meta).is_err());
    }

    #[test]
    fn addresses_must_be_concrete_ips() {
        assert!(ip_address("address", "10.0.0.1").is_ok());
        assert!(ip_address("address", "::1").is_ok());
        assert!(ip_address("address", "0.0.0.0").is_err());
        assert!(ip_address("address", "example.com").is_err());
    }
}
