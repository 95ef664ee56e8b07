//! `CONSENT_WEBHOOKS__<PATH>` overrides, applied to the parsed TOML tree before validation.
//!
//! Guarantee: an override goes through exactly the same validation as the file (it only edits
//! the tree), and an error about an overridden key names the variable that set it.
//!
//! `PATH` is the key path with `__` between segments. Segments match existing keys
//! case-insensitively (an organization `Acme` in the file is `..__ORGANIZATIONS__ACME__..`);
//! keys that do not exist yet are created lower-case. A value is taken as TOML when it is one
//! (`3`, `true`, `["a", "b"]`, `{ env = "VAR" }`), else as a plain string (`3s`, `host:9092`);
//! where the file already holds a string, the raw text is kept (so `GROUP_ID=42` stays "42").

use toml::{Table, Value};

use super::reader::join;
use super::ConfigError;

/// Prefix of override variables.
pub const ENV_PREFIX: &str = "CONSENT_WEBHOOKS__";

/// Which key paths were set by which variable.
#[derive(Debug, Default)]
pub(super) struct Origins(Vec<(String, String)>);

impl Origins {
    /// Adds the variable that set the key (or a table above it) to an error about that key.
    pub fn tag(&self, mut error: ConfigError) -> ConfigError {
        if let ConfigError::Invalid { key, origin, .. } = &mut error {
            // The deepest (most specific) override wins.
            let found = self
                .0
                .iter()
                .filter(|(path, _)| key == path || key.starts_with(&format!("{path}.")))
                .max_by_key(|(path, _)| path.len());
            if let Some((_, var)) = found {
                *origin = Some(var.clone());
            }
        }
        error
    }
}

/// Applies every `CONSENT_WEBHOOKS__*` entry of `env_vars` to `root`: shallower paths first, so
/// `..__ORGANIZATIONS__ACME__URL` refines a whole `..__ORGANIZATIONS__ACME` table.
pub(super) fn apply_overrides(
    root: &mut Table,
    env_vars: &[(String, String)],
) -> Result<Origins, ConfigError> {
    let mut overrides = Vec::new();
    for (var, value) in env_vars {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let segments: Vec<&str> = rest.split("__").collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(bad_var(
                var,
                "empty key segment (segments are separated by `__`)",
            ));
        }
        overrides.push((segments, var, value));
    }
    overrides.sort_by(|a, b| (a.0.len(), a.1).cmp(&(b.0.len(), b.1)));

    let mut origins = Origins::default();
    for (segments, var, raw) in overrides {
        let path = apply_one(root, &segments, var, raw)?;
        origins.0.push((path, var.clone()));
    }
    Ok(origins)
}

fn apply_one(
    root: &mut Table,
    segments: &[&str],
    var: &str,
    raw: &str,
) -> Result<String, ConfigError> {
    let (last, parents) = segments.split_last().expect("at least one segment");
    let mut table = root;
    let mut path = String::new();
    for segment in parents {
        let key = resolve_key(table, segment, var)?;
        path = join(&path, &key);
        let entry = table
            .entry(key)
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(bad_var(
                    var,
                    &format!(
                        "`{path}` is not a table, so it has no key `{}`",
                        last.to_lowercase()
                    ),
                ))
            }
        };
    }
    let key = resolve_key(table, last, var)?;
    path = join(&path, &key);
    let value = parse_value(raw, table.get(&key));
    table.insert(key, value);
    Ok(path)
}

/// The existing key that `segment` names (exact, else the one case-insensitive match), or the
/// lower-cased segment for a new key.
fn resolve_key(table: &Table, segment: &str, var: &str) -> Result<String, ConfigError> {
    if table.contains_key(segment) {
        return Ok(segment.to_owned());
    }
    let mut matches = table.keys().filter(|k| k.eq_ignore_ascii_case(segment));
    match (matches.next(), matches.next()) {
        (Some(key), None) => Ok(key.clone()),
        (None, _) => Ok(segment.to_lowercase()),
        (Some(a), Some(b)) => Err(bad_var(
            var,
            &format!("segment `{segment}` matches both `{a}` and `{b}`; rename one in the file"),
        )),
    }
}

/// The TOML value of `raw` if it is one, else the string `raw`. Where the file holds a string,
/// only a TOML string is taken as TOML: `42` stays the string "42".
fn parse_value(raw: &str, existing: Option<&Value>) -> Value {
    let parsed = toml::from_str::<Table>(&format!("value = {raw}"))
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("value"));
    match (parsed, existing) {
        (Some(Value::String(s)), _) => Value::String(s),
        (Some(_), Some(Value::String(_))) | (None, _) => Value::String(raw.to_owned()),
        (Some(v), _) => v,
    }
}

fn bad_var(var: &str, message: &str) -> ConfigError {
    ConfigError::Override {
        var: var.to_owned(),
        message: message.to_owned(),
        example: format!("{ENV_PREFIX}ORGANIZATIONS__ACME__URL=https://hooks.example.com/consent"),
    }
}
