//! Zero downtime proven through a real nginx under load, with `--auth` and
//! mutual TLS on: a paused deploy, its promotion, a rollback and a deploy
//! whose post-test fails drop no request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cd_registry::server::TlsFiles;
use switchyard_client::RegistryClient;
use switchyard_model::{Color, Health};
use switchyard_tests::docker::{LabelledContainers, TestImage, unique};
use switchyard_tests::load::{Connections, Load};
use switchyard_tests::process::explain;
use switchyard_tests::process::{AgentProcess, Background, cdctl_async};
use switchyard_tests::tls::{Access, TestPki, env_refs};
use switchyard_tests::{TestRegistry, body, eventually, http_get, patience, workspace_root};

use super::proxy::{proxy_status_of, template_command, until_proxy_applied_flip};

/// nginx in a prefix of its own, stopped (with its workers) when dropped.
pub(crate) struct Nginx {
    prefix: PathBuf,
    master: std::process::Child,
}

impl Nginx {
    pub(crate) fn start(prefix: &Path) -> Self {
        let conf = prefix.join("nginx.conf");
        let master = Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .spawn()
            .expect("starting nginx (install nginx-light)");
        Nginx {
            prefix: prefix.to_path_buf(),
            master,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.master.id().to_string()])
            .status();
        let _ = self.master.wait();
        let _ = std::fs::remove_file(self.prefix.join("nginx.pid"));
    }
}

/// nginx configured by `cdctl template` from the shipped example, following
/// the registry (reloaded on every change) and reporting as `proxy_id`.
pub(crate) struct FollowingNginx {
    pub listen: std::net::SocketAddr,
    _template: Background,
    _nginx: Nginx,
    _prefix: tempfile::TempDir,
}

impl FollowingNginx {
    /// `env` is given to `cdctl template` (credentials, TLS files).
    pub(crate) fn start(url: &str, proxy_id: &str, mut env: Vec<(&'static str, String)>) -> Self {
        let prefix = tempfile::tempdir().expect("prefix");
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], switchyard_tests::free_port()));
        let conf = prefix.path().join("nginx.conf");
        let template = workspace_root().join("examples/nginx/nginx.conf.j2");
        env.extend([
            ("NGINX_PREFIX", prefix.path().to_string_lossy().into_owned()),
            ("PROXY_LISTEN", listen.to_string()),
        ]);
        let mut once = template_command(url, &template, &conf, &["--once", "--proxy-id", proxy_id]);
        once.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        assert!(once.status().expect("first render").success());
        let nginx = Nginx::start(prefix.path());
        let prefix_text = prefix.path().to_string_lossy().into_owned();
        let check = format!("nginx -t -q -p {prefix_text} -c {{path}}");
        let reload = format!(
            "{} {prefix_text} {listen}",
            workspace_root().join("examples/nginx/reload.sh").display()
        );
        let flags = [
            "--check",
            &check,
            "--reload",
            &reload,
            "--proxy-id",
            proxy_id,
            "--report-interval",
            "1s",
        ];
        let mut follow = template_command(url, &template, &conf, &flags);
        follow.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        FollowingNginx {
            listen,
            _template: Background::spawn(follow),
            _nginx: nginx,
            _prefix: prefix,
        }
    }
}

/// The duration of step 9 (wait proxies) in a deploy's JSON summary.
pub(crate) fn wait_proxies_ms(summary: &[u8]) -> Option<u64> {
    let summary: serde_json::Value = serde_json::from_slice(summary).ok()?;
    summary["steps"]
        .as_array()?
        .iter()
        .find(|step| step["name"] == "wait proxies")?["duration_ms"]
        .as_u64()
}

/// A registry with `--auth` and mutual TLS, and the access of each party
/// as its own token file: the admin, an agent of node `nginx-node`, the
/// proxy `nginx-1`, and a deployer limited to `service`.
struct Secured {
    _registry: TestRegistry,
    url: String,
    admin: Access,
    agent: Access,
    proxy: Access,
    deployer: Access,
    _pki: TestPki,
}

impl Secured {
    async fn start(service: &str) -> Self {
        let pki = TestPki::new("nginx");
        let server = pki.server("registry");
        let admin_file = pki.dir().join("admin.token");
        let tls = TlsFiles {
            cert: server.cert,
            key: server.key,
            client_ca: Some(pki.ca.clone()),
            client_crl: None,
            require_client_cert: true,
        };
        let registry = TestRegistry::start_with(|config| {
            config.auth = true;
            config.bootstrap_token_file = Some(admin_file.clone());
            config.tls = Some(tls);
        })
        .await;
        let url = format!("https://{}", registry.address);
        let written = &admin_file;
        eventually(patience(), || async move {
            match std::fs::read_to_string(written) {
                Ok(token) if !token.is_empty() => Ok(()),
                other => Err(format!("no bootstrap token yet: {other:?}")),
            }
        })
        .await;
        let admin = Access {
            ca: pki.ca.clone(),
            identity: Some(pki.client("client")),
            token_file: Some(admin_file),
        };
        let as_admin = admin.client_when_serving(&url, patience()).await;
        Secured {
            agent: holding(&admin, &as_admin, "agent", Some("nginx-node"), &[]).await,
            proxy: holding(&admin, &as_admin, "proxy", Some("nginx-1"), &[]).await,
            deployer: holding(&admin, &as_admin, "deployer", None, &[service]).await,
            admin,
            _registry: registry,
            url,
            _pki: pki,
        }
    }
}

/// `access` with a new token of `role`, made by `admin`, in a file beside
/// the CA.
async fn holding(
    access: &Access,
    admin: &RegistryClient,
    role: &str,
    binding: Option<&str>,
    services: &[&str],
) -> Access {
    let token = super::auth::token(admin, role, binding, services).await;
    let dir = access.ca.parent().expect("the PKI's folder");
    let file = dir.join(format!("{role}.token"));
    std::fs::write(&file, token).expect("writing a token");
    access.with_token(file)
}

/// The pipeline end to end under load, with `--auth` and mutual TLS on and
/// each party holding only its own role: registry, agent, nginx rendered by
/// `cdctl template`, v1 live; deploy v2 (paused for promotion, then
/// promoted), roll back, and a deploy whose post-test fails — with zero
/// failed requests and the right version in every phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_downtime_through_nginx() {
    let _heavy = switchyard_tests::docker::exclusive();
    let service = unique("z");
    let secured = Secured::start(&service).await;
    let url = secured.url.clone();
    let label = format!("switchyard.test={}", unique("nginx"));
    let agent_env = secured.agent.env();
    let _agent = AgentProcess::start_with_env(
        &url,
        &label,
        &["--ttl", "5s", "--node", "nginx-node"],
        &env_refs(&agent_env),
    );
    let _containers = LabelledContainers {
        label: label.clone(),
    };
    let deployer_env = secured.deployer.env();
    let as_deployer = env_refs(&deployer_env);
    let (v1, v2) = (TestImage::httpd("v1", false), TestImage::httpd("v2", false));
    let deploy = |image: String, extra: Vec<String>| {
        let (url, as_deployer) = (url.clone(), as_deployer.clone());
        let mut args: Vec<String> = vec![
            "-o".into(),
            "json".into(),
            "deploy".into(),
            service.clone(),
            "--image".into(),
            image,
            "--port".into(),
            "80".into(),
            "--publish-ip".into(),
            "127.0.0.1".into(),
            "--label".into(),
            label.clone(),
            "--stop-timeout".into(),
            "1s".into(),
        ];
        args.extend(extra);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cdctl_async(&url, &args, &as_deployer).await
        }
    };
    let first = deploy(v1.tag.clone(), vec!["--replicas".into(), "2".into()]).await;
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));

    let nginx = FollowingNginx::start(&url, "nginx-1", secured.proxy.env());
    let listen = nginx.listen;
    let path = format!("/{service}/");
    eventually(patience(), || {
        let path = path.clone();
        async move {
            match http_get(listen, &path).await {
                Ok(response) if body(&response).trim() == "v1" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let admin = secured.admin.client(&url);
    let admin_ref = &admin;
    eventually(patience(), || async move {
        match proxy_status_of(admin_ref, "nginx-1").await {
            Some(status) if status.healthy && status.applied_revision > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Phases: 0 paused before the flip, 1 promoting, 2 promoted, 3 rolling
    // back, 4 rolled back, 5 a deploy whose post-test fails, 6 after it.
    let load = Load::start(listen, &path, 4);
    // Keep-alive clients that never retry, as connection pools are: their
    // figure through nginx reloads is printed, not asserted (each reload
    // closes the old workers' idle connections; see the README).
    let kept = Load::start_with(listen, &path, 4, Connections::KeepAlive);

    let paused = deploy(
        v2.tag.clone(),
        vec![
            "--replicas".into(),
            "2".into(),
            "--keep-old".into(),
            "--manual-promotion".into(),
        ],
    )
    .await;
    assert_eq!(paused.status.code(), Some(0), "{}", explain(&paused));
    tokio::time::sleep(Duration::from_millis(500)).await; // traffic while paused
    load.enter(1);
    kept.enter(1);
    let proxy_url = format!("http://{listen}{path}");
    let promoted = cdctl_async(&url, &["-o", "json", "promote", &service], &as_deployer).await;
    assert_eq!(promoted.status.code(), Some(0), "{}", explain(&promoted));
    load.enter(2);
    kept.enter(2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.enter(3);
    kept.enter(3);
    let back = cdctl_async(&url, &["rollback", &service], &as_deployer).await;
    assert_eq!(back.status.code(), Some(0), "{}", explain(&back));
    // The rollback returns when the registry flipped; proxies follow.
    until_proxy_applied_flip(admin_ref, "nginx-1", &service).await;
    load.enter(4);
    kept.enter(4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.enter(5);
    kept.enter(5);
    let post_test = format!("busybox wget -qO- {proxy_url} | grep -q never-this-version");
    let failing = deploy(
        v2.tag.clone(),
        vec![
            "--replicas".into(),
            "2".into(),
            "--proxy-url".into(),
            proxy_url.clone(),
            "--post-test".into(),
            post_test,
        ],
    )
    .await;
    assert_eq!(failing.status.code(), Some(12), "{}", explain(&failing));
    load.enter(6);
    kept.enter(6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    let kept = kept.finish().await;
    println!(
        "nginx keep-alive: {} of {} requests failed ({:?})",
        kept.failures.len(),
        kept.total,
        &kept.failures[..kept.failures.len().min(3)]
    );
    assert!(kept.total > 0, "the keep-alive clients sent nothing");

    println!(
        "zero downtime: {} requests through nginx; flip to all proxies applied: {:?} ms",
        tally.total,
        wait_proxies_ms(&promoted.stdout)
    );
    println!("versions by phase: {:?}", tally.versions);
    assert!(
        tally.failures.is_empty(),
        "{} failed requests: {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    let only = |phase: u8, version: &str| {
        let seen = tally.versions.get(&phase).cloned().unwrap_or_default();
        assert!(!seen.is_empty(), "no traffic in phase {phase}");
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            [version],
            "phase {phase}: {seen:?}"
        );
    };
    only(0, "v1"); // no v2 before the flip (step 8)
    only(2, "v2");
    only(4, "v1");
    only(6, "v1");
    let final_state = admin.get_service(&service).await.expect("service").1;
    assert_eq!(final_state.active_color, Some(Color::Blue));
    assert!(
        final_state
            .live_instances()
            .all(|i| i.health == Health::Passing)
    );
}
