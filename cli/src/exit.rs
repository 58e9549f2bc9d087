//! Exit codes, one per class of failure a script may want to tell apart, and
//! the one-line messages that go with them.

use switchyard_client::{ClientError, Code};

pub const FAILURE: u8 = 1;
/// Bad flags or configuration (clap also exits 2 for usage errors).
pub const USAGE: u8 = 2;
/// No registry answered.
pub const UNREACHABLE: u8 = 3;
/// The service, instance or session does not exist.
pub const NOT_FOUND: u8 = 4;
/// A compare-and-swap or other precondition failed (e.g. the color changed).
pub const PRECONDITION: u8 = 5;
/// Another deploy holds the service's lock (or one is paused for promotion).
pub const LOCK_HELD: u8 = 6;
/// No valid credential, or its role may not do this (`--auth`).
pub const NOT_ALLOWED: u8 = 7;
/// The new color's instances were not all passing in the registry in time
/// (rolled back).
pub const HEALTH_TIMEOUT: u8 = 10;
/// The pre-integration test failed (rolled back).
pub const PRE_TEST_FAILED: u8 = 11;
/// The post-integration test failed (the color was flipped back; rolled back).
pub const POST_TEST_FAILED: u8 = 12;
/// A step failed and the rollback could not undo everything: what is left
/// behind was printed.
pub const ROLLBACK_FAILED: u8 = 13;
/// Any other deploy failure, such as Docker refusing a container (rolled back).
pub const DEPLOY_FAILED: u8 = 14;
/// Ctrl-C or SIGTERM during a deploy (rolled back).
pub const INTERRUPTED: u8 = 15;

/// A mistake in how cdctl was called that clap cannot see (a flag's value
/// in context, a registry URL): exit [`USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code and one-line message for an error that ended a command.
pub fn describe(error: &anyhow::Error) -> (u8, String) {
    if let Some(invalid) = error.downcast_ref::<switchyard_model::ValidationError>() {
        return (USAGE, invalid.to_string());
    }
    if let Some(usage) = error.downcast_ref::<UsageError>() {
        return (USAGE, usage.to_string());
    }
    let Some(client_error) = error.downcast_ref::<ClientError>() else {
        return (FAILURE, format!("{error:#}"));
    };
    if let ClientError::BadUrl { .. } | ClientError::Tls(_) | ClientError::BadToken(_) =
        client_error
    {
        return (USAGE, format!("{error:#}"));
    }
    if client_error.is_unreachable() {
        return (
            UNREACHABLE,
            format!(
                "cannot reach the registry ({}): is cd-registry running? Point --registry or \
                 SWITCHYARD_REGISTRY at it",
                client_error.message()
            ),
        );
    }
    match client_error.code() {
        Some(Code::InvalidArgument) => (USAGE, client_error.message()),
        Some(Code::NotFound) => (NOT_FOUND, client_error.message()),
        Some(Code::FailedPrecondition) => (PRECONDITION, client_error.message()),
        Some(Code::Aborted) => (LOCK_HELD, client_error.message()),
        Some(Code::Unauthenticated | Code::PermissionDenied) => {
            (NOT_ALLOWED, client_error.message())
        }
        _ => (FAILURE, format!("{error:#}")),
    }
}
