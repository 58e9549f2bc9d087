//! The first tokens of a registry with `--auth`: the bootstrap admin token
//! (made and written to a file, or read from one made beforehand) and
//! seeded tokens read from files, so that a Swarm stack can hand agents
//! and proxies their tokens as Docker secrets before the registry runs.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use switchyard_model::auth::{NewToken, Role};

use crate::catalog::Catalog;

/// `--seed-token ROLE[:BINDING]=FILE`: a token made beforehand (its string
/// in FILE) that the registry accepts with that role from its first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedToken {
    pub role: Role,
    pub binding: Option<String>,
    pub file: PathBuf,
}

impl FromStr for SeedToken {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "{spec:?}: write ROLE[:BINDING]=FILE, e.g. agent:*=/run/secrets/agent_token \
                 or proxy:proxy-*=/run/secrets/proxy_token"
            )
        };
        let (who, file) = spec.split_once('=').ok_or_else(usage)?;
        let (role, binding) = match who.split_once(':') {
            Some((role, binding)) => (role, Some(binding.to_string())),
            None => (who, None),
        };
        let role = Role::parse(role).map_err(|_| usage())?;
        if file.is_empty() {
            return Err(usage());
        }
        Ok(SeedToken {
            role,
            binding,
            file: PathBuf::from(file),
        })
    }
}

/// With `--auth`, on first start (no admin token exists yet): the admin
/// token of `admin_file` (read when the file holds one, else made and
/// written there, mode 0600), then every seed, and a note in the store
/// that this was done. Later starts change nothing, so a revoked token
/// stays revoked, even when every admin token was revoked: then only
/// `anew` (`--bootstrap-anew`) makes a new admin token, into an empty file.
pub async fn bootstrap(
    catalog: &Catalog,
    admin_file: Option<&Path>,
    seeds: &[SeedToken],
    anew: bool,
) -> anyhow::Result<()> {
    let (_, tokens) = catalog.stored_tokens().await?;
    let bootstrapped = catalog.bootstrapped().await?;
    if tokens.iter().any(|token| token.info.role == Role::Admin) {
        if !bootstrapped {
            // Bootstrapped before the note existed.
            catalog.mark_bootstrapped().await?;
        }
        return Ok(());
    }
    if bootstrapped {
        return again(catalog, admin_file, anew).await;
    }
    let Some(admin_file) = admin_file else {
        tracing::warn!(
            "--auth is on and no admin token exists: start once with --bootstrap-token-file FILE"
        );
        return Ok(());
    };
    for seed in seeds {
        let token = read_token(&seed.file)?.with_context(|| {
            format!(
                "--seed-token: {} is empty; put a token in it (README \"Security\" shows how \
                 to make one)",
                seed.file.display()
            )
        })?;
        let new = NewToken {
            role: seed.role,
            binding: seed.binding.clone(),
            services: Vec::new(),
            description: format!("seeded from {}", seed.file.display()),
            ttl_seconds: 0,
        };
        let info = catalog
            .import_token(new, &token)
            .await
            .with_context(|| format!("seeding the token of {}", seed.file.display()))?;
        tracing::info!(accessor = %info.accessor, role = info.role.as_str(), file = %seed.file.display(), "token seeded");
    }
    admin(catalog, admin_file).await?;
    catalog.mark_bootstrapped().await?;
    Ok(())
}

/// Every admin token was revoked after the first start: the files are not
/// read again (they hold the revoked tokens); with `anew`, a new admin
/// token is made into `admin_file`, which must be missing or empty.
async fn again(catalog: &Catalog, admin_file: Option<&Path>, anew: bool) -> anyhow::Result<()> {
    let Some(admin_file) = admin_file.filter(|_| anew) else {
        tracing::warn!(
            "no admin token is left (every one was revoked); the bootstrap and seed files are \
             not read again. To make a new admin token, empty --bootstrap-token-file and \
             start once with --bootstrap-anew"
        );
        return Ok(());
    };
    anyhow::ensure!(
        read_token(admin_file)?.is_none(),
        "--bootstrap-anew makes a new admin token into {}, which still holds one (perhaps a \
         revoked one): empty it first",
        admin_file.display()
    );
    admin(catalog, admin_file).await
}

async fn admin(catalog: &Catalog, file: &Path) -> anyhow::Result<()> {
    let new = NewToken {
        role: Role::Admin,
        binding: None,
        services: Vec::new(),
        description: "bootstrap".into(),
        ttl_seconds: 0,
    };
    if let Some(token) = read_token(file)? {
        let info = catalog
            .import_token(new, &token)
            .await
            .with_context(|| format!("taking the bootstrap token of {}", file.display()))?;
        tracing::info!(accessor = %info.accessor, file = %file.display(), "bootstrap admin token read");
        return Ok(());
    }
    let (info, secret) = catalog.create_token(new).await?;
    write_secret(file, &secret)
        .with_context(|| format!("writing the bootstrap token to {}", file.display()))?;
    tracing::info!(accessor = %info.accessor, file = %file.display(), "bootstrap admin token written");
    Ok(())
}

/// The token in `file`; `None` when the file is missing or empty.
fn read_token(file: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", file.display())),
    }
}

fn write_secret(file: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)?;
    writeln!(out, "{secret}")?;
    out.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_specs_parse_or_say_how_to_write_them() {
        let seed: SeedToken = "agent:*=/run/secrets/agent".parse().expect("agent");
        assert_eq!(seed.role, Role::Agent);
        assert_eq!(seed.binding.as_deref(), Some("*"));
        assert_eq!(seed.file, PathBuf::from("/run/secrets/agent"));
        let reader: SeedToken = "reader=/tmp/r".parse().expect("reader");
        assert_eq!((reader.role, reader.binding), (Role::Reader, None));
        for bad in ["agent", "wizard=/x", "agent:n1=", "=/x"] {
            let error = bad.parse::<SeedToken>().expect_err(bad);
            assert!(error.contains("ROLE[:BINDING]=FILE"), "{error}");
        }
    }
}
