//! Who is looking at the dashboard, and the proof that a form came from
//! one of its own pages.
//!
//! With `--auth` on, a person signs in with a token; the browser gets a
//! random session id in an `HttpOnly`, `SameSite=Strict` cookie (scripts on
//! the page cannot read it; other sites cannot send it), never the token:
//! a stolen cookie is no API credential, and signing out ends the session
//! here, not only in that browser. The token stays in this process's memory
//! and is checked on every request by the same [`Authorizer`] as gRPC
//! calls, so revoking it ends the session at once. Every form carries a
//! CSRF token, an HMAC of the session id under a key this process drew at
//! start; the login form one of a nonce cookie of its own, so a page from
//! another origin can neither post a form nor sign a browser in. Without
//! `--auth` there is nobody to sign in and the dashboard is read-only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderValue};
use ring::hmac;
use ring::rand::SecureRandom;
use switchyard_model::auth::{Action, Principal};

use crate::auth::Authorizer;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "switchyard_session";
/// The login form's nonce cookie.
const LOGIN_COOKIE: &str = "switchyard_login";
/// Sessions kept at most; past it the one closest to expiry goes.
const MAX_SESSIONS: usize = 10_000;
/// How long a sign-in lasts in the browser (the token's own expiry and
/// revocation end it sooner).
const SESSION_SECONDS: u32 = 12 * 3600;

/// Who is looking.
#[derive(Debug)]
pub enum Viewer {
    /// `--auth` is off: everyone reads, nobody acts.
    Open,
    /// `--auth` is on and nobody (valid) signed in.
    Anonymous,
    /// Signed in with a valid token.
    Signed {
        principal: Principal,
        /// The session's id (the cookie's value).
        session: String,
        csrf: String,
    },
}

impl Viewer {
    /// May this viewer read the pages?
    pub fn may_read(&self) -> bool {
        !matches!(self, Viewer::Anonymous)
    }
}

/// One signed-in browser: the token it signed in with, until when.
struct Live {
    token: String,
    expires: Instant,
}

/// The dashboard's sessions: the authorizer, the CSRF key and who is
/// signed in.
pub struct Sessions {
    auth: Authorizer,
    key: hmac::Key,
    rng: ring::rand::SystemRandom,
    live: Mutex<HashMap<String, Live>>,
}

impl Sessions {
    pub fn new(auth: Authorizer) -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        Ok(Sessions {
            auth,
            key,
            rng,
            live: Mutex::default(),
        })
    }

    /// 32 random bytes in hex (a session id, a login nonce).
    fn random_id(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        self.rng.fill(&mut bytes).ok()?;
        Some(hex(&bytes))
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new session for `token` when it is valid: its id.
    pub fn sign_in(&self, token: &str) -> Option<String> {
        self.auth.token_principal(token).ok()?;
        let id = self.random_id()?;
        let now = Instant::now();
        let mut live = self.live();
        live.retain(|_, session| session.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        let expires = now + Duration::from_secs(u64::from(SESSION_SECONDS));
        live.insert(
            id.clone(),
            Live {
                token: token.to_string(),
                expires,
            },
        );
        Some(id)
    }

    /// Ends session `id` here (its cookie then names nothing).
    pub fn sign_out(&self, id: &str) {
        self.live().remove(id);
    }

    /// A login nonce and the CSRF token its form carries.
    pub fn login_form(&self) -> Option<(String, String)> {
        let nonce = self.random_id()?;
        let csrf = self.csrf(&format!("login:{nonce}"));
        Some((nonce, csrf))
    }

    /// Whether a login form's `csrf` belongs to the nonce cookie `headers`
    /// carry, from a page of this origin.
    pub fn login_allowed(&self, headers: &HeaderMap, csrf: &str) -> bool {
        same_origin(headers)
            && cookie(headers, LOGIN_COOKIE)
                .is_some_and(|nonce| self.csrf_matches(&format!("login:{nonce}"), csrf))
    }

    /// The `Set-Cookie` value of a login form's nonce.
    pub fn login_cookie(nonce: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{LOGIN_COOKIE}={nonce}; HttpOnly; SameSite=Strict; Path=/ui/login; Max-Age=3600"
        ))
        .ok()
    }

    pub fn auth(&self) -> &Authorizer {
        &self.auth
    }

    /// Who sent `headers`.
    pub fn viewer(&self, headers: &HeaderMap) -> Viewer {
        if !self.auth.enabled() {
            return Viewer::Open;
        }
        let Some(id) = cookie(headers, COOKIE_NAME) else {
            return Viewer::Anonymous;
        };
        let token = match self.live().get(id) {
            Some(session) if session.expires > Instant::now() => session.token.clone(),
            _ => return Viewer::Anonymous,
        };
        match self.auth.token_principal(&token) {
            Ok(principal) => Viewer::Signed {
                principal,
                csrf: self.csrf(id),
                session: id.to_string(),
            },
            Err(_) => {
                self.sign_out(id);
                Viewer::Anonymous
            }
        }
    }

    /// Whether `viewer` may act on `service` (the buttons shown).
    pub fn may_deploy(&self, viewer: &Viewer, service: &str) -> bool {
        match viewer {
            Viewer::Signed { principal, .. } => {
                self.auth.permits(principal, Action::Deploy { service })
            }
            Viewer::Open | Viewer::Anonymous => false,
        }
    }

    fn csrf(&self, session: &str) -> String {
        hex(hmac::sign(&self.key, session.as_bytes()).as_ref())
    }

    /// Whether `presented` is the CSRF token of session `session`
    /// (compared in constant time).
    pub fn csrf_matches(&self, session: &str, presented: &str) -> bool {
        unhex(presented)
            .is_some_and(|tag| hmac::verify(&self.key, session.as_bytes(), &tag).is_ok())
    }

    /// The `Set-Cookie` value that holds session `id`.
    pub fn sign_in_cookie(id: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{COOKIE_NAME}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}"
        ))
        .ok()
    }

    /// The `Set-Cookie` value that signs out.
    pub fn sign_out_cookie() -> HeaderValue {
        HeaderValue::from_static(
            "switchyard_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        )
    }
}

/// A form from another origin is refused even before its CSRF token is
/// looked at, when the browser says where it came from. `null` says
/// nothing (a plain form under the pages' `Referrer-Policy: no-referrer`
/// is sent with it): the CSRF token decides.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|origin| *origin != "null")
    else {
        return true;
    };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_some() && origin_host == host
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; switchyard_session=syt_x_y; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE_NAME), Some("syt_x_y"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn a_csrf_token_proves_only_its_own_session() -> anyhow::Result<()> {
        let sessions = Sessions::new(Authorizer::disabled())?;
        let csrf = sessions.csrf("syt_one");
        assert!(sessions.csrf_matches("syt_one", &csrf));
        assert!(!sessions.csrf_matches("syt_two", &csrf));
        assert!(!sessions.csrf_matches("syt_one", ""));
        assert!(!sessions.csrf_matches("syt_one", "zz"));
        Ok(())
    }

    #[test]
    fn a_form_from_another_origin_is_told_apart() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:7402"));
        assert!(same_origin(&headers), "no Origin: the CSRF token decides");
        headers.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(
            same_origin(&headers),
            "an opaque origin says nothing either"
        );
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:7402"));
        assert!(same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&headers));
    }
}
