//! From the catalog's errors and the wire's limits to the gRPC status a
//! client acts on.

use switchyard_model::ValidationError;
use tonic::{Request, Status};

use crate::catalog::CatalogError;
use crate::store::StoreError;

/// Maps a catalog error to the status a client acts on.
pub fn status_of(error: CatalogError) -> Status {
    let message = error.to_string();
    match error {
        CatalogError::Invalid(_) => Status::invalid_argument(message),
        CatalogError::NotFound { .. } | CatalogError::Store(StoreError::LeaseNotFound(_)) => {
            Status::not_found(message)
        }
        CatalogError::ColorMismatch { .. }
        | CatalogError::WeightMismatch { .. }
        | CatalogError::LockLost { .. }
        | CatalogError::Conflict(_) => Status::failed_precondition(message),
        CatalogError::LockHeld { .. } | CatalogError::Contention(_) => Status::aborted(message),
        CatalogError::NotOwner(_) => Status::permission_denied(message),
        CatalogError::Store(StoreError::Closed | StoreError::Unavailable(_)) => {
            Status::unavailable(message)
        }
        CatalogError::Store(StoreError::Compacted { .. }) => Status::out_of_range(message),
        CatalogError::Store(StoreError::Storage(_))
        | CatalogError::CorruptRecord { .. }
        | CatalogError::Encoding(_) => {
            tracing::error!(error = %message, "request failed on the store");
            Status::internal(message)
        }
    }
}

pub(super) fn invalid(error: ValidationError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Refuses requests over the documented size limit.
pub(super) fn within_limit<T: prost::Message>(request: Request<T>) -> Result<T, Status> {
    let request = request.into_inner();
    let size = request.encoded_len();
    let limit = switchyard_model::validate::MAX_REQUEST_BYTES;
    if size > limit {
        return Err(Status::invalid_argument(format!(
            "invalid request: {size} bytes; the limit is {limit} bytes (4 MiB): split it up"
        )));
    }
    Ok(request)
}

pub(super) fn required<T>(field: &str, value: Option<T>) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("invalid {field}: missing")))
}

/// A `ListDeployments` page token: empty for the first page, else the
/// `next_page_token` of the previous answer.
pub fn page_token(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token.parse::<u64>().map(Some).map_err(|_| {
        Status::invalid_argument(format!(
            "invalid page_token: {}; pass the next_page_token of the previous answer",
            switchyard_model::validate::quote(token)
        ))
    })
}
