//! A tiny run of the benchmark, so it cannot rot: it must start both
//! servers, run every workload, and write results of the documented shape.

use switchyard_tests::workspace_root;

#[test]
fn the_benchmark_runs_and_writes_its_results() {
    let out = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/bench.sh"))
        .arg("--smoke")
        .arg(out.path())
        .status()
        .expect("running scripts/bench.sh --smoke");
    assert!(status.success(), "the smoke benchmark failed");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("bench.json")).expect("bench.json"),
    )
    .expect("bench.json is JSON");
    let results = json["results"].as_array().expect("results");
    let names: Vec<&str> = results.iter().filter_map(|r| r["name"].as_str()).collect();
    for expected in [
        "writes",
        "writes_p99",
        "reads",
        "reads_p99",
        "watch_p99",
        "watch_max",
        "watch_last_p50",
        "watch_last_p99",
        "watch_spread_p99",
        "rss_empty",
        "watch_server_cpu_per_receipt",
        "watch_client_cpu_per_receipt",
        "reads_server_cpu_per_op",
        "reads_client_cpu_per_op",
        "rss_after_1000_instances",
        "rss_of_1000_instances",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for prefix in ["rss_after_", "rss_with_", "watch_"] {
        assert!(names.iter().any(|n| n.starts_with(prefix)), "{names:?}");
    }
    // The large fan-out (100 watchers at the smoke scale).
    for expected in [
        "watch_100_last_p50",
        "watch_100_last_p99",
        "rss_with_100_watchers",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for expected in [
        "agent_start_to_visible_p99",
        "agent_event_to_visible_p50",
        "agent_idle_rss",
        "agent_idle_cpu",
        "writes_auth",
        "writes_auth_tls",
        "reads_auth",
        "reads_auth_p99",
        "reads_auth_tls",
        "reads_auth_tls_cost",
        "deploy_overhead_1_replica_p50",
        "deploy_overhead_2_replicas_p50",
        "flip_to_1_nginx_p50",
        "flip_to_5_nginx_p50",
        "rollback_1_nginx_p50",
        "nginx_reload_p50",
        "flip_to_5_nginx_vs_reload",
        "reads_ceiling",
        "reads_of_ceiling",
        "watch_ceiling_p99",
        "watch_p99_vs_ceiling",
        "watch_ceiling_last_p99",
        "watch_last_p99_vs_ceiling",
        "watch_ceiling_spread_p99",
        "watch_spread_p99_vs_ceiling",
        "writes_of_ceiling",
        "reads_ceiling_cpu_per_op",
        "watch_ceiling_cpu_per_receipt",
        "watch_cpu_per_receipt_vs_ceiling",
        "scrape_20_services_p50",
        "scrape_20_services_p99",
        "scrape_20_services_bytes",
        "reads_scraped_cost",
        "writes_scraped_cost",
        "flip_to_haproxy_runtime_p50",
        "flip_to_haproxy_runtime_p99",
        "flip_to_haproxy_runtime_vs_reload",
        "dns_queries",
        "dns_p99",
        "dns_ceiling",
        "dns_of_ceiling",
        "scale_5000_rss",
        "scale_5000_snapshot",
        "scale_5000_write_p99_during_snapshot",
        "scale_5000_write_p99_outside_snapshot",
        "scale_5000_open_after_restart",
        "scale_5000_rss_after_restart",
        "scale_5000_peak_rss_after_restart",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for row in results {
        let name = row["name"].as_str().unwrap_or_default();
        // Rows without an etcd counterpart: the agent's, security's,
        // delivery's (whose anchor is nginx's own reload), the scrape's size
        // and costs.
        let single = [
            "agent_",
            "deploy_",
            "flip_",
            "rollback_",
            "nginx_",
            "dns_",
            "scale_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name.contains("_auth")
            || name.contains("_scraped_")
            || name.contains("ceiling")
            || (name.starts_with("scrape_") && name.ends_with("_bytes"));
        let fields: &[&str] = if single {
            &["switchyard"]
        } else {
            &["switchyard", "etcd", "ratio"]
        };
        for field in fields {
            let value = row[*field].as_f64().unwrap_or(f64::NAN);
            // A cost is throughput lost, so it may be negative (none lost).
            let least = if name.ends_with("_cost") { -1e6 } else { 0.0 };
            assert!(value.is_finite() && value >= least, "{field} of {row}");
        }
        if single {
            assert!(row["etcd"].is_null() && row["ratio"].is_null(), "{row}");
        }
        assert!(row["unit"].is_string(), "{row}");
    }
    let markdown =
        std::fs::read_to_string(out.path().join("BENCHMARKS.md")).expect("BENCHMARKS.md");
    assert!(markdown.contains("| writes | ops/s |"), "{markdown}");
}
