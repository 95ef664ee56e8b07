//! `check-config` output: the validated settings as TOML, every default filled in.
//!
//! Guarantee: no secret value is ever written; a secret that is set (signing and client
//! secrets, secret Kafka properties, custom header values given as references) shows as
//! `"[redacted]"`, and so do the user info, query and fragment of endpoint and token URLs.
//! The output uses the file's layout and key names, so it can be diffed against the file.

use std::fmt::Write;
use std::time::Duration;

use toml::Value;

use super::reader::{bare_or_quoted, join};
use super::retry_policy::{meets_minimum, retries_within_window};
use super::settings::*;
use crate::webhook::EventType;

const REDACTED: &str = "[redacted]";

/// A URL with its user info and query (where API keys and signed tokens hide) redacted; the
/// rest stays, so the operator still sees which endpoint it is.
fn redacted_url(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
    }
    if !url.username().is_empty() {
        let _ = url.set_username(REDACTED);
    }
    if url.query().is_some() {
        url.set_query(Some(REDACTED));
    }
    if url.fragment().is_some() {
        url.set_fragment(Some(REDACTED));
    }
    url.to_string()
}

/// The settings as TOML text with defaults filled in and secrets shown as `"[redacted]"`.
pub fn render_redacted(settings: &Settings) -> String {
    let mut out =
        String::from("# Effective configuration: defaults filled in, secrets redacted.\n");
    let w = &mut out;

    let k = &settings.kafka;
    section(w, "kafka");
    line(w, "brokers", string(&k.brokers));
    line(w, "group_id", string(&k.group_id));
    line(w, "input_topic", string(&k.input_topic));
    line(w, "dead_letter_topic", string(&k.dead_letter_topic));
    line(w, "rejected_topic", string(&k.rejected_topic));
    line(w, "retry_topic", string(&k.retry_topic));
    section(w, "kafka.properties");
    for (name, value) in &k.properties {
        line(w, name, string(value));
    }
    section(w, "kafka.secret_properties");
    for name in k.secret_properties.keys() {
        line(w, name, string(REDACTED));
    }

    section(w, "server");
    line(w, "listen", string(&settings.server.listen.to_string()));

    match &settings.registry {
        Some(r) => {
            section(w, "registry");
            line(w, "enabled", "true".into());
            line(w, "topic", string(&r.topic));
            line(w, "clock_skew", duration(r.clock_skew));
            line(w, "secret_refresh", duration(r.secret_refresh));
        }
        None => w.push_str("\n# [registry]: off (organizations from this file only)\n"),
    }
    match &settings.admin {
        Some(a) => {
            section(w, "admin");
            line(w, "listen", string(&a.listen.to_string()));
            line(w, "token", string(REDACTED));
        }
        None => w.push_str("# [admin]: off\n"),
    }

    section(w, "rules");
    line(
        w,
        "volatile_fields",
        strings(&settings.rules.volatile_fields),
    );

    let d = &settings.delivery;
    section(w, "delivery");
    line(w, "connect_timeout", duration(d.connect_timeout));
    line(w, "request_timeout", duration(d.request_timeout));
    line(
        w,
        "max_response_body_bytes",
        d.max_response_body_bytes.to_string(),
    );
    line(
        w,
        "endpoint_concurrency",
        d.endpoint_concurrency.to_string(),
    );
    line(
        w,
        "max_in_flight_requests",
        d.max_in_flight_requests.to_string(),
    );
    line(w, "max_pending_records", d.max_pending_records.to_string());
    line(
        w,
        "max_pending_per_organization",
        d.max_pending_per_organization.to_string(),
    );
    line(
        w,
        "max_parked_in_memory",
        d.max_parked_in_memory.to_string(),
    );
    line(w, "drain_timeout", duration(d.drain_timeout));
    line(w, "user_agent", string(&d.user_agent));
    section(w, "delivery.retry");
    retry_lines(w, &d.retry);

    for (id, org) in &settings.organizations {
        let path = join("organizations", id);
        section(w, &path);
        organization(w, org);
        if let Some(oauth) = &org.oauth {
            section(w, &format!("{path}.oauth"));
            line(w, "token_url", string(&redacted_url(&oauth.token_url)));
            line(w, "client_id", string(&oauth.client_id));
            line(w, "client_secret", string(REDACTED));
            if let Some(scope) = &oauth.scope {
                line(w, "scope", string(scope));
            }
            line(w, "auth_style", string(oauth.auth_style.as_str()));
            line(w, "headers", headers(&oauth.headers));
        }
        section(w, &format!("{path}.retry"));
        retry_lines(w, &org.retry);
    }
    out
}

fn organization(w: &mut String, org: &OrganizationSettings) {
    line(w, "url", string(&redacted_url(&org.url)));
    let types: Vec<String> = match &org.event_types {
        Some(types) => types.iter().map(|t| t.as_str().to_owned()).collect(),
        None => EventType::ALL
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
    };
    line(w, "event_types", strings(&types));
    let regulations: Vec<String> = org.regulations.iter().cloned().collect();
    line(w, "regulations", strings(&regulations));
    line(w, "headers", headers(&org.headers));
    match org.signing_key {
        Some(_) => line(w, "signing_secret", string(REDACTED)),
        None => w.push_str("# signing_secret: none (requests are not signed)\n"),
    }
    if org.previous_signing_key.is_some() {
        line(w, "previous_signing_secret", string(REDACTED));
    }
    line(w, "allow_http", org.allow_http.to_string());
    line(
        w,
        "allow_private_addresses",
        org.allow_private_addresses.to_string(),
    );
    line(w, "concurrency", org.concurrency.to_string());
    line(
        w,
        "metrics_label",
        org.metrics_label.unwrap_or(true).to_string(),
    );
}

fn retry_lines(w: &mut String, retry: &RetrySettings) {
    let schedule: Vec<String> = retry.schedule.iter().map(|d| duration(*d)).collect();
    line(w, "schedule", format!("[{}]", schedule.join(", ")));
    line(w, "max_jitter", duration(retry.max_jitter));
    line(w, "budget", duration(retry.budget));
    // A validated policy below the SPEC minimum was opted out explicitly: show it, so the
    // output loads back and the weaker promise stays visible.
    if !meets_minimum(retry) {
        let _ = writeln!(
            w,
            "# below the promised minimum: {} retries within five minutes, budget {}",
            retries_within_window(retry),
            humantime::format_duration(retry.budget)
        );
        line(w, "allow_below_minimum", "true".into());
    }
}

fn section(w: &mut String, path: &str) {
    let _ = write!(w, "\n[{path}]\n");
}

fn line(w: &mut String, key: &str, value: String) {
    let _ = writeln!(w, "{} = {value}", bare_or_quoted(key));
}

fn string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn duration(d: Duration) -> String {
    string(&humantime::format_duration(d).to_string())
}

fn headers(headers: &[(String, CustomHeaderValue)]) -> String {
    let pairs: Vec<String> = headers
        .iter()
        .map(|(name, value)| {
            let shown = value.plain().unwrap_or(REDACTED);
            format!("{} = {}", bare_or_quoted(name), string(shown))
        })
        .collect();
    if pairs.is_empty() {
        "{}".into()
    } else {
        format!("{{ {} }}", pairs.join(", "))
    }
}
