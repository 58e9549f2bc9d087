//! Swarm mode end to end, each test in a single-node swarm it creates (and
//! leaves again): the stack of deploy/stack.yml from images built here,
//! `cdctl deploy --runtime swarm` with the same rollback guarantee as
//! containers, and tasks Swarm reschedules.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use switchyard_client::RegistryClient;
use switchyard_model::{Color, Health, Instance};
use switchyard_tests::docker::{
    LabelledContainers, LabelledServices, TestImage, TestNetwork, TestStack, TestSwarm, docker,
    docker_ok, switchyard_images, unique,
};
use switchyard_tests::load::Load;
use switchyard_tests::process::{AgentProcess, cdctl_async, explain};
use switchyard_tests::tls::{Access, Leaf, TestPki, arg as tls_arg, env_refs};
use switchyard_tests::{
    TestRegistry, body, eventually, free_port, http_get, patience, workspace_root,
};

/// Swarm starts tasks in a second or two; stacks take longer.
fn stack_patience() -> Duration {
    patience() * 3
}

/// The live color and instances of `service` (none when unknown).
async fn service_state(url: &str, service: &str) -> (Option<Color>, Vec<Instance>) {
    state_of(&RegistryClient::new(url).expect("url"), service).await
}

async fn state_of(client: &RegistryClient, service: &str) -> (Option<Color>, Vec<Instance>) {
    match client.get_service(service).await {
        Ok((_, found)) => (found.active_color, found.instances),
        Err(_) => (None, Vec::new()),
    }
}

/// `cdctl deploy` of `service` on `network`, 2 replicas unless `extra`
/// says otherwise (or rolls), with the runtime left to `SWITCHYARD_RUNTIME`
/// in `env`.
pub(crate) async fn deploy(
    url: &str,
    service: &str,
    image: &str,
    network: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut args = vec![
        "deploy",
        service,
        "--image",
        image,
        "--network",
        network,
        "--port",
        "80",
        "--stop-timeout",
        "1s",
        "--health-timeout",
        "60s",
    ];
    // A rolling deploy keeps the count it finds unless told otherwise.
    if !extra.contains(&"--replicas") && !extra.contains(&"rolling") {
        args.extend(["--replicas", "2"]);
    }
    args.extend_from_slice(extra);
    cdctl_async(url, &args, env).await
}

/// Swarm services of `service`: "ID NAME IMAGE REPLICAS LABELS" per line,
/// from their specs.
fn swarm_services(service: &str) -> Vec<String> {
    let filter = format!("label=switchyard.service={service}");
    let ids = docker_ok(&["service", "ls", "-q", "--filter", &filter]);
    let mut lines: Vec<String> = ids
        .split_whitespace()
        .map(|id| {
            docker_ok(&[
                "service",
                "inspect",
                "--format",
                "{{.ID}} {{.Spec.Name}} {{.Spec.TaskTemplate.ContainerSpec.Image}} \
                 {{.Spec.Mode.Replicated.Replicas}} {{json .Spec.Labels}} \
                 {{json .Spec.TaskTemplate.ContainerSpec.Labels}}",
                id,
            ])
        })
        .collect();
    lines.sort();
    lines
}

/// The container's IP on `network`.
fn ip_on(container: &str, network: &str) -> String {
    docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        container,
    ])
}

/// The deploy ran the Swarm runtime (the reporter names it at step 4).
fn ran_on_swarm(output: &Output) -> bool {
    String::from_utf8_lossy(&output.stdout).contains("(swarm)")
}

/// What GET `path` through `proxy` answers (the body, trimmed).
async fn served(proxy: SocketAddr, path: &str) -> Result<String, String> {
    let response = http_get(proxy, path).await?;
    if response.starts_with("HTTP/1.1 200") {
        Ok(body(&response).trim().to_string())
    } else {
        Err(response.lines().next().unwrap_or_default().to_string())
    }
}

async fn until_served(proxy: SocketAddr, path: &str, version: &str) {
    eventually(stack_patience(), || async move {
        match served(proxy, path).await {
            Ok(text) if text == version => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The stack's Docker secrets, made as an operator makes them: tokens by
/// deploy/make-secrets.sh, certificates by a CA (rcgen); and the access
/// (CA, client certificate, admin token) of the test's own clients.
fn stack_secrets() -> (TestPki, Access) {
    let pki = TestPki::new("stack");
    let made = std::process::Command::new("sh")
        .arg(workspace_root().join("deploy/make-secrets.sh"))
        .arg(pki.dir())
        .output()
        .expect("running make-secrets.sh");
    assert!(made.status.success(), "{}", explain(&made));
    let registry = pki.leaf(Leaf {
        name: "registry",
        also: &["registry"],
        ..Leaf::default()
    });
    let client = pki.client("client");
    assert_eq!(registry.cert, pki.dir().join("registry.pem"));
    assert_eq!(client.key, pki.dir().join("client-key.pem"));
    std::fs::copy(&pki.ca, pki.dir().join("ca.pem")).expect("ca.pem");
    let access = Access {
        ca: pki.ca.clone(),
        identity: Some(client),
        token_file: Some(pki.dir().join("admin.token")),
    };
    (pki, access)
}

/// deploy/stack.yml with deploy/stack.tls.yml from the images built here,
/// so with `--auth` and mutual TLS, every token and certificate a Docker
/// secret: the registry serves, the agent runs as a global task, the proxy
/// reports; then blue-green deploys of Swarm services (runtime
/// auto-detected on the manager) register task IPs on the overlay network,
/// and a bounded load through the stack's proxy sees no failed request
/// during a deploy and a rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_serves_blue_green_swarm_deploys_through_its_proxy() {
    let swarm = TestSwarm::start();
    let images = switchyard_images(&["registry", "agent", "proxy"]);
    let (v1, v2, v3) = (
        TestImage::httpd("v1", false),
        TestImage::httpd("v2", false),
        TestImage::httpd("v3", false),
    );
    let network = unique("switchyard-test-overlay");
    let (registry_port, proxy_port) = (free_port(), free_port());
    let (secrets, access) = stack_secrets();
    let root = workspace_root();
    let stack = TestStack::deploy_files(
        &[
            &root.join("deploy/stack.yml"),
            &root.join("deploy/stack.tls.yml"),
        ],
        &[
            ("SWITCHYARD_REGISTRY_IMAGE", images[0].tag.clone()),
            ("SWITCHYARD_AGENT_IMAGE", images[1].tag.clone()),
            ("SWITCHYARD_PROXY_IMAGE", images[2].tag.clone()),
            ("SWITCHYARD_NETWORK", network.clone()),
            ("SWITCHYARD_REGISTRY_PORT", registry_port.to_string()),
            ("SWITCHYARD_PROXY_PORT", proxy_port.to_string()),
            ("SWITCHYARD_SECRETS", tls_arg(secrets.dir()).to_string()),
        ],
    );
    let service = unique("web");
    // Dropped first: the stack's network cannot go while they use it.
    let _services = LabelledServices {
        label: format!("switchyard.service={service}"),
    };
    let url = format!("https://127.0.0.1:{registry_port}");
    let client = access.client_when_serving(&url, stack_patience()).await;
    let client_ref = &client;
    // Neither a client without a certificate nor one without a token gets in.
    let bare = Access {
        identity: None,
        ..access.clone()
    };
    let refused = bare.client(&url).list_services().await;
    assert!(refused.is_err(), "no client certificate");
    let env_owned = access.env();
    let mut env = env_refs(&env_owned);
    let no_token = cdctl_async(&url, &["services"], &env[..3]).await;
    assert_eq!(no_token.status.code(), Some(7), "{}", explain(&no_token));

    let agent = stack.service("agent");
    eventually(stack_patience(), || {
        let agent = agent.clone();
        async move {
            let shown = docker_ok(&[
                "service",
                "ls",
                "--filter",
                &format!("name={agent}"),
                "--format",
                "{{.Mode}} {{.Replicas}}",
            ]);
            if shown == "global 1/1" {
                Ok(())
            } else {
                Err(format!("agent service: {shown:?}"))
            }
        }
    })
    .await;
    eventually(stack_patience(), || async move {
        match client_ref.list_proxies().await {
            Ok((proxies, _)) if proxies.iter().any(|p| p.healthy) => Ok(()),
            other => Err(format!("no healthy proxy yet: {other:?}")),
        }
    })
    .await;

    // v1. No --runtime: the engine is a Swarm manager, so Swarm it is.
    env.push(("SWITCHYARD_RUNTIME", "auto"));
    let auto = env;
    let first = deploy(&url, &service, &v1.tag, &network, &[], &auto).await;
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
    assert!(ran_on_swarm(&first), "{}", explain(&first));
    let blue = format!("{service}-blue");
    let services = swarm_services(&service);
    assert_eq!(services.len(), 1, "{services:?}");
    assert!(
        services[0].contains(&format!(" {blue} {} 2 ", v1.tag)),
        "{services:?}"
    );
    let (color, found) = state_of(&client, &service).await;
    assert_eq!(color, Some(Color::Blue));
    assert_eq!(found.len(), 2, "{found:?}");
    let node = swarm.node_id();
    for instance in &found {
        assert_eq!(instance.health, Health::Passing);
        assert_eq!(instance.node, node, "registered under the Swarm node id");
        assert_eq!(instance.metadata.get("swarm_service"), Some(&blue));
        let container = &instance.metadata["container_id"];
        assert_eq!(
            instance.address.to_string(),
            ip_on(container, &network),
            "the task's IP on the overlay network"
        );
        assert_eq!(instance.port, 80);
    }

    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let path = format!("/{service}/");
    until_served(proxy, &path, "v1").await;

    // Phases: 1 deploying v2, 2 after it, 3 rolling back, 4 after that.
    let load = Load::start(proxy, &path, 4);
    load.enter(1);
    let second = deploy(&url, &service, &v2.tag, &network, &["--keep-old"], &auto).await;
    assert_eq!(second.status.code(), Some(0), "{}", explain(&second));
    load.enter(2);
    until_served(proxy, &path, "v2").await;
    let kept = docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.Mode.Replicated.Replicas}} {{index .Spec.Labels \"switchyard.replicas\"}}",
        &blue,
    ]);
    assert_eq!(kept, "0 2", "--keep-old scales the old color to zero");
    let (color, found) = state_of(&client, &service).await;
    assert_eq!(color, Some(Color::Green));
    assert!(
        found.iter().all(|i| i.color == Some(Color::Green)),
        "{found:?}"
    );

    load.enter(3);
    let started = Instant::now();
    let back = cdctl_async(&url, &["rollback", &service], &auto).await;
    let took = started.elapsed();
    assert_eq!(back.status.code(), Some(0), "{}", explain(&back));
    load.enter(4);
    until_served(proxy, &path, "v1").await;
    // More traffic after the rollback, then the tally.
    for _ in 0..20 {
        assert_eq!(served(proxy, &path).await.as_deref(), Ok("v1"));
    }
    let tally = load.finish().await;
    println!(
        "swarm load: {} requests, {} failed; rollback from zero replicas took {took:?}; {:?}",
        tally.total,
        tally.failures.len(),
        tally.versions
    );
    assert!(tally.total > 0);
    assert!(
        tally.failures.is_empty(),
        "failed requests: {:?}",
        &tally.failures[..tally.failures.len().min(10)]
    );
    let seen = |phase: u8| -> BTreeSet<String> {
        tally
            .versions
            .get(&phase)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(seen(2), BTreeSet::from(["v2".to_string()]));
    assert_eq!(seen(4), BTreeSet::from(["v1".to_string()]));
    let (color, _) = state_of(&client, &service).await;
    assert_eq!(color, Some(Color::Blue));

    // v3 without --keep-old: green (v2, still running after the rollback)
    // is redefined as v3, and blue goes away.
    let third = deploy(&url, &service, &v3.tag, &network, &[], &auto).await;
    assert_eq!(third.status.code(), Some(0), "{}", explain(&third));
    let services = swarm_services(&service);
    assert_eq!(services.len(), 1, "the old service is gone: {services:?}");
    assert!(
        services[0].contains(&format!(" {service}-green {} 2 ", v3.tag)),
        "{services:?}"
    );
    until_served(proxy, &path, "v3").await;
}

/// A swarm with a registry and an agent on the host following one test's
/// label, an overlay network, and guards for what the test deploys.
/// Fields drop in order: what was deployed, then the agent, the network,
/// the registry, and last the swarm.
pub(crate) struct HostFixture {
    _services: LabelledServices,
    _containers: LabelledContainers,
    _agent: AgentProcess,
    pub network: TestNetwork,
    pub label: String,
    pub registry: TestRegistry,
    _swarm: TestSwarm,
}

impl HostFixture {
    pub(crate) async fn start() -> Self {
        let swarm = TestSwarm::start();
        let registry = TestRegistry::start().await;
        let network = TestNetwork::create(&["--driver", "overlay", "--attachable"]);
        let label = format!("switchyard.test={}", unique("swarm"));
        HostFixture {
            _services: LabelledServices {
                label: label.clone(),
            },
            _containers: LabelledContainers {
                label: label.clone(),
            },
            _agent: AgentProcess::start(&registry.url(), &label, &["--internal"]),
            network,
            label,
            registry,
            _swarm: swarm,
        }
    }
}

/// What a failed deploy must leave exactly as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    services: Vec<String>,
    color: Option<Color>,
    /// (color, health, Swarm service id) of every instance.
    instances: Vec<(Option<Color>, Health, String)>,
    /// Instance ids: tasks keep theirs unless Swarm started new ones.
    ids: BTreeSet<String>,
}

async fn snapshot(url: &str, service: &str) -> Snapshot {
    let (color, found) = service_state(url, service).await;
    let mut instances: Vec<(Option<Color>, Health, String)> = found
        .iter()
        .map(|i| {
            (
                i.color,
                i.health,
                i.metadata
                    .get("swarm_service_id")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    instances.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    Snapshot {
        services: swarm_services(service),
        color,
        instances,
        ids: found.iter().map(|i| i.id.clone()).collect(),
    }
}

/// A failing pre-test, and faults injected after starting the new color and
/// after scaling the old one down: each deploy rolls back, leaving the
/// Swarm services (ids, specs, replicas, labels), the registry and the live
/// color as they were, including the kept old color it had redefined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_deploy_failures_leave_services_registry_and_color_as_they_were() {
    let f = HostFixture::start().await;
    let (url, network, label) = (f.registry.url(), &f.network, f.label.clone());
    let (v1, v2, v3) = (
        TestImage::httpd("v1", false),
        TestImage::httpd("v2", false),
        TestImage::httpd("v3", false),
    );
    let service = unique("sw");
    let swarm_env = [("SWITCHYARD_RUNTIME", "swarm")];
    let labelled = ["--label", label.as_str()];
    let first = deploy(
        &url,
        &service,
        &v1.tag,
        &network.name,
        &labelled,
        &swarm_env,
    )
    .await;
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
    let second = deploy(
        &url,
        &service,
        &v2.tag,
        &network.name,
        &["--label", &label, "--keep-old"],
        &swarm_env,
    )
    .await;
    assert_eq!(second.status.code(), Some(0), "{}", explain(&second));
    let before = snapshot(&url, &service).await;
    assert_eq!(before.color, Some(Color::Green));
    assert_eq!(before.services.len(), 2, "green live, blue kept at zero");
    assert_eq!(before.instances.len(), 2);

    for (what, extra, failpoint, code, same_tasks) in [
        (
            "a failing pre-test",
            vec!["--pre-test", "false"],
            "",
            11,
            true,
        ),
        ("a fault after step 4", vec![], "start", 14, true),
        // Scaling the old color back up starts new tasks: the same
        // services and counts, but new instance ids.
        ("a fault after step 11", vec![], "stop-old", 14, false),
    ] {
        let mut args = vec!["--label", label.as_str()];
        args.extend(extra);
        let env = [
            ("SWITCHYARD_RUNTIME", "swarm"),
            ("CDCTL_FAILPOINT", failpoint),
        ];
        let failed = deploy(&url, &service, &v3.tag, &network.name, &args, &env).await;
        assert_eq!(
            failed.status.code(),
            Some(code),
            "{what}: {}",
            explain(&failed)
        );
        if failpoint != "start" {
            assert!(ran_on_swarm(&failed), "{what}: {}", explain(&failed));
        }
        let after = snapshot(&url, &service).await;
        assert_eq!(after.services, before.services, "{what}: the services");
        assert_eq!(after.color, before.color, "{what}: the live color");
        assert_eq!(after.instances, before.instances, "{what}: the instances");
        if same_tasks {
            assert_eq!(after.ids, before.ids, "{what}: the same tasks");
        }
    }

    // Paused for promotion, then aborted (by a second cdctl, which finds
    // the runtime in the deployment record).
    let before = snapshot(&url, &service).await;
    let paused = deploy(
        &url,
        &service,
        &v3.tag,
        &network.name,
        &["--label", &label, "--manual-promotion"],
        &swarm_env,
    )
    .await;
    assert_eq!(paused.status.code(), Some(0), "{}", explain(&paused));
    let running = snapshot(&url, &service).await;
    assert_eq!(running.color, before.color, "paused before the flip");
    assert_eq!(running.instances.len(), 4, "both colors run while paused");
    let aborted = cdctl_async(&url, &["abort", &service], &[]).await;
    assert_eq!(aborted.status.code(), Some(0), "{}", explain(&aborted));
    assert_eq!(snapshot(&url, &service).await, before, "after abort");
}

/// `docker kill` of a task container: Swarm starts a new task, and the
/// agent drops the old one from the registry and registers the new one.
/// Also: `--runtime containers` starts plain containers on a manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_task_is_replaced_in_the_registry() {
    let f = HostFixture::start().await;
    let (url, network, label) = (f.registry.url(), &f.network, f.label.clone());
    let image = TestImage::httpd("v1", false);
    let service = unique("kill");
    let swarm_env = [("SWITCHYARD_RUNTIME", "swarm")];
    let deployed = deploy(
        &url,
        &service,
        &image.tag,
        &network.name,
        &["--label", &label, "--replicas", "1"],
        &swarm_env,
    )
    .await;
    assert_eq!(deployed.status.code(), Some(0), "{}", explain(&deployed));
    let (_, found) = service_state(&url, &service).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let old = found[0].metadata["container_id"].clone();
    let task_service = found[0].metadata["swarm_service_id"].clone();

    docker_ok(&["kill", &old]);
    let (url_ref, service_ref, old_ref) = (&url, &service, &old);
    let replaced = eventually(stack_patience(), || async move {
        let (_, found) = service_state(url_ref, service_ref).await;
        match found.as_slice() {
            [one] if one.metadata["container_id"] != *old_ref && one.health == Health::Passing => {
                Ok(one.clone())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let new = &replaced.metadata["container_id"];
    assert_eq!(
        replaced.metadata["swarm_service_id"], task_service,
        "a task of the same service"
    );
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", new]),
        "true",
        "Swarm started the new task"
    );
    assert_eq!(replaced.address.to_string(), ip_on(new, &network.name));

    // Forced containers on the manager: no Swarm service for this one.
    let plain = unique("plain");
    let containers = deploy(
        &url,
        &plain,
        &image.tag,
        &network.name,
        &["--label", &label, "--replicas", "1"],
        &[("SWITCHYARD_RUNTIME", "containers")],
    )
    .await;
    assert_eq!(
        containers.status.code(),
        Some(0),
        "{}",
        explain(&containers)
    );
    assert!(!ran_on_swarm(&containers), "{}", explain(&containers));
    assert!(swarm_services(&plain).is_empty());
    let name = format!("{plain}-blue-1");
    assert!(
        docker(&["inspect", &name]).status.success(),
        "container {name} runs"
    );
}
