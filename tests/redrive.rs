//! `consent-webhooks redrive` against a real Kafka broker and real receivers: events dead-lettered
//! by the real service are delivered again once the endpoint is back, exactly once across runs;
//! filters hold; what fails again goes back to the dead-letter topic with every attempt.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::command::{self, Run};
use support::kafka::{self, Consumed};
use support::receiver::{Received, Receiver};
use support::records;
use support::schemas::assert_dead_letter;
use support::service::{organization, Service, Topics};

/// Three attempts (first + two retries), all within two seconds.
const RETRY: &str = r#"retry = { schedule = ["100ms", "200ms"], max_jitter = "0s", budget = "2s", allow_below_minimum = true }"#;
const MARKER_HEADER: &str = "webhook-dead-letter-resolved";

fn write_config(dir: &Path, name: &str, config: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `consent-webhooks redrive --config CONFIG ARGS...` to completion.
async fn redrive(config: &Path, args: &[&str]) -> Run {
    command::run("redrive", config, args).await
}

/// Starts the service, feeds it `input`, waits for `expected` dead letters, stops it.
async fn dead_letter_with_service(
    topics: &Topics,
    config: &str,
    input: &[(String, Vec<u8>)],
    expected: usize,
) -> Vec<Consumed> {
    let mut service = Service::start(config, &[]);
    kafka::produce(&topics.input, input).await;
    let dead = kafka::consume(&topics.dead_letter, expected, Duration::from_secs(60)).await;
    assert_eq!(
        dead.len(),
        expected,
        "every event dead-lettered by the service"
    );
    service.signal("TERM");
    assert!(
        service.wait_exit(Duration::from_secs(30)).is_some(),
        "the service stops on SIGTERM"
    );
    dead
}

/// Event id → requests answered with a 2xx.
fn delivered_per_event(got: &[Received]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in got.iter().filter(|r| (200..300).contains(&r.status)) {
        *out.entry(r.event_id()).or_insert(0) += 1;
    }
    out
}

fn ids_of(records: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    records::events_by_id(records).into_keys().collect()
}

fn once_each(ids: &BTreeSet<String>) -> BTreeMap<String, usize> {
    ids.iter().map(|id| (id.clone(), 1)).collect()
}

fn is_marker(record: &Consumed) -> bool {
    record.header(MARKER_HEADER).is_some()
}

/// The endpoint is down while the service runs: every event is dead-lettered. Once it is back,
/// a redrive delivers each event exactly once and resolves it; a second redrive delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_delivers_each_dead_letter_once_and_a_second_run_nothing() {
    const N: usize = 5;
    let topics = Topics::create(2).await;
    let receiver = Receiver::start(503).await;
    let config = topics.config("") + &organization("acme", &receiver.url, RETRY);
    let input = records::users_created("acme", N);
    let ids = ids_of(&input);
    dead_letter_with_service(&topics, &config, &input, N).await;
    assert!(delivered_per_event(&receiver.received()).is_empty());

    receiver.answer(200);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.toml", &config);
    let first = redrive(&path, &[]).await;
    first.assert_success();
    assert_eq!(delivered_per_event(&receiver.received()), once_each(&ids));
    assert_eq!(first.count("selected"), N as u64, "{}", first.stdout);
    assert_eq!(first.count("delivered"), N as u64);
    assert_eq!(first.count("failed again"), 0);

    // One resolution marker per event, next to the untouched dead-letter records.
    let all = kafka::consume(&topics.dead_letter, 2 * N, Duration::from_secs(30)).await;
    assert_eq!(all.len(), 2 * N);
    let mut resolved = BTreeSet::new();
    for record in &all {
        let value = records::json_value(record);
        if is_marker(record) {
            let id = record.header(MARKER_HEADER).unwrap();
            assert_eq!(value["resolved"], id.as_str());
            assert_eq!(value["organization_id"], "acme");
            assert_eq!(record.key.as_deref(), Some(&b"acme"[..]));
            let named = all
                .iter()
                .find(|r| {
                    value["dead_letter"]["partition"] == r.partition
                        && value["dead_letter"]["offset"] == r.offset
                })
                .expect("the marker names a dead-letter record");
            assert!(!is_marker(named));
            assert_eq!(records::json_value(named)["event"]["id"], id.as_str());
            resolved.insert(id);
        } else {
            assert_dead_letter(&value);
        }
    }
    assert_eq!(resolved, ids);

    let before = receiver.received().len();
    let second = redrive(&path, &[]).await;
    second.assert_success();
    assert_eq!(receiver.received().len(), before, "nothing sent again");
    assert_eq!(second.count("delivered"), 0);
    assert_eq!(second.count("selected"), 0);
    assert_eq!(second.count("skipped already resolved"), N as u64);
    assert_eq!(second.count("resolution markers"), N as u64);
}

/// `--organization` redrives only that organization; a later unfiltered run delivers the rest,
/// and not the first organization's events again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_filter_redrives_only_that_organization() {
    const N: usize = 3;
    let topics = Topics::create(2).await;
    let acme = Receiver::start(503).await;
    let globex = Receiver::start(503).await;
    let config = topics.config("")
        + &organization("acme", &acme.url, RETRY)
        + &organization("globex", &globex.url, RETRY);
    let (acme_input, globex_input) = (
        records::users_created("acme", N),
        records::users_created("globex", N),
    );
    let input: Vec<_> = acme_input.iter().chain(&globex_input).cloned().collect();
    dead_letter_with_service(&topics, &config, &input, 2 * N).await;
    acme.answer(200);
    globex.answer(200);

    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "config.toml", &config);
    let dry = redrive(&path, &["--organization", "acme", "--dry-run"]).await;
    dry.assert_success();
    assert_eq!(dry.count("selected"), N as u64);
    assert_eq!(dry.stdout.matches("would redrive ").count(), N);
    assert!(delivered_per_event(&acme.received()).is_empty(), "dry run");

    let filtered = redrive(&path, &["--organization", "acme"]).await;
    filtered.assert_success();
    assert_eq!(filtered.count("delivered"), N as u64);
    assert_eq!(filtered.count("skipped filtered out"), N as u64);
    assert_eq!(
        delivered_per_event(&acme.received()),
        once_each(&ids_of(&acme_input))
    );
    assert!(delivered_per_event(&globex.received()).is_empty());

    let rest = redrive(&path, &[]).await;
    rest.assert_success();
    assert_eq!(rest.count("delivered"), N as u64);
    assert_eq!(rest.count("skipped already resolved"), N as u64);
    assert_eq!(
        delivered_per_event(&acme.received()),
        once_each(&ids_of(&acme_input))
    );
    assert_eq!(
        delivered_per_event(&globex.received()),
        once_each(&ids_of(&globex_input))
    );
}

/// The endpoint is still down: each event is written back with its old attempts followed by the
/// new ones; an organization removed from the configuration is written back as
/// `endpoint_not_configured`. Once both are back, one more redrive delivers each event once,
/// through its newest record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_fails_again_is_written_back_with_every_attempt() {
    const N: usize = 3;
    let topics = Topics::create(1).await;
    let down = Receiver::start(503).await;
    let gone = Receiver::start(503).await;
    let config = topics.config("")
        + &organization("down", &down.url, RETRY)
        + &organization("gone", &gone.url, RETRY);
    let (down_input, gone_input) = (
        records::users_created("down", N),
        records::users_created("gone", N),
    );
    let input: Vec<_> = down_input.iter().chain(&gone_input).cloned().collect();
    let original = dead_letter_with_service(&topics, &config, &input, 2 * N).await;

    let dir = tempfile::tempdir().unwrap();
    let without_gone = write_config(
        dir.path(),
        "without-gone.toml",
        &(topics.config("") + &organization("down", &down.url, RETRY)),
    );
    let again = redrive(&without_gone, &["--retries", "1"]).await;
    again.assert_success();
    assert_eq!(again.count("delivered"), 0);
    assert_eq!(again.count("failed again"), 2 * N as u64);
    assert_eq!(
        again.line("failed again by reason"),
        format!("{{endpoint_not_configured: {N}, exhausted: {N}}}")
    );

    let all = kafka::consume(&topics.dead_letter, 4 * N, Duration::from_secs(30)).await;
    assert_eq!(all.len(), 4 * N);
    let written_back: Vec<&Consumed> = all
        .iter()
        .filter(|r| !original.iter().any(|o| o.offset == r.offset))
        .collect();
    assert_eq!(written_back.len(), 2 * N);
    for record in written_back {
        assert!(!is_marker(record));
        let value = records::json_value(record);
        assert_dead_letter(&value);
        let id = value["event"]["id"].as_str().unwrap();
        let old = original
            .iter()
            .map(records::json_value)
            .find(|old| old["event"]["id"] == id)
            .expect("written back from an original dead letter");
        assert_eq!(value["event"], old["event"], "the event, unchanged");
        assert_eq!(value["source"], old["source"]);
        assert_eq!(record.header("webhook-id").as_deref(), Some(id));
        let old_attempts = old["attempts"].as_array().unwrap();
        let attempts = value["attempts"].as_array().unwrap();
        assert_eq!(old_attempts.len(), 3, "first attempt and two retries");
        assert_eq!(&attempts[..3], &old_attempts[..], "old attempts first");
        assert!(value["dead_lettered_at"].as_str() > old["dead_lettered_at"].as_str());
        match value["organization_id"].as_str().unwrap() {
            "down" => {
                assert_eq!(value["reason"], "exhausted");
                assert_eq!(value["endpoint"]["url"], down.url.as_str());
                assert_eq!(attempts.len(), 5, "plus one attempt and one retry");
                assert!(attempts[3..].iter().all(|a| a["status"] == 503));
            }
            "gone" => {
                assert_eq!(value["reason"], "endpoint_not_configured");
                assert_eq!(value["endpoint"]["url"], Value::Null);
                assert_eq!(attempts.len(), 3, "no new attempt");
            }
            other => panic!("unexpected organization {other}"),
        }
    }
    assert!(delivered_per_event(&down.received()).is_empty());
    assert!(
        gone.received().len() == 3 * N,
        "no request to a removed endpoint"
    );

    // Both back: each event once, from its newest record; the older copies are superseded.
    down.answer(200);
    gone.answer(200);
    let path = write_config(dir.path(), "config.toml", &config);
    let last = redrive(&path, &[]).await;
    last.assert_success();
    assert_eq!(last.count("delivered"), 2 * N as u64);
    assert_eq!(last.count("skipped superseded"), 2 * N as u64);
    assert_eq!(
        delivered_per_event(&down.received()),
        once_each(&ids_of(&down_input))
    );
    assert_eq!(
        delivered_per_event(&gone.received()),
        once_each(&ids_of(&gone_input))
    );
    let after = redrive(&path, &[]).await;
    after.assert_success();
    assert_eq!(after.count("delivered"), 0);
    assert_eq!(after.count("skipped already resolved"), 2 * N as u64);
}

/// Usage and configuration errors exit with 2 before touching Kafka.
#[tokio::test]
async fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let run = redrive(&missing, &[]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let run = redrive(&missing, &["--reason", "gone"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("lane_overflow"), "{}", run.stderr);
    let run = redrive(
        &missing,
        &[
            "--since",
            "2026-11-28T00:00:00Z",
            "--until",
            "2026-11-27T00:00:00Z",
        ],
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

/// Order per key across redrive: one key's dead letters sit on the topic in the reverse of their
/// source order (as after an earlier redrive wrote the first back); the redrive still delivers
/// them in source order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_dead_letters_are_redriven_in_source_order() {
    const N: usize = 4;
    let topics = Topics::create(1).await;
    let receiver = Receiver::start(503).await;
    let config = topics.config("") + &organization("acme", &receiver.url, RETRY);
    let input = records::users_created("acme", N);
    let dead = dead_letter_with_service(&topics, &config, &input, N).await;

    // The same entity for all, source offsets 100, 101, ... in dead-letter order; written to a
    // fresh dead-letter topic last first.
    let mut rewritten: Vec<(String, Vec<u8>)> = Vec::new();
    let mut in_source_order = Vec::new();
    for (i, record) in dead.iter().enumerate() {
        let mut value = records::json_value(record);
        let event = &mut value["event"];
        if !event["parameters"].is_object() {
            event["parameters"] = serde_json::json!({});
        }
        event["parameters"]["entity"] = serde_json::json!({ "id": "one-user" });
        in_source_order.push(event["id"].as_str().unwrap().to_owned());
        value["source"]["offset"] = serde_json::json!(100 + i);
        rewritten.push(("acme".to_owned(), serde_json::to_vec(&value).unwrap()));
    }
    rewritten.reverse();
    let second = Topics::create(1).await;
    kafka::produce(&second.dead_letter, &rewritten).await;

    receiver.answer(200);
    let dir = tempfile::tempdir().unwrap();
    let config = second.config("") + &organization("acme", &receiver.url, RETRY);
    let path = write_config(dir.path(), "config.toml", &config);
    let run = redrive(&path, &[]).await;
    run.assert_success();
    assert_eq!(run.count("delivered"), N as u64, "{}", run.stdout);
    let delivered: Vec<String> = receiver
        .delivered()
        .iter()
        .map(Received::event_id)
        .collect();
    assert_eq!(delivered, in_source_order, "source order, not topic order");
}
