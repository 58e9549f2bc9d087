//! `cdctl`: what CI and operators run against the registry. `main` only
//! parses flags and turns the outcome into an exit code; the commands live in
//! [`commands`].
#![forbid(unsafe_code)]

mod args;
mod commands;
mod deploy;
mod environments;
mod exit;
mod output;
mod template;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    switchyard_program::init_tracing_from_env("CDCTL_LOG", "warn");
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
