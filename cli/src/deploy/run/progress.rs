//! The record of a deploy in progress, rewritten in the registry as each
//! step begins and ends, so a dashboard (or `cdctl history`) shows the step
//! a deploy is at and how long the earlier ones took.
//!
//! A background task writes; the steps come from the [`Reporter`] and the
//! record's fields from the deploy, each through a `watch` channel, so a
//! slow registry delays no step and only the newest state is written.
//! [`Progress::stop`] waits for the task before the deploy writes its final
//! record, so a late progress write can never overwrite the outcome.

use switchyard_client::RegistryClient;
use switchyard_model::labels::record::STEP;
use switchyard_model::{Deployment, Outcome, StepTiming};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::super::report::Reporter;

/// The step running now and the steps done, as the reporter sees them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps {
    pub current: Option<String>,
    pub done: Vec<StepTiming>,
}

/// The writer of a deploy's progress.
pub struct Progress {
    record: watch::Sender<Deployment>,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts writing `record` with the steps `reporter` reports from now on.
    pub fn start(client: &RegistryClient, record: Deployment, reporter: &mut Reporter) -> Self {
        let (steps, steps_seen) = watch::channel(Steps::default());
        reporter.progress = Some(steps);
        let (record, record_seen) = watch::channel(record);
        let task = tokio::spawn(write(client.clone(), record_seen, steps_seen));
        Progress { record, task }
    }

    /// The record's fields changed (colors, metadata).
    pub fn update(&self, record: &Deployment) {
        self.record.send_replace(record.clone());
    }

    /// Stops writing, once the last write in flight is done.
    pub async fn stop(self, reporter: &mut Reporter) {
        reporter.progress = None;
        drop(self.record);
        if let Err(error) = self.task.await {
            tracing::debug!(%error, "the progress writer ended early");
        }
    }
}

async fn write(
    client: RegistryClient,
    mut record: watch::Receiver<Deployment>,
    mut steps: watch::Receiver<Steps>,
) {
    loop {
        tokio::select! {
            changed = record.changed() => if changed.is_err() { return },
            changed = steps.changed() => if changed.is_err() { return },
        }
        let mut written = record.borrow_and_update().clone();
        let now = steps.borrow_and_update().clone();
        written.outcome = Outcome::InProgress;
        written.ended_at_ms = 0;
        written.steps.extend(now.done);
        match now.current {
            Some(step) => written.metadata.insert(STEP.into(), step),
            None => written.metadata.remove(STEP),
        };
        if let Err(error) = client.record_deployment(&written).await {
            tracing::debug!(%error, "could not record the deploy's progress");
        }
    }
}
