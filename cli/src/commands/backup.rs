//! `cdctl snapshot save FILE`: a backup through the API, signed with the
//! operator's key, written so that a crash never leaves a half-written FILE
//! (a temporary file, synced, then renamed over it), readable by its owner
//! only (it holds token hashes and every deploy record).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context;
use serde_json::json;
use switchyard_client::RegistryClient;
use switchyard_client::backup::BackupKey;

use crate::args::Output;

pub async fn save(
    client: &RegistryClient,
    output: Output,
    file: &Path,
    key: &BackupKey,
) -> anyhow::Result<ExitCode> {
    let backup = client.save_snapshot(key).await?;
    let temporary = file.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&temporary);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(&backup.bytes)?;
        out.sync_all()?;
        std::fs::rename(&temporary, file)
    };
    write().with_context(|| {
        format!(
            "writing the backup to {} (is the folder there and writable?)",
            file.display()
        )
    })?;
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "file": file.display().to_string(),
                "revision": backup.revision,
                "keys": backup.keys,
                "bytes": backup.bytes.len(),
            })
        ),
        Output::Table => println!(
            "saved revision {} ({} keys, {} bytes) to {}; restore with `cd-registry restore \
             --from {} --backup-key KEY_FILE --data-dir NEW_DIR`",
            backup.revision,
            backup.keys,
            backup.bytes.len(),
            file.display(),
            file.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
