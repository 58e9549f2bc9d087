//! Revoking a token ends what it already opened: a stolen agent token's
//! KeepAlive (so its session expires) and its watches, within a second.

use std::time::Duration;

use switchyard_proto::v1;
use switchyard_tests::grpc;
use tonic::Code;

use crate::auth::{client, secured, token};

fn signed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

/// How a stream ended: the status it ended with (`Ok` for a clean end).
async fn end_of<T>(mut stream: tonic::Streaming<T>) -> Code {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return Code::Ok,
            Err(status) => return status.code(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_tokens_keepalive_and_watch_end_within_a_second() {
    let (registry, admin_token) = secured().await;
    let admin = client(&registry, &admin_token);
    let agent = token(&admin, "agent", Some("n1"), &[]).await;
    let accessor = admin
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .find(|t| t.description == "test agent")
        .expect("listed")
        .accessor;
    let mut api = grpc(&registry.url()).await;
    let session = api
        .open_session(signed(
            &agent,
            v1::OpenSessionRequest {
                node: "n1".into(),
                ttl_seconds: 10,
            },
        ))
        .await
        .expect("a session")
        .into_inner()
        .session_id;
    // Pings every 100 ms for as long as the stream lives.
    let pings = futures::stream::unfold((), move |()| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((
            v1::KeepAliveRequest {
                session_id: session,
            },
            (),
        ))
    });
    let mut keep_alive = api
        .keep_alive(signed(&agent, pings))
        .await
        .expect("keep alive")
        .into_inner();
    keep_alive.message().await.expect("a first answer");
    let mut watch = api
        .watch(signed(&agent, v1::WatchRequest::default()))
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("the snapshot");

    admin.revoke_token(&accessor).await.expect("revoke");
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        tokio::join!(end_of(keep_alive), end_of(watch))
    })
    .await
    .expect("both streams end within a second of the revocation");
    assert_eq!(ended, (Code::Unauthenticated, Code::Unauthenticated));
}

/// Revoking every admin token, then restarting, does not bring the
/// bootstrap token back (its file still holds it); `--bootstrap-anew` makes
/// a new one into the emptied file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_bootstrap_tokens_stay_revoked_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("admin.token");
    let mut registry = switchyard_tests::TestRegistry::start_with(|config| {
        config.auth = true;
        config.bootstrap_token_file = Some(file.clone());
    })
    .await;
    let admin_token = std::fs::read_to_string(&file).expect("the bootstrap token");
    let admin_token = admin_token.trim().to_string();
    let admin = client(&registry, &admin_token);
    let bootstrap = admin
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .find(|t| t.description == "bootstrap")
        .expect("the bootstrap token")
        .accessor;
    admin.revoke_token(&bootstrap).await.expect("revoke");

    registry.restart().await;
    assert_eq!(
        std::fs::read_to_string(&file).expect("the file").trim(),
        admin_token,
        "the file still holds the revoked token"
    );
    let refused = client(&registry, &admin_token)
        .list_tokens()
        .await
        .expect_err("the revoked token stays revoked");
    assert_eq!(refused.code(), Some(Code::Unauthenticated));

    std::fs::write(&file, "").expect("emptying the file");
    registry.config.bootstrap_anew = true;
    registry.restart().await;
    let fresh = std::fs::read_to_string(&file).expect("the new token");
    let fresh = fresh.trim();
    assert!(!fresh.is_empty() && fresh != admin_token, "a new token");
    client(&registry, fresh)
        .list_tokens()
        .await
        .expect("the new admin token works");
    let still = client(&registry, &admin_token).list_tokens().await;
    assert_eq!(
        still.expect_err("still revoked").code(),
        Some(Code::Unauthenticated)
    );
}
