//! Secrets from env and files, and that no secret value leaks into `Debug`, `render_redacted`
//! or error messages.

use std::path::Path;

use secrecy::ExposeSecret;

use super::{org, parse, test_env, CLIENT_SECRET, MIN, SASL_PASSWORD, SIGNING_SECRET};
use crate::config::{load_with_env, parse_str, render_redacted, Settings};

/// The distinctive part of the signing secret (after `whsec_`).
const SIGNING_BODY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn everything() -> Settings {
    parse(&org(
        "signing_secret = { env = \"ACME_SIGNING_SECRET\" }\n\
         [organizations.acme.oauth]\ntoken_url = \"https://auth.example/t\"\nclient_id = \"c\"\n\
         client_secret = { env = \"ACME_OAUTH_CLIENT_SECRET\" }\n\
         [kafka.secret_properties]\n\"sasl.password\" = { env = \"KAFKA_SASL_PASSWORD\" }",
    ))
    .unwrap()
}

fn assert_no_secret(text: &str) {
    for secret in [SIGNING_BODY, CLIENT_SECRET, SASL_PASSWORD] {
        assert!(!text.contains(secret), "secret {secret} leaked:\n{text}");
    }
}

#[test]
fn secrets_from_env_reach_the_settings() {
    let s = everything();
    let oauth = s.organizations["acme"].oauth.as_ref().unwrap();
    assert_eq!(oauth.client_secret.expose_secret(), CLIENT_SECRET);
    assert_eq!(
        s.kafka.secret_properties["sasl.password"].expose_secret(),
        SASL_PASSWORD
    );
    let key = s.organizations["acme"].signing_key.as_ref().unwrap();
    let expected = crate::webhook::SigningKey::parse(SIGNING_SECRET).unwrap();
    assert_eq!(key.sign("id", 1, b"{}"), expected.sign("id", 1, b"{}"));
}

#[test]
fn debug_of_settings_shows_no_secret() {
    assert_no_secret(&format!("{:?}", everything()));
    assert_no_secret(&format!("{:#?}", everything()));
}

#[test]
fn render_redacted_shows_no_secret_and_every_default() {
    let text = render_redacted(&everything());
    assert_no_secret(&text);
    assert!(
        text.contains("\"sasl.password\" = \"[redacted]\""),
        "{text}"
    );
    assert!(text.contains("client_secret = \"[redacted]\""), "{text}");
    assert!(text.contains("signing_secret = \"[redacted]\""), "{text}");
    for line in [
        "group_id = \"consent-webhooks\"",
        "listen = \"0.0.0.0:9464\"",
        "request_timeout = \"10s\"",
        "max_pending_per_organization = 2500",
        "schedule = [\"5s\", \"20s\", \"50s\", \"1m 50s\", \"3m 20s\", \"4m 50s\"]",
        "budget = \"5m\"",
        "regulations = [\"gdpr\"]",
        "auth_style = \"basic\"",
        "[organizations.acme.retry]",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The output is TOML in the file's layout.
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert!(
        table["organizations"]["acme"]["event_types"]
            .as_array()
            .unwrap()
            .len()
            == 6
    );
}

#[test]
fn rendered_settings_load_back_to_the_same_values_once_secrets_are_references() {
    let s = parse(&org(
        "headers = { \"X-Tenant\" = \"acme\" }\nconcurrency = 2",
    ))
    .unwrap();
    let again = parse(&render_redacted(&s)).unwrap();
    assert_eq!(render_redacted(&again), render_redacted(&s));
}

#[test]
fn secret_values_never_appear_in_errors() {
    // A secret pasted in clear is refused without quoting it.
    let e = super::error(&org(&format!("signing_secret = \"{SIGNING_SECRET}\"")));
    assert_no_secret(&e);
    // A secret that is present but invalid is refused without quoting it.
    let bad = "whsec_not-base64-Yt6!";
    let e = super::error(&org("signing_secret = { env = \"BAD_SIGNING_SECRET\" }"));
    assert!(e.contains("environment variable BAD_SIGNING_SECRET"), "{e}");
    assert!(!e.contains(bad) && !e.contains("Yt6"), "{e}");
}

#[test]
fn file_secrets_trim_the_trailing_newline_and_resolve_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/signing"),
        format!("{SIGNING_SECRET}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("client"), format!("{CLIENT_SECRET}\r\n")).unwrap();
    let absolute = dir.path().join("client");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{MIN}[organizations.acme]\nurl = \"https://a.example/\"\n\
             signing_secret = {{ file = \"secrets/signing\" }}\n\
             [organizations.acme.oauth]\ntoken_url = \"https://auth.example/t\"\nclient_id = \"c\"\n\
             client_secret = {{ file = {} }}\n",
            toml::Value::String(absolute.display().to_string())
        ),
    )
    .unwrap();
    let s = load_with_env(&config, &test_env, &[]).unwrap();
    let acme = &s.organizations["acme"];
    assert!(acme.signing_key.is_some());
    assert_eq!(
        acme.oauth.as_ref().unwrap().client_secret.expose_secret(),
        CLIENT_SECRET
    );
}

#[test]
fn unreadable_or_empty_secret_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let file = |name: &str| org(&format!("signing_secret = {{ file = \"{name}\" }}"));

    let e = parse_str(&file("empty"), dir.path(), &test_env, &[])
        .unwrap_err()
        .to_string();
    let empty = dir.path().join("empty");
    assert!(
        e.contains(&format!(
            "the secret from file {} is empty",
            empty.display()
        )),
        "{e}"
    );

    let e = parse_str(&file("missing"), dir.path(), &test_env, &[])
        .unwrap_err()
        .to_string();
    let missing = dir.path().join("missing");
    assert!(
        e.starts_with("organizations.acme.signing_secret: cannot read file"),
        "{e}"
    );
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("Example: "),
        "{e}"
    );
}

#[test]
fn load_reports_a_missing_config_file() {
    let e = load_with_env(Path::new("/nonexistent/config.toml"), &test_env, &[]).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("cannot read config file /nonexistent/config.toml"));
}

#[test]
fn rendered_urls_hide_their_query() {
    let s = parse(&org("concurrency = 2").replace(
        "https://hooks.acme.example/consent",
        "https://hooks.acme.example/consent?api_key=k3y-in-query#frag-s3cret",
    ))
    .unwrap();
    let text = render_redacted(&s);
    for secret in ["k3y-in-query", "s3cret"] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
    assert!(text.contains("?[redacted]"), "{text}");
}

#[test]
fn a_previous_signing_secret_needs_a_current_one_and_is_redacted() {
    let s = parse(&org("signing_secret = { env = \"ACME_SIGNING_SECRET\" }\n\
         previous_signing_secret = { env = \"ACME_SIGNING_SECRET\" }"))
    .unwrap();
    assert!(s.organizations["acme"].previous_signing_key.is_some());
    let text = render_redacted(&s);
    assert!(
        text.contains("previous_signing_secret = \"[redacted]\""),
        "{text}"
    );
    assert_no_secret(&text);
    let e = super::error(&org(
        "previous_signing_secret = { env = \"ACME_SIGNING_SECRET\" }",
    ));
    assert!(
        e.starts_with("organizations.acme.previous_signing_secret: needs a signing_secret"),
        "{e}"
    );
}
