//! `consent-webhooks organizations put|get|list|delete`: the organization registry from the
//! command line, through the registry topic itself (the same checks and writes as the admin
//! API: [`crate::registry::Writer`]).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::registry::{self, WriteError, Writer, Written};

#[derive(Debug, Args)]
pub struct OrganizationsArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Registers or changes an organization: its settings with the keys of an
    /// `[organizations.<id>]` section, as a JSON object or TOML text (FILE, `-` for stdin, or
    /// --value).
    Put {
        id: String,
        /// A file holding the settings; `-` reads stdin.
        #[arg(long, conflicts_with = "value", required_unless_present = "value")]
        file: Option<PathBuf>,
        /// The settings inline, e.g. '{"url": "https://hooks.example.com/consent"}'.
        #[arg(long)]
        value: Option<String>,
    },
    /// Prints an organization's value as stored (secret references, never values).
    Get { id: String },
    /// Lists the registered organizations, one JSON object per line.
    List,
    /// Removes an organization (a tombstone).
    Delete { id: String },
}

/// Exit status: 0 done, 1 infrastructure error, 2 invalid settings or usage, 3 not found.
pub fn run(args: OrganizationsArgs) -> anyhow::Result<ExitCode> {
    let mut settings = match args.config.load_or_exit() {
        Ok(settings) => settings,
        Err(usage) => return Ok(usage),
    };
    if settings.registry.is_none() {
        eprintln!("the organization registry is not enabled in this configuration: set [registry] enabled = true");
        return Ok(ExitCode::from(2));
    }
    let value = match &args.action {
        Action::Put {
            file: Some(path), ..
        } => {
            let mut bytes = Vec::new();
            if path.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut bytes)?;
            } else {
                bytes = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            }
            bytes
        }
        Action::Put { value: Some(v), .. } => v.clone().into_bytes(),
        _ => Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        let (registry, follower) = registry::read_once(&mut settings, &stop).await?;
        let code = act(&settings, &registry, &args.action, &value).await;
        stop.cancel();
        tokio::task::spawn_blocking(move || follower.join())
            .await
            .ok();
        code
    })
}

async fn act(
    settings: &crate::config::Settings,
    registry: &std::sync::Arc<registry::Registry>,
    action: &Action,
    value: &[u8],
) -> anyhow::Result<ExitCode> {
    match action {
        Action::Get { id } => match registry.get(id) {
            Some(entry) => println!("{}", serde_json::to_string_pretty(&entry.to_json(id))?),
            None => {
                eprintln!("no organization {id} in the registry");
                return Ok(ExitCode::from(3));
            }
        },
        Action::List => {
            let mut after: Option<String> = None;
            loop {
                let page = registry.page(after.as_deref(), 1000);
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (id, entry) in &page {
                    println!("{}", entry.to_json(id));
                }
            }
        }
        Action::Put { id, .. } | Action::Delete { id } => {
            let writer = Writer::new(&settings.kafka, registry.clone())?;
            let written = match action {
                Action::Put { .. } => writer.put(id, value).await,
                _ => writer.delete(id).await,
            };
            match written {
                Ok(Written::Unchanged) => println!("{id}: unchanged (nothing written)"),
                Ok(Written::Put { offset, created }) => println!(
                    "{id}: {} at registry offset {offset}",
                    if created { "registered" } else { "changed" }
                ),
                Ok(Written::Removed { offset }) => {
                    println!("{id}: removed at registry offset {offset}")
                }
                Ok(Written::Absent) => println!("{id}: not registered (nothing written)"),
                Err(e @ (WriteError::Invalid(_) | WriteError::Value { .. })) => {
                    eprintln!("invalid organization: {e}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
