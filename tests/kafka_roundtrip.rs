//! Consent-change records through a real Kafka broker: produced with rdkafka, consumed back,
//! derived, and compared with what the pure core derives from the same lines.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use consent_webhooks::derive::{derive_record, Derived, Rules};
use support::kafka;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_real_broker_and_derive_the_spec_events() {
    let records = support::records::samples();

    let topic = kafka::unique_name("roundtrip");
    kafka::create_topic(&topic, 3).await;
    kafka::produce(&topic, &records).await;
    let consumed = kafka::consume(&topic, records.len(), Duration::from_secs(60)).await;
    assert_eq!(consumed.len(), records.len(), "every record read back");

    let rules = Rules::default();
    let derive_types = |value: &[u8]| match derive_record(value, &rules).unwrap() {
        Derived::Webhook(e) => Some((e.id, e.event_type.as_str().to_owned(), e.body)),
        Derived::Suppressed(_) => None,
    };
    // Per key, the derived events come back in the order they were produced.
    let mut expected: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
    for (key, value) in &records {
        expected
            .entry(key.as_bytes().to_vec())
            .or_default()
            .extend(derive_types(value));
    }
    let mut got: BTreeMap<Vec<u8>, Vec<_>> = BTreeMap::new();
    for record in &consumed {
        got.entry(record.key.clone().unwrap())
            .or_default()
            .extend(derive_types(&record.value));
    }
    assert_eq!(got, expected);

    let mut types: Vec<String> = got.values().flatten().map(|(_, t, _)| t.clone()).collect();
    types.sort();
    let count = |t: &str| types.iter().filter(|x| *x == t).count();
    assert_eq!(count("event.created"), 3);
    assert_eq!(count("user.created"), 3);
    assert_eq!(count("event.updated"), 3);
    assert_eq!(
        count("user.updated"),
        3,
        "pending and ineffective updates are held back"
    );
    assert_eq!(count("event.deleted"), 1);
    assert_eq!(count("user.deleted"), 1);
    assert_eq!(types.len(), 14);
}
