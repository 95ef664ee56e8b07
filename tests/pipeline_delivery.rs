//! `consent-webhooks run` against a real Kafka broker and real HTTP receivers.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use consent_webhooks::derive::{derive_record, Derived, Rules};
use consent_webhooks::webhook::SigningKey;
use support::receiver::Receiver;
use support::service::{organization, Service, Topics};
use support::{kafka, records};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Event ids the pure core derives for `records`, per organization, in order.
fn expected_ids(records: &[(String, Vec<u8>)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, value) in records {
        if let Derived::Webhook(e) = derive_record(value, &Rules::default()).unwrap() {
            out.entry(e.organization_id.clone()).or_default().push(e.id);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_organizations_get_exactly_the_spec_events_signed() {
    let topics = Topics::create(3).await;
    let receivers = [
        ("acme", Receiver::start(200).await),
        ("globex", Receiver::start(204).await),
        ("initech", Receiver::start(202).await),
    ];
    let mut config = topics.config("");
    for (org, receiver) in &receivers {
        config += &organization(
            org,
            &receiver.url,
            "signing_secret = { env = \"TEST_SIGNING_SECRET\" }",
        );
    }
    let _service = Service::start(&config, &[("TEST_SIGNING_SECRET", SECRET)]);
    let records = records::samples();
    kafka::produce(&topics.input, &records).await;

    let expected = expected_ids(&records);
    let key = SigningKey::parse(SECRET).unwrap();
    for (org, receiver) in &receivers {
        let want = &expected[*org];
        receiver
            .wait_until(Duration::from_secs(60), "every event", |got| {
                got.len() >= want.len()
            })
            .await;
        let got = receiver.received();
        let ids: Vec<String> = got.iter().map(|r| r.event_id()).collect();
        let mut sorted_ids = ids.clone();
        sorted_ids.sort();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        assert_eq!(sorted_ids, sorted_want, "{org}: exactly the derived events");
        let types: Vec<String> = got
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect();
        let position = |t: &str| types.iter().position(|x| x == t).unwrap();
        // Same key (org/user): the pending → confirmed flow arrives in order.
        assert!(
            position("event.created") < position("event.updated"),
            "{org}: {types:?}"
        );
        assert!(
            position("user.created") < position("user.updated"),
            "{org}: {types:?}"
        );
        assert_eq!(
            types.iter().filter(|t| *t == "user.updated").count(),
            1,
            "{org}: pending and ineffective updates held back"
        );
        for r in &got {
            support::schemas::assert_webhook_event(&r.json());
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert!(r
                .header("user-agent")
                .is_some_and(|ua| ua.starts_with("consent-webhooks/")));
            let id = r.header("webhook-id").unwrap();
            assert_eq!(id, r.event_id());
            let timestamp: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
            assert_eq!(
                r.header("webhook-signature").unwrap(),
                key.sign(id, timestamp, &r.body),
                "{org}: signature verifies"
            );
        }
    }
}
