//! HAProxy's runtime mode (`cdctl template --haproxy-runtime`) with a real
//! Debian HAProxy in master-worker mode: flips, failed deploys and rollbacks
//! under keep-alive clients that never retry drop nothing, with no reload.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard_client::RegistryClient;
use switchyard_model::Color;
use switchyard_tests::docker::{LabelledContainers, TestImage, unique};
use switchyard_tests::load::{Connections, Load, Tally};
use switchyard_tests::process::{AgentProcess, Background, cdctl_async, explain};
use switchyard_tests::{
    TestRegistry, body, eventually, http_get, http_request, patience, workspace_root,
};

use super::proxy::{proxy_status_of, template_command, until_proxy_applied_flip};

/// A HAProxy master (`-W -S`) and its worker, stopped when dropped.
pub(crate) struct Haproxy {
    master: std::process::Child,
    pub master_socket: PathBuf,
}

impl Haproxy {
    pub(crate) fn start(config: &Path, master_socket: PathBuf) -> Self {
        let master = Command::new("haproxy")
            .arg("-W")
            .arg("-S")
            .arg(&master_socket)
            .arg("-f")
            .arg(config)
            .spawn()
            .expect("starting haproxy (install haproxy)");
        Haproxy {
            master,
            master_socket,
        }
    }

    /// One Runtime API command to the current worker, through the master.
    pub(crate) fn command(&self, command: &str) -> Result<String, String> {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.master_socket)
            .map_err(|e| format!("{}: {e}", self.master_socket.display()))?;
        stream
            .write_all(format!("@1 {command}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        // The master CLI answers once the client's side is closed.
        stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        Ok(answer)
    }

    /// The serving worker's process id, asked until the master answers (its
    /// socket refuses connections for a moment while it re-executes itself
    /// after starting a worker).
    pub(crate) async fn worker_pid(&self) -> u32 {
        eventually(patience(), || async {
            let info = self.command("show info")?;
            info.lines()
                .find_map(|line| line.strip_prefix("Pid: "))
                .and_then(|pid| pid.trim().parse().ok())
                .ok_or_else(|| format!("no Pid in {info:?}"))
        })
        .await
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.master.id().to_string()])
            .status();
        let _ = self.master.wait();
    }
}

/// HAProxy configured from `examples/haproxy-runtime/`, followed by
/// `cdctl template --haproxy-runtime` as proxy `proxy_id`.
pub(crate) struct RuntimeProxy {
    pub haproxy: Haproxy,
    pub listen: std::net::SocketAddr,
    _template: Background,
    _dir: tempfile::TempDir,
}

impl RuntimeProxy {
    pub(crate) async fn start(url: &str, proxy_id: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a folder for HAProxy");
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], switchyard_tests::free_port()));
        let conf = dir.path().join("haproxy.cfg");
        let admin = dir.path().join("admin.sock");
        let master = dir.path().join("master.sock");
        let example = workspace_root().join("examples/haproxy-runtime");
        let template = example.join("haproxy.cfg.j2");
        let env = [
            ("PROXY_LISTEN", listen.to_string()),
            ("HAPROXY_SOCKET", admin.to_string_lossy().into_owned()),
        ];
        let mut once = template_command(url, &template, &conf, &["--once", "--proxy-id", proxy_id]);
        once.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        assert!(once.status().expect("first render").success());
        let haproxy = Haproxy::start(&conf, master.clone());
        let master_text = master.to_string_lossy().into_owned();
        let reload = format!("{} {master_text}", example.join("reload.sh").display());
        let mut args = vec![
            "--haproxy-runtime",
            &master_text,
            "--check",
            "haproxy -c -q -f {path}",
            "--reload",
            &reload,
            "--proxy-id",
            proxy_id,
            "--report-interval",
            "1s",
        ];
        args.extend_from_slice(extra);
        let mut follow = template_command(url, &template, &conf, &args);
        follow.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        RuntimeProxy {
            haproxy,
            listen,
            _template: Background::spawn(follow),
            _dir: dir,
        }
    }

    /// Waits until `path` answers `version` through HAProxy.
    pub(crate) async fn serves(&self, path: &str, version: &str) {
        until_serving(self.listen, path, version).await;
    }
}

/// A registry, an agent, v1 of a service deployed, and HAProxy in runtime
/// mode following it as proxy `proxy_id`, serving v1.
pub(crate) struct Stage {
    pub url: String,
    pub service: String,
    pub label: String,
    pub v1: TestImage,
    pub v2: TestImage,
    pub proxy: RuntimeProxy,
    pub client: RegistryClient,
    _containers: LabelledContainers,
    _agent: AgentProcess,
    _registry: TestRegistry,
}

impl Stage {
    pub(crate) async fn start(prefix: &str, proxy_id: &str) -> Self {
        let registry = TestRegistry::start().await;
        let url = format!("http://{}", registry.address);
        let service = unique(prefix);
        let label = format!("switchyard.test={}", unique(prefix));
        let agent = AgentProcess::start(&url, &label, &["--ttl", "5s"]);
        let containers = LabelledContainers {
            label: label.clone(),
        };
        let (v1, v2) = (TestImage::httpd("v1", false), TestImage::httpd("v2", false));
        let first = deploy(&url, &service, &label, &v1.tag, &[]).await;
        assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
        let proxy = RuntimeProxy::start(&url, proxy_id, &[]).await;
        proxy.serves(&format!("/{service}/"), "v1").await;
        Stage {
            client: RegistryClient::new(&url).expect("url"),
            url,
            service,
            label,
            v1,
            v2,
            proxy,
            _containers: containers,
            _agent: agent,
            _registry: registry,
        }
    }
}

/// Waits until `path` answers `version` through the proxy at `listen`.
pub(crate) async fn until_serving(listen: std::net::SocketAddr, path: &str, version: &str) {
    eventually(patience(), || async move {
        match http_get(listen, path).await {
            Ok(response) if body(&response).trim() == version => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// `cdctl deploy` of `image` as 2 replicas of `service` (unless `extra`
/// says `--replicas`), published on loopback, with `extra` flags.
pub(crate) async fn deploy(
    url: &str,
    service: &str,
    label: &str,
    image: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "-o",
        "json",
        "deploy",
        service,
        "--image",
        image,
        "--port",
        "80",
        "--publish-ip",
        "127.0.0.1",
        "--label",
        label,
        "--stop-timeout",
        "1s",
    ];
    if !extra.contains(&"--replicas") {
        args.extend_from_slice(&["--replicas", "2"]);
    }
    args.extend_from_slice(extra);
    cdctl_async(url, &args, &[]).await
}

/// Every request of `tally` answered, and only `version` in each phase
/// named.
pub(crate) fn assert_clean(what: &str, tally: &Tally, phases: &[(u8, &str)]) {
    assert!(
        tally.failures.is_empty(),
        "{what}: {} of {} requests failed: {:?}",
        tally.failures.len(),
        tally.total,
        &tally.failures[..tally.failures.len().min(5)]
    );
    for (phase, version) in phases {
        let seen = tally.versions.get(phase).cloned().unwrap_or_default();
        assert!(!seen.is_empty(), "{what}: no traffic in phase {phase}");
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            [version],
            "{what}, phase {phase}: {seen:?}"
        );
    }
}

/// Through HAProxy in runtime mode, under 4 keep-alive clients that never
/// retry and 2 that open a connection per request: a deploy paused for
/// promotion, its promotion, a rollback and a deploy whose post-test fails.
/// Not one request fails, each phase sees only the version it should, and
/// HAProxy's worker is the same process from start to end (no reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_runtime_mode_drops_no_keep_alive_request() {
    let _heavy = switchyard_tests::docker::exclusive();
    let stage = Stage::start("hr", "haproxy-1").await;
    let Stage {
        url,
        service,
        label,
        v2,
        proxy,
        client,
        ..
    } = &stage;
    let path = format!("/{service}/");
    let client_ref = client;
    eventually(patience(), || async move {
        match proxy_status_of(client_ref, "haproxy-1").await {
            Some(status) if status.healthy && !status.connections.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let pid = proxy.haproxy.worker_pid().await;

    // Phases: 0 paused before the flip, 1 promoting, 2 promoted, 3 rolling
    // back, 4 rolled back, 5 a deploy whose post-test fails, 6 after it.
    let kept = Load::start_with(proxy.listen, &path, 4, Connections::KeepAlive);
    let fresh = Load::start_with(proxy.listen, &path, 2, Connections::Fresh);
    let enter = |phase| {
        kept.enter(phase);
        fresh.enter(phase);
    };
    let paused = deploy(
        url,
        service,
        label,
        &v2.tag,
        &["--keep-old", "--manual-promotion"],
    )
    .await;
    assert_eq!(paused.status.code(), Some(0), "{}", explain(&paused));
    enter(1);
    let promoted = cdctl_async(url, &["-o", "json", "promote", service], &[]).await;
    assert_eq!(promoted.status.code(), Some(0), "{}", explain(&promoted));
    enter(2);
    tokio::time::sleep(Duration::from_millis(500)).await; // traffic on v2
    enter(3);
    let back = cdctl_async(url, &["rollback", service], &[]).await;
    assert_eq!(back.status.code(), Some(0), "{}", explain(&back));
    until_proxy_applied_flip(client_ref, "haproxy-1", service).await;
    enter(4);
    tokio::time::sleep(Duration::from_millis(500)).await; // traffic on v1
    enter(5);
    let proxy_url = format!("http://{}{path}", proxy.listen);
    let post_test = format!("busybox wget -qO- {proxy_url} | grep -q never-this-version");
    let failing = deploy(
        url,
        service,
        label,
        &v2.tag,
        &["--proxy-url", &proxy_url, "--post-test", &post_test],
    )
    .await;
    assert_eq!(failing.status.code(), Some(12), "{}", explain(&failing));
    enter(6);
    // At least 20,000 keep-alive requests in all (bounded: 120 s).
    let kept_ref = &kept;
    eventually(Duration::from_secs(120), || async move {
        match kept_ref.sent() {
            sent if sent >= 20_000 => Ok(()),
            sent => Err(format!("{sent} keep-alive requests sent so far")),
        }
    })
    .await;
    let (kept, fresh) = (kept.finish().await, fresh.finish().await);
    println!(
        "haproxy runtime: {} keep-alive requests, {} failed; {} fresh-connection requests, {} \
         failed; wait proxies {:?} ms; versions by phase {:?}",
        kept.total,
        kept.failures.len(),
        fresh.total,
        fresh.failures.len(),
        super::zero_downtime::wait_proxies_ms(&promoted.stdout),
        kept.versions
    );
    let phases = [(0, "v1"), (2, "v2"), (4, "v1"), (6, "v1")];
    assert_clean("keep-alive", &kept, &phases);
    assert_clean("fresh connections", &fresh, &phases);
    assert!(kept.total >= 20_000, "{} keep-alive requests", kept.total);
    assert_eq!(
        proxy.haproxy.worker_pid().await,
        pid,
        "HAProxy reloaded (a new worker) during the deploys"
    );
}

/// Waits until proxy `proxy` reports `count` requests in flight to `color`
/// of `service`.
async fn until_in_flight(
    client: &RegistryClient,
    proxy: &str,
    service: &str,
    color: Color,
    count: u64,
) {
    eventually(patience(), || async move {
        let status = proxy_status_of(client, proxy).await;
        match status
            .as_ref()
            .and_then(|s| s.connections_to(service, color))
        {
            Some(n) if n == count => Ok(()),
            other => Err(format!("{other:?} in flight to {color}: {status:?}")),
        }
    })
    .await;
}

/// A request of 5 s started on the live color just before a deploy
/// completes with 200: the old color is drained (HAProxy `drain`, counted
/// in the proxy's reports) and stopped only once the request ended. With
/// `--drain-timeout 2s`, a longer request does not hold the deploy: the
/// old color is stopped at the timeout, and the deploy says so (the
/// request is a POST, which the example never sends twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retiring_color_is_stopped_once_its_requests_finish() {
    let stage = Stage::start("dr", "haproxy-drain").await;
    let Stage {
        url,
        service,
        label,
        v1,
        v2,
        proxy,
        client,
        ..
    } = &stage;
    let live = |client: RegistryClient, service: String| async move {
        let (_, state) = client.get_service(&service).await.expect("service");
        state.active_color.expect("a live color")
    };
    let slow = |method: &'static str, seconds: u32| {
        let (listen, path) = (proxy.listen, format!("/{service}/cgi-bin/slow?{seconds}"));
        let patience = Duration::from_secs(60);
        tokio::spawn(async move { http_request(listen, method, &path, patience).await })
    };

    let old = live(client.clone(), service.clone()).await;
    let long = slow("GET", 5);
    until_in_flight(client, "haproxy-drain", service, old, 1).await;
    let second = deploy(url, service, label, &v2.tag, &[]).await;
    assert_eq!(second.status.code(), Some(0), "{}", explain(&second));
    let answer = long.await.expect("the long request");
    let answer = answer.expect("the long request was answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(body(&answer).trim(), "v1", "{answer}");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("drained in"), "{said}");

    let old = live(client.clone(), service.clone()).await;
    // A POST: HAProxy would retry a GET cut this way on the new color.
    let longer = slow("POST", 20);
    until_in_flight(client, "haproxy-drain", service, old, 1).await;
    let third = deploy(url, service, label, &v1.tag, &["--drain-timeout", "2s"]).await;
    assert_eq!(third.status.code(), Some(0), "{}", explain(&third));
    let said = String::from_utf8_lossy(&third.stderr);
    assert!(
        said.contains("drain timeout 2s, stopped with requests in flight: haproxy-drain (1 to"),
        "{said}"
    );
    let cut = longer.await.expect("the longer request");
    assert!(
        !cut.as_deref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
        "the request outlived its stopped color: {cut:?}"
    );
    let listed = switchyard_tests::process::cdctl(url, &["proxies"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains("IN FLIGHT"), "{table}");
    // The live color is counted; the retired one is not listed once its
    // servers are gone.
    let now_live = live(client.clone(), service.clone()).await;
    assert!(
        table.contains(&format!("{service} {now_live}=0")),
        "{table}"
    );
}

/// A new service needs a backend HAProxy does not have: runtime mode
/// reloads then (through the master, a new worker), and the new backend
/// serves, while the existing one keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_service_reloads_haproxy_once_and_is_served() {
    let stage = Stage::start("nb", "haproxy-new").await;
    let Stage {
        service,
        proxy,
        client,
        ..
    } = &stage;
    let before = proxy.haproxy.worker_pid().await;
    let (_, state) = client.get_service(service).await.expect("service");
    let target = state
        .live_instances()
        .next()
        .expect("a live instance")
        .clone();
    let extra = unique("extra");
    let mut one = target.clone();
    one.id = format!("{extra}-1");
    one.service = extra.clone();
    client.register(&one, None).await.expect("register");
    client
        .set_active_color(&extra, one.color, None, 0)
        .await
        .expect("live color");
    proxy.serves(&format!("/{extra}/"), "v1").await;
    proxy.serves(&format!("/{service}/"), "v1").await;
    let after = proxy.haproxy.worker_pid().await;
    assert_ne!(before, after, "a new backend needs a reload (a new worker)");
    // Instances of a known service change with no further reload.
    client.deregister(&one.id).await.expect("deregister");
    let mut moved = one.clone();
    moved.id = format!("{extra}-2");
    client.register(&moved, None).await.expect("register");
    let listen = proxy.listen;
    let path = format!("/{extra}/");
    let path = &path;
    let state_of = format!("show servers state {extra}");
    let state_of = &state_of;
    eventually(patience(), || async move {
        let servers = proxy.haproxy.command(state_of)?;
        match http_get(listen, path).await {
            Ok(answer) if body(&answer).trim() == "v1" && servers.contains("-2 ") => Ok(()),
            other => Err(format!("{other:?}; {servers}")),
        }
    })
    .await;
    assert_eq!(proxy.haproxy.worker_pid().await, after, "no reload");
}
