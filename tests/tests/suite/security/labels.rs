//! One container's labels cannot hurt the rest of its node: an id that is
//! already another owner's, or one that two containers claim, leaves only
//! that container out.

use switchyard_model::Health;
use switchyard_tests::docker::{TestContainer, TestImage, unique};
use switchyard_tests::process::AgentProcess;
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
