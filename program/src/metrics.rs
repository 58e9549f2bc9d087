//! The `/metrics` endpoint every Switchyard program serves: the OpenMetrics
//! text of a `prometheus-client` registry (served by [`crate::http`]), plus
//! the parsing of `ADDRESS:PORT|off` listen flags shared with `/healthz`.
//!
//! Encoding reads atomics and takes only the locks of the metric families
//! and collectors themselves; nothing on a request path waits on a scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What Prometheus asks for first and what `prometheus-client` writes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `ADDRESS:PORT`, or `off` (or empty) for none; `flag` names it in errors.
pub fn parse_listen(flag: &str, text: &str) -> anyhow::Result<Option<SocketAddr>> {
    match text {
        "off" | "" => Ok(None),
        text => text.parse().map(Some).map_err(|_| {
            anyhow::anyhow!("{flag} {text:?} is not ADDRESS:PORT or off (e.g. 127.0.0.1:7402)")
        }),
    }
}

/// Now as Unix time in seconds, for `*_timestamp_seconds` gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The exposition of `registry` as Prometheus scrapes it.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        // Only a collector's own formatting error gets here; say so
        // rather than serving half a page as if it were whole.
        tracing::warn!(%error, "encoding the metrics failed");
        text.clear();
    }
    text
}

/// `GET /metrics` over `registry`, to serve alone or merge into a router.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let text = render(&registry);
            async move { ([(CONTENT_TYPE, OPENMETRICS)], text) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_flags_parse_or_say_what_to_write() {
        assert_eq!(parse_listen("--x", "off").ok(), Some(None));
        assert_eq!(parse_listen("--x", "").ok(), Some(None));
        assert_eq!(
            parse_listen("--x", "127.0.0.1:7402").ok().flatten(),
            Some(SocketAddr::from(([127, 0, 0, 1], 7402)))
        );
        let error = parse_listen("--x", "7402").err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("--x") && e.contains("ADDRESS:PORT")));
    }

    #[test]
    fn an_empty_registry_renders_the_openmetrics_end() {
        assert_eq!(render(&Registry::default()), "# EOF\n");
    }
}
