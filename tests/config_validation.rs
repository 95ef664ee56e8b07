//! deploy/config.example.toml loads as documented, given the environment variables it names.

use std::path::Path;
use std::time::Duration;

use consent_webhooks::config::{load_with_env, render_redacted, AuthStyle};
use consent_webhooks::webhook::EventType;
use secrecy::ExposeSecret;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml");
const CLIENT_SECRET: &str = "example-client-secret-8Jd2";
const SASL_PASSWORD: &str = "example-sasl-password-3Fk9";

fn env(name: &str) -> Option<String> {
    match name {
        "ACME_SIGNING_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "ACME_OAUTH_CLIENT_SECRET" => Some(CLIENT_SECRET.into()),
        "KAFKA_SASL_PASSWORD" => Some(SASL_PASSWORD.into()),
        _ => None,
    }
}

#[test]
fn example_config_loads() {
    let s = load_with_env(Path::new(EXAMPLE), &env, &[]).expect("example config loads");

    assert_eq!(s.kafka.brokers, "kafka-0.kafka:9092,kafka-1.kafka:9092");
    assert_eq!(s.kafka.input_topic, "consent.changes");
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
    assert_eq!(acme.headers, [("X-Tenant".to_owned(), "acme".to_owned())]);
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
    assert!(!rendered.contains(CLIENT_SECRET) && !rendered.contains(SASL_PASSWORD));
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
