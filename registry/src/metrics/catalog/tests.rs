//! The catalog figures: labels, the cardinality cap, deploys and proxies.

use super::*;
use prometheus_client::registry::Registry;

fn service(name: &str, live: Option<Color>, instances: &[(&str, Color, Health)]) -> Service {
    let mut service = Service::new(name.to_string());
    service.active_color = live;
    for (id, color, health) in instances {
        service.instances.push(Instance {
            id: id.to_string(),
            service: name.to_string(),
            color: Some(*color),
            node: "n1".into(),
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 80,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            health: *health,
            session: None,
            create_revision: 1,
            mod_revision: 1,
        });
    }
    service
}

fn render(figures: CatalogFigures, max_services: usize) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(CatalogCollector {
        figures: Arc::new(Mutex::new(figures)),
        max_services,
    }));
    switchyard_program::metrics::render(&registry)
}

#[test]
fn instances_and_live_colors_follow_the_watch() {
    let mut figures = CatalogFigures::default();
    figures.apply(&WatchEvent::Snapshot {
        revision: 7,
        services: vec![service(
            "web",
            Some(Color::Blue),
            &[
                ("a", Color::Blue, Health::Passing),
                ("b", Color::Green, Health::Critical),
            ],
        )],
        complete: true,
    });
    let mut flipped = Service::new("web");
    flipped.active_color = Some(Color::Green);
    figures.apply(&WatchEvent::Changes {
        revision: 9,
        changes: vec![
            Change::ServiceUpdated(flipped),
            Change::InstanceRemoved {
                service: "web".into(),
                id: "a".into(),
            },
        ],
    });
    let text = render(figures, 1000);
    assert!(
        text.contains("switchyard_live_color{service=\"web\",color=\"green\"} 1"),
        "{text}"
    );
    assert!(!text.contains("color=\"blue\""), "{text}");
    assert!(
        text.contains(
            "switchyard_instances{service=\"web\",color=\"green\",health=\"critical\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("switchyard_revision 9"), "{text}");
}

#[test]
fn services_past_the_cap_are_summed_as_other() {
    let mut figures = CatalogFigures::default();
    let services = ["a", "b", "c"]
        .iter()
        .map(|name| {
            service(
                name,
                Some(Color::Blue),
                &[("x", Color::Blue, Health::Passing)],
            )
        })
        .map(|mut s| {
            s.instances[0].id = format!("{}-x", s.name);
            s
        })
        .collect();
    figures.apply(&WatchEvent::Snapshot {
        revision: 3,
        services,
        complete: true,
    });
    let record = Deployment {
        service: "c".into(),
        outcome: Outcome::Promoted,
        ..Deployment::default()
    };
    figures.load_deploys(&[(b"x/dp/c/1".to_vec(), record)]);
    let text = render(figures, 1);
    assert!(
        text.contains("switchyard_instances{service=\"a\",color=\"blue\",health=\"passing\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "switchyard_instances{service=\"_other\",color=\"blue\",health=\"passing\"} 2"
        ),
        "{text}"
    );
    assert!(!text.contains("service=\"b\""), "{text}");
    assert!(
        text.contains("switchyard_deploys_total{service=\"_other\",outcome=\"promoted\"} 1"),
        "{text}"
    );
}

#[test]
fn deploys_follow_each_write_and_drop_of_a_record() {
    let mut figures = CatalogFigures::default();
    figures.apply(&WatchEvent::Snapshot {
        revision: 1,
        services: vec![service("web", None, &[])],
        complete: true,
    });
    let record = |id: &str, outcome, ended_at_ms| Deployment {
        id: id.into(),
        service: "web".into(),
        outcome,
        started_at_ms: 1_000,
        ended_at_ms,
        ..Deployment::default()
    };
    let key = |id: &str| format!("x/dp/web/{id}").into_bytes();
    figures.load_deploys(&[(key("a"), record("a", Outcome::Promoted, 3_000))]);
    figures.apply_deploys(vec![(key("b"), Some(record("b", Outcome::InProgress, 0)))]);
    figures.apply_deploys(vec![(
        key("b"),
        Some(record("b", Outcome::RolledBack, 1_500)),
    )]);
    let text = render(figures, 1000);
    for line in [
        "switchyard_deploys_total{service=\"web\",outcome=\"promoted\"} 1",
        "switchyard_deploys_total{service=\"web\",outcome=\"rolled_back\"} 1",
        "switchyard_deploy_duration_seconds_total{service=\"web\"} 2.5",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(!text.contains("in_progress"), "{text}");

    let mut figures = CatalogFigures::default();
    figures.load_deploys(&[(key("a"), record("a", Outcome::Promoted, 3_000))]);
    figures.apply_deploys(vec![(key("a"), None)]);
    assert!(!render(figures, 1000).contains("outcome="));
}

#[test]
fn proxies_lag_behind_the_last_change_and_go_stale() {
    let mut figures = CatalogFigures::default();
    figures.apply(&WatchEvent::Changes {
        revision: 20,
        changes: vec![],
    });
    let proxy = |id: &str, applied, reported_at_ms| switchyard_model::ProxyStatus {
        proxy_id: id.into(),
        applied_revision: applied,
        reported_at_ms,
        healthy: true,
        ..Default::default()
    };
    figures.set_stats(CatalogStats {
        proxies: vec![proxy("edge-1", 20, 100_000), proxy("edge-2", 15, 10_000)],
        now_ms: 100_000,
        ..CatalogStats::default()
    });
    let text = render(figures, 1000);
    assert!(
        text.contains("switchyard_proxy_revision_lag{proxy=\"edge-1\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_proxy_revision_lag{proxy=\"edge-2\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_proxies{state=\"stale\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_proxies{state=\"healthy\"} 1"),
        "{text}"
    );
}
