//! `--ca`, `--cert`, `--key`, `--token`, `--token-file`: how cdctl, the
//! agent and the bench reach a registry, as clap arguments each binary
//! flattens into its own (behind the feature `clap`, which those binaries
//! turn on).

use clap::Args;

/// How cdctl and the agent reach the registry: TLS material for an
/// `https://` registry (`--ca`, `--cert`, `--key`, PEM files) and a token
/// (`--token`, `--token-file`); each also from a `SWITCHYARD_*` variable.
#[derive(Debug, Clone, Args)]
pub struct ClientAccessArgs {
    /// PEM CA certificates the registry's certificate must chain to
    /// (default: the system's roots).
    #[arg(long, global = true, env = "SWITCHYARD_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for registries that require one (with --key).
    #[arg(long, global = true, env = "SWITCHYARD_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, global = true, env = "SWITCHYARD_KEY")]
    pub key: Option<std::path::PathBuf>,
    /// Token for a registry with --auth (prefer --token-file: a flag shows
    /// in process lists).
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File whose first line is the token (e.g. a Docker secret).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<std::path::PathBuf>,
}

impl ClientAccessArgs {
    /// The client options these flags describe.
    pub fn client_options(
        &self,
        timeout: std::time::Duration,
    ) -> Result<crate::ClientOptions, crate::ClientError> {
        let tls = crate::ClientTls::from_files(
            self.ca.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
        )?;
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(file)) => Some(crate::read_token_file(file)?),
            (None, None) => None,
        };
        Ok(crate::ClientOptions {
            timeout,
            tls,
            token,
        })
    }
}
