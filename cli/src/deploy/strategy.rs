//! How a deploy moves traffic: all at once (blue-green, the default), a
//! canary that sends a growing share to the new color, baking (and
//! analysing) at each step before the last step, the flip, or a rolling
//! replacement of the live color's instances a batch at a time.

use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::prometheus::PrometheusCheck;

/// `--strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every request moves to the new color at once.
    #[default]
    BlueGreen,
    /// The new color takes a growing share, step by step.
    Canary,
    /// New instances replace old ones within the live color, a batch at a
    /// time (for services that cannot run twice their capacity).
    Rolling,
}

/// A rolling deploy's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    /// New instances started per batch (and old ones stopped).
    pub batch: u32,
    /// Old instances of a batch stopped before its new ones start (the
    /// rest are stopped once the new ones pass): how far below its count
    /// the service may go. 0 starts every new instance first.
    pub max_unavailable: u32,
}

impl Rolling {
    /// The batches that replace `old` running instances by `new` ones:
    /// each batch's (old to stop, new to start).
    pub fn batches(&self, old: u32, new: u32) -> Vec<(u32, u32)> {
        let batch = self.batch.max(1);
        let count = old.max(new).div_ceil(batch);
        (0..count)
            .map(|k| {
                let done = k * batch;
                (
                    batch.min(old.saturating_sub(done)),
                    batch.min(new.saturating_sub(done)),
                )
            })
            .collect()
    }
}

/// A canary's steps and checks (kept in a paused deploy's record).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Canary {
    /// Shares (percent) of requests for the new color, rising, ending at
    /// 100: every step below 100 is a weight, 100 is the flip.
    pub steps: Vec<u8>,
    /// How long each step below 100 runs before the next.
    pub bake: Duration,
    /// A command run by `sh -c` during each bake; a failure reverts.
    pub analysis: Option<String>,
    /// A Prometheus query asked during each bake; a bad answer reverts.
    pub prometheus: Option<PrometheusCheck>,
    /// How often the analysis runs during a bake.
    pub analysis_interval: Duration,
    /// Each client keeps the color it was first sent to.
    #[serde(default)]
    pub sticky: bool,
}

impl Canary {
    /// Whether anything judges the bakes.
    pub fn analyses(&self) -> bool {
        self.analysis.is_some() || self.prometheus.is_some()
    }
}

/// The steps cdctl takes when none are given.
pub const DEFAULT_STEPS: [u8; 4] = [10, 25, 50, 100];

/// `5,25,50,100` into steps: each 1 to 100, rising, ending at 100.
pub fn parse_steps(text: &str) -> anyhow::Result<Vec<u8>> {
    let steps = text
        .split(',')
        .map(|step| {
            let step = step.trim().trim_end_matches('%');
            step.parse::<u8>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .with_context(|| format!("step {step:?} is not a percent from 1 to 100"))
        })
        .collect::<anyhow::Result<Vec<u8>>>()?;
    check_steps(&steps)?;
    Ok(steps)
}

/// Steps rise and end at 100 (the flip).
pub fn check_steps(steps: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        steps.windows(2).all(|pair| pair[0] < pair[1]),
        "canary steps must rise: {steps:?}"
    );
    anyhow::ensure!(
        steps.last() == Some(&100),
        "the last canary step must be 100 (the flip): {steps:?}"
    );
    anyhow::ensure!(
        steps.iter().all(|s| *s >= 1),
        "a canary step of 0 moves nothing"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_replace_every_old_instance_and_start_every_new_one() {
        let one = Rolling {
            batch: 1,
            max_unavailable: 0,
        };
        assert_eq!(one.batches(4, 4), [(1, 1); 4]);
        let two = Rolling {
            batch: 2,
            max_unavailable: 1,
        };
        assert_eq!(two.batches(3, 5), [(2, 2), (1, 2), (0, 1)]);
        assert_eq!(two.batches(4, 1), [(2, 1), (2, 0)]);
    }

    #[test]
    fn steps_rise_to_one_hundred() {
        assert_eq!(parse_steps("5,25,50,100").expect("valid"), [5, 25, 50, 100]);
        assert_eq!(parse_steps("10%, 100%").expect("valid"), [10, 100]);
        assert_eq!(parse_steps("100").expect("valid"), [100]);
        for bad in [
            "50,25,100",
            "10,50",
            "0,100",
            "10,101",
            "ten,100",
            "10,10,100",
        ] {
            assert!(parse_steps(bad).is_err(), "{bad}");
        }
    }
}
