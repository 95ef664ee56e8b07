//! `consent-webhooks run` against a real Kafka broker when things fail: endpoints that stay
//! down, endpoints that refuse for good, endpoints that recover, and input that is not a valid
//! consent-change record (SPEC §1, §4).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::DateTime;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use support::kafka::{self, Consumed};
use support::receiver::{Received, Receiver, Reply};
use support::records::{self, Coordinates};
use support::schemas::assert_dead_letter;
use support::service::{organization, Service, Topics};

/// Retries at 100, 200, 300, 400 and 1500 ms after the first attempt: six attempts in all.
const DOWN_SCHEDULE_MS: [i64; 5] = [100, 200, 300, 400, 1500];
const DOWN_RETRY: &str = r#"retry = { schedule = ["100ms", "200ms", "300ms", "400ms", "1500ms"], max_jitter = "0s", budget = "5s", allow_below_minimum = true }"#;
const SHORT_RETRY: &str = r#"retry = { schedule = ["100ms", "200ms", "300ms", "400ms", "500ms"], max_jitter = "0s", budget = "5s", allow_below_minimum = true }"#;

fn ids_of(records: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    records::events_by_id(records).into_keys().collect()
}

/// Event id → how many requests carried it.
fn requests_per_event(got: &[Received]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in got {
        *out.entry(r.event_id()).or_insert(0) += 1;
    }
    out
}

/// Checks what every dead-letter record must hold, whatever the reason: the schema, the key,
/// the event exactly as derived, the endpoint, the source coordinates in the value and in the
/// Kafka Connect headers, and the webhook headers. Returns the value.
fn check_dead_letter(
    record: &Consumed,
    topics: &Topics,
    organization: &str,
    endpoint_url: &str,
    input: &[(String, Vec<u8>)],
    coordinates: &HashMap<String, Coordinates>,
    reason: &str,
) -> Value {
    let value = records::json_value(record);
    assert_dead_letter(&value);
    assert_eq!(
        record.key.as_deref(),
        Some(organization.as_bytes()),
        "dead-letter key is the organization id"
    );
    assert_eq!(value["organization_id"], organization);
    assert_eq!(value["reason"], reason);
    assert_eq!(value["endpoint"]["url"], endpoint_url);

    let event_id = value["event"]["id"].as_str().expect("event id");
    let (key, source_value) = input
        .iter()
        .find(|(_, v)| records::event_of(v).id == event_id)
        .unwrap_or_else(|| panic!("dead-lettered event {event_id} comes from no input record"));
    let expected = records::event_of(source_value);
    let expected_body: Value = serde_json::from_slice(&expected.body).unwrap();
    assert_eq!(value["event"], expected_body, "the event body, unchanged");

    let at = coordinates[key];
    assert_eq!(value["source"]["topic"], topics.input.as_str());
    assert_eq!(value["source"]["partition"], at.partition);
    assert_eq!(value["source"]["offset"], at.offset);
    assert_eq!(value["source"]["change_id"], expected.change_id.as_str());

    assert_eq!(
        record.header("__connect.errors.topic").as_deref(),
        Some(topics.input.as_str())
    );
    assert_eq!(
        record.header("__connect.errors.partition"),
        Some(at.partition.to_string())
    );
    assert_eq!(
        record.header("__connect.errors.offset"),
        Some(at.offset.to_string())
    );
    assert_eq!(
        record
            .header("__connect.errors.exception.message")
            .as_deref(),
        Some(reason)
    );
    assert_eq!(
        record.header("webhook-dead-letter-reason").as_deref(),
        Some(reason)
    );
    assert_eq!(record.header("webhook-id").as_deref(), Some(event_id));
    assert_eq!(
        record.header("webhook-organization-id").as_deref(),
        Some(organization)
    );
    assert_eq!(
        record.header("webhook-change-id").as_deref(),
        Some(expected.change_id.as_str())
    );
    value
}

fn attempt_times_ms(value: &Value) -> Vec<i64> {
    value["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            DateTime::parse_from_rfc3339(a["at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect()
}

/// (b) One organization's endpoint answers 503 to everything: each of its events gets the first
/// attempt and every scheduled retry, then lands on the dead-letter topic with all attempts;
/// two healthy organizations sharing the partitions get all their events meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_exhausts_retries_to_dead_letter_and_spares_the_others() {
    const N: usize = 4;
    let topics = Topics::create(3).await;
    let down = Receiver::start(503).await;
    let acme = Receiver::start(200).await;
    let globex = Receiver::start(204).await;
    let mut config = topics.config("");
    config += &organization("down", &down.url, DOWN_RETRY);
    config += &organization("acme", &acme.url, "");
    config += &organization("globex", &globex.url, "");
    let _service = Service::start(&config, &[]);

    let (down_records, acme_records, globex_records) = (
        records::users_created("down", N),
        records::users_created("acme", N),
        records::users_created("globex", N),
    );
    // Interleaved, so the dead endpoint's records sit between the others' in every partition.
    let input: Vec<(String, Vec<u8>)> = (0..N)
        .flat_map(|i| {
            [
                down_records[i].clone(),
                acme_records[i].clone(),
                globex_records[i].clone(),
            ]
        })
        .collect();
    kafka::produce(&topics.input, &input).await;

    for (org, receiver, records) in [
        ("acme", &acme, &acme_records),
        ("globex", &globex, &globex_records),
    ] {
        let want = ids_of(records);
        receiver
            .wait_until(Duration::from_secs(60), "every healthy event", |got| {
                got.len() >= want.len()
            })
            .await;
        let got = receiver.received();
        let per_event = requests_per_event(&got);
        assert_eq!(
            per_event.keys().cloned().collect::<BTreeSet<_>>(),
            want,
            "{org}: exactly its events"
        );
        assert!(
            per_event.values().all(|&n| n == 1),
            "{org}: each delivered once: {per_event:?}"
        );
    }
    // Isolation: the healthy organizations were served while the dead one was still retrying.
    assert!(
        down.received().len() < N * (DOWN_SCHEDULE_MS.len() + 1),
        "the healthy organizations waited for the dead endpoint to be exhausted"
    );

    let dead = kafka::consume(&topics.dead_letter, N, Duration::from_secs(60)).await;
    assert_eq!(
        dead.len(),
        N,
        "one dead-letter record per event of the dead endpoint"
    );
    let coordinates = records::coordinates_by_key(&topics.input, input.len()).await;
    let mut dead_ids = BTreeSet::new();
    for record in &dead {
        let value = check_dead_letter(
            record,
            &topics,
            "down",
            &down.url,
            &input,
            &coordinates,
            "exhausted",
        );
        let attempts = value["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len(),
            1 + DOWN_SCHEDULE_MS.len(),
            "first attempt + every retry: {value}"
        );
        for attempt in attempts {
            assert_eq!(attempt["status"], 503, "{attempt}");
            assert_eq!(attempt["error"], Value::Null, "{attempt}");
        }
        // Retries are due at the schedule's offsets from the first attempt (no jitter).
        let times = attempt_times_ms(&value);
        for (i, due) in DOWN_SCHEDULE_MS.iter().enumerate() {
            let offset = times[i + 1] - times[0];
            assert!(
                offset >= due - 20 && offset < due + 1000,
                "retry {} at +{offset} ms, scheduled at +{due} ms: {value}",
                i + 1
            );
        }
        dead_ids.insert(value["event"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(dead_ids, ids_of(&down_records), "every event of \"down\"");

    let per_event = requests_per_event(&down.received());
    assert_eq!(per_event.keys().cloned().collect::<BTreeSet<_>>(), dead_ids);
    assert!(
        per_event.values().all(|&n| n == 1 + DOWN_SCHEDULE_MS.len()),
        "the receiver saw every attempt and no more: {per_event:?}"
    );
}

/// Issue 8: a lane holding `max_pending_per_organization` events parks new ones on the retry
/// topic at once (reason `lane_full`, no attempt) instead of dead-lettering them: every event
/// still runs its whole schedule, then is dead-lettered `exhausted` with every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_parks_and_every_event_still_gets_its_retries() {
    const N: usize = 6;
    const LANE: usize = 2;
    let topics = Topics::create(1).await;
    let down = Receiver::start(503).await;
    // Slow answers: the lane is still full when the other records arrive.
    down.delay(Duration::from_millis(500));
    let mut config = topics.config(&format!("max_pending_per_organization = {LANE}"));
    config += &organization("down", &down.url, DOWN_RETRY);
    let _service = Service::start(&config, &[]);
    let input = records::users_created("down", N);
    kafka::produce(&topics.input, &input).await;

    let dead = kafka::consume(&topics.dead_letter, N, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), N, "every event dead-lettered");
    let coordinates = records::coordinates_by_key(&topics.input, N).await;
    for record in &dead {
        let value = check_dead_letter(
            record,
            &topics,
            "down",
            &down.url,
            &input,
            &coordinates,
            "exhausted",
        );
        assert_eq!(
            value["attempts"].as_array().unwrap().len(),
            1 + DOWN_SCHEDULE_MS.len(),
            "every event got its whole schedule: {value}"
        );
        assert_dead_letter(&value);
    }
    assert_eq!(
        down.received().len(),
        N * (1 + DOWN_SCHEDULE_MS.len()),
        "every attempt reached the endpoint"
    );
    let parked = kafka::consume(
        &topics.retry,
        N * DOWN_SCHEDULE_MS.len(),
        Duration::from_secs(10),
    )
    .await;
    let lane_full = parked
        .iter()
        .filter(|r| r.header("consent-webhooks-park-reason").as_deref() == Some("lane_full"))
        .count();
    assert!(
        lane_full >= N - LANE,
        "the events past the lane's limit were parked at once ({lane_full} lane_full parks)"
    );
}

/// (c) A 400 (and a 3xx) cannot be fixed by retrying: dead-lettered after exactly one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_status_is_dead_lettered_after_one_attempt() {
    const N: usize = 3;
    let topics = Topics::create(2).await;
    let bad = Receiver::start(400).await;
    let moved = Receiver::start(301).await;
    let mut config = topics.config("");
    // The default schedule (first retry after 5 s): a wrong retry would show as a late record.
    config += &organization("bad", &bad.url, "");
    config += &organization("moved", &moved.url, "");
    let _service = Service::start(&config, &[]);
    let bad_records = records::users_created("bad", N);
    let moved_records = records::users_created("moved", N);
    let input: Vec<_> = bad_records.iter().chain(&moved_records).cloned().collect();
    kafka::produce(&topics.input, &input).await;

    let dead = kafka::consume(&topics.dead_letter, 2 * N, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2 * N, "every event dead-lettered");
    let coordinates = records::coordinates_by_key(&topics.input, input.len()).await;
    for (org, receiver, status, records) in [
        ("bad", &bad, 400, &bad_records),
        ("moved", &moved, 301, &moved_records),
    ] {
        let mut ids = BTreeSet::new();
        for record in dead
            .iter()
            .filter(|r| r.key.as_deref() == Some(org.as_bytes()))
        {
            let value = check_dead_letter(
                record,
                &topics,
                org,
                &receiver.url,
                &input,
                &coordinates,
                "permanent_status",
            );
            let attempts = value["attempts"].as_array().unwrap();
            assert_eq!(attempts.len(), 1, "exactly one attempt: {value}");
            assert_eq!(attempts[0]["status"], status);
            assert_eq!(attempts[0]["error"], Value::Null);
            let first = attempt_times_ms(&value)[0];
            let dead_lettered_at =
                DateTime::parse_from_rfc3339(value["dead_lettered_at"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis();
            assert!(
                dead_lettered_at - first < 5000,
                "dead-lettered before the first scheduled retry (5 s) was due: {value}"
            );
            ids.insert(value["event"]["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids, ids_of(records), "{org}: every event, once");
        let per_event = requests_per_event(&receiver.received());
        assert_eq!(per_event.keys().cloned().collect::<BTreeSet<_>>(), ids);
        assert!(
            per_event.values().all(|&n| n == 1),
            "{org}: one request per event: {per_event:?}"
        );
    }
}

/// A 503 that recovers, and a 429 whose `Retry-After` asks for more than the schedule: both
/// delivered, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_recover_without_dead_letter() {
    const FLAKY_EVENTS: usize = 3;
    const FLAKY_FAILURES: usize = 4;
    let topics = Topics::create(2).await;
    let flaky = Receiver::start(200).await;
    flaky.script(vec![Reply::status(503); FLAKY_FAILURES]);
    let throttled = Receiver::start(200).await;
    throttled.script([Reply::status(429).retry_after("2")]);
    let mut config = topics.config("");
    config += &organization("flaky", &flaky.url, SHORT_RETRY);
    config += &organization("throttled", &throttled.url, SHORT_RETRY);
    let _service = Service::start(&config, &[]);
    let flaky_records = records::users_created("flaky", FLAKY_EVENTS);
    let throttled_records = records::users_created("throttled", 1);
    let input: Vec<_> = flaky_records
        .iter()
        .chain(&throttled_records)
        .cloned()
        .collect();
    kafka::produce(&topics.input, &input).await;

    let want = ids_of(&flaky_records);
    flaky
        .wait_until(
            Duration::from_secs(30),
            "every flaky event delivered",
            |_| {
                flaky
                    .delivered()
                    .iter()
                    .map(Received::event_id)
                    .collect::<BTreeSet<_>>()
                    == want
            },
        )
        .await;
    throttled
        .wait_until(Duration::from_secs(30), "the throttled event", |got| {
            got.iter().any(|r| r.status == 200)
        })
        .await;

    let got = flaky.received();
    assert_eq!(
        got.len(),
        FLAKY_EVENTS + FLAKY_FAILURES,
        "every 503 retried, every event delivered once"
    );
    let delivered = requests_per_event(&flaky.delivered());
    assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");

    let got = throttled.received();
    assert_eq!(got.len(), 2, "one 429, then one delivery");
    assert_eq!((got[0].status, got[1].status), (429, 200));
    assert_eq!(got[0].event_id(), got[1].event_id());
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 honoured over the 100 ms schedule (waited {waited:?})"
    );

    // Every event is delivered, so none can be dead-lettered later: the topic is empty now.
    assert_eq!(
        records::record_count(&topics.dead_letter).await,
        0,
        "nothing dead-lettered"
    );
}

/// (g) Records that break SPEC §1, mixed with valid ones: each lands on the rejected topic as it
/// was (key, bytes, headers) with the reason in headers; every valid one is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_are_rejected_untouched_and_valid_ones_delivered() {
    let fixtures =
        std::fs::read_to_string(kafka::repo_root().join("tests/fixtures/invalid-records.jsonl"))
            .unwrap();
    let fixture_codes = [
        "invalid_json",      // {"id":
        "not_object",        // [1,2,3]
        "missing_field",     // no id
        "invalid_timestamp", // occurred_at "yesterday"
        "invalid_value",     // entity_type "purpose"
        "missing_entity",    // updated without before
        "id_mismatch",       // before.id != after.id
        "cross_tenant",      // after.organization_id of another organization
    ];
    let mut bad: Vec<(Vec<u8>, &str)> = fixtures
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .zip(fixture_codes)
        .collect();
    assert_eq!(
        bad.len(),
        fixtures.lines().count(),
        "a code for every fixture"
    );
    bad.push((b"\xff\xfe{\"id\":\"x\"}".to_vec(), "invalid_json"));
    bad.push((
        br#"{"id":"x6","organization_id":"acme","occurred_at":"2026-11-27T09:00:00Z","entity_type":"user","action":"updated","before":{"id":"u"},"after":{"id":"u","v":2},"source":{"id":"e","organization_id":"globex"}}"#.to_vec(),
        "cross_tenant",
    ));
    bad.push((
        br#"{"id":"","organization_id":"acme","occurred_at":"2026-11-27T09:00:00Z","entity_type":"user","action":"created","after":{"id":"u"}}"#.to_vec(),
        "empty_field",
    ));

    let topics = Topics::create(3).await;
    let acme = Receiver::start(200).await;
    let mut config = topics.config("");
    config += &organization("acme", &acme.url, "");
    let _service = Service::start(&config, &[]);

    let valid = records::users_created("acme", 6);
    let bad_keyed: Vec<(String, Vec<u8>)> = bad
        .iter()
        .enumerate()
        .map(|(i, (bytes, _))| (format!("bad/{i}"), bytes.clone()))
        .collect();
    // Valid and invalid interleaved.
    let mut input = Vec::new();
    for i in 0..valid.len().max(bad_keyed.len()) {
        input.extend(bad_keyed.get(i).cloned());
        input.extend(valid.get(i).cloned());
    }
    kafka::produce(&topics.input, &input).await;
    // One more, with a header of its own that must survive.
    let with_header = br#"{"id":"x7","organization_id":"acme"}"#;
    kafka::producer()
        .send(
            FutureRecord::to(&topics.input)
                .key("bad/with-header")
                .payload(&with_header[..])
                .headers(OwnedHeaders::new().insert(Header {
                    key: "trace-id",
                    value: Some("abc-123"),
                })),
            Duration::from_secs(30),
        )
        .await
        .expect("acknowledged");
    let total_bad = bad_keyed.len() + 1;

    let want = ids_of(&valid);
    acme.wait_until(Duration::from_secs(30), "every valid event", |got| {
        got.len() >= want.len()
    })
    .await;
    let per_event = requests_per_event(&acme.received());
    assert_eq!(per_event.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(per_event.values().all(|&n| n == 1), "{per_event:?}");

    let rejected = kafka::consume(&topics.rejected, total_bad, Duration::from_secs(30)).await;
    assert_eq!(rejected.len(), total_bad, "every invalid record rejected");
    let coordinates = records::coordinates_by_key(&topics.input, input.len() + 1).await;
    let mut seen = BTreeSet::new();
    for record in &rejected {
        let key = String::from_utf8(record.key.clone().expect("original key kept")).unwrap();
        assert!(seen.insert(key.clone()), "{key} rejected once");
        let (bytes, code): (&[u8], &str) = if key == "bad/with-header" {
            (with_header, "missing_field")
        } else {
            let i: usize = key.strip_prefix("bad/").unwrap().parse().unwrap();
            (&bad[i].0, bad[i].1)
        };
        assert_eq!(record.value, bytes, "{key}: original bytes untouched");
        assert_eq!(
            record.header("consent-webhooks-rejection").as_deref(),
            Some(code),
            "{key}: {:?}",
            String::from_utf8_lossy(bytes)
        );
        let message = record
            .header("__connect.errors.exception.message")
            .unwrap_or_default();
        assert!(!message.is_empty(), "{key}: a reason message");
        let at = coordinates[&key];
        assert_eq!(
            record.header("__connect.errors.topic").as_deref(),
            Some(topics.input.as_str())
        );
        assert_eq!(
            record.header("__connect.errors.partition"),
            Some(at.partition.to_string()),
            "{key}"
        );
        assert_eq!(
            record.header("__connect.errors.offset"),
            Some(at.offset.to_string()),
            "{key}"
        );
        if key == "bad/with-header" {
            assert_eq!(record.header("trace-id").as_deref(), Some("abc-123"));
        }
    }
    assert!(
        acme.received().iter().all(|r| valid
            .iter()
            .any(|(_, v)| records::event_of(v).id == r.event_id())),
        "no webhook from an invalid record"
    );
}

/// A missing topic fails the start at once, naming it, instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_the_start_and_names_it() {
    let topics = Topics::create(1).await;
    let missing = kafka::unique_name("no-such-topic");
    let config = topics.config("").replace(
        &format!("input_topic = \"{}\"", topics.input),
        &format!("input_topic = \"{missing}\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_consent-webhooks"))
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the service exits by itself")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&missing), "names the topic: {stderr}");
    assert!(stderr.contains("do not exist"), "{stderr}");
}
