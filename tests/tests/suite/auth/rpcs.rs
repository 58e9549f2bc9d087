//! The role table's side of `--auth`: every RPC called once, and which
//! roles may call which.

use switchyard_client::RegistryClient;
use switchyard_proto::v1;
use switchyard_tests::instance;
use tonic::Code;

use super::{Grpc, code_of, signed};

/// Every RPC once, as `token`; answers (name, code) per RPC. `session`
/// opens a fresh session of node n1 (the call may close it).
pub(super) async fn every_rpc(
    grpc: &mut Grpc,
    token: Option<&str>,
    admin: &RegistryClient,
) -> Vec<(&'static str, Code)> {
    let session = admin.open_session("n1", 60).await.expect("session").0;
    admin
        .register(&instance("web", "ext-1", 8081, None), None)
        .await
        .expect("external instance");
    let mut codes = Vec::new();
    macro_rules! call {
        ($name:literal, $method:ident, $message:expr) => {
            codes.push(($name, code_of(grpc.$method(signed(token, $message)).await)));
        };
    }
    call!("ListServices", list_services, v1::ListServicesRequest {});
    call!(
        "GetService",
        get_service,
        v1::GetServiceRequest { name: "web".into() }
    );
    call!(
        "Watch",
        watch,
        v1::WatchRequest {
            services: vec![],
            from_revision: 0
        }
    );
    call!(
        "NextColor",
        next_color,
        v1::NextColorRequest {
            service: "web".into()
        }
    );
    call!(
        "ListDeployments",
        list_deployments,
        v1::ListDeploymentsRequest {
            service: "web".into(),
            limit: 1,
            page_token: String::new()
        }
    );
    call!("ListProxies", list_proxies, v1::ListProxiesRequest {});
    call!("WatchProxies", watch_proxies, v1::WatchProxiesRequest {});
    call!(
        "WatchDeployments",
        watch_deployments,
        v1::WatchDeploymentsRequest {
            service: "web".into(),
            since_revision: 0
        }
    );
    call!(
        "OpenSession",
        open_session,
        v1::OpenSessionRequest {
            node: "n1".into(),
            ttl_seconds: 60
        }
    );
    let ping = v1::KeepAliveRequest {
        session_id: session,
    };
    let keep = grpc
        .keep_alive(signed(token, futures::stream::iter([ping])))
        .await;
    let keep = match keep {
        Ok(response) => code_of(response.into_inner().message().await),
        Err(status) => status.code(),
    };
    codes.push(("KeepAlive", keep));
    call!(
        "SyncNode",
        sync_node,
        v1::SyncNodeRequest {
            session_id: session,
            node: "n1".into(),
            instances: vec![]
        }
    );
    call!(
        "CloseSession",
        close_session,
        v1::CloseSessionRequest {
            session_id: session
        }
    );
    let external = switchyard_proto::instance_to_wire(&instance("web", "ext-2", 8082, None));
    call!(
        "Register",
        register,
        v1::RegisterRequest {
            instance: Some(external),
            session_id: 0
        }
    );
    call!(
        "Deregister",
        deregister,
        v1::DeregisterRequest { id: "ext-1".into() }
    );
    call!(
        "SetActiveColor",
        set_active_color,
        v1::SetActiveColorRequest {
            service: "web".into(),
            color: v1::Color::Blue as i32,
            expected_color: v1::Color::None as i32,
            lock_token: 0,
            take_offline: false
        }
    );
    call!(
        "SetCanaryWeight",
        set_canary_weight,
        v1::SetCanaryWeightRequest {
            service: "web".into(),
            weight: 10,
            expected_weight: 0,
            expected_color: v1::Color::Blue as i32,
            lock_token: 0,
            sticky: false
        }
    );
    call!(
        "RollBack",
        roll_back,
        v1::RollBackRequest {
            service: "web".into(),
            lock_token: 0,
            who: "a test".into(),
            expected_color: v1::Color::None as i32
        }
    );
    call!(
        "SetDraining",
        set_draining,
        v1::SetDrainingRequest {
            service: "web".into(),
            instance_ids: vec!["w1".into()],
            reason: "a test".into(),
            lock_token: 0
        }
    );
    call!(
        "AcquireLock",
        acquire_lock,
        v1::AcquireLockRequest {
            service: "web".into(),
            holder: "t".into(),
            ttl_seconds: 1
        }
    );
    call!(
        "RenewLock",
        renew_lock,
        v1::RenewLockRequest {
            service: "web".into(),
            token: 1
        }
    );
    call!(
        "ReleaseLock",
        release_lock,
        v1::ReleaseLockRequest {
            service: "web".into(),
            token: 1
        }
    );
    let record = v1::Deployment {
        id: "d1".into(),
        service: "web".into(),
        started_at_ms: 1,
        outcome: v1::Outcome::Promoted as i32,
        ..Default::default()
    };
    call!(
        "RecordDeployment",
        record_deployment,
        v1::RecordDeploymentRequest {
            deployment: Some(record)
        }
    );
    let report = v1::ProxyStatus {
        proxy_id: "edge-1".into(),
        applied_revision: 1,
        healthy: true,
        ..Default::default()
    };
    call!(
        "ReportProxy",
        report_proxy,
        v1::ReportProxyRequest {
            status: Some(report)
        }
    );
    call!("SaveSnapshot", save_snapshot, v1::SaveSnapshotRequest {});
    call!(
        "CreateToken",
        create_token,
        v1::CreateTokenRequest {
            role: "reader".into(),
            ..Default::default()
        }
    );
    call!("ListTokens", list_tokens, v1::ListTokensRequest {});
    call!(
        "RevokeToken",
        revoke_token,
        v1::RevokeTokenRequest {
            accessor: "0000000000000000".into()
        }
    );
    codes
}

/// Which RPCs each role may call (README "Security" has the same table).
pub(super) fn may(role: &str, rpc: &str) -> bool {
    const READS: [&str; 8] = [
        "ListServices",
        "GetService",
        "Watch",
        "NextColor",
        "ListDeployments",
        "ListProxies",
        "WatchProxies",
        "WatchDeployments",
    ];
    const AGENT: [&str; 4] = ["OpenSession", "KeepAlive", "SyncNode", "CloseSession"];
    const DEPLOYER: [&str; 10] = [
        "Register",
        "Deregister",
        "SetActiveColor",
        "RollBack",
        "SetCanaryWeight",
        "SetDraining",
        "AcquireLock",
        "RenewLock",
        "ReleaseLock",
        "RecordDeployment",
    ];
    READS.contains(&rpc)
        || role == "admin"
        || (role == "agent" && AGENT.contains(&rpc))
        || (role == "deployer" && DEPLOYER.contains(&rpc))
        || (role == "proxy" && rpc == "ReportProxy")
}
