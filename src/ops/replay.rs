//! `consent-webhooks replay`: move the consumer group's offsets (stub, being written).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
}

pub fn run(_args: ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("replay is not implemented yet")
}
