//! `cdctl deploy` with a real Docker engine, a real registry and a real
//! agent: blue-green releases, rollback from every step (comparing the whole
//! state before and after, not only exit codes), racing deployers, manual
//! promotion, dry runs and settings files.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use switchyard_model::{Color, Health, Outcome};
use switchyard_tests::docker::{LabelledContainers, TestImage, docker_ok, unique};
use switchyard_tests::process::{AgentProcess, cdctl_async, explain};
use switchyard_tests::{TestRegistry, body, eventually, http_get};

/// A registry, an agent following this test's containers, and two versions
/// of a service image (v1, v2: busybox httpd answering its version).
pub(crate) struct Fixture {
    pub(crate) registry: TestRegistry,
    url: String,
    pub(crate) label: String,
    pub(crate) service: String,
    pub(crate) v1: TestImage,
    pub(crate) v2: TestImage,
    _agent: AgentProcess,
    _containers: LabelledContainers,
}

/// What a deploy must leave exactly as it found it when it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// (container id, name, running)
    pub(crate) containers: BTreeSet<(String, String, bool)>,
    /// (instance id, color, health)
    instances: BTreeSet<(String, Option<Color>, Health)>,
    pub(crate) active_color: Option<Color>,
}

impl Fixture {
    pub(crate) async fn start() -> Self {
        let registry = TestRegistry::start().await;
        let url = registry.url();
        let label = format!("switchyard.test={}", unique("deploy"));
        let agent = AgentProcess::start(&url, &label, &["--ttl", "5s"]);
        Fixture {
            service: unique("d"),
            v1: TestImage::httpd("v1", false),
            v2: TestImage::httpd("v2", false),
            _containers: LabelledContainers {
                label: label.clone(),
            },
            _agent: agent,
            registry,
            url,
            label,
        }
    }

    /// `cdctl deploy SERVICE --image IMAGE` with this fixture's defaults.
    pub(crate) async fn deploy(&self, image: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut args = vec![
            "deploy",
            &self.service,
            "--image",
            image,
            "--port",
            "80",
            "--publish-ip",
            "127.0.0.1",
            "--label",
            &self.label,
            "--stop-timeout",
            "1s",
        ];
        if !extra.contains(&"--health-timeout") {
            args.extend(["--health-timeout", "30s"]);
        }
        args.extend_from_slice(extra);
        cdctl_async(&self.url, &args, env).await
    }

    pub(crate) async fn cdctl(&self, args: &[&str]) -> Output {
        cdctl_async(&self.url, args, &[]).await
    }

    async fn snapshot(&self) -> Snapshot {
        let filter = format!("label=switchyard.service={}", self.service);
        let listing = docker_ok(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &filter,
            "--format",
            "{{.ID}} {{.Names}} {{.State}}",
        ]);
        let containers = listing
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (id, name, state) = (parts.next()?, parts.next()?, parts.next()?);
                Some((id.to_string(), name.to_string(), state == "running"))
            })
            .collect();
        let (instances, active_color) =
            match self.registry.client().get_service(&self.service).await {
                Ok((_, service)) => (
                    service
                        .instances
                        .iter()
                        .map(|i| (i.id.clone(), i.color, i.health))
                        .collect(),
                    service.active_color,
                ),
                Err(_) => (BTreeSet::new(), None),
            };
        Snapshot {
            containers,
            instances,
            active_color,
        }
    }

    /// Which versions the live color's instances answer.
    async fn live_versions(&self) -> BTreeSet<String> {
        let (_, service) = self
            .registry
            .client()
            .get_service(&self.service)
            .await
            .expect("service");
        let mut versions = BTreeSet::new();
        for instance in service.live_instances() {
            let address = SocketAddr::new(instance.address, instance.port);
            let response = http_get(address, "/").await.expect("the instance answers");
            versions.insert(body(&response).trim().to_string());
        }
        versions
    }

    pub(crate) async fn history(&self) -> Vec<switchyard_model::Deployment> {
        self.registry
            .client()
            .list_deployments(&self.service, 0)
            .await
            .expect("history")
    }

    /// Waits until the agent reports the running containers' instances as
    /// passing (state settled before a snapshot).
    pub(crate) async fn settled(&self) -> Snapshot {
        eventually(Duration::from_secs(30), || async {
            let snapshot = self.snapshot().await;
            let running = snapshot.containers.iter().filter(|c| c.2).count();
            let passing = snapshot
                .instances
                .iter()
                .filter(|i| i.2 == Health::Passing)
                .count();
            if running == passing && snapshot.instances.len() == running {
                Ok(snapshot)
            } else {
                Err(format!("not settled: {snapshot:?}"))
            }
        })
        .await
    }
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_alternate_colors_replace_the_old_and_roll_back_to_kept_ones() {
    let f = Fixture::start().await;
    let first = f.deploy(&f.v1.tag, &["--replicas", "2"], &[]).await;
    assert_eq!(code(&first), Some(0), "{}", explain(&first));
    assert_eq!(f.snapshot().await.active_color, Some(Color::Blue));
    assert_eq!(f.live_versions().await, BTreeSet::from(["v1".to_string()]));

    let second = f
        .deploy(
            &f.v2.tag,
            &["--replicas", "2", "-o", "json"],
            &[("CDCTL_LOG", "cdctl=info")],
        )
        .await;
    assert_eq!(code(&second), Some(0), "{}", explain(&second));
    let summary: serde_json::Value =
        serde_json::from_slice(&second.stdout).expect("one JSON object");
    assert_eq!(summary["outcome"], "promoted");
    // Each step is logged with fields, inside a span naming the deploy.
    let log = String::from_utf8_lossy(&second.stderr);
    let id = summary["deployment_id"].as_str().expect("deployment_id");
    let flip = log
        .lines()
        .find(|line| line.contains("step=\"flip color\""))
        .unwrap_or_else(|| panic!("no flip step logged:\n{log}"));
    for field in [
        format!("service={}", f.service),
        format!("deploy_id={id}"),
        "result=\"ok\"".to_string(),
        "elapsed_ms=".to_string(),
    ] {
        assert!(flip.contains(&field), "{field} missing from {flip}");
    }
    assert_eq!(summary["from_color"], "blue");
    assert_eq!(summary["to_color"], "green");
    assert!(
        summary["steps"].as_array().is_some_and(|s| s.len() >= 10),
        "{summary}"
    );
    let after = f.settled().await;
    assert_eq!(after.active_color, Some(Color::Green));
    assert!(
        after.containers.iter().all(|c| c.1.contains("-green-")),
        "old color removed: {after:?}"
    );
    assert_eq!(after.instances.len(), 2);
    assert_eq!(f.live_versions().await, BTreeSet::from(["v2".to_string()]));

    // v1 again, keeping v2 beside it; then roll back to v2 at once.
    let third = f.deploy(&f.v1.tag, &["--keep-old"], &[]).await;
    assert_eq!(code(&third), Some(0), "{}", explain(&third));
    assert_eq!(f.live_versions().await, BTreeSet::from(["v1".to_string()]));
    let back = f.cdctl(&["rollback", &f.service]).await;
    assert_eq!(code(&back), Some(0), "{}", explain(&back));
    assert_eq!(f.snapshot().await.active_color, Some(Color::Green));
    assert_eq!(f.live_versions().await, BTreeSet::from(["v2".to_string()]));

    let outcomes: Vec<Outcome> = f.history().await.iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::RolledBack,
            Outcome::Promoted,
            Outcome::Promoted,
            Outcome::Promoted
        ]
    );
    let table = f.cdctl(&["history", &f.service]).await;
    assert!(String::from_utf8_lossy(&table.stdout).contains("rolled_back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_any_step_leaves_everything_exactly_as_before() {
    let f = Fixture::start().await;
    let first = f.deploy(&f.v1.tag, &["--replicas", "2"], &[]).await;
    assert_eq!(code(&first), Some(0), "{}", explain(&first));
    // A leftover of the next color, as a failed or kept deploy leaves one:
    // it must be back, running, after every failed attempt.
    let kept = f.deploy(&f.v2.tag, &["--keep-old"], &[]).await;
    assert_eq!(code(&kept), Some(0), "{}", explain(&kept));
    let back = f.cdctl(&["rollback", &f.service]).await;
    assert_eq!(code(&back), Some(0), "{}", explain(&back));
    let before = f.settled().await;
    assert_eq!(before.active_color, Some(Color::Blue));
    assert_eq!(before.containers.len(), 3, "{before:?}");

    let never_healthy = TestImage::httpd("v3", true);
    // (what, extra flags, environment, expected exit code)
    type Fault<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, i32);
    let faults: Vec<Fault<'_>> = vec![
        (
            "step 4: starting containers",
            vec![],
            vec![("CDCTL_FAILPOINT", "start")],
            14,
        ),
        (
            "step 5: never healthy",
            vec!["--health-timeout", "3s"],
            vec![],
            10,
        ),
        (
            "step 6: pre-test fails",
            vec!["--pre-test", "exit 1"],
            vec![],
            11,
        ),
        (
            "step 8: the flip fails",
            vec![],
            vec![("CDCTL_FAILPOINT", "flip")],
            14,
        ),
        (
            "step 10: post-test fails",
            vec!["--post-test", "exit 1"],
            vec![],
            12,
        ),
        (
            "step 11: stopping the old color fails",
            vec![],
            vec![("CDCTL_FAILPOINT", "stop-old")],
            14,
        ),
    ];
    for (what, args, env, expected) in faults {
        let image = if what.contains("never healthy") {
            &never_healthy.tag
        } else {
            &f.v2.tag
        };
        let mut args = args;
        args.extend(["--replicas", "2"]);
        let output = f.deploy(image, &args, &env).await;
        assert_eq!(
            code(&output),
            Some(expected),
            "{what}: {}",
            explain(&output)
        );
        let after = f.settled().await;
        assert_eq!(
            after,
            before,
            "{what}: the state changed\n{}",
            explain(&output)
        );
        assert_eq!(
            f.live_versions().await,
            BTreeSet::from(["v1".to_string()]),
            "{what}"
        );
        let latest = &f.history().await[0];
        assert!(
            matches!(latest.outcome, Outcome::Failed | Outcome::RolledBack),
            "{what}: {latest:?}"
        );
        assert!(
            !latest.failed_step.is_empty(),
            "{what}: the failed step is recorded"
        );
    }

    // SIGTERM while the pre-test runs.
    let mut deploy = tokio::process::Command::new(switchyard_tests::process::binary("cdctl"))
        .env("SWITCHYARD_RUNTIME", "containers")
        .args([
            "--registry",
            &f.url,
            "deploy",
            &f.service,
            "--image",
            &f.v2.tag,
            "--port",
            "80",
        ])
        .args([
            "--publish-ip",
            "127.0.0.1",
            "--label",
            &f.label,
            "--stop-timeout",
            "1s",
        ])
        .args(["--pre-test", "sleep 60"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cdctl deploy");
    eventually(Duration::from_secs(30), || async {
        let snapshot = f.snapshot().await;
        let green = snapshot
            .instances
            .iter()
            .filter(|i| i.1 == Some(Color::Green) && i.2 == Health::Passing);
        if green.count() == 1 && snapshot.containers.len() == 4 {
            Ok(())
        } else {
            Err(format!("new color not up yet: {snapshot:?}"))
        }
    })
    .await;
    let pid = deploy.id().expect("pid").to_string();
    send_signal("-TERM", &pid);
    let status = tokio::time::timeout(Duration::from_secs(60), deploy.wait())
        .await
        .expect("cdctl ends after SIGTERM")
        .expect("status");
    assert_eq!(status.code(), Some(15));
    assert_eq!(f.settled().await, before, "SIGTERM: the state changed");
}

fn send_signal(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_deploys_started_together_exactly_one_proceeds() {
    let f = Fixture::start().await;
    for round in 0..3 {
        let before = f.settled().await;
        // The pre-test holds the lock long enough for the race to be real.
        let hold = ["--pre-test", "sleep 2"];
        let (a, b) = tokio::join!(
            f.deploy(&f.v1.tag, &hold, &[]),
            f.deploy(&f.v2.tag, &hold, &[])
        );
        let codes = [code(&a), code(&b)];
        let winners = codes.iter().filter(|c| **c == Some(0)).count();
        let held = codes.iter().filter(|c| **c == Some(6)).count();
        assert_eq!(
            (winners, held),
            (1, 1),
            "round {round}: {}\n{}",
            explain(&a),
            explain(&b)
        );
        let loser = if code(&a) == Some(6) { &a } else { &b };
        assert!(
            String::from_utf8_lossy(&loser.stderr).contains("lock")
                || String::from_utf8_lossy(&loser.stdout).contains("lock")
        );
        let winner_version = if code(&a) == Some(0) { "v1" } else { "v2" };
        let after = f.settled().await;
        assert_ne!(
            after.active_color, before.active_color,
            "round {round}: the winner flipped"
        );
        assert_eq!(
            f.live_versions().await,
            BTreeSet::from([winner_version.to_string()])
        );
        assert_eq!(
            after.containers.len(),
            1,
            "round {round}: only the winner's container: {after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_promotion_pauses_then_promote_finishes_and_abort_restores() {
    let f = Fixture::start().await;
    let first = f.deploy(&f.v1.tag, &[], &[]).await;
    assert_eq!(code(&first), Some(0), "{}", explain(&first));

    let paused = f.deploy(&f.v2.tag, &["--manual-promotion"], &[]).await;
    assert_eq!(code(&paused), Some(0), "{}", explain(&paused));
    assert!(
        String::from_utf8_lossy(&paused.stdout).contains("cdctl promote"),
        "{}",
        explain(&paused)
    );
    let during = f.settled().await;
    assert_eq!(during.active_color, Some(Color::Blue), "not flipped yet");
    assert_eq!(during.containers.len(), 2, "both colors run");
    assert_eq!(f.history().await[0].outcome, Outcome::Paused);
    let refused = f.deploy(&f.v1.tag, &[], &[]).await;
    assert_eq!(
        code(&refused),
        Some(6),
        "a paused deploy blocks others: {}",
        explain(&refused)
    );

    let promoted = f.cdctl(&["promote", &f.service]).await;
    assert_eq!(code(&promoted), Some(0), "{}", explain(&promoted));
    let after = f.settled().await;
    assert_eq!(after.active_color, Some(Color::Green));
    assert_eq!(after.containers.len(), 1);
    assert_eq!(f.live_versions().await, BTreeSet::from(["v2".to_string()]));
    assert_eq!(f.history().await[0].outcome, Outcome::Promoted);

    // Another run, aborted: everything as before it.
    let before = f.settled().await;
    let paused = f.deploy(&f.v1.tag, &["--manual-promotion"], &[]).await;
    assert_eq!(code(&paused), Some(0), "{}", explain(&paused));
    let aborted = f.cdctl(&["abort", &f.service]).await;
    assert_eq!(code(&aborted), Some(0), "{}", explain(&aborted));
    assert_eq!(f.settled().await, before);
    assert_eq!(f.history().await[0].outcome, Outcome::RolledBack);
    let nothing = f.cdctl(&["promote", &f.service]).await;
    assert_eq!(
        code(&nothing),
        Some(5),
        "nothing left to promote: {}",
        explain(&nothing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_change_nothing_and_settings_files_shorten_ci_calls() {
    let f = Fixture::start().await;
    let first = f.deploy(&f.v1.tag, &[], &[]).await;
    assert_eq!(code(&first), Some(0), "{}", explain(&first));
    let before = f.settled().await;
    let plan = f.deploy(&f.v2.tag, &["--dry-run"], &[]).await;
    assert_eq!(code(&plan), Some(0), "{}", explain(&plan));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("deploying") && text.contains("green"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}-blue-1", f.service)),
        "names what it would stop: {text}"
    );
    assert_eq!(f.settled().await, before, "a dry run changes nothing");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("switchyard.toml");
    let (key, value) = f.label.split_once('=').expect("label");
    std::fs::write(
        &file,
        format!(
            "[{service}]\nimage = \"{image}\"\nreplicas = 2\nport = 80\npublish_ip = \"127.0.0.1\"\n\
             stop_timeout = \"1s\"\nlabels = {{ \"{key}\" = \"{value}\" }}\n",
            service = f.service,
            image = f.v2.tag,
        ),
    )
    .expect("write the file");
    let file = file.to_string_lossy().into_owned();
    let from_file = f
        .cdctl(&["deploy", &f.service, "--file", &file, "--replicas", "1"])
        .await;
    assert_eq!(code(&from_file), Some(0), "{}", explain(&from_file));
    let after = f.settled().await;
    assert_eq!(
        after.instances.len(),
        1,
        "the flag overrides the file's replicas"
    );
    assert_eq!(
        f.live_versions().await,
        BTreeSet::from(["v2".to_string()]),
        "the file's image"
    );

    let missing = f
        .cdctl(&[
            "deploy",
            &f.service,
            "--image",
            "switchyard-no-such-image:1",
        ])
        .await;
    assert_eq!(code(&missing), Some(2), "{}", explain(&missing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_keeps_the_lock_ttl_the_deploy_started_with() {
    let f = Fixture::start().await;
    let first = f.deploy(&f.v1.tag, &[], &[]).await;
    assert_eq!(code(&first), Some(0), "{}", explain(&first));
    let logged = [("CDCTL_LOG", "cdctl=info")];
    let paused = f
        .deploy(
            &f.v2.tag,
            &["--manual-promotion", "--lock-ttl", "90s"],
            &logged,
        )
        .await;
    assert_eq!(code(&paused), Some(0), "{}", explain(&paused));
    let promoted = cdctl_async(&f.url, &["promote", &f.service], &logged).await;
    assert_eq!(code(&promoted), Some(0), "{}", explain(&promoted));
    let said = String::from_utf8_lossy(&promoted.stderr);
    let taken: Vec<&str> = said
        .lines()
        .filter(|line| line.contains("deploy lock taken"))
        .collect();
    assert!(
        !taken.is_empty() && taken.iter().all(|line| line.contains("ttl_seconds=90")),
        "promote took the lock for 90 s, as the deploy did: {taken:?}"
    );
}
