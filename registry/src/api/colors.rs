//! Flips, canary weights and draining instances: writes fenced by the
//! deploy lock, allowed for deployers of the service.

use switchyard_proto as wire;
use switchyard_proto::v1;
use tonic::{Request, Response, Status};

use super::RegistryApi;
use super::errors::{invalid, status_of};

impl RegistryApi {
    pub(super) async fn flip(
        &self,
        request: Request<v1::SetActiveColorRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let (who, request) = self.deployer(request, |r| &r.service)?;
        let color = wire::color_from_wire("color", request.color).map_err(invalid)?;
        let expected =
            wire::color_from_wire("expected_color", request.expected_color).map_err(invalid)?;
        if color.is_none() && !request.take_offline {
            return Err(Status::invalid_argument(format!(
                "invalid color: none clears the live color of {} and takes it dark; to do \
                 that on purpose set take_offline (`cdctl set-color {} none --offline`)",
                request.service, request.service
            )));
        }
        let revision = self
            .catalog
            .set_active_color(
                &request.service,
                color,
                expected,
                request.lock_token,
                self.principal_name(&who),
            )
            .await
            .map_err(status_of)?;
        if color.is_none() {
            tracing::warn!(principal = %who.name, service = %request.service, revision, "live color cleared: the service is offline");
        } else {
            tracing::info!(
                principal = %who.name,
                service = %request.service,
                color = switchyard_model::color_name(color),
                revision,
                "active color set"
            );
        }
        Ok(Response::new(v1::WriteResponse { revision }))
    }

    pub(super) async fn weigh(
        &self,
        request: Request<v1::SetCanaryWeightRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let (who, request) = self.deployer(request, |r| &r.service)?;
        let weight =
            switchyard_model::validate::canary_weight("weight", request.weight).map_err(invalid)?;
        let expected_weight =
            switchyard_model::validate::canary_weight("expected_weight", request.expected_weight)
                .map_err(invalid)?;
        let expected_color =
            wire::color_from_wire("expected_color", request.expected_color).map_err(invalid)?;
        let revision = self
            .catalog
            .set_canary_weight(
                &request.service,
                (weight, request.sticky),
                expected_weight,
                expected_color,
                request.lock_token,
            )
            .await
            .map_err(status_of)?;
        tracing::info!(
            principal = %who.name,
            service = %request.service,
            weight,
            revision,
            "canary weight set"
        );
        Ok(Response::new(v1::WriteResponse { revision }))
    }

    pub(super) async fn drain(
        &self,
        request: Request<v1::SetDrainingRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let (who, request) = self.deployer(request, |r| &r.service)?;
        let reason = Some(request.reason.as_str()).filter(|r| !r.is_empty());
        let revision = self
            .catalog
            .set_draining(
                &request.service,
                &request.instance_ids,
                reason,
                request.lock_token,
            )
            .await
            .map_err(status_of)?;
        tracing::info!(
            principal = %who.name,
            service = %request.service,
            instances = request.instance_ids.len(),
            draining = reason.is_some(),
            revision,
            "draining set"
        );
        Ok(Response::new(v1::WriteResponse { revision }))
    }

    /// `RollBack`: the catalog's one rollback, as the caller.
    pub(super) async fn go_back(
        &self,
        request: Request<v1::RollBackRequest>,
    ) -> Result<Response<v1::RollBackResponse>, Status> {
        let (who, request) = self.deployer(request, |r| &r.service)?;
        let by = crate::catalog::Requester {
            who: &request.who,
            principal: self.principal_name(&who),
        };
        let expected =
            wire::color_from_wire("expected_color", request.expected_color).map_err(invalid)?;
        let done = self
            .catalog
            .roll_back(&request.service, by, expected, request.lock_token)
            .await
            .map_err(status_of)?;
        tracing::info!(
            principal = %who.name,
            service = %request.service,
            revision = done.revision,
            "rolled back"
        );
        Ok(Response::new(v1::RollBackResponse {
            revision: done.revision,
            deployment: Some(wire::deployment_to_wire(&done.deployment)),
        }))
    }
}
