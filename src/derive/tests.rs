//! One row per rule of SPEC §3, per suppression reason, per comparison rule, and per way a
//! record can break SPEC §1.

use serde_json::{json, Value};

use super::*;

const ORG: &str = "acme";

fn user(extra: Value) -> Value {
    let mut u = json!({"id": "u1", "organization_id": ORG, "email": "a@example.com"});
    merge(&mut u, extra);
    u
}

fn event(status: Option<&str>) -> Value {
    let mut e = json!({"id": "e1", "organization_id": ORG, "user": {"id": "u1"},
        "consents": {"purposes": [{"id": "analytics", "enabled": true}]}});
    if let Some(status) = status {
        e["status"] = json!(status);
    }
    e
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(extra)) = (target.as_object_mut(), extra) {
        t.extend(extra);
    }
}

fn record(entity_type: &str, action: &str, before: Value, after: Value, extra: Value) -> Value {
    let mut r = json!({
        "id": "c1", "organization_id": ORG, "occurred_at": "2019-08-07T10:45:11Z",
        "entity_type": entity_type, "action": action, "before": before, "after": after,
    });
    merge(&mut r, extra);
    r
}

fn run(record: &Value) -> Result<Derived, Rejection> {
    derive_record(record.to_string().as_bytes(), &Rules::default())
}

fn body(record: &Value) -> Value {
    match run(record) {
        Ok(Derived::Webhook(event)) => serde_json::from_slice(&event.body).unwrap(),
        other => panic!("expected a webhook for {record}, got {other:?}"),
    }
}

#[test]
fn derivation_rules() {
    let pending = event(Some("pending_approval"));
    let confirmed = event(Some("confirmed"));
    let u_before = user(json!({"consents": {"purposes": []}}));
    let u_after = user(json!({"consents": {"purposes": [{"id": "analytics", "enabled": true}]}}));
    // (rule, record, expected type, expected parameters)
    let rows: Vec<(&str, Value, &str, Value)> = vec![
        (
            "R1 event created",
            record(
                "event",
                "created",
                Value::Null,
                confirmed.clone(),
                json!({}),
            ),
            "event.created",
            json!({"entity": confirmed}),
        ),
        (
            "R1 pending event created",
            record("event", "created", Value::Null, pending.clone(), json!({})),
            "event.created",
            json!({"entity": pending}),
        ),
        (
            "R2 event updated",
            record(
                "event",
                "updated",
                pending.clone(),
                confirmed.clone(),
                json!({}),
            ),
            "event.updated",
            json!({"source": null, "old_entity": pending, "new_entity": confirmed}),
        ),
        (
            "R2 event updated with source",
            record(
                "event",
                "updated",
                pending.clone(),
                confirmed.clone(),
                json!({"source": confirmed}),
            ),
            "event.updated",
            json!({"source": confirmed, "old_entity": pending, "new_entity": confirmed}),
        ),
        (
            "R3 event deleted",
            record(
                "event",
                "deleted",
                confirmed.clone(),
                Value::Null,
                json!({}),
            ),
            "event.deleted",
            json!({"entity": confirmed}),
        ),
        (
            "R4 user created",
            record("user", "created", Value::Null, u_after.clone(), json!({})),
            "user.created",
            json!({"entity": u_after}),
        ),
        (
            "R4 user created by a pending event",
            record(
                "user",
                "created",
                Value::Null,
                u_before.clone(),
                json!({"source": pending}),
            ),
            "user.created",
            json!({"entity": u_before}),
        ),
        (
            "R5 user updated by a confirmed event",
            record(
                "user",
                "updated",
                u_before.clone(),
                u_after.clone(),
                json!({"source": confirmed}),
            ),
            "user.updated",
            json!({"source": confirmed, "old_entity": u_before, "new_entity": u_after}),
        ),
        (
            "R5 user updated, status absent = confirmed",
            record(
                "user",
                "updated",
                u_before.clone(),
                u_after.clone(),
                json!({"source": event(None)}),
            ),
            "user.updated",
            json!({"source": event(None), "old_entity": u_before, "new_entity": u_after}),
        ),
        (
            "R5 user updated without source",
            record(
                "user",
                "updated",
                u_before.clone(),
                u_after.clone(),
                json!({}),
            ),
            "user.updated",
            json!({"source": null, "old_entity": u_before, "new_entity": u_after}),
        ),
        (
            "R6 user deleted",
            record("user", "deleted", u_after.clone(), Value::Null, json!({})),
            "user.deleted",
            json!({"entity": u_after}),
        ),
    ];
    for (rule, record, expected_type, expected_parameters) in rows {
        let body = body(&record);
        assert_eq!(body["type"], expected_type, "{rule}");
        assert_eq!(body["parameters"], expected_parameters, "{rule}");
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 6, "{rule}: {keys:?}");
        assert_eq!(body["organization_id"], ORG, "{rule}");
        assert_eq!(body["regulation"], "gdpr", "{rule}");
        assert_eq!(body["created_at"], "2019-08-07T10:45:11Z", "{rule}");
        assert_eq!(body["id"], event_id(ORG, "c1"), "{rule}");
    }
}

#[test]
fn suppressions() {
    let u_before = user(json!({"consents": {"purposes": []}}));
    let u_after = user(json!({"consents": {"purposes": [{"id": "analytics", "enabled": true}]}}));
    let rows: Vec<(&str, Value, Suppression)> = vec![
        (
            "R7 disabled event created",
            record(
                "event",
                "created",
                Value::Null,
                event(None),
                json!({"disable_integrations": true}),
            ),
            Suppression::IntegrationsDisabled,
        ),
        (
            "R7 disabled user updated",
            record(
                "user",
                "updated",
                u_before.clone(),
                u_after.clone(),
                json!({"disable_integrations": true}),
            ),
            Suppression::IntegrationsDisabled,
        ),
        (
            "R7 disabled user deleted",
            record(
                "user",
                "deleted",
                u_before.clone(),
                Value::Null,
                json!({"disable_integrations": true}),
            ),
            Suppression::IntegrationsDisabled,
        ),
        (
            "pending_approval source",
            record(
                "user",
                "updated",
                u_before.clone(),
                u_after.clone(),
                json!({"source": event(Some("pending_approval"))}),
            ),
            Suppression::PendingSource,
        ),
        (
            "any other status is pending",
            record(
                "user",
                "updated",
                u_before.clone(),
                u_after.clone(),
                json!({"source": event(Some("awaiting_email"))}),
            ),
            Suppression::PendingSource,
        ),
        (
            "null status is pending",
            record(
                "user",
                "updated",
                u_before.clone(),
                u_after.clone(),
                json!({"source": event(None).as_object().unwrap().clone().into_iter().chain([("status".to_string(), Value::Null)]).collect::<serde_json::Map<_, _>>()}),
            ),
            Suppression::PendingSource,
        ),
        (
            "only volatile fields changed",
            record(
                "user",
                "updated",
                user(
                    json!({"updated_at": "2020-01-01T00:00:00Z", "version": 1, "last_seen_country": "FR"}),
                ),
                user(
                    json!({"updated_at": "2021-01-01T00:00:00Z", "version": 2, "last_seen_country": "DE"}),
                ),
                json!({}),
            ),
            Suppression::NotEffective,
        ),
        (
            "key order only",
            record(
                "user",
                "updated",
                json!({"id": "u1", "a": 1, "b": 2}),
                json!({"b": 2, "a": 1, "id": "u1"}),
                json!({}),
            ),
            Suppression::NotEffective,
        ),
        (
            "string array reordered",
            record(
                "user",
                "updated",
                user(json!({"tags": ["x", "y"]})),
                user(json!({"tags": ["y", "x", "x"]})),
                json!({}),
            ),
            Suppression::NotEffective,
        ),
        (
            "id array reordered",
            record(
                "user",
                "updated",
                user(json!({"purposes": [{"id": "a", "on": true}, {"id": "b", "on": false}]})),
                user(json!({"purposes": [{"id": "b", "on": false}, {"id": "a", "on": true}]})),
                json!({}),
            ),
            Suppression::NotEffective,
        ),
    ];
    for (name, record, expected) in rows {
        assert_eq!(run(&record), Ok(Derived::Suppressed(expected)), "{name}");
    }
}

#[test]
fn effective_updates_are_delivered() {
    let rows: Vec<(&str, Value, Value)> = vec![
        (
            "other arrays in order",
            user(json!({"scores": [1, 2]})),
            user(json!({"scores": [2, 1]})),
        ),
        (
            "string set changed",
            user(json!({"tags": ["x"]})),
            user(json!({"tags": ["x", "y"]})),
        ),
        (
            "id map entry changed",
            user(json!({"p": [{"id": "a", "on": true}]})),
            user(json!({"p": [{"id": "a", "on": false}]})),
        ),
        (
            "nested volatile-named field is not volatile",
            user(json!({"n": {"version": 1}})),
            user(json!({"n": {"version": 2}})),
        ),
    ];
    for (name, before, after) in rows {
        let body = body(&record("user", "updated", before, after, json!({})));
        assert_eq!(body["type"], "user.updated", "{name}");
    }
}

#[test]
fn regulation_defaults() {
    let with_reg = |r: &str| json!({"id": "e1", "regulation": r});
    let rows: Vec<(&str, Value, &str)> = vec![
        (
            "record wins",
            record(
                "event",
                "updated",
                with_reg("ccpa"),
                with_reg("lgpd"),
                json!({"regulation": "cpra"}),
            ),
            "cpra",
        ),
        (
            "after's",
            record(
                "event",
                "updated",
                with_reg("ccpa"),
                with_reg("lgpd"),
                json!({}),
            ),
            "lgpd",
        ),
        (
            "before's when after has none",
            record(
                "event",
                "updated",
                with_reg("ccpa"),
                json!({"id": "e1"}),
                json!({}),
            ),
            "ccpa",
        ),
        (
            "before's on delete",
            record("event", "deleted", with_reg("ccpa"), Value::Null, json!({})),
            "ccpa",
        ),
        (
            "gdpr by default",
            record(
                "event",
                "created",
                Value::Null,
                json!({"id": "e1"}),
                json!({}),
            ),
            "gdpr",
        ),
        (
            "null record regulation = absent",
            record(
                "event",
                "created",
                Value::Null,
                with_reg("ccpa"),
                json!({"regulation": null}),
            ),
            "ccpa",
        ),
    ];
    for (name, record, expected) in rows {
        assert_eq!(body(&record)["regulation"], expected, "{name}");
    }
}

#[test]
fn entities_are_forwarded_unchanged() {
    let raw = r#"{"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11.123+02:00","entity_type":"user","action":"created","after":{"id":"u\u00e9","big":123456789012345678901234567890,"f":1.50e3,"neg":-0.0,"name":"Zoë 😀","esc":"line\nbreak \"q\"","nested":{"deep":[1,{"x":null}],"empty":{}},"unknown_field":true}}"#;
    let Derived::Webhook(event) = derive_record(raw.as_bytes(), &Rules::default()).unwrap() else {
        panic!("expected a webhook");
    };
    let body = std::str::from_utf8(&event.body).unwrap();
    let entity_start = raw.find(r#"{"id":"u\u00e9""#).unwrap();
    let entity = &raw[entity_start..raw.len() - 1];
    assert!(
        body.contains(&format!(r#""parameters":{{"entity":{entity}}}"#)),
        "{body}"
    );
    assert!(
        body.contains(r#""created_at":"2019-08-07T10:45:11.123+02:00""#),
        "{body}"
    );
    assert_eq!(event.change_id, "c1");
    assert_eq!(
        event.occurred_at.to_rfc3339(),
        "2019-08-07T08:45:11.123+00:00"
    );
}

#[test]
fn ids_are_deterministic_and_unique_per_change() {
    let r1 = record("user", "created", Value::Null, user(json!({})), json!({}));
    let mut r2 = r1.clone();
    r2["id"] = json!("c2");
    let mut r3 = r1.clone();
    r3["organization_id"] = json!("other");
    r3["after"]["organization_id"] = json!("other");
    assert_eq!(body(&r1)["id"], body(&r1)["id"]);
    assert_ne!(body(&r1)["id"], body(&r2)["id"]);
    assert_ne!(body(&r1)["id"], body(&r3)["id"]);
}

#[test]
fn rejections() {
    let ok = record(
        "user",
        "updated",
        user(json!({})),
        user(json!({"email": "b@example.com"})),
        json!({}),
    );
    let with = |field: &str, value: Value| {
        let mut r = ok.clone();
        r[field] = value;
        r.to_string()
    };
    let without = |field: &str| {
        let mut r = ok.clone();
        r.as_object_mut().unwrap().remove(field);
        r.to_string()
    };
    let rows: Vec<(&str, String, &str)> = vec![
        ("not JSON", "{\"id\": ".into(), "invalid_json"),
        ("trailing garbage", format!("{ok} x"), "invalid_json"),
        (
            "duplicate key",
            r#"{"id":"a","id":"b"}"#.into(),
            "invalid_json",
        ),
        ("empty input", "".into(), "invalid_json"),
        ("array", "[1,2]".into(), "not_object"),
        ("string", "\"x\"".into(), "not_object"),
        ("null", "null".into(), "not_object"),
        ("missing id", without("id"), "missing_field"),
        ("null id", with("id", Value::Null), "missing_field"),
        (
            "missing organization_id",
            without("organization_id"),
            "missing_field",
        ),
        (
            "missing occurred_at",
            without("occurred_at"),
            "missing_field",
        ),
        (
            "missing entity_type",
            without("entity_type"),
            "missing_field",
        ),
        ("missing action", without("action"), "missing_field"),
        ("empty id", with("id", json!("")), "empty_field"),
        (
            "empty organization_id",
            with("organization_id", json!("")),
            "empty_field",
        ),
        (
            "empty regulation",
            with("regulation", json!("")),
            "empty_field",
        ),
        ("numeric id", with("id", json!(42)), "wrong_type"),
        (
            "before not an object",
            with("before", json!([1])),
            "wrong_type",
        ),
        (
            "source not an object",
            with("source", json!("e1")),
            "wrong_type",
        ),
        (
            "disable_integrations not a boolean",
            with("disable_integrations", json!("true")),
            "wrong_type",
        ),
        (
            "regulation not a string",
            with("regulation", json!(1)),
            "wrong_type",
        ),
        (
            "entity id not a string",
            with("after", json!({"id": 7})),
            "wrong_type",
        ),
        (
            "unknown entity_type",
            with("entity_type", json!("purpose")),
            "invalid_value",
        ),
        (
            "unknown action",
            with("action", json!("upserted")),
            "invalid_value",
        ),
        (
            "action in upper case",
            with("action", json!("UPDATED")),
            "invalid_value",
        ),
        (
            "bad timestamp",
            with("occurred_at", json!("yesterday")),
            "invalid_timestamp",
        ),
        (
            "timestamp without zone",
            with("occurred_at", json!("2019-08-07T10:45:11")),
            "invalid_timestamp",
        ),
        (
            "updated without before",
            with("before", Value::Null),
            "missing_entity",
        ),
        ("updated without after", without("after"), "missing_entity"),
        (
            "created without after",
            record("user", "created", Value::Null, Value::Null, json!({})).to_string(),
            "missing_entity",
        ),
        (
            "deleted without before",
            record("event", "deleted", Value::Null, event(None), json!({})).to_string(),
            "missing_entity",
        ),
        (
            "entity without id",
            with("after", json!({"email": "x"})),
            "missing_field",
        ),
        (
            "entity with empty id",
            with("after", json!({"id": ""})),
            "empty_field",
        ),
        (
            "before/after id mismatch",
            with("after", user(json!({"id": "u2"}))),
            "id_mismatch",
        ),
        (
            "cross-tenant after",
            with("after", user(json!({"organization_id": "evil"}))),
            "cross_tenant",
        ),
        (
            "cross-tenant before",
            with("before", user(json!({"organization_id": "evil"}))),
            "cross_tenant",
        ),
        (
            "cross-tenant source",
            with("source", json!({"id": "e1", "organization_id": "evil"})),
            "cross_tenant",
        ),
        (
            "numeric entity organization_id",
            with("after", user(json!({"organization_id": 1}))),
            "wrong_type",
        ),
    ];
    for (name, input, code) in rows {
        match derive_record(input.as_bytes(), &Rules::default()) {
            Err(rejection) => {
                assert_eq!(rejection.code(), code, "{name}: {rejection}");
                assert!(Rejection::CODES.contains(&rejection.code()));
            }
            Ok(derived) => panic!("{name}: expected rejection {code}, got {derived:?}"),
        }
    }
    assert!(matches!(
        derive_record(b"{\"id\":\"\xff\"}", &Rules::default()),
        Err(Rejection::InvalidJson(_))
    ));
}

#[test]
fn rejection_messages_name_the_field() {
    let r = record(
        "user",
        "updated",
        user(json!({})),
        user(json!({"organization_id": "evil"})),
        json!({}),
    );
    let err = run(&r).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"`after.organization_id` "evil" differs from the record's organization_id "acme" (cross-tenant)"#
    );
    let long = "x".repeat(500);
    let err = run(&record(
        "user",
        "upserted",
        Value::Null,
        Value::Null,
        json!({"action": long}),
    ))
    .unwrap_err();
    assert!(err.to_string().len() < 200, "messages stay short: {err}");
}

/// Issue "fail closed", point 1: a member hidden behind deep nesting, or a checked field given
/// twice, must never slip past the tenant, status or regulation checks.
#[test]
fn hostile_entities_are_rejected_not_truncated() {
    let pad = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    let created = |after: &str| {
        format!(
            r#"{{"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11Z","entity_type":"user","action":"created","after":{after}}}"#
        )
    };
    let updated = |source: &str| {
        format!(
            r#"{{"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11Z","entity_type":"user","action":"updated","before":{{"id":"u1","email":"a"}},"after":{{"id":"u1","email":"b"}},"source":{source}}}"#
        )
    };
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "cross-tenant id after 200 levels",
            created(&format!(
                r#"{{"id":"u1","pad":{},"organization_id":"globex"}}"#,
                pad(200)
            )),
            "too_deep",
        ),
        (
            "cross-tenant id after 90 levels (within the limit: seen and refused)",
            created(&format!(
                r#"{{"id":"u1","pad":{},"organization_id":"globex"}}"#,
                pad(90)
            )),
            "cross_tenant",
        ),
        (
            "pending status after 90 levels in the source",
            updated(&format!(
                r#"{{"id":"e1","pad":{},"status":"pending_approval"}}"#,
                pad(90)
            )),
            "suppressed:pending_source",
        ),
        (
            "pending status after 200 levels in the source",
            updated(&format!(
                r#"{{"id":"e1","pad":{},"status":"pending_approval"}}"#,
                pad(200)
            )),
            "too_deep",
        ),
        (
            "deep unknown top-level field",
            created(&format!(r#"{{"id":"u1"}},"extra":{}"#, pad(150))),
            "too_deep",
        ),
        (
            "organization_id twice, the other tenant first",
            created(r#"{"id":"u1","organization_id":"globex","organization_id":"acme"}"#),
            "duplicate_key",
        ),
        (
            "organization_id twice, the other tenant last",
            created(r#"{"id":"u1","organization_id":"acme","organization_id":"globex"}"#),
            "duplicate_key",
        ),
        (
            "organization_id twice, one spelled with an escape",
            created(r#"{"id":"u1","organization_id":"acme","organization\u005fid":"globex"}"#),
            "duplicate_key",
        ),
        (
            "id twice",
            created(r#"{"id":"u1","id":"u2"}"#),
            "duplicate_key",
        ),
        (
            "status twice in the source",
            updated(r#"{"id":"e1","status":"confirmed","status":"pending_approval"}"#),
            "duplicate_key",
        ),
        (
            "regulation twice",
            created(r#"{"id":"u1","regulation":"gdpr","regulation":"ccpa"}"#),
            "duplicate_key",
        ),
        (
            "lone surrogate in an unchecked field",
            created(r#"{"id":"u1","name":"\ud800"}"#),
            "invalid_json",
        ),
        (
            "lone surrogate in a key",
            created(r#"{"id":"u1","\udc00":1}"#),
            "invalid_json",
        ),
    ];
    for (name, input, expected) in rows {
        let got = match derive_record(input.as_bytes(), &Rules::default()) {
            Err(rejection) => rejection.code().to_owned(),
            Ok(Derived::Suppressed(reason)) => format!("suppressed:{}", reason.code()),
            Ok(Derived::Webhook(event)) => format!("webhook to {}", event.organization_id),
        };
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn regulation_behind_deep_nesting_is_seen() {
    let input = format!(
        r#"{{"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11Z","entity_type":"user","action":"created","after":{{"id":"u1","pad":{}{},"regulation":"ccpa"}}}}"#,
        "[".repeat(95),
        "]".repeat(95)
    );
    match derive_record(input.as_bytes(), &Rules::default()) {
        Ok(Derived::Webhook(event)) => assert_eq!(event.regulation, "ccpa"),
        other => panic!("expected a webhook, got {other:?}"),
    }
}

#[test]
fn malformed_anywhere_in_the_record_is_rejected() {
    // The fast reading of a record and the slow one must refuse the same bytes, wherever they
    // sit: in an entity the comparison reads, in one it only forwards, in an unknown field.
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let hostile: [(&str, &str); 6] = [
        (&deep, "too_deep"),
        (r#""\ud800""#, "invalid_json"),
        (r#"{"\udc00":1}"#, "invalid_json"),
        ("1e400", "invalid_json"),
        ("01", "invalid_json"),
        ("\"a\u{1}b\"", "invalid_json"),
    ];
    let positions = [
        r#"{"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11Z","entity_type":"user","action":"updated","before":{"id":"u1","x":X},"after":{"id":"u1"}}"#,
        r#"{"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11Z","entity_type":"user","action":"updated","before":{"id":"u1"},"after":{"id":"u1","c":{"p":[{"id":"a","v":[X]}]}}}"#,
        r#"{"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11Z","entity_type":"event","action":"created","after":{"id":"e1"},"source":{"id":"e0","m":X}}"#,
        r#"{"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11Z","entity_type":"event","action":"created","after":{"id":"e1"},"extra":[X]}"#,
        r#"{"extra":X,"id":"c1","organization_id":"acme","occurred_at":"2019-08-07T10:45:11Z","entity_type":"event","action":"created","after":{"id":"e1"}}"#,
    ];
    for position in positions {
        let valid = position.replace('X', "1");
        assert!(
            derive_record(valid.as_bytes(), &Rules::default()).is_ok(),
            "{valid}"
        );
        for (x, code) in hostile {
            let input = position.replace('X', x);
            match derive_record(input.as_bytes(), &Rules::default()) {
                Err(rejection) => assert_eq!(rejection.code(), code, "{input}"),
                Ok(derived) => panic!("{input} gave {derived:?}"),
            }
        }
    }
}
