//! The token RPCs (admin only; the caller was checked before these run).

use switchyard_model::auth::{NewToken, Principal, Role};
use switchyard_proto as wire;
use switchyard_proto::v1;
use tonic::{Response, Status};

use super::{invalid, status_of};
use crate::catalog::Catalog;

pub(super) async fn create(
    catalog: &Catalog,
    who: &Principal,
    request: v1::CreateTokenRequest,
) -> Result<Response<v1::CreateTokenResponse>, Status> {
    let role = Role::parse(&request.role).map_err(invalid)?;
    let new = NewToken {
        role,
        binding: (!request.binding.is_empty()).then_some(request.binding),
        services: request.services,
        description: request.description,
        ttl_seconds: request.ttl_seconds,
    };
    let (token, secret) = catalog.create_token(new).await.map_err(status_of)?;
    tracing::info!(
        principal = %who.name,
        accessor = %token.accessor,
        role = token.role.as_str(),
        "token created"
    );
    Ok(Response::new(v1::CreateTokenResponse {
        token: Some(wire::token_to_wire(&token)),
        secret,
    }))
}

pub(super) async fn list(catalog: &Catalog) -> Result<Response<v1::ListTokensResponse>, Status> {
    let (_, stored) = catalog.stored_tokens().await.map_err(status_of)?;
    Ok(Response::new(v1::ListTokensResponse {
        tokens: stored
            .iter()
            .map(|token| wire::token_to_wire(&token.info))
            .collect(),
    }))
}

pub(super) async fn revoke(
    catalog: &Catalog,
    who: &Principal,
    accessor: &str,
) -> Result<Response<v1::WriteResponse>, Status> {
    let revision = catalog.revoke_token(accessor).await.map_err(status_of)?;
    tracing::info!(principal = %who.name, accessor, revision, "token revoked");
    Ok(Response::new(v1::WriteResponse { revision }))
}
