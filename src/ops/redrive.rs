//! `consent-webhooks redrive`: deliver dead letters again (stub, being written).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct RedriveArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
}

pub fn run(_args: RedriveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("redrive is not implemented yet")
}
