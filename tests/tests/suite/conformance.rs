//! The store conformance suite against every backend.

use switchyard_tests::conformance::{self, EtcdBackend, SledBackend};

macro_rules! conformance_cases {
    ($backend:expr => $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $backend;
                conformance::$case(&backend).await;
            }
        )*
    };
}

mod etcd {
    use super::*;

    conformance_cases!(EtcdBackend::start().await =>
        revisions_count_transactions,
        compares_choose_the_branch,
        deletes_of_absent_keys_change_nothing,
        ranges_are_prefix_and_ordered,
        leases_guard_and_expire_atomically,
        keep_alive_extends_and_revoke_deletes,
        watch_replays_then_follows,
        watch_reports_progress,
        watch_refuses_compacted_history,
        concurrent_writes_are_ordered_and_durable,
        leases_survive_reopen_with_fresh_ttl,
        watch_resumes_across_reopen,
        slow_watchers_do_not_block_writers,
    );
}

mod sled {
    use super::*;

    conformance_cases!(SledBackend::new() =>
        revisions_count_transactions,
        compares_choose_the_branch,
        deletes_of_absent_keys_change_nothing,
        ranges_are_prefix_and_ordered,
        leases_guard_and_expire_atomically,
        keep_alive_extends_and_revoke_deletes,
        watch_replays_then_follows,
        watch_reports_progress,
        watch_refuses_compacted_history,
        concurrent_writes_are_ordered_and_durable,
        leases_survive_reopen_with_fresh_ttl,
        watch_resumes_across_reopen,
        slow_watchers_do_not_block_writers,
    );
}

/// Backend-specific: sled's group commit shares fsyncs between concurrent
/// writers, and still answers each only after its own data is flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_group_commit_shares_fsyncs_between_concurrent_writers() {
    use std::sync::Arc;

    use cd_registry::store::sled::{SledConfig, SledStore};
    use cd_registry::store::{Op, Store, Txn};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SledStore::open(SledConfig::new(dir.path())).expect("open"));
    let writers = 64;
    let per_writer = 20;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for n in 0..per_writer {
                let put = Op::Put {
                    key: format!("gc/{writer}/{n}").into_bytes(),
                    value: b"v".to_vec(),
                    lease: None,
                };
                store
                    .txn(Txn {
                        success: vec![put],
                        ..Txn::default()
                    })
                    .await
                    .expect("write");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let writes = (writers * per_writer) as u64;
    let fsyncs = store.fsync_count();
    println!("{writes} concurrent writes took {fsyncs} fsyncs");
    assert!(fsyncs > 0);
    assert!(
        fsyncs < writes / 2,
        "{fsyncs} fsyncs for {writes} writes: no grouping"
    );
    store.close().await.expect("close");
}
