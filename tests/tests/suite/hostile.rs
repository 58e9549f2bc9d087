//! A registry under hostile or broken clients: requests crafted to hang,
//! exhaust or mislead it. Each test replays one way the registry was taken
//! down or fooled before, against the real binary where a failure could take
//! the test process with it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_model::watch::{ResetReason, WatchEvent};
use switchyard_proto::v1;
use switchyard_tests::process::{RegistryProcess, cpu_time, rss_bytes};
use switchyard_tests::{eventually, grpc, grpc_small_windows, health_serving, instance};
use tokio::net::TcpStream;

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

async fn watch_from(url: &str, from_revision: u64) -> tonic::Streaming<v1::WatchResponse> {
    grpc(url)
        .await
        .watch(v1::WatchRequest {
            services: vec![],
            from_revision,
        })
        .await
        .expect("watch opens")
        .into_inner()
}

async fn next_event(stream: &mut tonic::Streaming<v1::WatchResponse>) -> WatchEvent {
    let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch message within 10s")
        .expect("the stream is open")
        .expect("no stream error");
    switchyard_proto::watch_event_from_wire(message).expect("a valid event")
}

/// A write and a health check, each answered within a second.
async fn answers_promptly(url: &str, id: &str) {
    let started = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(1), health_serving(url.to_string()))
        .await
        .expect("health answered within 1s");
    assert_eq!(health, Ok(()));
    let client = switchyard_client::RegistryClient::new(url).expect("url");
    let write = tokio::time::timeout(
        Duration::from_secs(1),
        client.register(&instance("web", id, 8080, None), None),
    )
    .await
    .expect("a write answered within 1s");
    write.expect("the write succeeds");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_last_revision_there_is_neither_hangs_nor_spins() {
    let dir = data_dir();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let url = registry.url();
    answers_promptly(&url, "before").await;
    let mut first = watch_from(&url, u64::MAX).await;
    let mut second = watch_from(&url, u64::MAX).await;
    answers_promptly(&url, "after-1").await;
    answers_promptly(&url, "after-2").await;
    for stream in [&mut first, &mut second] {
        let event = next_event(stream).await;
        assert!(
            matches!(
                event,
                WatchEvent::Reset {
                    reason: ResetReason::FutureRevision,
                    ..
                }
            ),
            "{event:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_future_revision_is_reset_to_the_registry_state() {
    let dir = data_dir();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let url = registry.url();
    let client = switchyard_client::RegistryClient::new(&url).expect("url");
    client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    let mut stream = watch_from(&url, 1_000_000_000_000).await;
    match next_event(&mut stream).await {
        WatchEvent::Reset { reason, message } => {
            assert_eq!(reason, ResetReason::FutureRevision);
            assert!(message.contains("ahead of this registry"), "{message}");
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let (revision, service) = client.get_service("web").await.expect("get");
    match next_event(&mut stream).await {
        WatchEvent::Snapshot {
            revision: at,
            services,
            complete,
        } => {
            assert!(complete);
            assert_eq!(at, revision);
            assert_eq!(services, vec![service]);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    // And it follows live from there.
    let next = client
        .register(&instance("web", "w2", 8081, None), None)
        .await
        .expect("register");
    match next_event(&mut stream).await {
        WatchEvent::Changes { revision, .. } => assert_eq!(revision, next),
        other => panic!("expected the new instance, got {other:?}"),
    }
}

/// Documented in the README ("Limits and hardening"): 2,000 watch streams
/// that never read, after 1,100 writes, keep the registry under this.
const NON_READING_RSS_BOUND: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_watchers_that_never_read_do_not_exhaust_memory() {
    let dir = data_dir();
    let registry = RegistryProcess::start(dir.path(), &[]);
    let url = registry.url();
    // 20 connections with small HTTP/2 windows, 100 streams each, never read.
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut client = grpc_small_windows(&url).await;
        for _ in 0..100 {
            let request = v1::WatchRequest {
                services: vec![],
                from_revision: 0,
            };
            streams.push(client.watch(request).await.expect("watch").into_inner());
        }
    }
    let baseline = rss_bytes(registry.child.id());
    let client = switchyard_client::RegistryClient::new(&url).expect("url");
    let padding = "x".repeat(512);
    for n in 0..1_100u16 {
        let mut web = instance("web", &format!("n{n}"), 8000 + n % 1000, None);
        web.metadata.insert("padding".into(), padding.clone());
        client.register(&web, None).await.expect("register");
    }
    // Let the watchers take what they can before measuring.
    let mut rss = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss = rss.max(rss_bytes(registry.child.id()));
    }
    println!(
        "2,000 non-reading watchers: RSS {} MiB before the writes, {} MiB after",
        baseline >> 20,
        rss >> 20
    );
    assert!(
        rss < NON_READING_RSS_BOUND,
        "RSS {} MiB with 2,000 non-reading watchers",
        rss >> 20
    );
    let answered = tokio::time::timeout(Duration::from_secs(5), client.get_service("web")).await;
    let (_, web) = answered.expect("GetService within 5s").expect("get");
    assert_eq!(web.instances.len(), 1_100);
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_beyond_the_limit_are_refused_with_resource_exhausted() {
    let dir = data_dir();
    let registry = RegistryProcess::start(dir.path(), &["--max-watchers", "3"]);
    let url = registry.url();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(watch_from(&url, 0).await);
    }
    let refused = grpc(&url)
        .await
        .watch(v1::WatchRequest {
            services: vec![],
            from_revision: 0,
        })
        .await
        .expect_err("a fourth watcher is refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-watchers"),
        "{}",
        refused.message()
    );
    // Closing one frees its place.
    held.pop();
    eventually(Duration::from_secs(5), || async {
        let mut client = grpc(&url).await;
        let request = v1::WatchRequest {
            services: vec![],
            from_revision: 0,
        };
        client
            .watch(request)
            .await
            .map(drop)
            .map_err(|s| s.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_at_a_low_descriptor_limit_neither_lock_clients_out_nor_spin() {
    let dir = data_dir();
    let registry = RegistryProcess::start_with_descriptor_limit(
        dir.path(),
        256,
        &["--handshake-timeout", "2s"],
    );
    let url = registry.url();
    let pid = registry.child.id();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(registry.address).await.expect("connect"));
    }
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    // New clients get through once the silent sockets time out (2s).
    eventually(Duration::from_secs(8), || health_serving(url.clone())).await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    let spent = cpu_time(pid).saturating_sub(cpu_before);
    println!("300 silent sockets at 256 descriptors: {spent:?} of CPU in 10 s");
    assert!(
        spent < Duration::from_secs(1),
        "the registry spent {spent:?} of CPU in 10 s"
    );
    answers_promptly(&url, "still-serving").await;
    drop(silent);
}
