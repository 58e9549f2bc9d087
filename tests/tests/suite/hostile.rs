//! A registry under hostile or broken clients: requests crafted to hang,
//! exhaust or mislead it. Each test replays one way the registry was taken
//! down or fooled before, against the real binary where a failure could take
//! the test process with it.

use std::time::{Duration, Instant};

use switchyard_model::watch::{ResetReason, WatchEvent};
use switchyard_proto::v1;
use switchyard_tests::process::{RegistryProcess, cpu_time, lines_with, rss_bytes};
use switchyard_tests::{
    eventually, grpc, grpc_small_windows, health_serving, instance, next_watch_event, raw_watch,
};
use tokio::net::TcpStream;

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
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
    let mut first = raw_watch(&url, u64::MAX).await;
    let mut second = raw_watch(&url, u64::MAX).await;
    answers_promptly(&url, "after-1").await;
    answers_promptly(&url, "after-2").await;
    for stream in [&mut first, &mut second] {
        let event = next_watch_event(stream).await;
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
    let mut stream = raw_watch(&url, 1_000_000_000_000).await;
    match next_watch_event(&mut stream).await {
        WatchEvent::Reset { reason, message } => {
            assert_eq!(reason, ResetReason::FutureRevision);
            assert!(message.contains("ahead of this registry"), "{message}");
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let (revision, service) = client.get_service("web").await.expect("get");
    match next_watch_event(&mut stream).await {
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
    match next_watch_event(&mut stream).await {
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
        held.push(raw_watch(&url, 0).await);
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

#[test]
fn text_logs_carry_no_colour_codes_when_not_on_a_terminal() {
    use std::io::{BufRead, BufReader};
    let dir = data_dir();
    let mut child = std::process::Command::new(switchyard_tests::process::binary("cd-registry"))
        .env("SWITCHYARD_METRICS_LISTEN", "off")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cd-registry starts");
    let stderr = child.stderr.take().expect("piped");
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("cd-registry listening"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the listening line");
    assert!(!line.contains('\u{1b}'), "{line:?}");
}

#[test]
fn the_shipped_unit_gives_the_registry_descriptors_for_its_connection_limit() {
    let unit = std::fs::read_to_string(
        switchyard_tests::workspace_root().join("deploy/cd-registry.service"),
    )
    .expect("deploy/cd-registry.service");
    let limit: u64 = unit
        .lines()
        .find_map(|line| line.strip_prefix("LimitNOFILE="))
        .and_then(|value| value.trim().parse().ok())
        .expect("a LimitNOFILE= line");
    let needed = cd_registry::server::Limits::default().max_connections as u64 + 64;
    assert!(
        limit >= needed,
        "LimitNOFILE={limit}, the default limits need {needed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_says_so_once() {
    let dir = data_dir();
    let registry = RegistryProcess::start(dir.path(), &["--handshake-timeout", "2s"]);
    let url = registry.url();
    let pid = registry.child.id();
    answers_promptly(&url, "before").await;
    // Lower the running registry's descriptor limit below what its default
    // --max-connections assumed (an operator's `prlimit`, or descriptors
    // taken by something else): accepting now fails with EMFILE.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count();
    let limit = format!("--nofile={}:{}", open + 8, open + 8);
    let lowered = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &limit])
        .status()
        .expect("prlimit");
    assert!(lowered.success());
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(registry.address).await.expect("connect"));
    }
    let cpu_before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let spent = cpu_time(pid).saturating_sub(cpu_before);
    println!("accepting at EMFILE: {spent:?} of CPU in 5 s");
    assert!(
        spent < Duration::from_millis(500),
        "{spent:?} of CPU in 5 s"
    );
    eventually(Duration::from_secs(5), || async {
        match lines_with(&registry.log, "cannot accept connections") {
            1 => Ok(()),
            n => Err(format!("{n} lines about EMFILE")),
        }
    })
    .await;
    // Once the silent sockets go, clients are served again.
    drop(silent);
    eventually(Duration::from_secs(20), || health_serving(url.clone())).await;
    assert_eq!(lines_with(&registry.log, "cannot accept connections"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_opens_at_most_its_share_of_streams() {
    let dir = data_dir();
    let registry = RegistryProcess::start(dir.path(), &["--max-streams-per-connection", "2"]);
    let url = registry.url();
    let mut one = grpc(&url).await;
    let request = || v1::WatchRequest {
        services: vec![],
        from_revision: 0,
    };
    let _first = one.watch(request()).await.expect("watch");
    let _second = one.watch(request()).await.expect("watch");
    // The third stream on the same connection waits for a free slot...
    let third = tokio::time::timeout(Duration::from_secs(2), one.watch(request())).await;
    assert!(
        third.is_err(),
        "a third stream opened on a 2-stream connection"
    );
    // ...while another connection is served.
    let _other = grpc(&url).await.watch(request()).await.expect("watch");
}
