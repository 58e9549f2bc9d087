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
use crate::deploy::Required;
use crate::deploy::runtime::RuntimeChoice;
use crate::environments::Environment;

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
    let mut cli = cli;
    if let Command::Stats { environment, .. } = &cli.command
        && cli.env.is_none()
    {
        cli.env = environment.clone();
    }
    let environment = match &cli.env {
        Some(name) => Some(crate::environments::load(&cli.config, name).map_err(usage)?),
        None => None,
    };
    let mut target = crate::deploy::docker::Target::default();
    if let Some(environment) = &environment {
        apply(&mut cli, environment);
        target.host = environment.docker_host.clone();
        if let Some(label) = &environment.label {
            target.scope = Some(crate::deploy::docker::Scope::parse(label).map_err(usage)?);
        }
    }
    let registry = cli
        .registry
        .clone()
        .unwrap_or_else(|| DEFAULT_REGISTRY.into());
    let options = cli.access.client_options(cli.timeout)?;
    let client = RegistryClient::with_options(&registry, &options)
        .with_context(|| format!("using --registry {registry:?}"))?;
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
        Command::Stats { service, since, .. } => {
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
            command: SnapshotCommand::Save { file, backup_key },
        } => {
            let key = switchyard_client::backup::BackupKey::from_file(&backup_key)
                .map_err(|error| usage(error.into()))?;
            backup::save(&client, output, &file, &key).await
        }
        Command::Deploy(args) => {
            let required = required(&cli.config, &args.require, cli.timeout)?;
            crate::deploy::deploy(&client, output, *args, required, &target).await
        }
        Command::Promote(args) => {
            let hooks = crate::deploy::Hooks::from_args(&args).map_err(usage)?;
            crate::deploy::promote(&client, output, &args.service, hooks, &target).await
        }
        Command::Abort { service } => {
            crate::deploy::abort(&client, output, &service, &target).await
        }
        Command::Rollback { service, who } => {
            let who = who.unwrap_or_else(crate::deploy::default_who);
            crate::deploy::rollback(&client, output, &service, who, &target).await
        }
    }
}

/// Where cdctl looks for the registry when nothing says.
const DEFAULT_REGISTRY: &str = "http://127.0.0.1:7400";

fn usage(error: anyhow::Error) -> anyhow::Error {
    crate::exit::UsageError(format!("{error:#}")).into()
}

/// Fills what the command line left unsaid from `environment`.
fn apply(cli: &mut Cli, environment: &Environment) {
    let access = &mut cli.access;
    cli.registry = cli.registry.take().or(environment.registry.clone());
    access.ca = access.ca.take().or(environment.ca.clone());
    access.cert = access.cert.take().or(environment.cert.clone());
    access.key = access.key.take().or(environment.key.clone());
    if access.token.is_none() {
        access.token_file = access.token_file.take().or(environment.token_file.clone());
    }
    if let Command::Promote(args) = &mut cli.command {
        args.environment_defaults = environment.deploy.clone();
    }
    if let Command::Deploy(args) = &mut cli.command {
        args.environment_defaults = environment.deploy.clone();
        args.network = args.network.take().or(environment.network.clone());
        if args.runtime.is_none()
            && let Some(runtime) = &environment.runtime
        {
            args.runtime = <RuntimeChoice as clap::ValueEnum>::from_str(runtime, true).ok();
        }
    }
}

/// A client for each environment `--require` names.
fn required(
    config: &std::path::Path,
    names: &[String],
    timeout: std::time::Duration,
) -> anyhow::Result<Vec<Required>> {
    names
        .iter()
        .map(|name| {
            let environment = crate::environments::load(config, name).map_err(usage)?;
            let registry = environment.registry.clone().ok_or_else(|| {
                usage(anyhow::anyhow!(
                    "--require {name}: [environments.{name}] in {} names no registry",
                    config.display()
                ))
            })?;
            let access = switchyard_client::args::ClientAccessArgs {
                ca: environment.ca,
                cert: environment.cert,
                key: environment.key,
                token: None,
                token_file: environment.token_file,
            };
            let client = RegistryClient::with_options(&registry, &access.client_options(timeout)?)
                .with_context(|| format!("using the registry of environment {name}"))?;
            Ok(Required {
                environment: name.clone(),
                client,
            })
        })
        .collect()
}
