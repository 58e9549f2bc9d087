//! `cdctl stats`: the four delivery figures (DORA's) from the deployment
//! records, per service and in total.
//!
//! - **Deployment frequency**: promoted deploys per day of the window.
//! - **Lead time**: the image's build time (Docker's `Created`, kept in the
//!   record) to the deploy's promotion; the median.
//! - **Change failure rate**: deploys that failed, were rolled back, or
//!   were promoted and then undone by `cdctl rollback`, over all finished
//!   deploys.
//! - **Time to restore**: a failed or rolled-back deploy to the next
//!   promoted one; for a `cdctl rollback`, how long the rollback took; the
//!   median.
//!
//! Records in progress or paused are not counted; a window counts the
//! records started in it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use switchyard_client::RegistryClient;
use switchyard_model::labels::record;
use switchyard_model::{Deployment, Outcome};

use crate::args::Output;
use crate::output::print_table;

const DAY_MS: u64 = 86_400_000;

/// The figures of one service, or of all.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Finished deploys (promoted, failed or rolled back).
    pub deploys: u32,
    pub promoted: u32,
    pub failed: u32,
    pub rolled_back: u32,
    /// `cdctl rollback`s.
    pub rollbacks: u32,
    /// Promoted deploys per day.
    pub per_day: f64,
    /// Median image build → promotion, of deploys whose record has it.
    pub lead_time_ms: Option<u64>,
    /// Failed changes over deploys (0 to 1); none without a deploy.
    pub change_failure_rate: Option<f64>,
    /// Median time to restore.
    pub time_to_restore_ms: Option<u64>,
    #[serde(skip)]
    lead_times: Vec<u64>,
    #[serde(skip)]
    restores: Vec<u64>,
    #[serde(skip)]
    failed_changes: u32,
}

fn is_rollback(deployment: &Deployment) -> bool {
    deployment.metadata.get(record::KIND).map(String::as_str) == Some(record::ROLLBACK)
        || (deployment.outcome == Outcome::RolledBack
            && deployment.failed_step.is_empty()
            && deployment.error == record::ROLLBACK)
}

fn finished(deployment: &Deployment) -> bool {
    !matches!(deployment.outcome, Outcome::InProgress | Outcome::Paused)
}

impl Figures {
    /// The figures of one service's records (any order) started at or
    /// after `since_ms`, over a window of `days`.
    pub fn of_service(records: &[Deployment], since_ms: u64, days: f64) -> Self {
        let mut records: Vec<&Deployment> = records
            .iter()
            .filter(|d| d.started_at_ms >= since_ms && finished(d))
            .collect();
        records.sort_by_key(|d| (d.started_at_ms, d.ended_at_ms));
        let mut figures = Figures::default();
        for (index, deployment) in records.iter().enumerate() {
            let later = &records[index + 1..];
            if is_rollback(deployment) {
                figures.rollbacks += 1;
                let took = deployment
                    .ended_at_ms
                    .saturating_sub(deployment.started_at_ms);
                figures.restores.push(took);
                continue;
            }
            figures.deploys += 1;
            match deployment.outcome {
                Outcome::Promoted => {
                    figures.promoted += 1;
                    if let Some(created) = deployment
                        .metadata
                        .get(record::IMAGE_CREATED_MS)
                        .and_then(|ms| ms.parse::<u64>().ok())
                    {
                        figures
                            .lead_times
                            .push(deployment.ended_at_ms.saturating_sub(created));
                    }
                    // Undone by the very next record: a failed change.
                    if later.first().is_some_and(|next| is_rollback(next)) {
                        figures.failed_changes += 1;
                    }
                }
                Outcome::Failed | Outcome::RolledBack => {
                    if deployment.outcome == Outcome::Failed {
                        figures.failed += 1;
                    } else {
                        figures.rolled_back += 1;
                    }
                    figures.failed_changes += 1;
                    let next = later
                        .iter()
                        .find(|d| d.outcome == Outcome::Promoted && !is_rollback(d));
                    if let Some(next) = next {
                        let restored = next.ended_at_ms.saturating_sub(deployment.ended_at_ms);
                        figures.restores.push(restored);
                    }
                }
                Outcome::InProgress | Outcome::Paused => {}
            }
        }
        figures.settle(days);
        figures
    }

    /// Adds `other`'s counts and samples (for the total).
    fn add(&mut self, other: &Figures) {
        self.deploys += other.deploys;
        self.promoted += other.promoted;
        self.failed += other.failed;
        self.rolled_back += other.rolled_back;
        self.rollbacks += other.rollbacks;
        self.failed_changes += other.failed_changes;
        self.lead_times.extend(&other.lead_times);
        self.restores.extend(&other.restores);
    }

    /// The rates and medians from the counts and samples.
    fn settle(&mut self, days: f64) {
        self.per_day = f64::from(self.promoted) / days.max(f64::MIN_POSITIVE);
        self.change_failure_rate =
            (self.deploys > 0).then(|| f64::from(self.failed_changes) / f64::from(self.deploys));
        self.lead_time_ms = median(&mut self.lead_times);
        self.time_to_restore_ms = median(&mut self.restores);
    }
}

fn median(samples: &mut [u64]) -> Option<u64> {
    samples.sort_unstable();
    let middle = samples.len() / 2;
    match samples.len() {
        0 => None,
        n if n % 2 == 1 => Some(samples[middle]),
        _ => Some((samples[middle - 1] + samples[middle]) / 2),
    }
}

/// `cdctl stats [SERVICE] --since DURATION`.
pub async fn stats(
    client: &RegistryClient,
    output: Output,
    service: Option<&str>,
    since: Duration,
) -> anyhow::Result<ExitCode> {
    let now = crate::deploy::now_ms();
    let window = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
    let since_ms = now.saturating_sub(window);
    let days = window.min(now) as f64 / DAY_MS as f64;
    let services: Vec<String> = match service {
        Some(name) => vec![name.to_string()],
        None => client
            .list_services()
            .await?
            .1
            .into_iter()
            .map(|s| s.name)
            .collect(),
    };
    let mut per_service = BTreeMap::new();
    let mut total = Figures::default();
    for name in services {
        let records = client.list_deployments(&name, 0).await?;
        let figures = Figures::of_service(&records, since_ms, days);
        total.add(&figures);
        per_service.insert(name, figures);
    }
    total.settle(days);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "since_ms": since_ms,
                "days": days,
                "services": per_service,
                "total": total,
            })
        ),
        Output::Table => print_figures(&per_service, &total),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_figures(per_service: &BTreeMap<String, Figures>, total: &Figures) {
    let row = |name: &str, f: &Figures| {
        vec![
            name.to_string(),
            f.deploys.to_string(),
            format!("{}/{}/{}", f.promoted, f.failed, f.rolled_back),
            f.rollbacks.to_string(),
            format!("{:.2}", f.per_day),
            f.lead_time_ms.map_or("-".into(), human),
            f.change_failure_rate
                .map_or("-".into(), |rate| format!("{:.0}%", rate * 100.0)),
            f.time_to_restore_ms.map_or("-".into(), human),
        ]
    };
    let mut rows: Vec<Vec<String>> = per_service.iter().map(|(n, f)| row(n, f)).collect();
    rows.push(row("(total)", total));
    print_table(
        &[
            "SERVICE",
            "DEPLOYS",
            "PROMOTED/FAILED/ROLLED BACK",
            "ROLLBACKS",
            "PER DAY",
            "LEAD TIME",
            "CHANGE FAILURE",
            "TIME TO RESTORE",
        ],
        &rows,
    );
}

/// `95s`, `12m`, `3.5h`, `2.0d`.
fn human(ms: u64) -> String {
    let seconds = ms as f64 / 1000.0;
    match seconds {
        s if s < 120.0 => format!("{s:.0}s"),
        s if s < 7_200.0 => format!("{:.0}m", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        s => format!("{:.1}d", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(start_min: u64, minutes: u64, outcome: Outcome) -> Deployment {
        Deployment {
            id: format!("d{start_min}"),
            service: "web".into(),
            started_at_ms: start_min * 60_000,
            ended_at_ms: (start_min + minutes) * 60_000,
            outcome,
            ..Deployment::default()
        }
    }

    #[test]
    fn the_four_figures_come_from_the_records() {
        let mut built = record(0, 10, Outcome::Promoted);
        built
            .metadata
            .insert(record::IMAGE_CREATED_MS.into(), "0".into());
        let mut rollback = record(30, 1, Outcome::RolledBack);
        rollback
            .metadata
            .insert(record::KIND.into(), record::ROLLBACK.into());
        let records = [
            built,                              // lead time 10 min
            record(20, 5, Outcome::Promoted),   // undone by the rollback
            rollback,                           // restore 1 min
            record(40, 5, Outcome::Failed),     // restored at 70
            record(50, 5, Outcome::InProgress), // not counted
            record(60, 10, Outcome::Promoted),  // restores the failure: 25 min
        ];
        let figures = Figures::of_service(&records, 0, 2.0);
        assert_eq!(
            (
                figures.deploys,
                figures.promoted,
                figures.failed,
                figures.rollbacks
            ),
            (4, 3, 1, 1)
        );
        assert_eq!(figures.per_day, 1.5);
        assert_eq!(figures.lead_time_ms, Some(600_000));
        assert_eq!(figures.change_failure_rate, Some(0.5));
        // Restores: 1 min and 25 min.
        assert_eq!(figures.time_to_restore_ms, Some(780_000));
        let later = Figures::of_service(&records, 35 * 60_000, 1.0);
        assert_eq!((later.deploys, later.rollbacks), (2, 0));
    }
}
