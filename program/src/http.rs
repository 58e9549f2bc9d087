//! The HTTP/1.1 listener behind `/metrics`, `/healthz` and the dashboard.
//!
//! `axum::serve` bounds nothing: any number of connections, from one
//! source as well as from many, each allowed to send its headers as slowly
//! as it likes (hyper's header timeout needs a timer that `axum::serve`
//! does not set). This loop admits a connection only within
//! [`HttpLimits`] ([`crate::sources`]) and gives hyper a timer, so a
//! request's headers must arrive within `header_read_timeout` — which in
//! hyper 1 also closes a kept-alive connection idle that long between
//! requests. A response being written (the dashboard's event stream) is
//! not idle.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::sources::Sources;

/// What one HTTP listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once, from every source.
    pub max_connections: usize,
    /// Connections open at once from one source (an IPv4 address or an IPv6 /64).
    pub per_source: usize,
    /// How long a client may take to send a request's headers, and how
    /// long a kept-alive connection may wait for its next request.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    /// Prometheus scrapes over one connection and a browser opens about six
    /// per site, so 32 per source leaves room for several tabs and scrapers
    /// behind one NAT address.
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            per_source: 32,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Binds `address` and serves `app` within `limits` until `shutdown`;
/// answers the bound address. `what` names the listener in errors.
pub async fn serve(
    what: &str,
    address: SocketAddr,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await.map_err(|error| {
        anyhow::anyhow!(
            "binding {address} for {what}: {error} (is it in use? pick another port, or off)"
        )
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, app, limits, shutdown));
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let sources = Sources::new(limits.per_source, limits.max_connections);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, or the peer gave up: neither is
                // helped by retrying at once.
                tracing::debug!(%error, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match sources.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refused) => {
                tracing::debug!(%peer, reason = refused.reason(), "HTTP connection refused");
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "HTTP connection ended");
            }
        });
    }
}
