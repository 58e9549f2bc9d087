//! `cd-agent`: set up logging, parse flags, serve /healthz, run the agent
//! until SIGTERM or SIGINT, then deregister (or not, with --keep-on-exit).
#![forbid(unsafe_code)]

mod agent;
mod backoff;
mod checks;
mod config;
mod discover;
mod docker;
mod healthz;
mod metrics;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use config::Args;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.man {
        return switchyard_program::print_man_page(<Args as clap::CommandFactory>::command());
    }
    switchyard_program::init_tracing(&args.logging);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cd-agent: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Exit codes: 2 for flags that cannot work (nothing was started), 1
    // for a failure while running. Each is said once, through the log.
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            switchyard_program::report_fatal("cd-agent", &error);
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            switchyard_program::report_fatal("cd-agent", &error);
            // A registry URL, TLS file or token that cannot work is a flag
            // mistake too, found when the client is made.
            let misconfigured = matches!(
                error.downcast_ref::<switchyard_client::ClientError>(),
                Some(
                    switchyard_client::ClientError::BadUrl { .. }
                        | switchyard_client::ClientError::Tls(_)
                        | switchyard_client::ClientError::BadToken(_)
                )
            );
            ExitCode::from(if misconfigured { 2 } else { 1 })
        }
    }
}

async fn run(config: config::Config) -> anyhow::Result<()> {
    tracing::info!(
        registry = %config.registry,
        advertise_ip = %config.advertise_ip,
        internal = config.internal,
        ttl_seconds = config.ttl_seconds,
        "cd-agent starting"
    );
    let shutdown = CancellationToken::new();
    let status = Arc::new(Mutex::new(healthz::Status::default()));
    let (metrics, registry) = metrics::AgentMetrics::new();
    if let Some(address) = config.healthz {
        let bound =
            healthz::serve(address, Arc::clone(&status), registry, shutdown.clone()).await?;
        tracing::info!(address = %bound, "healthz listening");
    }
    let agent = agent::Agent::new(config, status, metrics)?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        switchyard_program::shutdown_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    agent.run(shutdown).await;
    Ok(())
}
