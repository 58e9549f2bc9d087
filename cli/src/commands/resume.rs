//! Following a registry stream that can be reopened from a revision
//! (`cdctl watch`, `cdctl history --follow`): when the connection breaks it
//! says so on stderr at every retry (so a person or a pipeline sees that it
//! is waiting for the registry rather than silently idle) and reopens from
//! the last revision seen, with capped backoff, so a pipe reading it sees no
//! gap and no duplicate. A refusal that retrying cannot fix ends it.

use std::process::ExitCode;
use std::time::Duration;

use futures::{Stream, StreamExt};
use switchyard_client::{ClientError, RegistryClient};

/// Opens the stream with `open(position)` and hands every item to `each`,
/// which prints it and answers the position to resume from.
pub async fn follow<T, S, Fut>(
    client: &RegistryClient,
    command: &str,
    mut position: u64,
    mut open: impl FnMut(u64) -> Fut,
    mut each: impl FnMut(T) -> u64,
) -> anyhow::Result<ExitCode>
where
    Fut: Future<Output = Result<S, ClientError>>,
    S: Stream<Item = Result<T, ClientError>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        let failure = match open(position).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                let mut ended_with = None;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(item) => {
                            backoff = Duration::from_millis(200);
                            position = each(item);
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
            return Err(failure.map_or_else(|| anyhow::anyhow!("{command} ended"), Into::into));
        }
        let reason = failure.map_or_else(|| "the stream ended".to_string(), |e| e.message());
        eprintln!(
            "cdctl {command}: {} did not answer ({reason}); retrying in {backoff:?} from \
             revision {position}",
            client.current_url()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
