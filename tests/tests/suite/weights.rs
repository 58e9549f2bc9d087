//! Canary weights in the registry: a compare-and-swap fenced by the deploy
//! lock like the live color, kept with its revision, ended by a flip, sent
//! on the watch stream and shown by `cdctl`.

use futures::StreamExt;
use switchyard_client::{ClientError, RegistryClient};
use switchyard_model::watch::{Change, WatchEvent};
use switchyard_model::{Color, Service};
use switchyard_tests::process::{cdctl_async, explain};
use switchyard_tests::{TestRegistry, instance};

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> tonic::Code {
    result.expect_err("refused").code().expect("a gRPC status")
}

async fn web(client: &RegistryClient) -> Service {
    client.get_service("web").await.expect("web").1
}

async fn canary_weights_are_fenced_compare_and_swaps_that_a_flip_ends() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    for (id, port, color) in [("b1", 8001, Color::Blue), ("g1", 8002, Color::Green)] {
        client
            .register(&instance("web", id, port, Some(color)), None)
            .await
            .expect("register");
    }
    // No canary without a live color.
    assert_eq!(
        code_of(
            client
                .set_canary_weight("web", (10, false), 0, None, 0)
                .await
        ),
        tonic::Code::FailedPrecondition
    );
    let flipped = client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    let mut events = client.watch(&["web".into()], flipped).await.expect("watch");
    let ten = client
        .set_canary_weight("web", (10, false), 0, Some(Color::Blue), 0)
        .await
        .expect("10% to green");
    let service = web(&client).await;
    assert_eq!(service.canary_weight, 10);
    assert_eq!(service.canary_color(), Some(Color::Green));
    assert_eq!(
        (
            service.weight_of(Some(Color::Blue)),
            service.weight_of(Some(Color::Green))
        ),
        (90, 10)
    );
    assert_eq!(
        (service.color_revision, service.weights_revision),
        (flipped, ten),
        "a canary step is not a flip"
    );
    // Watchers see the step.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            if let Ok(WatchEvent::Changes { changes, .. }) = event {
                for change in changes {
                    if let Change::ServiceUpdated(updated) = change {
                        return Some(updated.canary_weight);
                    }
                }
            }
        }
        None
    })
    .await
    .expect("the step on the watch stream");
    assert_eq!(seen, Some(10));

    // Stale expectations and out-of-range weights are refused.
    assert_eq!(
        code_of(
            client
                .set_canary_weight("web", (50, false), 0, Some(Color::Blue), 0)
                .await
        ),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(
        code_of(
            client
                .set_canary_weight("web", (50, false), 10, Some(Color::Green), 0)
                .await
        ),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(
        code_of(
            client
                .set_canary_weight("web", (100, false), 10, Some(Color::Blue), 0)
                .await
        ),
        tonic::Code::InvalidArgument
    );
    // The same weight again changes nothing.
    let again = client
        .set_canary_weight("web", (10, false), 10, Some(Color::Blue), 0)
        .await
        .expect("idempotent");
    assert_eq!(web(&client).await.weights_revision, ten);
    assert!(again >= ten);

    // Fenced by the deploy lock: nobody else moves the weight meanwhile.
    let grant = client.acquire_lock("web", "ci", 10).await.expect("lock");
    assert_eq!(
        code_of(
            client
                .set_canary_weight("web", (50, false), 10, Some(Color::Blue), 0)
                .await
        ),
        tonic::Code::Aborted
    );
    client
        .set_canary_weight("web", (50, true), 10, Some(Color::Blue), grant.token)
        .await
        .expect("the holder moves it");
    assert_eq!(web(&client).await.canary_weight, 50);

    // The last step is the flip: green takes everything, the canary ends.
    let flip = client
        .set_active_color("web", Some(Color::Green), Some(Color::Blue), grant.token)
        .await
        .expect("flip to green");
    let service = web(&client).await;
    assert_eq!(service.canary_weight, 0);
    assert!(!service.canary_sticky, "a flip ends a sticky canary too");
    assert_eq!(
        (
            service.weight_of(Some(Color::Blue)),
            service.weight_of(Some(Color::Green))
        ),
        (0, 100)
    );
    assert_eq!(
        (service.color_revision, service.weights_revision),
        (flip, flip)
    );
    client
        .release_lock("web", grant.token)
        .await
        .expect("release");

    // A weight outlives a restart of the registry.
    client
        .set_canary_weight("web", (25, false), 0, Some(Color::Green), 0)
        .await
        .expect("25% to blue");
    let mut registry = registry;
    registry.restart().await;
    let service = web(&registry.client()).await;
    assert_eq!((service.canary_weight, service.color_revision), (25, flip));
}

on_both_backends!(canary_weights_are_fenced_compare_and_swaps_that_a_flip_ends);

/// `cdctl set-weight` moves the weight; `cdctl color` and `cdctl status`
/// show it, in tables and in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdctl_sets_and_shows_canary_weights() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(&instance("web", "b1", 8001, Some(Color::Blue)), None)
        .await
        .expect("register");
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    let url = registry.url();
    let set = cdctl_async(
        &url,
        &[
            "set-weight",
            "web",
            "20",
            "--expect",
            "0",
            "--expect-color",
            "blue",
            "--sticky",
        ],
        &[],
    )
    .await;
    assert_eq!(set.status.code(), Some(0), "{}", explain(&set));
    let said = String::from_utf8_lossy(&set.stdout);
    assert!(said.contains("20% to green and 80% to blue"), "{said}");
    let stale = cdctl_async(
        &url,
        &[
            "set-weight",
            "web",
            "30",
            "--expect",
            "0",
            "--expect-color",
            "blue",
        ],
        &[],
    )
    .await;
    assert_ne!(stale.status.code(), Some(0), "{}", explain(&stale));
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("not 0% as expected"),
        "{}",
        explain(&stale)
    );

    let color = cdctl_async(&url, &["-o", "json", "color", "web"], &[]).await;
    let color: serde_json::Value = serde_json::from_slice(&color.stdout).expect("json");
    assert_eq!(
        color["weights"],
        serde_json::json!({"blue": 80, "green": 20})
    );
    let table = cdctl_async(&url, &["color", "web"], &[]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("blue, canary green 20%"), "{table}");
    let status = cdctl_async(&url, &["-o", "json", "status", "web"], &[]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(status["canary_weight"], 20);
    assert_eq!(status["canary_sticky"], true);
    assert_eq!(status["weights"]["green"], 20);
    // A service nobody registered still has a color to show: none.
    let ghost = cdctl_async(&url, &["color", "ghost"], &[]).await;
    assert_eq!(ghost.status.code(), Some(0), "{}", explain(&ghost));
    assert!(String::from_utf8_lossy(&ghost.stdout).contains("none  (next deploy: blue)"));
}
