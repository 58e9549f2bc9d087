//! Taking a backup through the API (`SaveSnapshot`) as the bytes of a
//! backup file, so that callers never see its protobuf parts.

pub use switchyard_proto::backup::BackupKey;
use switchyard_proto::backup::BackupWriter;
use switchyard_proto::v1;

use crate::{ClientError, RegistryClient};

/// A backup file's bytes, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedBackup {
    pub bytes: Vec<u8>,
    /// The registry revision it reflects.
    pub revision: u64,
    /// Stored keys in it.
    pub keys: usize,
}

impl RegistryClient {
    /// Takes a consistent backup of everything durable in the registry,
    /// signed with `key` (what `cd-registry restore` checks it with).
    pub async fn save_snapshot(&self, key: &BackupKey) -> Result<SavedBackup, ClientError> {
        let mut stream = self
            .call(|mut c| async move { c.save_snapshot(v1::SaveSnapshotRequest {}).await })
            .await?;
        let failed = |error: std::io::Error| ClientError::Backup(error.to_string());
        let mut writer = BackupWriter::new(Vec::new(), key).map_err(failed)?;
        let mut revision = None;
        let mut keys = 0;
        loop {
            let Some(part) = stream.message().await? else {
                return Err(ClientError::Backup(
                    "the registry ended the backup before its last part; take it again".into(),
                ));
            };
            if *revision.get_or_insert(part.revision) != part.revision {
                return Err(ClientError::Backup(
                    "the registry sent parts of two revisions".into(),
                ));
            }
            keys += part.entries.len();
            writer.write_chunk(&part).map_err(failed)?;
            if part.complete {
                break;
            }
        }
        Ok(SavedBackup {
            bytes: writer.finish().map_err(failed)?,
            revision: revision.unwrap_or_default(),
            keys,
        })
    }
}
