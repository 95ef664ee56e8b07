//! What managed Kafka clusters need from the bundled librdkafka, proven against real brokers:
//! a zstd-compressed input topic is read through the whole pipeline, and a SASL/SCRAM-SHA-512
//! listener is joined with credentials that come from secret references (`{ env = .. }` and
//! `{ file = .. }`), while a wrong password is refused by the broker.

#[path = "support/sasl_broker.rs"]
mod sasl_broker;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use consent_webhooks::derive::{derive_record, Derived, Rules};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sasl_broker::SaslBroker;
use support::receiver::Receiver;
use support::service::{organization, Service, Topics};
use support::{kafka, records};

/// Event ids the pure core derives from the sample records for `org`.
fn expected_ids(records: &[(String, Vec<u8>)], org: &str) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(
            |(_, value)| match derive_record(value, &Rules::default()).unwrap() {
                Derived::Webhook(e) if e.organization_id == org => Some(e.id),
                _ => None,
            },
        )
        .collect()
}

async fn create_topics(bootstrap: &str, topics: &[(&str, &[(&str, &str)])]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, configs)| {
            configs.iter().fold(
                NewTopic::new(name, 2, TopicReplication::Fixed(1)),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &options).await.expect("create") {
        result.unwrap_or_else(|(topic, e)| panic!("cannot create {topic}: {e}"));
    }
}

/// Produces `records` with zstd compression and waits for every acknowledgement.
async fn produce(
    bootstrap: &str,
    topic: &str,
    records: &[(String, Vec<u8>)],
    extra: &[(&str, &str)],
) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("compression.type", "zstd")
        .set("linger.ms", "20");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let producer: FutureProducer = config.create().expect("producer");
    for (i, (key, value)) in records.iter().enumerate() {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i} not acknowledged: {e}"));
    }
}

async fn assert_receives(receiver: &Receiver, want: &BTreeSet<String>) {
    receiver
        .wait_until(Duration::from_secs(90), "every event", |got| {
            got.len() >= want.len()
        })
        .await;
    let got: BTreeSet<String> = receiver.received().iter().map(|r| r.event_id()).collect();
    assert_eq!(&got, want, "exactly the derived events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_compressed_input_topic_is_delivered() {
    let topics = Topics {
        input: kafka::unique_name("zstd-changes"),
        dead_letter: kafka::unique_name("dead-letter"),
        rejected: kafka::unique_name("rejected"),
        retry: kafka::unique_name("retry"),
        group: kafka::unique_name("group"),
    };
    // The topic itself stores zstd batches (the broker recompresses whatever arrives), and the
    // producer sends zstd: the consumer can only read it by decompressing zstd.
    create_topics(
        kafka::bootstrap(),
        &[
            (&topics.input, &[("compression.type", "zstd")]),
            (&topics.dead_letter, &[]),
            (&topics.rejected, &[]),
            (&topics.retry, &[]),
        ],
    )
    .await;
    let receiver = Receiver::start(200).await;
    let config = topics.config("") + &organization("acme", &receiver.url, "");
    let _service = Service::start(&config, &[]);

    let records = records::samples();
    produce(kafka::bootstrap(), &topics.input, &records, &[]).await;
    assert_receives(&receiver, &expected_ids(&records, "acme")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_listener_with_credentials_from_secret_references() {
    let password = format!("pw-{}", kafka::unique_name("scram"));
    let broker = tokio::task::spawn_blocking({
        let password = password.clone();
        move || SaslBroker::start("consent-webhooks", &password)
    })
    .await
    .unwrap();
    let (input, dead_letter, rejected, retry) =
        ("consent.changes", "dead-letter", "rejected", "retry");
    create_topics(
        &broker.plaintext,
        &[
            (input, &[]),
            (dead_letter, &[]),
            (rejected, &[]),
            (retry, &[]),
        ],
    )
    .await;

    // A wrong password is refused by the SASL listener: the credentials are really checked.
    let refused = tokio::task::spawn_blocking({
        let sasl = broker.sasl.clone();
        move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &sasl)
                .set("security.protocol", "SASL_PLAINTEXT")
                .set("sasl.mechanism", "SCRAM-SHA-512")
                .set("sasl.username", "consent-webhooks")
                .set("sasl.password", "wrong")
                .create()
                .expect("consumer");
            consumer.fetch_metadata(None, Duration::from_secs(10))
        }
    })
    .await
    .unwrap();
    assert!(
        refused.is_err(),
        "metadata with a wrong password: {refused:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("kafka-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let receiver = Receiver::start(200).await;
    let config = format!(
        "[kafka]\nbrokers = \"{sasl}\"\ngroup_id = \"{group}\"\ninput_topic = \"{input}\"\n\
         dead_letter_topic = \"{dead_letter}\"\nrejected_topic = \"{rejected}\"\n\
         retry_topic = \"{retry}\"\n\n\
         [kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\n\
         [kafka.secret_properties]\n\"sasl.username\" = {{ env = \"TEST_KAFKA_USERNAME\" }}\n\
         \"sasl.password\" = {{ file = {file:?} }}\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\n[delivery]\n{org}",
        sasl = broker.sasl,
        group = kafka::unique_name("group"),
        file = password_file.display().to_string(),
        org = organization("acme", &receiver.url, ""),
    );
    // `--brokers` reads KAFKA_BOOTSTRAP_SERVERS, which points the test run at the shared broker.
    let service = Service::start(
        &config,
        &[
            ("TEST_KAFKA_USERNAME", &broker.user),
            ("KAFKA_BOOTSTRAP_SERVERS", &broker.sasl),
        ],
    );

    // Records arrive through the SASL listener too, compressed.
    let records = records::samples();
    produce(
        &broker.sasl,
        input,
        &records,
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", &broker.user),
            ("sasl.password", &broker.password),
        ],
    )
    .await;
    assert_receives(&receiver, &expected_ids(&records, "acme")).await;
    assert!(
        !service.logs().contains(&password),
        "the SASL password never reaches the logs"
    );
    drop(service);
    drop(broker);
}
