//! The shipped proxy examples (`examples/`) rendered by `cdctl template`
//! and run by a real nginx and HAProxy in front of loopback upstreams (no
//! container): what each promises of retries and weights.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_client::RegistryClient;
use switchyard_model::Color;
use switchyard_tests::upstream::Upstream;
use switchyard_tests::{
    TestRegistry, body, eventually, free_port, http_request, instance, patience, workspace_root,
};

use super::haproxy_runtime::Haproxy;
use super::proxy::template_command;
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
        let mut render = template_command(url, &workspace_root().join(template), &conf, &["--once"]);
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
            _ => (None, Some(Haproxy::start(&conf, dir.path().join("master.sock")))),
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
