//! `cd-registry`: set up logging, parse flags, bind, serve until SIGTERM or
//! SIGINT, drain, exit 0.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use cd_registry::config::{Args, Command};
use clap::Parser;

/// jemalloc rather than glibc's malloc: a read allocates and frees many
/// small buffers across threads, and glibc's malloc and free were about a
/// fifth of the registry's CPU under the read benchmark.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.man {
        return switchyard_program::print_man_page(<Args as clap::CommandFactory>::command());
    }
    switchyard_program::init_tracing(&args.logging);
    if let Some(Command::Restore(restore)) = args.command.take() {
        return match cd_registry::restore::restore(&restore) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("cd-registry restore: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cd-registry: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        // Said once, through the log (standard error).
        Err(error) => {
            switchyard_program::report_fatal("cd-registry", &error);
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listen = args.listen;
    let config = args.into_config()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("binding {listen} (is another process using it? try --listen 127.0.0.1:0)")
        })?;
    cd_registry::server::serve(config, listener, switchyard_program::shutdown_signal()).await
}
