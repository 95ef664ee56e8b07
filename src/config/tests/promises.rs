//! Configurations that load but could not keep a promise: retry policies below SPEC §4's
//! minimum (refused unless opted out), lane limits above the global one, regulation filters in
//! another case, and URLs the address guard will refuse (warned about).

use super::{org, parse, MIN};
use crate::config::{meets_minimum, render_redacted, warnings, RetrySettings};
use crate::webhook::EventType;

/// One retry table per row: (schedule, max_jitter, budget, opted out, loads?).
#[test]
fn retry_policies_keep_five_retries_within_five_minutes_unless_opted_out() {
    let rows: [(&str, &str, &str, bool, bool); 10] = [
        // The default schedule: six retries, the last at 290 s + 5 s of jitter.
        (
            r#""5s", "20s", "50s", "110s", "200s", "290s""#,
            "5s",
            "5m",
            false,
            true,
        ),
        // Exactly five, the last exactly at five minutes.
        (r#""1m", "2m", "3m", "4m", "5m""#, "0s", "5m", false, true),
        // Jitter would push the fifth past five minutes, but never past a 5m budget.
        (r#""1m", "2m", "3m", "4m", "5m""#, "30s", "5m", false, true),
        // With a longer budget it does push the fifth out.
        (r#""1m", "2m", "3m", "4m", "5m""#, "30s", "6m", false, false),
        // A longer budget is fine as long as five fall within five minutes.
        (
            r#""5s", "20s", "50s", "110s", "200s", "9m""#,
            "5s",
            "10m",
            false,
            true,
        ),
        (r#""5s", "20s", "50s", "110s""#, "5s", "5m", false, false),
        (
            r#""5s", "20s", "50s", "110s", "200s""#,
            "0s",
            "4m",
            false,
            false,
        ),
        // Tests compress time with the explicit opt-out.
        (r#""100ms", "200ms""#, "0s", "2s", true, true),
        (r#""5s", "20s", "50s", "110s""#, "5s", "5m", true, true),
        // The opt-out changes nothing for a policy that keeps the promise.
        (
            r#""5s", "20s", "50s", "110s", "200s", "290s""#,
            "5s",
            "5m",
            true,
            true,
        ),
    ];
    for (schedule, jitter, budget, opt_out, loads) in rows {
        let table = format!(
            "retry = {{ schedule = [{schedule}], max_jitter = \"{jitter}\", budget = \"{budget}\", \
             allow_below_minimum = {opt_out} }}"
        );
        let result = parse(&org(&table));
        assert_eq!(result.is_ok(), loads, "{table}: {result:?}");
        if let Ok(s) = result {
            // check-config's output shows the opt-out exactly when it is needed, and loads back.
            let retry = &s.organizations["acme"].retry;
            let rendered = render_redacted(&s);
            assert_eq!(
                rendered.contains("allow_below_minimum = true"),
                !meets_minimum(retry),
                "{table}\n{rendered}"
            );
            let again = parse(&rendered).unwrap_or_else(|e| panic!("{rendered}\n{e}"));
            assert_eq!(&again.organizations["acme"].retry, retry);
        }
    }
    assert!(meets_minimum(&RetrySettings::default()));
}

#[test]
fn lane_limit_defaults_below_a_smaller_global_limit() {
    let s = parse(&format!("{MIN}[delivery]\nmax_pending_records = 400")).unwrap();
    assert_eq!(s.delivery.max_pending_per_organization, 400);
    let s = parse(&format!(
        "{MIN}[delivery]\nmax_pending_records = 400\nmax_pending_per_organization = 400"
    ))
    .unwrap();
    assert_eq!(s.delivery.max_pending_per_organization, 400);
    let s = parse(&format!(
        "{MIN}[delivery]\nmax_pending_per_organization = 100"
    ))
    .unwrap();
    assert_eq!(
        (
            s.delivery.max_pending_records,
            s.delivery.max_pending_per_organization
        ),
        (5_000, 100)
    );
}

#[test]
fn regulations_match_case_insensitively() {
    let s = parse(&org("regulations = [\"GDPR\", \"Ccpa\"]")).unwrap();
    let acme = &s.organizations["acme"];
    assert_eq!(
        acme.regulations,
        ["ccpa".to_owned(), "gdpr".to_owned()].into()
    );
    for regulation in ["gdpr", "GDPR", "Gdpr", "ccpa", "CCPA"] {
        assert!(
            acme.accepts(EventType::UserCreated, regulation),
            "{regulation}"
        );
    }
    for regulation in ["lgpd", "LGPD", "gdpr2", ""] {
        assert!(
            !acme.accepts(EventType::UserCreated, regulation),
            "{regulation}"
        );
    }
    // The default filter too.
    let s = parse(&org("")).unwrap();
    assert!(s.organizations["acme"].accepts(EventType::UserCreated, "GDPR"));
}

/// One URL per row: (url, allow_private_addresses, the warned key or none).
#[test]
fn literal_non_global_addresses_are_warned_about() {
    let rows = [
        (
            "https://10.0.0.5/hooks",
            false,
            Some("organizations.acme.url"),
        ),
        (
            "https://127.0.0.1:8443/",
            false,
            Some("organizations.acme.url"),
        ),
        ("https://[::1]/", false, Some("organizations.acme.url")),
        (
            "https://[::ffff:192.168.1.1]/",
            false,
            Some("organizations.acme.url"),
        ),
        (
            "https://169.254.169.254/latest",
            false,
            Some("organizations.acme.url"),
        ),
        (
            "https://localhost:8443/",
            false,
            Some("organizations.acme.url"),
        ),
        (
            "https://api.localhost/",
            false,
            Some("organizations.acme.url"),
        ),
        ("https://10.0.0.5/hooks", true, None),
        ("https://93.184.216.34/hooks", false, None),
        ("https://hooks.example.com/", false, None),
    ];
    for (url, allow, expected) in rows {
        let s = parse(&format!(
            "{MIN}[organizations.acme]\nurl = \"{url}\"\nallow_private_addresses = {allow}\n"
        ))
        .unwrap();
        let found = warnings(&s);
        let keys: Vec<&str> = found.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, expected.into_iter().collect::<Vec<_>>(), "{url}");
        if let Some(warning) = found.first() {
            let text = warning.to_string();
            assert!(
                text.contains("address_refused")
                    && text.contains("organizations.acme.allow_private_addresses = true"),
                "{text}"
            );
        }
    }
}

#[test]
fn token_urls_are_warned_about_and_no_path_or_query_is_shown() {
    let s = parse(&org(
        "[organizations.acme.oauth]\ntoken_url = \"https://192.168.1.10/t?key=Zq8-secret\"\n\
         client_id = \"c\"\nclient_secret = { env = \"ACME_OAUTH_CLIENT_SECRET\" }",
    ))
    .unwrap();
    let found = warnings(&s);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "organizations.acme.oauth.token_url");
    let text = found[0].to_string();
    assert!(
        text.contains("192.168.1.10") && !text.contains("Zq8"),
        "{text}"
    );
}

#[test]
fn valid_librdkafka_properties_load() {
    let s = parse(&format!(
        "{MIN}[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"u\"\n\
         \"session.timeout.ms\" = 45000\n\"fetch.wait.max.ms\" = \"100\"\n\
         [kafka.secret_properties]\n\"sasl.password\" = {{ env = \"KAFKA_SASL_PASSWORD\" }}"
    ))
    .unwrap();
    assert_eq!(s.kafka.properties.len(), 5);
    assert_eq!(s.kafka.properties["session.timeout.ms"], "45000");
}
