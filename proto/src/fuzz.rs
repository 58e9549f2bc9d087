//! Fuzzing of everything decoded from the wire or a backup file (proptest,
//! on stable Rust): arbitrary and mutated bytes decode to a message or an
//! error, and conversion to domain types answers a value or a
//! `ValidationError`, never a panic. `scripts/fuzz.sh` runs many more cases.

use proptest::prelude::*;
use prost::Message;
use switchyard_model::fuzzing::damaged;

use crate::backup::{BackupWriter, read_backup};
use crate::v1;

fn sample_instance() -> v1::Instance {
    v1::Instance {
        id: "web-1".into(),
        service: "web".into(),
        color: 1,
        node: "node-a".into(),
        address: "10.0.0.7".into(),
        port: 8080,
        tags: vec!["a".into()],
        metadata: [("image".to_string(), "web:1".to_string())].into(),
        health: 1,
        session_id: 7,
        create_revision: 1,
        mod_revision: 2,
    }
}

fn sample_watch() -> Vec<u8> {
    v1::WatchResponse {
        revision: 9,
        kind: Some(v1::watch_response::Kind::Changes(v1::Changes {
            changes: vec![v1::Change {
                kind: Some(v1::change::Kind::InstanceUpdated(sample_instance())),
            }],
        })),
    }
    .encode_to_vec()
}

fn backup_key() -> crate::backup::BackupKey {
    crate::backup::BackupKey::from_bytes(&[7; 32]).expect("a 32-byte key")
}

fn sample_backup() -> Vec<u8> {
    let mut writer = BackupWriter::new(Vec::new(), &backup_key()).expect("a Vec takes writes");
    let chunk = v1::SnapshotChunk {
        revision: 5,
        entries: vec![v1::StoredKey {
            key: b"v/s/web".to_vec(),
            value: b"{}".to_vec(),
            create_revision: 1,
            mod_revision: 2,
            version: 1,
        }],
        complete: true,
        taken_at_ms: 1,
    };
    writer.write_chunk(&chunk).expect("a Vec takes writes");
    writer.finish().expect("a Vec takes writes")
}

proptest! {
    #[test]
    fn fuzz_requests_decode_and_convert_without_panics(
        register in damaged(v1::RegisterRequest { instance: Some(sample_instance()), session_id: 1 }.encode_to_vec()),
        sync in damaged(v1::SyncNodeRequest { session_id: 1, node: "n".into(), instances: vec![sample_instance()] }.encode_to_vec()),
        record in damaged(v1::RecordDeploymentRequest { deployment: Some(v1::Deployment { id: "d".into(), service: "web".into(), ..Default::default() }) }.encode_to_vec()),
        report in damaged(v1::ReportProxyRequest { status: Some(v1::ProxyStatus { proxy_id: "p".into(), message: "ok".into(), ..Default::default() }) }.encode_to_vec()),
    ) {
        if let Ok(request) = v1::RegisterRequest::decode(register.as_slice())
            && let Some(instance) = request.instance
        {
            let _ = crate::instance_from_wire("instance.", instance);
        }
        if let Ok(request) = v1::SyncNodeRequest::decode(sync.as_slice()) {
            for instance in request.instances {
                let _ = crate::instance_from_wire("instances[0].", instance);
            }
        }
        if let Ok(request) = v1::RecordDeploymentRequest::decode(record.as_slice())
            && let Some(deployment) = request.deployment
            && let Ok(deployment) = crate::deployment_from_wire(deployment)
        {
            let _ = switchyard_model::validate::deployment(&deployment);
        }
        if let Ok(request) = v1::ReportProxyRequest::decode(report.as_slice())
            && let Some(status) = request.status
            && let Ok(status) = crate::proxy_from_wire(status)
        {
            prop_assert!(!status.message.chars().any(|c| c.is_control() && c != '\n'));
        }
    }

    #[test]
    fn fuzz_watch_messages_convert_without_panics(bytes in damaged(sample_watch())) {
        if let Ok(message) = v1::WatchResponse::decode(bytes.as_slice()) {
            let _ = crate::watch_event_from_wire(message);
        }
    }

    #[test]
    fn fuzz_damaged_backups_are_refused(bytes in damaged(sample_backup())) {
        let valid = sample_backup();
        // A file reads back only untouched: the magic and the MAC catch
        // random bytes and changes of a few bytes.
        match read_backup(&bytes, &crate::backup::Trust::Signed(backup_key())) {
            Ok(_) => prop_assert_eq!(bytes, valid),
            Err(_) => prop_assert_ne!(bytes, valid),
        }
    }
}
