//! Authorization, decided here and only here, before the catalog does
//! anything: who the caller is (a bearer token, or nobody) and whether the
//! decision table (`switchyard_model::auth::allowed`) lets that role touch
//! what the request touches. With `--auth` off every caller may do
//! everything, as before.
//!
//! Tokens are checked against an in-memory copy of the stored ones, kept
//! current by a watch of their keys: a revoked token is refused as soon as
//! each replica's watch delivers the revocation (milliseconds), without a
//! store read per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use switchyard_model::auth::{Action, Principal, Role, allowed};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::catalog::tokens::{self, StoredToken};
use crate::catalog::{Catalog, keys};
use crate::connection::Peer;

/// Longest `authorization` value looked at.
const MAX_CREDENTIAL_BYTES: usize = 1024;

/// The registry's authorizer. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    enabled: bool,
    tokens: Arc<RwLock<HashMap<String, StoredToken>>>,
    refusals: Arc<RefusalLog>,
    /// Bumped each time the copy of the tokens is replaced: what open
    /// streams wait on to learn that their token went.
    reloads: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Refused calls are logged at most once a second, with how many were
/// refused since: a client retrying a bad token cannot flood the log.
#[derive(Default)]
struct RefusalLog {
    last_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl RefusalLog {
    fn note(&self, principal: &str, refusal: &str) {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000
            || self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            principal,
            refused_since_last_line = before,
            "call refused: {refusal}"
        );
    }
}

impl Authorizer {
    /// Everyone may do everything (`--auth` off).
    pub fn disabled() -> Self {
        Authorizer {
            enabled: false,
            tokens: Arc::default(),
            refusals: Arc::default(),
            reloads: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Loads the tokens and follows their changes until `stop`.
    pub async fn start(catalog: Catalog, stop: CancellationToken) -> anyhow::Result<Self> {
        let authorizer = Authorizer {
            enabled: true,
            tokens: Arc::default(),
            refusals: Arc::default(),
            reloads: Arc::new(tokio::sync::watch::Sender::new(0)),
        };
        let revision = authorizer.reload(&catalog).await?;
        tokio::spawn(authorizer.clone().follow(catalog, revision, stop));
        Ok(authorizer)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Who is calling: the bearer token when there is one, else the SPIFFE
    /// identity of the client certificate (`peer`); `UNAUTHENTICATED`
    /// without either.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<&Peer>,
    ) -> Result<Principal, Status> {
        if !self.enabled {
            return Ok(Principal::anonymous_admin());
        }
        let certified = || peer.and_then(certificate_identity);
        let principal = match metadata.get("authorization") {
            None => certified().ok_or_else(no_credential),
            Some(_) => self.credential(metadata),
        };
        principal.inspect_err(|status| {
            self.refusals.note("unauthenticated", status.message());
        })
    }

    fn credential(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        self.token_principal(bearer(metadata)?)
    }

    /// Who `token` is (the dashboard's session cookie holds one):
    /// `UNAUTHENTICATED` when it is not a valid token.
    pub fn token_principal(&self, token: &str) -> Result<Principal, Status> {
        if token.len() > MAX_CREDENTIAL_BYTES {
            return Err(Status::unauthenticated("the token is too long to be one"));
        }
        let refused = || {
            Status::unauthenticated(
                "the token is not valid: it was revoked, has expired or never existed",
            )
        };
        let (accessor, secret) = tokens::parse(token).ok_or_else(refused)?;
        let stored = match self.tokens.read() {
            Ok(tokens) => tokens.get(accessor).cloned(),
            Err(poisoned) => poisoned.into_inner().get(accessor).cloned(),
        }
        .ok_or_else(refused)?;
        if !constant_time_eq(stored.hash.as_bytes(), tokens::hash(secret).as_bytes()) {
            return Err(refused());
        }
        let expires = stored.info.expires_at_ms;
        if expires != 0 && expires <= now_ms() {
            return Err(refused());
        }
        Ok(Principal {
            role: stored.info.role,
            binding: stored.info.binding.clone(),
            services: stored.info.services.clone(),
            name: format!(
                "token {} ({})",
                stored.info.accessor, stored.info.description
            ),
            token: Some(stored.info.accessor.clone()),
        })
    }

    /// Resolves when the token `principal` was authenticated by is revoked
    /// or expires: what ends the streams it opened (a KeepAlive, a watch),
    /// which would otherwise outlive it. `None` when nothing can revoke it
    /// (a certificate, or no `--auth`).
    pub fn revoked(
        &self,
        principal: &Principal,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let accessor = principal.token.clone().filter(|_| self.enabled)?;
        let tokens = Arc::clone(&self.tokens);
        let mut reloads = self.reloads.subscribe();
        Some(async move {
            loop {
                let expires_at_ms = {
                    let tokens = match tokens.read() {
                        Ok(tokens) => tokens,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    match tokens.get(&accessor) {
                        None => return,
                        Some(stored) => stored.info.expires_at_ms,
                    }
                };
                let expiry = async {
                    if expires_at_ms == 0 {
                        return std::future::pending().await;
                    }
                    let left = expires_at_ms.saturating_sub(now_ms());
                    tokio::time::sleep(Duration::from_millis(left)).await;
                };
                tokio::select! {
                    changed = reloads.changed() => {
                        if changed.is_err() {
                            // The authorizer is gone with the server.
                            return std::future::pending().await;
                        }
                    }
                    () = expiry => return,
                }
            }
        })
    }

    /// Whether `principal` may do `action`: `PERMISSION_DENIED` naming the
    /// role and what it lacks, logged.
    pub fn allow(&self, principal: &Principal, action: Action<'_>) -> Result<(), Status> {
        allowed(principal, action).map_err(|refusal| {
            self.refusals.note(&principal.name, &refusal);
            Status::permission_denied(refusal)
        })
    }

    /// Whether `principal` may do `action`, quietly: what a page may offer
    /// (the action itself still goes through [`Authorizer::allow`]).
    pub fn permits(&self, principal: &Principal, action: Action<'_>) -> bool {
        allowed(principal, action).is_ok()
    }

    /// Reads the tokens again now: after this replica made or revoked one,
    /// so its own answer holds before the watch catches up.
    pub async fn refresh(&self, catalog: &Catalog) {
        if self.enabled
            && let Err(error) = self.reload(catalog).await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot reload tokens; the watch will"
            );
        }
    }

    /// Replaces the copy of the tokens; answers the revision read at.
    async fn reload(&self, catalog: &Catalog) -> anyhow::Result<u64> {
        let (revision, stored) = catalog.stored_tokens().await?;
        let fresh: HashMap<String, StoredToken> = stored
            .into_iter()
            .map(|token| (token.info.accessor.clone(), token))
            .collect();
        match self.tokens.write() {
            Ok(mut tokens) => *tokens = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        self.reloads.send_modify(|count| *count += 1);
        Ok(revision)
    }

    /// Reloads on every change of a token key; after a broken watch,
    /// reloads and watches again.
    async fn follow(self, catalog: Catalog, mut revision: u64, stop: CancellationToken) {
        loop {
            let watch = catalog
                .store()
                .watch(keys::TOKENS.to_vec(), revision, Duration::from_secs(5))
                .await;
            if let Ok(mut stream) = watch {
                loop {
                    let item = tokio::select! {
                        item = stream.next() => item,
                        () = stop.cancelled() => return,
                    };
                    match item {
                        Some(Ok(crate::store::WatchItem::Events { .. })) => {
                            if let Ok(at) = self.reload(&catalog).await {
                                revision = at;
                            }
                        }
                        Some(Ok(crate::store::WatchItem::Progress { .. })) => {}
                        Some(Err(_)) | None => break,
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = stop.cancelled() => return,
            }
            match self.reload(&catalog).await {
                Ok(at) => revision = at,
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot reload tokens; retrying"
                ),
            }
        }
    }
}

fn no_credential() -> Status {
    Status::unauthenticated(
        "this registry requires a token (--token or --token-file, SWITCHYARD_TOKEN) or a \
         client certificate with a spiffe://switchyard/… identity",
    )
}

/// The identity of a verified client certificate: a URI SAN
/// `spiffe://switchyard/node/NODE` is an agent of NODE,
/// `spiffe://switchyard/proxy/ID` a proxy; never the common name.
fn certificate_identity(peer: &Peer) -> Option<Principal> {
    let leaf = peer.certificates.as_ref()?.first()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let names = certificate.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| {
        let x509_parser::extensions::GeneralName::URI(uri) = name else {
            return None;
        };
        let rest = uri.strip_prefix("spiffe://switchyard/")?;
        let (kind, id) = rest.split_once('/')?;
        let role = match kind {
            "node" => Role::Agent,
            "proxy" => Role::Proxy,
            _ => return None,
        };
        switchyard_model::validate::identifier("spiffe id", id).ok()?;
        Some(Principal {
            role,
            binding: Some(id.to_string()),
            services: Vec::new(),
            name: format!("certificate {uri}"),
            token: None,
        })
    })
}

/// The bearer token of a request: exactly one `authorization` value, short,
/// printable, `Bearer TOKEN`.
fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
    let mut values = metadata.get_all("authorization").iter();
    let value = values.next().ok_or_else(no_credential)?;
    if values.next().is_some() {
        return Err(Status::unauthenticated(
            "more than one authorization value: send one",
        ));
    }
    let malformed = || Status::unauthenticated("authorization must be `Bearer TOKEN`");
    if value.len() > MAX_CREDENTIAL_BYTES {
        return Err(malformed());
    }
    let text = value.to_str().map_err(|_| malformed())?;
    text.strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(malformed)
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
use switchyard_model::clock::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn credentials_must_be_one_short_bearer_value() {
        let mut metadata = MetadataMap::new();
        assert_eq!(
            bearer(&metadata).map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        metadata.insert("authorization", MetadataValue::from_static("Basic abc"));
        assert!(bearer(&metadata).is_err());
        metadata.insert("authorization", MetadataValue::from_static("Bearer syt_x"));
        assert_eq!(bearer(&metadata).ok(), Some("syt_x"));
        metadata.append("authorization", MetadataValue::from_static("Bearer other"));
        assert!(bearer(&metadata).is_err(), "two values");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
