//! `cdctl history --follow`: deployment records as JSON lines as they are
//! written, each with the revision it was written at; resumes after the last
//! revision seen when the connection breaks (`resume.rs`), so a pipeline or
//! a chat notifier sees every write once.

use std::process::ExitCode;

use switchyard_client::RegistryClient;

use super::resume;
use crate::output::deployment_json;

pub async fn history(
    client: &RegistryClient,
    service: &str,
    since: u64,
) -> anyhow::Result<ExitCode> {
    let open = |position| client.watch_deployments(service, position);
    resume::follow(client, "history", since, open, |(revision, deployments)| {
        for deployment in &deployments {
            let mut line = deployment_json(deployment);
            line["revision"] = revision.into();
            println!("{line}");
        }
        revision
    })
    .await
}
