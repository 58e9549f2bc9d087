//! Registry URLs into gRPC endpoints, refusing what would not be what the
//! user asked for: a URL without a scheme, another scheme, a path, and
//! above all `https://`, which this build cannot honour (it has no TLS yet)
//! and which must never quietly become plaintext.

use std::time::Duration;

use tonic::transport::{Endpoint, Uri};

use crate::ClientError;

/// How long a registry may take to accept a connection, and then to answer
/// a call (for a stream: to start it), before the next URL is tried.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks one registry URL and builds its endpoint.
pub fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, ClientError> {
    let bad = |why: &str| ClientError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    if !url.contains("://") {
        return Err(bad(&format!("it has no scheme: write http://{url}")));
    }
    let uri: Uri = url.parse().map_err(|_| bad("it does not parse as a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(ClientError::TlsUnavailable(url.to_string()));
        }
        _ => return Err(bad("only http:// is supported")),
    }
    if uri
        .authority()
        .is_none_or(|authority| authority.host().is_empty())
    {
        return Err(bad("it names no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a registry URL has no path or query"));
    }
    let endpoint = Endpoint::from(uri)
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> ClientError {
        endpoint(url, DEFAULT_TIMEOUT).expect_err(url)
    }

    #[test]
    fn only_plain_http_urls_of_a_host_are_accepted() {
        assert!(endpoint("http://127.0.0.1:7400", DEFAULT_TIMEOUT).is_ok());
        assert!(endpoint("http://registry.local:7400/", DEFAULT_TIMEOUT).is_ok());
        assert!(matches!(
            refused("https://registry.local:7400"),
            ClientError::TlsUnavailable(_)
        ));
        for url in [
            "127.0.0.1:7400",
            "ftp://127.0.0.1:7400",
            "grpc://127.0.0.1:7400",
            "http://127.0.0.1:7400/api",
            "http://127.0.0.1:7400/?x=1",
            "http://",
            "garbage",
            "",
        ] {
            assert!(matches!(refused(url), ClientError::BadUrl { .. }), "{url}");
        }
        let message = refused("127.0.0.1:7400").to_string();
        assert!(message.contains("http://127.0.0.1:7400"), "{message}");
    }
}
