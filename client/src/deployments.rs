//! Deployment records: write one, list a service's history, and follow
//! records as they are written.

use futures::{Stream, StreamExt};
use switchyard_model::Deployment;
use switchyard_proto as wire;
use switchyard_proto::v1;

use crate::{ClientError, RegistryClient};

impl RegistryClient {
    pub async fn record_deployment(&self, deployment: &Deployment) -> Result<u64, ClientError> {
        let request = v1::RecordDeploymentRequest {
            deployment: Some(wire::deployment_to_wire(deployment)),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.record_deployment(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Rolls `service` back to its previous color by the registry's one
    /// rule, under the caller's deploy lock `lock_token` (0: a lock of the
    /// registry's own), from the live color `expected` (when given);
    /// answers the flip's revision and the rollback's record. A refusal is
    /// FAILED_PRECONDITION with the reason.
    pub async fn roll_back(
        &self,
        service: &str,
        expected: Option<switchyard_model::Color>,
        lock_token: u64,
        who: &str,
    ) -> Result<(u64, Deployment), ClientError> {
        let request = v1::RollBackRequest {
            service: service.to_string(),
            lock_token,
            who: who.to_string(),
            expected_color: wire::color_to_wire(expected),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.roll_back(request).await }
            })
            .await?;
        let record = response.deployment.ok_or_else(|| {
            switchyard_model::validate::ValidationError::new(
                "deployment",
                "missing from the answer",
            )
        })?;
        Ok((response.revision, wire::deployment_from_wire(record)?))
    }

    /// Deployment records of `service`, newest first: at most `limit` (0:
    /// all retained), read page by page.
    pub async fn list_deployments(
        &self,
        service: &str,
        limit: u32,
    ) -> Result<Vec<Deployment>, ClientError> {
        let mut deployments = Vec::new();
        let mut page_token = String::new();
        loop {
            let remaining = if limit == 0 {
                0
            } else {
                limit.saturating_sub(u32::try_from(deployments.len()).unwrap_or(u32::MAX))
            };
            let request = v1::ListDeploymentsRequest {
                service: service.to_string(),
                limit: remaining,
                page_token: std::mem::take(&mut page_token),
            };
            let response = self
                .call(|mut c| {
                    let request = request.clone();
                    async move { c.list_deployments(request).await }
                })
                .await?;
            for deployment in response.deployments {
                deployments.push(wire::deployment_from_wire(deployment)?);
            }
            let done = limit != 0 && deployments.len() >= limit as usize;
            if response.next_page_token.is_empty() || done {
                return Ok(deployments);
            }
            page_token = response.next_page_token;
        }
    }

    /// Follows deployment records of `service` (every service when empty)
    /// written after `since_revision` (0: from now on). The first item has
    /// no records and the revision the stream starts after; each later one
    /// the records written at its revision. The stream ends with an error
    /// when the connection breaks: open it again from the last revision.
    pub async fn watch_deployments(
        &self,
        service: &str,
        since_revision: u64,
    ) -> Result<
        impl Stream<Item = Result<(u64, Vec<Deployment>), ClientError>> + Send + 'static + use<>,
        ClientError,
    > {
        let request = v1::WatchDeploymentsRequest {
            service: service.to_string(),
            since_revision,
        };
        let stream = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.watch_deployments(request).await }
            })
            .await?;
        Ok(stream.map(|message| {
            let message = message.map_err(ClientError::from)?;
            let deployments = message
                .deployments
                .into_iter()
                .map(wire::deployment_from_wire)
                .collect::<Result<Vec<_>, _>>()?;
            Ok((message.revision, deployments))
        }))
    }
}
