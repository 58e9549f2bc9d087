//! What every Switchyard program shares at its entry point: the logging
//! flags (flattened into each binary's clap arguments) and tracing set up
//! from them, the flags that reach a registry (TLS, token), and a future
//! that completes on SIGTERM or SIGINT, the `/metrics` endpoint, and the
//! HTTP listener that serves it within per-source connection limits.
#![forbid(unsafe_code)]

pub mod http;
pub mod metrics;
pub mod sources;

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--log-format` and `--log`, shared by the daemons.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `cd_agent=debug`.
    #[arg(long, env = "SWITCHYARD_LOG", default_value = "info")]
    pub log: String,
}

/// Says once why a daemon stops: as an `error` log line, or on standard
/// error when the log filter (`--log off`) would swallow it.
pub fn report_fatal(program: &str, error: &anyhow::Error) {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("{error:#}");
    } else {
        eprintln!("{program}: {error:#}");
    }
}

/// Writes the man page (roff) of `command` to standard output:
/// `cd-registry --man > cd-registry.1`. The images install them under
/// /usr/share/man/man1.
pub fn print_man_page(command: clap::Command) -> std::process::ExitCode {
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(command)
        .render(&mut page)
        .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &page));
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write the man page: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Tracing for a command-line tool: text on standard error, filtered by the
/// environment variable `variable` (EnvFilter syntax), else `default`.
pub fn init_tracing_from_env(variable: &str, default: &str) {
    let log = std::env::var(variable).unwrap_or_else(|_| default.to_string());
    init_tracing(&LogArgs {
        log_format: LogFormat::Text,
        log,
    });
}

/// Sends logs to standard error in the chosen format; a filter that does not
/// parse falls back to `info`. Colours only when standard error is a
/// terminal: escape codes in a log file or journal are noise, and worse
/// when a log shipper passes them on.
pub fn init_tracing(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops this process");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
