//! The live color over time, as the bars of a chart: each flip (a promoted
//! deploy or a rollback) starts a bar of its color that lasts until the
//! next one, or until now.

use serde::Serialize;
use switchyard_model::labels::record;
use switchyard_model::{Color, Deployment, Outcome, color_name};

/// The chart's width in SVG units.
const WIDTH: f64 = 600.0;

/// One bar: where it starts and how wide it is, its color, and what a
/// pointer over it says.
#[derive(Debug, Serialize, PartialEq)]
pub struct Segment {
    pub x: String,
    pub width: String,
    pub color: &'static str,
    pub title: String,
}

/// The bars for `records` (any order), from the first flip until `now_ms`.
pub fn segments(records: &[Deployment], now_ms: u64) -> Vec<Segment> {
    let mut flips: Vec<(u64, Option<Color>, &str)> = records
        .iter()
        .filter(|r| r.ended_at_ms > 0 && r.to_color.is_some() && is_flip(r))
        .map(|r| (r.ended_at_ms, r.to_color, r.id.as_str()))
        .collect();
    flips.sort_by_key(|(at, _, _)| *at);
    let Some(&(start, _, _)) = flips.first() else {
        return Vec::new();
    };
    let span = now_ms.saturating_sub(start).max(1) as f64;
    let at = |ms: u64| ms.saturating_sub(start) as f64 / span * WIDTH;
    flips
        .iter()
        .enumerate()
        .map(|(index, &(from, color, id))| {
            let until = flips.get(index + 1).map_or(now_ms, |next| next.0);
            Segment {
                x: format!("{:.1}", at(from)),
                width: format!("{:.1}", (at(until) - at(from)).max(1.0)),
                color: color_name(color),
                title: format!(
                    "{} live from {} ({id})",
                    color_name(color),
                    super::pages::utc(from)
                ),
            }
        })
        .collect()
}

/// Whether the record changed the live color: a promoted deploy or a
/// rollback.
fn is_flip(record: &Deployment) -> bool {
    record.outcome == Outcome::Promoted
        || record.metadata.get(record::KIND).map(String::as_str) == Some(record::ROLLBACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flip(id: &str, at: u64, color: Color, outcome: Outcome) -> Deployment {
        Deployment {
            id: id.into(),
            service: "web".into(),
            to_color: Some(color),
            started_at_ms: at - 10,
            ended_at_ms: at,
            outcome,
            ..Deployment::default()
        }
    }

    #[test]
    fn each_flip_lasts_until_the_next() {
        let mut rollback = flip("c", 1_750, Color::Blue, Outcome::RolledBack);
        rollback
            .metadata
            .insert(record::KIND.into(), record::ROLLBACK.into());
        let records = vec![
            flip("b", 1_500, Color::Green, Outcome::Promoted),
            flip("a", 1_000, Color::Blue, Outcome::Promoted),
            flip("x", 1_600, Color::Blue, Outcome::Failed),
            rollback,
        ];
        let bars = segments(&records, 2_000);
        let shape: Vec<(&str, &str, &str)> = bars
            .iter()
            .map(|s| (s.x.as_str(), s.width.as_str(), s.color))
            .collect();
        assert_eq!(
            shape,
            [
                ("0.0", "300.0", "blue"),
                ("300.0", "150.0", "green"),
                ("450.0", "150.0", "blue")
            ]
        );
        assert!(segments(&[], 2_000).is_empty());
    }
}
