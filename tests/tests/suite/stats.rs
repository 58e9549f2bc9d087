//! `cdctl stats`: the delivery figures from a history the test writes
//! (promoted, failed and rolled-back deploys, a `cdctl rollback`), exact.

use switchyard_model::labels::record;
use switchyard_model::{Color, Deployment, Outcome};
use switchyard_tests::process::{cdctl_async, explain};
use switchyard_tests::{TestRegistry, instance};

const MINUTE: u64 = 60_000;

fn deploy(service: &str, at: u64, minutes: u64, outcome: Outcome) -> Deployment {
    Deployment {
        id: format!("{service}-{at}"),
        service: service.into(),
        image: format!("{service}:{at}"),
        started_at_ms: at,
        ended_at_ms: at + minutes * MINUTE,
        outcome,
        ..Deployment::default()
    }
}

async fn stats(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json", "stats"];
    all.extend_from_slice(args);
    let out = cdctl_async(url, &all, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdctl_stats_gives_the_delivery_figures_of_a_known_history() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    for service in ["web", "api"] {
        client
            .register(&instance(service, service, 8000, Some(Color::Blue)), None)
            .await
            .expect("register");
    }
    // An hour ago onwards: web is built at -60 min and promoted at -50,
    // promoted again at -40 and rolled back by hand (2 min) at -30, then a
    // deploy fails at -20 (ends -15) and the next promotes at -10 (ends
    // -5): restored in 10 min. api: one rolled-back deploy and nothing
    // after it. Two days ago: a promotion outside a one-day window.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let at = |minutes_ago: u64| now - minutes_ago * MINUTE;
    let mut built = deploy("web", at(55), 5, Outcome::Promoted);
    built
        .metadata
        .insert(record::IMAGE_CREATED_MS.into(), at(60).to_string());
    let mut rollback = deploy("web", at(30), 2, Outcome::RolledBack);
    rollback
        .metadata
        .insert(record::KIND.into(), record::ROLLBACK.into());
    let history = [
        deploy("web", at(2 * 24 * 60), 5, Outcome::Promoted),
        built,
        deploy("web", at(40), 5, Outcome::Promoted),
        rollback,
        deploy("web", at(20), 5, Outcome::Failed),
        deploy("web", at(10), 5, Outcome::Promoted),
        deploy("api", at(25), 3, Outcome::RolledBack),
    ];
    for record in &history {
        client.record_deployment(record).await.expect("record");
    }

    let day = stats(&registry.url(), &["--since", "1d"]).await;
    let web = &day["services"]["web"];
    assert_eq!(web["deploys"], 4, "{day}");
    assert_eq!(
        (&web["promoted"], &web["failed"], &web["rollbacks"]),
        (&3.into(), &1.into(), &1.into()),
        "{day}"
    );
    assert_eq!(web["per_day"], 3.0, "{day}");
    assert_eq!(web["lead_time_ms"], 10 * MINUTE, "{day}");
    assert_eq!(web["change_failure_rate"], 0.5, "{day}");
    // Restores: the rollback's 2 min and the failure's 10 min.
    assert_eq!(web["time_to_restore_ms"], 6 * MINUTE, "{day}");
    let api = &day["services"]["api"];
    assert_eq!(
        (&api["deploys"], &api["rolled_back"]),
        (&1.into(), &1.into())
    );
    assert_eq!(api["change_failure_rate"], 1.0, "{day}");
    assert!(
        api["time_to_restore_ms"].is_null(),
        "not restored yet: {day}"
    );
    let total = &day["total"];
    assert_eq!(
        (&total["deploys"], &total["promoted"]),
        (&5.into(), &3.into())
    );
    assert_eq!(total["change_failure_rate"], 0.6, "{day}");

    // Three days hold the older promotion too; one service alone.
    let longer = stats(&registry.url(), &["web", "--since", "3d"]).await;
    assert_eq!(longer["services"]["web"]["promoted"], 4, "{longer}");
    assert!(longer["services"]["api"].is_null(), "{longer}");
    let table = cdctl_async(&registry.url(), &["stats"], &[]).await;
    let said = String::from_utf8_lossy(&table.stdout);
    assert!(
        said.contains("CHANGE FAILURE") && said.contains("(total)"),
        "{said}"
    );
}
