//! The subcommands. Each returns the exit code on success and an error
//! (mapped to an exit code by `exit::describe`) otherwise.

mod backup;
mod follow;
mod read;
mod resume;
mod stats;
mod tokens;
mod watch;
mod write;

use std::process::ExitCode;

use anyhow::Context;
use switchyard_client::RegistryClient;

use crate::args::{Cli, Command, SnapshotCommand};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Generated from the flags themselves; no registry involved.
    match &cli.command {
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Into memory first: writing straight to a closed pipe panics.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "cdctl", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .context("writing the completion script")?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            return Ok(switchyard_program::print_man_page(
                <Cli as clap::CommandFactory>::command(),
            ));
        }
        _ => {}
    }
    let options = cli.access.client_options(cli.timeout)?;
    let client = RegistryClient::with_options(&cli.registry, &options)
        .with_context(|| format!("using --registry {:?}", cli.registry))?;
    let output = cli.output;
    match cli.command {
        Command::Services => read::services(&client, output).await,
        Command::Status { service } => read::status(&client, output, &service).await,
        Command::History {
            service,
            follow: true,
            since,
            ..
        } => follow::history(&client, service.as_deref().unwrap_or(""), since).await,
        Command::History { service, limit, .. } => {
            let service = service.unwrap_or_default();
            read::history(&client, output, &service, limit).await
        }
        Command::Color { service } => read::color(&client, output, &service).await,
        Command::Stats { service, since } => {
            stats::stats(&client, output, service.as_deref(), since).await
        }
        Command::Watch(args) => watch::watch(&client, args).await,
        Command::Register(args) => write::register(&client, output, args).await,
        Command::Deregister { id } => write::deregister(&client, output, &id).await,
        Command::SetColor(args) => write::set_color(&client, output, args).await,
        Command::SetWeight(args) => write::set_weight(&client, output, args).await,
        Command::Template(args) => crate::template::template(&client, args).await,
        Command::Proxies => read::proxies(&client, output).await,
        Command::Completion { .. } | Command::Man => Ok(ExitCode::SUCCESS),
        Command::Token { command } => tokens::run(&client, output, command).await,
        Command::Snapshot {
            command: SnapshotCommand::Save { file },
        } => backup::save(&client, output, &file).await,
        Command::Deploy(args) => crate::deploy::deploy(&client, output, *args).await,
        Command::Promote { service } => crate::deploy::promote(&client, output, &service).await,
        Command::Abort { service } => crate::deploy::abort(&client, output, &service).await,
        Command::Rollback { service, who } => {
            let who = who.unwrap_or_else(crate::deploy::default_who);
            crate::deploy::rollback(&client, output, &service, who).await
        }
    }
}
