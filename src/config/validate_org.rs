//! Checks of `[organizations.<id>]`: the endpoint, its filters, headers, secrets, OAuth and
//! retry override.
//!
//! Guarantee: an endpoint or token URL is http(s) with a host and no credentials, and plain
//! http only where `allow_http = true`; custom headers are valid HTTP and never replace a header
//! the service sets itself (content type, signature, authorization, ...).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::header::HeaderName;
use reqwest::Url;
use toml::Value;

use super::reader::{bare_or_quoted, describe, invalid, join, Keys, Node};
use super::retry_policy::{retry, RETRY_KEYS};
use super::settings::*;
use super::validate::Ctx;
use super::{secret, ConfigError};
use crate::webhook::{EventType, SigningKey};

pub(super) const ORG_KEYS: Keys = &[
    ("url", r#"url = "https://hooks.example.com/consent""#),
    (
        "event_types",
        r#"event_types = ["user.updated", "event.created"]"#,
    ),
    ("regulations", r#"regulations = ["gdpr"]"#),
    (
        "headers",
        r#"headers = { "X-Tenant" = "acme", "X-Api-Key" = { env = "ACME_API_KEY" } }"#,
    ),
    (
        "signing_secret",
        r#"signing_secret = { env = "ACME_SIGNING_SECRET" }"#,
    ),
    (
        "previous_signing_secret",
        r#"previous_signing_secret = { env = "ACME_PREVIOUS_SIGNING_SECRET" }"#,
    ),
    ("allow_http", "allow_http = false"),
    ("allow_private_addresses", "allow_private_addresses = false"),
    ("concurrency", "concurrency = 16"),
    ("metrics_label", "metrics_label = true"),
    (
        "retry",
        r#"retry = { schedule = ["10s", "30s", "1m", "2m", "3m", "4m"], budget = "5m" }"#,
    ),
    (
        "oauth",
        r#"oauth = { token_url = "https://auth.example.com/oauth/token", client_id = "consent-webhooks", client_secret = { env = "ACME_OAUTH_CLIENT_SECRET" } }"#,
    ),
];

pub(super) const OAUTH_KEYS: Keys = &[
    (
        "token_url",
        r#"token_url = "https://auth.example.com/oauth/token""#,
    ),
    ("client_id", r#"client_id = "consent-webhooks""#),
    (
        "client_secret",
        r#"client_secret = { env = "ACME_OAUTH_CLIENT_SECRET" }"#,
    ),
    ("scope", r#"scope = "webhooks:write""#),
    ("auth_style", r#"auth_style = "basic""#),
    (
        "headers",
        r#"headers = { "X-Api-Version" = "2", "X-Api-Key" = { env = "ACME_TOKEN_API_KEY" } }"#,
    ),
];

const ORG_EXAMPLE: &str = r#"organizations.acme = { url = "https://hooks.example.com/consent" }"#;

/// Headers the service sets itself; a custom header may not replace them.
pub const RESERVED_HEADERS: [&str; 8] = [
    "content-type",
    "user-agent",
    "authorization",
    "host",
    "content-length",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// One organization from a value shaped like its `[organizations.<id>]` section: what the
/// registry holds. The same checks, key paths and examples as the file.
pub(super) fn organization_value(
    id: &str,
    value: &Value,
    delivery: &DeliverySettings,
    ctx: &Ctx<'_>,
) -> Result<OrganizationSettings, ConfigError> {
    let path = join("organizations", id);
    check_id(id, &path)?;
    let Value::Table(t) = value else {
        let found = describe(value);
        return Err(invalid(
            &path,
            format!("expected a table, found {found}"),
            ORG_EXAMPLE,
        ));
    };
    let node = Node::open(path, t, ORG_KEYS)?;
    organization(&node, delivery, ctx)
}

/// An organization id: not blank, at most 200 characters, no control characters or `/` (it is
/// a Kafka key, a URL path segment and a label value).
fn check_id(id: &str, path: &str) -> Result<(), ConfigError> {
    let problem = if id.trim().is_empty() {
        Some("an organization id must not be empty")
    } else if id.len() > 200 {
        Some("an organization id has at most 200 characters")
    } else if id.chars().any(|c| c.is_control() || c == '/') {
        Some("an organization id has no control characters and no `/`")
    } else {
        None
    };
    match problem {
        Some(message) => Err(invalid(path, message, ORG_EXAMPLE)),
        None => Ok(()),
    }
}

pub(super) fn organizations(
    root: &Node<'_>,
    delivery: &DeliverySettings,
    ctx: &Ctx<'_>,
) -> Result<BTreeMap<String, OrganizationSettings>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(table) = root.table("organizations")? else {
        return Ok(out);
    };
    for (id, value) in table {
        out.insert(id.clone(), organization_value(id, value, delivery, ctx)?);
    }
    Ok(out)
}

fn organization(
    node: &Node<'_>,
    delivery: &DeliverySettings,
    ctx: &Ctx<'_>,
) -> Result<OrganizationSettings, ConfigError> {
    let allow_http = node.bool_or("allow_http", false)?;
    let allow_private_addresses = node.bool_or("allow_private_addresses", false)?;
    // `allow_http` covers the token URL too: name it in both errors.
    let http = (allow_http, node.key_path("allow_http"));
    let url = http_url(node, "url", &http)?;

    let event_types = match node.strings("event_types")? {
        None => None,
        Some(names) if names.is_empty() => {
            return Err(node.err(
                "event_types",
                "lists no event type; remove the key to receive all six",
            ))
        }
        Some(names) => Some(
            names
                .iter()
                .map(|n| n.parse::<EventType>())
                .collect::<Result<BTreeSet<_>, _>>()
                .map_err(|m| node.err("event_types", m))?,
        ),
    };
    let regulations: BTreeSet<String> = match node.strings("regulations")? {
        None => BTreeSet::from(["gdpr".to_owned()]),
        Some(r) if r.is_empty() => {
            return Err(node.err("regulations", "must list at least one regulation"))
        }
        // Records spell regulations in any case (`GDPR`); filters match case-insensitively.
        Some(r) => r.into_iter().map(|r| r.trim().to_lowercase()).collect(),
    };

    let signing_key = signing_key_at(node, "signing_secret", ctx)?;
    let previous_signing_key = signing_key_at(node, "previous_signing_secret", ctx)?;
    if previous_signing_key.is_some() && signing_key.is_none() {
        return Err(node.err(
            "previous_signing_secret",
            "needs a signing_secret: it is the one being retired while signing_secret takes over",
        ));
    }
    let oauth = match node.table("oauth")? {
        None => None,
        Some(_) => Some(oauth(&node.child("oauth", OAUTH_KEYS)?, &http, ctx)?),
    };
    let retry = match node.table("retry")? {
        None => delivery.retry.clone(),
        Some(_) => retry(
            &node.child("retry", RETRY_KEYS)?,
            &delivery.retry,
            "delivery.retry.schedule",
        )?,
    };
    Ok(OrganizationSettings {
        url,
        event_types,
        regulations,
        headers: headers(node, "headers", ctx)?,
        signing_key,
        previous_signing_key,
        oauth,
        allow_http,
        allow_private_addresses,
        concurrency: node.count_or("concurrency", delivery.endpoint_concurrency)?,
        retry,
        metrics_label: match node.get("metrics_label") {
            None => None,
            Some(_) => Some(node.bool_or("metrics_label", false)?),
        },
    })
}

/// A Standard Webhooks signing secret from a secret reference at `key`, if set.
fn signing_key_at(
    node: &Node<'_>,
    key: &str,
    ctx: &Ctx<'_>,
) -> Result<Option<SigningKey>, ConfigError> {
    let Some(secret) = secret::read(node, key, ctx)? else {
        return Ok(None);
    };
    use secrecy::ExposeSecret;
    // The parse error is not shown: it can quote a character of the secret.
    let key_value = SigningKey::parse(secret.value.expose_secret()).map_err(|_| {
        node.err(
            key,
            format!(
                "the secret from {} is not a Standard Webhooks signing secret \
                 (`whsec_` followed by base64 of 24 to 64 bytes)",
                secret.source
            ),
        )
    })?;
    Ok(Some(key_value))
}

fn oauth(
    node: &Node<'_>,
    http: &(bool, String),
    ctx: &Ctx<'_>,
) -> Result<OAuthSettings, ConfigError> {
    let auth_style = match node.string("auth_style")?.as_deref() {
        None | Some("basic") => AuthStyle::Basic,
        Some("request_body") => AuthStyle::RequestBody,
        Some(other) => {
            return Err(node.err(
                "auth_style",
                format!("{other:?} is not one of: basic, request_body"),
            ))
        }
    };
    let client_secret = secret::read(node, "client_secret", ctx)?
        .ok_or_else(|| node.err("client_secret", "required key is missing"))?;
    Ok(OAuthSettings {
        token_url: http_url(node, "token_url", http)?,
        client_id: node.required_string("client_id")?,
        client_secret: client_secret.value,
        scope: node.nonempty_string("scope")?,
        auth_style,
        headers: headers(node, "headers", ctx)?,
    })
}

/// An http(s) URL with a host and no credentials; https unless `allow_http` (the flag, and its
/// key path for the message).
fn http_url(node: &Node<'_>, key: &str, allow_http: &(bool, String)) -> Result<Url, ConfigError> {
    let raw = node.required_string(key)?;
    // A URL with `@` may carry a password: describe it without quoting it.
    let shown = if raw.contains('@') {
        "the URL".to_owned()
    } else {
        format!("{raw:?}")
    };
    let url = Url::parse(raw.trim())
        .map_err(|e| node.err(key, format!("{shown} is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(node.err(key, format!("{shown} is not an http(s) URL")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(node.err(key, format!("{shown} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(node.err(
            key,
            "must not contain credentials (user:password@); use [oauth] or a signing secret",
        ));
    }
    if url.scheme() == "http" && !allow_http.0 {
        let allow = &allow_http.1;
        return Err(node.err(
            key,
            format!("{shown} is plain http; use https, or set {allow} = true (development only)"),
        ));
    }
    Ok(url)
}

/// Custom headers: valid names and values, none of the [`RESERVED_HEADERS`]. A value is a plain
/// string, or a secret reference (`{ env = ".." }` / `{ file = ".." }`) for API keys; a header
/// whose name says it carries a credential must be a reference.
fn headers(
    node: &Node<'_>,
    key: &str,
    ctx: &Ctx<'_>,
) -> Result<Vec<(String, CustomHeaderValue)>, ConfigError> {
    let Some(table) = node.table(key)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(table.len());
    for (name, value) in table {
        let path = join(&node.key_path(key), name);
        let err = |message: String| invalid(&path, message, node.example(key));
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(err(format!("{name:?} is not a valid HTTP header name")));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(err(format!(
                "{name:?} is set by the service and cannot be configured (reserved: {})",
                RESERVED_HEADERS.join(", ")
            )));
        }
        let value = match value {
            Value::String(text) => {
                if let Some(word) = credential_word(name) {
                    return Err(err(format!(
                        "{name:?} carries a credential (its name contains {word:?}): the value \
                         must not be written in the config file; use {{ env = \"VAR\" }} or \
                         {{ file = \"/path\" }}"
                    )));
                }
                CustomHeaderValue::Plain(text.clone())
            }
            Value::Table(_) => {
                let example = format!(r#"{} = {{ env = "ACME_API_KEY" }}"#, bare_or_quoted(name));
                let secret = secret::read_value(value, &path, &example, ctx)?;
                CustomHeaderValue::Secret(secret.value)
            }
            other => {
                return Err(err(format!(
                    "expected a string, or {{ env = \"VAR\" }} / {{ file = \"/path\" }} for a \
                     secret, found {}",
                    describe(other)
                )))
            }
        };
        // The value is not quoted back: custom headers sometimes carry tokens.
        if value.to_header_value().is_err() {
            let what = if value.is_secret() {
                "the secret's value"
            } else {
                "the value"
            };
            return Err(err(format!("{what} is not a valid HTTP header value")));
        }
        out.push((name.clone(), value));
    }
    Ok(out)
}

/// Name segments that mark a header carrying a credential (`X-Api-Key`, `X-Auth-Token`, ...).
const CREDENTIAL_WORDS: [&str; 12] = [
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "auth",
    "credential",
    "credentials",
    "cookie",
    "session",
    "signature",
];

/// The credential word in a header name, if any (segments split on `-`, `_` and `.`).
fn credential_word(name: &str) -> Option<&'static str> {
    name.split(['-', '_', '.']).find_map(|segment| {
        CREDENTIAL_WORDS
            .iter()
            .find(|w| segment.eq_ignore_ascii_case(w))
            .copied()
    })
}
