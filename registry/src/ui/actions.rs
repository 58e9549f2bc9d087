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

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use switchyard_model::auth::Action;
use switchyard_model::labels::record;

use super::session::{self, Sessions, Viewer};
use super::{Ui, redirect, redirect_with_cookie};
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

/// The dashboard's rollback: the catalog's one rollback (as `cdctl
/// rollback` does through the RollBack RPC), under a lock of its own.
async fn rollback(catalog: &Catalog, service: &str, who: &str) -> Result<String, String> {
    let by = crate::catalog::Requester {
        who: "dashboard",
        principal: Some(who),
    };
    let done = catalog
        .roll_back(service, by, None, 0)
        .await
        .map_err(|error| error.to_string())?;
    let back_on = done.deployment.to_color.map_or_else(
        || "its previous color".to_string(),
        |color| color.to_string(),
    );
    Ok(format!(
        "{service} is back on {back_on} (revision {})",
        done.revision
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
