//! `consent-webhooks run` against a real Kafka broker whose dead-letter and rejected topics
//! refuse large records (`max.message.bytes`): the records are stored in their reference form,
//! the partition's offset is committed past them, and the failed writes are counted (issue 7,
//! point 3).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use support::kafka;
use support::receiver::Receiver;
use support::records;
use support::schemas::assert_dead_letter;
use support::service::{free_port, organization, Service, Topics};

/// The output topics' `max.message.bytes`: a normal dead letter (~1 KB) fits, a padded one not.
const OUTPUT_LIMIT: usize = 4096;

async fn create_topic_with_limit(name: &str, max_message_bytes: Option<usize>) {
    let limit = max_message_bytes.map(|b| b.to_string());
    let configs: Vec<(&str, &str)> = limit
        .iter()
        .map(|limit| ("max.message.bytes", limit.as_str()))
        .collect();
    kafka::create_topic_with(name, 1, &configs).await;
}

/// Fresh topics; the dead-letter and rejected ones limited to [`OUTPUT_LIMIT`] bytes a record.
async fn limited_topics() -> Topics {
    let topics = Topics {
        input: kafka::unique_name("changes"),
        dead_letter: kafka::unique_name("dead-letter"),
        rejected: kafka::unique_name("rejected"),
        retry: kafka::unique_name("retry"),
        group: kafka::unique_name("group"),
    };
    create_topic_with_limit(&topics.input, None).await;
    create_topic_with_limit(&topics.retry, None).await;
    create_topic_with_limit(&topics.dead_letter, Some(OUTPUT_LIMIT)).await;
    create_topic_with_limit(&topics.rejected, Some(OUTPUT_LIMIT)).await;
    topics
}

/// A `user.created` record whose user carries `pad` bytes of padding.
fn padded_user_created(
    change_id: &str,
    organization: &str,
    user: &str,
    pad: usize,
) -> (String, Vec<u8>) {
    let (key, value) = records::user_created(change_id, organization, user);
    let mut value: Value = serde_json::from_slice(&value).unwrap();
    value["after"]["pad"] = Value::String("x".repeat(pad));
    (key, serde_json::to_vec(&value).unwrap())
}

/// Waits until the group committed `offset` on partition 0 of `topic`.
async fn wait_committed(topics: &Topics, offset: i64, deadline: Duration) {
    let (group, topic) = (topics.group.clone(), topics.input.clone());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", kafka::bootstrap())
            .set("group.id", &group)
            .create()
            .expect("consumer");
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, 0);
        let end = Instant::now() + deadline;
        loop {
            let committed = consumer
                .committed_offsets(list.clone(), Duration::from_secs(10))
                .ok()
                .and_then(|l| l.elements().first().map(|e| e.offset()));
            if committed == Some(Offset::Offset(offset)) {
                return;
            }
            assert!(
                Instant::now() < end,
                "offset {offset} not committed within {deadline:?}: {committed:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
}

/// The value of the series of `name` with every one of `labels` (`key="value"`) in the
/// service's `/metrics`, 0 when absent.
async fn metric(listen: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let text = support::service::metrics_text(listen).await;
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|l| line.contains(l)))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_its_topic_is_stored_as_a_reference() {
    let topics = limited_topics().await;
    let refusing = Receiver::start(400).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut config = topics.config_listening(listen, "");
    config += &organization("acme", &refusing.url, "");
    let _service = Service::start(&config, &[]);

    let big = padded_user_created("chg-big", "acme", "big-user", 3 * OUTPUT_LIMIT);
    let small = records::user_created("chg-small", "acme", "small-user");
    let input = vec![big.clone(), small.clone()];
    kafka::produce(&topics.input, &input).await;

    let dead = kafka::consume(&topics.dead_letter, 2, Duration::from_secs(60)).await;
    assert_eq!(
        dead.len(),
        2,
        "both events dead-lettered, in one form or the other"
    );
    let (big_event, small_event) = (records::event_of(&big.1), records::event_of(&small.1));
    for record in &dead {
        let value = records::json_value(record);
        assert_dead_letter(&value);
        assert_eq!(record.key.as_deref(), Some(&b"acme"[..]));
        assert_eq!(value["reason"], "permanent_status");
        assert_eq!(value["organization_id"], "acme");
        assert_eq!(value["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(value["attempts"][0]["status"], 400);
        if record.header("webhook-id").as_deref() == Some(big_event.id.as_str()) {
            assert_eq!(
                record.header("webhook-dead-letter-form").as_deref(),
                Some("reference")
            );
            assert_eq!(value["form"], "reference");
            assert!(value.get("event").is_none(), "no event body: {value}");
            assert_eq!(value["event_id"], big_event.id.as_str());
            assert_eq!(value["event_type"], "user.created");
            assert_eq!(value["source"]["topic"], topics.input.as_str());
            assert_eq!(value["source"]["partition"], 0);
            assert_eq!(value["source"]["offset"], 0);
            assert_eq!(value["source"]["change_id"], "chg-big");
            let original = value["original_size"].as_u64().unwrap();
            assert!(original > OUTPUT_LIMIT as u64, "{original}");
            assert!(record.value.len() < OUTPUT_LIMIT, "the reference fits");
        } else {
            assert_eq!(
                record.header("webhook-id").as_deref(),
                Some(small_event.id.as_str())
            );
            assert_eq!(record.header("webhook-dead-letter-form"), None);
            assert_eq!(value["event"]["id"], small_event.id.as_str());
            assert_eq!(value["source"]["offset"], 1);
        }
    }

    // The partition is not pinned: both offsets are done and committed.
    wait_committed(&topics, 2, Duration::from_secs(30)).await;
    let too_large = metric(
        listen,
        "consent_webhooks_output_write_failures_total",
        &[r#"topic="dead_letter""#, r#"reason="too_large""#],
    )
    .await;
    assert!(too_large >= 1.0, "too_large failures counted: {too_large}");

    // redrive tells a reference (nothing to deliver: its body is in the source record) from
    // an unreadable record.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let run = support::command::run("redrive", &path, &["--dry-run"]).await;
    run.assert_success();
    assert_eq!(run.count("references without a body"), 1, "{}", run.stdout);
    assert_eq!(run.count("dead letters"), 1);
    assert_eq!(run.count("unreadable"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_too_large_for_its_topic_is_stored_as_a_reference() {
    let topics = limited_topics().await;
    let acme = Receiver::start(200).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut config = topics.config_listening(listen, "");
    config += &organization("acme", &acme.url, "");
    let _service = Service::start(&config, &[]);

    // Not a JSON object, and larger than the rejected topic takes.
    let big_invalid = format!("[{}]", "1,".repeat(2 * OUTPUT_LIMIT) + "1").into_bytes();
    let small_invalid = b"[1,2,3]".to_vec();
    let valid = records::user_created("chg-ok", "acme", "ok-user");
    let input = vec![
        ("bad/big".to_owned(), big_invalid.clone()),
        ("bad/small".to_owned(), small_invalid.clone()),
        valid.clone(),
    ];
    kafka::produce(&topics.input, &input).await;

    let rejected = kafka::consume(&topics.rejected, 2, Duration::from_secs(60)).await;
    assert_eq!(rejected.len(), 2, "both invalid records rejected");
    for record in &rejected {
        assert_eq!(
            record.header("consent-webhooks-rejection").as_deref(),
            Some("not_object")
        );
        assert_eq!(
            record.header("__connect.errors.topic").as_deref(),
            Some(topics.input.as_str())
        );
        match record.key.as_deref() {
            Some(b"bad/big") => {
                assert!(record.value.is_empty(), "the value is left out");
                assert_eq!(
                    record.header("consent-webhooks-rejected-form").as_deref(),
                    Some("reference")
                );
                assert_eq!(
                    record.header("consent-webhooks-rejected-cause").as_deref(),
                    Some("too_large")
                );
                let size: usize = record
                    .header("consent-webhooks-original-size")
                    .and_then(|s| s.parse().ok())
                    .expect("original size header");
                assert_eq!(size, "bad/big".len() + big_invalid.len());
                assert_eq!(
                    record.header("__connect.errors.offset").as_deref(),
                    Some("0")
                );
            }
            Some(b"bad/small") => {
                assert_eq!(record.value, small_invalid, "original bytes untouched");
                assert_eq!(record.header("consent-webhooks-rejected-form"), None);
            }
            other => panic!("unexpected rejected record {other:?}"),
        }
    }
    acme.wait_until(Duration::from_secs(30), "the valid event", |got| {
        !got.is_empty()
    })
    .await;
    wait_committed(&topics, 3, Duration::from_secs(30)).await;
    let too_large = metric(
        listen,
        "consent_webhooks_output_write_failures_total",
        &[r#"topic="rejected""#, r#"reason="too_large""#],
    )
    .await;
    assert!(too_large >= 1.0, "too_large failures counted: {too_large}");
}
