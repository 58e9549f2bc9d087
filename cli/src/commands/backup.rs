//! `cdctl snapshot save FILE`: a backup through the API, written so that a
//! crash never leaves a half-written FILE (a temporary file, synced, then
//! renamed over it).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use switchyard_client::RegistryClient;

use crate::args::Output;

pub async fn save(
    client: &RegistryClient,
    output: Output,
    file: &Path,
) -> anyhow::Result<ExitCode> {
    let backup = client.save_snapshot().await?;
    let temporary = file.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let mut out = std::fs::File::create(&temporary)?;
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
             --from {} --data-dir NEW_DIR`",
            backup.revision,
            backup.keys,
            backup.bytes.len(),
            file.display(),
            file.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
