//! Unauthenticated calls to paths the registry does not serve cannot grow
//! `/metrics` or make it unreadable.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use std::io::Write;

use switchyard_tests::{TestRegistry, free_port, http_get};

/// The exposition without its values: one line per series.
fn series(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').map(|(name, _)| name.to_string()))
        .collect()
}

async fn scrape(address: SocketAddr) -> String {
    let response = http_get(address, "/metrics").await.expect("GET /metrics");
    switchyard_tests::body(&response).to_string()
}

fn promtool_accepts(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (install prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("writing to promtool");
    let output = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Lint advice (names, units) is not a parse error; a label value with
    // a quote or brace in it would be.
    assert!(!said.contains("error while linting"), "{said}");
    assert!(!said.to_lowercase().contains("parse"), "{said}");
}

/// Calls `/RANDOM/PATH` without a credential; answers the gRPC codes seen.
async fn call(channel: tonic::transport::Channel, path: String) -> tonic::Code {
    let mut raw = tonic::client::Grpc::new(channel);
    if raw.ready().await.is_err() {
        return tonic::Code::Unavailable;
    }
    let Ok(path) = tonic::codegen::http::uri::PathAndQuery::try_from(path) else {
        return tonic::Code::InvalidArgument;
    };
    let answer = raw
        .unary(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    answer.map_or_else(|status| status.code(), |_| tonic::Code::Ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unauthenticated_calls_to_random_paths_leave_metrics_as_they_were() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = TestRegistry::start_with(|config| {
        config.auth = true;
        config.bootstrap_token_file = Some(dir.path().join("admin.token"));
        config.metrics_listen = Some(metrics);
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(registry.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    // One unknown call of each kind first, so the `unknown` series exist
    // before: an unknown service is Unimplemented, an unknown method of
    // the registry's is refused as Unauthenticated before routing.
    call(channel.clone(), "/warm/up".into()).await;
    call(channel.clone(), "/switchyard.v1.Registry/WarmUp".into()).await;
    switchyard_tests::eventually(switchyard_tests::patience(), || async {
        let text = scrape(metrics).await;
        (text.contains("grpc_code=\"Unimplemented\"")
            && text.contains("grpc_code=\"Unauthenticated\""))
        .then_some(())
        .ok_or(text)
    })
    .await;
    let before = scrape(metrics).await;

    let mut codes = std::collections::BTreeMap::new();
    for batch in 0..100 {
        let calls = (0..100).map(|i| {
            let n = batch * 100 + i;
            let path = match n % 4 {
                0 => format!("/switchyard.v1.Registry/Nope{n}"),
                1 => format!("/svc{n}/m\"{{x}}{n}"),
                2 => format!("/{}/{}", rand::random::<u64>(), rand::random::<u32>()),
                _ => format!("/grpc.health.v1.Health/Check{n}"),
            };
            call(channel.clone(), path)
        });
        for code in futures::future::join_all(calls).await {
            *codes.entry(format!("{code:?}")).or_insert(0u32) += 1;
        }
    }
    assert_eq!(codes.values().sum::<u32>(), 10_000, "{codes:?}");
    assert!(
        !codes.contains_key("Ok"),
        "no made-up path answers OK: {codes:?}"
    );

    let after = scrape(metrics).await;
    assert_eq!(series(&before), series(&after), "no series was added");
    // Only the counts' digits grow (each call used to add a series of its
    // own: 300 calls grew the exposition by 3.4 MB).
    assert!(
        after.len() <= before.len() + 1024,
        "{} bytes before, {} after",
        before.len(),
        after.len()
    );
    assert!(
        after.contains("grpc_method=\"unknown\""),
        "the calls are still counted, as unknown"
    );
    promtool_accepts(&after);
    drop(registry);
}
