//! One container's labels cannot hurt the rest of its node: an id that is
//! already another owner's, or one that two containers claim, leaves only
//! that container out; a port published on loopback alone is not sent to
//! other hosts' proxies; a `docker exec` command line never becomes a
//! metrics label.

use switchyard_model::Health;
use switchyard_tests::docker::{TestContainer, TestImage, unique};
use switchyard_tests::process::{AgentProcess, lines_with};
use switchyard_tests::{TestRegistry, eventually, instance, patience};

fn run(image: &TestImage, label: &str, service: &str, id: Option<&str>) -> TestContainer {
    let service_label = format!("switchyard.service={service}");
    let id_label = id.map(|id| format!("SERVICE_ID={id}"));
    let mut args = vec!["-l", label, "-l", &service_label, "-p", "127.0.0.1::80"];
    if let Some(id_label) = &id_label {
        args.extend(["-l", id_label.as_str()]);
    }
    args.push(&image.tag);
    TestContainer::run(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_or_foreign_service_id_leaves_only_its_container_out() {
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let client = registry.client();
    let label = format!("switchyard.test={}", unique("labels"));
    let service = unique("dup");
    // An external instance owns `taken` already.
    client
        .register(&instance(&service, "taken", 9, None), None)
        .await
        .expect("the external instance");
    let image = TestImage::httpd("v1", false);
    let _agent = AgentProcess::start(&url, &label, &["--ttl", "5s"]);
    let first = run(&image, &label, &service, Some("twin"));
    let _second = run(&image, &label, &service, Some("twin"));
    let _foreign = run(&image, &label, &service, Some("taken"));
    let plain = run(&image, &label, &service, None);

    let plain_id = plain.short_id().to_string();
    let found = eventually(patience(), || async {
        let (_, now) = client
            .get_service(&service)
            .await
            .map_err(|e| e.to_string())?;
        let passing = |id: &str| {
            now.instances
                .iter()
                .any(|i| i.id == id && i.health == Health::Passing && !i.node.is_empty())
        };
        if passing(&plain_id) && passing("twin") {
            Ok(now)
        } else {
            Err(format!(
                "waiting for {plain_id} and twin: {:?}",
                now.instances
            ))
        }
    })
    .await;
    let ids: Vec<&str> = found.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        3,
        "plain, one twin and the external one: {ids:?}"
    );
    let twin = found
        .instances
        .iter()
        .find(|i| i.id == "twin")
        .expect("twin");
    assert_eq!(
        twin.metadata.get("container_id").map(String::as_str),
        Some(first.id.as_str()),
        "the twin that started first keeps the id"
    );
    let taken = found
        .instances
        .iter()
        .find(|i| i.id == "taken")
        .expect("taken");
    assert_eq!(
        (taken.session, taken.port),
        (None, 9),
        "the external instance is untouched"
    );
}

/// An IPv4 address of this host that is not loopback, as a node's
/// advertise IP would be (Docker's bridge has one on any engine host).
fn host_address() -> String {
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip addr");
    let text = String::from_utf8_lossy(&output.stdout);
    let address = text
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string);
    address.expect("a global IPv4 address on this host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_published_on_loopback_is_not_registered_for_other_hosts() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let label = format!("switchyard.test={}", unique("loopback"));
    let service = unique("lo");
    let gateway = host_address();
    let image = TestImage::httpd("v1", false);
    let agent = AgentProcess::start(&registry.url(), &label, &["--advertise-ip", &gateway]);
    let service_label = format!("switchyard.service={service}");
    let on_loopback = TestContainer::run(&[
        "-l",
        &label,
        "-l",
        &service_label,
        "-p",
        "127.0.0.1::80",
        &image.tag,
    ]);
    let on_gateway = format!("{gateway}::80");
    let reachable = TestContainer::run(&[
        "-l",
        &label,
        "-l",
        &service_label,
        "-p",
        &on_gateway,
        &image.tag,
    ]);
    let reachable_id = reachable.short_id().to_string();
    let found = eventually(patience(), || async {
        let (_, now) = client
            .get_service(&service)
            .await
            .map_err(|e| e.to_string())?;
        let said = lines_with(&agent.log, "only on loopback") > 0;
        match now.instances.iter().find(|i| i.id == reachable_id) {
            Some(_) if said => Ok(now),
            _ => Err(format!(
                "waiting for {reachable_id} and the agent's reason: {:?}",
                now.instances
            )),
        }
    })
    .await;
    let addresses: Vec<(String, String)> = found
        .instances
        .iter()
        .map(|i| (i.id.clone(), i.address.to_string()))
        .collect();
    assert_eq!(
        addresses,
        vec![(reachable_id, gateway)],
        "only the reachable container, at the node's address (not {})",
        on_loopback.short_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_exec_command_lines_never_reach_the_agents_metrics() {
    let registry = TestRegistry::start().await;
    let label = format!("switchyard.test={}", unique("exec"));
    let service = unique("ex");
    let image = TestImage::httpd("v1", false);
    let agent = AgentProcess::start(&registry.url(), &label, &[]);
    let container = run(&image, &label, &service, None);
    let marker = unique("secret-argument");
    for _ in 0..2 {
        switchyard_tests::docker::docker_ok(&[
            "exec",
            &container.id,
            "/bin/busybox",
            "echo",
            &marker,
        ]);
    }
    let text = eventually(patience(), || async {
        let text = switchyard_tests::http_get(agent.healthz, "/metrics").await?;
        if text.contains("action=\"exec_die\"} 2") {
            Ok(text)
        } else {
            Err(format!("waiting for both execs: {text}"))
        }
    })
    .await;
    assert!(text.contains("action=\"exec_create\"} 2"), "{text}");
    assert!(!text.contains(&marker), "{text}");
}
