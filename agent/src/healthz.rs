//! `GET /healthz` for the agent itself: 200 while it follows Docker and holds
//! a registry session, 503 otherwise; the body says which part is down.
//! `GET /metrics` on the same listener.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What the agent reports about itself.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub docker_connected: bool,
    pub session: Option<u64>,
    pub node: String,
    pub instances: usize,
    pub last_sync_revision: u64,
    pub last_error: Option<String>,
}

pub type SharedStatus = Arc<Mutex<Status>>;

fn report(status: &Status) -> (StatusCode, Json<Value>) {
    let healthy = status.docker_connected && status.session.is_some();
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "healthy": healthy,
            "docker": if status.docker_connected { "connected" } else { "disconnected" },
            "registry": if status.session.is_some() { "session open" } else { "no session" },
            "session": status.session,
            "node": status.node,
            "instances": status.instances,
            "last_sync_revision": status.last_sync_revision,
            "last_error": status.last_error,
        })),
    )
}

/// Binds `address` and serves until `shutdown`; answers the bound address.
pub async fn serve(
    address: SocketAddr,
    status: SharedStatus,
    metrics: Arc<prometheus_client::registry::Registry>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/healthz",
        get(move || {
            let status = status.lock().map(|s| s.clone()).unwrap_or_default();
            async move { report(&status) }
        }),
    );
    let app = app.merge(switchyard_program::metrics::router(metrics));
    switchyard_program::http::serve(
        "metrics",
        address,
        app,
        switchyard_program::http::HttpLimits::default(),
        shutdown,
    )
    .await
}
