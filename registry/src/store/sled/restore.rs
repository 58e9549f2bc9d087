//! A data directory built from a backup: the backup's keys become the first
//! snapshot, at a revision the caller chooses (above every revision a client
//! of the old registry can have seen), with the history compacted through
//! it. So a watcher that resumes from its old position is reset and starts
//! over from a snapshot rather than silently following a different past.

use std::path::Path;

use super::{
    Disk, META_COMPACTED, META_COMPRESSED_FROM, META_REVISION, State, codec, snapshot, storage,
};
use crate::store::{KeyValue, StoreError};

/// Writes `entries` as the whole state of a new store at `revision` in
/// `path`, which must be empty or missing.
pub(in crate::store) fn restore(
    path: &Path,
    revision: u64,
    entries: Vec<KeyValue>,
) -> Result<(), StoreError> {
    if let Ok(mut existing) = std::fs::read_dir(path)
        && existing.next().is_some()
    {
        return Err(StoreError::Storage(format!(
            "{} is not empty: restore into a new directory, or move this one aside first",
            path.display()
        )));
    }
    if let Some(newer) = entries.iter().find(|kv| kv.mod_revision > revision) {
        return Err(StoreError::Storage(format!(
            "a key was changed at revision {}, after the restore's revision {revision}",
            newer.mod_revision
        )));
    }
    let db = sled::Config::new().path(path).open().map_err(storage)?;
    let tree = db.open_tree("switchyard").map_err(storage)?;
    let disk = Disk { db, tree };
    let mut state = State {
        revision,
        compacted: revision,
        compressed_from: revision.saturating_add(1),
        ..State::default()
    };
    for mut kv in entries {
        // Leases belong to the processes of the old registry's clients.
        kv.lease = None;
        state.kv.insert(kv);
    }
    snapshot::write_state(&disk, &state)?;
    let mut batch = sled::Batch::default();
    batch.insert(META_REVISION, codec::encode_u64(revision).to_vec());
    batch.insert(META_COMPACTED, codec::encode_u64(revision).to_vec());
    batch.insert(
        META_COMPRESSED_FROM,
        codec::encode_u64(state.compressed_from).to_vec(),
    );
    disk.tree.apply_batch(batch).map_err(storage)?;
    disk.db.flush().map_err(storage)?;
    Ok(())
}
