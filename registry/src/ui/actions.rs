//! What the dashboard's forms do: sign in and out, and the buttons.
//!
//! A button is refused unless a signed-in viewer sent it from one of the
//! dashboard's own pages (same origin, the session's CSRF token), and the
//! same decision table as gRPC lets their token deploy the service. Each
//! action is logged with its principal, and what it writes carries the
//! principal too:
//! - **promote / abort** write a request onto the paused deploy's record
//!   (the registry cannot run a deploy: that needs Docker and the deploy's
//!   tests); the `cdctl deploy --wait-for-promotion` that paused it, or
//!   any `cdctl promote`, carries it out.
//! - **rollback** is done here: under the service's deploy lock, the live
//!   color goes back to the previous one if that still has instances
//!   taking requests, and a rollback record is written, as `cdctl rollback`
//!   does.

use std::sync::Arc;
use switchyard_model::defaults;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use switchyard_model::auth::{Action, PRINCIPAL_KEY};
use switchyard_model::labels::record;
use switchyard_model::{Deployment, Outcome, rollback};

use super::session::{self, Sessions, Viewer};
use super::{Ui, now_ms, redirect, redirect_with_cookie};
use crate::catalog::Catalog;

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/services/{name}/{action}`: JSON `{ok, message}`.
pub(super) async fn act(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path((service, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let principal = match allowed(&ui.sessions, &headers, &form.csrf, &service) {
        Ok(principal) => principal,
        Err((status, message)) => return answer(status, false, message),
    };
    let outcome = match action.as_str() {
        record::PROMOTE | record::ABORT => ui
            .catalog
            .request_on_paused(&service, &action, &principal)
            .await
            .map(|(revision, _)| {
                format!(
                    "{action} requested at revision {revision}: the waiting deploy carries it \
                     out (or run `cdctl {action} {service}`)"
                )
            })
            .map_err(|error| error.to_string()),
        "rollback" => rollback(&ui.catalog, &service, &principal).await,
        _ => return answer(StatusCode::NOT_FOUND, false, "no such action".into()),
    };
    tracing::info!(
        principal,
        service,
        action,
        via = "dashboard",
        ok = outcome.is_ok(),
        "dashboard action"
    );
    match outcome {
        Ok(message) => answer(StatusCode::OK, true, message),
        Err(message) => answer(StatusCode::CONFLICT, false, message),
    }
}

/// The principal's name when this form may act on `service`.
fn allowed(
    sessions: &Sessions,
    headers: &HeaderMap,
    csrf: &str,
    service: &str,
) -> Result<String, (StatusCode, String)> {
    let (principal, session) = match sessions.viewer(headers) {
        Viewer::Signed {
            principal, session, ..
        } => (principal, session),
        Viewer::Open => {
            return Err((
                StatusCode::FORBIDDEN,
                "the dashboard is read-only without --auth: start the registry with --auth \
                 and sign in with a deployer token"
                    .into(),
            ));
        }
        Viewer::Anonymous => {
            return Err((
                StatusCode::UNAUTHORIZED,
                "sign in with a deployer token first".into(),
            ));
        }
    };
    if !session::same_origin(headers) || !sessions.csrf_matches(&session, csrf) {
        return Err((
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong: reload the page and try again".into(),
        ));
    }
    sessions
        .auth()
        .allow(&principal, Action::Deploy { service })
        .map_err(|status| (StatusCode::FORBIDDEN, status.message().to_string()))?;
    Ok(principal.name)
}

fn answer(status: StatusCode, ok: bool, message: String) -> Response {
    let body = serde_json::json!({ "ok": ok, "message": message });
    (status, axum::Json(body)).into_response()
}

/// The dashboard's rollback, under the service's deploy lock.
async fn rollback(catalog: &Catalog, service: &str, who: &str) -> Result<String, String> {
    let grant = catalog
        .acquire_lock(
            service,
            "dashboard rollback",
            defaults::whole_seconds(defaults::LOCK_TTL),
            Some(who),
        )
        .await
        .map_err(|error| error.to_string())?;
    let result = rollback_locked(catalog, service, who, grant.token).await;
    if let Err(error) = catalog.release_lock(service, grant.token).await {
        tracing::warn!(%error, service, "could not release the lock; it expires with its TTL");
    }
    result
}

async fn rollback_locked(
    catalog: &Catalog,
    service: &str,
    who: &str,
    token: u64,
) -> Result<String, String> {
    let started_at_ms = now_ms();
    let newest = catalog
        .list_deployments(service, 1, None)
        .await
        .map_err(|error| error.to_string())?;
    let (_, current) = catalog
        .get_service(service)
        .await
        .map_err(|error| error.to_string())?;
    let plan = rollback::plan(&current, newest.deployments.first())
        .map_err(|refused| refused.to_string())?;
    let (active, previous) = (plan.from, plan.to);
    let image = plan.image.unwrap_or_default();
    let revision = catalog
        .set_active_color(service, Some(previous), Some(active), token, Some(who))
        .await
        .map_err(|error| error.to_string())?;
    let record = Deployment {
        id: format!("{}-ui{:04x}", now_ms(), rand::random::<u16>()),
        service: service.to_string(),
        from_color: Some(active),
        to_color: Some(previous),
        image,
        who: "dashboard".into(),
        started_at_ms,
        ended_at_ms: now_ms(),
        outcome: Outcome::RolledBack,
        error: "rollback".into(),
        metadata: [
            (record::KIND.to_string(), record::ROLLBACK.to_string()),
            (PRINCIPAL_KEY.to_string(), who.to_string()),
        ]
        .into(),
        ..Deployment::default()
    };
    if let Err(error) = catalog.record_deployment(record).await {
        tracing::warn!(%error, service, "the rollback is done but its record was not written");
    }
    Ok(format!(
        "{service} is back on {previous} (revision {revision})"
    ))
}

/// `POST /ui/login`: a valid token signs in; anything else says so.
pub(super) async fn sign_in(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let token = form.token.trim();
    if !ui.sessions.auth().enabled() {
        return redirect("/ui/");
    }
    if !ui.sessions.login_allowed(&headers, &form.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "the sign-in form's CSRF token is missing or wrong: open /ui/login again and sign in \
             from there",
        )
            .into_response();
    }
    let cookie = ui
        .sessions
        .sign_in(token)
        .and_then(|id| Sessions::sign_in_cookie(&id));
    match cookie {
        Some(cookie) => redirect_with_cookie("/ui/", cookie),
        None => {
            let error = "that token is not valid: it was revoked, has expired or never existed \
                         (create one with `cdctl token create`)";
            let mut response = super::login_form(&ui, &headers, error);
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

/// `POST /ui/logout`: forgets the session cookie (with the form's proof).
pub(super) async fn sign_out(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    match ui.sessions.viewer(&headers) {
        Viewer::Signed { session, .. }
            if session::same_origin(&headers) && ui.sessions.csrf_matches(&session, &form.csrf) =>
        {
            ui.sessions.sign_out(&session);
            redirect_with_cookie("/ui/login", Sessions::sign_out_cookie())
        }
        _ => (StatusCode::FORBIDDEN, "reload the page and sign out again").into_response(),
    }
}
