//! Backups at the edge: the store's keys as `SnapshotChunk` parts for
//! `SaveSnapshot`, and a backup file's parts back into store keys for
//! `cd-registry restore`.

use switchyard_proto::backup::{Backup, BackupError, Trust, read_backup};
use switchyard_proto::v1;

use crate::store::KeyValue;

/// About how many bytes of keys and values one part carries.
const PART_BYTES: usize = 1024 * 1024;
pub use switchyard_model::clock::now_ms;

/// `entries` read at `revision`, cut into parts of about [`PART_BYTES`];
/// the last one (and only one, when there is nothing) is `complete`.
pub fn parts(revision: u64, taken_at_ms: u64, entries: Vec<KeyValue>) -> Vec<v1::SnapshotChunk> {
    let empty = || v1::SnapshotChunk {
        revision,
        entries: Vec::new(),
        complete: false,
        taken_at_ms,
    };
    let mut parts = vec![empty()];
    let mut bytes = 0;
    for kv in entries {
        if bytes >= PART_BYTES {
            parts.push(empty());
            bytes = 0;
        }
        bytes += kv.key.len() + kv.value.len();
        if let Some(part) = parts.last_mut() {
            part.entries.push(v1::StoredKey {
                key: kv.key,
                value: kv.value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
            });
        }
    }
    if let Some(last) = parts.last_mut() {
        last.complete = true;
    }
    parts
}

/// A backup file's revision, when it was taken, and its keys.
pub fn read_file(bytes: &[u8], trust: &Trust) -> Result<(u64, u64, Vec<KeyValue>), BackupError> {
    let Backup {
        revision,
        taken_at_ms,
        entries,
    } = read_backup(bytes, trust)?;
    let keys = entries
        .into_iter()
        .map(|entry| KeyValue {
            key: entry.key,
            value: entry.value,
            create_revision: entry.create_revision,
            mod_revision: entry.mod_revision,
            version: entry.version,
            lease: None,
        })
        .collect();
    Ok((revision, taken_at_ms, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::backup::BackupWriter;

    fn kv(n: usize, value_bytes: usize) -> KeyValue {
        KeyValue {
            key: format!("v/s/s{n:05}").into_bytes(),
            value: vec![b'x'; value_bytes],
            create_revision: n as u64 + 1,
            mod_revision: n as u64 + 2,
            version: 3,
            lease: None,
        }
    }

    #[test]
    fn parts_round_trip_through_a_file() {
        let entries: Vec<KeyValue> = (0..3_000).map(|n| kv(n, 1_000)).collect();
        let parts = parts(9_000, 5, entries.clone());
        assert!(parts.len() > 2, "about a megabyte each: {}", parts.len());
        assert_eq!(parts.iter().filter(|part| part.complete).count(), 1);
        let key = switchyard_proto::backup::BackupKey::from_bytes(&[1; 32]).expect("key");
        let mut writer = BackupWriter::new(Vec::new(), &key).expect("magic");
        for part in &parts {
            writer.write_chunk(part).expect("part");
        }
        let file = writer.finish().expect("signature");
        let read = read_file(&file, &Trust::Signed(key)).expect("reads");
        assert_eq!(read, (9_000, 5, entries));
    }

    #[test]
    fn an_empty_registry_is_one_complete_part() {
        let parts = parts(1, 5, Vec::new());
        assert_eq!(parts.len(), 1);
        assert!(parts[0].complete);
    }
}
