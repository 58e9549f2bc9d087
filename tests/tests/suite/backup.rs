//! Backups as an operator runs them: `cdctl snapshot save` against a live
//! registry, `cd-registry restore` into a new data directory, the registry
//! started on it; and what a damaged data directory says on start.

use std::path::Path;
use std::process::{Command, Output};

use switchyard_client::RegistryClient;
use switchyard_model::watch::{ResetReason, WatchEvent};
use switchyard_model::{Color, Deployment, Service};
use switchyard_tests::process::{RegistryProcess, binary, cdctl, explain};
use switchyard_tests::{instance, next_watch_event, raw_watch};

/// Every service with its instances, as the registry answers.
async fn everything(client: &RegistryClient) -> Vec<Service> {
    let (_, summaries) = client.list_services().await.expect("list");
    let mut services = Vec::new();
    for summary in summaries {
        services.push(client.get_service(&summary.name).await.expect("get").1);
    }
    services
}

/// The key backups beside `file` are signed with (made on first use).
fn key_beside(file: &Path) -> std::path::PathBuf {
    let key = file.with_file_name("backup.key");
    if !key.exists() {
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("a key file");
    }
    key
}

fn restore(from: &Path, data_dir: &Path, extra: &[&str]) -> Output {
    Command::new(binary("cd-registry"))
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--backup-key")
        .arg(key_beside(from))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("running cd-registry restore")
}

/// The first two events of a watch of everything from `from_revision`.
async fn first_events(url: &str, from_revision: u64) -> (WatchEvent, WatchEvent) {
    let mut stream = raw_watch(url, from_revision).await;
    let first = next_watch_event(&mut stream).await;
    (first, next_watch_event(&mut stream).await)
}

/// What a registry holds before its backup: external instances, an agent's
/// instance in a session, colors, history.
async fn populate(client: &RegistryClient) {
    for (service, id, port) in [
        ("web", "w1", 8001),
        ("web", "w2", 8002),
        ("api", "a1", 9001),
    ] {
        client
            .register(&instance(service, id, port, Some(Color::Blue)), None)
            .await
            .expect("register");
    }
    let (session, _) = client.open_session("node-a", 60).await.expect("session");
    client
        .register(
            &instance("web", "agent-1", 8003, Some(Color::Blue)),
            Some(session),
        )
        .await
        .expect("register in a session");
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip web");
    client
        .set_active_color("api", Some(Color::Green), None, 0)
        .await
        .expect("flip api");
    for n in 0..3 {
        let record = Deployment {
            id: format!("d{n}"),
            service: "web".into(),
            to_color: Some(Color::Blue),
            image: format!("web:{n}"),
            who: "ci".into(),
            started_at_ms: 1_000 + n,
            ..Deployment::default()
        };
        client.record_deployment(&record).await.expect("record");
    }
}

/// A registry in `dir/old` holding what [`populate`] writes, and a backup
/// of it taken with `cdctl snapshot save`: the registry, a client of it,
/// the backup file and the revision it reflects.
async fn populated_and_saved(
    dir: &Path,
    data: &str,
) -> (RegistryProcess, RegistryClient, std::path::PathBuf, u64) {
    let registry = RegistryProcess::start(&dir.join(data), &[]);
    let client = RegistryClient::new(&registry.url()).expect("url");
    populate(&client).await;
    let file = dir.join("registry.backup");
    let path = file.to_str().expect("utf-8");
    let key = key_beside(&file);
    let key = key.to_str().expect("utf-8");
    let saved = cdctl(
        &registry.url(),
        &["-o", "json", "snapshot", "save", path, "--backup-key", key],
    );
    assert!(saved.status.success(), "{}", explain(&saved));
    let saved: serde_json::Value = serde_json::from_slice(&saved.stdout).expect("json");
    let revision = saved["revision"].as_u64().expect("revision");
    (registry, client, file, revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_services_colors_and_history_and_followers_start_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut old, client, file, backup_revision) = populated_and_saved(dir.path(), "old").await;

    // What the old registry held, less the agent's instance (a session).
    let mut expected = everything(&client).await;
    for service in &mut expected {
        service.instances.retain(|i| i.session.is_none());
    }
    let history = client.list_deployments("web", 0).await.expect("history");
    // A follower that saw a write made after the backup.
    let after = client
        .register(&instance("late", "l1", 7000, None), None)
        .await
        .expect("a write after the backup");
    assert!(after > backup_revision);
    old.terminate();

    let restored_dir = dir.path().join("restored");
    let output = restore(&file, &restored_dir, &[]);
    assert!(output.status.success(), "{}", explain(&output));
    let again = restore(&file, &restored_dir, &[]);
    assert!(
        !again.status.success(),
        "a restore never overwrites a data directory"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        explain(&again)
    );

    let new = RegistryProcess::start(&restored_dir, &[]);
    let restored = RegistryClient::new(&new.url()).expect("url");
    assert_eq!(everything(&restored).await, expected);
    assert_eq!(
        restored.list_deployments("web", 0).await.expect("history"),
        history
    );
    // A follower of the old registry resuming here starts over.
    for from in [backup_revision, after] {
        match first_events(&new.url(), from).await {
            (WatchEvent::Reset { reason, .. }, WatchEvent::Snapshot { services, .. }) => {
                assert_eq!(reason, ResetReason::Compacted);
                assert_eq!(services, expected);
            }
            other => panic!("expected a reset and a snapshot, got {other:?}"),
        }
    }
    // New writes follow on from the restored revision.
    let (session, _) = restored.open_session("node-a", 60).await.expect("session");
    restored
        .register(
            &instance("web", "agent-1", 8003, Some(Color::Blue)),
            Some(session),
        )
        .await
        .expect("agents register again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restored_from_an_older_copy_resets_followers_from_the_future() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut old, client, file, _) = populated_and_saved(dir.path(), "old").await;
    let later = client
        .register(&instance("late", "l1", 7000, None), None)
        .await
        .expect("a later write");
    old.terminate();
    // Without a bump the restored registry is behind its followers, as a
    // copy of an old data directory would be.
    let restored_dir = dir.path().join("restored");
    let output = restore(&file, &restored_dir, &["--bump-revision", "0"]);
    assert!(output.status.success(), "{}", explain(&output));
    let new = RegistryProcess::start(&restored_dir, &[]);
    let expected = everything(&RegistryClient::new(&new.url()).expect("url")).await;
    match first_events(&new.url(), later).await {
        (WatchEvent::Reset { reason, .. }, WatchEvent::Snapshot { services, .. }) => {
            assert_eq!(reason, ResetReason::FutureRevision);
            assert_eq!(services, expected);
        }
        other => panic!("expected a reset and a snapshot, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_and_data_directories_say_how_to_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut registry, _, file, _) = populated_and_saved(dir.path(), "data").await;
    registry.terminate();
    let data = dir.path().join("data");

    // A truncated backup is refused whole.
    let bytes = std::fs::read(&file).expect("backup");
    let truncated = dir.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let output = restore(&truncated, &dir.path().join("never"), &[]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("damaged"),
        "{}",
        explain(&output)
    );
    assert!(
        !dir.path().join("never").exists(),
        "nothing is created from a damaged backup"
    );

    // A damaged `conf` file (one flipped bit): the error names the
    // directory, says what is wrong and both ways out. (A damaged tail of
    // sled's log is recovered by sled itself, as after a crash.)
    let conf = data.join("conf");
    let mut bytes = std::fs::read(&conf).expect("conf");
    bytes[5] ^= 0x40;
    std::fs::write(&conf, bytes).expect("write conf");
    // `timeout`: should the registry start anyway, the test fails rather
    // than waits.
    let output = Command::new("timeout")
        .arg("30")
        .arg(binary("cd-registry"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("running cd-registry");
    assert!(!output.status.success(), "{}", explain(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        data.to_str().expect("utf-8"),
        "damaged",
        "cd-registry restore",
        "start empty",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
}

/// A backup is signed: one changed afterwards, or signed with another key,
/// is refused by restore (it could carry an admin token or a forged paused
/// deploy); the file is its owner's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_foreign_backup_is_refused_and_backups_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_registry, _client, file, _) = populated_and_saved(dir.path(), "old").await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("metadata").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the backup is private");

    let mut bytes = std::fs::read(&file).expect("the backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = dir.path().join("tampered.backup");
    std::fs::write(&tampered, &bytes).expect("write");
    let refused = restore(&tampered, &dir.path().join("from-tampered"), &[]);
    assert!(!refused.status.success(), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("signature"),
        "{}",
        explain(&refused)
    );

    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).expect("dir");
    std::fs::write(
        other_dir.join("backup.key"),
        "another key of thirty-two bytes!!",
    )
    .expect("another key");
    let foreign = other_dir.join("registry.backup");
    std::fs::copy(&file, &foreign).expect("copy");
    let refused = restore(&foreign, &dir.path().join("from-foreign"), &[]);
    assert!(!refused.status.success(), "{}", explain(&refused));
    for data_dir in ["from-tampered", "from-foreign"] {
        let written = std::fs::read_dir(dir.path().join(data_dir))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(written, 0, "{data_dir}: nothing restored");
    }
    let restored = restore(&file, &dir.path().join("from-good"), &[]);
    assert!(restored.status.success(), "{}", explain(&restored));
}
