//! `--auth`: every RPC by every role (and by nobody) gets exactly the
//! answer the role table gives, bindings confine agents, proxies and
//! deployers, revocation reaches every replica, and malformed credentials
//! are refused as such.

use std::time::Duration;

use switchyard_client::{ClientOptions, RegistryClient};
use switchyard_model::Color;
use switchyard_model::auth::{NewToken, Role};
use switchyard_proto::v1;
use switchyard_tests::process::{cdctl_async, explain};
use switchyard_tests::{TestRegistry, eventually, grpc, instance};
use tonic::Code;
use tonic::transport::Channel;

mod rpcs;
use rpcs::{every_rpc, may};

type Grpc = v1::registry_client::RegistryClient<Channel>;

/// A registry with `--auth`, and its bootstrap admin token.
pub(crate) async fn secured() -> (TestRegistry, String) {
    secured_with(|_| {}).await
}

/// [`secured`], with more of the configuration adjusted.
pub(crate) async fn secured_with(
    adjust: impl FnOnce(&mut cd_registry::server::ServerConfig),
) -> (TestRegistry, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("admin.token");
    let registry = TestRegistry::start_with(|config| {
        config.auth = true;
        config.bootstrap_token_file = Some(file.clone());
        adjust(config);
    })
    .await;
    let admin = std::fs::read_to_string(&file).expect("the bootstrap token file");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("metadata").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the bootstrap token is private");
    (registry, admin.trim().to_string())
}

pub(crate) fn client(registry: &TestRegistry, token: &str) -> RegistryClient {
    let options = ClientOptions {
        token: Some(token.to_string()),
        ..ClientOptions::default()
    };
    RegistryClient::with_options(&registry.url(), &options).expect("client")
}

pub(crate) async fn token(
    admin: &RegistryClient,
    role: &str,
    binding: Option<&str>,
    services: &[&str],
) -> String {
    let request = NewToken {
        role: Role::parse(role).expect("a role"),
        binding: binding.map(str::to_string),
        services: services.iter().map(|s| s.to_string()).collect(),
        description: format!("test {role}"),
        ttl_seconds: 0,
    };
    admin.create_token(&request).await.expect("create token").1
}

fn signed<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The code a call ended with (`Ok` when it succeeded).
fn code_of<T>(answer: Result<T, tonic::Status>) -> Code {
    answer.map_or_else(|status| status.code(), |_| Code::Ok)
}

async fn every_rpc_by_every_role_gets_exactly_its_answer() {
    let (registry, admin_token) = secured().await;
    let admin = client(&registry, &admin_token);
    admin
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    let roles = [
        ("reader", token(&admin, "reader", None, &[]).await),
        ("proxy", token(&admin, "proxy", Some("edge-1"), &[]).await),
        ("agent", token(&admin, "agent", Some("n1"), &[]).await),
        ("deployer", token(&admin, "deployer", None, &["web"]).await),
        ("admin", admin_token.clone()),
    ];
    let mut grpc = grpc(&registry.url()).await;
    for (name, code) in every_rpc(&mut grpc, None, &admin).await {
        assert_eq!(code, Code::Unauthenticated, "{name} without a credential");
    }
    for (role, token) in &roles {
        for (name, code) in every_rpc(&mut grpc, Some(token), &admin).await {
            if may(role, name) {
                assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{role} may call {name}, got {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{role} calling {name}");
            }
        }
    }
}

async fn bindings_confine_agents_proxies_and_deployers() {
    let (registry, admin_token) = secured().await;
    let admin = client(&registry, &admin_token);
    admin
        .register(&instance("api", "a1", 9000, None), None)
        .await
        .expect("register");
    let agent_a = client(
        &registry,
        &token(&admin, "agent", Some("node-a"), &[]).await,
    );
    let proxy = client(
        &registry,
        &token(&admin, "proxy", Some("edge-1"), &[]).await,
    );
    let deployer = client(&registry, &token(&admin, "deployer", None, &["web"]).await);
    let denied = |result: Result<u64, switchyard_client::ClientError>| {
        result.expect_err("refused").code() == Some(Code::PermissionDenied)
    };
    // Node B's session and instances are out of node A's agent's reach.
    let (session_b, _) = admin.open_session("node-b", 60).await.expect("session");
    let mut on_b = instance("api", "b1", 9001, None);
    on_b.node = "node-b".into();
    admin
        .register(&on_b, Some(session_b))
        .await
        .expect("register on b");
    assert_eq!(
        agent_a
            .open_session("node-b", 60)
            .await
            .expect_err("b")
            .code(),
        Some(Code::PermissionDenied)
    );
    assert!(denied(
        agent_a
            .sync_node(session_b, "node-b", &[])
            .await
            .map(|o| o.revision)
    ));
    assert!(denied(agent_a.deregister("b1").await));
    assert!(denied(agent_a.close_session(session_b).await));
    assert!(denied(agent_a.register(&on_b, Some(session_b)).await));
    let (session_a, _) = agent_a
        .open_session("node-a", 60)
        .await
        .expect("its own node");
    let mut sneaky = instance("api", "s1", 9002, None);
    sneaky.node = "node-b".into();
    assert!(
        denied(agent_a.register(&sneaky, Some(session_a)).await),
        "another node under its own session"
    );
    // A proxy reports for itself only.
    let report = |id: &str| switchyard_model::ProxyStatus {
        proxy_id: id.into(),
        applied_revision: 1,
        healthy: true,
        ..Default::default()
    };
    assert!(denied(proxy.report_proxy(&report("edge-2")).await));
    proxy
        .report_proxy(&report("edge-1"))
        .await
        .expect("its own report");
    // What a deployer records carries who it was, as the registry knows it.
    admin
        .register(&instance("web", "w9", 9009, None), None)
        .await
        .expect("register web");
    let record = switchyard_model::Deployment {
        id: "d1".into(),
        service: "web".into(),
        who: "claims to be admin".into(),
        started_at_ms: 1,
        ..Default::default()
    };
    deployer.record_deployment(&record).await.expect("record");
    let listed = admin.list_deployments("web", 1).await.expect("list");
    let principal = &listed[0].metadata[switchyard_model::auth::PRINCIPAL_KEY];
    assert!(principal.contains("test deployer"), "{principal}");
    // A deployer of web cannot flip api.
    assert!(denied(
        deployer
            .set_active_color("api", Some(Color::Blue), None, 0)
            .await
    ));
}

async fn a_revoked_token_is_refused_within_a_second_everywhere() {
    let (first, admin_token) = secured().await;
    let admin = client(&first, &admin_token);
    let reader = token(&admin, "reader", None, &[]).await;
    let accessor = admin
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .find(|t| t.description == "test reader")
        .expect("listed")
        .accessor;
    // On etcd, a second replica over the same cluster (`start_with` uses
    // the test's etcd); on sled there is one registry.
    let second = match &first.config.store {
        cd_registry::server::StoreChoice::Etcd { .. } => {
            Some(TestRegistry::start_with(|config| config.auth = true).await)
        }
        cd_registry::server::StoreChoice::Sled => None,
    };
    let replicas: Vec<&TestRegistry> = std::iter::once(&first).chain(second.as_ref()).collect();
    for replica in &replicas {
        client(replica, &reader)
            .list_services()
            .await
            .expect("valid before");
    }
    admin.revoke_token(&accessor).await.expect("revoke");
    for replica in &replicas {
        let reader = client(replica, &reader);
        eventually(Duration::from_secs(1), || async {
            match reader.list_services().await {
                Err(error) if error.code() == Some(Code::Unauthenticated) => Ok(()),
                other => Err(format!("still answered: {other:?}")),
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversize_and_repeated_credentials_are_unauthenticated() {
    let (registry, admin_token) = secured().await;
    let mut grpc = grpc(&registry.url()).await;
    let long = format!("Bearer {}", "x".repeat(8 * 1024));
    let cases: Vec<Vec<String>> = vec![
        vec!["Basic dXNlcjpwYXNz".into()],
        vec!["Bearer not-a-token".into()],
        vec![
            format!("Bearer {admin_token}"),
            format!("Bearer {admin_token}"),
        ],
        vec![long],
    ];
    for values in cases {
        let mut request = tonic::Request::new(v1::ListServicesRequest {});
        for value in &values {
            request
                .metadata_mut()
                .append("authorization", value.parse().expect("ascii"));
        }
        let status = grpc.list_services(request).await.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{:.60}: {status:?}",
            values[0]
        );
    }
    // A megabyte of credential is read and refused like any bad one; one
    // past the header limit is cut off by HTTP/2 (a 431), still not a
    // success or INTERNAL, and the registry goes on serving.
    for (size, expected) in [(1024 * 1024, Some(Code::Unauthenticated)), (2 << 20, None)] {
        let mut request = tonic::Request::new(v1::ListServicesRequest {});
        let huge = format!("Bearer {}", "x".repeat(size));
        request
            .metadata_mut()
            .insert("authorization", huge.parse().expect("ascii"));
        let mut fresh = switchyard_tests::grpc(&registry.url()).await;
        let status = fresh.list_services(request).await.expect_err("refused");
        match expected {
            Some(code) => assert_eq!(status.code(), code, "{size}: {status:?}"),
            None => assert!(
                ![Code::Ok, Code::Internal].contains(&status.code()),
                "{size}: {status:?}"
            ),
        }
    }
    client(&registry, &admin_token)
        .list_services()
        .await
        .expect("admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdctl_manages_tokens_and_says_when_it_is_not_allowed() {
    let (registry, admin_token) = secured().await;
    let url = registry.url();
    let as_admin = [("SWITCHYARD_TOKEN", admin_token.as_str())];
    let made = cdctl_async(
        &url,
        &[
            "token",
            "create",
            "--role",
            "deployer",
            "--services",
            "web,api-*",
            "--ttl",
            "90d",
            "--description",
            "ci",
        ],
        &as_admin,
    )
    .await;
    assert!(made.status.success(), "{}", explain(&made));
    let deployer = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert!(deployer.starts_with("syt_"), "{deployer}");
    let listed = cdctl_async(&url, &["-o", "json", "token", "list"], &as_admin).await;
    assert!(listed.status.success(), "{}", explain(&listed));
    let tokens: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let ci = tokens
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["description"] == "ci")
        .expect("ci");
    assert_eq!(ci["role"], "deployer");
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&deployer),
        "secrets are never listed"
    );
    let nobody = cdctl_async(&url, &["services"], &[]).await;
    assert_eq!(nobody.status.code(), Some(7), "{}", explain(&nobody));
    let as_deployer = [("SWITCHYARD_TOKEN", deployer.as_str())];
    let denied = cdctl_async(&url, &["token", "list"], &as_deployer).await;
    assert_eq!(denied.status.code(), Some(7), "{}", explain(&denied));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("deployer"),
        "{}",
        explain(&denied)
    );
    // History shows who recorded a deployment, as the registry knows it.
    client(&registry, &admin_token)
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    let record = switchyard_model::Deployment {
        id: "d1".into(),
        service: "web".into(),
        who: "someone".into(),
        started_at_ms: 1,
        ..Default::default()
    };
    client(&registry, &deployer)
        .record_deployment(&record)
        .await
        .expect("record");
    let history = cdctl_async(&url, &["-o", "json", "history", "web"], &as_admin).await;
    assert!(history.status.success(), "{}", explain(&history));
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    let principal = history[0]["principal"].as_str().expect("a principal");
    assert!(principal.contains("(ci)"), "{principal}");
    let accessor = ci["accessor"].as_str().expect("accessor");
    let revoked = cdctl_async(&url, &["token", "revoke", accessor], &as_admin).await;
    assert!(revoked.status.success(), "{}", explain(&revoked));
    let after = cdctl_async(&url, &["services"], &as_deployer).await;
    assert_eq!(after.status.code(), Some(7), "{}", explain(&after));
}

on_both_backends!(
    every_rpc_by_every_role_gets_exactly_its_answer,
    bindings_confine_agents_proxies_and_deployers,
    a_revoked_token_is_refused_within_a_second_everywhere,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_only_loopback_is_served_unless_insecure_is_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = std::process::Command::new(switchyard_tests::process::binary("cd-registry"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("cd-registry");
    assert_eq!(refused.status.code(), Some(1), "{}", explain(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--auth") && stderr.contains("--insecure"),
        "{stderr}"
    );
    // Asked for, it serves (on all addresses; the test talks to loopback).
    let registry = switchyard_tests::process::RegistryProcess::start_on(
        &dir.path().join("data"),
        "0.0.0.0:0",
        &["--insecure"],
    );
    let url = format!("http://127.0.0.1:{}", registry.address.port());
    eventually(Duration::from_secs(10), || {
        switchyard_tests::health_serving(url.clone())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_needs_a_credential_and_health_does_not() {
    let (registry, _admin) = secured().await;
    let channel = tonic::transport::Endpoint::from_shared(registry.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let refused = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect_err("no credential");
    assert_eq!(refused.code(), Code::Unauthenticated);
    switchyard_tests::health_serving(registry.url())
        .await
        .expect("health is open");
}
