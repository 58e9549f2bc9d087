//! Flags and subcommands. Every global flag also comes from a `SWITCHYARD_*`
//! environment variable so CI jobs can set them once.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use switchyard_model::duration::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Switchyard's command line: services, colors and the registry.
#[derive(Debug, Parser)]
#[command(name = "cdctl", version, about)]
pub struct Cli {
    /// Registry URL; several comma-separated URLs are tried in turn
    /// (default: --env's, else http://127.0.0.1:7400).
    #[arg(long, global = true, env = "SWITCHYARD_REGISTRY")]
    pub registry: Option<String>,

    /// The named environment (`[environments.NAME]` in --config) whose
    /// registry, credentials and Docker engine to use. Before the
    /// subcommand (after it, `deploy --env` is a container's variable).
    #[arg(long, env = "SWITCHYARD_ENV")]
    pub env: Option<String>,

    /// The file --env reads.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CONFIG",
        default_value = "switchyard.toml"
    )]
    pub config: PathBuf,

    /// Output format.
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "SWITCHYARD_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: Output,

    /// How long each registry URL may take to connect and answer before the
    /// next one is tried.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,

    #[command(flatten)]
    pub access: switchyard_client::args::ClientAccessArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List services with their live color and instance counts.
    Services,
    /// Show one service: live color, revision and every instance.
    Status { service: String },
    /// Follow changes as JSON lines (a snapshot first), resuming after disconnects.
    Watch(WatchArgs),
    /// Register an instance that no agent manages (an external service).
    Register(RegisterArgs),
    /// Remove an instance by id.
    Deregister { id: String },
    /// Show the live color of a service and the color the next deploy gets.
    Color { service: String },
    /// Compare-and-swap the live color: succeeds only if it is still --expect.
    SetColor(SetColorArgs),
    /// Compare-and-swap a canary's weight: the percent of requests the color
    /// that is not live takes (0 ends the canary; 100 is `set-color`).
    SetWeight(SetWeightArgs),
    /// Blue-green release: start IMAGE beside the live color, test, flip, stop the old.
    Deploy(Box<DeployArgs>),
    /// Continue a deploy paused by --manual-promotion (flip, post-test, stop old).
    Promote(PromoteArgs),
    /// Undo a deploy paused by --manual-promotion.
    Abort { service: String },
    /// Flip back to the previous color while its instances still run and pass.
    Rollback {
        service: String,
        /// Who is rolling back (recorded); default: $USER@host.
        #[arg(long, env = "SWITCHYARD_WHO")]
        who: Option<String>,
    },
    /// Keep proxy configurations (nginx, HAProxy) in step with the registry.
    Template(TemplateArgs),
    /// List proxies with the revision they applied and when they last reported.
    Proxies,
    /// Tokens of a registry with --auth (admin): create, list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Backups: `cdctl snapshot save FILE` (restore with `cd-registry restore`).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Print a completion script: `cdctl completion bash > /etc/bash_completion.d/cdctl`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print cdctl's man page (roff): `cdctl man > cdctl.1`.
    Man,
    /// List the deployment records of a service, newest first; with
    /// `--follow`, print records as JSON lines as they are written.
    History {
        /// The service (with `--follow`, optional: every service).
        #[arg(required_unless_present = "follow")]
        service: Option<String>,
        /// Show at most this many records (0: all).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print each record as it is written (a deploy starting, then its
        /// outcome), one JSON object per line, until interrupted.
        #[arg(long)]
        follow: bool,
        /// With --follow: start after this registry revision instead of now
        /// (a pipeline resuming where it stopped).
        #[arg(long, requires = "follow", default_value_t = 0)]
        since: u64,
    },
    /// The delivery figures from the deployment records: deploys per day,
    /// lead time, change failure rate, time to restore.
    Stats {
        /// One service (default: every service, and the total).
        service: Option<String>,
        /// The environment to read (as `cdctl --env NAME stats`).
        #[arg(long = "env", value_name = "NAME")]
        environment: Option<String>,
        /// The window: records started this long ago or later.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        since: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (once: the registry keeps only its hash).
    Create(TokenCreateArgs),
    /// Tokens with their accessor, role, binding and expiry (never secrets).
    List,
    /// Revoke a token by its accessor; every replica refuses it at once.
    Revoke { accessor: String },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// reader, proxy, agent, deployer or admin.
    #[arg(long)]
    pub role: String,
    /// The node an agent token may act for.
    #[arg(long, conflicts_with = "proxy")]
    pub node: Option<String>,
    /// The proxy id a proxy token may report for.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Service globs a deployer token is limited to, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<String>,
    /// How long it is valid (e.g. 90d); default: until revoked.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// What it is for (shown by `token list` and in the registry's log).
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a consistent backup of the registry through its API and write
    /// it to FILE (services, colors, external instances, history).
    Save {
        file: PathBuf,
        /// The key the backup is signed with (at least 32 bytes; keep it
        /// apart from the backups; `openssl rand -hex 32 > backup.key`);
        /// `cd-registry restore --backup-key` checks it.
        #[arg(long, env = "SWITCHYARD_BACKUP_KEY_FILE")]
        backup_key: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    pub service: String,
    /// `--env`'s `[environments.NAME.deploy]`: settings under the file's.
    #[arg(skip)]
    pub environment_defaults: Option<toml::Table>,
    /// Image to deploy (must be on the Docker engine; deploys never pull).
    #[arg(long)]
    pub image: Option<String>,
    /// Containers (or Swarm tasks) of the new color (default 1).
    #[arg(long)]
    pub replicas: Option<u32>,
    /// What to start: containers, or one Swarm service per color (default
    /// auto: Swarm when the engine is a Swarm manager).
    #[arg(long, value_enum, env = "SWITCHYARD_RUNTIME")]
    pub runtime: Option<crate::deploy::runtime::RuntimeChoice>,
    /// Refuse the image (exit 5) unless each of these environments (from
    /// --config) promoted this very image (same id) with a passed
    /// post-test.
    #[arg(long, value_delimiter = ',')]
    pub require: Vec<String>,
    /// Container port to publish and register.
    #[arg(long)]
    pub port: Option<u16>,
    /// Environment for the containers, KEY=VALUE (repeatable).
    #[arg(long)]
    pub env: Vec<String>,
    /// Extra container labels, KEY=VALUE (repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Attach the containers to this network and register their IPs there
    /// (instead of publishing a port).
    #[arg(long)]
    pub network: Option<String>,
    /// Host address to publish the port on (default: all).
    #[arg(long)]
    pub publish_ip: Option<String>,
    /// How long the new color may take to pass in the registry (default 60s).
    #[arg(long, value_parser = parse_duration)]
    pub health_timeout: Option<Duration>,
    /// Pre-integration test, run by `sh -c` against the new color.
    #[arg(long)]
    pub pre_test: Option<String>,
    #[command(flatten)]
    pub checks: CheckArgs,
    /// Keep the old color running (for `cdctl rollback`).
    #[arg(long)]
    pub keep_old: bool,
    /// Keep the old color this long, then stop it.
    #[arg(long, value_parser = parse_duration)]
    pub stop_old_after: Option<Duration>,
    /// Stop after the pre-test; continue with `cdctl promote` or undo with `cdctl abort`.
    #[arg(long)]
    pub manual_promotion: bool,
    /// With --manual-promotion: after pausing, wait here and carry out the
    /// promote or abort asked for on the dashboard (or by `cdctl promote`).
    #[arg(long)]
    pub wait_for_promotion: bool,
    /// How long stopped containers get to exit before they are killed (default 10s).
    #[arg(long, value_parser = parse_duration)]
    pub stop_timeout: Option<Duration>,
    /// How long to wait for proxies to apply the flip (default 30s).
    #[arg(long, value_parser = parse_duration)]
    pub proxy_timeout: Option<Duration>,
    /// Proxies that have not reported for this long are not waited for (default 30s).
    #[arg(long, value_parser = parse_duration)]
    pub proxy_stale: Option<Duration>,
    /// How long the retiring color may keep requests in flight at proxies
    /// that count them (HAProxy's runtime mode) before it is stopped
    /// anyway (default 30s; 0s: do not wait).
    #[arg(long, value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Settings per service (TOML, one [SERVICE] table); flags override it.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// TTL of the deploy lock, renewed while the deploy runs (default 30s).
    #[arg(long, value_parser = parse_duration)]
    pub lock_ttl: Option<Duration>,
    /// Who is deploying (recorded); default: the CI actor or $USER@host.
    #[arg(long, env = "SWITCHYARD_WHO")]
    pub who: Option<String>,
    #[command(flatten)]
    pub canary: CanaryArgs,
}

/// `cdctl promote`: what it runs (the post-test, the canary's analysis) and
/// the URLs it trusts come from these flags and `--file` (and `--env`'s
/// deploy table), never from the paused deploy's record, which anyone who
/// may deploy the service can write (docs/security.md).
#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub service: String,
    /// `--env`'s `[environments.NAME.deploy]`: settings under the file's.
    #[arg(skip)]
    pub environment_defaults: Option<toml::Table>,
    /// The settings file the deploy used (one [SERVICE] table): its
    /// post_test, proxy_url and analysis settings are used.
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub checks: CheckArgs,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

/// The tests a deploy (or `promote`) runs after the flip.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Post-integration test, run by `sh -c` after the flip.
    #[arg(long)]
    pub post_test: Option<String>,
    /// Proxy URL given to the post-test as SWITCHYARD_PROXY_URL.
    #[arg(long)]
    pub proxy_url: Option<String>,
}

/// What judges each bake of a canary: a command, or a Prometheus query.
#[derive(Debug, Clone, Args)]
pub struct AnalysisArgs {
    /// Run by `sh -c` during each bake; a failure puts every request back
    /// on the old color and removes the new one (exit 12).
    #[arg(long)]
    pub analysis: Option<String>,
    /// A Prometheus (http://HOST:PORT) asked --analysis-query during each
    /// bake.
    #[arg(long)]
    pub analysis_prometheus: Option<String>,
    /// PromQL that fails a step when it answers any sample (or one above
    /// --analysis-threshold); ${SERVICE}, ${COLOR}, ${LIVE_COLOR} and
    /// ${WEIGHT} are replaced.
    #[arg(long)]
    pub analysis_query: Option<String>,
    /// With --analysis-query: only samples above this fail.
    #[arg(long)]
    pub analysis_threshold: Option<f64>,
}

/// How traffic moves: `--strategy canary` and its steps, or
/// `--strategy rolling` and its batches.
#[derive(Debug, Clone, Args)]
pub struct CanaryArgs {
    /// blue-green (every request at once, the default), canary (a growing
    /// share, step by step) or rolling (instances replaced within the live
    /// color, a batch at a time).
    #[arg(long, value_enum)]
    pub strategy: Option<crate::deploy::strategy::Strategy>,
    /// A canary's shares for the new color, rising to 100 (the flip)
    /// (default 10,25,50,100).
    #[arg(long)]
    pub steps: Option<String>,
    /// How long each canary step runs before the next (default 60s).
    #[arg(long, value_parser = parse_duration)]
    pub bake: Option<Duration>,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// How often the analysis runs during a bake (default 10s).
    #[arg(long, value_parser = parse_duration)]
    pub analysis_interval: Option<Duration>,
    /// Keep each client on the color it was first sent to while the canary
    /// runs (proxies pin it by cookie).
    #[arg(long)]
    pub sticky: bool,
    /// With --strategy rolling: new instances per batch (default 1).
    #[arg(long)]
    pub batch: Option<u32>,
    /// With --strategy rolling: old instances of a batch stopped before its
    /// new ones start (default 0: new ones start first).
    #[arg(long)]
    pub max_unavailable: Option<u32>,
}

#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// Template file (minijinja / Jinja2); repeat with --out for several.
    #[arg(long, required = true)]
    pub template: Vec<PathBuf>,
    /// Where the rendered configuration goes, one per --template.
    #[arg(long, required = true)]
    pub out: Vec<PathBuf>,
    /// Command that vets a new file before it replaces the old; `{path}` is
    /// the new file (e.g. "nginx -t -c {path}").
    #[arg(long)]
    pub check: Option<String>,
    /// Command run after a replacement (e.g. "nginx -s reload").
    #[arg(long)]
    pub reload: Option<String>,
    /// MIN:MAX: render after MIN of quiet, never later than MAX after the first change.
    #[arg(long, default_value = "0s:0s")]
    pub wait: String,
    /// Render once (after the first snapshot), then exit.
    #[arg(long)]
    pub once: bool,
    /// Allow a configuration that leaves a live service with no backends.
    #[arg(long)]
    pub allow_empty: bool,
    /// Name this proxy reports under (default: proxy-HOSTNAME).
    #[arg(long, env = "SWITCHYARD_PROXY_ID")]
    pub proxy_id: Option<String>,
    /// HAProxy's Runtime API socket (a stats socket at `level admin`, or the
    /// master socket of `haproxy -W -S`): instance changes, flips and drains
    /// are applied through it with no reload; the configuration is still
    /// written, and reloaded only when the set of backends changes.
    #[arg(long, value_name = "SOCKET")]
    pub haproxy_runtime: Option<PathBuf>,
    /// How often the proxy reports even when nothing changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub report_interval: Duration,
    /// Where to serve Prometheus metrics (GET /metrics), e.g. 127.0.0.1:7403;
    /// off by default.
    #[arg(
        long,
        env = "SWITCHYARD_TEMPLATE_METRICS_LISTEN",
        default_value = "off"
    )]
    pub metrics_listen: String,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Services to watch; none: every service.
    pub services: Vec<String>,
    /// Start after this revision instead of with a snapshot.
    #[arg(long, default_value_t = 0)]
    pub from_revision: u64,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[arg(long)]
    pub service: String,
    /// IP address clients connect to.
    #[arg(long)]
    pub address: String,
    #[arg(long)]
    pub port: u32,
    /// blue, green or none.
    #[arg(long, default_value = "none")]
    pub color: String,
    /// Instance id; default: SERVICE-ADDRESS-PORT.
    #[arg(long)]
    pub id: Option<String>,
    /// Node the instance runs on; default: "external".
    #[arg(long)]
    pub node: Option<String>,
    /// Tags, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// passing, warning, critical or unknown.
    #[arg(long, default_value = "passing")]
    pub health: String,
}

#[derive(Debug, Args)]
pub struct SetColorArgs {
    pub service: String,
    /// blue, green or none.
    pub color: String,
    /// The color you believe is live now (blue, green or none); the change
    /// is refused if it is not.
    #[arg(long)]
    pub expect: String,
    /// Fencing token of a deploy lock you hold.
    #[arg(long, default_value_t = 0)]
    pub lock_token: u64,
    /// Required with `none`: clearing the live color takes the service
    /// dark (proxies route it nowhere).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct SetWeightArgs {
    pub service: String,
    /// 0 to 99: the percent of requests the color that is not live takes.
    pub weight: u8,
    /// The weight you believe is set now; the change is refused if it is not.
    #[arg(long)]
    pub expect: u8,
    /// The color you believe is live now (blue or green); the change is
    /// refused if it is not.
    #[arg(long)]
    pub expect_color: String,
    /// Fencing token of a deploy lock you hold.
    #[arg(long, default_value_t = 0)]
    pub lock_token: u64,
    /// Keep each client on the color it was first sent to (a cookie).
    #[arg(long)]
    pub sticky: bool,
}
