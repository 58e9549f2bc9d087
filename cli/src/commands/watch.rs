//! `cdctl watch`: one JSON object per line; resumes from the last revision
//! seen when the connection breaks (`resume.rs`), so a pipe reading it sees
//! no gap and no duplicate.

use std::process::ExitCode;

use switchyard_client::RegistryClient;
use switchyard_model::watch::WatchEvent;

use super::resume;
use crate::args::WatchArgs;
use crate::output::watch_json;

pub async fn watch(client: &RegistryClient, args: WatchArgs) -> anyhow::Result<ExitCode> {
    let open = |position| client.watch(&args.services, position);
    resume::follow(client, "watch", args.from_revision, open, |event| {
        println!("{}", watch_json(&event));
        match &event {
            WatchEvent::Snapshot { revision, .. }
            | WatchEvent::Changes { revision, .. }
            | WatchEvent::Progress { revision } => *revision,
            WatchEvent::Reset { .. } => 0,
        }
    })
    .await
}
