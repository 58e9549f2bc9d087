//! The store conformance suite against every backend.

use switchyard_tests::conformance::{self, SledBackend};

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
