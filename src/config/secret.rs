//! Secret references: `{ env = "VAR" }` or `{ file = "/path" }`, never a value in clear.
//!
//! Guarantee: a secret value is only ever held in a [`SecretString`]; errors name the key and
//! the variable or file, never the value (nor any part of it). A plain string where a secret is
//! expected is refused, so a secret pasted into the file fails loudly instead of being used.

use std::path::PathBuf;

use secrecy::SecretString;
use toml::Value;

use super::reader::{invalid, Keys, Node};
use super::validate::Ctx;
use super::ConfigError;

pub(super) const SECRET_KEYS: Keys = &[
    ("env", r#"signing_secret = { env = "ACME_SIGNING_SECRET" }"#),
    (
        "file",
        r#"signing_secret = { file = "/var/run/secrets/acme/signing" }"#,
    ),
];

/// A secret read from its source, and a description of the source for later messages.
pub(super) struct Secret {
    pub value: SecretString,
    /// `environment variable X` or `file /path`.
    pub source: String,
}

/// Reads the secret referenced at `node.key`, if the key is present.
pub(super) fn read(
    node: &Node<'_>,
    key: &str,
    ctx: &Ctx<'_>,
) -> Result<Option<Secret>, ConfigError> {
    match node.get(key) {
        None => Ok(None),
        Some(value) => read_value(value, &node.key_path(key), node.example(key), ctx).map(Some),
    }
}

/// Reads the secret referenced by `value` at key path `path`; errors show `example`.
pub(super) fn read_value(
    value: &Value,
    path: &str,
    example: &str,
    ctx: &Ctx<'_>,
) -> Result<Secret, ConfigError> {
    let fail = |message: String| invalid(path, message, example);
    let table = match value {
        Value::Table(t) => t,
        Value::String(_) => {
            return Err(fail(
                "secrets must not be written in the config file; \
                 use { env = \"VAR\" } or { file = \"/path\" }"
                    .into(),
            ))
        }
        _ => {
            return Err(fail(
                "expected { env = \"VAR\" } or { file = \"/path\" }".into(),
            ))
        }
    };
    // The reference table's own errors still carry the parent key's example.
    let reference =
        Node::open(path.to_owned(), table, SECRET_KEYS).map_err(|e| rekey(e, example))?;

    let (raw, source) = match (
        reference.nonempty_string("env"),
        reference.nonempty_string("file"),
    ) {
        (Err(e), _) | (_, Err(e)) => return Err(rekey(e, example)),
        (Ok(Some(_)), Ok(Some(_))) => {
            return Err(fail("give either `env` or `file`, not both".into()));
        }
        (Ok(None), Ok(None)) => {
            return Err(fail(
                "expected { env = \"VAR\" } or { file = \"/path\" }".into(),
            ));
        }
        (Ok(Some(var)), Ok(None)) => {
            let source = format!("environment variable {var}");
            let value = (ctx.env)(&var).ok_or_else(|| fail(format!("{source} is not set")))?;
            (value, source)
        }
        (Ok(None), Ok(Some(file))) => {
            let mut file_path = PathBuf::from(&file);
            if file_path.is_relative() {
                file_path = ctx.base_dir.join(file_path);
            }
            let source = format!("file {}", file_path.display());
            let bytes = std::fs::read(&file_path)
                .map_err(|e| fail(format!("cannot read {source}: {}", e.kind())))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| fail(format!("{source} is not valid UTF-8")))?;
            // Kubernetes Secrets and `echo > file` usually end with a newline: not part of it.
            let trimmed_len = text.trim_end_matches(['\n', '\r']).len();
            let mut text = text;
            text.truncate(trimmed_len);
            (text, source)
        }
    };
    if raw.trim().is_empty() {
        return Err(fail(format!("the secret from {source} is empty")));
    }
    Ok(Secret {
        value: SecretString::from(raw),
        source,
    })
}

/// Errors inside a reference table show the parent key's example (`signing_secret = { env = .. }`)
/// rather than a bare `env = ..` line.
fn rekey(error: ConfigError, parent_example: &str) -> ConfigError {
    match error {
        ConfigError::Invalid {
            key,
            message,
            origin,
            ..
        } => ConfigError::Invalid {
            key,
            message,
            example: parent_example.to_owned(),
            origin,
        },
        other => other,
    }
}
