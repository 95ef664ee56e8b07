//! deploy/config.example.toml loads as documented, given the environment variables it names;
//! `consent-webhooks check-config` refuses, warns and redacts as the README says.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use consent_webhooks::config::{load_with_env, render_redacted, AuthStyle};
use consent_webhooks::webhook::EventType;
use secrecy::ExposeSecret;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml");
const CLIENT_SECRET: &str = "example-client-secret-8Jd2";
const SASL_PASSWORD: &str = "example-sasl-password-3Fk9";
const API_KEY: &str = "example-api-key-6Tq1";

fn env(name: &str) -> Option<String> {
    match name {
        "ACME_SIGNING_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "ACME_OAUTH_CLIENT_SECRET" => Some(CLIENT_SECRET.into()),
        "KAFKA_SASL_PASSWORD" => Some(SASL_PASSWORD.into()),
        "ACME_API_KEY" => Some(API_KEY.into()),
        "CONSENT_WEBHOOKS_ADMIN_TOKEN" => Some("example-admin-token-2Lp7".into()),
        _ => None,
    }
}

#[test]
fn example_config_loads() {
    let s = load_with_env(Path::new(EXAMPLE), &env, &[]).expect("example config loads");

    assert_eq!(s.kafka.brokers, "kafka-0.kafka:9092,kafka-1.kafka:9092");
    assert_eq!(s.kafka.input_topic, "consent.changes");
    let registry = s.registry.as_ref().expect("[registry] enabled");
    assert_eq!(registry.topic, "consent.webhooks.organizations");
    assert_eq!(registry.clock_skew, Duration::from_millis(500));
    let admin = s.admin.as_ref().expect("[admin] listens");
    assert_eq!(admin.listen.port(), 9465);
    assert_eq!(s.organizations["acme"].metrics_label, Some(true));
    assert_eq!(s.kafka.properties["security.protocol"], "SASL_SSL");
    assert_eq!(
        s.kafka.secret_properties["sasl.password"].expose_secret(),
        SASL_PASSWORD
    );
    assert_eq!(s.server.listen.port(), 9464);
    assert_eq!(s.delivery.request_timeout, Duration::from_secs(10));
    assert_eq!(s.delivery.retry.schedule.len(), 6);
    assert!(s.delivery.user_agent.starts_with("consent-webhooks/"));

    let acme = &s.organizations["acme"];
    assert_eq!(acme.url.as_str(), "https://hooks.acme.example/consent");
    assert_eq!(
        acme.event_types,
        Some([EventType::UserUpdated, EventType::EventCreated].into())
    );
    assert!(acme.signing_key.is_some());
    // Headers come in name order (TOML tables are sorted).
    assert_eq!(acme.headers[1].0, "X-Tenant");
    assert_eq!(acme.headers[1].1.plain(), Some("acme"));
    let (name, api_key) = &acme.headers[0];
    assert_eq!(name, "X-Api-Key");
    assert_eq!(
        api_key.to_header_value().unwrap().to_str().unwrap(),
        API_KEY
    );
    let oauth = acme.oauth.as_ref().expect("acme has oauth");
    assert_eq!(oauth.client_secret.expose_secret(), CLIENT_SECRET);
    assert_eq!(oauth.auth_style, AuthStyle::Basic);
    assert_eq!(oauth.scope.as_deref(), Some("webhooks:write"));

    let globex = &s.organizations["globex"];
    assert_eq!(globex.event_types, None);
    assert!(globex.signing_key.is_none() && globex.oauth.is_none());
    assert_eq!(globex.concurrency, s.delivery.endpoint_concurrency);
    assert_eq!(globex.retry, s.delivery.retry);

    let rendered = render_redacted(&s);
    for secret in [CLIENT_SECRET, SASL_PASSWORD, API_KEY] {
        assert!(!rendered.contains(secret), "{secret} in\n{rendered}");
    }
    assert!(!format!("{s:?}").contains(CLIENT_SECRET));
}

#[test]
fn example_config_without_its_secrets_names_the_missing_variable() {
    let e = load_with_env(Path::new(EXAMPLE), &|_| None, &[]).unwrap_err();
    assert_eq!(e.key(), Some("kafka.secret_properties.\"sasl.password\""));
    assert!(e
        .to_string()
        .contains("environment variable KAFKA_SASL_PASSWORD is not set"));
}

#[test]
fn example_config_takes_overrides() {
    let vars = [
        ("CONSENT_WEBHOOKS__KAFKA__BROKERS", "127.0.0.1:9092"),
        ("CONSENT_WEBHOOKS__ORGANIZATIONS__GLOBEX__CONCURRENCY", "2"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let s = load_with_env(Path::new(EXAMPLE), &env, &vars).unwrap();
    assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(s.organizations["globex"].concurrency, 2);
}

/// `check-config` run as an operator would, on a file with `body` after a minimal `[kafka]`.
struct CheckConfig {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check_config(body: &str) -> CheckConfig {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!("[kafka]\nbrokers = \"127.0.0.1:9\"\n{body}\n"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_consent-webhooks"))
        .arg("check-config")
        .arg(&file)
        .env("CHECK_API_KEY", API_KEY)
        .env("CHECK_SASL_PASSWORD", SASL_PASSWORD)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .expect("run consent-webhooks check-config");
    CheckConfig {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

const ORG: &str = "[organizations.acme]\nurl = \"https://hooks.acme.example/c\"\n";

/// One row per behaviour: the file body, the exit code, a fragment of stdout and of stderr.
#[test]
fn check_config_refuses_warns_and_redacts() {
    let rows: Vec<(String, i32, &str, &str)> = vec![
        // A retry policy below SPEC §4's minimum fails, naming the opt-out...
        (
            format!("{ORG}retry = {{ schedule = [\"1s\", \"2s\"], budget = \"10s\" }}"),
            2,
            "",
            "invalid configuration: organizations.acme.retry.budget: 10s is under five minutes",
        ),
        (
            format!("{ORG}retry = {{ schedule = [\"1s\", \"2s\"], budget = \"10s\" }}"),
            2,
            "",
            "or set organizations.acme.retry.allow_below_minimum = true",
        ),
        // ... which, set, is accepted and shown.
        (
            format!("{ORG}retry = {{ schedule = [\"1s\", \"2s\"], budget = \"10s\", allow_below_minimum = true }}"),
            0,
            "allow_below_minimum = true",
            "",
        ),
        // A misspelled librdkafka property fails check-config, not only run.
        (
            "[kafka.properties]\n\"session.timout.ms\" = \"6000\"".to_owned(),
            2,
            "",
            "invalid configuration: kafka.properties.\"session.timout.ms\": librdkafka has no property",
        ),
        (
            "[kafka.secret_properties]\n\"sasl.passwrod\" = { env = \"CHECK_SASL_PASSWORD\" }".to_owned(),
            2,
            "",
            "kafka.secret_properties.\"sasl.passwrod\": librdkafka has no property",
        ),
        // A lane limit above the global one.
        (
            "[delivery]\nmax_pending_records = 1000\nmax_pending_per_organization = 5000".to_owned(),
            2,
            "",
            "delivery.max_pending_per_organization: 5000 is above delivery.max_pending_records (1000)",
        ),
        // An https URL at a literal private address: a warning on stderr, exit 0.
        (
            "[organizations.acme]\nurl = \"https://10.1.2.3/hooks?token=Zq8\"\n".to_owned(),
            0,
            "url = ",
            "warning: organizations.acme.url: the host 10.1.2.3 is not a public address",
        ),
        // Custom header values as secret references are redacted.
        (
            format!("{ORG}headers = {{ \"X-Tenant\" = \"acme\", \"X-Api-Key\" = {{ env = \"CHECK_API_KEY\" }} }}"),
            0,
            "headers = { X-Api-Key = \"[redacted]\", X-Tenant = \"acme\" }",
            "",
        ),
        // A credential header in clear is refused without quoting it.
        (
            format!("{ORG}headers = {{ \"X-Api-Key\" = \"{API_KEY}\" }}"),
            2,
            "",
            "organizations.acme.headers.X-Api-Key: \"X-Api-Key\" carries a credential",
        ),
        // Regulations are stored lower-case.
        (
            format!("{ORG}regulations = [\"GDPR\", \"CCPA\"]"),
            0,
            "regulations = [\"ccpa\", \"gdpr\"]",
            "",
        ),
    ];
    let mut failures = Vec::new();
    for (body, code, out, err) in rows {
        let run = check_config(&body);
        let leaked = [API_KEY, SASL_PASSWORD]
            .iter()
            .any(|s| run.stdout.contains(s) || run.stderr.contains(s));
        let ok = run.code == code
            && run.stdout.contains(out)
            && run.stderr.contains(err)
            && !leaked
            && (code != 2 || run.stderr.contains(". Example: "));
        if !ok {
            failures.push(format!(
                "{body}\n  exit {} (want {code}), stdout has {out:?}: {}, stderr has {err:?}: {}, \
                 leaked: {leaked}\n  stderr: {}",
                run.code,
                run.stdout.contains(out),
                run.stderr.contains(err),
                run.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_config_output_never_shows_the_private_url_query() {
    let run = check_config("[organizations.acme]\nurl = \"https://10.1.2.3/hooks?token=Zq8\"\n");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("Zq8"), "{}", run.stderr);
}
