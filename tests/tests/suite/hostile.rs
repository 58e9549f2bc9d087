//! A registry under hostile or broken clients: requests crafted to hang,
//! exhaust or mislead it. Each test replays one way the registry was taken
//! down or fooled before, against the real binary where a failure could take
//! the test process with it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_client::ClientError;
use switchyard_model::watch::{ResetReason, WatchEvent};
use switchyard_model::{Color, Deployment, ProxyStatus};
use switchyard_proto::v1;
use switchyard_tests::process::{
    RegistryProcess, cdctl_async, cpu_time, explain, lines_with, rss_bytes,
};
use switchyard_tests::{
    TestRegistry, eventually, grpc, grpc_small_windows, health_serving, instance, next_watch_event,
    raw_watch,
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

fn record(id: &str, service: &str, started_at_ms: u64) -> Deployment {
    Deployment {
        id: id.into(),
        service: service.into(),
        to_color: Some(Color::Blue),
        image: "web:1".into(),
        started_at_ms,
        ..Deployment::default()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> tonic::Code {
    result.expect_err("refused").code().expect("a gRPC status")
}

async fn forged_and_oversize_records_are_refused_and_history_follows_revisions() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let now = now_ms();
    // No records for services that do not exist.
    assert_eq!(
        code_of(client.record_deployment(&record("d0", "ghost", now)).await),
        tonic::Code::NotFound
    );
    client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    // 3.9 MiB of error text, or 64 KiB + 1 of metadata, is refused.
    let mut huge = record("huge", "web", now);
    huge.error = "e".repeat(3_900_000);
    assert_eq!(
        code_of(client.record_deployment(&huge).await),
        tonic::Code::InvalidArgument
    );
    let mut wide = record("wide", "web", now);
    for n in 0..20 {
        wide.metadata.insert(format!("k{n}"), "v".repeat(4_000));
    }
    let refused = client
        .record_deployment(&wide)
        .await
        .expect_err("over 64 KiB");
    assert!(
        refused.message().contains("64 KiB"),
        "{}",
        refused.message()
    );
    // A record dated next year is refused, so it cannot evict real history.
    let year = 365 * 24 * 3600 * 1000;
    assert_eq!(
        code_of(
            client
                .record_deployment(&record("future", "web", now + year))
                .await
        ),
        tonic::Code::InvalidArgument
    );
    // Order follows the revision of the first write, not the claimed date.
    client
        .record_deployment(&record("first", "web", now))
        .await
        .expect("record");
    client
        .record_deployment(&record("second-but-dated-earlier", "web", 1_000))
        .await
        .expect("record");
    let listed = client.list_deployments("web", 0).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["second-but-dated-earlier", "first"]);
    // 30 records of ~60 KiB each list in pages, all of them, in order.
    let mut padded = record("p", "web", now);
    for n in 0..15 {
        padded.metadata.insert(format!("k{n}"), "x".repeat(4_000));
    }
    for n in 0..30 {
        padded.id = format!("p{n:02}");
        client.record_deployment(&padded).await.expect("record");
    }
    let listed = client.list_deployments("web", 0).await.expect("list");
    assert_eq!(listed.len(), 32);
    assert_eq!(listed[0].id, "p29");
    assert_eq!(listed[31].id, "first");
    let mut grpc = registry.grpc().await;
    let first_page = grpc
        .list_deployments(v1::ListDeploymentsRequest {
            service: "web".into(),
            limit: 0,
            page_token: String::new(),
        })
        .await
        .expect("a page")
        .into_inner();
    assert!(first_page.deployments.len() < 32, "one page is about 1 MiB");
    assert!(!first_page.next_page_token.is_empty());
}

async fn proxy_reports_cannot_claim_a_revision_beyond_the_registry() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let current = client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    let mut status = ProxyStatus {
        proxy_id: "edge-1".into(),
        applied_revision: u64::MAX,
        healthy: true,
        ..ProxyStatus::default()
    };
    assert_eq!(
        code_of(client.report_proxy(&status).await),
        tonic::Code::InvalidArgument
    );
    status.applied_revision = current;
    client
        .report_proxy(&status)
        .await
        .expect("an honest report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_never_appear_in_errors_and_control_characters_are_refused() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    let grant = client
        .acquire_lock("web", "deployer-ci-42", 60)
        .await
        .expect("lock");
    let held = client
        .acquire_lock("web", "someone-else", 60)
        .await
        .expect_err("held");
    assert!(
        held.message().contains("deployer-ci-42"),
        "{}",
        held.message()
    );
    let token = grant.token.to_string();
    for refused in [
        held,
        client
            .set_active_color("web", Some(Color::Blue), None, 0)
            .await
            .expect_err("fenced"),
        client.acquire_lock("web", "x", 60).await.expect_err("held"),
    ] {
        let message = refused.message();
        let mut numbers = message.split(|c: char| !c.is_ascii_digit());
        assert!(!numbers.any(|n| n == token), "{message}");
    }
    client
        .release_lock("web", grant.token)
        .await
        .expect("release");
    // Free text with newlines or terminal escapes is refused, and the error
    // does not echo the raw control characters.
    let forged = "x\n2026-12-02T00:00:00Z INFO holder=admin\u{1b}[2J";
    let refused = client
        .acquire_lock("web", forged, 60)
        .await
        .expect_err("forged");
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    assert!(!refused.message().contains('\u{1b}') && !refused.message().contains('\n'));
    let mut tagged = instance("web", "w2", 8081, None);
    tagged.tags.push("a\u{1b}[31mred".into());
    assert_eq!(
        code_of(client.register(&tagged, None).await),
        tonic::Code::InvalidArgument
    );
    let mut annotated = instance("web", "w3", 8082, None);
    annotated
        .metadata
        .insert("note".into(), "line\nforged".into());
    assert_eq!(
        code_of(client.register(&annotated, None).await),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_kib_value_is_answered_invalid_argument_quoting_64_characters() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let long = "a".repeat(16 * 1024);
    let refused = client.get_service(&long).await.expect_err("too long");
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    assert!(
        refused.message().contains("16384 bytes"),
        "{}",
        refused.message()
    );
    assert!(refused.message().len() < 400, "{}", refused.message());
    let mut grpc = registry.grpc().await;
    let refused = grpc
        .deregister(v1::DeregisterRequest {
            id: "é".repeat(8 * 1024),
        })
        .await
        .expect_err("too long");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_the_live_color_needs_take_offline() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    let refused = client
        .set_active_color("web", None, Some(Color::Blue), 0)
        .await
        .expect_err("a default request never clears");
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    assert!(
        refused.message().contains("take_offline"),
        "{}",
        refused.message()
    );
    assert_eq!(
        client.get_service("web").await.expect("get").1.active_color,
        Some(Color::Blue)
    );
    let url = registry.url();
    let without = cdctl_async(&url, &["set-color", "web", "none", "--expect", "blue"], &[]).await;
    assert_eq!(without.status.code(), Some(2), "{}", explain(&without));
    let with = cdctl_async(
        &url,
        &["set-color", "web", "none", "--expect", "blue", "--offline"],
        &[],
    )
    .await;
    assert!(with.status.success(), "{}", explain(&with));
    assert_eq!(
        client.get_service("web").await.expect("get").1.active_color,
        None
    );
}

/// A KeepAliveRequest whose field 1 is a string instead of a varint: bytes
/// the registry cannot decode as a KeepAliveRequest.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongShape {
    #[prost(string, tag = "1")]
    session_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_keep_alive_bytes_end_the_stream_with_an_error() {
    let registry = TestRegistry::start().await;
    let channel = tonic::transport::Endpoint::from_shared(registry.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.expect("ready");
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/switchyard.v1.Registry/KeepAlive");
    let answer = raw
        .streaming(
            tonic::Request::new(futures::stream::iter([WrongShape {
                session_id: "not a number".into(),
            }])),
            path,
            tonic_prost::ProstCodec::<WrongShape, v1::KeepAliveResponse>::default(),
        )
        .await;
    let status = match answer {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.next().await {
                Some(Err(status)) => status,
                other => panic!("expected an error, got {other:?}"),
            }
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

on_both_backends!(
    forged_and_oversize_records_are_refused_and_history_follows_revisions,
    proxy_reports_cannot_claim_a_revision_beyond_the_registry,
);

#[test]
fn text_logs_carry_no_colour_codes_when_not_on_a_terminal() {
    use std::io::{BufRead, BufReader};
    let dir = data_dir();
    let mut child = std::process::Command::new(switchyard_tests::process::binary("cd-registry"))
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

/// Asserts that `cdctl ARGS` against `registry_url` exits `code` saying
/// `needle` on stderr.
async fn exits_with(
    registry_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
    code: i32,
    needle: &str,
) {
    let output = cdctl_async(registry_url, args, env).await;
    assert_eq!(
        output.status.code(),
        Some(code),
        "cdctl {args:?}: {}",
        explain(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(needle),
        "cdctl {args:?}: no {needle:?} in {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdctl_refuses_urls_it_cannot_honour_with_exit_2() {
    // (`https://` is TLS, never plaintext: tests/suite/tls.rs.)
    let port = 7;
    for (url, needle) in [
        (
            format!("ftp://127.0.0.1:{port}"),
            "only http://".to_string(),
        ),
        (
            format!("grpc://127.0.0.1:{port}"),
            "only http://".to_string(),
        ),
        (
            format!("http://127.0.0.1:{port}/api"),
            "no path".to_string(),
        ),
        (
            format!("127.0.0.1:{port}"),
            format!("write http://127.0.0.1:{port}"),
        ),
        (String::new(), "no URL given".to_string()),
        ("::garbage::".to_string(), "not a registry URL".to_string()),
    ] {
        exits_with(&url, &["services"], &[], 2, &needle).await;
    }
    // TLS files with a plaintext URL: a mistake, not a quiet downgrade.
    let url = format!("http://127.0.0.1:{port}");
    let flags = ["--ca", "/etc/hostname", "services"];
    exits_with(&url, &flags, &[], 2, "the URL is http://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdctl_deploy_mistakes_exit_2_and_a_dry_run_needs_no_docker() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    exits_with(&url, &["deploy", "web"], &[], 2, "no image").await;
    exits_with(
        &url,
        &["deploy", "web", "--image", "web:1", "--replicas", "0"],
        &[],
        2,
        "--replicas",
    )
    .await;
    let dead = [("DOCKER_HOST", "tcp://127.0.0.1:9")];
    exits_with(
        &url,
        &["deploy", "web", "--image", "web:1"],
        &dead,
        2,
        "Docker",
    )
    .await;
    let plan = cdctl_async(
        &url,
        &["deploy", "web", "--image", "web:1", "--dry-run"],
        &dead,
    )
    .await;
    assert!(plan.status.success(), "{}", explain(&plan));
    let stdout = String::from_utf8_lossy(&plan.stdout);
    assert!(stdout.contains("plan for web"), "{stdout}");
    assert!(stdout.contains("Docker did not answer"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdctl_fails_over_from_a_silent_registry_after_its_timeout() {
    let registry = TestRegistry::start().await;
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("address"));
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let urls = format!("{silent_url},{}", registry.url());
    // Built (once per run) before the clock starts.
    switchyard_tests::process::binary("cdctl");
    let started = Instant::now();
    let output = cdctl_async(&urls, &["--timeout", "1s", "services"], &[]).await;
    let took = started.elapsed();
    assert!(output.status.success(), "{}", explain(&output));
    println!("failover from a silent registry with --timeout 1s took {took:?}");
    // Without the timeout the transport waited ~30 s per silent URL.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    held.abort();
}

#[test]
fn cdctl_watch_says_on_stderr_while_it_retries() {
    use std::io::{BufRead, BufReader};
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let mut child = std::process::Command::new(switchyard_tests::process::binary("cdctl"))
        .args(["--registry", &url, "--timeout", "1s", "watch"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cdctl watch starts");
    let stderr = child.stderr.take().expect("piped");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let line = received.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a line on stderr within 20s");
    assert!(line.contains("retrying"), "{line}");
    assert!(line.contains(&url), "{line}");
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
