//! The shipped proxy examples (`examples/`) rendered by `cdctl template`
//! and run by a real nginx and HAProxy in front of loopback upstreams (no
//! container): what each promises of retries and weights.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_client::RegistryClient;
use switchyard_model::Color;
use switchyard_tests::upstream::Upstream;
use switchyard_tests::{
    TestRegistry, body, eventually, free_port, http_request, http_request_with, instance, patience,
    workspace_root,
};

use super::haproxy_runtime::{Haproxy, RuntimeProxy};
use super::proxy::{proxy_status_of, template_command};
use super::zero_downtime::Nginx;

/// Which shipped example a proxy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Example {
    Nginx,
    Haproxy,
    HaproxyRuntime,
}

/// A proxy started once from `cdctl template --once` of an example.
pub(crate) struct ExampleProxy {
    pub listen: SocketAddr,
    _nginx: Option<Nginx>,
    _haproxy: Option<Haproxy>,
    _dir: tempfile::TempDir,
}

impl ExampleProxy {
    pub(crate) async fn start(url: &str, example: Example) -> Self {
        let dir = tempfile::tempdir().expect("a folder for the proxy");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (template, conf) = match example {
            Example::Nginx => ("examples/nginx/nginx.conf.j2", "nginx.conf"),
            Example::Haproxy => ("examples/haproxy/haproxy.cfg.j2", "haproxy.cfg"),
            Example::HaproxyRuntime => ("examples/haproxy-runtime/haproxy.cfg.j2", "haproxy.cfg"),
        };
        let conf = dir.path().join(conf);
        let mut render =
            template_command(url, &workspace_root().join(template), &conf, &["--once"]);
        render
            .env("PROXY_LISTEN", listen.to_string())
            .env("NGINX_PREFIX", dir.path())
            .env("HAPROXY_SOCKET", dir.path().join("admin.sock"));
        let rendered = render.output().expect("cdctl template --once");
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let (nginx, haproxy) = match example {
            Example::Nginx => (Some(Nginx::start(dir.path())), None),
            _ => (
                None,
                Some(Haproxy::start(&conf, dir.path().join("master.sock"))),
            ),
        };
        ExampleProxy {
            listen,
            _nginx: nginx,
            _haproxy: haproxy,
            _dir: dir,
        }
    }

    /// `METHOD path` through the proxy, answered within 5 s.
    pub(crate) async fn request(&self, method: &str, path: &str) -> Result<String, String> {
        http_request(self.listen, method, path, Duration::from_secs(5)).await
    }

    /// The body of `GET path` with `headers`; 200 or an error.
    pub(crate) async fn body_of(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<String, String> {
        let answer =
            http_request_with(self.listen, "GET", path, headers, Duration::from_secs(5)).await?;
        match answer.starts_with("HTTP/1.1 200") {
            true => Ok(body(&answer).trim().to_string()),
            false => Err(answer),
        }
    }

    /// Waits until the proxy answers `path` with 200.
    pub(crate) async fn until_serving(&self, path: &str) {
        eventually(patience(), || async move {
            match self.request("GET", path).await {
                Ok(answer) if answer.starts_with("HTTP/1.1 200") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
}

/// Registers `upstream` as a passing instance `id` of `service` in `color`.
pub(crate) async fn register(
    client: &RegistryClient,
    service: &str,
    id: &str,
    color: Color,
    upstream: &Upstream,
) {
    client
        .register(
            &instance(service, id, upstream.address.port(), Some(color)),
            None,
        )
        .await
        .expect("register an upstream");
}

/// Behind both HAProxy examples, a server that takes the connection and
/// closes it without answering (what an instance starting or stopping
/// behind Docker's port proxy does) costs no GET: HAProxy sends it to the
/// other server. A POST is not sent twice: it gets the 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_examples_retry_safe_requests_on_a_server_that_closes_without_answering() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let (good, mute) = (Upstream::answering("ok\n").await, Upstream::mute().await);
    register(&client, "api", "api:good", Color::Blue, &good).await;
    register(&client, "api", "api:mute", Color::Blue, &mute).await;
    client
        .set_active_color("api", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    for example in [Example::Haproxy, Example::HaproxyRuntime] {
        let proxy = ExampleProxy::start(&registry.url(), example).await;
        proxy.until_serving("/api/").await;
        let before = mute.hits();
        for _ in 0..40 {
            let answer = proxy.request("GET", "/api/").await;
            let answer = answer.unwrap_or_else(|e| panic!("{example:?}: {e}"));
            assert!(answer.starts_with("HTTP/1.1 200"), "{example:?}: {answer}");
            assert_eq!(body(&answer), "ok\n", "{example:?}");
        }
        assert!(
            mute.hits() > before,
            "{example:?}: round robin never tried the mute server"
        );
        let mut refused = 0;
        for _ in 0..10 {
            let answer = proxy.request("POST", "/api/").await;
            let answer = answer.unwrap_or_else(|e| panic!("{example:?}: {e}"));
            refused += usize::from(answer.starts_with("HTTP/1.1 502"));
        }
        assert!(
            refused > 0,
            "{example:?}: a POST was retried on another server"
        );
    }
}

/// Blue (2 upstreams) and green (1) of `service` in the registry, blue
/// live, and the upstreams answering their color.
pub(crate) async fn two_colors(client: &RegistryClient, service: &str) -> Vec<Upstream> {
    let mut upstreams = Vec::new();
    for (id, color) in [
        ("b1", Color::Blue),
        ("b2", Color::Blue),
        ("g1", Color::Green),
    ] {
        let upstream = Upstream::answering(&format!("{color}\n")).await;
        register(
            client,
            service,
            &format!("{service}:{id}"),
            color,
            &upstream,
        )
        .await;
        upstreams.push(upstream);
    }
    client
        .set_active_color(service, Some(Color::Blue), None, 0)
        .await
        .expect("blue live");
    upstreams
}

/// The percent of `count` GETs of `path` through `listen` answered `green`;
/// every request must be answered.
pub(crate) async fn green_share(listen: SocketAddr, path: &str, count: u32) -> f64 {
    let mut green = 0_u32;
    for _ in 0..count {
        let answer = http_request(listen, "GET", path, Duration::from_secs(5)).await;
        let answer = answer.unwrap_or_else(|e| panic!("{listen}{path}: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        green += u32::from(body(&answer).trim() == "green");
    }
    100.0 * f64::from(green) / f64::from(count)
}

/// A canary at 10 % through each example, with 2 blue servers and 1 green:
/// 2,000 requests see green within 5 points of 10 %. The preview header or
/// cookie gets the color it names, whatever the weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_splits_by_canary_weight_and_previews_a_color() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let _upstreams = two_colors(&client, "web").await;
    client
        .set_canary_weight("web", (10, false), 0, Some(Color::Blue), 0)
        .await
        .expect("10% to green");
    for example in [Example::Nginx, Example::Haproxy, Example::HaproxyRuntime] {
        let proxy = ExampleProxy::start(&registry.url(), example).await;
        proxy.until_serving("/web/").await;
        let share = green_share(proxy.listen, "/web/", 2_000).await;
        println!("{example:?}: canary 10%, green answered {share:.1}% of 2,000");
        assert!(
            (share - 10.0).abs() <= 5.0,
            "{example:?}: green {share:.1}%"
        );
        for (headers, color) in [
            (&[("X-Switchyard-Color", "green")][..], "green"),
            (&[("Cookie", "switchyard-color=green")][..], "green"),
            (&[("X-Switchyard-Color", "blue")][..], "blue"),
        ] {
            for _ in 0..20 {
                let answer = proxy.body_of("/web/", headers).await;
                assert_eq!(answer.as_deref(), Ok(color), "{example:?} {headers:?}");
            }
        }
    }
}

/// Waits until proxy `proxy` reports it applied `revision`.
pub(crate) async fn until_applied(client: &RegistryClient, proxy: &str, revision: u64) {
    eventually(patience(), || async move {
        match proxy_status_of(client, proxy).await {
            Some(status) if status.applied_revision >= revision && status.healthy => Ok(()),
            other => Err(format!("waiting for revision {revision}: {other:?}")),
        }
    })
    .await;
}

/// HAProxy in runtime mode follows canary steps with `set weight`, no
/// reload: 10 %, then 50 % of 2,000 requests each go to green (within 5
/// points), and the flip that ends the canary sends everything there; the
/// worker is the same process throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_runtime_mode_follows_canary_steps_without_a_reload() {
    let registry = TestRegistry::start().await;
    let (client, url) = (registry.client(), registry.url());
    let _upstreams = two_colors(&client, "web").await;
    let proxy = RuntimeProxy::start(&url, "canary-proxy", &[]).await;
    proxy.serves("/web/", "blue").await;
    let pid = proxy.haproxy.worker_pid().await;
    let mut weight = 0;
    for step in [10_u8, 50] {
        let revision = client
            .set_canary_weight("web", (step, false), weight, Some(Color::Blue), 0)
            .await
            .expect("a canary step");
        weight = step;
        until_applied(&client, "canary-proxy", revision).await;
        let share = green_share(proxy.listen, "/web/", 2_000).await;
        println!("runtime mode: canary {step}%, green answered {share:.1}% of 2,000");
        assert!(
            (share - f64::from(step)).abs() <= 5.0,
            "step {step}%: green {share:.1}%"
        );
    }
    let flip = client
        .set_active_color("web", Some(Color::Green), Some(Color::Blue), 0)
        .await
        .expect("flip");
    until_applied(&client, "canary-proxy", flip).await;
    assert_eq!(green_share(proxy.listen, "/web/", 200).await, 100.0);
    assert_eq!(proxy.haproxy.worker_pid().await, pid, "HAProxy reloaded");
}

/// One client with a cookie jar of one cookie: `count` GETs of `path`,
/// sending back the `switchyard-client` cookie the proxy set; answers the
/// versions it saw.
async fn client_versions(listen: SocketAddr, path: &str, count: usize) -> Vec<String> {
    let mut cookie: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..count {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        let answer = http_request_with(listen, "GET", path, &headers, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{listen}{path}: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        if cookie.is_none() {
            cookie = answer
                .lines()
                .filter_map(|line| line.split_once(':'))
                .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
                .filter_map(|(_, value)| value.trim().split(';').next())
                .find(|pair| pair.starts_with("switchyard-client="))
                .map(str::to_string);
            assert!(cookie.is_some(), "no switchyard-client cookie: {answer}");
        }
        seen.push(body(&answer).trim().to_string());
    }
    seen
}

/// A sticky canary at 50 % through each example: each of 20 clients sees
/// one version on all its 10 requests (its cookie is hashed), and the
/// clients between them see both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_canary_keeps_each_client_on_one_version_in_every_example() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let _upstreams = two_colors(&client, "web").await;
    client
        .set_canary_weight("web", (50, true), 0, Some(Color::Blue), 0)
        .await
        .expect("a sticky 50% canary");
    assert!(
        client
            .get_service("web")
            .await
            .expect("web")
            .1
            .canary_sticky
    );
    for example in [Example::Nginx, Example::Haproxy, Example::HaproxyRuntime] {
        let proxy = ExampleProxy::start(&registry.url(), example).await;
        proxy.until_serving("/web/").await;
        let mut versions = std::collections::BTreeSet::new();
        for n in 0..20 {
            let seen = client_versions(proxy.listen, "/web/", 10).await;
            assert!(
                seen.iter().all(|v| *v == seen[0]),
                "{example:?}: client {n} saw {seen:?}"
            );
            versions.insert(seen[0].clone());
        }
        assert_eq!(
            versions.len(),
            2,
            "{example:?}: 20 clients saw only {versions:?}"
        );
    }
}
