//! `cdctl deploy --wait-for-promotion`: a deploy that paused for promotion
//! stays here until someone asks to go on or to undo it (the dashboard's
//! promote and abort buttons write that request onto the paused record),
//! then carries it out in this process, which has the Docker engine and the
//! deploy's tests. A canary with manual promotion pauses after each step,
//! so this waits again until the deploy ends. If someone runs `cdctl
//! promote` or `cdctl abort` elsewhere instead, this follows the record
//! and ends with its outcome. What it runs on promote is its own settings'
//! (the post-test, the analysis), never what the record says.

use super::super::docker::Target;
use std::process::ExitCode;

use futures::StreamExt;
use switchyard_client::RegistryClient;
use switchyard_model::labels::record;
use switchyard_model::{Deployment, Outcome};

use super::super::Hooks;
use crate::args::Output;

/// What became of the paused deploy.
enum Next {
    Promote,
    Abort,
    /// It ended (or moved on) without this process.
    Elsewhere(Box<Deployment>),
}

/// Waits for requests on the paused deploy of `service` and carries them
/// out until the deploy ends; answers the exit code of the last one.
pub async fn carry_out_requests(
    client: &RegistryClient,
    output: Output,
    service: &str,
    hooks: Hooks,
    target: &Target,
) -> anyhow::Result<ExitCode> {
    loop {
        eprintln!(
            "cdctl: waiting for promote or abort of {service} (the dashboard's buttons, or \
             `cdctl promote {service}` / `cdctl abort {service}`); Ctrl-C leaves it paused"
        );
        let next = tokio::select! {
            next = next_request(client, service) => next?,
            () = switchyard_program::shutdown_signal() => {
                eprintln!("cdctl: stopped waiting; {service} stays paused");
                return Ok(ExitCode::SUCCESS);
            }
        };
        let code = match next {
            Next::Promote => {
                super::commands::promote(client, output, service, hooks.clone(), target).await?
            }
            Next::Abort => return super::commands::abort(client, output, service, target).await,
            Next::Elsewhere(deployment) if deployment.outcome == Outcome::Paused => continue,
            Next::Elsewhere(deployment) => {
                eprintln!(
                    "cdctl: deploy {} of {service} ended elsewhere: {}",
                    deployment.id, deployment.outcome
                );
                let ok = deployment.outcome == Outcome::Promoted;
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
        };
        // A promote that failed (another process holds the lock, say) left
        // the request on the record: answering it again would only fail
        // again, in a loop. Say so and stop; the deploy stays as it is.
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
        let latest = client.list_deployments(service, 1).await?;
        if !latest.iter().any(|d| d.outcome == Outcome::Paused) {
            return Ok(code);
        }
    }
}

/// The next request on the paused deploy, or its end elsewhere. The watch
/// opens before the record is read, so a request written in between is
/// seen by one or the other.
async fn next_request(client: &RegistryClient, service: &str) -> anyhow::Result<Next> {
    let changes = client.watch_deployments(service, 0).await?;
    let mut changes = std::pin::pin!(changes);
    // The first item only says where the stream starts.
    changes.next().await.transpose()?;
    let latest = client.list_deployments(service, 1).await?;
    let Some(mut paused) = latest.into_iter().next() else {
        anyhow::bail!("{service} has no deploy records: nothing is paused");
    };
    loop {
        if let Some(next) = decide(&paused) {
            return Ok(next);
        }
        let Some(item) = changes.next().await else {
            anyhow::bail!(
                "the registry closed the watch of {service}'s deploys: run `cdctl promote {service}` or `cdctl abort {service}` by hand"
            );
        };
        let (_, written) = item?;
        if let Some(newer) = written.into_iter().find(|d| d.id == paused.id) {
            paused = newer;
        }
    }
}

fn decide(deployment: &Deployment) -> Option<Next> {
    if deployment.outcome != Outcome::Paused {
        return Some(Next::Elsewhere(Box::new(deployment.clone())));
    }
    match deployment
        .metadata
        .get(record::REQUESTED)
        .map(String::as_str)
    {
        Some(record::PROMOTE) => Some(Next::Promote),
        Some(record::ABORT) => Some(Next::Abort),
        _ => None,
    }
}
