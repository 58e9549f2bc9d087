//! Named environments and `--require`: two environments (two registries,
//! each with its agent, kept apart by label on one engine) from one
//! `switchyard.toml`; production takes only an image staging promoted
//! with a passed post-test, by image id, so a moved tag is refused too.

use std::path::Path;
use std::process::Output;

use switchyard_model::Color;
use switchyard_tests::docker::{LabelledContainers, TestImage, docker_ok, unique};
use switchyard_tests::process::{AgentProcess, binary, explain};
use switchyard_tests::{TestRegistry, patience};

/// `cdctl --config CONFIG --env ENV deploy SERVICE --image IMAGE` with
/// `extra`; the registry comes from the environment only.
async fn deploy_to(config: &Path, env: &str, label: &str, image: &str, extra: &[&str]) -> Output {
    tokio::process::Command::new(binary("cdctl"))
        .env_remove("SWITCHYARD_REGISTRY")
        .env_remove("SWITCHYARD_RUNTIME")
        .arg("--config")
        .arg(config)
        .args([
            "--env", env, "deploy", "web", "--image", image, "--label", label,
        ])
        .args([
            "--port",
            "80",
            "--publish-ip",
            "127.0.0.1",
            "--stop-timeout",
            "1s",
        ])
        .args(["--health-timeout", &format!("{}s", patience().as_secs())])
        .args(extra)
        .output()
        .await
        .expect("cdctl")
}

const TESTED: &[&str] = &["--post-test", "true"];

fn refused_with(output: &Output, says: &str) {
    assert_eq!(output.status.code(), Some(5), "{}", explain(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(says), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_takes_only_the_image_staging_promoted_and_tested() {
    let _heavy = switchyard_tests::docker::exclusive();
    let (staging, production) = (TestRegistry::start().await, TestRegistry::start().await);
    let labels = [
        format!("switchyard.test={}", unique("staging")),
        format!("switchyard.test={}", unique("production")),
    ];
    let _agents = [
        AgentProcess::start(&staging.url(), &labels[0], &["--ttl", "5s"]),
        AgentProcess::start(&production.url(), &labels[1], &["--ttl", "5s"]),
    ];
    let _containers = labels.clone().map(|label| LabelledContainers { label });
    let dir = tempfile::tempdir().expect("a folder for the config");
    let config = dir.path().join("switchyard.toml");
    // Each environment's label keeps its containers apart on this engine.
    let text = format!(
        "[web]\nreplicas = 1\n\n[environments.staging]\nregistry = \"{}\"\nruntime = \
         \"containers\"\nlabel = \"{}\"\n\n[environments.production]\nregistry = \"{}\"\n\
         runtime = \"containers\"\nlabel = \"{}\"\n\n[environments.production.deploy]\n\
         replicas = 2\n",
        staging.url(),
        labels[0],
        production.url(),
        labels[1]
    );
    std::fs::write(&config, text).expect("switchyard.toml");
    let (v1, v2) = (TestImage::httpd("v1", false), TestImage::httpd("v2", false));
    let (to_staging, to_production) = (
        |image: String, extra: &'static [&'static str]| {
            let (config, label) = (config.clone(), labels[0].clone());
            async move { deploy_to(&config, "staging", &label, &image, extra).await }
        },
        |image: String| {
            let (config, label) = (config.clone(), labels[1].clone());
            async move {
                deploy_to(
                    &config,
                    "production",
                    &label,
                    &image,
                    &["--require", "staging"],
                )
                .await
            }
        },
    );

    let v1_staged = to_staging(v1.tag.clone(), TESTED).await;
    assert_eq!(v1_staged.status.code(), Some(0), "{}", explain(&v1_staged));
    // v2 never reached staging; then it does, but without a post-test.
    refused_with(
        &to_production(v2.tag.clone()).await,
        "staging has no promoted deploy",
    );
    let untested = to_staging(v2.tag.clone(), &[]).await;
    assert_eq!(untested.status.code(), Some(0), "{}", explain(&untested));
    refused_with(
        &to_production(v2.tag.clone()).await,
        "with a passed post-test",
    );
    assert!(
        production.client().get_service("web").await.is_err(),
        "production untouched"
    );
    let v1_live = to_production(v1.tag.clone()).await;
    assert_eq!(v1_live.status.code(), Some(0), "{}", explain(&v1_live));
    let said = String::from_utf8_lossy(&v1_live.stdout);
    assert!(
        said.contains("0 set aside"),
        "staging's containers are not production's: {said}"
    );
    let (_, web) = production.client().get_service("web").await.expect("web");
    assert_eq!(web.active_color, Some(Color::Blue));
    assert_eq!(
        web.instances.len(),
        2,
        "production's deploy defaults: 2 replicas"
    );

    // The same tag moved to another build is not what staging tested.
    let moving = format!("{}:test", unique("switchyard-test-moving"));
    docker_ok(&["tag", &v1.tag, &moving]);
    let staged = to_staging(moving.clone(), TESTED).await;
    assert_eq!(staged.status.code(), Some(0), "{}", explain(&staged));
    docker_ok(&["tag", &v2.tag, &moving]);
    let moved = to_production(moving.clone()).await;
    docker_ok(&["rmi", &moving]);
    refused_with(&moved, "the tag moved");
    let (_, web) = production.client().get_service("web").await.expect("web");
    assert_eq!(web.active_color, Some(Color::Blue), "production untouched");

    // Every command takes the environment (here from SWITCHYARD_ENV).
    let color = std::process::Command::new(binary("cdctl"))
        .env_remove("SWITCHYARD_REGISTRY")
        .env("SWITCHYARD_ENV", "production")
        .arg("--config")
        .arg(&config)
        .args(["-o", "json", "color", "web"])
        .output()
        .expect("cdctl color");
    assert_eq!(color.status.code(), Some(0), "{}", explain(&color));
    let said: serde_json::Value = serde_json::from_slice(&color.stdout).expect("json");
    assert_eq!(said["active_color"], "blue", "{said}");

    // `stats` also takes the environment after the subcommand.
    let stats = std::process::Command::new(binary("cdctl"))
        .env_remove("SWITCHYARD_REGISTRY")
        .arg("--config")
        .arg(&config)
        .args(["-o", "json", "stats", "web", "--env", "production"])
        .output()
        .expect("cdctl stats");
    assert_eq!(stats.status.code(), Some(0), "{}", explain(&stats));
    let said: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
    assert_eq!(said["services"]["web"]["promoted"], 1, "{said}");
}
