//! Draining instances: the registry's mark that takes an instance out of
//! every proxy's routes while it still runs, fenced by the deploy lock,
//! kept across an agent's re-registration and never set by one.

use switchyard_client::{ClientError, RegistryClient};
use switchyard_model::labels::meta;
use switchyard_model::{Color, Instance, Service};
use switchyard_tests::upstream::Upstream;
use switchyard_tests::{TestRegistry, instance};

use super::examples::{Example, ExampleProxy};

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> tonic::Code {
    result.expect_err("refused").code().expect("a gRPC status")
}

async fn web(client: &RegistryClient) -> Service {
    client.get_service("web").await.expect("web").1
}

fn live_ids(service: &Service) -> Vec<&str> {
    service.live_instances().map(|i| i.id.as_str()).collect()
}

fn with_mark(mut instance: Instance, mark: &str) -> Instance {
    instance.metadata.insert(meta::DRAINING.into(), mark.into());
    instance
}

async fn draining_is_a_fenced_registry_mark_an_agent_keeps_and_cannot_set() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let (session, _) = client.open_session("n1", 30).await.expect("session");
    let node = [
        instance("web", "b1", 8001, Some(Color::Blue)),
        instance("web", "b2", 8002, Some(Color::Blue)),
    ];
    client.sync_node(session, "n1", &node).await.expect("sync");
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    assert_eq!(live_ids(&web(&client).await), ["b1", "b2"]);

    let drained = client
        .set_draining("web", &["b1".into()], Some("rolling deploy d1"), 0)
        .await
        .expect("drain b1");
    let service = web(&client).await;
    assert_eq!(
        live_ids(&service),
        ["b2"],
        "a draining instance is not live"
    );
    assert_eq!(service.routes().count(), 1);
    let b1 = &service.instances[0];
    assert_eq!(b1.mod_revision, drained);
    assert_eq!(
        b1.metadata.get(meta::DRAINING).map(String::as_str),
        Some("rolling deploy d1")
    );

    // The agent syncs again (a tag changed) and cannot clear the mark; the
    // mark it sends for b2 is dropped.
    let mut again = node.clone();
    again[0].tags.push("v1".into());
    again[1] = with_mark(again[1].clone(), "forged");
    client.sync_node(session, "n1", &again).await.expect("sync");
    let service = web(&client).await;
    assert_eq!(live_ids(&service), ["b2"]);
    assert_eq!(service.instances[0].tags, ["v1"]);
    assert!(!service.instances[1].is_draining());
    // Nor can a registration set it.
    client
        .register(
            &with_mark(instance("web", "e1", 8003, Some(Color::Blue)), "x"),
            None,
        )
        .await
        .expect("register e1");
    assert_eq!(live_ids(&web(&client).await), ["b2", "e1"]);

    // Fenced by the lock like a flip.
    let grant = client.acquire_lock("web", "d2", 30).await.expect("lock");
    let unfenced = client.set_draining("web", &["b1".into()], None, 0).await;
    assert_eq!(code_of(unfenced), tonic::Code::Aborted);
    client
        .set_draining("web", &["b1".into()], None, grant.token)
        .await
        .expect("the holder ends the drain");
    assert_eq!(live_ids(&web(&client).await), ["b1", "b2", "e1"]);

    // Unknown instances and empty calls change nothing.
    let unknown = client
        .set_draining("web", &["b1".into(), "nope".into()], Some("x"), grant.token)
        .await;
    assert_eq!(code_of(unknown), tonic::Code::NotFound);
    let empty = client
        .set_draining("web", &[], Some("x"), grant.token)
        .await;
    assert_eq!(code_of(empty), tonic::Code::InvalidArgument);
    assert_eq!(live_ids(&web(&client).await), ["b1", "b2", "e1"]);
}

on_both_backends!(draining_is_a_fenced_registry_mark_an_agent_keeps_and_cannot_set);

/// Through every shipped example, a draining server gets no request while
/// its color is live and it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_stops_sending_requests_to_a_draining_instance() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let (kept, drained) = (
        Upstream::answering("kept\n").await,
        Upstream::answering("drained\n").await,
    );
    super::examples::register(&client, "api", "api:kept", Color::Blue, &kept).await;
    super::examples::register(&client, "api", "api:drained", Color::Blue, &drained).await;
    client
        .set_active_color("api", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    client
        .set_draining("api", &["api:drained".into()], Some("a test"), 0)
        .await
        .expect("drain");
    for example in [Example::Nginx, Example::Haproxy, Example::HaproxyRuntime] {
        let proxy = ExampleProxy::start(&registry.url(), example).await;
        proxy.until_serving("/api/").await;
        let before = drained.hits();
        for _ in 0..20 {
            assert_eq!(
                proxy.body_of("/api/", &[]).await.as_deref(),
                Ok("kept"),
                "{example:?}"
            );
        }
        assert_eq!(
            drained.hits(),
            before,
            "{example:?} sent to a draining server"
        );
    }
}
