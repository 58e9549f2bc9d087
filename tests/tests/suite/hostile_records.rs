//! Hostile input in what clients write: forged, oversize and out-of-order
//! deployment records, proxy reports from the future, fencing tokens that
//! must not leak, control characters, and bytes that decode to nothing.

use futures::StreamExt;
use switchyard_client::ClientError;
use switchyard_model::{Color, Deployment, ProxyStatus};
use switchyard_proto::v1;
use switchyard_tests::process::{cdctl_async, explain};
use switchyard_tests::{TestRegistry, instance};

fn record(id: &str, service: &str, started_at_ms: u64) -> Deployment {
    Deployment {
        id: id.into(),
        service: service.into(),
        to_color: Some(Color::Blue),
        image: "web:1".into(),
        started_at_ms,
        ..Deployment::default()
    }
}
use switchyard_model::clock::now_ms;

fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> tonic::Code {
    result.expect_err("refused").code().expect("a gRPC status")
}

async fn forged_and_oversize_records_are_refused_and_history_follows_revisions() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let now = now_ms();
    // No records for services that do not exist.
    assert_eq!(
        code_of(client.record_deployment(&record("d0", "ghost", now)).await),
        tonic::Code::NotFound
    );
    client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    // 3.9 MiB of error text, or 64 KiB + 1 of metadata, is refused.
    let mut huge = record("huge", "web", now);
    huge.error = "e".repeat(3_900_000);
    assert_eq!(
        code_of(client.record_deployment(&huge).await),
        tonic::Code::InvalidArgument
    );
    let mut wide = record("wide", "web", now);
    for n in 0..20 {
        wide.metadata.insert(format!("k{n}"), "v".repeat(4_000));
    }
    let refused = client
        .record_deployment(&wide)
        .await
        .expect_err("over 64 KiB");
    assert!(
        refused.message().contains("64 KiB"),
        "{}",
        refused.message()
    );
    // A record dated next year is refused, so it cannot evict real history.
    let year = 365 * 24 * 3600 * 1000;
    assert_eq!(
        code_of(
            client
                .record_deployment(&record("future", "web", now + year))
                .await
        ),
        tonic::Code::InvalidArgument
    );
    // Order follows the revision of the first write, not the claimed date.
    client
        .record_deployment(&record("first", "web", now))
        .await
        .expect("record");
    client
        .record_deployment(&record("second-but-dated-earlier", "web", 1_000))
        .await
        .expect("record");
    let listed = client.list_deployments("web", 0).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["second-but-dated-earlier", "first"]);
    // 30 records of ~60 KiB each list in pages, all of them, in order.
    let mut padded = record("p", "web", now);
    for n in 0..15 {
        padded.metadata.insert(format!("k{n}"), "x".repeat(4_000));
    }
    for n in 0..30 {
        padded.id = format!("p{n:02}");
        client.record_deployment(&padded).await.expect("record");
    }
    let listed = client.list_deployments("web", 0).await.expect("list");
    assert_eq!(listed.len(), 32);
    assert_eq!(listed[0].id, "p29");
    assert_eq!(listed[31].id, "first");
    let mut grpc = registry.grpc().await;
    let first_page = grpc
        .list_deployments(v1::ListDeploymentsRequest {
            service: "web".into(),
            limit: 0,
            page_token: String::new(),
        })
        .await
        .expect("a page")
        .into_inner();
    assert!(first_page.deployments.len() < 32, "one page is about 1 MiB");
    assert!(!first_page.next_page_token.is_empty());
}

async fn proxy_reports_cannot_claim_a_revision_beyond_the_registry() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let current = client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    let mut status = ProxyStatus {
        proxy_id: "edge-1".into(),
        applied_revision: u64::MAX,
        healthy: true,
        ..ProxyStatus::default()
    };
    assert_eq!(
        code_of(client.report_proxy(&status).await),
        tonic::Code::InvalidArgument
    );
    status.applied_revision = current;
    client
        .report_proxy(&status)
        .await
        .expect("an honest report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_never_appear_in_errors_and_control_characters_are_refused() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    let grant = client
        .acquire_lock("web", "deployer-ci-42", 60)
        .await
        .expect("lock");
    let held = client
        .acquire_lock("web", "someone-else", 60)
        .await
        .expect_err("held");
    assert!(
        held.message().contains("deployer-ci-42"),
        "{}",
        held.message()
    );
    let token = grant.token.to_string();
    for refused in [
        held,
        client
            .set_active_color("web", Some(Color::Blue), None, 0)
            .await
            .expect_err("fenced"),
        client.acquire_lock("web", "x", 60).await.expect_err("held"),
    ] {
        let message = refused.message();
        let mut numbers = message.split(|c: char| !c.is_ascii_digit());
        assert!(!numbers.any(|n| n == token), "{message}");
    }
    client
        .release_lock("web", grant.token)
        .await
        .expect("release");
    // Free text with newlines or terminal escapes is refused, and the error
    // does not echo the raw control characters.
    let forged = "x\n2026-12-02T00:00:00Z INFO holder=admin\u{1b}[2J";
    let refused = client
        .acquire_lock("web", forged, 60)
        .await
        .expect_err("forged");
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    assert!(!refused.message().contains('\u{1b}') && !refused.message().contains('\n'));
    let mut tagged = instance("web", "w2", 8081, None);
    tagged.tags.push("a\u{1b}[31mred".into());
    assert_eq!(
        code_of(client.register(&tagged, None).await),
        tonic::Code::InvalidArgument
    );
    let mut annotated = instance("web", "w3", 8082, None);
    annotated
        .metadata
        .insert("note".into(), "line\nforged".into());
    assert_eq!(
        code_of(client.register(&annotated, None).await),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_kib_value_is_answered_invalid_argument_quoting_64_characters() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    let long = "a".repeat(16 * 1024);
    let refused = client.get_service(&long).await.expect_err("too long");
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    assert!(
        refused.message().contains("16384 bytes"),
        "{}",
        refused.message()
    );
    assert!(refused.message().len() < 400, "{}", refused.message());
    let mut grpc = registry.grpc().await;
    let refused = grpc
        .deregister(v1::DeregisterRequest {
            id: "é".repeat(8 * 1024),
        })
        .await
        .expect_err("too long");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_the_live_color_needs_take_offline() {
    let registry = TestRegistry::start().await;
    let client = registry.client();
    client
        .register(&instance("web", "w1", 8080, None), None)
        .await
        .expect("register");
    client
        .set_active_color("web", Some(Color::Blue), None, 0)
        .await
        .expect("flip");
    let refused = client
        .set_active_color("web", None, Some(Color::Blue), 0)
        .await
        .expect_err("a default request never clears");
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument));
    assert!(
        refused.message().contains("take_offline"),
        "{}",
        refused.message()
    );
    assert_eq!(
        client.get_service("web").await.expect("get").1.active_color,
        Some(Color::Blue)
    );
    let url = registry.url();
    let without = cdctl_async(&url, &["set-color", "web", "none", "--expect", "blue"], &[]).await;
    assert_eq!(without.status.code(), Some(2), "{}", explain(&without));
    let with = cdctl_async(
        &url,
        &["set-color", "web", "none", "--expect", "blue", "--offline"],
        &[],
    )
    .await;
    assert!(with.status.success(), "{}", explain(&with));
    assert_eq!(
        client.get_service("web").await.expect("get").1.active_color,
        None
    );
}

/// A KeepAliveRequest whose field 1 is a string instead of a varint: bytes
/// the registry cannot decode as a KeepAliveRequest.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongShape {
    #[prost(string, tag = "1")]
    session_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_keep_alive_bytes_end_the_stream_with_an_error() {
    let registry = TestRegistry::start().await;
    let channel = tonic::transport::Endpoint::from_shared(registry.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.expect("ready");
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/switchyard.v1.Registry/KeepAlive");
    let answer = raw
        .streaming(
            tonic::Request::new(futures::stream::iter([WrongShape {
                session_id: "not a number".into(),
            }])),
            path,
            tonic_prost::ProstCodec::<WrongShape, v1::KeepAliveResponse>::default(),
        )
        .await;
    let status = match answer {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.next().await {
                Some(Err(status)) => status,
                other => panic!("expected an error, got {other:?}"),
            }
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

on_both_backends!(
    forged_and_oversize_records_are_refused_and_history_follows_revisions,
    proxy_reports_cannot_claim_a_revision_beyond_the_registry,
);
