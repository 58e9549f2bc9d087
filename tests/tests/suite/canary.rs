//! `cdctl deploy --strategy canary` through HAProxy in runtime mode under
//! keep-alive clients that never retry, and nginx under fresh-connection
//! clients: each step's share of requests, the history of steps, and an
//! analysis that fails and puts everything back.

use std::path::Path;
use std::time::Duration;

use switchyard_model::Color;
use switchyard_tests::eventually;
use switchyard_tests::load::{Connections, Load, Tally};
use switchyard_tests::process::{cdctl_async, explain};

use super::haproxy_runtime::{Stage, assert_clean, deploy, until_serving};
use super::zero_downtime::FollowingNginx;

/// Phases of the load: 0 before, a step's weight while it bakes, 100 after
/// the flip, 200 after a failed canary, and [`BETWEEN`] while a step is
/// being applied (not counted).
const BETWEEN: u8 = 255;
const AFTER_FAILURE: u8 = 200;

/// Waits until the analysis has written `step` to `steps` (it runs only
/// once every proxy applied the step).
async fn until_step(steps: &Path, step: u8) {
    eventually(Duration::from_secs(60), || async move {
        let written = std::fs::read_to_string(steps).unwrap_or_default();
        match written.lines().any(|line| line.trim() == step.to_string()) {
            true => Ok(()),
            false => Err(format!("step {step} not reached: {written:?}")),
        }
    })
    .await;
}

/// The percent of phase `phase`'s answers that were `version`, and how many
/// answers it had.
fn share(tally: &Tally, phase: u8, version: &str) -> (f64, u64) {
    let seen = tally.versions.get(&phase).cloned().unwrap_or_default();
    let total: u64 = seen.values().sum();
    let of = seen.get(version).copied().unwrap_or(0);
    (100.0 * of as f64 / total.max(1) as f64, total)
}

/// The analysis command: notes the step it ran at, and fails at `fail_at`
/// (writing the time it failed, in ms since the epoch, beside `steps`).
fn analysis(steps: &Path, fail_at: Option<u8>) -> String {
    let note = format!("echo $SWITCHYARD_WEIGHT >> {}", steps.display());
    match fail_at {
        Some(step) => format!(
            "{note}; if [ $SWITCHYARD_WEIGHT = {step} ]; then echo $(($(date +%s%N) / 1000000)) \
             > {}.failed; exit 1; fi",
            steps.display()
        ),
        None => note,
    }
}

/// Answers through the proxy at `listen` (one request at a time, a fresh
/// connection each), with the time each was answered, until `stop`.
fn answers_over_time(
    listen: std::net::SocketAddr,
    path: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(u128, String)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(answer) = switchyard_tests::http_get(listen, &path).await {
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                seen.push((at, switchyard_tests::body(&answer).trim().to_string()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    })
}

/// Each of `cases` (flags after `base`, and what stderr says) is refused
/// as a usage error (exit 2).
pub(crate) async fn assert_refused(url: &str, base: &[&str], cases: &[(&[&str], &str)]) {
    for (extra, says) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let refused = cdctl_async(url, &args, &[]).await;
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{extra:?}: {}",
            explain(&refused)
        );
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains(says), "{extra:?}: {said}");
    }
}

/// A canary 10 % → 50 % → 100 % of v2 under 4 keep-alive clients: each
/// bake sees v2 within 5 points of its weight, after the flip only v2, the
/// history names each step. Then a canary of v1 whose analysis fails at
/// 50 %: exit 12, every request back on v2, the new color gone, recorded
/// rolled back at `canary 50%`. Not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_moves_traffic_step_by_step_and_a_failed_analysis_reverts_it() {
    let _heavy = switchyard_tests::docker::exclusive();
    let stage = Stage::start("cn", "haproxy-canary").await;
    let Stage {
        url,
        service,
        label,
        v1,
        v2,
        proxy,
        client,
        ..
    } = &stage;
    let dir = tempfile::tempdir().expect("a folder for the analysis");
    let path = format!("/{service}/");
    // nginx follows too (reloading): clients with a fresh connection per
    // request go through it.
    let nginx = FollowingNginx::start(url, "nginx-canary", Vec::new());
    until_serving(nginx.listen, &path, "v1").await;
    let load = Load::start_with(proxy.listen, &path, 4, Connections::KeepAlive);
    let through_nginx = Load::start_with(nginx.listen, &path, 2, Connections::Fresh);
    let enter = |phase: u8| {
        load.enter(phase);
        through_nginx.enter(phase);
    };
    let canary = |image: String, steps_file: std::path::PathBuf, fail_at: Option<u8>| {
        let (url, service, label) = (url.clone(), service.clone(), label.clone());
        // Long enough for 2,000 requests per step on a busy machine.
        let bake = if fail_at.is_some() { "3s" } else { "12s" };
        tokio::spawn(async move {
            let analysis = analysis(&steps_file, fail_at);
            let flags = [
                "--strategy",
                "canary",
                "--steps",
                "10,50,100",
                "--bake",
                bake,
                "--analysis-interval",
                "1s",
                "--analysis",
                &analysis,
            ];
            deploy(&url, &service, &label, &image, &flags).await
        })
    };

    let steps = dir.path().join("steps");
    let first = canary(v2.tag.clone(), steps.clone(), None);
    for step in [10, 50] {
        until_step(&steps, step).await;
        enter(step);
        // 2,200 requests or 10 s, well inside the 12 s bake.
        let (from, started) = (load.sent(), std::time::Instant::now());
        while load.sent() < from + 2_200 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        enter(BETWEEN);
    }
    let first = first.await.expect("the first canary");
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
    enter(100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    enter(BETWEEN);

    let failing_steps = dir.path().join("failing");
    let second = canary(v1.tag.clone(), failing_steps.clone(), Some(50));
    until_step(&failing_steps, 10).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampled = answers_over_time(proxy.listen, path.clone(), stop.clone());
    let second = second.await.expect("the failing canary");
    assert_eq!(second.status.code(), Some(12), "{}", explain(&second));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sampled = sampled.await.expect("the sampler");
    let failed_at: u128 = std::fs::read_to_string(failing_steps.with_extension("failed"))
        .expect("the analysis wrote when it failed")
        .trim()
        .parse()
        .expect("ms");
    let last_canary = sampled
        .iter()
        .filter(|(at, version)| *at >= failed_at && version == "v1")
        .map(|(at, _)| at - failed_at)
        .max();
    let first_sample = sampled
        .iter()
        .find(|(at, _)| *at >= failed_at)
        .map(|(at, _)| at - failed_at);
    println!(
        "canary: the canary's last answer through HAProxy came {} after its analysis failed \
         (first of {} samples after it: {first_sample:?} ms)",
        last_canary.map_or("no later than the first sample".into(), |ms| format!(
            "{ms} ms"
        )),
        sampled.iter().filter(|(at, _)| *at >= failed_at).count()
    );
    enter(AFTER_FAILURE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    let nginx_tally = through_nginx.finish().await;
    println!(
        "canary: {} keep-alive requests through HAProxy, {} failed; by phase {:?}; {} fresh \
         requests through nginx, {} failed; by phase {:?}",
        tally.total,
        tally.failures.len(),
        tally.versions,
        nginx_tally.total,
        nginx_tally.failures.len(),
        nginx_tally.versions
    );
    assert_clean("nginx", &nginx_tally, &[]);
    for step in [10_u8, 50] {
        let (seen, answers) = share(&nginx_tally, step, "v2");
        assert!(answers >= 500, "nginx, step {step}: only {answers} answers");
        assert!(
            (seen - f64::from(step)).abs() <= 5.0,
            "nginx, step {step}: v2 answered {seen:.1}%"
        );
    }

    assert!(
        tally.failures.is_empty(),
        "{:?}",
        &tally.failures[..tally.failures.len().min(5)]
    );
    for step in [10_u8, 50] {
        let (seen, answers) = share(&tally, step, "v2");
        assert!(answers >= 2_000, "step {step}: only {answers} answers");
        assert!(
            (seen - f64::from(step)).abs() <= 5.0,
            "step {step}: v2 answered {seen:.1}%"
        );
    }
    assert_eq!(share(&tally, 100, "v2").0, 100.0, "after the flip");
    assert_eq!(
        share(&tally, AFTER_FAILURE, "v2").0,
        100.0,
        "after the failed canary"
    );

    let history = cdctl_async(url, &["-o", "json", "history", service], &[]).await;
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    let (failed, promoted) = (&history[0], &history[1]);
    let names = |record: &serde_json::Value| -> Vec<String> {
        record["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|step| step["name"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(promoted["outcome"], "promoted", "{history}");
    assert!(names(promoted).contains(&"canary 10%".into()), "{history}");
    assert!(names(promoted).contains(&"canary 50%".into()), "{history}");
    assert_eq!(failed["outcome"], "rolled_back", "{history}");
    assert_eq!(failed["failed_step"], "canary 50%", "{history}");
    let (_, now) = client.get_service(service).await.expect("service");
    assert_eq!(
        (now.active_color, now.canary_weight),
        (Some(Color::Green), 0)
    );
    assert!(
        now.instances.iter().all(|i| i.color == Some(Color::Green)),
        "the failed canary's color is gone: {:?}",
        now.instances
    );
}

/// Canary flags are checked before anything changes (exit 2), and a dry
/// run says the steps it would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_flags_are_checked_and_a_dry_run_lists_the_steps() {
    let registry = switchyard_tests::TestRegistry::start().await;
    let client = registry.client();
    client
        .register(
            &switchyard_tests::instance("web", "b1", 8001, Some(Color::Blue)),
            None,
        )
        .await
        .expect("register");
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("blue live");
    let url = registry.url();
    let base = ["deploy", "web", "--image", "web:2", "--dry-run"];
    let cases = [
        (&["--steps", "10,100"][..], "belong to --strategy canary"),
        (
            &["--strategy", "canary", "--steps", "50,10,100"][..],
            "must rise",
        ),
        (
            &["--strategy", "canary", "--steps", "10,50"][..],
            "must be 100",
        ),
        (
            &[
                "--strategy",
                "canary",
                "--analysis-prometheus",
                "https://p:9090",
                "--analysis-query",
                "up",
            ][..],
            "https is not supported",
        ),
    ];
    assert_refused(&url, &base, &cases).await;
    let args: Vec<&str> = base
        .iter()
        .chain(&[
            "--strategy",
            "canary",
            "--steps",
            "5,50,100",
            "--bake",
            "30s",
        ])
        .copied()
        .collect();
    let plan = cdctl_async(&url, &args, &[]).await;
    assert_eq!(plan.status.code(), Some(0), "{}", explain(&plan));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        said.contains("canary 5%, 50% of requests to green (each baked 30s"),
        "{said}"
    );
    assert_eq!(
        client
            .get_service("web")
            .await
            .expect("web")
            .1
            .canary_weight,
        0,
        "a dry run changes nothing"
    );
}

/// A registry, an agent and v1 of a service deployed, with v2 built: a
/// canary's stage without a proxy (no proxy reports, so no waits for one).
struct Bare {
    url: String,
    service: String,
    label: String,
    v1: switchyard_tests::docker::TestImage,
    v2: switchyard_tests::docker::TestImage,
    client: switchyard_client::RegistryClient,
    _containers: switchyard_tests::docker::LabelledContainers,
    _agent: switchyard_tests::process::AgentProcess,
    _registry: switchyard_tests::TestRegistry,
}

impl Bare {
    async fn start(prefix: &str) -> Self {
        use switchyard_tests::docker::{LabelledContainers, TestImage, unique};
        let registry = switchyard_tests::TestRegistry::start().await;
        let url = registry.url();
        let service = unique(prefix);
        let label = format!("switchyard.test={}", unique(prefix));
        let agent = switchyard_tests::process::AgentProcess::start(&url, &label, &["--ttl", "5s"]);
        let containers = LabelledContainers {
            label: label.clone(),
        };
        let (v1, v2) = (TestImage::httpd("v1", false), TestImage::httpd("v2", false));
        let first = deploy(&url, &service, &label, &v1.tag, &[]).await;
        assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
        Bare {
            client: registry.client(),
            url,
            service,
            label,
            v1,
            v2,
            _containers: containers,
            _agent: agent,
            _registry: registry,
        }
    }
}

/// `--analysis-prometheus` asks a real Prometheus at each step: a query
/// that answers nothing lets the canary through (promoted); one whose
/// sample (`${WEIGHT}`, replaced by the step's weight) passes the threshold
/// at 60 % reverts it there (exit 12, rolled back at `canary 60%`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_query_judges_each_canary_step() {
    let bare = Bare::start("pq").await;
    let Bare {
        url,
        service,
        label,
        v1,
        v2,
        client,
        ..
    } = &bare;
    let dir = tempfile::tempdir().expect("a folder for Prometheus");
    let prometheus = super::metrics::Prometheus::start(dir.path(), &[]);
    prometheus.until("vector(1)", |v| v == 1.0).await;
    let at = format!("http://{}", prometheus.address);
    let canary = |query: &'static str, image: String| {
        let (url, service, label, at) = (url.clone(), service.clone(), label.clone(), at.clone());
        async move {
            let flags = [
                "--strategy",
                "canary",
                "--steps",
                "20,60,100",
                "--bake",
                "1s",
                "--analysis-interval",
                "500ms",
                "--analysis-prometheus",
                &at,
                "--analysis-query",
                query,
                "--analysis-threshold",
                "50",
            ];
            deploy(&url, &service, &label, &image, &flags).await
        }
    };
    let quiet = canary("vector(${WEIGHT}) > 1000", v2.tag.clone()).await;
    assert_eq!(quiet.status.code(), Some(0), "{}", explain(&quiet));
    let failing = canary("vector(${WEIGHT})", v1.tag.clone()).await;
    assert_eq!(failing.status.code(), Some(12), "{}", explain(&failing));
    let said = String::from_utf8_lossy(&failing.stderr);
    assert!(said.contains("is above 50: [60.0]"), "{said}");

    let history = cdctl_async(url, &["-o", "json", "history", service], &[]).await;
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    assert_eq!(history[0]["outcome"], "rolled_back", "{history}");
    assert_eq!(history[0]["failed_step"], "canary 60%", "{history}");
    assert_eq!(history[1]["outcome"], "promoted", "{history}");
    let (_, now) = client.get_service(service).await.expect("service");
    assert_eq!(
        (now.active_color, now.canary_weight),
        (Some(Color::Green), 0)
    );
}

/// `--manual-promotion` pauses a canary before each step: `cdctl promote`
/// takes the next step and pauses again, the last one flips; `cdctl abort`
/// at any step puts every request back and removes the new color.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_canary_goes_one_step_per_promote_and_abort_undoes_it() {
    let bare = Bare::start("mc").await;
    let Bare {
        url,
        service,
        label,
        v2,
        client,
        ..
    } = &bare;
    let manual = ["--strategy", "canary", "--bake", "0s", "--manual-promotion"];
    let state = || async {
        let (_, now) = client.get_service(service).await.expect("service");
        let colors: std::collections::BTreeSet<_> =
            now.instances.iter().filter_map(|i| i.color).collect();
        (now.active_color, now.canary_weight, colors)
    };
    let cdctl = |verb: &'static str| {
        let (url, service) = (url.clone(), service.clone());
        async move { cdctl_async(&url, &[verb, &service], &[]).await }
    };
    let (blue, green) = (Color::Blue, Color::Green);

    let steps: Vec<&str> = manual
        .iter()
        .copied()
        .chain(["--steps", "20,60,100"])
        .collect();
    let paused = deploy(url, service, label, &v2.tag, &steps).await;
    assert_eq!(paused.status.code(), Some(0), "{}", explain(&paused));
    assert_eq!(state().await, (Some(blue), 0, [blue, green].into()));
    for weight in [20, 60] {
        let promoted = cdctl("promote").await;
        assert_eq!(promoted.status.code(), Some(0), "{}", explain(&promoted));
        let said = explain(&promoted);
        assert!(
            said.contains(&format!("sends {weight}% of its requests to green")),
            "{said}"
        );
        assert_eq!(state().await, (Some(blue), weight, [blue, green].into()));
    }
    let aborted = cdctl("abort").await;
    assert_eq!(aborted.status.code(), Some(0), "{}", explain(&aborted));
    assert_eq!(
        state().await,
        (Some(blue), 0, [blue].into()),
        "as before the deploy"
    );

    let steps: Vec<&str> = manual
        .iter()
        .copied()
        .chain(["--steps", "50,100"])
        .collect();
    let paused = deploy(url, service, label, &v2.tag, &steps).await;
    assert_eq!(paused.status.code(), Some(0), "{}", explain(&paused));
    assert_eq!(cdctl("promote").await.status.code(), Some(0));
    assert_eq!(state().await, (Some(blue), 50, [blue, green].into()));
    let flipped = cdctl("promote").await;
    assert_eq!(flipped.status.code(), Some(0), "{}", explain(&flipped));
    assert_eq!(state().await, (Some(green), 0, [green].into()));
    let history = cdctl_async(url, &["-o", "json", "history", service], &[]).await;
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    assert_eq!(history[0]["outcome"], "promoted", "{history}");
    assert_eq!(history[1]["outcome"], "rolled_back", "{history}");
}
