//! Flags and subcommands. Every global flag also comes from a `SWITCHYARD_*`
//! environment variable so CI jobs can set them once.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Switchyard's command line: services, colors and the registry.
#[derive(Debug, Parser)]
#[command(name = "cdctl", version, about)]
pub struct Cli {
    /// Registry URL; several comma-separated URLs are tried in turn.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_REGISTRY",
        default_value = "http://127.0.0.1:7400"
    )]
    pub registry: String,

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
    /// List the deployment records of a service, newest first.
    History {
        service: String,
        /// Show at most this many records (0: all).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
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
}
