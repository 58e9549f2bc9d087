//! Registry URLs into gRPC endpoints, refusing what would not be what the
//! user asked for: a URL without a scheme, another scheme, a path, TLS
//! material with an `http://` URL, and above all an `https://` URL talked to
//! in plaintext, which never happens: `https://` is TLS, verified against
//! `--ca` (or the system's roots), with `--cert`/`--key` as the client's
//! identity when given.

use std::path::Path;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::ClientError;

/// How long a registry may take to accept a connection, and then to answer
/// a call (for a stream: to start it), before the next URL is tried.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS material for `https://` registries, as PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates the registry's certificate must chain to; the
    /// system's roots when `None`.
    pub ca: Option<Vec<u8>>,
    /// The client's certificate chain and key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Reads the files the flags name (`--ca`, `--cert`, `--key`).
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|error| ClientError::Tls(format!("reading {}: {error}", path.display())))
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(ClientError::Tls(
                    "--cert and --key go together: give both, or neither".into(),
                ));
            }
        };
        Ok(ClientTls {
            ca: ca.map(read).transpose()?,
            identity,
        })
    }

    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.identity.is_none()
    }
}

/// How a client reaches the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Per URL: to connect, and to answer a call (or start a stream).
    pub timeout: Duration,
    pub tls: ClientTls,
    /// Sent as `authorization: Bearer TOKEN` on every call.
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: DEFAULT_TIMEOUT,
            tls: ClientTls::default(),
            token: None,
        }
    }
}

/// Reads a token the way `--token-file` names it: the file's first line.
pub fn read_token_file(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ClientError::BadToken(format!("reading {}: {error}", path.display())))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        return Err(ClientError::BadToken(format!(
            "{} is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub(crate) struct Credentials(Option<MetadataValue<Ascii>>);

impl Credentials {
    pub(crate) fn new(token: Option<&str>) -> Result<Self, ClientError> {
        token
            .map(|token| {
                MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    ClientError::BadToken("the token has characters a header cannot carry".into())
                })
            })
            .transpose()
            .map(Credentials)
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Checks one registry URL and builds its endpoint.
pub fn endpoint(url: &str, options: &ClientOptions) -> Result<Endpoint, ClientError> {
    let bad = |why: &str| ClientError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    if !url.contains("://") {
        return Err(bad(&format!(
            "it has no scheme: write http://{url} or https://{url}"
        )));
    }
    let uri: Uri = url.parse().map_err(|_| bad("it does not parse as a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("only http:// and https:// are supported")),
    };
    if uri
        .authority()
        .is_none_or(|authority| authority.host().is_empty())
    {
        return Err(bad("it names no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a registry URL has no path or query"));
    }
    if !https && !options.tls.is_empty() {
        return Err(bad(
            "TLS files (--ca, --cert, --key) are given but the URL is http://: use https://",
        ));
    }
    let mut endpoint = Endpoint::from(uri)
        .connect_timeout(options.timeout)
        .timeout(options.timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if https {
        endpoint = endpoint
            .tls_config(tls_config(&options.tls))
            .map_err(|error| ClientError::Tls(format!("{url}: {error}")))?;
    }
    Ok(endpoint)
}

fn tls_config(tls: &ClientTls) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> ClientError {
        endpoint(url, &ClientOptions::default()).expect_err(url)
    }

    #[test]
    fn only_http_and_https_urls_of_a_host_are_accepted() {
        let plain = ClientOptions::default();
        assert!(endpoint("http://127.0.0.1:7400", &plain).is_ok());
        assert!(endpoint("http://registry.local:7400/", &plain).is_ok());
        assert!(endpoint("https://registry.local:7400", &plain).is_ok());
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

    #[test]
    fn tls_files_with_a_plaintext_url_are_a_mistake() {
        let options = ClientOptions {
            tls: ClientTls {
                ca: Some(b"not used".to_vec()),
                identity: None,
            },
            ..ClientOptions::default()
        };
        let refused = endpoint("http://127.0.0.1:7400", &options).expect_err("mixed");
        assert!(refused.to_string().contains("https://"), "{refused}");
    }
}
