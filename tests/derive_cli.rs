//! `consent-webhooks derive` as a user runs it: files and stdin in, events out, rejections on
//! stderr, every output checked against `schemas/`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{kafka::repo_root, schemas};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_consent-webhooks"))
}

/// `consent-webhooks derive` with `input` on stdin.
fn derive_stdin(input: &str) -> std::process::Output {
    let mut child = bin()
        .arg("derive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn derives_the_sample_records_in_order_and_every_event_matches_the_schema() {
    let samples = repo_root().join("deploy/sample-records.jsonl");
    for line in std::fs::read_to_string(&samples).unwrap().lines() {
        schemas::assert_consent_change(&serde_json::from_str(line).unwrap());
    }
    let out = bin().arg("derive").arg(&samples).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for event in &events {
        schemas::assert_webhook_event(event);
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let flow = [
        "event.created",
        "user.created",
        "event.updated",
        "user.updated",
    ];
    assert_eq!(
        &types[..4],
        flow,
        "acme's pending → confirmed flow, in input order"
    );
    assert_eq!(&types[4..8], flow);
    assert_eq!(&types[8..12], flow);
    assert_eq!(&types[12..], ["event.deleted", "user.deleted"]);
    // The user.updated that went out is the one caused by the confirmed event.
    assert_eq!(events[3]["parameters"]["source"]["status"], "confirmed");
}

#[test]
fn rejected_lines_are_reported_with_line_numbers_and_the_rest_goes_on() {
    let invalid =
        std::fs::read_to_string(repo_root().join("tests/fixtures/invalid-records.jsonl")).unwrap();
    let valid = std::fs::read_to_string(repo_root().join("deploy/sample-records.jsonl")).unwrap();
    let first_valid = valid.lines().next().unwrap();
    let input = format!("{first_valid}\n{invalid}{first_valid}\n");

    let out = derive_stdin(&input);

    assert_eq!(
        out.status.code(),
        Some(1),
        "non-zero when any line was rejected"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        2,
        "the valid lines around the bad ones still derive"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    let invalid_count = invalid.lines().count();
    assert_eq!(lines.len(), invalid_count, "{stderr}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("line {}: rejected (", i + 2)),
            "{line}"
        );
    }
    let codes: Vec<&str> = lines
        .iter()
        .map(|l| l.split(['(', ')']).nth(1).unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_json",
            "not_object",
            "missing_field",
            "invalid_timestamp",
            "invalid_value",
            "missing_entity",
            "id_mismatch",
            "cross_tenant"
        ]
    );
}

/// The review's reproduction: members hidden behind deep nesting or given twice must never
/// reach another organization, send a pending user update, or lose their regulation.
#[test]
fn hostile_entities_are_rejected_never_delivered() {
    let pad = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let head = r#""id":"c1","organization_id":"acme","occurred_at":"2026-11-27T09:00:00Z""#;
    let lines = [
        // A deep member before organization_id hid the cross-tenant one.
        format!(
            r#"{{{head},"entity_type":"user","action":"created","after":{{"id":"u1","pad":{pad},"organization_id":"globex"}}}}"#
        ),
        // A deep member before status hid a pending source.
        format!(
            r#"{{{head},"entity_type":"user","action":"updated","before":{{"id":"u1","v":1}},"after":{{"id":"u1","v":2}},"source":{{"id":"e1","pad":{pad},"status":"pending_approval"}}}}"#
        ),
        // The first copy of organization_id is another organization.
        format!(
            r#"{{{head},"entity_type":"user","action":"created","after":{{"id":"u1","organization_id":"globex","organization_id":"acme"}}}}"#
        ),
        // Nesting within the limit hides nothing: the regulation after it is read.
        format!(
            r#"{{{head},"entity_type":"user","action":"created","after":{{"id":"u1","pad":{},"regulation":"ccpa"}}}}"#,
            format_args!("{}{}", "[".repeat(50), "]".repeat(50))
        ),
    ];
    let out = derive_stdin(&lines.join("\n"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let codes: Vec<&str> = stderr
        .lines()
        .map(|l| l.split(['(', ')']).nth(1).unwrap_or(l))
        .collect();
    assert_eq!(codes, ["too_deep", "too_deep", "duplicate_key"], "{stderr}");
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "only the last line is delivered");
    assert_eq!(events[0]["organization_id"], "acme");
    assert_eq!(events[0]["regulation"], "ccpa");
}

#[test]
fn stdin_dash_and_missing_file() {
    let out = bin()
        .args(["derive", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());

    let out = bin()
        .args(["derive", "/nonexistent/records.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/records.jsonl"));
}

#[test]
fn dead_letter_schema_accepts_a_complete_record() {
    let valid = std::fs::read_to_string(repo_root().join("deploy/sample-records.jsonl")).unwrap();
    let out = bin()
        .arg("derive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(valid.lines().next().unwrap().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let event: Value = serde_json::from_slice(&out.stdout).unwrap();
    let record = serde_json::json!({
        "schema_version": 1,
        "event": event,
        "organization_id": "acme",
        "endpoint": {"url": "https://hooks.acme.example/consent"},
        "reason": "exhausted",
        "attempts": [
            {"at": "2026-11-27T09:00:00Z", "duration_ms": 12, "status": 503, "error": null},
            {"at": "2026-11-27T09:00:05Z", "duration_ms": 10000, "status": null, "error": "timeout"}
        ],
        "source": {"topic": "consent.changes", "partition": 0, "offset": 42, "change_id": "chg-0001"},
        "dead_lettered_at": "2026-11-27T09:05:00Z"
    });
    schemas::assert_dead_letter(&record);
}
