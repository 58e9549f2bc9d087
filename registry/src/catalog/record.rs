//! How an instance is stored: a compact binary record (postcard) behind a
//! version byte, decoded on every read of a service and every watch event,
//! so it is the hot path of reads. Records written as JSON (before the
//! binary form, or by hand) still decode: JSON never starts with the
//! version byte.
//!
//! The record has its own structs, not `Instance`'s serde form: postcard is
//! not self-describing, so a change to `Instance` must not silently change
//! what stored bytes mean. A new layout gets a new version byte.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use switchyard_model::{Color, Health, Instance, SessionId};

/// First byte of a version-1 binary instance record.
const V1: u8 = 0x01;

#[derive(Serialize)]
struct V1Ref<'a> {
    id: &'a str,
    service: &'a str,
    color: Option<Color>,
    node: &'a str,
    address: IpAddr,
    port: u16,
    tags: &'a [String],
    metadata: &'a BTreeMap<String, String>,
    health: Health,
    session: Option<SessionId>,
}

#[derive(Deserialize)]
struct V1Owned {
    id: String,
    service: String,
    color: Option<Color>,
    node: String,
    address: IpAddr,
    port: u16,
    tags: Vec<String>,
    metadata: BTreeMap<String, String>,
    health: Health,
    session: Option<SessionId>,
}

/// The stored form of `instance` (revisions are the store's, not stored).
/// Strings, numbers and maps always serialize; an error would be a bug,
/// and is answered as one rather than written as an empty record.
pub fn encode(instance: &Instance) -> Result<Vec<u8>, postcard::Error> {
    let record = V1Ref {
        id: &instance.id,
        service: &instance.service,
        color: instance.color,
        node: &instance.node,
        address: instance.address,
        port: instance.port,
        tags: &instance.tags,
        metadata: &instance.metadata,
        health: instance.health,
        session: instance.session,
    };
    let mut bytes = vec![V1];
    bytes.extend(postcard::to_allocvec(&record)?);
    Ok(bytes)
}

/// Reads a stored instance, binary or JSON; says why it cannot.
pub fn decode(bytes: &[u8]) -> Result<Instance, String> {
    match bytes.split_first() {
        Some((&V1, rest)) => {
            let record: V1Owned = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            Ok(Instance {
                id: record.id,
                service: record.service,
                color: record.color,
                node: record.node,
                address: record.address,
                port: record.port,
                tags: record.tags,
                metadata: record.metadata,
                health: record.health,
                session: record.session,
                create_revision: 0,
                mod_revision: 0,
            })
        }
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Instance {
        Instance {
            id: "web-1".into(),
            service: "web".into(),
            color: Some(Color::Green),
            node: "node-a".into(),
            address: "10.0.0.7".parse().expect("ip"),
            port: 8080,
            tags: vec!["a".into(), "b".into()],
            metadata: BTreeMap::from([("image".into(), "web:2".into())]),
            health: Health::Critical,
            session: Some(42),
            create_revision: 0,
            mod_revision: 0,
        }
    }

    #[test]
    fn binary_records_round_trip_and_are_smaller_than_json() {
        let instance = sample();
        let bytes = encode(&instance).expect("encodes");
        assert_eq!(bytes[0], V1);
        assert_eq!(decode(&bytes), Ok(instance.clone()));
        let json = serde_json::to_vec(&instance).expect("json");
        assert!(
            bytes.len() * 2 < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
        let v6 = Instance {
            address: "::1".parse().expect("ip"),
            color: None,
            session: None,
            ..instance
        };
        assert_eq!(decode(&encode(&v6).expect("encodes")), Ok(v6));
    }

    #[test]
    fn json_records_still_decode_and_garbage_is_refused() {
        let instance = sample();
        let json = serde_json::to_vec(&instance).expect("json");
        assert_eq!(decode(&json), Ok(instance));
        assert!(decode(&[V1, 0xff]).is_err());
        assert!(decode(b"not a record").is_err());
    }

    #[test]
    fn a_benchmark_sized_record_is_about_70_bytes() {
        // switchyard-bench's etcd records are sized after this one.
        let instance = Instance {
            id: "w12-345".into(),
            service: "bench-w".into(),
            color: Some(Color::Blue),
            node: "bench-12".into(),
            address: "10.0.1.96".parse().expect("ip"),
            port: 8080,
            tags: vec!["bench".into()],
            metadata: BTreeMap::from([("image".into(), "bench:1".into())]),
            health: Health::Passing,
            session: Some(0x1234_5678_9abc_def0),
            create_revision: 0,
            mod_revision: 0,
        };
        let size = encode(&instance).expect("encodes").len();
        assert!((60..=80).contains(&size), "{size} bytes");
    }
}
