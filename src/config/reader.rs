//! Typed reads from a parsed TOML table that know their key path and an example line per key,
//! so every error says where it is and what a valid line looks like.
//!
//! Guarantee: a [`Node`] is only built after its table was checked for unknown keys, so a typo
//! is an error (with the valid keys and the nearest one), never a silently ignored setting.

use std::time::Duration;

use toml::{Table, Value};

use super::ConfigError;

/// The keys of one table and, for each, a valid example line.
pub(super) type Keys = &'static [(&'static str, &'static str)];

/// One TOML table being read.
pub(super) struct Node<'a> {
    path: String,
    table: &'a Table,
    keys: Keys,
}

/// An error about `key` with a valid `example` line.
pub(super) fn invalid(key: &str, message: impl Into<String>, example: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
        example: example.to_owned(),
        origin: None,
    }
}

/// `parent.segment`, quoting the segment as TOML does when it is not a bare key.
pub(super) fn join(parent: &str, segment: &str) -> String {
    let seg = bare_or_quoted(segment);
    if parent.is_empty() {
        seg
    } else {
        format!("{parent}.{seg}")
    }
}

pub(super) fn bare_or_quoted(segment: &str) -> String {
    let bare = !segment.is_empty()
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        segment.to_owned()
    } else {
        Value::String(segment.to_owned()).to_string()
    }
}

/// What a value is, for "expected X, found Y" messages. Only for non-secret keys: it may show
/// the value.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::String(s) if s.chars().count() > 60 => {
            let short: String = s.chars().take(60).collect();
            format!("the string {short:?}…")
        }
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(x) => format!("the float {x}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Datetime(d) => format!("the datetime {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

impl<'a> Node<'a> {
    /// Opens `table` at `path`, rejecting keys not in `keys`.
    pub fn open(path: String, table: &'a Table, keys: Keys) -> Result<Self, ConfigError> {
        let node = Node { path, table, keys };
        for key in table.keys() {
            if !keys.iter().any(|(k, _)| k == key) {
                return Err(node.unknown_key(key));
            }
        }
        Ok(node)
    }

    fn unknown_key(&self, key: &str) -> ConfigError {
        let valid: Vec<_> = self.keys.iter().map(|(k, _)| *k).collect();
        let nearest = self
            .keys
            .iter()
            .map(|(k, example)| (edit_distance(&key.to_ascii_lowercase(), k), *k, *example))
            .min_by_key(|(d, _, _)| *d)
            .filter(|(d, _, _)| *d <= 3);
        let hint = match nearest {
            Some((_, k, _)) => format!("did you mean `{k}`? "),
            None => String::new(),
        };
        let here = if self.path.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in [{}]", self.path)
        };
        let example = nearest.map_or(self.keys[0].1, |(_, _, example)| example);
        invalid(
            &self.key_path(key),
            format!("unknown key; {hint}valid keys {here}: {}", valid.join(", ")),
            example,
        )
    }

    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn example(&self, key: &str) -> &'static str {
        self.keys
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, example)| *example)
            .unwrap_or_else(|| panic!("config key {key:?} read but not declared"))
    }

    /// An error about `key` with its declared example.
    pub fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        invalid(&self.key_path(key), message, self.example(key))
    }

    fn expected(&self, key: &str, what: &str, found: &Value) -> ConfigError {
        self.err(key, format!("expected {what}, found {}", describe(found)))
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        debug_assert!(self.keys.iter().any(|(k, _)| *k == key), "undeclared {key}");
        self.table.get(key)
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.expected(key, "a string", other)),
        }
    }

    /// A string that must not be empty (or blank).
    pub fn nonempty_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => Err(self.err(key, "must not be empty")),
            other => Ok(other),
        }
    }

    pub fn required_string(&self, key: &str) -> Result<String, ConfigError> {
        self.nonempty_string(key)?
            .ok_or_else(|| self.err(key, "required key is missing"))
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(other) => Err(self.expected(key, "true or false", other)),
        }
    }

    /// A count: an integer of at least 1.
    pub fn count_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Integer(i)) if *i >= 1 => usize::try_from(*i)
                .map_err(|_| self.err(key, format!("{i} is too large for this platform"))),
            Some(Value::Integer(i)) => Err(self.err(key, format!("must be at least 1, got {i}"))),
            Some(other) => Err(self.expected(key, "an integer", other)),
        }
    }

    /// A humantime duration string ("5s", "1m 30s"); zero is refused unless `allow_zero`.
    pub fn duration(&self, key: &str, allow_zero: bool) -> Result<Option<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(s, allow_zero)
                .map(Some)
                .map_err(|m| self.err(key, m)),
            Some(other) => Err(self.expected(key, "a duration string such as \"5s\"", other)),
        }
    }

    pub fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(self.expected(key, "an array", other)),
        }
    }

    /// An array of strings, each non-empty.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
                Value::String(_) => {
                    return Err(self.err(key, format!("entry {i} is an empty string")))
                }
                other => {
                    return Err(self.err(
                        key,
                        format!("entry {i}: expected a string, found {}", describe(other)),
                    ))
                }
            }
        }
        Ok(Some(out))
    }

    /// An array of duration strings, each non-zero.
    pub fn durations(&self, key: &str) -> Result<Option<Vec<Duration>>, ConfigError> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::String(s) = item else {
                return Err(self.err(
                    key,
                    format!(
                        "entry {i}: expected a duration string, found {}",
                        describe(item)
                    ),
                ));
            };
            out.push(
                parse_duration(s, false).map_err(|m| self.err(key, format!("entry {i}: {m}")))?,
            );
        }
        Ok(Some(out))
    }

    pub fn table(&self, key: &str) -> Result<Option<&'a Table>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(other) => Err(self.expected(key, "a table", other)),
        }
    }

    /// The sub-table `key` as a node with its own keys; an absent table reads as empty.
    pub fn child(&self, key: &str, keys: Keys) -> Result<Node<'a>, ConfigError> {
        let table = self.table(key)?.unwrap_or_else(|| empty_table());
        Node::open(self.key_path(key), table, keys)
    }
}

/// An empty table, standing in for an absent one.
pub(super) fn empty_table() -> &'static Table {
    static EMPTY: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Table::new)
}

fn parse_duration(s: &str, allow_zero: bool) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e})"))?;
    if d.is_zero() && !allow_zero {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(d)
}

/// Levenshtein distance, for "did you mean" hints on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
