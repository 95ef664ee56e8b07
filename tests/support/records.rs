//! Consent-change records for the pipeline tests, the webhook events the pure core derives from
//! them, and where each record landed on the input topic.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use consent_webhooks::derive::{derive_record, Derived, Rules};
use consent_webhooks::webhook::WebhookEvent;
use serde_json::{json, Value};

use super::kafka;

/// `deploy/sample-records.jsonl`, each keyed `organization/user` (the user of a user change,
/// the `user.id` of an event change) as SPEC §1 recommends.
pub fn samples() -> Vec<(String, Vec<u8>)> {
    std::fs::read_to_string(kafka::repo_root().join("deploy/sample-records.jsonl"))
        .expect("deploy/sample-records.jsonl")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let entity = v
                .get("after")
                .filter(|a| !a.is_null())
                .or(v.get("before"))
                .unwrap();
            let user = entity
                .get("user")
                .and_then(|u| u.get("id"))
                .unwrap_or(&entity["id"]);
            let key = format!(
                "{}/{}",
                v["organization_id"].as_str().unwrap(),
                user.as_str().unwrap()
            );
            (key, line.as_bytes().to_vec())
        })
        .collect()
}

/// A `user.created` change (`change_id`, of `user` in `organization`), keyed `organization/user`
/// as SPEC §1 recommends.
pub fn user_created(change_id: &str, organization: &str, user: &str) -> (String, Vec<u8>) {
    let value = json!({
        "id": change_id,
        "organization_id": organization,
        "occurred_at": "2026-11-27T09:00:00Z",
        "entity_type": "user",
        "action": "created",
        "after": {
            "id": user,
            "organization_id": organization,
            "organization_user_id": format!("{user}@example.com"),
            "consents": { "purposes": [{ "id": "analytics", "enabled": true }] }
        }
    });
    (
        format!("{organization}/{user}"),
        serde_json::to_vec(&value).unwrap(),
    )
}

/// `n` `user.created` changes of `organization`, one user each (so no ordering between them).
pub fn users_created(organization: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            user_created(
                &format!("chg-{organization}-{i}"),
                organization,
                &format!("{organization}-user-{i}"),
            )
        })
        .collect()
}

/// The webhook event the pure core derives from a record that yields one.
/// The webhook ids the records derive to.
pub fn ids(records: &[(String, Vec<u8>)]) -> HashSet<String> {
    records.iter().map(|(_, v)| event_of(v).id).collect()
}

pub fn event_of(value: &[u8]) -> WebhookEvent {
    match derive_record(value, &Rules::default()).expect("a valid record") {
        Derived::Webhook(event) => event,
        other => panic!("record yields no webhook: {other:?}"),
    }
}

/// Event id → event, for every record that yields one.
pub fn events_by_id(records: &[(String, Vec<u8>)]) -> HashMap<String, WebhookEvent> {
    records
        .iter()
        .filter_map(|(_, v)| match derive_record(v, &Rules::default()) {
            Ok(Derived::Webhook(e)) => Some((e.id.clone(), e)),
            _ => None,
        })
        .collect()
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coordinates {
    pub partition: i32,
    pub offset: i64,
}

/// Reads back the `n` records of `topic` and returns key → coordinates (keys must be unique).
pub async fn coordinates_by_key(topic: &str, n: usize) -> HashMap<String, Coordinates> {
    let read = kafka::consume(topic, n, Duration::from_secs(30)).await;
    assert_eq!(read.len(), n, "every input record read back from {topic}");
    let mut out = HashMap::new();
    for r in read {
        let key = String::from_utf8(r.key.expect("keyed record")).unwrap();
        let previous = out.insert(
            key.clone(),
            Coordinates {
                partition: r.partition,
                offset: r.offset,
            },
        );
        assert!(previous.is_none(), "key {key} is not unique");
    }
    out
}

/// A consumed record's value as JSON.
pub fn json_value(record: &kafka::Consumed) -> Value {
    serde_json::from_slice(&record.value).expect("record value is JSON")
}

/// How many records `topic` (every partition) holds: the sum of its high watermarks.
pub async fn record_count(topic: &str) -> i64 {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka::bootstrap())
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .expect("topic metadata");
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p.id(), timeout)
                    .expect("watermarks");
                high - low
            })
            .sum()
    })
    .await
    .unwrap()
}
