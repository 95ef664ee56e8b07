//! `CONSENT_WEBHOOKS__*` overrides.

use std::time::Duration;

use super::{org, parse_with, MIN};
use crate::config::ConfigError;
use crate::webhook::EventType;

#[test]
fn override_replaces_a_file_value() {
    let s = parse_with(
        MIN,
        &[("CONSENT_WEBHOOKS__KAFKA__BROKERS", "b-0:9092,b-1:9092")],
    )
    .unwrap();
    assert_eq!(s.kafka.brokers, "b-0:9092,b-1:9092");
}

#[test]
fn override_creates_missing_tables_and_keys() {
    let s = parse_with(
        MIN,
        &[
            ("CONSENT_WEBHOOKS__DELIVERY__REQUEST_TIMEOUT", "3s"),
            (
                "CONSENT_WEBHOOKS__DELIVERY__RETRY__SCHEDULE",
                r#"["1s", "2s"]"#,
            ),
            ("CONSENT_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT_REQUESTS", "7"),
            (
                "CONSENT_WEBHOOKS__DELIVERY__RETRY__ALLOW_BELOW_MINIMUM",
                "true",
            ),
        ],
    )
    .unwrap();
    assert_eq!(s.delivery.request_timeout, Duration::from_secs(3));
    assert_eq!(
        s.delivery.retry.schedule,
        [Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!(s.delivery.max_in_flight_requests, 7);
}

#[test]
fn segments_match_existing_keys_case_insensitively() {
    let file = format!("{MIN}[organizations.AcmeCorp]\nurl = \"https://a.example/\"\n");
    let s = parse_with(
        &file,
        &[(
            "CONSENT_WEBHOOKS__ORGANIZATIONS__ACMECORP__CONCURRENCY",
            "4",
        )],
    )
    .unwrap();
    assert_eq!(s.organizations.len(), 1);
    assert_eq!(s.organizations["AcmeCorp"].concurrency, 4);
}

#[test]
fn new_organization_from_env_is_lower_case() {
    let s = parse_with(
        MIN,
        &[
            (
                "CONSENT_WEBHOOKS__ORGANIZATIONS__NEWCO__URL",
                "https://hooks.newco.example/c",
            ),
            (
                "CONSENT_WEBHOOKS__ORGANIZATIONS__NEWCO__EVENT_TYPES",
                r#"["user.updated"]"#,
            ),
            (
                "CONSENT_WEBHOOKS__ORGANIZATIONS__NEWCO__HEADERS__X-TENANT",
                "newco",
            ),
        ],
    )
    .unwrap();
    let newco = &s.organizations["newco"];
    assert_eq!(newco.url.as_str(), "https://hooks.newco.example/c");
    assert_eq!(newco.event_types, Some([EventType::UserUpdated].into()));
    assert_eq!(format!("{:?}", newco.headers), r#"[("x-tenant", "newco")]"#);
}

#[test]
fn values_parse_as_toml_when_they_are_toml() {
    let s = parse_with(
        &org(""),
        &[
            ("CONSENT_WEBHOOKS__ORGANIZATIONS__ACME__ALLOW_HTTP", "true"),
            (
                "CONSENT_WEBHOOKS__ORGANIZATIONS__ACME__URL",
                "http://localhost:8080/hook",
            ),
            (
                "CONSENT_WEBHOOKS__KAFKA__PROPERTIES__SECURITY.PROTOCOL",
                "SSL",
            ),
        ],
    )
    .unwrap();
    assert!(s.organizations["acme"].allow_http);
    assert_eq!(
        s.organizations["acme"].url.as_str(),
        "http://localhost:8080/hook"
    );
    assert_eq!(s.kafka.properties["security.protocol"], "SSL");
}

#[test]
fn a_string_in_the_file_keeps_the_raw_text() {
    let file = format!("{MIN}group_id = \"g\"\n");
    let s = parse_with(&file, &[("CONSENT_WEBHOOKS__KAFKA__GROUP_ID", "42")]).unwrap();
    assert_eq!(s.kafka.group_id, "42");
    let s = parse_with(
        &file,
        &[("CONSENT_WEBHOOKS__KAFKA__GROUP_ID", "\"quoted\"")],
    )
    .unwrap();
    assert_eq!(s.kafka.group_id, "quoted");
}

#[test]
fn errors_on_overridden_keys_name_the_variable() {
    let e = parse_with(MIN, &[("CONSENT_WEBHOOKS__KAFKA__GROUP_ID", "42")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kafka.group_id (set by environment variable CONSENT_WEBHOOKS__KAFKA__GROUP_ID): \
         expected a string, found the integer 42. Example: group_id = \"consent-webhooks\""
    );
    let e = parse_with(MIN, &[("CONSENT_WEBHOOKS__DELIVERY__TIMEOUT", "3s")]).unwrap_err();
    assert!(e.to_string().starts_with(
        "delivery.timeout (set by environment variable CONSENT_WEBHOOKS__DELIVERY__TIMEOUT): unknown key"
    ));
    // A whole table set from env: errors inside it name that variable.
    let e = parse_with(
        MIN,
        &[(
            "CONSENT_WEBHOOKS__ORGANIZATIONS__X",
            r#"{ url = "ftp://x" }"#,
        )],
    )
    .unwrap_err();
    assert!(e
        .to_string()
        .contains("(set by environment variable CONSENT_WEBHOOKS__ORGANIZATIONS__X)"));
}

#[test]
fn deeper_overrides_refine_shallower_ones() {
    let s = parse_with(
        MIN,
        &[
            ("CONSENT_WEBHOOKS__ORGANIZATIONS__X__CONCURRENCY", "3"),
            (
                "CONSENT_WEBHOOKS__ORGANIZATIONS__X",
                r#"{ url = "https://x.example/", concurrency = 9 }"#,
            ),
        ],
    )
    .unwrap();
    assert_eq!(s.organizations["x"].concurrency, 3);
}

#[test]
fn secret_references_can_come_from_env_but_values_cannot() {
    let key = "CONSENT_WEBHOOKS__ORGANIZATIONS__ACME__SIGNING_SECRET";
    let s = parse_with(&org(""), &[(key, r#"{ env = "ACME_SIGNING_SECRET" }"#)]).unwrap();
    assert!(s.organizations["acme"].signing_key.is_some());
    let e = parse_with(&org(""), &[(key, super::SIGNING_SECRET)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("must not be written in the config file"), "{e}");
    assert!(!e.contains("MfKQ9r8G"), "{e}");
}

#[test]
fn other_variables_are_ignored() {
    let s = parse_with(
        MIN,
        &[
            ("CONSENT_WEBHOOKS_KAFKA__BROKERS", "x:1"),
            ("PATH", "/bin"),
            ("KAFKA_BROKERS", "y:1"),
        ],
    )
    .unwrap();
    assert_eq!(s.kafka.brokers, "k:9092");
}

#[test]
fn malformed_variables_are_errors() {
    for (var, fragment) in [
        ("CONSENT_WEBHOOKS__KAFKA____BROKERS", "empty key segment"),
        ("CONSENT_WEBHOOKS__", "empty key segment"),
        (
            "CONSENT_WEBHOOKS__KAFKA__BROKERS__HOST",
            "`kafka.brokers` is not a table",
        ),
    ] {
        match parse_with(MIN, &[(var, "x")]) {
            Err(e @ ConfigError::Override { .. }) => {
                let m = e.to_string();
                assert!(
                    m.starts_with(&format!("environment variable {var}: {fragment}")),
                    "{m}"
                );
                assert!(m.contains("Example: CONSENT_WEBHOOKS__"), "{m}");
            }
            other => panic!("{var}: expected an override error, got {other:?}"),
        }
    }
}

#[test]
fn ambiguous_case_insensitive_match_is_an_error() {
    let file = format!(
        "{MIN}[organizations.Acme]\nurl = \"https://a.example/\"\n[organizations.ACME]\nurl = \"https://b.example/\"\n"
    );
    let e = parse_with(
        &file,
        &[("CONSENT_WEBHOOKS__ORGANIZATIONS__acme__CONCURRENCY", "2")],
    );
    assert!(e.unwrap_err().to_string().contains("matches both"));
}
