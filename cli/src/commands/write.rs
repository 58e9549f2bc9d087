//! Write commands: `register`, `deregister`, `set-color`.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use switchyard_client::RegistryClient;
use switchyard_model::{Color, Health, Instance, color_name, validate};

use crate::args::{Output, RegisterArgs, SetColorArgs, SetWeightArgs};
use crate::exit::UsageError;

fn print_revision(output: Output, what: &str, revision: u64) {
    match output {
        Output::Json => println!("{}", json!({ "revision": revision })),
        Output::Table => println!("{what} at revision {revision}"),
    }
}

pub async fn register(
    client: &RegistryClient,
    output: Output,
    args: RegisterArgs,
) -> anyhow::Result<ExitCode> {
    let address = validate::ip_address("--address", &args.address)?;
    let port = validate::port("--port", args.port)?;
    let color = Color::parse_optional(&args.color).context("reading --color")?;
    let health: Health = args.health.parse().context("reading --health")?;
    let id = args
        .id
        .unwrap_or_else(|| format!("{}-{}-{}", args.service, address, port).replace("::", "-"));
    let instance = Instance {
        id,
        service: args.service,
        color,
        node: args.node.unwrap_or_default(),
        address,
        port,
        tags: args.tags,
        metadata: Default::default(),
        health,
        session: None,
        create_revision: 0,
        mod_revision: 0,
    };
    validate::instance("", &instance)?;
    let revision = client.register(&instance, None).await?;
    print_revision(output, &format!("registered {}", instance.id), revision);
    Ok(ExitCode::SUCCESS)
}

pub async fn deregister(
    client: &RegistryClient,
    output: Output,
    id: &str,
) -> anyhow::Result<ExitCode> {
    let revision = client.deregister(id).await?;
    print_revision(output, &format!("deregistered {id}"), revision);
    Ok(ExitCode::SUCCESS)
}

pub async fn set_color(
    client: &RegistryClient,
    output: Output,
    args: SetColorArgs,
) -> anyhow::Result<ExitCode> {
    let color = Color::parse_optional(&args.color).context("reading COLOR")?;
    let expected = Color::parse_optional(&args.expect).context("reading --expect")?;
    let revision = match color {
        Some(_) => {
            client
                .set_active_color(&args.service, color, expected, args.lock_token)
                .await?
        }
        None if args.offline => {
            client
                .clear_active_color(&args.service, expected, args.lock_token)
                .await?
        }
        None => {
            return Err(UsageError(format!(
                "`none` takes {} offline (no color receives traffic): add --offline if that \
                 is what you want",
                args.service
            ))
            .into());
        }
    };
    print_revision(
        output,
        &format!("{} is now {}", args.service, color_name(color)),
        revision,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn set_weight(
    client: &RegistryClient,
    output: Output,
    args: SetWeightArgs,
) -> anyhow::Result<ExitCode> {
    let live = Color::parse_optional(&args.expect_color).context("reading --expect-color")?;
    let revision = client
        .set_canary_weight(
            &args.service,
            (args.weight, args.sticky),
            args.expect,
            live,
            args.lock_token,
        )
        .await?;
    let canary = live.map_or("none", |c| c.other().as_str());
    print_revision(
        output,
        &format!(
            "{} sends {}% to {canary} and {}% to {}",
            args.service,
            args.weight,
            100u8.saturating_sub(args.weight),
            color_name(live)
        ),
        revision,
    );
    Ok(ExitCode::SUCCESS)
}
