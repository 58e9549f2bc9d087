//! Tokens: a role (and a node, proxy or service globs it is bound to) behind
//! a secret. The store keeps only the secret's SHA-256 under `x/tk/` with
//! the token's public description; the secret itself is shown once, when
//! the token is made.

use serde::{Deserialize, Serialize};
use switchyard_model::auth::{NewToken, Role, TokenInfo};
use switchyard_model::{ValidationError, validate};

use super::{Catalog, CatalogError, keys, now_ms, put, to_json};
use crate::store::{Op, Txn};

/// A token as stored: its description and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub info: TokenInfo,
    /// Hex SHA-256 of the secret.
    pub hash: String,
}

/// The prefix every token string starts with, so scanners and people can
/// tell one apart.
pub const TOKEN_PREFIX: &str = "syt_";

/// Hex SHA-256 of `secret`.
pub fn hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    hex(digest.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Splits `syt_ACCESSOR_SECRET` into its accessor and secret.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (accessor, secret) = rest.split_once('_')?;
    (accessor.len() == 16 && secret.len() == 64).then_some((accessor, secret))
}

/// A fresh token string: `syt_` + 8 random bytes of accessor + 32 random
/// bytes of secret, in hex.
pub fn generate() -> String {
    let accessor = hex(&rand::random::<[u8; 8]>());
    let secret = hex(&rand::random::<[u8; 32]>());
    format!("{TOKEN_PREFIX}{accessor}_{secret}")
}

/// A binding names one node or proxy id, or a glob of them (`*` for any).
fn validate_binding(new: &NewToken) -> Result<(), ValidationError> {
    match &new.binding {
        // `*` is the glob's only special character; the rest is an id.
        Some(binding) => validate::identifier("binding", &binding.replace('*', "x")),
        None if matches!(new.role, Role::Agent | Role::Proxy) => Err(ValidationError::new(
            "binding",
            format!(
                "a {} token is bound to one {}: give it",
                new.role.as_str(),
                if new.role == Role::Agent {
                    "node (--node)"
                } else {
                    "proxy id (--proxy)"
                }
            ),
        )),
        None => Ok(()),
    }
}

impl Catalog {
    /// Makes a token; answers its description and the whole token string,
    /// which is never stored.
    pub async fn create_token(&self, new: NewToken) -> Result<(TokenInfo, String), CatalogError> {
        let token = generate();
        let info = self.import_token(new, &token).await?;
        Ok((info, token))
    }

    /// Stores `token`, a string made elsewhere (`generate`'s format), with
    /// the role and binding of `new`: how a token handed out beforehand as
    /// a Docker secret becomes valid.
    pub async fn import_token(
        &self,
        new: NewToken,
        token: &str,
    ) -> Result<TokenInfo, CatalogError> {
        validate_binding(&new)?;
        for glob in &new.services {
            validate::text("services", glob, validate::MAX_TAG_LEN, false)?;
        }
        validate::text(
            "description",
            &new.description,
            validate::MAX_TEXT_LEN,
            false,
        )?;
        let (accessor, secret) = parse(token)
            .filter(|(accessor, secret)| is_hex(accessor) && is_hex(secret))
            .ok_or_else(|| {
                ValidationError::new(
                    "token",
                    "not a token: syt_ followed by 16 and 64 hex digits joined by _",
                )
            })?;
        let now = now_ms();
        let info = TokenInfo {
            accessor: accessor.to_string(),
            role: new.role,
            binding: new.binding,
            services: new.services,
            description: new.description,
            created_at_ms: now,
            expires_at_ms: if new.ttl_seconds == 0 {
                0
            } else {
                now.saturating_add(new.ttl_seconds.saturating_mul(1000))
            },
        };
        let stored = StoredToken {
            info: info.clone(),
            hash: hash(secret),
        };
        let txn = Txn {
            success: vec![put(keys::token(accessor), to_json(&stored)?, None)],
            ..Txn::default()
        };
        self.store().txn(txn).await?;
        Ok(info)
    }

    /// Whether this registry's first tokens were made (on any start).
    pub async fn bootstrapped(&self) -> Result<bool, CatalogError> {
        Ok(self.get_one(keys::BOOTSTRAPPED.to_vec()).await?.is_some())
    }

    /// Notes that the first tokens were made, so the files they came from
    /// are never read again (they may hold tokens revoked since).
    pub async fn mark_bootstrapped(&self) -> Result<(), CatalogError> {
        let txn = Txn {
            success: vec![put(
                keys::BOOTSTRAPPED.to_vec(),
                now_ms().to_string().into_bytes(),
                None,
            )],
            ..Txn::default()
        };
        self.store().txn(txn).await?;
        Ok(())
    }

    /// Every token as stored, and the revision read at.
    pub async fn stored_tokens(&self) -> Result<(u64, Vec<StoredToken>), CatalogError> {
        self.read_records(keys::TOKENS).await
    }

    /// Removes a token; every replica refuses it once its watch sees this.
    pub async fn revoke_token(&self, accessor: &str) -> Result<u64, CatalogError> {
        validate::identifier("accessor", accessor)?;
        let key = keys::token(accessor);
        let (_, mut results) = self.read(vec![Op::Get { key: key.clone() }]).await?;
        if results.get()?.is_none() {
            return Err(CatalogError::not_found(
                format!("token {accessor}"),
                "list tokens with `cdctl token list`",
            ));
        }
        let txn = Txn {
            success: vec![Op::Delete { key }],
            ..Txn::default()
        };
        Ok(self.store().txn(txn).await?.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_strings_split_into_accessor_and_secret() {
        let token = format!("{TOKEN_PREFIX}{}_{}", "a".repeat(16), "b".repeat(64));
        assert_eq!(
            parse(&token),
            Some(("a".repeat(16).as_str(), "b".repeat(64).as_str()))
        );
        for bad in ["", "syt_", "syt_abc_def", "Bearer x", &token[1..]] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(hash("x").len(), 64);
        let made = generate();
        let (accessor, secret) = parse(&made).expect("a generated token parses");
        assert!(is_hex(accessor) && is_hex(secret), "{made}");
    }
}
