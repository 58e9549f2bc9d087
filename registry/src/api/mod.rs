//! The gRPC service `switchyard.v1.Registry`. It converts protobuf to domain
//! types at the edge (through `switchyard-proto`), calls the catalog, and maps
//! catalog errors to gRPC status codes.
//!
//! **API Boundary:** this is the only module of the registry that sees
//! protobuf types; the catalog and the store never do.

pub mod backup;
mod colors;
mod errors;
mod guard;
mod streams;
mod tokens;

pub use errors::status_of;
use errors::{invalid, required, within_limit};

use std::pin::Pin;

use futures::{Stream, StreamExt};
use switchyard_program::sources::Shares;
use switchyard_proto as wire;
use switchyard_proto::v1;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use switchyard_model::auth::Action;

use crate::auth::Authorizer;
use crate::catalog::Catalog;
use crate::connection::Peer;

/// How many watch streams may be open: in all, and per principal (per
/// source without `--auth`, where every caller is the same principal).
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    pub total: usize,
    pub per_principal: usize,
}

/// The registry service over one catalog.
pub struct RegistryApi {
    catalog: Catalog,
    /// Fires when the server drains: long-lived streams end cleanly.
    shutdown: CancellationToken,
    /// One place per open watch stream, shared out among principals.
    watchers: Shares<guard::WatchHolder>,
    auth: Authorizer,
}

impl RegistryApi {
    pub fn new(
        catalog: Catalog,
        shutdown: CancellationToken,
        watch_limits: WatchLimits,
        auth: Authorizer,
    ) -> Self {
        RegistryApi {
            auth,
            catalog,
            shutdown,
            watchers: Shares::new(watch_limits.per_principal, watch_limits.total),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl v1::registry_server::Registry for RegistryApi {
    async fn open_session(
        &self,
        request: Request<v1::OpenSessionRequest>,
    ) -> Result<Response<v1::OpenSessionResponse>, Status> {
        let who = self.caller(&request)?;
        let request = within_limit(request)?;
        self.auth.allow(
            &who,
            Action::Session {
                node: &request.node,
            },
        )?;
        let (session_id, ttl_seconds) = self
            .catalog
            .open_session(&request.node, request.ttl_seconds)
            .await
            .map_err(status_of)?;
        tracing::info!(principal = %who.name, session = session_id, node = %request.node, ttl_seconds, "session opened");
        Ok(Response::new(v1::OpenSessionResponse {
            session_id,
            ttl_seconds,
        }))
    }

    type KeepAliveStream = BoxStream<v1::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<v1::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let who = self.caller(&request)?;
        let auth = self.auth.clone();
        let mut inbound = request.into_inner();
        let catalog = self.catalog.clone();
        let shutdown = self.shutdown.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let revoked = self.auth.revoked(&who);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = inbound.next() => next,
                    () = shutdown.cancelled() => return,
                };
                let ping = match next {
                    Some(Ok(ping)) => ping,
                    None => return,
                    // Undecodable bytes are the client's error, not a clean
                    // end of the stream.
                    Some(Err(status)) => {
                        let refused = Status::invalid_argument(format!(
                            "invalid KeepAlive message: {}",
                            status.message()
                        ));
                        let _ = sender.send(Err(refused)).await;
                        return;
                    }
                };
                let session = ping.session_id;
                if let Err(refused) = guard::may_use_session(&auth, &catalog, &who, session).await {
                    let _ = sender.send(Err(refused)).await;
                    return;
                }
                let answer = catalog
                    .keep_alive(ping.session_id)
                    .await
                    .map(|ttl_seconds| v1::KeepAliveResponse {
                        session_id: ping.session_id,
                        ttl_seconds,
                    })
                    .map_err(status_of);
                let failed = answer.is_err();
                if sender.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        let pings = tokio_stream::wrappers::ReceiverStream::new(receiver);
        // Ending the response stream drops it, and with it the receiver:
        // the task above then stops at its next send.
        Ok(Response::new(match revoked {
            Some(revoked) => streams::ended_by(pings, revoked),
            None => Box::pin(pings),
        }))
    }

    async fn close_session(
        &self,
        request: Request<v1::CloseSessionRequest>,
    ) -> Result<Response<v1::CloseSessionResponse>, Status> {
        let who = self.caller(&request)?;
        let session = within_limit(request)?.session_id;
        guard::may_use_session(&self.auth, &self.catalog, &who, session).await?;
        let revision = self
            .catalog
            .close_session(session)
            .await
            .map_err(status_of)?;
        tracing::info!(principal = %who.name, session, revision, "session closed");
        Ok(Response::new(v1::CloseSessionResponse { revision }))
    }

    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let who = self.caller(&request)?;
        let request = within_limit(request)?;
        let instance =
            wire::instance_from_wire("instance.", required("instance", request.instance)?)
                .map_err(invalid)?;
        let session = (request.session_id != 0).then_some(request.session_id);
        self.may_register(&who, &instance, session).await?;
        let revision = self
            .catalog
            .register(instance, session, &self.owner_agrees(&who))
            .await
            .map_err(status_of)?;
        tracing::info!(principal = %who.name, revision, "instance registered");
        Ok(Response::new(v1::WriteResponse { revision }))
    }

    async fn deregister(
        &self,
        request: Request<v1::DeregisterRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let who = self.caller(&request)?;
        let id = within_limit(request)?.id;
        self.may_deregister(&who)?;
        let revision = self
            .catalog
            .deregister(&id, &self.owner_agrees(&who))
            .await
            .map_err(status_of)?;
        tracing::info!(principal = %who.name, id, revision, "instance deregistered");
        Ok(Response::new(v1::WriteResponse { revision }))
    }

    async fn sync_node(
        &self,
        request: Request<v1::SyncNodeRequest>,
    ) -> Result<Response<v1::SyncNodeResponse>, Status> {
        let who = self.caller(&request)?;
        let request = within_limit(request)?;
        guard::may_use_session(&self.auth, &self.catalog, &who, request.session_id).await?;
        self.auth.allow(
            &who,
            Action::Instances {
                node: Some(&request.node),
                // A node holds instances of any service: no one service.
                service: "",
            },
        )?;
        if request.instances.len() > switchyard_model::validate::MAX_SYNC_INSTANCES {
            return Err(Status::invalid_argument(format!(
                "invalid instances: {} in one SyncNode; the limit is {}",
                request.instances.len(),
                switchyard_model::validate::MAX_SYNC_INSTANCES
            )));
        }
        let instances = request
            .instances
            .into_iter()
            .enumerate()
            .map(|(index, instance)| {
                wire::instance_from_wire(&format!("instances[{index}]."), instance)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let outcome = self
            .catalog
            .sync_node(request.session_id, &request.node, instances)
            .await
            .map_err(status_of)?;
        if outcome.added + outcome.updated + outcome.removed > 0 {
            tracing::info!(
                node = %request.node,
                added = outcome.added,
                updated = outcome.updated,
                removed = outcome.removed,
                revision = outcome.revision,
                "node synced"
            );
        }
        for (id, reason) in &outcome.refused {
            tracing::warn!(node = %request.node, id, "instance refused: {reason}");
        }
        Ok(Response::new(v1::SyncNodeResponse {
            revision: outcome.revision,
            added: outcome.added,
            updated: outcome.updated,
            removed: outcome.removed,
            refused: outcome
                .refused
                .into_iter()
                .map(|(id, reason)| v1::RefusedInstance { id, reason })
                .collect(),
        }))
    }

    async fn list_services(
        &self,
        request: Request<v1::ListServicesRequest>,
    ) -> Result<Response<v1::ListServicesResponse>, Status> {
        self.check(&request, Action::Read)?;
        let (revision, services) = self.catalog.list_services().await.map_err(status_of)?;
        Ok(Response::new(v1::ListServicesResponse {
            revision,
            services: services.iter().map(wire::summary_to_wire).collect(),
        }))
    }

    async fn get_service(
        &self,
        request: Request<v1::GetServiceRequest>,
    ) -> Result<Response<v1::GetServiceResponse>, Status> {
        self.check(&request, Action::Read)?;
        let name = within_limit(request)?.name;
        let (revision, service) = self.catalog.get_service(&name).await.map_err(status_of)?;
        Ok(Response::new(v1::GetServiceResponse {
            revision,
            service: Some(wire::service_to_wire(&service)),
        }))
    }

    type WatchStream = BoxStream<v1::WatchResponse>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = self.check(&request, Action::Read)?;
        let peer = request.extensions().get::<Peer>().cloned();
        let request = within_limit(request)?;
        let permit = self.watch_permit(&who, peer.as_ref())?;
        let stream = self
            .catalog
            .watch(
                request.services,
                request.from_revision,
                self.shutdown.clone(),
            )
            .map_err(status_of)?;
        Ok(Response::new(streams::held(
            stream,
            permit,
            |event| wire::watch_event_to_wire(&event),
            self.auth.revoked(&who),
        )))
    }

    async fn next_color(
        &self,
        request: Request<v1::NextColorRequest>,
    ) -> Result<Response<v1::NextColorResponse>, Status> {
        self.check(&request, Action::Read)?;
        let service = within_limit(request)?.service;
        let (active, next, revision) =
            self.catalog.next_color(&service).await.map_err(status_of)?;
        Ok(Response::new(v1::NextColorResponse {
            active_color: wire::color_to_wire(active),
            next_color: wire::color_to_wire(Some(next)),
            revision,
        }))
    }

    async fn set_active_color(
        &self,
        request: Request<v1::SetActiveColorRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        self.flip(request).await
    }

    async fn set_canary_weight(
        &self,
        request: Request<v1::SetCanaryWeightRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        self.weigh(request).await
    }

    async fn set_draining(
        &self,
        request: Request<v1::SetDrainingRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        self.drain(request).await
    }

    async fn roll_back(
        &self,
        request: Request<v1::RollBackRequest>,
    ) -> Result<Response<v1::RollBackResponse>, Status> {
        self.go_back(request).await
    }

    async fn acquire_lock(
        &self,
        request: Request<v1::AcquireLockRequest>,
    ) -> Result<Response<v1::AcquireLockResponse>, Status> {
        let (who, request) = self.deployer(request, |r| &r.service)?;
        let grant = self
            .catalog
            .acquire_lock(
                &request.service,
                &request.holder,
                request.ttl_seconds,
                self.principal_name(&who),
            )
            .await
            .map_err(status_of)?;
        tracing::info!(principal = %who.name, service = %request.service, holder = %request.holder, "deploy lock granted");
        Ok(Response::new(v1::AcquireLockResponse {
            token: grant.token,
            ttl_seconds: grant.ttl_seconds,
        }))
    }

    async fn renew_lock(
        &self,
        request: Request<v1::RenewLockRequest>,
    ) -> Result<Response<v1::RenewLockResponse>, Status> {
        let (_, request) = self.deployer(request, |r| &r.service)?;
        let ttl_seconds = self
            .catalog
            .renew_lock(&request.service, request.token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::RenewLockResponse { ttl_seconds }))
    }

    async fn release_lock(
        &self,
        request: Request<v1::ReleaseLockRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let (_, request) = self.deployer(request, |r| &r.service)?;
        let revision = self
            .catalog
            .release_lock(&request.service, request.token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::WriteResponse { revision }))
    }

    async fn record_deployment(
        &self,
        request: Request<v1::RecordDeploymentRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let who = self.caller(&request)?;
        let wire_record = required("deployment", within_limit(request)?.deployment)?;
        // Allowed or not, before anything else is said about the record.
        let service = &wire_record.service;
        self.auth.allow(&who, Action::Deploy { service })?;
        let mut deployment = wire::deployment_from_wire(wire_record).map_err(invalid)?;
        if let Some(name) = self.principal_name(&who) {
            // Who wrote it, as the registry knows it (`who` is the client's word).
            let principal = switchyard_model::auth::PRINCIPAL_KEY.to_string();
            deployment.metadata.insert(principal, name.to_string());
        }
        let revision = self
            .catalog
            .record_deployment(deployment)
            .await
            .map_err(status_of)?;
        tracing::info!(principal = %who.name, revision, "deployment recorded");
        Ok(Response::new(v1::WriteResponse { revision }))
    }

    async fn report_proxy(
        &self,
        request: Request<v1::ReportProxyRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let who = self.caller(&request)?;
        let status = wire::proxy_from_wire(required("status", within_limit(request)?.status)?)
            .map_err(invalid)?;
        let proxy = &status.proxy_id;
        self.auth.allow(&who, Action::ReportProxy { proxy })?;
        let revision = self.catalog.report_proxy(status).await.map_err(status_of)?;
        Ok(Response::new(v1::WriteResponse { revision }))
    }

    async fn list_proxies(
        &self,
        request: Request<v1::ListProxiesRequest>,
    ) -> Result<Response<v1::ListProxiesResponse>, Status> {
        self.check(&request, Action::Read)?;
        let (proxies, now_ms) = self.catalog.list_proxies().await.map_err(status_of)?;
        Ok(Response::new(v1::ListProxiesResponse {
            proxies: proxies.iter().map(wire::proxy_to_wire).collect(),
            now_ms,
        }))
    }

    type WatchProxiesStream = BoxStream<v1::WatchProxiesResponse>;

    async fn watch_proxies(
        &self,
        request: Request<v1::WatchProxiesRequest>,
    ) -> Result<Response<Self::WatchProxiesStream>, Status> {
        let who = self.check(&request, Action::Read)?;
        let permit = self.watch_permit(&who, request.extensions().get::<Peer>())?;
        let stream = self.catalog.watch_proxies(self.shutdown.clone());
        Ok(Response::new(streams::held(
            stream,
            permit,
            |(proxies, now_ms)| v1::WatchProxiesResponse {
                proxies: proxies.iter().map(wire::proxy_to_wire).collect(),
                now_ms,
            },
            self.auth.revoked(&who),
        )))
    }

    async fn list_deployments(
        &self,
        request: Request<v1::ListDeploymentsRequest>,
    ) -> Result<Response<v1::ListDeploymentsResponse>, Status> {
        self.check(&request, Action::Read)?;
        let request = within_limit(request)?;
        let before = errors::page_token(&request.page_token)?;
        let page = self
            .catalog
            .list_deployments(&request.service, request.limit as usize, before)
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::ListDeploymentsResponse {
            deployments: page
                .deployments
                .iter()
                .map(wire::deployment_to_wire)
                .collect(),
            next_page_token: page.next.map(|next| next.to_string()).unwrap_or_default(),
        }))
    }

    type WatchDeploymentsStream = BoxStream<v1::WatchDeploymentsResponse>;

    async fn watch_deployments(
        &self,
        request: Request<v1::WatchDeploymentsRequest>,
    ) -> Result<Response<Self::WatchDeploymentsStream>, Status> {
        let who = self.check(&request, Action::Read)?;
        let permit = self.watch_permit(&who, request.extensions().get::<Peer>())?;
        let request = request.into_inner();
        let stream = self
            .catalog
            .watch_deployments(
                &request.service,
                request.since_revision,
                self.shutdown.clone(),
            )
            .map_err(status_of)?;
        Ok(Response::new(streams::held(
            stream,
            permit,
            |(revision, deployments)| v1::WatchDeploymentsResponse {
                revision,
                deployments: deployments.iter().map(wire::deployment_to_wire).collect(),
            },
            self.auth.revoked(&who),
        )))
    }

    type SaveSnapshotStream = BoxStream<v1::SnapshotChunk>;

    async fn save_snapshot(
        &self,
        request: Request<v1::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        self.check(&request, Action::Admin)?;
        let (revision, entries) = self.catalog.backup().await.map_err(status_of)?;
        tracing::info!(revision, keys = entries.len(), "backup taken");
        let parts = backup::parts(revision, backup::now_ms(), entries);
        Ok(Response::new(Box::pin(futures::stream::iter(
            parts.into_iter().map(Ok),
        ))))
    }

    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let who = self.check(&request, Action::Admin)?;
        let answer = tokens::create(&self.catalog, &who, within_limit(request)?).await;
        self.auth.refresh(&self.catalog).await;
        answer
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.check(&request, Action::Admin)?;
        tokens::list(&self.catalog).await
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let who = self.check(&request, Action::Admin)?;
        let answer = tokens::revoke(&self.catalog, &who, &within_limit(request)?.accessor).await;
        self.auth.refresh(&self.catalog).await;
        answer
    }
}
