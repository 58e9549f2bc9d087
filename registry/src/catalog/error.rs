//! The catalog's errors. Callers (the API layer) tell the cases apart to pick
//! a gRPC status; every message says what to do next.

use switchyard_model::{Color, ValidationError, color_name};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),

    #[error("{what} not found: {hint}")]
    NotFound { what: String, hint: String },

    #[error(
        "the active color of {service} is {}, not {} as expected: read it again \
         (`cdctl color {service}`) and retry",
        color_name(*current),
        color_name(*expected)
    )]
    ColorMismatch {
        service: String,
        current: Option<Color>,
        expected: Option<Color>,
    },

    #[error(
        "the canary weight of {service} is {current}%, not {expected}% as expected: read it \
         again (`cdctl color {service}`) and retry"
    )]
    WeightMismatch {
        service: String,
        current: u8,
        expected: u8,
    },

    /// The holder's fencing token is deliberately not in the message: with
    /// it anyone could release the lock or flip the color under the holder.
    #[error(
        "the deploy lock of {service} is held by {}{}: wait for that deploy to finish, or \
         for its lock to expire",
        switchyard_model::validate::quote(holder),
        principal.as_ref().map(|name| format!(" (principal {name})")).unwrap_or_default()
    )]
    LockHeld {
        service: String,
        holder: String,
        /// Who took it as the registry knows them (with `--auth`).
        principal: Option<String>,
    },

    #[error(
        "the deploy lock of {service} with token {token} is no longer held (it expired or \
         was released): acquire it again"
    )]
    LockLost { service: String, token: u64 },

    #[error("{0}")]
    Conflict(String),

    /// The caller may not replace or remove the instance an id names now:
    /// it belongs to another node or to another service's deployers.
    #[error(
        "{0}: only the instance's owner (its node's agent, its service's deployer) or an admin may change it"
    )]
    NotOwner(String),

    #[error("too much contention on {0}: retry the request")]
    Contention(String),

    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(
        "stored record {key} cannot be read ({reason}); it was written by an incompatible version"
    )]
    CorruptRecord { key: String, reason: String },

    #[error("a record could not be encoded ({0}); this is a bug in the registry, please report it")]
    Encoding(String),
}

impl CatalogError {
    pub fn not_found(what: impl Into<String>, hint: impl Into<String>) -> Self {
        CatalogError::NotFound {
            what: what.into(),
            hint: hint.into(),
        }
    }
}
