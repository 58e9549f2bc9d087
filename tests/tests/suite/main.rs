//! Every end-to-end test, in one binary (one link, shared helpers).

/// Runs each listed `async fn` test against both store backends: a registry
/// on sled, and one on a real etcd started for the test.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case().await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let cluster = switchyard_tests::etcd::EtcdCluster::start(1).await;
                    switchyard_tests::with_etcd(cluster.endpoints(), super::$case()).await
                }
            )*
        }
    };
}

mod agent;
mod api;
mod api_bad_input;
mod audit;
mod auth;
mod backup;
mod bench;
mod canary;
mod cli;
mod conformance;
mod crash;
mod dashboard;
mod deploy;
mod dns;
mod draining;
mod environments;
mod examples;
mod haproxy_runtime;
mod hostile;
mod hostile_cli;
mod hostile_records;
mod metrics;
mod pipeline;
mod proxy;
mod replicas;
mod rolling;
mod security;
mod sled_store;
mod stats;
mod swarm;
mod tls;
mod watch;
mod weights;
mod zero_downtime;
