//! A deploy seen and finished from the dashboard: `cdctl deploy
//! --wait-for-promotion` pauses, the page shows the deploy's steps and the
//! pause, and the promote button sends it on; the registry then says
//! promoted and the page follows without a reload.

use fantoccini::Locator;
use switchyard_model::{Color, Outcome};
use switchyard_tests::browser::Browser;
use switchyard_tests::docker::{LabelledContainers, TestImage, unique};
use switchyard_tests::process::{AgentProcess, cdctl_async, explain};
use switchyard_tests::{eventually, patience};

use super::{Dashboard, mark, press, still_marked};

/// `cdctl deploy` of `image` to `service` with the test's defaults.
fn deploy_args<'a>(service: &'a str, image: &'a str, label: &'a str) -> Vec<&'a str> {
    vec![
        "deploy",
        service,
        "--image",
        image,
        "--port",
        "80",
        "--publish-ip",
        "127.0.0.1",
        "--label",
        label,
        "--stop-timeout",
        "1s",
        "--health-timeout",
        "30s",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deploy_shows_its_steps_and_the_promote_button_finishes_it() {
    let d = Dashboard::start(true).await;
    let url = d.registry.url();
    let label = format!("switchyard.test={}", unique("dashboard"));
    let _containers = LabelledContainers {
        label: label.clone(),
    };
    let as_admin = [("SWITCHYARD_TOKEN", d.admin_token.as_str())];
    let _agent = AgentProcess::start_with_env(&url, &label, &["--ttl", "5s"], &as_admin);
    let (v1, v2) = (TestImage::httpd("v1", false), TestImage::httpd("v2", false));
    let service = unique("ui");
    let deployer = d.token("deployer").await;
    let as_deployer = [("SWITCHYARD_TOKEN", deployer.as_str())];
    let first = cdctl_async(&url, &deploy_args(&service, &v1.tag, &label), &as_deployer).await;
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));

    let browser = Browser::start().await;
    d.sign_in(&browser, &deployer).await;
    let page = d.url(&format!("/ui/services/{service}"));
    browser.open(&page, "#live-color").await;
    mark(&browser).await;

    let waiting = wait_for_promotion(&url, deploy_args(&service, &v2.tag, &label), &deployer);
    // The pre-test sleeps 2 s: the page shows the deploy at that step.
    browser.until_text("#current-step", "pre-test").await;
    browser
        .until_text("#current-step", "paused for promotion")
        .await;
    let steps = browser
        .text("#current-deploy .steps")
        .await
        .unwrap_or_default();
    for done in [
        "lock",
        "colors",
        "start containers",
        "wait healthy",
        "pre-test",
    ] {
        assert!(
            steps.contains(done),
            "{done} is not among the steps shown: {steps}"
        );
    }
    assert_eq!(
        browser.count("#rollback").await,
        0,
        "no rollback onto a paused deploy"
    );
    browser.screenshot("service-paused.png").await;
    assert_eq!(d.live(&service).await, Some(Color::Blue), "not flipped yet");

    let said = press(&browser, "#promote").await;
    assert!(said.contains("promote requested"), "{said}");
    let finished = waiting.await.expect("the waiting cdctl");
    assert_eq!(finished.status.code(), Some(0), "{}", explain(&finished));
    let history = d
        .admin
        .list_deployments(&service, 1)
        .await
        .expect("history");
    assert_eq!(history[0].outcome, Outcome::Promoted, "{history:?}");
    assert_eq!(d.live(&service).await, Some(Color::Green));
    eventually(patience(), || async {
        match browser.text("#live-color").await?.as_str() {
            "green" if browser.count("#current-deploy").await == 0 => Ok(()),
            "green" => Err("the page still shows a deploy in progress".to_string()),
            other => Err(format!("the page still says {other}")),
        }
    })
    .await;
    let promoted = browser
        .client
        .find(Locator::Css("#history tbody tr:first-child .outcome"))
        .await
        .expect("the newest record")
        .text()
        .await
        .expect("its text");
    assert_eq!(promoted, "promoted");
    assert!(still_marked(&browser).await, "the page was not reloaded");

    // The abort button puts everything back.
    let waiting = wait_for_promotion(&url, deploy_args(&service, &v1.tag, &label), &deployer);
    browser
        .until_text("#current-step", "paused for promotion")
        .await;
    let said = press(&browser, "#abort").await;
    assert!(said.contains("abort requested"), "{said}");
    let finished = waiting.await.expect("the waiting cdctl");
    assert_eq!(finished.status.code(), Some(0), "{}", explain(&finished));
    let history = d
        .admin
        .list_deployments(&service, 1)
        .await
        .expect("history");
    assert_eq!(history[0].outcome, Outcome::RolledBack, "{history:?}");
    assert_eq!(d.live(&service).await, Some(Color::Green), "v2 stays live");
    browser.close().await;
}

/// `cdctl deploy ARGS --wait-for-promotion` in the background (with a
/// pre-test that takes 2 s, so the page can show that step).
fn wait_for_promotion(
    url: &str,
    mut args: Vec<&str>,
    token: &str,
) -> tokio::task::JoinHandle<std::process::Output> {
    args.extend(["--wait-for-promotion", "--pre-test", "sleep 2"]);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (url, token) = (url.to_string(), token.to_string());
    tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cdctl_async(&url, &args, &[("SWITCHYARD_TOKEN", token.as_str())]).await
    })
}
