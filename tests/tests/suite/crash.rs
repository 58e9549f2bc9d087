//! The real `cd-registry` binary killed with SIGKILL at random moments under
//! concurrent writers: every acknowledged write survives, and a watcher that
//! resumes from its last revision after each restart misses nothing and sees
//! nothing twice. The same with a history so short that the sled store
//! writes a snapshot every few dozen revisions, so kills land before, during
//! and after snapshots. Also: SIGTERM drains and exits 0.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use switchyard_client::RegistryClient;
use switchyard_model::watch::{Change, WatchEvent};
use switchyard_tests::instance;
use switchyard_tests::process::RegistryProcess;

const SERVICE: &str = "crash";

/// What the watcher has seen so far, across restarts.
#[derive(Default)]
struct Seen {
    revision: u64,
    ids: BTreeSet<String>,
    /// Revisions delivered out of order or twice.
    violations: Vec<String>,
}

/// Follows the registry at `url` from `seen.revision` until the stream breaks.
async fn follow(url: String, seen: Arc<Mutex<Seen>>) {
    let client = RegistryClient::new(&url).expect("url");
    let from = seen.lock().expect("lock").revision;
    let Ok(stream) = client.watch(&[SERVICE.to_string()], from).await else {
        return;
    };
    let mut stream = std::pin::pin!(stream);
    while let Some(Ok(event)) = stream.next().await {
        let mut seen = seen.lock().expect("lock");
        match event {
            WatchEvent::Snapshot {
                revision, services, ..
            } => {
                for service in services {
                    seen.ids.extend(service.instances.into_iter().map(|i| i.id));
                }
                seen.revision = revision;
            }
            WatchEvent::Changes { revision, changes } => {
                if revision <= seen.revision {
                    let message = format!("revision {revision} after {}", seen.revision);
                    seen.violations.push(message);
                }
                for change in changes {
                    if let Change::InstanceUpdated(instance) = change {
                        seen.ids.insert(instance.id);
                    }
                }
                seen.revision = revision;
            }
            WatchEvent::Progress { revision } => seen.revision = seen.revision.max(revision),
            WatchEvent::Reset { message, .. } => {
                seen.violations.push(format!("unexpected reset: {message}"));
            }
        }
    }
}

async fn registered_ids(client: &RegistryClient) -> BTreeSet<String> {
    match client.get_service(SERVICE).await {
        Ok((_, service)) => service.instances.into_iter().map(|i| i.id).collect(),
        Err(error) if error.code() == Some(switchyard_client::Code::NotFound) => BTreeSet::new(),
        Err(error) => panic!("reading {SERVICE}: {error}"),
    }
}

/// Four writers register instances until the registry is killed with
/// SIGKILL after a random 0.3–1.2 s; each acknowledged id is recorded.
async fn write_until_killed(
    registry: &mut RegistryProcess,
    cycle: usize,
    acknowledged: &Arc<Mutex<Vec<String>>>,
) {
    let mut writers = Vec::new();
    for writer in 0..4 {
        let url = registry.url();
        let acknowledged = Arc::clone(acknowledged);
        writers.push(tokio::spawn(async move {
            let client = RegistryClient::new(&url).expect("url");
            for n in 0.. {
                let id = format!("w{cycle}-{writer}-{n}");
                let web = instance(SERVICE, &id, 8000, None);
                match client.register(&web, None).await {
                    Ok(_) => acknowledged.lock().expect("lock").push(id),
                    Err(_) => return,
                }
            }
        }));
    }
    let uptime = rand::rng().random_range(300..1200);
    tokio::time::sleep(Duration::from_millis(uptime)).await;
    registry.kill_9();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("writers notice the registry is gone")
            .expect("writer task");
    }
}

/// Acknowledged ids the registry behind `client` does not have.
async fn lost_writes(client: &RegistryClient, acknowledged: &Mutex<Vec<String>>) -> Vec<String> {
    let present = registered_ids(client).await;
    let acked = acknowledged.lock().expect("lock").clone();
    acked
        .into_iter()
        .filter(|id| !present.contains(id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_write_and_watchers_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();

    for cycle in 0..5 {
        let mut registry = RegistryProcess::start(&data, &[]);
        let client = RegistryClient::new(&registry.url()).expect("url");
        let lost = lost_writes(&client, &acknowledged).await;
        assert!(
            lost.is_empty(),
            "cycle {cycle}: acknowledged writes lost: {lost:?}"
        );

        let watcher = tokio::spawn(follow(registry.url(), Arc::clone(&seen)));
        write_until_killed(&mut registry, cycle, &acknowledged).await;
        tokio::time::timeout(Duration::from_secs(30), watcher)
            .await
            .expect("the watcher notices the registry is gone")
            .expect("watcher task");
    }

    let registry = RegistryProcess::start(&data, &[]);
    let client = RegistryClient::new(&registry.url()).expect("url");
    let present = registered_ids(&client).await;
    let acked = acknowledged.lock().expect("lock").clone();
    assert!(acked.len() > 100, "the writers got going: {}", acked.len());
    let lost: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // The watcher catches up from where it was and has seen every write.
    let current = client.list_services().await.expect("list").0;
    let watcher = tokio::spawn(follow(registry.url(), Arc::clone(&seen)));
    let seen_now = Arc::clone(&seen);
    switchyard_tests::eventually(Duration::from_secs(20), || {
        let seen = Arc::clone(&seen_now);
        async move {
            let revision = seen.lock().expect("lock").revision;
            if revision >= current {
                Ok(())
            } else {
                Err(format!("watcher at {revision}, registry at {current}"))
            }
        }
    })
    .await;
    watcher.abort();
    let seen = seen.lock().expect("lock");
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    let missed: Vec<&String> = acked.iter().filter(|id| !seen.ids.contains(*id)).collect();
    assert!(missed.is_empty(), "the watcher missed: {missed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_snapshots_are_written_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Beyond 20 revisions of history the store must snapshot before it
    // may compact, so snapshots are written all the time.
    let short_history = ["--history-revisions", "20"];
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    for cycle in 0..4 {
        let mut registry = RegistryProcess::start(&data, &short_history);
        let client = RegistryClient::new(&registry.url()).expect("url");
        let lost = lost_writes(&client, &acknowledged).await;
        assert!(
            lost.is_empty(),
            "cycle {cycle}: acknowledged writes lost: {lost:?}"
        );
        write_until_killed(&mut registry, cycle, &acknowledged).await;
    }
    let registry = RegistryProcess::start(&data, &short_history);
    let client = RegistryClient::new(&registry.url()).expect("url");
    let acked = acknowledged.lock().expect("lock").len();
    assert!(acked > 100, "the writers got going: {acked}");
    let lost = lost_writes(&client, &acknowledged).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // The early history is gone: what came back came from snapshots.
    let stream = client
        .watch(&[SERVICE.to_string()], 1)
        .await
        .expect("watch");
    let mut stream = std::pin::pin!(stream);
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event within 10s");
    assert!(
        matches!(first, Some(Ok(WatchEvent::Reset { .. }))),
        "history from revision 1 should be compacted, got {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_streams_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut registry = RegistryProcess::start(&data, &[]);
    let client = RegistryClient::new(&registry.url()).expect("url");
    let revision = client
        .register(&instance("web", "t1", 8080, None), None)
        .await
        .expect("register");
    // An open watch stream must not hold the shutdown up.
    let stream = client.watch(&[], 0).await.expect("watch");
    let reader = tokio::spawn(async move { stream.count().await });
    let status = tokio::task::spawn_blocking(move || {
        let status = registry.terminate();
        (registry, status)
    })
    .await
    .expect("join");
    assert!(status.1.success(), "cd-registry exited with {:?}", status.1);
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the watch stream ended")
        .expect("reader");
    drop(status);
    let restarted = RegistryProcess::start(&data, &[]);
    let client = RegistryClient::new(&restarted.url()).expect("url");
    let (after, web) = client.get_service("web").await.expect("get");
    assert_eq!(after, revision);
    assert_eq!(web.instances.len(), 1);
}
