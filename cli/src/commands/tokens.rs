//! `cdctl token create|list|revoke`.

use std::process::ExitCode;

use serde_json::json;
use switchyard_client::RegistryClient;
use switchyard_model::auth::{NewToken, Role, TokenInfo};

use crate::args::{Output, TokenCommand, TokenCreateArgs};
use crate::output::print_table;

pub async fn run(
    client: &RegistryClient,
    output: Output,
    command: TokenCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => create(client, output, args).await,
        TokenCommand::List => list(client, output).await,
        TokenCommand::Revoke { accessor } => {
            let revision = client.revoke_token(&accessor).await?;
            match output {
                Output::Json => println!("{}", json!({"accessor": accessor, "revision": revision})),
                Output::Table => println!("revoked {accessor} at revision {revision}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(
    client: &RegistryClient,
    output: Output,
    args: TokenCreateArgs,
) -> anyhow::Result<ExitCode> {
    let request = NewToken {
        role: Role::parse(&args.role)?,
        binding: args.node.or(args.proxy),
        services: args.services,
        description: args.description,
        ttl_seconds: args.ttl.map_or(0, |ttl| ttl.as_secs().max(1)),
    };
    let (info, secret) = client.create_token(&request).await?;
    match output {
        Output::Json => println!("{}", json!({"token": secret, "info": token_json(&info)})),
        // The secret alone on stdout, so `cdctl token create … > file` works;
        // the rest on stderr.
        Output::Table => {
            eprintln!(
                "token {} ({}{}): keep it secret, it is not shown again",
                info.accessor,
                info.role.as_str(),
                info.binding
                    .as_deref()
                    .map(|b| format!(" for {b}"))
                    .unwrap_or_default()
            );
            println!("{secret}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &RegistryClient, output: Output) -> anyhow::Result<ExitCode> {
    let tokens = client.list_tokens().await?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::Value::from(tokens.iter().map(token_json).collect::<Vec<_>>())
        ),
        Output::Table => {
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|token| {
                    vec![
                        token.accessor.clone(),
                        token.role.as_str().to_string(),
                        token.binding.clone().unwrap_or_default(),
                        token.services.join(","),
                        token.description.clone(),
                        token.created_at_ms.to_string(),
                        match token.expires_at_ms {
                            0 => "never".to_string(),
                            at => at.to_string(),
                        },
                    ]
                })
                .collect();
            print_table(
                &[
                    "ACCESSOR",
                    "ROLE",
                    "BINDING",
                    "SERVICES",
                    "DESCRIPTION",
                    "CREATED_MS",
                    "EXPIRES_MS",
                ],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token_json(token: &TokenInfo) -> serde_json::Value {
    json!({
        "accessor": token.accessor,
        "role": token.role.as_str(),
        "binding": token.binding,
        "services": token.services,
        "description": token.description,
        "created_at_ms": token.created_at_ms,
        "expires_at_ms": token.expires_at_ms,
    })
}
