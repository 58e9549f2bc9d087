//! Who did what under `--auth`: a flip and a lock name the credential that
//! made them, and tokens made beforehand (Docker secrets) are valid from
//! the first start, with a revocation that outlives a restart.

use switchyard_model::Color;
use switchyard_model::auth::PRINCIPAL_KEY;
use switchyard_tests::process::{cdctl_async, explain};
use switchyard_tests::{TestRegistry, instance};
use tonic::Code;

use super::auth::{client, secured, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flips_and_locks_name_who_made_them() {
    let (registry, admin_token) = secured().await;
    let admin = client(&registry, &admin_token);
    admin
        .register(&instance("web", "w1", 9000, Some(Color::Blue)), None)
        .await
        .expect("register web");
    let ci = client(&registry, &token(&admin, "deployer", None, &["web"]).await);
    let grant = ci.acquire_lock("web", "ci-run-7", 30).await.expect("lock");
    ci.set_active_color("web", Some(Color::Blue), None, grant.token)
        .await
        .expect("flip");
    // Someone else asking for the lock learns which credential holds it,
    // not only the holder name the client chose.
    let other = client(&registry, &token(&admin, "deployer", None, &[]).await);
    let held = other
        .acquire_lock("web", "laptop", 30)
        .await
        .expect_err("held");
    let message = held.to_string();
    assert!(
        message.contains("ci-run-7") && message.contains("(test deployer)"),
        "{message}"
    );
    let as_admin = [("SWITCHYARD_TOKEN", admin_token.as_str())];
    let table = cdctl_async(&registry.url(), &["status", "web"], &as_admin).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.contains("set by token") && text.contains("(test deployer)"),
        "{}",
        explain(&table)
    );
    let json = cdctl_async(&registry.url(), &["status", "web", "-o", "json"], &as_admin).await;
    let status: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let set_by = status["color_set_by"].as_str().unwrap_or_default();
    assert!(set_by.contains("test deployer"), "{status}");
    // A flip by someone else names them instead.
    ci.release_lock("web", grant.token).await.expect("release");
    admin
        .set_active_color("web", Some(Color::Green), Some(Color::Blue), 0)
        .await
        .expect("admin flips");
    let (_, service) = admin.get_service("web").await.expect("get");
    let set_by = &service.metadata[PRINCIPAL_KEY];
    assert!(set_by.contains("(bootstrap)"), "{set_by}");
}

/// A token string as `openssl rand -hex` makes them (README "Security").
fn made_beforehand(fill: char) -> String {
    let fill = fill.to_string();
    format!("syt_{}_{}", fill.repeat(16), fill.repeat(64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_beforehand_are_valid_from_the_first_start_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin_file, agent_file) = (dir.path().join("admin"), dir.path().join("agent"));
    let (admin_token, agent_token) = (made_beforehand('a'), made_beforehand('b'));
    std::fs::write(&admin_file, format!("{admin_token}\n")).expect("admin secret");
    std::fs::write(&agent_file, &agent_token).expect("agent secret");
    let data = dir.path().join("data");
    let start = || {
        let (admin_file, agent_file, data) = (admin_file.clone(), agent_file.clone(), data.clone());
        TestRegistry::start_with(move |config| {
            config.data_dir = data;
            config.auth = true;
            config.bootstrap_token_file = Some(admin_file);
            let seed = format!("agent:*={}", agent_file.display());
            config.seed_tokens = vec![seed.parse().expect("a seed")];
        })
    };
    let mut registry = start().await;
    let admin = client(&registry, &admin_token);
    // The shared agent token of a global service: any node, agent rights only.
    let agent = client(&registry, &agent_token);
    for node in ["node-a", "worker-7"] {
        agent.open_session(node, 60).await.expect("a session");
    }
    let denied = agent
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect_err("an agent may not flip");
    assert_eq!(denied.code(), Some(Code::PermissionDenied));
    let tokens = admin.list_tokens().await.expect("admin lists");
    let seeded = tokens
        .iter()
        .find(|t| t.accessor == "b".repeat(16))
        .expect("the seeded token");
    assert_eq!(seeded.binding.as_deref(), Some("*"));
    // Revoked, it stays revoked when the registry starts again.
    admin.revoke_token(&seeded.accessor).await.expect("revoke");
    drop((admin, agent));
    registry.stop().await;
    let again = start().await;
    let refused = client(&again, &agent_token)
        .open_session("node-a", 60)
        .await
        .expect_err("revoked");
    assert_eq!(refused.code(), Some(Code::Unauthenticated));
    client(&again, &admin_token)
        .list_services()
        .await
        .expect("the admin token still works");
}
