//! Proxies following the registry: `cdctl template` (render, check, swap,
//! reload, report, guard, resume), deploys waiting for proxies and the
//! HAProxy example (zero downtime through nginx: `zero_downtime.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use switchyard_client::RegistryClient;
use switchyard_model::Color;
use switchyard_tests::docker::{LabelledContainers, TestImage, unique};
use switchyard_tests::process::explain;
use switchyard_tests::process::{AgentProcess, Background, RegistryProcess, binary, cdctl_async};
use switchyard_tests::{TestRegistry, eventually, instance, patience, workspace_root};

pub(crate) fn template_command(url: &str, template: &Path, out: &Path, extra: &[&str]) -> Command {
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

pub(crate) async fn proxy_status_of(
    client: &RegistryClient,
    proxy: &str,
) -> Option<switchyard_model::ProxyStatus> {
    let (proxies, _) = client.list_proxies().await.ok()?;
    proxies.into_iter().find(|p| p.proxy_id == proxy)
}

/// Waits until proxy `proxy` has applied `service`'s last flip.
pub(crate) async fn until_proxy_applied_flip(client: &RegistryClient, proxy: &str, service: &str) {
    eventually(patience(), || async move {
        let (_, live) = client
            .get_service(service)
            .await
            .map_err(|e| e.to_string())?;
        match proxy_status_of(client, proxy).await {
            Some(status) if status.applied_revision >= live.color_revision => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
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

/// `cdctl template` following `url` with `template` (its text) and `extra`
/// flags; its reload command appends a line to `reloads`.
struct Following {
    _dir: tempfile::TempDir,
    out: PathBuf,
    reloads: PathBuf,
    _template: Background,
}

fn follow(url: &str, template: &str, extra: &[&str]) -> Following {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("t.j2");
    std::fs::write(&source, template).expect("template");
    let out = dir.path().join("out");
    let reloads = dir.path().join("reloads");
    let reload = format!("echo reload >> {}", reloads.display());
    let mut flags = vec!["--reload", reload.as_str()];
    flags.extend_from_slice(extra);
    let template = Background::spawn(template_command(url, &source, &out, &flags));
    Following {
        _dir: dir,
        out,
        reloads,
        _template: template,
    }
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

/// A template that prints the revision (as the nginx example does) is not
/// reloaded for a change that alters nothing else, such as an instance of
/// the idle color arriving: that reload would only delay a flip right
/// behind it. The proxy still reports the new revision as applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_revision_alone_is_not_reloaded() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let client = registry.client();
    client
        .register(&instance("web", "w1", 8001, Some(Color::Blue)), None)
        .await
        .expect("register");
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    let following = follow(
        &url,
        "# revision {{ revision }}\n{% for i in services.web.live %}server {{ i.target }};\n{% endfor %}",
        &["--proxy-id", "edge-r", "--report-interval", "300ms"],
    );
    let (out, reloads) = (&following.out, &following.reloads);
    until_lines(reloads, 1).await;
    let first = read(out);

    // The idle color's instance: the live set is unchanged.
    let idle = client
        .register(&instance("web", "g1", 8101, Some(Color::Green)), None)
        .await
        .expect("register");
    let url_ref = &url;
    eventually(patience(), || async move {
        match proxy_status(url_ref, "edge-r").await {
            Some(status) if status.applied_revision >= idle && status.healthy => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(lines(reloads), 1, "a revision-only change was reloaded");
    assert_eq!(read(out), first, "a revision-only change was written");

    // The flip changes the live set: written with its revision, reloaded.
    let flip = client
        .set_active_color("web", Some(Color::Green), Some(Color::Blue), 0)
        .await
        .expect("flip");
    until_lines(reloads, 2).await;
    let text = read(out);
    assert!(
        text.starts_with(&format!("# revision {flip}\n")) && text.contains(":8101;"),
        "{text}"
    );
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
    let following = follow(
        &url,
        "{% for i in services.web.passing %}{{ i.target }}\n{% endfor %}",
        &["--wait", "1s:30s", "--proxy-id", "quiet-1"],
    );
    let (out, reloads) = (following.out.clone(), following.reloads.clone());
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
