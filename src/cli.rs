//! The command line: one clap struct, every flag also readable from an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, Settings};
use crate::derive::Rules;
use crate::equivalence::DEFAULT_VOLATILE_FIELDS;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "consent-webhooks",
    version,
    about = "Consent-change records from Kafka in, webhooks out."
)]
pub struct Cli {
    /// Log format: JSON lines when stderr is not a terminal (auto), or forced.
    #[arg(
        long,
        env = "CONSENT_WEBHOOKS_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub log_format: LogFormat,
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
    /// Run the pipeline: consume, derive, deliver, retry, dead-letter, until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Validate a configuration file and print the settings it yields, secrets redacted.
    CheckConfig(CheckConfigArgs),
    /// Move the consumer group's offsets (to a time, by a duration, to earliest); dry run
    /// unless --execute.
    Replay(crate::ops::replay::ReplayArgs),
    /// Deliver dead-lettered events again; what fails again goes back to the dead-letter topic.
    Redrive(crate::ops::redrive::RedriveArgs),
    /// Deliver one organization's webhooks of a time range again, read from the input topic
    /// (no consumer group, nothing committed, no other organization touched).
    Resend(crate::ops::resend::ResendArgs),
    /// The organization registry: put, get, list or delete an organization (through the
    /// registry topic; the running service applies each change within seconds).
    Organizations(crate::ops::organizations::OrganizationsArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file (TOML); also accepted as `--config FILE`.
    #[arg(value_name = "FILE", required_unless_present = "config")]
    pub file: Option<PathBuf>,
    /// The configuration file (TOML).
    #[arg(
        long,
        short = 'c',
        env = "CONSENT_WEBHOOKS_CONFIG",
        conflicts_with = "file"
    )]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers; overrides `kafka.brokers`.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub brokers: Option<String>,
}

/// Where the settings come from. Every file setting can also be overridden by an environment
/// variable `CONSENT_WEBHOOKS__<SECTION>__<KEY>` (see the README).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', env = "CONSENT_WEBHOOKS_CONFIG")]
    pub config: PathBuf,
    /// Kafka bootstrap servers; overrides `kafka.brokers`.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub brokers: Option<String>,
    /// Consumer group id; overrides `kafka.group_id`.
    #[arg(long, env = "CONSENT_WEBHOOKS_GROUP_ID")]
    pub group_id: Option<String>,
}

impl ConfigArgs {
    /// Loads and validates the settings, flags over environment over file.
    pub fn load(&self) -> Result<Settings, ConfigError> {
        load_settings(
            &self.config,
            self.brokers.as_deref(),
            self.group_id.as_deref(),
        )
    }

    /// [`ConfigArgs::load`] for a command: on an invalid configuration, prints why and gives
    /// the usage exit status (2) to return. Configuration warnings are logged.
    pub fn load_or_exit(&self) -> Result<Settings, std::process::ExitCode> {
        let settings = self.load().map_err(|error| {
            eprintln!("invalid configuration: {error}");
            std::process::ExitCode::from(2)
        })?;
        for warning in crate::config::warnings(&settings) {
            tracing::warn!(key = %warning.key, "{}", warning.message);
        }
        Ok(settings)
    }
}

/// Loads the file with `CONSENT_WEBHOOKS__*` overrides from the environment, then the flags.
pub fn load_settings(
    path: &std::path::Path,
    brokers: Option<&str>,
    group_id: Option<&str>,
) -> Result<Settings, ConfigError> {
    let mut overrides: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with(crate::config::ENV_PREFIX))
        .collect();
    let prefix = crate::config::ENV_PREFIX;
    if let Some(brokers) = brokers {
        overrides.push((format!("{prefix}KAFKA__BROKERS"), brokers.to_owned()));
    }
    if let Some(group_id) = group_id {
        overrides.push((format!("{prefix}KAFKA__GROUP_ID"), group_id.to_owned()));
    }
    crate::config::load_with_env(path, &|name| std::env::var(name).ok(), &overrides)
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
