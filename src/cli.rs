//! The command line: one clap struct, every flag also readable from an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::derive::Rules;
use crate::equivalence::DEFAULT_VOLATILE_FIELDS;

#[derive(Debug, Parser)]
#[command(
    name = "consent-webhooks",
    version,
    about = "Consent-change records from Kafka in, webhooks out."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Derive webhook events from consent-change records in JSON Lines (FILE or stdin) to stdout.
    ///
    /// Rejected lines are reported on stderr with their line number and reason; the exit status
    /// is 1 when any line was rejected.
    Derive(DeriveArgs),
}

#[derive(Debug, Args)]
pub struct DeriveArgs {
    /// JSON Lines input; `-` or absent reads stdin.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub rules: RulesArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    /// Top-level user fields ignored when deciding whether a user update is effective
    /// (comma-separated).
    #[arg(
        long = "volatile-fields",
        env = "CONSENT_WEBHOOKS_VOLATILE_FIELDS",
        value_delimiter = ',',
        default_values_t = DEFAULT_VOLATILE_FIELDS.map(String::from)
    )]
    pub volatile_fields: Vec<String>,
}

impl RulesArgs {
    pub fn rules(&self) -> Rules {
        Rules {
            volatile_fields: self
                .volatile_fields
                .iter()
                .map(|f| f.trim().to_owned())
                .filter(|f| !f.is_empty())
                .collect(),
        }
    }
}
