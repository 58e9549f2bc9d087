//! Several registry replicas over one etcd behave as one registry: writes on
//! one are watched on another, CAS and locks hold across them, agents and
//! watchers fail over; and a three-member etcd survives losing a member.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use switchyard_client::{Code, RegistryClient};
use switchyard_model::Color;
use switchyard_model::watch::{Change, WatchEvent};
use switchyard_tests::docker::{TestContainer, TestImage, unique};
use switchyard_tests::etcd::EtcdCluster;
use switchyard_tests::process::{AgentProcess, RegistryProcess};
use switchyard_tests::{eventually, instance};

fn replica(cluster: &EtcdCluster) -> (RegistryProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = cluster.endpoints_flag();
    let process = RegistryProcess::start(
        dir.path(),
        &[
            "--store",
            "etcd",
            "--etcd-endpoints",
            &endpoints,
            "--progress-interval",
            "300ms",
        ],
    );
    (process, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_writes_watches_colors_and_locks() {
    let cluster = EtcdCluster::start(1).await;
    let (a, _a_dir) = replica(&cluster);
    let (b, _b_dir) = replica(&cluster);
    let on_a = RegistryClient::new(&a.url()).expect("url");
    let on_b = RegistryClient::new(&b.url()).expect("url");

    // A watcher on B sees a write on A.
    let mut watch = Box::pin(on_b.watch(&["web".into()], 0).await.expect("watch on B"));
    let snapshot = watch.next().await.expect("snapshot").expect("ok");
    assert!(matches!(snapshot, WatchEvent::Snapshot { .. }));
    let written = on_a
        .register(&instance("web", "r1", 8001, Some(Color::Blue)), None)
        .await
        .expect("register on A");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("an event on B")
        {
            Some(Ok(WatchEvent::Changes { revision, changes })) => {
                assert_eq!(revision, written);
                assert!(
                    matches!(&changes[..], [Change::InstanceUpdated(i), ..] if i.id == "r1")
                        || changes.len() > 1
                );
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("watch on B ended: {other:?}"),
        }
    }

    // CAS across replicas: exactly one wins.
    let (first, second) = tokio::join!(
        on_a.set_active_color("web", Some(Color::Blue), None, 0),
        on_b.set_active_color("web", Some(Color::Green), None, 0)
    );
    assert_eq!(
        [first.is_ok(), second.is_ok()]
            .iter()
            .filter(|ok| **ok)
            .count(),
        1,
        "{first:?} {second:?}"
    );

    // A lock taken on A is held on B; its token fences B too.
    let grant = on_a
        .acquire_lock("web", "deployer-a", 30)
        .await
        .expect("lock on A");
    let held = on_b
        .acquire_lock("web", "deployer-b", 30)
        .await
        .expect_err("held");
    assert_eq!(held.code(), Some(Code::Aborted));
    let active = on_b.next_color("web").await.expect("color").0;
    on_b.set_active_color(
        "web",
        Some(active.map_or(Color::Blue, Color::other)),
        active,
        grant.token,
    )
    .await
    .expect("the lock's token works on B");
    on_b.release_lock("web", grant.token)
        .await
        .expect("release on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_and_agents_fail_over_when_a_replica_dies() {
    let cluster = EtcdCluster::start(1).await;
    let (mut a, _a_dir) = replica(&cluster);
    let (b, _b_dir) = replica(&cluster);
    let urls = format!("{},{}", a.url(), b.url());

    // An agent on both replicas, its instance registered.
    let label = format!("switchyard.test={}", unique("replicas"));
    let image = TestImage::httpd("v1", false);
    let _agent = AgentProcess::start(&urls, &label, &["--ttl", "3s"]);
    let container = TestContainer::run(&[
        "-l",
        &label,
        "-l",
        "switchyard.service=web",
        "-p",
        "127.0.0.1::80",
        &image.tag,
    ]);
    let on_b = RegistryClient::new(&b.url()).expect("url");
    let id = container.short_id().to_string();
    let id_ref = &id;
    let on_b_ref = &on_b;
    eventually(Duration::from_secs(30), || async move {
        match on_b_ref.get_service("web").await {
            Ok((_, web)) if web.instances.iter().any(|i| &i.id == id_ref) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A watcher with both URLs, following every revision it sees.
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (urls, seen, ready) = (urls.clone(), Arc::clone(&seen), Arc::clone(&ready));
        tokio::spawn(async move {
            let client = RegistryClient::new(&urls).expect("urls");
            let mut from = 0;
            loop {
                let Ok(stream) = client.watch(&["web".into()], from).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(Ok(event)) = stream.next().await {
                    match event {
                        WatchEvent::Changes { revision, .. } => {
                            seen.lock().expect("lock").push(revision);
                            from = revision;
                        }
                        WatchEvent::Snapshot { revision, .. } => {
                            from = from.max(revision);
                            ready.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        WatchEvent::Progress { revision } => from = from.max(revision),
                        WatchEvent::Reset { .. } => from = 0,
                    }
                }
            }
        })
    };

    let ready_ref = &ready;
    eventually(Duration::from_secs(10), || async move {
        if ready_ref.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err("no snapshot yet".to_string())
        }
    })
    .await;

    // Writes through B while A dies.
    let mut written = Vec::new();
    for n in 0..10 {
        if n == 3 {
            a.kill_9();
        }
        written.push(
            on_b.register(&instance("web", &format!("f{n}"), 9000 + n, None), None)
                .await
                .expect("register on B"),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than the agent's TTL: its session is kept alive through B.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, web) = on_b.get_service("web").await.expect("web");
    assert!(
        web.instances.iter().any(|i| i.id == id),
        "the agent's instance outlived A"
    );

    let seen_ref = &seen;
    let last = *written.last().expect("writes");
    eventually(Duration::from_secs(30), || async move {
        let seen = seen_ref.lock().expect("lock").clone();
        if seen.last().copied().unwrap_or(0) >= last {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    watcher.abort();
    let seen = seen.lock().expect("lock").clone();
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicate: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    for revision in written {
        assert!(
            unique.contains(&revision),
            "revision {revision} missed: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_an_etcd_member_loses_no_acknowledged_write() {
    let mut cluster = EtcdCluster::start(3).await;
    let (registry, _dir) = replica(&cluster);
    let client = Arc::new(RegistryClient::new(&registry.url()).expect("url"));
    client
        .register(&instance("web", "seed", 8000, None), None)
        .await
        .expect("seed");

    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed_after_kill = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (failed_after_kill, killed) = (Arc::clone(&failed_after_kill), Arc::clone(&killed));
        let (client, acknowledged) = (Arc::clone(&client), Arc::clone(&acknowledged));
        tokio::spawn(async move {
            for n in 0..150 {
                let id = format!("k{n}");
                match client
                    .register(&instance("web", &id, 8000, None), None)
                    .await
                {
                    Ok(_) => acknowledged.lock().expect("lock").push(id),
                    Err(error) if killed.load(std::sync::atomic::Ordering::SeqCst) => {
                        eprintln!("write {id} failed after the kill: {error}");
                        failed_after_kill.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.members[0].kill();
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.expect("writer");

    // The flip succeeds on the remaining two members.
    let client_ref = &client;
    eventually(Duration::from_secs(30), || async move {
        client_ref
            .set_active_color("web", Some(Color::Blue), None, 0)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let (_, web) = client.get_service("web").await.expect("web");
    assert_eq!(web.active_color, Some(Color::Blue));
    let present: BTreeSet<String> = web.instances.iter().map(|i| i.id.clone()).collect();
    let acked = acknowledged.lock().expect("lock").clone();
    assert!(
        acked.len() > 100,
        "most writes went through: {}",
        acked.len()
    );
    let lost: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
