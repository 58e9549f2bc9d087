//! `cd-registry restore`: a backup file becomes a new data directory of the
//! embedded store. The restored registry starts at the backup's revision
//! plus `--bump-revision`, with no history before it, so every client of
//! the old registry that resumes a watch is reset and gets a fresh snapshot.
//! Only the embedded store is restored this way; an etcd cluster has its own
//! backups (`etcdctl snapshot`).

use std::fmt;

use anyhow::Context;

use switchyard_proto::backup::{BackupKey, Trust};

use crate::api::backup::read_file;
use crate::catalog::keys;
use crate::config::RestoreArgs;
use crate::store::sled::SledStore;

/// What a restore wrote, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    pub services: usize,
    pub keys: usize,
    pub backup_revision: u64,
    pub taken_at_ms: u64,
    pub revision: u64,
    pub data_dir: String,
}

impl fmt::Display for RestoreSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "restored {} services ({} keys) from the backup of revision {} into {}, now at \
             revision {}; start cd-registry with --data-dir {} (agents register their \
             instances again when they reconnect)",
            self.services,
            self.keys,
            self.backup_revision,
            self.data_dir,
            self.revision,
            self.data_dir
        )
    }
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<RestoreSummary> {
    let bytes = std::fs::read(&args.from)
        .with_context(|| format!("reading the backup {}", args.from.display()))?;
    let key = BackupKey::from_file(&args.backup_key)?;
    let trust = if args.allow_unsigned {
        Trust::SignedOrUnsigned(key)
    } else {
        Trust::Signed(key)
    };
    let (backup_revision, taken_at_ms, entries) = read_file(&bytes, &trust)
        .with_context(|| format!("reading the backup {}", args.from.display()))?;
    let revision = backup_revision
        .checked_add(args.bump_revision)
        .context("--bump-revision is too large for the backup's revision")?;
    let services = entries
        .iter()
        .filter(|kv| kv.key.starts_with(keys::SERVICES))
        .count();
    let count = entries.len();
    SledStore::restore(&args.data_dir, revision, entries)
        .with_context(|| format!("restoring into {}", args.data_dir.display()))?;
    tracing::info!(
        services,
        keys = count,
        backup_revision,
        revision,
        data_dir = %args.data_dir.display(),
        "restored"
    );
    Ok(RestoreSummary {
        services,
        keys: count,
        backup_revision,
        taken_at_ms,
        revision,
        data_dir: args.data_dir.display().to_string(),
    })
}
