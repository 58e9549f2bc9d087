//! The dashboard (`--ui`): server-rendered pages on the metrics listener,
//! kept live by server-sent events, with promote, abort and rollback
//! buttons for signed-in deployers.
//!
//! - [`state`]: what the pages show, followed from the catalog's watches.
//! - [`pages`] and [`timeline`]: the values each page renders.
//! - [`session`]: who is looking (a token in an `HttpOnly` cookie) and
//!   the CSRF proof every form carries.
//! - [`actions`]: what the buttons do.
//!
//! Pages and assets are compiled into the binary (`assets/`); there is no
//! build step and nothing is fetched from elsewhere. Every page reloads its
//! live part (`<main>`) when `/ui/events` says the state changed, so a flip,
//! an instance or a deploy step shows without reloading the page.

mod actions;
mod pages;
mod session;
mod state;
mod timeline;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use minijinja::Environment;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::auth::Authorizer;
use crate::catalog::Catalog;
use session::{Sessions, Viewer};
use state::UiState;

/// Whether the dashboard is served (`--ui`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UiMode {
    /// On when the metrics listener is on a loopback address.
    #[default]
    Auto,
    On,
    Off,
}

impl UiMode {
    /// Whether to serve it beside metrics listening on `address`.
    pub fn enabled(self, address: std::net::SocketAddr) -> bool {
        match self {
            UiMode::Auto => address.ip().is_loopback(),
            UiMode::On => true,
            UiMode::Off => false,
        }
    }
}

/// Everything a request handler needs.
struct Ui {
    /// Started on the first request (see `state.rs`).
    state: tokio::sync::OnceCell<UiState>,
    sessions: Sessions,
    catalog: Catalog,
    templates: Environment<'static>,
    stop: CancellationToken,
}

type Shared = State<Arc<Ui>>;

/// The dashboard's routes, following `catalog` until `stop`.
pub fn router(
    catalog: Catalog,
    auth: Authorizer,
    stop: CancellationToken,
) -> anyhow::Result<axum::Router> {
    let ui = Ui {
        state: tokio::sync::OnceCell::new(),
        sessions: Sessions::new(auth)?,
        catalog,
        templates: templates()?,
        stop,
    };
    Ok(axum::Router::new()
        .route("/", get(|| async { redirect("/ui/") }))
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(services))
        .route("/ui/services/{name}", get(service))
        .route("/ui/services/{name}/{action}", post(actions::act))
        .route("/ui/proxies", get(proxies))
        .route("/ui/events", get(events))
        .route("/ui/login", get(login_page).post(actions::sign_in))
        .route("/ui/logout", post(actions::sign_out))
        .route("/ui/assets/{file}", get(asset))
        .with_state(Arc::new(ui)))
}

fn templates() -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    for (name, source) in [
        ("layout.html", include_str!("assets/layout.html")),
        ("services.html", include_str!("assets/services.html")),
        ("service.html", include_str!("assets/service.html")),
        ("proxies.html", include_str!("assets/proxies.html")),
        ("login.html", include_str!("assets/login.html")),
    ] {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// The page data every template gets beside its own (`p`).
#[derive(Serialize)]
struct Context<'a, T: Serialize> {
    title: &'a str,
    fragment: &'a str,
    who: Option<&'a str>,
    auth: bool,
    csrf: Option<&'a str>,
    may_deploy: bool,
    p: T,
}

/// How long the first request waits for the dashboard's first read.
const FIRST_READ: Duration = Duration::from_secs(5);

impl Ui {
    /// What the pages show, following the catalog from the first call on.
    async fn state(&self) -> &UiState {
        self.state
            .get_or_init(|| async {
                let state = UiState::follow(&self.catalog, &self.stop);
                state.loaded(FIRST_READ).await;
                state
            })
            .await
    }

    /// `fragment` with `data`: inside the layout, or alone when the page's
    /// script asks for its live part.
    fn render<T: Serialize>(
        &self,
        headers: &HeaderMap,
        viewer: &Viewer,
        (title, fragment): (&str, &str),
        may_deploy: bool,
        data: T,
    ) -> Response {
        let (who, csrf) = match viewer {
            Viewer::Signed {
                principal, csrf, ..
            } => (Some(principal.name.as_str()), Some(csrf.as_str())),
            Viewer::Open | Viewer::Anonymous => (None, None),
        };
        let context = Context {
            title,
            fragment,
            who,
            auth: self.sessions.auth().enabled(),
            csrf,
            may_deploy,
            p: data,
        };
        let alone = headers.contains_key("x-switchyard-fragment");
        let template = if alone { fragment } else { "layout.html" };
        match self
            .templates
            .get_template(template)
            .and_then(|t| t.render(minijinja::value::Serde(&context)))
        {
            Ok(body) => html(StatusCode::OK, body),
            Err(error) => {
                tracing::warn!(%error, template, "a dashboard page failed to render");
                let text = "the page failed to render; the registry's log says why";
                (StatusCode::INTERNAL_SERVER_ERROR, text).into_response()
            }
        }
    }

    /// Who is looking, or the answer for someone who must sign in first.
    fn reader(&self, headers: &HeaderMap) -> Result<Viewer, SignInFirst> {
        let viewer = self.sessions.viewer(headers);
        if viewer.may_read() {
            return Ok(viewer);
        }
        Err(SignInFirst {
            fragment: headers.contains_key("x-switchyard-fragment"),
        })
    }
}

/// A page asked for by someone who must sign in first: the page's script
/// gets a 401 (and goes to the login page), a browser the login page.
struct SignInFirst {
    fragment: bool,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        if self.fragment {
            (StatusCode::UNAUTHORIZED, "sign in again").into_response()
        } else {
            redirect("/ui/login")
        }
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

async fn services(
    State(ui): Shared,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let viewer = match ui.reader(&headers) {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    let page = query.page.unwrap_or(1);
    let list = pages::service_list(ui.state().await, query.q.trim(), page, now_ms());
    ui.render(
        &headers,
        &viewer,
        ("Services", "services.html"),
        false,
        list,
    )
}

async fn service(State(ui): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let viewer = match ui.reader(&headers) {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    let may_deploy = ui.sessions.may_deploy(&viewer, &name);
    match pages::service_page(ui.state().await, &name, now_ms()) {
        Some(page) => ui.render(&headers, &viewer, (&name, "service.html"), may_deploy, page),
        None => {
            let missing = serde_json::json!({ "missing": name });
            let mut response =
                ui.render(&headers, &viewer, (&name, "service.html"), false, missing);
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

async fn proxies(State(ui): Shared, headers: HeaderMap) -> Response {
    let viewer = match ui.reader(&headers) {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    let (revision, rows) = pages::proxy_rows(ui.state().await, now_ms());
    let data = serde_json::json!({ "revision": revision, "proxies": rows });
    ui.render(&headers, &viewer, ("Proxies", "proxies.html"), false, data)
}

async fn login_page(State(ui): Shared, headers: HeaderMap) -> Response {
    login_form(&ui, &headers, "")
}

/// The sign-in page with a fresh nonce cookie and the CSRF token its form
/// must send back, saying `error` when there is one.
fn login_form(ui: &Ui, headers: &HeaderMap, error: &str) -> Response {
    let viewer = ui.sessions.viewer(headers);
    let Some((nonce, csrf)) = ui.sessions.login_form() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no random bytes: try again",
        )
            .into_response();
    };
    let data = serde_json::json!({ "error": error, "login_csrf": csrf });
    let mut response = ui.render(headers, &viewer, ("Sign in", "login.html"), false, data);
    if let Some(cookie) = session::Sessions::login_cookie(&nonce) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

/// How long the event stream gathers changes before it tells the page: a
/// burst of registrations makes one reload, not hundreds.
const COALESCE: Duration = Duration::from_millis(100);

/// `change` events, each carrying the state's version, as the state changes.
async fn events(State(ui): Shared, headers: HeaderMap) -> Response {
    if !ui.sessions.viewer(&headers).may_read() {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    let changes = ui.state().await.changes();
    let stream = futures::stream::unfold(changes, |mut changes| async move {
        changes.changed().await.ok()?;
        tokio::time::sleep(COALESCE).await;
        let version = *changes.borrow_and_update();
        let event = Event::default().event("change").data(version.to_string());
        Some((Ok::<_, Infallible>(event), changes))
    })
    .take_until(ui.stop.clone().cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (
            include_str!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (include_str!("assets/style.css"), "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut response = ([(CONTENT_TYPE, kind)], body).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An HTML answer with the headers that keep it to itself: no scripts,
/// styles or frames from elsewhere, no guessing of content types.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

/// `to`, setting the session cookie to `cookie`.
fn redirect_with_cookie(to: &'static str, cookie: HeaderValue) -> Response {
    let mut response = redirect(to);
    response.headers_mut().insert(SET_COOKIE, cookie);
    response
}
use switchyard_model::clock::now_ms;
