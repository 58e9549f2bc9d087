//! Command-line flags (each also from a `SWITCHYARD_*` environment variable),
//! validated into the typed [`ServerConfig`] that tests build directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use switchyard_model::duration::parse_duration;

use crate::server::{Limits, ServerConfig, StoreChoice};
use crate::store::defaults;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// Embedded sled database in --data-dir (single node).
    Sled,
    /// An etcd cluster (--etcd-endpoints); several registries may share it.
    Etcd,
}

/// Switchyard's registry: services, their instances and each service's live color.
#[derive(Debug, Parser)]
#[command(name = "cd-registry", version, about)]
pub struct Args {
    /// Address to serve gRPC on; port 0 picks a free port (the log says which).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,

    /// Where to serve Prometheus metrics (GET /metrics); "off" disables.
    #[arg(
        long,
        env = "SWITCHYARD_METRICS_LISTEN",
        default_value = "127.0.0.1:7402"
    )]
    pub metrics_listen: String,

    /// The dashboard on the metrics listener (/ui/): auto serves it when
    /// that listener is on a loopback address; on serves it anywhere (put
    /// TLS in front of it, see the README); off never.
    #[arg(long, env = "SWITCHYARD_UI", value_enum, default_value = "auto")]
    pub ui: crate::ui::UiMode,

    /// Where to answer DNS (UDP and TCP), e.g. 127.0.0.1:8600; "off"
    /// (the default) disables it.
    #[arg(long, env = "SWITCHYARD_DNS_LISTEN", default_value = "off")]
    pub dns_listen: String,

    /// Whole DNS answers a second one source gets over UDP; over it, an
    /// empty truncated answer sends the client to TCP. 0: no limit.
    #[arg(long, env = "SWITCHYARD_DNS_RATE_LIMIT", default_value_t = 1000)]
    pub dns_rate_limit: u32,

    /// DNS-over-TCP connections one source may hold open.
    #[arg(long, env = "SWITCHYARD_DNS_TCP_CONNECTIONS_PER_SOURCE", default_value_t = crate::dns::TcpLimits::default().per_source)]
    pub dns_tcp_connections_per_source: usize,

    /// How long a DNS-over-TCP connection may wait for its next query.
    #[arg(long, env = "SWITCHYARD_DNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub dns_tcp_idle_timeout: Duration,

    /// The zone DNS answers for: SERVICE.service.ZONE and so on.
    #[arg(long, env = "SWITCHYARD_DNS_DOMAIN", default_value = "switchyard.")]
    pub dns_domain: String,

    /// TTL of DNS answers, negative ones included (whole seconds).
    #[arg(long, env = "SWITCHYARD_DNS_TTL", default_value = "1s", value_parser = parse_duration)]
    pub dns_ttl: Duration,

    /// Services with series of their own in the metrics; the rest are summed
    /// under service="_other".
    #[arg(long, env = "SWITCHYARD_METRICS_MAX_SERVICES", default_value_t = crate::metrics::DEFAULT_MAX_SERVICES)]
    pub metrics_max_services: usize,

    /// Where the embedded store keeps its data.
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./switchyard-data")]
    pub data_dir: PathBuf,

    /// Storage backend.
    #[arg(long, env = "SWITCHYARD_STORE", value_enum, default_value = "sled")]
    pub store: StoreKind,

    /// etcd client URLs, comma-separated (with --store etcd).
    #[arg(
        long,
        env = "SWITCHYARD_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// PEM CA of etcd's certificate (https:// endpoints).
    #[arg(long, env = "SWITCHYARD_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd (with --etcd-key).
    #[arg(long, env = "SWITCHYARD_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM key of --etcd-cert.
    #[arg(long, env = "SWITCHYARD_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, for an etcd with `auth enable` (with --etcd-password-file).
    #[arg(long, env = "SWITCHYARD_ETCD_USER", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (e.g. a Docker secret).
    #[arg(long, env = "SWITCHYARD_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,

    #[command(flatten)]
    pub logging: switchyard_program::LogArgs,

    /// Revisions of watch history kept, so watchers can resume after a gap.
    #[arg(long, env = "SWITCHYARD_HISTORY_REVISIONS", default_value_t = defaults::HISTORY_REVISIONS)]
    pub history_revisions: u64,

    /// Recent revisions kept in memory for watchers (at most 16 MiB of them)
    /// before a slow watcher falls back to reading history.
    #[arg(long, env = "SWITCHYARD_WATCH_BUFFER", default_value_t = defaults::WATCH_BUFFER)]
    pub watch_buffer: usize,

    /// sled's page cache in MiB (the embedded store). Reads never use it
    /// (they are served from memory); writes and history catch-up do.
    #[arg(long, env = "SWITCHYARD_SLED_CACHE_MIB", default_value_t = defaults::SLED_CACHE_MIB)]
    pub sled_cache_mib: u64,

    /// How often idle watch streams get a progress message.
    #[arg(long, env = "SWITCHYARD_PROGRESS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub progress_interval: Duration,

    /// A proxy that has not reported for this long is forgotten (its
    /// report removed): proxies that come and go do not pile up.
    #[arg(long, env = "SWITCHYARD_FORGET_PROXIES_AFTER", default_value = "24h", value_parser = parse_duration)]
    pub forget_proxies_after: Duration,

    /// How long shutdown waits for clients to finish before closing them.
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Require a token (or, later, a client certificate identity) on every
    /// call, checked against its role (README "Security").
    #[arg(long, env = "SWITCHYARD_AUTH")]
    pub auth: bool,

    /// Listen on a non-loopback address without --auth. Anyone who reaches
    /// the port may then rewrite where traffic goes: only on a network you
    /// trust entirely.
    #[arg(long, env = "SWITCHYARD_INSECURE")]
    pub insecure: bool,

    /// With --auth: on first start, the admin token. Read from this file
    /// when it holds one (a Docker secret made beforehand), else made and
    /// written to it (mode 0600).
    #[arg(long, env = "SWITCHYARD_BOOTSTRAP_TOKEN_FILE", requires = "auth")]
    pub bootstrap_token_file: Option<PathBuf>,

    /// With --auth: a token made beforehand that is valid from the first
    /// start, as ROLE[:BINDING]=FILE (e.g. agent:*=/run/secrets/agent_token).
    /// Read on first start only, with the bootstrap token. Repeatable; the
    /// environment variable takes a comma-separated list.
    #[arg(
        long = "seed-token",
        env = "SWITCHYARD_SEED_TOKENS",
        value_delimiter = ',',
        requires = "bootstrap_token_file"
    )]
    pub seed_tokens: Vec<crate::server::SeedToken>,

    /// With --auth, once every admin token was revoked: make a new admin
    /// token into --bootstrap-token-file, which must be empty (the files of
    /// the first start are never read again: they may hold revoked tokens).
    #[arg(long, requires = "bootstrap_token_file")]
    pub bootstrap_anew: bool,

    /// Print the man page (roff) and exit.
    #[arg(long)]
    pub man: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `cd-registry` can do besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Builds a new data directory from a backup (`cdctl snapshot save`),
    /// then exits; start the registry on that directory afterwards.
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to create; it must be missing or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Added to the backup's revision to make the restored registry's: it
    /// must exceed every revision the old registry reached after the
    /// backup, so that followers resuming from their old position start
    /// over instead of silently missing what changed (etcd restores the
    /// same way).
    #[arg(long, default_value_t = 1_000_000_000)]
    pub bump_revision: u64,
    /// The key the backup was signed with (`cdctl snapshot save
    /// --backup-key`); a file changed since, or signed with another key,
    /// is refused.
    #[arg(long, env = "SWITCHYARD_BACKUP_KEY_FILE")]
    pub backup_key: PathBuf,
    /// Also restore an unsigned backup (format 1, from before backups were
    /// signed), checked only by its CRC: only one you know nobody changed.
    #[arg(long)]
    pub allow_unsigned: bool,
}

/// TLS on the listener (README "Security").
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve TLS with (with --tls-key); SIGHUP
    /// re-reads it and the key without dropping connections.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates whose client certificates are verified.
    #[arg(long, env = "SWITCHYARD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM certificate revocation lists of --tls-client-ca: a client whose
    /// certificate is listed is refused. Re-read on SIGHUP, with the CA.
    #[arg(long, env = "SWITCHYARD_TLS_CLIENT_CRL", requires = "tls_client_ca")]
    pub tls_client_crl: Option<PathBuf>,
    /// Refuse clients that present no certificate signed by --tls-client-ca.
    #[arg(
        long,
        env = "SWITCHYARD_TLS_REQUIRE_CLIENT_CERT",
        requires = "tls_client_ca"
    )]
    pub tls_require_client_cert: bool,
}

impl TlsArgs {
    fn into_files(self) -> Option<crate::server::TlsFiles> {
        Some(crate::server::TlsFiles {
            cert: self.tls_cert?,
            key: self.tls_key?,
            client_ca: self.tls_client_ca,
            client_crl: self.tls_client_crl,
            require_client_cert: self.tls_require_client_cert,
        })
    }
}

/// Limits on what clients may hold (README "Limits and hardening").
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// TCP connections open at once; more are accepted and closed at once.
    /// Lowered to fit the descriptor limit (ulimit -n) when that is smaller.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,

    /// Of --max-connections, how many one source (an IPv4 address or an
    /// IPv6 /64) may hold; more from it are closed at once.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS_PER_SOURCE", default_value_t = Limits::default().max_connections_per_source)]
    pub max_connections_per_source: usize,

    /// A connection with no call or stream open this long is closed
    /// (clients reconnect on their next call).
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long a new connection may take to start HTTP/2; silent sockets
    /// are closed after it.
    #[arg(long, env = "SWITCHYARD_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Concurrent streams (calls and watches) one connection may open.
    #[arg(long, env = "SWITCHYARD_MAX_STREAMS_PER_CONNECTION", default_value_t = Limits::default().max_streams_per_connection)]
    pub max_streams_per_connection: u32,

    /// Watch streams open at once, over all connections.
    #[arg(long, env = "SWITCHYARD_MAX_WATCHERS", default_value_t = Limits::default().max_watchers)]
    pub max_watchers: usize,

    /// Of --max-watchers, how many one principal (a token, a client
    /// certificate; without --auth, everyone together) may hold.
    #[arg(long, env = "SWITCHYARD_MAX_WATCHERS_PER_PRINCIPAL", default_value_t = Limits::default().max_watchers_per_principal)]
    pub max_watchers_per_principal: usize,

    /// Connections one source may hold on the metrics and dashboard
    /// listener (--metrics-listen).
    #[arg(long, env = "SWITCHYARD_HTTP_CONNECTIONS_PER_SOURCE", default_value_t = Limits::default().http.per_source)]
    pub http_connections_per_source: usize,

    /// How long a client of the metrics and dashboard listener may take to
    /// send a request's headers, or stay idle between requests.
    #[arg(long, env = "SWITCHYARD_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// How often each connection is pinged (HTTP/2 PING).
    #[arg(long, env = "SWITCHYARD_KEEPALIVE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "SWITCHYARD_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
}

impl LimitArgs {
    fn into_limits(self) -> anyhow::Result<Limits> {
        anyhow::ensure!(
            self.max_connections > 0,
            "--max-connections must be at least 1"
        );
        anyhow::ensure!(
            self.max_streams_per_connection > 0,
            "--max-streams-per-connection must be at least 1"
        );
        anyhow::ensure!(self.max_watchers > 0, "--max-watchers must be at least 1");
        for (flag, value) in [
            (
                "--max-connections-per-source",
                self.max_connections_per_source,
            ),
            (
                "--max-watchers-per-principal",
                self.max_watchers_per_principal,
            ),
            (
                "--http-connections-per-source",
                self.http_connections_per_source,
            ),
        ] {
            anyhow::ensure!(value > 0, "{flag} must be at least 1");
        }
        for (flag, value) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--http-header-timeout", self.http_header_timeout),
            ("--keepalive-interval", self.keepalive_interval),
            ("--keepalive-timeout", self.keepalive_timeout),
        ] {
            anyhow::ensure!(!value.is_zero(), "{flag} must be longer than 0");
        }
        Ok(Limits {
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            max_streams_per_connection: self.max_streams_per_connection,
            max_watchers: self.max_watchers,
            max_watchers_per_principal: self.max_watchers_per_principal,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            http: switchyard_program::http::HttpLimits {
                per_source: self.http_connections_per_source,
                header_read_timeout: self.http_header_timeout,
                ..Default::default()
            },
        })
    }
}

impl Args {
    /// The DNS interface the flags ask for, if any.
    fn dns(&self) -> anyhow::Result<Option<crate::dns::DnsConfig>> {
        if self.dns_listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let listen = self.dns_listen.parse().map_err(|error| {
            anyhow::anyhow!(
                "--dns-listen {:?}: {error}; give ADDRESS:PORT (e.g. 127.0.0.1:8600) or off",
                self.dns_listen
            )
        })?;
        let ttl = u32::try_from(self.dns_ttl.as_secs())
            .map_err(|_| anyhow::anyhow!("--dns-ttl {:?} is too long", self.dns_ttl))?;
        let zone = crate::dns::Zone::new(&self.dns_domain, ttl).map_err(anyhow::Error::msg)?;
        Ok(Some(crate::dns::DnsConfig {
            listen,
            zone,
            tcp: crate::dns::TcpLimits {
                per_source: self.dns_tcp_connections_per_source,
                idle: self.dns_tcp_idle_timeout,
                ..Default::default()
            },
            udp_rate: (self.dns_rate_limit > 0).then_some(self.dns_rate_limit),
        }))
    }

    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        let dns = self.dns()?;
        anyhow::ensure!(
            self.auth || self.insecure || self.listen.ip().is_loopback(),
            "refusing to listen on {} without --auth: anyone who reaches it could flip colors \
             and rewrite where traffic goes. Turn on --auth (README \"Security\"), listen on \
             127.0.0.1, or pass --insecure on a network you trust",
            self.listen
        );
        anyhow::ensure!(
            self.history_revisions > 0,
            "--history-revisions must be at least 1"
        );
        anyhow::ensure!(self.watch_buffer > 0, "--watch-buffer must be at least 1");
        anyhow::ensure!(
            !self.progress_interval.is_zero(),
            "--progress-interval must be longer than 0"
        );
        let store = match self.store {
            StoreKind::Sled => StoreChoice::Sled,
            StoreKind::Etcd => {
                anyhow::ensure!(
                    !self.etcd_endpoints.is_empty(),
                    "--store etcd needs --etcd-endpoints"
                );
                StoreChoice::Etcd {
                    endpoints: self.etcd_endpoints,
                }
            }
        };
        let metrics_listen =
            switchyard_program::metrics::parse_listen("--metrics-listen", &self.metrics_listen)?;
        Ok(ServerConfig {
            store,
            dns,
            metrics_listen,
            metrics_max_services: self.metrics_max_services,
            ui: self.ui,
            data_dir: self.data_dir,
            history_revisions: self.history_revisions,
            watch_buffer: self.watch_buffer,
            sled_cache_bytes: self.sled_cache_mib.saturating_mul(1024 * 1024),
            progress_interval: self.progress_interval,
            drain_timeout: self.drain_timeout,
            forget_proxies_after: self.forget_proxies_after,
            limits: self.limits.into_limits()?,
            tls: self.tls.into_files(),
            auth: self.auth,
            bootstrap_token_file: self.bootstrap_token_file,
            seed_tokens: self.seed_tokens,
            bootstrap_anew: self.bootstrap_anew,
            etcd_access: crate::store::etcd::EtcdAccess {
                ca: self.etcd_ca,
                cert: self.etcd_cert,
                key: self.etcd_key,
                user: self.etcd_user,
                password_file: self.etcd_password_file,
            },
        })
    }
}
