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
use config::{Args, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format, &args.log);
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
        shutdown_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    agent.run(shutdown).await;
    Ok(())
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the agent");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
