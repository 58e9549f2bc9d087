//! `cdctl`: what CI and operators run against the registry. `main` only
//! parses flags and turns the outcome into an exit code; the commands live in
//! [`commands`].
#![forbid(unsafe_code)]

mod args;
mod commands;
mod deploy;
mod exit;
mod output;
mod template;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CDCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cdctl: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(error) => {
            let (code, message) = exit::describe(&error);
            eprintln!("cdctl: {message}");
            ExitCode::from(code)
        }
    }
}
