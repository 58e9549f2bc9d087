//! `cdctl deploy --strategy rolling` through HAProxy in runtime mode and
//! nginx under load: four instances replaced one at a time, never fewer
//! than three taking requests, and a health check failing in the second
//! batch putting all four old ones back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use switchyard_client::RegistryClient;
use switchyard_model::labels::{meta, record};
use switchyard_model::{Outcome, Service};
use switchyard_tests::docker::{LabelledContainers, TestImage, docker, docker_ok, unique};
use switchyard_tests::load::{Connections, Load};
use switchyard_tests::process::{AgentProcess, cdctl_async, explain};
use switchyard_tests::{TestRegistry, patience};

use super::canary::assert_refused;
use super::haproxy_runtime::{RuntimeProxy, assert_clean, deploy};
use super::zero_downtime::FollowingNginx;

/// The fewest routed instances the registry listed, sampled every 100 ms
/// until dropped.
pub(crate) struct InService {
    fewest: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl InService {
    pub(crate) fn sample(client: RegistryClient, service: String) -> Self {
        let fewest = Arc::new(AtomicUsize::new(usize::MAX));
        let samples = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (low, count, done) = (Arc::clone(&fewest), Arc::clone(&samples), Arc::clone(&stop));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok((_, found)) = client.get_service(&service).await {
                    low.fetch_min(found.live_instances().count(), Ordering::Relaxed);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        InService {
            fewest,
            samples,
            stop,
        }
    }

    /// (fewest routed instances seen, samples taken) since the last call.
    pub(crate) fn take(&self) -> (usize, usize) {
        (
            self.fewest.swap(usize::MAX, Ordering::Relaxed),
            self.samples.swap(0, Ordering::Relaxed),
        )
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The versions of the service's routed instances, by image.
async fn live_images(client: &RegistryClient, service: &str) -> Vec<String> {
    let (_, found): (u64, Service) = client.get_service(service).await.expect("service");
    let mut images: Vec<String> = found
        .live_instances()
        .filter_map(|i| i.metadata.get(meta::IMAGE).cloned())
        .collect();
    images.sort();
    images
}

/// Makes the first container of `image` healthy (its health check passes
/// once `/www/healthy` exists) and leaves every later one failing.
fn heal_only_the_first(image: String) -> std::thread::JoinHandle<Option<String>> {
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let ancestor = format!("ancestor={image}");
        while started.elapsed() < patience() * 2 {
            let listing = docker(&["ps", "-q", "--filter", &ancestor]);
            let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
            if let Some(first) = listing.split_whitespace().next() {
                docker_ok(&["exec", first, "/bin/busybox", "touch", "/www/healthy"]);
                return Some(first.to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
}

/// Four v1 instances, replaced by v2 one at a time (`--batch 1
/// --max-unavailable 1`) under keep-alive and fresh-connection clients
/// through HAProxy's runtime mode and fresh-connection clients through
/// nginx: at least three instances take requests at every sample, every
/// request is answered, four v2 at the end, each batch in the history.
/// Then v3, whose health check passes only in its first container: the
/// second batch times out, the deploy exits 10 and puts back four v2, and
/// nothing of v3 is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_keeps_three_of_four_in_service_and_a_failed_batch_puts_them_back() {
    let _heavy = switchyard_tests::docker::exclusive();
    let registry = TestRegistry::start().await;
    let url = registry.url();
    let client = registry.client();
    let service = unique("rl");
    let label = format!("switchyard.test={}", unique("rl"));
    let _agent = AgentProcess::start(&url, &label, &["--ttl", "5s"]);
    let _containers = LabelledContainers {
        label: label.clone(),
    };
    let (v1, v2, v3) = (
        TestImage::httpd("v1", false),
        TestImage::httpd("v2", false),
        TestImage::httpd("v3", true),
    );
    let four = ["--replicas", "4"];
    let first = deploy(&url, &service, &label, &v1.tag, &four).await;
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
    let haproxy = RuntimeProxy::start(&url, "haproxy-rolling", &[]).await;
    let nginx = FollowingNginx::start(&url, "nginx-rolling", Vec::new());
    let path = format!("/{service}/");
    haproxy.serves(&path, "v1").await;
    super::haproxy_runtime::until_serving(nginx.listen, &path, "v1").await;

    let loads = [
        Load::start_with(haproxy.listen, &path, 4, Connections::KeepAlive),
        Load::start_with(haproxy.listen, &path, 2, Connections::Fresh),
        Load::start_with(nginx.listen, &path, 2, Connections::Fresh),
    ];
    let in_service = InService::sample(client.clone(), service.clone());
    let rolling = [
        "--strategy",
        "rolling",
        "--batch",
        "1",
        "--max-unavailable",
        "1",
        "--replicas",
        "4",
        "--health-timeout",
        "10s",
    ];
    let rolled = deploy(&url, &service, &label, &v2.tag, &rolling).await;
    assert_eq!(rolled.status.code(), Some(0), "{}", explain(&rolled));
    let (fewest, samples) = in_service.take();
    assert_eq!(live_images(&client, &service).await, [v2.tag.as_str(); 4]);
    let history = client.list_deployments(&service, 1).await.expect("history");
    let steps: Vec<&str> = history[0].steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(history[0].outcome, Outcome::Promoted);
    // The record names the artifact by id, and when it was built.
    let kept = &history[0].metadata;
    assert!(kept[record::IMAGE_ID].starts_with("sha256:"), "{kept:?}");
    assert!(
        kept[record::IMAGE_CREATED_MS].parse::<u64>().is_ok(),
        "{kept:?}"
    );
    for batch in 1..=4 {
        assert!(
            steps.contains(&format!("batch {batch}/4").as_str()),
            "{steps:?}"
        );
    }
    for load in &loads {
        load.enter(1);
    }

    let healed = heal_only_the_first(v3.tag.clone());
    let failed = deploy(&url, &service, &label, &v3.tag, &rolling).await;
    assert_eq!(failed.status.code(), Some(10), "{}", explain(&failed));
    assert!(
        healed.join().expect("the healer").is_some(),
        "no v3 started"
    );
    let (fewest_failing, samples_failing) = in_service.take();
    assert_eq!(live_images(&client, &service).await, [v2.tag.as_str(); 4]);
    let history = client.list_deployments(&service, 1).await.expect("history");
    assert_eq!(history[0].outcome, Outcome::RolledBack, "{:?}", history[0]);
    assert_eq!(history[0].failed_step, "batch 2/4");
    let v3_left = docker(&["ps", "-aq", "--filter", &format!("ancestor={}", v3.tag)]);
    assert!(v3_left.stdout.is_empty(), "v3 containers remain");
    for load in &loads {
        load.enter(2);
    }
    haproxy.serves(&path, "v2").await;
    // Long enough for a few thousand requests after the rollback.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let [kept, fresh, through_nginx] = loads;
    let (kept, fresh, through_nginx) = (
        kept.finish().await,
        fresh.finish().await,
        through_nginx.finish().await,
    );
    println!(
        "rolling: fewest in service {fewest} of {samples} samples, {fewest_failing} of \
         {samples_failing} while the failing deploy ran; HAProxy keep-alive {} requests \
         ({} failed), fresh {} ({} failed); nginx fresh {} ({} failed); by phase {:?}",
        kept.total,
        kept.failures.len(),
        fresh.total,
        fresh.failures.len(),
        through_nginx.total,
        through_nginx.failures.len(),
        kept.versions
    );
    assert!(samples > 10 && samples_failing > 10, "too few samples");
    assert!(
        fewest >= 3,
        "only {fewest} instances in service while rolling"
    );
    assert!(
        fewest_failing >= 3,
        "only {fewest_failing} in service while failing"
    );
    assert_clean("HAProxy keep-alive", &kept, &[]);
    assert_clean("HAProxy fresh connections", &fresh, &[]);
    assert_clean("nginx fresh connections", &through_nginx, &[]);
    let after = kept.versions.get(&2).cloned().unwrap_or_default();
    assert_eq!(after.keys().collect::<Vec<_>>(), ["v2"], "{after:?}");
}

/// Flags that do not fit a rolling deploy are refused before anything
/// changes (exit 2); a dry run lists the batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_flags_are_checked_and_a_dry_run_lists_the_batches() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(
            &switchyard_tests::instance("web", "b1", 8001, Some(switchyard_model::Color::Blue)),
            None,
        )
        .await
        .expect("register");
    client
        .set_active_color("web", Some(switchyard_model::Color::Blue), None, 0)
        .await
        .expect("blue live");
    let url = registry.url();
    let base = ["deploy", "web", "--image", "web:2", "--dry-run"];
    let cases = [
        (&["--batch", "2"][..], "belong to --strategy rolling"),
        (
            &["--strategy", "rolling", "--batch", "0"][..],
            "--batch must be 1 to 100",
        ),
        (
            &["--strategy", "rolling", "--max-unavailable", "2"][..],
            "is above --batch 1",
        ),
        (
            &["--strategy", "rolling", "--keep-old"][..],
            "belong to blue-green and canary",
        ),
    ];
    assert_refused(&url, &base, &cases).await;
    let args: Vec<&str> = base
        .iter()
        .chain(&["--strategy", "rolling", "--batch", "2", "--replicas", "3"])
        .copied()
        .collect();
    let plan = cdctl_async(&url, &args, &[]).await;
    assert_eq!(plan.status.code(), Some(0), "{}", explain(&plan));
    let said = String::from_utf8_lossy(&plan.stdout);
    assert!(
        said.contains("rolling web:2 within blue: 0 old replaced by 3 new, 2 at a time"),
        "{said}"
    );
    assert!(said.contains("batch 2: start 1,"), "{said}");
    assert!(!said.contains("batch 3"), "{said}");
}

/// On Swarm, Swarm rolls the live color's service over itself (start-first,
/// one task at a time, as many as it has without --replicas): three v1
/// tasks become three v2 tasks, never more
/// than one batch short in the registry. v3, whose health check never
/// passes, is rolled back by Swarm: exit 10, three v2 tasks passing again,
/// the deploy recorded rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_on_swarm_lets_swarm_roll_tasks_over_and_back() {
    let f = super::swarm::HostFixture::start().await;
    let (url, network, label) = (f.registry.url(), &f.network.name, f.label.as_str());
    let client = f.registry.client();
    let (v1, v2, v3) = (
        TestImage::httpd("v1", false),
        TestImage::httpd("v2", false),
        TestImage::httpd("v3", true),
    );
    let service = unique("srl");
    let swarm = [("SWITCHYARD_RUNTIME", "swarm")];
    let three = ["--label", label, "--replicas", "3"];
    let first = super::swarm::deploy(&url, &service, &v1.tag, network, &three, &swarm).await;
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
    let in_service = InService::sample(client.clone(), service.clone());
    // Without --replicas a rolling deploy keeps the count it finds.
    let rolling = ["--label", label, "--strategy", "rolling", "--batch", "1"];
    let rolled = super::swarm::deploy(&url, &service, &v2.tag, network, &rolling, &swarm).await;
    assert_eq!(rolled.status.code(), Some(0), "{}", explain(&rolled));
    let (fewest, samples) = in_service.take();
    assert_eq!(live_images(&client, &service).await, [v2.tag.as_str(); 3]);

    let failed = super::swarm::deploy(&url, &service, &v3.tag, network, &rolling, &swarm).await;
    assert_eq!(failed.status.code(), Some(10), "{}", explain(&failed));
    let (fewest_failing, samples_failing) = in_service.take();
    assert_eq!(live_images(&client, &service).await, [v2.tag.as_str(); 3]);
    let history = client.list_deployments(&service, 1).await.expect("history");
    assert_eq!(history[0].outcome, Outcome::RolledBack, "{:?}", history[0]);
    println!(
        "swarm rolling: fewest in service {fewest} of {samples} samples; {fewest_failing} of \
         {samples_failing} while Swarm rolled v3 back"
    );
    assert!(samples > 5 && samples_failing > 5, "too few samples");
    assert!(fewest >= 2, "{fewest} of 3 tasks in service while rolling");
    assert!(
        fewest_failing >= 2,
        "{fewest_failing} of 3 while rolling back"
    );
}
