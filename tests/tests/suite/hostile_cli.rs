//! cdctl in hostile conditions: URLs it cannot honour, deploy flags that
//! cannot work, a registry that accepts and then says nothing, and a watch
//! that has to retry.

use std::time::{Duration, Instant};

use switchyard_tests::TestRegistry;
use switchyard_tests::process::{cdctl_async, explain};

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
