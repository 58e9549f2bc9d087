//! The proxy calls: report what a proxy applied, list the reports, and
//! follow them as they are written.

use futures::{Stream, StreamExt};
use switchyard_model::ProxyStatus;
use switchyard_proto as wire;
use switchyard_proto::v1;

use crate::{ClientError, RegistryClient};

impl RegistryClient {
    /// Reports what this proxy applied.
    pub async fn report_proxy(&self, status: &ProxyStatus) -> Result<u64, ClientError> {
        let request = v1::ReportProxyRequest {
            status: Some(wire::proxy_to_wire(status)),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.report_proxy(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Every proxy that reported, and the registry's clock (Unix ms).
    pub async fn list_proxies(&self) -> Result<(Vec<ProxyStatus>, u64), ClientError> {
        let response = self
            .call(|mut c| async move { c.list_proxies(v1::ListProxiesRequest {}).await })
            .await?;
        Ok((from_wire(response.proxies)?, response.now_ms))
    }

    /// Follows proxy reports: first every proxy's last report, then the
    /// reports as they are written, each with the registry's clock. The
    /// stream ends with an error when the connection breaks; open it again.
    pub async fn watch_proxies(
        &self,
    ) -> Result<
        impl Stream<Item = Result<(Vec<ProxyStatus>, u64), ClientError>> + Send + 'static + use<>,
        ClientError,
    > {
        let stream = self
            .call(|mut c| async move { c.watch_proxies(v1::WatchProxiesRequest {}).await })
            .await?;
        Ok(stream.map(|message| {
            let message = message.map_err(ClientError::from)?;
            Ok((from_wire(message.proxies)?, message.now_ms))
        }))
    }
}

fn from_wire(proxies: Vec<v1::ProxyStatus>) -> Result<Vec<ProxyStatus>, ClientError> {
    let proxies = proxies.into_iter().map(wire::proxy_from_wire);
    Ok(proxies.collect::<Result<_, _>>()?)
}
