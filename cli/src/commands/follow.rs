//! `cdctl history --follow`: deployment records as JSON lines as they are
//! written, each with the revision it was written at. When the connection
//! breaks it resumes after the last revision seen (with capped backoff), so
//! a pipeline or a chat notifier sees every write once.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use switchyard_client::RegistryClient;

use crate::output::deployment_json;

pub async fn history(
    client: &RegistryClient,
    service: &str,
    since: u64,
) -> anyhow::Result<ExitCode> {
    let mut position = since;
    let mut backoff = Duration::from_millis(200);
    loop {
        let failure = match client.watch_deployments(service, position).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                let mut ended_with = None;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok((revision, deployments)) => {
                            backoff = Duration::from_millis(200);
                            position = revision;
                            for deployment in &deployments {
                                let mut line = deployment_json(deployment);
                                line["revision"] = revision.into();
                                println!("{line}");
                            }
                        }
                        Err(error) => {
                            ended_with = Some(error);
                            break;
                        }
                    }
                }
                ended_with
            }
            Err(error) => Some(error),
        };
        if let Some(error) = &failure
            && !error.is_resumable()
        {
            // Refused (a revision older than the retained history, no
            // permission): retrying would not help.
            return Err(failure.map_or_else(|| anyhow::anyhow!("history ended"), Into::into));
        }
        let reason = failure.map_or_else(|| "the stream ended".to_string(), |e| e.message());
        eprintln!(
            "cdctl history: {} did not answer ({reason}); retrying in {backoff:?} after \
             revision {position}",
            client.current_url()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
