//! From a service's color weights to per-server weights a proxy (or a DNS
//! SRV answer) takes.
//!
//! nginx and HAProxy spread requests by server weight, not by color, and
//! HAProxy takes weights from 0 to 256 only. A color's share is therefore
//! divided among its passing instances, and the heaviest server is scaled
//! to [`MAX_SERVER_WEIGHT`]: the shares come out within a fraction of a
//! percent of the colors' weights whatever the instance counts.

use std::collections::BTreeMap;

use crate::{Color, Instance, Service};

/// HAProxy's largest server weight (nginx takes any positive integer).
pub const MAX_SERVER_WEIGHT: u16 = 256;

/// One server a proxy routes to: the instance, its color's share of the
/// requests (percent) and its relative server weight (1–256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub instance: &'a Instance,
    pub share: u8,
    pub weight: u16,
}

/// The servers of `service` with a share above 0 and their weights. Without
/// a canary: the live color's passing instances, each at 256.
pub fn routes(service: &Service) -> Vec<Route<'_>> {
    let mut per_color: BTreeMap<Option<Color>, (u8, u32)> = BTreeMap::new();
    for (instance, share) in service.routes() {
        per_color.entry(instance.color).or_insert((share, 0)).1 += 1;
    }
    // Each instance's part of all requests, in percent, and the largest.
    let part = |color: Option<Color>| {
        per_color
            .get(&color)
            .map_or(0.0, |&(share, count)| f64::from(share) / f64::from(count))
    };
    let heaviest = per_color
        .keys()
        .map(|&color| part(color))
        .fold(0.0_f64, f64::max);
    service
        .routes()
        .map(|(instance, share)| {
            let scaled = part(instance.color) * f64::from(MAX_SERVER_WEIGHT) / heaviest;
            // In range by construction: 0 < part <= heaviest.
            let weight = scaled.round().clamp(1.0, f64::from(MAX_SERVER_WEIGHT)) as u16;
            Route {
                instance,
                share,
                weight,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;

    fn service(live: Color, canary_weight: u8, blue: usize, green: usize) -> Service {
        let mut service = Service::new("web");
        service.active_color = Some(live);
        service.canary_weight = canary_weight;
        let mut add = |color: Color, count: usize| {
            for n in 0..count {
                service.instances.push(Instance {
                    id: format!("{color}{n}"),
                    service: "web".into(),
                    color: Some(color),
                    node: "n1".into(),
                    address: "10.0.0.1".parse().expect("ip"),
                    port: 8000,
                    tags: vec![],
                    metadata: Default::default(),
                    health: Health::Passing,
                    session: None,
                    create_revision: 1,
                    mod_revision: 1,
                });
            }
        };
        add(Color::Blue, blue);
        add(Color::Green, green);
        service
    }

    /// The share of requests `color` gets from the server weights.
    fn measured(routes: &[Route<'_>], color: Color) -> f64 {
        let total: u32 = routes.iter().map(|r| u32::from(r.weight)).sum();
        let of: u32 = routes
            .iter()
            .filter(|r| r.instance.color == Some(color))
            .map(|r| u32::from(r.weight))
            .sum();
        100.0 * f64::from(of) / f64::from(total)
    }

    #[test]
    fn without_a_canary_only_the_live_color_is_routed_at_full_weight() {
        let web = service(Color::Blue, 0, 2, 3);
        let routes = routes(&web);
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|r| r.weight == 256 && r.share == 100));
        assert!(routes.iter().all(|r| r.instance.color == Some(Color::Blue)));
    }

    #[test]
    fn server_weights_give_each_color_its_share_whatever_the_counts() {
        for (canary, blue, green) in [(10, 2, 2), (1, 4, 1), (50, 1, 3), (99, 3, 1), (25, 5, 2)] {
            let web = service(Color::Blue, canary, blue, green);
            let routes = routes(&web);
            assert_eq!(routes.len(), blue + green);
            let green_share = measured(&routes, Color::Green);
            assert!(
                (green_share - f64::from(canary)).abs() < 0.5,
                "canary {canary}% over {blue} blue and {green} green: {green_share:.2}%"
            );
            assert!(routes.iter().all(|r| (1..=256).contains(&r.weight)));
        }
    }

    #[test]
    fn a_canary_color_without_passing_instances_leaves_the_live_color_everything() {
        let mut web = service(Color::Green, 30, 2, 1);
        for instance in &mut web.instances {
            if instance.color == Some(Color::Blue) {
                instance.health = Health::Critical;
            }
        }
        let routes = routes(&web);
        assert_eq!(routes.len(), 1);
        assert_eq!((routes[0].share, routes[0].weight), (70, 256));
    }
}
