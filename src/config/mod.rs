//! Configuration: a TOML file plus environment overrides, validated into [`Settings`].
//!
//! Guarantee: a [`Settings`] exists only if every key in the file and in the
//! `CONSENT_WEBHOOKS__*` overrides is known, well typed and passes its checks (including the
//! cross-field ones: distinct topics, retry schedule inside its budget and at least five retries
//! within five minutes unless opted out, a lane limit no larger than the global one, HTTPS unless
//! allowed, Kafka properties librdkafka accepts). Settings that load but cannot work as meant are
//! reported by [`warnings`]. Any failure is one [`ConfigError`] that names the key path (e.g.
//! `organizations.acme.oauth.token_url`) and shows a valid example line.
//!
//! Secrets (signing secrets, OAuth client secrets, secret Kafka properties, custom header values
//! given as references) are never accepted in clear in the file: only as `{ env = "VAR" }` or
//! `{ file = "/path" }`. Their values never appear in errors, in [`render_redacted`] or in
//! `Debug` output.
//!
//! Layout and every key: `deploy/config.example.toml`.

mod env;
mod librdkafka;
mod reader;
mod render;
mod retry_policy;
mod secret;
mod settings;
mod validate;
mod validate_org;
mod warnings;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use env::ENV_PREFIX;
pub use render::render_redacted;
pub use retry_policy::{meets_minimum, MIN_RETRIES, MIN_RETRY_WINDOW};
pub use settings::*;
pub use validate_org::RESERVED_HEADERS;
pub use warnings::{warnings, ConfigWarning};

/// Why the configuration cannot be used. `Display` is meant for operators: key path, what is
/// wrong, and a valid example line. It never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {file} is not valid TOML: {message}")]
    Syntax { file: String, message: String },
    /// An environment variable with the `CONSENT_WEBHOOKS__` prefix that cannot be applied.
    #[error("environment variable {var}: {message}. Example: {example}")]
    Override {
        var: String,
        message: String,
        example: String,
    },
    /// A key with a missing, unknown, ill-typed or invalid value.
    #[error("{}", DisplayInvalid { key, message, example, origin })]
    Invalid {
        /// Dotted key path, e.g. `organizations.acme.url`.
        key: String,
        message: String,
        /// A valid line for this key, e.g. `url = "https://hooks.example.com/consent"`.
        example: String,
        /// The environment variable that set this key, when one did.
        origin: Option<String>,
    },
}

impl ConfigError {
    /// The key path the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

struct DisplayInvalid<'a> {
    key: &'a str,
    message: &'a str,
    example: &'a str,
    origin: &'a Option<String>,
}

impl fmt::Display for DisplayInvalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key)?;
        if let Some(var) = self.origin {
            write!(f, " (set by environment variable {var})")?;
        }
        write!(f, ": {}. Example: {}", self.message, self.example)
    }
}

/// Loads `path`, applies `CONSENT_WEBHOOKS__*` overrides from the process environment and reads
/// secrets from it.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let mut env_vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
            continue;
        };
        let value = value.into_string().map_err(|_| ConfigError::Override {
            var: name.to_owned(),
            message: "value is not valid UTF-8".into(),
            example: format!("{ENV_PREFIX}DELIVERY__REQUEST_TIMEOUT=3s"),
        })?;
        env_vars.push((name.to_owned(), value));
    }
    load_with_env(path, &|name| std::env::var(name).ok(), &env_vars)
}

/// [`load`] with the environment injected: `env` looks up variables named by
/// `{ env = "VAR" }` secrets; `env_vars` holds candidate overrides (any name; only those starting
/// with [`ENV_PREFIX`] are used). A caller may add its own overrides to `env_vars`, e.g. a CLI
/// flag as `("CONSENT_WEBHOOKS__KAFKA__BROKERS", value)`.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    env_vars: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    parse_str_named(&text, &path.display().to_string(), base_dir, env, env_vars)
}

/// Parses config text; relative secret file paths resolve against `base_dir`.
pub fn parse_str(
    toml: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    env_vars: &[(String, String)],
) -> Result<Settings, ConfigError> {
    parse_str_named(toml, "<string>", base_dir, env, env_vars)
}

/// One organization's settings from a value shaped like its `[organizations.<id>]` section (a
/// registry value): the same checks, errors (key path `organizations.<id>.…`, example) and
/// secret references as the file. Relative secret files resolve against `base_dir`.
pub fn organization_from_value(
    id: &str,
    value: &toml::Value,
    delivery: &DeliverySettings,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<OrganizationSettings, ConfigError> {
    let ctx = validate::Ctx { base_dir, env };
    validate_org::organization_value(id, value, delivery, &ctx)
}

fn parse_str_named(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    env_vars: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let mut root: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let origins = env::apply_overrides(&mut root, env_vars)?;
    let ctx = validate::Ctx { base_dir, env };
    validate::settings(&root, &ctx).map_err(|e| origins.tag(e))
}
