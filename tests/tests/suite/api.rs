//! The registry's gRPC API against a registry on 127.0.0.1:0, through real
//! gRPC clients: sessions, SyncNode, colors and locks, records, health,
//! reflection (bad input: `api_bad_input.rs`).

use std::time::Duration;

use futures::StreamExt;
use switchyard_client::{ClientError, Code};
use switchyard_model::{Color, Deployment, Health, Outcome};
use switchyard_tests::{TestRegistry, eventually, instance};

pub(crate) fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    match result {
        Err(error) => error.code().unwrap_or(Code::Ok),
        Ok(value) => panic!("expected an error, got {value:?}"),
    }
}

async fn instance_ids(registry: &TestRegistry, service: &str) -> Vec<String> {
    match registry.client().get_service(service).await {
        Ok((_, service)) => service.instances.into_iter().map(|i| i.id).collect(),
        Err(error) if error.code() == Some(Code::NotFound) => Vec::new(),
        Err(error) => panic!("get_service failed: {error}"),
    }
}

async fn sessions_keep_instances_and_expiry_removes_them_in_one_revision() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let (session, ttl) = client.open_session("node-a", 1).await.expect("open");
    assert_eq!(ttl, 1);
    for n in 0..3 {
        let mut web = instance("web", &format!("c{n}"), 8000 + n, Some(Color::Blue));
        web.node = "node-a".into();
        client
            .register(&web, Some(session))
            .await
            .expect("register");
    }
    let (revision, _) = client.get_service("web").await.expect("get");

    // Kept alive over three TTLs, the instances stay.
    for _ in 0..15 {
        client.keep_alive(session).await.expect("keep-alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(instance_ids(&registry, "web").await.len(), 3);

    // Left alone, they expire: all three in one revision.
    let mut watch = Box::pin(
        client
            .watch(&["web".into()], revision)
            .await
            .expect("watch"),
    );
    let removed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.next().await {
                Some(Ok(switchyard_model::watch::WatchEvent::Changes { changes, .. })) => {
                    return changes;
                }
                Some(Ok(_)) => continue,
                other => panic!("watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the session expired within 10s");
    assert_eq!(removed.len(), 3, "one revision removes all: {removed:?}");
    assert!(instance_ids(&registry, "web").await.is_empty());
    assert_eq!(code_of(client.keep_alive(session).await), Code::NotFound);
}

async fn closing_a_session_deregisters_its_instances_at_once() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let (session, _) = client.open_session("node-a", 60).await.expect("open");
    client
        .register(&instance("api", "a1", 9000, None), Some(session))
        .await
        .expect("register");
    let external = instance("api", "ext", 9001, None);
    client.register(&external, None).await.expect("register");
    client.close_session(session).await.expect("close");
    assert_eq!(instance_ids(&registry, "api").await, ["ext"]);
    assert_eq!(code_of(client.close_session(session).await), Code::NotFound);
    assert_eq!(
        code_of(
            client
                .register(&instance("api", "a2", 9002, None), Some(session))
                .await
        ),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_a_fresh_grace_period_after_a_restart() {
    let mut registry = TestRegistry::start().await;
    let client = registry.client();
    let (session, _) = client.open_session("node-a", 2).await.expect("open");
    client
        .register(&instance("web", "g1", 8080, None), Some(session))
        .await
        .expect("register");
    registry.stop().await;
    // Down for longer than the whole TTL.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    registry.restart().await;
    let client = registry.client();
    assert_eq!(
        instance_ids(&registry, "web").await,
        ["g1"],
        "not expired at restart"
    );
    client
        .keep_alive(session)
        .await
        .expect("the agent can keep its session after the restart");
    // Without keep-alives it expires one TTL later, as usual.
    let registry = &registry;
    eventually(Duration::from_secs(10), || async move {
        let ids = instance_ids(registry, "web").await;
        if ids.is_empty() {
            Ok(())
        } else {
            Err(format!("still registered: {ids:?}"))
        }
    })
    .await;
}

async fn sync_node_reconciles_in_one_revision_and_is_idempotent() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let (session, _) = client.open_session("node-1", 30).await.expect("open");
    let mut first = vec![
        instance("web", "c1", 8001, Some(Color::Blue)),
        instance("web", "c2", 8002, Some(Color::Blue)),
        instance("db", "c3", 5432, None),
    ];
    let synced = client
        .sync_node(session, "node-1", &first)
        .await
        .expect("sync");
    assert_eq!((synced.added, synced.updated, synced.removed), (3, 0, 0));
    let again = client
        .sync_node(session, "node-1", &first)
        .await
        .expect("sync");
    assert_eq!((again.added, again.updated, again.removed), (0, 0, 0));
    assert_eq!(again.revision, synced.revision, "a repeat changes nothing");

    // Another node's instances are not touched by this node's sync.
    let (other, _) = client.open_session("node-2", 30).await.expect("open");
    client
        .sync_node(
            other,
            "node-2",
            &[instance("web", "n2", 8100, Some(Color::Blue))],
        )
        .await
        .expect("sync node-2");

    first.remove(2); // c3 stopped
    first[0].health = Health::Critical; // c1 unhealthy
    first.push(instance("web", "c4", 8004, Some(Color::Green))); // c4 started
    let (before, _) = client.list_services().await.expect("list");
    let changed = client
        .sync_node(session, "node-1", &first)
        .await
        .expect("sync");
    assert_eq!((changed.added, changed.updated, changed.removed), (1, 1, 1));
    assert_eq!(
        changed.revision,
        before + 1,
        "one revision for the whole sync"
    );

    let (_, web) = client.get_service("web").await.expect("get");
    let view: Vec<(String, String, Health)> = web
        .instances
        .iter()
        .map(|i| (i.id.clone(), i.node.clone(), i.health))
        .collect();
    assert_eq!(
        view,
        [
            ("c1".to_string(), "node-1".to_string(), Health::Critical),
            ("c2".into(), "node-1".into(), Health::Passing),
            ("c4".into(), "node-1".into(), Health::Passing),
            ("n2".into(), "node-2".into(), Health::Passing),
        ]
    );
    assert!(instance_ids(&registry, "db").await.is_empty());

    // A session may only sync its own node.
    assert_eq!(
        code_of(client.sync_node(other, "node-1", &first).await),
        Code::FailedPrecondition
    );
}

async fn color_cas_with_racing_deployers_has_exactly_one_winner() {
    let registry = TestRegistry::start().await;
    for round in 0..20 {
        let service = format!("race-{round}");
        let client = registry.client();
        client
            .register(&instance(&service, &format!("r{round}"), 8000, None), None)
            .await
            .expect("register");
        let (a, b) = (registry.client(), registry.client());
        let (sa, sb) = (service.clone(), service.clone());
        let first =
            tokio::spawn(async move { a.set_active_color(&sa, Some(Color::Blue), None, 0).await });
        let second =
            tokio::spawn(async move { b.set_active_color(&sb, Some(Color::Green), None, 0).await });
        let results = [first.await.expect("task"), second.await.expect("task")];
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        let loser = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("a loser");
        assert_eq!(loser.code(), Some(Code::FailedPrecondition));
        assert!(
            loser.message().contains("active color"),
            "{}",
            loser.message()
        );
        let (active, _, _) = client.next_color(&service).await.expect("color");
        let winner_color = if results[0].is_ok() {
            Color::Blue
        } else {
            Color::Green
        };
        assert_eq!(active, Some(winner_color));
    }
}

async fn deploy_locks_fence_color_changes() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(&instance("web", "l1", 8000, None), None)
        .await
        .expect("register");
    let grant = client
        .acquire_lock("web", "ci-job-1", 30)
        .await
        .expect("lock");
    let held = client.acquire_lock("web", "ci-job-2", 30).await;
    let error = held.expect_err("the lock is held");
    assert_eq!(error.code(), Some(Code::Aborted));
    assert!(error.message().contains("ci-job-1"), "{}", error.message());

    // Without the token nobody may flip while a deploy holds the lock.
    assert_eq!(
        code_of(
            client
                .set_active_color("web", Some(Color::Blue), None, 0)
                .await
        ),
        Code::Aborted
    );
    client
        .set_active_color("web", Some(Color::Blue), None, grant.token)
        .await
        .expect("the holder flips");
    client.renew_lock("web", grant.token).await.expect("renew");
    client
        .release_lock("web", grant.token)
        .await
        .expect("release");

    // The old token is dead: a stale deployer cannot flip.
    let stale = client
        .set_active_color("web", Some(Color::Green), Some(Color::Blue), grant.token)
        .await;
    assert_eq!(code_of(stale), Code::FailedPrecondition);
    assert_eq!(
        code_of(client.renew_lock("web", grant.token).await),
        Code::FailedPrecondition
    );

    // Racing for the lock: exactly one wins, and a newer grant has a larger token.
    let (a, b) = (registry.client(), registry.client());
    let first = tokio::spawn(async move { a.acquire_lock("web", "a", 30).await });
    let second = tokio::spawn(async move { b.acquire_lock("web", "b", 30).await });
    let results = [first.await.expect("task"), second.await.expect("task")];
    let grants: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(grants.len(), 1, "{results:?}");
    assert!(grants[0].token > grant.token);

    // A lock that is not renewed expires.
    let client = registry.client();
    client
        .release_lock("web", grants[0].token)
        .await
        .expect("release");
    let short = client.acquire_lock("web", "c", 1).await.expect("lock");
    let client = &client;
    eventually(Duration::from_secs(10), || async move {
        match client.acquire_lock("web", "d", 30).await {
            Ok(_) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    assert_eq!(
        code_of(client.renew_lock("web", short.token).await),
        Code::FailedPrecondition
    );
}

async fn deployment_records_are_kept_newest_first() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    for (n, outcome) in [Outcome::Promoted, Outcome::RolledBack]
        .into_iter()
        .enumerate()
    {
        let record = Deployment {
            id: format!("d{n}"),
            service: "web".into(),
            from_color: None,
            to_color: Some(Color::Blue),
            image: format!("web:{n}"),
            started_at_ms: 1_000 + n as u64,
            outcome,
            ..Deployment::default()
        };
        client.record_deployment(&record).await.expect("record");
    }
    let mut update = client.list_deployments("web", 0).await.expect("list");
    assert_eq!(
        update.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d1", "d0"]
    );
    update[0].outcome = Outcome::Failed;
    update[0].failed_step = "pre-test".into();
    client.record_deployment(&update[0]).await.expect("update");
    let listed = client.list_deployments("web", 1).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].outcome, listed[0].failed_step.as_str()),
        (Outcome::Failed, "pre-test")
    );
}

async fn health_is_serving_then_not_serving_while_draining() {
    let mut registry = TestRegistry::start_with(|config| {
        config.drain_timeout = Duration::from_secs(2);
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(registry.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut statuses = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: cd_registry::server::SERVICE_NAME.into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let first = statuses.next().await.expect("a status").expect("ok");
    assert_eq!(first.status, serving);
    let stopping = tokio::spawn(async move { registry.stop().await });
    let mut seen = Vec::new();
    while let Some(Ok(status)) = statuses.next().await {
        seen.push(status.status);
        if status.status == not_serving {
            break;
        }
    }
    assert!(seen.contains(&not_serving), "saw {seen:?}");
    stopping.await.expect("the registry stopped cleanly");
}

/// The service names reflection `$version` (`v1` or `v1alpha`) lists.
macro_rules! reflected_services {
    ($version:ident, $url:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let channel = tonic::transport::Endpoint::from_shared($url)
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let answer = answers.next().await.expect("an answer").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("unexpected reflection answer");
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

async fn reflection_lists_the_registry_service() {
    let registry = TestRegistry::start().await;
    for names in [
        reflected_services!(v1, registry.url()),
        reflected_services!(v1alpha, registry.url()),
    ] {
        for service in ["switchyard.v1.Registry", "grpc.health.v1.Health"] {
            assert!(names.contains(&service.to_string()), "{names:?}");
        }
    }
}

on_both_backends!(
    sessions_keep_instances_and_expiry_removes_them_in_one_revision,
    closing_a_session_deregisters_its_instances_at_once,
    sync_node_reconciles_in_one_revision_and_is_idempotent,
    color_cas_with_racing_deployers_has_exactly_one_winner,
    deploy_locks_fence_color_changes,
    deployment_records_are_kept_newest_first,
    health_is_serving_then_not_serving_while_draining,
    reflection_lists_the_registry_service,
);
