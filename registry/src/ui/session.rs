//! Who is looking at the dashboard, and the proof that a form came from
//! one of its own pages.
//!
//! With `--auth` on, a person signs in with a token; it is kept in an
//! `HttpOnly`, `SameSite=Strict` cookie (scripts on the page cannot read
//! it; other sites cannot send it) and checked on every request by the same
//! [`Authorizer`] as gRPC calls, so revoking the token ends the session at
//! once. Every form carries a CSRF token, an HMAC of the session's token
//! under a key this process drew at start: nothing to store, and a page
//! from another origin cannot compute it. Without `--auth` there is nobody
//! to sign in and the dashboard is read-only.

use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderValue};
use ring::hmac;
use switchyard_model::auth::{Action, Principal};

use crate::auth::Authorizer;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "switchyard_session";
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
        token: String,
        csrf: String,
    },
}

impl Viewer {
    /// May this viewer read the pages?
    pub fn may_read(&self) -> bool {
        !matches!(self, Viewer::Anonymous)
    }
}

/// The dashboard's sessions: the authorizer and the CSRF key.
pub struct Sessions {
    auth: Authorizer,
    key: hmac::Key,
}

impl Sessions {
    pub fn new(auth: Authorizer) -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        Ok(Sessions { auth, key })
    }

    pub fn auth(&self) -> &Authorizer {
        &self.auth
    }

    /// Who sent `headers`.
    pub fn viewer(&self, headers: &HeaderMap) -> Viewer {
        if !self.auth.enabled() {
            return Viewer::Open;
        }
        let Some(token) = cookie(headers, COOKIE_NAME) else {
            return Viewer::Anonymous;
        };
        match self.auth.token_principal(token) {
            Ok(principal) => Viewer::Signed {
                principal,
                csrf: self.csrf(token),
                token: token.to_string(),
            },
            Err(_) => Viewer::Anonymous,
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

    fn csrf(&self, token: &str) -> String {
        hex(hmac::sign(&self.key, token.as_bytes()).as_ref())
    }

    /// Whether `presented` is the CSRF token of the session `token`
    /// (compared in constant time).
    pub fn csrf_matches(&self, token: &str, presented: &str) -> bool {
        unhex(presented).is_some_and(|tag| hmac::verify(&self.key, token.as_bytes(), &tag).is_ok())
    }

    /// The `Set-Cookie` value that signs `token` in.
    pub fn sign_in_cookie(token: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}"
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
/// looked at, when the browser says where it came from.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
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
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:7402"));
        assert!(same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&headers));
    }
}
