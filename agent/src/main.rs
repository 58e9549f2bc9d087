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

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use config::Args;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = Args::parse();
    switchyard_runtime::init_tracing(&args.logging);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cd-agent: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("cd-agent: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.into_config()?;
    tracing::info!(
        registry = %config.registry,
        advertise_ip = %config.advertise_ip,
        internal = config.internal,
        ttl_seconds = config.ttl_seconds,
        "cd-agent starting"
    );
    let shutdown = CancellationToken::new();
    let status = Arc::new(Mutex::new(healthz::Status::default()));
    if let Some(address) = config.healthz {
        let bound = healthz::serve(address, Arc::clone(&status), shutdown.clone()).await?;
        tracing::info!(address = %bound, "healthz listening");
    }
    let agent = agent::Agent::new(config, status)?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        switchyard_runtime::shutdown_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    agent.run(shutdown).await;
    Ok(())
}
