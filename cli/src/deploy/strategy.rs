//! How a deploy moves traffic: all at once (blue-green, the default) or a
//! canary that sends a growing share to the new color, baking (and
//! analysing) at each step before the last step, the flip.

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
