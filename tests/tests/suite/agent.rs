//! `cd-agent` against the real Docker engine and a real registry: containers
//! labelled (or registrator-style) appear with the right address, port,
//! color and health, and disappear when they stop; the agent converges after
//! it, the registry or the Docker event stream was away; its own exits.

use switchyard_model::{Color, Health, Instance};
use switchyard_tests::docker::{
    SocketProxy, TestContainer, TestImage, TestNetwork, docker, docker_ok, unique,
};
use switchyard_tests::process::{AgentProcess, RegistryProcess, cdctl_json};
use switchyard_tests::{TestRegistry, eventually, http_get, patience, workspace_root};

fn test_label() -> String {
    format!("switchyard.test={}", unique("agent"))
}

async fn instances(url: &str, service: &str) -> Vec<Instance> {
    let client = switchyard_client::RegistryClient::new(url).expect("url");
    match client.get_service(service).await {
        Ok((_, service)) => service.instances,
        Err(_) => Vec::new(),
    }
}

/// Waits until `service`'s instances satisfy `check`; answers them.
async fn wait_until(
    url: &str,
    service: &str,
    what: &str,
    check: impl Fn(&[Instance]) -> bool,
) -> Vec<Instance> {
    let check = &check;
    eventually(patience(), || async move {
        let found = instances(url, service).await;
        if check(&found) {
            Ok(found)
        } else {
            Err(format!("{service}: waiting for {what}; have {found:?}"))
        }
    })
    .await
}

fn has(instances: &[Instance], id: &str, health: Health) -> bool {
    instances.iter().any(|i| i.id == id && i.health == health)
}

fn lacks(instances: &[Instance], id: &str) -> bool {
    !instances.iter().any(|i| i.id == id)
}

fn run_web(image: &TestImage, label: &str, color: &str) -> TestContainer {
    TestContainer::run(&[
        "-l",
        label,
        "-l",
        "switchyard.service=web",
        "-l",
        &format!("switchyard.color={color}"),
        "-p",
        "127.0.0.1::80",
        &image.tag,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_register_with_address_port_color_and_follow_their_state() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let _agent = AgentProcess::start(&url, &label, &["--ttl", "5s"]);

    let blue = run_web(&image, &label, "blue");
    let id = blue.short_id().to_string();
    wait_until(&url, "web", "the container passing", |found| {
        has(found, &id, Health::Passing)
    })
    .await;

    // As a user sees it.
    let status = cdctl_json(&url, &["status", "web", "-o", "json"]);
    let shown = &status["instances"][0];
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["address"], "127.0.0.1");
    assert_eq!(shown["port"], u64::from(blue.published_port()));
    assert_eq!(shown["color"], "blue");
    assert_eq!(shown["health"], "passing");

    blue.docker("pause");
    wait_until(&url, "web", "paused → critical", |f| {
        has(f, &id, Health::Critical)
    })
    .await;
    blue.docker("unpause");
    wait_until(&url, "web", "unpaused → passing", |f| {
        has(f, &id, Health::Passing)
    })
    .await;
    blue.docker("stop");
    wait_until(&url, "web", "stopped → gone", |f| lacks(f, &id)).await;

    let green = run_web(&image, &label, "green");
    let green_id = green.short_id().to_string();
    let found = wait_until(&url, "web", "green passing", |f| {
        has(f, &green_id, Health::Passing)
    })
    .await;
    assert_eq!(found[0].color, Some(Color::Green));
    green.docker("kill");
    wait_until(&url, "web", "killed → gone", |f| lacks(f, &green_id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_healthchecks_decide_health() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", true);
    let _agent = AgentProcess::start(&url, &label, &[]);
    let container = run_web(&image, &label, "blue");
    let id = container.short_id().to_string();

    // Starting, then unhealthy (no /www/healthy yet): never passing.
    let found = wait_until(&url, "web", "registered", |f| !lacks(f, &id)).await;
    assert_eq!(found[0].health, Health::Critical, "starting is not passing");
    container.exec(&["/bin/busybox", "touch", "/www/healthy"]);
    wait_until(&url, "web", "healthy → passing", |f| {
        has(f, &id, Health::Passing)
    })
    .await;
    container.exec(&["/bin/busybox", "rm", "/www/healthy"]);
    wait_until(&url, "web", "unhealthy → critical", |f| {
        has(f, &id, Health::Critical)
    })
    .await;
    container.exec(&["/bin/busybox", "touch", "/www/healthy"]);
    wait_until(&url, "web", "healthy again → passing", |f| {
        has(f, &id, Health::Passing)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_run_http_checks_decide_health_without_a_healthcheck() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let _agent = AgentProcess::start(&url, &label, &[]);
    let container = TestContainer::run(&[
        "-l",
        &label,
        "-l",
        "switchyard.service=web",
        "-l",
        "switchyard.check.http=/ready",
        "-l",
        "switchyard.check.interval=300ms",
        "-p",
        "127.0.0.1::80",
        &image.tag,
    ]);
    let id = container.short_id().to_string();
    let found = wait_until(&url, "web", "registered", |f| !lacks(f, &id)).await;
    assert_eq!(found[0].health, Health::Critical, "/ready is missing: 404");
    container.exec(&["/bin/busybox", "touch", "/www/ready"]);
    wait_until(&url, "web", "check passes", |f| {
        has(f, &id, Health::Passing)
    })
    .await;
    container.exec(&["/bin/busybox", "rm", "/www/ready"]);
    wait_until(&url, "web", "check fails", |f| {
        has(f, &id, Health::Critical)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrator_style_containers_register_and_service_ignore_is_honoured() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let _agent = AgentProcess::start(&url, &label, &[]);
    let ignored = TestContainer::run(&[
        "-l",
        &label,
        "-e",
        "SERVICE_NAME=legacy",
        "-e",
        "SERVICE_IGNORE=true",
        "-p",
        "127.0.0.1::80",
        &image.tag,
    ]);
    let legacy = TestContainer::run(&[
        "-l",
        &label,
        "-e",
        "SERVICE_NAME=legacy",
        "-e",
        "SERVICE_TAGS=old,http",
        "-p",
        "127.0.0.1::80",
        &image.tag,
    ]);
    let id = legacy.short_id().to_string();
    let found = wait_until(&url, "legacy", "registered", |f| !lacks(f, &id)).await;
    // The ignored one started first, so the agent has already passed over it.
    assert!(
        lacks(&found, ignored.short_id()),
        "SERVICE_IGNORE registered: {found:?}"
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].tags, ["old", "http"]);
    assert_eq!(
        found[0].color, None,
        "no color label: registered without a color"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_late_registers_what_runs_and_drops_what_stopped() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let first = run_web(&image, &label, "blue");
    let second = run_web(&image, &label, "blue");
    let (a, b) = (first.short_id().to_string(), second.short_id().to_string());

    let mut agent = AgentProcess::start(&url, &label, &["--keep-on-exit", "--node", "late-node"]);
    wait_until(&url, "web", "both registered", |f| {
        !lacks(f, &a) && !lacks(f, &b)
    })
    .await;
    assert!(agent.terminate().success());
    // --keep-on-exit: still there after the agent is gone.
    assert!(!lacks(&instances(&url, "web").await, &a));

    second.docker("stop");
    let _agent = AgentProcess::start(&url, &label, &["--node", "late-node"]);
    wait_until(&url, "web", "the stopped one dropped", |f| {
        !lacks(f, &a) && lacks(f, &b)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_converges_after_the_registry_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut registry = RegistryProcess::start(&data, &[]);
    let url = registry.url();
    let listen = registry.address.to_string();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let _agent = AgentProcess::start(&url, &label, &["--ttl", "3s"]);
    let first = run_web(&image, &label, "blue");
    let a = first.short_id().to_string();
    wait_until(&url, "web", "registered", |f| !lacks(f, &a)).await;

    assert!(registry.terminate().success());
    first.docker("stop");
    let second = run_web(&image, &label, "blue");
    let b = second.short_id().to_string();
    let _registry = RegistryProcess::start_on(&data, &listen, &[]);
    wait_until(&url, "web", "converged", |f| {
        lacks(f, &a) && has(f, &b, Health::Passing)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_converges_after_the_docker_event_stream_is_cut() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = SocketProxy::start(&dir.path().join("docker.sock"));
    let docker_host = proxy.docker_host();
    let _agent = AgentProcess::start_with_env(&url, &label, &[], &[("DOCKER_HOST", &docker_host)]);
    let first = run_web(&image, &label, "blue");
    let a = first.short_id().to_string();
    wait_until(&url, "web", "registered through the proxy", |f| {
        !lacks(f, &a)
    })
    .await;

    proxy.cut();
    first.docker("stop");
    let second = run_web(&image, &label, "green");
    let b = second.short_id().to_string();
    proxy.resume();
    wait_until(&url, "web", "converged after reconnecting", |f| {
        lacks(f, &a) && has(f, &b, Health::Passing)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deregisters_at_once_and_kill_9_expires_after_the_ttl() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let container = run_web(&image, &label, "blue");
    let id = container.short_id().to_string();

    let mut agent = AgentProcess::start(&url, &label, &["--ttl", "2s"]);
    wait_until(&url, "web", "registered", |f| !lacks(f, &id)).await;
    assert!(agent.terminate().success());
    assert!(
        lacks(&instances(&url, "web").await, &id),
        "SIGTERM deregisters before exiting"
    );

    let mut agent = AgentProcess::start(&url, &label, &["--ttl", "2s"]);
    wait_until(&url, "web", "registered again", |f| !lacks(f, &id)).await;
    agent.kill_9();
    assert!(
        !lacks(&instances(&url, "web").await, &id),
        "kill -9 leaves it until the TTL"
    );
    wait_until(&url, "web", "expired with the session", |f| lacks(f, &id)).await;
}

/// `docker stop` sends the container's stop signal and waits: the agent
/// deregisters it at that signal, while it still runs, so proxies stop
/// sending it requests before it exits (here it ignores the signal and
/// runs until the stop timeout kills it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_container_leaves_the_registry_at_its_stop_signal() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let container = TestContainer::run(&[
        "-l",
        &label,
        "-l",
        "switchyard.service=web",
        "--stop-signal",
        "SIGWINCH",
        "-p",
        "127.0.0.1::80",
        &image.tag,
    ]);
    let id = container.short_id().to_string();
    let _agent = AgentProcess::start(&url, &label, &["--ttl", "5s"]);
    wait_until(&url, "web", "registered", |f| !lacks(f, &id)).await;
    let stopping = id.clone();
    let stop = std::thread::spawn(move || docker(&["stop", "-t", "8", &stopping]));
    wait_until(&url, "web", "deregistered at the stop signal", |f| {
        lacks(f, &id)
    })
    .await;
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &id]),
        "true",
        "the container still runs: only its stop signal was sent"
    );
    assert!(stop.join().expect("docker stop").status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_mode_registers_container_ips_on_a_user_network() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let network = TestNetwork::create(&[]);
    let _agent = AgentProcess::start(&url, &label, &["--internal", "--network", &network.name]);
    let container = TestContainer::run(&[
        "-l",
        &label,
        "-l",
        "switchyard.service=internal-web",
        "--network",
        &network.name,
        &image.tag,
    ]);
    let id = container.short_id().to_string();
    let found = wait_until(&url, "internal-web", "registered", |f| !lacks(f, &id)).await;
    assert_eq!(found[0].address.to_string(), container.ip_on(&network.name));
    assert_eq!(found[0].port, 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_the_agent_itself() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let agent = AgentProcess::start(&url, &test_label(), &[]);
    let address = agent.healthz;
    let body = eventually(patience(), || async move {
        let answer = http_get(address, "/healthz").await?;
        if answer.starts_with("HTTP/1.1 200") {
            Ok(answer)
        } else {
            Err(answer)
        }
    })
    .await;
    assert!(body.contains("\"docker\":\"connected\""), "{body}");
    assert!(body.contains("\"healthy\":true"), "{body}");
}

/// The agent as users deploy it: the image from deploy/Dockerfile.agent,
/// built FROM scratch with a static binary, the Docker socket mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_as_a_container_from_its_image() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let tag = format!("{}:test", unique("switchyard-test-agent"));
    let built = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/build-images.sh"))
        .args(["--agent-tag", &tag])
        .status()
        .expect("running scripts/build-images.sh");
    assert!(built.success(), "building the agent image failed");
    let _image = TestImage { tag: tag.clone() };
    let _agent = TestContainer::run(&[
        "--network",
        "host",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        &tag,
        "--registry",
        &url,
        "--advertise-ip",
        "127.0.0.1",
        "--only-label",
        &label,
        "--healthz",
        "off",
        "--node",
        "agent-in-a-container",
    ]);
    let image = TestImage::httpd("v1", false);
    let container = run_web(&image, &label, "blue");
    let id = container.short_id().to_string();
    let found = wait_until(&url, "web", "registered by the containerized agent", |f| {
        has(f, &id, Health::Passing)
    })
    .await;
    assert_eq!(found[0].node, "agent-in-a-container");
}

/// Swarm: the agent registers a service's task containers with their
/// overlay IPs under the Swarm node id, and follows scaling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_task_containers_register_with_overlay_ips() {
    use switchyard_tests::docker::{TestService, TestSwarm, docker_ok};

    let swarm = TestSwarm::start();
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let label = test_label();
    let image = TestImage::httpd("v1", false);
    let network = TestNetwork::create(&["--driver", "overlay", "--attachable"]);
    let _agent = AgentProcess::start(&url, &label, &["--internal", "--network", &network.name]);
    let service = TestService::create(&[
        "--replicas",
        "2",
        "--network",
        &network.name,
        "--container-label",
        &label,
        "--container-label",
        "switchyard.service=swarm-web",
        "--container-label",
        "switchyard.color=blue",
        &image.tag,
    ]);
    let found = wait_until(&url, "swarm-web", "two tasks", |f| f.len() == 2).await;
    let node = swarm.node_id();
    for instance in &found {
        assert_eq!(instance.node, node, "registered under the Swarm node id");
        assert_eq!(instance.port, 80);
        let container = instance.metadata.get("container_id").expect("container id");
        let ip = docker_ok(&[
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                network.name
            ),
            container,
        ]);
        assert_eq!(instance.address.to_string(), ip);
    }
    docker_ok(&[
        "service",
        "scale",
        "--detach",
        &format!("{}=1", service.name),
    ]);
    wait_until(&url, "swarm-web", "scaled to one", |f| f.len() == 1).await;
    drop(service);
    wait_until(&url, "swarm-web", "service removed", |f| f.is_empty()).await;

    // Labels on the service (not its containers) are inherited by its
    // tasks; only the tenant label sits on the containers.
    let inherited = TestService::create(&[
        "--network",
        &network.name,
        "--container-label",
        &label,
        "--label",
        "switchyard.service=swarm-inherited",
        "--label",
        "switchyard.color=green",
        &image.tag,
    ]);
    let found = wait_until(&url, "swarm-inherited", "one task", |f| f.len() == 1).await;
    assert_eq!(
        found[0].color,
        Some(Color::Green),
        "the service's color label"
    );
    assert_eq!(
        found[0].metadata.get("swarm_service"),
        Some(&inherited.name),
        "the task's service"
    );
    drop(inherited);
    wait_until(&url, "swarm-inherited", "service removed", |f| f.is_empty()).await;
    drop(network);
    drop(swarm);
}
