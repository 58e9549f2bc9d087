//! `cdctl watch`: one JSON object per line, resuming from the last revision
//! seen when the connection breaks (with capped backoff), so a pipe reading
//! it sees no gap and no duplicate.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use switchyard_client::{ClientError, RegistryClient};
use switchyard_model::watch::WatchEvent;

use crate::args::WatchArgs;
use crate::output::watch_json;

pub async fn watch(client: &RegistryClient, args: WatchArgs) -> anyhow::Result<ExitCode> {
    let mut position = args.from_revision;
    let mut backoff = Duration::from_millis(200);
    loop {
        let failure = match client.watch(&args.services, position).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                let mut ended_with = None;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(event) => {
                            backoff = Duration::from_millis(200);
                            position = match &event {
                                WatchEvent::Snapshot { revision, .. }
                                | WatchEvent::Changes { revision, .. }
                                | WatchEvent::Progress { revision } => *revision,
                                WatchEvent::Reset { .. } => 0,
                            };
                            println!("{}", watch_json(&event));
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
            && !retryable(error)
        {
            return Err(failure.map_or_else(|| anyhow::anyhow!("watch ended"), Into::into));
        }
        // Said on stderr every time, so a person or a pipeline sees that the
        // watch is waiting for the registry rather than silently idle.
        let reason = failure.map_or_else(|| "the stream ended".to_string(), |e| e.message());
        eprintln!(
            "cdctl watch: {} did not answer ({reason}); retrying in {backoff:?} from revision \
             {position}",
            client.current_url()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A watch resumes from where it was.
fn retryable(error: &ClientError) -> bool {
    error.is_resumable()
}
