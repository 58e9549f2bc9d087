//! How a deploy ends: commit and record on success, roll back (in reverse
//! order) and record on failure, release the lock.

use std::collections::HashSet;

use switchyard_model::{Outcome, color_name};

use super::super::report::millis;
use super::super::runtime::Unit;
use super::DEPLOY_LABEL;
use super::{Deploy, Failure, Forward, PAUSED_KEY, Paused, now_ms};
use crate::exit;

impl Deploy<'_> {
    /// Undoes every step done so far, in reverse order. Answers what could
    /// not be undone.
    pub(super) async fn roll_back(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        if self.settings.rolling.is_some() {
            self.undo_rollout(&mut left).await;
            return left;
        }
        self.undo_stop_old(&mut left).await;
        self.undo_flip(&mut left).await;
        self.undo_canary(&mut left).await;
        self.undo_start(&mut left).await;
        self.undo_clear_leftovers(&mut left).await;
        left
    }

    /// Undoes step 11: the old color runs and passes again.
    pub(super) async fn undo_stop_old(&mut self, left: &mut Vec<String>) {
        if self.stopped_old.is_empty() {
            return;
        }
        let old = std::mem::take(&mut self.stopped_old);
        for unit in &old {
            if let Err(error) = self.runtime.restart(unit).await {
                left.push(format!("old {} is stopped: {error:#}", unit.name));
            }
        }
        let runtime = self.runtime.clone();
        self.wait_or_leave(left, "old color passing again", |instances| {
            runtime.all_passing(&old, instances)
        })
        .await;
    }

    /// Waits (as long as instances may take to pass) until `done` holds in
    /// the registry; if it never does, notes what is left behind.
    pub(super) async fn wait_or_leave(
        &self,
        left: &mut Vec<String>,
        what: &str,
        done: impl Fn(&[switchyard_model::Instance]) -> bool,
    ) {
        let patience = self.settings.health_timeout;
        if let Err(failure) = self.wait_registry(what, patience, done).await {
            left.push(format!("not {what}: {}", failure.message()));
        }
    }

    /// Undoes step 8: the live color goes back, and traffic leaves the new
    /// color before it goes.
    async fn undo_flip(&mut self, left: &mut Vec<String>) {
        if !self.flipped {
            return;
        }
        let back = self
            .client
            .restore_active_color(
                &self.settings.service,
                self.active,
                Some(self.next),
                self.token(),
            )
            .await;
        match back {
            Ok(revision) => {
                self.flipped = false;
                if let Err(failure) = self.proxies_at(revision).await {
                    tracing::warn!("{}", failure.message());
                }
            }
            Err(error) => left.push(format!(
                "the live color is still {}: {} (set it with `cdctl set-color {} {} --expect {}`)",
                self.next,
                error.message(),
                self.settings.service,
                color_name(self.active),
                self.next
            )),
        }
    }

    /// Undoes step 4: what this deploy started goes, and leaves the
    /// registry.
    async fn undo_start(&mut self, left: &mut Vec<String>) {
        // Requests the new color took while it was live finish first.
        if let Err(failure) = self.drain(self.next).await {
            tracing::warn!("{}", failure.message());
        }
        let ours = match self.runtime.deployed_by(&self.record.id).await {
            Ok(ours) => ours,
            Err(error) => {
                left.push(format!(
                    "cannot list the new containers (label {DEPLOY_LABEL}={}): {error:#}",
                    self.record.id
                ));
                return;
            }
        };
        self.remove_new(left, &ours).await;
    }

    /// Removes the units this deploy started, and waits until the registry
    /// no longer lists them.
    pub(super) async fn remove_new(&mut self, left: &mut Vec<String>, ours: &[Unit]) {
        for unit in ours {
            if let Err(error) = self.runtime.discard_new(unit, &self.retired).await {
                left.push(format!("new {} remains: {error:#}", unit.name));
            }
        }
        let ids: HashSet<String> = ours.iter().map(|u| u.id.clone()).collect();
        let runtime = self.runtime.clone();
        self.wait_or_leave(left, "new instances deregistered", |instances| {
            !instances.iter().any(|i| runtime.owned_by(i, &ids))
        })
        .await;
    }

    /// Undoes step 3: the leftovers set aside are as they were, and those
    /// that ran are registered again.
    async fn undo_clear_leftovers(&mut self, left: &mut Vec<String>) {
        let retired = std::mem::take(&mut self.retired);
        for leftover in &retired {
            if let Err(error) = self.runtime.restore(leftover, &self.record.id).await {
                left.push(format!(
                    "leftover {} is not as it was: {error:#}",
                    leftover.name
                ));
            }
        }
        let restarted: HashSet<String> = retired
            .iter()
            .filter(|c| c.was_running)
            .map(|c| c.id.clone())
            .collect();
        if restarted.is_empty() {
            return;
        }
        let runtime = self.runtime.clone();
        self.wait_or_leave(left, "leftovers registered again", |instances| {
            restarted.iter().all(|id| {
                instances
                    .iter()
                    .any(|i| runtime.owned_by(i, &HashSet::from([id.clone()])))
            })
        })
        .await;
    }

    /// Removes what the success made obsolete: the old color (unless kept)
    /// and the leftovers set aside.
    pub(super) async fn commit(&mut self) {
        let keep = self.settings.keep_old;
        for unit in std::mem::take(&mut self.stopped_old) {
            if let Err(error) = self.runtime.remove_old(&unit, keep).await {
                tracing::warn!(unit = %unit.name, error = %format!("{error:#}"), "could not remove the old color");
            }
        }
        for leftover in std::mem::take(&mut self.retired) {
            if let Err(error) = self.runtime.remove_retired(&leftover).await {
                tracing::warn!(unit = %leftover.name, error = %format!("{error:#}"), "could not remove a leftover");
            }
        }
    }

    pub(super) async fn release(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if let Some(lock) = self.lock.take()
            && let Err(error) = self
                .client
                .release_lock(&self.settings.service, lock.token)
                .await
        {
            tracing::warn!(%error, "could not release the deploy lock; it expires with its TTL");
        }
    }

    pub(super) async fn write_record(&mut self, outcome: Outcome, failure: Option<(&str, String)>) {
        if let Some(progress) = self.progress.take() {
            progress.stop(&mut self.reporter).await;
        }
        self.record.outcome = outcome;
        self.record.ended_at_ms = if outcome == Outcome::Paused {
            0
        } else {
            now_ms()
        };
        self.record.steps.append(&mut self.reporter.steps);
        if let Some((step, error)) = failure {
            self.record.failed_step = step.to_string();
            self.record.error = error;
        }
        if let Err(error) = self.client.record_deployment(&self.record).await {
            tracing::warn!(%error, "could not record the deployment");
        }
    }

    /// Ends the deploy from what its steps answered: commit and record,
    /// pause, or roll back and record. Answers the exit code.
    pub(super) async fn finish(&mut self, result: Result<Forward, Failure>) -> u8 {
        match result {
            Ok(Forward::Promoted) => {
                self.reporter.begin("record");
                self.commit().await;
                self.write_record(Outcome::Promoted, None).await;
                self.release().await;
                self.reporter.end("promoted");
                self.reporter.summary(&self.record, 0);
                0
            }
            Ok(Forward::Paused) => self.pause().await,
            Err(Failure::Busy(message)) => {
                // Another deploy holds the lock or is paused: nothing was
                // done, so change nothing and record nothing.
                self.release().await;
                self.reporter.fail(&message);
                self.record.outcome = Outcome::Failed;
                self.record.failed_step = "lock".into();
                self.record.error = message;
                self.reporter.summary(&self.record, exit::LOCK_HELD);
                exit::LOCK_HELD
            }
            Err(failure) => self.fail(failure).await,
        }
    }

    /// Step 7 with `--manual-promotion`: records what `promote` and `abort`
    /// need to carry on, and lets go of the lock.
    async fn pause(&mut self) -> u8 {
        self.reporter.begin("pause for promotion");
        // The record carries no command or URL (see `Paused`).
        let canary = self.settings.canary.clone().map(|mut canary| {
            canary.analysis = None;
            canary.prometheus = None;
            canary
        });
        let analysed = self
            .settings
            .canary
            .as_ref()
            .is_some_and(|canary| canary.analyses());
        let paused = Paused {
            replicas: self.settings.replicas,
            health_timeout_ms: millis(self.settings.health_timeout),
            post_tested: self.settings.post_test.is_some(),
            analysed,
            lock_ttl_ms: millis(self.settings.lock_ttl),
            keep_old: self.settings.keep_old,
            stop_old_after_ms: self.settings.stop_old_after.map(millis),
            stop_timeout_ms: millis(self.settings.stop_timeout),
            proxy_timeout_ms: millis(self.settings.proxy_timeout),
            proxy_stale_ms: millis(self.settings.proxy_stale),
            drain_timeout_ms: millis(self.settings.drain_timeout),
            retired: self.retired.clone(),
            runtime: self.runtime.kind(),
            canary,
            canary_weight: self.canary_weight,
        };
        // Plain fields always serialize; were it ever to fail, the record
        // says so instead of carrying an empty value.
        let paused =
            serde_json::to_string(&paused).unwrap_or_else(|error| format!("unrecordable: {error}"));
        self.record.metadata.insert(PAUSED_KEY.into(), paused);
        self.write_record(Outcome::Paused, None).await;
        self.release().await;
        self.reporter.end("");
        let service = &self.settings.service;
        let at = match self.canary_weight {
            0 => format!(
                "{} is running beside {} and passed its pre-test",
                self.next,
                color_name(self.active)
            ),
            weight => format!("{service} sends {weight}% of its requests to {}", self.next),
        };
        self.reporter.say(&format!(
            "{at}. Go on with `cdctl promote {service}` or undo with `cdctl abort {service}` \
             (from any machine)."
        ));
        self.reporter.summary(&self.record, 0);
        0
    }

    /// A step failed: roll back, record what happened, answer its code.
    async fn fail(&mut self, failure: Failure) -> u8 {
        let step = self.reporter.current_step().unwrap_or("deploy").to_string();
        let message = failure.message();
        self.reporter.fail(&message);
        // A canary step counts: the new color took requests.
        let was_live = self.flipped || self.canary_weight > 0 || self.rolled;
        self.reporter.begin("roll back");
        let left = self.roll_back().await;
        // Rolled back: it was live (or took a canary's share) and is not
        // any more. Failed: it never went live, or the rollback is
        // incomplete.
        let outcome = if was_live && left.is_empty() {
            Outcome::RolledBack
        } else {
            Outcome::Failed
        };
        let code = if left.is_empty() {
            self.reporter.end("everything as before");
            failure.exit_code()
        } else {
            self.reporter.fail("INCOMPLETE");
            for item in &left {
                self.reporter.say(&format!("left behind: {item}"));
            }
            exit::ROLLBACK_FAILED
        };
        let error = if left.is_empty() {
            message
        } else {
            format!("{message}; rollback incomplete: {}", left.join("; "))
        };
        self.write_record(outcome, Some((&step, error))).await;
        self.release().await;
        self.reporter.summary(&self.record, code);
        code
    }
}
