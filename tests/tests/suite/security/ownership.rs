//! Instances are owned: by the node whose session holds them, or (external
//! ones) by the deployers of their service. Only the owner, or an admin,
//! changes them, whatever the id says.

use switchyard_client::ClientError;
use switchyard_model::Instance;
use switchyard_tests::instance;
use tonic::Code;

use crate::auth::{client, secured, token};

fn denied<T: std::fmt::Debug>(result: Result<T, ClientError>) -> bool {
    result.expect_err("refused").code() == Some(Code::PermissionDenied)
}

async fn instances_of(
    admin: &switchyard_client::RegistryClient,
    service: &str,
) -> Vec<(String, std::net::IpAddr, u16)> {
    let (_, service) = admin.get_service(service).await.expect("get service");
    let mut seen: Vec<_> = service
        .instances
        .iter()
        .map(|i: &Instance| (i.id.clone(), i.address, i.port))
        .collect();
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_of_one_service_cannot_touch_another_services_instances() {
    let (registry, admin_token) = secured().await;
    let admin = client(&registry, &admin_token);
    admin
        .register(&instance("api", "a1", 9000, None), None)
        .await
        .expect("admin registers api/a1");
    let before = instances_of(&admin, "api").await;
    let web_deployer = client(&registry, &token(&admin, "deployer", None, &["web"]).await);

    let mut hijack = instance("api", "a1", 80, None);
    hijack.address = std::net::IpAddr::from([6, 6, 6, 6]);
    assert!(
        denied(web_deployer.register(&hijack, None).await),
        "overwrite"
    );
    assert!(
        denied(
            web_deployer
                .register(&instance("api", "a2", 80, None), None)
                .await
        ),
        "a new instance of another service"
    );
    assert!(denied(web_deployer.deregister("a1").await), "removal");
    // The id taken over under the deployer's own service: refused as well,
    // the id belongs to api's deployers.
    let mut renamed = instance("web", "a1", 80, None);
    renamed.address = std::net::IpAddr::from([6, 6, 6, 6]);
    assert!(denied(web_deployer.register(&renamed, None).await));
    assert_eq!(instances_of(&admin, "api").await, before, "nothing changed");

    // Within its scope it still does its work.
    web_deployer
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("its own service");
    web_deployer
        .deregister("w1")
        .await
        .expect("its own instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_take_another_nodes_instance_id_and_that_node_keeps_syncing() {
    let (registry, admin_token) = secured().await;
    let admin = client(&registry, &admin_token);
    let agent_a = client(
        &registry,
        &token(&admin, "agent", Some("node-a"), &[]).await,
    );
    let agent_b = client(
        &registry,
        &token(&admin, "agent", Some("node-b"), &[]).await,
    );
    let (session_b, _) = agent_b
        .open_session("node-b", 60)
        .await
        .expect("b's session");
    let mut on_b = instance("api", "b1", 9001, None);
    on_b.node = "node-b".into();
    agent_b
        .sync_node(session_b, "node-b", std::slice::from_ref(&on_b))
        .await
        .expect("b syncs b1");

    let (session_a, _) = agent_a
        .open_session("node-a", 60)
        .await
        .expect("a's session");
    let mut taken = instance("api", "b1", 9999, None);
    taken.node = "node-a".into();
    assert!(denied(agent_a.register(&taken, Some(session_a)).await));
    assert!(denied(agent_a.deregister("b1").await));
    // A deployer of api cannot replace a node's instance by hand either.
    let api_deployer = client(&registry, &token(&admin, "deployer", None, &["api"]).await);
    assert!(denied(
        api_deployer
            .register(&instance("api", "b1", 1, None), None)
            .await
    ));

    let mut moved = on_b.clone();
    moved.port = 9002;
    agent_b
        .sync_node(session_b, "node-b", &[moved])
        .await
        .expect("b's own syncs still succeed");
    assert_eq!(
        instances_of(&admin, "api").await,
        vec![("b1".to_string(), on_b.address, 9002)]
    );
}
