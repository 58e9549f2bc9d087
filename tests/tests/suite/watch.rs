//! Watch through a real gRPC client: snapshot then ordered deltas, resume,
//! filters, compaction, progress, and a consumer too slow to keep up.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use switchyard_client::ClientError;
use switchyard_client::view::ServiceView;
use switchyard_model::watch::{Change, ResetReason, WatchEvent};
use switchyard_model::{Color, Service};
use switchyard_proto::v1;
use switchyard_tests::{TestRegistry, instance};

type Events = Pin<Box<dyn Stream<Item = Result<WatchEvent, ClientError>> + Send>>;

async fn open(registry: &TestRegistry, services: &[&str], from: u64) -> Events {
    let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    Box::pin(
        registry
            .client()
            .watch(&services, from)
            .await
            .expect("watch opens"),
    )
}

async fn next(events: &mut Events) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a watch event within 10s")
        .expect("the stream is open")
        .expect("no stream error")
}

/// The registry's own answer for the services, as a view compares it.
async fn registry_view(registry: &TestRegistry) -> Vec<Service> {
    let client = registry.client();
    let (_, summaries) = client.list_services().await.expect("list");
    let mut services = Vec::new();
    for summary in summaries {
        services.push(client.get_service(&summary.name).await.expect("get").1);
    }
    services
}

async fn a_snapshot_then_deltas_in_order_track_the_registry_exactly() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(&instance("web", "w1", 8001, Some(Color::Blue)), None)
        .await
        .expect("register");
    let mut events = open(&registry, &[], 0).await;
    let mut view = ServiceView::default();
    let first = next(&mut events).await;
    assert!(
        matches!(first, WatchEvent::Snapshot { complete: true, .. }),
        "{first:?}"
    );
    view.apply(&first);
    assert_eq!(view.services.len(), 1);

    client
        .register(&instance("web", "w2", 8002, Some(Color::Green)), None)
        .await
        .expect("register");
    client
        .set_active_color("web", Some(Color::Green), None, 0)
        .await
        .expect("flip");
    client.deregister("w1").await.expect("deregister");
    let last = client
        .register(&instance("api", "a1", 9001, None), None)
        .await
        .expect("register");

    let mut previous = view.revision;
    while view.revision < last {
        let event = next(&mut events).await;
        if let WatchEvent::Changes { revision, .. } = &event {
            assert!(
                *revision > previous,
                "revisions increase: {revision} after {previous}"
            );
            previous = *revision;
        }
        view.apply(&event);
    }
    assert_eq!(view.revision, last);
    let expected = registry_view(&registry).await;
    assert_eq!(view.services.into_values().collect::<Vec<_>>(), expected);
}

async fn resuming_from_a_revision_replays_exactly_what_came_after() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let seen = client
        .register(&instance("web", "r1", 8001, None), None)
        .await
        .expect("register");
    let mut missed = Vec::new();
    for n in 2..=4 {
        missed.push(
            client
                .register(&instance("web", &format!("r{n}"), 8000 + n, None), None)
                .await
                .expect("register"),
        );
    }
    let mut events = open(&registry, &["web"], seen).await;
    for expected in missed {
        match next(&mut events).await {
            WatchEvent::Changes { revision, changes } => {
                assert_eq!(revision, expected);
                assert!(
                    matches!(&changes[..], [Change::InstanceUpdated(_)]),
                    "{changes:?}"
                );
            }
            other => panic!("expected the missed change at {expected}, got {other:?}"),
        }
    }
}

async fn a_filtered_watch_sees_only_its_services() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let mut events = open(&registry, &["web"], 0).await;
    let snapshot = next(&mut events).await;
    assert!(matches!(&snapshot, WatchEvent::Snapshot { services, .. } if services.is_empty()));
    client
        .register(&instance("other", "o1", 7000, None), None)
        .await
        .expect("register");
    let web = client
        .register(&instance("web", "f1", 8001, None), None)
        .await
        .expect("register");
    match next(&mut events).await {
        WatchEvent::Changes { revision, changes } => {
            assert_eq!(revision, web, "the other service's revision is not sent");
            assert!(changes.iter().all(|change| match change {
                Change::ServiceUpdated(s) => s.name == "web",
                Change::InstanceUpdated(i) => i.service == "web",
                Change::InstanceRemoved { service, .. } => service == "web",
            }));
        }
        other => panic!("expected web's change, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_compacted_history_resets_then_sends_a_snapshot() {
    let registry = TestRegistry::start_with(|config| config.history_revisions = 5).await;
    let client = registry.client();
    for n in 0..20 {
        client
            .register(&instance("web", &format!("c{n}"), 8000 + n, None), None)
            .await
            .expect("register");
    }
    let mut events = open(&registry, &[], 1).await;
    match next(&mut events).await {
        WatchEvent::Reset { reason, message } => {
            assert_eq!(reason, ResetReason::Compacted);
            assert!(message.contains("snapshot"), "{message}");
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let mut view = ServiceView::default();
    view.apply(&next(&mut events).await);
    assert_eq!(
        view.services.into_values().collect::<Vec<_>>(),
        registry_view(&registry).await
    );
}

async fn idle_streams_get_progress_with_the_current_revision() {
    let registry =
        TestRegistry::start_with(|config| config.progress_interval = Duration::from_millis(200))
            .await;
    let client = registry.client();
    let mut events = open(&registry, &["quiet"], 0).await;
    next(&mut events).await; // the (empty) snapshot
    let current = client
        .register(&instance("busy", "b1", 8000, None), None)
        .await
        .expect("register");
    // Each `next` waits at most 10s; progress comes every 200ms.
    for _ in 0..50 {
        match next(&mut events).await {
            WatchEvent::Progress { revision } if revision == current => return,
            WatchEvent::Progress { revision } => assert!(revision <= current),
            other => panic!("an idle filtered stream sent {other:?}"),
        }
    }
    panic!("no progress message carried revision {current}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_too_slow_is_reset_and_never_blocks_writers() {
    let registry = TestRegistry::start_with(|config| {
        config.history_revisions = 20;
        config.watch_buffer = 2;
    })
    .await;
    // A raw stream that is opened and then not read at all, over a channel
    // with small HTTP/2 windows, so the server cannot park everything in them.
    let mut grpc = switchyard_tests::grpc_small_windows(&registry.url()).await;
    let mut stalled = grpc
        .watch(v1::WatchRequest {
            services: vec![],
            from_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();

    let padding = "x".repeat(4096);
    let writes = async {
        let mut tasks = Vec::new();
        for writer in 0..4 {
            let client = registry.client();
            let padding = padding.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..125 {
                    let mut web = instance("web", &format!("s{writer}-{n}"), 8000, None);
                    web.metadata.insert("padding".into(), padding.clone());
                    client.register(&web, None).await.expect("register");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), writes)
        .await
        .expect("500 writes finished while a watcher read nothing");

    // Now read: somewhere there is a reset, then a snapshot, and the view
    // ends equal to the registry.
    let expected = registry_view(&registry).await;
    let final_revision = registry.client().list_services().await.expect("list").0;
    let mut view = ServiceView::default();
    let mut reset = None;
    while view.revision < final_revision {
        let message = tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("a message within 10s")
            .expect("stream open")
            .expect("no error");
        let event = switchyard_proto::watch_event_from_wire(message).expect("valid event");
        if let WatchEvent::Reset { reason, .. } = &event {
            reset = Some(*reason);
        }
        view.apply(&event);
    }
    assert_eq!(reset, Some(ResetReason::SlowConsumer));
    assert_eq!(view.services.into_values().collect::<Vec<_>>(), expected);
}

on_both_backends!(
    a_snapshot_then_deltas_in_order_track_the_registry_exactly,
    resuming_from_a_revision_replays_exactly_what_came_after,
    a_filtered_watch_sees_only_its_services,
    idle_streams_get_progress_with_the_current_revision,
);

/// A snapshot of large services comes in parts of at most about 4,096
/// instances (a service is never cut), not 256 services whatever their
/// size, so the registry never holds a huge part decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_parts_are_bounded_by_instances_and_never_cut_a_service() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    for service in ["big-a", "big-b", "big-c"] {
        let (session, _) = client.open_session(service, 60).await.expect("session");
        let instances: Vec<_> = (0..3000u16)
            .map(|n| {
                let mut one = instance(service, &format!("{service}-{n}"), 1 + n, None);
                one.node = service.to_string();
                one.session = Some(session);
                one
            })
            .collect();
        client
            .sync_node(session, service, &instances)
            .await
            .expect("sync");
    }
    let mut events = open(&registry, &[], 0).await;
    let mut parts = Vec::new();
    loop {
        match next(&mut events).await {
            WatchEvent::Snapshot {
                services, complete, ..
            } => {
                let sizes: Vec<(String, usize)> = services
                    .iter()
                    .map(|s| (s.name.clone(), s.instances.len()))
                    .collect();
                parts.push(sizes);
                if complete {
                    break;
                }
            }
            other => panic!("expected snapshot parts, got {other:?}"),
        }
    }
    // 3,000 + 3,000 passes 4,096: the first part stops there.
    assert_eq!(
        parts,
        vec![
            vec![("big-a".to_string(), 3000), ("big-b".to_string(), 3000)],
            vec![("big-c".to_string(), 3000)],
        ]
    );
}

/// Until `stream` brings a color change (what a flip sends every watcher).
async fn until_flip(stream: &mut tonic::Streaming<v1::WatchResponse>) {
    loop {
        match switchyard_tests::next_watch_event(stream).await {
            WatchEvent::Changes { changes, .. }
                if changes
                    .iter()
                    .any(|c| matches!(c, Change::ServiceUpdated(_))) =>
            {
                return;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_reaches_the_watchers_of_a_connection_in_a_few_writes() {
    use switchyard_tests::process::{RegistryProcess, write_calls};
    const CONNECTIONS: usize = 4;
    const PER_CONNECTION: usize = 50;
    const FLIPS: usize = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = RegistryProcess::start(dir.path(), &[]);
    let url = registry.url();
    let client = switchyard_client::RegistryClient::new(&url).expect("url");
    client
        .register(&instance("web", "w0", 8000, None), None)
        .await
        .expect("register");
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut connection = switchyard_tests::grpc(&url).await;
        for _ in 0..PER_CONNECTION {
            let request = v1::WatchRequest {
                services: vec!["web".into()],
                from_revision: 0,
            };
            let mut stream = connection.watch(request).await.expect("watch").into_inner();
            let snapshot = switchyard_tests::next_watch_event(&mut stream).await;
            assert!(matches!(
                snapshot,
                WatchEvent::Snapshot { complete: true, .. }
            ));
            streams.push(stream);
        }
    }
    let before = write_calls(registry.child.id());
    let mut live = None;
    for _ in 0..FLIPS {
        let next = Color::next(live);
        client
            .set_active_color("web", Some(next), live, 0)
            .await
            .expect("flip");
        live = Some(next);
        for stream in &mut streams {
            until_flip(stream).await;
        }
    }
    let writes = write_calls(registry.child.id()) - before;
    let receipts = CONNECTIONS * PER_CONNECTION * FLIPS;
    println!("{receipts} receipts over {CONNECTIONS} connections: {writes} write calls");
    // Each flip is one store commit and one answer, and then the watchers
    // of a connection share its writes: about a dozen calls a flip, where
    // one write per watcher made 2,000.
    assert!(
        (writes as usize) < receipts / 4,
        "{writes} write calls for {receipts} receipts: the watchers of a connection \
         no longer share writes"
    );
}
