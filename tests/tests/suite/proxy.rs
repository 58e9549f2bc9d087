//! Proxies following the registry: `cdctl template` (render, check, swap,
//! reload, report, guard, resume), deploys waiting for proxies, the HAProxy
//! example, and zero downtime proven through a real nginx under load.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cd_registry::server::TlsFiles;
use switchyard_client::RegistryClient;
use switchyard_model::{Color, Health};
use switchyard_tests::docker::{LabelledContainers, TestImage, unique};
use switchyard_tests::load::Load;
use switchyard_tests::process::explain;
use switchyard_tests::process::{AgentProcess, Background, RegistryProcess, binary, cdctl_async};
use switchyard_tests::tls::{Access, TestPki, env_refs};
use switchyard_tests::{
    TestRegistry, body, eventually, http_get, instance, patience, workspace_root,
};

fn template_command(url: &str, template: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(binary("cdctl"));
    command
        .args(["--registry", url, "template", "--template"])
        .arg(template)
        .arg("--out")
        .arg(out)
        .args(extra);
    command
}

async fn proxy_status(url: &str, proxy: &str) -> Option<switchyard_model::ProxyStatus> {
    proxy_status_of(&RegistryClient::new(url).expect("url"), proxy).await
}

async fn proxy_status_of(
    client: &RegistryClient,
    proxy: &str,
) -> Option<switchyard_model::ProxyStatus> {
    let (proxies, _) = client.list_proxies().await.ok()?;
    proxies.into_iter().find(|p| p.proxy_id == proxy)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// Waits until `path` has exactly `expected` lines (a count that passes
/// it, or never reaches it, fails the test after patience()).
async fn until_lines(path: &Path, expected: usize) {
    eventually(patience(), || async move {
        match lines(path) {
            n if n == expected => Ok(()),
            n => Err(format!("{} has {n} lines, not {expected}", path.display())),
        }
    })
    .await;
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_renders_swaps_reloads_reports_and_guards() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let client = registry.client();
    client
        .register(&instance("web", "w1", 8001, Some(Color::Blue)), None)
        .await
        .expect("register");
    let current = client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("upstreams.j2");
    std::fs::write(
        &template,
        "{% for i in services.web.live %}server {{ i.target }};\n{% endfor %}",
    )
    .expect("template");
    let out = dir.path().join("upstreams.conf");
    let reloads = dir.path().join("reloads");
    let check = "! grep -q :9999 {path}".to_string();
    let reload = format!("echo reload >> {}", reloads.display());
    // The first URL has nothing behind it: the template fails over.
    let urls = format!("http://127.0.0.1:1,{url}");
    let _template = Background::spawn(template_command(
        &urls,
        &template,
        &out,
        &[
            "--check",
            &check,
            "--reload",
            &reload,
            "--proxy-id",
            "edge-1",
            "--report-interval",
            "300ms",
        ],
    ));

    let out_ref = &out;
    eventually(patience(), || async move {
        let text = read(out_ref);
        if text == "server 127.0.0.1:8001;\n" {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    // The reload runs after the file is swapped in: wait for it, then
    // check that it ran once.
    until_lines(&reloads, 1).await;
    let url_ref = &url;
    eventually(patience(), || async move {
        match proxy_status(url_ref, "edge-1").await {
            Some(status) if status.applied_revision >= current && status.healthy => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A change: re-rendered, swapped, reloaded once more.
    client
        .register(&instance("web", "w2", 8002, Some(Color::Blue)), None)
        .await
        .expect("register");
    eventually(patience(), || async move {
        if lines(out_ref) == 2 {
            Ok(())
        } else {
            Err(read(out_ref))
        }
    })
    .await;
    until_lines(&reloads, 2).await;

    // A change that does not alter the output: no write, no reload, but
    // the proxy still reports the new revision as applied.
    let unrelated = client
        .register(&instance("other", "o1", 7001, None), None)
        .await
        .expect("register");
    eventually(patience(), || async move {
        match proxy_status(url_ref, "edge-1").await {
            Some(status) if status.applied_revision >= unrelated => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(lines(&reloads), 2, "unchanged output is not reloaded");

    // The check refuses: the last good file stays, the proxy is unhealthy.
    client
        .register(&instance("web", "w3", 9999, Some(Color::Blue)), None)
        .await
        .expect("register");
    eventually(patience(), || async move {
        match proxy_status(url_ref, "edge-1").await {
            Some(status) if !status.healthy && status.message.contains("check") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(lines(&out), 2, "the last good file is kept");
    client.deregister("w3").await.expect("deregister");

    // Taking every backend away is refused without --allow-empty.
    client.deregister("w1").await.expect("deregister");
    client.deregister("w2").await.expect("deregister");
    eventually(patience(), || async move {
        match proxy_status(url_ref, "edge-1").await {
            Some(status) if !status.healthy && status.message.contains("every backend of web") => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // (w1's removal alone may have been applied: web still had w2 then.)
    assert!(lines(&out) >= 1, "the file was emptied: {:?}", read(&out));
    // As operators see it.
    let listed = switchyard_tests::process::cdctl_json(&url, &["proxies", "-o", "json"]);
    assert_eq!(listed[0]["proxy_id"], "edge-1", "{listed}");
    assert_eq!(listed[0]["healthy"], false, "{listed}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("switchyard-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_resumes_after_a_registry_restart_without_re_rendering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut registry = RegistryProcess::start(&data, &[]);
    let url = registry.url();
    let listen = registry.address.to_string();
    let client = RegistryClient::new(&url).expect("url");
    client
        .register(&instance("web", "w1", 8001, None), None)
        .await
        .expect("register");
    let template = dir.path().join("t.j2");
    std::fs::write(
        &template,
        "{% for i in services.web.passing %}{{ i.target }}\n{% endfor %}",
    )
    .expect("template");
    let out = dir.path().join("out.conf");
    let reloads = dir.path().join("reloads");
    let reload = format!("echo reload >> {}", reloads.display());
    let _template = Background::spawn(template_command(
        &url,
        &template,
        &out,
        &["--reload", &reload, "--proxy-id", "edge-2"],
    ));
    let reloads_ref = &reloads;
    eventually(patience(), || async move {
        if lines(reloads_ref) == 1 {
            Ok(())
        } else {
            Err("no first render yet".to_string())
        }
    })
    .await;

    assert!(registry.terminate().success());
    let _registry = RegistryProcess::start_on(&data, &listen, &[]);
    let revision = client
        .register(&instance("web", "w2", 8002, None), None)
        .await
        .expect("register after the restart");
    let url_ref = &url;
    eventually(patience(), || async move {
        match proxy_status(url_ref, "edge-2").await {
            Some(status) if status.applied_revision >= revision => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(lines(&out), 2);
    assert_eq!(
        lines(&reloads),
        2,
        "one reload for the one change: no storm on reconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_haproxy_example_renders_a_valid_config() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    for (id, port) in [("api:1", 9001), ("api:2", 9002)] {
        client
            .register(&instance("api-v1", id, port, Some(Color::Green)), None)
            .await
            .expect("register");
    }
    client
        .set_active_color("api-v1", Some(Color::Green), None, 0)
        .await
        .expect("flip");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("haproxy.cfg");
    let output: Output = Command::new(binary("cdctl"))
        .args([
            "--registry",
            &registry.url(),
            "template",
            "--once",
            "--template",
        ])
        .arg(workspace_root().join("examples/haproxy/haproxy.cfg.j2"))
        .arg("--out")
        .arg(&out)
        .args(["--check", "haproxy -c -q -f {path}"])
        .env("PROXY_LISTEN", "127.0.0.1:18080")
        .output()
        .expect("cdctl template --once");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = read(&out);
    assert!(config.contains("server api_1 127.0.0.1:9001"), "{config}");
    assert!(config.contains("backend api-v1"), "{config}");
}

/// nginx in a prefix of its own, stopped (with its workers) when dropped.
struct Nginx {
    prefix: PathBuf,
    master: std::process::Child,
}

impl Nginx {
    fn start(prefix: &Path) -> Self {
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

fn wait_proxies_ms(summary: &[u8]) -> Option<u64> {
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

    // nginx, configured by cdctl template.
    let prefix = tempfile::tempdir().expect("prefix");
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], switchyard_tests::free_port()));
    let conf = prefix.path().join("nginx.conf");
    let template = workspace_root().join("examples/nginx/nginx.conf.j2");
    let mut env = secured.proxy.env();
    env.extend([
        ("NGINX_PREFIX", prefix.path().to_string_lossy().into_owned()),
        ("PROXY_LISTEN", listen.to_string()),
    ]);
    let mut once = template_command(&url, &template, &conf, &["--once", "--proxy-id", "nginx-1"]);
    once.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    assert!(once.status().expect("first render").success());
    let _nginx = Nginx::start(prefix.path());
    let prefix_text = prefix.path().to_string_lossy().into_owned();
    let check = format!("nginx -t -q -p {prefix_text} -c {{path}}");
    let reload = format!(
        "{} {prefix_text} {listen}",
        workspace_root().join("examples/nginx/reload.sh").display()
    );
    let mut follow = template_command(
        &url,
        &template,
        &conf,
        &[
            "--check",
            &check,
            "--reload",
            &reload,
            "--proxy-id",
            "nginx-1",
            "--report-interval",
            "1s",
        ],
    );
    follow.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let _template = Background::spawn(follow);
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
    let proxy_url = format!("http://{listen}{path}");
    let promoted = cdctl_async(&url, &["-o", "json", "promote", &service], &as_deployer).await;
    assert_eq!(promoted.status.code(), Some(0), "{}", explain(&promoted));
    load.enter(2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.enter(3);
    let back = cdctl_async(&url, &["rollback", &service], &as_deployer).await;
    assert_eq!(back.status.code(), Some(0), "{}", explain(&back));
    // The rollback returns when the registry flipped; proxies follow.
    let service_ref = &service;
    eventually(patience(), || async move {
        let (_, live) = admin_ref
            .get_service(service_ref)
            .await
            .map_err(|e| e.to_string())?;
        match proxy_status_of(admin_ref, "nginx-1").await {
            Some(status) if status.applied_revision >= live.color_revision => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    load.enter(4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.enter(5);
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;

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

/// Step 9 waits for every reporting proxy: one that cannot apply the flip
/// fails the deploy (rolled back); one that went silent is not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_wait_for_reporting_proxies_and_skip_silent_ones() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = format!("switchyard.test={}", unique("proxywait"));
    let _agent = AgentProcess::start(&url, &label, &["--ttl", "5s"]);
    let _containers = LabelledContainers {
        label: label.clone(),
    };
    let (v1, v2) = (TestImage::httpd("v1", false), TestImage::httpd("v2", false));
    let service = unique("p");
    let base = |image: &str| -> Vec<String> {
        [
            "deploy",
            &service,
            "--image",
            image,
            "--port",
            "80",
            "--publish-ip",
            "127.0.0.1",
            "--label",
            &label,
            "--stop-timeout",
            "1s",
            "--proxy-timeout",
            "3s",
            "--proxy-stale",
            "2s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cdctl_async(&url, &args, &[]).await
        }
    };
    let first = run(base(&v1.tag)).await;
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));

    // A proxy whose check refuses everything: it reports, but never applies.
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("t.j2");
    std::fs::write(&template, "{{ revision }}\n").expect("template");
    let mut stuck = Background::spawn(template_command(
        &url,
        &template,
        &dir.path().join("out"),
        &[
            "--check",
            "false",
            "--proxy-id",
            "stuck-1",
            "--report-interval",
            "300ms",
        ],
    ));
    let url_ref = &url;
    eventually(patience(), || async move {
        proxy_status(url_ref, "stuck-1")
            .await
            .map(|_| ())
            .ok_or_else(|| "not reported".to_string())
    })
    .await;
    let blocked = run(base(&v2.tag)).await;
    assert_eq!(blocked.status.code(), Some(14), "{}", explain(&blocked));
    assert!(
        String::from_utf8_lossy(&blocked.stdout).contains("stuck-1"),
        "{}",
        explain(&blocked)
    );
    let (_, web) = registry
        .client()
        .get_service(&service)
        .await
        .expect("service");
    assert_eq!(web.active_color, Some(Color::Blue), "rolled back");

    // Silent for longer than --proxy-stale: not waited for, and said so.
    stuck.terminate();
    eventually(patience(), || async move {
        let client = RegistryClient::new(url_ref).expect("url");
        let (proxies, now) = client.list_proxies().await.map_err(|e| e.to_string())?;
        let silent = proxies
            .iter()
            .all(|p| now.saturating_sub(p.reported_at_ms) > 2_000);
        if silent {
            Ok(())
        } else {
            Err("still reporting".to_string())
        }
    })
    .await;
    let through = run(base(&v2.tag)).await;
    assert_eq!(through.status.code(), Some(0), "{}", explain(&through));
    let text = String::from_utf8_lossy(&through.stdout);
    assert!(
        text.contains("not waited for") && text.contains("stuck-1"),
        "{text}"
    );
}

/// Quiescence: a burst of changes closer together than MIN is rendered (and
/// reloaded) once, not once per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_is_rendered_once_after_the_quiet_period() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let client = registry.client();
    client
        .register(&instance("web", "b0", 8000, None), None)
        .await
        .expect("register");
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("t.j2");
    std::fs::write(
        &template,
        "{% for i in services.web.passing %}{{ i.target }}\n{% endfor %}",
    )
    .expect("template");
    let out = dir.path().join("out");
    let reloads = dir.path().join("reloads");
    let reload = format!("echo reload >> {}", reloads.display());
    let _template = Background::spawn(template_command(
        &url,
        &template,
        &out,
        &[
            "--reload",
            &reload,
            "--wait",
            "1s:30s",
            "--proxy-id",
            "quiet-1",
        ],
    ));
    let reloads_ref = &reloads;
    eventually(patience(), || async move {
        if lines(reloads_ref) == 1 {
            Ok(())
        } else {
            Err("no first render".to_string())
        }
    })
    .await;
    // Five changes back to back: well within one quiet period.
    let mut last = 0;
    for n in 1..=5 {
        last = client
            .register(&instance("web", &format!("b{n}"), 8000 + n, None), None)
            .await
            .expect("register");
    }
    // The proxy reports a revision as applied only after its reload ran.
    let url_ref = &url;
    eventually(patience(), || async move {
        match proxy_status(url_ref, "quiet-1").await {
            Some(status) if status.applied_revision >= last => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(lines(&out), 6, "{}", read(&out));
    assert_eq!(lines(&reloads), 2, "the burst was rendered once");
}
