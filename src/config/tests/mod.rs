//! Unit tests of config loading: defaults, one row per validation rule, overrides, secrets and
//! redaction.

mod headers;
mod overrides;
mod promises;
mod secrets;
mod validation;

use std::path::Path;
use std::time::Duration;

use super::reader::Keys;
use super::*;

/// The smallest valid file.
pub(super) const MIN: &str = "[kafka]\nbrokers = \"k:9092\"\n";
pub(super) const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(super) const CLIENT_SECRET: &str = "client-secret-Qz7vX2pLw9";
pub(super) const SASL_PASSWORD: &str = "sasl-password-Hk4mR8tN1";
pub(super) const API_KEY: &str = "api-key-Wm3qP7zR5";

/// The environment secrets are read from in these tests.
pub(super) fn test_env(name: &str) -> Option<String> {
    match name {
        "ACME_SIGNING_SECRET" => Some(SIGNING_SECRET.into()),
        "ACME_OAUTH_CLIENT_SECRET" => Some(CLIENT_SECRET.into()),
        "KAFKA_SASL_PASSWORD" => Some(SASL_PASSWORD.into()),
        "EMPTY_SECRET" => Some(String::new()),
        "BAD_SIGNING_SECRET" => Some("whsec_not-base64-Yt6!".into()),
        "ACME_API_KEY" => Some(API_KEY.into()),
        "BAD_HEADER_SECRET" => Some("api-key\nHost: evil.example".into()),
        _ => None,
    }
}

pub(super) fn parse(toml: &str) -> Result<Settings, ConfigError> {
    parse_with(toml, &[])
}

pub(super) fn parse_with(toml: &str, overrides: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let vars: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_str(toml, Path::new("/nonexistent"), &test_env, &vars)
}

pub(super) fn error(toml: &str) -> String {
    match parse(toml) {
        Ok(_) => panic!("expected an error for:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

/// A file with organization `acme` at a valid URL plus `body` in its table.
pub(super) fn org(body: &str) -> String {
    format!("{MIN}[organizations.acme]\nurl = \"https://hooks.acme.example/consent\"\n{body}\n")
}

#[test]
fn minimal_file_takes_every_default() {
    let s = parse(MIN).unwrap();
    assert_eq!(s.kafka.brokers, "k:9092");
    assert_eq!(s.kafka.group_id, "consent-webhooks");
    assert_eq!(s.kafka.input_topic, "consent.changes");
    assert_eq!(s.kafka.dead_letter_topic, "consent.webhooks.dead-letter");
    assert_eq!(s.kafka.rejected_topic, "consent.changes.rejected");
    assert!(s.kafka.properties.is_empty() && s.kafka.secret_properties.is_empty());
    assert_eq!(s.server.listen.to_string(), "0.0.0.0:9464");
    assert_eq!(
        s.rules.volatile_fields,
        ["updated_at", "version", "last_seen_country"]
    );
    let d = &s.delivery;
    assert_eq!(d.connect_timeout, Duration::from_secs(5));
    assert_eq!(d.request_timeout, Duration::from_secs(10));
    assert_eq!(d.max_response_body_bytes, 65536);
    assert_eq!(d.endpoint_concurrency, 16);
    assert_eq!(d.max_in_flight_requests, 512);
    assert_eq!(d.max_pending_records, 5_000);
    assert_eq!(d.max_pending_per_organization, 2_500);
    assert_eq!(d.drain_timeout, Duration::from_secs(15));
    assert_eq!(
        d.user_agent,
        format!("consent-webhooks/{}", env!("CARGO_PKG_VERSION"))
    );
    let secs: Vec<u64> = d.retry.schedule.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [5, 20, 50, 110, 200, 290]);
    assert_eq!(d.retry.max_jitter, Duration::from_secs(5));
    assert_eq!(d.retry.budget, Duration::from_secs(300));
    assert!(s.organizations.is_empty());
}

#[test]
fn default_schedule_keeps_the_spec_promise() {
    // SPEC §4: at least five retries within five minutes, jitter included.
    let r = RetrySettings::default();
    let within = r
        .schedule
        .iter()
        .filter(|d| **d + r.max_jitter <= Duration::from_secs(300));
    assert!(within.count() >= 5);
}

#[test]
fn organization_defaults_come_from_delivery() {
    let text = format!(
        "{MIN}[delivery]\nendpoint_concurrency = 3\n[delivery.retry]\nschedule = [\"1s\", \"2s\"]\n\
         budget = \"10s\"\nallow_below_minimum = true\n[organizations.acme]\nurl = \"https://hooks.acme.example/consent\"\n"
    );
    let s = parse(&text).unwrap();
    let acme = &s.organizations["acme"];
    assert_eq!(acme.url.as_str(), "https://hooks.acme.example/consent");
    assert_eq!(acme.event_types, None);
    assert_eq!(acme.regulations, ["gdpr".to_owned()].into());
    assert!(acme.headers.is_empty() && acme.signing_key.is_none() && acme.oauth.is_none());
    assert!(!acme.allow_http && !acme.allow_private_addresses);
    assert_eq!(acme.concurrency, 3);
    assert_eq!(acme.retry, s.delivery.retry);
    assert!(acme.accepts(crate::webhook::EventType::UserDeleted, "gdpr"));
    assert!(!acme.accepts(crate::webhook::EventType::UserDeleted, "ccpa"));
}

#[test]
fn partial_retry_override_takes_the_rest_from_delivery() {
    let s = parse(&org(
        "retry = { schedule = [\"1s\", \"1m\"], max_jitter = \"0s\", allow_below_minimum = true }\n\
         allow_http = true",
    ))
    .unwrap();
    let r = &s.organizations["acme"].retry;
    assert_eq!(
        r.schedule,
        [Duration::from_secs(1), Duration::from_secs(60)]
    );
    assert_eq!(r.max_jitter, Duration::ZERO);
    assert_eq!(r.budget, Duration::from_secs(300));
}

#[test]
fn full_organization_parses() {
    let s = parse(&org(
        "event_types = [\"user.updated\", \"event.created\"]\nregulations = [\"gdpr\", \"ccpa\"]\n\
         headers = { \"X-Tenant\" = \"acme\" }\nsigning_secret = { env = \"ACME_SIGNING_SECRET\" }\n\
         concurrency = 4\n[organizations.acme.oauth]\ntoken_url = \"https://auth.acme.example/t\"\n\
         client_id = \"cw\"\nclient_secret = { env = \"ACME_OAUTH_CLIENT_SECRET\" }\n\
         scope = \"webhooks:write\"\nauth_style = \"request_body\"\nheaders = { \"X-Api-Version\" = \"2\" }",
    ))
    .unwrap();
    let acme = &s.organizations["acme"];
    assert_eq!(acme.event_types.as_ref().map(|t| t.len()), Some(2));
    assert_eq!(acme.regulations.len(), 2);
    assert_eq!(format!("{:?}", acme.headers), r#"[("X-Tenant", "acme")]"#);
    assert!(acme.signing_key.is_some());
    assert_eq!(acme.concurrency, 4);
    let oauth = acme.oauth.as_ref().unwrap();
    assert_eq!(oauth.token_url.as_str(), "https://auth.acme.example/t");
    assert_eq!(oauth.client_id, "cw");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&oauth.client_secret),
        CLIENT_SECRET
    );
    assert_eq!(oauth.scope.as_deref(), Some("webhooks:write"));
    assert_eq!(oauth.auth_style, AuthStyle::RequestBody);
    assert_eq!(
        format!("{:?}", oauth.headers),
        r#"[("X-Api-Version", "2")]"#
    );
}

/// Every key the loader accepts is documented in deploy/config.example.toml.
#[test]
fn example_file_documents_every_key() {
    let example = include_str!("../../../deploy/config.example.toml");
    let tables: [(&str, Keys); 10] = [
        ("root", validate::ROOT_KEYS),
        ("kafka", validate::KAFKA_KEYS),
        ("server", validate::SERVER_KEYS),
        ("rules", validate::RULES_KEYS),
        ("delivery", validate::DELIVERY_KEYS),
        ("retry", retry_policy::RETRY_KEYS),
        ("organization", validate_org::ORG_KEYS),
        ("oauth", validate_org::OAUTH_KEYS),
        ("registry", validate::REGISTRY_KEYS),
        ("admin", validate::ADMIN_KEYS),
    ];
    for (table, keys) in tables {
        for (key, _) in keys {
            let documented = example.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} ="))
                    || l.contains(&format!(".{key}]"))
                    || l.starts_with(&format!("[{key}"))
            });
            assert!(
                documented,
                "{table} key `{key}` is not in deploy/config.example.toml"
            );
        }
    }
    for key in ["env =", "file ="] {
        assert!(
            example.contains(key),
            "secret reference `{key}` undocumented"
        );
    }
}

/// Every example line shown in errors is itself valid TOML.
#[test]
fn every_example_line_is_valid_toml() {
    let all = [
        validate::ROOT_KEYS,
        validate::KAFKA_KEYS,
        validate::SERVER_KEYS,
        validate::RULES_KEYS,
        validate::DELIVERY_KEYS,
        retry_policy::RETRY_KEYS,
        validate_org::ORG_KEYS,
        validate_org::OAUTH_KEYS,
        secret::SECRET_KEYS,
    ];
    for (key, example) in all.iter().flat_map(|k| k.iter()) {
        assert!(
            toml::from_str::<toml::Table>(example).is_ok(),
            "example of `{key}` is not TOML: {example}"
        );
    }
}
