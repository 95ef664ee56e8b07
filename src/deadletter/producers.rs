//! [`Producers`]: writes to the dead-letter and rejected topics, with the guarantees of the
//! parent module (acknowledged, retried, shrunk to a reference, or fatal).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::IntCounterVec;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use super::write_error::{Disposition, WriteError, WriteFailure};
use super::{DeadLetter, DeadLetterReference, InputRecord, REFERENCE_FIELD_MAX};
use crate::change::Rejection;
use crate::config::KafkaSettings;
use crate::telemetry::Metrics;
use crate::webhook::WebhookEvent;

/// The producer for both topics. Cloning is cheap; clones share the fatal state.
#[derive(Clone)]
pub struct Producers {
    producer: FutureProducer,
    /// Sends one record per batch: a refused record is tried again here, so that its refusal
    /// is its own and not its batch's.
    single: FutureProducer,
    dead_letter_topic: String,
    rejected_topic: String,
    retry_topic: String,
    /// `output_write_failures_total{topic, reason}`, when the caller keeps metrics.
    failures: Option<IntCounterVec>,
    fatal: Arc<FatalState>,
}

/// Tripped once, never reset: the first fatal failure, and a token for whoever stops the
/// process.
#[derive(Default)]
struct FatalState {
    tripped: CancellationToken,
    failure: OnceLock<WriteFailure>,
}

/// How long to wait between two tries of a write the broker did not acknowledge.
const WRITE_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// The metric label of a topic: its role, not its (configurable) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputTopic {
    DeadLetter,
    Rejected,
    Retry,
}

impl OutputTopic {
    pub const ALL: [OutputTopic; 3] = [
        OutputTopic::DeadLetter,
        OutputTopic::Rejected,
        OutputTopic::Retry,
    ];

    pub fn code(self) -> &'static str {
        match self {
            OutputTopic::DeadLetter => "dead_letter",
            OutputTopic::Rejected => "rejected",
            OutputTopic::Retry => "retry",
        }
    }
}

impl Producers {
    pub fn new(kafka: &KafkaSettings) -> Result<Self, KafkaError> {
        let defaults = [("linger.ms", "5"), ("message.timeout.ms", "60000")];
        let producer: FutureProducer = crate::kafka::client_config(kafka, &defaults)
            // Permanent storage: no write counts until every in-sync replica has it, once.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        let single: FutureProducer = crate::kafka::client_config(kafka, &defaults)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("batch.num.messages", "1")
            .create()?;
        Ok(Producers {
            producer,
            single,
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            rejected_topic: kafka.rejected_topic.clone(),
            retry_topic: kafka.retry_topic.clone(),
            failures: None,
            fatal: Arc::default(),
        })
    }

    /// Counts failed writes in `metrics.output_write_failures`.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.failures = Some(metrics.output_write_failures.clone());
        self
    }

    /// Cancelled when a fatal failure was met: the process must stop (see the module docs).
    pub fn fatal(&self) -> CancellationToken {
        self.fatal.tripped.clone()
    }

    /// The fatal failure met, if any.
    pub fn fatal_failure(&self) -> Option<WriteFailure> {
        self.fatal.failure.get().copied()
    }

    /// Writes a dead-letter record, keyed by organization id; returns once acknowledged. A
    /// record the topic refuses (too large) is written in its reference form instead.
    pub async fn dead_letter(
        &self,
        record: &DeadLetter,
        event: &WebhookEvent,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        let value = serde_json::to_vec(record).expect("a dead-letter record serializes");
        let headers = dead_letter_headers(record, event, false);
        let key = Some(record.organization_id.as_bytes());
        let topic = &self.dead_letter_topic;
        let refused = match self.write_full(topic, key, &value, headers, cancel).await {
            Err(WriteError::Refused(failure)) => failure,
            done => return done,
        };
        let reference = DeadLetterReference::new(record, event, value.len());
        tracing::warn!(
            event_id = %event.id,
            cause = refused.code(),
            original_size = value.len(),
            "dead letter refused by the topic; writing its reference form (no event body)"
        );
        let value = serde_json::to_vec(&reference).expect("a reference record serializes");
        let headers = dead_letter_headers(record, event, true);
        self.write_last_resort(topic, key, &value, headers, cancel)
            .await
    }

    /// Writes a rejected input record: original key and bytes untouched, original headers kept,
    /// the reason in headers; returns once acknowledged. A record the topic refuses (too large)
    /// is written as a reference instead: no value, no original headers, the key only if short,
    /// the reason and the original size in headers.
    pub async fn reject(
        &self,
        source: &InputRecord,
        rejection: &Rejection,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &source.headers {
            headers = headers.insert(Header {
                key: name,
                value: value.as_deref(),
            });
        }
        let headers = rejection_headers(headers, source, rejection);
        let topic = &self.rejected_topic;
        let key = source.key.as_deref();
        let refused = match self
            .write_full(topic, key, &source.payload, headers, cancel)
            .await
        {
            Err(WriteError::Refused(failure)) => failure,
            done => return done,
        };
        let original_size = source.size().to_string();
        tracing::warn!(
            partition = source.partition,
            offset = source.offset,
            cause = refused.code(),
            original_size = source.size(),
            "rejected record refused by the topic; writing a reference (no value)"
        );
        let key = key.filter(|k| k.len() <= REFERENCE_FIELD_MAX);
        let headers = rejection_headers(OwnedHeaders::new(), source, rejection)
            .insert(header(REJECTED_FORM_HEADER, "reference"))
            .insert(header(REJECTED_CAUSE_HEADER, refused.code()))
            .insert(header(ORIGINAL_SIZE_HEADER, &original_size));
        self.write_last_resort(topic, key, &[], headers, cancel)
            .await
    }

    /// Parks an event: writes its record to the retry topic's partition `partition` (the number
    /// of its source partition); returns the record's offset once acknowledged. A record the
    /// topic refuses (larger than its `max.message.bytes`, tried alone in its batch too) is
    /// `Refused`: the caller dead-letters the event instead.
    pub async fn park(
        &self,
        partition: i32,
        key: &[u8],
        value: &[u8],
        headers: OwnedHeaders,
        cancel: &CancellationToken,
    ) -> Result<i64, WriteError> {
        let topic = &self.retry_topic;
        let at = Some(partition);
        match self
            .write_to(
                &self.producer,
                topic,
                at,
                Some(key),
                value,
                headers.clone(),
                cancel,
            )
            .await
        {
            Err(WriteError::Refused(_)) => {
                self.write_to(&self.single, topic, at, Some(key), value, headers, cancel)
                    .await
            }
            done => done,
        }
    }

    /// Writes any record to `topic` (e.g. `redrive`'s resolution markers on the dead-letter
    /// topic), with the same guarantee: returns once acknowledged, or when cancelled, or with
    /// the reason the broker will never take it.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        self.write(&self.producer, topic, key, value, headers, cancel)
            .await
    }

    /// The full form; when refused, tried once more alone in its batch (the refusal may have
    /// been its batch's: records batched with a too-large one are refused with it).
    async fn write_full(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        match self
            .write(&self.producer, topic, key, value, headers.clone(), cancel)
            .await
        {
            Err(WriteError::Refused(_)) => {
                self.write(&self.single, topic, key, value, headers, cancel)
                    .await
            }
            done => done,
        }
    }

    /// The reference form: when the topic refuses even that, nothing this process writes there
    /// can be trusted to fit, so it is fatal.
    async fn write_last_resort(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        match self
            .write(&self.single, topic, key, value, headers, cancel)
            .await
        {
            Err(WriteError::Refused(failure)) => {
                tracing::error!(
                    topic,
                    cause = failure.code(),
                    "the topic refuses even a reference record: check its max.message.bytes"
                );
                self.trip(failure);
                Err(WriteError::Fatal(failure))
            }
            done => done,
        }
    }

    async fn write(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        cancel: &CancellationToken,
    ) -> Result<(), WriteError> {
        self.write_to(producer, topic, None, key, value, headers, cancel)
            .await
            .map(|_| ())
    }

    /// Writes one record (to `partition`, or where the key hashes); returns its offset once
    /// acknowledged.
    #[allow(clippy::too_many_arguments)]
    async fn write_to(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        cancel: &CancellationToken,
    ) -> Result<i64, WriteError> {
        loop {
            if let Some(failure) = self.fatal_failure() {
                return Err(WriteError::Fatal(failure));
            }
            let mut record = FutureRecord::to(topic)
                .payload(value)
                .headers(headers.clone());
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            let sent = tokio::select! {
                sent = producer.send(record, Duration::from_secs(5)) => sent,
                _ = cancel.cancelled() => return Err(WriteError::Cancelled),
            };
            let error = match sent {
                Ok(delivery) => return Ok(delivery.offset),
                Err((error, _)) => error,
            };
            let fatal = producer.client().fatal_error().is_some();
            let failure = WriteFailure::classify(&error, fatal);
            self.count(topic, failure);
            match failure.disposition() {
                Disposition::Retry => {
                    tracing::warn!(topic, reason = failure.code(), %error, "write not acknowledged; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(WRITE_RETRY_BACKOFF) => {}
                        _ = cancel.cancelled() => return Err(WriteError::Cancelled),
                    }
                }
                Disposition::Shrink => return Err(WriteError::Refused(failure)),
                Disposition::Fatal => {
                    tracing::error!(topic, reason = failure.code(), %error, "fatal producer error: stopping");
                    self.trip(failure);
                    return Err(WriteError::Fatal(failure));
                }
            }
        }
    }

    fn trip(&self, failure: WriteFailure) {
        let _ = self.fatal.failure.set(failure);
        self.fatal.tripped.cancel();
    }

    fn count(&self, topic: &str, failure: WriteFailure) {
        let Some(failures) = &self.failures else {
            return;
        };
        let role = if topic == self.rejected_topic {
            OutputTopic::Rejected
        } else if topic == self.retry_topic {
            OutputTopic::Retry
        } else {
            OutputTopic::DeadLetter
        };
        failures
            .with_label_values(&[role.code(), failure.code()])
            .inc();
    }

    /// Which of `topics` the cluster does not have (blocking: a metadata request).
    pub fn missing_topics(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<Vec<String>, KafkaError> {
        let metadata = self.producer.client().fetch_metadata(None, timeout)?;
        let existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
        Ok(topics
            .iter()
            .filter(|t| !existing.contains(t))
            .map(|t| (*t).to_owned())
            .collect())
    }

    /// The partition count of each of `topics` (0 for a topic the cluster does not have;
    /// blocking: a metadata request).
    pub fn partition_counts(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<Vec<usize>, KafkaError> {
        let metadata = self.producer.client().fetch_metadata(None, timeout)?;
        Ok(topics
            .iter()
            .map(|name| {
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == *name)
                    .map_or(0, |t| t.partitions().len())
            })
            .collect())
    }

    /// Waits for every write in flight, up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        for producer in [&self.producer, &self.single] {
            if let Err(error) = producer.flush(timeout) {
                tracing::warn!(%error, "producer flush incomplete");
            }
        }
    }
}

/// Header of a dead letter in its reference form: `reference` (absent on the full form).
pub const DEAD_LETTER_FORM_HEADER: &str = "webhook-dead-letter-form";
/// Header of a rejected record written without its value: `reference`.
pub const REJECTED_FORM_HEADER: &str = "consent-webhooks-rejected-form";
/// Why the topic refused the record as it was (`too_large`, `invalid`).
pub const REJECTED_CAUSE_HEADER: &str = "consent-webhooks-rejected-cause";
/// Bytes of the record as consumed (key, value and headers).
pub const ORIGINAL_SIZE_HEADER: &str = "consent-webhooks-original-size";

fn dead_letter_headers(record: &DeadLetter, event: &WebhookEvent, reference: bool) -> OwnedHeaders {
    let partition = record.source.partition.to_string();
    let offset = record.source.offset.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(header("__connect.errors.topic", &record.source.topic))
        .insert(header("__connect.errors.partition", &partition))
        .insert(header("__connect.errors.offset", &offset))
        .insert(header(
            "__connect.errors.exception.message",
            record.reason.code(),
        ))
        .insert(header("webhook-dead-letter-reason", record.reason.code()))
        .insert(header("webhook-id", &event.id))
        .insert(header("webhook-type", event.event_type.as_str()))
        .insert(header("webhook-organization-id", &event.organization_id));
    if !reference || event.change_id.len() <= REFERENCE_FIELD_MAX {
        headers = headers.insert(header("webhook-change-id", &event.change_id));
    }
    if reference {
        headers = headers.insert(header(DEAD_LETTER_FORM_HEADER, "reference"));
    }
    headers
}

fn rejection_headers(
    headers: OwnedHeaders,
    source: &InputRecord,
    rejection: &Rejection,
) -> OwnedHeaders {
    let partition = source.partition.to_string();
    let offset = source.offset.to_string();
    let message = rejection.to_string();
    headers
        .insert(header("__connect.errors.topic", &source.topic))
        .insert(header("__connect.errors.partition", &partition))
        .insert(header("__connect.errors.offset", &offset))
        .insert(header("__connect.errors.exception.message", &message))
        .insert(header("consent-webhooks-rejection", rejection.code()))
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;
    use crate::deadletter::{DeadLetterReason, SourceRef};
    use crate::delivery::testkit::event;

    fn settings(brokers: String, properties: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            brokers,
            group_id: "g".into(),
            input_topic: "in".into(),
            dead_letter_topic: "dlq".into(),
            rejected_topic: "rej".into(),
            retry_topic: "retry".into(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            secret_properties: BTreeMap::new(),
        }
    }

    fn failures(metrics: &Metrics, topic: &str, reason: &str) -> u64 {
        metrics
            .output_write_failures
            .with_label_values(&[topic, reason])
            .get()
    }

    /// Issue 7 point 3: an authorization error used to be retried every 500 ms forever. It is
    /// fatal: the write returns, the fatal token trips (the pipeline stops on it), later writes
    /// fail at once, and the failure is counted.
    #[tokio::test]
    async fn an_authorization_error_is_fatal_not_retried_forever() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("dlq", 1, 1).expect("topic");
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
        );
        let metrics = Metrics::new(["acme"]);
        let producers = Producers::new(&settings(mock.bootstrap_servers(), &[]))
            .expect("producer")
            .with_metrics(&metrics);
        let cancel = CancellationToken::new();
        let written = tokio::time::timeout(
            Duration::from_secs(60),
            producers.send("dlq", Some(b"acme"), b"{}", OwnedHeaders::new(), &cancel),
        )
        .await
        .expect("returns instead of retrying forever");
        assert!(matches!(written, Err(WriteError::Fatal(_))), "{written:?}");
        assert!(producers.fatal().is_cancelled(), "the fatal token tripped");
        let failure = producers.fatal_failure().expect("a fatal failure");
        assert_eq!(failure.disposition(), Disposition::Fatal);
        assert_eq!(failures(&metrics, "dead_letter", failure.code()), 1);
        // Every later write fails at once, without reaching the broker.
        let again = producers
            .send("dlq", None, b"{}", OwnedHeaders::new(), &cancel)
            .await;
        assert!(matches!(again, Err(WriteError::Fatal(_))), "{again:?}");
    }

    /// A dead letter larger than the producer may send is written in its reference form
    /// (after one more try of the full form, alone in its batch), and the refusals are counted
    /// as `too_large`.
    #[tokio::test]
    async fn a_too_large_dead_letter_is_written_as_a_reference() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("dlq", 1, 1).expect("topic");
        let metrics = Metrics::new(["acme"]);
        let producers = Producers::new(&settings(
            mock.bootstrap_servers(),
            &[("message.max.bytes", "2000")],
        ))
        .expect("producer")
        .with_metrics(&metrics);
        let mut big = event();
        big.body = Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(4000)));
        let record = DeadLetter::new(
            &big,
            None,
            DeadLetterReason::PermanentStatus,
            &[],
            SourceRef {
                topic: "in".into(),
                partition: 0,
                offset: 7,
                change_id: big.change_id.clone(),
            },
        );
        let cancel = CancellationToken::new();
        let written = tokio::time::timeout(
            Duration::from_secs(60),
            producers.dead_letter(&record, &big, &cancel),
        )
        .await
        .expect("returns");
        assert!(written.is_ok(), "{written:?}");
        assert_eq!(failures(&metrics, "dead_letter", "too_large"), 2);
        assert!(producers.fatal_failure().is_none());

        let reference = DeadLetterReference::new(&record, &big, 4321);
        let value = serde_json::to_value(&reference).unwrap();
        assert_eq!(value["form"], "reference");
        assert_eq!(value["event_id"], big.id.as_str());
        assert_eq!(value["source"]["offset"], 7);
        assert_eq!(value["original_size"], 4321);
        assert!(value.get("event").is_none());
    }

    /// A change id too long to keep is left out of the reference (the source record has it),
    /// so the reference stays small whatever the input holds.
    #[test]
    fn a_reference_leaves_out_a_long_change_id() {
        let mut long = event();
        long.change_id = "c".repeat(10_000);
        let record = DeadLetter::new(
            &long,
            None,
            DeadLetterReason::Exhausted,
            &[],
            SourceRef {
                topic: "in".into(),
                partition: 1,
                offset: 2,
                change_id: long.change_id.clone(),
            },
        );
        let reference = DeadLetterReference::new(&record, &long, 20_000);
        assert_eq!(reference.source.change_id, None);
        assert!(serde_json::to_vec(&reference).unwrap().len() < 1024);
    }
}
