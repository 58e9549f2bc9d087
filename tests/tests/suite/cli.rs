//! `cdctl` as a user runs it, against the real `cd-registry` binary: JSON
//! shapes, tables, exit codes and one-line errors; and the README's run
//! command, tried as a new user would.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;
use switchyard_tests::process::{RegistryProcess, binary, cdctl, cdctl_json};
use switchyard_tests::workspace_root;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn status_services_and_colors_print_the_documented_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = RegistryProcess::start(&dir.path().join("data"), &[]);
    let url = registry.url();
    let registered = cdctl_json(
        &url,
        &[
            "-o",
            "json",
            "register",
            "--service",
            "web",
            "--address",
            "127.0.0.1",
            "--port",
            "8081",
            "--color",
            "blue",
            "--id",
            "web-1",
            "--node",
            "edge-1",
        ],
    );
    assert!(registered["revision"].as_u64().is_some_and(|r| r > 0));
    cdctl_json(
        &url,
        &[
            "-o",
            "json",
            "register",
            "--service",
            "web",
            "--address",
            "127.0.0.1",
            "--port",
            "8082",
            "--color",
            "green",
            "--id",
            "web-2",
        ],
    );

    let status = cdctl_json(&url, &["status", "web", "-o", "json"]);
    assert_eq!(status["service"], "web");
    assert_eq!(status["active_color"], serde_json::Value::Null);
    assert!(status["revision"].as_u64().is_some());
    let instances = status["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 2);
    let first = &instances[0];
    for (field, value) in [
        ("id", json!("web-1")),
        ("color", json!("blue")),
        ("node", json!("edge-1")),
        ("address", json!("127.0.0.1")),
        ("port", json!(8081)),
        ("health", json!("passing")),
    ] {
        assert_eq!(first[field], value, "field {field} of {first}");
    }
    assert_eq!(instances[1]["node"], "external");

    let flipped = cdctl(&url, &["set-color", "web", "blue", "--expect", "none"]);
    assert!(flipped.status.success(), "{}", stderr(&flipped));
    let color = cdctl_json(&url, &["color", "web", "-o", "json"]);
    assert_eq!(color["active_color"], "blue");
    assert_eq!(color["next_color"], "green");

    let services = cdctl_json(&url, &["services", "-o", "json"]);
    assert_eq!(
        services,
        json!([{"service": "web", "active_color": "blue", "instances": 2, "passing": 2}])
    );

    let table = cdctl(&url, &["status", "web"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("active color blue"), "{text}");
    assert!(text.contains("127.0.0.1:8081"), "{text}");

    let removed = cdctl(&url, &["deregister", "web-2"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let status = cdctl_json(&url, &["status", "web", "-o", "json"]);
    assert_eq!(status["instances"].as_array().map(Vec::len), Some(1));
}

#[test]
fn failures_print_one_actionable_line_and_distinct_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = RegistryProcess::start(&dir.path().join("data"), &[]);
    let url = registry.url();
    cdctl_json(
        &url,
        &[
            "-o",
            "json",
            "register",
            "--service",
            "web",
            "--address",
            "127.0.0.1",
            "--port",
            "80",
        ],
    );
    let cases: [(&[&str], i32, &str); 5] = [
        (&["status", "nope"], 4, "not found"),
        (
            &["set-color", "web", "green", "--expect", "blue"],
            5,
            "is none, not blue",
        ),
        (
            &[
                "register",
                "--service",
                "Web",
                "--address",
                "127.0.0.1",
                "--port",
                "80",
            ],
            2,
            "service",
        ),
        (
            &[
                "register",
                "--service",
                "web",
                "--address",
                "127.0.0.1",
                "--port",
                "70000",
            ],
            2,
            "port",
        ),
        (&["deregister", "nope"], 4, "not found"),
    ];
    for (args, code, needle) in cases {
        let output = cdctl(&url, args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {message}");
        assert!(
            message.contains(needle),
            "{args:?}: {message:?} lacks {needle:?}"
        );
        assert_eq!(
            message.trim().lines().count(),
            1,
            "{args:?}: one line: {message:?}"
        );
    }

    // A rollback with nothing to go back to, run where no Docker answers
    // (a CI job that only flips colors): the registry's view decides.
    cdctl_json(
        &url,
        &["-o", "json", "set-color", "web", "blue", "--expect", "none"],
    );
    let rollback = Command::new(binary("cdctl"))
        .args(["--registry", &url, "rollback", "web"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .stdin(Stdio::null())
        .output()
        .expect("running cdctl");
    let message = stderr(&rollback);
    assert_eq!(rollback.status.code(), Some(5), "{message}");
    assert!(message.contains("nothing to roll back to"), "{message:?}");
    assert_eq!(message.trim().lines().count(), 1, "one line: {message:?}");

    // Nothing listening there: unreachable, with what to do.
    drop(registry);
    let output = cdctl(&url, &["services"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--registry"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn watch_prints_one_json_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = RegistryProcess::start(&dir.path().join("data"), &[]);
    let url = registry.url();
    let mut watch = Command::new(binary("cdctl"))
        .args(["--registry", &url, "watch", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cdctl watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let snapshot: serde_json::Value =
        serde_json::from_str(&lines.next().expect("a line").expect("text")).expect("JSON");
    assert_eq!(snapshot["type"], "snapshot");
    cdctl_json(
        &url,
        &[
            "-o",
            "json",
            "register",
            "--service",
            "web",
            "--address",
            "127.0.0.1",
            "--port",
            "81",
            "--id",
            "w1",
        ],
    );
    let changes: serde_json::Value =
        serde_json::from_str(&lines.next().expect("a line").expect("text")).expect("JSON");
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(changes["type"], "changes");
    let kinds: Vec<&str> = changes["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert!(kinds.contains(&"instance_updated"), "{changes}");
}

/// The README's first command, as a new user runs it (on a free port and a
/// temporary data directory, and told to stop after the quickstart).
#[test]
fn the_readme_run_command_works() {
    // With Docker, run.sh also deploys a demo service through nginx.
    let _heavy = switchyard_tests::docker::exclusive();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    assert!(
        readme.contains("./scripts/run.sh"),
        "the README shows the run command"
    );
    let port = switchyard_tests::free_port();
    let metrics = format!("127.0.0.1:{}", switchyard_tests::free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/run.sh"))
        .env("SWITCHYARD_METRICS_LISTEN", &metrics)
        .current_dir(workspace_root())
        .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_DATA_DIR", dir.path().join("data"))
        .env("SWITCHYARD_REGISTRY", format!("http://127.0.0.1:{port}"))
        .env("SWITCHYARD_QUICKSTART_EXIT", "1")
        .env(
            "SWITCHYARD_DEMO_LISTEN",
            format!("127.0.0.1:{}", switchyard_tests::free_port()),
        )
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "run.sh failed: {stdout}\n{}",
        stderr(&output)
    );
    assert!(stdout.contains("active color blue"), "{stdout}");
    assert!(stdout.contains("web-blue-1"), "{stdout}");
    // The main job: v1, then v2, answered through nginx.
    assert!(stdout.contains("/demo/ answers v1"), "{stdout}");
    assert!(stdout.contains("/demo/ answers v2"), "{stdout}");
    let dashboard = format!("the dashboard: http://{metrics}/ui/ answers");
    assert!(stdout.contains(&dashboard), "{stdout}");
    let left = switchyard_tests::docker::docker(&["images", "-q", "switchyard-demo"]);
    assert!(left.stdout.is_empty(), "run.sh removes its demo images");
}

/// Man pages and completions come from the flags themselves, with no
/// registry around (SWITCHYARD_REGISTRY points nowhere).
#[test]
fn man_pages_and_completions_describe_every_program() {
    let run = |program: &str, args: &[&str]| {
        let output = Command::new(binary(program))
            .args(args)
            .env("SWITCHYARD_REGISTRY", "http://127.0.0.1:1")
            .output()
            .expect("running");
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            stderr(&output)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    for (program, args, title, flag) in [
        ("cd-registry", &["--man"][..], ".TH cd-registry 1", "listen"),
        ("cd-agent", &["--man"][..], ".TH cd-agent 1", "advertise"),
        ("cdctl", &["man"][..], ".TH cdctl 1", "registry"),
    ] {
        let page = run(program, args);
        assert!(page.contains(title), "{program}: {page:.200}");
        assert!(page.contains(flag), "{program} names --{flag}");
    }
    let bash = run("cdctl", &["completion", "bash"]);
    assert!(bash.contains("_cdctl()") && bash.contains("deploy") && bash.contains("rollback"));
    let fish = run("cdctl", &["completion", "fish"]);
    assert!(fish.contains("complete -c cdctl"), "{fish:.200}");
}

/// The daemons say why they stop exactly once, even with `--log off`, and
/// their exit codes tell a flag mistake (2) from a failure while running (1).
#[test]
fn daemons_say_why_they_stop_once_with_distinct_exit_codes() {
    let run = |program: &str, args: &[&str]| {
        let output = Command::new(binary(program))
            .args(args)
            .env_remove("SWITCHYARD_REGISTRY")
            .output()
            .expect("running");
        (output.status.code(), stderr(&output))
    };
    let (code, said) = run("cd-agent", &["--registry", "nope", "--log", "off"]);
    assert_eq!(code, Some(2), "{said}");
    assert_eq!(said.matches("not a registry URL").count(), 1, "{said}");
    let file = tempfile::NamedTempFile::new().expect("a file");
    let data_dir = file.path().to_str().expect("UTF-8");
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data_dir];
    for log in ["info", "off"] {
        let (code, said) = run("cd-registry", &[&args[..], &["--log", log]].concat());
        assert_eq!(code, Some(1), "--log {log}: {said}");
        assert_eq!(
            said.matches("opening the store in").count(),
            1,
            "--log {log}: {said}"
        );
    }
}

/// `cdctl history --follow`: every write of a record, as a JSON line with
/// its revision, from `--since` on, for one service or all of them.
#[tokio::test]
async fn history_follow_prints_each_record_as_it_is_written() {
    use switchyard_model::{Deployment, Outcome};
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let registry = RegistryProcess::start(&dir.path().join("data"), &[]);
    let url = registry.url();
    let client = switchyard_client::RegistryClient::new(&url).expect("url");
    for service in ["web", "api"] {
        client
            .register(
                &switchyard_tests::instance(service, service, 80, None),
                None,
            )
            .await
            .expect("register");
    }
    let record = |service: &str, id: &str, outcome| Deployment {
        id: id.into(),
        service: service.into(),
        image: format!("{service}:2"),
        started_at_ms: 1_000,
        outcome,
        ..Deployment::default()
    };
    let before = client
        .record_deployment(&record("api", "a0", Outcome::Promoted))
        .await
        .expect("record");
    client
        .record_deployment(&record("web", "w1", Outcome::InProgress))
        .await
        .expect("record");
    let follow = |args: &[&str]| {
        let mut command = tokio::process::Command::new(binary("cdctl"));
        command
            .args(["--registry", &url, "history", "--follow"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("cdctl history --follow");
        let stdout = child.stdout.take().expect("stdout");
        (child, tokio::io::BufReader::new(stdout).lines())
    };
    let since = before.to_string();
    let (_web, mut web) = follow(&["web", "--since", &since]);
    let (_all, mut all) = follow(&["--since", &since]);
    client
        .record_deployment(&record("api", "a2", Outcome::Failed))
        .await
        .expect("record");
    let promoted = client
        .record_deployment(&record("web", "w1", Outcome::Promoted))
        .await
        .expect("record");

    let next = async |lines: &mut tokio::io::Lines<_>| -> serde_json::Value {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .expect("read")
            .expect("a line");
        serde_json::from_str(&line).expect("JSON")
    };
    let seen = |value: &serde_json::Value| {
        format!("{}/{}/{}", value["service"], value["id"], value["outcome"]).replace('"', "")
    };
    let web_lines = [next(&mut web).await, next(&mut web).await];
    assert_eq!(
        web_lines.iter().map(seen).collect::<Vec<_>>(),
        ["web/w1/in_progress", "web/w1/promoted"]
    );
    assert_eq!(web_lines[1]["revision"], promoted);
    let mut all_lines = Vec::new();
    for _ in 0..3 {
        all_lines.push(seen(&next(&mut all).await));
    }
    assert_eq!(
        all_lines,
        ["web/w1/in_progress", "api/a2/failed", "web/w1/promoted"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_of_instances_that_report_no_image_records_the_image_made_live() {
    use switchyard_model::{Color, Deployment, Outcome};
    let registry = switchyard_tests::TestRegistry::start().await;
    let client = registry.client();
    for (id, color) in [("b1", Color::Blue), ("g1", Color::Green)] {
        let one = switchyard_tests::instance("web", id, 8080, Some(color));
        client.register(&one, None).await.expect("register");
    }
    let promoted = |id: &str, color: Color, image: &str, at: u64| Deployment {
        id: id.to_string(),
        service: "web".into(),
        to_color: Some(color),
        image: image.into(),
        started_at_ms: at,
        ended_at_ms: at,
        outcome: Outcome::Promoted,
        ..Deployment::default()
    };
    client
        .record_deployment(&promoted("d1", Color::Blue, "web:1", 1_000))
        .await
        .expect("record");
    client
        .record_deployment(&promoted("d2", Color::Green, "web:2", 2_000))
        .await
        .expect("record");
    client
        .set_active_color("web", Some(Color::Green), None, 0)
        .await
        .expect("live green");
    let back = switchyard_tests::process::cdctl_async(
        &registry.url(),
        &["rollback", "web"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    )
    .await;
    assert_eq!(back.status.code(), Some(0), "{}", stderr(&back));
    let newest = client.list_deployments("web", 1).await.expect("records");
    let record = newest.first().expect("the rollback's record");
    assert_eq!(
        (record.outcome, record.image.as_str()),
        (Outcome::RolledBack, "web:1"),
        "the image blue was made live with, not an empty one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrys_rollback_refuses_by_the_one_rule_and_never_flips_twice() {
    use switchyard_model::{Color, Deployment, Health, Outcome};
    let registry = switchyard_tests::TestRegistry::start().await;
    let client = registry.client();
    let register = |id: &str, color: Color, health: Health, draining: bool| {
        let mut one = switchyard_tests::instance("web", id, 8080, Some(color));
        one.health = health;
        let client = client.clone();
        async move {
            client.register(&one, None).await.expect("register");
            let reason = draining.then_some("a test");
            client
                .set_draining("web", &[one.id.clone()], reason, 0)
                .await
                .expect("draining");
        }
    };
    register("g1", Color::Green, Health::Passing, false).await;
    client
        .set_active_color("web", Some(Color::Green), None, 0)
        .await
        .expect("live green");
    let refused = |what: &'static str| {
        let client = client.clone();
        async move {
            let error = client
                .roll_back("web", Some(Color::Green), 0, "a test")
                .await
                .expect_err(what);
            assert_eq!(
                error.code(),
                Some(tonic::Code::FailedPrecondition),
                "{what}"
            );
            error.message()
        }
    };
    // The previous color failing, then only draining: nothing to go back to.
    register("b1", Color::Blue, Health::Critical, false).await;
    assert!(refused("failing").await.contains("nothing to roll back to"));
    register("b1", Color::Blue, Health::Passing, true).await;
    assert!(
        refused("draining")
            .await
            .contains("nothing to roll back to")
    );
    // A deploy paused for promotion: promote or abort it instead.
    register("b1", Color::Blue, Health::Passing, false).await;
    let paused = Deployment {
        id: "d-paused".into(),
        service: "web".into(),
        to_color: Some(Color::Blue),
        image: "web:2".into(),
        started_at_ms: 1_000,
        outcome: Outcome::Paused,
        ..Deployment::default()
    };
    client.record_deployment(&paused).await.expect("record");
    assert!(refused("paused").await.contains("cdctl promote web"));
    let (_, state) = client.get_service("web").await.expect("service");
    assert_eq!(state.active_color, Some(Color::Green), "nothing moved");

    // Once the paused deploy ended, it rolls back, once: the same call
    // again (a retry whose answer was lost) finds blue live and refuses.
    let ended = Deployment {
        outcome: Outcome::RolledBack,
        ended_at_ms: 2_000,
        ..paused
    };
    client.record_deployment(&ended).await.expect("record");
    let (_, record) = client
        .roll_back("web", Some(Color::Green), 0, "a test")
        .await
        .expect("rolled back");
    assert_eq!(
        (record.outcome, record.to_color, record.who.as_str()),
        (Outcome::RolledBack, Some(Color::Blue), "a test")
    );
    let again = client
        .roll_back("web", Some(Color::Green), 0, "a test")
        .await;
    assert_eq!(
        again.err().and_then(|e| e.code()),
        Some(tonic::Code::FailedPrecondition)
    );
    let (_, state) = client.get_service("web").await.expect("service");
    assert_eq!(state.active_color, Some(Color::Blue), "flipped once");
}
