//! Custom header values as secret references: read from env or files, sent marked sensitive,
//! never shown by `Debug`, `render_redacted` or errors.

use std::path::Path;

use super::{org, parse, test_env, API_KEY};
use crate::config::{parse_str, render_redacted, CustomHeaderValue};

fn with_secret_headers() -> crate::config::Settings {
    parse(&org(
        "headers = { \"X-Tenant\" = \"acme\", \"X-Api-Key\" = { env = \"ACME_API_KEY\" } }\n\
         [organizations.acme.oauth]\ntoken_url = \"https://auth.example/t\"\nclient_id = \"c\"\n\
         client_secret = { env = \"ACME_OAUTH_CLIENT_SECRET\" }\n\
         headers = { \"X-Token-Key\" = { env = \"ACME_API_KEY\" } }",
    ))
    .unwrap()
}

#[test]
fn secret_header_values_reach_the_request_marked_sensitive() {
    let s = with_secret_headers();
    let acme = &s.organizations["acme"];
    // Headers come in name order (TOML tables are sorted).
    let (name, value) = &acme.headers[0];
    assert_eq!(name, "X-Api-Key");
    assert!(value.is_secret() && value.plain().is_none());
    let header = value.to_header_value().unwrap();
    assert_eq!(header.to_str().unwrap(), API_KEY);
    assert!(header.is_sensitive());

    let (name, plain) = &acme.headers[1];
    assert_eq!((name.as_str(), plain.plain()), ("X-Tenant", Some("acme")));
    assert!(!plain.to_header_value().unwrap().is_sensitive());

    let oauth = acme.oauth.as_ref().unwrap();
    assert_eq!(
        oauth.headers[0]
            .1
            .to_header_value()
            .unwrap()
            .to_str()
            .unwrap(),
        API_KEY
    );
}

#[test]
fn secret_header_values_are_redacted_everywhere() {
    let s = with_secret_headers();
    let debug = format!("{s:?}");
    let rendered = render_redacted(&s);
    for text in [&debug, &rendered] {
        assert!(!text.contains(API_KEY), "header secret leaked:\n{text}");
    }
    assert!(
        rendered.contains(r#"headers = { X-Api-Key = "[redacted]", X-Tenant = "acme" }"#),
        "{rendered}"
    );
    assert!(
        rendered.contains(r#"headers = { X-Token-Key = "[redacted]" }"#),
        "{rendered}"
    );
    let bad = parse(&org(
        "headers = { \"X-A\" = { env = \"BAD_HEADER_SECRET\" } }",
    ))
    .unwrap_err();
    assert!(!bad.to_string().contains("evil.example"), "{bad}");
}

#[test]
fn secret_header_values_read_from_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-key"), format!("{API_KEY}\n")).unwrap();
    let s = parse_str(
        &org("headers = { \"X-Api-Key\" = { file = \"api-key\" } }"),
        dir.path(),
        &test_env,
        &[],
    )
    .unwrap();
    let value = &s.organizations["acme"].headers[0].1;
    assert_eq!(value.to_header_value().unwrap().to_str().unwrap(), API_KEY);
}

#[test]
fn plain_values_stay_allowed_for_headers_that_carry_no_credential() {
    // Name segments decide, not substrings: `X-Monkey` and `X-Author` carry no credential.
    for name in [
        "X-Tenant",
        "X-Monkey",
        "X-Author",
        "X-Api-Version",
        "Accept-Language",
    ] {
        let text = org(&format!("headers = {{ \"{name}\" = \"v\" }}"));
        let s = parse_str(&text, Path::new("/nonexistent"), &test_env, &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            s.organizations["acme"].headers[0].1.plain(),
            Some("v"),
            "{name}"
        );
    }
    for name in [
        "X-Api-Key",
        "Api_Key",
        "X-APIKEY",
        "X-Auth-Token",
        "Cookie",
        "X-Session",
    ] {
        let text = org(&format!("headers = {{ \"{name}\" = \"v\" }}"));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("carries a credential"), "{name}: {e}");
    }
    assert!(matches!(
        CustomHeaderValue::from("x"),
        CustomHeaderValue::Plain(_)
    ));
}
