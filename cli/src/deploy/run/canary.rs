//! Step 8 of `--strategy canary`: before the flip, the new color takes a
//! growing share of requests, one weight at a time. Each step waits until
//! every reporting proxy applied it, then bakes: the analysis command runs
//! every `--analysis-interval` until `--bake` has passed. A failed analysis
//! fails the deploy, and the rollback puts every request back on the old
//! color before the new one is removed.

use std::time::Duration;

use switchyard_model::Color;
use tokio::time::Instant;

use super::{Deploy, Failure, Forward, failpoint};
use crate::deploy::prometheus::Placeholders;
use crate::deploy::strategy::Canary;

impl Deploy<'_> {
    /// The canary steps below 100 not taken yet; the flip (100) follows as
    /// in blue-green. With `--manual-promotion`, only the next step, then
    /// `Paused`. Nothing to share while no color is live: a first deploy
    /// flips.
    pub(super) async fn canary_steps(&mut self) -> Result<Forward, Failure> {
        let (Some(canary), Some(live)) = (self.settings.canary.clone(), self.active) else {
            return Ok(Forward::Promoted);
        };
        let weights = canary.steps.iter().copied().filter(|step| *step < 100);
        let taken = self.canary_weight;
        for (index, step) in (1..).zip(weights).filter(|(_, step)| *step > taken) {
            self.reporter.begin(&format!("canary {step}%"));
            let revision = self
                .client
                .set_canary_weight(
                    &self.settings.service,
                    (step, canary.sticky),
                    self.canary_weight,
                    Some(live),
                    self.token(),
                )
                .await?;
            self.canary_weight = step;
            failpoint("canary")?;
            let proxies = self.proxies_at(revision).await?;
            let checks = self.bake(&canary, live, (index, step)).await?;
            self.reporter.end(&format!(
                "{step}% to {} at revision {revision}; {proxies}; baked {:?} ({checks} analyses)",
                self.next, canary.bake
            ));
            if self.settings.manual_promotion {
                return Ok(Forward::Paused);
            }
        }
        Ok(Forward::Promoted)
    }

    /// Runs the analysis every interval until the bake time has passed;
    /// answers how many times it ran. `step` is the step's number (from 1)
    /// and weight.
    async fn bake(
        &mut self,
        canary: &Canary,
        live: Color,
        step: (u32, u8),
    ) -> Result<u32, Failure> {
        let until = Instant::now() + canary.bake;
        let mut checks = 0;
        loop {
            if let Some(command) = &canary.analysis {
                self.analyse(command, live, step).await?;
            }
            if let Some(check) = &canary.prometheus {
                let with = Placeholders {
                    service: &self.settings.service,
                    color: self.next.as_str(),
                    live_color: live.as_str(),
                    weight: step.1,
                };
                check.judge(&with).await.map_err(|why| {
                    Failure::Analysis(format!("analysis failed at {}%: {why}", step.1))
                })?;
            }
            checks += u32::from(canary.analyses());
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(checks);
            }
            let pause = match canary.analyses() {
                true => canary.analysis_interval.min(left),
                false => left,
            };
            tokio::time::sleep(pause.max(Duration::from_millis(1))).await;
        }
    }

    /// One run of the analysis command, with the canary in its environment.
    async fn analyse(&self, command: &str, live: Color, step: (u32, u8)) -> Result<(), Failure> {
        let (number, weight) = step;
        let status = self
            .hook(command, "analysis")
            .env("SWITCHYARD_LIVE_COLOR", live.as_str())
            .env("SWITCHYARD_WEIGHT", weight.to_string())
            .env("SWITCHYARD_STEP", number.to_string())
            .status()
            .await
            .map_err(|error| Failure::Analysis(format!("cannot run {command:?}: {error}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Failure::Analysis(format!(
                "analysis {command:?} failed at {weight}% ({status})"
            )))
        }
    }

    /// Undoes the canary steps: every request goes back to the live color
    /// (before the new color is removed).
    pub(super) async fn undo_canary(&mut self, left: &mut Vec<String>) {
        if self.canary_weight == 0 {
            return;
        }
        let back = self
            .client
            .set_canary_weight(
                &self.settings.service,
                (0, false),
                self.canary_weight,
                self.active,
                self.token(),
            )
            .await;
        match back {
            Ok(revision) => {
                self.canary_weight = 0;
                if let Err(failure) = self.proxies_at(revision).await {
                    tracing::warn!("{}", failure.message());
                }
            }
            Err(error) => left.push(format!(
                "the canary still sends {}% to {}: {} (end it with `cdctl set-weight {} 0 \
                 --expect {} --expect-color {}`)",
                self.canary_weight,
                self.next,
                error.message(),
                self.settings.service,
                self.canary_weight,
                switchyard_model::color_name(self.active)
            )),
        }
    }
}
