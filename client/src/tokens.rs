//! The token calls (admin only on a registry with `--auth`).

use switchyard_model::auth::{NewToken, TokenInfo};
use switchyard_proto as wire;
use switchyard_proto::v1;

use crate::{ClientError, RegistryClient};

impl RegistryClient {
    /// Makes a token: its description and the token string (shown once).
    pub async fn create_token(&self, new: &NewToken) -> Result<(TokenInfo, String), ClientError> {
        let request = v1::CreateTokenRequest {
            role: new.role.as_str().to_string(),
            binding: new.binding.clone().unwrap_or_default(),
            services: new.services.clone(),
            ttl_seconds: new.ttl_seconds,
            description: new.description.clone(),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.create_token(request).await }
            })
            .await?;
        let token = response.token.ok_or_else(|| {
            switchyard_model::ValidationError::new("token", "missing from the answer")
        })?;
        Ok((wire::token_from_wire(token)?, response.secret))
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let response = self
            .call(|mut c| async move { c.list_tokens(v1::ListTokensRequest {}).await })
            .await?;
        Ok(response
            .tokens
            .into_iter()
            .map(wire::token_from_wire)
            .collect::<Result<_, _>>()?)
    }

    pub async fn revoke_token(&self, accessor: &str) -> Result<u64, ClientError> {
        let request = v1::RevokeTokenRequest {
            accessor: accessor.to_string(),
        };
        let response = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.revoke_token(request).await }
            })
            .await?;
        Ok(response.revision)
    }
}
